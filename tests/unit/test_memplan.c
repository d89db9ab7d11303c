/* test_memplan.c: the memplan pass on every example model: every intermediate tensor gets an
 * aligned place inside its function's frame, no two tensors that are live at the same time share
 * a byte (checked pairwise by memplan_check), and the plan actually reuses memory. A corrupted
 * plan is caught. */
#include <check.h>

#include "check_run.h"
#include <stdlib.h>
#include <string.h>

#include "../../compiler/frontend/spec.h"
#include "../../passes/memplan.h"
#include "../../passes/pass.h"
#include "ir_test.h"


static const char *const examples[] = {"examples/gpt-tiny.yaml", "examples/bert-tiny.yaml",
                                       "examples/gpt2-small.yaml"};

START_TEST(test_examples_no_overlap) {
  for (int pl = 0; pl < 2; pl++) {
    Diag d;
    diag_init(&d, stderr);
    Module *m = ir_test_module(examples[_i], pl ? "memplan" : "constfold,cse,fuse,dce,memplan", &d);
    ck_assert(memplan_check(m, &d));
    const Func *f = ir_find_func(m, m->entry);
    int64_t arena = memplan_arena_bytes(m, f);
    /* the plan reuses memory: the arena is smaller than all tensors side by side */
    int64_t all = 0;
    for (int i = 0; i < m->nfunc; i++)
      for (const Op *op = m->funcs[i]->first; op; op = op->next)
        for (int k = 0; k < op->nout; k++) all += ir_type_bytes(&op->out[k]->type);
    ck_assert_int_gt(arena, 0);
    ck_assert_int_lt(arena, all);
    ck_assert_int_eq(d.nerrors, 0);
    ir_module_free(m);
    diag_free(&d);
  }
}
END_TEST

START_TEST(test_unplanned) {
  Diag d;
  diag_init(&d, stderr);
  Module *m = ir_test_module("examples/gpt-tiny.yaml", "fuse", &d);
  const Func *f = ir_find_func(m, m->entry);
  ck_assert_int_eq(memplan_frame_bytes(f), -1);
  ck_assert_int_eq(memplan_arena_bytes(m, f), -1);
  ir_module_free(m);
  diag_free(&d);
}
END_TEST

START_TEST(test_corrupt_plan_detected) {
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);
  Diag d;
  diag_init(&d, out);
  Module *m = ir_test_module("examples/gpt-tiny.yaml", "fuse,dce,memplan", &d);
  /* Put two values that are live together at the same offset. */
  Func *h = ir_find_func(m, "h");
  ck_assert(h);
  Op *a = h->first, *b = a->next; /* layernorm, then the qkv linear that reads it */
  int64_t off;
  ck_assert(memplan_offset(a->out[0], &off));
  ir_set_attr_ints(b, "arena", 1, &off);
  ck_assert(!memplan_check(m, &d));
  fclose(out);
  ck_assert_msg(strstr(buf, "overlap") != NULL, "%s", buf);
  free(buf);
  ir_module_free(m);
  diag_free(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("memplan");
  TCase *tc = tcase_create("memplan");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_examples_no_overlap, 0, 3);
  tcase_add_test(tc, test_unplanned);
  tcase_add_test(tc, test_corrupt_plan_detected);
  suite_add_tcase(s, tc);
  return check_run(s);
}
