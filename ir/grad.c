/* grad.c: the gradient rule of every differentiable op (reverse mode).
 *
 * A rule sees the forward op, finds the gradient of its result in g->adj, and emits ops into the
 * backward function g->f that compute the gradients of its inputs, accumulating them with
 * ir_grad_accumulate. Inputs nobody needs a gradient for (g->needs false: token ids, constants,
 * values no parameter influences) are skipped. Rules emit unfused ops; the fuse pass later merges
 * the element-wise ones (e.g. dy * gelu_d(x)) into single loops, as for the forward pass.
 *
 * The backward kernels (norm_dx, attention_dx, linear_dw, ...) are ops of their own so that each
 * has one runtime kernel with a naive twin; their semantics are in docs/ir.md.
 */
#include <string.h>

#include "grad.h"

static Value *emit(Func *f, OpKind k, int nin, Value *const *in) { return ir_emit(f, ir_op_new(f, k, nin, in, 1)); }
static Value *emit1(Func *f, OpKind k, Value *a) { return emit(f, k, 1, &a); }
static Value *emit2(Func *f, OpKind k, Value *a, Value *b) {
  Value *in[2] = {a, b};
  return emit(f, k, 2, in);
}

/* A scalar constant (broadcasts against anything). */
static Value *scalar(Func *f, double v) {
  Op *op = ir_op_new(f, OP_CONST, 0, NULL, 1);
  ir_set_attr_float(op, "value", v);
  ir_set_attr_ints(op, "shape", 0, NULL);
  return ir_emit(f, op);
}

static Value *dy_of(GradCtx *g, const Op *op) { return g->adj[op->out[0]->id]; }
static Value *in_of(GradCtx *g, const Op *op, int i) { return g->val[op->in[i]->id]; }
static bool needs(GradCtx *g, const Op *op, int i) { return g->needs[op->in[i]->id]; }

void ir_grad_accumulate(GradCtx *g, const Value *fwd, Value *d) {
  IR_ASSERT(ir_type_eq(&fwd->type, &d->type));
  Value **a = &g->adj[fwd->id];
  *a = *a ? emit2(g->f, OP_ADD, *a, d) : d;
}

Value *ir_grad_reduce(Func *f, Value *d, const Type *t) {
  if (ir_type_eq(&d->type, t)) return d;
  Op *op = ir_op_new(f, OP_SUM_TO, 1, &d, 1);
  ir_set_attr_ints(op, "shape", t->rank, t->dim);
  return ir_emit(f, op);
}

/* Accumulates d (of the op's result shape) into input i, summed down to its shape. */
static void give(GradCtx *g, const Op *op, int i, Value *d) {
  if (needs(g, op, i)) ir_grad_accumulate(g, op->in[i], ir_grad_reduce(g->f, d, &op->in[i]->type));
}

GRAD_RULE(grad_none) { return true; }

GRAD_RULE(grad_add) {
  Value *dy = dy_of(g, op);
  give(g, op, 0, dy);
  give(g, op, 1, dy);
  return true;
}

GRAD_RULE(grad_sub) {
  Value *dy = dy_of(g, op);
  give(g, op, 0, dy);
  if (needs(g, op, 1)) give(g, op, 1, emit1(g->f, OP_NEG, dy));
  return true;
}

GRAD_RULE(grad_mul) {
  Value *dy = dy_of(g, op);
  if (needs(g, op, 0)) give(g, op, 0, emit2(g->f, OP_MUL, dy, in_of(g, op, 1)));
  if (needs(g, op, 1)) give(g, op, 1, emit2(g->f, OP_MUL, dy, in_of(g, op, 0)));
  return true;
}

/* y = a / b: da = dy / b, db = -dy * y / b */
GRAD_RULE(grad_div) {
  Value *dy = dy_of(g, op), *b = in_of(g, op, 1);
  if (needs(g, op, 0)) give(g, op, 0, emit2(g->f, OP_DIV, dy, b));
  if (needs(g, op, 1)) {
    Value *t = emit2(g->f, OP_DIV, emit2(g->f, OP_MUL, dy, g->val[op->out[0]->id]), b);
    give(g, op, 1, emit1(g->f, OP_NEG, t));
  }
  return true;
}

GRAD_RULE(grad_neg) {
  give(g, op, 0, emit1(g->f, OP_NEG, dy_of(g, op)));
  return true;
}

