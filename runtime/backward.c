/* backward.c: the training kernels, the backward ops of the IR (docs/ir.md, "Training"):
 * cross-entropy and its gradient, the two GEMMs of a linear layer's backward (input gradient
 * dy W, weight gradient dy^T x), LayerNorm / RMSNorm backward (dx and dgain, statistics
 * recomputed from x), the embedding's scatter-add, and attention backward. Each has a naive serial
 * `_ref` twin (plain loops, double accumulation); tests/unit/test_rt_backward.c compares every fast
 * kernel with its twin and every twin with central differences of the forward kernels.
 *
 * Threading follows the forward kernels: rows (or (batch, head) pairs) are split over
 * rt_parallel_for, OpenBLAS runs single-threaded inside each task, no atomics on floats. Every
 * reduction here is ordered independently of the chunking, so the results do not even depend on
 * the thread count: cross-entropy sums per-block losses (fixed blocks, not per-thread chunks) in
 * block order, rt_norm_dg splits columns (each column summed over rows in row order),
 * rt_embedding_dw splits vocabulary rows (each row summed in id order), and the GEMM kernels split
 * output rows (each element is one task's dot product; OpenBLAS's own blocking of a chunk is
 * deterministic for given chunk sizes, so those two are deterministic per thread count). */
#include "modelc_rt.h"
#include "rt_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- cross-entropy: logits (R,V), targets (R) ----------------------------------------------- */

/* The loss is a sum over rows: rows go in at most CE_BLOCKS fixed blocks (not per-thread chunks),
 * each block's sum lands in its own slot and the slots are added in order, so the result is the
 * same for every thread count. A target outside [0,V) is never read out of bounds: its row adds
 * 0 to the loss (still counted in R) and gets a zero gradient. */
#define CE_BLOCKS 64

typedef struct CeCtx {
  float *dlogits;
  const float *logits;
  const int32_t *targets;
  int R, V, rows_per_block;
  float dloss;
  double part[CE_BLOCKS];
} CeCtx;

static void ce_blocks(void *p, int lo, int hi) {
  CeCtx *c = p;
  int V = c->V;
  for (int blk = lo; blk < hi; blk++) {
    int r0 = blk * c->rows_per_block, r1 = r0 + c->rows_per_block < c->R ? r0 + c->rows_per_block : c->R;
    double acc = 0;
    for (int r = r0; r < r1; r++) {
      const float *l = c->logits + (size_t)r * V;
      int t = c->targets[r];
      if (t < 0 || t >= V)
        continue;
      float mx = rt_max_row(l, V);
      /* exp_row writes; the loss does not need the exponentials, so a small stack tile holds them */
      float sum = 0.0f, tile[256];
      for (int j0 = 0; j0 < V; j0 += 256) {
        int n = V - j0 < 256 ? V - j0 : 256;
        sum += rt_exp_row(tile, l + j0, n, mx);
      }
      acc += (double)mx + log((double)sum) - (double)l[t];
    }
    c->part[blk] = acc;
  }
}

/* rows per block: at least about 8K floats of work, and at most CE_BLOCKS blocks */
static int ce_rows_per_block(int R, int V) {
  int rpb = rt_row_grain(V);
  if ((R + rpb - 1) / rpb > CE_BLOCKS)
    rpb = (R + CE_BLOCKS - 1) / CE_BLOCKS;
  return rpb;
}

float rt_cross_entropy(const float *logits, const int32_t *targets, int R, int V) {
  if (R <= 0 || V <= 0)
    return 0.0f;
  CeCtx c = {NULL, logits, targets, R, V, ce_rows_per_block(R, V), 0.0f, {0}};
  int nblk = (R + c.rows_per_block - 1) / c.rows_per_block;
  rt_parallel_for(nblk, 1, ce_blocks, &c);
  double s = 0;
  for (int b = 0; b < nblk; b++)
    s += c.part[b];
  return (float)(s / R);
}

float rt_cross_entropy_ref(const float *logits, const int32_t *targets, int R, int V) {
  if (R <= 0 || V <= 0)
    return 0.0f;
  double s = 0;
  for (int r = 0; r < R; r++) {
    const float *l = logits + (size_t)r * V;
    int t = targets[r];
    if (t < 0 || t >= V)
      continue;
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++)
      mx = l[j] > mx ? l[j] : mx;
    for (int j = 0; j < V; j++)
      sum += exp(l[j] - mx);
    s += mx + log(sum) - l[t];
  }
  return (float)(s / R);
}

