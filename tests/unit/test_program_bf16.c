/* test_program_bf16.c: bf16 inference programs (modelc build --precision=bf16) end to end.
 *
 * The references are tests/reference/make_bf16_fixture.py's (PyTorch): every parameter rounded to
 * bf16 and the input of every linear layer rounded to bf16, the rest in float64. What bf16 does
 * to the tolerance:
 *   - a model whose only product reads a bf16-rounded input computed identically on both sides
 *     (head-tiny: embedding + positions + LayerNorm + tied head) matches to f32 accuracy: the
 *     products of bf16 values are exact in f32 and only their f32 sum rounds. Bound 1e-5
 *     (normalised max error), as for the f32 programs (test_program.c).
 *   - in deeper models an activation computed in f32 here and in float64 there rounds to
 *     different bf16 neighbours now and then (a relative jump of 2^-8 in one element), and the
 *     jumps propagate: the measured RMS difference is ~3e-3 for gpt-tiny (1e-4 for llama-tiny),
 *     about a third of what bf16 changes against f32 (~8e-3). That is the model's own noise
 *     floor, not an error: perturbing every linear input of the PyTorch reference by a relative
 *     1e-7 (the f32 rounding) before it is rounded to bf16 moves its logits by RMS 2.4e-3. So the bound is on the RMS difference, normalised by the
 *     RMS logit: at most 2^-8 (one bf16 step, 3.9e-3) against the bf16 reference, and the program
 *     must be at least twice as close to the bf16 reference as to the f32 fixture (the rounding
 *     happened, where the reference has it).
 * Also: the weights really take 2 bytes each (PROG info; PROG init writes BF16 tensors); the C
 * and LLVM backends give the same bytes; greedy generation is compared token by token with the
 * f32 program and the agreement is printed (random weights: not asserted beyond the first token);
 * MODELC_CPU=portable (the plain-C GEMM) agrees with the default GEMM within the RMS bound. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../runtime/io/io.h" /* .npy, safetensors (internal) */
#include "../../runtime/modelc_rt.h"
#include "npy_test.h"
#include "sh.h"

#define FIX "tests/reference/fixtures"
static char tmp[256];


/* max |a - b| / max |b| and sqrt(mean (a - b)^2) / sqrt(mean b^2) */
static void errs(const float *a, const float *b, size_t n, double *maxe, double *rms) {
  double md = 0, mb = 1e-30, s = 0, sb = 1e-300;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= md)) md = d;
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
    s += d * d, sb += (double)b[i] * b[i];
  }
  *maxe = md / mb, *rms = sqrt(s / sb);
}

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_bf16_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

/* builds SPEC as PROG (bf16, backend c or llvm) and runs forward on the fixture into OUT */
static void forward(const char *spec, const char *name, const char *prog, const char *flags, const char *out) {
  ck_assert_int_eq(sh("%s build --precision=bf16 %s %s -o %s/%s", MODELC_BIN, flags, spec, tmp, prog), 0);
  ck_assert_int_eq(sh("%s/%s forward --weights " FIX "/%s/weights.safetensors --tokens " FIX "/%s/tokens.npy "
                      "--out %s/%s",
                      tmp, prog, name, name, tmp, out),
                   0);
}

static RtNpy result(const char *out) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", tmp, out);
  return load(p);
}

START_TEST(head_exact) {
  forward("tests/reference/specs/head-tiny.yaml", "head-tiny", "head", "", "head.npy");
  RtNpy y = result("head.npy"), r = load(FIX "/head-tiny/logits_bf16.npy");
  ck_assert_int_eq(numel(&y), numel(&r));
  double e, rms;
  errs(y.data, r.data, numel(&r), &e, &rms);
  printf("head-tiny bf16: max error / max |logit| = %.3g\n", e);
  ck_assert_msg(e <= 1e-5, "head-tiny: bf16 logits differ from PyTorch's bf16 reference by %g", e);
  rt_npy_free(&y), rt_npy_free(&r);
}
END_TEST

static const struct {
  const char *name, *spec;
} deep[] = {{"gpt-tiny", "examples/gpt-tiny.yaml"}, {"llama-tiny", "tests/reference/specs/llama-tiny.yaml"}};

