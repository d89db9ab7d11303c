/* test_rt_distill.c: the distillation loss kernels (runtime/kernels/distill.c).
 *
 * (1) rt_distill_loss and rt_distill_grad against their _ref twins (double throughout): the loss and
 *     its KL and CE parts within 1e-5 relative, the gradient within 1e-5 of its largest element,
 *     over odd sizes (one row, a vocabulary of 1, rows over several fixed blocks), temperatures 0.5,
 *     1, 4 and alpha 0, 0.3, 1, a target out of range; the same bits with 1 and 3 threads; in
 *     place (dzs == zs) the same bits;
 * (2) the twin's gradient against central differences of the twin's loss along random directions
 *     (relative tolerance 1e-3): what proves the gradient formula right;
 * (3) identities: alpha = 0 is rt_cross_entropy; a student equal to its teacher has KL 0 and (at
 *     alpha = 1) a zero gradient; loss = alpha T^2 kl + (1 - alpha) ce. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"

static void fill_ids(int32_t *ids, int n, int V, uint64_t seed) {
  RtRng r;
  rt_rng_seed(&r, seed);
  for (int i = 0; i < n; i++) ids[i] = (int32_t)(rt_rng_u32(&r) % (uint32_t)V);
}

static void check_fast(int R, int V, float T, float a, uint64_t seed) {
  size_t n = (size_t)R * V;
  float *zs = falloc(n), *zt = falloc(n), *g = falloc(n), *gr = falloc(n), *g3 = falloc(n);
  int32_t *y = malloc((size_t)R * sizeof *y);
  fill_uniform(zs, n, -5, 5, seed);
  fill_uniform(zt, n, -5, 5, seed + 1);
  fill_ids(y, R, V, seed + 2);
  if (R > 2) y[1] = V; /* out of range: no CE term */
  float l, k, c, lr, kr, cr;
  rt_set_threads(1);
  rt_distill_loss(&l, &k, &c, zs, zt, y, R, V, T, a);
  rt_distill_loss_ref(&lr, &kr, &cr, zs, zt, y, R, V, T, a);
  ck_assert_msg(fabsf(l - lr) <= 1e-5f * fabsf(lr) + 1e-7f, "loss R=%d V=%d T=%g a=%g: %.9g vs %.9g", R, V, T, a, l, lr);
  ck_assert_msg(fabsf(k - kr) <= 1e-5f * fabsf(kr) + 1e-7f, "kl R=%d V=%d: %.9g vs %.9g", R, V, k, kr);
  ck_assert_msg(fabsf(c - cr) <= 1e-5f * fabsf(cr) + 1e-7f, "ce R=%d V=%d: %.9g vs %.9g", R, V, c, cr);
  double T2 = (double)T * T;
  ck_assert(fabs(l - (a * T2 * k + (1 - a) * c)) <= 1e-5 * fabs(l) + 1e-7);
  rt_distill_grad(g, zs, zt, y, R, V, T, a, 0.8f);
  rt_distill_grad_ref(gr, zs, zt, y, R, V, T, a, 0.8f);
  double e = norm_err(g, gr, n);
  ck_assert_msg(e < 1e-5, "grad R=%d V=%d T=%g a=%g: normalised error %g", R, V, T, a, e);
  /* 3 threads: the same bits */
  rt_set_threads(3);
  float l3, k3, c3;
  rt_distill_loss(&l3, &k3, &c3, zs, zt, y, R, V, T, a);
  rt_distill_grad(g3, zs, zt, y, R, V, T, a, 0.8f);
  ck_assert(l3 == l && k3 == k && c3 == c);
  ck_assert(memcmp(g, g3, n * sizeof(float)) == 0);
  /* in place */
  rt_distill_grad(zs, zs, zt, y, R, V, T, a, 0.8f);
  ck_assert(memcmp(zs, g, n * sizeof(float)) == 0);
  rt_set_threads(1);
  free(zs), free(zt), free(g), free(gr), free(g3), free(y);
}