static void ce_grad_rows(void *p, int lo, int hi) {
  const CeCtx *c = p;
  int V = c->V;
  float k = c->dloss / (float)c->R;
  for (int r = lo; r < hi; r++) {
    const float *l = c->logits + (size_t)r * V;
    float *d = c->dlogits + (size_t)r * V;
    int t = c->targets[r];
    if (t < 0 || t >= V) {
      memset(d, 0, (size_t)V * sizeof(float));
      continue;
    }
    float mx = rt_max_row(l, V);
    float s = k / rt_exp_row(d, l, V, mx); /* d may equal l: each element is read before written */
    for (int j = 0; j < V; j++)
      d[j] *= s;
    d[t] -= k;
  }
}

void rt_cross_entropy_grad(float *dlogits, const float *logits, const int32_t *targets, int R, int V, float dloss) {
  if (R <= 0 || V <= 0)
    return;
  CeCtx c = {dlogits, logits, targets, R, V, 0, dloss, {0}};
  rt_parallel_for(R, rt_row_grain(V), ce_grad_rows, &c);
}

void rt_cross_entropy_grad_ref(float *dlogits, const float *logits, const int32_t *targets, int R, int V,
                               float dloss) {
  for (int r = 0; r < R; r++) {
    const float *l = logits + (size_t)r * V;
    float *d = dlogits + (size_t)r * V;
    int t = targets[r];
    if (t < 0 || t >= V) {
      for (int j = 0; j < V; j++)
        d[j] = 0.0f;
      continue;
    }
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++)
      mx = l[j] > mx ? l[j] : mx;
    for (int j = 0; j < V; j++)
      sum += exp(l[j] - mx);
    for (int j = 0; j < V; j++) {
      double pj = exp(l[j] - mx) / sum;
      d[j] = (float)((double)dloss * (pj - (j == t ? 1.0 : 0.0)) / R); /* l[j] read first: d may be l */
    }
  }
}

/* ---- linear backward: y (M,K) = dy (M,N) W (N,K); dW (N,K) = dy^T x ------------------------- */

#define GEMM_ROW_GRAIN 16

typedef struct GemmCtx {
  float *out;
  const float *a, *b;
  int M, N, K;
} GemmCtx;

/* rows [lo,hi) of y = dy W: one sgemm NN */
static void nn_rows(void *p, int lo, int hi) {
  const GemmCtx *c = p;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, c->K, c->N, 1.0f, c->a + (size_t)lo * c->N, c->N,
              c->b, c->K, 0.0f, c->out + (size_t)lo * c->K, c->K);
}

void rt_matmul_nn(float *y, const float *dy, const float *W, int M, int N, int K) {
  if (M <= 0 || K <= 0)
    return;
  if (N <= 0) {
    memset(y, 0, (size_t)M * K * sizeof(float));
    return;
  }
  GemmCtx c = {y, dy, W, M, N, K};
  rt_parallel_for(M, GEMM_ROW_GRAIN, nn_rows, &c);
}

void rt_matmul_nn_ref(float *y, const float *dy, const float *W, int M, int N, int K) {
  for (int m = 0; m < M; m++)
    for (int k = 0; k < K; k++) {
      double acc = 0;
      for (int n = 0; n < N; n++)
        acc += (double)dy[(size_t)m * N + n] * W[(size_t)n * K + k];
      y[(size_t)m * K + k] = (float)acc;
    }
}

/* rows [lo,hi) of dW = dy^T x: dy's columns lo..hi read in place (transposed, lda = N) */
static void dw_rows(void *p, int lo, int hi) {
  const GemmCtx *c = p;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo, c->K, c->M, 1.0f, c->a + lo, c->N, c->b, c->K, 0.0f,
              c->out + (size_t)lo * c->K, c->K);
}

void rt_linear_dw(float *dW, const float *dy, const float *x, int M, int N, int K) {
  if (N <= 0 || K <= 0)
    return;
  if (M <= 0) {
    memset(dW, 0, (size_t)N * K * sizeof(float));
    return;
  }
  GemmCtx c = {dW, dy, x, M, N, K};
  rt_parallel_for(N, GEMM_ROW_GRAIN, dw_rows, &c);
}

