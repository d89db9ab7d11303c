/* test_rope.c: the rope op (rotary positions) end to end, through the kernel table and both
 * backends (docs/adding-an-op.md walks through the op).
 *
 * - Reference: tests/reference/fixtures/rope-tiny was written by tests/reference/make_rope_fixture.py
 *   (PyTorch, Meta's complex-multiplication formulation, float64 from the float32 weights; CI needs
 *   no PyTorch). Its model.mir (embedding -> linear to 3C -> rope {heads=3, theta=100}, T = 33) is
 *   built with --backend=c and --backend=llvm; PROG forward must match out.npy within
 *   max |ours - reference| / max |reference| <= 1e-5 (our float32 rounding of one length-24 dot
 *   product and one rotation: measured ~2e-7; a wrong position, pair layout, theta or head split
 *   is 1e-2 or more), and the two programs' outputs must be byte-identical.
 * - KV-cache decoding: tests/ir/rope-lm.mir (rope before causal attention, no other position
 *   signal) generates the same text with the cache (every step a call with t0 > 0) as with
 *   --no-cache (the whole sequence recomputed from position 0), past the context (the window
 *   slides), and logits within 1e-5 (the cached and uncached attention kernels sum in different
 *   orders, so the logits are not bit-equal; rope itself is, per position: test_rt_kernels.c).
 * - The autodiff pass reports that rope has no gradient rule yet, at the op's line:col.
 */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../runtime/modelc_rt.h"
#include "../../runtime/io/io.h" /* .npy (internal) */
#include "npy_test.h"
#include "sh.h"

#define FIX "tests/reference/fixtures/rope-tiny"
static char tmp[256];


static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_rope_XXXXXX");
  ck_assert(mkdtemp(tmp));
}

static void teardown(void) { sh("rm -rf %s", tmp); }

START_TEST(test_reference_both_backends) {
  const char *be[2] = {"c", "llvm"};
  for (int k = 0; k < 2; k++) {
    ck_assert_int_eq(sh("%s build --backend=%s " FIX "/model.mir -o %s/%s", MODELC_BIN, be[k], tmp, be[k]), 0);
    ck_assert_int_eq(sh("%s/%s forward --weights " FIX "/weights.safetensors --tokens " FIX "/tokens.npy --out %s/%s.npy",
                        tmp, be[k], tmp, be[k]),
                     0);
    char path[512];
    snprintf(path, sizeof path, "%s/%s.npy", tmp, be[k]);
    RtNpy ours = load(path), ref = load(FIX "/out.npy");
    ck_assert_int_eq(ours.ndim, 3);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(ours.shape[i], ref.shape[i]);
    double e = max_rel(ours.data, ref.data, numel(&ref));
    printf("rope-tiny (%s backend): max error / max |reference| = %.3g\n", be[k], e);
    ck_assert_msg(e <= 1e-5, "%s backend: rope output differs from PyTorch by %g", be[k], e);
    rt_npy_free(&ours);
    rt_npy_free(&ref);
  }
  ck_assert_msg(sh("cmp -s %s/c.npy %s/llvm.npy", tmp, tmp) == 0, "the C and LLVM programs' outputs differ");
  /* the C backend's call, generated from the kernel table's LOWER row */
  ck_assert_int_eq(sh("%s build --emit=c " FIX "/model.mir -o %s/m.c", MODELC_BIN, tmp), 0);
  ck_assert_int_eq(sh("grep -qF 'rt_rope(v6, v5, nb, nt, t0, 24, 3, 3, 100.0f, 0);' %s/m.c", tmp), 0);
}
END_TEST

START_TEST(test_kv_cache_equals_recompute) {
  ck_assert_int_eq(sh("%s build tests/ir/rope-lm.mir -o %s/lm", MODELC_BIN, tmp), 0);
  ck_assert_int_eq(sh("%s/lm init --seed 3 --out %s/w.safetensors", tmp, tmp), 0);
  const char *mode[2] = {"", "--no-cache"}, *name[2] = {"kv", "full"};
  for (int k = 0; k < 2; k++)
    ck_assert_int_eq(sh("%s/lm generate --weights %s/w.safetensors --prompt 'The rope ' -n 80 --temperature 0.8 "
                        "--seed 5 %s --logits-out %s/%s.npy > %s/%s.txt",
                        tmp, tmp, mode[k], tmp, name[k], tmp, name[k]),
                     0);
  ck_assert_msg(sh("cmp -s %s/kv.txt %s/full.txt", tmp, tmp) == 0, "KV-cache generation differs from recomputation");
  char a[512], b[512];
  snprintf(a, sizeof a, "%s/kv.npy", tmp);
  snprintf(b, sizeof b, "%s/full.npy", tmp);
  RtNpy x = load(a), y = load(b);
  ck_assert_int_eq(x.shape[0], 80); /* past the context of 32: the window slides */
  ck_assert_int_eq(numel(&x), numel(&y));
  double e = max_rel(x.data, y.data, numel(&y));
  printf("rope-lm: kv cache vs recompute: %.3g\n", e);
  ck_assert_msg(e <= 1e-5, "KV-cache logits differ from recomputation by %g", e);
  rt_npy_free(&x);
  rt_npy_free(&y);
}
END_TEST

/* rope's gradient rule (the inverse rotation): autodiff differentiates rope-lm, and the backward
 * holds the rope with inverse=1 (test_program_gqa checks its numbers against PyTorch). */
START_TEST(test_differentiable) {
  ck_assert_int_eq(sh("%s dump --passes=autodiff tests/ir/rope-lm.mir > %s/out", MODELC_BIN, tmp), 0);
  ck_assert_int_eq(sh("grep -q 'rope(.*heads=4, inverse=1' %s/out", tmp), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rope");
  TCase *tc = tcase_create("program");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_reference_both_backends);
  tcase_add_test(tc, test_kv_cache_equals_recompute);
  tcase_add_test(tc, test_differentiable);
  suite_add_tcase(s, tc);
  return check_run(s);
}
