/* test_rt_bf16.c: the kernels that read bf16-stored weights (runtime/kernels/linear_bf16.c).
 *
 * rt_linear_bf16 against its twin rt_linear_bf16_ref (the same bf16-rounded inputs, products
 * summed in double): on the row path (M >= 32, blocks with a fused epilogue and a bias) and the
 * column path (M < 32, M == 1), with shapes that are not multiples of 16, for 1, 2 and 3 threads,
 * with the error bound of f32 accumulation of exact bf16 products: per element
 * |y - ref| <= (K + 4) 2^-24 sum_k |bf16(x_k)| |w_k| + |bias| 2^-24. Then: the same bits for 1..4
 * threads; the result is the f32 product of the rounded inputs, not of the unrounded ones (an
 * input chosen so the rounding is visible); rt_embedding_bf16 gathers rows like its twin and
 * reports a bad id; the backward products rt_matmul_nn_bf16 and rt_linear_dw_bf16 against their
 * twins with the same bound, and rt_linear_xent_bf16 against the unfused bf16 kernels (bit for bit)
 * and its twin. The GEMM layer underneath is chosen by the CPU and MODELC_GEMM
 * (tests/CMakeLists.txt runs this program once more with MODELC_CPU=portable: the plain-C path). */
#include "rt_test_util.h"

#include <check.h>
#include <stdio.h>

#include "check_run.h"


static void fill_bf16(uint16_t *w, size_t n, uint64_t seed) {
  float *t = falloc(n);
  fill_uniform(t, n, -1, 1, seed);
  rt_cast_f32_bf16(w, t, n);
  free(t);
}

/* adds 1 to every element of rows [lo,hi) of an (M, N) f32 matrix: a stand-in epilogue */
typedef struct Epi {
  float *y;
  int N;
} Epi;
static void add_one(void *p, int lo, int hi) {
  const Epi *e = p;
  for (size_t i = (size_t)lo * e->N; i < (size_t)hi * e->N; i++) e->y[i] += 1.0f;
}

static void check_linear(int M, int N, int K, int with_bias, int with_epi, uint64_t seed) {
  float *x = falloc((size_t)M * K), *bias = with_bias ? falloc(N) : NULL;
  uint16_t *W = malloc((size_t)N * K * sizeof(uint16_t));
  float *y = falloc((size_t)M * N), *yr = falloc((size_t)M * N);
  float *scratch = falloc(rt_linear_bf16_scratch_floats(M, K));
  fill_uniform(x, (size_t)M * K, -2, 2, seed);
  fill_bf16(W, (size_t)N * K, seed + 1);
  if (bias) fill_uniform(bias, N, -1, 1, seed + 2);
  Epi e = {y, N};
  rt_linear_bf16(y, x, W, bias, M, N, K, with_epi ? add_one : NULL, &e, scratch);
  rt_linear_bf16_ref(yr, x, W, bias, M, N, K);
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double mag = 0;
      for (int k = 0; k < K; k++)
        mag += fabs(rt_bf16_to_f32(rt_f32_to_bf16(x[(size_t)m * K + k]))) * fabs(rt_bf16_to_f32(W[(size_t)n * K + k]));
      double want = yr[(size_t)m * N + n] + (with_epi ? 1.0 : 0.0);
      double bound = (K + 4) * 0x1p-24 * mag + (bias ? fabs(bias[n]) : 0) * 0x1p-24 + (with_epi ? 0x1p-23 * fabs(want) : 0);
      double d = fabs(y[(size_t)m * N + n] - want);
      ck_assert_msg(d <= bound + 1e-30, "M=%d N=%d K=%d [%d,%d]: %.9g vs ref %.9g (bound %.3g)", M, N, K, m, n,
                    y[(size_t)m * N + n], want, bound);
    }
  free(x), free(bias), free(W), free(y), free(yr), free(scratch);
}

START_TEST(linear_vs_ref) {
  rt_set_threads(_i);
  check_linear(300, 70, 45, 1, 1, 1); /* rows: blocks of 48, a bias and an epilogue */
  check_linear(64, 33, 130, 0, 0, 2);
  check_linear(7, 200, 37, 1, 1, 3);  /* columns: few rows */
  check_linear(1, 1000, 19, 1, 0, 4); /* decode */
  check_linear(40, 5, 1, 0, 1, 5);    /* K = 1 */
}
END_TEST

START_TEST(linear_same_bits_any_threads) {
  enum { M = 333, N = 96, K = 80 };
  float *x = falloc((size_t)M * K), *scratch = falloc(rt_linear_bf16_scratch_floats(M, K));
  uint16_t *W = malloc((size_t)N * K * sizeof(uint16_t));
  fill_uniform(x, (size_t)M * K, -2, 2, 9);
  fill_bf16(W, (size_t)N * K, 10);
  float *y[4];
  for (int t = 1; t <= 4; t++) {
    rt_set_threads(t);
    y[t - 1] = falloc((size_t)M * N);
    rt_linear_bf16(y[t - 1], x, W, NULL, M, N, K, NULL, NULL, scratch);
    if (t > 1) ck_assert_msg(memcmp(y[0], y[t - 1], (size_t)M * N * sizeof(float)) == 0, "%d threads differ", t);
  }
  for (int t = 0; t < 4; t++) free(y[t]);
  free(x), free(W), free(scratch);
}
END_TEST

