/* lowrank.c: low-rank factorisation of trained linear weights (the `lowrank` pass:
 * lowrank<rank=R|energy=E;scope=all|attention|ffn;skip=NAMES;head;force;uniform>).
 *
 * Each selected linear layer's weight W [N,K] becomes the product of two factors by truncated SVD
 * (Eckart-Young: the best rank-R approximation in the Frobenius norm), W ~ U V with
 *   U = U_R S_R^1/2  [N,R]     (parameter NAME.lr_u)
 *   V = S_R^1/2 V_R^T [R,K]    (parameter NAME.lr_v)
 * the balanced split (both factors carry the square root of the singular values, so they have the
 * same scale and fine-tune alike). The linear is rewritten into two:
 *
 *   %w = param {p=@h.0.fc.w} : f32[16,8]      ->   %v = param {p=@h.0.fc.w.lr_v} : f32[4,8]
 *   %y = linear(%x, %w) {epi=...} : f32[..,16]      %u = param {p=@h.0.fc.w.lr_u} : f32[16,4]
 *                                                   %t = linear(%x, %v) : f32[..,4]
 *                                                   %y = linear(%t, %u) {epi=...} : f32[..,16]
 *
 * the bias and any fused epilogue (the extra operands) staying on the second linear. W is removed
 * from the module (ir_remove_params); the factors are ordinary f32 parameters, so autodiff run
 * afterwards fine-tunes them. A block function's weight argument becomes two arguments (V, U)
 * and every call binds the layer's factors; when the layers' ranks differ (energy=) the calls go to
 * clones typed for them (pass_refit_types).
 *
 * The rank: rank=R for every matrix (at most min(N,K)), or energy=E, per matrix the smallest R
 * whose singular values keep sum_{i<R} s_i^2 >= E sum_i s_i^2. A matrix where R (N+K) >= N K saves
 * no parameters and stays dense with a note, unless force=true (tests: full rank is exact);
 * uniform=true gives a block weight argument one rank, its layers' largest (one block function). The
 * values come from Param.data, which the driver fills from --weights W.safetensors; without weights
 * (golden tests, `modelc stats` before choosing) rank= rewrites the shapes only (the factors get
 * W's initialiser) and energy= is an error. SVD is LAPACK's dgesdd (OpenBLAS), in double.
 *
 * Which weights: f32 [N,K] parameters read only as linear weights (not embedding tables, not a tied
 * head), in the block functions; the entry function's own (an untied head, a classifier) with
 * head=true. scope=attention takes the linears feeding an attention op (through a bias add) or
 * reading its result; scope=ffn the other linears of the blocks. skip= names weights left dense. A
 * weight already pruned, quantised or factorised is left alone. A block argument is factorised when
 * the weights of all its calls are (else every layer stays dense, with a note).
 *
 * Report: per matrix a note "lowrank: @W [N,K]: rank R, energy E, params A -> B, FLOPs/token C ->
 * D", and the fact lowrank=svd(R,E) on both factors (docs/ir.md), which `modelc stats` sums up.
 * It runs before autodiff (a module that trains is refused).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pass.h"

/* LAPACK's divide-and-conquer SVD (the Fortran interface OpenBLAS exports; the trailing length of
 * the character argument is gfortran's hidden argument). */
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
                    const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork,
                    int *info, size_t jobz_len);

