/* parse.c: the parser of the IR text form (grammar in docs/ir.md), the inverse of print.c.
 *
 * Any stage's IR can be saved, edited and fed back in, and tests write IR by hand, so the parser
 * takes hostile input: it never reads past the text, never recurses on input structure (the
 * grammar has no nesting deeper than a fixed few levels), bounds every list, and reports errors as
 * "FILE:LINE:COL: error: ..." with 1-based positions pointing at the offending token. After an
 * error it skips to the next line and goes on, so one run reports several errors.
 *
 * The module is built with the ir.h builder API. Each op's attributes are checked against
 * ir/ops.def (ATTR rows) by ir_check_attrs (the verifier's checker, so both say the same); its written result
 * types become its values' types; the op's shape rule (ir_infer) must agree, else the mismatch is
 * reported at the op. Functions may be defined after their callers, so calls are checked in a second pass once
 * every function's signature is known. Whatever ir_parse() returns passes ir_verify().
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

#define MAX_LIST 1024              /* operands, results, arguments, list elements per construct */

/* ---- lexer -------------------------------------------------------------------------------- */

typedef enum TokKind {
  T_EOF, T_IDENT, T_GNAME, T_LNAME, T_INT, T_FLOAT, T_STRING, T_PUNCT, T_ERROR
} TokKind;

typedef struct Token {
  TokKind kind;
  const char *p;      /* text (for names: after the sigil; for strings: after the quote) */
  size_t len;
  int line, col;
  bool bol;           /* first token on its line */
  char c;             /* T_PUNCT: the character ('>' for "->") */
  int64_t i;          /* T_INT */
  double f;           /* T_FLOAT */
  const char *msg;    /* T_ERROR */
} Token;

typedef struct Lexer {
  const char *p, *end, *linestart;
  int line, last_line;
} Lexer;

static bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-';
}
static bool ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void lex_number(Lexer *L, Token *t) {
  const char *s = L->p, *q = s;
  if (q < L->end && (*q == '-' || *q == '+')) q++;
  if (L->end - q >= 3 && memcmp(q, "inf", 3) == 0 && (q + 3 == L->end || !ident_char(q[3]))) {
    t->kind = T_FLOAT;
    t->f = *s == '-' ? -INFINITY : INFINITY;
    L->p = q + 3;
    t->len = (size_t)(L->p - s);
    return;
  }
  bool isfloat = false;
  while (q < L->end && is_digit(*q)) q++;
  if (q < L->end && *q == '.') {
    isfloat = true;
    q++;
    while (q < L->end && is_digit(*q)) q++;
  }
  if (q < L->end && (*q == 'e' || *q == 'E')) {
    const char *r = q + 1;
    if (r < L->end && (*r == '+' || *r == '-')) r++;
    if (r < L->end && is_digit(*r)) {
      isfloat = true;
      while (r < L->end && is_digit(*r)) r++;
      q = r;
    }
  }
  L->p = q;
  t->len = (size_t)(q - s);
  char buf[128];
  if (t->len >= sizeof buf) {
    t->kind = T_ERROR;
    t->msg = "number too long";
    return;
  }
  memcpy(buf, s, t->len);
  buf[t->len] = 0;
  if (isfloat) {
    t->kind = T_FLOAT;
    t->f = strtod(buf, NULL);
  } else {
    errno = 0;
    t->kind = T_INT;
    t->i = strtoll(buf, NULL, 10);
    if (errno == ERANGE) {
      t->kind = T_ERROR;
      t->msg = "integer literal out of range";
    }
  }
}

static Token lex(Lexer *L) {
  Token t;
  memset(&t, 0, sizeof t);
  for (;;) {
    while (L->p < L->end && (*L->p == ' ' || *L->p == '\t' || *L->p == '\r' || *L->p == '\n')) {
      if (*L->p == '\n') {
        L->line++;
        L->linestart = L->p + 1;
      }
      L->p++;
    }
    if (L->p < L->end && *L->p == ';') {
      while (L->p < L->end && *L->p != '\n') L->p++;
      continue;
    }
    break;
  }
  t.line = L->line;
  t.col = (int)(L->p - L->linestart) + 1;
  t.bol = L->line != L->last_line;
  L->last_line = L->line;
  t.p = L->p;
  if (L->p >= L->end) {
    t.kind = T_EOF;
    return t;
  }
  const char *s = L->p;
  char c = *s;
  char n1 = s + 1 < L->end ? s[1] : 0;
  if (c == '@' || c == '%') {
    const char *q = s + 1;
    while (q < L->end && name_char(*q)) q++;
    if (q == s + 1) {
      t.kind = T_ERROR;
      t.msg = c == '@' ? "expected a name after '@'" : "expected a name after '%'";
      L->p++;
      return t;
    }
    t.kind = c == '@' ? T_GNAME : T_LNAME;
    t.p = s + 1;
    t.len = (size_t)(q - s - 1);
    L->p = q;
    return t;
  }
  if (is_digit(c) || ((c == '-' || c == '+') && (is_digit(n1) || n1 == '.' || n1 == 'i')) ||
      (c == '.' && is_digit(n1))) {
    if ((c == '-' || c == '+') && n1 == 'i' && !(L->end - s >= 4 && memcmp(s + 1, "inf", 3) == 0)) {
      t.kind = T_ERROR;
      t.msg = "unexpected character";
      L->p++;
      return t;
    }
    lex_number(L, &t);
    return t;
  }
  if (ident_start(c)) {
    const char *q = s;
    while (q < L->end && ident_char(*q)) q++;
    t.kind = T_IDENT;
    t.len = (size_t)(q - s);
    L->p = q;
    return t;
  }
  if (c == '"') {
    const char *q = s + 1;
    while (q < L->end && *q != '"' && *q != '\n') {
      if (*q == '\\') {
        if (q + 1 < L->end && (q[1] == '\\' || q[1] == '"')) {
          q += 2;
        } else if (q + 3 < L->end && q[1] == 'x' && hexval(q[2]) >= 0 && hexval(q[3]) >= 0 &&
                   (hexval(q[2]) | hexval(q[3])) != 0) {
          q += 4;
        } else {
          t.kind = T_ERROR;
          t.msg = "invalid escape in string (use \\\\, \\\" or \\xNN)";
          t.col += (int)(q - s);
          L->p = q + 1;
          return t;
        }
      } else {
        q++;
      }
    }
    if (q >= L->end || *q != '"') {
      t.kind = T_ERROR;
      t.msg = "unterminated string";
      L->p = q;
      return t;
    }
    t.kind = T_STRING;
    t.p = s + 1;
    t.len = (size_t)(q - s - 1);
    L->p = q + 1;
    return t;
  }
  if (c == '-' && n1 == '>') {
    t.kind = T_PUNCT;
    t.c = '>';
    t.len = 2;
    L->p += 2;
    return t;
  }
  if (strchr("(){}[],=:", c) && c) {
    t.kind = T_PUNCT;
    t.c = c;
    t.len = 1;
    L->p++;
    return t;
  }
  t.kind = T_ERROR;
  t.msg = "unexpected character";
  L->p++;
  return t;
}

