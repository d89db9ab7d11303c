/* test_program_share.c: programs built with the share pass against PyTorch's shared model.
 *
 * The reference is tests/reference/make_share_fixture.py's: share-tiny (a factorised embedding and
 * 4 post-LN layers) written with torch.nn modules, a shared set being one module object used by
 * several layers, so its autograd gradient is the sum over those layers. For each configuration
 * (share<mode=all>, share<mode=attention;group=2>, share<mode=ffn;group=3>, the last with a group
 * size that does not divide the layer count), with the pass before autodiff:
 *   - the program holds exactly the reference's parameters, one copy of each shared set (`PROG
 *     init` writes the same names and shapes as the fixture's weights file, no more);
 *   - `PROG forward` gives the logits within 1e-5 of the largest (max |ours - ref| / max |ref|, as
 *     test_program), and `PROG grad` the loss within 1e-5 relative and every parameter's gradient
 *     within 1e-4 of its largest element (as test_train): a shared gradient that missed a layer's
 *     term is off by that layer's whole contribution;
 *   - the LLVM backend gives the same bytes of logits and gradients as the C backend.
 * And the IR after the pass keeps its invariants: Param.index is each parameter's position, the
 * removed names are gone from the name index (and can be added again), the kept ones found. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "../../compiler/frontend/spec.h"
#include "../../runtime/modelc_rt.h"
#include "check_run.h"
#include "ir_test.h"
#include "ref_program.h"
#include "sh.h"

#define FIX "tests/reference/fixtures/share-tiny"
#define SPEC "tests/reference/specs/share-tiny.yaml"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_share_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

/* the reference's checks (ref_program.h), with gradients within 1e-4 of their largest element */
static void config(const char *share, const char *cfg) { ref_config(tmp, SPEC, FIX, share, cfg, 1e-4); }

START_TEST(share_all) { config("share<mode=all>", ""); }
END_TEST
START_TEST(share_attention_group2) { config("share<mode=attention;group=2>", "_attention-g2"); }
END_TEST
START_TEST(share_ffn_group3) { config("share<mode=ffn;group=3>", "_ffn-g3"); }
END_TEST

START_TEST(removed_params) {
  Diag d;
  diag_init(&d, stderr);
  Module *m = ir_test_module(SPEC, NULL, &d);
  int before = m->nparam;
  ir_test_run(m, "share<mode=ffn;group=3>", &d);
  /* layers 1 and 2 lose their 6 FFN tensors (mlp.c_fc, mlp.c_proj, ln_2: weight and bias each) */
  ck_assert_int_eq(m->nparam, before - 2 * 6);
  for (int i = 0; i < m->nparam; i++) {
    ck_assert_int_eq(m->params[i]->index, i);
    ck_assert_ptr_eq(ir_find_param(m, m->params[i]->name), m->params[i]);
  }
  ck_assert_ptr_null(ir_find_param(m, "layer.1.mlp.c_fc.weight"));
  ck_assert_ptr_null(ir_find_param(m, "layer.2.ln_2.bias"));
  ck_assert_ptr_nonnull(ir_find_param(m, "layer.3.mlp.c_fc.weight")); /* its own group */
  ck_assert_ptr_nonnull(ir_find_param(m, "layer.1.attn.c_attn.weight"));
  Param *q = ir_add_param(m, "layer.1.mlp.c_fc.weight", ir_type1(DT_F32, 4), INIT_ZEROS, 0);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(q->index, m->nparam - 1);
  ck_assert_ptr_eq(ir_find_param(m, "layer.1.mlp.c_fc.weight"), q);
  ir_module_free(m);
  diag_free(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_share");
  TCase *tc = tcase_create("share");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, share_all);
  tcase_add_test(tc, share_attention_group2);
  tcase_add_test(tc, share_ffn_group3);
  tcase_add_test(tc, removed_params);
  suite_add_tcase(s, tc);
  return check_run(s);
}
