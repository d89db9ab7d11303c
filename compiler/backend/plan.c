/* plan.c: the backend analysis shared by the C and LLVM backends: axis roles of every
 * value (which axes are the dynamic batch and time axes), KV-cache slot counts, parameter offsets
 * in the weight buffer and arena size. See backend.h for the dynamic-shape model.
 */
#include <stdlib.h>
#include <string.h>

#include "../../passes/memplan.h"
#include "backend.h"

typedef struct Ctx {
  BackendPlan *p;
  Diag *d;
  bool ok;
} Ctx;

static void err(Ctx *c, const Func *f, const Op *op, const char *msg) {
  diag_error(c->d, NULL, op ? op->line : 0, op ? op->col : 0, "backend: in @%s: %s%s%s", f->name,
             op ? ir_op_name(op->kind) : "", op ? ": " : "", msg);
  c->ok = false;
}

FuncInfo *backend_func(const BackendPlan *p, const Func *f) {
  for (int i = 0; i < p->m->nfunc; i++)
    if (p->m->funcs[i] == f) return &p->funcs[i];
  return NULL;
}

static ValueInfo *vi(FuncInfo *fi, const Value *v) { return &fi->vals[v->id]; }

/* Roles of a broadcasting result from its operands (operand axes aligned to the right). */
static bool broadcast_roles(const Op *op, int first, FuncInfo *fi, ValueInfo *out) {
  const Type *rt = &op->out[0]->type;
  for (int i = 0; i < rt->rank; i++) out->role[i] = AX_STATIC;
  for (int k = first; k < op->nin; k++) {
    const Value *v = op->in[k];
    const ValueInfo *in = vi(fi, v);
    int shift = rt->rank - v->type.rank;
    for (int j = 0; j < v->type.rank; j++) {
      AxisRole r = in->role[j];
      /* a dynamic axis keeps its role even at compiled extent 1 (batch 1) */
      if (r == AX_STATIC) continue;
      if (out->role[j + shift] != AX_STATIC && out->role[j + shift] != r) return false;
      out->role[j + shift] = r;
    }
  }
  return true;
}

static void analyse(Ctx *c, const Func *f);

