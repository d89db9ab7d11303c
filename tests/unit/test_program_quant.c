/* test_program_quant.c: quantised inference programs (the quantize pass) end to end.
 *
 * The reference is tests/reference/make_quant_fixture.py's: quant-tiny (2 layers, every block
 * weight's K a multiple of 32) with its weights quantised by docs/passes.md's rules in NumPy, every
 * linear input quantised to int8 by the same rules, exact integer sums, the rest in float64. For
 * each scheme (int8, q8_0, q4_0, and q4_0 with head=true, embeddings=true):
 *   - the weights: `PROG export` of the program fed the f32 fixture writes, tensor for tensor, the
 *     bytes the script wrote (values and scales: the rounding rules, exactly);
 *   - the logits against the quantised reference. What may differ: an activation computed in f32
 *     here and in float64 there can land on the other side of an int8 rounding boundary (one step
 *     of its block's scale), and such flips propagate; and the f32 accumulation of the per-block
 *     terms. The bound is on the RMS difference normalised by the RMS logit: at most 1e-4 and a
 *     hundredth of what the scheme's rounding itself changes (the RMS of the quantised reference
 *     against the f32 one: 0.017 for q8_0, 0.19 for q4_0), so a kernel that skipped the
 *     quantisation or misread a scale fails it. Measured on the AMX Xeon: 2e-7 to 4e-7 (no flip
 *     moved the logits beyond f32 rounding);
 *   - a pre-quantised file (the fixture's SCHEME.safetensors) loads to the same bytes of logits as
 *     quantising the f32 file at load; the C and LLVM backends give the same bytes; and
 *     MODELC_CPU=portable (the plain-C kernels) agrees with the dispatched ones within 1e-5. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../runtime/io/io.h" /* .npy, safetensors (internal) */
#include "../../runtime/modelc_rt.h"
#include "npy_test.h"
#include "sh.h"

#define FIX "tests/reference/fixtures/quant-tiny"
#define SPEC "tests/reference/specs/quant-tiny.yaml"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_quant_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

/* sqrt(mean (a - b)^2) / sqrt(mean b^2) */
static double rms_err(const float *a, const float *b, size_t n) {
  double s = 0, sb = 1e-300;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - b[i];
    s += d * d, sb += (double)b[i] * b[i];
  }
  return sqrt(s / sb);
}

static RtNpy result(const char *out) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", tmp, out);
  return load(p);
}

/* The pipeline for a scheme name of the fixture ("q4_0-all": head and embeddings too). */
static void pipeline(const char *scheme, char *buf, size_t n) {
  char base[16];
  snprintf(base, sizeof base, "%.*s", (int)strcspn(scheme, "-"), scheme);
  snprintf(buf, n, "quantize<scheme=%s%s>,constfold,cse,fuse,dce,memplan", base,
           strstr(scheme, "-all") ? ";head=true;embeddings=true" : "");
}

static void build(const char *scheme, const char *prog, const char *flags) {
  char p[160];
  pipeline(scheme, p, sizeof p);
  ck_assert_int_eq(sh("%s build %s --passes='%s' " SPEC " -o %s/%s", MODELC_BIN, flags, p, tmp, prog), 0);
}

static void forward(const char *prog, const char *weights, const char *out, const char *env) {
  ck_assert_int_eq(sh("%s %s/%s forward --weights %s --tokens " FIX "/tokens.npy --out %s/%s", env, tmp, prog, weights,
                      tmp, out),
                   0);
}