bool pass_svd(const float *w, int64_t N, int64_t K, PassSvd *out) {
  memset(out, 0, sizeof *out);
  if (N < 1 || K < 1 || N > INT32_MAX / (K > 0 ? K : 1)) return false;
  int n = (int)N, k = (int)K, mn = n < k ? n : k, lwork = -1, info = 0;
  double *a = malloc(sizeof *a * (size_t)n * (size_t)k);
  out->s = malloc(sizeof *out->s * (size_t)mn);
  out->u = malloc(sizeof *out->u * (size_t)n * (size_t)mn);
  out->vt = malloc(sizeof *out->vt * (size_t)mn * (size_t)k);
  int *iwork = malloc(sizeof *iwork * 8 * (size_t)mn);
  if (!a || !out->s || !out->u || !out->vt || !iwork) die("out of memory");
  for (int i = 0; i < n; i++) /* column-major for LAPACK: a[i + j n] = W[i][j] */
    for (int j = 0; j < k; j++) a[i + (size_t)j * n] = w[(size_t)i * k + j];
  double q = 0;
  dgesdd_("S", &n, &k, a, &n, out->s, out->u, &n, out->vt, &mn, &q, &lwork, iwork, &info, 1); /* size query */
  double *work = NULL;
  if (info == 0) {
    lwork = (int)q + 1;
    work = malloc(sizeof *work * (size_t)lwork);
    if (!work) die("out of memory");
    dgesdd_("S", &n, &k, a, &n, out->s, out->u, &n, out->vt, &mn, work, &lwork, iwork, &info, 1);
  }
  free(work);
  free(iwork);
  free(a);
  out->N = N;
  out->K = K;
  out->mn = mn;
  if (info != 0) pass_svd_free(out);
  return info == 0;
}

void pass_svd_free(PassSvd *s) {
  free(s->s);
  free(s->u);
  free(s->vt);
  memset(s, 0, sizeof *s);
}

double pass_svd_energy(const PassSvd *s, int r) {
  double kept = 0, total = 0;
  for (int i = 0; i < s->mn; i++) {
    total += s->s[i] * s->s[i];
    if (i < r) kept += s->s[i] * s->s[i];
  }
  return total > 0 ? kept / total : 1.0;
}

int pass_svd_rank_for(const PassSvd *s, double energy) {
  double total = 0, kept = 0;
  for (int i = 0; i < s->mn; i++) total += s->s[i] * s->s[i];
  for (int r = 1; r <= s->mn; r++) {
    kept += s->s[r - 1] * s->s[r - 1];
    if (kept >= energy * total * (1 - 1e-12)) return r;
  }
  return s->mn;
}

void pass_svd_factors(const PassSvd *s, int r, float *u, float *v) {
  int64_t N = s->N, K = s->K;
  for (int j = 0; j < r; j++) {
    double h = sqrt(s->s[j] > 0 ? s->s[j] : 0);
    for (int64_t i = 0; i < N; i++) u[i * r + j] = (float)(s->u[i + (int64_t)j * N] * h);
    for (int64_t i = 0; i < K; i++) v[(int64_t)j * K + i] = (float)(s->vt[j + i * s->mn] * h);
  }
}

bool pass_lowrank_check(const PipelineEntry *e, Diag *d) {
  const PassOptions *o = &e->opts;
  bool r = pass_opt_is_set(o, "rank"), en = pass_opt_is_set(o, "energy");
  double E = pass_opt_float(o, "energy");
  if (r == en) {
    diag_error(d, e->file, e->line, e->col, "lowrank: give exactly one of rank=R (a fixed rank) and energy=E (the "
                                            "smallest rank keeping that fraction of each matrix's energy)");
    return false;
  }
  if (r && pass_opt_int(o, "rank") < 1) {
    diag_error(d, e->file, e->line, e->col, "lowrank: rank=%lld: the rank is at least 1", (long long)pass_opt_int(o, "rank"));
    return false;
  }
  if (en && !(E > 0 && E <= 1)) {
    diag_error(d, e->file, e->line, e->col, "lowrank: energy=%g is not in (0, 1]", E);
    return false;
  }
  return true;
}

/* What becomes of one parameter: its rank and factors, or why it stays dense. */
typedef struct Choice {
  bool done;         /* decided */
  bool dense;        /* stays dense */
  int rank;
  double energy;     /* retained; -1: not known (no weights) */
  bool noted;        /* its "stays dense" note was given */
  PassSvd svd;       /* its SVD, when the module carries its values (freed at the end of the pass) */
  Param *u, *v;      /* the factors, once created */
} Choice;

/* Is the linear L in f one of an attention's (feeding one through an optional bias add, or
 * reading its result)? */
static bool attention_linear(const Func *f, const Op *L) {
  if (L->in[0]->def && L->in[0]->def->kind == OP_ATTENTION) return true;
  const Value *y = L->out[0];
  for (int pass = 0; pass < 2; pass++) {
    const Value *next = NULL;
    for (const Op *op = f->first; op; op = op->next)
      for (int i = 0; i < op->nin; i++)
        if (op->in[i] == y) {
          if (op->kind == OP_ATTENTION) return true;
          if (op->kind == OP_ADD && op->nin == 2) next = op->out[0];
        }
    if (!next) break;
    y = next;
  }
  return false;
}

