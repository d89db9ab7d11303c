/* test_rt_kernels.c: every dense forward kernel of runtime/kernels/ (linear, embedding, norm,
 * activation, softmax, rope) against its _ref twin on random inputs of awkward sizes (odd row counts, C
 * not a multiple of 8), by normalised error; plus the embedding's out-of-range report and the
 * in-place forms. The kernel tests are loop tests run with 1, 2 and 3 pool threads
 * (rt_set_threads(_i)), with sizes large enough to take the parallel paths; rt_expf is checked
 * against exp() in double. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
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
  rt_set_threads(_i);
  ck_assert_int_eq(rt_threads(), _i);
  check_matmul(1, 1000, 300, 1, 6);  /* decode: sgemv split over N */
  check_matmul(1, 77, 5, 0, 7);      /* decode, too small to split */
  check_matmul(5, 700, 200, 1, 8);   /* few rows: sgemm split over N */
  check_matmul(100, 77, 50, 1, 9);   /* rows split in chunks of 16 */
  check_matmul(257, 33, 19, 0, 10);
  check_matmul(7, 13, 37, 0, 1);
  check_matmul(7, 13, 37, 1, 2);
  check_matmul(1, 1, 1, 1, 3);
  check_matmul(65, 129, 383, 1, 4);
  check_matmul(3, 5, 0, 1, 5); /* K = 0: y = bias */
}
END_TEST

START_TEST(embedding_and_positions) {
  rt_set_threads(_i);
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

  /* large enough to split over threads (8192/C rows per chunk); bad ids in two chunks: the first
   * one is reported */
  enum { N2 = 600, C2 = 40, V2 = 50, B2 = 3, T2 = 200 };
  int32_t *ids2 = malloc(N2 * sizeof(int32_t));
  float *tab2 = falloc(V2 * C2), *o2 = falloc((size_t)N2 * C2), *r2 = falloc((size_t)N2 * C2);
  float *pos2 = falloc((size_t)(T2 + 7) * C2);
  fill_uniform(tab2, V2 * C2, -1, 1, 12);
  fill_uniform(pos2, (size_t)(T2 + 7) * C2, -1, 1, 13);
  for (int i = 0; i < N2; i++)
    ids2[i] = (i * 7) % V2;
  ck_assert_int_eq(rt_embedding(o2, ids2, tab2, N2, V2, C2, &err), 0);
  ck_assert_int_eq(rt_embedding_ref(r2, ids2, tab2, N2, V2, C2, &err), 0);
  ck_assert(memcmp(o2, r2, (size_t)N2 * C2 * sizeof(float)) == 0);
  rt_add_positions(o2, pos2, B2, T2, C2, 7);
  rt_add_positions_ref(r2, pos2, B2, T2, C2, 7);
  ck_assert(memcmp(o2, r2, (size_t)N2 * C2 * sizeof(float)) == 0);
  ids2[450] = V2;
  ids2[510] = -3;
  ck_assert_int_eq(rt_embedding(o2, ids2, tab2, N2, V2, C2, &err), -1);
  ck_assert_msg(strstr(err.msg, "token id 50 at position 450") != NULL, "%s", err.msg);
  ck_assert_int_eq(rt_embedding_ref(r2, ids2, tab2, N2, V2, C2, NULL), -1);
  ck_assert(memcmp(o2, r2, (size_t)N2 * C2 * sizeof(float)) == 0);
  free(ids2), free(tab2), free(o2), free(r2), free(pos2);
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
  rt_set_threads(_i);
  check_norms(5, 37, 0.0f, 20);
  check_norms(301, 97, 0.0f, 24);   /* 84 rows per chunk: split over threads */
  check_norms(50, 1000, 10.0f, 25); /* 8 rows per chunk */
  check_norms(3, 385, 0.0f, 21);
  check_norms(7, 1, 0.0f, 22);
  check_norms(9, 771, 100.0f, 23); /* large mean: the two-pass variance must not cancel */
}
END_TEST

