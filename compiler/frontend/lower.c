/* lower.c: a checked Spec -> IR Module.
 *
 * The entry function @forward(%tokens: i32[B,T]) returns the logits f32[B,T,V] (or f32[B,classes]
 * for a classifier). Parameters are created in spec order with the names fe_layer_params() gives,
 * so checking and lowering agree on names and order. A `repeat` becomes ONE function @<name>(%x,
 * <the block's parameters by relative name>) -> f32[B,T,C], called once per copy with that copy's
 * parameters (emitted as `param` ops in @forward). Every op goes through ir_emit, so the IR's
 * shape rules type (and check) everything we build. docs/spec.md lists the ops each layer makes.
 * The spec's train: section becomes the module's TrainConfig (Module.train), so the facts it
 * states reach the pass manager (precision) and the backends (the program's training defaults).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"

typedef struct Lower {
  const Spec *s;
  Module *m;
  Func *f;          /* function being built */
  bool block;       /* building a repeat's function: parameters are its arguments */
  int cursor;       /* next parameter argument (after %x) when block */
  int ndropout;     /* dropout ops emitted in this function: each gets its own random stream */
  Value *tokens;    /* %tokens of @forward */
  int64_t pool;     /* a pool layer's stride, pending for the residual after it (0: none) */
  Value *unpooled;  /* the stream just before the first pool: upsample adds it back */
  Value *aux;       /* the sum of this function's auxiliary losses so far (moe), or NULL */
  Value **load;     /* the load reports (moe's result 2) of this function so far, in order */
  int nload, capload;
  Diag *d;
  bool ok;
} Lower;

static Value *lw_op(Func *f, OpKind k, int nin, Value *const *in) { return ir_emit(f, ir_op_new(f, k, nin, in, 1)); }
static Value *lw_op1(Func *f, OpKind k, Value *a) { return lw_op(f, k, 1, &a); }
static Value *lw_op2(Func *f, OpKind k, Value *a, Value *b) {
  Value *in[2] = {a, b};
  return lw_op(f, k, 2, in);
}

static Type lw_param_type(const SpecParam *p) { return ir_type(DT_F32, p->rank, p->dim); }

/* Adds a module parameter (top-level layers and each repeat copy). */
static void lw_add_param(Lower *lw, const SpecParam *p) {
  Param *q = ir_add_param(lw->m, p->name, lw_param_type(p), p->init, p->init_arg);
  if (!q) {
    diag_error(lw->d, lw->s->file, 0, 0, "duplicate parameter name '%s'", p->name);
    lw->ok = false;
    return;
  }
  q->decay = p->decay;
  q->trainable = true;
}

/* `param {p=@name}` in @forward. */
static Value *lw_param_op(Lower *lw, const char *name) {
  Op *op = ir_op_new(lw->f, OP_PARAM, 0, NULL, 1);
  ir_set_attr_sym(op, "p", name);
  return ir_emit(lw->f, op);
}

/* The value of a layer's parameter in the function being built. */
static Value *lw_param(Lower *lw, const SpecParam *p) {
  if (lw->block) {
    Value *v = lw->f->args[1 + lw->cursor++];
    IR_ASSERT(v->name && strcmp(v->name, p->name) == 0);
    return v;
  }
  lw_add_param(lw, p);
  return lw_param_op(lw, p->name);
}

static Value *lw_bias(Lower *lw, Value *x, bool has, Value *const *pv, int *k) {
  return has ? lw_op2(lw->f, OP_ADD, x, pv[(*k)++]) : x;
}

static Value *lw_list(Lower *lw, const SpecLayer *ls, int n, Value *x, int depth);

/* seq_pool / upsample {stride, scale} of x */
static Value *lw_seq(Func *f, OpKind k, Value *x, int64_t stride, double scale) {
  Op *op = ir_op_new(f, k, 1, &x, 1);
  ir_set_attr_int(op, "stride", stride);
  ir_set_attr_float(op, "scale", scale);
  return ir_emit(f, op);
}

