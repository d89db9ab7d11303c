/* test_rt_attention_sparse.c: the block-sparse attention kernels (runtime/kernels/attention_sparse.c).
 *
 * 1. Every query sees itself (and, causal, no later key); rt_exp_row maps masked (-inf) scores
 *    to exactly 0, as the kernels rely on.
 * 2. rt_attention_sparse and rt_attention_sparse_dx against their _ref twins (dense attention with
 *    the explicit element mask) by normalised error < 1e-5, for every pattern (local causal and
 *    bidirectional, strided, fixed, with global tokens, a window wider than a block, a block that
 *    does not divide the pattern's lengths), T = 37 and 100 with block 16 (partial last blocks),
 *    1 and 2 heads, with 1, 2 and 3 pool threads, and with blocks of 32 and 48 (bands of several
 *    blocks, the first ones holding global keys); outputs and scratch pre-filled with NaN (every
 *    element written, no scratch read before it is written); scratch at its exact size (ASan
 *    catches overruns).
 * 3. 1, 2 and 3 threads give the same bytes, forward and backward.
 * 4. The dense kind is rt_attention_ref; the backward _ref against central differences of the
 *    forward _ref (L = sum(w o out), along random directions on q, k and v separately). */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"

static const RtSparsePattern PATS[] = {
    {RT_SPARSE_LOCAL, 16, 5, 0, 0, 0},   /* local, window inside a block */
    {RT_SPARSE_LOCAL, 16, 40, 0, 0, 0},  /* local, window over several blocks: full blocks */
    {RT_SPARSE_STRIDED, 16, 0, 6, 0, 0}, /* strided, stride not dividing the block */
    {RT_SPARSE_FIXED, 16, 0, 8, 2, 0},   /* fixed, l = 8, c = 2 */
    {RT_SPARSE_FIXED, 16, 0, 10, 3, 2},  /* fixed, l = 10 (not a multiple of the block), global 2 */
    {RT_SPARSE_LOCAL, 16, 7, 0, 0, 3},   /* local + global */
    {RT_SPARSE_STRIDED, 5, 0, 4, 0, 1},  /* block 5, strided + global */
    {RT_SPARSE_STRIDED, 64, 0, 2, 0, 0}, /* stride 2: T = 100's class products go to rt_gemm (T = 37's are small) */
    {RT_SPARSE_DENSE, 16, 0, 0, 0, 0},   /* dense: every block full */
    /* blocks of 32 and 48: bands of several blocks, a partial last tile */
    {RT_SPARSE_LOCAL, 32, 40, 0, 0, 0},   /* local */
    {RT_SPARSE_LOCAL, 32, 20, 0, 0, 3},   /* local + global: the first bands hold the global keys */
    {RT_SPARSE_STRIDED, 48, 0, 30, 0, 2}, /* strided + global */
};
enum { NPATS = sizeof PATS / sizeof PATS[0] };

START_TEST(pattern_basics) {
  for (int pi = 0; pi < NPATS; pi++)
    for (int causal = 0; causal <= 1; causal++)
      for (int q = 0; q < 100; q++) {
        ck_assert_int_eq(rt_sparse_check(&PATS[pi]), 0);
        ck_assert(rt_sparse_allowed(&PATS[pi], causal, q, q)); /* every query sees itself */
        ck_assert(!causal || !rt_sparse_allowed(&PATS[pi], causal, q, q + 1));
      }
  /* the kernels let masked (-inf) scores through rt_exp_row: they must come out exactly 0 */
  float row[11];
  for (int j = 0; j < 11; j++)
    row[j] = j % 3 ? -INFINITY : 0.5f * j;
  float sum = rt_exp_row(row, row, 11, 4.5f);
  for (int j = 0; j < 11; j++)
    ck_assert(j % 3 ? row[j] == 0.0f : row[j] > 0.0f);
  ck_assert(sum > 1.0f && rt_expf(-INFINITY) == 0.0f);
  RtSparsePattern bad = {RT_SPARSE_FIXED, 16, 0, 4, 5, 0};
  ck_assert_int_eq(rt_sparse_check(&bad), -1);
  bad = (RtSparsePattern){RT_SPARSE_LOCAL, 0, 4, 0, 0, 0};
  ck_assert_int_eq(rt_sparse_check(&bad), -1);
}
END_TEST