typedef void (*Act)(float *, const float *, size_t);

static void check_act_n(const char *name, Act fast, Act ref, double tol, size_t N) {
  float *x = falloc(N), *y = falloc(N), *yr = falloc(N);
  fill_uniform(x, N, -8, 8, 30);
  x[0] = 0.0f, x[1] = -30.0f, x[2] = 30.0f, x[3] = -100.0f;
  fast(y, x, N);
  ref(yr, x, N);
  double e = max_rel_err(y, yr, N, 1e-3);
  ck_assert_msg(e < tol, "%s: max relative error %g", name, e);
  fast(x, x, N); /* in place */
  ck_assert(memcmp(x, y, N * sizeof(float)) == 0);
  free(x), free(y), free(yr);
}

static void check_act(const char *name, Act fast, Act ref, double tol) {
  check_act_n(name, fast, ref, tol, 1001);
  check_act_n(name, fast, ref, tol, 50001); /* 13 blocks of 4096: split over threads */
}

START_TEST(activations_vs_ref) {
  rt_set_threads(_i);
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

  enum { N3 = 40000 };
  float *p3 = falloc(N3), *q3 = falloc(N3), *y3 = falloc(N3), *r3 = falloc(N3);
  fill_uniform(p3, N3, -8, 8, 33);
  fill_uniform(q3, N3, -2, 2, 34);
  rt_swiglu(y3, p3, q3, N3);
  rt_swiglu_ref(r3, p3, q3, N3);
  ck_assert(max_rel_err(y3, r3, N3, 1e-3) < 1e-5);
  free(p3), free(q3), free(y3), free(r3);

  /* the scalar forms used by generated code: sigmoid, and saturation without NaN */
  for (float v = -100.0f; v <= 100.0f; v += 0.37f) {
    double sr = 1.0 / (1.0 + exp(-(double)v));
    ck_assert_msg(fabs(rt_sigmoidf(v) - sr) <= 4e-7 * sr + 1e-30, "sigmoid(%g)", v);
  }
  ck_assert(rt_sigmoidf(-200.0f) == 0.0f && rt_sigmoidf(200.0f) == 1.0f);
  ck_assert(rt_gelu_tanhf(-1e20f) == 0.0f && rt_gelu_tanhf(1e20f) == 1e20f);
  ck_assert(rt_siluf(-1000.0f) == 0.0f && rt_siluf(1000.0f) == 1000.0f);
  ck_assert(isnan(rt_siluf(NAN)) && isnan(rt_gelu_tanhf(NAN)));
}
END_TEST

/* rt_expf against exp() in double: relative error over the normal range of the result, absolute
 * (a couple of denormal steps) below it; the specials. */
START_TEST(expf_vs_exp) {
  double worst = 0, worst_x = 0;
  const double fmin = 1.17549435e-38;
  for (double xd = -88.0; xd <= 88.0; xd += 0.000731) {
    float x = (float)xd;
    double e = exp((double)x), f = rt_expf(x);
    double err = e >= fmin ? fabs(f - e) / e : fabs(f - e) / 1.401298464e-45 * 1e-9;
    if (err > worst)
      worst = err, worst_x = x;
  }
  fprintf(stderr, "rt_expf: max relative error %.3g (%.2f ulp of 2^-23) at x = %.7g\n", worst, worst / 1.1920929e-7,
          worst_x);
  ck_assert_msg(worst < 2.5e-7, "rt_expf: max relative error %g at x = %g", worst, worst_x);
  /* denormal results: within 2 denormal steps */
  for (float x = -103.0f; x < -87.4f; x += 0.01f)
    ck_assert_msg(fabs(rt_expf(x) - exp((double)x)) <= 2 * 1.401298464e-45, "rt_expf(%g)", x);
  ck_assert(rt_expf(0.0f) == 1.0f);
  ck_assert(rt_expf(-INFINITY) == 0.0f && rt_expf(-1000.0f) == 0.0f);
  ck_assert(isinf(rt_expf(INFINITY)) && isinf(rt_expf(89.0f)) && rt_expf(88.5f) < INFINITY);
  ck_assert(isnan(rt_expf(NAN)) && isnan(rt_expf(-NAN)));
}
END_TEST