void rt_linear_dw_ref(float *dW, const float *dy, const float *x, int M, int N, int K) {
  for (int n = 0; n < N; n++)
    for (int k = 0; k < K; k++) {
      double acc = 0;
      for (int m = 0; m < M; m++)
        acc += (double)dy[(size_t)m * N + n] * x[(size_t)m * K + k];
      dW[(size_t)n * K + k] = (float)acc;
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
    double mean = 0, var = 0;
    if (!rms) {
      for (int c = 0; c < C; c++)
        mean += xr[c];
      mean /= C;
    }
    for (int c = 0; c < C; c++)
      var += (xr[c] - mean) * (xr[c] - mean);
    double rstd = 1.0 / sqrt(var / C + eps);
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
    double mean = 0, var = 0;
    if (!rms) {
      for (int c = 0; c < C; c++)
        mean += xr[c];
      mean /= C;
    }
    for (int c = 0; c < C; c++)
      var += (xr[c] - mean) * (xr[c] - mean);
    double rstd = 1.0 / sqrt(var / C + eps);
    for (int c = 0; c < C; c++)
      acc[c] += (double)dyr[c] * (xr[c] - mean) * rstd;
  }
  for (int c = 0; c < C; c++)
    dgain[c] = (float)acc[c];
  free(acc);
}

/* ---- embedding backward: dtable (V,C) = scatter-add of dy (n,C) at ids ---------------------- *
 * Split over vocabulary rows: each task zeroes its rows and scans all ids in order, adding the
 * rows that fall in its range, so every row is summed in id order whatever the thread count.
 * Ids outside [0,V) are skipped (the forward wrote zeros for them: their gradient is nowhere). */

typedef struct EmbCtx {
  float *dtable;
  const int32_t *ids;
  const float *dy;
  int n, C;
} EmbCtx;

static void emb_dw_rows(void *p, int lo, int hi) {
  const EmbCtx *e = p;
  int C = e->C;
  memset(e->dtable + (size_t)lo * C, 0, (size_t)(hi - lo) * C * sizeof(float));
  for (int i = 0; i < e->n; i++) {
    int id = e->ids[i];
    if (id < lo || id >= hi)
      continue;
    float *d = e->dtable + (size_t)id * C;
    const float *s = e->dy + (size_t)i * C;
    for (int c = 0; c < C; c++)
      d[c] += s[c];
  }
}

void rt_embedding_dw(float *dtable, const int32_t *ids, const float *dy, int n, int V, int C) {
  if (V <= 0 || C <= 0)
    return;
  EmbCtx e = {dtable, ids, dy, n > 0 ? n : 0, C};
  /* a task zeroes (hi-lo) C floats and scans n ids: at least ~8K floats of zeroing per chunk */
  rt_parallel_for(V, rt_row_grain(C), emb_dw_rows, &e);
}

void rt_embedding_dw_ref(float *dtable, const int32_t *ids, const float *dy, int n, int V, int C) {
  double *acc = calloc((size_t)V * C > 0 ? (size_t)V * C : 1, sizeof(double)); /* test-only twin */
  if (!acc)
    return;
  for (int i = 0; i < n; i++)
    if (ids[i] >= 0 && ids[i] < V)
      for (int c = 0; c < C; c++)
        acc[(size_t)ids[i] * C + c] += dy[(size_t)i * C + c];
  for (size_t j = 0; j < (size_t)V * C; j++)
    dtable[j] = (float)acc[j];
  free(acc);
}

/* ---- attention backward ---------------------------------------------------------------------- *
 * Per (batch, head), queries in blocks of RT_ATTN_BQ rows; each block takes a panel of all the
 * keys it sees (kend = T, or q0 + nq when causal):
 *   S  (nq,kend) = scale Q_blk K^T                   sgemm NT
 *   P  = softmax rows of S (masked entries 0)        exact: the panel holds the whole row
 *   dP (nq,kend) = dO_blk V^T                        sgemm NT
 *   D_i = sum_j P_ij dP_ij  (= rowsum(dO o O): O itself is never formed)
 *   dS = P o (dP - D)                                in place of dP
 *   dV += P^T dO_blk                                 sgemm TN, beta 1, into dqkv
 *   dQ_blk = scale dS K                              sgemm NN, beta 0, into dqkv
 *   dK += scale dS^T Q_blk                           sgemm TN, beta 1, into dqkv
 * Five GEMMs per block, the minimum (flash-attention-2 with stored statistics also needs five;
 * without the forward's logsumexp it needs seven, since a key-tiled panel must recompute Q K^T and
 * O). The price is the panel: scratch is two nq x kend tiles per task, 2 * BQ * T floats per
 * thread (T = 1024: 512 KB per thread), linear in T, not quadratic. q, k, v, dy and dqkv are read
 * and written in place through their leading dimensions (3C, C); nothing is copied. Each task
 * writes only its own head's columns of dqkv, so the result does not depend on the thread count. */