static void nan_fill(float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    x[i] = NAN;
}

static void check_sparse(const RtSparsePattern *p, int B, int T, int C, int nh, int causal, uint64_t seed) {
  size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
  float *qkv = falloc(nqkv), *dy = falloc(no), *o = falloc(no), *r = falloc(no);
  float *dq = falloc(nqkv), *dr = falloc(nqkv);
  float *s1 = falloc(rt_attention_sparse_scratch_floats(T, C, nh, p));
  float *s2 = falloc(rt_attention_sparse_dx_scratch_floats(T, C, nh, p));
  fill_uniform(qkv, nqkv, -2, 2, seed);
  fill_uniform(dy, no, -1, 1, seed + 100);
  nan_fill(o, no), nan_fill(dq, nqkv);
  nan_fill(s1, rt_attention_sparse_scratch_floats(T, C, nh, p)); /* nothing may read scratch it did not write */
  nan_fill(s2, rt_attention_sparse_dx_scratch_floats(T, C, nh, p));
  rt_attention_sparse(o, qkv, B, T, C, nh, causal, p, s1);
  rt_attention_sparse_ref(r, qkv, B, T, C, nh, causal, p);
  double e = norm_err(o, r, no);
  ck_assert_msg(e < 1e-5, "sparse kind %d block %d T=%d nh=%d causal=%d: forward error %g", p->kind, p->block, T, nh,
                causal, e);
  rt_attention_sparse_dx(dq, qkv, dy, B, T, C, nh, causal, p, s2);
  rt_attention_sparse_dx_ref(dr, qkv, dy, B, T, C, nh, causal, p);
  e = norm_err(dq, dr, nqkv);
  ck_assert_msg(e < 1e-5, "sparse kind %d block %d T=%d nh=%d causal=%d: backward error %g", p->kind, p->block, T, nh,
                causal, e);
  free(qkv), free(dy), free(o), free(r), free(dq), free(dr), free(s1), free(s2);
}

START_TEST(sparse_vs_ref) {
  rt_set_threads(_i);
  uint64_t seed = 1;
  for (int pi = 0; pi < NPATS; pi++)
    for (int causal = 0; causal <= 1; causal++) {
      check_sparse(&PATS[pi], 2, 37, 16, 1, causal, seed++);
      check_sparse(&PATS[pi], 1, 100, 16, 2, causal, seed++);
    }
}
END_TEST

/* Forward and backward with 1, 2 and 3 threads: the same bytes. */
START_TEST(threads_same_bytes) {
  enum { B = 2, T = 100, C = 24, NH = 2 };
  size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
  float *qkv = falloc(nqkv), *dy = falloc(no), *o[3], *d[3];
  fill_uniform(qkv, nqkv, -2, 2, 77);
  fill_uniform(dy, no, -1, 1, 78);
  for (int pi = 0; pi < NPATS; pi++)
    for (int causal = 0; causal <= 1; causal++) {
      const RtSparsePattern *p = &PATS[pi];
      for (int t = 0; t < 3; t++) {
        rt_set_threads(t + 1);
        o[t] = falloc(no), d[t] = falloc(nqkv);
        float *s1 = falloc(rt_attention_sparse_scratch_floats(T, C, NH, p));
        float *s2 = falloc(rt_attention_sparse_dx_scratch_floats(T, C, NH, p));
        rt_attention_sparse(o[t], qkv, B, T, C, NH, causal, p, s1);
        rt_attention_sparse_dx(d[t], qkv, dy, B, T, C, NH, causal, p, s2);
        free(s1), free(s2);
      }
      for (int t = 1; t < 3; t++) {
        ck_assert_msg(memcmp(o[0], o[t], no * sizeof(float)) == 0, "pattern %d: forward differs with %d threads", pi,
                      t + 1);
        ck_assert_msg(memcmp(d[0], d[t], nqkv * sizeof(float)) == 0, "pattern %d: backward differs with %d threads",
                      pi, t + 1);
      }
      for (int t = 0; t < 3; t++)
        free(o[t]), free(d[t]);
    }
  rt_set_threads(1);
  free(qkv), free(dy);
}
END_TEST

