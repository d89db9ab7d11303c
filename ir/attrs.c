/* attrs.c: the attribute table built from ops.def (ATTR rows), the one attribute checker, and the typed
 * attribute accessors.
 *
 * Each op's attributes are declared with the op in ir/ops.def (ATTR rows) (key, kind, required or default,
 * rule). ir_check_attrs() is the only place their rules are enforced: the parser and the verifier
 * call it for every op (and ir_infer() does before running a shape rule), so both report the same
 * message for the same bad attribute. ir_attr_i/_f/_s/_ints read an attribute with the default the
 * table gives, and die on a key the table does not declare for the op, so a misspelt key in a
 * pass is an internal error at its first use rather than a silent default.
 */
#include <math.h>
#include <string.h>

#include "ir.h"

#define ANY_OP (-1)
#define REQ true
#define OPT false
#define RULE_(k, lo, hi, lo_open, hi_open, words, skip) {k, lo, hi, lo_open, hi_open, words, skip}
#define ANY RULE_(AR_ANY, -INFINITY, INFINITY, false, false, NULL, 0)
#define GE(a) RULE_(AR_RANGE, a, INFINITY, false, false, NULL, 0)
#define GT(a) RULE_(AR_RANGE, a, INFINITY, true, false, NULL, 0)
#define IN(a, b) RULE_(AR_RANGE, a, b, false, false, NULL, 0)
#define IN_CO(a, b) RULE_(AR_RANGE, a, b, false, true, NULL, 0)
#define IN_OC(a, b) RULE_(AR_RANGE, a, b, true, false, NULL, 0)
#define ONE_OF(w) RULE_(AR_ONE_OF, -INFINITY, INFINITY, false, false, w, 0)
#define EXPR(k) RULE_(AR_EXPR, -INFINITY, INFINITY, false, false, NULL, k)

const AttrSpec ir_attr_table[] = {
#define ATTR(op, key, kind, req, dflt, rule) {op, key, kind, req, dflt, rule},
#include "ops.def"
};
const int ir_attr_table_len = (int)(sizeof ir_attr_table / sizeof *ir_attr_table);

const AttrSpec *ir_attr_spec(OpKind k, const char *key) {
  for (int i = 0; i < ir_attr_table_len; i++) {
    const AttrSpec *s = &ir_attr_table[i];
    if ((s->op == (int)k || s->op == ANY_OP) && strcmp(s->key, key) == 0) return s;
  }
  return NULL;
}

/* ---- the checker -------------------------------------------------------------------------- */

static const char *const kind_desc[] = {"an integer", "a number", "a string", "a symbol", "an integer list"};

static bool kind_ok(AttrKind want, AttrKind got) { return got == want || (want == ATTR_FLOAT && got == ATTR_INT); }

/* Suggests a declared key of op kind k close to key, or NULL. */
static const char *suggest_key(OpKind k, const char *key) {
  const char *cand[64];
  int n = 0;
  for (int i = 0; i < ir_attr_table_len && n < 64; i++)
    if (ir_attr_table[i].op == (int)k || ir_attr_table[i].op == ANY_OP) cand[n++] = ir_attr_table[i].key;
  return diag_suggest(key, cand, n);
}

/* Writes what the range rule r demands ("in (0, 1]", "at least 1", "0 or 1") into buf. */
static void range_text(const AttrRule *r, bool integer, char *buf, size_t n) {
  if (isinf(r->hi)) {
    if (r->lo_open && r->lo == 0)
      snprintf(buf, n, "positive");
    else
      snprintf(buf, n, "%s %g", r->lo_open ? "greater than" : "at least", r->lo);
  } else if (integer && !r->lo_open && !r->hi_open && r->hi == r->lo + 1) {
    snprintf(buf, n, "%g or %g", r->lo, r->hi);
  } else {
    snprintf(buf, n, "in %c%g, %g%c", r->lo_open ? '(' : '[', r->lo, r->hi, r->hi_open ? ')' : ']');
  }
}

static bool in_range(const AttrRule *r, double v) {
  bool lo = r->lo_open ? v > r->lo : v >= r->lo;
  bool hi = r->hi_open ? v < r->hi : v <= r->hi;
  return lo && hi; /* NaN fails both */
}

/* The 1-based place of s among the '|'-separated words, 0 if it is none of them. */
int ir_words_place(const char *words, const char *s) {
  size_t len = strlen(s);
  int place = 1;
  for (const char *w = words;; place++) {
    const char *bar = strchr(w, '|');
    size_t wl = bar ? (size_t)(bar - w) : strlen(w);
    if (wl == len && memcmp(w, s, len) == 0) return place;
    if (!bar) return 0;
    w = bar + 1;
  }
}

bool ir_words_have(const char *words, const char *s) { return ir_words_place(words, s) > 0; }

int ir_attr_word(const Op *op, const char *key) {
  const AttrSpec *s = ir_attr_spec(op->kind, key);
  IR_ASSERT(s && s->kind == ATTR_STR && s->rule.kind == AR_ONE_OF);
  const char *v = ir_attr_s(op, key);
  return v ? ir_words_place(s->rule.words, v) : 0;
}

/* Writes "\"a\", \"b\" or \"c\"" for the words "a|b|c" into buf. */
void ir_words_text(const char *words, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = '\0';
  for (const char *w = words; used < n;) {
    const char *bar = strchr(w, '|');
    int wl = bar ? (int)(bar - w) : (int)strlen(w);
    const char *sep = w == words ? "" : bar ? ", " : " or ";
    int k = snprintf(buf + used, n - used, "%s\"%.*s\"", sep, wl, w);
    if (k < 0) break;
    used += (size_t)k;
    if (!bar) break;
    w = bar + 1;
  }
}