START_TEST(fast_vs_ref) {
  static const float temps[] = {0.5f, 1.0f, 4.0f}, alphas[] = {0.0f, 0.3f, 1.0f};
  static const int sizes[][2] = {{1, 7}, {5, 1}, {37, 300}, {200, 256}, {3, 1000}};
  uint64_t seed = 1;
  for (int s = 0; s < 5; s++)
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 3; j++) check_fast(sizes[s][0], sizes[s][1], temps[i], alphas[j], seed++);
}
END_TEST

/* L(zs) of the twin in double-ish precision: its float result */
static double loss_ref(const float *zs, const float *zt, const int32_t *y, int R, int V, float T, float a) {
  float l, k, c;
  rt_distill_loss_ref(&l, &k, &c, zs, zt, y, R, V, T, a);
  return l;
}

START_TEST(ref_vs_central_differences) {
  int R = 6, V = 11;
  size_t n = (size_t)R * V;
  float *zs = falloc(n), *zt = falloc(n), *g = falloc(n), *d = falloc(n), *zp = falloc(n), *zm = falloc(n);
  int32_t y[6];
  fill_ids(y, R, V, 5);
  for (int trial = 0; trial < 6; trial++) {
    float T = trial % 2 ? 2.0f : 0.7f, a = trial < 2 ? 0.5f : trial < 4 ? 1.0f : 0.0f;
    fill_uniform(zs, n, -2, 2, 10 + trial);
    fill_uniform(zt, n, -2, 2, 20 + trial);
    fill_uniform(d, n, -1, 1, 30 + trial);
    rt_distill_grad_ref(g, zs, zt, y, R, V, T, a, 1.0f);
    float eps = 1e-2f;
    double dot = 0;
    for (size_t i = 0; i < n; i++) {
      zp[i] = zs[i] + eps * d[i];
      zm[i] = zs[i] - eps * d[i];
      dot += (double)g[i] * ((double)zp[i] - zm[i]);
    }
    double fd = loss_ref(zp, zt, y, R, V, T, a) - loss_ref(zm, zt, y, R, V, T, a);
    ck_assert_msg(fabs(fd - dot) <= 1e-3 * fabs(dot) + 1e-6, "T=%g a=%g: finite difference %.9g, gradient %.9g", T, a,
                  fd, dot);
  }
  free(zs), free(zt), free(g), free(d), free(zp), free(zm);
}
END_TEST

START_TEST(identities) {
  int R = 9, V = 40;
  size_t n = (size_t)R * V;
  float *zs = falloc(n), *zt = falloc(n), *g = falloc(n);
  int32_t *y = malloc((size_t)R * sizeof *y);
  fill_uniform(zs, n, -3, 3, 7);
  fill_uniform(zt, n, -3, 3, 8);
  fill_ids(y, R, V, 9);
  float l, k, c;
  rt_distill_loss(&l, &k, &c, zs, zt, y, R, V, 3.0f, 0.0f); /* alpha 0: the cross-entropy */
  float ce = rt_cross_entropy(zs, y, R, V);
  ck_assert_msg(fabsf(l - ce) <= 1e-6f * ce && fabsf(c - ce) <= 1e-6f * ce, "alpha 0: %.9g vs ce %.9g", l, ce);
  ck_assert(k > 0);
  rt_distill_loss(&l, &k, &c, zs, zs, y, R, V, 2.0f, 1.0f); /* the teacher itself */
  ck_assert_msg(fabsf(k) < 1e-6f && fabsf(l) < 1e-5f, "student == teacher: kl %g, loss %g", k, l);
  rt_distill_grad(g, zs, zs, y, R, V, 2.0f, 1.0f, 1.0f);
  for (size_t i = 0; i < n; i++) ck_assert_msg(fabsf(g[i]) < 1e-7f, "student == teacher: gradient %g at %zu", g[i], i);
  free(zs), free(zt), free(g), free(y);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_distill");
  TCase *tc = tcase_create("distill");
  tcase_add_test(tc, fast_vs_ref);
  tcase_add_test(tc, ref_vs_central_differences);
  tcase_add_test(tc, identities);
  suite_add_tcase(s, tc);
  return check_run(s);
}
