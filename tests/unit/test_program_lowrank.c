/* test_program_lowrank.c: the lowrank pass (truncated SVD of trained weights at compile time).
 *
 *   - The factorisation itself (pass_svd, pass_svd_factors): at full rank U V reproduces W to f32
 *     rounding; at rank r the Frobenius error ||W - U V|| is sqrt(sum of the dropped s_i^2)
 *     (Eckart-Young), for tall, wide and square matrices; the energy and the rank it picks agree.
 *   - End to end on quant-tiny (tests/reference/specs/quant-tiny.yaml: 2 layers, dim 64, MLP 256):
 *     the program built with lowrank<rank=64;force> (full rank for every block weight) from the
 *     dense checkpoint, reading the factorised file modelc --weights-out wrote, gives the dense
 *     program's logits to 1e-4; the C and LLVM backends give the same bytes and write the same file;
 *     at rank 8 the logits differ and each matrix's reported energy is below 1; the factorised
 *     model fine-tunes (lowrank before autodiff). */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../passes/pass.h"
#include "../../runtime/io/io.h" /* .npy (internal) */
#include "npy_test.h"
#include "sh.h"

#define SPEC "tests/reference/specs/quant-tiny.yaml"
#define INFER "constfold,cse,fuse,dce,memplan"
static char tmp[256];

static void random_matrix(float *w, int64_t n, unsigned seed) {
  unsigned s = seed;
  for (int64_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    w[i] = (float)((s >> 8) / 16777216.0 - 0.5);
  }
}

START_TEST(test_svd_full_rank_and_eckart_young) {
  static const int64_t shapes[][2] = {{24, 8}, {8, 24}, {17, 17}, {48, 32}};
  for (int k = 0; k < 4; k++) {
    int64_t N = shapes[k][0], K = shapes[k][1], mn = N < K ? N : K;
    float *w = malloc(sizeof *w * (size_t)(N * K)), *u = malloc(sizeof *u * (size_t)(N * mn)),
          *v = malloc(sizeof *v * (size_t)(mn * K));
    random_matrix(w, N * K, 11u + (unsigned)k);
    PassSvd s;
    ck_assert(pass_svd(w, N, K, &s));
    ck_assert_int_eq(s.mn, (int)mn);
    for (int i = 1; i < mn; i++) ck_assert(s.s[i] <= s.s[i - 1]);
    ck_assert(fabs(pass_svd_energy(&s, (int)mn) - 1.0) < 1e-12);
    ck_assert_int_eq(pass_svd_rank_for(&s, 1.0), (int)mn);
    double wnorm = 0;
    for (int64_t i = 0; i < N * K; i++) wnorm += (double)w[i] * w[i];
    wnorm = sqrt(wnorm);
    for (int r = 1; r <= mn; r++) {
      pass_svd_factors(&s, r, u, v);
      double err = 0, maxe = 0, dropped = 0;
      for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < K; j++) {
          double x = 0;
          for (int q = 0; q < r; q++) x += (double)u[i * r + q] * v[q * K + j];
          double e = x - w[i * K + j];
          err += e * e;
          maxe = fabs(e) > maxe ? fabs(e) : maxe;
        }
      for (int q = r; q < mn; q++) dropped += s.s[q] * s.s[q];
      err = sqrt(err);
      dropped = sqrt(dropped);
      ck_assert_msg(fabs(err - dropped) <= 1e-4 * dropped + 1e-6 * wnorm, "[%lld,%lld] rank %d: error %g, sqrt of "
                    "the dropped s^2 %g", (long long)N, (long long)K, r, err, dropped);
      if (r == mn) ck_assert_msg(maxe < 1e-5, "full rank: max error %g", maxe);
      /* the energy of rank r picks rank r back (or less, when s_r is 0 to rounding) */
      ck_assert_int_le(pass_svd_rank_for(&s, pass_svd_energy(&s, r)), r);
      ck_assert(pass_svd_energy(&s, r) <= 1.0 + 1e-12);
    }
    pass_svd_free(&s);
    free(w), free(u), free(v);
  }
}
END_TEST

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_lowrank_XXXXXX");
  ck_assert(mkdtemp(tmp));
  ck_assert_int_eq(sh("%s build --passes=" INFER " " SPEC " -o %s/dense", MODELC_BIN, tmp), 0);
  ck_assert_int_eq(sh("%s/dense init --seed 7 --out %s/w.safetensors > /dev/null", tmp, tmp), 0);
  FILE *f;
  char p[300];
  snprintf(p, sizeof p, "%s/tok.npy", tmp);
  write_tokens_npy(p, "Call me Ishmael. Some years ago, never mind how long", 2, 16);
  snprintf(p, sizeof p, "%s/text.txt", tmp);
  ck_assert((f = fopen(p, "w")) != NULL);
  for (int i = 0; i < 60; i++) fprintf(f, "Call me Ishmael. Some years ago, never mind how long, line %d.\n", i);
  fclose(f);
}
static void teardown(void) { sh("rm -rf %s", tmp); }

