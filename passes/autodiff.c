/* autodiff.c: reverse-mode differentiation (the `autodiff` pass).
 *
 * From the entry function (token ids -> logits) it builds @train(tokens, targets) -> (loss,
 * d loss/d p for every stored trainable parameter p, in module order, then the load report f32[E+2]
 * of every moe layer in forward order, docs/ir.md "moe"): the forward pass, the
 * mean cross-entropy of the logits against the targets (plus the auxiliary losses: result 1 of each
 * moe op, the results after the first of each call, docs/ir.md "moe"), and the backward pass, emitted op by op
 * in reverse from each op's gradient rule (ops.def's GRAD column, ir/grad.c).
 *
 * Repeated blocks are differentiated once: for every function @f the entry calls, @f.bwd(args of
 * f..., d results of f...) -> (d args of f...) recomputes f's forward from its inputs and then runs
 * f's backward, so a call site in @train is differentiated by calling @f.bwd with the call's
 * saved inputs. This is gradient checkpointing at block boundaries: between forward and backward
 * only each block's input stays live, and one block's activations at a time.
 *
 * Gradients of one parameter loaded in several places (a tied LM head and embedding) are summed.
 * The pass must run before `fuse` (rules differentiate unfused ops); the fuse, cse, dce and memplan
 * passes then apply to the training functions as to the forward one. The module attribute
 * `train` names the training function for the backends.
 */
#include <stdlib.h>
#include <string.h>

#include "pass.h"

typedef struct AD {
  Module *m;
  Diag *d;
  bool ok;
  const PassOptions *o;   /* the pass's options: its pipeline entry locates errors at no op */
} AD;

/* Reports at the op when it has a source location, else at the pass's pipeline entry. */
static void err(AD *a, const Op *op, const char *fmt, const char *x, const char *y) {
  if (op && op->line > 0) diag_error(a->d, a->m->file, op->line, op->col, fmt, x ? x : "", y ? y : "");
  else pass_error(a->o, a->d, fmt, x ? x : "", y ? y : "");
  a->ok = false;
}

static bool is_float(const Type *t) { return t->dtype == DT_F32 || t->dtype == DT_F16 || t->dtype == DT_BF16; }

static Value *zeros(Func *f, const Type *t) {
  Op *op = ir_op_new(f, OP_CONST, 0, NULL, 1);
  ir_set_attr_float(op, "value", 0.0);
  ir_set_attr_ints(op, "shape", t->rank, t->dim);
  return ir_emit(f, op);
}

/* Copies f's ops into b (values mapped through val, which must hold f's arguments). */
static void copy_forward(const Func *f, Func *b, Value **val) {
  for (const Op *op = f->first; op; op = op->next) {
    Value *in[256];
    IR_ASSERT(op->nin <= 256);
    for (int i = 0; i < op->nin; i++) in[i] = val[op->in[i]->id];
    Op *c = ir_op_new(b, op->kind, op->nin, in, op->nout);
    for (int i = 0; i < op->nattr; i++) ir_set_attr(c, op->attr[i]);
    char e[256];
    if (!ir_infer(b->module, c, e, sizeof e)) die("copying @%s: %s", f->name, e);
    ir_append(b, c);
    for (int i = 0; i < op->nout; i++) val[op->out[i]->id] = c->out[i];
  }
}

/* needs[v]: v depends on a value we want a gradient for (seeded by the caller). */
static void propagate_needs(const Func *f, bool *needs) {
  for (const Op *op = f->first; op; op = op->next) {
    bool any = op->kind == OP_PARAM;
    for (int i = 0; i < op->nin; i++) any |= needs[op->in[i]->id];
    for (int i = 0; i < op->nout; i++) needs[op->out[i]->id] = any && is_float(&op->out[i]->type);
  }
}

static Func *differentiate_callee(AD *a, const Func *f);

