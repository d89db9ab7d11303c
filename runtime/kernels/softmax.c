/* softmax.c: softmax over rows, max-subtracted (an all -inf row becomes zeros), with its naive
 * serial `_ref` twin. Fast version: rows split over rt_parallel_for, exponentials and their sum
 * through rt_exp_row (kernels/kernels.h), the formula attention uses too. */
#include "kernels.h"

#include "../core/core.h"

#include <math.h>
#include <string.h>

/* ---- rt_exp_row (kernels.h): the baseline build and an AVX2 build of one body ------------------ */

float rt_exp_row_portable(float *e, const float *x, int n, float mx) { RT_EXP_ROW_BODY }

#if defined(__x86_64__) && defined(__GNUC__)
#ifndef __clang__ /* GCC: vectorise at -O2 too; clang does, and ignores these */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off", "tree-vectorize")
#endif
__attribute__((target("avx2"))) static float exp_row_avx2(float *e, const float *x, int n, float mx) {
  RT_EXP_ROW_BODY
}
#ifndef __clang__
#pragma GCC pop_options
#endif
#endif

float rt_exp_row(float *e, const float *x, int n, float mx) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (rt_cpu()->avx2)
    return exp_row_avx2(e, x, n, mx);
#endif
  return rt_exp_row_portable(e, x, n, mx);
}

/* ---- softmax over rows: x, out (R,C); an all -inf row becomes zeros ------------------------- */

typedef struct SmCtx {
  float *out;
  const float *x;
  int C;
} SmCtx;

static void softmax_rows(void *p, int lo, int hi) {
  const SmCtx *sc = p;
  int C = sc->C;
  for (int r = lo; r < hi; r++) {
    const float *xr = sc->x + (size_t)r * C;
    float *o = sc->out + (size_t)r * C;
    float mx = -INFINITY;
    for (int c = 0; c < C; c++)
      mx = xr[c] > mx ? xr[c] : mx;
    if (mx == -INFINITY) {
      memset(o, 0, (size_t)C * sizeof(float));
      continue;
    }
    float inv = 1.0f / rt_exp_row(o, xr, C, mx);
    for (int c = 0; c < C; c++)
      o[c] *= inv;
  }
}

void rt_softmax(float *out, const float *x, int R, int C) {
  SmCtx sc = {out, x, C};
  rt_parallel_for(R, rt_row_grain(C), softmax_rows, &sc);
}

void rt_softmax_ref(float *out, const float *x, int R, int C) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    double mx = -INFINITY, s = 0;
    for (int c = 0; c < C; c++)
      mx = xr[c] > mx ? xr[c] : mx;
    if (mx == -INFINITY) {
      for (int c = 0; c < C; c++)
        out[(size_t)r * C + c] = 0.0f;
      continue;
    }
    for (int c = 0; c < C; c++)
      s += exp(xr[c] - mx);
    for (int c = 0; c < C; c++)
      out[(size_t)r * C + c] = (float)(exp(xr[c] - mx) / s);
  }
}
