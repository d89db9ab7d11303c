/* expr.c: fused element-wise expressions and the scalar semantics of every OPF_EW op.
 *
 * An `ew` op carries {expr="..."} and a `linear` op may carry an epilogue {epi="..."}: a small
 * expression tree over the op's operands ($0, $1, ...), numeric constants and OPF_EW ops, e.g.
 * "gelu_tanh(add($0, $1))". Fusion passes build these strings, the verifier and the backends parse
 * them with ir_expr_parse(), constant folding and tests evaluate them with ir_expr_eval(). One
 * definition of each op's scalar meaning (ir_ew_apply) keeps all of them in agreement.
 *
 * Grammar:  expr := '$' INT | NUMBER | NAME '(' expr (',' expr)* ')'     (blanks allowed)
 * The parser is recursive descent with a depth bound, so hostile input cannot exhaust the stack.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

#define EXPR_MAX_DEPTH 64

typedef struct ExprParser {
  Module *m;
  const char *s;     /* whole text */
  const char *p;     /* cursor */
  int nargs;
  char *err;
  size_t n;
  bool failed;
} ExprParser;

static void ex_fail(ExprParser *ps, const char *msg, const char *detail) {
  if (ps->failed) return;
  ps->failed = true;
  if (ps->err && ps->n)
    snprintf(ps->err, ps->n, "%s%s at offset %d in \"%s\"", msg, detail ? detail : "", (int)(ps->p - ps->s),
             ps->s);
}

static void ex_skip(ExprParser *ps) {
  while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r') ps->p++;
}

static Expr *ex_node(ExprParser *ps, ExprKind k) {
  Expr *e = ir_alloc(ps->m, sizeof *e);
  e->kind = k;
  return e;
}

/* A C float literal without hex forms, inf or nan: [+-]? digits [. digits] [e [+-] digits]. */
static bool ex_number(ExprParser *ps, double *out) {
  const char *q = ps->p;
  if (*q == '+' || *q == '-') q++;
  bool digits = false;
  while (isdigit((unsigned char)*q)) q++, digits = true;
  if (*q == '.') {
    q++;
    while (isdigit((unsigned char)*q)) q++, digits = true;
  }
  if (!digits) return false;
  if (*q == 'e' || *q == 'E') {
    const char *r = q + 1;
    if (*r == '+' || *r == '-') r++;
    if (!isdigit((unsigned char)*r)) return false;
    while (isdigit((unsigned char)*r)) r++;
    q = r;
  }
  char buf[64];
  size_t len = (size_t)(q - ps->p);
  if (len >= sizeof buf) return false;
  memcpy(buf, ps->p, len);
  buf[len] = 0;
  *out = strtod(buf, NULL);
  ps->p = q;
  return true;
}

static Expr *ex_parse(ExprParser *ps, int depth) {
  if (depth > EXPR_MAX_DEPTH) {
    ex_fail(ps, "nested too deeply", NULL);
    return NULL;
  }
  ex_skip(ps);
  const char *c = ps->p;
  if (*c == '$') {
    ps->p++;
    if (!isdigit((unsigned char)*ps->p)) {
      ex_fail(ps, "expected an operand number after '$'", NULL);
      return NULL;
    }
    long v = 0;
    while (isdigit((unsigned char)*ps->p)) {
      if (v < 100000) v = v * 10 + (*ps->p - '0');
      ps->p++;
    }
    if (v >= ps->nargs) {
      ps->p = c;
      char d[48];
      snprintf(d, sizeof d, " (the op has %d)", ps->nargs);
      ex_fail(ps, "operand out of range", d);
      return NULL;
    }
    Expr *e = ex_node(ps, EX_ARG);
    e->arg = (int)v;
    return e;
  }
  if (isdigit((unsigned char)*c) || *c == '.' || *c == '-' || *c == '+') {
    double v;
    if (!ex_number(ps, &v)) {
      ex_fail(ps, "malformed number", NULL);
      return NULL;
    }
    Expr *e = ex_node(ps, EX_CONST);
    e->c = v;
    return e;
  }
  if (isalpha((unsigned char)*c) || *c == '_') {
    char name[32];
    size_t len = 0;
    while (isalnum((unsigned char)ps->p[len]) || ps->p[len] == '_') len++;
    if (len >= sizeof name) {
      ex_fail(ps, "unknown function", NULL);
      return NULL;
    }
    memcpy(name, ps->p, len);
    name[len] = 0;
    int k = ir_op_by_name(name);
    if (k < 0 || !(ir_op_info[k].flags & OPF_EW)) {
      char d[48];
      snprintf(d, sizeof d, " '%s'", name);
      ex_fail(ps, "unknown element-wise function", d);
      return NULL;
    }
    ps->p += len;
    ex_skip(ps);
    if (*ps->p != '(') {
      ex_fail(ps, "expected '('", NULL);
      return NULL;
    }
    ps->p++;
    int arity = ir_op_info[k].min_in;
    IR_ASSERT(arity >= 1 && arity <= 2);
    Expr *e = ex_node(ps, EX_OP);
    e->op = (OpKind)k;
    e->nkid = arity;
    for (int i = 0; i < arity; i++) {
      if (i > 0) {
        ex_skip(ps);
        if (*ps->p != ',') {
          char d[64];
          snprintf(d, sizeof d, " ('%s' takes %d operand%s)", name, arity, arity == 1 ? "" : "s");
          ex_fail(ps, "expected ','", d);
          return NULL;
        }
        ps->p++;
      }
      e->kid[i] = ex_parse(ps, depth + 1);
      if (!e->kid[i]) return NULL;
    }
    ex_skip(ps);
    if (*ps->p != ')') {
      char d[64];
      snprintf(d, sizeof d, " ('%s' takes %d operand%s)", name, arity, arity == 1 ? "" : "s");
      ex_fail(ps, "expected ')'", d);
      return NULL;
    }
    ps->p++;
    return e;
  }
  ex_fail(ps, *c ? "unexpected character" : "unexpected end", NULL);
  return NULL;
}

