/* share.c: cross-layer parameter sharing (the `share` pass: share<mode=all|attention|ffn;group=N>).
 *
 * ALBERT (Lan et al. 2019) shares one set of block parameters across the layers of an encoder:
 * all of them, only the attention sub-layer's, or only the feed-forward's. In our IR a repeated
 * block is one function @h called once per layer by the entry, each call binding its layer's
 * parameters (`param {p=@h.1.attn.c_attn.weight}` ops in the entry) as arguments. Sharing is
 * binding the same parameter at every call of a group: the pass rewrites each later call's
 * parameter load to load the group's first layer's parameter (`param {p=@h.0.attn.c_attn.weight}`
 * at calls 1, 2, 3), then removes the parameters no op loads any more, so the weights file, `PROG
 * init` and `modelc stats` hold one copy. autodiff, run afterwards, sums the gradients of the
 * loads of one parameter (as for a tied LM head), so the shared set's gradient is the sum over the
 * layers that use it.
 *
 *   %17 = param {p=@h.1.ln_1.weight}      ->    %17 = param {p=@h.0.ln_1.weight}
 *   %30 = call(%16, %17, ...) {callee=@h}       %30 = call(%16, %17, ...) {callee=@h}
 *
 * Groups: group=N puts each N consecutive calls (in the entry's order) into one group sharing the
 * first call's parameters; the last group holds the remaining layers when N does not divide their
 * number (4 layers, group=3: {0,1,2} and {3}, layer 3 keeping its own parameters); group=0 (the
 * default) or N >= the number of layers is one group. group=1 would share nothing and is refused
 * where the pipeline is written (pass_share_check).
 *
 * Which block arguments are attention or FFN parameters is read from the block's structure, not
 * from names. The residual stream is followed back from the block's result to its activation
 * argument: each step is either a residual add (add(s, b) where b is computed from s: a branch)
 * or a norm on the stream (a post-LN norm, as in BERT and ALBERT). A branch is an attention branch
 * when it contains an attention op, an FFN branch when it contains an activation (gelu, gelu_tanh,
 * relu, silu) between two linear ops of the branch; its ops are those the branch's value depends
 * on that the stream before it does not, so a pre-LN norm inside the branch goes with it. A
 * post-LN norm goes with the branch whose residual add it normalises. A parameter read by ops of
 * both kinds, or by none of them, is neither: only mode=all shares it. docs/passes.md states the
 * rule with examples; tests/passes/share/ has the golden tests.
 *
 * The pass runs before autodiff (a differentiated module is refused: its gradients would not sum
 * over the new bindings) and before passes that put something between a parameter's load and its
 * call (store, quantize, precision): every shared argument must be a `param` load at every call.
 */
#include <stdlib.h>
#include <string.h>

#include "pass.h"

typedef enum Kind { K_NONE, K_ATTN, K_FFN, K_MIXED } Kind;

bool pass_share_check(const PipelineEntry *e, Diag *d) {
  if (pass_opt_int(&e->opts, "group") == 1) {
    diag_error(d, e->file, e->line, e->col,
               "share: group=1 shares nothing (every layer its own group); give group=0 for all layers or N >= 2");
    return false;
  }
  return true;
}

/* Ops of a function by position, and ancestor sets over them. */
typedef struct Graph {
  const Func *f;
  int nops;
  const Op **ops;   /* in order */
  int *pos;         /* Value.id -> position of its defining op, -1 for an argument */
} Graph;

static Graph graph_new(const Func *f) {
  Graph g = {f, 0, NULL, NULL};
  for (const Op *op = f->first; op; op = op->next) g.nops++;
  g.ops = malloc(sizeof *g.ops * (size_t)(g.nops + 1));
  g.pos = malloc(sizeof *g.pos * (size_t)(f->nvalues + 1));
  if (!g.ops || !g.pos) die("out of memory");
  for (int i = 0; i < f->nvalues; i++) g.pos[i] = -1;
  int k = 0;
  for (const Op *op = f->first; op; op = op->next, k++) {
    g.ops[k] = op;
    for (int r = 0; r < op->nout; r++) g.pos[op->out[r]->id] = k;
  }
  return g;
}

static void graph_free(Graph *g) {
  free(g->ops);
  free(g->pos);
}

/* anc[i] = op i is v's defining op or one of its ancestors; arg[j] likewise for argument j. One
 * backward sweep over the ops (they are in topological order). */
