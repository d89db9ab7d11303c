/* kernels.c: the dense element-wise and row-wise kernels generated code calls: linear layers
 * (cblas_sgemm / sgemv over the pool), embeddings, positions, LayerNorm, RMSNorm, activations and
 * softmax, each with a naive serial `_ref` twin that the tests compare against. Fast versions
 * split rows (or elements) over rt_parallel_for and keep 8 independent float partial sums so
 * compilers can vectorise reductions without -ffast-math; refs accumulate in double. */
#include "modelc_rt.h"
#include "rt_internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Rows per chunk for row-wise kernels over C columns: about 8K floats of work per chunk, so the
 * pool is only used when each thread gets at least that much. */

/* Elements per block for element-wise kernels (rt_parallel_for counts blocks: n may exceed int). */
#define EW_BLOCK 4096

/* ---- linear: x (M,K), W (N,K), bias (N) or NULL -> y (M,N) ---------------------------------- */

typedef struct LinCtx {
  float *y;
  const float *x, *W, *bias;
  int M, N, K;
  RtRangeFn epi;
  void *ctx;
} LinCtx;

/* rows [lo,hi) of y: bias pre-filled and beta = 1 (OpenBLAS zeroes C in a separate pass when
 * beta = 0, so the bias costs nothing extra), then the epilogue while the rows are warm */
static void lin_rows(void *p, int lo, int hi) {
  const LinCtx *c = p;
  float *y = c->y + (size_t)lo * c->N;
  float beta = 0.0f;
  if (c->bias) {
    for (int m = lo; m < hi; m++)
      memcpy(c->y + (size_t)m * c->N, c->bias, (size_t)c->N * sizeof(float));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, c->N, c->K, 1.0f, c->x + (size_t)lo * c->K, c->K, c->W,
              c->K, beta, y, c->N);
  if (c->epi)
    c->epi(c->ctx, lo, hi);
}

/* columns [lo,hi) of y (all M rows): rows lo..hi of W. sgemv for M == 1 (OpenBLAS's sgemm packs
 * all of W first at M = 1, ~3x slower), sgemm for a few rows. No epilogue here. */
static void lin_cols(void *p, int lo, int hi) {
  const LinCtx *c = p;
  float beta = 0.0f;
  if (c->bias) {
    for (int m = 0; m < c->M; m++)
      memcpy(c->y + (size_t)m * c->N + lo, c->bias + lo, (size_t)(hi - lo) * sizeof(float));
    beta = 1.0f;
  }
  if (c->M == 1)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, hi - lo, c->K, 1.0f, c->W + (size_t)lo * c->K, c->K, c->x, 1, beta,
                c->y + lo, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->M, hi - lo, c->K, 1.0f, c->x, c->K,
                c->W + (size_t)lo * c->K, c->K, beta, c->y + lo, c->N);
}

#define LIN_ROW_GRAIN 16

void rt_linear(float *y, const float *x, const float *W, const float *bias, int M, int N, int K, RtRangeFn epi,
               void *ctx) {
  if (M <= 0 || N <= 0)
    return;
  if (K <= 0) {
    for (int m = 0; m < M; m++)
      if (bias)
        memcpy(y + (size_t)m * N, bias, (size_t)N * sizeof(float));
      else
        memset(y + (size_t)m * N, 0, (size_t)N * sizeof(float));
    if (epi)
      epi(ctx, 0, M);
    return;
  }
  LinCtx c = {y, x, W, bias, M, N, K, epi, ctx};
  if (M < 2 * LIN_ROW_GRAIN) {
    /* decode and small batches: too few rows to split, split the output columns (W's rows)
     * instead, in slices of >= 16K weights and a multiple of 16 columns; epilogue once at the end */
    int g = 16384 / K;
    g = g < 16 ? 16 : (g + 15) / 16 * 16;
    rt_parallel_for(N, g, lin_cols, &c);
    if (epi)
      epi(ctx, 0, M);
    return;
  }
  rt_parallel_for(M, LIN_ROW_GRAIN, lin_rows, &c);
}

void rt_matmul(float *y, const float *x, const float *W, const float *bias, int M, int N, int K) {
  rt_linear(y, x, W, bias, M, N, K, NULL, NULL);
}

void rt_matmul_ref(float *y, const float *x, const float *W, const float *bias, int M, int N, int K) {
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double s = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; k++)
        s += (double)x[(size_t)m * K + k] * W[(size_t)n * K + k];
      y[(size_t)m * N + n] = (float)s;
    }
}

