/* precision.c: mixed-precision training storage (the `precision` pass: precision<bf16> or
 * precision<fp16>).
 *
 * Runs on @train after autodiff (and checkpoint, xent_fuse). Two things change: how tensors are
 * *stored* between the forward and the backward, which is where training memory goes (1-3), and,
 * with bf16, the arithmetic of the matrix products (4):
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
 *  4. bf16 (unless products=f32): every matrix product of the training step runs in bf16 with f32
 *     accumulation on the CPU's matrix units (the GEMM layer: AMX or AVX512-BF16 through oneDNN).
 *     Each weight a product reads is cast to bf16 in @train, `w16 = cast(w) {to="bf16"}` (the
 *     working copy), right before each call that reads it (the block's forward, then its
 *     backward: two conversions per step, but only one block's copies live at a time), and
 *     passed as bf16 to the block functions; there
 *     linear(x, w16) and the input gradient matmul(dy, w16) read it, and the weight gradient
 *     linear_dw(dy, x) {compute="bf16"} and the fused head linear_xent(h, w16, ..) round their
 *     f32 operands to bf16 inside the kernel. Gradients stay f32. Block functions @forward shares
 *     with @train (@h) are cloned for @train (@h.bf16): inference keeps f32 products.
 *       %7 = param {p=@h.0.mlp.c_fc.weight} : f32[16,8]       (in @train)
 *       %8 = cast(%7) {to="bf16"} : bf16[16,8]
 *       ... = call(.., %8, ..) {callee=@h.bf16}
 *     fp16 keeps f32 products (the matrix units here multiply bf16).
 *
 * Working weights are the master weights rounded to 16 bits by the runtime before each step (the
 * program's weight buffer is f32); the optimiser updates the f32 master copy. The module
 * attribute precision records the choice for the backend and runtime.
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

/* ---- 4. products in bf16 ---- */

/* bf16 copies of values of one function, by Value.id (grown as the function gains values) */
typedef struct Half16 {
  Func *f;
  bool per_use; /* @train: a copy right before each op that reads it, so only the weights of the
                 * block being computed exist in bf16 at a time (memplan reuses their bytes) */
  Value **of;
  int n;
} Half16;

/* The bf16 copy of v for op `use` in h->f: v itself if bf16; w if v = cast(w : bf16) {to="f32"}
 * (exact); else a cast right before `use` (per_use), or one per value right after its definition
 * (or at the entry for an argument). */
static Value *bf16_of(Half16 *h, Value *v, Op *use) {
  if (v->type.dtype == DT_BF16) return v;
  if (v->def && v->def->kind == OP_CAST && v->def->in[0]->type.dtype == DT_BF16) return v->def->in[0];
  if (h->per_use) {
    Op *c = cast_op(h->f, v, DT_BF16);
    ir_insert_before(use, c);
    return c->out[0];
  }
  if (v->id >= h->n) {
    int n = h->f->nvalues + 64;
    h->of = realloc(h->of, sizeof *h->of * (size_t)n);
    if (!h->of) die("out of memory");
    memset(h->of + h->n, 0, sizeof *h->of * (size_t)(n - h->n));
    h->n = n;
  }
  if (!h->of[v->id]) {
    Op *c = cast_op(h->f, v, DT_BF16);
    if (v->def)
      ir_insert_after(v->def, c);
    else if (h->f->first)
      ir_insert_before(h->f->first, c);
    else
      ir_append(h->f, c);
    h->of[v->id] = c->out[0];
  }
  return h->of[v->id];
}

static void infer_or_die(const Module *m, Op *op) {
  char err[160];
  if (!ir_infer(m, op, err, sizeof err)) die("precision: %s", err);
}

/* The products of f in bf16: the weight operand of linear, matmul (a matrix) and linear_xent
 * becomes its bf16 copy; linear_dw computes from rounded operands. */
static void products_bf16(Module *m, Half16 *h) {
  for (Op *op = h->f->first; op; op = op->next) {
    bool w16 = (op->kind == OP_LINEAR || op->kind == OP_MATMUL || op->kind == OP_LINEAR_XENT) && op->nin >= 2 &&
               op->in[0]->type.dtype == DT_F32 && op->in[1]->type.dtype == DT_F32 && op->in[1]->type.rank == 2;
    if (w16) {
      op->in[1] = bf16_of(h, op->in[1], op);
      infer_or_die(m, op);
    } else if (op->kind == OP_LINEAR_DW && op->in[0]->type.dtype == DT_F32)
      ir_set_attr_str(op, "compute", "bf16");
  }
}

static int func_index(const Module *m, const Func *f) {
  for (int i = 0; i < m->nfunc; i++)
    if (m->funcs[i] == f) return i;
  return -1;
}

/* live[i]: m->funcs[i] is reachable through calls from f */
static void reach(const Module *m, const Func *f, bool *live) {
  int i = func_index(m, f);
  if (i < 0 || live[i]) return;
  live[i] = true;
  for (const Op *op = f->first; op; op = op->next)
    if (op->kind == OP_CALL) reach(m, ir_find_func(m, ir_attr_s(op, "callee")), live);
}

/* Argument j of g becomes bf16 when all its uses are casts to bf16 (products_bf16's copies): the
 * casts go and every call passes the caller's bf16 copy instead. Returns whether g changed. */
