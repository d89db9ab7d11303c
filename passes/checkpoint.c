/* checkpoint.c: gradient-checkpoint placement over the chain of blocks (the `checkpoint` pass).
 *
 * After autodiff, @train calls each block forward (F_i: x_i -> x_{i+1}) and, in reverse, its
 * backward B_i(x_i, ..., dy), which recomputes the block's internals from x_i. So by default
 * every block input x_i stays live from its forward to its backward: L block inputs at the peak
 * (policy every=1). This pass keeps only some inputs (the kept set K, always containing block 0)
 * and, for each segment [s, e) between kept blocks, recomputes x_{s+1} .. x_{e-1} by calling the
 * blocks forward again from x_s right before the segment's backward (Chen et al. 2016). The
 * dropped inputs then die at the next forward call, so the planned arena holds |K| block inputs
 * plus one segment's recomputed ones, for one extra forward of every block outside K.
 *
 * Policies: store keeps every activation the backward reads (no recompute: each block's forward
 * returns them from @f.fwd and @f.bwds reads them; most memory, fewest FLOPs); every=N keeps every
 * N-th block input; sqrt keeps about sqrt(L) (N = ceil(sqrt L)); budget=BYTES chooses the
 * placement with the least recompute whose planned training arena fits (store if it fits).
 * With identical blocks the recompute is (L - |K|) block forwards and, for a given |K|, the
 * largest segment is smallest with equal segments; so the exact optimum is the largest |K| whose
 * equal segmentation fits, found by planning each candidate (constfold, cse, fuse, dce and memplan
 * on a copy, as the default pipeline runs them after this pass) —
 * the memory model is the planner itself, not an estimate. A budget below the smallest arena
 * any placement reaches is an error that names that minimum.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memplan.h"
#include "pass.h"


typedef struct Chain {
  int n;       /* blocks */
  Op **fwd;    /* F_i */
  Op **bwd;    /* B_i (NULL if the block has no backward) */
} Chain;

static bool same_operands(const Op *f, const Op *b) {
  if (b->nin < f->nin) return false;
  for (int i = 0; i < f->nin; i++)
    if (f->in[i] != b->in[i]) return false;
  return true;
}

/* The chain of block calls in @train: forward calls whose result feeds the next one's input,
 * each with the backward call that reads the same operands. */
static void find_chain(Func *t, Chain *c) {
  int cap = 0;
  for (Op *op = t->first; op; op = op->next) cap += op->kind == OP_CALL;
  c->fwd = calloc((size_t)cap + 1, sizeof *c->fwd);
  c->bwd = calloc((size_t)cap + 1, sizeof *c->bwd);
  c->n = 0;
  for (Op *op = t->first; op; op = op->next) {
    const char *callee = op->kind == OP_CALL ? ir_attr_s(op, "callee") : NULL;
    if (!callee || strstr(callee, ".bwd")) continue;
    if (c->n > 0 && !(op->nin > 0 && op->in[0] == c->fwd[c->n - 1]->out[0])) continue;
    char want[256];
    snprintf(want, sizeof want, "%s.bwd", callee);
    Op *b = NULL;
    for (Op *q = op->next; q && !b; q = q->next)
      if (q->kind == OP_CALL && strcmp(ir_attr_s(q, "callee"), want) == 0 && same_operands(op, q)) b = q;
    if (!b) continue;
    c->fwd[c->n] = op;
    c->bwd[c->n++] = b;
  }
}

static void chain_free(Chain *c) {
  free(c->fwd);
  free(c->bwd);
}

/* Keeps the inputs of blocks 0, every, 2*every, ...; recomputes the others before each segment's
 * backward. Returns the number of recomputed block forwards. */
static int apply_every(Module *m, Func *t, int every) {
  Chain c;
  find_chain(t, &c);
  int recomputed = 0;
  for (int s = 0; s < c.n; s += every) {
    int e = s + every < c.n ? s + every : c.n;
    if (e - s < 2) continue;
    Op *first_bwd = c.bwd[e - 1]; /* the segment's first backward in execution order */
    Value *x = c.fwd[s]->in[0];
    for (int j = s; j < e - 1; j++) {
      Op *f = c.fwd[j];
      Value *in[512];
      IR_ASSERT(f->nin <= 512);
      for (int k = 0; k < f->nin; k++) in[k] = f->in[k];
      in[0] = x;
      Op *r = ir_op_new(t, OP_CALL, f->nin, in, f->nout);
      for (int k = 0; k < f->nattr; k++) ir_set_attr(r, f->attr[k]);
      char err[256];
      if (!ir_infer(m, r, err, sizeof err)) die("checkpoint: %s", err);
      ir_insert_before(first_bwd, r);
      x = r->out[0];
      /* B_{j+1} reads the recomputed input */
      Value **bin = c.bwd[j + 1]->in;
      bin[0] = x;
      recomputed++;
    }
  }
  chain_free(&c);
  return recomputed;
}