/* Adds an auxiliary loss to the function's sum (in @forward nothing reads it: autodiff finds each
 * moe op's and block call's own). */
static void lw_aux(Lower *lw, Value *a) {
  if (!lw->block) return;
  lw->aux = lw->aux ? lw_op2(lw->f, OP_ADD, lw->aux, a) : a;
}
/* ... and a moe op's load report to the function's list (the block returns them after its loss). */
static void lw_load(Lower *lw, Value *v) {
  if (!lw->block) return;
  if (lw->nload == lw->capload) {
    lw->capload = lw->capload * 2 + 4;
    lw->load = realloc(lw->load, sizeof *lw->load * (size_t)lw->capload);
    if (!lw->load) die("out of memory");
  }
  lw->load[lw->nload++] = v;
}

/* Collects the parameters of a layer list (nested residuals included) in lowering order. */
static void lw_collect(const Spec *s, const SpecLayer *ls, int n, const char *prefix, SpecParam **arr, int *np,
                       int *cap, int depth) {
  for (int i = 0; i < n && depth <= FE_MAX_DEPTH; i++) {
    if (ls[i].nbody) lw_collect(s, ls[i].body, ls[i].nbody, prefix, arr, np, cap, depth + 1);
    if (*np + FE_LAYER_MAX_PARAMS > *cap) {
      *cap = *cap * 2 + FE_LAYER_MAX_PARAMS;
      *arr = realloc(*arr, (size_t)*cap * sizeof **arr);
      if (!*arr) die("out of memory");
    }
    *np += fe_layer_params(s, &ls[i], prefix, *arr + *np);
  }
}

/* A repeat: the block function once, then each copy's parameters and a call. */
static Value *lw_repeat(Lower *lw, const SpecLayer *l, Value *x) {
  const Spec *s = lw->s;
  Type xt = x->type; /* [B,T,C], T shortened by the pools before it */
  SpecParam *ps = NULL;
  int np = 0, cap = 0;
  lw_collect(s, l->body, l->nbody, "", &ps, &np, &cap, 0);

  Func *bf = ir_add_func(lw->m, l->name);
  if (!bf) {
    diag_error(lw->d, s->file, l->line, l->col, "a function named '%s' already exists", l->name);
    lw->ok = false;
    free(ps);
    return x;
  }
  Value *bx = ir_add_arg(bf, "x", xt);
  for (int i = 0; i < np; i++) ir_add_arg(bf, ps[i].name, lw_param_type(&ps[i]));
  Lower inner = *lw;
  inner.f = bf;
  inner.block = true;
  inner.cursor = 0;
  inner.aux = NULL;
  inner.load = NULL, inner.nload = inner.capload = 0;
  Value *y = lw_list(&inner, l->body, l->nbody, bx, 1);
  /* a block with moe layers also returns the sum of their auxiliary losses (autodiff adds it to the
   * loss) and each one's load report (autodiff returns them from @train; docs/ir.md, "moe") */
  int nret = inner.aux ? 2 + inner.nload : 1;
  Value **rets = malloc(sizeof *rets * (size_t)nret);
  if (!rets) die("out of memory");
  rets[0] = y;
  if (inner.aux) rets[1] = inner.aux;
  for (int i = 0; inner.aux && i < inner.nload; i++) rets[2 + i] = inner.load[i];
  ir_set_return(bf, nret, rets);
  free(rets);
  free(inner.load);
  lw->ok = inner.ok;

  Value **in = malloc((size_t)(np + 1) * sizeof *in);
  if (!in) die("out of memory");
  for (int64_t r = 0; r < l->count; r++) {
    char pre[FE_NAME_MAX];
    snprintf(pre, sizeof pre, "%s.%lld.", l->name, (long long)r);
    int k = 0;
    lw_collect(s, l->body, l->nbody, pre, &ps, &k, &cap, 0);
    in[0] = x;
    for (int i = 0; i < k; i++) {
      lw_add_param(lw, &ps[i]);
      in[1 + i] = lw_param_op(lw, ps[i].name);
    }
    Op *call = ir_op_new(lw->f, OP_CALL, k + 1, in, nret);
    ir_set_attr_sym(call, "callee", l->name);
    ir_set_attr_int(call, "stream", r); /* the layer's random stream (dropout masks) */
    x = ir_emit(lw->f, call);
    if (nret >= 2) lw_aux(lw, call->out[1]);
    for (int i = 2; i < nret; i++) lw_load(lw, call->out[i]);
  }
  free(in);
  free(ps);
  return x;
}

