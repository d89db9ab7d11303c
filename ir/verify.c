/* verify.c: ir_verify(), the IR's structural and type checker.
 *
 * Every pass must leave a module that verifies; the pass manager runs this after each pass in
 * debug builds and tests, and the parser guarantees that whatever it returns verifies. Checks:
 *   - names: module, parameter, function, value and attribute names are printable in the text
 *     form (so the printer/parser round trip holds); parameter and function names unique; value
 *     names unique within a function;
 *   - SSA: each operand is an argument or an earlier result of the same function, each value is
 *     defined once, def/index links are consistent, returned values are defined;
 *   - ops: operand count within ops.def's range, attributes as ir/ops.def (ATTR rows) declares them (known
 *     keys, kinds, required ones present, values in range, fused expressions that parse: the one
 *     checker ir_check_attrs, which the parser runs too), result types equal what the op's shape
 *     rule (ir_infer) computes, calls match the callee's signature;
 *   - module: the entry function exists, shared parameters name an existing parameter of the same
 *     type, and the call graph has no cycle.
 * Every problem is reported (not just the first) as "in @func: ...", located at the op when it
 * came from text. ir_verify() never modifies the module.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"


typedef struct Verifier {
  const Module *m;
  Diag *d;
  bool ok;
} Verifier;

static void verr(Verifier *v, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void verr(Verifier *v, int line, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(v->d, line > 0 ? "<ir>" : NULL, line, col, fmt, ap);
  va_end(ap);
  v->ok = false;
}

static bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-';
}

/* A name printable after '@' or '%': [A-Za-z0-9_.-]+. */
static bool valid_name(const char *s) {
  if (!s || !*s) return false;
  for (; *s; s++)
    if (!name_char(*s)) return false;
  return true;
}

static bool all_digits(const char *s) {
  for (; *s; s++)
    if (*s < '0' || *s > '9') return false;
  return true;
}

/* An attribute key: [A-Za-z_][A-Za-z0-9_]*. */
static bool valid_key(const char *s) {
  if (!s || !*s || (s[0] >= '0' && s[0] <= '9')) return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
  return true;
}

/* NULL if t is a well-formed type, else what is wrong with it. */
static const char *type_problem(const Type *t) {
  if ((unsigned)t->dtype >= DT_COUNT) return "has an invalid element type";
  if (t->rank < 0 || t->rank > IR_MAX_RANK) return "has an invalid rank";
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) {
    if (t->dim[i] < 1) return "has a dimension below 1";
    if (t->dim[i] > IR_MAX_NUMEL || n > IR_MAX_NUMEL / t->dim[i]) return "is too large";
    n *= t->dim[i];
  }
  return NULL;
}

static void check_attrs(Verifier *v, const char *where, int line, int col, int n, const Attr *a) {
  for (int i = 0; i < n; i++) {
    if (!valid_key(a[i].key)) verr(v, line, col, "%s: invalid attribute name '%s'", where, a[i].key ? a[i].key : "");
    if (i > 0 && a[i - 1].key && a[i].key && strcmp(a[i - 1].key, a[i].key) >= 0)
      verr(v, line, col, "%s: attributes not sorted or duplicated at '%s'", where, a[i].key);
    if (a[i].kind == ATTR_SYM && !valid_name(a[i].s))
      verr(v, line, col, "%s: attribute '%s' has an invalid symbol", where, a[i].key ? a[i].key : "");
    if (a[i].kind == ATTR_STR && !a[i].s) verr(v, line, col, "%s: attribute '%s' has no string", where, a[i].key);
    if (a[i].kind == ATTR_INTS && a[i].n > 0 && !a[i].ints)
      verr(v, line, col, "%s: attribute '%s' has no values", where, a[i].key);
  }
}

/* ---- per-op checks ------------------------------------------------------------------------ */

/* The op's attributes against ir/ops.def (ATTR rows) (the same checker the parser runs). */
static bool check_op_attrs(Verifier *v, const Func *f, const Op *op) {
  char err[256];
  if (ir_check_attrs(op, err, sizeof err)) return true;
  verr(v, op->line, op->col, "in @%s: %s", f->name, err);
  return false;
}

