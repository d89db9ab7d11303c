/* norm.c: LayerNorm and RMSNorm over the last axis, forward and backward. The forward kernels keep
 * 8 independent float partial sums (rt_sum8 / rt_sqdev8, kernels/kernels.h) so compilers vectorise the
 * reductions without -ffast-math; the backward (rt_norm_dx, rt_norm_dg) recomputes exactly those
 * row statistics from x. Each has a naive serial `_ref` twin (double accumulation) that
 * tests/unit/test_rt_kernels.c and test_rt_backward.c compare against.
 *
 * Threading: rows split over rt_parallel_for; rt_norm_dg splits columns (each column summed over
 * rows in row order), so its result does not depend on the thread count. */
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- layernorm: x, out (R,C); gain, bias (C) ------------------------------------------------ */

typedef struct NormCtx {
  float *out, *mean_out, *rstd_out;
  const float *x, *gain, *bias;
  int C;
  float eps;
} NormCtx;

static void layernorm_rows(void *p, int lo, int hi) {
  const NormCtx *n = p;
  int C = n->C;
  const float *gain = n->gain, *bias = n->bias;
  for (int r = lo; r < hi; r++) {
    const float *xr = n->x + (size_t)r * C;
    float *o = n->out + (size_t)r * C;
    float mean = rt_sum8(xr, C) / (float)C;
    float var = rt_sqdev8(xr, C, mean) / (float)C;
    float rstd = 1.0f / sqrtf(var + n->eps);
    if (bias)
      for (int c = 0; c < C; c++)
        o[c] = (xr[c] - mean) * rstd * gain[c] + bias[c];
    else
      for (int c = 0; c < C; c++)
        o[c] = (xr[c] - mean) * rstd * gain[c];
    if (n->mean_out)
      n->mean_out[r] = mean;
    if (n->rstd_out)
      n->rstd_out[r] = rstd;
  }
}

void rt_layernorm(float *out, float *mean_out, float *rstd_out, const float *x, const float *gain, const float *bias,
                  int R, int C, float eps) {
  NormCtx n = {out, mean_out, rstd_out, x, gain, bias, C, eps};
  rt_parallel_for(R, rt_row_grain(C), layernorm_rows, &n);
}

/* The naive twins' row statistics, in double: the mean (0 for RMSNorm) and 1/sqrt(var + eps),
 * var the mean square deviation from it. */
static double ref_row_stats(const float *xr, int C, int rms, float eps, double *mean) {
  double m = 0, v = 0;
  if (!rms) {
    for (int c = 0; c < C; c++)
      m += xr[c];
    m /= C;
  }
  for (int c = 0; c < C; c++)
    v += (xr[c] - m) * (xr[c] - m);
  *mean = m;
  return 1.0 / sqrt(v / C + eps);
}

void rt_layernorm_ref(float *out, float *mean_out, float *rstd_out, const float *x, const float *gain,
                      const float *bias, int R, int C, float eps) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    double m, rstd = ref_row_stats(xr, C, 0, eps, &m);
    for (int c = 0; c < C; c++)
      out[(size_t)r * C + c] = (float)((xr[c] - m) * rstd * gain[c] + (bias ? bias[c] : 0.0));
    if (mean_out)
      mean_out[r] = (float)m;
    if (rstd_out)
      rstd_out[r] = (float)rstd;
  }
}

/* ---- rmsnorm: x, out (R,C); gain (C) -------------------------------------------------------- */

static void rmsnorm_rows(void *p, int lo, int hi) {
  const NormCtx *n = p;
  int C = n->C;
  for (int r = lo; r < hi; r++) {
    const float *xr = n->x + (size_t)r * C;
    float *o = n->out + (size_t)r * C;
    float ms = rt_sqdev8(xr, C, 0.0f) / (float)C;
    float rstd = 1.0f / sqrtf(ms + n->eps);
    for (int c = 0; c < C; c++)
      o[c] = xr[c] * rstd * n->gain[c];
    if (n->rstd_out)
      n->rstd_out[r] = rstd;
  }
}

void rt_rmsnorm(float *out, float *rstd_out, const float *x, const float *gain, int R, int C, float eps) {
  NormCtx n = {out, NULL, rstd_out, x, gain, NULL, C, eps};
  rt_parallel_for(R, rt_row_grain(C), rmsnorm_rows, &n);
}