static int chain_length(Module *m) {
  Func *t = ir_train_func(m);
  if (!t) return 0;
  Chain c;
  find_chain(t, &c);
  int n = c.n;
  chain_free(&c);
  return n;
}

static bool store_all(Module *m, Func *t, const PassOptions *o, Diag *d);

/* The planned training arena with every=N (0: store), measured on a copy after fuse, dce and memplan. */
static int64_t arena_with(const Module *m, int every, const PassOptions *o, Diag *d) {
  char *text = ir_print_to_string(m);
  Diag quiet;
  diag_init(&quiet, d->out);
  Module *c = ir_parse("<checkpoint candidate>", text, strlen(text), &quiet);
  free(text);
  IR_ASSERT(c);
  if (every == 0)
    store_all(c, ir_train_func(c), o, &quiet);
  else
    apply_every(c, ir_train_func(c), every);
  /* the optimisations that follow checkpoint in the default pipeline, then the planner */
  Pipeline p;
  pass_pipeline_init(&p);
  PassRunConfig cfg = {.dump = d->out};
  if (!pass_parse_pipeline(&p, "constfold,cse,fuse,dce,memplan", "<checkpoint>", 1, 1, &quiet) ||
      !pass_run_pipeline(c, &p, &cfg, &quiet))
    die("checkpoint: planning a candidate failed");
  pass_pipeline_free(&p);
  int64_t a = memplan_arena_bytes(c, ir_train_func(c));
  ir_module_free(c);
  diag_free(&quiet);
  return a;
}


/* ---- store: keep every block activation the backward needs (no recompute) ---- */

/* Clones op into dst with operands mapped through map (by Value.id of the source function). */
static Op *clone_op(Module *m, Func *dst, const Op *op, Value **map) {
  char err[256];
  Op *c = ir_clone_op(m, dst, op, map, err, sizeof err);
  if (!c) die("checkpoint<store>: %s", err);
  return c;
}

/* Splits @g.bwd (g's forward recomputed, then g's backward) into @g.fwd (g's forward returning
 * its result and every value the backward reads) and @g.bwds (the backward alone, reading those
 * values as arguments), and makes @train call them. */