/* Runs the shape rule on a copy of op (so the module is not modified) and compares the types. */
static void check_op_types(Verifier *v, const Func *f, const Op *op) {
  if (op->kind == OP_CALL) {
    const char *callee = ir_attr_s(op, "callee");
    if (!ir_find_func(v->m, callee)) {
      verr(v, op->line, op->col, "in @%s: call to unknown function @%s", f->name, callee);
      return;
    }
  }
  Value *tmpv = malloc(sizeof(Value) * (size_t)(op->nout + 1));
  Value **tmpp = malloc(sizeof(Value *) * (size_t)(op->nout + 1));
  if (!tmpv || !tmpp) die("out of memory");
  Op copy = *op;
  for (int i = 0; i < op->nout; i++) {
    tmpv[i] = *op->out[i];
    tmpp[i] = &tmpv[i];
  }
  copy.out = tmpp;
  char err[256];
  if (!ir_infer(v->m, &copy, err, sizeof err)) {
    verr(v, op->line, op->col, "in @%s: %s", f->name, err);
    free(tmpv);
    free(tmpp);
    return;
  }
  for (int i = 0; i < op->nout; i++)
    if (!ir_type_eq(&tmpv[i].type, &op->out[i]->type)) {
      char b1[96], b2[96];
      verr(v, op->line, op->col, "in @%s: %s result %d has type %s, but the operands give %s", f->name,
           ir_op_name(op->kind), i, ir_type_str(&op->out[i]->type, b1, sizeof b1), ir_type_str(&tmpv[i].type, b2, sizeof b2));
    }
  free(tmpv);
  free(tmpp);
}

/* ---- functions ---------------------------------------------------------------------------- */

static int cmp_value_name(const void *a, const void *b) {
  const Value *x = *(const Value *const *)a, *y = *(const Value *const *)b;
  int c = strcmp(x->name, y->name);
  return c ? c : (x->id > y->id) - (x->id < y->id);
}

static void check_func(Verifier *v, const Func *f) {
  if (!valid_name(f->name)) verr(v, f->line, f->col, "invalid function name '@%s'", f->name ? f->name : "");
  const char *fn = f->name ? f->name : "";
  int nv = f->nvalues > 0 ? f->nvalues : 0;
  /* defined[id] is the Value defined with that id so far (an argument or an earlier result). */
  const Value **defined = calloc((size_t)nv + 1, sizeof *defined);
  const Value **named = malloc(sizeof *named * ((size_t)nv + 1));
  if (!defined || !named) die("out of memory");
  int nnamed = 0;

  /* Records a definition of val; false (after reporting) if it cannot be one. */
#define DEFINE(val, line, col)                                                                              \
  do {                                                                                                      \
    const Value *dv_ = (val);                                                                               \
    if (dv_->id < 0 || dv_->id >= nv) {                                                                     \
      verr(v, line, col, "in @%s: value with id %d does not belong to this function", fn, dv_->id);       \
      break;                                                                                                \
    }                                                                                                       \
    if (defined[dv_->id]) {                                                                                 \
      verr(v, line, col, "in @%s: value id %d defined twice", fn, dv_->id);                                \
      break;                                                                                                \
    }                                                                                                       \
    defined[dv_->id] = dv_;                                                                                 \
    if (dv_->name) {                                                                                        \
      if (!valid_name(dv_->name) || all_digits(dv_->name))                                                  \
        verr(v, line, col, "in @%s: invalid value name '%%%s'", fn, dv_->name);                            \
      named[nnamed++] = dv_;                                                                                \
    }                                                                                                       \
    const char *tp_ = type_problem(&dv_->type);                                                             \
    if (tp_) verr(v, line, col, "in @%s: the type of a value %s", fn, tp_);                                 \
  } while (0)

  for (int i = 0; i < f->narg; i++) {
    const Value *a = f->args[i];
    if (!a) {
      verr(v, f->line, f->col, "in @%s: argument %d is null", fn, i);
      continue;
    }
    if (a->def || a->index != i) verr(v, f->line, f->col, "in @%s: argument %d has inconsistent links", fn, i);
    DEFINE(a, f->line, f->col);
  }

  const Op *prev = NULL;
  for (const Op *op = f->first; op; prev = op, op = op->next) {
    int line = op->line, col = op->col;
    if (op->func != f || op->prev != prev) verr(v, line, col, "in @%s: op list links are inconsistent", fn);
    if ((unsigned)op->kind >= OP_COUNT) {
      verr(v, line, col, "in @%s: invalid op kind %d", fn, (int)op->kind);
      continue;
    }
    const char *on = ir_op_name(op->kind);
    bool operands_ok = true;
    for (int i = 0; i < op->nin; i++) {
      const Value *x = op->in[i];
      if (!x) {
        verr(v, line, col, "in @%s: %s operand %d is null", fn, on, i);
        operands_ok = false;
      } else if (x->id < 0 || x->id >= nv || defined[x->id] != x) {
        if (x->name)
          verr(v, line, col, "in @%s: %s operand %d (%%%s) is used before its definition", fn, on, i, x->name);
        else
          verr(v, line, col, "in @%s: %s operand %d is used before its definition", fn, on, i);
        operands_ok = false;
      }
    }
    bool results_ok = op->nout >= 1;
    if (op->nout < 1) verr(v, line, col, "in @%s: %s has no results", fn, on);
    for (int i = 0; i < op->nout; i++) {
      const Value *r = op->out[i];
      if (!r) {
        verr(v, line, col, "in @%s: %s result %d is null", fn, on, i);
        results_ok = false;
        continue;
      }
      if (r->def != op || r->index != i) verr(v, line, col, "in @%s: %s result %d has inconsistent links", fn, on, i);
      DEFINE(r, line, col);
    }
    char where[160];
    snprintf(where, sizeof where, "in @%s: %s", fn, on);
    check_attrs(v, where, line, col, op->nattr, op->attr);
    bool attrs_ok = check_op_attrs(v, f, op);
    if (attrs_ok && operands_ok && results_ok) {
      for (int i = 0; i < op->nin; i++)
        if (type_problem(&op->in[i]->type)) operands_ok = false;
      for (int i = 0; i < op->nout; i++)
        if (type_problem(&op->out[i]->type)) operands_ok = false;
      if (operands_ok) check_op_types(v, f, op);
    }
  }
  if (f->last != prev) verr(v, f->line, f->col, "in @%s: op list links are inconsistent", fn);

  for (int i = 0; i < f->nret; i++) {
    const Value *r = f->ret[i];
    if (!r || r->id < 0 || r->id >= nv || defined[r->id] != r)
      verr(v, f->line, f->col, "in @%s: returned value %d is not defined in the function", fn, i);
    else if (ir_dtype_packed(r->type.dtype))
      verr(v, f->line, f->col, "in @%s: returned value %d is a %s weight (weights are parameters and arguments)", fn,
           i, ir_dtype_name(r->type.dtype));
  }

  qsort(named, (size_t)nnamed, sizeof *named, cmp_value_name);
  for (int i = 1; i < nnamed; i++)
    if (strcmp(named[i - 1]->name, named[i]->name) == 0) {
      const Op *d = named[i]->def;
      verr(v, d ? d->line : f->line, d ? d->col : f->col, "in @%s: duplicate value name %%%s", fn, named[i]->name);
    }
#undef DEFINE
  free(defined);
  free(named);
}

