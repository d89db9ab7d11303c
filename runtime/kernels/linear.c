/* linear.c: the linear layer and its backward, the f32 GEMMs of the runtime. Forward: rt_linear
 * (rt_gemm / sgemv split over the pool, with the generated code's fused epilogue run while the
 * rows are in cache) and rt_matmul. Backward: the input gradient y = dy W (rt_matmul_nn) and the
 * weight gradient dW = dy^T x (rt_linear_dw). Each has a naive serial `_ref` twin (plain loops,
 * double accumulation) that tests/unit/test_rt_kernels.c and test_rt_backward.c compare against.
 *
 * Threading: every GEMM splits its output into blocks fixed by the shapes (rt_gemm_rows_block,
 * rt_lin_cols_block in kernels.h) and makes one single-threaded call of the GEMM layer (rt_gemm, runtime/gemm/:
 * OpenBLAS's sgemm by default for f32) per block, the blocks spread over the pool
 * (rt_parallel_blocks). No reduction is ever split (K, and dW's M, stay inside one call), and the
 * calls the library sees (their sizes and operands) are the same for any thread count, so the
 * results are too, bit for bit, whatever the library's blocking does inside a call
 * (tests/unit/test_rt_threads.c records the calls).
 *
 * rt_linear's one-row column slices (decode, M == 1) call cblas_sgemv directly when the f32 GEMM
 * is OpenBLAS (OpenBLAS's sgemm at M = 1 packs all of W first, ~3x slower); this special case lives
 * here rather than in the layer because only here is M == 1 the whole problem: the layer also sees
 * one-row last blocks of the row path, which must stay sgemm calls for today's bits. */
#include "kernels.h"

#include "../gemm/gemm.h"

#include <cblas.h>
#include <string.h>

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
  float beta = rt_prefill_bias(c->y, c->bias, lo, hi, c->N, 0, c->N);
  rt_gemm(0, 1, hi - lo, c->N, c->K, RT_DT_F32, c->x + (size_t)lo * c->K, c->K, RT_DT_F32, c->W, c->K, beta, y,
          c->N);
  if (c->epi)
    c->epi(c->ctx, lo, hi);
}

/* columns [lo,hi) of y (all M rows): rows lo..hi of W. sgemv for M == 1 when the f32 GEMM is
 * OpenBLAS (above), rt_gemm otherwise. No epilogue here. */
static void lin_cols(void *p, int lo, int hi) {
  const LinCtx *c = p;
  float beta = rt_prefill_bias(c->y, c->bias, 0, c->M, c->N, lo, hi);
  if (c->M == 1 && rt_gemm_selected(RT_DT_F32) == RT_GEMM_OPENBLAS)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, hi - lo, c->K, 1.0f, c->W + (size_t)lo * c->K, c->K, c->x, 1, beta,
                c->y + lo, 1);
  else
    rt_gemm(0, 1, c->M, hi - lo, c->K, RT_DT_F32, c->x, c->K, RT_DT_F32, c->W + (size_t)lo * c->K, c->K, beta,
            c->y + lo, c->N);
}

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
  if (M < RT_LIN_MIN_ROWS) {
    /* decode and small batches: too few rows to split, split the output columns (W's rows)
     * instead; epilogue once at the end */
    rt_parallel_blocks(N, rt_lin_cols_block(K), lin_cols, &c);
    if (epi)
      epi(ctx, 0, M);
    return;
  }
  rt_parallel_blocks(M, rt_gemm_rows_block(M), lin_rows, &c);
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

/* ---- linear backward: y (M,K) = dy (M,N) W (N,K); dW (N,K) = dy^T x ------------------------- */

typedef struct GemmCtx {
  float *out;
  const float *a, *b;
  int M, N, K;
  float beta; /* dW only: 0 overwrites, 1 accumulates */
} GemmCtx;

/* rows [lo,hi) of y = dy W: one GEMM NN */
static void nn_rows(void *p, int lo, int hi) {
  const GemmCtx *c = p;
  rt_gemm(0, 0, hi - lo, c->K, c->N, RT_DT_F32, c->a + (size_t)lo * c->N, c->N, RT_DT_F32, c->b, c->K, 0.0f,
          c->out + (size_t)lo * c->K, c->K);
}

void rt_matmul_nn(float *y, const float *dy, const float *W, int M, int N, int K) {
  if (M <= 0 || K <= 0)
    return;
  if (N <= 0) {
    memset(y, 0, (size_t)M * K * sizeof(float));
    return;
  }
  GemmCtx c = {y, dy, W, M, N, K, 0.0f};
  rt_parallel_blocks(M, rt_gemm_rows_block(M), nn_rows, &c);
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
  rt_gemm(1, 0, hi - lo, c->K, c->M, RT_DT_F32, c->a + lo, c->N, RT_DT_F32, c->b, c->K, c->beta,
          c->out + (size_t)lo * c->K, c->K);
}

void rt_linear_dw_acc(float *dW, const float *dy, const float *x, int M, int N, int K, int accumulate) {
  if (N <= 0 || K <= 0)
    return;
  if (M <= 0) {
    if (!accumulate)
      memset(dW, 0, (size_t)N * K * sizeof(float));
    return;
  }
  GemmCtx c = {dW, dy, x, M, N, K, accumulate ? 1.0f : 0.0f};
  rt_parallel_blocks(N, rt_gemm_rows_block(N), dw_rows, &c);
}

void rt_linear_dw(float *dW, const float *dy, const float *x, int M, int N, int K) {
  rt_linear_dw_acc(dW, dy, x, M, N, K, 0);
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

/* ---- the epilogue of the kernels that fill y first (linear_quant.c, linear_sparse.c) ---- */

typedef struct EpiRun {
  RtRangeFn epi;
  void *ctx;
} EpiRun;

static void epi_rows(void *p, int lo, int hi) {
  const EpiRun *e = p;
  e->epi(e->ctx, lo, hi);
}

void rt_linear_epilogue(RtRangeFn epi, void *ctx, int M) {
  if (!epi) return;
  if (M < RT_LIN_MIN_ROWS) {
    epi(ctx, 0, M);
    return;
  }
  EpiRun e = {epi, ctx};
  rt_parallel_blocks(M, rt_gemm_rows_block(M), epi_rows, &e);
}