/* ---- parser state ------------------------------------------------------------------------- */

/* A function-local name: the text after '%' (pointing into the source) and its value; NULL value
 * marks a name whose defining op had an error (uses are accepted silently to avoid cascades). */
typedef struct Sym {
  const char *name;
  size_t len;
  Value *val;
  bool used;  /* slot in use */
} Sym;

typedef struct SymTab {
  Sym *slots;
  size_t cap, n;
} SymTab;

typedef struct Deferred {
  Op *op;
  Func *f;
} Deferred;

typedef struct Parser {
  const char *file;
  Lexer L;
  Token tok;
  Diag *d;
  Module *m;
  int nerr;
  int last_err_line, last_err_col;
  SymTab syms;
  Deferred *calls;
  int ncalls, capcalls;
  Func **bad_funcs;     /* functions with errors (calls to them are not checked) */
  int nbad, capbad;
  Token entry_tok;
  bool have_entry;
  bool have_train;      /* a `train {...}` line was read */
} Parser;

static void perr_at(Parser *P, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void perr_at(Parser *P, int line, int col, const char *fmt, ...) {
  P->nerr++;
  if (line > 0 && line == P->last_err_line) return; /* one error per line: the rest is fallout */
  P->last_err_line = line;
  P->last_err_col = col;
  va_list ap;
  va_start(ap, fmt);
  diag_verror(P->d, P->file, line, col, fmt, ap);
  va_end(ap);
}

static void next(Parser *P) {
  P->tok = lex(&P->L);
  while (P->tok.kind == T_ERROR) {
    const char *s = P->tok.p;
    if (strcmp(P->tok.msg, "unexpected character") == 0) {
      unsigned char ch = (unsigned char)*s;
      if (ch >= 0x20 && ch < 0x7f)
        perr_at(P, P->tok.line, P->tok.col, "unexpected character '%c'", ch);
      else
        perr_at(P, P->tok.line, P->tok.col, "unexpected byte 0x%02X", ch);
    } else {
      perr_at(P, P->tok.line, P->tok.col, "%s", P->tok.msg);
    }
    bool bol = P->tok.bol;
    P->tok = lex(&P->L);
    if (bol) P->tok.bol = true;
  }
}

static bool is_punct(const Parser *P, char c) { return P->tok.kind == T_PUNCT && P->tok.c == c; }
static bool is_ident(const Parser *P, const char *s) {
  return P->tok.kind == T_IDENT && strlen(s) == P->tok.len && memcmp(P->tok.p, s, P->tok.len) == 0;
}

/* A short printable description of the current token, for "expected X, got Y". */
static const char *tok_desc(const Parser *P, char *buf, size_t n) {
  const Token *t = &P->tok;
  switch (t->kind) {
  case T_EOF: return "end of file";
  case T_STRING: return "a string";
  case T_INT:
  case T_FLOAT: snprintf(buf, n, "'%.*s'", (int)(t->len < 24 ? t->len : 24), t->p); return buf;
  case T_GNAME: snprintf(buf, n, "'@%.*s'", (int)(t->len < 40 ? t->len : 40), t->p); return buf;
  case T_LNAME: snprintf(buf, n, "'%%%.*s'", (int)(t->len < 40 ? t->len : 40), t->p); return buf;
  case T_IDENT: snprintf(buf, n, "'%.*s'", (int)(t->len < 40 ? t->len : 40), t->p); return buf;
  case T_PUNCT: snprintf(buf, n, t->c == '>' ? "'->'" : "'%c'", t->c); return buf;
  default: return "an invalid token";
  }
}

static bool expected(Parser *P, const char *what) {
  char buf[64];
  perr_at(P, P->tok.line, P->tok.col, "expected %s, got %s", what, tok_desc(P, buf, sizeof buf));
  return false;
}

static bool expect_punct(Parser *P, char c, const char *what) {
  if (!is_punct(P, c)) return expected(P, what);
  next(P);
  return true;
}

/* Copies the token text into the module arena. */
static char *tok_str(Parser *P, const Token *t) {
  char *s = ir_alloc(P->m, t->len + 1);
  memcpy(s, t->p, t->len);
  s[t->len] = 0;
  return s;
}

static void mark_bad(Parser *P, Func *f) {
  if (P->nbad == P->capbad) {
    P->capbad = P->capbad ? 2 * P->capbad : 8;
    P->bad_funcs = realloc(P->bad_funcs, sizeof(Func *) * (size_t)P->capbad);
    if (!P->bad_funcs) die("out of memory");
  }
  P->bad_funcs[P->nbad++] = f;
}

static bool is_bad(const Parser *P, const Func *f) {
  for (int i = 0; i < P->nbad; i++)
    if (P->bad_funcs[i] == f) return true;
  return false;
}

/* Skips to the first token of a later line than the statement starting at `start`. */
static void sync_line(Parser *P, const char *start) {
  while (P->tok.kind != T_EOF && (!P->tok.bol || P->tok.p == start)) next(P);
}

/* ---- symbol table ------------------------------------------------------------------------- */

static size_t sym_hash(const char *s, size_t n) {
  size_t h = 1469598103934665603u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211u;
  return h;
}

static Sym *sym_slot(SymTab *t, const char *s, size_t n) {
  size_t i = sym_hash(s, n) & (t->cap - 1);
  while (t->slots[i].used && !(t->slots[i].len == n && memcmp(t->slots[i].name, s, n) == 0)) i = (i + 1) & (t->cap - 1);
  return &t->slots[i];
}

static void sym_reset(SymTab *t) {
  free(t->slots);
  t->cap = 64;
  t->n = 0;
  t->slots = calloc(t->cap, sizeof(Sym));
  if (!t->slots) die("out of memory");
}

static Sym *sym_find(SymTab *t, const char *s, size_t n) {
  Sym *e = sym_slot(t, s, n);
  return e->used ? e : NULL;
}

static void sym_add(SymTab *t, const char *s, size_t n, Value *v) {
  if (2 * (t->n + 1) > t->cap) {
    Sym *old = t->slots;
    size_t oldcap = t->cap;
    t->cap *= 2;
    t->slots = calloc(t->cap, sizeof(Sym));
    if (!t->slots) die("out of memory");
    for (size_t i = 0; i < oldcap; i++)
      if (old[i].used) *sym_slot(t, old[i].name, old[i].len) = old[i];
    free(old);
  }
  Sym *e = sym_slot(t, s, n);
  if (!e->used) t->n++;
  *e = (Sym){s, n, v, true};
}

/* ---- types and attributes ----------------------------------------------------------------- */

static bool parse_type(Parser *P, Type *t) {
  memset(t, 0, sizeof *t);
  if (P->tok.kind != T_IDENT) return expected(P, "a type such as f32[4,8]");
  char name[16];
  int dt = -1;
  if (P->tok.len < sizeof name) {
    memcpy(name, P->tok.p, P->tok.len);
    name[P->tok.len] = 0;
    dt = ir_dtype_by_name(name);
  }
  if (dt < 0) {
    perr_at(P, P->tok.line, P->tok.col, "unknown element type '%.*s' (expected f32, f16, bf16, i8, i32, i64, i8_row, q8_0 or q4_0)",
            (int)(P->tok.len < 40 ? P->tok.len : 40), P->tok.p);
    return false;
  }
  t->dtype = (DType)dt;
  next(P);
  if (!expect_punct(P, '[', "'[' after the element type")) return false;
  int64_t numel = 1;
  if (!is_punct(P, ']')) {
    for (;;) {
      if (P->tok.kind != T_INT) return expected(P, "a dimension");
      if (P->tok.i < 1) {
        perr_at(P, P->tok.line, P->tok.col, "dimension must be at least 1, got %lld", (long long)P->tok.i);
        return false;
      }
      if (t->rank == IR_MAX_RANK) {
        perr_at(P, P->tok.line, P->tok.col, "a type has at most %d dimensions", IR_MAX_RANK);
        return false;
      }
      if (P->tok.i > IR_MAX_NUMEL || numel > IR_MAX_NUMEL / P->tok.i) {
        perr_at(P, P->tok.line, P->tok.col, "type is too large");
        return false;
      }
      numel *= P->tok.i;
      t->dim[t->rank++] = P->tok.i;
      next(P);
      if (is_punct(P, ']')) break;
      if (!expect_punct(P, ',', "',' or ']' in the type")) return false;
    }
  }
  next(P);
  return true;
}

/* Decodes a string token (escapes already validated by the lexer) into the arena. */
static char *decode_string(Parser *P, const Token *t) {
  char *s = ir_alloc(P->m, t->len + 1), *o = s;
  for (size_t i = 0; i < t->len; i++) {
    if (t->p[i] == '\\' && i + 1 < t->len && t->p[i + 1] == 'x' && i + 3 < t->len) {
      *o++ = (char)(hexval(t->p[i + 2]) * 16 + hexval(t->p[i + 3]));
      i += 3;
    } else if (t->p[i] == '\\' && i + 1 < t->len) {
      *o++ = t->p[++i];
    } else {
      *o++ = t->p[i];
    }
  }
  *o = 0;
  return s;
}

/* VALUE := INT | FLOAT | inf | nan | STRING | @NAME | '[' INT (',' INT)* ']' | '[' ']' */
static bool parse_attr_value(Parser *P, Attr *a) {
  switch (P->tok.kind) {
  case T_INT: a->kind = ATTR_INT; a->i = P->tok.i; next(P); return true;
  case T_FLOAT: a->kind = ATTR_FLOAT; a->f = P->tok.f; next(P); return true;
  case T_STRING: a->kind = ATTR_STR; a->s = decode_string(P, &P->tok); next(P); return true;
  case T_GNAME: a->kind = ATTR_SYM; a->s = tok_str(P, &P->tok); next(P); return true;
  case T_IDENT:
    if (is_ident(P, "inf") || is_ident(P, "nan")) {
      a->kind = ATTR_FLOAT;
      a->f = is_ident(P, "inf") ? INFINITY : NAN;
      next(P);
      return true;
    }
    break;
  case T_PUNCT:
    if (P->tok.c == '[') {
      next(P);
      a->kind = ATTR_INTS;
      int64_t vals[MAX_LIST];
      int n = 0;
      if (!is_punct(P, ']')) {
        for (;;) {
          if (P->tok.kind != T_INT) return expected(P, "an integer in the list");
          if (n == MAX_LIST) {
            perr_at(P, P->tok.line, P->tok.col, "list too long");
            return false;
          }
          vals[n++] = P->tok.i;
          next(P);
          if (is_punct(P, ']')) break;
          if (!expect_punct(P, ',', "',' or ']' in the list")) return false;
        }
      }
      next(P);
      a->n = n;
      a->ints = ir_alloc(P->m, sizeof(int64_t) * (size_t)(n ? n : 1));
      if (n) memcpy(a->ints, vals, sizeof(int64_t) * (size_t)n);
      return true;
    }
    break;
  default: break;
  }
  return expected(P, "an attribute value (number, string, @symbol or [list])");
}

/* ATTRS := '{' (KEY '=' VALUE (',' KEY '=' VALUE)*)? '}'. Returns the count, -1 on error. */
static int parse_attrs(Parser *P, Attr *out, int max) {
  next(P); /* '{' */
  int n = 0;
  if (is_punct(P, '}')) {
    next(P);
    return 0;
  }
  for (;;) {
    if (P->tok.kind != T_IDENT) {
      expected(P, "an attribute name");
      return -1;
    }
    Token key = P->tok;
    Attr a;
    memset(&a, 0, sizeof a);
    a.key = tok_str(P, &key);
    for (int i = 0; i < n; i++)
      if (strcmp(out[i].key, a.key) == 0) {
        perr_at(P, key.line, key.col, "duplicate attribute '%s'", a.key);
        return -1;
      }
    if (n == max) {
      perr_at(P, key.line, key.col, "too many attributes");
      return -1;
    }
    next(P);
    if (!expect_punct(P, '=', "'=' after the attribute name")) return -1;
    if (!parse_attr_value(P, &a)) return -1;
    out[n++] = a;
    if (is_punct(P, '}')) break;
    if (!expect_punct(P, ',', "',' or '}' after an attribute")) return -1;
  }
  next(P);
  return n;
}

/* ---- module header, entry, params --------------------------------------------------------- */

static bool parse_number(Parser *P, double *v) {
  if (P->tok.kind == T_INT)
    *v = (double)P->tok.i;
  else if (P->tok.kind == T_FLOAT)
    *v = P->tok.f;
  else
    return expected(P, "a number");
  next(P);
  return true;
}

/* One integer at the current token into *v (within [lo, hi]); false with an error otherwise. */
static bool parse_int_in(Parser *P, int64_t *v, int64_t lo, int64_t hi, const char *what) {
  if (P->tok.kind != T_INT) return expected(P, what);
  if (P->tok.i < lo || P->tok.i > hi) {
    perr_at(P, P->tok.line, P->tok.col, "%s: %lld is out of range [%lld, %lld]", what, (long long)P->tok.i,
            (long long)lo, (long long)hi);
    return false;
  }
  *v = P->tok.i;
  next(P);
  return true;
}

/* prune=magnitude(S) | global(S) | nm(N:M) */
static bool parse_prune_fact(Parser *P, Param *p) {
  int k = -1;
  for (int i = PRUNE_MAGNITUDE; i < PRUNE_COUNT; i++)
    if (is_ident(P, ir_prune_name((PruneKind)i))) k = i;
  if (k < 0) return expected(P, "a pruning: magnitude(S), global(S) or nm(N:M)");
  next(P);
  p->prune = (PruneKind)k;
  if (!expect_punct(P, '(', "'('")) return false;
  if (k == PRUNE_NM) {
    int64_t n = 0, mm = 0;
    if (!parse_int_in(P, &n, 1, 1 << 16, "N of nm(N:M)") || !expect_punct(P, ':', "':' between N and M") ||
        !parse_int_in(P, &mm, 2, 1 << 16, "M of nm(N:M)"))
      return false;
    p->prune_n = (int)n;
    p->prune_m = (int)mm;
  } else {
    Token at = P->tok;
    if (!parse_number(P, &p->sparsity)) return false;
    if (!(p->sparsity > 0 && p->sparsity < 1)) {
      perr_at(P, at.line, at.col, "the sparsity of prune=%s is in (0, 1)", ir_prune_name(p->prune));
      return false;
    }
  }
  return expect_punct(P, ')', "')'");
}

/* select=RULE(@GROUP,AXIS,PARTS,UNIT,OF) */
static bool parse_select_fact(Parser *P, Param *p) {
  int k = -1;
  for (int i = SEL_NORM; i < SEL_COUNT; i++)
    if (is_ident(P, ir_select_name((SelectRule)i))) k = i;
  if (k < 0) return expected(P, "a selection rule: norm(...) or importance(...)");
  next(P);
  p->select = (SelectRule)k;
  if (!expect_punct(P, '(', "'('")) return false;
  if (P->tok.kind != T_GNAME) return expected(P, "the group's parameter '@name'");
  Token g = P->tok;
  p->select_group = tok_str(P, &g);
  next(P);
  int64_t v[4];
  static const char *const what[4] = {"the axis", "the parts", "the unit", "the units per part"};
  for (int i = 0; i < 4; i++) {
    if (!expect_punct(P, ',', "','") || !parse_int_in(P, &v[i], i == 0 ? 0 : 1, i == 0 ? 1 : 1 << 24, what[i]))
      return false;
  }
  p->select_axis = (int)v[0];
  p->select_parts = (int)v[1];
  p->select_unit = (int)v[2];
  p->select_of = (int)v[3];
  return expect_punct(P, ')', "')'");
}

/* lowrank=svd(R) | svd(R,E): a factor of a weight factorised at rank R, E the retained energy */
static bool parse_lowrank_fact(Parser *P, Param *p) {
  if (!is_ident(P, "svd")) return expected(P, "a factorisation: svd(R) or svd(R,E)");
  next(P);
  int64_t r = 0;
  if (!expect_punct(P, '(', "'('") || !parse_int_in(P, &r, 1, 1 << 24, "the rank of lowrank=svd(R)")) return false;
  p->lowrank = (int)r;
  p->lowrank_energy = -1;
  if (is_punct(P, ',')) {
    next(P);
    Token at = P->tok;
    if (!parse_number(P, &p->lowrank_energy)) return false;
    if (!(p->lowrank_energy >= 0 && p->lowrank_energy <= 1)) {
      perr_at(P, at.line, at.col, "the retained energy of lowrank=svd(R,E) is in [0, 1]");
      return false;
    }
  }
  return expect_punct(P, ')', "')'");
}

/* FACT := init=KIND['(' NUM ')'] | frozen | nodecay | format=NAME['(' block=INT ')'] | nnz=INT
 *       | prune=magnitude(S) | prune=global(S) | prune=nm(N:M) | select=RULE(@G,AXIS,PARTS,UNIT,OF)
 *       | lowrank=svd(R[,E]) */
static bool parse_param(Parser *P) {
  Token kw = P->tok;
  next(P);
  if (P->tok.kind != T_GNAME) return expected(P, "a parameter name '@name'");
  Token nt = P->tok;
  next(P);
  if (!expect_punct(P, ':', "':' after the parameter name")) return false;
  Type t;
  if (!parse_type(P, &t)) return false;
  char *name = tok_str(P, &nt);
  Param *p = ir_add_param(P->m, name, t, INIT_ZEROS, 0);
  if (!p) {
    perr_at(P, nt.line, nt.col, "redefinition of parameter @%s", name);
    return false;
  }
  p->line = kw.line;
  p->col = kw.col;
  unsigned seen = 0;
  while (P->tok.kind != T_EOF && !P->tok.bol) {
    if (P->tok.kind != T_IDENT)
      return expected(P, "a parameter fact (init=, frozen, nodecay, nnz=, prune=, select=, lowrank=, format=)");
    Token f = P->tok;
    static const char *const facts[] = {"init", "frozen", "nodecay", "format", "nnz", "prune", "select", "lowrank"};
    int fi = -1;
    for (int i = 0; i < 8; i++)
      if (is_ident(P, facts[i])) fi = i;
    if (is_ident(P, "shared")) {
      perr_at(P, f.line, f.col, "'shared=' was removed: to share a weight, bind the same parameter "
                                "(write `param {p=@P}` for @P wherever it is used) and drop this parameter");
      return false;
    }
    if (is_ident(P, "quant") || is_ident(P, "sparse")) { /* csr is a dtype; the pruning is prune= */
      perr_at(P, f.line, f.col, "'%.*s=' was removed: a parameter's storage is written format=NAME (only "
                                "'dense', the default, is implemented yet)", (int)f.len, f.p);
      return false;
    }
    if (fi < 0) {
      char w[48];
      snprintf(w, sizeof w, "%.*s", (int)(f.len < 40 ? f.len : 40), f.p);
      const char *s = diag_suggest(w, facts, 8);
      perr_at(P, f.line, f.col, "unknown parameter fact '%s'%s%s%s", w, s ? " (did you mean '" : "", s ? s : "",
              s ? "'?)" : "");
      return false;
    }
    if (seen & (1u << fi)) {
      perr_at(P, f.line, f.col, "duplicate parameter fact '%s'", facts[fi]);
      return false;
    }
    seen |= 1u << fi;
    next(P);
    if (fi == 1) {
      p->trainable = false;
      continue;
    }
    if (fi == 2) {
      p->decay = false;
      continue;
    }
    if (!expect_punct(P, '=', "'=' after the fact name")) return false;
    if (fi == 4) {
      if (!parse_int_in(P, &p->nnz, 1, IR_MAX_NUMEL, "the nonzero count of nnz=")) return false;
      continue;
    }
    if (fi == 5) {
      if (!parse_prune_fact(P, p)) return false;
      continue;
    }
    if (fi == 6) {
      if (!parse_select_fact(P, p)) return false;
      continue;
    }
    if (fi == 7) {
      if (!parse_lowrank_fact(P, p)) return false;
      continue;
    }
    if (fi == 0) {
      int k = -1;
      for (int i = 0; i < INIT_COUNT; i++)
        if (is_ident(P, ir_init_name((InitKind)i))) k = i;
      if (k < 0) return expected(P, "an initialiser (zeros, ones, normal(X), uniform(X), sinusoid)");
      next(P);
      p->init = (InitKind)k;
      if (k == INIT_NORMAL || k == INIT_UNIFORM) {
        if (!expect_punct(P, '(', "'(' and a scale after the initialiser")) return false;
        if (!parse_number(P, &p->init_arg)) return false;
        if (!(isfinite(p->init_arg) && p->init_arg >= 0)) {
          perr_at(P, f.line, f.col, "initialiser scale must be finite and non-negative");
          return false;
        }
        if (!expect_punct(P, ')', "')'")) return false;
      }
    } else {
      if (P->tok.kind != T_IDENT) return expected(P, "a storage format such as dense");
      char w[48];
      snprintf(w, sizeof w, "%.*s", (int)(P->tok.len < 40 ? P->tok.len : 40), P->tok.p);
      int k = ir_param_format_by_name(w);
      if (k != PF_DENSE) { /* the only format so far; others get their syntax with their kernels */
        perr_at(P, P->tok.line, P->tok.col, "format '%s' is not implemented yet (only 'dense' is)", w);
        return false;
      }
      p->fmt = (ParamFormat)k;
      next(P);
    }
  }
  return true;
}

/* TRAIN := 'train' '{' FIELD (',' FIELD)* '}', FIELD := KEY '=' (INT | FLOAT | WORD | STRING), every
 * field of ir_train_fields exactly once (data optional), each value in its field's range. */
static bool parse_train(Parser *P) {
  Token kw = P->tok;
  next(P);
  if (P->have_train) {
    perr_at(P, kw.line, kw.col, "duplicate 'train' line");
    return false;
  }
  P->have_train = true;
  TrainConfig *t = &P->m->train;
  memset(t, 0, sizeof *t);
  t->line = kw.line;
  t->col = kw.col;
  if (!expect_punct(P, '{', "'{' after 'train'")) return false;
  bool seen[64] = {false};
  Token at[64];
  IR_ASSERT(ir_train_nfields <= 64);
  while (!is_punct(P, '}')) {
    if (P->tok.kind != T_IDENT) return expected(P, "a training setting such as steps=1000");
    Token kt = P->tok;
    char key[48];
    snprintf(key, sizeof key, "%.*s", (int)(kt.len < 40 ? kt.len : 40), kt.p);
    const TrainField *f = ir_train_field(key);
    if (!f) {
      const char *names[64];
      for (int i = 0; i < ir_train_nfields; i++) names[i] = ir_train_fields[i].key;
      const char *s = diag_suggest(key, names, ir_train_nfields);
      perr_at(P, kt.line, kt.col, "unknown training setting '%s'%s%s%s", key, s ? " (did you mean '" : "",
              s ? s : "", s ? "'?)" : "");
      return false;
    }
    int fi = (int)(f - ir_train_fields);
    if (seen[fi]) {
      perr_at(P, kt.line, kt.col, "duplicate training setting '%s'", key);
      return false;
    }
    seen[fi] = true;
    next(P);
    if (!expect_punct(P, '=', "'=' after the setting's name")) return false;
    at[fi] = P->tok;
    char *field = (char *)t + f->offset, err[160];
    switch (f->kind) {
    case TF_INT:
      if (P->tok.kind != T_INT) return expected(P, "an integer");
      if (!ir_train_check_int(f, P->tok.i, err, sizeof err)) {
        perr_at(P, P->tok.line, P->tok.col, "%s", err);
        return false;
      }
      *(int64_t *)field = P->tok.i;
      break;
    case TF_REAL: {
      double v = P->tok.kind == T_INT ? (double)P->tok.i : P->tok.f;
      if (P->tok.kind != T_INT && P->tok.kind != T_FLOAT) return expected(P, "a number");
      if (!ir_train_check_real(f, v, err, sizeof err)) {
        perr_at(P, P->tok.line, P->tok.col, "%s", err);
        return false;
      }
      *(double *)field = v;
      break;
    }
    case TF_ENUM: {
      int k = -1;
      for (int i = 0; i < f->nwords; i++)
        if (is_ident(P, f->words[i])) k = i;
      if (k < 0) {
        char list[128] = "";
        size_t n = 0;
        for (int i = 0; i < f->nwords && n < sizeof list; i++)
          n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", f->words[i]);
        char what[160];
        snprintf(what, sizeof what, "one of %s for '%s'", list, f->key);
        return expected(P, what);
      }
      *(int *)field = k;
      break;
    }
    case TF_STR:
      if (P->tok.kind != T_STRING) return expected(P, "a string");
      *(const char **)field = decode_string(P, &P->tok);
      break;
    }
    next(P);
    if (is_punct(P, '}')) break;
    if (!expect_punct(P, ',', "',' or '}' after a training setting")) return false;
  }
  next(P);
  for (int i = 0; i < ir_train_nfields; i++)
    if (!seen[i] && !ir_train_fields[i].optional) {
      perr_at(P, kw.line, kw.col, "the 'train' line lacks '%s' (every setting but data and prune_ is written)",
              ir_train_fields[i].key);
      return false;
    }
  const char *bad = NULL;
  char err[160];
  if (!ir_train_check_relations(t, &bad, err, sizeof err)) {
    const Token *bt = &at[ir_train_field(bad) - ir_train_fields];
    perr_at(P, bt->line, bt->col, "%s", err);
    return false;
  }
  t->present = true;
  return true;
}

/* ---- functions ---------------------------------------------------------------------------- */

static bool all_digits(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!is_digit(s[i])) return false;
  return true;
}

