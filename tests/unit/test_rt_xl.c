/* test_rt_xl.c: the Transformer-XL kernels (runtime/kernels/attention_xl.c) against their naive
 * double twins: rt_xl_attention and rt_xl_attention_dx at odd lengths, a call shorter than the
 * compiled segment (nt < T), memory lengths mlen = min(M, t0) of 0, of less than M and of M, M
 * larger than the segment, one head and several; with 1, 2 and 3 threads (the scratch sized after
 * rt_set_threads, exactly, so ASan catches an overrun), and 1 against 3 threads bit for bit; the
 * backward twin against central differences of the forward twin (qkv, rk and both biases);
 * rt_xl_memory against its twin over a sequence of calls (a new text, continuations, a shorter
 * call, a repeated step: the same output and state), its rows past the call zero, no state (an
 * empty memory); rt_xl_memory_dx and rt_sinusoid_halves against theirs. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdio.h>

typedef struct Case {
  int B, nt, t0, T, M, C, nh;
} Case;

static const Case cases[] = {
    {2, 7, 0, 7, 5, 12, 2},     /* the fixture's shape, a new text (no memory) */
    {2, 7, 7, 7, 5, 12, 2},     /* its second segment: the whole memory */
    {3, 13, 4, 17, 9, 24, 3},   /* nt < T, mlen = t0 = 4 < M, odd lengths, hd = 8 */
    {1, 33, 66, 33, 40, 16, 1}, /* M > T, one head */
    {2, 64, 128, 64, 64, 32, 4},/* several query blocks' worth, 4 heads */
    {2, 1, 90, 32, 31, 8, 2},   /* a single token (decoding) against a full memory */
};

static void sizes(const Case *c, size_t *nqkv, size_t *nrk, size_t *no) {
  size_t L = (size_t)c->M + c->T;
  *nqkv = (size_t)c->B * L * 3 * c->C, *nrk = L * c->C, *no = (size_t)c->B * c->nt * c->C;
}

static void run(const Case *c, int th, const float *qkv, const float *rk, const float *u, const float *w, const float *dy,
                float *out, float *dqkv, float *drk, float *du, float *dw) {
  rt_set_threads(th);
  float *s1 = falloc(rt_xl_attention_scratch_floats(c->T, c->M, c->C, c->nh));
  float *s2 = falloc(rt_xl_attention_dx_scratch_floats(c->T, c->M, c->C, c->nh));
  rt_xl_attention(out, qkv, rk, u, w, c->B, c->nt, c->t0, c->T, c->M, c->C, c->nh, s1);
  rt_xl_attention_dx(dqkv, drk, du, dw, qkv, rk, u, w, dy, c->B, c->nt, c->t0, c->T, c->M, c->C, c->nh, s2);
  free(s1), free(s2);
}

static void inputs(const Case *c, uint64_t seed, float *qkv, float *rk, float *u, float *w, float *dy) {
  size_t nqkv, nrk, no;
  sizes(c, &nqkv, &nrk, &no);
  fill_uniform(qkv, nqkv, -2, 2, seed);
  fill_uniform(rk, nrk, -1, 1, seed + 1);
  fill_uniform(u, (size_t)c->C, -0.5f, 0.5f, seed + 2);
  fill_uniform(w, (size_t)c->C, -0.5f, 0.5f, seed + 3);
  fill_uniform(dy, no, -1, 1, seed + 4);
}

START_TEST(xl_attention_vs_ref) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const Case *c = &cases[i];
    size_t nqkv, nrk, no, C = (size_t)c->C;
    sizes(c, &nqkv, &nrk, &no);
    float *qkv = falloc(nqkv), *rk = falloc(nrk), *u = falloc(C), *w = falloc(C), *dy = falloc(no);
    inputs(c, 10 + i, qkv, rk, u, w, dy);
    float *o = falloc(no), *ro = falloc(no), *dq = falloc(nqkv), *rq = falloc(nqkv), *dr = falloc(nrk), *rr = falloc(nrk);
    float du[64], dw[64], rdu[64], rdw[64];
    for (size_t k = 0; k < nqkv; k++) dq[k] = 7.0f; /* the kernel writes every element of its results */
    for (size_t k = 0; k < nrk; k++) dr[k] = 7.0f;
    run(c, _i, qkv, rk, u, w, dy, o, dq, dr, du, dw);
    rt_xl_attention_ref(ro, qkv, rk, u, w, c->B, c->nt, c->t0, c->T, c->M, c->C, c->nh);
    rt_xl_attention_dx_ref(rq, rr, rdu, rdw, qkv, rk, u, w, dy, c->B, c->nt, c->t0, c->T, c->M, c->C, c->nh);
    double e = norm_err(o, ro, no), eq = norm_err(dq, rq, nqkv), er = norm_err(dr, rr, nrk), eu = norm_err(du, rdu, C),
           ew = norm_err(dw, rdw, C);
    ck_assert_msg(e < 1e-5 && eq < 1e-5 && er < 1e-5 && eu < 1e-5 && ew < 1e-5,
                  "xl B=%d nt=%d t0=%d T=%d M=%d C=%d nh=%d threads=%d: out %g, dqkv %g, drk %g, du %g, dw %g", c->B,
                  c->nt, c->t0, c->T, c->M, c->C, c->nh, (int)_i, e, eq, er, eu, ew);
    /* nothing flows to the memory rows before mlen, the queries' memory rows, the rows past nt */
    int mlen = c->t0 < c->M ? c->t0 : c->M;
    size_t L = (size_t)c->M + c->T;
    for (int b = 0; b < c->B; b++)
      for (size_t r = 0; r < L; r++)
        for (size_t k = 0; k < 3 * C; k++) {
          float g = dq[((size_t)b * L + r) * 3 * C + k];
          if ((int)r < c->M - mlen || (int)r >= c->M + c->nt || (k < C && (int)r < c->M)) ck_assert(g == 0.0f);
        }
    for (size_t d = (size_t)(mlen + c->nt); d < L; d++) /* distances past the farthest key */
      for (size_t k = 0; k < C; k++) ck_assert(dr[d * C + k] == 0.0f);
    free(qkv), free(rk), free(u), free(w), free(dy), free(o), free(ro), free(dq), free(rq), free(dr), free(rr);
  }
}
END_TEST

