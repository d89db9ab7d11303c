/* test_program_distill.c: a distilling program (train: distill:) against PyTorch.
 *
 * The reference is tests/reference/make_distill_fixture.py's: the teacher distill-ref-teacher.yaml (2
 * layers, width 16, an untied head) and the student distill-ref.yaml (1 layer, width 8, a tied
 * head), loss = alpha T^2 KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) CE at T = 2, alpha =
 * 0.7. The student's program, built with the spec's own pipeline by both backends, holds the teacher
 * compiled in; with the fixture's weights (--weights) and the teacher's (--teacher-weights):
 *   - `PROG init` writes exactly the student's parameters (the teacher's are not the student's);
 *   - `PROG forward` gives the student's logits within 1e-5 of the largest;
 *   - `PROG grad` gives the loss, its KL and CE parts within 1e-5 relative (the KL part reads the
 *     compiled-in teacher's logits: a wrong teacher moves it) and every student gradient within
 *     2e-5 of its largest element; no teacher gradient is written;
 *   - the LLVM backend gives the same bytes of logits and gradients as the C backend.
 * Then the IR: @teacher's parameters are frozen and prefixed, and after autodiff @train ends in
 * distill_loss / distill_grad, and returns the KL and CE parts after the gradients. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../compiler/frontend/spec.h"
#include "../../runtime/modelc_rt.h"
#include "ir_test.h"
#include "ref_program.h"

#define FIX "tests/reference/fixtures/distill-ref"
#define SPEC "tests/reference/specs/distill-ref.yaml"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_distill_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

/* "NAME: X" from a grad verb's output */
static double read_value(const char *path, const char *name) {
  FILE *f = fopen(path, "r");
  ck_assert_msg(f, "%s", path);
  double v = NAN;
  char line[256], fmt[64];
  snprintf(fmt, sizeof fmt, "%s: %%lf", name);
  while (fgets(line, sizeof line, f))
    if (sscanf(line, fmt, &v) == 1) break;
  fclose(f);
  return v;
}

static void run(const char *prog) {
  ck_assert_int_eq(sh("%s/%s forward --weights " FIX "/weights.safetensors --tokens " FIX "/tokens.npy --out %s/%s.npy",
                      tmp, prog, tmp, prog),
                   0);
  ck_assert_int_eq(sh("%s/%s grad --weights " FIX "/weights.safetensors --teacher-weights " FIX "/teacher.safetensors "
                      "--tokens " FIX "/tokens.npy --targets " FIX "/targets.npy --out %s/%s.safetensors > %s/%s.txt",
                      tmp, prog, tmp, prog, tmp, prog),
                   0);
}

START_TEST(against_pytorch) {
  ck_assert_int_eq(sh("%s build " SPEC " -o %s/c", MODELC_BIN, tmp), 0);
  ck_assert_int_eq(sh("%s build --backend=llvm " SPEC " -o %s/l", MODELC_BIN, tmp), 0);
  char p[512];
  ck_assert_int_eq(sh("%s/c init --seed 1 --out %s/init.safetensors", tmp, tmp), 0);
  snprintf(p, sizeof p, "%s/init.safetensors", tmp);
  compare_tensors(p, FIX "/weights.safetensors", -1);
  run("c");
  run("l");
  snprintf(p, sizeof p, "%s/c.npy", tmp);
  RtNpy y = load(p), r = load(FIX "/logits.npy"), rl = load(FIX "/loss.npy");
  ck_assert_int_eq(numel(&y), numel(&r));
  double e = max_rel(y.data, r.data, numel(&r));
  snprintf(p, sizeof p, "%s/c.txt", tmp);
  double got[3] = {read_value(p, "loss"), read_value(p, "kl"), read_value(p, "ce")};
  snprintf(p, sizeof p, "%s/c.safetensors", tmp);
  double ge = compare_tensors(p, FIX "/grads.safetensors", 2e-5);
  const float *want = rl.data;
  printf("distill-ref: logits %.3g, loss %.8g vs %.8g, kl %.8g vs %.8g, ce %.8g vs %.8g, worst gradient %.3g\n", e,
         got[0], want[0], got[1], want[1], got[2], want[2], ge);
  ck_assert_msg(e <= 1e-5, "logits differ from PyTorch by %g", e);
  static const char *const part[] = {"loss", "kl", "ce"};
  for (int i = 0; i < 3; i++)
    ck_assert_msg(fabs(got[i] - want[i]) <= 1e-5 * fabs(want[i]), "%s %.8g, PyTorch %.8g", part[i], got[i], want[i]);
  ck_assert_msg(sh("cmp -s %s/c.npy %s/l.npy", tmp, tmp) == 0, "logits, C vs LLVM");
  ck_assert_msg(sh("cmp -s %s/c.safetensors %s/l.safetensors", tmp, tmp) == 0, "gradients, C vs LLVM");
  rt_npy_free(&y), rt_npy_free(&r), rt_npy_free(&rl);
}
END_TEST

