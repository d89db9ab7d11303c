/* precision.c: mixed-precision training storage (the `precision` pass: precision<bf16> or
 * precision<fp16>).
 *
 * Runs on @train after autodiff (and checkpoint, xent_fuse). Products stay f32 (OpenBLAS sgemm, f32 kernels
 * and f32 accumulation); what changes is how tensors are *stored* between the forward and the
 * backward, which is where training memory goes:
 *
 *  1. Every activation the forward computes and the backward reads (the block inputs a checkpoint
 *     policy keeps, or, under checkpoint<store>, everything the block backwards read) is converted
 *     to 16 bits right after it is computed, `h = cast(x) {to="bf16"}`, and converted back right
 *     before the first backward op that reads it. The f32 tensor then dies at its last forward use
 *     and only the 16-bit copy lives across the backward: memplan places half the bytes.
 *  2. The activation gradient each block backward receives (its last operand, dy) goes through 16
 *     bits too, so gradients have the 16-bit range: with fp16 a gradient above 65504 becomes inf.
 *  3. fp16 only: the loss gradient's seed (1.0) becomes `loss_scale`, a runtime input, so every
 *     gradient is computed multiplied by the loss scale S. The runtime divides the parameter
 *     gradients by S, skips the step and halves S when any of them is not finite, and doubles S
 *     after a run of good steps (dynamic loss scaling, runtime/train.c).
 *
 * Working weights are the master weights rounded to 16 bits by the runtime before each step (the
 * program's weight buffer is f32, which is what sgemm reads); the optimiser updates the f32
 * master copy. The module attribute precision records the choice for the backend and runtime.
 */
#include <stdlib.h>
#include <string.h>

#include "pass.h"

typedef struct Store {
  Value *v;  /* the forward activation */
  Op *first; /* the first backward op reading it */
} Store;

static bool stored_type(const Value *v) { return v->type.dtype == DT_F32 && v->type.rank >= 2; }

static Op *cast_op(Func *f, Value *x, DType to) {
  Op *c = ir_op_new(f, OP_CAST, 1, &x, 1);
  ir_set_attr_str(c, "to", ir_dtype_name(to));
  char err[160];
  if (!ir_infer(f->module, c, err, sizeof err)) die("precision: %s", err);
  return c;
}

/* Replaces operand uses of `from` by `to` in the ops from `start` on. */
static void replace_from(Op *start, const Value *from, Value *to) {
  for (Op *u = start; u; u = u->next)
    for (int k = 0; k < u->nin; k++)
      if (u->in[k] == from) u->in[k] = to;
}

/* The rule between the options, checked when the pipeline is written (registry.c). */
bool pass_precision_check(const PipelineEntry *e, Diag *d) {
  if (pass_opt_bool(&e->opts, "bf16") == pass_opt_bool(&e->opts, "fp16")) {
    diag_error(d, e->file, e->line, e->col, "precision: give exactly one of bf16 or fp16");
    return false;
  }
  return true;
}

bool pass_precision(Module *m, const PassOptions *o, Diag *d) {
  bool bf16 = pass_opt_bool(o, "bf16"), fp16 = !bf16;   /* exactly one of the two (pass_precision_check) */
  DType half = bf16 ? DT_BF16 : DT_F16;
  Func *t = ir_train_func(m);
  if (!t) {
    pass_error(o, d, "precision: no training function: run autodiff first");
    return false;
  }
  if (ir_module_attr(m, "precision")) {
    pass_error(o, d, "precision: the module already has a precision (the pass runs once)");
    return false;
  }
  /* The backward starts at the loss gradient. */
  Op *seed = NULL;
  int nvals = 0;
  for (Op *op = t->first; op; op = op->next) {
    if (!seed && (op->kind == OP_XENT_GRAD || op->kind == OP_LINEAR_XENT)) seed = op;
    nvals += op->nout;
  }
  if (!seed) {
    diag_error(d, m->file, t->line, t->col, "precision: @%s has no loss gradient (cross_entropy_grad or linear_xent)", t->name);
    return false;
  }
  /* 1. forward activations read by the backward */
  Store *st = calloc((size_t)nvals + 1, sizeof *st);
  bool *in_bwd = calloc((size_t)t->nvalues + 1, sizeof *in_bwd), *seen = calloc((size_t)t->nvalues + 1, 1);
  if (!st || !in_bwd || !seen) die("out of memory");
  for (Op *op = seed; op; op = op->next)
    for (int k = 0; k < op->nout; k++) in_bwd[op->out[k]->id] = true;
  int nst = 0;
  /* linear_xent (xent_fuse) is the forward head and the loss gradient in one: its operands are
   * read once, where they are computed, so they are not stored */
  for (Op *op = seed->kind == OP_LINEAR_XENT ? seed->next : seed; op; op = op->next)
    for (int k = 0; k < op->nin; k++) {
      Value *v = op->in[k];
      if (!v->def || !stored_type(v) || in_bwd[v->id] || seen[v->id]) continue;
      OpKind dk = v->def->kind;
      if (dk == OP_CAST || dk == OP_PARAM || dk == OP_CONST || dk == OP_SINUSOID) continue; /* not activations */
      seen[v->id] = true;
      st[nst++] = (Store){v, op};
    }
  free(in_bwd);
  free(seen);
  for (int i = 0; i < nst; i++) {
    Value *v = st[i].v;
    Op *down = cast_op(t, v, half);
    Op *after = v->def; /* after the def, and after the casts already placed there */
    while (after->next && after->next->kind == OP_CAST && after->next->in[0]->def == v->def) after = after->next;
    ir_insert_after(after, down);
    Op *up = cast_op(t, down->out[0], DT_F32);
    ir_insert_before(st[i].first, up);
    replace_from(up->next, v, up->out[0]);
  }
  free(st);
  /* 2. the activation gradient into each block backward */
  for (Op *op = seed; op; op = op->next) {
    const char *callee = op->kind == OP_CALL ? ir_attr_s(op, "callee") : NULL;
    if (!callee || !strstr(callee, ".bwd") || op->nin == 0) continue;
    Value *dy = op->in[op->nin - 1];
    if (!stored_type(dy)) continue;
    Op *down = cast_op(t, dy, half), *up = cast_op(t, down->out[0], DT_F32);
    ir_insert_before(op, down);
    ir_insert_before(op, up);
    op->in[op->nin - 1] = up->out[0];
  }
  /* 3. the loss scale */
  if (fp16) {
    Op *ls = ir_op_new(t, OP_LOSS_SCALE, 0, NULL, 1);
    char err[160];
    if (!ir_infer(m, ls, err, sizeof err)) die("precision: %s", err);
    ir_insert_before(seed, ls);
    seed->in[seed->nin - 1] = ls->out[0]; /* the loss gradient: last operand of either seed */
  }
  ir_module_set_attr(m, (Attr){.key = "precision", .kind = ATTR_STR, .s = ir_dtype_name(half)});
  return true;
}
