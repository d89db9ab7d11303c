/* optim.c: the optimiser updates (AdamW, SGD with momentum), the squared gradient norm for
 * clipping, and the rounding of working weights and the finiteness check of mixed precision
 * (docs/runtime.md, "Training"). The schedule and the loss scaler, which decide when and how much
 * to step, are the training loop's (prog/schedule.c).
 *
 * The updates are element-wise, so they split over the pool in blocks of RT_OPT_BLOCK floats and
 * give the same bits for any thread count. rt_sum_squares adds fixed blocks (whose size depends
 * only on n) in double and then the block sums in order: also independent of the thread count, so
 * a training run is bit-reproducible whatever --threads says.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#include "../core/core.h"

#define RT_OPT_BLOCK 4096      /* floats per task block */
#define RT_OPT_GRAIN 4         /* blocks per chunk at least (16K floats) */
#define RT_SUMSQ_MAXBLOCKS 1024 /* partial sums of rt_sum_squares (on the stack) */

typedef struct AdamCtx {
  float *w, *m, *v, *wh; /* wh: the bf16 working weights to refresh, or NULL */
  const float *g;
  int64_t n;
  float b1, b2, eps, decay; /* decay = 1 - lr * wd */
  float step_size, bc2_sqrt;
} AdamCtx;

/* The AdamW update of elements [a,b): one body, built for the baseline ISA and with AVX2 (sqrtf
 * as vsqrtps: the file is compiled with -fno-math-errno; no FMA contraction), which do the same
 * IEEE operations on each element, so the same bits (test_rt_train). With wh (bf16 mixed
 * precision) it also writes the updated weight rounded to bf16 (rt_f32_to_bf16's rule, widened
 * back to f32: the working weight), saving the trainer a pass over the weights. */