static size_t attn_dx_slice(int T) {
  size_t bq = T < RT_ATTN_BQ ? (size_t)(T > 0 ? T : 1) : RT_ATTN_BQ;
  return rt_slice_floats(2 * bq * (size_t)(T > 0 ? T : 1));
}

size_t rt_attention_dx_scratch_floats(int T, int C, int n_head) {
  (void)C, (void)n_head;
  return attn_dx_slice(T) * (size_t)rt_threads();
}

/* One (batch, head). q, k, v: column h*hd of row 0 of qkv (stride ld = 3C); dq, dk, dv the same
 * in dqkv; dO: column h*hd of row 0 of dy (stride ldo = C). P, dP: scratch of BQ * T floats each. */
static void attn_dx_head(float *dq, float *dk, float *dv, const float *q, const float *k, const float *v,
                         const float *dO, int ld, int ldo, int T, int hd, int causal, float scale, float *P,
                         float *dP) {
  for (int t = 0; t < T; t++) { /* dK, dV accumulate over query blocks */
    memset(dk + (size_t)t * ld, 0, (size_t)hd * sizeof(float));
    memset(dv + (size_t)t * ld, 0, (size_t)hd * sizeof(float));
  }
  for (int q0 = 0; q0 < T; q0 += RT_ATTN_BQ) {
    int nq = T - q0 < RT_ATTN_BQ ? T - q0 : RT_ATTN_BQ;
    int kend = causal ? q0 + nq : T;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, kend, hd, scale, q + (size_t)q0 * ld, ld, k, ld, 0.0f, P,
                kend);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, kend, hd, 1.0f, dO + (size_t)q0 * ldo, ldo, v, ld, 0.0f,
                dP, kend);
    for (int i = 0; i < nq; i++) {
      float *p = P + (size_t)i * kend, *dp = dP + (size_t)i * kend;
      int nvis = causal ? q0 + i + 1 : kend;
      float mx = rt_max_row(p, nvis);
      float inv = 1.0f / rt_exp_row(p, p, nvis, mx);
      float a[8] = {0}, tail = 0.0f;
      int j = 0;
      for (; j + 8 <= nvis; j += 8)
        for (int u = 0; u < 8; u++) {
          float pj = p[j + u] * inv;
          p[j + u] = pj;
          a[u] += pj * dp[j + u];
        }
      for (; j < nvis; j++) {
        float pj = p[j] * inv;
        p[j] = pj;
        tail += pj * dp[j];
      }
      float D = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
      for (j = 0; j < nvis; j++)
        dp[j] = p[j] * (dp[j] - D);
      for (; j < kend; j++) /* masked: P = 0, so dS = 0 */
        p[j] = dp[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kend, hd, nq, 1.0f, P, kend, dO + (size_t)q0 * ldo, ldo, 1.0f,
                dv, ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, kend, scale, dP, kend, k, ld, 0.0f,
                dq + (size_t)q0 * ld, ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kend, hd, nq, scale, dP, kend, q + (size_t)q0 * ld, ld, 1.0f,
                dk, ld);
  }
}

typedef struct AttnDxCtx {
  float *dqkv;
  const float *qkv, *dy;
  int T, C, n_head, hd, causal;
  float scale;
  float *scratch;
  size_t slice;
  atomic_int next_slot; /* each chunk claims one scratch slice */
} AttnDxCtx;

static void attn_dx_tasks(void *p, int lo, int hi) {
  AttnDxCtx *a = p;
  int slot = atomic_fetch_add_explicit(&a->next_slot, 1, memory_order_relaxed);
  float *P = a->scratch + (size_t)slot * a->slice;
  float *dP = P + a->slice / 2; /* slice = 2 * bq * T rounded up to 16: each half holds bq * T */
  int C = a->C, T = a->T, hd = a->hd;
  size_t ld = 3 * (size_t)C;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    size_t off = (size_t)b * T * ld + (size_t)h * hd;
    const float *q = a->qkv + off;
    float *dq = a->dqkv + off;
    attn_dx_head(dq, dq + C, dq + 2 * C, q, q + C, q + 2 * C, a->dy + (size_t)b * T * C + (size_t)h * hd, (int)ld, C, T,
                 hd, a->causal, a->scale, P, dP);
  }
}

