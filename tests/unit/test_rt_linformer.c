/* test_rt_linformer.c: rt_linformer and rt_linformer_dx (runtime/kernels/attention_lowrank.c)
 * against their naive double twins, forward and backward, at shapes with an odd length, a call
 * shorter than the compiled length (nt < T: the first nt columns of E and F; the gradient's other
 * columns zero), K > nt, one head and several, and E equal to F; with 1, 2 and 3 threads (the
 * scratch sized after rt_set_threads, exactly, so ASan catches an overrun); and 1 against 2
 * threads bit for bit (dE and dF are summed in a fixed order, not per thread); K = 1 (out = F V);
 * and the backward twin against central differences of the forward twin. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdio.h>

typedef struct Case {
  int B, nt, T, C, nh, K;
  int same; /* E == F */
} Case;

static const Case cases[] = {
    {2, 33, 33, 24, 3, 8, 0},  /* odd T, hd = 8 */
    {3, 21, 40, 16, 2, 10, 0}, /* nt < T */
    {1, 5, 9, 12, 1, 7, 0},    /* K > nt, one head, tiny (one inline chunk) */
    {2, 64, 64, 32, 4, 16, 1}, /* E == F (share=kv), k = T/4 */
    {2, 50, 77, 40, 5, 37, 0}, /* 3 row blocks of dE, nt < T */
};

/* the kernel's outputs at threads th: out, dqkv, dE, dF (caller frees) */
static void run(const Case *c, int th, float *qkv, float *E, float *F, float *dy, float *out, float *dqkv, float *dE,
                float *dF) {
  rt_set_threads(th);
  float *s1 = falloc(rt_linformer_scratch_floats(c->T, c->C, c->nh, c->K));
  float *s2 = falloc(rt_linformer_dx_scratch_floats(c->B, c->T, c->C, c->nh, c->K));
  rt_linformer(out, qkv, E, F, c->B, c->nt, c->T, c->C, c->nh, c->K, s1);
  rt_linformer_dx(dqkv, dE, dF, qkv, E, F, dy, c->B, c->nt, c->T, c->C, c->nh, c->K, s2);
  free(s1), free(s2);
}

static void check_case(const Case *c, int th, uint64_t seed) {
  size_t nqkv = (size_t)c->B * c->nt * 3 * c->C, no = (size_t)c->B * c->nt * c->C, ne = (size_t)c->K * c->T;
  float *qkv = falloc(nqkv), *E = falloc(ne), *F0 = falloc(ne), *dy = falloc(no);
  fill_uniform(qkv, nqkv, -2, 2, seed);
  fill_uniform(E, ne, -0.5f, 0.5f, seed + 1);
  fill_uniform(F0, ne, -0.5f, 0.5f, seed + 2);
  fill_uniform(dy, no, -1, 1, seed + 3);
  float *F = c->same ? E : F0;
  float *o = falloc(no), *r = falloc(no), *dq = falloc(nqkv), *rq = falloc(nqkv);
  float *dE = falloc(ne), *dF = falloc(ne), *rE = falloc(ne), *rF = falloc(ne);
  for (size_t i = 0; i < ne; i++) /* the kernel writes every element, the unused columns too */
    dE[i] = dF[i] = 7.0f;
  run(c, th, qkv, E, F, dy, o, dq, dE, dF);
  rt_linformer_ref(r, qkv, E, F, c->B, c->nt, c->T, c->C, c->nh, c->K);
  rt_linformer_dx_ref(rq, rE, rF, qkv, E, F, dy, c->B, c->nt, c->T, c->C, c->nh, c->K);
  double e = norm_err(o, r, no), eq = norm_err(dq, rq, nqkv), ee = norm_err(dE, rE, ne), ef = norm_err(dF, rF, ne);
  ck_assert_msg(e < 1e-5 && eq < 1e-5 && ee < 1e-5 && ef < 1e-5,
                "linformer B=%d nt=%d T=%d C=%d nh=%d K=%d threads=%d: out %g, dqkv %g, dE %g, dF %g", c->B, c->nt,
                c->T, c->C, c->nh, c->K, th, e, eq, ee, ef);
  for (int k = 0; k < c->K; k++)
    for (int t = c->nt; t < c->T; t++)
      ck_assert(dE[(size_t)k * c->T + t] == 0.0f && dF[(size_t)k * c->T + t] == 0.0f);
  free(qkv), free(E), free(F0), free(dy), free(o), free(r), free(dq), free(rq), free(dE), free(dF), free(rE), free(rF);
}

START_TEST(linformer_vs_ref) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_case(&cases[i], _i, 10 + i);
}
END_TEST

