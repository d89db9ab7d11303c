/* test_program_xl.c: programs with Transformer-XL segment memory against PyTorch's Transformer-XL.
 *
 * The reference is tests/reference/make_xl_fixture.py's: xl-tiny (2 post-LN decoder layers, T = 7,
 * C = 12, 2 heads) whose attention is the reference code's RelPartialLearnableMultiHeadAttn (the
 * relative table of [sin | cos] at klen-1..0, r_net, r_w_bias, r_r_bias, _rel_shift, the mask
 * triu(1 + mlen)) over [memory; segment], the memory each layer's input over the last M positions,
 * detached. The token rows hold two segments (14 tokens): PROG forward and PROG grad run them as
 * consecutive segments carrying the memory (runtime/prog/segments.c). For M = 5 (< T) and M = 9
 * (> T), both backends (ref_program.h): the program's parameters are the reference's, the logits of
 * both segments within 1e-5 of the largest, the loss (mean over both segments' 28 targets) within
 * 1e-5 relative, every gradient within 2e-5 of its largest element (measured: at most 7e-7), the C
 * and LLVM backends byte-identical. Then three segments with a shorter last one (7, 7, 3) against
 * the reference; the documented limit (a token further back than a layer's reach changes nothing
 * of a later segment, but the memory does carry the nearer past); the gradients with checkpoint<every=1>
 * (the recomputed block reads the same memory); and the IR the spec lowers to. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../runtime/modelc_rt.h"
#include "ref_program.h"

#define FIX "tests/reference/fixtures/xl-tiny"
#define SPEC5 "tests/reference/specs/xl-tiny.yaml"
#define SPEC9 "tests/reference/specs/xl-tiny-m9.yaml"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_xl_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

/* "cse" stands in ref_program.h's pass slot: the spec needs no pass of its own */
START_TEST(memory_5) { ref_config(tmp, SPEC5, FIX, "cse", "_m5", 2e-5); }
END_TEST
START_TEST(memory_9) { ref_config(tmp, SPEC9, FIX, "cse", "_m9", 2e-5); }
END_TEST

/* tokens [2, 17]: segments of 7, 7 and 3 (nt < T in the last) */
START_TEST(three_segments) {
  for (int k = 0; k < 2; k++) {
    const char *spec = k ? SPEC9 : SPEC5, *cfg = k ? "_m9" : "_m5";
    ref_build(tmp, spec, "cse", "c", "");
    ref_build(tmp, spec, "cse", "l", "--backend=llvm");
    for (int b = 0; b < 2; b++)
      ck_assert_int_eq(sh("%s/%s forward --weights " FIX "/weights%s.safetensors --tokens " FIX "/tokens_long.npy --out %s/%s.npy",
                          tmp, b ? "l" : "c", cfg, tmp, b ? "l" : "c"),
                       0);
    char p[512], q[512];
    snprintf(p, sizeof p, "%s/c.npy", tmp);
    snprintf(q, sizeof q, FIX "/logits_long%s.npy", cfg);
    RtNpy y = load(p), r = load(q);
    ck_assert_int_eq(numel(&y), numel(&r));
    double e = max_rel(y.data, r.data, numel(&r));
    printf("xl-tiny%s, 3 segments (7, 7, 3): logits %.3g\n", cfg, e);
    ck_assert_msg(e <= 1e-5, "three segments: logits differ from PyTorch by %g", e);
    ck_assert_msg(sh("cmp -s %s/c.npy %s/l.npy", tmp, tmp) == 0, "three segments: C vs LLVM");
    rt_npy_free(&y), rt_npy_free(&r);
  }
}
END_TEST

/* The limit: with L = 2 layers of memory M = 5 and segments of T = 7, segment 3 (positions 14..20)
 * reads layer 1's memory of positions 9..13 and layer 2's, whose rows were computed in segment 2
 * from layer 1's memory of positions 2..6: nothing before position 2 reaches it. Changing token 0
 * changes segment 2 (through the memory) but not a bit of segment 3. Each text runs alone (batch
 * 1), so both runs compute at the same addresses; the fixture's weights (std 0.3: the initial
 * 0.02 makes every attention nearly uniform and the change small). */