/* attention with Transformer-XL segment memory (docs/spec.md): [memory; x] through c_attn, the
 * relative table of distances 0..M+T-1 projected by r_net, xl_attention, c_proj. pv holds the
 * layer's parameters in fe_layer_params' order. */
static Value *lw_xl_attention(Lower *lw, const SpecLayer *l, Value *x, Value **pv) {
  Func *f = lw->f;
  int k = 0;
  int64_t M = l->memory, C = lw->s->model.dim;
  Op *mo = ir_op_new(f, OP_XL_MEMORY, 1, &x, 1);
  ir_set_attr_int(mo, "memory", M);
  Value *cat = ir_emit(f, mo);
  Value *qkv = lw_bias(lw, lw_op2(f, OP_LINEAR, cat, pv[k++]), l->bias, pv, &k);
  Op *so = ir_op_new(f, OP_SINUSOID, 0, NULL, 1);
  int64_t shape[2] = {cat->type.dim[1], C};
  ir_set_attr_ints(so, "shape", 2, shape);
  ir_set_attr_str(so, "layout", "halves");
  Value *rk = lw_op2(f, OP_LINEAR, ir_emit(f, so), pv[k++]);
  Value *in[4] = {qkv, rk, pv[k], pv[k + 1]};
  k += 2;
  Op *op = ir_op_new(f, OP_XL_ATTENTION, 4, in, 1);
  ir_set_attr_int(op, "heads", l->heads);
  ir_set_attr_int(op, "memory", M);
  op->line = l->line, op->col = l->col;
  Value *y = lw_op2(f, OP_LINEAR, ir_emit(f, op), pv[k++]);
  return lw_bias(lw, y, l->bias, pv, &k);
}

