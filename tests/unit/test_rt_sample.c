/* test_rt_sample.c: sampling: greedy picks the argmax (ties to the lowest index); top-k = 1 equals
 * greedy; a seeded run repeats exactly; top-p keeps the smallest set whose mass reaches p; top-k
 * keeps the k best; the empirical distribution of many draws matches the softmax; and non-finite
 * logits (NaN, +Inf) under every mode return an index in [0, V) without touching memory outside
 * the V-entry scratch. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdio.h>

START_TEST(greedy) {
  float l[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, -INFINITY};
  ck_assert_int_eq(rt_sample_argmax(l, 6), 1);
  RtRng r;
  rt_rng_seed(&r, 1);
  RtSampleParams g = {0.0f, 0, 1.0f};
  ck_assert_int_eq(rt_sample(l, 6, &g, &r, NULL, NULL), 1);
  float nanfirst[3] = {NAN, 1.0f, 3.0f};
  ck_assert_int_eq(rt_sample_argmax(nanfirst, 3), 2);
  /* top-k = 1 is greedy at any temperature, on random logits */
  float big[1000], probs[1000];
  int32_t idx[1000];
  RtSampleParams k1 = {1.5f, 1, 0.9f};
  for (int trial = 0; trial < 20; trial++) {
    fill_uniform(big, 1000, -5, 5, 100 + trial);
    ck_assert_int_eq(rt_sample(big, 1000, &k1, &r, probs, idx), rt_sample_argmax(big, 1000));
  }
}
END_TEST

START_TEST(rng_reproducible) {
  RtRng a, b;
  rt_rng_seed(&a, 42);
  rt_rng_seed(&b, 42);
  for (int i = 0; i < 100; i++)
    ck_assert_uint_eq(rt_rng_u32(&a), rt_rng_u32(&b));
  rt_rng_seed(&b, 43);
  int same = 0;
  for (int i = 0; i < 100; i++)
    same += rt_rng_u32(&a) == rt_rng_u32(&b);
  ck_assert_int_lt(same, 3);
  for (int i = 0; i < 1000; i++) {
    float u = rt_rng_uniform(&a);
    ck_assert(u >= 0.0f && u < 1.0f);
  }
  /* a seeded sampling run repeats */
  float l[50], probs[50];
  int32_t idx[50], run1[200];
  fill_uniform(l, 50, -2, 2, 7);
  RtSampleParams p = {0.8f, 20, 0.9f};
  rt_rng_seed(&a, 2024);
  for (int i = 0; i < 200; i++)
    run1[i] = rt_sample(l, 50, &p, &a, probs, idx);
  rt_rng_seed(&a, 2024);
  for (int i = 0; i < 200; i++)
    ck_assert_int_eq(rt_sample(l, 50, &p, &a, probs, idx), run1[i]);
}
END_TEST

/* Draws n samples and returns the frequency of each id in freq[V]. */
static void draw(const float *l, int V, RtSampleParams p, int n, uint64_t seed, double *freq) {
  float probs[64];
  int32_t idx[64];
  RtRng r;
  rt_rng_seed(&r, seed);
  for (int i = 0; i < V; i++)
    freq[i] = 0;
  for (int i = 0; i < n; i++) {
    int t = rt_sample(l, V, &p, &r, probs, idx);
    ck_assert(t >= 0 && t < V);
    freq[t] += 1.0 / n;
  }
}