START_TEST(threads_bit_identical) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const Case *c = &cases[i];
    size_t nqkv, nrk, no, C = (size_t)c->C;
    sizes(c, &nqkv, &nrk, &no);
    float *qkv = falloc(nqkv), *rk = falloc(nrk), *u = falloc(C), *w = falloc(C), *dy = falloc(no);
    inputs(c, 40 + i, qkv, rk, u, w, dy);
    float *o[2], *dq[2], *dr[2], du[2][64], dw[2][64];
    for (int t = 0; t < 2; t++) {
      o[t] = falloc(no), dq[t] = falloc(nqkv), dr[t] = falloc(nrk);
      run(c, 1 + 2 * t, qkv, rk, u, w, dy, o[t], dq[t], dr[t], du[t], dw[t]);
    }
    ck_assert(memcmp(o[0], o[1], no * sizeof(float)) == 0);
    ck_assert(memcmp(dq[0], dq[1], nqkv * sizeof(float)) == 0);
    ck_assert(memcmp(dr[0], dr[1], nrk * sizeof(float)) == 0);
    ck_assert(memcmp(du[0], du[1], C * sizeof(float)) == 0 && memcmp(dw[0], dw[1], C * sizeof(float)) == 0);
    for (int t = 0; t < 2; t++) free(o[t]), free(dq[t]), free(dr[t]);
    free(qkv), free(rk), free(u), free(w), free(dy);
  }
}
END_TEST

/* The backward twin against central differences of the forward twin: loss = sum(dy * out), every
 * 3rd element of qkv and rk and every bias element perturbed (h = 1e-2 in float inputs, tolerance
 * 2e-3 of the largest gradient). */
static double loss_of(const Case *c, const float *qkv, const float *rk, const float *u, const float *w,
                      const float *dy, float *o) {
  size_t nqkv, nrk, no;
  sizes(c, &nqkv, &nrk, &no);
  rt_xl_attention_ref(o, qkv, rk, u, w, c->B, c->nt, c->t0, c->T, c->M, c->C, c->nh);
  double L = 0;
  for (size_t i = 0; i < no; i++) L += (double)dy[i] * o[i];
  return L;
}

START_TEST(twin_vs_differences) {
  const Case c = {2, 5, 3, 6, 4, 8, 2}; /* mlen 3 of M 4, nt < T */
  size_t nqkv, nrk, no, C = (size_t)c.C;
  sizes(&c, &nqkv, &nrk, &no);
  float *qkv = falloc(nqkv), *rk = falloc(nrk), *u = falloc(C), *w = falloc(C), *dy = falloc(no), *o = falloc(no);
  float *dq = falloc(nqkv), *dr = falloc(nrk), *du = falloc(C), *dw = falloc(C);
  inputs(&c, 71, qkv, rk, u, w, dy);
  rt_xl_attention_dx_ref(dq, dr, du, dw, qkv, rk, u, w, dy, c.B, c.nt, c.t0, c.T, c.M, c.C, c.nh);
  float *xs[4] = {qkv, rk, u, w}, *gs[4] = {dq, dr, du, dw};
  size_t ns[4] = {nqkv, nrk, C, C}, step[4] = {3, 3, 1, 1};
  const float h = 1e-2f;
  for (int k = 0; k < 4; k++) {
    double gmax = 1e-30, worst = 0;
    for (size_t i = 0; i < ns[k]; i++) gmax = fmax(gmax, fabs(gs[k][i]));
    for (size_t i = 0; i < ns[k]; i += step[k]) {
      float x0 = xs[k][i];
      xs[k][i] = x0 + h;
      double lp = loss_of(&c, qkv, rk, u, w, dy, o);
      xs[k][i] = x0 - h;
      double lm = loss_of(&c, qkv, rk, u, w, dy, o);
      xs[k][i] = x0;
      worst = fmax(worst, fabs((lp - lm) / (2 * h) - gs[k][i]) / gmax);
    }
    ck_assert_msg(worst < 2e-3, "%s: the twin's gradient differs from central differences by %g of its largest",
                  (const char *[]){"dqkv", "drk", "dr_w_bias", "dr_r_bias"}[k], worst);
  }
  free(qkv), free(rk), free(u), free(w), free(dy), free(o), free(dq), free(dr), free(du), free(dw);
}
END_TEST

