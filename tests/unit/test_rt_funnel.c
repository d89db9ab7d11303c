/* test_rt_funnel.c: the sequence-compression kernels (runtime/kernels/funnel.c) against their
 * naive twins: rt_seq_pool and rt_upsample (strides 2, 3, 4, a scale other than 1/stride) within
 * 1e-6, and each the other's adjoint (<up(y), x> = <y, pool(x)>, float sums, 1e-5 relative);
 * rt_attention_pool and rt_attention_pool_dx within 1e-5 normalised error at shapes with one head
 * and several, pooled lengths above the query tile (RT_ATTN_BQ = 64: T = 256, stride 2) and a
 * stride whose pooled length is 1, with 1, 2 and 3 threads (scratch sized after rt_set_threads,
 * exactly, so ASan catches an overrun), 1 against 2 threads bit for bit; stride = T with
 * constant keys (every query's softmax is uniform: out = the mean of V); and the backward twin
 * against central differences of the forward twin. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdio.h>

typedef struct Case {
  int B, T, C, nh, s;
} Case;

static const Case cases[] = {
    {2, 16, 16, 2, 2},  /* the fixture's first pool */
    {1, 12, 24, 3, 3},  /* stride 3, hd = 8 */
    {3, 8, 8, 1, 8},    /* one pooled query per sequence, one head */
    {2, 256, 32, 4, 2}, /* 128 pooled queries: two query tiles, three key tiles */
    {1, 40, 20, 5, 4},  /* hd = 4 */
};

START_TEST(pool_upsample_vs_ref) {
  const int strides[] = {2, 3, 4};
  for (int k = 0; k < 3; k++) {
    int B = 2, s = strides[k], T = 6 * s, C = 5;
    float scale = k == 1 ? 0.7f : 1.0f / (float)s;
    size_t nx = (size_t)B * T * C, ny = nx / (size_t)s;
    float *x = falloc(nx), *y = falloc(ny), *p = falloc(ny), *pr = falloc(ny), *u = falloc(nx), *ur = falloc(nx);
    fill_uniform(x, nx, -2, 2, 5 + k);
    fill_uniform(y, ny, -2, 2, 9 + k);
    rt_seq_pool(p, x, B, T, C, s, scale);
    rt_seq_pool_ref(pr, x, B, T, C, s, scale);
    rt_upsample(u, y, B, T / s, C, s, scale);
    rt_upsample_ref(ur, y, B, T / s, C, s, scale);
    ck_assert_msg(norm_err(p, pr, ny) < 1e-6, "seq_pool stride %d: %g", s, norm_err(p, pr, ny));
    ck_assert_msg(norm_err(u, ur, nx) < 1e-6, "upsample stride %d: %g", s, norm_err(u, ur, nx));
    double a = 0, b = 0, m = 0; /* adjoint: <upsample(y), x> = <y, seq_pool(x)> */
    for (size_t i = 0; i < nx; i++) a += (double)u[i] * x[i], m = fmax(m, fabs((double)u[i] * x[i]));
    for (size_t i = 0; i < ny; i++) b += (double)y[i] * p[i];
    ck_assert_msg(fabs(a - b) <= 1e-5 * m * (double)nx, "stride %d: <up y, x> %g vs <y, pool x> %g", s, a, b);
    free(x), free(y), free(p), free(pr), free(u), free(ur);
  }
}
END_TEST

static void run(const Case *c, int th, const float *qkv, const float *dy, float *out, float *dqkv) {
  rt_set_threads(th);
  float *s1 = falloc(rt_attention_pool_scratch_floats(c->T, c->C, c->nh, c->s));
  float *s2 = falloc(rt_attention_pool_dx_scratch_floats(c->T, c->C, c->nh, c->s));
  rt_attention_pool(out, qkv, c->B, c->T, c->C, c->nh, c->s, s1);
  rt_attention_pool_dx(dqkv, qkv, dy, c->B, c->T, c->C, c->nh, c->s, s2);
  free(s1), free(s2);
}

START_TEST(attention_pool_vs_ref) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const Case *c = &cases[i];
    size_t nqkv = (size_t)c->B * c->T * 3 * c->C, no = (size_t)c->B * (c->T / c->s) * c->C;
    float *qkv = falloc(nqkv), *dy = falloc(no), *o = falloc(no), *r = falloc(no), *dq = falloc(nqkv), *rq = falloc(nqkv);
    fill_uniform(qkv, nqkv, -2, 2, 20 + i);
    fill_uniform(dy, no, -1, 1, 30 + i);
    for (size_t k = 0; k < nqkv; k++) dq[k] = 7.0f; /* the kernel writes every element */
    run(c, _i, qkv, dy, o, dq);
    rt_attention_pool_ref(r, qkv, c->B, c->T, c->C, c->nh, c->s);
    rt_attention_pool_dx_ref(rq, qkv, dy, c->B, c->T, c->C, c->nh, c->s);
    double e = norm_err(o, r, no), eq = norm_err(dq, rq, nqkv);
    ck_assert_msg(e < 1e-5 && eq < 1e-5, "attention_pool B=%d T=%d C=%d nh=%d s=%d threads=%d: out %g, dqkv %g", c->B,
                  c->T, c->C, c->nh, c->s, _i, e, eq);
    free(qkv), free(dy), free(o), free(r), free(dq), free(rq);
  }
}
END_TEST

