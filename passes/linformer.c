/* linformer.c: low-rank attention along the sequence (the `linformer` pass:
 * linformer<k=K;share=none|kv|layer>).
 *
 * Linformer (Wang et al. 2020) projects the keys and the values of every head along the sequence
 * to K positions with learned matrices E, F [K,T] before the softmax, so attention costs O(T K)
 * instead of O(T^2). The pass rewrites every `attention` op into `linformer(qkv, E, F)` (docs/ir.md)
 * with new parameters:
 *
 *   share=none   E and F per layer:  LAYER.attn.lin_e.weight, LAYER.attn.lin_f.weight
 *   share=kv     one projection per layer used as E and as F:  LAYER.attn.lin_e.weight
 *   share=layer  one projection for all layers, E and F (the paper's layerwise sharing), named by
 *                the first layer: layer.0.attn.lin_e.weight bound at every call
 *
 * LAYER.attn is the attention's own name: its qkv projection's weight (LAYER.attn.c_attn.weight)
 * without ".c_attn.weight". In a repeated block (one function called per layer) the projections are
 * new arguments of the block (attn.lin_e.weight), and each call binds its layer's parameters as it
 * binds the others (`param {p=@layer.1.attn.lin_e.weight}` before the call), found by the same
 * naming: the call's other parameter loads are PREFIX + argument name. Shared projections are one
 * parameter loaded at several calls; autodiff sums its gradients over the loads, and within one op
 * (E = F) over both operands.
 *
 * k=0 (the default) is T/4 (at least 1), the paper's and our measurement's setting; k must not
 * exceed the compiled length T. New projections are initialised as fairseq's Linformer
 * initialises its Linear(max_seq_len, k, bias=False): xavier_uniform with gain 1/sqrt(2), i.e.
 * uniform(+-sqrt(3 / (T + K))).
 *
 * Linformer has no mask: each projected key mixes all positions, future ones included, so causal
 * attention (an LM's) is refused with its location: it cannot be projected this way, and decoding
 * with a KV cache has no meaning for it. The pass runs before autodiff (so training differentiates
 * the new op) and before passes that put casts between a parameter's load and its call.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pass.h"

typedef struct Ctx {
  Module *m;
  const PassOptions *o;
  Diag *d;
  int64_t k;          /* the option (0: T/4) */
  const char *share;  /* none | kv | layer */
  const char *shared; /* share=layer: the one projection's name, once made */
} Ctx;

static const char C_ATTN[] = ".c_attn.weight";

/* The attention's name: its qkv weight's (an argument's or a parameter's name) without
 * ".c_attn.weight"; the qkv value is linear(x, W) [+ bias] [-> rope]. NULL when not found. */
static char *attn_scope(const Op *att, char *buf, size_t n) {
  const Value *v = att->in[0];
  while (v->def && (v->def->kind == OP_ADD || v->def->kind == OP_ROPE)) v = v->def->in[0];
  if (!v->def || v->def->kind != OP_LINEAR) return NULL;
  const Value *w = v->def->in[1];
  const char *name = w->def ? (w->def->kind == OP_PARAM ? ir_attr_s(w->def, "p") : NULL) : w->name;
  size_t l = name ? strlen(name) : 0, s = sizeof C_ATTN - 1;
  if (l <= s || strcmp(name + l - s, C_ATTN) || l - s >= n) return NULL;
  memcpy(buf, name, l - s);
  buf[l - s] = 0;
  return buf;
}

static bool arg_exists(const Func *f, const char *name) {
  for (int i = 0; i < f->narg; i++)
    if (f->args[i]->name && !strcmp(f->args[i]->name, name)) return true;
  return false;
}

/* The parameter name prefix of a call's layer: the call's parameter loads are PREFIX + the
 * callee's argument name (layer.1.attn.c_attn.weight for attn.c_attn.weight); else CALLEE.I. */
static void call_prefix(const Op *call, const Func *g, int index, char *buf, size_t n) {
  for (int j = 0; j < call->nin && j < g->narg; j++) {
    const Value *v = call->in[j];
    const char *a = g->args[j]->name;
    if (!a || !v->def || v->def->kind != OP_PARAM) continue;
    const char *p = ir_attr_s(v->def, "p");
    size_t lp = strlen(p), la = strlen(a);
    if (lp > la && !strcmp(p + lp - la, a) && lp - la < n) {
      memcpy(buf, p, lp - la);
      buf[lp - la] = 0;
      return;
    }
  }
  snprintf(buf, n, "%s.%d.", g->name, index);
}

