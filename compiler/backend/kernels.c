/* kernels.c: kernels.def instantiated as tables (kt_kernels, the LOWER and OPLOWER rows), and
 * the lookups the emitters share: which rows an op lowers to, compile-time argument values,
 * state sizes. See kernels.h.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define KT_UNPAREN(...) __VA_ARGS__

/* ---- entry points: signature codes ---- */
#define RV 'v'
#define RI 'i'
#define RF 'f'
#define RZ 'l'
#define RP 'p'
#define PF 'p'
#define CPF 'p'
#define PI 'p'
#define CPI 'p'
#define PH 'p'
#define CPH 'p'
#define PV 'p'
#define CPV 'p'
#define PERR 'p'
#define I 'i'
#define Z 'l'
#define I64 'l'
#define U64 'l'
#define F 'f'
#define FN 'F'
#define PPC 'p'
#define CPM 'p'
#define KERNEL(id, name, ret, params)                                                                                  \
  [id] = {#name, (const char[]){ret, KT_UNPAREN params, 0}, (int)sizeof((const char[]){KT_UNPAREN params})},
const KernelInfo kt_kernels[K_COUNT] = {
#include "kernels.def"
};

/* ---- lowering rows ---- */
#define NOARGS {KA_END, 0, 0, 1, NULL}
#define OUT {KA_OUT, 0, 0, 1, NULL}
#define OUTK(k) {KA_OUT, k, 0, 1, NULL}
#define IN(n) {KA_IN, n, 0, 1, NULL}
#define IN_OPT(n) {KA_IN_OPT, n, 0, 1, NULL}
#define NUL {KA_NULL, 0, 0, 1, NULL}
#define ROWS(n) {KA_ROWS, n, 0, 1, NULL}
#define NUMEL(n) {KA_NUMEL, n, 0, 1, NULL}
#define BYTES(n) {KA_BYTES, n, 0, 1, NULL}
#define DIM(n, a) {KA_DIM, n, a, 1, NULL}
#define DIMDIV(n, a, d) {KA_DIM, n, a, d, NULL}
#define AI(k) {KA_ATTR_I, 0, 0, 1, k}
#define CI(v) {KA_CONST, v, 0, 1, NULL}
#define AF(k) {KA_ATTR_F, 0, 0, 1, k}
#define AW(k) {KA_ATTR_W, 0, 0, 1, k}
#define AID(k, n, a) {KA_ATTR_OR_DIM, n, a, 1, k}
#define NB {KA_NB, 0, 0, 1, NULL}
#define NT {KA_NT, 0, 0, 1, NULL}
#define T0 {KA_T0, 0, 0, 1, NULL}
#define SCRATCH {KA_SCRATCH, 0, 0, 1, NULL}
#define STATE(k) {KA_STATE, k, 0, 1, NULL}
#define RNG {KA_RNG, 0, 0, 1, NULL}
#define LOAD(n) {KA_LOAD, n, 0, 1, NULL}
#define EPI_FN {KA_EPI_FN, 0, 0, 1, NULL}
#define EPI_CTX {KA_EPI_CTX, 0, 0, 1, NULL}
#define BIAS {KA_BIAS, 2, 0, 1, NULL}
#define QW(n) {KA_QWIDTH, n, -1, 1, NULL}
#define KVW(n) {KA_KVWIDTH, n, -1, 1, NULL}
#define KVH {KA_KVHEADS, 0, 0, 1, NULL}
#define W_ALWAYS {KW_ALWAYS, 0, 0, NULL, NULL}
#define W_STATE {KW_STATE, 0, 0, NULL, NULL}
#define W_NOSTATE {KW_NOSTATE, 0, 0, NULL, NULL}
#define W_TRAIN {KW_TRAIN, 0, 0, NULL, NULL}
#define W_INFER {KW_INFER, 0, 0, NULL, NULL}
#define W_CAST(a, b) {KW_CAST, a, b, NULL, NULL}
#define W_ATTR(k, w) {KW_ATTR, 0, 0, k, w}
#define W_STATE_IF(k, w) {KW_STATE, 0, 0, k, w}
#define W_NOSTATE_IF(k, w) {KW_NOSTATE, 0, 0, k, w}
#define W_DTYPE(i, dt) {KW_DTYPE, i, dt, NULL, NULL}
#define KT_ARGS(args) (const KArg[]){KT_UNPAREN args, NOARGS}

#define LOWER(op, id, when, args, sid, sargs) {op, id, when, KT_ARGS(args), sid, KT_ARGS(sargs)},
static const KLower lower_rows[] = {
#include "kernels.def"
};

/* Every LOWER row passes as many arguments as its kernel's KERNEL row takes: a row that does not
 * is a compile error of this file, naming the op and the kernel (not an assertion when a model
 * first uses the op). */
#define KERNEL(id, name, ret, params)                                                                                  \
  enum { KT_NPARAM_##id = (int)sizeof((const char[]){KT_UNPAREN params}) };                                            \
  _Static_assert((int)KT_NPARAM_##id <= (int)KT_MAX_PARAMS, "kernels.def: " #id " has more than KT_MAX_PARAMS parameters");
#include "kernels.def"
#define LOWER(op, id, when, args, sid, sargs)                                                                          \
  _Static_assert(sizeof((const KArg[]){KT_UNPAREN args}) / sizeof(KArg) == KT_NPARAM_##id,                            \
                 "kernels.def: a LOWER row of " #op " does not pass " #id " its number of arguments");
#include "kernels.def"
enum { NLOWER = (int)(sizeof lower_rows / sizeof lower_rows[0]) };

#define R_SAME0 KR_SAME0
#define R_LEAD0 KR_LEAD0
#define R_STATIC KR_STATIC
#define R_BT KR_BT
#define R_B KR_B
#define C_NONE 0
#define C_LAST_STATIC KC_LAST_STATIC
#define C_BT0 KC_BT0
#define C_EPI KC_EPI
#define C_W2 KC_W2
#define C_STATIC0 KC_STATIC0
#define ALWAYS NULL
#define IF(key) key
#define OPLOWER(op, rule, checks, nstate, sargs, when) [op] = {true, rule, checks, nstate, KT_ARGS(sargs), when},
static const OpLower op_rows[OP_COUNT] = {
#include "kernels.def"
};

const OpLower *kt_op(OpKind k) { return &op_rows[k]; }

typedef struct AbiDtype {
  const char *name;
  int value;
  const char *fmt_name;
  int fmt_value;
} AbiDtype;
#define ABI_DTYPE(dt, rt_name, v, fmt_name, fmt_v) [dt] = {#rt_name, v, #fmt_name, fmt_v},
static const AbiDtype abi_dtypes[DT_COUNT] = {
#include "kernels.def"
};

const char *kt_rt_dtype_name(DType t) { return abi_dtypes[t].name; }
int kt_rt_dtype_value(DType t) { return abi_dtypes[t].value; }

int *kt_attention_heads(const Module *m) {
  int *heads = calloc((size_t)m->nparam + 1, sizeof *heads);
  int *argheads = NULL; /* per function: the heads of each argument read as such a weight */
  int *argbase = calloc((size_t)m->nfunc + 1, sizeof *argbase);
  if (!heads || !argbase) die("out of memory");
  int nargs = 0;
  for (int fi = 0; fi < m->nfunc; fi++) {
    argbase[fi] = nargs;
    nargs += m->funcs[fi]->narg;
  }
  argheads = calloc((size_t)nargs + 1, sizeof *argheads);
  if (!argheads) die("out of memory");
  for (int fi = 0; fi < m->nfunc; fi++)
    for (const Op *op = m->funcs[fi]->first; op; op = op->next) {
      if (op->kind != OP_LINEAR || op->nin < 2 || !op->in[0]->def ||
          (op->in[0]->def->kind != OP_ATTENTION && op->in[0]->def->kind != OP_LINFORMER))
        continue;
      const Value *w = op->in[1];
      int h = (int)ir_attr_i(op->in[0]->def, "heads");
      if (!w->def)
        argheads[argbase[fi] + w->index] = h;
      else if (w->def->kind == OP_PARAM) {
        const Param *q = ir_find_param(m, ir_attr_s(w->def, "p"));
        if (q) heads[q->index] = h;
      }
    }
  for (int fi = 0; fi < m->nfunc; fi++) /* the parameters the calls bind to those arguments */
    for (const Op *c = m->funcs[fi]->first; c; c = c->next) {
      if (c->kind != OP_CALL) continue;
      const Func *g = ir_find_func(m, ir_attr_s(c, "callee"));
      int gi = 0;
      while (g && gi < m->nfunc && m->funcs[gi] != g) gi++;
      for (int j = 0; g && gi < m->nfunc && j < c->nin && j < g->narg; j++)
        if (argheads[argbase[gi] + j] && c->in[j]->def && c->in[j]->def->kind == OP_PARAM) {
          const Param *q = ir_find_param(m, ir_attr_s(c->in[j]->def, "p"));
          if (q) heads[q->index] = argheads[argbase[gi] + j];
        }
    }
  free(argheads);
  free(argbase);
  return heads;
}

KParamAbi kt_param_abi(const Module *m, const Param *q, int64_t offset, int heads) {
  KParamAbi a;
  memset(&a, 0, sizeof a);
  DType t = q->type.dtype;
  a.dtype = abi_dtypes[t].name;
  a.dtype_value = abi_dtypes[t].value;
  a.format = abi_dtypes[t].fmt_name;
  a.format_value = abi_dtypes[t].fmt_value;
  a.nbytes = ir_param_storage_bytes(q);
  if (ir_dtype_quantised(t)) { /* the values, then the scales at the next 64 bytes (RtFormat) */
    int64_t values = ir_type_bytes(&q->type), at = (values + 63) / 64 * 64;
    DType st = ir_quant_block(t) ? DT_F16 : DT_F32;
    a.naux = 1;
    a.aux_role = "scale"; /* the tensor name's suffix in a weights file (NAME.scale) */
    a.aux_dtype = abi_dtypes[st].name;
    a.aux_dtype_value = abi_dtypes[st].value;
    a.aux_offset = offset + at;
    a.aux_nbytes = a.nbytes - at;
    a.nbytes = values;
  }
  a.heads = q->type.rank == 2 ? heads : 0;
  a.has_prune = q->prune != PRUNE_NONE || q->select != SEL_NONE || a.heads > 0;
  a.prune_kind = (int)q->prune; /* PruneKind equals RtPrune, SelectRule RtSelect (test_abi) */
  a.sparsity = q->sparsity;
  a.prune_n = q->prune_n;
  a.prune_m = q->prune_m;
  a.nnz = q->nnz;
  a.select = (int)q->select;
  const Param *g = q->select_group ? ir_find_param(m, q->select_group) : NULL;
  a.group = g ? g->index : -1;
  a.axis = q->select_axis;
  a.parts = q->select_parts;
  a.unit = q->select_unit;
  a.of = q->select_of;
  return a;
}

const Value *kt_value(const Op *op, int i) { return i < 0 ? op->out[0] : op->in[i]; }

bool kt_bias_only(const Op *op) {
  if (op->kind != OP_LINEAR) return false;
  const char *epi = ir_attr_s(op, "epi");
  if (!epi || op->nin != 3 || op->in[2]->type.rank != 1) return false;
  /* the expression, not its spelling: add($0,$1) or add($1,$0), however spaced */
  char err[160];
  const Expr *x = ir_expr_parse(op->module, epi, 2, err, sizeof err);
  return x && x->kind == EX_OP && x->op == OP_ADD && x->nkid == 2 && x->kid[0]->kind == EX_ARG &&
         x->kid[1]->kind == EX_ARG && x->kid[0]->arg + x->kid[1]->arg == 1;
}

int64_t kt_static_arg(const Op *op, const KArg *a) {
  if (a->kind == KA_ATTR_I) return ir_attr_i(op, a->key);
  if (a->kind == KA_ATTR_W) return ir_attr_word(op, a->key);
  if (a->kind == KA_ATTR_OR_DIM && ir_attr(op, a->key)) return ir_attr_i(op, a->key);
  if (a->kind == KA_CONST) return a->i;
  if (a->kind == KA_ROWS || a->kind == KA_NUMEL) return kt_max_arg(op, a); /* the compiled extents */
  if (a->kind == KA_KVHEADS) return ir_kv_heads(op);
  if (a->kind == KA_QWIDTH || a->kind == KA_KVWIDTH) {
    const Type *t = &kt_value(op, a->i)->type;
    int64_t h = ir_attr_i(op, "heads"), g = ir_kv_heads(op);
    return t->dim[t->rank - 1] / (h + 2 * g) * (a->kind == KA_QWIDTH ? h : g);
  }
  IR_ASSERT(a->kind == KA_DIM || a->kind == KA_ATTR_OR_DIM);
  const Type *t = &kt_value(op, a->i)->type;
  int ax = a->ax < 0 ? t->rank + a->ax : a->ax;
  IR_ASSERT(ax >= 0 && ax < t->rank);
  return t->dim[ax] / a->div;
}

int64_t kt_max_arg(const Op *op, const KArg *a) {
  switch (a->kind) {
  case KA_DIM:
  case KA_CONST:
  case KA_ATTR_W:
  case KA_ATTR_OR_DIM:
  case KA_QWIDTH:
  case KA_KVWIDTH:
  case KA_KVHEADS:
  case KA_ATTR_I: return kt_static_arg(op, a);
  case KA_ROWS:
  case KA_NUMEL:
  case KA_BYTES: {
    const Value *v = kt_value(op, a->i);
    if (!v) return 0;
    const Type *t = &v->type;
    int64_t n = a->kind == KA_BYTES ? (int64_t)(ir_dtype_bits(t->dtype) / 8) : 1;
    int last = a->kind == KA_ROWS ? t->rank - 1 : t->rank;
    for (int d = 0; d < last; d++)
      if (__builtin_mul_overflow(n, t->dim[d], &n)) return INT64_MAX;
    return n;
  }
  default: return -1;
  }
}

static bool int_args_fit(const Op *op, KernelId k, const KArg *args, int *arg, int64_t *value) {
  if (k == K_NONE) return true;
  const char *sig = kt_kernels[k].sig;
  for (int i = 0; args[i].kind != KA_END; i++) {
    if (sig[i + 1] != 'i') continue;
    int64_t v = kt_max_arg(op, &args[i]);
    if (v > INT32_MAX) {
      *arg = i + 1, *value = v;
      return false;
    }
  }
  return true;
}

bool kt_int_args_fit(const Op *op, const KLower *row, int *arg, int64_t *value) {
  if (!int_args_fit(op, row->kernel, row->args, arg, value)) return false;
  if (!int_args_fit(op, row->scratch, row->scratch_args, arg, value)) {
    *arg = -*arg;
    return false;
  }
  return true;
}

int kt_nstate(const Op *op) {
  const OpLower *lw = kt_op(op->kind);
  return lw->state_if && ir_attr_i(op, lw->state_if) == 0 ? 0 : lw->nstate;
}

int64_t kt_state_floats(const Op *op) {
  int64_t n = 1;
  for (const KArg *a = kt_op(op->kind)->state; a->kind != KA_END; a++) n *= kt_static_arg(op, a);
  return n;
}

int kt_select(const Op *op, const KLower *rows[2], const char **why) {
  int n = 0, seen = 0;
  for (int i = 0; i < NLOWER; i++) {
    const KLower *r = &lower_rows[i];
    if (r->op != op->kind) continue;
    seen++;
    if (r->cond.when == KW_CAST &&
        (op->in[0]->type.dtype != (DType)r->cond.from || op->out[0]->type.dtype != (DType)r->cond.to))
      continue;
    if (r->cond.key) { /* W_ATTR, W_STATE_IF, W_NOSTATE_IF */
      const char *v = ir_attr_s(op, r->cond.key); /* absent: "" */
      if (strcmp(r->cond.word, "*") == 0 ? !v || !v[0] : strcmp(v ? v : "", r->cond.word) != 0) continue;
    }
    if (r->cond.when == KW_DTYPE &&
        (r->cond.from >= op->nin || op->in[r->cond.from]->type.dtype != (DType)r->cond.to))
      continue;
    if (r->cond.when == KW_STATE && kt_op(op->kind)->nstate && kt_nstate(op) == 0) continue; /* no state */
    IR_ASSERT(n < 2);
    rows[n++] = r;
  }
  if (!seen) return 0;
  if (n == 0) {
    *why = "the runtime has no kernel for these operand and result types or attributes";
    return -1;
  }
  IR_ASSERT(n == 1 ? rows[0]->cond.when == KW_ALWAYS || rows[0]->cond.when == KW_CAST || rows[0]->cond.when == KW_ATTR ||
                         rows[0]->cond.when == KW_DTYPE || rows[0]->cond.when == KW_NOSTATE
                   : (rows[0]->cond.when == KW_STATE && rows[1]->cond.when == KW_NOSTATE) ||
                         (rows[0]->cond.when == KW_TRAIN && rows[1]->cond.when == KW_INFER));
  return n;
}
