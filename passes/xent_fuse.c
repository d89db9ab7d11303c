/* xent_fuse.c: the LM head and its loss fused over row chunks (the `xent_fuse` pass,
 * xent_fuse<chunk=R>).
 *
 * autodiff ends @train's forward in linear(h, w) -> logits [..,V] -> cross_entropy(logits, targets)
 * and starts its backward with cross_entropy_grad(logits, targets, dloss) -> dlogits, then
 * matmul(dlogits, w) (d h) and linear_dw(dlogits, h) (d w). The logits and dlogits are the
 * largest tensors of a language model's training step ([rows, V] f32 each) and both live at once.
 * This pass rewrites the five ops into one
 *
 *   %dh, %dw, %loss = linear_xent(%h, %w, %targets, %dloss) {chunk=R}
 *
 * whose kernel (rt_linear_xent, runtime/kernels/loss.c) computes R rows of logits at a time in
 * scratch, their loss terms and gradient, and their contributions to d h and d w: no [rows, V]
 * tensor exists. The loss and d h are the bits of the unfused kernels; d w adds its chunks in
 * order and differs from one GEMM over all rows in the last bits (docs/training.md).
 *
 * It matches only that exact shape: the linear has no bias or epilogue (an operand count of 2),
 * the logits are read by the two loss ops alone, the loss gradient by the matmul and linear_dw
 * alone, both with the same w and h values, and nothing between the loss and its gradient reads
 * the loss. Anything else (a classifier's pooled head, a head with a bias, casts a precision pass
 * placed) is left as it is. A tied head needs nothing special: d w replaces linear_dw's value,
 * which autodiff already adds to the embedding's scatter-add.
 *
 * Run it after autodiff (and checkpoint) and before precision: pass_pipeline_complete inserts the
 * precision pass a spec's train: precision asks for after it.
 */
#include <string.h>

#include "pass.h"

/* The ops of f reading v (at most max of them) and their count (returns count too). */
static int readers(Func *f, const Value *v, Op **out, int max) {
  int n = 0;
  for (Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nin; i++)
      if (op->in[i] == v) {
        if (n < max) out[n] = op;
        n++;
        break;
      }
  for (int i = 0; i < f->nret; i++) n += f->ret[i] == v;
  return n;
}

/* Rewrites the pattern around the loss gradient g; false if it does not match. */
static bool fuse_at(Func *f, Op *g, int64_t chunk) {
  Value *logits = g->in[0], *targets = g->in[1], *dloss = g->in[2];
  Op *lin = logits->def;
  if (!lin || lin->kind != OP_LINEAR || lin->nin != 2 || ir_attr(lin, "epi")) return false;
  Value *h = lin->in[0], *w = lin->in[1];
  if (h->type.dtype != DT_F32 || w->type.dtype != DT_F32 || dloss->type.dtype != DT_F32) return false;
  Op *use[2];
  if (readers(f, logits, use, 2) != 2) return false;
  Op *xent = use[0] == g ? use[1] : use[0];
  if (xent->kind != OP_CROSS_ENTROPY || xent->in[0] != logits || xent->in[1] != targets) return false;
  if (readers(f, g->out[0], use, 2) != 2) return false;
  Op *mm = use[0]->kind == OP_MATMUL ? use[0] : use[1], *dw = mm == use[0] ? use[1] : use[0];
  if (mm->kind != OP_MATMUL || mm->in[0] != g->out[0] || mm->in[1] != w) return false;
  if (dw->kind != OP_LINEAR_DW || dw->in[0] != g->out[0] || dw->in[1] != h) return false;
  /* the fused op stands where the loss gradient stood: nothing before it may read the loss */
  Op *op = xent->next;
  for (; op && op != g; op = op->next)
    for (int i = 0; i < op->nin; i++)
      if (op->in[i] == xent->out[0]) return false;
  if (op != g) return false;
  int64_t rows = ir_type_numel(&h->type) / h->type.dim[h->type.rank - 1];
  Op *fx = ir_op_new(f, OP_LINEAR_XENT, 4, (Value *[]){h, w, targets, dloss}, 3);
  ir_set_attr_int(fx, "chunk", chunk < rows ? chunk : rows > 0 ? rows : 1);
  char e[256];
  if (!ir_infer(f->module, fx, e, sizeof e)) die("xent_fuse: %s", e);
  ir_insert_before(g, fx);
  ir_replace_uses(f, mm->out[0], fx->out[0]);
  ir_replace_uses(f, dw->out[0], fx->out[1]);
  ir_replace_uses(f, xent->out[0], fx->out[2]);
  ir_unlink(dw);
  ir_unlink(mm);
  ir_unlink(g);
  ir_unlink(xent);
  ir_unlink(lin);
  return true;
}

bool pass_xent_fuse(Module *m, const PassOptions *o, Diag *d) {
  Func *t = ir_train_func(m);
  if (!t) {
    pass_error(o, d, "xent_fuse: no training function: run autodiff first");
    return false;
  }
  int64_t chunk = pass_opt_int(o, "chunk");
  for (Op *op = t->first, *next; op; op = next) {
    next = op->next;
    if (op->kind == OP_XENT_GRAD) fuse_at(t, op, chunk);
  }
  return true;
}
