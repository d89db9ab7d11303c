/* test_rt_kernels.c: every dense kernel of runtime/kernels.c against its _ref twin on random inputs
 * of awkward sizes (odd row counts, C not a multiple of 8), by normalised error; plus the
 * embedding's out-of-range report and the in-place forms. */
#include "rt_test_util.h"

#include <check.h>
#include <stdio.h>

static void check_matmul(int M, int N, int K, int with_bias, uint64_t seed) {
  float *x = falloc((size_t)M * K), *W = falloc((size_t)N * K), *b = falloc((size_t)N);
  float *y = falloc((size_t)M * N), *yr = falloc((size_t)M * N);
  fill_uniform(x, (size_t)M * K, -1, 1, seed);
  fill_uniform(W, (size_t)N * K, -1, 1, seed + 1);
  fill_uniform(b, (size_t)N, -1, 1, seed + 2);
  rt_matmul(y, x, W, with_bias ? b : NULL, M, N, K);
  rt_matmul_ref(yr, x, W, with_bias ? b : NULL, M, N, K);
  double e = norm_err(y, yr, (size_t)M * N);
  ck_assert_msg(e < 1e-5, "matmul %dx%dx%d bias=%d: normalised error %g", M, N, K, with_bias, e);
  free(x), free(W), free(b), free(y), free(yr);
}

START_TEST(matmul_vs_ref) {
  check_matmul(7, 13, 37, 0, 1);
  check_matmul(7, 13, 37, 1, 2);
  check_matmul(1, 1, 1, 1, 3);
  check_matmul(65, 129, 383, 1, 4);
  check_matmul(3, 5, 0, 1, 5); /* K = 0: y = bias */
}
END_TEST

START_TEST(embedding_and_positions) {
  enum { V = 11, C = 13, B = 2, T = 5, TMAX = 9 };
  float table[V * C], pos[TMAX * C], out[B * T * C], ref[B * T * C];
  int32_t ids[B * T] = {0, 10, 3, 3, 7, 1, 2, 9, 4, 5};
  fill_uniform(table, V * C, -1, 1, 10);
  fill_uniform(pos, TMAX * C, -1, 1, 11);
  RtError err = {{0}};
  ck_assert_int_eq(rt_embedding(out, ids, table, B * T, V, C, &err), 0);
  ck_assert_int_eq(rt_embedding_ref(ref, ids, table, B * T, V, C, &err), 0);
  ck_assert(memcmp(out, ref, sizeof out) == 0);
  rt_add_positions(out, pos, B, T, C, 3);
  rt_add_positions_ref(ref, pos, B, T, C, 3);
  ck_assert(norm_err(out, ref, B * T * C) == 0.0);
  ck_assert(out[C + 2] == table[10 * C + 2] + pos[4 * C + 2]);

  /* out-of-range ids: zero rows, other rows written, error names id and position */
  ids[4] = 11;
  ids[6] = -1;
  memset(out, 0x7f, sizeof out);
  ck_assert_int_eq(rt_embedding(out, ids, table, B * T, V, C, &err), -1);
  ck_assert_msg(strstr(err.msg, "token id 11 at position 4") != NULL, "%s", err.msg);
  for (int c = 0; c < C; c++) {
    ck_assert(out[4 * C + c] == 0.0f);
    ck_assert(out[6 * C + c] == 0.0f);
    ck_assert(out[5 * C + c] == table[1 * C + c]);
  }
  ck_assert_int_eq(rt_embedding_ref(ref, ids, table, B * T, V, C, NULL), -1);
  ck_assert(memcmp(out, ref, sizeof out) == 0);
}
END_TEST