GRAD_RULE(grad_exp) { /* d exp(x) = exp(x) dx: reuse the result */
  give(g, op, 0, emit2(g->f, OP_MUL, dy_of(g, op), g->val[op->out[0]->id]));
  return true;
}

GRAD_RULE(grad_tanh) { /* 1 - y^2 */
  Value *y = g->val[op->out[0]->id];
  Value *d = emit2(g->f, OP_SUB, scalar(g->f, 1.0), emit2(g->f, OP_MUL, y, y));
  give(g, op, 0, emit2(g->f, OP_MUL, dy_of(g, op), d));
  return true;
}

GRAD_RULE(grad_sigmoid) { /* y (1 - y) */
  Value *y = g->val[op->out[0]->id];
  Value *d = emit2(g->f, OP_MUL, y, emit2(g->f, OP_SUB, scalar(g->f, 1.0), y));
  give(g, op, 0, emit2(g->f, OP_MUL, dy_of(g, op), d));
  return true;
}

/* relu, gelu, gelu_tanh, silu: dy * act'(x), the derivative being an element-wise op itself */
GRAD_RULE(grad_act) {
  OpKind d = op->kind == OP_RELU        ? OP_RELU_D
             : op->kind == OP_GELU      ? OP_GELU_D
             : op->kind == OP_GELU_TANH ? OP_GELU_TANH_D
                                        : OP_SILU_D;
  give(g, op, 0, emit2(g->f, OP_MUL, dy_of(g, op), emit1(g->f, d, in_of(g, op, 0))));
  return true;
}

static Value *norm_grad_op(GradCtx *g, const Op *op, OpKind k, int nin, Value *const *in) {
  Op *o = ir_op_new(g->f, k, nin, in, 1);
  ir_set_attr_float(o, "eps", ir_attr_f(op, "eps"));
  ir_set_attr_int(o, "rms", op->kind == OP_RMSNORM);
  return ir_emit(g->f, o);
}

/* layernorm(x, g, b) / rmsnorm(x, g): dx by the fused backward kernel, dg = sum(dy * xhat),
 * db = sum(dy) over the rows. */
GRAD_RULE(grad_norm) {
  Value *dy = dy_of(g, op), *x = in_of(g, op, 0);
  if (needs(g, op, 0)) {
    Value *in[3] = {x, in_of(g, op, 1), dy};
    ir_grad_accumulate(g, op->in[0], norm_grad_op(g, op, OP_NORM_DX, 3, in));
  }
  if (needs(g, op, 1)) {
    Value *in[2] = {x, dy};
    ir_grad_accumulate(g, op->in[1], norm_grad_op(g, op, OP_NORM_DG, 2, in));
  }
  if (op->nin > 2) give(g, op, 2, dy);
  return true;
}

/* y = x W^T: dx = dy W (a matmul with the [N,K] weight), dW = sum over rows dy^T x. */
GRAD_RULE(grad_linear) {
  if (op->nin > 2 || ir_attr_s(op, "epi")) {
    snprintf(err, n, "linear with a fused epilogue: differentiate before the fuse pass");
    return false;
  }
  if (op->in[1]->type.dtype != op->in[0]->type.dtype) {
    DType wt = op->in[1]->type.dtype;
    const char *pass = ir_dtype_quantised(wt) ? "quantize" : wt == DT_CSR ? "prune" : "compute";
    if (wt == DT_CSR)
      snprintf(err, n, "linear with a csr weight (the prune pass's sparse format) has no gradient rule: training "
               "reads dense masked weights (put prune before autodiff in the same pipeline, or give prune format=dense)");
    else
      snprintf(err, n, "linear with a %s weight (the %s pass) has no gradient rule: the %s pass is for inference",
               ir_dtype_name(wt), pass, pass);
    return false;
  }
  Value *dy = dy_of(g, op);
  if (needs(g, op, 0)) ir_grad_accumulate(g, op->in[0], emit2(g->f, OP_MATMUL, dy, in_of(g, op, 1)));
  if (needs(g, op, 1)) ir_grad_accumulate(g, op->in[1], emit2(g->f, OP_LINEAR_DW, dy, in_of(g, op, 0)));
  return true;
}

