/* test_program_funnel.c: sequence compression (pool, upsample) against a PyTorch Funnel encoder.
 *
 * The reference is tests/reference/make_funnel_fixture.py's: funnel-mini (post-LN, bidirectional,
 * T = 16 pooled to 8 then 4, each pool's next block attending with pooled queries over the
 * unpooled keys and values and adding the pooled input, a repeat at length 8, an upsample x4 plus
 * the stream before the first pool, a full-length block, a token-level head), written from the
 * paper in torch. Built by both backends (ref_program.h): the program's parameters are the
 * reference's, the logits within 1e-5 of the largest, the loss within 1e-5 relative, every
 * gradient within 2e-5 of its largest element (measured: 1.3e-6), the C and LLVM backends
 * byte-identical. The same for funnel-cls, two pools straight into a mean-pool classifier (the
 * classifier's pool and its gradient over the shortened sequence). Then a call of 8 positions (every pooled length halves at run time: 8 -> 4 -> 2)
 * against the reference, both backends; a length that is not a multiple of 4 is refused; and the
 * IR: which ops the spec lowers to, the shortened block function, the backward ops. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../compiler/frontend/spec.h"
#include "../../runtime/modelc_rt.h"
#include "ir_test.h"
#include "ref_program.h"

#define FIX "tests/reference/fixtures/funnel-mini"
#define SPEC "tests/reference/specs/funnel-mini.yaml"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_funnel_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

/* ref_config runs a pass before autodiff; dce changes nothing here */
START_TEST(forward_backward) { ref_config(tmp, SPEC, FIX, "dce", "", 2e-5); }
END_TEST

/* funnel-cls: two pools straight into a mean-pool classifier (pool and pool_dx over 4 positions) */
START_TEST(classifier) {
  ref_config(tmp, "tests/reference/specs/funnel-cls.yaml", "tests/reference/fixtures/funnel-cls", "dce", "", 2e-5);
}
END_TEST

/* nt = 8 < T = 16: the pooled lengths are nt/2 and nt/4 at run time */
START_TEST(shorter_call) {
  ref_forward_call(tmp, SPEC, "dce", FIX "/weights.safetensors", FIX "/short.npy", FIX "/logits_short.npy",
                   "funnel-mini, 8 of 16 positions");
  /* 6 positions do not pool twice: a clear error, exit 1 */
  ck_assert_int_eq(sh("%s/c forward --weights " FIX "/weights.safetensors --tokens " FIX "/odd.npy --out %s/odd.npy 2> %s/err.txt",
                      tmp, tmp, tmp),
                   1);
  ck_assert_int_eq(sh("grep -q 'must be a multiple of 4' %s/err.txt", tmp), 0);
}
END_TEST

START_TEST(ir_lowered) {
  Diag d;
  diag_init(&d, stderr);
  Module *m = ir_test_module(SPEC, NULL, &d);
  ck_assert_int_eq(ir_test_count(m, NULL, OP_SEQ_POOL), 2);       /* the residuals of the two pooled blocks */
  ck_assert_int_eq(ir_test_count(m, NULL, OP_ATTENTION_POOL), 2); /* their attentions */
  ck_assert_int_eq(ir_test_count(m, NULL, OP_UPSAMPLE), 1);
  for (const Op *op = ir_find_func(m, "forward")->first; op; op = op->next)
    if (op->kind == OP_UPSAMPLE) ck_assert_int_eq(ir_attr_i(op, "stride"), 4); /* both pools undone at once */
  const Func *mid = ir_find_func(m, "mid"); /* the repeat after the first pool runs at 8 positions */
  ck_assert_ptr_nonnull(mid);
  ck_assert_int_eq(mid->args[0]->type.dim[1], 8);
  ir_test_run(m, "autodiff", &d);
  /* @train: the forward's ops and each one's gradient (each is the other's adjoint) */
  ck_assert_int_eq(ir_test_count(m, "train", OP_ATTENTION_POOL_DX), 2);
  ck_assert_int_eq(ir_test_count(m, "train", OP_SEQ_POOL), 3);  /* the forward's two, and upsample's gradient */
  ck_assert_int_eq(ir_test_count(m, "train", OP_UPSAMPLE), 3);  /* the forward's one, and the two pools' gradients */
  ir_module_free(m);
  diag_free(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_funnel");
  TCase *tc = tcase_create("funnel");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, forward_backward);
  tcase_add_test(tc, classifier);
  tcase_add_test(tc, shorter_call);
  tcase_add_test(tc, ir_lowered);
  suite_add_tcase(s, tc);
  return check_run(s);
}