Expr *ir_expr_parse(Module *m, const char *s, int nargs, char *err, size_t n) {
  if (err && n) err[0] = 0;
  ExprParser ps = {m, s ? s : "", s ? s : "", nargs, err, n, false};
  Expr *e = ex_parse(&ps, 0);
  if (!e) return NULL;
  ex_skip(&ps);
  if (*ps.p) {
    ex_fail(&ps, "trailing characters", NULL);
    return NULL;
  }
  return e;
}

double ir_ew_apply(OpKind k, double a, double b) {
  switch (k) {
  case OP_ADD: return a + b;
  case OP_SUB: return a - b;
  case OP_MUL: return a * b;
  case OP_DIV: return a / b;
  case OP_NEG: return -a;
  case OP_EXP: return exp(a);
  case OP_TANH: return tanh(a);
  case OP_SIGMOID: return 1.0 / (1.0 + exp(-a));
  case OP_RELU: return a > 0 ? a : 0.0;
  case OP_GELU: return 0.5 * a * (1.0 + erf(a / sqrt(2.0)));
  case OP_GELU_TANH: {
    const double c = sqrt(2.0 / 3.14159265358979323846);
    return 0.5 * a * (1.0 + tanh(c * (a + 0.044715 * a * a * a)));
  }
  case OP_SILU: return a / (1.0 + exp(-a));
  case OP_GELU_D: /* Phi(x) + x phi(x) */
    return 0.5 * (1.0 + erf(a / sqrt(2.0))) + a * exp(-0.5 * a * a) / sqrt(2.0 * M_PI);
  case OP_GELU_TANH_D: {
    double c = sqrt(2.0 / M_PI), t = tanh(c * (a + 0.044715 * a * a * a));
    return 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * a * a);
  }
  case OP_RELU_D: return a > 0 ? 1.0 : 0.0;
  case OP_SILU_D: {
    double sg = 1.0 / (1.0 + exp(-a));
    return sg * (1.0 + a * (1.0 - sg));
  }
  default: die("ir_ew_apply: %s is not an element-wise op", (unsigned)k < OP_COUNT ? ir_op_name(k) : "?");
  }
}

double ir_expr_eval(const Expr *e, const double *args) {
  switch (e->kind) {
  case EX_ARG: return args[e->arg];
  case EX_CONST: return e->c;
  case EX_OP: {
    double a = ir_expr_eval(e->kid[0], args);
    double b = e->nkid > 1 ? ir_expr_eval(e->kid[1], args) : 0.0;
    return ir_ew_apply(e->op, a, b);
  }
  }
  die("ir_expr_eval: bad expression kind %d", (int)e->kind);
}

int ir_expr_count_ops(const Expr *e) {
  if (!e || e->kind != EX_OP) return 0;
  int n = 1;
  for (int i = 0; i < e->nkid; i++) n += ir_expr_count_ops(e->kid[i]);
  return n;
}
