/* prune.c: weight pruning (the `prune` pass; docs/passes.md, "prune").
 *
 * Four kinds, two families:
 *
 * Masked (kind=magnitude, kind=nm): the shapes stay; each f32 [N,K] linear weight of the blocks
 * (and, head=true, of the entry function) gets a pruning fact, prune=magnitude(S) (scope=layer:
 * the S smallest |w| of each matrix are zero), prune=global(S) (scope=global: one threshold over all
 * of them) or prune=nm(N:M) (N kept of every M consecutive weights along K). The runtime computes the
 * masks from the weights it loads, and in training holds them after every optimiser step and
 * recomputes them on the train config's schedule (Zhu & Gupta 2017). For inference the pass also
 * chooses the storage: csr (the nonzeros in compressed sparse rows, read by the sparse kernel) when
 * the sparsity is at least the decode break-even measured on this machine for the matrix's size
 * (pass_prune_breakeven, docs/benchmarks.md), else dense masked f32. csr needs a nonzero count fixed at compile time, so
 * scope=global (each matrix's count depends on the values) stays dense, and so does any pipeline
 * that builds @train (a later autodiff or checkpoint: training reads dense weights).
 *
 *   %0 = param {p=@h.0.mlp.c_fc.weight} : f32[512,128]   ->   ... : csr[512,128]
 *   param @h.0.mlp.c_fc.weight : f32[512,128] ...            param @h.0.mlp.c_fc.weight : csr[512,128] ... nnz=6554 prune=magnitude(0.9)
 *
 * Structured (kind=neurons, kind=heads): the matrices shrink, so the emitted GEMMs are smaller.
 *   neurons  an MLP, linear(x, W1) [+ b1] -> unary activation -> linear(., W2), keeps
 *            H - round(S*H) of its H hidden units: W1 [H,C] and b1 [H] lose rows, W2 [C,H] columns.
 *   heads    an attention, linear(x, Wqkv) [+ bqkv] -> attention{heads=H} -> linear(., Wo), keeps
 *            H - heads=R of its heads: Wqkv [3C,C] and bqkv [3C] lose the q, k and v rows of each
 *            removed head, Wo [C_out,C] its columns; the head dimension stays.
 * Each shrunk parameter records which slice of the full tensor it is (select=RULE(@GROUP,AXIS,
 * PARTS,UNIT,OF)); the runtime picks the kept units when it loads a full-size checkpoint, by the
 * group's score: for neurons the L2 norm of each unit's weights over the group (W1 row, b1 entry,
 * W2 column), for heads Michel et al.'s importance (score=importance: the GROUP.head_importance
 * tensor PROG importance writes) or the same L2 norm (score=norm). The pattern is matched in every
 * function; a block function's arguments are retyped, so every layer keeps the same count.
 *
 * What it refuses: structured kinds after autodiff (@train would still have the full shapes);
 * options that make no sense (sparsity outside (0,1), N >= M, K not a multiple of M, removing every
 * head); nothing to prune. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pass.h"

/* The sparsity from which csr storage with the sparse kernel (rt_linear_csr) is faster than the
 * dense f32 product (oneDNN), measured on this machine by tests/bench/sparse_breakeven.sh (1
 * thread, docs/benchmarks.md, "Sparse kernels: break-even"). Decode (one row): 46-55% for GPT-2
 * small's matrices (768x768, 3072x768, 768x3072), 72-82% for gpt-tiny's (512x128, 128x512);
 * batched rows win from lower sparsities (M = 64: <= 30%; M = 512: 48-54%). auto chooses csr at
 * the decode break-even, rounded up, by the matrix's size: where decode pays, a forward does too. */
#define PRUNE_BREAKEVEN_LARGE 0.60 /* matrices of at least 768 x 768 elements */
#define PRUNE_BREAKEVEN_SMALL 0.85 /* smaller ones */
#define PRUNE_LARGE_ELEMS ((int64_t)768 * 768)

double pass_prune_breakeven(int64_t N, int64_t K) {
  return N * K >= PRUNE_LARGE_ELEMS ? PRUNE_BREAKEVEN_LARGE : PRUNE_BREAKEVEN_SMALL;
}

/* ---- masked kinds ---- */

static void csr_settle(Module *m);