START_TEST(deep_models) {
  const char *name = deep[_i].name, *spec = deep[_i].spec;
  forward(spec, name, "c", "--passes=constfold,cse,fuse,dce", "c.npy");
  forward(spec, name, "l", "--backend=llvm --passes=constfold,cse,fuse,dce", "l.npy");
  ck_assert_msg(sh("cmp -s %s/c.npy %s/l.npy", tmp, tmp) == 0, "%s: bf16 logits, C vs LLVM backend", name);
  char p[512];
  snprintf(p, sizeof p, FIX "/%s/logits_bf16.npy", name);
  RtNpy y = result("c.npy"), r16 = load(p);
  snprintf(p, sizeof p, FIX "/%s/logits.npy", name);
  RtNpy r32 = load(p);
  size_t n = numel(&r16);
  ck_assert_int_eq(numel(&y), n);
  double e16, rms16, e32, rms32;
  errs(y.data, r16.data, n, &e16, &rms16);
  errs(y.data, r32.data, n, &e32, &rms32);
  printf("%s bf16: RMS difference %.3g from PyTorch bf16, %.3g from f32 (max %.3g, %.3g)\n", name, rms16, rms32, e16,
         e32);
  ck_assert_msg(rms16 <= 0x1p-8, "%s: RMS difference %g from the bf16 reference", name, rms16);
  ck_assert_msg(2 * rms16 <= rms32, "%s: not closer to the bf16 reference (%g) than to f32 (%g)", name, rms16, rms32);
  /* the plain-C GEMM (every CPU feature off) */
  ck_assert_int_eq(sh("MODELC_CPU=portable %s/c forward --weights " FIX "/%s/weights.safetensors --tokens " FIX
                      "/%s/tokens.npy --out %s/p.npy",
                      tmp, name, name, tmp),
                   0);
  RtNpy yp = result("p.npy");
  double ep, rmsp;
  errs(yp.data, r16.data, n, &ep, &rmsp);
  ck_assert_msg(rmsp <= 0x1p-8, "%s: portable GEMM: RMS difference %g from the bf16 reference", name, rmsp);
  rt_npy_free(&y), rt_npy_free(&r16), rt_npy_free(&r32), rt_npy_free(&yp);
}
END_TEST

/* 2 bytes per weight: in memory (PROG info) and in the files PROG init writes */
START_TEST(weights_are_bf16) {
  ck_assert_int_eq(sh("%s build --precision=bf16 --passes=constfold,cse,fuse,dce examples/gpt-tiny.yaml -o %s/g",
                      MODELC_BIN, tmp),
                   0);
  ck_assert_int_eq(sh("%s/g info | grep -q '^weight bytes: *1684992 '", tmp), 0); /* 842496 parameters */
  ck_assert_int_eq(sh("%s/g init --seed 1 --out %s/w.safetensors", tmp, tmp), 0);
  char p[512];
  snprintf(p, sizeof p, "%s/w.safetensors", tmp);
  RtSafetensors *st;
  RtError err;
  ck_assert_msg(rt_st_open(&st, p, &err) == 0, "%s", err.msg);
  const RtTensor *t = rt_st_find(st, "wte.weight");
  ck_assert_ptr_nonnull(t);
  ck_assert_int_eq(t->dtype, RT_DT_BF16);
  rt_st_close(st);
  /* the bf16 file loads back: forward runs on it */
  ck_assert_int_eq(sh("%s/g forward --weights %s/w.safetensors --tokens " FIX "/gpt-tiny/tokens.npy --out %s/o.npy",
                      tmp, tmp, tmp),
                   0);
}
END_TEST

/* greedy generation against the f32 program: the agreement is reported */
START_TEST(greedy_agreement) {
  const char *w = FIX "/gpt-tiny/weights.safetensors";
  ck_assert_int_eq(sh("%s build --precision=bf16 --passes=constfold,cse,fuse,dce examples/gpt-tiny.yaml -o %s/g16",
                      MODELC_BIN, tmp),
                   0);
  ck_assert_int_eq(sh("%s build --passes=constfold,cse,fuse,dce examples/gpt-tiny.yaml -o %s/g32", MODELC_BIN, tmp), 0);
  for (int k = 0; k < 2; k++)
    ck_assert_int_eq(sh("%s/g%s generate --weights %s --prompt 'The quick brown fox ' -n 64 --temperature 0 > %s/t%d",
                        tmp, k ? "32" : "16", w, tmp, k),
                     0);
  char p0[512], p1[512];
  snprintf(p0, sizeof p0, "%s/t0", tmp);
  snprintf(p1, sizeof p1, "%s/t1", tmp);
  FILE *a = fopen(p0, "rb"), *b = fopen(p1, "rb");
  ck_assert(a && b);
  unsigned char x[256], y[256];
  size_t na = fread(x, 1, sizeof x, a), nb = fread(y, 1, sizeof y, b);
  fclose(a), fclose(b);
  ck_assert_uint_eq(na, nb);
  size_t same = 0;
  while (same < na && x[same] == y[same]) same++;
  printf("gpt-tiny greedy, bf16 vs f32 (random weights): the first %zu of %zu tokens agree\n", same, na);
  ck_assert_uint_ge(same, 1);
}
END_TEST

START_TEST(training_refused) {
  ck_assert_int_ne(sh("%s build --precision=bf16 examples/gpt-tiny.yaml -o %s/x 2> %s/err", MODELC_BIN, tmp, tmp), 0);
  ck_assert_int_eq(sh("grep -q 'precision=bf16 builds an inference program' %s/err", tmp), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_bf16");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, head_exact);
  tcase_add_loop_test(tc, deep_models, 0, 2);
  tcase_add_test(tc, weights_are_bf16);
  tcase_add_test(tc, greedy_agreement);
  tcase_add_test(tc, training_refused);
  suite_add_tcase(s, tc);
  return check_run(s);
}
