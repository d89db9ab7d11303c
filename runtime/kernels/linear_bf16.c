/* linear_bf16.c: the kernels that compute in bf16 with f32 accumulation on the CPU's matrix units
 * through the GEMM layer (runtime/gemm/: oneDNN on AMX or AVX512-BF16, our vdpbf16ps kernel, or
 * plain C):
 *   rt_linear_bf16     y = bf16(x) W^T + bias, W stored in bf16 (the compute pass, and training
 *                      with precision<bf16>);
 *   rt_matmul_nn_bf16  y = bf16(dy) W and rt_linear_dw_bf16, dW = bf16(dy)^T bf16(x): the
 *                      backward products of training with precision<bf16>;
 *   rt_embedding_bf16  the row gather of a bf16 table.
 * Each has a `_ref` twin (plain loops) that tests/unit/test_rt_bf16.c compares against.
 *
 * rt_linear_bf16 rounds x to bf16 (round to nearest even, rt_cast_f32_bf16) into the scratch,
 * block by block, then makes one rt_gemm call per block. The blocks are fixed by the shapes, so the
 * bits do not depend on the thread count (rt_gemm16_rows_block, kernels.h): row blocks with
 * the fused epilogue run while the rows are warm, or, below LIN_MIN_ROWS rows, column blocks of
 * W with the epilogue once at the end. */
#include "kernels.h"

#include <string.h>

#include "../gemm/gemm.h"

size_t rt_linear_bf16_scratch_floats(int M, int K) {
  size_t halves = (size_t)(M > 0 ? M : 1) * (size_t)(K > 0 ? K : 1);
  return rt_slice_floats((halves + 1) / 2);
}

typedef struct LinBf16Ctx {
  float *y;
  const float *x, *bias;
  const uint16_t *W;
  uint16_t *xh; /* x in bf16, (M,K) */
  int M, N, K;
  RtRangeFn epi;
  void *ctx;
} LinBf16Ctx;

/* rows [lo,hi): round them to bf16, bias pre-filled (beta = 1), the product, the epilogue */
static void lin16_rows(void *p, int lo, int hi) {
  const LinBf16Ctx *c = p;
  uint16_t *xh = c->xh + (size_t)lo * c->K;
  rt_cast_f32_bf16(xh, c->x + (size_t)lo * c->K, (size_t)(hi - lo) * c->K);
  float beta = rt_prefill_bias(c->y, c->bias, lo, hi, c->N, 0, c->N);
  rt_gemm(0, 1, hi - lo, c->N, c->K, RT_DT_BF16, xh, c->K, RT_DT_BF16, c->W, c->K, beta, c->y + (size_t)lo * c->N,
          c->N);
  if (c->epi)
    c->epi(c->ctx, lo, hi);
}

/* columns [lo,hi) of y (all M rows, x already in bf16): rows lo..hi of W */
static void lin16_cols(void *p, int lo, int hi) {
  const LinBf16Ctx *c = p;
  float beta = rt_prefill_bias(c->y, c->bias, 0, c->M, c->N, lo, hi);
  rt_gemm(0, 1, c->M, hi - lo, c->K, RT_DT_BF16, c->xh, c->K, RT_DT_BF16, c->W + (size_t)lo * c->K, c->K, beta,
          c->y + lo, c->N);
}

void rt_linear_bf16(float *y, const float *x, const uint16_t *W, const float *bias, int M, int N, int K,
                    RtRangeFn epi, void *ctx, float *scratch) {
  if (M <= 0 || N <= 0)
    return;
  if (K <= 0) { /* an empty product: f32's rt_linear fills the bias (or zeros) and runs epi */
    rt_linear(y, x, NULL, bias, M, N, 0, epi, ctx);
    return;
  }
  LinBf16Ctx c = {y, x, bias, W, (uint16_t *)scratch, M, N, K, epi, ctx};
  if (M < RT_LIN_MIN_ROWS) {
    rt_cast_f32_bf16(c.xh, x, (size_t)M * K);
    rt_parallel_blocks(N, rt_lin_cols_block(K), lin16_cols, &c);
    if (epi)
      epi(ctx, 0, M);
    return;
  }
  rt_parallel_blocks(M, rt_gemm16_rows_block(M), lin16_rows, &c);
}

void rt_linear_bf16_ref(float *y, const float *x, const uint16_t *W, const float *bias, int M, int N, int K) {
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double s = 0.0;
      for (int k = 0; k < K; k++)
        s += (double)rt_bf16_to_f32(rt_f32_to_bf16(x[(size_t)m * K + k])) * rt_bf16_to_f32(W[(size_t)n * K + k]);
      y[(size_t)m * N + n] = (float)(s + (bias ? bias[n] : 0.0));
    }
}

/* ---- the backward products in bf16 (precision<bf16>: training on the matrix units) ----------- */

/* Rounds rows [lo,hi) of an (M,C) f32 matrix into its bf16 copy (element-wise: any blocks give
 * the same bits). */
typedef struct RoundCtx {
  uint16_t *out;
  const float *x;
  int C;
} RoundCtx;

static void round_rows(void *p, int lo, int hi) {
  const RoundCtx *c = p;
  rt_cast_f32_bf16(c->out + (size_t)lo * c->C, c->x + (size_t)lo * c->C, (size_t)(hi - lo) * c->C);
}

