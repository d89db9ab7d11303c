/* plan.c: the backend analysis shared by the C and LLVM backends: axis roles of every
 * value (which axes are the dynamic batch and time axes), the persistent state slots and the
 * scratch-size calls of the kernels the program calls, parameter offsets in the weight buffer and
 * arena size. See backend.h for the dynamic-shape model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../passes/memplan.h"
#include "backend.h"
#include "kernels.h"

typedef struct Ctx {
  BackendPlan *p;
  Diag *d;
  bool ok;
} Ctx;

static void err(Ctx *c, const Func *f, const Op *op, const char *msg) {
  diag_error(c->d, c->p->m->file, op ? op->line : 0, op ? op->col : 0, "backend: in @%s: %s%s%s", f->name,
             op ? ir_op_name(op->kind) : "", op ? ": " : "", msg);
  c->ok = false;
}

FuncInfo *backend_func(const BackendPlan *p, const Func *f) {
  for (int i = 0; i < p->m->nfunc; i++)
    if (p->m->funcs[i] == f) return &p->funcs[i];
  return NULL;
}

static ValueInfo *vi(FuncInfo *fi, const Value *v) { return &fi->vals[v->id]; }

int64_t backend_time_div(const BackendPlan *p, const FuncInfo *fi, const Value *v, int i) {
  int64_t T = p->entry->args[0]->type.dim[1], d = v->type.dim[i];
  if (fi->vals[v->id].role[i] != AX_TIME || d == T || d <= 0) return 1;
  return T / d;
}

const Value *backend_nt_value(const FuncInfo *fi, const Op *op) {
  if (op->nin && op->in[0]->type.rank >= 2 && fi->vals[op->in[0]->id].role[1] == AX_TIME) return op->in[0];
  if (op->nout && op->out[0]->type.rank >= 2 && fi->vals[op->out[0]->id].role[1] == AX_TIME) return op->out[0];
  return NULL;
}

/* Every time axis of a result is the tokens' length T or a divisor's share of it (seq_pool), so the
 * runtime extent nt / k is exact whenever nt is a multiple of k (RtModel.time_multiple). */
