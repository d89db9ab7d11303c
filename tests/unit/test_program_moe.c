/* test_program_moe.c: programs with moe layers against PyTorch's mixture of experts.
 *
 * The reference is tests/reference/make_moe_fixture.py's: moe-tiny (2 pre-LN causal layers, B*T =
 * 16 tokens, 4 experts per layer) with the mixture written from the papers in torch. Two
 * configurations, each with drops: k1 (Switch: top_k 1, capacity_factor 0.5, 2 tokens per expert,
 * 8 of 16 dropped per layer) and k2 (top_k 2 with renormalised gates, capacity_factor 1.5, 6 pairs
 * per expert, 20 and 13 of 32 dropped). Through ref_program.h with both backends: the program's
 * parameters are the reference's, the logits within 1e-5 of the largest, the loss (cross-entropy
 * plus both layers' load-balancing losses) within 1e-5 relative, every gradient within 2e-5 of its
 * largest element (the router's gradient carries the gates' and the aux loss's terms: a missing
 * one is off by its whole term), the C and LLVM backends byte-identical. Then the IR: one moe op
 * per block function, its aux loss and load report results of the block, the loss of @train the
 * sum, the load reports after the gradients; and PROG grad's load reports (--moe-load) from both
 * backends: the pairs each expert ran and the dropped ones, as the reference counted them; and the
 * checkpoint pass's policies (store keeps the block's extra results) give the same gradients. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../compiler/frontend/spec.h"
#include "../../runtime/modelc_rt.h"
#include "ir_test.h"
#include "ref_program.h"

#define FIX "tests/reference/fixtures/moe-tiny"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_moe_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

/* PROG grad's load report lines (DIR/PROG.txt, after ref_config) against the reference's
 * load_CFG.npy [L, E+2]: the pairs each expert ran and the dropped ones exactly, the aux within 1e-5 */
static void check_load(const char *prog, const char *cfg) {
  char p[512], line[512];
  snprintf(p, sizeof p, FIX "/load%s.npy", cfg);
  RtNpy r = load(p);
  ck_assert_int_eq(r.ndim, 2);
  int L = (int)r.shape[0], E = (int)r.shape[1] - 2, seen = 0;
  const float *want = r.data;
  snprintf(p, sizeof p, "%s/%s.txt", tmp, prog);
  FILE *f = fopen(p, "r");
  ck_assert_ptr_nonnull(f);
  while (fgets(line, sizeof line, f)) {
    int layer, n;
    double aux;
    if (sscanf(line, "moe layer %d: aux %lf, pairs per expert%n", &layer, &aux, &n) != 2) continue;
    ck_assert_int_eq(layer, seen);
    const float *w = want + (size_t)layer * (E + 2);
    ck_assert_msg(fabs(aux - w[0]) <= 1e-5 * w[0], "layer %d: aux %g, PyTorch %g", layer, aux, w[0]);
    const char *q = line + n;
    for (int e = 0; e < E; e++) {
      int k, c;
      ck_assert_int_eq(sscanf(q, " %d%n", &c, &k), 1);
      ck_assert_msg(c == (int)w[2 + e], "layer %d expert %d: %d pairs, PyTorch %g", layer, e, c, w[2 + e]);
      q += k;
    }
    int dropped;
    ck_assert_int_eq(sscanf(q, ", dropped %d", &dropped), 1);
    ck_assert_msg(dropped == (int)w[1], "layer %d: %d dropped, PyTorch %g", layer, dropped, w[1]);
    seen++;
  }
  fclose(f);
  ck_assert_int_eq(seen, L);
  rt_npy_free(&r);
}

/* ref_config runs PASS before autodiff: dce changes nothing here */
START_TEST(top1_switch) {
  ref_config(tmp, "tests/reference/specs/moe-tiny-k1.yaml", FIX, "dce", "_k1", 2e-5);
  check_load("c", "_k1"), check_load("l", "_k1");
}
END_TEST
START_TEST(top2_renormalised) {
  ref_config(tmp, "tests/reference/specs/moe-tiny-k2.yaml", FIX, "dce", "_k2", 2e-5);
  check_load("c", "_k2"), check_load("l", "_k2");
}
END_TEST