/* A value named by token t: digits-only names are unnamed (printed %N). */
static const char *value_name(Parser *P, const Token *t) { return all_digits(t->p, t->len) ? NULL : tok_str(P, t); }

/* Checks op's attributes against ir/ops.def (ATTR rows) (the verifier's checker), then runs its shape rule
 * on a copy and reports a disagreement with the written result types. */
static void check_op(Parser *P, Func *f, Op *op) {
  char err[256];
  if (!ir_check_attrs(op, err, sizeof err)) {
    perr_at(P, op->line, op->col, "%s", err);
    mark_bad(P, f);
    return;
  }
  Value **outs = malloc(sizeof(Value *) * (size_t)(op->nout + 1));
  Value *vals = malloc(sizeof(Value) * (size_t)(op->nout + 1));
  if (!outs || !vals) die("out of memory");
  Op copy = *op;
  for (int i = 0; i < op->nout; i++) {
    vals[i] = *op->out[i];
    outs[i] = &vals[i];
  }
  copy.out = outs;
  if (!ir_infer(P->m, &copy, err, sizeof err)) {
    perr_at(P, op->line, op->col, "%s", err);
    mark_bad(P, f);
  } else {
    for (int i = 0; i < op->nout; i++)
      if (!ir_type_eq(&vals[i].type, &op->out[i]->type)) {
        char b1[96], b2[96];
        perr_at(P, op->line, op->col, "%s result %d is written as %s but its operands give %s", ir_op_name(op->kind),
                i, ir_type_str(&op->out[i]->type, b1, sizeof b1), ir_type_str(&vals[i].type, b2, sizeof b2));
        mark_bad(P, f);
        break;
      }
  }
  free(outs);
  free(vals);
}

