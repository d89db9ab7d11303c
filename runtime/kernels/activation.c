/* activation.c: the element-wise kernels over arrays: GELU (exact and tanh), ReLU, SiLU, SwiGLU,
 * and dropout with its counter-based mask. The scalar functions (rt_geluf, rt_mix, ...) are inline
 * in modelc_rt.h, shared with the generated fused loops. Each kernel has a naive serial `_ref`
 * twin that tests/unit/test_rt_kernels.c compares against. Fast versions split blocks of
 * EW_BLOCK elements over rt_parallel_for. */
#include "kernels.h"

#include <math.h>
#include <string.h>

/* Elements per block for element-wise kernels (rt_parallel_for counts blocks: n may exceed int). */
#define EW_BLOCK 4096

/* ---- activations: x, out (n) ---------------------------------------------------------------- */

typedef struct EwCtx {
  float *out;
  const float *x, *b;
  size_t n;
} EwCtx;

/* [lo,hi) counts EW_BLOCK-element blocks; the element range is clipped to n */
#define EW_KERNEL(name, expr)                                                                                  \
  static void name##_blocks(void *p, int lo, int hi) {                                                         \
    const EwCtx *e = p;                                                                                        \
    size_t i0 = (size_t)lo * EW_BLOCK, i1 = (size_t)hi * EW_BLOCK < e->n ? (size_t)hi * EW_BLOCK : e->n;       \
    float *out = e->out;                                                                                       \
    const float *x = e->x, *b = e->b;                                                                          \
    (void)b;                                                                                                   \
    for (size_t i = i0; i < i1; i++)                                                                           \
      out[i] = expr;                                                                                           \
  }

/* 1 + erf(z) is computed as erfc(-z): no cancellation for negative x. */
EW_KERNEL(gelu, rt_geluf(x[i]))
EW_KERNEL(gelu_tanh, rt_gelu_tanhf(x[i]))
EW_KERNEL(relu, rt_reluf(x[i]))
EW_KERNEL(silu, rt_siluf(x[i]))
EW_KERNEL(swiglu, rt_siluf(x[i]) * b[i])

static void ew_run(RtRangeFn fn, float *out, const float *x, const float *b, size_t n) {
  EwCtx e = {out, x, b, n};
  size_t blocks = (n + EW_BLOCK - 1) / EW_BLOCK;
  if (blocks <= (size_t)INT32_MAX)
    rt_parallel_for((int)blocks, 4, fn, &e); /* >= 16K elements per chunk */
  else
    for (size_t s = 0; s < n; s += (size_t)EW_BLOCK * 65536) { /* absurdly large n: in pieces */
      EwCtx p = {out + s, x + s, b ? b + s : NULL, n - s < (size_t)EW_BLOCK * 65536 ? n - s : (size_t)EW_BLOCK * 65536};
      rt_parallel_for(65536, 4, fn, &p);
    }
}

void rt_gelu(float *out, const float *x, size_t n) { ew_run(gelu_blocks, out, x, NULL, n); }
void rt_gelu_tanh(float *out, const float *x, size_t n) { ew_run(gelu_tanh_blocks, out, x, NULL, n); }
void rt_relu(float *out, const float *x, size_t n) { ew_run(relu_blocks, out, x, NULL, n); }
void rt_silu(float *out, const float *x, size_t n) { ew_run(silu_blocks, out, x, NULL, n); }
void rt_swiglu(float *out, const float *a, const float *b, size_t n) { ew_run(swiglu_blocks, out, a, b, n); }

void rt_gelu_ref(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0))));
}

void rt_gelu_tanh_ref(float *out, const float *x, size_t n) {
  const double k = sqrt(2.0 / 3.14159265358979323846);
  for (size_t i = 0; i < n; i++) {
    double v = x[i];
    out[i] = (float)(0.5 * v * (1.0 + tanh(k * (v + 0.044715 * v * v * v))));
  }
}

void rt_relu_ref(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = rt_reluf(x[i]);
}

void rt_silu_ref(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = (float)(x[i] / (1.0 + exp(-(double)x[i])));
}

void rt_swiglu_ref(float *out, const float *a, const float *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = (float)(a[i] / (1.0 + exp(-(double)a[i])) * b[i]);
}

/* ---- dropout: x, out (n), counter-based mask (see modelc_rt.h) ------------------------------ */

static inline int dropout_keep(uint64_t key, size_t i, uint64_t threshold) {
  return (rt_mix(key, (uint64_t)i) >> 32) >= threshold;
}

typedef struct DropCtx {
  float *out;
  const float *x;
  size_t n;
  uint64_t key, threshold;
  float scale;
} DropCtx;

static void dropout_blocks(void *ctx, int lo, int hi) {
  const DropCtx *d = ctx;
  size_t end = (size_t)hi * EW_BLOCK < d->n ? (size_t)hi * EW_BLOCK : d->n;
  for (size_t i = (size_t)lo * EW_BLOCK; i < end; i++)
    d->out[i] = dropout_keep(d->key, i, d->threshold) ? d->x[i] * d->scale : 0.0f;
}

void rt_dropout(float *out, const float *x, size_t n, float p, uint64_t key) {
  DropCtx d = {out, x, n, key, (uint64_t)((double)p * 4294967296.0), p < 1.0f ? 1.0f / (1.0f - p) : 0.0f};
  rt_parallel_for((int)((n + EW_BLOCK - 1) / EW_BLOCK), 1, dropout_blocks, &d);
}

void rt_dropout_ref(float *out, const float *x, size_t n, float p, uint64_t key) {
  uint64_t threshold = (uint64_t)((double)p * 4294967296.0);
  float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  for (size_t i = 0; i < n; i++) out[i] = dropout_keep(key, i, threshold) ? x[i] * scale : 0.0f;
}