GRAD_RULE(grad_attention) {
  Value *in[2] = {in_of(g, op, 0), dy_of(g, op)};
  Op *o = ir_op_new(g->f, OP_ATTENTION_DX, 2, in, 1);
  ir_set_attr_int(o, "heads", ir_attr_i(op, "heads"));
  ir_set_attr_int(o, "causal", ir_attr_i(op, "causal"));
  if (ir_attr(op, "kv_heads")) ir_set_attr(o, *ir_attr(op, "kv_heads"));
  static const char *const pattern[] = {"sparse", "tile", "window", "stride", "summary", "global"};
  for (int i = 0; i < 6; i++) /* the forward's block-sparse pattern, if any (not its cache) */
    if (ir_attr(op, pattern[i])) ir_set_attr(o, *ir_attr(op, pattern[i]));
  give(g, op, 0, ir_emit(g->f, o));
  return true;
}

/* rope rotates each pair of q and k by an angle (an orthogonal map per pair), so its gradient is
 * the inverse rotation of dy: the same op with inverse flipped (v's gradient passes through). */
GRAD_RULE(grad_rope) {
  Value *dy = dy_of(g, op);
  Op *o = ir_op_new(g->f, OP_ROPE, 1, &dy, 1);
  static const char *const keep[] = {"heads", "theta", "kv_heads"};
  for (int i = 0; i < 3; i++)
    if (ir_attr(op, keep[i])) ir_set_attr(o, *ir_attr(op, keep[i]));
  ir_set_attr_int(o, "inverse", ir_attr_i(op, "inverse") ? 0 : 1);
  give(g, op, 0, ir_emit(g->f, o));
  return true;
}

/* linformer(qkv, E, F): one linformer_dx gives all three gradients; d E and d F are each summed
 * over batch and heads by the kernel. When E and F are one value (linformer<share=kv|layer>) both
 * gradients accumulate into it (ir_grad_accumulate adds them). */
GRAD_RULE(grad_linformer) {
  Value *in[4] = {in_of(g, op, 0), in_of(g, op, 1), in_of(g, op, 2), dy_of(g, op)};
  Op *o = ir_op_new(g->f, OP_LINFORMER_DX, 4, in, 3);
  ir_set_attr_int(o, "heads", ir_attr_i(op, "heads"));
  ir_emit(g->f, o);
  for (int i = 0; i < 3; i++) give(g, op, i, o->out[i]);
  return true;
}

/* Sequence compression: seq_pool and upsample with the same stride and scale are each other's
 * adjoint (y = scale * sum of a group <-> every row of the group gets scale * dy), so each one's
 * gradient is the other op; attention_pool's is attention_pool_dx. */
static Value *seq_op(GradCtx *g, const Op *op, OpKind k) {
  Value *dy = dy_of(g, op);
  Op *o = ir_op_new(g->f, k, 1, &dy, 1);
  ir_set_attr_int(o, "stride", ir_attr_i(op, "stride"));
  ir_set_attr_float(o, "scale", ir_attr_f(op, "scale"));
  return ir_emit(g->f, o);
}
GRAD_RULE(grad_seq_pool) {
  give(g, op, 0, seq_op(g, op, OP_UPSAMPLE));
  return true;
}
GRAD_RULE(grad_upsample) {
  give(g, op, 0, seq_op(g, op, OP_SEQ_POOL));
  return true;
}
GRAD_RULE(grad_attn_pool) {
  Value *in[2] = {in_of(g, op, 0), dy_of(g, op)};
  Op *o = ir_op_new(g->f, OP_ATTENTION_POOL_DX, 2, in, 1);
  ir_set_attr_int(o, "heads", ir_attr_i(op, "heads"));
  ir_set_attr_int(o, "stride", ir_attr_i(op, "stride"));
  give(g, op, 0, ir_emit(g->f, o));
  return true;
}

/* xl_memory(x): the memory is a stop-gradient (Transformer-XL's SG): x gets rows M.. of d cat */
GRAD_RULE(grad_xl_memory) {
  Value *d = dy_of(g, op);
  Op *o = ir_op_new(g->f, OP_XL_MEMORY_DX, 1, &d, 1);
  ir_set_attr_int(o, "memory", ir_attr_i(op, "memory"));
  give(g, op, 0, ir_emit(g->f, o));
  return true;
}