static const char *suggest_op(const char *w) {
  const char *names[OP_COUNT];
  for (int i = 0; i < OP_COUNT; i++) names[i] = ir_op_info[i].name;
  return diag_suggest(w, names, OP_COUNT);
}

/* Parses "(%a, %b)" operands, looking each up; *poisoned if any names a value whose op failed. */
static bool parse_operands(Parser *P, Value **in, int *nin, bool *poisoned) {
  next(P); /* '(' */
  *nin = 0;
  if (is_punct(P, ')')) {
    next(P);
    return true;
  }
  for (;;) {
    if (P->tok.kind != T_LNAME) return expected(P, "an operand '%name'");
    if (*nin == MAX_LIST) {
      perr_at(P, P->tok.line, P->tok.col, "too many operands");
      return false;
    }
    Sym *s = sym_find(&P->syms, P->tok.p, P->tok.len);
    if (!s) {
      perr_at(P, P->tok.line, P->tok.col, "use of undefined value %%%.*s", (int)(P->tok.len < 60 ? P->tok.len : 60),
              P->tok.p);
      *poisoned = true;
    } else if (!s->val) {
      *poisoned = true;
    }
    in[(*nin)++] = s ? s->val : NULL;
    next(P);
    if (is_punct(P, ')')) break;
    if (!expect_punct(P, ',', "',' or ')' after an operand")) return false;
  }
  next(P);
  return true;
}

