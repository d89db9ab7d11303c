/* test_program_gqa.c: rotary positions and grouped-query attention, end to end.
 *
 * The reference is tests/reference/make_llama_fixture.py's: gqa-tiny (tests/reference/specs/
 * gqa-tiny.yaml: 2 pre-norm layers, RMSNorm, rope theta 10000, 4 query heads over 2 KV heads,
 * SwiGLU, no biases, a tied head), written in torch after Meta's reference (complex rotation,
 * repeat_interleave of the KV heads). With autodiff (ref_program.h): the program's parameters are
 * the reference's (c_attn [(H + 2G) hd, C] = [64, 32]), the logits within 1e-5 of the largest,
 * the loss within 1e-5 relative, every gradient within 2e-5 of its largest element (the rope
 * gradient is the inverse rotation; a KV head's gradient sums over its query heads), C and LLVM
 * byte-identical. Then KV-cache generation (G-head caches, rope at t0 > 0) against recomputation,
 * both backends, and the KV-cache bytes PROG info reports (half of multi-head attention's). */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ref_program.h"

#define FIX "tests/reference/fixtures/gqa-tiny"
#define SPEC "tests/reference/specs/gqa-tiny.yaml"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_gqa_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

START_TEST(against_pytorch) { ref_config(tmp, SPEC, FIX, "cse", "", 2e-5); }
END_TEST

START_TEST(kv_cache_equals_recompute) {
  static const char *const be[2] = {"", "--backend=llvm"};
  for (int k = 0; k < 2; k++) {
    ck_assert_int_eq(sh("%s build %s " SPEC " -o %s/g", MODELC_BIN, be[k], tmp), 0);
    const char *mode[2] = {"", "--no-cache"}, *name[2] = {"kv", "full"};
    for (int m = 0; m < 2; m++)
      ck_assert_int_eq(sh("%s/g generate --weights " FIX "/weights.safetensors --prompt-tokens 3,7 -n 12 --temperature 0.8 "
                          "--seed 5 %s --logits-out %s/%s.npy --tokens-out %s/%s_t.npy > %s/%s.txt",
                          tmp, mode[m], tmp, name[m], tmp, name[m], tmp, name[m]),
                       0);
    ck_assert_msg(sh("cmp -s %s/kv.txt %s/full.txt", tmp, tmp) == 0, "KV-cache generation differs from recomputation");
    ck_assert_msg(sh("cmp -s %s/kv_t.npy %s/full_t.npy", tmp, tmp) == 0, "KV-cache token ids differ from recomputation");
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/kv.npy", tmp);
    snprintf(b, sizeof b, "%s/full.npy", tmp);
    RtNpy x = load(a), y = load(b);
    ck_assert_int_eq(numel(&x), numel(&y));
    double e = max_rel(x.data, y.data, numel(&y));
    printf("gqa-tiny (%s): kv cache vs recompute: %.3g\n", k ? "llvm" : "c", e);
    ck_assert_msg(e <= 1e-5, "KV-cache logits differ from recomputation by %g", e);
    rt_npy_free(&x), rt_npy_free(&y);
  }
  /* --prompt-tokens refuses ids outside the vocabulary, junk, too many ids, and --prompt beside it */
  static const char *const bad[][2] = {{"--prompt-tokens 64", "token ids below the vocabulary"},
                                       {"--prompt-tokens 1,x", "token ids below the vocabulary"},
                                       {"--prompt-tokens 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "more ids than the context"},
                                       {"--prompt-tokens 1 --prompt a", "not both"}};
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(sh("%s/g generate --weights " FIX "/weights.safetensors %s -n 2 > /dev/null 2> %s/err", tmp, bad[i][0], tmp), 1);
    ck_assert_msg(sh("grep -q '%s' %s/err", bad[i][1], tmp) == 0, "%s: no '%s'", bad[i][0], bad[i][1]);
  }
  /* 2 layers x (k, v) x 16 positions x G hd = 16 floats: 4096 bytes (multi-head: 8192) */
  ck_assert_int_eq(sh("%s/g info | grep -q 'state bytes: *4096 at batch 1'", tmp), 0);
  /* and only that line: a cached model is not also said to have "0 (no KV cache)" */
  ck_assert_int_eq(sh("test \"$(%s/g info | grep -c 'state bytes')\" = 1", tmp), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_gqa");
  TCase *tc = tcase_create("gqa");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, against_pytorch);
  tcase_add_test(tc, kv_cache_equals_recompute);
  suite_add_tcase(s, tc);
  return check_run(s);
}