/* ---- module-level checks ------------------------------------------------------------------ */

static int func_index(const Module *m, const char *name) {
  if (!name) return -1;
  for (int i = 0; i < m->nfunc; i++)
    if (m->funcs[i]->name && strcmp(m->funcs[i]->name, name) == 0) return i;
  return -1;
}

/* Iterative depth-first search of the call graph; a call to a function on the stack is a cycle. */
static void check_call_graph(Verifier *v) {
  const Module *m = v->m;
  int n = m->nfunc;
  if (n == 0) return;
  char *color = calloc((size_t)n, 1);        /* 0 unvisited, 1 on the stack, 2 done */
  int *stack = malloc(sizeof(int) * (size_t)n);
  const Op **cursor = malloc(sizeof(const Op *) * (size_t)n);
  if (!color || !stack || !cursor) die("out of memory");
  for (int root = 0; root < n; root++) {
    if (color[root]) continue;
    int sp = 0;
    stack[sp] = root;
    cursor[sp] = m->funcs[root]->first;
    color[root] = 1;
    sp++;
    while (sp > 0) {
      int fi = stack[sp - 1];
      const Op *op = cursor[sp - 1];
      while (op && op->kind != OP_CALL) op = op->next;
      if (!op) {
        color[fi] = 2;
        sp--;
        continue;
      }
      cursor[sp - 1] = op->next;
      int g = func_index(m, ir_attr_s(op, "callee"));
      if (g < 0) continue;
      if (color[g] == 1) {
        verr(v, op->line, op->col, "in @%s: recursive call to @%s (the call graph has a cycle)", m->funcs[fi]->name,
             m->funcs[g]->name);
      } else if (color[g] == 0) {
        color[g] = 1;
        stack[sp] = g;
        cursor[sp] = m->funcs[g]->first;
        sp++;
      }
    }
  }
  free(color);
  free(stack);
  free(cursor);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void check_unique(Verifier *v, const char *what, const char **names, int n) {
  qsort(names, (size_t)n, sizeof *names, cmp_str);
  for (int i = 1; i < n; i++)
    if (strcmp(names[i - 1], names[i]) == 0 && (i < 2 || strcmp(names[i - 2], names[i]) != 0))
      verr(v, 0, 0, "duplicate %s name @%s", what, names[i]);
}

static void check_params(Verifier *v) {
  const Module *m = v->m;
  for (int i = 0; i < m->nparam; i++) {
    const Param *p = m->params[i];
    const char *pn = p->name ? p->name : "";
    if (!valid_name(p->name)) verr(v, p->line, p->col, "invalid parameter name '@%s'", pn);
    const char *tp = type_problem(&p->type);
    if (tp) verr(v, p->line, p->col, "parameter @%s: the type %s", pn, tp);
    if ((unsigned)p->init >= INIT_COUNT) verr(v, p->line, p->col, "parameter @%s: invalid initialiser", pn);
    if ((p->init == INIT_NORMAL || p->init == INIT_UNIFORM) && !(isfinite(p->init_arg) && p->init_arg >= 0))
      verr(v, p->line, p->col, "parameter @%s: %s needs a finite non-negative scale", pn, ir_init_name(p->init));
    if (!tp && ir_dtype_quantised(p->type.dtype) &&
        (p->type.rank != 2 || (ir_quant_block(p->type.dtype) && p->type.dim[1] % ir_quant_block(p->type.dtype))))
      verr(v, p->line, p->col, "parameter @%s: a %s parameter is an [N,K] matrix%s", pn, ir_dtype_name(p->type.dtype),
           ir_quant_block(p->type.dtype) ? " with K a multiple of 32" : "");
    if (!tp && p->type.dtype == DT_CSR &&
        (p->type.rank != 2 || p->type.dim[1] > 65536 || p->nnz < 1 || p->nnz > ir_type_numel(&p->type)))
      verr(v, p->line, p->col, "parameter @%s: a csr parameter is an [N,K] matrix with K <= 65536 and room for 1 to "
           "N*K nonzeros (nnz=%lld)", pn, (long long)p->nnz);
    if (p->type.dtype != DT_CSR && p->nnz != 0)
      verr(v, p->line, p->col, "parameter @%s: nnz= is a fact of csr parameters", pn);
    if ((unsigned)p->prune >= PRUNE_COUNT) verr(v, p->line, p->col, "parameter @%s: invalid pruning", pn);
    if (p->prune != PRUNE_NONE && !tp && (p->type.rank != 2 || (p->type.dtype != DT_F32 && p->type.dtype != DT_CSR)))
      verr(v, p->line, p->col, "parameter @%s: pruning (prune=) applies to f32 or csr [N,K] matrices", pn);
    if ((p->prune == PRUNE_MAGNITUDE || p->prune == PRUNE_GLOBAL) && !(p->sparsity > 0 && p->sparsity < 1))
      verr(v, p->line, p->col, "parameter @%s: the sparsity of prune=%s is in (0, 1)", pn, ir_prune_name(p->prune));
    if (p->prune == PRUNE_NM &&
        (p->prune_n < 1 || p->prune_n >= p->prune_m || (!tp && p->type.rank == 2 && p->type.dim[1] % p->prune_m)))
      verr(v, p->line, p->col, "parameter @%s: prune=nm(N:M) needs 1 <= N < M and K a multiple of M", pn);
    if (p->type.dtype == DT_CSR && p->prune == PRUNE_NONE)
      verr(v, p->line, p->col, "parameter @%s: a csr parameter states its pruning (prune=...)", pn);
    if (p->type.dtype == DT_CSR && p->prune == PRUNE_GLOBAL)
      verr(v, p->line, p->col, "parameter @%s: prune=global leaves each matrix's nonzero count open: it is stored "
           "dense, not csr", pn);
    if ((unsigned)p->select >= SEL_COUNT) verr(v, p->line, p->col, "parameter @%s: invalid select rule", pn);
    if (p->select != SEL_NONE && !tp) {
      int64_t part = (int64_t)p->select_parts * p->select_unit;
      if (!p->select_group || !valid_name(p->select_group) || p->select_axis < 0 || p->select_axis >= p->type.rank ||
          p->select_parts < 1 || p->select_unit < 1 || part <= 0 || p->type.dim[p->select_axis] % part ||
          p->type.dim[p->select_axis] / part > p->select_of || p->select_of > (1 << 24))
        verr(v, p->line, p->col, "parameter @%s: select= needs a group parameter, an axis of its shape, and that "
             "axis a multiple of PARTS*UNIT with at most OF units per part", pn);
      else if (!ir_find_param(m, p->select_group))
        verr(v, p->line, p->col, "parameter @%s: select= names @%s, which is not a parameter", pn, p->select_group);
    }
    if ((unsigned)p->fmt >= PF_COUNT) verr(v, p->line, p->col, "parameter @%s: invalid format", pn);
    if (p->fmt == PF_DENSE && (p->block != 0 || p->naux != 0))
      verr(v, p->line, p->col, "parameter @%s: a dense parameter has no blocks or auxiliary arrays", pn);
    if (p->naux < 0 || p->naux > IR_MAX_PARAM_AUX)
      verr(v, p->line, p->col, "parameter @%s: %d auxiliary arrays (at most %d)", pn, p->naux, IR_MAX_PARAM_AUX);
  }
}

/* The training record: every value in its field's range (ir/train.c) and the relations between. */
static void check_train(Verifier *v) {
  const TrainConfig *t = &v->m->train;
  if (!t->present) return;
  char err[160];
  for (int i = 0; i < ir_train_nfields; i++) {
    const TrainField *f = &ir_train_fields[i];
    const char *at = (const char *)t + f->offset;
    bool ok = true;
    if (!ir_train_field_present(t, f)) continue; /* an optional group that is not set */
    switch (f->kind) {
    case TF_INT: ok = ir_train_check_int(f, *(const int64_t *)at, err, sizeof err); break;
    case TF_REAL: ok = ir_train_check_real(f, *(const double *)at, err, sizeof err); break;
    case TF_ENUM:
      ok = *(const int *)at >= 0 && *(const int *)at < f->nwords;
      if (!ok) snprintf(err, sizeof err, "'%s' has no such value (%d)", f->key, *(const int *)at);
      break;
    case TF_STR: break;
    }
    if (!ok) verr(v, t->line, t->col, "train: %s", err);
  }
  const char *key;
  if (!ir_train_check_relations(t, &key, err, sizeof err)) verr(v, t->line, t->col, "train: %s", err);
}

const Op *ir_vocab_problem(const Module *m, char *err, size_t n) {
  const Func *e = m->entry ? ir_find_func(m, m->entry) : NULL;
  if (!e) return NULL;
  for (const Op *op = e->first; op; op = op->next) {
    if (op->kind != OP_EMBEDDING || op->nin < 2 || op->in[1]->type.rank != 2) continue;
    bool tokens = false; /* the table embeds the program's token ids (an entry argument) */
    for (int i = 0; i < e->narg; i++) tokens |= op->in[0] == e->args[i];
    if (!tokens) continue;
    long long rows = (long long)op->in[1]->type.dim[0];
    const Attr *a = ir_module_attr(m, "vocab");
    if (!a || a->kind != ATTR_INT) {
      snprintf(err, n, "the token ids are embedded with a %lld-row table, but the module has no integer 'vocab' attribute (it must be %lld)",
               rows, rows);
      return op;
    }
    if ((long long)a->i != rows) {
      snprintf(err, n, "module attribute vocab=%lld contradicts the %lld-row embedding table of the token ids", (long long)a->i, rows);
      return op;
    }
  }
  return NULL;
}

bool ir_verify(const Module *m, Diag *d) {
  Verifier v = {m, d, true};
  if (!valid_name(m->name)) verr(&v, 0, 0, "invalid module name '@%s'", m->name ? m->name : "");
  check_attrs(&v, "module", 0, 0, m->nattr, m->attr);
  if (m->entry && !ir_find_func(m, m->entry)) verr(&v, 0, 0, "entry function @%s does not exist", m->entry);

  check_params(&v);
  check_train(&v);
  int n = m->nparam > m->nfunc ? m->nparam : m->nfunc;
  const char **names = malloc(sizeof *names * ((size_t)n + 1));
  if (!names) die("out of memory");
  int k = 0;
  for (int i = 0; i < m->nparam; i++)
    if (m->params[i]->name) names[k++] = m->params[i]->name;
  check_unique(&v, "parameter", names, k);
  k = 0;
  for (int i = 0; i < m->nfunc; i++)
    if (m->funcs[i]->name) names[k++] = m->funcs[i]->name;
  check_unique(&v, "function", names, k);
  free(names);

  for (int i = 0; i < m->nfunc; i++) check_func(&v, m->funcs[i]);
  check_call_graph(&v);
  if (v.ok) {
    char err[256];
    const Op *op = ir_vocab_problem(m, err, sizeof err);
    if (op) verr(&v, op->line, op->col, "%s", err);
  }
  return v.ok;
}