static void ancestors(const Graph *g, const Value *v, bool *anc, bool *arg) {
  memset(anc, 0, sizeof *anc * (size_t)(g->nops + 1));
  if (arg) memset(arg, 0, sizeof *arg * (size_t)(g->f->narg + 1));
  if (!v->def) {
    if (arg) arg[v->index] = true;
    return;
  }
  anc[g->pos[v->id]] = true;
  for (int i = g->nops - 1; i >= 0; i--) {
    if (!anc[i]) continue;
    const Op *op = g->ops[i];
    for (int j = 0; j < op->nin; j++) {
      const Value *u = op->in[j];
      if (u->def) anc[g->pos[u->id]] = true;
      else if (arg) arg[u->index] = true;
    }
  }
}

/* Does v depend on w (w is v or one of its ancestors)? */
static bool depends(const Graph *g, const Value *v, const Value *w, bool *anc, bool *arg) {
  if (v == w) return true;
  ancestors(g, v, anc, arg);
  return w->def ? anc[g->pos[w->id]] : arg[w->index];
}

static bool is_activation(OpKind k) { return k == OP_GELU || k == OP_GELU_TANH || k == OP_RELU || k == OP_SILU; }
static bool is_norm(OpKind k) { return k == OP_LAYERNORM || k == OP_RMSNORM; }

static void mark(Kind *cls, int j, Kind k) {
  if (cls[j] == K_NONE) cls[j] = k;
  else if (cls[j] != k) cls[j] = K_MIXED;
}

/* The kind of a branch (its ops are those with in[i]): an attention op, or an activation with a
 * linear of the branch before it (an ancestor) and one after it (a descendant). */
static Kind branch_kind(const Graph *g, const bool *in, bool *anc) {
  for (int i = 0; i < g->nops; i++)
    if (in[i] && (g->ops[i]->kind == OP_ATTENTION || g->ops[i]->kind == OP_LINFORMER)) return K_ATTN;
  bool *desc = malloc(sizeof *desc * (size_t)(g->nops + 1));
  if (!desc) die("out of memory");
  Kind k = K_NONE;
  for (int i = 0; i < g->nops && k == K_NONE; i++) {
    if (!in[i] || !is_activation(g->ops[i]->kind)) continue;
    ancestors(g, g->ops[i]->out[0], anc, NULL);
    memset(desc, 0, sizeof *desc * (size_t)g->nops);
    desc[i] = true;
    bool before = false, after = false;
    for (int j = 0; j < g->nops; j++) {
      const Op *op = g->ops[j];
      for (int u = 0; j > i && u < op->nin; u++) desc[j] |= op->in[u]->def && desc[g->pos[op->in[u]->id]];
      if (!in[j] || op->kind != OP_LINEAR) continue;
      before |= j < i && anc[j];
      after |= j > i && desc[j];
    }
    if (before && after) k = K_FFN;
  }
  free(desc);
  return k;
}

/* Classifies f's arguments (cls[j]) by the residual branch that reads them. `stream` is the
 * argument the residual stream starts from. False, with a message in err, when the result is not
 * reached from it through residual adds and norms. */