static bool check_value(const Op *op, const AttrSpec *s, const Attr *a, char *err, size_t n) {
  const char *on = ir_op_name(op->kind);
  const AttrRule *r = &s->rule;
  switch (r->kind) {
  case AR_ANY: return true;
  case AR_RANGE: {
    double v = a->kind == ATTR_INT ? (double)a->i : a->f;
    if (in_range(r, v)) return true;
    char want[96];
    range_text(r, s->kind == ATTR_INT, want, sizeof want);
    if (a->kind == ATTR_INT)
      snprintf(err, n, "%s: %s must be %s, got %lld", on, s->key, want, (long long)a->i);
    else
      snprintf(err, n, "%s: %s must be %s, got %g", on, s->key, want, a->f);
    return false;
  }
  case AR_ONE_OF: {
    if (ir_words_have(r->words, a->s)) return true;
    char want[160];
    ir_words_text(r->words, want, sizeof want);
    snprintf(err, n, "%s: %s must be %s, got \"%.60s\"", on, s->key, want, a->s);
    return false;
  }
  case AR_EXPR: {
    Module *scratch = ir_module_new("attr-check");
    char e[200];
    bool ok = ir_expr_parse(scratch, a->s, op->nin - r->skip, e, sizeof e) != NULL;
    ir_module_free(scratch);
    if (!ok) snprintf(err, n, "%s: bad %s: %s", on, s->key, e);
    return ok;
  }
  }
  return true;
}

bool ir_check_attrs(const Op *op, char *err, size_t n) {
  IR_ASSERT((unsigned)op->kind < OP_COUNT);
  const char *on = ir_op_name(op->kind);
  for (int i = 0; i < op->nattr; i++) {
    const Attr *a = &op->attr[i];
    if (!a->key) { /* only a hand-built op; the verifier also reports the invalid name */
      snprintf(err, n, "%s has an attribute without a key", on);
      return false;
    }
    const AttrSpec *s = ir_attr_spec(op->kind, a->key);
    if (!s) {
      const char *hint = suggest_key(op->kind, a->key);
      snprintf(err, n, "%s has no attribute '%s'%s%s%s", on, a->key, hint ? " (did you mean '" : "", hint ? hint : "",
               hint ? "'?)" : "");
      return false;
    }
    if (!kind_ok(s->kind, a->kind) || ((a->kind == ATTR_STR || a->kind == ATTR_SYM) && !a->s)) {
      snprintf(err, n, "%s attribute '%s' must be %s", on, s->key, kind_desc[s->kind]);
      return false;
    }
  }
  for (int i = 0; i < ir_attr_table_len; i++) {
    const AttrSpec *s = &ir_attr_table[i];
    if (s->op != (int)op->kind && s->op != ANY_OP) continue;
    const Attr *a = ir_attr(op, s->key);
    if (!a) {
      if (s->required) {
        snprintf(err, n, "%s requires attribute '%s'", on, s->key);
        return false;
      }
      continue;
    }
    if (!check_value(op, s, a, err, n)) return false;
  }
  return true;
}

/* ---- typed accessors ---------------------------------------------------------------------- */

/* The declaration of key for op, which the accessor fn expects to be of kind want (or, for
 * ir_attr_s, want2); an undeclared key or a kind the accessor cannot return is an internal error. */
static const AttrSpec *declared(const Op *op, const char *key, AttrKind want, AttrKind want2, const char *fn) {
  const AttrSpec *s = ir_attr_spec(op->kind, key);
  if (!s) die("%s: %s has no attribute '%s' (declare it in ir/ops.def (ATTR rows))", fn, ir_op_name(op->kind), key);
  if (s->kind != want && s->kind != want2)
    die("%s: %s attribute '%s' is declared as %s", fn, ir_op_name(op->kind), key, kind_desc[s->kind]);
  return s;
}

int64_t ir_attr_i(const Op *op, const char *key) {
  const AttrSpec *s = declared(op, key, ATTR_INT, ATTR_INT, "ir_attr_i");
  const Attr *a = ir_attr(op, key);
  return a && a->kind == ATTR_INT ? a->i : (int64_t)s->dflt;
}

double ir_attr_f(const Op *op, const char *key) {
  const AttrSpec *s = declared(op, key, ATTR_FLOAT, ATTR_FLOAT, "ir_attr_f");
  const Attr *a = ir_attr(op, key);
  return !a ? s->dflt : a->kind == ATTR_FLOAT ? a->f : a->kind == ATTR_INT ? (double)a->i : s->dflt;
}

const char *ir_attr_s(const Op *op, const char *key) {
  declared(op, key, ATTR_STR, ATTR_SYM, "ir_attr_s");
  const Attr *a = ir_attr(op, key);
  return a && (a->kind == ATTR_STR || a->kind == ATTR_SYM) ? a->s : NULL;
}

const int64_t *ir_attr_ints(const Op *op, const char *key, int *n) {
  declared(op, key, ATTR_INTS, ATTR_INTS, "ir_attr_ints");
  const Attr *a = ir_attr(op, key);
  bool ok = a && a->kind == ATTR_INTS;
  *n = ok ? a->n : 0;
  return ok ? a->ints : NULL;
}