/* OP := RESULT (',' RESULT)* '=' NAME ['(' OPERANDS ')'] [ATTRS] ':' TYPE (',' TYPE)* */
static bool parse_op(Parser *P, Func *f, Value **in, Type *types, Token *res) {
  Token start = P->tok;
  int nres = 0;
  bool ok = true;
  for (;;) {
    if (P->tok.kind != T_LNAME) {
      ok = expected(P, "a result name '%name'");
      break;
    }
    if (nres == MAX_LIST) {
      perr_at(P, P->tok.line, P->tok.col, "too many results");
      ok = false;
      break;
    }
    res[nres++] = P->tok;
    next(P);
    if (!is_punct(P, ',')) break;
    next(P);
  }
  int kind = -1, nin = 0, nattr = 0, ntypes = 0;
  bool poisoned = false;
  Attr attrs[64];
  if (ok && !expect_punct(P, '=', "'=' after the result names")) ok = false;
  if (ok) {
    if (P->tok.kind != T_IDENT) {
      ok = expected(P, "an op name");
    } else {
      char w[48];
      snprintf(w, sizeof w, "%.*s", (int)(P->tok.len < 40 ? P->tok.len : 40), P->tok.p);
      kind = P->tok.len < 40 ? ir_op_by_name(w) : -1;
      if (kind < 0) {
        const char *s = suggest_op(w);
        perr_at(P, P->tok.line, P->tok.col, "unknown op '%s'%s%s%s", w, s ? " (did you mean '" : "", s ? s : "",
                s ? "'?)" : "");
        poisoned = true;
      }
      next(P);
    }
  }
  if (ok && is_punct(P, '(')) ok = parse_operands(P, in, &nin, &poisoned);
  if (ok && is_punct(P, '{')) {
    nattr = parse_attrs(P, attrs, 64);
    ok = nattr >= 0;
  }
  if (ok && !expect_punct(P, ':', "':' and the result types")) ok = false;
  Token types_tok = P->tok;
  while (ok) {
    if (ntypes == MAX_LIST) {
      perr_at(P, P->tok.line, P->tok.col, "too many types");
      ok = false;
      break;
    }
    if (!parse_type(P, &types[ntypes++])) ok = false;
    if (!ok || !is_punct(P, ',')) break;
    next(P);
  }
  if (ok && ntypes != nres) {
    perr_at(P, types_tok.line, types_tok.col, "%d result%s but %d type%s", nres, nres == 1 ? "" : "s", ntypes,
            ntypes == 1 ? "" : "s");
    poisoned = true;
  }
  if (ok && kind >= 0 && kind != OP_CALL && ir_op_info[kind].nout != nres) {
    perr_at(P, start.line, start.col, "%s has %d result%s, not %d", ir_op_info[kind].name, ir_op_info[kind].nout,
            ir_op_info[kind].nout == 1 ? "" : "s", nres);
    poisoned = true;
  }
  Op *op = NULL;
  if (ok && !poisoned) {
    op = ir_op_new(f, (OpKind)kind, nin, in, nres);
    op->line = start.line;
    op->col = start.col;
    for (int i = 0; i < nattr; i++) ir_set_attr(op, attrs[i]);
    for (int i = 0; i < nres; i++) {
      op->out[i]->name = value_name(P, &res[i]);
      op->out[i]->type = types[i];
    }
    ir_append(f, op);
  }
  if (!ok || poisoned) mark_bad(P, f);
  /* Define the results (poisoned when the op could not be built) so later uses do not cascade. */
  for (int i = 0; i < nres; i++) {
    if (sym_find(&P->syms, res[i].p, res[i].len)) {
      perr_at(P, res[i].line, res[i].col, "redefinition of %%%.*s", (int)(res[i].len < 60 ? res[i].len : 60), res[i].p);
      mark_bad(P, f);
      continue;
    }
    sym_add(&P->syms, res[i].p, res[i].len, op ? op->out[i] : NULL);
  }
  if (op) {
    if (op->kind == OP_CALL) {
      if (P->ncalls == P->capcalls) {
        P->capcalls = P->capcalls ? 2 * P->capcalls : 16;
        P->calls = realloc(P->calls, sizeof(Deferred) * (size_t)P->capcalls);
        if (!P->calls) die("out of memory");
      }
      P->calls[P->ncalls++] = (Deferred){op, f};
    } else {
      check_op(P, f, op);
    }
  }
  return ok;
}