START_TEST(threads_bit_identical) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const Case *c = &cases[i];
    size_t nqkv = (size_t)c->B * c->T * 3 * c->C, no = (size_t)c->B * (c->T / c->s) * c->C;
    float *qkv = falloc(nqkv), *dy = falloc(no), *o[2], *dq[2];
    fill_uniform(qkv, nqkv, -2, 2, 50 + i);
    fill_uniform(dy, no, -1, 1, 60 + i);
    for (int t = 0; t < 2; t++) {
      o[t] = falloc(no), dq[t] = falloc(nqkv);
      run(c, t + 1, qkv, dy, o[t], dq[t]);
    }
    ck_assert(memcmp(o[0], o[1], no * sizeof(float)) == 0);
    ck_assert(memcmp(dq[0], dq[1], nqkv * sizeof(float)) == 0);
    for (int t = 0; t < 2; t++) free(o[t]), free(dq[t]);
    free(qkv), free(dy);
  }
}
END_TEST

/* every key equal: each pooled query's softmax is uniform, so out_h = the mean of V_h over T */
START_TEST(uniform_keys) {
  enum { T = 6, C = 4, NH = 2 };
  float qkv[T * 3 * C], o[C];
  fill_uniform(qkv, T * 3 * C, -1, 1, 3);
  for (int t = 1; t < T; t++)
    for (int c = 0; c < C; c++) qkv[t * 3 * C + C + c] = qkv[C + c];
  rt_set_threads(1);
  float *s = falloc(rt_attention_pool_scratch_floats(T, C, NH, T));
  rt_attention_pool(o, qkv, 1, T, C, NH, T, s);
  for (int c = 0; c < C; c++) {
    double v = 0;
    for (int t = 0; t < T; t++) v += qkv[t * 3 * C + 2 * C + c] / (double)T;
    ck_assert_msg(fabs(o[c] - v) < 1e-6, "col %d: %g, want %g", c, o[c], v);
  }
  free(s);
}
END_TEST

/* The backward twin against central differences of the forward twin: L = sum(dy * out), every
 * 3rd element of qkv perturbed (h = 1e-2, tolerance 2e-3 of the largest gradient). */
START_TEST(twin_vs_differences) {
  const Case c = {2, 8, 8, 2, 2};
  size_t nqkv = (size_t)c.B * c.T * 3 * c.C, no = (size_t)c.B * (c.T / c.s) * c.C;
  float *qkv = falloc(nqkv), *dy = falloc(no), *o = falloc(no), *dq = falloc(nqkv);
  fill_uniform(qkv, nqkv, -1, 1, 71);
  fill_uniform(dy, no, -1, 1, 74);
  rt_attention_pool_dx_ref(dq, qkv, dy, c.B, c.T, c.C, c.nh, c.s);
  const float h = 1e-2f;
  double gmax = 1e-30, worst = 0;
  for (size_t i = 0; i < nqkv; i++) gmax = fmax(gmax, fabs(dq[i]));
  for (size_t i = 0; i < nqkv; i += 3) {
    float x0 = qkv[i];
    double L[2];
    for (int side = 0; side < 2; side++) {
      qkv[i] = side ? x0 - h : x0 + h;
      rt_attention_pool_ref(o, qkv, c.B, c.T, c.C, c.nh, c.s);
      L[side] = 0;
      for (size_t k = 0; k < no; k++) L[side] += (double)dy[k] * o[k];
    }
    qkv[i] = x0;
    worst = fmax(worst, fabs((L[0] - L[1]) / (2 * h) - dq[i]) / gmax);
  }
  ck_assert_msg(worst < 2e-3, "the twin's gradient differs from central differences by %g of its largest", worst);
  free(qkv), free(dy), free(o), free(dq);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_funnel");
  TCase *tc = tcase_create("funnel");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, pool_upsample_vs_ref);
  tcase_add_loop_test(tc, attention_pool_vs_ref, 1, 4); /* _i = 1..3 threads */
  tcase_add_test(tc, threads_bit_identical);
  tcase_add_test(tc, uniform_keys);
  tcase_add_test(tc, twin_vs_differences);
  suite_add_tcase(s, tc);
  return check_run(s);
}