static void check_norms(int R, int C, float offset, uint64_t seed) {
  size_t n = (size_t)R * C;
  float *x = falloc(n), *g = falloc((size_t)C), *b = falloc((size_t)C), *y = falloc(n), *yr = falloc(n);
  float *m = falloc((size_t)R), *mr = falloc((size_t)R), *s = falloc((size_t)R), *sr = falloc((size_t)R);
  fill_uniform(x, n, offset - 1, offset + 1, seed);
  fill_uniform(g, (size_t)C, 0.5f, 1.5f, seed + 1);
  fill_uniform(b, (size_t)C, -0.5f, 0.5f, seed + 2);
  rt_layernorm(y, m, s, x, g, b, R, C, 1e-5f);
  rt_layernorm_ref(yr, mr, sr, x, g, b, R, C, 1e-5f);
  ck_assert_msg(norm_err(y, yr, n) < 2e-5, "layernorm R=%d C=%d offset=%g: %g", R, C, offset, norm_err(y, yr, n));
  ck_assert(max_rel_err(m, mr, (size_t)R, 1e-3) < 1e-5);
  ck_assert(max_rel_err(s, sr, (size_t)R, 1e-3) < 1e-4);
  rt_layernorm(y, NULL, NULL, x, g, NULL, R, C, 1e-5f);
  rt_layernorm_ref(yr, NULL, NULL, x, g, NULL, R, C, 1e-5f);
  ck_assert(norm_err(y, yr, n) < 2e-5);
  memcpy(y, x, n * sizeof(float)); /* in place */
  rt_layernorm(y, NULL, NULL, y, g, b, R, C, 1e-5f);
  rt_layernorm_ref(yr, NULL, NULL, x, g, b, R, C, 1e-5f);
  ck_assert(norm_err(y, yr, n) < 2e-5);

  rt_rmsnorm(y, s, x, g, R, C, 1e-6f);
  rt_rmsnorm_ref(yr, sr, x, g, R, C, 1e-6f);
  ck_assert_msg(norm_err(y, yr, n) < 1e-5, "rmsnorm: %g", norm_err(y, yr, n));
  ck_assert(max_rel_err(s, sr, (size_t)R, 1e-6) < 1e-5);
  free(x), free(g), free(b), free(y), free(yr), free(m), free(mr), free(s), free(sr);
}

START_TEST(norms_vs_ref) {
  check_norms(5, 37, 0.0f, 20);
  check_norms(3, 385, 0.0f, 21);
  check_norms(7, 1, 0.0f, 22);
  check_norms(9, 771, 100.0f, 23); /* large mean: the two-pass variance must not cancel */
}
END_TEST

typedef void (*Act)(float *, const float *, size_t);

static void check_act(const char *name, Act fast, Act ref, double tol) {
  enum { N = 1001 };
  float x[N], y[N], yr[N];
  fill_uniform(x, N, -8, 8, 30);
  x[0] = 0.0f, x[1] = -30.0f, x[2] = 30.0f, x[3] = -100.0f;
  fast(y, x, N);
  ref(yr, x, N);
  double e = max_rel_err(y, yr, N, 1e-3);
  ck_assert_msg(e < tol, "%s: max relative error %g", name, e);
  fast(x, x, N); /* in place */
  ck_assert(memcmp(x, y, sizeof y) == 0);
}

START_TEST(activations_vs_ref) {
  check_act("gelu", rt_gelu, rt_gelu_ref, 1e-5);
  check_act("gelu_tanh", rt_gelu_tanh, rt_gelu_tanh_ref, 1e-5);
  check_act("relu", rt_relu, rt_relu_ref, 0.0 + 1e-30);
  check_act("silu", rt_silu, rt_silu_ref, 1e-5);
  /* gelu exact and tanh approximation agree to ~1e-3 */
  float x[5] = {-3, -1, 0, 1, 3}, a[5], b[5];
  rt_gelu(a, x, 5);
  rt_gelu_tanh(b, x, 5);
  for (int i = 0; i < 5; i++)
    ck_assert(fabsf(a[i] - b[i]) < 2e-3f);
  ck_assert(fabsf(a[3] - 0.8413447f) < 1e-6f);

  enum { N = 333 };
  float p[N], q[N], y[N], yr[N];
  fill_uniform(p, N, -8, 8, 31);
  fill_uniform(q, N, -2, 2, 32);
  rt_swiglu(y, p, q, N);
  rt_swiglu_ref(yr, p, q, N);
  ck_assert(max_rel_err(y, yr, N, 1e-3) < 1e-5);
  rt_swiglu(p, p, q, N);
  ck_assert(memcmp(p, y, sizeof y) == 0);
}
END_TEST