static bool prune_masked(Module *m, const PassOptions *o, Diag *d, bool nm) {
  double s = pass_opt_float(o, "sparsity");
  int n = (int)pass_opt_int(o, "n"), mm = (int)pass_opt_int(o, "m");
  bool global = !strcmp(pass_opt_str(o, "scope"), "global"), head = pass_opt_bool(o, "head");
  const char *format = pass_opt_str(o, "format");
  if (nm && n >= mm) {
    pass_error(o, d, "prune: kind=nm keeps n of every m weights: n=%d must be less than m=%d", n, mm);
    return false;
  }
  if (nm) s = 1.0 - (double)n / mm;
  bool trains = ir_train_func(m) || o->train_follows;
  if (!strcmp(format, "csr") && trains) {
    pass_error(o, d, "prune: format=csr is for inference, and this pipeline builds @train (training reads dense "
                     "masked weights): use format=dense or auto, or build the inference program without autodiff");
    return false;
  }
  if (!strcmp(format, "csr") && global) {
    pass_error(o, d, "prune: format=csr needs each matrix's nonzero count at compile time; scope=global sets one "
                     "threshold over all of them: use scope=layer, or format=dense");
    return false;
  }
  bool csr_asked = !strcmp(format, "csr"), csr_auto = !strcmp(format, "auto") && !trains && !global, any_csr = false;
  PassReach *r = pass_param_reach(m);
  PassSkip sk = pass_skip_new(pass_opt_str(o, "skip"));
  bool ok = true;
  int count = 0;
  for (int i = 0; i < m->nparam; i++) {
    Param *p = m->params[i];
    const PassReach *u = &r[i];
    if (pass_skip_match(&sk, p->name) || p->type.dtype != DT_F32 || p->type.rank != 2 || u->other || u->embedding ||
        !(u->block || u->head) || (u->head && !head) || p->prune != PRUNE_NONE)
      continue;
    int64_t N = p->type.dim[0], K = p->type.dim[1];
    if (nm && K % mm) {
      pass_error(o, d, "prune: @%s [%lld,%lld]: kind=nm with m=%d needs its input dimension to be a multiple of %d "
                       "(skip it with skip=%s)", p->name, (long long)N, (long long)K, mm, mm, p->name);
      ok = false;
      continue;
    }
    p->prune = nm ? PRUNE_NM : global ? PRUNE_GLOBAL : PRUNE_MAGNITUDE;
    p->sparsity = nm ? 0 : s;
    p->prune_n = nm ? n : 0;
    p->prune_m = nm ? mm : 0;
    if ((csr_asked || (csr_auto && s >= pass_prune_breakeven(N, K))) && K <= 65536) {
      int64_t nzero = nm ? N * K / mm * (mm - n) : (int64_t)floor(s * (double)(N * K) + 0.5);
      if (nzero < N * K) { /* room for the nonzeros the mask leaves (at least one) */
        p->type.dtype = DT_CSR;
        p->nnz = N * K - nzero;
        any_csr = true;
      }
    }
    count++;
  }
  ok &= pass_skip_done(&sk, o, d, "prune");
  free(r);
  if (!ok) return false;
  if (count == 0) {
    pass_error(o, d, "prune: no weight to prune (only f32 [N,K] weights read by linear ops in the blocks are%s)",
               head ? " and in the entry function" : "; the entry's own (the head) need head=true");
    return false;
  }
  if (any_csr) csr_settle(m);
  return true;
}

/* ---- structured kinds ---- */

/* Every linear reading a csr weight gets its capacity as nnz= (the kernel's section offsets depend
 * on it), so all the parameters a linear's weight is bound to must agree: a block argument bound to
 * csr and dense weights alike (skip= of some layers), or to capacities that differ, keeps its
 * parameters dense (masked). Then the types follow (pass_refit_types). */
static void csr_settle(Module *m) {
  enum { CAP = 4096 };
  Param **b = malloc(sizeof *b * CAP);
  if (!b) die("out of memory");
  for (bool changed = true; changed;) {
    changed = false;
    for (int fi = 0; fi < m->nfunc; fi++)
      for (Op *op = m->funcs[fi]->first; op; op = op->next) {
        if (op->kind != OP_LINEAR || op->nin < 2) continue;
        int k = pass_param_bindings(m, m->funcs[fi], op->in[1], b, CAP), ncsr = 0;
        for (int i = 0; i < k; i++) ncsr += b[i]->type.dtype == DT_CSR && b[i]->nnz == b[0]->nnz;
        if (k > 0 && ncsr > 0 && ncsr < k)
          for (int i = 0; i < k; i++)
            if (b[i]->type.dtype == DT_CSR) {
              b[i]->type.dtype = DT_F32;
              b[i]->nnz = 0;
              changed = true;
            }
      }
  }
  for (int fi = 0; fi < m->nfunc; fi++)
    for (Op *op = m->funcs[fi]->first; op; op = op->next)
      if (op->kind == OP_LINEAR && op->nin >= 2 && pass_param_bindings(m, m->funcs[fi], op->in[1], b, CAP) > 0 &&
          b[0]->type.dtype == DT_CSR)
        ir_set_attr_int(op, "nnz", b[0]->nnz);
  free(b);
  pass_refit_types(m, "csr");
}