/* every tensor of a's file has b's dtype, shape and bytes, and the files hold the same names */
static void same_tensors(const char *a, const char *b) {
  RtSafetensors *x, *y;
  RtError err;
  ck_assert_msg(rt_st_open(&x, a, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_st_open(&y, b, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(rt_st_count(x), rt_st_count(y));
  for (int i = 0; i < rt_st_count(y); i++) {
    const RtTensor *t = rt_st_tensor(y, i), *u = rt_st_find(x, t->name);
    ck_assert_msg(u, "%s: tensor %s missing", a, t->name);
    ck_assert_msg(u->dtype == t->dtype && u->ndim == t->ndim && u->nbytes == t->nbytes, "%s: %s differs in type", a,
                  t->name);
    for (int k = 0; k < t->ndim; k++) ck_assert_int_eq(u->shape[k], t->shape[k]);
    size_t bad = 0;
    for (size_t k = 0; k < t->nbytes; k++) bad += ((const unsigned char *)u->data)[k] != ((const unsigned char *)t->data)[k];
    ck_assert_msg(bad == 0, "%s: %s: %zu of %zu bytes differ from %s", a, t->name, bad, t->nbytes, b);
  }
  rt_st_close(x), rt_st_close(y);
}

static void scheme_end_to_end(const char *scheme) {
  char w[160], ref[160], out[64];
  build(scheme, "c", "");
  build(scheme, "l", "--backend=llvm");
  /* the f32 fixture, quantised at load; the export is the reference's quantised file */
  forward("c", FIX "/weights.safetensors", "c.npy", "");
  ck_assert_int_eq(sh("%s/c export --weights " FIX "/weights.safetensors --out %s/q.safetensors", tmp, tmp), 0);
  snprintf(w, sizeof w, FIX "/%s.safetensors", scheme);
  char q[300];
  snprintf(q, sizeof q, "%s/q.safetensors", tmp);
  same_tensors(q, w);
  /* the pre-quantised file: the same logits, byte for byte; LLVM likewise */
  forward("c", w, "cq.npy", "");
  ck_assert_msg(sh("cmp -s %s/c.npy %s/cq.npy", tmp, tmp) == 0, "%s: a pre-quantised file gives other logits", scheme);
  forward("l", FIX "/weights.safetensors", "l.npy", "");
  ck_assert_msg(sh("cmp -s %s/c.npy %s/l.npy", tmp, tmp) == 0, "%s: C and LLVM backends differ", scheme);
  /* against the reference */
  snprintf(ref, sizeof ref, FIX "/logits_%s.npy", scheme);
  RtNpy y = result("c.npy"), r = load(ref), f = load(FIX "/logits.npy");
  ck_assert_int_eq(numel(&y), numel(&r));
  double e = rms_err(y.data, r.data, numel(&r)), scheme_effect = rms_err(f.data, r.data, numel(&r)),
         f32_dist = rms_err(y.data, f.data, numel(&f));
  printf("quant-tiny %s: RMS vs quantised reference %.3g, the scheme's own effect %.3g (ours vs f32 %.3g)\n", scheme,
         e, scheme_effect, f32_dist);
  ck_assert_msg(e <= 1e-4 && e <= 0.01 * scheme_effect,
                "%s: RMS %.3g against the quantised reference (bound 1e-4 and a hundredth of %.3g)", scheme, e,
                scheme_effect);
  /* the portable kernels */
  snprintf(out, sizeof out, "p.npy");
  forward("c", FIX "/weights.safetensors", out, "MODELC_CPU=portable");
  RtNpy p = result(out);
  double ep = rms_err(p.data, y.data, numel(&y));
  ck_assert_msg(ep <= 1e-5, "%s: portable kernels differ from the dispatched ones by RMS %.3g", scheme, ep);
  rt_npy_free(&y), rt_npy_free(&r), rt_npy_free(&f), rt_npy_free(&p);
}

START_TEST(int8_end_to_end) { scheme_end_to_end("int8"); }
END_TEST
START_TEST(q8_0_end_to_end) { scheme_end_to_end("q8_0"); }
END_TEST
START_TEST(q4_0_end_to_end) { scheme_end_to_end("q4_0"); }
END_TEST
START_TEST(q4_0_all_end_to_end) { scheme_end_to_end("q4_0-all"); }
END_TEST

/* The weights take the format's bytes: PROG info's figure, and the export file's data. */
START_TEST(weight_bytes) {
  build("q4_0", "c", "");
  ck_assert_int_eq(sh("%s/c info > %s/info.txt", tmp, tmp), 0);
  /* 8 block weights: 2 x (192x64 + 64x64 + 256x64 + 64x256) = 98,304 weights at 4.5 bits (values
   * 49,152 bytes, scales 6,144), plus the f32 rest */
  ck_assert_int_eq(sh("grep -q '^weight formats: .*q4_0 55296 ' %s/info.txt", tmp), 0);
  ck_assert_int_eq(sh("grep -q '^quantised linear: ' %s/info.txt", tmp), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_quant");
  TCase *tc = tcase_create("end_to_end");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, int8_end_to_end);
  tcase_add_test(tc, q8_0_end_to_end);
  tcase_add_test(tc, q4_0_end_to_end);
  tcase_add_test(tc, q4_0_all_end_to_end);
  tcase_add_test(tc, weight_bytes);
  suite_add_tcase(s, tc);
  return check_run(s);
}