/* The parameter NAME of type t, made on first use (uniform +-sqrt(3/(T+K))); NULL (reported) when
 * the name exists with another type. */
static const char *projection(Ctx *c, const char *name, Type t) {
  if (c->shared) name = c->shared;
  Param *p = ir_find_param(c->m, name);
  if (!p) {
    p = ir_add_param(c->m, name, t, INIT_UNIFORM, sqrt(3.0 / (double)(t.dim[0] + t.dim[1])));
    if (!strcmp(c->share, "layer")) c->shared = p->name;
  } else if (!ir_type_eq(&p->type, &t)) {
    char b1[96], b2[96];
    pass_error(c->o, c->d, "linformer: the projection @%s is %s, but an attention here needs %s%s", p->name,
               ir_type_str(&p->type, b1, sizeof b1), ir_type_str(&t, b2, sizeof b2),
               c->shared ? " (share=layer needs every attention to have the same length)" : "");
    return NULL;
  }
  return p->name;
}

static Value *load(Func *f, Op *before, const char *pname) {
  Op *op = ir_op_new(f, OP_PARAM, 0, NULL, 1);
  ir_set_attr_sym(op, "p", pname);
  char e[256];
  if (!ir_infer(f->module, op, e, sizeof e)) die("linformer: %s", e);
  ir_insert_before(before, op);
  return op->out[0];
}

/* The causal attentions and lengths below k are user errors, reported at the op when it has a
 * position (a .mir input), else at the pass with the function's name. */
static bool check_op(Ctx *c, const Func *f, const Op *att, int64_t K) {
  const char *file = c->m->file;
  int64_t T = att->in[0]->type.dim[1];
  char msg[512];
  if (ir_attr_i(att, "causal"))
    snprintf(msg, sizeof msg, "linformer: this attention in @%s is causal: linformer projects keys and values along "
                              "the sequence, so every query would see future positions; it needs bidirectional "
                              "attention (causal: false), and causal decoding cannot use it", f->name);
  else if (ir_attr_s(att, "sparse"))
    snprintf(msg, sizeof msg, "linformer: this attention in @%s is block-sparse (the sparse-attention pass, sparse=%s): "
                              "linformer replaces dense bidirectional attention; use one of the two",
             f->name, ir_attr_s(att, "sparse"));
  else if (ir_kv_heads(att) != ir_attr_i(att, "heads"))
    snprintf(msg, sizeof msg, "linformer: this attention in @%s is grouped-query (kv_heads=%lld): linformer with "
                              "kv_heads is not implemented", f->name, (long long)ir_kv_heads(att));
  else if (K > T)
    snprintf(msg, sizeof msg, "linformer: k=%lld exceeds the sequence length %lld of the attention in @%s "
                              "(1 <= k <= T)", (long long)K, (long long)T, f->name);
  else
    return true;
  if (att->line > 0 && file) diag_error(c->d, file, att->line, att->col, "%s", msg);
  else pass_error(c->o, c->d, "%s", msg);
  return false;
}

/* Rewrites the attentions of f; ncalls/calls are f's calls when it is a block (its projections become
 * arguments bound at each call), ncalls = 0 when f loads its own parameters. */