START_TEST(threads_bit_identical) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const Case *c = &cases[i];
    size_t nqkv = (size_t)c->B * c->nt * 3 * c->C, no = (size_t)c->B * c->nt * c->C, ne = (size_t)c->K * c->T;
    float *qkv = falloc(nqkv), *E = falloc(ne), *F = falloc(ne), *dy = falloc(no);
    fill_uniform(qkv, nqkv, -2, 2, 40 + i);
    fill_uniform(E, ne, -0.5f, 0.5f, 41 + i);
    fill_uniform(F, ne, -0.5f, 0.5f, 42 + i);
    fill_uniform(dy, no, -1, 1, 43 + i);
    float *out[2], *dq[2], *dE[2], *dF[2];
    for (int t = 0; t < 2; t++) {
      out[t] = falloc(no), dq[t] = falloc(nqkv), dE[t] = falloc(ne), dF[t] = falloc(ne);
      run(c, t + 1, qkv, E, c->same ? E : F, dy, out[t], dq[t], dE[t], dF[t]);
    }
    ck_assert(memcmp(out[0], out[1], no * sizeof(float)) == 0);
    ck_assert(memcmp(dq[0], dq[1], nqkv * sizeof(float)) == 0);
    ck_assert(memcmp(dE[0], dE[1], ne * sizeof(float)) == 0);
    ck_assert(memcmp(dF[0], dF[1], ne * sizeof(float)) == 0);
    for (int t = 0; t < 2; t++)
      free(out[t]), free(dq[t]), free(dE[t]), free(dF[t]);
    free(qkv), free(E), free(F), free(dy);
  }
}
END_TEST

/* K = 1: every query sees one projected key, so its softmax is 1 and out_h = F V_h for every row */
START_TEST(one_projected_key) {
  enum { T = 6, C = 4, NH = 2 };
  float qkv[T * 3 * C], E[T], F[T], o[T * C];
  fill_uniform(qkv, T * 3 * C, -1, 1, 3);
  fill_uniform(E, T, -1, 1, 4);
  fill_uniform(F, T, -1, 1, 5);
  rt_set_threads(1);
  float *s = falloc(rt_linformer_scratch_floats(T, C, NH, 1));
  rt_linformer(o, qkv, E, F, 1, T, T, C, NH, 1, s);
  for (int c = 0; c < C; c++) {
    double v = 0;
    for (int t = 0; t < T; t++)
      v += (double)F[t] * qkv[t * 3 * C + 2 * C + c];
    for (int t = 0; t < T; t++)
      ck_assert_msg(fabs(o[t * C + c] - v) < 1e-5, "row %d col %d: %g, want %g", t, c, o[t * C + c], v);
  }
  free(s);
}
END_TEST

/* The backward twin against central differences of the forward twin: L = sum(dy * out), every
 * 5th element of qkv, E and F perturbed (float arithmetic: h = 1e-2, tolerance 2e-3 of the
 * largest gradient). Checks the twins' calculus independently of the fast kernels. */
static double loss_of(const Case *c, const float *qkv, const float *E, const float *F, const float *dy, float *o) {
  size_t no = (size_t)c->B * c->nt * c->C;
  rt_linformer_ref(o, qkv, E, F, c->B, c->nt, c->T, c->C, c->nh, c->K);
  double L = 0;
  for (size_t i = 0; i < no; i++)
    L += (double)dy[i] * o[i];
  return L;
}

START_TEST(twin_vs_differences) {
  const Case c = {2, 7, 9, 8, 2, 3, 0};
  size_t nqkv = (size_t)c.B * c.nt * 3 * c.C, no = (size_t)c.B * c.nt * c.C, ne = (size_t)c.K * c.T;
  float *qkv = falloc(nqkv), *E = falloc(ne), *F = falloc(ne), *dy = falloc(no), *o = falloc(no);
  float *dq = falloc(nqkv), *dE = falloc(ne), *dF = falloc(ne);
  fill_uniform(qkv, nqkv, -1, 1, 71);
  fill_uniform(E, ne, -0.5f, 0.5f, 72);
  fill_uniform(F, ne, -0.5f, 0.5f, 73);
  fill_uniform(dy, no, -1, 1, 74);
  rt_linformer_dx_ref(dq, dE, dF, qkv, E, F, dy, c.B, c.nt, c.T, c.C, c.nh, c.K);
  float *xs[3] = {qkv, E, F}, *gs[3] = {dq, dE, dF};
  size_t ns[3] = {nqkv, ne, ne};
  const float h = 1e-2f;
  for (int w = 0; w < 3; w++) {
    double gmax = 1e-30, worst = 0;
    for (size_t i = 0; i < ns[w]; i++) gmax = fmax(gmax, fabs(gs[w][i]));
    for (size_t i = 0; i < ns[w]; i += 5) {
      float x0 = xs[w][i];
      xs[w][i] = x0 + h;
      double lp = loss_of(&c, qkv, E, F, dy, o);
      xs[w][i] = x0 - h;
      double lm = loss_of(&c, qkv, E, F, dy, o);
      xs[w][i] = x0;
      double fd = (lp - lm) / (2 * h), e = fabs(fd - gs[w][i]) / gmax;
      worst = fmax(worst, e);
      if (w && (int)(i % c.T) >= c.nt) /* columns past nt: no influence, no gradient */
        ck_assert(gs[w][i] == 0.0f && fd == 0.0);
    }
    ck_assert_msg(worst < 2e-3, "%s: the twin's gradient differs from central differences by %g of its largest",
                  (const char *[]){"dqkv", "dE", "dF"}[w], worst);
  }
  free(qkv), free(E), free(F), free(dy), free(o), free(dq), free(dE), free(dF);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_linformer");
  TCase *tc = tcase_create("linformer");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, linformer_vs_ref, 1, 4); /* _i = 1..3 threads */
  tcase_add_test(tc, threads_bit_identical);
  tcase_add_test(tc, one_projected_key);
  tcase_add_test(tc, twin_vs_differences);
  suite_add_tcase(s, tc);
  return check_run(s);
}