static Value *lw_layer(Lower *lw, const SpecLayer *l, Value *x, int depth) {
  const Spec *s = lw->s;
  Func *f = lw->f;
  SpecParam ps[FE_LAYER_MAX_PARAMS];
  Value *pv[FE_LAYER_MAX_PARAMS];
  int np = l->kind == SPEC_L_REPEAT ? 0 : fe_layer_params(s, l, "", ps);
  if (np < 0 || np > FE_LAYER_MAX_PARAMS) die("fe_layer_params returned %d", np);
  for (int i = 0; i < np; i++) pv[i] = lw_param(lw, &ps[i]);
  int k = 0;
  switch (l->kind) {
  case SPEC_L_EMBEDDING: {
    Value *e = lw_op2(f, OP_EMBEDDING, lw->tokens, pv[0]);
    if (!l->edim) return e;
    k = 2; /* factorised: [B,T,E] -> [B,T,dim] through emb_proj */
    return lw_bias(lw, lw_op2(f, OP_LINEAR, e, pv[1]), true, pv, &k);
  }
  case SPEC_L_POSITIONS: {
    Value *pos;
    if (l->pos == SPEC_POS_ROPE) return x; /* every attention rotates its q and k (below) */
    if (l->pos == SPEC_POS_LEARNED) {
      pos = pv[0];
    } else {
      Op *op = ir_op_new(f, OP_SINUSOID, 0, NULL, 1);
      int64_t shape[2] = {s->model.context, s->model.dim};
      ir_set_attr_ints(op, "shape", 2, shape);
      pos = ir_emit(f, op);
    }
    return lw_op2(f, OP_ADD, x, pos);
  }
  case SPEC_L_LAYERNORM:
  case SPEC_L_RMSNORM: {
    Value *in[3] = {x, pv[0], np > 1 ? pv[1] : NULL};
    Op *op = ir_op_new(f, l->kind == SPEC_L_LAYERNORM ? OP_LAYERNORM : OP_RMSNORM, np + 1, in, 1);
    ir_set_attr_float(op, "eps", l->eps);
    return ir_emit(f, op);
  }
  case SPEC_L_ATTENTION: {
    if (l->memory) return lw_xl_attention(lw, l, x, pv);
    Value *qkv = lw_op2(f, OP_LINEAR, x, pv[k++]);
    qkv = lw_bias(lw, qkv, l->bias, pv, &k);
    if (s->rope_theta > 0) {
      Op *r = ir_op_new(f, OP_ROPE, 1, &qkv, 1);
      ir_set_attr_int(r, "heads", l->heads);
      if (l->kv_heads != l->heads) ir_set_attr_int(r, "kv_heads", l->kv_heads);
      ir_set_attr_float(r, "theta", s->rope_theta);
      qkv = ir_emit(f, r);
    }
    if (l->stride > 1) { /* the first attention after a pool: pooled queries, full keys and values */
      Op *op = ir_op_new(f, OP_ATTENTION_POOL, 1, &qkv, 1);
      ir_set_attr_int(op, "heads", l->heads);
      ir_set_attr_int(op, "stride", l->stride);
      op->line = l->line, op->col = l->col;
      Value *y = lw_op2(f, OP_LINEAR, ir_emit(f, op), pv[k++]);
      return lw_bias(lw, y, l->bias, pv, &k);
    }
    Op *op = ir_op_new(f, OP_ATTENTION, 1, &qkv, 1);
    ir_set_attr_int(op, "heads", l->heads);
    if (l->kv_heads != l->heads) ir_set_attr_int(op, "kv_heads", l->kv_heads);
    ir_set_attr_int(op, "causal", l->causal ? 1 : 0);
    char why[200];
    static const char *const pattern[] = {"", "local", "strided", "fixed"};
    if (l->sparse && !pass_sparse_set(op, pattern[l->sparse], l->sp_size, l->sp_summary, l->sp_global, l->sp_tile, why,
                                      sizeof why))
      diag_error(lw->d, lw->s->file, l->line, l->col, "attention: %s", why); /* the parser checked the same rules */
    op->line = l->line, op->col = l->col; /* passes that refuse an attention (linformer) point at its layer */
    Value *y = ir_emit(f, op);
    y = lw_op2(f, OP_LINEAR, y, pv[k++]);
    return lw_bias(lw, y, l->bias, pv, &k);
  }
  case SPEC_L_MLP: {
    Value *h = lw_op2(f, OP_LINEAR, x, pv[k++]);
    h = lw_bias(lw, h, l->bias, pv, &k);
    switch (l->activation) {
    case SPEC_ACT_GELU: h = lw_op1(f, OP_GELU, h); break;
    case SPEC_ACT_GELU_TANH: h = lw_op1(f, OP_GELU_TANH, h); break;
    case SPEC_ACT_RELU: h = lw_op1(f, OP_RELU, h); break;
    case SPEC_ACT_SILU: h = lw_op1(f, OP_SILU, h); break; /* moe's; the spec's mlp does not offer it */
    case SPEC_ACT_SWIGLU: {
      Value *g = lw_op2(f, OP_LINEAR, x, pv[k++]);
      g = lw_bias(lw, g, l->bias, pv, &k);
      h = lw_op2(f, OP_MUL, lw_op1(f, OP_SILU, h), g);
      break;
    }
    }
    h = lw_op2(f, OP_LINEAR, h, pv[k++]);
    return lw_bias(lw, h, l->bias, pv, &k);
  }
  case SPEC_L_MOE: {
    static const char *const act[] = {[SPEC_ACT_GELU] = "gelu", [SPEC_ACT_GELU_TANH] = "gelu_tanh",
                                      [SPEC_ACT_RELU] = "relu", [SPEC_ACT_SILU] = "silu"};
    Value *in[6] = {x, pv[0], pv[1], pv[2], pv[3], pv[4]};
    Op *op = ir_op_new(f, OP_MOE, 6, in, 3);
    ir_set_attr_int(op, "top_k", l->top_k);
    ir_set_attr_float(op, "capacity_factor", l->capacity_factor);
    ir_set_attr_float(op, "aux", l->aux_loss);
    ir_set_attr_str(op, "act", act[l->activation]);
    op->line = l->line, op->col = l->col;
    Value *y = ir_emit(f, op);
    lw_aux(lw, op->out[1]);
    lw_load(lw, op->out[2]);
    return y;
  }
  case SPEC_L_RESIDUAL: {
    int64_t stride = lw->pool; /* after a pool: the body pools its attention's queries, the residual x */
    lw->pool = 0;
    Value *y = lw_list(lw, l->body, l->nbody, x, depth + 1);
    return lw_op2(f, OP_ADD, stride > 1 ? lw_seq(f, OP_SEQ_POOL, x, stride, 1.0 / (double)stride) : x, y);
  }
  case SPEC_L_POOL:
    if (!lw->unpooled) lw->unpooled = x;
    lw->pool = l->stride;
    return x;
  case SPEC_L_UPSAMPLE: /* repeat each position, plus the stream before the first pool (Funnel's decoder input) */
    return lw_op2(f, OP_ADD, lw_seq(f, OP_UPSAMPLE, x, l->stride, 1.0), lw->unpooled);
  case SPEC_L_REPEAT:
    return lw_repeat(lw, l, x);
  case SPEC_L_DROPOUT: {
    Op *op = ir_op_new(f, OP_DROPOUT, 1, &x, 1);
    ir_set_attr_float(op, "p", l->p);
    ir_set_attr_int(op, "stream", lw->ndropout++);
    return ir_emit(f, op);
  }
  case SPEC_L_LM_HEAD: {
    Value *w = l->tied ? NULL : pv[0];
    if (l->tied) {
      char name[FE_NAME_MAX];
      snprintf(name, sizeof name, "%s.weight", s->embedding);
      w = lw_param_op(lw, name);
    }
    return lw_op2(f, OP_LINEAR, x, w);
  }
  case SPEC_L_CLASSIFIER: {
    Op *op = ir_op_new(f, OP_POOL, 1, &x, 1);
    ir_set_attr_str(op, "mode", l->pool == SPEC_POOL_FIRST ? "first" : "mean");
    Value *y = ir_emit(f, op);
    y = lw_op2(f, OP_LINEAR, y, pv[0]);
    return lw_op2(f, OP_ADD, y, pv[1]);
  }
  default:
    die("lowering an unchecked layer");
  }
}