/* The linears of f reading w as their weight (operand 1), or 0 when w has another reader. */
static int weight_users(const Func *f, const Value *w, Op **users, int cap) {
  int n = 0;
  for (int i = 0; i < f->nret; i++)
    if (f->ret[i] == w) return 0;
  for (Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nin; i++)
      if (op->in[i] == w) {
        if (op->kind != OP_LINEAR || i != 1 || n >= cap) return 0;
        users[n++] = op;
      }
  return n;
}

static Value *load_param(Module *m, Func *f, Op *before, const Param *p) {
  Op *op = ir_op_new(f, OP_PARAM, 0, NULL, 1);
  ir_set_attr_sym(op, "p", p->name);
  char e[256];
  if (!ir_infer(m, op, e, sizeof e)) die("lowrank: %s", e);
  ir_insert_before(before, op);
  return op->out[0];
}

/* linear(x, w, extra..) -> linear(linear(x, v), u, extra..) for each user of w in f. */
static void split_users(Module *m, Func *f, Op **users, int n, Value *v, Value *u) {
  for (int k = 0; k < n; k++) {
    Op *L = users[k];
    Op *L1 = ir_op_new(f, OP_LINEAR, 2, (Value *[]){L->in[0], v}, 1);
    char e[256];
    if (!ir_infer(m, L1, e, sizeof e)) die("lowrank: %s", e);
    ir_insert_before(L, L1);
    L->in[0] = L1->out[0];
    L->in[1] = u;
  }
}

/* Unlinks a param op whose result nothing reads any more. */
static void drop_if_unused(Func *f, Op *def) {
  if (!def) return;
  for (const Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nin; i++)
      if (op->in[i] == def->out[0]) return;
  for (int i = 0; i < f->nret; i++)
    if (f->ret[i] == def->out[0]) return;
  ir_unlink(def);
}

static void fmt_count(char *buf, size_t n, int64_t v) {
  char raw[32];
  snprintf(raw, sizeof raw, "%lld", (long long)v);
  size_t len = strlen(raw), k = 0;
  for (size_t i = 0; i < len && k + 2 < n; i++) {
    if (i && (len - i) % 3 == 0) buf[k++] = ',';
    buf[k++] = raw[i];
  }
  buf[k] = 0;
}

/* Sets c's rank r, its retained energy (when its SVD is known) and whether it stays dense. */
static void set_rank(const PassOptions *o, const Param *p, Choice *c, int r) {
  int64_t N = p->type.dim[0], K = p->type.dim[1];
  c->rank = r;
  c->energy = c->svd.s ? pass_svd_energy(&c->svd, r) : -1;
  c->dense = !pass_opt_bool(o, "force") && (int64_t)r * (N + K) >= N * K;
}

/* Decides p's rank: rank=R, or from its singular values (its SVD kept in c->svd); c->dense when
 * the rank saves nothing. The factors are made by make_factors once every binding of the site is
 * known to be factorised. */
static bool choose(const PassOptions *o, Diag *d, Param *p, Choice *c) {
  if (c->done) return true;
  c->done = true;
  int64_t N = p->type.dim[0], K = p->type.dim[1], mn = N < K ? N : K;
  bool by_energy = pass_opt_is_set(o, "energy");
  int64_t r = by_energy ? 0 : pass_opt_int(o, "rank");
  if (r > mn) r = mn;
  c->energy = -1;
  if (p->data) {
    if (!pass_svd(p->data, N, K, &c->svd)) {
      pass_error(o, d, "lowrank: the SVD of @%s [%lld,%lld] did not converge (LAPACK dgesdd)", p->name, (long long)N,
                 (long long)K);
      return false;
    }
    if (by_energy) r = pass_svd_rank_for(&c->svd, pass_opt_float(o, "energy"));
  } else if (by_energy || r < 1) {
    pass_error(o, d, "lowrank: @%s has no values to choose its rank from (give the weights with --weights, or "
                     "rank=R)", p->name);
    return false;
  }
  set_rank(o, p, c, (int)r);
  return true;
}

