/* ir_test.h: for the tests that check what a spec construct or a pass puts in the IR: the module a
 * spec lowers to with a pipeline run on it, and counts of ops. */
#ifndef IR_TEST_H
#define IR_TEST_H

#include <check.h>
#include <string.h>

#include "../../compiler/frontend/spec.h"
#include "../../passes/pass.h"

/* PIPELINE (NULL or "": none) run on m with the verifier after every pass; it must succeed. */
static inline void ir_test_run(Module *m, const char *pipeline, Diag *d) {
  if (!pipeline || !*pipeline) return;
  Pipeline p;
  pass_pipeline_init(&p);
  ck_assert(pass_parse_pipeline(&p, pipeline, "test", 1, 1, d));
  PassRunConfig cfg = {.verify_each = true};
  ck_assert_msg(pass_run_pipeline(m, &p, &cfg, d), "%s failed", pipeline);
  pass_pipeline_free(&p);
}

/* SPEC parsed and lowered, then PIPELINE run (ir_test_run); the caller frees the module. */
static inline Module *ir_test_module(const char *spec, const char *pipeline, Diag *d) {
  Spec *s = fe_parse_spec_file(spec, d);
  ck_assert_msg(s != NULL, "%s does not parse", spec);
  Module *m = fe_lower(s, d);
  fe_spec_free(s);
  ck_assert_msg(m != NULL, "%s does not lower", spec);
  ir_test_run(m, pipeline, d);
  return m;
}

/* The ops of kind k in function fn (NULL: in every function). */
static inline int ir_test_count(const Module *m, const char *fn, OpKind k) {
  int n = 0;
  for (int i = 0; i < m->nfunc; i++)
    if (!fn || !strcmp(m->funcs[i]->name, fn))
      for (const Op *op = m->funcs[i]->first; op; op = op->next) n += op->kind == k;
  return n;
}

#endif