void rt_attention_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head, int causal,
                     float *scratch) {
  if (B <= 0 || T <= 0)
    return;
  int hd = C / n_head;
  AttnDxCtx a = {dqkv, qkv, dy, T, C, n_head, hd, causal, 1.0f / sqrtf((float)hd), scratch, attn_dx_slice(T), 0};
  int grain = T >= 16 ? 1 : B * n_head;
  rt_parallel_for(B * n_head, grain, attn_dx_tasks, &a);
}

void rt_attention_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                         int causal) {
  int hd = C / n_head;
  double scale = 1.0 / sqrt((double)hd);
  size_t TT = (size_t)(T > 0 ? T : 1) * (size_t)(T > 0 ? T : 1);
  /* test-only twin: allocation is fine. P, dS (T,T); O, dQ, dK, dV (T,hd) */
  double *P = malloc(TT * sizeof(double)), *dS = malloc(TT * sizeof(double));
  double *O = malloc((size_t)(T > 0 ? T : 1) * hd * 4 * sizeof(double));
  if (!P || !dS || !O) {
    free(P), free(dS), free(O);
    return;
  }
  double *dQ = O + (size_t)T * hd, *dK = dQ + (size_t)T * hd, *dV = dK + (size_t)T * hd;
  size_t ld = 3 * (size_t)C;
#define Q_(t, i) ((double)qkv[((size_t)b * T + (t)) * ld + (size_t)h * hd + (i)])
#define K_(t, i) ((double)qkv[((size_t)b * T + (t)) * ld + C + (size_t)h * hd + (i)])
#define V_(t, i) ((double)qkv[((size_t)b * T + (t)) * ld + 2 * (size_t)C + (size_t)h * hd + (i)])
#define DO_(t, i) ((double)dy[((size_t)b * T + (t)) * C + (size_t)h * hd + (i)])
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++) {
      /* forward: P (masked entries 0) and O = P V */
      for (int t = 0; t < T; t++) {
        double *p = P + (size_t)t * T, mx = -INFINITY, sum = 0;
        for (int s = 0; s < T; s++) {
          if (causal && s > t) {
            p[s] = -INFINITY;
            continue;
          }
          double d = 0;
          for (int i = 0; i < hd; i++)
            d += Q_(t, i) * K_(s, i);
          p[s] = d * scale;
          mx = p[s] > mx ? p[s] : mx;
        }
        for (int s = 0; s < T; s++)
          sum += (p[s] = exp(p[s] - mx));
        for (int s = 0; s < T; s++)
          p[s] /= sum;
        for (int i = 0; i < hd; i++) {
          double acc = 0;
          for (int s = 0; s < T; s++)
            acc += p[s] * V_(s, i);
          O[(size_t)t * hd + i] = acc;
        }
      }
      /* dS = P o (dO V^T - rowsum(dO o O)) */
      for (int t = 0; t < T; t++) {
        double D = 0;
        for (int i = 0; i < hd; i++)
          D += DO_(t, i) * O[(size_t)t * hd + i];
        for (int s = 0; s < T; s++) {
          double dp = 0;
          for (int i = 0; i < hd; i++)
            dp += DO_(t, i) * V_(s, i);
          dS[(size_t)t * T + s] = P[(size_t)t * T + s] * (dp - D);
        }
      }
      /* dV = P^T dO, dQ = scale dS K, dK = scale dS^T Q */
      for (int s = 0; s < T; s++)
        for (int i = 0; i < hd; i++) {
          double v = 0, kk = 0, qq = 0;
          for (int t = 0; t < T; t++) {
            v += P[(size_t)t * T + s] * DO_(t, i);
            kk += dS[(size_t)t * T + s] * Q_(t, i);
            qq += dS[(size_t)s * T + t] * K_(t, i);
          }
          dV[(size_t)s * hd + i] = v;
          dK[(size_t)s * hd + i] = kk * scale;
          dQ[(size_t)s * hd + i] = qq * scale;
        }
      for (int t = 0; t < T; t++)
        for (int i = 0; i < hd; i++) {
          float *row = dqkv + ((size_t)b * T + t) * ld + (size_t)h * hd + i;
          row[0] = (float)dQ[(size_t)t * hd + i];
          row[C] = (float)dK[(size_t)t * hd + i];
          row[2 * C] = (float)dV[(size_t)t * hd + i];
        }
    }
#undef Q_
#undef K_
#undef V_
#undef DO_
  free(P), free(dS), free(O);
}