/* rt_exp_row's builds (kernels.h: baseline and AVX2, chosen by rt_cpu()) give the same bits: each
 * element, the sum, over the whole range of rt_expf including -inf, huge and NaN inputs, and the
 * tails of every length below 8; and each element is rt_expf itself */
START_TEST(exp_row_paths_agree) {
  enum { N = 4099 };
  float *x = falloc(N), *e1 = falloc(N), *e2 = falloc(N);
  for (int i = 0; i < N; i++) x[i] = -110.0f + 200.0f * (float)i / N;
  x[5] = -INFINITY, x[17] = NAN, x[33] = 1e30f;
  for (int n = 0; n <= N; n += n < 40 ? 1 : 511) {
    float s1 = rt_exp_row(e1, x, n, 0.0f), s2 = rt_exp_row_portable(e2, x, n, 0.0f);
    ck_assert_msg(memcmp(e1, e2, (size_t)n * sizeof(float)) == 0, "n=%d: elements differ between the builds", n);
    ck_assert_msg(memcmp(&s1, &s2, sizeof s1) == 0, "n=%d: sums %a vs %a", n, s1, s2);
    for (int i = 0; i < n; i++) {
      float want = rt_expf(x[i]);
      ck_assert_msg(memcmp(&e1[i], &want, sizeof want) == 0, "x=%g: %a vs rt_expf %a", x[i], e1[i], want);
    }
  }
  free(x), free(e1), free(e2);
}
END_TEST