static void round_matrix(uint16_t *out, const float *x, int M, int C) {
  RoundCtx c = {out, x, C};
  rt_parallel_blocks(M, rt_gemm_rows_block(M), round_rows, &c);
}

typedef struct Back16Ctx {
  float *out;
  const float *a;
  const uint16_t *W;
  uint16_t *ah, *bh; /* a (and, for dW, x) rounded to bf16 */
  int M, N, K;
  float beta;
} Back16Ctx;

size_t rt_matmul_nn_bf16_scratch_floats(int M, int N) { return rt_linear_bf16_scratch_floats(M, N); }

/* rows [lo,hi) of y = bf16(dy) W: rounded, then one GEMM NN while they are warm */
static void nn16_rows(void *p, int lo, int hi) {
  const Back16Ctx *c = p;
  uint16_t *ah = c->ah + (size_t)lo * c->N;
  rt_cast_f32_bf16(ah, c->a + (size_t)lo * c->N, (size_t)(hi - lo) * c->N);
  rt_gemm(0, 0, hi - lo, c->K, c->N, RT_DT_BF16, ah, c->N, RT_DT_BF16, c->W, c->K, 0.0f, c->out + (size_t)lo * c->K,
          c->K);
}

void rt_matmul_nn_bf16(float *y, const float *dy, const uint16_t *W, int M, int N, int K, float *scratch) {
  if (M <= 0 || N <= 0 || K <= 0) { /* nothing, or zeros: as f32's */
    rt_matmul_nn(y, NULL, NULL, M, N, K);
    return;
  }
  Back16Ctx c = {y, dy, W, (uint16_t *)scratch, NULL, M, N, K, 0.0f};
  rt_parallel_blocks(M, rt_gemm16_rows_block(M), nn16_rows, &c);
}

void rt_matmul_nn_bf16_ref(float *y, const float *dy, const uint16_t *W, int M, int N, int K) {
  for (int m = 0; m < M; m++)
    for (int k = 0; k < K; k++) {
      double acc = 0;
      for (int n = 0; n < N; n++)
        acc += (double)rt_bf16_to_f32(rt_f32_to_bf16(dy[(size_t)m * N + n])) * rt_bf16_to_f32(W[(size_t)n * K + k]);
      y[(size_t)m * K + k] = (float)acc;
    }
}

size_t rt_linear_dw_bf16_scratch_floats(int M, int N, int K) {
  return rt_linear_bf16_scratch_floats(M, N) + rt_linear_bf16_scratch_floats(M, K);
}

/* rows [lo,hi) of dW = bf16(dy)^T bf16(x): dy's columns lo..hi read in place (transposed) */
static void dw16_rows(void *p, int lo, int hi) {
  const Back16Ctx *c = p;
  rt_gemm(1, 0, hi - lo, c->K, c->M, RT_DT_BF16, c->ah + lo, c->N, RT_DT_BF16, c->bh, c->K, c->beta,
          c->out + (size_t)lo * c->K, c->K);
}

void rt_linear_dw_bf16_acc(float *dW, const float *dy, const float *x, int M, int N, int K, int accumulate,
                           float *scratch) {
  if (M <= 0 || N <= 0 || K <= 0) { /* nothing, or zeros: as f32's */
    rt_linear_dw_acc(dW, NULL, NULL, M, N, K, accumulate);
    return;
  }
  uint16_t *dyh = (uint16_t *)scratch, *xh = (uint16_t *)(scratch + rt_linear_bf16_scratch_floats(M, N));
  round_matrix(dyh, dy, M, N);
  round_matrix(xh, x, M, K);
  Back16Ctx c = {dW, NULL, NULL, dyh, xh, M, N, K, accumulate ? 1.0f : 0.0f};
  rt_parallel_blocks(N, rt_gemm16_rows_block(N), dw16_rows, &c);
}

void rt_linear_dw_bf16(float *dW, const float *dy, const float *x, int M, int N, int K, float *scratch) {
  rt_linear_dw_bf16_acc(dW, dy, x, M, N, K, 0, scratch);
}

void rt_linear_dw_bf16_ref(float *dW, const float *dy, const float *x, int M, int N, int K) {
  for (int n = 0; n < N; n++)
    for (int k = 0; k < K; k++) {
      double acc = 0;
      for (int m = 0; m < M; m++)
        acc += (double)rt_bf16_to_f32(rt_f32_to_bf16(dy[(size_t)m * N + n])) *
               rt_bf16_to_f32(rt_f32_to_bf16(x[(size_t)m * K + k]));
      dW[(size_t)n * K + k] = (float)acc;
    }
}

/* ---- embedding of a bf16 table: ids (n), table (V,C) -> out (n,C) bf16 ----------------------- */

int rt_embedding_bf16(uint16_t *out, const int32_t *ids, const uint16_t *table, int n, int V, int C, RtError *err) {
  return rt_gather_rows(out, ids, table, n, V, C, sizeof(uint16_t), err);
}

int rt_embedding_bf16_ref(uint16_t *out, const int32_t *ids, const uint16_t *table, int n, int V, int C,
                          RtError *err) {
  return rt_gather_rows_ref(out, ids, table, n, V, C, sizeof(uint16_t), err);
}