/* Runs the backward of f's ops in reverse, appending to g->f. */
static void backward(AD *a, const Func *f, GradCtx *g) {
  int nops = 0;
  for (const Op *op = f->first; op; op = op->next) nops++;
  const Op **ops = malloc(sizeof *ops * (size_t)(nops ? nops : 1));
  int k = 0;
  for (const Op *op = f->first; op; op = op->next) ops[k++] = op;
  for (int i = nops - 1; i >= 0 && a->ok; i--) {
    const Op *op = ops[i];
    bool have = false, want = false;
    for (int r = 0; r < op->nout; r++) have |= g->adj[op->out[r]->id] != NULL;
    for (int j = 0; j < op->nin; j++) want |= g->needs[op->in[j]->id];
    if (!have || !want) continue;
    if (op->kind == OP_CALL) {
      const Func *callee = ir_find_func(a->m, ir_attr_s(op, "callee"));
      Func *cb = differentiate_callee(a, callee);
      if (!cb) break; /* reported; ops is freed below */
      Value *in[512];
      int n = 0;
      IR_ASSERT(op->nin + op->nout <= 512);
      for (int j = 0; j < op->nin; j++) in[n++] = g->val[op->in[j]->id];
      for (int r = 0; r < op->nout; r++) {
        Value *d = g->adj[op->out[r]->id];
        in[n++] = d ? d : zeros(g->f, &op->out[r]->type);
      }
      Op *c = ir_op_new(g->f, OP_CALL, n, in, cb->nret);
      ir_set_attr_sym(c, "callee", cb->name);
      /* the backward call recomputes the block: it must draw the forward call's random stream */
      if (ir_attr(op, "stream")) ir_set_attr_int(c, "stream", ir_attr_i(op, "stream"));
      ir_emit(g->f, c);
      for (int j = 0; j < op->nin; j++)
        if (g->needs[op->in[j]->id]) ir_grad_accumulate(g, op->in[j], c->out[j]);
      continue;
    }
    GradFn rule = ir_op_grad(op->kind);
    if (!rule) {
      err(a, op, "autodiff: '%s' has no gradient rule%s", ir_op_name(op->kind), NULL);
      break;
    }
    char e[256];
    if (!rule(g, op, e, sizeof e)) err(a, op, "autodiff: %s: %s", ir_op_name(op->kind), e);
  }
  free(ops);
}

/* @f.bwd(args of f..., d results...) -> (d args of f...): recompute f, then its backward. */
static Func *differentiate_callee(AD *a, const Func *f) {
  char name[256];
  snprintf(name, sizeof name, "%s.bwd", f->name);
  Func *b = ir_find_func(a->m, name);
  if (b) return b;
  b = ir_add_func(a->m, name);
  Value **val = calloc((size_t)f->nvalues + 1, sizeof *val);
  Value **adj = calloc((size_t)f->nvalues + 1, sizeof *adj);
  bool *needs = calloc((size_t)f->nvalues + 1, sizeof *needs);
  if (!val || !adj || !needs) die("out of memory");
  for (int i = 0; i < f->narg; i++) {
    val[f->args[i]->id] = ir_add_arg(b, f->args[i]->name, f->args[i]->type);
    needs[f->args[i]->id] = is_float(&f->args[i]->type);
  }
  Value **dys = malloc(sizeof *dys * (size_t)(f->nret ? f->nret : 1));
  for (int r = 0; r < f->nret; r++) {
    char dn[160];
    snprintf(dn, sizeof dn, "d%d", r);
    dys[r] = ir_add_arg(b, dn, f->ret[r]->type);
  }
  copy_forward(f, b, val);
  propagate_needs(f, needs);
  GradCtx g = {b, val, adj, needs};
  for (int r = 0; r < f->nret; r++)
    if (needs[f->ret[r]->id]) ir_grad_accumulate(&g, f->ret[r], dys[r]);
  backward(a, f, &g);
  Value **rets = malloc(sizeof *rets * (size_t)(f->narg ? f->narg : 1));
  for (int i = 0; i < f->narg; i++) {
    Value *d = adj[f->args[i]->id];
    rets[i] = d ? d : zeros(b, &f->args[i]->type);
  }
  ir_set_return(b, f->narg, rets);
  free(rets);
  free(dys);
  free(val);
  free(adj);
  free(needs);
  return a->ok ? b : NULL;
}

/* Distillation: @teacher's ops copied into t after the student's forward (its block calls stay
 * calls; nothing differentiates them), its tokens mapped to tokens; returns the teacher's logits,
 * or NULL after an error (no @teacher, or one whose signature does not match the student's). */
