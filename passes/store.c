/* store.c: 16-bit weight storage (the `store` pass: store<dtype=bf16> or store<dtype=f16>).
 *
 * Changes the storage dtype of every f32 parameter (except those named by skip=) to bf16 or f16
 * and puts `cast(%w) {to="f32"}` right after each `param` op that reads one, so every op that
 * computes still sees f32: weight-only 16-bit storage, half the weight bytes, the same arithmetic
 * on the rounded weights. A bf16 GEMM that reads the 16-bit weights directly would remove the
 * casts again.
 *
 *   %0 = param {p=@w} : f32[8,4]          ->    %0 = param {p=@w} : bf16[8,4]
 *   %1 = linear(%x, %0) : f32[2,8]              %1 = cast(%0) {to="f32"} : f32[8,4]
 *                                               %2 = linear(%x, %1) : f32[2,8]
 *
 * skip= is a comma-separated list of parameter names, each optionally ending in '*' to match a
 * prefix (skip=wte.weight,h.0.*); a name that matches no parameter is an error, so a typo does
 * not silently store everything. The pass is for inference: a module that already trains
 * (@train) is refused, since gradients of 16-bit weights are not defined yet (train with the
 * precision pass instead).
 */
#include <stdlib.h>
#include <string.h>

#include "pass.h"

bool pass_store(Module *m, const PassOptions *o, Diag *d) {
  const char *dt = pass_opt_str(o, "dtype"), *skip = pass_opt_str(o, "skip");
  int half = ir_dtype_by_name(dt);   /* bf16 or f16 (registry.c) */
  IR_ASSERT(half == DT_BF16 || half == DT_F16);
  if (ir_train_func(m)) {
    pass_error(o, d, "store: the module trains (@%s): 16-bit weight storage is for inference "
                                 "(train with precision<bf16> instead)", ir_train_func(m)->name);
    return false;
  }
  PassSkip sk = pass_skip_new(skip);
  bool *stored = calloc((size_t)m->nparam + 1, sizeof *stored);
  if (!stored) die("out of memory");
  for (int i = 0; i < m->nparam; i++) {
    Param *p = m->params[i];
    if (pass_skip_match(&sk, p->name) || p->type.dtype != DT_F32 || p->fmt != PF_DENSE) continue;
    p->type.dtype = (DType)half;
    stored[i] = true;
  }
  bool ok = pass_skip_done(&sk, o, d, "store");
  for (int fi = 0; ok && fi < m->nfunc; fi++) {
    Func *f = m->funcs[fi];
    for (Op *op = f->first; op; op = op->next) {
      if (op->kind != OP_PARAM) continue;
      const Param *p = ir_find_param(m, ir_attr_s(op, "p"));
      int pi = 0;
      while (pi < m->nparam && m->params[pi] != p) pi++;
      if (!p || !stored[pi]) continue;
      Value *w = op->out[0];
      w->type = p->type;  /* the param op yields the stored dtype */
      Op *c = ir_op_new(f, OP_CAST, 1, &w, 1);
      ir_set_attr_str(c, "to", "f32");
      char err[160];
      if (!ir_infer(m, c, err, sizeof err)) die("store: %s", err);
      ir_insert_after(op, c);
      ir_replace_uses(f, w, c->out[0]);
      c->in[0] = w; /* ir_replace_uses rewrote the cast's own operand too */
      op = c;
    }
  }
  free(stored);
  return ok;
}