static bool rewrite_func(Ctx *c, Func *f, Op **calls, int ncalls) {
  bool ok = true;
  int nth = 0;
  for (Op *att = f->first; att && ok; att = att->next) {
    if (att->kind != OP_ATTENTION) continue;
    int64_t T = att->in[0]->type.dim[1], K = c->k ? c->k : (T / 4 > 0 ? T / 4 : 1);
    if (!check_op(c, f, att, K)) return false;
    char scope[256], name[2][320];
    if (!attn_scope(att, scope, sizeof scope)) snprintf(scope, sizeof scope, nth ? "attn%d" : "attn", nth);
    nth++;
    int np = strcmp(c->share, "none") ? 1 : 2;
    for (int i = 0; i < np; i++) {
      snprintf(name[i], sizeof name[i], "%s.lin_%c.weight", scope, "ef"[i]);
      for (int u = 2; ncalls && arg_exists(f, name[i]); u++) /* two attentions of one name */
        snprintf(name[i], sizeof name[i], "%s%d.lin_%c.weight", scope, u, "ef"[i]);
    }
    Type t = ir_type2(DT_F32, K, T);
    Value *ef[2] = {NULL, NULL};
    if (!ncalls) {
      for (int i = 0; i < np && ok; i++) {
        const char *p = projection(c, name[i], t);
        ok = p != NULL;
        if (ok) ef[i] = load(f, att, p);
      }
    } else {
      for (int i = 0; i < np; i++) ef[i] = ir_add_arg(f, name[i], t);
      for (int ci = 0; ci < ncalls && ok; ci++) {
        Op *call = calls[ci];
        char prefix[256], pname[1024];
        call_prefix(call, f, ci, prefix, sizeof prefix);
        Value **in = ir_alloc(c->m, sizeof *in * (size_t)(call->nin + np));
        memcpy(in, call->in, sizeof *in * (size_t)call->nin);
        for (int i = 0; i < np && ok; i++) {
          snprintf(pname, sizeof pname, "%s%s", prefix, name[i]);
          const char *p = projection(c, pname, t);
          ok = p != NULL;
          if (ok) in[call->nin + i] = load(call->func, call, p);
        }
        if (ok) ir_set_operands(call, call->nin + np, in);
      }
    }
    if (!ok) return false;
    if (np == 1) ef[1] = ef[0];
    Value *in[3] = {att->in[0], ef[0], ef[1]};
    Op *lin = ir_op_new(f, OP_LINFORMER, 3, in, 1);
    ir_set_attr_int(lin, "heads", ir_attr_i(att, "heads"));
    char e[256];
    if (!ir_infer(c->m, lin, e, sizeof e)) die("linformer: %s", e);
    ir_insert_before(att, lin);
    ir_replace_uses(f, att->out[0], lin->out[0]);
    Op *dead = att;
    att = lin;
    ir_unlink(dead);
  }
  return ok;
}

bool pass_linformer(Module *m, const PassOptions *o, Diag *d) {
  Ctx c = {m, o, d, pass_opt_int(o, "k"), pass_opt_str(o, "share"), NULL};
  bool diffed = ir_train_func(m) != NULL;
  for (int i = 0; i < m->nfunc && !diffed; i++) {
    size_t l = strlen(m->funcs[i]->name);
    diffed = l > 4 && !strcmp(m->funcs[i]->name + l - 4, ".bwd");
  }
  if (diffed) {
    pass_error(o, d, "linformer: the module is already differentiated (@train): run linformer before autodiff, so "
                     "that training differentiates the projected attention");
    return false;
  }
  /* every causal attention and bad length first, all reported */
  bool ok = true;
  int found = 0;
  for (int fi = 0; fi < m->nfunc; fi++)
    for (const Op *op = m->funcs[fi]->first; op; op = op->next)
      if (op->kind == OP_ATTENTION) {
        int64_t T = op->in[0]->type.dim[1];
        ok &= check_op(&c, m->funcs[fi], op, c.k ? c.k : (T / 4 > 0 ? T / 4 : 1));
        found++;
      }
  if (!ok) return false;
  if (!found) {
    pass_error(o, d, "linformer: the module has no attention op to project");
    return false;
  }
  /* the calls of each function: a block's projections are its arguments; a function nobody calls
   * (the entry) loads its own */
  int nf = m->nfunc;
  Func **funcs = malloc(sizeof *funcs * (size_t)(nf + 1));
  if (!funcs) die("out of memory");
  memcpy(funcs, m->funcs, sizeof *funcs * (size_t)nf);
  for (int fi = 0; fi < nf && ok; fi++) {
    Func *f = funcs[fi];
    bool has = false;
    for (const Op *op = f->first; op && !has; op = op->next) has = op->kind == OP_ATTENTION;
    if (!has) continue;
    int n = 0, cap = 0;
    Op **calls = NULL;
    for (int gi = 0; gi < nf; gi++)
      for (Op *op = funcs[gi]->first; op; op = op->next)
        if (op->kind == OP_CALL && !strcmp(ir_attr_s(op, "callee"), f->name)) {
          if (n == cap) {
            cap = cap ? 2 * cap : 8;
            calls = realloc(calls, sizeof *calls * (size_t)cap);
            if (!calls) die("out of memory");
          }
          calls[n++] = op;
        }
    ok = rewrite_func(&c, f, calls, n);
    free(calls);
  }
  free(funcs);
  return ok;
}