/* Builds tmp/prog with the pipeline, factorising tmp/w.safetensors into tmp/prog.safetensors; the
 * pass's notes in tmp/prog.txt. */
static void build(const char *prog, const char *passes, const char *flags) {
  ck_assert_int_eq(sh("%s build %s --passes='%s' --weights %s/w.safetensors --weights-out %s/%s.safetensors " SPEC
                      " -o %s/%s 2> %s/%s.txt", MODELC_BIN, flags, passes, tmp, tmp, prog, tmp, prog, tmp, prog), 0);
}

static RtNpy forward(const char *prog, const char *weights) {
  char out[300];
  snprintf(out, sizeof out, "%s/%s.npy", tmp, prog);
  ck_assert_int_eq(sh("%s/%s forward --weights %s/%s --tokens %s/tok.npy --out %s", tmp, prog, tmp, weights, tmp, out), 0);
  return load(out);
}

START_TEST(test_full_rank_program_equals_dense) {
  build("full", "lowrank<rank=64;force>," INFER, "");
  build("full_ll", "lowrank<rank=64;force>," INFER, "--backend=llvm");
  build("r8", "lowrank<rank=8>," INFER, "");
  ck_assert_int_eq(sh("grep -q 'h.1.mlp.c_fc.weight \\[256,64\\]: rank 64, energy 1.0000, params 16,384 -> 20,480' "
                      "%s/full.txt", tmp), 0);
  ck_assert_msg(sh("cmp -s %s/full.safetensors %s/full_ll.safetensors", tmp, tmp) == 0,
                "the C and LLVM builds wrote different factorised weights");
  RtNpy d = forward("dense", "w.safetensors"), a = forward("full", "full.safetensors"),
        b = forward("full_ll", "full.safetensors"), c = forward("r8", "r8.safetensors");
  double e = npy_max_rel(&a, &d);
  ck_assert_msg(e < 1e-4, "full rank: logits differ from the dense program's by %g", e);
  ck_assert_msg(memcmp(a.data, b.data, numel(&a) * 4) == 0, "the C and LLVM backends' logits differ");
  ck_assert_msg(npy_max_rel(&c, &d) > 1e-3, "rank 8 gives the dense logits (%g)", npy_max_rel(&c, &d));
  /* every matrix at rank 8 keeps less than all of its energy; 8 of them factorised */
  ck_assert_int_eq(sh("test $(grep -c 'rank 8, energy 0\\.' %s/r8.txt) -eq 8", tmp), 0);
  ck_assert_int_ne(sh("grep -q 'rank 8, energy 1' %s/r8.txt", tmp), 0);
  rt_npy_free(&a), rt_npy_free(&b), rt_npy_free(&c), rt_npy_free(&d);
}
END_TEST

START_TEST(test_factorised_model_fine_tunes) {
  build("tr", "lowrank<energy=0.8>,autodiff," INFER, "");
  ck_assert_int_eq(sh("%s/tr train --weights %s/tr.safetensors --data %s/text.txt --steps 3 --lr 1e-3 --eval-every 0 "
                      "--threads 1 --out %s/t.safetensors > /dev/null 2>&1", tmp, tmp, tmp, tmp), 0);
  RtNpy a = forward("tr", "t.safetensors");
  for (size_t i = 0; i < numel(&a); i++) ck_assert(isfinite(((float *)a.data)[i]));
  rt_npy_free(&a);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_lowrank");
  TCase *unit = tcase_create("svd");
  tcase_add_test(unit, test_svd_full_rank_and_eckart_young);
  suite_add_tcase(s, unit);
  TCase *tc = tcase_create("programs");
  tcase_set_timeout(tc, 600);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_full_rank_program_equals_dense);
  tcase_add_test(tc, test_factorised_model_fine_tunes);
  suite_add_tcase(s, tc);
  return check_run(s);
}