/* The sole user of v in f when v has exactly one use, else NULL. */
static Op *sole_user(Func *f, const Value *v) {
  Op *u = NULL;
  for (int i = 0; i < f->nret; i++)
    if (f->ret[i] == v) return NULL;
  for (Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nin; i++)
      if (op->in[i] == v) {
        if (u) return NULL;
        u = op;
      }
  return u;
}

/* One structured site: the weights (and bias) that lose units along their axes. */
typedef struct Member {
  Value *w;  /* the weight or bias value in f */
  int axis;  /* 0 rows, 1 columns */
  int parts; /* 3 for qkv, else 1 */
} Member;

/* Shrinks the members of one site in f: every parameter bound to them loses units (of `of` per
 * part, `unit` elements each, keep kept) and records its select fact, grouped by the parameter
 * bound to members[key]. False (reported) when a binding is not a parameter or differs in count. */
static bool shrink_site(Module *m, const PassOptions *o, Diag *d, Func *f, const Member *mem, int nmem, int key,
                        int unit, int of, int keep, SelectRule rule) {
  enum { CAP = 4096 };
  Param **b = malloc(sizeof *b * CAP * (size_t)nmem);
  if (!b) die("out of memory");
  int nb = -1;
  for (int i = 0; i < nmem; i++) {
    int k = pass_param_bindings(m, f, mem[i].w, b + (size_t)i * CAP, CAP);
    if (k <= 0 || (nb >= 0 && k != nb)) {
      pass_error(o, d, "prune: in @%s, a weight of the %s is not bound to a parameter at every call", f->name,
                 rule == SEL_NORM && unit == 1 ? "MLP" : "attention");
      free(b);
      return false;
    }
    nb = k;
  }
  for (int c = 0; c < nb; c++) {
    const Param *g = b[(size_t)key * CAP + c];
    for (int i = 0; i < nmem; i++) {
      Param *p = b[(size_t)i * CAP + c];
      if (p->select != SEL_NONE) continue; /* the same parameter bound twice */
      p->type.dim[mem[i].axis] = (int64_t)mem[i].parts * unit * keep;
      p->select = rule;
      p->select_group = g->name;
      p->select_axis = mem[i].axis;
      p->select_parts = mem[i].parts;
      p->select_unit = unit;
      p->select_of = of;
    }
  }
  free(b); /* f's arguments and param ops follow the parameters' new types in pass_refit_types */
  return true;
}

/* The weight w of linear L and its bias: L's result, or the add of a rank-1 bias to it when that
 * add is its only user. Returns the value the next op reads; *bias is the bias value or NULL. */
static Value *with_bias(Func *f, Op *L, Value **bias, Op **add) {
  Value *y = L->out[0];
  *bias = NULL;
  *add = NULL;
  Op *u = sole_user(f, y);
  if (u && u->kind == OP_ADD && u->nin == 2) {
    Value *other = u->in[0] == y ? u->in[1] : u->in[0];
    if (other->type.rank == 1 && other->type.dim[0] == y->type.dim[y->type.rank - 1]) {
      *bias = other;
      *add = u;
      return u->out[0];
    }
  }
  return y;
}