START_TEST(dense_kind_is_dense) {
  enum { B = 1, T = 45, C = 16, NH = 2 };
  RtSparsePattern p = {RT_SPARSE_DENSE, 16, 0, 0, 0, 0};
  float *qkv = falloc((size_t)B * T * 3 * C), *a = falloc((size_t)B * T * C), *r = falloc((size_t)B * T * C);
  fill_uniform(qkv, (size_t)B * T * 3 * C, -2, 2, 5);
  for (int causal = 0; causal <= 1; causal++) {
    rt_attention_sparse_ref(a, qkv, B, T, C, NH, causal, &p);
    rt_attention_ref(r, qkv, B, T, C, NH, causal);
    ck_assert(norm_err(a, r, (size_t)B * T * C) < 1e-6);
  }
  free(qkv), free(a), free(r);
}
END_TEST

/* L = sum(w o forward_ref(qkv)); along direction dd on one third (q, k or v) of qkv. */
static double loss(const float *qkv, const float *w, float *out, int B, int T, int C, int nh, int causal,
                   const RtSparsePattern *p) {
  rt_attention_sparse_ref(out, qkv, B, T, C, nh, causal, p);
  double L = 0;
  for (size_t i = 0; i < (size_t)B * T * C; i++)
    L += (double)w[i] * out[i];
  return L;
}

START_TEST(backward_ref_vs_finite_differences) {
  enum { B = 1, T = 37, C = 8, NH = 2 };
  static const RtSparsePattern fd[] = {{RT_SPARSE_FIXED, 16, 0, 8, 2, 2}, {RT_SPARSE_STRIDED, 16, 0, 5, 0, 0}};
  size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
  float *qkv = falloc(nqkv), *w = falloc(no), *out = falloc(no), *g = falloc(nqkv);
  float *xp = falloc(nqkv), *xm = falloc(nqkv), *dd = falloc(nqkv);
  double worst = 0;
  for (int pi = 0; pi < 2; pi++)
    for (int causal = 0; causal <= 1; causal++) {
      fill_uniform(qkv, nqkv, -1, 1, 31 + pi);
      fill_uniform(w, no, -1, 1, 41 + pi);
      rt_attention_sparse_dx_ref(g, qkv, w, B, T, C, NH, causal, &fd[pi]); /* dy = w */
      for (int part = 0; part < 3; part++)
        for (int dir = 0; dir < 2; dir++) {
          fill_uniform(dd, nqkv, -1, 1, 1000 + 10 * part + dir);
          double gd = 0;
          for (size_t i = 0; i < nqkv; i++) {
            int inpart = (int)((i % (3 * C)) / C) == part;
            xp[i] = inpart ? (float)(qkv[i] + 1e-2 * dd[i]) : qkv[i];
            xm[i] = inpart ? (float)(qkv[i] - 1e-2 * dd[i]) : qkv[i];
            gd += (double)g[i] * ((double)xp[i] - xm[i]);
          }
          double dl = loss(xp, w, out, B, T, C, NH, causal, &fd[pi]) - loss(xm, w, out, B, T, C, NH, causal, &fd[pi]);
          double rel = fabs(dl - gd) / fmax(fabs(gd), 1e-6);
          ck_assert_msg(rel < 1e-3, "pattern %d causal %d part %d: finite difference %g, gradient %g (rel %g)", pi,
                        causal, part, dl, gd, rel);
          worst = rel > worst ? rel : worst;
        }
    }
  fprintf(stderr, "sparse attention backward _ref vs finite differences: worst relative error %.2g\n", worst);
  free(qkv), free(w), free(out), free(g), free(xp), free(xm), free(dd);
}
END_TEST