void rt_rmsnorm_ref(float *out, float *rstd_out, const float *x, const float *gain, int R, int C, float eps) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    double zero, rstd = ref_row_stats(xr, C, 1, eps, &zero);
    for (int c = 0; c < C; c++)
      out[(size_t)r * C + c] = (float)(xr[c] * rstd * gain[c]);
    if (rstd_out)
      rstd_out[r] = (float)rstd;
  }
}

/* ---- LayerNorm / RMSNorm backward ----------------------------------------------------------- *
 * xhat = (x - mean) * rstd (LayerNorm) or x * rstd (RMSNorm), y = xhat * g (+ b), with the
 * forward's statistics (rt_sum8 / rt_sqdev8 in float, exactly as rt_layernorm / rt_rmsnorm).
 * dxhat = dy * g;  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (LayerNorm)
 *                  dx = rstd * (dxhat - xhat * mean(dxhat * xhat))                 (RMSNorm)
 * dgain = sum over rows of dy * xhat. */

typedef struct NormBwdCtx {
  float *dx, *dgain;
  const float *x, *gain, *dy;
  int C, rms, r0;
  float eps;
  float *mean, *rstd; /* (group rows) for rt_norm_dg */
} NormBwdCtx;

static void row_stats(const float *xr, int C, float eps, int rms, float *mean, float *rstd) {
  if (rms) {
    *mean = 0.0f;
    *rstd = 1.0f / sqrtf(rt_sqdev8(xr, C, 0.0f) / (float)C + eps);
  } else {
    float m = rt_sum8(xr, C) / (float)C;
    *mean = m;
    *rstd = 1.0f / sqrtf(rt_sqdev8(xr, C, m) / (float)C + eps);
  }
}

static void norm_dx_rows(void *p, int lo, int hi) {
  const NormBwdCtx *n = p;
  int C = n->C;
  const float *g = n->gain;
  for (int r = lo; r < hi; r++) {
    const float *xr = n->x + (size_t)r * C, *dyr = n->dy + (size_t)r * C;
    float *dxr = n->dx + (size_t)r * C;
    float mean, rstd;
    row_stats(xr, C, n->eps, n->rms, &mean, &rstd);
    /* sums of dxhat and dxhat * xhat, 8 lanes each */
    float a[8] = {0}, b[8] = {0};
    int c = 0;
    for (; c + 8 <= C; c += 8)
      for (int j = 0; j < 8; j++) {
        float dh = dyr[c + j] * g[c + j];
        a[j] += dh;
        b[j] += dh * ((xr[c + j] - mean) * rstd);
      }
    float ta = 0.0f, tb = 0.0f;
    for (; c < C; c++) {
      float dh = dyr[c] * g[c];
      ta += dh;
      tb += dh * ((xr[c] - mean) * rstd);
    }
    float sa = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + ta;
    float sb = ((b[0] + b[4]) + (b[1] + b[5])) + ((b[2] + b[6]) + (b[3] + b[7])) + tb;
    float ma = n->rms ? 0.0f : sa / (float)C, mb = sb / (float)C;
    /* element-wise from here: dx may equal dy or x */
    for (c = 0; c < C; c++) {
      float xh = (xr[c] - mean) * rstd;
      dxr[c] = rstd * (dyr[c] * g[c] - ma - xh * mb);
    }
  }
}

void rt_norm_dx(float *dx, const float *x, const float *gain, const float *dy, int R, int C, float eps, int rms) {
  if (R <= 0 || C <= 0)
    return;
  NormBwdCtx n = {dx, NULL, x, gain, dy, C, rms, 0, eps, NULL, NULL};
  rt_parallel_for(R, rt_row_grain(C), norm_dx_rows, &n);
}