START_TEST(softmax_vs_ref) {
  enum { R = 4, C = 257 };
  float x[R * C], y[R * C], yr[R * C];
  fill_uniform(x, R * C, -50, 50, 40);
  for (int c = 0; c < C; c++)
    x[3 * C + c] = -INFINITY; /* fully masked row */
  x[2 * C + 5] = -INFINITY;
  rt_softmax(y, x, R, C);
  rt_softmax_ref(yr, x, R, C);
  ck_assert(max_rel_err(y, yr, R * C, 1e-6) < 1e-5);
  for (int r = 0; r < 3; r++) {
    double s = 0;
    for (int c = 0; c < C; c++)
      s += y[r * C + c];
    ck_assert(fabs(s - 1.0) < 1e-5);
  }
  ck_assert(y[2 * C + 5] == 0.0f);
  for (int c = 0; c < C; c++)
    ck_assert(y[3 * C + c] == 0.0f);
  rt_softmax(x, x, R, C);
  ck_assert(memcmp(x, y, sizeof y) == 0);
}
END_TEST

START_TEST(halfs_and_tokenizer) {
  ck_assert(rt_f16_to_f32(0x3c00) == 1.0f);
  ck_assert(rt_f16_to_f32(0xc000) == -2.0f);
  ck_assert(rt_f16_to_f32(0x0001) == 5.9604644775390625e-8f);
  ck_assert(isinf(rt_f16_to_f32(0x7c00)));
  ck_assert(rt_bf16_to_f32(rt_f32_to_bf16(1.5f)) == 1.5f);
  ck_assert(rt_f32_to_bf16(1.00390625f) == 0x3f80); /* tie rounds to even */
  const char *s = "h\xc3\xa9llo\n";
  int32_t ids[8];
  char back[8];
  ck_assert_uint_eq(rt_byte_encode(ids, s, 7), 7);
  ck_assert_int_eq(ids[1], 0xc3);
  ck_assert_int_eq(rt_byte_decode(back, ids, 7, NULL), 0);
  ck_assert(memcmp(back, s, 7) == 0);
  RtError err;
  ids[3] = 256;
  ck_assert_int_eq(rt_byte_decode(back, ids, 7, &err), -1);
  ck_assert_msg(strstr(err.msg, "id 256 at position 3") != NULL, "%s", err.msg);
  double t0 = rt_now_seconds(), t1 = rt_now_seconds();
  ck_assert(t1 >= t0 && t0 > 0);
}
END_TEST

/* Sinusoidal positions against the per-element double formula, including an odd width. */
START_TEST(sinusoid_vs_ref) {
  int sizes[][2] = {{128, 64}, {7, 5}, {1, 2}};
  for (int k = 0; k < 3; k++) {
    int T = sizes[k][0], C = sizes[k][1];
    float *a = falloc((size_t)T * C), *b = falloc((size_t)T * C);
    rt_sinusoid(a, T, C);
    rt_sinusoid_ref(b, T, C);
    ck_assert_msg(norm_err(a, b, (size_t)T * C) < 1e-6, "sinusoid T=%d C=%d", T, C);
    ck_assert(a[0] == 0.0f && (C < 2 || a[1] == 1.0f)); /* position 0: sin 0, cos 0 */
    free(a), free(b);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_kernels");
  TCase *tc = tcase_create("kernels");
  tcase_add_test(tc, matmul_vs_ref);
  tcase_add_test(tc, embedding_and_positions);
  tcase_add_test(tc, norms_vs_ref);
  tcase_add_test(tc, activations_vs_ref);
  tcase_add_test(tc, softmax_vs_ref);
  tcase_add_test(tc, halfs_and_tokenizer);
  tcase_add_test(tc, sinusoid_vs_ref);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
