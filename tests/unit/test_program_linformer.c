/* test_program_linformer.c: programs built with the linformer pass against PyTorch's Linformer.
 *
 * The reference is tests/reference/make_linformer_fixture.py's: linformer-tiny (2 post-LN
 * bidirectional layers, T = 16, a token-level head) with Linformer attention written from the
 * paper in torch (keys and values projected along the sequence by E, F [k,T]), k = T/4 = 4. For
 * each sharing mode (none: E and F per layer; kv: one projection per layer for both; layer: one
 * for all layers), with the pass before autodiff (ref_program.h): the program's parameters are the
 * reference's, the logits within 1e-5 of the largest, the loss within 1e-5 relative, every
 * gradient within 2e-5 of its largest element (measured: at most 8.5e-6; a shared projection's
 * gradient is summed over its uses, E and F of one layer and every layer: a missed use is off by
 * its whole term), the C and LLVM backends byte-identical. Then a
 * call shorter than the compiled length (11 of 16 positions: the first 11 columns of E and F)
 * against the reference, both backends; and the IR the pass writes (names, sharing, the default
 * k = T/4, linformer_dx after autodiff). */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../compiler/frontend/spec.h"
#include "../../runtime/modelc_rt.h"
#include "ir_test.h"
#include "ref_program.h"

#define FIX "tests/reference/fixtures/linformer-tiny"
#define SPEC "tests/reference/specs/linformer-tiny.yaml"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_linformer_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

START_TEST(share_none) { ref_config(tmp, SPEC, FIX, "linformer<k=4;share=none>", "_none", 2e-5); }
END_TEST
START_TEST(share_kv) { ref_config(tmp, SPEC, FIX, "linformer<k=4;share=kv>", "_kv", 2e-5); }
END_TEST
START_TEST(share_layer) { ref_config(tmp, SPEC, FIX, "linformer<k=4;share=layer>", "_layer", 2e-5); }
END_TEST

/* nt = 11 < T = 16: the projections' first 11 columns */
START_TEST(shorter_call) {
  ref_forward_call(tmp, SPEC, "linformer<k=4>", FIX "/weights_none.safetensors", FIX "/short.npy", FIX "/logits_short.npy",
                   "linformer-tiny, 11 of 16 positions");
}
END_TEST

/* The module after the pipeline: counts of linformer ops whose E is F, and of linformer_dx. */
static int count_ops(const Module *m, OpKind k, int *same) {
  int n = 0;
  for (int i = 0; i < m->nfunc; i++)
    for (const Op *op = m->funcs[i]->first; op; op = op->next)
      if (op->kind == k) {
        n++;
        if (same && op->in[1] == op->in[2]) (*same)++;
      }
  return n;
}

START_TEST(ir_after_pass) {
  Diag d;
  diag_init(&d, stderr);
  /* the default k is T/4; share=none: two projections per layer, named by the layer */
  Module *m = ir_test_module(SPEC, "linformer", &d);
  int same = 0;
  ck_assert_int_eq(count_ops(m, OP_ATTENTION, NULL), 0);
  ck_assert_int_eq(count_ops(m, OP_LINFORMER, &same), 1); /* one block function */
  ck_assert_int_eq(same, 0);
  const Param *e = ir_find_param(m, "layer.1.attn.lin_f.weight");
  ck_assert_ptr_nonnull(e);
  ck_assert(e->type.rank == 2 && e->type.dim[0] == 4 && e->type.dim[1] == 16);
  ck_assert(e->init == INIT_UNIFORM && fabs(e->init_arg - sqrt(3.0 / 20)) < 1e-12); /* xavier, gain 1/sqrt(2) */
  ir_module_free(m);
  /* share=kv: E is F; share=layer: one parameter for both layers */
  m = ir_test_module(SPEC, "linformer<k=3;share=kv>", &d);
  same = 0;
  count_ops(m, OP_LINFORMER, &same);
  ck_assert_int_eq(same, 1);
  ck_assert_ptr_nonnull(ir_find_param(m, "layer.1.attn.lin_e.weight"));
  ck_assert_ptr_null(ir_find_param(m, "layer.1.attn.lin_f.weight"));
  ck_assert_int_eq(ir_find_param(m, "layer.0.attn.lin_e.weight")->type.dim[0], 3);
  ir_module_free(m);
  m = ir_test_module(SPEC, "linformer<k=4;share=layer>,autodiff", &d);
  ck_assert_ptr_nonnull(ir_find_param(m, "layer.0.attn.lin_e.weight"));
  ck_assert_ptr_null(ir_find_param(m, "layer.1.attn.lin_e.weight"));
  ck_assert_int_eq(count_ops(m, OP_LINFORMER_DX, NULL), 1);
  for (int i = 0; i < m->nparam; i++) ck_assert_int_eq(m->params[i]->index, i);
  ir_module_free(m);
  diag_free(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_linformer");
  TCase *tc = tcase_create("linformer");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, share_none);
  tcase_add_test(tc, share_kv);
  tcase_add_test(tc, share_layer);
  tcase_add_test(tc, shorter_call);
  tcase_add_test(tc, ir_after_pass);
  suite_add_tcase(s, tc);
  return check_run(s);
}