/* xl_attention(qkv, rk, r_w_bias, r_r_bias): one xl_attention_dx gives all four gradients */
GRAD_RULE(grad_xl_attention) {
  Value *in[5] = {in_of(g, op, 0), in_of(g, op, 1), in_of(g, op, 2), in_of(g, op, 3), dy_of(g, op)};
  Op *o = ir_op_new(g->f, OP_XL_ATTENTION_DX, 5, in, 4);
  ir_set_attr_int(o, "heads", ir_attr_i(op, "heads"));
  ir_set_attr_int(o, "memory", ir_attr_i(op, "memory"));
  ir_emit(g->f, o);
  for (int i = 0; i < 4; i++) give(g, op, i, o->out[i]);
  return true;
}

/* moe(x, router, w1, b1, w2, b2) -> (y, aux): one moe_dx gives all six gradients from d y and d aux
 * (zeros for a result nobody differentiates): through the experts, through the gates into the
 * router, and the load-balancing loss's d P_i into the router; the discrete choice of experts
 * (and the load fractions f_i) have no gradient. */
GRAD_RULE(grad_moe) {
  Value *dy = g->adj[op->out[0]->id], *da = g->adj[op->out[1]->id];
  if (!dy) {
    Op *z = ir_op_new(g->f, OP_CONST, 0, NULL, 1);
    ir_set_attr_float(z, "value", 0.0);
    ir_set_attr_ints(z, "shape", op->out[0]->type.rank, op->out[0]->type.dim);
    dy = ir_emit(g->f, z);
  }
  if (!da) da = scalar(g->f, 0.0);
  Value *in[8];
  for (int i = 0; i < 6; i++) in[i] = in_of(g, op, i);
  in[6] = dy, in[7] = da;
  Op *o = ir_op_new(g->f, OP_MOE_DX, 8, in, 6);
  for (int i = 0; i < op->nattr; i++) ir_set_attr(o, op->attr[i]);
  ir_remove_attr(o, "arena");
  ir_emit(g->f, o);
  for (int i = 0; i < 6; i++) give(g, op, i, o->out[i]);
  return true;
}

GRAD_RULE(grad_embedding) {
  if (!needs(g, op, 1)) return true;
  Value *in[2] = {in_of(g, op, 0), dy_of(g, op)};
  Op *o = ir_op_new(g->f, OP_EMBEDDING_DW, 2, in, 1);
  ir_set_attr_int(o, "vocab", op->in[1]->type.dim[0]);
  ir_grad_accumulate(g, op->in[1], ir_emit(g->f, o));
  return true;
}

GRAD_RULE(grad_pool) {
  Value *dy = dy_of(g, op);
  Op *o = ir_op_new(g->f, OP_POOL_DX, 1, &dy, 1);
  ir_set_attr_str(o, "mode", ir_attr_s(op, "mode"));
  ir_set_attr_ints(o, "shape", op->in[0]->type.rank, op->in[0]->type.dim);
  give(g, op, 0, ir_emit(g->f, o));
  return true;
}

GRAD_RULE(grad_reshape) {
  Value *dy = dy_of(g, op);
  Op *o = ir_op_new(g->f, OP_RESHAPE, 1, &dy, 1);
  ir_set_attr_ints(o, "shape", op->in[0]->type.rank, op->in[0]->type.dim);
  give(g, op, 0, ir_emit(g->f, o));
  return true;
}

/* dropout scales the kept elements by 1/(1-p): its gradient is the same mask applied to dy, so it
 * is a dropout op with the same attributes (p and the random stream): the backend draws the same
 * mask in both (docs/backend.md, "Dropout"). */
GRAD_RULE(grad_dropout) {
  Value *dy = dy_of(g, op);
  Op *o = ir_op_new(g->f, OP_DROPOUT, 1, &dy, 1);
  for (int i = 0; i < op->nattr; i++) ir_set_attr(o, op->attr[i]);
  give(g, op, 0, ir_emit(g->f, o));
  return true;
}

/* d loss / d logits; the targets get no gradient */
GRAD_RULE(grad_xent) {
  if (!needs(g, op, 0)) return true;
  Value *in[3] = {in_of(g, op, 0), in_of(g, op, 1), dy_of(g, op)};
  ir_grad_accumulate(g, op->in[0], emit(g->f, OP_XENT_GRAD, 3, in));
  return true;
}