static Value *teacher_logits(AD *a, Func *t, const Func *f, Value *tokens) {
  const Func *te = ir_find_func(a->m, IR_TEACHER_FUNC);
  if (!te) {
    err(a, NULL, "autodiff: the training settings distill (distill_temperature) but the module has no @%s function%s",
        IR_TEACHER_FUNC, NULL);
    return NULL;
  }
  if (te->narg != 1 || !ir_type_eq(&te->args[0]->type, &f->args[0]->type) || te->nret != 1 ||
      !ir_type_eq(&te->ret[0]->type, &f->ret[0]->type)) {
    char b1[96], b2[96];
    if (te->nret == 1) ir_type_str(&te->ret[0]->type, b1, sizeof b1);
    ir_type_str(&f->ret[0]->type, b2, sizeof b2);
    err(a, NULL, "autodiff: the teacher's logits %s must have the student's type %s (the same tokens, the same vocabulary)",
        te->nret == 1 ? b1 : "?", b2);
    return NULL;
  }
  Value **map = calloc((size_t)te->nvalues + 1, sizeof *map);
  if (!map) die("out of memory");
  map[te->args[0]->id] = tokens;
  copy_forward(te, t, map);
  Value *z = map[te->ret[0]->id];
  free(map);
  return z;
}

/* The gradient reaching a `param` op of a known parameter, or NULL (not a load, or no gradient). */
static Value *load_grad(const Module *m, const Op *op, Value **adj) {
  if (op->kind != OP_PARAM || !ir_find_param(m, ir_attr_s(op, "p"))) return NULL;
  return adj[op->out[0]->id];
}