/* x = 1 + 2^-10 rounds to 1 in bf16 (8 bits of mantissa): the product is 1 * w, not (1 + 2^-10) w */
START_TEST(linear_rounds_the_input) {
  enum { M = 2, N = 3, K = 4 };
  float x[M * K], y[M * N], scratch[64];
  uint16_t W[N * K];
  for (int i = 0; i < M * K; i++) x[i] = 1.0f + 0x1p-10f;
  for (int i = 0; i < N * K; i++) W[i] = rt_f32_to_bf16(0.5f * (float)(i % 5 + 1));
  ck_assert_uint_le(rt_linear_bf16_scratch_floats(M, K), 64);
  rt_linear_bf16(y, x, W, NULL, M, N, K, NULL, NULL, scratch);
  for (int n = 0; n < N; n++) {
    float want = 0;
    for (int k = 0; k < K; k++) want += rt_bf16_to_f32(W[n * K + k]);
    ck_assert_msg(y[n] == want, "column %d: %.9g, want %.9g (the product of the rounded input)", n, y[n], want);
  }
}
END_TEST

/* Per element of an f32 sum of exact products of bf16 values: |got - ref| <= (n + 4) 2^-24 sum |a b| */
static void check_close(const float *got, const float *ref, const double *mag, size_t count, int n, const char *what) {
  for (size_t i = 0; i < count; i++) {
    double bound = (n + 4) * 0x1p-24 * mag[i];
    ck_assert_msg(fabs(got[i] - ref[i]) <= bound + 1e-30, "%s [%zu]: %.9g vs ref %.9g (bound %.3g)", what, i, got[i],
                  ref[i], bound);
  }
}

static double r16(float v) { return rt_bf16_to_f32(rt_f32_to_bf16(v)); }

/* y = bf16(dy) W (the input gradient) and dW = bf16(dy)^T bf16(x) (the weight gradient) against
 * their twins, and the same bits for 1..4 threads */
static void check_backward(int M, int N, int K, uint64_t seed) {
  float *dy = falloc((size_t)M * N), *x = falloc((size_t)M * K);
  uint16_t *W = malloc((size_t)N * K * sizeof(uint16_t));
  fill_uniform(dy, (size_t)M * N, -1, 1, seed);
  fill_uniform(x, (size_t)M * K, -2, 2, seed + 1);
  fill_bf16(W, (size_t)N * K, seed + 2);
  size_t sn = rt_matmul_nn_bf16_scratch_floats(M, N), sd = rt_linear_dw_bf16_scratch_floats(M, N, K);
  float *scratch = falloc(sn > sd ? sn : sd);
  float *y[4], *dw[4], *yr = falloc((size_t)M * K), *dwr = falloc((size_t)N * K);
  double *my = calloc((size_t)M * K, sizeof(double)), *mw = calloc((size_t)N * K, sizeof(double));
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++)
      for (int k = 0; k < K; k++) {
        double a = fabs(r16(dy[(size_t)m * N + n]));
        my[(size_t)m * K + k] += a * fabs(rt_bf16_to_f32(W[(size_t)n * K + k]));
        mw[(size_t)n * K + k] += a * fabs(r16(x[(size_t)m * K + k]));
      }
  rt_matmul_nn_bf16_ref(yr, dy, W, M, N, K);
  rt_linear_dw_bf16_ref(dwr, dy, x, M, N, K);
  for (int t = 1; t <= 4; t++) {
    rt_set_threads(t);
    y[t - 1] = falloc((size_t)M * K);
    dw[t - 1] = falloc((size_t)N * K);
    rt_matmul_nn_bf16(y[t - 1], dy, W, M, N, K, scratch);
    rt_linear_dw_bf16(dw[t - 1], dy, x, M, N, K, scratch);
    if (t == 1) {
      check_close(y[0], yr, my, (size_t)M * K, N, "matmul_nn_bf16");
      check_close(dw[0], dwr, mw, (size_t)N * K, M, "linear_dw_bf16");
    } else {
      ck_assert_msg(memcmp(y[0], y[t - 1], (size_t)M * K * sizeof(float)) == 0, "dx: %d threads differ", t);
      ck_assert_msg(memcmp(dw[0], dw[t - 1], (size_t)N * K * sizeof(float)) == 0, "dW: %d threads differ", t);
    }
  }
  for (int t = 0; t < 4; t++) free(y[t]), free(dw[t]);
  free(dy), free(x), free(W), free(scratch), free(yr), free(dwr), free(my), free(mw);
}

START_TEST(backward_vs_ref) {
  check_backward(300, 70, 45, 21);
  check_backward(33, 130, 17, 22);
  check_backward(5, 9, 200, 23);
  check_backward(1, 1, 1, 24);
}
END_TEST