/* RETURN := 'return' [VALUE (',' VALUE)*]; checked against the declared result types. */
static bool parse_return(Parser *P, Func *f, const Type *decl, int ndecl, Value **vals) {
  Token kw = P->tok;
  next(P);
  int n = 0;
  bool poisoned = false;
  if (P->tok.kind == T_LNAME) {
    for (;;) {
      if (P->tok.kind != T_LNAME) return expected(P, "a value '%name'");
      if (n == MAX_LIST) {
        perr_at(P, P->tok.line, P->tok.col, "too many return values");
        return false;
      }
      Token vt = P->tok;
      Sym *s = sym_find(&P->syms, vt.p, vt.len);
      if (!s) {
        perr_at(P, vt.line, vt.col, "use of undefined value %%%.*s", (int)(vt.len < 60 ? vt.len : 60), vt.p);
        poisoned = true;
      } else if (!s->val) {
        poisoned = true;
      } else if (n < ndecl && !ir_type_eq(&s->val->type, &decl[n])) {
        char b1[96], b2[96];
        perr_at(P, vt.line, vt.col, "returned value %%%.*s has type %s, but @%s is declared to return %s",
                (int)(vt.len < 60 ? vt.len : 60), vt.p, ir_type_str(&s->val->type, b1, sizeof b1), f->name,
                ir_type_str(&decl[n], b2, sizeof b2));
        poisoned = true;
      }
      vals[n++] = s ? s->val : NULL;
      next(P);
      if (!is_punct(P, ',')) break;
      next(P);
    }
  }
  if (n != ndecl) {
    perr_at(P, kw.line, kw.col, "@%s returns %d value%s but is declared to return %d", f->name, n, n == 1 ? "" : "s",
            ndecl);
    poisoned = true;
  }
  if (poisoned) {
    mark_bad(P, f);
    return true;
  }
  ir_set_return(f, n, vals);
  return true;
}