/* Adds p's factors NAME.lr_v [R,K] and NAME.lr_u [N,R] (with their values, when chosen from
 * values) and reports the matrix. */
static bool make_factors(Module *m, const PassOptions *o, Diag *d, const Param *p, Choice *c) {
  if (c->u) return true;
  int64_t N = p->type.dim[0], K = p->type.dim[1], r = c->rank;
  char name[512];
  Param *f[2];
  for (int i = 0; i < 2; i++) {
    snprintf(name, sizeof name, "%s.%s", p->name, i ? "lr_u" : "lr_v");
    f[i] = ir_add_param(m, name, i ? ir_type2(DT_F32, N, r) : ir_type2(DT_F32, r, K), p->init, p->init_arg);
    if (!f[i]) {
      pass_error(o, d, "lowrank: the factor's name @%s is taken by another parameter", name);
      return false;
    }
    f[i]->trainable = p->trainable;
    f[i]->decay = p->decay;
    f[i]->lowrank = (int)r;
    f[i]->lowrank_energy = c->energy >= 0 ? floor(c->energy * 1e6 + 0.5) / 1e6 : -1; /* 6 places in the text */
  }
  c->v = f[0];
  c->u = f[1];
  if (c->svd.s) {
    c->u->data = ir_alloc(m, sizeof(float) * (size_t)(N * r));
    c->v->data = ir_alloc(m, sizeof(float) * (size_t)(r * K));
    pass_svd_factors(&c->svd, (int)r, c->u->data, c->v->data);
  }
  char a[32], b[32], fa[32], fb[32], en[48] = "not known (no weights: shapes only)";
  fmt_count(a, sizeof a, N * K);
  fmt_count(b, sizeof b, r * (N + K));
  fmt_count(fa, sizeof fa, 2 * N * K);
  fmt_count(fb, sizeof fb, 2 * r * (N + K));
  if (c->energy >= 0) snprintf(en, sizeof en, "%.4f", c->energy);
  diag_note(d, NULL, 0, 0, "lowrank: @%s [%lld,%lld]: rank %lld, energy %s, params %s -> %s, FLOPs/token %s -> %s",
            p->name, (long long)N, (long long)K, (long long)r, en, a, b, fa, fb);
  return true;
}

/* Can p be factorised at all (before its rank is chosen)? */
static bool eligible(const Param *p, const PassReach *u, bool head, PassSkip *sk) {
  bool skipped = pass_skip_match(sk, p->name); /* marks the skip= entry used */
  return !skipped && p->type.dtype == DT_F32 && p->type.rank == 2 && p->fmt == PF_DENSE && !u->other &&
         !u->embedding && (u->block || u->head) && (!u->head || head) && p->prune == PRUNE_NONE &&
         p->select == SEL_NONE && !p->lowrank;
}

enum { CAP = 4096 };

/* Factorises the weight value w of f (read by the linears users[0..nu)) when every parameter bound
 * to it is to be: rewrites f, and the calls of f when w is an argument. Returns false on an error;
 * *did says whether it was rewritten. */
