/* constfold.c: constant folding and algebraic simplification.
 *
 * - An OPF_EW op (or a fused `ew` op) whose operands are all `const` splats becomes one `const`
 *   splat of its result type, computed with ir_ew_apply / ir_expr_eval: the same scalar semantics
 *   the backends and the tests use.
 * - add(x, const 0) -> x and sub(x, const 0) -> x (the only difference is that -0 + 0 gives +0,
 *   which no model output can observe: the two zeros compare equal and behave alike under every
 *   op we have); mul(x, const 1) -> x and div(x, const 1) -> x, which are exact.
 * - mul(x, const 0) is NOT rewritten to 0: inf * 0 and nan * 0 are nan, so the rewrite would hide
 *   overflow that the unoptimised program shows.
 * - dropout {p=0} -> x (dropout with probability 0 is the identity at train time too).
 * A rewrite to x happens only when the op's result type equals x's type: add(x[8], const[2,8] 0)
 * broadcasts and is left alone. The constants left unused are removed by dce.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pass.h"

/* The splat value of v if it is defined by a const op. */
static bool const_value(const Value *v, double *out) {
  if (!v->def || v->def->kind != OP_CONST) return false;
  *out = ir_attr_f(v->def, "value");
  return true;
}

static bool is_const(const Value *v, double c) {
  double x;
  return const_value(v, &x) && x == c;
}

/* Replaces op's result with a new const splat of value c placed before op. */
static bool fold_to_const(Module *m, Func *f, Op *op, double c) {
  const Type *t = &op->out[0]->type;
  if (t->dtype != DT_F32) return false;   /* const is an f32 splat */
  Op *k = ir_op_new(f, OP_CONST, 0, NULL, 1);
  ir_set_attr_ints(k, "shape", t->rank, t->dim);
  ir_set_attr_float(k, "value", c);
  char err[256];
  if (!ir_infer(m, k, err, sizeof err) || !ir_type_eq(&k->out[0]->type, t)) return false;
  k->out[0]->name = op->out[0]->name;
  ir_insert_before(op, k);
  ir_replace_uses(f, op->out[0], k->out[0]);
  ir_unlink(op);
  return true;
}

/* Replaces op's result with x when the types agree. */
static bool forward(Func *f, Op *op, Value *x) {
  if (!ir_type_eq(&op->out[0]->type, &x->type)) return false;
  ir_replace_uses(f, op->out[0], x);
  ir_unlink(op);
  return true;
}

static bool fold_op(Module *m, Func *f, Op *op) {
  unsigned flags = (unsigned)ir_op_info[op->kind].flags;
  if (op->nout != 1) return false;
  if ((flags & OPF_EW) || op->kind == OP_EW) {
    double args[64];
    bool all = op->nin <= 64;
    for (int i = 0; all && i < op->nin; i++) all = const_value(op->in[i], &args[i]);
    if (all) {
      double c;
      if (op->kind == OP_EW) {
        const char *s = ir_attr_s(op, "expr");
        char err[256];
        Expr *e = s ? ir_expr_parse(m, s, op->nin, err, sizeof err) : NULL;
        if (!e) return false;   /* the verifier reports bad expressions */
        c = ir_expr_eval(e, args);
      } else {
        c = ir_ew_apply(op->kind, args[0], op->nin > 1 ? args[1] : 0.0);
      }
      return fold_to_const(m, f, op, c);
    }
  }
  switch (op->kind) {
  case OP_ADD:
    if (is_const(op->in[1], 0.0) && forward(f, op, op->in[0])) return true;
    return is_const(op->in[0], 0.0) && forward(f, op, op->in[1]);
  case OP_SUB: return is_const(op->in[1], 0.0) && forward(f, op, op->in[0]);
  case OP_MUL:
    /* mul(x, 0) stays: nan/inf * 0 is nan, not 0. */
    if (is_const(op->in[1], 1.0) && forward(f, op, op->in[0])) return true;
    return is_const(op->in[0], 1.0) && forward(f, op, op->in[1]);
  case OP_DIV: return is_const(op->in[1], 1.0) && forward(f, op, op->in[0]);
  case OP_DROPOUT: {
    return ir_attr_f(op, "p") == 0.0 && forward(f, op, op->in[0]);
  }
  default: return false;
  }
}

bool pass_constfold(Module *m, const PassOptions *o, Diag *d) {
  for (int i = 0; i < m->nfunc; i++) {
    Func *f = m->funcs[i];
    /* Forward order: a folded const feeds the folds after it, so one sweep reaches the fixpoint. */
    for (Op *op = f->first, *next; op; op = next) {
      next = op->next;
      fold_op(m, f, op);
    }
  }
  return true;
}