static bool classify(const Func *f, const Value *stream, Kind *cls, char *err, size_t n) {
  Graph g = graph_new(f);
  bool *anc = malloc(sizeof *anc * (size_t)(g.nops + 1)), *anc2 = malloc(sizeof *anc2 * (size_t)(g.nops + 1));
  bool *arg = malloc(sizeof *arg * (size_t)(f->narg + 1)), *in = malloc(sizeof *in * (size_t)(g.nops + 1));
  const Op **chain = malloc(sizeof *chain * (size_t)(g.nops + 1));
  if (!anc || !anc2 || !arg || !in || !chain) die("out of memory");
  for (int j = 0; j < f->narg; j++) cls[j] = K_NONE;
  bool ok = true;
  int nchain = 0;
  /* back from the result to the stream argument */
  const Value *v = f->nret == 1 ? f->ret[0] : NULL;
  while (ok && v && v != stream) {
    const Op *op = v->def;
    if (op && op->kind == OP_ADD && op->nin == 2) {
      const Value *a = op->in[0], *b = op->in[1];
      if (depends(&g, b, a, anc, arg)) v = a;
      else if (depends(&g, a, b, anc, arg)) v = b;
      else {
        snprintf(err, n, "an add on the residual stream of @%s is not x + f(x)", f->name);
        ok = false;
      }
    } else if (op && is_norm(op->kind)) {
      v = op->in[0];
    } else {
      snprintf(err, n, "the residual stream of @%s passes through '%s', neither a residual add nor a norm",
               f->name, op ? ir_op_name(op->kind) : "an argument other than the block's input");
      ok = false;
    }
    if (ok) chain[nchain++] = op;
  }
  if (ok && !v) {
    snprintf(err, n, "@%s does not return one value", f->name);
    ok = false;
  }
  /* forward along the chain: each residual add's branch, each norm with the branch before it */
  Kind last = K_NONE;
  for (int c = nchain - 1; ok && c >= 0; c--) {
    const Op *op = chain[c];
    if (is_norm(op->kind)) {
      for (int j = 1; j < op->nin; j++)
        if (!op->in[j]->def && last != K_NONE) mark(cls, op->in[j]->index, last);
      continue;
    }
    const Value *s = c + 1 < nchain ? chain[c + 1]->out[0] : stream, *b = op->in[0] == s ? op->in[1] : op->in[0];
    /* the branch: b and its ancestors that are not s or s's ancestors */
    ancestors(&g, b, in, NULL);
    if (s->def) {
      ancestors(&g, s, anc2, NULL);
      for (int i = 0; i < g.nops; i++) in[i] &= !anc2[i];
    }
    last = branch_kind(&g, in, anc);
    for (int i = 0; i < g.nops && last != K_NONE; i++)
      if (in[i])
        for (int j = 0; j < g.ops[i]->nin; j++)
          if (!g.ops[i]->in[j]->def && g.ops[i]->in[j] != stream) mark(cls, g.ops[i]->in[j]->index, last);
  }
  free(anc);
  free(anc2);
  free(arg);
  free(in);
  free(chain);
  graph_free(&g);
  return ok;
}

/* The calls of each function from the entry, in order. */
typedef struct Calls {
  Func *callee;
  int n;
  Op **call;
} Calls;

static bool is_load(const Value *v) { return v->def && v->def->kind == OP_PARAM; }

/* Binds each selected argument of the group's later calls to the first call's parameter. Returns
 * how many loads were rebound; marks the parameters that lost a load in cand. */
static int share_group(Module *m, Func *entry, Op **call, int n, const bool *sel, int narg, bool *cand) {
  int rebound = 0;
  for (int i = 1; i < n; i++)
    for (int j = 0; j < narg; j++) {
      if (!sel[j]) continue;
      Value *rep = call[0]->in[j], *v = call[i]->in[j];
      const char *want = ir_attr_s(rep->def, "p"), *have = ir_attr_s(v->def, "p");
      if (!strcmp(want, have)) continue;
      cand[ir_find_param(m, have)->index] = true;
      if (v->nuses == 1) {
        ir_set_attr_sym(v->def, "p", want);
      } else { /* the load is read elsewhere too: a new load for this call */
        Op *op = ir_op_new(entry, OP_PARAM, 0, NULL, 1);
        ir_set_attr_sym(op, "p", want);
        char e[256];
        if (!ir_infer(m, op, e, sizeof e)) die("share: %s", e);
        ir_insert_before(call[i], op);
        v->nuses--;
        call[i]->in[j] = op->out[0];
        op->out[0]->nuses = 1;
      }
      rebound++;
    }
  return rebound;
}