/* The KV-cache kernel: a sequence of S positions fed in steps (a prefill of 10, then steps of 1
 * and 3 tokens) gives the rows of the whole-sequence _ref. A local pattern's ring of window +
 * global slots (ncache < S, and < the prefill: it wraps inside the prefill too) and a strided
 * pattern's plain cache of S positions; B = 2 sequences, 2 heads, 1..3 threads. */
START_TEST(kv_steps_vs_ref) {
  rt_set_threads(_i);
  enum { B = 2, S = 61, C = 16, NH = 2, TC = 16 };
  static const RtSparsePattern kv_pats[] = {
      {RT_SPARSE_LOCAL, 4, 7, 0, 0, 2},
      {RT_SPARSE_LOCAL, 16, 5, 0, 0, 0},
      {RT_SPARSE_STRIDED, 4, 0, 4, 0, 1},
      {RT_SPARSE_FIXED, 4, 0, 6, 2, 0},
  };
  for (int pi = 0; pi < 4; pi++) {
    const RtSparsePattern *p = &kv_pats[pi];
    int ncache = p->kind == RT_SPARSE_LOCAL ? p->window + p->global : S;
    size_t nq = (size_t)B * S * 3 * C;
    float *qkv = falloc(nq), *ref = falloc((size_t)B * S * C), *out = falloc((size_t)B * TC * C);
    float *step = falloc((size_t)B * TC * 3 * C), *kc = falloc((size_t)B * ncache * C), *vc = falloc((size_t)B * ncache * C);
    float *scr = falloc(rt_attention_sparse_kv_scratch_floats(TC, ncache, C, NH, p));
    fill_uniform(qkv, nq, -2, 2, 40 + pi);
    rt_attention_sparse_ref(ref, qkv, B, S, C, NH, 1, p);
    for (int t0 = 0, nt; t0 < S; t0 += nt) {
      nt = t0 == 0 ? 10 : (t0 / 7) % 2 ? 3 : 1;
      if (t0 + nt > S) nt = S - t0;
      for (int b = 0; b < B; b++) /* the step's rows, (B, nt, 3C) */
        memcpy(step + (size_t)b * nt * 3 * C, qkv + ((size_t)b * S + t0) * 3 * C, (size_t)nt * 3 * C * sizeof(float));
      nan_fill(out, (size_t)B * nt * C);
      rt_attention_sparse_kv(out, step, kc, vc, B, nt, t0, ncache, C, NH, p, TC, scr);
      for (int b = 0; b < B; b++) {
        double e = norm_err(out + (size_t)b * nt * C, ref + ((size_t)b * S + t0) * C, (size_t)nt * C);
        ck_assert_msg(e < 1e-5, "kind %d ncache %d: positions %d..%d of sequence %d: error %g", p->kind, ncache, t0,
                      t0 + nt - 1, b, e);
      }
    }
    free(qkv), free(ref), free(out), free(step), free(kc), free(vc), free(scr);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_attention_sparse");
  TCase *tc = tcase_create("attention_sparse");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, pattern_basics);
  tcase_add_loop_test(tc, sparse_vs_ref, 1, 4); /* _i = 1..3 threads */
  tcase_add_test(tc, threads_same_bytes);
  tcase_add_loop_test(tc, kv_steps_vs_ref, 1, 4);
  tcase_add_test(tc, dense_kind_is_dense);
  tcase_add_test(tc, backward_ref_vs_finite_differences);
  suite_add_tcase(s, tc);
  return check_run(s);
}