/* rt_xl_memory and its twin over one text's calls: t0 = 0, 5, 10 (nt 5 of T 6), then 15 with nt 2,
 * the last step repeated (the backward's recompute), then a new text at t0 = 0; each call's output
 * and the whole state equal, and the memory's content what [previous inputs] says. */
START_TEST(memory_vs_ref) {
  enum { B = 2, T = 6, M = 7, C = 3, L = M + T };
  static const int t0s[] = {0, 5, 10, 15, 15, 0, 4};
  static const int nts[] = {5, 5, 5, 2, 2, 4, 6};
  float st[2][3][B * M * C], out[2][B * L * C], x[B * T * C];
  memset(st, 0, sizeof st);
  float hist[B][64][C]; /* every input row of the text so far, to check the memory's rows */
  for (size_t k = 0; k < sizeof t0s / sizeof t0s[0]; k++) {
    fill_uniform(x, sizeof x / sizeof x[0], -1, 1, 100 + k);
    for (int v = 0; v < 2; v++) {
      for (size_t e = 0; e < B * L * C; e++) out[v][e] = 9.0f;
      (v ? rt_xl_memory_ref : rt_xl_memory)(out[v], x, st[v][0], st[v][1], st[v][2], B, nts[k], t0s[k], T, M, C);
    }
    ck_assert_msg(memcmp(out[0], out[1], sizeof out[0]) == 0, "call %zu: output differs from the twin", k);
    ck_assert_msg(memcmp(st[0], st[1], sizeof st[0]) == 0, "call %zu: state differs from the twin", k);
    int t0 = t0s[k], nt = nts[k], mlen = t0 < M ? t0 : M;
    for (int b = 0; b < B; b++) {
      for (int r = 0; r < L; r++)
        for (int c = 0; c < C; c++) {
          float want = 0.0f, got = out[0][((size_t)b * L + r) * C + c];
          if (r >= M - mlen && r < M) want = hist[b][t0 - M + r][c];
          if (r >= M && r < M + nt) want = x[((size_t)b * nt + r - M) * C + c];
          ck_assert_msg(got == want, "call %zu row %d.%d: %g, want %g", k, b, r, got, want);
        }
      for (int t = 0; t < nt; t++) memcpy(hist[b][t0 + t], x + ((size_t)b * nt + t) * C, C * sizeof(float));
    }
  }
  /* no state: an empty memory whatever t0 */
  fill_uniform(x, sizeof x / sizeof x[0], -1, 1, 7);
  rt_xl_memory(out[0], x, NULL, NULL, NULL, B, T, 12, T, M, C);
  for (int b = 0; b < B; b++)
    for (int r = 0; r < M * C; r++) ck_assert(out[0][(size_t)b * L * C + r] == 0.0f);
  float dx[2][B * T * C];
  rt_xl_memory_dx(dx[0], out[0], B, 5, T, M, C);
  rt_xl_memory_dx_ref(dx[1], out[0], B, 5, T, M, C);
  ck_assert(memcmp(dx[0], dx[1], B * 5 * C * sizeof(float)) == 0);
  ck_assert(memcmp(dx[0], x, 5 * C * sizeof(float)) == 0); /* batch row 0's first 5 rows of x */
}
END_TEST

START_TEST(sinusoid_halves_vs_ref) {
  enum { K = 40, C = 12 };
  float a[K * C], r[K * C];
  rt_sinusoid_halves(a, K, C);
  rt_sinusoid_halves_ref(r, K, C);
  ck_assert(norm_err(a, r, K * C) < 1e-6);
  for (int c = 0; c < C; c++) ck_assert(a[c] == (c < C / 2 ? 0.0f : 1.0f)); /* distance 0: sin 0, cos 0 */
  ck_assert(fabs(a[3 * C + 0] - sin(3.0)) < 1e-6 && fabs(a[3 * C + C / 2] - cos(3.0)) < 1e-6); /* f_0 = 1 */
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_xl");
  TCase *tc = tcase_create("xl");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, xl_attention_vs_ref, 1, 4); /* _i = 1..3 threads */
  tcase_add_test(tc, threads_bit_identical);
  tcase_add_test(tc, twin_vs_differences);
  tcase_add_test(tc, memory_vs_ref);
  tcase_add_test(tc, sinusoid_halves_vs_ref);
  suite_add_tcase(s, tc);
  return check_run(s);
}