START_TEST(softmax_vs_ref) {
  rt_set_threads(_i);
  {
    enum { R2 = 200, C2 = 129 }; /* 63 rows per chunk: split over threads */
    float *x2 = falloc(R2 * C2), *y2 = falloc(R2 * C2), *r2 = falloc(R2 * C2);
    fill_uniform(x2, R2 * C2, -20, 20, 41);
    rt_softmax(y2, x2, R2, C2);
    rt_softmax_ref(r2, x2, R2, C2);
    ck_assert(max_rel_err(y2, r2, R2 * C2, 1e-6) < 1e-5);
    free(x2), free(y2), free(r2);
  }
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

/* Dropout: fast equals ref exactly (any thread count), the keep rate is 1-p, kept elements are
 * scaled by 1/(1-p), the same key gives the same mask (forward, backward and recompute agree) and
 * another key another mask; p = 0 is the identity. */
START_TEST(dropout_masks) {
  size_t n = 100003;
  float *x = falloc(n), *a = falloc(n), *b = falloc(n), *c = falloc(n);
  fill_uniform(x, n, 0.5f, 1.5f, 3);
  for (int th = 1; th <= 3; th++) {
    rt_set_threads(th);
    rt_dropout(a, x, n, 0.25f, 42);
    rt_dropout_ref(b, x, n, 0.25f, 42);
    ck_assert(memcmp(a, b, n * sizeof(float)) == 0);
  }
  size_t kept = 0;
  for (size_t i = 0; i < n; i++)
    if (a[i] != 0) {
      kept++;
      ck_assert(fabsf(a[i] - x[i] / 0.75f) <= 1e-6f * fabsf(a[i]));
    }
  double rate = (double)kept / (double)n;
  ck_assert_msg(fabs(rate - 0.75) < 0.01, "keep rate %g", rate);
  rt_dropout(c, x, n, 0.25f, 43);
  size_t same = 0;
  for (size_t i = 0; i < n; i++) same += (a[i] != 0) == (c[i] != 0);
  ck_assert_msg(same < n * 0.7, "keys 42 and 43 give nearly the same mask (%zu of %zu agree)", same, n);
  rt_dropout(c, x, n, 0.0f, 42);
  ck_assert(memcmp(c, x, n * sizeof(float)) == 0);
  rt_set_threads(0);
  free(x), free(a), free(b), free(c);
}
END_TEST

/* Pooling over time and its backward against the double twins, at an odd shape. */
START_TEST(pool_vs_ref) {
  enum { B = 3, T = 7, C = 33 };
  float x[B * T * C], y[B * C], yr[B * C], dy[B * C], dx[B * T * C], dxr[B * T * C];
  fill_uniform(x, B * T * C, -3, 3, 51);
  fill_uniform(dy, B * C, -3, 3, 52);
  rt_pool_first(y, x, B, T, C);
  rt_pool_ref(yr, x, B, T, C, 0);
  ck_assert(memcmp(y, yr, sizeof y) == 0);
  rt_pool_mean(y, x, B, T, C);
  rt_pool_ref(yr, x, B, T, C, 1);
  ck_assert(max_rel_err(y, yr, B * C, 1e-6) < 1e-5);
  rt_pool_first_dx(dx, dy, B, T, C);
  rt_pool_dx_ref(dxr, dy, B, T, C, 0);
  ck_assert(memcmp(dx, dxr, sizeof dx) == 0);
  rt_pool_mean_dx(dx, dy, B, T, C);
  rt_pool_dx_ref(dxr, dy, B, T, C, 1);
  ck_assert(max_rel_err(dx, dxr, B * T * C, 1e-6) < 1e-6);
}
END_TEST

/* rope against its double-precision twin: a run of nb < B sequences of an odd length nt < T at a
 * first position t0 (0, a few, and large, where a float angle would lose its phase) in buffers
 * sized for (B,T) leaves the rows past nb*nt untouched; v is copied exactly; in place equals out of
 * place; each token rotated alone at its position (a KV-cache step) equals it rotated in the
 * sequence, bit for bit. G KV heads (grouped-query rows C + 2 G hd; G = H: 3C). The inverse
 * (the gradient) against its twin, undoing the forward, and against central differences of
 * L(x) = <dy, rope(x)>. */
static void check_rope(int Bmax, int Tmax, int nb, int nt, int t0, int C, int H, int G, float theta, uint64_t seed) {
  int W = C + 2 * (C / H) * G;
  size_t n = (size_t)Bmax * Tmax * W, used = (size_t)nb * nt * W;
  float *x = falloc(n), *y = falloc(n), *r = falloc(n), *w = falloc(n), *one = falloc((size_t)W);
  fill_uniform(x, n, -2, 2, seed);
  for (size_t i = 0; i < n; i++) y[i] = r[i] = -7.0f; /* a sentinel past the rows written */
  rt_rope(y, x, nb, nt, t0, C, H, G, theta, 0);
  rt_rope_ref(r, x, nb, nt, t0, C, H, G, theta, 0);
  double e = norm_err(y, r, used);
  ck_assert_msg(e < 1e-6, "rope nb=%d nt=%d t0=%d C=%d H=%d G=%d: normalised error %g", nb, nt, t0, C, H, G, e);
  for (size_t i = used; i < n; i++) ck_assert_msg(y[i] == -7.0f && r[i] == -7.0f, "rope wrote past row %d", nb * nt);
  int V0 = W - (W - C) / 2; /* v's first column */
  for (size_t row = 0; row < (size_t)nb * nt; row++) {
    ck_assert(memcmp(y + row * W + V0, x + row * W + V0, (size_t)(W - V0) * sizeof(float)) == 0);
    if (row % 5 == 0) { /* the decoding step of this token */
      int t = (int)(row % (size_t)nt);
      rt_rope(one, x + row * W, 1, 1, t0 + t, C, H, G, theta, 0);
      ck_assert_msg(memcmp(one, y + row * W, (size_t)W * sizeof(float)) == 0, "rope row %zu alone differs", row);
    }
  }
  memcpy(w, x, used * sizeof(float));
  rt_rope(w, w, nb, nt, t0, C, H, G, theta, 0);
  ck_assert(memcmp(w, y, used * sizeof(float)) == 0);
  if (t0 == 0) /* position 0 is the identity */
    ck_assert(memcmp(y, x, (size_t)W * sizeof(float)) == 0);
  /* the inverse: its twin, and it undoes the forward */
  rt_rope(w, y, nb, nt, t0, C, H, G, theta, 1);
  rt_rope_ref(r, y, nb, nt, t0, C, H, G, theta, 1);
  e = norm_err(w, r, used);
  ck_assert_msg(e < 1e-6, "inverse rope vs its twin: %g", e);
  e = norm_err(w, x, used);
  ck_assert_msg(e < 1e-6, "inverse rope does not undo rope: %g", e);
  /* the gradient of L(x) = <dy, rope(x)> is rope^-1(dy): central differences in double */
  float *dy = falloc(used), *dx = falloc(used);
  fill_uniform(dy, used, -1, 1, seed + 100);
  rt_rope(dx, dy, nb, nt, t0, C, H, G, theta, 1);
  for (size_t i = 0; i < used; i += 1 + used / 23) {
    double h = 1e-2, l[2];
    for (int sgn = 0; sgn < 2; sgn++) {
      memcpy(w, x, used * sizeof(float));
      w[i] += (float)(sgn ? -h : h);
      rt_rope_ref(r, w, nb, nt, t0, C, H, G, theta, 0);
      l[sgn] = 0;
      for (size_t j = 0; j < used; j++) l[sgn] += (double)dy[j] * r[j];
    }
    double fd = (l[0] - l[1]) / (2 * h);
    ck_assert_msg(fabs(fd - dx[i]) < 2e-3 * (1 + fabs(fd)), "rope gradient at %zu: %g, central differences %g", i,
                  (double)dx[i], fd);
  }
  free(x), free(y), free(r), free(w), free(one), free(dy), free(dx);
}

START_TEST(rope_vs_ref) {
  rt_set_threads(_i);
  check_rope(3, 40, 3, 37, 0, 96, 4, 4, 10000.0f, 1); /* 111 rows: the parallel path */
  check_rope(4, 40, 2, 37, 3, 96, 4, 4, 10000.0f, 2); /* nb < B, nt < T, t0 > 0 */
  check_rope(2, 9, 1, 1, 5000, 24, 3, 3, 10000.0f, 3); /* one decoding step far into a sequence */
  check_rope(2, 16, 2, 15, 700, 16, 8, 8, 500.0f, 4); /* hd = 2, another theta */
  check_rope(1, 3, 1, 3, 1, 2, 1, 1, 1.5f, 5);         /* C = hd = 2 */
  check_rope(2, 20, 2, 19, 4, 64, 8, 4, 10000.0f, 6); /* grouped-query: 4 KV heads of 8 */
  check_rope(1, 9, 1, 7, 2, 48, 6, 1, 10000.0f, 7);   /* multi-query: one KV head */
  rt_set_threads(0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_kernels");
  TCase *tc = tcase_create("kernels");
  /* loop tests: _i = 1, 2, 3 pool threads */
  tcase_add_loop_test(tc, matmul_vs_ref, 1, 4);
  tcase_add_loop_test(tc, embedding_and_positions, 1, 4);
  tcase_add_loop_test(tc, norms_vs_ref, 1, 4);
  tcase_add_loop_test(tc, activations_vs_ref, 1, 4);
  tcase_add_loop_test(tc, softmax_vs_ref, 1, 4);
  tcase_add_loop_test(tc, rope_vs_ref, 1, 4);
  tcase_add_test(tc, expf_vs_exp);
  tcase_add_test(tc, exp_row_paths_agree);
  tcase_add_test(tc, halfs_and_tokenizer);
  tcase_add_test(tc, sinusoid_vs_ref);
  tcase_add_test(tc, dropout_masks);
  tcase_add_test(tc, pool_vs_ref);
  suite_add_tcase(s, tc);
  return check_run(s);
}
