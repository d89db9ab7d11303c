/* dce.c: dead code elimination.
 *
 * Removes every OPF_PURE op none of whose results is used (by an op or a return), to a fixpoint:
 * removing an op may leave its operands' producers dead too. Ops that are not pure (calls, which
 * may be checkpointed or carry effects, and random ops such as dropout) are kept. When the module
 * names an entry function, functions not reachable from it (or from the training function the
 * module attribute `train` names) through calls are removed as well, so
 * a block that fusion or inlining made unused does not reach the backend.
 *
 * The op sweep runs last to first and decrements operand use counts as it removes ops; since
 * producers come before their users, one sweep reaches the fixpoint. We repeat the sweep until
 * nothing changes anyway, which costs one extra linear pass and guards the invariant.
 */
#include <stdlib.h>
#include <string.h>

#include "pass.h"

/* Removes dead pure ops from f; returns how many were removed. */
static int dce_func(Func *f) {
  int removed = 0, round;
  do {
    round = 0;
    ir_count_uses(f);
    for (Op *op = f->last, *prev; op; op = prev) {
      prev = op->prev;
      if (!(ir_op_info[op->kind].flags & OPF_PURE)) continue;
      bool used = false;
      for (int i = 0; i < op->nout; i++) used |= op->out[i]->nuses > 0;
      if (used) continue;
      for (int i = 0; i < op->nin; i++) op->in[i]->nuses--;
      ir_unlink(op);
      round++;
    }
    removed += round;
  } while (round);
  return removed;
}

/* Marks functions reachable from f through calls (depth-first, iterative over the module). */
static void mark(const Module *m, const Func *f, bool *live) {
  int idx = -1;
  for (int i = 0; i < m->nfunc; i++)
    if (m->funcs[i] == f) idx = i;
  if (idx < 0 || live[idx]) return;
  live[idx] = true;
  for (const Op *op = f->first; op; op = op->next) {
    if (op->kind != OP_CALL) continue;
    const char *callee = ir_attr_s(op, "callee");
    const Func *g = callee ? ir_find_func(m, callee) : NULL;
    if (g) mark(m, g, live);
  }
}

bool pass_dce(Module *m, const PassOptions *o, Diag *d) {
  if (m->entry) {
    Func *entry = ir_find_func(m, m->entry);
    if (!entry) {
      pass_error(o, d, "dce: entry function @%s does not exist", m->entry);
      return false;
    }
    bool *live = calloc((size_t)m->nfunc + 1, sizeof *live);
    if (!live) die("out of memory");
    mark(m, entry, live);
    /* the training function (autodiff) is a second root */
    const Attr *tr = ir_module_attr(m, "train");
    Func *train = tr && tr->kind == ATTR_SYM ? ir_find_func(m, tr->s) : NULL;
    if (train) mark(m, train, live);
    /* a distillation teacher waits for autodiff, which inlines it into @train */
    Func *teacher = !train && m->train.distill_temperature > 0 ? ir_find_func(m, IR_TEACHER_FUNC) : NULL;
    if (teacher) mark(m, teacher, live);
    /* Collect first: ir_remove_func shifts m->funcs. */
    int ndead = 0;
    Func **dead = calloc((size_t)m->nfunc + 1, sizeof *dead);
    if (!dead) die("out of memory");
    for (int i = 0; i < m->nfunc; i++)
      if (!live[i]) dead[ndead++] = m->funcs[i];
    for (int i = 0; i < ndead; i++) ir_remove_func(m, dead[i]);
    free(dead);
    free(live);
  }
  for (int i = 0; i < m->nfunc; i++) dce_func(m->funcs[i]);
  return true;
}
