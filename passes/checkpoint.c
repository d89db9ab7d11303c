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
 * Policies: every=N keeps every N-th block input; sqrt keeps about sqrt(L) (N = ceil(sqrt L));
 * budget=BYTES chooses the kept set with the least recompute whose planned training arena fits.
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
    const char *callee = op->kind == OP_CALL ? ir_attr_str(op, "callee") : NULL;
    if (!callee || strstr(callee, ".bwd")) continue;
    if (c->n > 0 && !(op->nin > 0 && op->in[0] == c->fwd[c->n - 1]->out[0])) continue;
    char want[256];
    snprintf(want, sizeof want, "%s.bwd", callee);
    Op *b = NULL;
    for (Op *q = op->next; q && !b; q = q->next)
      if (q->kind == OP_CALL && strcmp(ir_attr_str(q, "callee"), want) == 0 && same_operands(op, q)) b = q;
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

static Func *train_func(Module *m) {
  const Attr *a = ir_module_attr(m, "train");
  return a && a->kind == ATTR_SYM ? ir_find_func(m, a->s) : NULL;
}

static int chain_length(Module *m) {
  Func *t = train_func(m);
  if (!t) return 0;
  Chain c;
  find_chain(t, &c);
  int n = c.n;
  chain_free(&c);
  return n;
}

/* The planned training arena with every=N, measured on a copy after fuse, dce and memplan. */
static int64_t arena_with(const Module *m, int every, Diag *d) {
  char *text = ir_print_to_string(m);
  Diag quiet;
  diag_init(&quiet, d->out);
  Module *c = ir_parse("<checkpoint candidate>", text, strlen(text), &quiet);
  free(text);
  IR_ASSERT(c);
  apply_every(c, train_func(c), every);
  /* the optimisations that follow checkpoint in the default pipeline, then the planner */
  Pipeline p;
  pass_pipeline_init(&p);
  PassRunConfig cfg = {.dump = d->out};
  if (!pass_parse_pipeline(&p, "constfold,cse,fuse,dce,memplan", "<checkpoint>", 1, 1, &quiet) ||
      !pass_run_pipeline(c, &p, &cfg, &quiet))
    die("checkpoint: planning a candidate failed");
  pass_pipeline_free(&p);
  int64_t a = memplan_arena_bytes(c, train_func(c));
  ir_module_free(c);
  diag_free(&quiet);
  return a;
}

bool pass_checkpoint(Module *m, const PassOptions *o, Diag *d) {
  Func *t = train_func(m);
  bool has_every = pass_opt_is_set(o, "every"), has_sqrt = pass_opt_is_set(o, "sqrt"),
       has_budget = pass_opt_is_set(o, "budget");
  if (has_every + has_sqrt + has_budget != 1) {
    diag_error(d, m->file, 0, 0, "checkpoint: give exactly one policy: every=N, sqrt or budget=BYTES");
    return false;
  }
  if (!t) {
    diag_error(d, m->file, 0, 0, "checkpoint: no training function: run autodiff first");
    return false;
  }
  int L = chain_length(m);
  int every = 1;
  if (has_every) {
    int64_t n = pass_opt_int(o, "every");
    if (n < 1) {
      diag_error(d, m->file, 0, 0, "checkpoint: every=%lld must be at least 1", (long long)n);
      return false;
    }
    every = (int)(n < L ? n : (L > 0 ? L : 1));
  } else if (has_sqrt) {
    every = L > 0 ? (int)ceil(sqrt((double)L)) : 1;
  } else {
    int64_t budget = pass_opt_int(o, "budget"), best_arena = -1, min_arena = INT64_MAX;
    int best = 0;
    /* recompute falls as segments shorten: try every = 1, 2, ... and keep the first that fits */
    for (int n = 1; n <= (L > 0 ? L : 1); n++) {
      int64_t a = arena_with(m, n, d);
      if (a >= 0 && a < min_arena) min_arena = a;
      if (a >= 0 && a <= budget && !best) {
        best = n;
        best_arena = a;
      }
    }
    if (!best) {
      diag_error(d, m->file, 0, 0,
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