static Value *lw_list(Lower *lw, const SpecLayer *ls, int n, Value *x, int depth) {
  IR_ASSERT(depth <= FE_MAX_DEPTH + 1);
  for (int i = 0; i < n && lw->ok; i++) x = lw_layer(lw, &ls[i], x, depth);
  return x;
}

static void lw_attr_int(Module *m, const char *key, int64_t v) {
  ir_module_set_attr(m, (Attr){.key = key, .kind = ATTR_INT, .i = v});
}

_Static_assert((int)SPEC_SCHED_COSINE == (int)TRAIN_SCHED_COSINE && (int)SPEC_SCHED_CONSTANT == (int)TRAIN_SCHED_CONSTANT &&
                   (int)SPEC_SCHED_LINEAR == (int)TRAIN_SCHED_LINEAR,
               "SpecSchedule and TrainSchedule agree");
_Static_assert((int)SPEC_OPT_ADAMW == (int)TRAIN_OPT_ADAMW && (int)SPEC_OPT_SGD == (int)TRAIN_OPT_SGD,
               "SpecOptimizer and TrainOptimizer agree");
_Static_assert((int)SPEC_PREC_FP32 == (int)TRAIN_PREC_FP32 && (int)SPEC_PREC_BF16 == (int)TRAIN_PREC_BF16 &&
                   (int)SPEC_PREC_FP16 == (int)TRAIN_PREC_FP16,
               "SpecPrecision and TrainPrecision agree");