static void check_time_axes(Ctx *c, const Func *f, FuncInfo *fi, const Op *op) {
  int64_t T = c->p->entry->args[0]->type.dim[1];
  for (int k = 0; k < op->nout; k++) {
    const Value *v = op->out[k];
    for (int i = 0; i < v->type.rank; i++) {
      if (fi->vals[v->id].role[i] != AX_TIME) continue;
      int64_t d = v->type.dim[i];
      if (d > T || T % d != 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "a time axis of extent %lld is neither the sequence length %lld nor a divisor of it",
                 (long long)d, (long long)T);
        err(c, f, op, msg);
      } else if (T / d > c->p->time_multiple) {
        c->p->time_multiple = T / d;
      }
    }
  }
}

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
  if (op->kind != OP_CAST && op->kind != OP_CALL && op->kind != OP_PARAM) {
    /* 16-bit tensors are stored, not computed on, but where a kernel reads one itself (a W_DTYPE
     * row: a bf16 weight) and writes that dtype */
    const KLower *rows[2];
    const char *why;
    int rd = kt_select(op, rows, &why) == 1 && rows[0]->cond.when == KW_DTYPE ? rows[0]->cond.from : -1;
    DType rdt = rd >= 0 ? (DType)rows[0]->cond.to : DT_F32;
    DType odt = op->out[0]->type.dtype;
    bool half = (odt == DT_BF16 || odt == DT_F16) && !(rd >= 0 && odt == rdt);
    for (int k = 0; k < op->nin; k++)
      half |= k != rd && (op->in[k]->type.dtype == DT_BF16 || op->in[k]->type.dtype == DT_F16);
    if (half) err(c, f, op, "a 16-bit (bf16/f16) tensor: the backends compute in f32; convert with cast");
  }
  const OpLower *lw = kt_op(op->kind);
  if (lw->present) { /* the kernel table's rule (kernels.def, OPLOWER) */
    int last = op->nin ? op->in[0]->type.rank - 1 : 0;
    if (lw->checks & KC_LAST_STATIC && x->role[last] != AX_STATIC)
      err(c, f, op, "reducing or contracting over a batch/time axis is not supported");
    if (lw->checks & KC_BT0 && (op->in[0]->type.rank < 2 || x->role[0] != AX_BATCH || x->role[1] != AX_TIME))
      err(c, f, op, "needs a [batch, time, ...] operand derived from the tokens");
    if (lw->checks & KC_STATIC0)
      for (int i = 0; i < op->in[0]->type.rank; i++)
        if (x->role[i] != AX_STATIC) err(c, f, op, "an operand with batch/time axes is not supported yet");
    if (lw->checks & KC_W2 && op->in[1]->type.rank != 2)
      err(c, f, op, "batched matmul is not supported by the backends yet");
    const KLower *rows[2];
    const char *why;
    int nrow = kt_select(op, rows, &why);
    for (int r = 0; r < nrow; r++) { /* every int (I) argument fits at the compiled shapes */
      int arg;
      int64_t v;
      if (!kt_int_args_fit(op, rows[r], &arg, &v)) {
        KernelId k = arg > 0 ? rows[r]->kernel : rows[r]->scratch;
        char msg[256];
        snprintf(msg, sizeof msg, "argument %d of %s is %lld at the compiled shapes, above the limit 2147483647 (INT32_MAX) of its int parameter",
                 arg > 0 ? arg : -arg, kt_kernels[k].name, (long long)v);
        err(c, f, op, msg);
        break;
      }
    }
    switch (lw->role) {
    case KR_SAME0: *out = *x; break;
    case KR_LEAD0:
      for (int i = 0; i + 1 < rt->rank; i++) out->role[i] = x->role[i];
      break;
    case KR_STATIC: break;
    case KR_BT: out->role[0] = AX_BATCH, out->role[1] = AX_TIME; break;
    case KR_B: out->role[0] = AX_BATCH; break;
    }
    for (int k = 1; k < op->nout; k++) { /* a multi-result kernel op's further results are static */
      ValueInfo *o = vi(fi, op->out[k]);
      memset(o->role, 0, sizeof o->role);
      o->known = true;
    }
    if (lw->checks & KC_EPI && op->nin > 2) {
      ValueInfo tmp;
      if (!broadcast_roles(op, 2, fi, &tmp)) err(c, f, op, "epilogue operands disagree on batch/time axes");
      for (int i = 0; i < rt->rank; i++)
        if (tmp.role[i] != AX_STATIC && tmp.role[i] != out->role[i])
          err(c, f, op, "epilogue operand has a batch/time axis where the product has none");
    }
    return;
  }
  switch (op->kind) {
  case OP_SINUSOID: { /* a table in the program's data section, computed once per process */
    int64_t bytes;
    if (__builtin_mul_overflow(ir_type_numel(rt), (int64_t)4, &bytes) || bytes > BACKEND_MAX_TABLE_BYTES) {
      char msg[256];
      snprintf(msg, sizeof msg, "a position table of [%lld, %lld] floats is %lld bytes, above the limit of %lld bytes (256 MiB) for a compiled-in table",
               (long long)rt->dim[0], (long long)rt->dim[1], (long long)bytes, (long long)BACKEND_MAX_TABLE_BYTES);
      err(c, f, op, msg);
    }
    break;
  }
  case OP_PARAM:
  case OP_CONST:
  case OP_LOSS_SCALE: break; /* static, or a scalar */
  case OP_SUM_TO: { /* kept axes keep their roles */
    int shift = op->in[0]->type.rank - rt->rank;
    for (int i = 0; i < rt->rank; i++)
      if (rt->dim[i] == op->in[0]->type.dim[i + shift]) out->role[i] = x->role[i + shift];
    break;
  }
  case OP_CALL: {
    const Func *g = ir_find_func(c->p->m, ir_attr_s(op, "callee"));
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

/* The callee's name without autodiff's ".bwd": a call of @g.bwd recomputes @g first. */
static size_t base_len(const char *callee) {
  size_t n = strlen(callee);
  return n >= 5 && strcmp(callee + n - 4, ".bwd") == 0 ? n - 4 : n;
}

/* The state slots of f's ops, in order (called by analyse, its callees analysed). A call that
 * recomputes an earlier call of @g (a call of @g, the checkpoint pass's recompute, or of @g.bwd,
 * autodiff's backward, with that call's leading operands up to recomputes: a recomputed call's
 * results stand for the first call's) reads the state the first call read, so it gets the same
 * slots and takes none (ValueInfo.call_st, .call_shared of its first result). Earlier calls are
 * found through their first operand's canonical value: linear in f's ops. */
static int call_slots(const BackendPlan *p, const Func *f, FuncInfo *fi) {
  int nv = f->nvalues + 1, nops = 0;
  for (const Op *op = f->first; op; op = op->next) nops++;
  int *canon = malloc((size_t)nv * sizeof *canon), *head = malloc((size_t)nv * sizeof *head);
  int *next = malloc((size_t)(nops + 1) * sizeof *next);
  const Op **calls = malloc((size_t)(nops + 1) * sizeof *calls);
  if (!canon || !head || !next || !calls) die("out of memory");
  for (int i = 0; i < nv; i++) canon[i] = i, head[i] = -1;
  int st = 0, ncall = 0;
  for (const Op *op = f->first; op; op = op->next) {
    if (op->kind != OP_CALL) {
      st += kt_nstate(op);
      continue;
    }
    const char *callee = ir_attr_s(op, "callee");
    size_t n = base_len(callee);
    const Op *first = NULL;
    int key = op->nin ? canon[op->in[0]->id] : nv - 1;
    for (int k = head[key]; k >= 0 && !first; k = next[k]) {
      const Op *e = calls[k];
      const char *g = ir_attr_s(e, "callee");
      if (e->nin > op->nin || base_len(g) != n || strncmp(g, callee, n) != 0) continue;
      bool same = true;
      for (int i = 0; i < e->nin && same; i++) same = canon[e->in[i]->id] == canon[op->in[i]->id];
      if (same) first = e;
    }
    ValueInfo *r = vi(fi, op->out[0]);
    if (first) {
      r->call_st = vi(fi, first->out[0])->call_st;
      r->call_shared = true;
      for (int k = 0; k < op->nout && k < first->nout; k++) canon[op->out[k]->id] = canon[first->out[k]->id];
    } else {
      r->call_st = st;
      r->call_shared = false;
      st += backend_func(p, ir_find_func(p->m, callee))->nstate;
    }
    calls[ncall] = op, next[ncall] = head[key], head[key] = ncall++;
  }
  free(canon), free(head), free(next), free(calls);
  return st;
}

int backend_call_state(const BackendPlan *p, const Func *f, const Op *call, bool *shared) {
  const ValueInfo *r = vi(backend_func(p, f), call->out[0]);
  *shared = r->call_shared;
  return r->call_st;
}

static void analyse(Ctx *c, const Func *f) {
  FuncInfo *fi = backend_func(c->p, f);
  fi->analysed = true;
  fi->nstate = 0;
  for (const Op *op = f->first; op; op = op->next) {
    if (op->nout > 1 && op->kind != OP_CALL && !kt_op(op->kind)->present) err(c, f, op, "multi-result ops are not supported");
    analyse_op(c, f, fi, op);
    check_time_axes(c, f, fi, op);
  }
  fi->nstate = call_slots(c->p, f, fi);
  fi->frame = memplan_frame_bytes(f);
  if (fi->frame < 0) err(c, f, NULL, "the module has not been through the memplan pass");
}

/* Whether f (or a function it calls) reads a position table: an operand of an element-wise op or
 * of a linear epilogue with a static axis of extent > 1 where the result has its time axis (it is
 * indexed at the absolute position t0 + t), and whether every op keeping state keeps a ring
 * (attention's cache=, a local pattern's). Together: can decoding pass the compiled context? */
static void decode_facts(const BackendPlan *p, const Func *f, bool *table, bool *rings) {
  const FuncInfo *fi = backend_func(p, f);
  for (const Op *op = f->first; op; op = op->next) {
    if (op->kind == OP_CALL) {
      decode_facts(p, ir_find_func(p->m, ir_attr_s(op, "callee")), table, rings);
      continue;
    }
    if (kt_nstate(op) && !ir_attr(op, "cache") && op->kind != OP_XL_MEMORY) *rings = false; /* segment memory: bounded */
    bool ew = backend_op_expr(p->m, op) != NULL;
    if (!ew && op->kind != OP_LINEAR) continue;
    const Value *r = op->out[0];
    for (int k = ew ? 0 : 2; k < op->nin; k++) {
      const Value *v = op->in[k];
      int shift = r->type.rank - v->type.rank;
      for (int j = 0; j < v->type.rank; j++)
        if (v->type.dim[j] != 1 && fi->vals[v->id].role[j] == AX_STATIC && fi->vals[r->id].role[j + shift] == AX_TIME)
          *table = true;
    }
  }
}

/* The state slots of f's op instances, in call order (the order the generated code numbers them). */
static void collect_state(BackendPlan *p, const Func *f, int *n) {
  for (const Op *op = f->first; op; op = op->next) {
    if (op->kind == OP_CALL) {
      collect_state(p, ir_find_func(p->m, ir_attr_s(op, "callee")), n);
      continue;
    }
    for (int k = 0; k < kt_nstate(op); k++) p->state_rows[(*n)++] = kt_state_floats(op);
    if (op->kind == OP_XL_MEMORY && ir_attr_i(op, "memory") > p->memory) p->memory = ir_attr_i(op, "memory");
  }
}

/* The scratch-size calls of the kernels f and its callees call, each distinct call once. */
static void collect_scratch(BackendPlan *p, const Func *f, bool train) {
  for (const Op *op = f->first; op; op = op->next) {
    if (op->kind == OP_CALL) {
      collect_scratch(p, ir_find_func(p->m, ir_attr_s(op, "callee")), train);
      continue;
    }
    const KLower *rows[2];
    const char *why;
    int n = kt_select(op, rows, &why);
    for (int r = 0; r < n; r++) {
      if (rows[r]->scratch == K_NONE) continue;
      BackendScratch s = {rows[r]->scratch, 0, {0}, train};
      for (const KArg *a = rows[r]->scratch_args; a->kind != KA_END; a++) {
        IR_ASSERT(s.nargs < BACKEND_MAX_SCRATCH_ARGS);
        s.arg[s.nargs++] = kt_static_arg(op, a);
      }
      IR_ASSERT(s.nargs == kt_kernels[s.kernel].nparam);
      bool seen = false;
      for (int i = 0; i < p->nscratch && !seen; i++)
        seen = p->scratch[i].kernel == s.kernel && p->scratch[i].nargs == s.nargs &&
               memcmp(p->scratch[i].arg, s.arg, sizeof s.arg) == 0;
      if (seen) continue;
      BackendScratch *grown = realloc(p->scratch, (size_t)(p->nscratch + 1) * sizeof *grown);
      if (!grown) die("out of memory");
      p->scratch = grown;
      p->scratch[p->nscratch++] = s;
    }
  }
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
    p->funcs[i].ret = malloc(sizeof(int) * ((size_t)m->funcs[i]->nvalues + 1));
    if (!p->funcs[i].vals || !p->funcs[i].ret) die("out of memory");
    const Func *f = m->funcs[i];
    for (int k = 0; k <= f->nvalues; k++) p->funcs[i].ret[k] = -1;
    for (int k = f->nret - 1; k >= 0; k--) p->funcs[i].ret[f->ret[k]->id] = k;
  }
  p->entry = m->entry ? ir_find_func(m, m->entry) : NULL;
  if (!p->entry) {
    diag_error(d, m->file, 0, 0, "backend: the module has no entry function");
    return false;
  }
  const Func *ent = p->entry; /* the program's forward: the runtime calls it with token ids */
  if (ent->narg != 1 || !backend_is_int(ent->args[0]) || ent->args[0]->type.rank != 2 || ent->nret != 1 ||
      backend_is_int(ent->ret[0])) {
    diag_error(d, m->file, ent->line, ent->col,
               "backend: the entry @%s must take token ids i32[B,T] and return one f32 tensor", ent->name);
    return false;
  }
  /* Weights: one byte buffer, each parameter 64-byte aligned in its storage dtype (a shared weight
   * is one parameter). */
  int64_t off = 0;
  for (int i = 0; i < m->nparam; i++) {
    const Param *q = m->params[i];
    DType dt = q->type.dtype;
    if (!kt_rt_dtype_name(dt) || q->fmt != PF_DENSE) {
      diag_error(
          d, m->file, q->line, q->col,
          "backend: parameter @%s: only dense f32, bf16, f16, quantised (i8_row, q8_0, q4_0) and csr parameters are "
          "supported yet (it is %s %s)",
          q->name, ir_param_format_name(q->fmt), ir_dtype_name(dt));
      c.ok = false;
    }
    p->param_offset[i] = off;
    off += (ir_param_storage_bytes(q) + 63) / 64 * 64;
  }
  p->weight_bytes = off;
  /* Entry arguments: rank >= 2 tensors are [batch, time, ...]; rank 1 [batch]. */
  FuncInfo *ei = backend_func(p, p->entry);
  for (int i = 0; i < p->entry->narg; i++) {
    ValueInfo *a = vi(ei, p->entry->args[i]);
    a->known = true;
    if (p->entry->args[i]->type.rank >= 1) a->role[0] = AX_BATCH;
    if (p->entry->args[i]->type.rank >= 2) a->role[1] = AX_TIME;
  }
  p->time_multiple = 1;
  analyse(&c, p->entry);
  for (int i = 0; i < p->entry->nret; i++) {
    const Value *r = p->entry->ret[i];
    if (r->type.rank >= 2 && backend_time_div(p, ei, r, 1) != 1)
      err(&c, p->entry, NULL, "the result's time axis is shortened (seq_pool): restore the length (upsample) or pool "
                              "it away (pool) before the output");
  }
  p->nstate = ei->nstate;
  p->state_rows = calloc((size_t)(p->nstate ? p->nstate : 1), sizeof *p->state_rows);
  if (!p->state_rows) die("out of memory");
  int ns = 0;
  collect_state(p, p->entry, &ns);
  IR_ASSERT(ns == p->nstate);
  collect_scratch(p, p->entry, false);
  bool table = false, rings = true;
  decode_facts(p, p->entry, &table, &rings);
  p->decode_unbounded = p->nstate > 0 && rings && !table;
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
    /* segment memory: the trainer passes the forward's slots, so training may use no others (every
     * recomputation of a block shares its forward call's, above) */
    if (p->memory && ti->nstate > p->nstate)
      err(&c, p->train, NULL, "segment memory: the training function keeps state the forward does not (an op "
                              "keeping state outside a recomputed block call)");
    p->train_arena_bytes = memplan_arena_bytes(m, p->train);
    collect_scratch(p, p->train, true);
    for (int i = 0; i < m->nparam; i++) p->ngrads += m->params[i]->trainable;
    int ntrain = p->ngrads;
    p->loss_parts = 1; /* a distilling program returns its KL and CE parts after the gradients */
    if (p->train->nret >= ntrain + 3 && m->train.distill_temperature > 0) p->loss_parts = 3;
    for (int k = ntrain + 1; k < ntrain + 3 && p->loss_parts == 3; k++)
      if (p->train->ret[k]->type.rank != 0 || p->train->ret[k]->type.dtype != DT_F32) p->loss_parts = 1;
    int first = ntrain + p->loss_parts; /* then the moe layers' load reports */
    p->nmoe = p->train->nret > first ? p->train->nret - first : 0;
    p->moe_experts = calloc((size_t)p->nmoe + 1, sizeof *p->moe_experts);
    if (!p->moe_experts) die("out of memory");
    for (int k = 0; k < p->nmoe; k++) {
      const Type *t = &p->train->ret[first + k]->type;
      if (t->dtype != DT_F32 || t->rank != 1 || t->dim[0] < 3) {
        diag_error(d, m->file, p->train->line, p->train->col,
                   "@%s: result %d (after the loss and the gradients) is not a moe load report f32[E+2]", p->train->name,
                   first + k);
        c.ok = false;
        break;
      }
      p->moe_experts[k] = (int32_t)(t->dim[0] - 2);
      p->moe_load_floats += t->dim[0];
    }
  }
  return c.ok;
}

const Expr *backend_op_expr(const Module *m, const Op *op) {
  if (op->kind == OP_EW) {
    char err[160];
    const Expr *ex = ir_expr_parse((Module *)m, ir_attr_s(op, "expr"), op->nin, err, sizeof err);
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
    for (int i = 0; i < p->m->nfunc; i++) {
      free(p->funcs[i].vals);
      free(p->funcs[i].ret);
    }
  free(p->funcs);
  free(p->moe_experts);
  free(p->param_offset);
  free(p->state_rows);
  free(p->scratch);
  memset(p, 0, sizeof *p);
}