static bool store_block(Module *m, Func *t, Func *b, const PassOptions *o, Diag *d) {
  char base[256];
  snprintf(base, sizeof base, "%.*s", (int)(strlen(b->name) - 4), b->name);
  Func *g = ir_find_func(m, base);
  if (!g) return true;
  int nf = 0, nb = 0;
  for (const Op *op = g->first; op; op = op->next) nf++;
  for (const Op *op = b->first; op; op = op->next) nb++;
  /* the first nf ops of the .bwd are g's forward (autodiff copies it first) */
  const Op *op = b->first;
  const Op *go = g->first;
  for (int i = 0; i < nf; i++, op = op->next, go = go->next)
    if (!op || op->kind != go->kind) {
      pass_error(o, d, "checkpoint<store>: @%s does not start with @%s's forward (run right after autodiff)",
                 b->name, g->name);
      return false;
    }
  const Op *first_bwd = op;
  /* S: forward values the backward part reads (or returns) */
  bool *fwd_val = calloc((size_t)b->nvalues + 1, sizeof *fwd_val), *saved = calloc((size_t)b->nvalues + 1, sizeof *saved);
  Value **order = calloc((size_t)b->nvalues + 1, sizeof *order);
  op = b->first;
  for (int i = 0; i < nf; i++, op = op->next)
    for (int k = 0; k < op->nout; k++) fwd_val[op->out[k]->id] = true;
  int ns = 0;
  for (op = first_bwd; op; op = op->next)
    for (int k = 0; k < op->nin; k++)
      if (fwd_val[op->in[k]->id] && !saved[op->in[k]->id]) saved[op->in[k]->id] = true, order[ns++] = op->in[k];
  for (int k = 0; k < b->nret; k++)
    if (fwd_val[b->ret[k]->id] && !saved[b->ret[k]->id]) saved[b->ret[k]->id] = true, order[ns++] = b->ret[k];
  /* the forward's results in b: the copies of g's returned values (same op positions; a block
   * with moe layers returns its aux loss and load reports after its output) */
  const Value **yb = calloc((size_t)g->nret + 1, sizeof *yb);
  for (int r = 0; r < g->nret; r++) {
    if (!g->ret[r]->def) { /* an argument returned as it is */
      yb[r] = b->args[g->ret[r]->index];
      continue;
    }
    int ypos = 0;
    for (go = g->first; go && go != g->ret[r]->def; go = go->next) ypos++;
    op = b->first;
    for (int i = 0; i < ypos; i++) op = op->next;
    yb[r] = op->out[g->ret[r]->index];
  }
  (void)nb;

  /* @g.fwd(args of g) -> (g's results, S...) */
  char name[300];
  snprintf(name, sizeof name, "%s.fwd", base);
  Func *fw = ir_add_func(m, name);
  Value **map = calloc((size_t)b->nvalues + 1, sizeof *map);
  for (int i = 0; i < g->narg; i++) map[b->args[i]->id] = ir_add_arg(fw, b->args[i]->name, b->args[i]->type);
  op = b->first;
  for (int i = 0; i < nf; i++, op = op->next) clone_op(m, fw, op, map);
  const int ny = g->nret;
  Value **rets = calloc((size_t)(ns + ny) + 1, sizeof *rets);
  for (int r = 0; r < ny; r++) rets[r] = map[yb[r]->id];
  for (int i = 0; i < ns; i++) rets[ny + i] = map[order[i]->id];
  ir_set_return(fw, ny + ns, rets);

  /* @g.bwds(args of g, S..., d results...) -> (d args of g) */
  snprintf(name, sizeof name, "%s.bwds", base);
  Func *bs = ir_add_func(m, name);
  memset(map, 0, sizeof *map * ((size_t)b->nvalues + 1));
  for (int i = 0; i < g->narg; i++) map[b->args[i]->id] = ir_add_arg(bs, b->args[i]->name, b->args[i]->type);
  for (int i = 0; i < ns; i++) {
    char sn[32];
    snprintf(sn, sizeof sn, "s%d", i);
    map[order[i]->id] = ir_add_arg(bs, sn, order[i]->type);
  }
  for (int i = g->narg; i < b->narg; i++) map[b->args[i]->id] = ir_add_arg(bs, b->args[i]->name, b->args[i]->type);
  for (op = first_bwd; op; op = op->next) clone_op(m, bs, op, map);
  Value **brets = calloc((size_t)b->nret + 1, sizeof *brets);
  for (int i = 0; i < b->nret; i++) {
    brets[i] = map[b->ret[i]->id];
    IR_ASSERT(brets[i]);
  }
  ir_set_return(bs, b->nret, brets);

  /* @train: F = call @g -> call @g.fwd; B = call @g.bwd -> call @g.bwds with F's saved values */
  for (Op *B = t->first; B; B = B->next) {
    if (B->kind != OP_CALL || strcmp(ir_attr_s(B, "callee"), b->name) != 0) continue;
    Op *F = NULL;
    for (Op *q = t->first; q && q != B && !F; q = q->next)
      if (q->kind == OP_CALL && strcmp(ir_attr_s(q, "callee"), g->name) == 0 && q->nin == g->narg) {
        bool same = true;
        for (int k = 0; k < g->narg && same; k++) same = q->in[k] == B->in[k];
        if (same) F = q;
      }
    if (!F) continue; /* (a recompute call: none under this policy) */
    Op *nfw = ir_op_new(t, OP_CALL, F->nin, F->in, ny + ns);
    for (int k = 0; k < F->nattr; k++) ir_set_attr(nfw, F->attr[k]);
    ir_set_attr_sym(nfw, "callee", fw->name);
    char err[256];
    if (!ir_infer(m, nfw, err, sizeof err)) die("checkpoint<store>: %s", err);
    ir_insert_before(F, nfw);
    for (int r = 0; r < ny; r++) ir_replace_uses(t, F->out[r], nfw->out[r]);
    ir_unlink(F);
    Value *in[512];
    int n = 0;
    IR_ASSERT(B->nin + ns <= 512);
    for (int k = 0; k < g->narg; k++) in[n++] = B->in[k];
    for (int k = 0; k < ns; k++) in[n++] = nfw->out[ny + k];
    for (int k = g->narg; k < B->nin; k++) in[n++] = B->in[k];
    Op *nbw = ir_op_new(t, OP_CALL, n, in, B->nout);
    for (int k = 0; k < B->nattr; k++) ir_set_attr(nbw, B->attr[k]);
    ir_set_attr_sym(nbw, "callee", bs->name);
    if (!ir_infer(m, nbw, err, sizeof err)) die("checkpoint<store>: %s", err);
    ir_insert_before(B, nbw);
    for (int k = 0; k < B->nout; k++) ir_replace_uses(t, B->out[k], nbw->out[k]);
    Op *next = B->next;
    ir_unlink(B);
    B = next ? next->prev : t->last;
    if (!B) break;
  }
  free(fwd_val);
  free(saved);
  free(order);
  free(map);
  free(rets);
  free(brets);
  free(yb);
  return true;
}