/* ---- embedding: ids (n), table (V,C) -> out (n,C); bad ids give zero rows and -1 ------------- */

typedef struct EmbCtx {
  float *out;
  const int32_t *ids;
  const float *table;
  int V, C;
} EmbCtx;

static void emb_rows(void *p, int lo, int hi) {
  const EmbCtx *e = p;
  for (int i = lo; i < hi; i++) {
    float *o = e->out + (size_t)i * e->C;
    int32_t id = e->ids[i];
    if (id < 0 || id >= e->V)
      memset(o, 0, (size_t)e->C * sizeof(float));
    else
      memcpy(o, e->table + (size_t)id * e->C, (size_t)e->C * sizeof(float));
  }
}

int rt_embedding(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err) {
  EmbCtx e = {out, ids, table, V, C};
  rt_parallel_for(n, rt_row_grain(C), emb_rows, &e);
  for (int i = 0; i < n; i++) /* the first bad id, serially: n ints are cheap to scan */
    if (ids[i] < 0 || ids[i] >= V)
      return rt_fail(err, "embedding: token id %ld at position %d is outside [0, %d)", (long)ids[i], i, V);
  return 0;
}

int rt_embedding_ref(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err) {
  int bad = -1;
  for (int i = 0; i < n; i++) {
    int ok = ids[i] >= 0 && ids[i] < V;
    if (!ok && bad < 0)
      bad = i;
    for (int c = 0; c < C; c++)
      out[(size_t)i * C + c] = ok ? table[(size_t)ids[i] * C + c] : 0.0f;
  }
  if (bad >= 0)
    return rt_fail(err, "embedding: token id %ld at position %d is outside [0, %d)", (long)ids[bad], bad, V);
  return 0;
}

/* ---- positions: x (B,T,C) += pos[t0+t] ------------------------------------------------------ */

typedef struct PosCtx {
  float *x;
  const float *pos;
  int T, C, t0;
} PosCtx;

static void pos_rows(void *p, int lo, int hi) {
  const PosCtx *c = p;
  for (int r = lo; r < hi; r++) {
    float *restrict xr = c->x + (size_t)r * c->C;
    const float *restrict pr = c->pos + (size_t)(c->t0 + r % c->T) * c->C;
    for (int i = 0; i < c->C; i++)
      xr[i] += pr[i];
  }
}

void rt_add_positions(float *x, const float *pos, int B, int T, int C, int t0) {
  PosCtx c = {x, pos, T, C, t0};
  rt_parallel_for(B * T, rt_row_grain(C), pos_rows, &c);
}

void rt_add_positions_ref(float *x, const float *pos, int B, int T, int C, int t0) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++)
        x[((size_t)b * T + t) * C + c] += pos[(size_t)(t0 + t) * C + c];
}

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

void rt_layernorm_ref(float *out, float *mean_out, float *rstd_out, const float *x, const float *gain,
                      const float *bias, int R, int C, float eps) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    double m = 0, v = 0;
    for (int c = 0; c < C; c++)
      m += xr[c];
    m /= C;
    for (int c = 0; c < C; c++)
      v += (xr[c] - m) * (xr[c] - m);
    v /= C;
    double rstd = 1.0 / sqrt(v + eps);
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
    double ms = 0;
    for (int c = 0; c < C; c++)
      ms += (double)xr[c] * xr[c];
    double rstd = 1.0 / sqrt(ms / C + eps);
    for (int c = 0; c < C; c++)
      out[(size_t)r * C + c] = (float)(xr[c] * rstd * gain[c]);
    if (rstd_out)
      rstd_out[r] = (float)rstd;
  }
}

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

/* ---- sinusoidal positions: out (T,C) --------------------------------------------------------- */

/* The angle t / 10000^(2i/C) for column pair i, in double; the table is computed once per program
 * (generated code caches it), so accuracy matters more than speed. */
void rt_sinusoid(float *out, int T, int C) {
  for (int i = 0; 2 * i < C; i++) {
    double inv = pow(10000.0, -(2.0 * i) / C);
    for (int t = 0; t < T; t++) {
      double a = t * inv;
      out[(size_t)t * C + 2 * i] = (float)sin(a);
      if (2 * i + 1 < C) out[(size_t)t * C + 2 * i + 1] = (float)cos(a);
    }
  }
}

void rt_sinusoid_ref(float *out, int T, int C) {
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++) {
      double a = t / pow(10000.0, (double)(c - c % 2) / C);
      out[(size_t)t * C + c] = (float)(c % 2 ? cos(a) : sin(a));
    }
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