static bool prune_structured(Module *m, const PassOptions *o, Diag *d, bool heads) {
  if (ir_train_func(m)) {
    pass_error(o, d, "prune: kind=%s changes the shapes: run it before autodiff (the module already trains: @%s)",
               heads ? "heads" : "neurons", ir_train_func(m)->name);
    return false;
  }
  if (pass_opt_is_set(o, "skip") || pass_opt_is_set(o, "format") || pass_opt_is_set(o, "scope")) {
    pass_error(o, d, "prune: skip=, format= and scope= are options of kind=magnitude and kind=nm");
    return false;
  }
  double s = pass_opt_float(o, "sparsity");
  int drop = (int)pass_opt_int(o, "heads");
  SelectRule rule = heads && !strcmp(pass_opt_str(o, "score"), "importance") ? SEL_IMPORTANCE : SEL_NORM;
  int sites = 0;
  bool ok = true;
  for (int fi = 0; fi < m->nfunc && ok; fi++) {
    Func *f = m->funcs[fi];
    for (Op *L1 = f->first; L1 && ok; L1 = L1->next) {
      if (L1->kind != OP_LINEAR || L1->nin != 2 || L1->in[1]->type.rank != 2 || L1->in[1]->type.dtype != DT_F32)
        continue;
      Value *b1;
      Op *add;
      Value *h = with_bias(f, L1, &b1, &add);
      Op *mid = sole_user(f, h);
      if (!mid) continue;
      if (heads && mid->kind == OP_ATTENTION) {
        Op *L2 = sole_user(f, mid->out[0]);
        if (!L2 || L2->kind != OP_LINEAR || L2->nin != 2 || L2->in[0] != mid->out[0]) continue;
        int H = (int)ir_attr_i(mid, "heads");
        int64_t C = mid->out[0]->type.dim[2], hd = C / H;
        if (ir_kv_heads(mid) != H) {
          pass_error(o, d, "prune: heads= on grouped-query attention (kv_heads=%lld, in @%s) is not implemented",
                     (long long)ir_kv_heads(mid), f->name);
          ok = false;
          break;
        }
        if (drop >= H) {
          pass_error(o, d, "prune: heads=%d would remove every one of the %d heads of an attention in @%s", drop, H,
                     f->name);
          ok = false;
          break;
        }
        Member mem[3] = {{L1->in[1], 0, 3}, {L2->in[1], 1, 1}, {b1, 0, 3}};
        ok = shrink_site(m, o, d, f, mem, b1 ? 3 : 2, 1, (int)hd, H, H - drop, rule);
        ir_set_attr_int(mid, "heads", H - drop);
        sites++;
      } else if (!heads && (ir_op_info[mid->kind].flags & OPF_EW) && mid->nin == 1) {
        Op *L2 = sole_user(f, mid->out[0]);
        if (!L2 || L2->kind != OP_LINEAR || L2->nin != 2 || L2->in[0] != mid->out[0] ||
            L2->in[1]->type.dtype != DT_F32)
          continue;
        int H = (int)L1->in[1]->type.dim[0];
        int keep = H - (int)floor(s * H + 0.5);
        if (keep < 1) keep = 1;
        if (keep == H) continue;
        Member mem[3] = {{L1->in[1], 0, 1}, {L2->in[1], 1, 1}, {b1, 0, 1}};
        ok = shrink_site(m, o, d, f, mem, b1 ? 3 : 2, 0, 1, H, keep, SEL_NORM);
        sites++;
      }
    }
  }
  if (!ok) return false;
  if (sites == 0) {
    pass_error(o, d, heads ? "prune: kind=heads found no attention (linear [+ bias] -> attention -> linear)"
                           : "prune: kind=neurons found no MLP to shrink (linear [+ bias] -> activation -> linear, "
                             "with at least one unit removed at this sparsity)");
    return false;
  }
  pass_refit_types(m, "pruned");
  return true;
}

bool pass_prune_check(const PipelineEntry *e, Diag *d) {
  const PassOptions *o = &e->opts;
  const char *kind = pass_opt_str(o, "kind");
  double s = pass_opt_float(o, "sparsity");
  if (!(s > 0 && s < 1)) {
    diag_error(d, e->file, e->line, e->col, "prune: sparsity=%g is not in (0, 1)", s);
    return false;
  }
  if (!strcmp(kind, "nm") && pass_opt_int(o, "n") >= pass_opt_int(o, "m")) {
    diag_error(d, e->file, e->line, e->col, "prune: kind=nm keeps n of every m weights: n=%lld must be less than m=%lld",
               (long long)pass_opt_int(o, "n"), (long long)pass_opt_int(o, "m"));
    return false;
  }
  bool structured = !strcmp(kind, "neurons") || !strcmp(kind, "heads");
  if (structured && (pass_opt_is_set(o, "skip") || pass_opt_is_set(o, "format") || pass_opt_is_set(o, "scope"))) {
    diag_error(d, e->file, e->line, e->col, "prune: skip=, format= and scope= are options of kind=magnitude and kind=nm");
    return false;
  }
  return true;
}

bool pass_prune(Module *m, const PassOptions *o, Diag *d) {
  const char *kind = pass_opt_str(o, "kind");
  double s = pass_opt_float(o, "sparsity");
  if (!(s > 0 && s < 1)) {
    pass_error(o, d, "prune: sparsity=%g is not in (0, 1)", s);
    return false;
  }
  if (!strcmp(kind, "heads") || !strcmp(kind, "neurons")) return prune_structured(m, o, d, kind[0] == 'h');
  return prune_masked(m, o, d, !strcmp(kind, "nm"));
}