/* The spec's train: section (defaults resolved, so always present) as the module's record. */
static void lw_train(Module *m, const SpecTrain *t) {
  m->train = (TrainConfig){
      .present = true,
      .steps = t->steps,
      .batch = t->batch,
      .micro_batch = t->micro_batch,
      .warmup = t->warmup,
      .seed = t->seed,
      .eval_every = t->eval_every,
      .checkpoint_every = t->checkpoint_every,
      .lr = t->lr,
      .min_lr = t->min_lr,
      .beta1 = t->beta1,
      .beta2 = t->beta2,
      .eps = t->eps,
      .weight_decay = t->weight_decay,
      .momentum = t->momentum,
      .grad_clip = t->grad_clip,
      .schedule = (TrainSchedule)t->schedule,
      .optimizer = (TrainOptimizer)t->optimizer,
      .precision = (TrainPrecision)t->precision,
      .data = t->data ? ir_strdup(m, t->data) : NULL,
      .prune_initial = t->prune_initial,
      .prune_start = t->prune_start,
      .prune_end = t->prune_end,
      .prune_every = t->prune_every,
      .distill_temperature = t->teacher ? t->distill_temperature : 0,
      .distill_alpha = t->teacher ? t->distill_alpha : 0,
      .line = t->line,
      .col = t->col,
  };
}

/* Distillation: the teacher's spec lowered at the student's (compiled) batch and imported as
 * @teacher with its parameters and blocks under "teacher." (frozen; docs/training.md). */
static bool lw_teacher(Module *m, const Spec *s, Diag *d) {
  Spec ts = *s->train.teacher;
  ts.model.batch = s->model.batch;
  Module *tm = fe_lower(&ts, d);
  if (!tm) return false;
  char err[256];
  bool ok = ir_module_import(m, tm, IR_TEACHER_PREFIX, IR_TEACHER_FUNC, err, sizeof err);
  if (!ok) diag_error(d, s->file, s->train.line, s->train.col, "distill: the teacher: %s", err);
  ir_module_free(tm);
  return ok;
}

Module *fe_lower(const Spec *s, Diag *d) {
  const SpecModel *md = &s->model;
  Module *m = ir_module_new(md->name);
  m->file = ir_strdup(m, s->file);
  lw_attr_int(m, "batch", md->batch);
  lw_attr_int(m, "context", md->context);
  lw_attr_int(m, "vocab", md->vocab);
  lw_attr_int(m, "dim", md->dim);
  ir_module_set_attr(m, (Attr){.key = "kind", .kind = ATTR_STR, .s = md->kind == SPEC_DECODER ? "decoder" : "encoder"});
  const SpecLayer *last = s->nlayers ? &s->layers[s->nlayers - 1] : NULL;
  if (last && last->kind == SPEC_L_CLASSIFIER) lw_attr_int(m, "classes", last->classes);
  lw_train(m, fe_spec_train(s));

  Func *f = ir_add_func(m, "forward");
  m->entry = ir_strdup(m, "forward");
  Lower lw = {.s = s, .m = m, .f = f, .d = d, .ok = true};
  lw.tokens = ir_add_arg(f, "tokens", ir_type2(DT_I32, md->batch, md->context));
  Value *y = lw_list(&lw, s->layers, s->nlayers, NULL, 0);
  if (!lw.ok || !y) {
    ir_module_free(m);
    return NULL;
  }
  ir_set_return(f, 1, &y);
  if (s->train.teacher && !lw_teacher(m, s, d)) {
    ir_module_free(m);
    return NULL;
  }
  return m;
}