static bool narrow_arg(Module *m, Half16 *hs, int nh, Half16 *g, int j) {
  Value *a = g->f->args[j];
  if (a->type.dtype != DT_F32) return false;
  int uses = 0;
  for (const Op *op = g->f->first; op; op = op->next)
    for (int k = 0; k < op->nin; k++)
      if (op->in[k] == a) {
        if (op->kind != OP_CAST || op->out[0]->type.dtype != DT_BF16) return false;
        uses++;
      }
  for (int k = 0; k < g->f->nret; k++)
    if (g->f->ret[k] == a) return false;
  if (!uses) return false;
  a->type.dtype = DT_BF16;
  for (Op *op = g->f->first, *next; op; op = next) {
    next = op->next;
    if (op->kind == OP_CAST && op->in[0] == a) {
      ir_replace_uses(g->f, op->out[0], a);
      ir_unlink(op);
    }
  }
  for (int i = 0; i < nh; i++)
    for (Op *op = hs[i].f->first; op; op = op->next)
      if (op->kind == OP_CALL && strcmp(ir_attr_s(op, "callee"), g->f->name) == 0) {
        op->in[j] = bf16_of(&hs[i], op->in[j], op);
        infer_or_die(m, op);
      }
  return true;
}

/* @train and every function it calls: functions also reached from the entry are cloned first
 * (NAME.bf16), so inference keeps its f32 products. */
static void train_products_bf16(Module *m, Func *t) {
  bool *shared = calloc((size_t)m->nfunc + 1, sizeof *shared);
  Func *entry = ir_find_func(m, m->entry);
  if (!shared) die("out of memory");
  if (entry) reach(m, entry, shared);
  int cap = m->nfunc + 1, nh = 0;
  Half16 *hs = calloc((size_t)cap * 2, sizeof *hs); /* each function at most once, plus its clone */
  if (!hs) die("out of memory");
  hs[nh++] = (Half16){t, true, NULL, 0};
  for (int q = 0; q < nh; q++)
    for (Op *op = hs[q].f->first; op; op = op->next) {
      if (op->kind != OP_CALL) continue;
      Func *g = ir_find_func(m, ir_attr_s(op, "callee"));
      int gi = func_index(m, g);
      if (gi >= 0 && gi < cap - 1 && shared[gi]) { /* an original shared with inference */
        char name[512];
        snprintf(name, sizeof name, "%s.bf16", g->name);
        Func *c = ir_find_func(m, name);
        g = c ? c : ir_clone_func(m, g, name);
        if (!g) die("precision: cannot name the clone @%s", name);
        ir_set_attr_sym(op, "callee", g->name);
      }
      bool seen = false;
      for (int i = 0; i < nh && !seen; i++) seen = hs[i].f == g;
      if (!seen) {
        IR_ASSERT(nh < 2 * cap);
        hs[nh++] = (Half16){g, false, NULL, 0};
      }
    }
  for (int i = 0; i < nh; i++) products_bf16(m, &hs[i]);
  for (bool changed = true; changed;) {
    changed = false;
    for (int i = 1; i < nh; i++)
      for (int j = 0; j < hs[i].f->narg; j++) changed |= narrow_arg(m, hs, nh, &hs[i], j);
  }
  for (int i = 0; i < nh; i++) free(hs[i].of);
  free(hs);
  free(shared);
}

/* The rule between the options, checked when the pipeline is written (registry.c). */
bool pass_precision_check(const PipelineEntry *e, Diag *d) {
  if (pass_opt_bool(&e->opts, "bf16") == pass_opt_bool(&e->opts, "fp16")) {
    diag_error(d, e->file, e->line, e->col, "precision: give exactly one of bf16 or fp16");
    return false;
  }
  if (pass_opt_bool(&e->opts, "fp16") && !strcmp(pass_opt_str(&e->opts, "products"), "bf16")) {
    diag_error(d, e->file, e->line, e->col, "precision: products=bf16 needs bf16 (fp16 trains with f32 products)");
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
  /* fp16's loss scale multiplies the cross-entropy's seed only: a moe layer's load-balancing loss
   * (seeded by autodiff with 1) would be unscaled */
  for (int i = 0; fp16 && i < m->nfunc; i++)
    for (const Op *op = m->funcs[i]->first; op; op = op->next)
      if (op->kind == OP_MOE_DX) {
        if (op->line > 0) diag_error(d, m->file, op->line, op->col, "precision: fp16 training of a moe layer is not implemented (use bf16 or fp32)");
        else pass_error(o, d, "precision: fp16 training of a moe layer is not implemented (use bf16 or fp32)");
        return false;
      }
  /* The backward starts at the loss gradient. */
  Op *seed = NULL;
  int nvals = 0;
  for (Op *op = t->first; op; op = op->next) {
    if (!seed && (op->kind == OP_XENT_GRAD || op->kind == OP_LINEAR_XENT || op->kind == OP_DISTILL_GRAD)) seed = op;
    nvals += op->nout;
  }
  if (!seed) {
    diag_error(d, m->file, t->line, t->col, "precision: @%s has no loss gradient (cross_entropy_grad, linear_xent or distill_grad)", t->name);
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
    seed->in[seed->nin - 1] = ls->out[0]; /* the loss gradient: last operand of every seed */
  }
  /* 4. the products */
  if (bf16 && strcmp(pass_opt_str(o, "products"), "f32") != 0) train_products_bf16(m, t);
  ir_module_set_attr(m, (Attr){.key = "precision", .kind = ATTR_STR, .s = ir_dtype_name(half)});
  return true;
}