/* the checkpoint policies (every block recomputed, sqrt, every activation stored: @h.fwd returns
 * the block's loss and load reports too) give the same bytes of gradients as autodiff alone */
START_TEST(checkpoint_policies) {
  const char *spec = "tests/reference/specs/moe-tiny-k2.yaml";
  const char *pol[] = {"", "checkpoint<every=2>,", "checkpoint<store>,", "checkpoint<sqrt>,"};
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(sh("%s build --passes='autodiff,%sconstfold,cse,fuse,dce,memplan' %s -o %s/p%d", MODELC_BIN, pol[i],
                        spec, tmp, i),
                     0);
    ck_assert_int_eq(sh("%s/p%d grad --weights " FIX "/weights_k2.safetensors --tokens " FIX "/tokens.npy --targets " FIX
                        "/targets.npy --out %s/g%d.safetensors > /dev/null",
                        tmp, i, tmp, i),
                     0);
    if (i) ck_assert_msg(sh("cmp -s %s/g0.safetensors %s/g%d.safetensors", tmp, tmp, i) == 0, "%s: gradients differ", pol[i]);
  }
}
END_TEST

START_TEST(ir_shape) {
  Diag d;
  diag_init(&d, stderr);
  Module *m = ir_test_module("tests/reference/specs/moe-tiny-k2.yaml", NULL, &d);
  const Func *h = ir_find_func(m, "h");
  ck_assert_int_eq(ir_test_count(m, "h", OP_MOE), 1);
  ck_assert_int_eq(h->nret, 3); /* y, the block's aux loss and its moe's load report f32[E+2] */
  ck_assert_int_eq(h->ret[1]->type.rank, 0);
  ck_assert(h->ret[2]->type.rank == 1 && h->ret[2]->type.dim[0] == 6);
  const Param *w1 = ir_find_param(m, "h.1.moe.w1");
  ck_assert(w1 && w1->type.rank == 3 && w1->type.dim[0] == 4 && w1->type.dim[1] == 24 && w1->type.dim[2] == 16);
  const Param *r = ir_find_param(m, "h.0.moe.router.weight");
  ck_assert(r && r->type.rank == 2 && r->type.dim[0] == 4 && r->type.dim[1] == 16);
  ir_test_run(m, "autodiff", &d);
  const Func *t = ir_find_func(m, "train");
  ck_assert_int_eq(ir_test_count(m, "h.bwd", OP_MOE_DX), 1);
  /* the loss is cross-entropy + the aux of both calls: an add whose operand is a call's result 1 */
  int ntrain = 0;
  for (int i = 0; i < m->nparam; i++) ntrain += m->params[i]->trainable;
  ck_assert_int_eq(t->nret, 1 + ntrain + 2); /* the loss, the gradients, a load report per layer */
  ck_assert(t->ret[t->nret - 1]->type.rank == 1 && t->ret[t->nret - 1]->type.dim[0] == 6);
  const Op *lo = t->ret[0]->def;
  ck_assert_int_eq(lo->kind, OP_ADD);
  ck_assert_int_eq(lo->in[0]->def->kind, OP_CROSS_ENTROPY);
  /* FLOPs per token: the routed pairs (top_k 2, at most 4 x 6 of 32) x the expert's GEMMs */
  int64_t fl = 0;
  for (const Op *op = h->first; op; op = op->next)
    if (op->kind == OP_MOE) fl = ir_op_flops(m, op);
  ck_assert_int_eq(fl, 16 * 4 * (2 * 16 + 5) + 24 * (4 * 16 * 24 + 24 + 4 * 16));
  ir_module_free(m);
  diag_free(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_moe");
  TCase *tc = tcase_create("moe");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, top1_switch);
  tcase_add_test(tc, top2_renormalised);
  tcase_add_test(tc, checkpoint_policies);
  tcase_add_test(tc, ir_shape);
  suite_add_tcase(s, tc);
  return check_run(s);
}