static inline float bf16_round(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
  uint32_t r = nan ? (u | 0x400000u) & 0xffff0000u : (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  memcpy(&x, &r, sizeof x);
  return x;
}

#define ADAM_BODY(WH)                                                                                                \
  float *restrict w = c->w, *restrict m = c->m, *restrict v = c->v, *restrict wh = c->wh;                            \
  const float *restrict g = c->g;                                                                                    \
  const float b1 = c->b1, b2 = c->b2, eps = c->eps, decay = c->decay, ss = c->step_size, bc2 = c->bc2_sqrt;          \
  const float ob1 = 1.0f - b1, ob2 = 1.0f - b2;                                                                      \
  (void)wh;                                                                                                          \
  for (int64_t i = a; i < b; i++) {                                                                                  \
    float gi = g[i];                                                                                                 \
    float wi = w[i] * decay;                                                                                         \
    float mi = b1 * m[i] + ob1 * gi;                                                                                 \
    float vi = b2 * v[i] + ob2 * gi * gi;                                                                            \
    m[i] = mi;                                                                                                       \
    v[i] = vi;                                                                                                       \
    w[i] = wi - ss * mi / (sqrtf(vi) / bc2 + eps);                                                                   \
    WH;                                                                                                              \
  }

static void adam_portable(const AdamCtx *c, int64_t a, int64_t b) { ADAM_BODY((void)0) }
static void adam_portable_wh(const AdamCtx *c, int64_t a, int64_t b) { ADAM_BODY(wh[i] = bf16_round(w[i])) }

#if defined(__x86_64__) && defined(__GNUC__)
#ifndef __clang__ /* GCC: vectorise at -O2 too; clang does, and ignores these */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off", "tree-vectorize", "vect-cost-model=dynamic")
#endif
__attribute__((target("avx2"))) static void adam_avx2(const AdamCtx *c, int64_t a, int64_t b) { ADAM_BODY((void)0) }
__attribute__((target("avx2"))) static void adam_avx2_wh(const AdamCtx *c, int64_t a, int64_t b) {
  ADAM_BODY(wh[i] = bf16_round(w[i]))
}
#ifndef __clang__
#pragma GCC pop_options
#endif
#endif

static void adam_range(void *p, int lo, int hi) {
  const AdamCtx *c = p;
  int64_t a = (int64_t)lo * RT_OPT_BLOCK, b = (int64_t)hi * RT_OPT_BLOCK;
  if (b > c->n) b = c->n;
#if defined(__x86_64__) && defined(__GNUC__)
  if (rt_cpu()->avx2) {
    (c->wh ? adam_avx2_wh : adam_avx2)(c, a, b);
    return;
  }
#endif
  (c->wh ? adam_portable_wh : adam_portable)(c, a, b);
}

void rt_adamw(float *w, const float *g, float *m, float *v, int64_t n, float lr, float beta1, float beta2, float eps,
              float wd, int64_t step) {
  rt_adamw_bf16(w, NULL, g, m, v, n, lr, beta1, beta2, eps, wd, step);
}

void rt_adamw_bf16(float *w, float *wh, const float *g, float *m, float *v, int64_t n, float lr, float beta1,
                   float beta2, float eps, float wd, int64_t step) {
  if (n <= 0) return;
  if (step < 1) step = 1;
  /* as torch.optim.AdamW (single-tensor path): the bias corrections in double, then
   * step_size = lr / bc1 and denom = sqrt(v) / sqrt(bc2) + eps */
  double bc1 = 1.0 - pow((double)beta1, (double)step);
  double bc2 = 1.0 - pow((double)beta2, (double)step);
  AdamCtx c = {w, m, v, wh, g, n, beta1, beta2, eps, (float)(1.0 - (double)lr * (double)wd),
               (float)((double)lr / bc1), (float)sqrt(bc2)};
  int64_t nb = (n + RT_OPT_BLOCK - 1) / RT_OPT_BLOCK;
  rt_parallel_for((int)nb, RT_OPT_GRAIN, adam_range, &c);
}

typedef struct SgdCtx {
  float *w, *mom;
  const float *g;
  int64_t n;
  float lr, momentum, wd;
} SgdCtx;

static void sgd_range(void *p, int lo, int hi) {
  const SgdCtx *c = p;
  int64_t a = (int64_t)lo * RT_OPT_BLOCK, b = (int64_t)hi * RT_OPT_BLOCK;
  if (b > c->n) b = c->n;
  float *restrict w = c->w, *restrict mom = c->mom;
  const float *restrict g = c->g;
  const float lr = c->lr, mu = c->momentum, wd = c->wd;
  for (int64_t i = a; i < b; i++) {
    float d = g[i];
    if (wd != 0.0f) d += wd * w[i];
    float mi = mu * mom[i] + d;
    mom[i] = mi;
    w[i] -= lr * mi;
  }
}

void rt_sgd(float *w, const float *g, float *mom, int64_t n, float lr, float momentum, float wd) {
  if (n <= 0) return;
  SgdCtx c = {w, mom, g, n, lr, momentum, wd};
  int64_t nb = (n + RT_OPT_BLOCK - 1) / RT_OPT_BLOCK;
  rt_parallel_for((int)nb, RT_OPT_GRAIN, sgd_range, &c);
}

typedef struct SumCtx {
  const float *g;
  int64_t n, block;
  double *part;
} SumCtx;

static void sumsq_range(void *p, int lo, int hi) {
  const SumCtx *c = p;
  for (int k = lo; k < hi; k++) {
    int64_t a = (int64_t)k * c->block, b = a + c->block;
    if (b > c->n) b = c->n;
    /* 4 partial sums: vectorisable, still a fixed order */
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = a;
    for (; i + 4 <= b; i += 4) {
      s0 += (double)c->g[i] * c->g[i];
      s1 += (double)c->g[i + 1] * c->g[i + 1];
      s2 += (double)c->g[i + 2] * c->g[i + 2];
      s3 += (double)c->g[i + 3] * c->g[i + 3];
    }
    for (; i < b; i++) s0 += (double)c->g[i] * c->g[i];
    c->part[k] = (s0 + s1) + (s2 + s3);
  }
}

double rt_sum_squares(const float *g, int64_t n) {
  if (n <= 0) return 0.0;
  double part[RT_SUMSQ_MAXBLOCKS];
  /* the block size depends only on n: the same sum for any number of threads */
  int64_t block = RT_OPT_BLOCK;
  if ((n + block - 1) / block > RT_SUMSQ_MAXBLOCKS) block = (n + RT_SUMSQ_MAXBLOCKS - 1) / RT_SUMSQ_MAXBLOCKS;
  int nb = (int)((n + block - 1) / block);
  SumCtx c = {g, n, block, part};
  rt_parallel_for(nb, RT_OPT_GRAIN, sumsq_range, &c);
  double s = 0;
  for (int k = 0; k < nb; k++) s += part[k];
  return s;
}

/* ---- scaling (clipping by global norm) ---- */

typedef struct ScaleCtx {
  float *x;
  int64_t n;
  float c;
} ScaleCtx;

static void scale_range(void *p, int lo, int hi) {
  const ScaleCtx *c = p;
  int64_t a = (int64_t)lo * RT_OPT_BLOCK, b = (int64_t)hi * RT_OPT_BLOCK;
  if (b > c->n) b = c->n;
  for (int64_t i = a; i < b; i++) c->x[i] *= c->c;
}

void rt_scale(float *x, int64_t n, float c) { /* element-wise: over the pool, the same bits */
  if (n <= 0) return;
  ScaleCtx sc = {x, n, c};
  rt_parallel_for((int)((n + RT_OPT_BLOCK - 1) / RT_OPT_BLOCK), RT_OPT_GRAIN, scale_range, &sc);
}

/* ---- mixed precision ---- */

typedef struct RoundCtx {
  float *out;
  const float *w;
  int64_t n;
  RtPrecision p;
} RoundCtx;

static void round_range(void *p, int lo, int hi) {
  const RoundCtx *c = p;
  uint16_t h[RT_OPT_BLOCK];
  for (int64_t i = (int64_t)lo * RT_OPT_BLOCK; i < (int64_t)hi * RT_OPT_BLOCK && i < c->n; i += RT_OPT_BLOCK) {
    size_t k = (size_t)(c->n - i < RT_OPT_BLOCK ? c->n - i : RT_OPT_BLOCK);
    if (c->p == RT_PREC_BF16) { /* through the vectorised conversion kernels, a block at a time */
      rt_cast_f32_bf16(h, c->w + i, k);
      rt_cast_bf16_f32(c->out + i, h, k);
    } else if (c->p == RT_PREC_FP16) {
      rt_cast_f32_f16(h, c->w + i, k);
      rt_cast_f16_f32(c->out + i, h, k);
    } else if (c->out != c->w) {
      memcpy(c->out + i, c->w + i, k * sizeof *c->out);
    }
  }
}

void rt_round_weights(float *out, const float *w, int64_t n, RtPrecision p) { /* element-wise: over the pool */
  if (n <= 0) return;
  RoundCtx c = {out, w, n, p};
  rt_parallel_for((int)((n + RT_OPT_BLOCK - 1) / RT_OPT_BLOCK), RT_OPT_GRAIN, round_range, &c);
}

int rt_all_finite(const float *g, int64_t n) {
  int ok = 1;
  for (int64_t i = 0; i < n; i++) ok &= isfinite(g[i]) != 0;
  return ok;
}