/* The teacher as its own program: the fixture's teacher logits (so the weights file the student
 * reads is one the teacher's program reads and writes) */
START_TEST(teacher_alone) {
  ck_assert_int_eq(sh("%s build tests/reference/specs/distill-ref-teacher.yaml -o %s/t", MODELC_BIN, tmp), 0);
  ck_assert_int_eq(sh("%s/t forward --weights " FIX "/teacher.safetensors --tokens " FIX "/tokens.npy --out %s/t.npy",
                      tmp, tmp),
                   0);
  char p[512];
  snprintf(p, sizeof p, "%s/t.npy", tmp);
  RtNpy y = load(p), r = load(FIX "/teacher_logits.npy");
  double e = npy_max_rel(&y, &r);
  ck_assert_msg(e <= 1e-5, "teacher logits differ from PyTorch by %g", e);
  rt_npy_free(&y), rt_npy_free(&r);
}
END_TEST

START_TEST(ir) {
  Diag d;
  diag_init(&d, stderr);
  Module *m = ir_test_module(SPEC, NULL, &d);
  ck_assert(m->train.distill_temperature == 2.0 && m->train.distill_alpha == 0.7);
  const Param *tw = ir_find_param(m, "teacher.lm_head.weight");
  ck_assert_ptr_nonnull(tw);
  ck_assert(!tw->trainable && tw->type.dim[0] == 32 && tw->type.dim[1] == 16);
  ck_assert(ir_find_param(m, "wte.weight")->trainable);
  ck_assert_ptr_nonnull(ir_find_func(m, "teacher"));
  ck_assert_ptr_nonnull(ir_find_func(m, "teacher.h"));
  ir_test_run(m, "autodiff,dce", &d);
  const Func *t = ir_train_func(m);
  ck_assert_int_eq(ir_test_count(m, t->name, OP_DISTILL_LOSS), 1);
  ck_assert_int_eq(ir_test_count(m, t->name, OP_DISTILL_GRAD), 1);
  ck_assert_int_eq(ir_test_count(m, t->name, OP_CROSS_ENTROPY), 0);
  ck_assert_ptr_null(ir_find_func(m, "teacher")); /* inlined into @train and removed by autodiff */
  int ntrain = 0;
  for (int i = 0; i < m->nparam; i++) ntrain += m->params[i]->trainable;
  ck_assert_int_eq(t->nret, 1 + ntrain + 2);
  ck_assert(t->ret[ntrain + 1]->def->kind == OP_DISTILL_LOSS && t->ret[ntrain + 1]->index == 1);
  ck_assert(t->ret[ntrain + 2]->def->kind == OP_DISTILL_LOSS && t->ret[ntrain + 2]->index == 2);
  ir_module_free(m);
  diag_free(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_distill");
  TCase *tc = tcase_create("distill");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, against_pytorch);
  tcase_add_test(tc, teacher_alone);
  tcase_add_test(tc, ir);
  suite_add_tcase(s, tc);
  return check_run(s);
}