bool pass_share(Module *m, const PassOptions *o, Diag *d) {
  const char *mode = pass_opt_str(o, "mode");
  int64_t group = pass_opt_int(o, "group");
  Kind want = !strcmp(mode, "attention") ? K_ATTN : !strcmp(mode, "ffn") ? K_FFN : K_NONE; /* K_NONE: all */
  Func *entry = m->entry ? ir_find_func(m, m->entry) : NULL;
  if (!entry) {
    pass_error(o, d, "share: the module has no entry function");
    return false;
  }
  bool diffed = ir_train_func(m) != NULL;
  for (int i = 0; i < m->nfunc && !diffed; i++) {
    size_t l = strlen(m->funcs[i]->name);
    diffed = l > 4 && !strcmp(m->funcs[i]->name + l - 4, ".bwd");
  }
  if (diffed) {
    pass_error(o, d, "share: the module is already differentiated (@train): run share before autodiff, so that the "
                     "shared parameters' gradients are summed over their layers");
    return false;
  }
  /* the calls of each callee from the entry */
  Calls *cs = calloc((size_t)m->nfunc + 1, sizeof *cs);
  int ncs = 0;
  if (!cs) die("out of memory");
  for (Op *op = entry->first; op; op = op->next) {
    if (op->kind != OP_CALL) continue;
    Func *g = ir_find_func(m, ir_attr_s(op, "callee"));
    int k = 0;
    while (k < ncs && cs[k].callee != g) k++;
    if (k == ncs) cs[ncs++] = (Calls){g, 0, NULL};
    cs[k].call = realloc(cs[k].call, sizeof *cs[k].call * (size_t)(cs[k].n + 1));
    if (!cs[k].call) die("out of memory");
    cs[k].call[cs[k].n++] = op;
  }
  ir_count_uses(entry);
  bool ok = true, any_repeat = false;
  int rebound = 0, nloads = 0; /* loads rebound; arguments that are loads at every call */
  bool *cand = calloc((size_t)m->nparam + 1, sizeof *cand);
  if (!cand) die("out of memory");
  for (int k = 0; k < ncs && ok; k++) {
    Func *g = cs[k].callee;
    if (cs[k].n < 2) continue;
    any_repeat = true;
    /* parameter arguments: a load at every call; the one other argument is the stream */
    bool *sel = calloc((size_t)g->narg + 1, sizeof *sel);
    Kind *cls = calloc((size_t)g->narg + 1, sizeof *cls);
    if (!sel || !cls) die("out of memory");
    const Value *stream = NULL;
    int nstream = 0;
    for (int j = 0; j < g->narg; j++) {
      sel[j] = true;
      for (int i = 0; i < cs[k].n; i++) sel[j] &= is_load(cs[k].call[i]->in[j]);
      if (!sel[j]) stream = g->args[j], nstream++;
      else nloads++;
    }
    if (want != K_NONE) {
      char err[256];
      if (nstream != 1) {
        pass_error(o, d, "share: mode=%s: @%s takes %d arguments that are not parameter loads at every call; the "
                         "residual stream must be exactly one (run share before store, quantize and precision, "
                         "or use mode=all)", mode, g->name, nstream);
        ok = false;
      } else if (!classify(g, stream, cls, err, sizeof err)) {
        pass_error(o, d, "share: mode=%s: %s; use mode=all to share every parameter", mode, err);
        ok = false;
      } else {
        int found = 0;
        for (int j = 0; j < g->narg; j++) {
          sel[j] &= cls[j] == want;
          found += sel[j];
        }
        if (!found) {
          pass_error(o, d, "share: mode=%s: @%s has no %s (found by structure: %s)", mode, g->name,
                     want == K_ATTN ? "attention branch" : "feed-forward branch",
                     want == K_ATTN ? "a residual branch with an attention op"
                                    : "a residual branch with an activation between two linear ops");
          ok = false;
        }
      }
    }
    int n = cs[k].n, size = group == 0 || group > n ? n : (int)group;
    for (int s = 0; ok && s < n; s += size)
      rebound += share_group(m, entry, cs[k].call + s, s + size <= n ? size : n - s, sel, g->narg, cand);
    free(sel);
    free(cls);
  }
  for (int k = 0; k < ncs; k++) free(cs[k].call);
  free(cs);
  if (ok && !any_repeat) {
    pass_error(o, d, "share: no repeated block: @%s calls no function more than once (a spec's `repeat: N` with "
                     "N >= 2 makes one)", entry->name);
    ok = false;
  }
  if (ok && rebound == 0) {
    if (nloads == 0)
      pass_error(o, d, "share: no block argument is a parameter load at every call: run share before store, "
                       "quantize and precision (they put casts between a parameter's load and its call)");
    else
      pass_error(o, d, "share: nothing to share: the layers already bind the same parameters");
    ok = false;
  }
  if (ok) { /* drop the parameters that lost their last load */
    for (int fi = 0; fi < m->nfunc; fi++)
      for (const Op *op = m->funcs[fi]->first; op; op = op->next)
        if (op->kind == OP_PARAM) {
          const Param *p = ir_find_param(m, ir_attr_s(op, "p"));
          if (p) cand[p->index] = false;
        }
    ir_remove_params(m, cand);
  }
  free(cand);
  return ok;
}