static void analyse_op(Ctx *c, const Func *f, FuncInfo *fi, const Op *op) {
  ValueInfo *out = vi(fi, op->out[0]);
  const Type *rt = &op->out[0]->type;
  memset(out->role, 0, sizeof out->role);
  out->known = true;
  const ValueInfo *x = op->nin ? vi(fi, op->in[0]) : NULL;
  if (op->kind != OP_CAST && op->kind != OP_CALL) { /* 16-bit tensors are stored, not computed on */
    bool half = op->out[0]->type.dtype == DT_BF16 || op->out[0]->type.dtype == DT_F16;
    for (int k = 0; k < op->nin; k++) half |= op->in[k]->type.dtype == DT_BF16 || op->in[k]->type.dtype == DT_F16;
    if (half) err(c, f, op, "a 16-bit (bf16/f16) tensor: the backends compute in f32; convert with cast");
  }
  switch (op->kind) {
  case OP_PARAM:
  case OP_CONST:
  case OP_SINUSOID: break;
  case OP_EMBEDDING:
    for (int i = 0; i < op->in[0]->type.rank; i++) out->role[i] = x->role[i];
    break;
  case OP_LINEAR: {
    ValueInfo tmp;
    for (int i = 0; i + 1 < rt->rank; i++) out->role[i] = x->role[i];
    if (op->nin > 2) {
      if (!broadcast_roles(op, 2, fi, &tmp)) err(c, f, op, "epilogue operands disagree on batch/time axes");
      for (int i = 0; i < rt->rank; i++)
        if (tmp.role[i] != AX_STATIC && tmp.role[i] != out->role[i])
          err(c, f, op, "epilogue operand has a batch/time axis where the product has none");
    }
    if (x->role[rt->rank - 1] != AX_STATIC) err(c, f, op, "contraction over a batch/time axis is not supported");
    break;
  }
  case OP_ATTENTION:
    if (x->role[0] != AX_BATCH || x->role[1] != AX_TIME)
      err(c, f, op, "attention needs a [batch, time, 3C] operand derived from the tokens");
    out->role[0] = AX_BATCH;
    out->role[1] = AX_TIME;
    break;
  case OP_POOL:
    if (x->role[0] != AX_BATCH || x->role[1] != AX_TIME)
      err(c, f, op, "pool needs a [batch, time, C] operand derived from the tokens");
    out->role[0] = AX_BATCH;
    break;
  case OP_LAYERNORM:
  case OP_RMSNORM:
  case OP_SOFTMAX:
  case OP_DROPOUT:
    *out = *x;
    if (x->role[rt->rank - 1] != AX_STATIC) err(c, f, op, "normalising over a batch/time axis is not supported");
    break;
  case OP_RESHAPE:
    for (int i = 0; i < op->in[0]->type.rank; i++)
      if (x->role[i] != AX_STATIC) err(c, f, op, "reshaping a tensor with batch/time axes is not supported yet");
    break;
  case OP_MATMUL: /* dy[..,N] @ W[N,K]: the input gradient of a linear layer */
    if (op->in[1]->type.rank != 2) err(c, f, op, "batched matmul is not supported by the backends yet");
    for (int i = 0; i + 1 < rt->rank; i++) out->role[i] = x->role[i];
    break;
  case OP_CROSS_ENTROPY:
  case OP_LINEAR_DW:
  case OP_NORM_DG:
  case OP_EMBEDDING_DW: break; /* reductions over the rows: static */
  case OP_XENT_GRAD:
  case OP_NORM_DX:
  case OP_ATTENTION_DX:
  case OP_CAST: *out = *x; break;
  case OP_LOSS_SCALE: break; /* a scalar */
  case OP_POOL_DX:
    out->role[0] = AX_BATCH;
    out->role[1] = AX_TIME;
    break;
  case OP_SUM_TO: { /* kept axes keep their roles */
    int shift = op->in[0]->type.rank - rt->rank;
    for (int i = 0; i < rt->rank; i++)
      if (rt->dim[i] == op->in[0]->type.dim[i + shift]) out->role[i] = x->role[i + shift];
    break;
  }
  case OP_CALL: {
    const Func *g = ir_find_func(c->p->m, ir_attr_str(op, "callee"));
    FuncInfo *gi = backend_func(c->p, g);
    bool first = !gi->analysed;
    for (int i = 0; i < g->narg; i++) {
      ValueInfo *a = vi(gi, g->args[i]);
      if (first) {
        *a = *vi(fi, op->in[i]);
      } else if (memcmp(a->role, vi(fi, op->in[i])->role, sizeof a->role) != 0) {
        err(c, f, op, "a function is called with different batch/time axes at two call sites");
      }
    }
    if (first) analyse(c, g);
    for (int i = 0; i < op->nout; i++) *vi(fi, op->out[i]) = *vi(gi, g->ret[i]);
    break;
  }
  default:
    if (ir_op_info[op->kind].flags & OPF_EW || op->kind == OP_EW) {
      if (!broadcast_roles(op, 0, fi, out)) err(c, f, op, "operands disagree on batch/time axes");
    } else {
      err(c, f, op, "op not supported by the backends");
    }
  }
}

static void analyse(Ctx *c, const Func *f) {
  FuncInfo *fi = backend_func(c->p, f);
  fi->analysed = true;
  fi->nattn = 0;
  fi->kv_slots = 0;
  for (const Op *op = f->first; op; op = op->next) {
    if (op->nout > 1 && op->kind != OP_CALL) err(c, f, op, "multi-result ops are not supported");
    analyse_op(c, f, fi, op);
    if (op->kind == OP_ATTENTION) {
      fi->nattn++;
      fi->kv_slots++;
      const Type *t = &op->in[0]->type;
      if (t->dim[1] > c->p->max_attn_t) c->p->max_attn_t = t->dim[1];
      if (t->dim[2] / 3 > c->p->max_attn_c) c->p->max_attn_c = t->dim[2] / 3;
      if (ir_attr_int(op, "heads", 1) > c->p->max_attn_heads) c->p->max_attn_heads = ir_attr_int(op, "heads", 1);
    } else if (op->kind == OP_CALL) {
      fi->kv_slots += backend_func(c->p, ir_find_func(c->p->m, ir_attr_str(op, "callee")))->kv_slots;
    }
  }
  fi->frame = memplan_frame_bytes(f);
  if (fi->frame < 0) err(c, f, NULL, "the module has not been through the memplan pass");
}