/* The fused head with bf16 products: with one chunk it is the unfused bf16 kernels' bits (logits by
 * rt_linear_bf16, the loss by rt_cross_entropy, dh by rt_matmul_nn_bf16, dW by rt_linear_dw_bf16);
 * in chunks, dW's chunk sums agree with the twin (which rounds the same operands) to 1e-3 of the
 * largest gradient (a dlogit rounded from f32 or from double can land on the other bf16 neighbour). */
START_TEST(linear_xent_bf16) {
  enum { R = 150, V = 61, C = 40 };
  float *h = falloc((size_t)R * C), *dh = falloc((size_t)R * C), *dW = falloc((size_t)V * C);
  float *dh1 = falloc((size_t)R * C), *dW1 = falloc((size_t)V * C), *lg = falloc((size_t)R * V);
  float *dhr = falloc((size_t)R * C), *dWr = falloc((size_t)V * C);
  uint16_t *W = malloc((size_t)V * C * sizeof(uint16_t));
  int32_t tg[R];
  fill_uniform(h, (size_t)R * C, -2, 2, 31);
  fill_bf16(W, (size_t)V * C, 32);
  for (int r = 0; r < R; r++) tg[r] = (int32_t)((r * 7u) % V);
  size_t ns = rt_linear_xent_bf16_scratch_floats(R, V, C);
  float *scratch = falloc(ns), loss, loss1, lossr;
  rt_set_threads(2);
  rt_linear_xent_bf16(dh, dW, &loss, h, W, tg, R, V, C, 1.0f, R, scratch);
  rt_linear_bf16(lg, h, W, NULL, R, V, C, NULL, NULL, scratch);
  loss1 = rt_cross_entropy(lg, tg, R, V);
  rt_cross_entropy_grad(lg, lg, tg, R, V, 1.0f);
  rt_matmul_nn_bf16(dh1, lg, W, R, V, C, scratch);
  rt_linear_dw_bf16(dW1, lg, h, R, V, C, scratch);
  ck_assert_msg(loss == loss1, "loss %.9g vs unfused %.9g", loss, loss1);
  ck_assert(memcmp(dh, dh1, (size_t)R * C * sizeof(float)) == 0);
  ck_assert(memcmp(dW, dW1, (size_t)V * C * sizeof(float)) == 0);
  rt_linear_xent_bf16(dh, dW, &loss, h, W, tg, R, V, C, 1.0f, 32, scratch); /* chunks of 32 rows */
  rt_linear_xent_bf16_ref(dhr, dWr, &lossr, h, W, tg, R, V, C, 1.0f);
  ck_assert_msg(fabs(loss - lossr) <= 1e-6 * fabs(lossr), "loss %.9g vs ref %.9g", loss, lossr);
  double mh = 0, mw = 0, eh = 0, ew = 0;
  for (size_t i = 0; i < (size_t)R * C; i++) mh = fmax(mh, fabs(dhr[i])), eh = fmax(eh, fabs(dh[i] - dhr[i]));
  for (size_t i = 0; i < (size_t)V * C; i++) mw = fmax(mw, fabs(dWr[i])), ew = fmax(ew, fabs(dW[i] - dWr[i]));
  printf("linear_xent_bf16 vs ref: dh %.3g, dW %.3g of the largest\n", eh / mh, ew / mw);
  ck_assert_msg(eh <= 1e-3 * mh && ew <= 1e-3 * mw, "dh %.3g, dW %.3g of the largest", eh / mh, ew / mw);
  free(h), free(dh), free(dW), free(dh1), free(dW1), free(lg), free(dhr), free(dWr), free(W), free(scratch);
}
END_TEST

START_TEST(embedding_bf16) {
  enum { n = 600, V = 50, C = 24 };
  int32_t ids[n];
  uint16_t *table = malloc((size_t)V * C * 2), *out = malloc((size_t)n * C * 2), *ref = malloc((size_t)n * C * 2);
  fill_bf16(table, (size_t)V * C, 11);
  for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 31u) % V);
  RtError err;
  rt_set_threads(3);
  ck_assert_int_eq(rt_embedding_bf16(out, ids, table, n, V, C, &err), 0);
  ck_assert_int_eq(rt_embedding_bf16_ref(ref, ids, table, n, V, C, &err), 0);
  ck_assert(memcmp(out, ref, (size_t)n * C * 2) == 0);
  ids[417] = V; /* a bad id: a zero row, the others written, an error naming it */
  ck_assert_int_eq(rt_embedding_bf16(out, ids, table, n, V, C, &err), -1);
  ck_assert_msg(strstr(err.msg, "token id 50 at position 417"), "%s", err.msg);
  for (int c = 0; c < C; c++) ck_assert_uint_eq(out[417 * C + c], 0);
  ck_assert(memcmp(out, ref, (size_t)417 * C * 2) == 0);
  free(table), free(out), free(ref);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_bf16");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, linear_vs_ref, 1, 4); /* _i = 1..3 threads */
  tcase_add_test(tc, linear_same_bits_any_threads);
  tcase_add_test(tc, linear_rounds_the_input);
  tcase_add_test(tc, embedding_bf16);
  tcase_add_test(tc, backward_vs_ref);
  tcase_add_test(tc, linear_xent_bf16);
  suite_add_tcase(s, tc);
  return check_run(s);
}