/* FUNC := 'func' @NAME '(' [ARG (',' ARG)*] ')' '->' RTYPES '{' STMT* '}' */
static void parse_func(Parser *P, Value **vbuf, Type *tbuf, Token *rbuf) {
  Token kw = P->tok;
  const char *stmt = P->tok.p;
  next(P);
  sym_reset(&P->syms);
  if (P->tok.kind != T_GNAME) {
    expected(P, "a function name '@name'");
    sync_line(P, stmt);
    return;
  }
  Token nt = P->tok;
  char *name = tok_str(P, &nt);
  Func *f = ir_add_func(P->m, name);
  if (!f) {
    perr_at(P, nt.line, nt.col, "redefinition of function @%s", name);
    char alt[64];
    snprintf(alt, sizeof alt, " duplicate %d", P->nerr); /* a name no text can refer to */
    f = ir_add_func(P->m, alt);
    mark_bad(P, f);
  }
  f->line = kw.line;
  f->col = kw.col;
  next(P);
  Type *decl = NULL;
  int ndecl = 0;
  bool ok = expect_punct(P, '(', "'(' after the function name");
  if (ok && !is_punct(P, ')')) {
    for (;;) {
      if (P->tok.kind != T_LNAME) {
        ok = expected(P, "an argument '%name'");
        break;
      }
      Token at = P->tok;
      next(P);
      Type t;
      if (!expect_punct(P, ':', "':' after the argument name") || !parse_type(P, &t)) {
        ok = false;
        break;
      }
      if (f->narg == MAX_LIST) {
        perr_at(P, at.line, at.col, "too many arguments");
        ok = false;
        break;
      }
      if (sym_find(&P->syms, at.p, at.len)) {
        perr_at(P, at.line, at.col, "redefinition of %%%.*s", (int)(at.len < 60 ? at.len : 60), at.p);
        mark_bad(P, f);
      } else {
        sym_add(&P->syms, at.p, at.len, ir_add_arg(f, value_name(P, &at), t));
      }
      if (is_punct(P, ')')) break;
      if (!expect_punct(P, ',', "',' or ')' after an argument")) {
        ok = false;
        break;
      }
    }
  }
  if (ok) next(P); /* ')' */
  if (ok) ok = expect_punct(P, '>', "'->' and the result types");
  if (ok) {
    if (is_punct(P, '(')) {
      next(P);
      ok = expect_punct(P, ')', "')' (an empty result list is written '()')");
    } else {
      decl = ir_alloc(P->m, sizeof(Type) * MAX_LIST);
      for (;;) {
        if (ndecl == MAX_LIST) {
          ok = expected(P, "fewer result types");
          break;
        }
        if (!parse_type(P, &decl[ndecl++])) {
          ok = false;
          break;
        }
        if (!is_punct(P, ',')) break;
        next(P);
      }
    }
  }
  if (ok) ok = expect_punct(P, '{', "'{' to open the function body");
  if (!ok) {
    mark_bad(P, f);
    /* Skip the rest of the function: to its closing '}' at the start of a line, or the next
     * top-level keyword. */
    while (P->tok.kind != T_EOF && !(P->tok.bol && (is_ident(P, "func") || is_ident(P, "param")))) {
      bool close = P->tok.bol && is_punct(P, '}');
      next(P);
      if (close) break;
    }
    return;
  }
  bool returned = false;
  while (!diag_full(P->d)) {
    const char *s = P->tok.p;
    if (P->tok.kind == T_EOF || (P->tok.bol && (is_ident(P, "func") || is_ident(P, "param")))) {
      expected(P, "'}' to close the function");
      mark_bad(P, f);
      return;
    }
    if (is_punct(P, '}')) {
      if (!returned) {
        perr_at(P, P->tok.line, P->tok.col, "function @%s ends without a return", f->name);
        mark_bad(P, f);
      }
      next(P);
      return;
    }
    if (returned) {
      expected(P, "'}' after the return");
      mark_bad(P, f);
      sync_line(P, s);
      continue;
    }
    bool good;
    if (is_ident(P, "return")) {
      good = parse_return(P, f, decl, ndecl, vbuf);
      returned = true;
    } else if (P->tok.kind == T_LNAME) {
      good = parse_op(P, f, vbuf, tbuf, rbuf);
    } else {
      good = expected(P, "an op '%name = ...', 'return' or '}'");
      mark_bad(P, f);
    }
    if (!good) sync_line(P, s);
  }
}

/* ---- second pass: calls, entry, sharing, recursion ----------------------------------------- */

static void check_calls(Parser *P) {
  const char **names = malloc(sizeof(char *) * (size_t)(P->m->nfunc + 1));
  if (!names) die("out of memory");
  for (int i = 0; i < P->m->nfunc; i++) names[i] = P->m->funcs[i]->name;
  for (int i = 0; i < P->ncalls; i++) {
    Op *op = P->calls[i].op;
    const Attr *c = ir_attr(op, "callee");
    if (c && c->kind == ATTR_SYM) {
      Func *g = ir_find_func(P->m, c->s);
      if (!g) {
        const char *s = diag_suggest(c->s, names, P->m->nfunc);
        perr_at(P, op->line, op->col, "call to unknown function @%s%s%s%s", c->s, s ? " (did you mean @" : "",
                s ? s : "", s ? "?)" : "");
        continue;
      }
      if (is_bad(P, g)) continue;
    }
    check_op(P, P->calls[i].f, op);
  }
  free(names);
}