bool pass_autodiff(Module *m, const PassOptions *o, Diag *d) {
  AD a = {m, d, true, o};
  const Func *f = m->entry ? ir_find_func(m, m->entry) : NULL;
  if (!f) {
    pass_error(o, d, "autodiff: the module has no entry function");
    return false;
  }
  if (ir_find_func(m, "train")) {
    pass_error(o, d, "autodiff: the module already has a @train function (run the pass once)");
    return false;
  }
  if (f->narg != 1 || f->nret != 1 || f->args[0]->type.dtype != DT_I32 || f->ret[0]->type.rank < 1 ||
      !is_float(&f->ret[0]->type)) {
    if (f->line > 0) diag_error(d, m->file, f->line, f->col, "autodiff: the entry @%s must map token ids to logits", f->name);
    else pass_error(o, d, "autodiff: the entry @%s must map token ids to logits", f->name);
    return false;
  }
  const Type *lt = &f->ret[0]->type;
  Func *t = ir_add_func(m, "train");
  Value **val = calloc((size_t)f->nvalues + 1, sizeof *val);
  Value **adj = calloc((size_t)f->nvalues + 1, sizeof *adj);
  bool *needs = calloc((size_t)f->nvalues + 1, sizeof *needs);
  if (!val || !adj || !needs) die("out of memory");
  val[f->args[0]->id] = ir_add_arg(t, f->args[0]->name, f->args[0]->type);
  Value *targets = ir_add_arg(t, "targets", ir_type(DT_I32, lt->rank - 1, lt->dim));
  copy_forward(f, t, val);
  propagate_needs(f, needs);
  Value *logits = val[f->ret[0]->id];
  /* distillation: the teacher's forward (no gradient) and the distillation loss instead of the
   * cross-entropy; its KL and CE parts are returned after the gradients */
  const TrainConfig *tc = &m->train;
  Value *zt = tc->distill_temperature > 0 ? teacher_logits(&a, t, f, val[f->args[0]->id]) : NULL;
  if (tc->distill_temperature > 0 && !zt) {
    free(val);
    free(adj);
    free(needs);
    return false;
  }
  Value *loss, *parts[2] = {NULL, NULL};
  if (zt) {
    Op *dop = ir_op_new(t, OP_DISTILL_LOSS, 3, (Value *[]){logits, zt, targets}, 3);
    ir_set_attr_float(dop, "temperature", tc->distill_temperature);
    ir_set_attr_float(dop, "alpha", tc->distill_alpha);
    loss = ir_emit(t, dop);
    parts[0] = dop->out[1], parts[1] = dop->out[2];
  } else {
    loss = ir_emit(t, ir_op_new(t, OP_CROSS_ENTROPY, 2, (Value *[]){logits, targets}, 1));
  }
  /* d loss / d logits directly (the loss is the last op; its own gradient is 1) */
  Op *one = ir_op_new(t, OP_CONST, 0, NULL, 1);
  ir_set_attr_float(one, "value", 1.0);
  ir_set_attr_ints(one, "shape", 0, NULL);
  Value *dl = ir_emit(t, one);
  GradCtx g = {t, val, adj, needs};
  if (needs[f->ret[0]->id] && zt) {
    Op *gop = ir_op_new(t, OP_DISTILL_GRAD, 4, (Value *[]){logits, zt, targets, dl}, 1);
    ir_set_attr_float(gop, "temperature", tc->distill_temperature);
    ir_set_attr_float(gop, "alpha", tc->distill_alpha);
    ir_grad_accumulate(&g, f->ret[0], ir_emit(t, gop));
  } else if (needs[f->ret[0]->id]) {
    ir_grad_accumulate(&g, f->ret[0], ir_emit(t, ir_op_new(t, OP_XENT_GRAD, 3, (Value *[]){logits, targets, dl}, 1)));
  }
  /* auxiliary losses (a moe op's load-balancing loss, result 1; a block function's results after
   * the first, the sums of its own): each is added to the loss, so its gradient is 1 */
  Value *auxsum = NULL, **moe_loads = NULL;
  int nloads = 0;
  for (const Op *op = f->first; op; op = op->next) {
    if (op->kind != OP_MOE && op->kind != OP_CALL) continue;
    for (int r = 1; r < op->nout; r++) {
      const Value *av = op->out[r];
      if (av->type.dtype != DT_F32 || av->type.rank > 1) continue;
      Value *v = val[av->id];
      if (av->type.rank == 1) { /* a load report (moe's result 2): returned after the gradients */
        moe_loads = realloc(moe_loads, sizeof *moe_loads * (size_t)(nloads + 1));
        if (!moe_loads) die("out of memory");
        moe_loads[nloads++] = v;
        continue;
      }
      if (needs[av->id]) ir_grad_accumulate(&g, av, dl);
      auxsum = auxsum ? ir_emit(t, ir_op_new(t, OP_ADD, 2, (Value *[]){auxsum, v}, 1)) : v;
    }
  }
  backward(&a, f, &g);
  /* after the backward, so nothing between the loss and its gradient reads it (xent_fuse) */
  if (auxsum) loss = ir_emit(t, ir_op_new(t, OP_ADD, 2, (Value *[]){loss, auxsum}, 1));
  /* results: the loss, then each stored trainable parameter's gradient (all its loads summed in op
   * order). The loads' gradients are bucketed by parameter (a counting sort over the ops), so this
   * is linear in the model's size and the adds still come out parameter by parameter. */
  int nret = 1, np = m->nparam;
  Value **rets = malloc(sizeof *rets * (size_t)(np + 3 + nloads));
  int *begin = calloc((size_t)np + 1, sizeof *begin);  /* bucket i is loads[begin[i] .. begin[i+1]) */
  int *fill = calloc((size_t)np + 1, sizeof *fill);
  if (!rets || !begin || !fill) die("out of memory");
  for (const Op *op = f->first; op; op = op->next)
    if (load_grad(m, op, adj)) begin[ir_find_param(m, ir_attr_s(op, "p"))->index + 1]++;
  for (int i = 0; i < np; i++) begin[i + 1] += begin[i];
  Value **loads = malloc(sizeof *loads * (size_t)(begin[np] + 1));
  if (!loads) die("out of memory");
  memcpy(fill, begin, sizeof *fill * (size_t)(np + 1));
  for (const Op *op = f->first; op; op = op->next) {
    Value *dv = load_grad(m, op, adj);
    if (dv) loads[fill[ir_find_param(m, ir_attr_s(op, "p"))->index]++] = dv;
  }
  rets[0] = loss;
  for (int i = 0; i < np && a.ok; i++) {
    const Param *p = m->params[i];
    if (!p->trainable) continue;
    Value *sum = NULL;
    for (int k = begin[i]; k < begin[i + 1]; k++)
      sum = sum ? ir_emit(t, ir_op_new(t, OP_ADD, 2, (Value *[]){sum, loads[k]}, 1)) : loads[k];
    rets[nret++] = sum ? sum : zeros(t, &p->type);
  }
  if (zt) rets[nret++] = parts[0], rets[nret++] = parts[1];
  for (int i = 0; i < nloads; i++) rets[nret++] = moe_loads[i];
  free(moe_loads);
  free(begin);
  free(fill);
  free(loads);
  ir_set_return(t, nret, rets);
  free(rets);
  free(val);
  free(adj);
  free(needs);
  if (!a.ok) return false;
  /* the teacher now lives in @train (its blocks stay functions of their own); nothing else calls it */
  if (zt) ir_remove_func(m, ir_find_func(m, IR_TEACHER_FUNC));
  ir_module_set_attr(m, (Attr){.key = "train", .kind = ATTR_SYM, .s = "train"});
  return true;
}