START_TEST(limit) {
  ref_build(tmp, SPEC5, "cse", "c", "");
  float *o[2];
  RtNpy y[2];
  for (int k = 0; k < 2; k++) {
    int32_t ids[21];
    for (int t = 0; t < 21; t++) ids[t] = (int32_t)((t * 7 + 3) % 48);
    if (k) ids[0] = 11;
    char p[512];
    snprintf(p, sizeof p, "%s/tok%d.npy", tmp, k);
    int64_t shape[2] = {1, 21};
    RtError err;
    ck_assert_int_eq(rt_npy_write(p, RT_DT_I32, 2, shape, ids, &err), 0);
    ck_assert_int_eq(sh("%s/c forward --weights " FIX "/weights_m5.safetensors --tokens %s --out %s/o%d.npy", tmp, p, tmp, k), 0);
    snprintf(p, sizeof p, "%s/o%d.npy", tmp, k);
    y[k] = load(p);
    o[k] = y[k].data;
  }
  double d2 = 0;
  for (int i = 7 * 48; i < 14 * 48; i++) d2 = fmax(d2, fabs(o[0][i] - o[1][i]));
  ck_assert_msg(d2 > 1e-4, "segment 2 does not see token 0 through the memory (max change %g)", d2);
  ck_assert_msg(memcmp(o[0] + 14 * 48, o[1] + 14 * 48, 7 * 48 * sizeof(float)) == 0,
                "segment 3 changed with token 0, beyond the memory's reach");
  rt_npy_free(&y[0]), rt_npy_free(&y[1]);
}
END_TEST

/* Checkpointing recomputes a block in the backward (a second call of @layer): it shares the first
 * call's state slots, so it reads the same memory; the gradients are the reference's, and the C and
 * LLVM backends agree to the byte. */
START_TEST(checkpointed) {
  const char *pp = "autodiff,checkpoint<every=1>,constfold,cse,fuse,dce,memplan";
  for (int b = 0; b < 2; b++) {
    ck_assert_int_eq(sh("%s build %s --passes='%s' " SPEC5 " -o %s/k%d", MODELC_BIN, b ? "--backend=llvm" : "", pp, tmp, b), 0);
    ck_assert_int_eq(sh("%s/k%d grad --weights " FIX "/weights_m5.safetensors --tokens " FIX "/tokens.npy --targets " FIX
                        "/targets.npy --out %s/k%d.safetensors > %s/k%d.txt",
                        tmp, b, tmp, b, tmp, b),
                     0);
  }
  char p[512];
  snprintf(p, sizeof p, "%s/k0.safetensors", tmp);
  double ge = compare_tensors(p, FIX "/grads_m5.safetensors", 2e-5);
  printf("xl-tiny checkpoint<every=1>: worst gradient %.3g\n", ge);
  ck_assert_msg(sh("cmp -s %s/k0.safetensors %s/k1.safetensors", tmp, tmp) == 0, "checkpointed gradients, C vs LLVM");
}
END_TEST

/* the IR: xl_memory, the halves table through r_net, xl_attention; after autodiff their _dx ops */
START_TEST(lowered_ir) {
  ck_assert_int_eq(sh("%s dump --passes=autodiff " SPEC5 " > %s/ir.txt", MODELC_BIN, tmp), 0);
  char p[512];
  snprintf(p, sizeof p, "%s/ir.txt", tmp);
  ck_assert_int_eq(sh("grep -q '= xl_memory(%%x) {memory=5} : f32\\[2,12,12\\]' %s", p), 0);
  ck_assert_int_eq(sh("grep -q 'sinusoid {layout=\"halves\", shape=\\[12,12\\]}' %s", p), 0);
  ck_assert_int_eq(sh("grep -q 'xl_attention(%%2, %%4, %%attn.r_w_bias, %%attn.r_r_bias) {heads=2, memory=5} : "
                      "f32\\[2,7,12\\]' %s",
                      p),
                   0);
  ck_assert_int_eq(sh("grep -q 'xl_attention_dx(' %s && grep -q 'xl_memory_dx(' %s", p, p), 0);
  ck_assert_int_eq(sh("grep -q 'param @layer.1.attn.r_r_bias : f32\\[2,6\\]' %s", p), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_xl");
  TCase *tc = tcase_create("xl");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, memory_5);
  tcase_add_test(tc, memory_9);
  tcase_add_test(tc, three_segments);
  tcase_add_test(tc, limit);
  tcase_add_test(tc, checkpointed);
  tcase_add_test(tc, lowered_ir);
  suite_add_tcase(s, tc);
  return check_run(s);
}