void rt_norm_dx_ref(float *dx, const float *x, const float *gain, const float *dy, int R, int C, float eps, int rms) {
  double *dxr = malloc((size_t)(C > 0 ? C : 1) * sizeof(double)); /* test-only twin: allocation is fine */
  if (!dxr)
    return;
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C, *dyr = dy + (size_t)r * C;
    double mean, rstd = ref_row_stats(xr, C, rms, eps, &mean);
    double sa = 0, sb = 0;
    for (int c = 0; c < C; c++) {
      double dh = (double)dyr[c] * gain[c];
      sa += dh;
      sb += dh * (xr[c] - mean) * rstd;
    }
    for (int c = 0; c < C; c++) {
      double dh = (double)dyr[c] * gain[c], xh = (xr[c] - mean) * rstd;
      dxr[c] = rstd * (dh - (rms ? 0.0 : sa / C) - xh * sb / C);
    }
    for (int c = 0; c < C; c++)
      dx[(size_t)r * C + c] = (float)dxr[c];
  }
  free(dxr);
}

/* rt_norm_dg goes over rows in groups of NORM_GROUP (their statistics on the stack): per group,
 * the statistics in parallel over rows, then dgain in parallel over columns, each task summing
 * its columns over the group's rows in row order into a local block of NORM_COLS partial sums and
 * then adding that to dgain: no scratch, no float atomics, and the same result for every thread
 * count. The per-group partial sums also bound the float error by ~(NORM_GROUP + R/NORM_GROUP)
 * roundings per element rather than R. */
#define NORM_GROUP 512
#define NORM_COLS 64

static void norm_stats_rows(void *p, int lo, int hi) {
  const NormBwdCtx *n = p;
  for (int i = lo; i < hi; i++)
    row_stats(n->x + (size_t)(n->r0 + i) * n->C, n->C, n->eps, n->rms, &n->mean[i], &n->rstd[i]);
}

typedef struct NormDgCtx {
  NormBwdCtx n;
  int rows, first;
} NormDgCtx;

static void norm_dg_cols(void *p, int lo, int hi) {
  const NormDgCtx *d = p;
  const NormBwdCtx *n = &d->n;
  int C = n->C;
  for (int c0 = lo; c0 < hi; c0 += NORM_COLS) {
    int nc = hi - c0 < NORM_COLS ? hi - c0 : NORM_COLS;
    float acc[NORM_COLS] = {0};
    for (int i = 0; i < d->rows; i++) {
      const float *xr = n->x + (size_t)(n->r0 + i) * C + c0, *dyr = n->dy + (size_t)(n->r0 + i) * C + c0;
      float mean = n->mean[i], rstd = n->rstd[i];
      for (int c = 0; c < nc; c++)
        acc[c] += dyr[c] * ((xr[c] - mean) * rstd);
    }
    float *dg = n->dgain + c0;
    if (d->first)
      memcpy(dg, acc, (size_t)nc * sizeof(float));
    else
      for (int c = 0; c < nc; c++)
        dg[c] += acc[c];
  }
}

void rt_norm_dg(float *dgain, const float *x, const float *dy, int R, int C, float eps, int rms) {
  if (C <= 0)
    return;
  if (R <= 0) {
    memset(dgain, 0, (size_t)C * sizeof(float));
    return;
  }
  float mean[NORM_GROUP], rstd[NORM_GROUP];
  NormDgCtx d = {{NULL, dgain, x, NULL, dy, C, rms, 0, eps, mean, rstd}, 0, 1};
  for (int r0 = 0; r0 < R; r0 += NORM_GROUP) {
    d.n.r0 = r0;
    d.rows = R - r0 < NORM_GROUP ? R - r0 : NORM_GROUP;
    d.first = r0 == 0;
    rt_parallel_for(d.rows, rt_row_grain(C), norm_stats_rows, &d.n);
    /* columns in multiples of 16 (whole cache lines of dgain), about 8K floats per chunk */
    int g = (8192 / d.rows + 15) / 16 * 16;
    rt_parallel_for(C, g < 16 ? 16 : g, norm_dg_cols, &d);
  }
}

void rt_norm_dg_ref(float *dgain, const float *x, const float *dy, int R, int C, float eps, int rms) {
  double *acc = calloc((size_t)(C > 0 ? C : 1), sizeof(double)); /* test-only twin */
  if (!acc)
    return;
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C, *dyr = dy + (size_t)r * C;
    double mean, rstd = ref_row_stats(xr, C, rms, eps, &mean);
    for (int c = 0; c < C; c++)
      acc[c] += (double)dyr[c] * (xr[c] - mean) * rstd;
  }
  for (int c = 0; c < C; c++)
    dgain[c] = (float)acc[c];
  free(acc);
}