static int func_index(const Module *m, const char *name) {
  if (!name) return -1;
  for (int i = 0; i < m->nfunc; i++)
    if (strcmp(m->funcs[i]->name, name) == 0) return i;
  return -1;
}

/* Iterative DFS of the call graph (same algorithm as verify.c); reports calls that close a cycle. */
static void check_recursion(Parser *P) {
  const Module *m = P->m;
  int n = m->nfunc;
  if (!n) return;
  char *color = calloc((size_t)n, 1);
  int *stack = malloc(sizeof(int) * (size_t)n);
  const Op **cur = malloc(sizeof(Op *) * (size_t)n);
  if (!color || !stack || !cur) die("out of memory");
  for (int root = 0; root < n; root++) {
    if (color[root]) continue;
    int sp = 0;
    stack[sp] = root;
    cur[sp++] = m->funcs[root]->first;
    color[root] = 1;
    while (sp > 0) {
      const Op *op = cur[sp - 1];
      while (op && op->kind != OP_CALL) op = op->next;
      if (!op) {
        color[stack[--sp]] = 2;
        continue;
      }
      cur[sp - 1] = op->next;
      int g = func_index(m, ir_attr_s(op, "callee"));
      if (g < 0) continue;
      if (color[g] == 1) {
        perr_at(P, op->line, op->col, "recursive call to @%s (calls may not form a cycle)", m->funcs[g]->name);
      } else if (color[g] == 0) {
        color[g] = 1;
        stack[sp] = g;
        cur[sp++] = m->funcs[g]->first;
      }
    }
  }
  free(color);
  free(stack);
  free(cur);
}

static void check_module(Parser *P) {
  Module *m = P->m;
  check_calls(P);
  if (P->have_entry && !ir_find_func(m, m->entry)) {
    const char **names = malloc(sizeof(char *) * (size_t)(m->nfunc + 1));
    if (!names) die("out of memory");
    for (int i = 0; i < m->nfunc; i++) names[i] = m->funcs[i]->name;
    const char *s = diag_suggest(m->entry, names, m->nfunc);
    perr_at(P, P->entry_tok.line, P->entry_tok.col, "entry function @%s is not defined%s%s%s", m->entry,
            s ? " (did you mean @" : "", s ? s : "", s ? "?)" : "");
    free(names);
  }
  if (P->nerr == 0) check_recursion(P);
  if (P->nerr == 0) {
    char err[256];
    const Op *op = ir_vocab_problem(m, err, sizeof err);
    if (op) perr_at(P, op->line, op->col, "%s", err);
  }
}

/* ---- top level ---------------------------------------------------------------------------- */

Module *ir_parse(const char *file, const char *text, size_t len, Diag *d) {
  if (!file) file = "<ir>";
  if (!text) text = "";
  diag_add_source(d, file, text, len);
  Parser P;
  memset(&P, 0, sizeof P);
  P.file = file;
  P.d = d;
  P.L = (Lexer){text, text + len, text, 1, 0};
  Value **vbuf = malloc(sizeof(Value *) * MAX_LIST);
  Type *tbuf = malloc(sizeof(Type) * MAX_LIST);
  Token *rbuf = malloc(sizeof(Token) * MAX_LIST);
  if (!vbuf || !tbuf || !rbuf) die("out of memory");
  next(&P);

  /* module @NAME [ATTRS] */
  if (is_ident(&P, "module")) {
    const char *s = P.tok.p;
    next(&P);
    if (P.tok.kind == T_GNAME) {
      char *name = malloc(P.tok.len + 1);
      if (!name) die("out of memory");
      memcpy(name, P.tok.p, P.tok.len);
      name[P.tok.len] = 0;
      P.m = ir_module_new(name);
      free(name);
      next(&P);
      if (is_punct(&P, '{') && !P.tok.bol) {
        Attr attrs[64];
        int n = parse_attrs(&P, attrs, 64);
        for (int i = 0; i < n; i++) ir_module_set_attr(P.m, attrs[i]);
        if (n < 0) sync_line(&P, s);
      }
    } else {
      P.m = ir_module_new("model");
      expected(&P, "a module name '@name'");
      sync_line(&P, s);
    }
  } else {
    P.m = ir_module_new("model");
    expected(&P, "'module @name' at the start of the file");
  }

  P.m->file = ir_strdup(P.m, file);
  while (P.tok.kind != T_EOF && !diag_full(d)) {
    const char *s = P.tok.p;
    if (is_ident(&P, "param")) {
      if (!parse_param(&P)) sync_line(&P, s);
    } else if (is_ident(&P, "train")) {
      if (!parse_train(&P)) sync_line(&P, s);
    } else if (is_ident(&P, "func")) {
      parse_func(&P, vbuf, tbuf, rbuf);
    } else if (is_ident(&P, "entry")) {
      Token kw = P.tok;
      next(&P);
      if (P.have_entry) {
        perr_at(&P, kw.line, kw.col, "duplicate 'entry'");
        sync_line(&P, s);
      } else if (P.tok.kind != T_GNAME) {
        expected(&P, "the entry function '@name'");
        sync_line(&P, s);
      } else {
        P.have_entry = true;
        P.entry_tok = P.tok;
        P.m->entry = tok_str(&P, &P.tok);
        next(&P);
      }
    } else {
      expected(&P, "'param', 'func', 'entry' or 'train'");
      sync_line(&P, s);
    }
  }
  if (P.nerr == 0 && !diag_full(d)) check_module(&P);

  /* Backstop: whatever we return must verify. A failure here is a parser gap, reported as such. */
  if (P.nerr == 0) {
    char *buf = NULL;
    size_t blen = 0;
    FILE *mem = open_memstream(&buf, &blen);
    if (!mem) die("open_memstream failed");
    Diag vd;
    diag_init(&vd, mem);
    bool ok = ir_verify(P.m, &vd);
    diag_free(&vd);
    fclose(mem);
    if (!ok) {
      char *nl = strchr(buf, '\n');
      if (nl) *nl = 0;
      perr_at(&P, 0, 0, "the parsed module does not verify: %s", buf);
    }
    free(buf);
  }
  free(P.syms.slots);
  free(P.calls);
  free(P.bad_funcs);
  free(vbuf);
  free(tbuf);
  free(rbuf);
  if (P.nerr) {
    ir_module_free(P.m);
    return NULL;
  }
  return P.m;
}
