/* compute.c: products in bf16 from 16-bit stored weights (the `compute` pass: compute<dtype=bf16>).
 *
 * After store<dtype=bf16>, every weight is loaded as bf16 and cast to f32 where it is read. This
 * pass removes those casts where a kernel can read the bf16 weight itself:
 *
 *   - linear(x, cast(w)) -> linear(x, w): an f32 input times a bf16 weight. The kernel rounds the
 *     input to bf16 (round to nearest even), multiplies in bf16 on the CPU's matrix units (AMX,
 *     AVX512-BF16; runtime/gemm/) and accumulates and returns f32, as PyTorch's autocast does
 *     (but with an f32 result, not a rounded one);
 *   - embedding(ids, cast(w)) -> cast(embedding(ids, w)): gather the bf16 rows, then widen only
 *     the gathered rows, instead of widening the whole table every call.
 *
 *   %0 = param {p=@w} : bf16[8,4]          ->    %0 = param {p=@w} : bf16[8,4]
 *   %1 = cast(%0) {to="f32"} : f32[8,4]          %2 = linear(%x, %0) : f32[2,8]
 *   %2 = linear(%x, %1) : f32[2,8]
 *
 * A block function called per layer takes its weights as arguments: where every call passes a
 * cast bf16 weight, the argument becomes bf16 and the callee casts it for its other readers
 * (narrow_args), so the callee's linears read bf16 too. Casts left without a use are removed;
 * other readers of the weight (a norm's gain, say) keep their cast and compute in f32. f16-stored weights are left alone (the matrix units here
 * multiply bf16). The pass is for inference: a module that trains (@train) is refused, and it
 * needs stored bf16 weights (store<dtype=bf16> before it): a module with none is an error, so
 * `--precision=bf16` never silently computes in f32.
 */
#include <string.h>

#include "pass.h"

/* w when v is cast(w) {to="f32"} of a bf16 value, else NULL */
static Value *bf16_source(const Value *v) {
  const Op *c = v->def;
  if (!c || c->kind != OP_CAST || c->nin != 1 || c->in[0]->type.dtype != DT_BF16 || v->type.dtype != DT_F32)
    return NULL;
  return c->in[0];
}

static void infer_or_die(const Module *m, Op *op) {
  char err[160];
  if (!ir_infer(m, op, err, sizeof err)) die("compute: %s", err);
}

/* Rewrites f's linear and embedding ops; returns how many. */
static int rewrite(Module *m, Func *f) {
  int n = 0;
  for (Op *op = f->first; op; op = op->next) {
    if ((op->kind != OP_LINEAR && op->kind != OP_EMBEDDING) || op->nin < 2) continue;
    Value *w = bf16_source(op->in[1]);
    if (!w) continue;
    if (op->kind == OP_LINEAR) {
      if (op->in[0]->type.dtype != DT_F32) continue;
      op->in[1] = w;
      infer_or_die(m, op);
    } else {
      /* embedding(ids, w) : bf16, then cast : f32 replacing the old result */
      Value *in[2] = {op->in[0], w};
      Op *e = ir_op_new(f, OP_EMBEDDING, 2, in, 1);
      infer_or_die(m, e);
      ir_insert_before(op, e);
      Op *c = ir_op_new(f, OP_CAST, 1, &e->out[0], 1);
      ir_set_attr_str(c, "to", "f32");
      infer_or_die(m, c);
      ir_insert_after(e, c);
      ir_replace_uses(f, op->out[0], c->out[0]);
      Op *dead = op;
      op = c;
      ir_unlink(dead);
    }
    n++;
  }
  /* the casts nothing reads any more */
  ir_count_uses(f);
  for (Op *op = f->first, *next; op; op = next) {
    next = op->next;
    if (op->kind == OP_CAST && op->out[0]->nuses == 0 && op->in[0]->type.dtype == DT_BF16) ir_unlink(op);
  }
  return n;
}

/* A block function's weights arrive as arguments, cast to f32 in the caller (store casts after
 * the param ops). When every call of g passes cast(w : bf16) as argument j, g's argument j becomes
 * bf16, every call passes w itself, and a cast at g's entry feeds g's readers of it, so rewrite()
 * can then hand the bf16 argument to g's linear and embedding ops. Returns whether it changed m. */
static bool narrow_args(Module *m) {
  bool changed = false;
  for (int gi = 0; gi < m->nfunc; gi++) {
    Func *g = m->funcs[gi];
    for (int j = 0; j < g->narg; j++) {
      Value *a = g->args[j];
      if (a->type.dtype != DT_F32) continue;
      int ncalls = 0;
      bool all = true;
      for (int fi = 0; fi < m->nfunc && all; fi++)
        for (Op *op = m->funcs[fi]->first; op && all; op = op->next)
          if (op->kind == OP_CALL && strcmp(ir_attr_s(op, "callee"), g->name) == 0) {
            ncalls++;
            all = j < op->nin && bf16_source(op->in[j]) != NULL;
          }
      if (!ncalls || !all) continue;
      a->type.dtype = DT_BF16;
      Op *c = ir_op_new(g, OP_CAST, 1, &a, 1);
      ir_set_attr_str(c, "to", "f32");
      infer_or_die(m, c);
      if (g->first)
        ir_insert_before(g->first, c);
      else
        ir_append(g, c);
      ir_replace_uses(g, a, c->out[0]);
      c->in[0] = a; /* ir_replace_uses rewrote the cast's own operand too */
      for (int fi = 0; fi < m->nfunc; fi++)
        for (Op *op = m->funcs[fi]->first; op; op = op->next)
          if (op->kind == OP_CALL && strcmp(ir_attr_s(op, "callee"), g->name) == 0) {
            op->in[j] = bf16_source(op->in[j]);
            infer_or_die(m, op);
          }
      changed = true;
    }
  }
  return changed;
}

bool pass_compute(Module *m, const PassOptions *o, Diag *d) {
  const char *dt = pass_opt_str(o, "dtype"); /* "bf16" (registry.c) */
  if (strcmp(dt, "bf16") != 0) die("compute: dtype=%s", dt);
  if (ir_train_func(m)) {
    pass_error(o, d, "compute: the module trains (@%s): bf16 products from stored weights are for inference "
                     "(train with precision<bf16> instead)", ir_train_func(m)->name);
    return false;
  }
  while (narrow_args(m)) {
  }
  int n = 0;
  for (int i = 0; i < m->nfunc; i++) n += rewrite(m, m->funcs[i]);
  if (n == 0) {
    pass_error(o, d, "compute: no linear or embedding op reads a bf16-stored weight: put store<dtype=bf16> "
                     "before compute<dtype=bf16>");
    return false;
  }
  return true;
}