static bool site(Module *m, const PassOptions *o, Diag *d, Func *f, Value *w, Op **users, int nu, Choice *ch,
                 const PassReach *reach, bool head, PassSkip *sk, bool *did) {
  *did = false;
  Param **b = malloc(sizeof *b * CAP);
  if (!b) die("out of memory");
  int nb = pass_param_bindings(m, f, w, b, CAP), bad = -1, nbad = 0;
  for (int i = 0; i < nb; i++)
    if (!eligible(b[i], &reach[b[i]->index], head, sk)) {
      bad = bad < 0 ? i : bad;
      nbad++;
    }
  if (nbad > 0 && nbad < nb)
    diag_note(d, NULL, 0, 0, "lowrank: argument %%%s of @%s stays dense in every layer: @%s is skipped or not "
                             "factorisable (a block argument is factorised in all its calls or none)",
              w->name ? w->name : "?", f->name, b[bad]->name);
  bool ok = true, all = nb > 0 && nbad == 0;
  for (int i = 0; i < nb && all && ok; i++) ok = choose(o, d, b[i], &ch[b[i]->index]);
  if (all && ok && pass_opt_bool(o, "uniform")) { /* one rank for the argument: its layers' largest */
    int r = 0;
    for (int i = 0; i < nb; i++) r = ch[b[i]->index].rank > r ? ch[b[i]->index].rank : r;
    for (int i = 0; i < nb; i++) set_rank(o, b[i], &ch[b[i]->index], r);
  }
  for (int i = 0; i < nb && all && ok; i++) {
    Choice *c = &ch[b[i]->index];
    if (c->dense && !c->noted)
      diag_note(d, NULL, 0, 0, "lowrank: @%s [%lld,%lld] stays dense: rank %d saves nothing (R (N+K) >= N K; "
                               "force=true factorises it anyway)", b[i]->name, (long long)b[i]->type.dim[0],
                (long long)b[i]->type.dim[1], c->rank);
    c->noted |= c->dense;
  }
  for (int i = 0; i < nb && all && ok; i++) all = !ch[b[i]->index].dense;
  for (int i = 0; i < nb && all && ok; i++) ok = make_factors(m, o, d, b[i], &ch[b[i]->index]);
  if (!ok || !all) {
    if (ok && nb > 1)
      for (int i = 0; i < nb; i++)
        if (ch[b[i]->index].done && !ch[b[i]->index].dense) {
          diag_note(d, NULL, 0, 0, "lowrank: @%s stays dense: argument %%%s of @%s is bound to weights not all "
                                   "factorised (a skipped layer, or a rank that saves nothing)", b[i]->name,
                    w->name ? w->name : "?", f->name);
          break;
        }
    free(b);
    return ok;
  }
  const Choice *c0 = &ch[b[0]->index];
  if (w->def) { /* a parameter load in f itself (the head) */
    Op *pos = w->def->next;
    Value *v = load_param(m, f, pos, c0->v), *u = load_param(m, f, pos, c0->u);
    split_users(m, f, users, nu, v, u);
    drop_if_unused(f, w->def);
  } else { /* a block argument: two arguments in its place, and every call binds the factors */
    int a = w->index, n = f->narg;
    char nv[256], nu2[256]; /* the argument's name with .lr_v, .lr_u (an unnamed one stays unnamed) */
    snprintf(nv, sizeof nv, "%s.lr_v", w->name ? w->name : "");
    snprintf(nu2, sizeof nu2, "%s.lr_u", w->name ? w->name : "");
    Value *v = ir_add_arg(f, w->name ? nv : NULL, c0->v->type), *u = ir_add_arg(f, w->name ? nu2 : NULL, c0->u->type);
    Value **args = ir_alloc(m, sizeof *args * (size_t)(n + 1));
    for (int i = 0, k = 0; i < n; i++) {
      if (i == a) {
        args[k++] = v;
        args[k++] = u;
      } else {
        args[k++] = f->args[i];
      }
    }
    f->args = args;
    f->narg = n + 1;
    for (int i = 0; i < f->narg; i++) f->args[i]->index = i;
    split_users(m, f, users, nu, v, u);
    int k = 0;
    for (int fi = 0; fi < m->nfunc; fi++)
      for (Op *call = m->funcs[fi]->first; call; call = call->next) {
        if (call->kind != OP_CALL || strcmp(ir_attr_s(call, "callee"), f->name)) continue;
        const Choice *c = &ch[b[k++]->index];
        Op *old = call->in[a]->def;
        Value **in = ir_alloc(m, sizeof *in * (size_t)(call->nin + 1));
        for (int i = 0, j = 0; i < call->nin; i++) {
          if (i == a) {
            in[j++] = load_param(m, m->funcs[fi], call, c->v);
            in[j++] = load_param(m, m->funcs[fi], call, c->u);
          } else {
            in[j++] = call->in[i];
          }
        }
        ir_set_operands(call, call->nin + 1, in);
        drop_if_unused(m->funcs[fi], old);
      }
  }
  *did = true;
  free(b);
  return true;
}