bool backend_plan(BackendPlan *p, const Module *m, Diag *d) {
  memset(p, 0, sizeof *p);
  p->m = m;
  Ctx c = {p, d, true};
  p->funcs = calloc((size_t)(m->nfunc ? m->nfunc : 1), sizeof *p->funcs);
  p->param_offset = calloc((size_t)(m->nparam ? m->nparam : 1), sizeof *p->param_offset);
  if (!p->funcs || !p->param_offset) die("out of memory");
  for (int i = 0; i < m->nfunc; i++) {
    p->funcs[i].f = m->funcs[i];
    p->funcs[i].vals = calloc((size_t)m->funcs[i]->nvalues + 1, sizeof(ValueInfo));
    if (!p->funcs[i].vals) die("out of memory");
  }
  p->entry = m->entry ? ir_find_func(m, m->entry) : NULL;
  if (!p->entry) {
    diag_error(d, NULL, 0, 0, "backend: the module has no entry function");
    return false;
  }
  /* Weights: one float buffer, each parameter 64-byte aligned (a shared weight is one parameter). */
  int64_t off = 0;
  for (int i = 0; i < m->nparam; i++) {
    const Param *q = m->params[i];
    if (q->type.dtype != DT_F32 || q->fmt != PF_DENSE) {
      diag_error(d, NULL, q->line, q->col, "backend: parameter @%s: only dense f32 parameters are supported yet",
                 q->name);
      c.ok = false;
    }
    p->param_offset[i] = off;
    off += (ir_type_numel(&q->type) + 15) / 16 * 16;
  }
  p->weight_floats = off;
  /* Entry arguments: rank >= 2 tensors are [batch, time, ...]; rank 1 [batch]. */
  FuncInfo *ei = backend_func(p, p->entry);
  for (int i = 0; i < p->entry->narg; i++) {
    ValueInfo *a = vi(ei, p->entry->args[i]);
    a->known = true;
    if (p->entry->args[i]->type.rank >= 1) a->role[0] = AX_BATCH;
    if (p->entry->args[i]->type.rank >= 2) a->role[1] = AX_TIME;
  }
  analyse(&c, p->entry);
  p->kv_slots = ei->kv_slots;
  p->arena_bytes = memplan_arena_bytes(m, p->entry);
  const Attr *tr = ir_module_attr(m, "train");
  p->train = tr && tr->kind == ATTR_SYM ? ir_find_func(m, tr->s) : NULL;
  if (p->train) {
    FuncInfo *ti = backend_func(p, p->train);
    for (int i = 0; i < p->train->narg; i++) {
      ValueInfo *a = vi(ti, p->train->args[i]);
      a->known = true;
      if (p->train->args[i]->type.rank >= 1) a->role[0] = AX_BATCH;
      if (p->train->args[i]->type.rank >= 2) a->role[1] = AX_TIME;
    }
    analyse(&c, p->train);
    p->train_arena_bytes = memplan_arena_bytes(m, p->train);
  }
  return c.ok;
}

const Expr *backend_op_expr(const Module *m, const Op *op) {
  if (op->kind == OP_EW) {
    char err[160];
    const Expr *ex = ir_expr_parse((Module *)m, ir_attr_str(op, "expr"), op->nin, err, sizeof err);
    if (!ex) die("bad expression: %s", err);
    return ex;
  }
  if (!(ir_op_info[op->kind].flags & OPF_EW)) return NULL;
  Expr *x = ir_alloc((Module *)m, sizeof *x);
  x->kind = EX_OP;
  x->op = op->kind;
  x->nkid = op->nin;
  for (int i = 0; i < op->nin; i++) {
    x->kid[i] = ir_alloc((Module *)m, sizeof *x);
    x->kid[i]->kind = EX_ARG;
    x->kid[i]->arg = i;
  }
  return x;
}

void backend_plan_free(BackendPlan *p) {
  if (p->funcs)
    for (int i = 0; i < p->m->nfunc; i++) free(p->funcs[i].vals);
  free(p->funcs);
  free(p->param_offset);
  memset(p, 0, sizeof *p);
}