static bool store_all(Module *m, Func *t, const PassOptions *o, Diag *d) {
  int n = m->nfunc;
  Func **fs = malloc(sizeof *fs * (size_t)(n ? n : 1));
  for (int i = 0; i < n; i++) fs[i] = m->funcs[i];
  bool ok = true;
  for (int i = 0; i < n && ok; i++) {
    size_t len = strlen(fs[i]->name);
    if (len > 4 && strcmp(fs[i]->name + len - 4, ".bwd") == 0) ok = store_block(m, t, fs[i], o, d);
  }
  free(fs);
  return ok;
}

/* The rules between the options, checked when the pipeline is written (registry.c): exactly one
 * policy, and store=false is none. The ranges of every and budget are the registry's. */
bool pass_checkpoint_check(const PipelineEntry *e, Diag *d) {
  const PassOptions *o = &e->opts;
  bool has_every = pass_opt_is_set(o, "every"), has_sqrt = pass_opt_is_set(o, "sqrt"),
       has_budget = pass_opt_is_set(o, "budget"), has_store = pass_opt_is_set(o, "store");
  if (has_every + has_sqrt + has_budget + has_store != 1) {
    diag_error(d, e->file, e->line, e->col, "checkpoint: give exactly one policy: store, every=N, sqrt or budget=BYTES");
    return false;
  }
  if (has_store && !pass_opt_bool(o, "store")) {
    diag_error(d, e->file, e->line, e->col,
               "checkpoint: store=false is no policy; give store, every=N, sqrt or budget=BYTES");
    return false;
  }
  return true;
}

bool pass_checkpoint(Module *m, const PassOptions *o, Diag *d) {
  Func *t = ir_train_func(m);
  bool has_every = pass_opt_is_set(o, "every"), has_sqrt = pass_opt_is_set(o, "sqrt"),
       has_store = pass_opt_is_set(o, "store");
  if (!t) {
    pass_error(o, d, "checkpoint: no training function: run autodiff first");
    return false;
  }
  if (ir_module_attr(m, "checkpoint_every")) {
    pass_error(o, d, "checkpoint: the module is already checkpointed (the pass runs once)");
    return false;
  }
  if (has_store) {
    if (!store_all(m, t, o, d)) return false;
    ir_module_set_attr(m, (Attr){.key = "checkpoint_every", .kind = ATTR_INT, .i = 0});
    return true;
  }
  int L = chain_length(m);
  int every = 1;
  if (has_every) {
    int64_t n = pass_opt_int(o, "every");   /* at least 1 (registry.c) */
    every = (int)(n < L ? n : (L > 0 ? L : 1));
  } else if (has_sqrt) {
    every = L > 0 ? (int)ceil(sqrt((double)L)) : 1;
  } else {
    int64_t budget = pass_opt_int(o, "budget"), best_arena = -1, min_arena = INT64_MAX;
    int best = 0;
    /* storing everything recomputes nothing: take it if it fits */
    int64_t sa = arena_with(m, 0, o, d);
    if (sa >= 0 && sa <= budget) {
      if (!store_all(m, t, o, d)) return false;
      ir_module_set_attr(m, (Attr){.key = "checkpoint_every", .kind = ATTR_INT, .i = 0});
      return true;
    }
    /* recompute falls as segments shorten: try every = 1, 2, ... and keep the first that fits */
    for (int n = 1; n <= (L > 0 ? L : 1); n++) {
      int64_t a = arena_with(m, n, o, d);
      if (a >= 0 && a < min_arena) min_arena = a;
      if (a >= 0 && a <= budget && !best) {
        best = n;
        best_arena = a;
      }
    }
    if (!best) {
      pass_error(o, d,
                 "checkpoint: budget=%lld bytes is below the smallest planned training arena any placement "
                 "reaches: %lld bytes",
                 (long long)budget, (long long)min_arena);
      return false;
    }
    every = best;
    (void)best_arena;
  }
  int recomputed = every > 1 ? apply_every(m, t, every) : 0;
  ir_module_set_attr(m, (Attr){.key = "checkpoint_every", .kind = ATTR_INT, .i = every});
  (void)recomputed;
  return true;
}