bool pass_lowrank(Module *m, const PassOptions *o, Diag *d) {
  if (ir_train_func(m)) {
    pass_error(o, d, "lowrank: factorising changes the parameters: run it before autodiff (the module already "
                     "trains: @%s); the factors are then fine-tuned like any weight", ir_train_func(m)->name);
    return false;
  }
  bool has_data = false;
  for (int i = 0; i < m->nparam; i++) has_data |= m->params[i]->data != NULL;
  if (pass_opt_is_set(o, "energy") && !has_data) {
    pass_error(o, d, "lowrank: energy= chooses each rank from the trained weights: give them with --weights "
                     "W.safetensors (or choose a fixed rank=R)");
    return false;
  }
  if (!has_data)
    diag_note(d, NULL, 0, 0, "lowrank: no weights given (--weights W.safetensors): the shapes only, the factors "
                             "initialised as the weights they replace");
  const char *scope = pass_opt_str(o, "scope");
  bool head = pass_opt_bool(o, "head");
  int np = m->nparam; /* the parameters before any factor is added */
  PassReach *reach = pass_param_reach(m);
  Choice *ch = calloc((size_t)np + 1, sizeof *ch);
  Op **users = malloc(sizeof *users * CAP);
  Value **ws = malloc(sizeof *ws * CAP);
  if (!ch || !users || !ws) die("out of memory");
  PassSkip sk = pass_skip_new(pass_opt_str(o, "skip"));
  bool ok = true;
  int count = 0, nfunc = m->nfunc;
  for (int fi = 0; fi < nfunc && ok; fi++) {
    Func *f = m->funcs[fi];
    int nw = 0; /* the weight values of f's linears, each once */
    for (Op *op = f->first; op; op = op->next) {
      if (op->kind != OP_LINEAR || op->nin < 2 || op->in[1]->type.dtype != DT_F32 || op->in[1]->type.rank != 2)
        continue;
      bool attn = attention_linear(f, op);
      if ((!strcmp(scope, "attention") && !attn) || (!strcmp(scope, "ffn") && attn)) continue;
      bool seen = false;
      for (int i = 0; i < nw; i++) seen |= ws[i] == op->in[1];
      if (!seen && nw < CAP) ws[nw++] = op->in[1];
    }
    for (int i = 0; i < nw && ok; i++) {
      int nu = weight_users(f, ws[i], users, CAP);
      bool mixed = false; /* another linear of w outside the scope */
      for (int k = 0; k < nu; k++) {
        bool attn = attention_linear(f, users[k]);
        mixed |= (!strcmp(scope, "attention") && !attn) || (!strcmp(scope, "ffn") && attn);
      }
      if (nu == 0 || mixed) continue;
      bool did = false;
      ok = site(m, o, d, f, ws[i], users, nu, ch, reach, head, &sk, &did);
      count += did;
    }
  }
  ok &= pass_skip_done(&sk, o, d, "lowrank");
  free(users);
  free(ws);
  free(reach);
  if (ok && count == 0)
    pass_error(o, d, "lowrank: no weight factorised: the candidates are f32 [N,K] weights read only by linear ops in "
                     "the blocks%s, not pruned, quantised or factorised already, whose rank saves parameters (R (N+K) "
                     "< N K)%s", head ? " and the entry function" : "",
               head ? "" : "; the entry's own (an untied head) need head=true");
  for (int i = 0; i < np; i++) pass_svd_free(&ch[i].svd);
  if (!ok || count == 0) {
    free(ch);
    return false;
  }
  /* the factorised weights no op loads any more leave the module */
  bool *drop = calloc((size_t)m->nparam + 1, sizeof *drop);
  if (!drop) die("out of memory");
  for (int i = 0; i < np; i++) drop[i] = ch[i].u != NULL;
  for (int fi = 0; fi < m->nfunc; fi++)
    for (const Op *op = m->funcs[fi]->first; op; op = op->next)
      if (op->kind == OP_PARAM) {
        const Param *p = ir_find_param(m, ir_attr_s(op, "p"));
        if (p && p->index < np) drop[p->index] = false;
      }
  ir_remove_params(m, drop);
  free(drop);
  free(ch);
  pass_refit_types(m, "lowrank"); /* layers of different ranks: calls to clones typed for them */
  return true;
}