START_TEST(distribution_and_truncation) {
  /* probabilities 0.4, 0.3, 0.15, 0.1, 0.05 (shuffled) as logits */
  const double pr[5] = {0.15, 0.4, 0.05, 0.3, 0.1};
  float l[5];
  for (int i = 0; i < 5; i++)
    l[i] = (float)log(pr[i]) + 3.0f;
  double f[5];
  enum { N = 200000 };
  draw(l, 5, (RtSampleParams){1.0f, 0, 1.0f}, N, 1, f); /* plain */
  for (int i = 0; i < 5; i++)
    ck_assert_msg(fabs(f[i] - pr[i]) < 0.005, "id %d: %g vs %g", i, f[i], pr[i]);

  draw(l, 5, (RtSampleParams){1.0f, 0, 0.65f}, N, 2, f); /* top-p 0.65 -> {0.4, 0.3} */
  ck_assert(f[0] == 0 && f[2] == 0 && f[4] == 0);
  ck_assert(fabs(f[1] - 0.4 / 0.7) < 0.005 && fabs(f[3] - 0.3 / 0.7) < 0.005);

  draw(l, 5, (RtSampleParams){1.0f, 0, 0.70f - 1e-4f}, N, 3, f); /* mass 0.7 reaches p: still two */
  ck_assert(f[0] == 0 && f[2] == 0 && f[4] == 0);

  draw(l, 5, (RtSampleParams){1.0f, 0, 0.8f}, N, 4, f); /* -> {0.4, 0.3, 0.15} */
  ck_assert(f[2] == 0 && f[4] == 0 && f[0] > 0);
  ck_assert(fabs(f[0] - 0.15 / 0.85) < 0.005);

  draw(l, 5, (RtSampleParams){1.0f, 2, 1.0f}, N, 5, f); /* top-k 2 */
  ck_assert(f[0] == 0 && f[2] == 0 && f[4] == 0);
  ck_assert(fabs(f[1] - 0.4 / 0.7) < 0.005);

  draw(l, 5, (RtSampleParams){1.0f, 3, 0.75f}, N, 6, f); /* top-k 3 (mass .85), then top-p .75 of it */
  ck_assert(f[0] == 0 && f[2] == 0 && f[4] == 0);        /* .4+.3 = .7/.85 = .82 >= .75 */

  draw(l, 5, (RtSampleParams){0.5f, 0, 1.0f}, N, 7, f); /* temperature 0.5 squares the odds */
  double z = 0;
  for (int i = 0; i < 5; i++)
    z += pr[i] * pr[i];
  for (int i = 0; i < 5; i++)
    ck_assert_msg(fabs(f[i] - pr[i] * pr[i] / z) < 0.005, "T=0.5 id %d", i);

  /* ties in top-k go to the lowest index */
  float tie[4] = {1.0f, 2.0f, 2.0f, 2.0f};
  draw(tie, 4, (RtSampleParams){1.0f, 2, 1.0f}, 1000, 8, f);
  ck_assert(f[3] == 0 && f[0] == 0 && f[1] > 0 && f[2] > 0);
}
END_TEST

/* A diverged model: NaN or +Inf logits. The scratch sits between guard entries that must stay
 * untouched, and every mode returns a valid index. */
START_TEST(non_finite) {
  enum { V = 8 };
  float bad[3][V];
  for (int i = 0; i < V; i++) {
    bad[0][i] = NAN;
    bad[1][i] = INFINITY;
    bad[2][i] = (float)i;
  }
  bad[2][3] = NAN;
  bad[2][5] = INFINITY;
  RtSampleParams modes[4] = {{0.0f, 0, 1.0f}, {1.0f, 0, 1.0f}, {1.0f, 3, 1.0f}, {0.8f, 0, 0.9f}};
  RtRng r;
  rt_rng_seed(&r, 5);
  for (int b = 0; b < 3; b++)
    for (int m = 0; m < 4; m++) {
      float probs[V + 2];
      int32_t idx[V + 2];
      for (int i = 0; i < V + 2; i++) {
        probs[i] = -7.0f;
        idx[i] = -7;
      }
      int t = rt_sample(bad[b], V, &modes[m], &r, probs + 1, idx + 1);
      ck_assert_msg(t >= 0 && t < V, "logits %d, mode %d: token %d", b, m, t);
      ck_assert(probs[0] == -7.0f && probs[V + 1] == -7.0f && idx[V + 1] == -7);
    }
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_sample");
  TCase *tc = tcase_create("sample");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, greedy);
  tcase_add_test(tc, rng_reproducible);
  tcase_add_test(tc, distribution_and_truncation);
  tcase_add_test(tc, non_finite);
  suite_add_tcase(s, tc);
  return check_run(s);
}
