/* spec.c: reads a spec file (YAML, docs/spec.md) into a checked Spec.
 *
 * Two stages. First libyaml's event parser builds a small node tree (YNode) that remembers the
 * 1-based line and column of every node; this is where YAML syntax errors, anchors and aliases,
 * multiple documents and absurd nesting (more than FE_MAX_DEPTH levels) are rejected. The tree is
 * built with an explicit stack, so hostile input cannot overflow the C stack. Second, a checker
 * walks the tree section by section and fills the Spec, reporting every problem it finds (unknown
 * or duplicate keys, wrong types, missing keys, bad values, sizes whose products overflow int64,
 * duplicate parameter names, misplaced layers) at the node that is wrong, then carries on so one
 * run shows all mistakes. Any error makes the whole parse return NULL.
 */
#include "spec.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

/* ------------------------------------------------------------------------------------------ */
/* Allocation: everything in a Spec lives in a list of blocks freed at once.                   */

struct SpecBlock {
  SpecBlock *next;
  max_align_t data[];
};

static void *fe_alloc(Spec *s, size_t n) {
  SpecBlock *b = calloc(1, sizeof(SpecBlock) + (n ? n : 1));
  if (!b) die("out of memory");
  b->next = s->blocks;
  s->blocks = b;
  return b->data;
}

static char *fe_strndup(Spec *s, const char *t, size_t n) {
  char *r = fe_alloc(s, n + 1);
  memcpy(r, t, n);
  r[n] = 0;
  return r;
}

/* ------------------------------------------------------------------------------------------ */
/* The YAML node tree.                                                                          */

typedef enum YKind { YN_SCALAR, YN_SEQ, YN_MAP } YKind;

typedef struct YNode {
  YKind kind;
  int line, col;        /* 1-based start of the node */
  char *text;           /* scalar: its value (NUL-terminated; len bytes) */
  size_t len;
  bool plain;           /* scalar: written without quotes (so it may be a number, bool or null) */
  int n, cap;           /* children: sequence items, or mapping keys and values alternating */
  struct YNode **kid;
} YNode;

/* Depth is bounded by FE_MAX_DEPTH, so this recursion is too. */
static void yn_free(YNode *n) {
  if (!n) return;
  for (int i = 0; i < n->n; i++) yn_free(n->kid[i]);
  free(n->kid);
  free(n->text);
  free(n);
}

static YNode *yn_new(YKind k, const yaml_mark_t *m) {
  YNode *n = calloc(1, sizeof *n);
  if (!n) die("out of memory");
  n->kind = k;
  n->line = (int)m->line + 1;
  n->col = (int)m->column + 1;
  return n;
}

static void yn_push(YNode *parent, YNode *kid) {
  if (parent->n == parent->cap) {
    parent->cap = parent->cap ? parent->cap * 2 : 8;
    parent->kid = realloc(parent->kid, (size_t)parent->cap * sizeof *parent->kid);
    if (!parent->kid) die("out of memory");
  }
  parent->kid[parent->n++] = kid;
}

static bool yn_is_null(const YNode *n) {
  if (!n) return true;
  if (n->kind != YN_SCALAR || !n->plain) return false;
  return n->len == 0 || !strcmp(n->text, "~") || !strcmp(n->text, "null") || !strcmp(n->text, "Null") ||
         !strcmp(n->text, "NULL");
}

/* ------------------------------------------------------------------------------------------ */
/* Checker context and error helpers.                                                           */

typedef struct Ctx {
  Diag *d;
  const char *file;
  const char *text;     /* the source, for locating libyaml reader errors */
  size_t len;
  Spec *s;
  int norm_k;           /* norms seen so far in the current naming scope (ln_<k>) */
  int doc_line, doc_col;  /* start of the document (where an empty document is reported) */
  int depth;            /* 0: the spec given; 1: a distillation teacher's (which may not distill) */
} Ctx;

static void fe_err(Ctx *c, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void fe_err(Ctx *c, int line, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(c->d, c->file, line, col, fmt, ap);
  va_end(ap);
}
#define ERR_AT(c, node, ...) fe_err((c), (node)->line, (node)->col, __VA_ARGS__)

/* A short description of a node for "expected X, got Y" messages. */
static const char *yn_desc(const YNode *n, char *buf, size_t sz) {
  if (yn_is_null(n)) return "nothing (null)";
  if (n->kind == YN_SEQ) return "a sequence";
  if (n->kind == YN_MAP) return "a mapping";
  if (!n->plain) snprintf(buf, sz, "the quoted string \"%.40s\"", n->text);
  else snprintf(buf, sz, "'%.40s'", n->text);
  return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* YAML loading.                                                                                */

static void fe_offset_to_linecol(const Ctx *c, size_t off, int *line, int *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < off && i < c->len; i++) {
    if (c->text[i] == '\n') {
      (*line)++;
      *col = 1;
    } else {
      (*col)++;
    }
  }
}

static void fe_yaml_error(Ctx *c, const yaml_parser_t *p) {
  int line = (int)p->problem_mark.line + 1, col = (int)p->problem_mark.column + 1;
  if (p->error == YAML_READER_ERROR) fe_offset_to_linecol(c, p->problem_offset, &line, &col);
  const char *problem = p->problem ? p->problem : "unknown error";
  /* A bracket or quote left open: say so at the opening character, as clang does for a missing
   * ')' ("note: to match this '('"). libyaml's context mark is that character. */
  size_t at = p->context_mark.index;
  char open = p->context && at < c->len ? c->text[at] : 0;
  bool bracket = (open == '[' || open == '{') && strstr(p->context, "flow");
  bool quote = (open == '\'' || open == '"') && strstr(p->context, "quoted scalar");
  if (bracket || quote) {
    fe_err(c, line, col, "invalid YAML: %s%s", problem,
           p->problem_mark.index >= c->len && !strstr(problem, "end of stream") ? " before the end of the input" : "");
    diag_note(c->d, c->file, (int)p->context_mark.line + 1, (int)p->context_mark.column + 1,
              open == '\'' ? "to match this \"%c\"" : "to match this '%c'", open);
  } else if (p->context) {
    fe_err(c, line, col, "invalid YAML: %s (%s that starts at line %d, column %d)", problem, p->context,
           (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
  } else {
    fe_err(c, line, col, "invalid YAML: %s", problem);
  }
}

/* Builds the node tree of the single document in the text. NULL on error (reported). */
static YNode *fe_load_yaml(Ctx *c) {
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) die("out of memory");
  yaml_parser_set_input_string(&p, (const unsigned char *)c->text, c->len);
  YNode *stack[FE_MAX_DEPTH];
  int depth = 0, ndocs = 0;
  YNode *root = NULL;
  bool ok = true, done = false;
  while (!done) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      fe_yaml_error(c, &p);
      ok = false;
      break;
    }
    YNode *node = NULL;
    const unsigned char *anchor = NULL;
    switch (ev.type) {
    case YAML_STREAM_END_EVENT:
      done = true;
      break;
    case YAML_DOCUMENT_START_EVENT:
      c->doc_line = (int)ev.start_mark.line + 1;
      c->doc_col = (int)ev.start_mark.column + 1;
      if (++ndocs > 1) {
        fe_err(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
               "a spec file holds one YAML document; found a second one");
        ok = false;
        done = true;
      }
      break;
    case YAML_ALIAS_EVENT:
      fe_err(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
             "YAML aliases (*%s) are not supported in specs", (const char *)ev.data.alias.anchor);
      ok = false;
      node = yn_new(YN_SCALAR, &ev.start_mark);   /* placeholder null, so checking can go on */
      node->plain = true;
      node->text = calloc(1, 1);
      break;
    case YAML_SCALAR_EVENT:
      anchor = ev.data.scalar.anchor;
      node = yn_new(YN_SCALAR, &ev.start_mark);
      node->len = ev.data.scalar.length;
      node->text = malloc(node->len + 1);
      if (!node->text) die("out of memory");
      memcpy(node->text, ev.data.scalar.value, node->len);
      node->text[node->len] = 0;
      node->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
      break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
      anchor = ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor : ev.data.mapping_start.anchor;
      if (depth == FE_MAX_DEPTH) {
        fe_err(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
               "nesting is too deep (more than %d levels)", FE_MAX_DEPTH);
        ok = false;
        done = true;
        break;
      }
      node = yn_new(ev.type == YAML_SEQUENCE_START_EVENT ? YN_SEQ : YN_MAP, &ev.start_mark);
      break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
      if (depth > 0) depth--;
      break;
    default:
      break;
    }
    if (anchor) {
      fe_err(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
             "YAML anchors (&%s) are not supported in specs", (const char *)anchor);
      ok = false;
    }
    if (node) {
      if (depth > 0) yn_push(stack[depth - 1], node);
      else if (!root) root = node;
      else yn_free(node);   /* cannot happen: one document has one root */
      if (node->kind != YN_SCALAR) stack[depth++] = node;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  if (ok && ndocs == 0) {
    fe_err(c, 1, 1, "empty spec: expected a mapping with 'model:' and 'layers:'");
    ok = false;
  }
  if (!ok) {
    yn_free(root);
    return NULL;
  }
  return root;
}

/* ------------------------------------------------------------------------------------------ */
/* Mappings with a fixed set of keys.                                                           */

#define FE_MAX_KEYS 32

/* Checks that `map` is a mapping (null counts as empty) whose keys are all in `keys`, reporting
 * unknown keys (with a "did you mean"), duplicate keys and non-string keys. vals[i] receives the
 * value of keys[i] or NULL; keyn[i] (optional) the key node. False if `map` is not a mapping. */
static bool fe_fields(Ctx *c, const YNode *map, const char *what, const char *const *keys, int nkeys,
                      const YNode **vals, const YNode **keyn) {
  const YNode *kn[FE_MAX_KEYS];
  for (int i = 0; i < nkeys; i++) {
    vals[i] = NULL;
    kn[i] = NULL;
  }
  if (yn_is_null(map)) return true;
  if (map->kind != YN_MAP) {
    char b[64];
    ERR_AT(c, map, "expected a mapping for %s, got %s", what, yn_desc(map, b, sizeof b));
    return false;
  }
  for (int i = 0; i + 1 < map->n; i += 2) {
    const YNode *k = map->kid[i], *v = map->kid[i + 1];
    if (k->kind != YN_SCALAR) {
      ERR_AT(c, k, "keys in %s must be plain words, not %s", what, k->kind == YN_SEQ ? "sequences" : "mappings");
      continue;
    }
    int idx = -1;
    for (int j = 0; j < nkeys; j++)
      if (!strcmp(k->text, keys[j])) idx = j;
    if (idx < 0) {
      const char *sug = diag_suggest(k->text, keys, nkeys);
      if (sug) {
        ERR_AT(c, k, "unknown key '%s' in %s; did you mean '%s'?", k->text, what, sug);
      } else {
        char list[512] = "";
        size_t at = 0;
        for (int j = 0; j < nkeys && at < sizeof list; j++)
          at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", j ? ", " : "", keys[j]);
        ERR_AT(c, k, "unknown key '%s' in %s (expected one of: %s)", k->text, what, list);
      }
      continue;
    }
    if (kn[idx]) {
      ERR_AT(c, k, "duplicate key '%s' in %s (first given at line %d, column %d)", k->text, what, kn[idx]->line,
             kn[idx]->col);
      continue;
    }
    kn[idx] = k;
    vals[idx] = v;
  }
  if (keyn)
    for (int i = 0; i < nkeys; i++) keyn[i] = kn[i];
  return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Scalars.                                                                                     */

static bool fe_want_scalar(Ctx *c, const YNode *n, const char *kindname, const char *what) {
  if (n->kind == YN_SCALAR && !yn_is_null(n) && n->plain) return true;
  char b[64];
  ERR_AT(c, n, "expected %s for '%s', got %s", kindname, what, yn_desc(n, b, sizeof b));
  return false;
}

/* A decimal integer in [lo, hi]. */
static bool fe_int(Ctx *c, const YNode *n, const char *what, int64_t lo, int64_t hi, int64_t *out) {
  if (!fe_want_scalar(c, n, "an integer", what)) return false;
  const char *t = n->text;
  const char *q = t + (*t == '+' || *t == '-');
  bool digits = *q != 0;
  for (const char *r = q; *r; r++)
    if (*r < '0' || *r > '9') digits = false;
  if (!digits) {
    char *end;
    errno = 0;
    double f = strtod(t, &end);
    if (*end == 0 && end != t && isfinite(f))
      ERR_AT(c, n, "expected an integer for '%s', got the real number %s", what, t);
    else
      ERR_AT(c, n, "expected an integer for '%s', got '%.40s'", what, t);
    return false;
  }
  errno = 0;
  long long v = strtoll(t, NULL, 10);
  if (errno == ERANGE) {
    ERR_AT(c, n, "integer %.40s for '%s' is out of range (it does not fit in 64 bits)", t, what);
    return false;
  }
  if (v < lo) {
    if (lo == 1) ERR_AT(c, n, "'%s' must be positive, got %lld", what, v);
    else ERR_AT(c, n, "'%s' must be at least %lld, got %lld", what, (long long)lo, v);
    return false;
  }
  if (v > hi) {
    ERR_AT(c, n, "'%s' must be at most %lld, got %lld", what, (long long)hi, v);
    return false;
  }
  *out = v;
  return true;
}

/* A finite real number (integers accepted). Range checks are the caller's. */
static bool fe_float(Ctx *c, const YNode *n, const char *what, double *out) {
  if (!fe_want_scalar(c, n, "a number", what)) return false;
  char *end;
  errno = 0;
  double v = strtod(n->text, &end);
  if (end == n->text || *end != 0 || !isfinite(v) || !strncmp(n->text, "0x", 2) || !strncmp(n->text, "0X", 2)) {
    ERR_AT(c, n, "expected a finite number for '%s', got '%.40s'", what, n->text);
    return false;
  }
  *out = v;
  return true;
}

static bool fe_bool(Ctx *c, const YNode *n, const char *what, bool *out) {
  if (!fe_want_scalar(c, n, "true or false", what)) return false;
  const char *t = n->text;
  if (!strcmp(t, "true") || !strcmp(t, "True") || !strcmp(t, "TRUE")) *out = true;
  else if (!strcmp(t, "false") || !strcmp(t, "False") || !strcmp(t, "FALSE")) *out = false;
  else {
    ERR_AT(c, n, "expected true or false for '%s', got '%.40s'", what, t);
    return false;
  }
  return true;
}

/* Any non-null scalar (quoted or not), copied into the Spec. */
static const char *fe_str(Ctx *c, const YNode *n, const char *what) {
  if (n->kind != YN_SCALAR || yn_is_null(n)) {
    char b[64];
    ERR_AT(c, n, "expected a string for '%s', got %s", what, yn_desc(n, b, sizeof b));
    return NULL;
  }
  if (strlen(n->text) != n->len) {
    ERR_AT(c, n, "'%s' contains a NUL character", what);
    return NULL;
  }
  return fe_strndup(c->s, n->text, n->len);
}

/* One of a fixed list of words; returns its index or -1. */
static int fe_enum(Ctx *c, const YNode *n, const char *what, const char *const *words, int nwords) {
  if (n->kind != YN_SCALAR || yn_is_null(n)) {
    char b[64];
    ERR_AT(c, n, "expected a string for '%s', got %s", what, yn_desc(n, b, sizeof b));
    return -1;
  }
  for (int i = 0; i < nwords; i++)
    if (!strcmp(n->text, words[i])) return i;
  char list[256] = "";
  size_t at = 0;
  for (int j = 0; j < nwords && at < sizeof list; j++)
    at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", j ? ", " : "", words[j]);
  const char *sug = diag_suggest(n->text, words, nwords);
  if (sug) ERR_AT(c, n, "unknown %s '%.40s'; did you mean '%s'? (expected one of: %s)", what, n->text, sug, list);
  else ERR_AT(c, n, "unknown %s '%.40s' (expected one of: %s)", what, n->text, list);
  return -1;
}

/* A layer or model name: dot-separated parts of letters, digits, '_' and (model names only) '-'. */
#define FE_MAX_LAYER_NAME 48
static const char *fe_name(Ctx *c, const YNode *n, const char *what, bool allow_dash) {
  const char *t = fe_str(c, n, what);
  if (!t) return NULL;
  bool ok = *t != 0 && strlen(t) <= FE_MAX_LAYER_NAME;
  char prev = '.';
  for (const char *p = t; *p && ok; p++) {
    bool word = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
                (allow_dash && *p == '-');
    if (*p == '.' ? prev == '.' : !word) ok = false;
    prev = *p;
  }
  if (prev == '.') ok = false;
  if (!ok) {
    ERR_AT(c, n,
           "invalid %s '%.40s': use 1 to %d letters, digits and '_'%s, in parts separated by single dots", what, t,
           FE_MAX_LAYER_NAME, allow_dash ? " or '-'" : "");
    return NULL;
  }
  return t;
}

/* a * b into *out; false when it exceeds the IR's largest tensor (IR_MAX_NUMEL elements) or
 * overflows int64. */
static bool fe_mul(int64_t a, int64_t b, int64_t *out) {
  return !__builtin_mul_overflow(a, b, out) && *out <= IR_MAX_NUMEL;
}
#define FE_TOO_BIG "exceeds 2^48 elements, the largest tensor modelc handles"
#define FE_INT_LIMIT "is above 2147483647 (INT32_MAX), the largest count a kernel call takes"
/* The largest sinusoid position table (context x dim floats) a program compiles in: 256 MiB. */
#define FE_MAX_TABLE_BYTES ((int64_t)256 << 20)

/* a * b, saturating at INT64_MAX: parameter shapes are listed (for their names) even when the
 * sizes were rejected, and then only need to be large, not exact. */
static int64_t fe_smul(int64_t a, int64_t b) {
  int64_t r;
  return fe_mul(a, b, &r) ? r : INT64_MAX;
}

/* ------------------------------------------------------------------------------------------ */
/* model:                                                                                       */

static const char *const model_keys[] = {"name", "vocab", "context", "batch", "dim", "kind"};
enum { MK_NAME, MK_VOCAB, MK_CONTEXT, MK_BATCH, MK_DIM, MK_KIND, MK_N };
static const char *const kind_words[] = {"decoder", "encoder"};

typedef struct ModelNodes {
  const YNode *v[MK_N];
  int kind;                  /* -1 when not given */
} ModelNodes;

static bool fe_check_model(Ctx *c, const YNode *key, const YNode *val, ModelNodes *mn) {
  SpecModel *m = &c->s->model;
  m->line = key->line;
  m->col = key->col;
  m->name = "model";
  m->batch = 1;
  mn->kind = -1;
  int before = c->d->nerrors;
  if (!fe_fields(c, val, "model", model_keys, MK_N, mn->v, NULL)) return false;
  const YNode **v = mn->v;
  if (v[MK_NAME]) {
    const char *nm = fe_name(c, v[MK_NAME], "model name", true);
    if (nm) m->name = nm;
  }
  static const char *const req[] = {"vocab", "context", "dim"};
  const int reqk[] = {MK_VOCAB, MK_CONTEXT, MK_DIM};
  for (int i = 0; i < 3; i++)
    if (!v[reqk[i]]) ERR_AT(c, key, "missing required key '%s' in model", req[i]);
  bool okv = v[MK_VOCAB] && fe_int(c, v[MK_VOCAB], "vocab", 1, INT64_MAX, &m->vocab);
  bool okc = v[MK_CONTEXT] && fe_int(c, v[MK_CONTEXT], "context", 1, INT64_MAX, &m->context);
  bool okd = v[MK_DIM] && fe_int(c, v[MK_DIM], "dim", 1, INT64_MAX, &m->dim);
  bool okb = !v[MK_BATCH] || fe_int(c, v[MK_BATCH], "batch", 1, INT64_MAX, &m->batch);
  if (v[MK_KIND]) mn->kind = fe_enum(c, v[MK_KIND], "model kind", kind_words, 2);
  /* Every tensor the model can build must have an element count that fits in int64. */
  if (okv && okc && okd && okb) {
    int64_t bt, r;
    if (!fe_mul(m->vocab, m->dim, &r))
      ERR_AT(c, v[MK_DIM], "size overflow: vocab x dim (%lld x %lld) " FE_TOO_BIG, (long long)m->vocab,
             (long long)m->dim);
    else if (!fe_mul(m->dim, m->dim, &r) || !fe_mul(r, 4, &r))
      ERR_AT(c, v[MK_DIM], "size overflow: 4 x dim x dim (dim %lld) " FE_TOO_BIG, (long long)m->dim);
    else if (!fe_mul(m->context, m->dim, &r))
      ERR_AT(c, v[MK_CONTEXT], "size overflow: context x dim (%lld x %lld) " FE_TOO_BIG,
             (long long)m->context, (long long)m->dim);
    else if (!fe_mul(m->batch, m->context, &bt) || !fe_mul(bt, m->dim, &r) || !fe_mul(r, 3, &r))
      ERR_AT(c, v[MK_BATCH] ? v[MK_BATCH] : v[MK_CONTEXT],
             "size overflow: batch x context x 3 x dim " FE_TOO_BIG);
    else if (!fe_mul(bt, m->vocab, &r))
      ERR_AT(c, v[MK_VOCAB], "size overflow: the logits (batch x context x vocab) " FE_TOO_BIG);
    /* Kernel calls take row, column and token counts as int (docs/spec.md, "Limits"). */
    else if (m->vocab > INT32_MAX)
      ERR_AT(c, v[MK_VOCAB], "vocab %lld " FE_INT_LIMIT, (long long)m->vocab);
    else if (m->dim > INT32_MAX)
      ERR_AT(c, v[MK_DIM], "dim %lld " FE_INT_LIMIT, (long long)m->dim);
    else if (bt > INT32_MAX)
      ERR_AT(c, v[MK_BATCH] ? v[MK_BATCH] : v[MK_CONTEXT], "batch x context (%lld x %lld = %lld rows) " FE_INT_LIMIT,
             (long long)m->batch, (long long)m->context, (long long)bt);
  }
  return c->d->nerrors == before;
}

/* ------------------------------------------------------------------------------------------ */
/* layers:                                                                                      */

static const char *const layer_words[] = {"embedding", "positions", "layernorm", "rmsnorm", "attention", "mlp",
                                          "residual",  "repeat",    "dropout",   "lm_head", "classifier",
                                          "pool",      "upsample",  "moe"};

const char *fe_layer_kind_name(SpecLayerKind k) { return k < SPEC_L_COUNT ? layer_words[k] : "?"; }

static bool fe_layer_list(Ctx *c, const YNode *seq, const YNode *where, const char *what, int depth, bool top,
                          SpecLayer **out, int *nout);

/* Fills l (kind already set) from its options mapping `opt`; `key` is the layer's key node. */
/* attention's `sparse: {pattern: local|strided|fixed, window|stride|block: N, summary: C,
 * global: G, tile: B}` (docs/spec.md; the same rules as the sparse-attention pass's options). */
static void fe_sparse(Ctx *c, const YNode *map, SpecLayer *l) {
  static const char *const k[] = {"pattern", "window", "stride", "block", "summary", "global", "tile"};
  static const char *const w[] = {"local", "strided", "fixed"};
  const YNode *v[7], *kn[7];
  if (!fe_fields(c, map, "sparse", k, 7, v, kn)) return;
  l->sp_tile = 64;
  if (!v[0]) {
    ERR_AT(c, map, "missing required key 'pattern' in sparse (local, strided or fixed)");
    return;
  }
  int e = fe_enum(c, v[0], "pattern", w, 3);
  if (e < 0) return;
  l->sparse = e + 1;
  int size = 1 + e; /* the key of the pattern's size: window, stride, block */
  for (int i = 1; i <= 4; i++) {
    bool mine = i == size || (e == 2 && i == 4);
    if (v[i] && !mine) ERR_AT(c, kn[i], "sparse pattern %s takes no '%s'", w[e], k[i]);
  }
  if (!v[size]) ERR_AT(c, v[0], "sparse pattern %s needs '%s'", w[e], k[size]);
  else fe_int(c, v[size], k[size], 1, INT32_MAX, &l->sp_size);
  if (e == 2 && v[4] && fe_int(c, v[4], "summary", 0, INT32_MAX, &l->sp_summary) && l->sp_size > 0 &&
      l->sp_summary > l->sp_size)
    ERR_AT(c, v[4], "'summary' (%lld) must not exceed the block (%lld)", (long long)l->sp_summary, (long long)l->sp_size);
  if (v[5]) fe_int(c, v[5], "global", 0, INT32_MAX, &l->sp_global);
  if (v[6]) fe_int(c, v[6], "tile", 1, 512, &l->sp_tile);
}

static void fe_layer_options(Ctx *c, SpecLayer *l, const YNode *key, const YNode *opt, int depth) {
  const SpecModel *m = &c->s->model;
  const YNode *v[8];
  const char *ln = layer_words[l->kind];
  l->line = key->line;
  l->col = key->col;
  switch (l->kind) {
  case SPEC_L_EMBEDDING: {
    static const char *const k[] = {"name", "dim"};
    fe_fields(c, opt, "embedding", k, 2, v, NULL);
    l->name = "wte";
    l->edim = 0;
    /* a factorised embedding (ALBERT): a narrower table and a projection to model.dim */
    if (v[1] && fe_int(c, v[1], "dim", 1, INT64_MAX, &l->edim) && m->dim > 0 && l->edim > m->dim) {
      ERR_AT(c, v[1], "embedding 'dim' (%lld) must be at most model.dim (%lld): a factorised embedding is narrower "
                      "than the model, its projection widens it", (long long)l->edim, (long long)m->dim);
      l->edim = 0;
    }
    break;
  }
  case SPEC_L_POSITIONS: {
    static const char *const k[] = {"name", "kind", "theta"};
    static const char *const w[] = {"learned", "sinusoidal", "rope"};
    fe_fields(c, opt, "positions", k, 3, v, NULL);
    l->name = "wpe";
    l->pos = SPEC_POS_LEARNED;
    l->theta = 10000;
    if (v[1]) {
      int e = fe_enum(c, v[1], "positions kind", w, 3);
      if (e >= 0) l->pos = (SpecPosKind)e;
      int64_t n;
      if (l->pos == SPEC_POS_SINUSOIDAL && m->context > 0 && m->dim > 0 &&
          (!fe_mul(m->context, m->dim, &n) || n > FE_MAX_TABLE_BYTES / 4))
        ERR_AT(c, v[1], "a sinusoidal position table of context x dim (%lld x %lld) floats is above 256 MiB, the largest table a program compiles in",
               (long long)m->context, (long long)m->dim);
    }
    if (v[2] && l->pos != SPEC_POS_ROPE) ERR_AT(c, v[2], "'theta' is the rotary base of 'kind: rope' positions");
    else if (v[2] && fe_float(c, v[2], "theta", &l->theta) && !(l->theta > 0))
      ERR_AT(c, v[2], "'theta' must be positive, got %g", l->theta);
    break;
  }
  case SPEC_L_LAYERNORM:
  case SPEC_L_RMSNORM: {
    static const char *const k[] = {"name", "eps", "bias"};
    fe_fields(c, opt, ln, k, l->kind == SPEC_L_LAYERNORM ? 3 : 2, v, NULL);
    char buf[32];
    snprintf(buf, sizeof buf, "ln_%d", ++c->norm_k);
    l->name = fe_strndup(c->s, buf, strlen(buf));
    l->eps = l->kind == SPEC_L_LAYERNORM ? 1e-5 : 1e-6;
    l->bias = l->kind == SPEC_L_LAYERNORM;
    if (v[1] && fe_float(c, v[1], "eps", &l->eps) && !(l->eps > 0 && l->eps < 1))
      ERR_AT(c, v[1], "'eps' must be in (0, 1), got %g", l->eps);
    if (l->kind == SPEC_L_LAYERNORM && v[2]) fe_bool(c, v[2], "bias", &l->bias);
    break;
  }
  case SPEC_L_ATTENTION: {
    static const char *const k[] = {"name", "heads", "causal", "bias", "sparse", "memory", "kv_heads"};
    fe_fields(c, opt, "attention", k, 7, v, NULL);
    l->name = "attn";
    l->causal = true;
    l->bias = true;
    int64_t h = 0;
    if (!v[1]) ERR_AT(c, key, "missing required key 'heads' in attention");
    else if (fe_int(c, v[1], "heads", 1, INT32_MAX, &h)) {
      l->heads = (int)h;
      if (m->dim > 0 && m->dim % h != 0)
        ERR_AT(c, v[1], "'heads' (%lld) must divide model.dim (%lld)", (long long)h, (long long)m->dim);
    }
    if (v[2]) fe_bool(c, v[2], "causal", &l->causal);
    if (v[3]) fe_bool(c, v[3], "bias", &l->bias);
    if (v[4]) fe_sparse(c, v[4], l);
    /* Transformer-XL segment memory (docs/spec.md, "attention"): causal, dense, an even width for
     * the relative table of [sin | cos] halves; the qkv of [memory; segment] must stay countable */
    if (v[5] && fe_int(c, v[5], "memory", 1, INT32_MAX, &l->memory)) {
      int64_t r;
      l->mem_line = v[5]->line, l->mem_col = v[5]->col;
      if (!l->causal) ERR_AT(c, v[5], "segment memory needs causal attention (a decoder): set 'causal: true'");
      else if (l->sparse) ERR_AT(c, v[5], "segment memory works with dense attention only: remove 'sparse'");
      else if (m->dim % 2 != 0)
        ERR_AT(c, v[5], "segment memory's relative position table needs an even model.dim, got %lld", (long long)m->dim);
      else if (!fe_mul(m->context + l->memory, m->batch, &r) || !fe_mul(r, fe_smul(3, m->dim), &r) || r > INT32_MAX)
        ERR_AT(c, v[5], "memory %lld: batch x (memory + context) x 3 dim is above 2147483647 (INT32_MAX), the largest "
                        "count a kernel call takes", (long long)l->memory);
    }
    l->kv_heads = l->heads;
    int64_t g;
    if (v[6] && fe_int(c, v[6], "kv_heads", 1, INT32_MAX, &g)) {
      if (h > 0 && h % g != 0)
        ERR_AT(c, v[6], "'kv_heads' (%lld) must divide 'heads' (%lld): each KV head serves heads / kv_heads query heads",
               (long long)g, (long long)h);
      else if (v[4] && g != h)
        ERR_AT(c, v[6], "grouped-query attention ('kv_heads' below 'heads') with a 'sparse' pattern is not implemented");
      else if (l->memory && g != h)
        ERR_AT(c, v[6], "grouped-query attention ('kv_heads' below 'heads') with segment 'memory' is not implemented");
      else
        l->kv_heads = (int)g;
    }
    break;
  }
  case SPEC_L_MLP: {
    static const char *const k[] = {"name", "hidden", "activation", "bias"};
    static const char *const w[] = {"gelu", "gelu_tanh", "relu", "swiglu"};
    fe_fields(c, opt, "mlp", k, 4, v, NULL);
    l->name = "mlp";
    l->bias = true;
    l->activation = SPEC_ACT_GELU;
    if (!v[1]) ERR_AT(c, key, "missing required key 'hidden' in mlp");
    else if (fe_int(c, v[1], "hidden", 1, INT64_MAX, &l->hidden) && m->dim > 0) {
      int64_t r, bt;
      if (!fe_mul(l->hidden, m->dim, &r) || !fe_mul(r, 3, &r) || !fe_mul(m->batch, m->context, &bt) ||
          !fe_mul(bt, l->hidden, &r) || !fe_mul(r, 2, &r))
        ERR_AT(c, v[1], "size overflow: mlp hidden %lld with dim %lld " FE_TOO_BIG,
               (long long)l->hidden, (long long)m->dim);
      else if (l->hidden > INT32_MAX)
        ERR_AT(c, v[1], "mlp hidden %lld " FE_INT_LIMIT, (long long)l->hidden);
    }
    if (v[2]) {
      int e = fe_enum(c, v[2], "activation", w, 4);
      if (e >= 0) l->activation = (SpecActivation)e;
    }
    if (v[3]) fe_bool(c, v[3], "bias", &l->bias);
    break;
  }
  case SPEC_L_MOE: {
    /* moe: {experts, top_k, hidden, activation, capacity_factor, aux_loss} (docs/spec.md, "moe") */
    static const char *const k[] = {"name", "experts", "top_k", "hidden", "activation", "capacity_factor", "aux_loss"};
    static const char *const w[] = {"gelu", "gelu_tanh", "relu", "silu"};
    static const SpecActivation wa[] = {SPEC_ACT_GELU, SPEC_ACT_GELU_TANH, SPEC_ACT_RELU, SPEC_ACT_SILU};
    fe_fields(c, opt, "moe", k, 7, v, NULL);
    l->name = "moe";
    l->activation = SPEC_ACT_GELU;
    l->top_k = 1;
    l->capacity_factor = 1.25;
    l->aux_loss = 0.01;
    if (!v[1]) ERR_AT(c, key, "missing required key 'experts' in moe");
    else fe_int(c, v[1], "experts", 1, 4096, &l->experts);
    if (v[2] && fe_int(c, v[2], "top_k", 1, 4096, &l->top_k) && l->experts > 0 && l->top_k > l->experts)
      ERR_AT(c, v[2], "moe 'top_k' (%lld) must be in [1, experts] (experts %lld)", (long long)l->top_k,
             (long long)l->experts);
    if (!v[3]) ERR_AT(c, key, "missing required key 'hidden' in moe");
    else if (fe_int(c, v[3], "hidden", 1, INT64_MAX, &l->hidden) && m->dim > 0 && l->experts > 0) {
      int64_t r, bt;
      if (!fe_mul(l->hidden, m->dim, &r) || !fe_mul(r, 2, &r) || !fe_mul(r, l->experts, &r) ||
          !fe_mul(m->batch, m->context, &bt) || !fe_mul(bt, l->hidden + 2 * m->dim, &r))
        ERR_AT(c, v[3], "size overflow: moe hidden %lld with dim %lld and %lld experts " FE_TOO_BIG,
               (long long)l->hidden, (long long)m->dim, (long long)l->experts);
      else if (l->hidden > INT32_MAX)
        ERR_AT(c, v[3], "moe hidden %lld " FE_INT_LIMIT, (long long)l->hidden);
    }
    if (v[4]) {
      int e = fe_enum(c, v[4], "moe activation", w, 4);
      if (e >= 0) l->activation = wa[e];
    }
    if (v[5] && fe_float(c, v[5], "capacity_factor", &l->capacity_factor) &&
        !(l->capacity_factor > 0 && l->capacity_factor <= 1e6))
      ERR_AT(c, v[5], "moe 'capacity_factor' must be in (0, 1e6], got %g", l->capacity_factor);
    if (v[6] && fe_float(c, v[6], "aux_loss", &l->aux_loss) && !(l->aux_loss >= 0 && l->aux_loss <= 1e6))
      ERR_AT(c, v[6], "moe 'aux_loss' must be in [0, 1e6], got %g", l->aux_loss);
    break;
  }
  case SPEC_L_DROPOUT: {
    static const char *const k[] = {"name", "p"};
    fe_fields(c, opt, "dropout", k, 2, v, NULL);
    l->name = "dropout";
    l->p = 0.0;
    if (v[1] && fe_float(c, v[1], "p", &l->p) && !(l->p >= 0 && l->p < 1))
      ERR_AT(c, v[1], "dropout 'p' must be in [0, 1), got %g", l->p);
    break;
  }
  case SPEC_L_LM_HEAD: {
    static const char *const k[] = {"name", "tied"};
    fe_fields(c, opt, "lm_head", k, 2, v, NULL);
    l->name = "lm_head";
    l->tied = true;
    if (v[1]) fe_bool(c, v[1], "tied", &l->tied);
    break;
  }
  case SPEC_L_CLASSIFIER: {
    static const char *const k[] = {"name", "classes", "pool"};
    static const char *const w[] = {"first", "mean"};
    fe_fields(c, opt, "classifier", k, 3, v, NULL);
    l->name = "classifier";
    l->pool = SPEC_POOL_FIRST;
    if (!v[1]) ERR_AT(c, key, "missing required key 'classes' in classifier");
    else if (fe_int(c, v[1], "classes", 2, INT64_MAX, &l->classes) && m->dim > 0) {
      int64_t r;
      if (!fe_mul(l->classes, m->dim, &r) || !fe_mul(l->classes, m->batch, &r))
        ERR_AT(c, v[1], "size overflow: classes x dim " FE_TOO_BIG);
      else if (l->classes > INT32_MAX)
        ERR_AT(c, v[1], "classes %lld " FE_INT_LIMIT, (long long)l->classes);
    }
    if (v[2]) {
      int e = fe_enum(c, v[2], "pool mode", w, 2);
      if (e >= 0) l->pool = (SpecPool)e;
    }
    break;
  }
  case SPEC_L_POOL: { /* pool: {stride: S, mode: mean} (Funnel-Transformer); fe_check_funnel checks its place */
    static const char *const k[] = {"name", "stride", "mode"};
    static const char *const w[] = {"mean"};
    fe_fields(c, opt, "pool", k, 3, v, NULL);
    l->name = "pool";
    l->stride = 2;
    if (v[1]) fe_int(c, v[1], "stride", 2, 4096, &l->stride);
    if (v[2]) fe_enum(c, v[2], "pool mode", w, 1);
    break;
  }
  case SPEC_L_UPSAMPLE: {
    static const char *const k[] = {"name"};
    fe_fields(c, opt, "upsample", k, 1, v, NULL);
    l->name = "upsample";
    break;
  }
  case SPEC_L_RESIDUAL:
    l->name = "residual";
    fe_layer_list(c, opt, key, "residual", depth + 1, false, &l->body, &l->nbody);
    return;
  default:
    return;
  }
  if (v[0]) {
    const char *nm = fe_name(c, v[0], "layer name", false);
    if (nm) l->name = nm;
  }
}

/* `- repeat: N` with name: and block: beside it. */
static void fe_repeat(Ctx *c, SpecLayer *l, const YNode *item, int depth) {
  static const char *const k[] = {"repeat", "name", "block"};
  const YNode *v[3], *kn[3];
  fe_fields(c, item, "repeat", k, 3, v, kn);
  l->kind = SPEC_L_REPEAT;
  l->line = kn[0]->line;
  l->col = kn[0]->col;
  l->name = "h";
  l->count = 1;
  fe_int(c, v[0], "repeat", 1, 4096, &l->count);
  if (v[1]) {
    const char *nm = fe_name(c, v[1], "repeat name", false);
    if (nm && !strcmp(nm, "forward"))
      ERR_AT(c, v[1], "'forward' is the entry function's name; pick another repeat name");
    else if (nm)
      l->name = nm;
  }
  if (!v[2]) {
    ERR_AT(c, kn[0], "missing required key 'block' in repeat (the list of layers to repeat)");
    return;
  }
  int saved = c->norm_k;
  c->norm_k = 0;   /* a block is its own naming scope */
  fe_layer_list(c, v[2], kn[2], "repeat block", depth + 1, false, &l->body, &l->nbody);
  c->norm_k = saved;
}

/* Parses one entry of a layer list into l. */
static void fe_layer(Ctx *c, SpecLayer *l, const YNode *item, int depth, bool top) {
  char b[64];
  l->kind = SPEC_L_COUNT;
  l->line = item->line;
  l->col = item->col;
  l->name = "?";
  const YNode *key = item, *opt = NULL;
  if (item->kind == YN_MAP) {
    if (item->n == 0) {
      ERR_AT(c, item, "empty layer entry: expected a layer such as 'attention: {heads: 4}'");
      return;
    }
    for (int i = 0; i + 1 < item->n; i += 2) {
      const YNode *k = item->kid[i];
      if (k->kind == YN_SCALAR && !strcmp(k->text, "repeat")) {
        if (!top) {
          ERR_AT(c, k, "'repeat' is only allowed in the top-level layers list (repeats do not nest)");
          return;
        }
        fe_repeat(c, l, item, depth);
        return;
      }
    }
    key = item->kid[0];
    opt = item->kid[1];
    if (key->kind != YN_SCALAR) {
      ERR_AT(c, key, "expected a layer name as the key, got %s", yn_desc(key, b, sizeof b));
      return;
    }
    for (int i = 2; i + 1 < item->n; i += 2) {
      const YNode *k = item->kid[i];
      ERR_AT(c, k,
             "unexpected key '%.40s' beside layer '%.40s': a layer entry has one key; put options inside it, "
             "as in '%.40s: {option: value}'",
             k->kind == YN_SCALAR ? k->text : "?", key->text, key->text);
    }
  } else if (item->kind != YN_SCALAR || yn_is_null(item)) {
    ERR_AT(c, item, "expected a layer (a mapping such as 'attention: {heads: 4}'), got %s", yn_desc(item, b, sizeof b));
    return;
  }
  int kind = -1;
  for (int i = 0; i < SPEC_L_COUNT; i++)
    if (!strcmp(key->text, layer_words[i])) kind = i;
  if (kind < 0) {
    const char *sug = diag_suggest(key->text, layer_words, SPEC_L_COUNT);
    if (sug) ERR_AT(c, key, "unknown layer '%.40s'; did you mean '%s'?", key->text, sug);
    else ERR_AT(c, key, "unknown layer '%.40s'", key->text);
    return;
  }
  if (kind == SPEC_L_REPEAT) { /* a mapping with a repeat key was handled above: this is a bare "- repeat" */
    ERR_AT(c, key, "'repeat' needs a count and a block, as in '- {repeat: 4, block: [attention: {heads: 4}]}'");
    return;
  }
  l->kind = (SpecLayerKind)kind;
  if (kind == SPEC_L_RESIDUAL && !opt) {
    ERR_AT(c, key, "residual needs a list of layers, as in 'residual: [attention: {heads: 4}]'");
    l->kind = SPEC_L_COUNT;
    return;
  }
  if (!top && (kind == SPEC_L_EMBEDDING || kind == SPEC_L_POSITIONS || kind == SPEC_L_LM_HEAD ||
               kind == SPEC_L_CLASSIFIER || kind == SPEC_L_POOL || kind == SPEC_L_UPSAMPLE)) {
    ERR_AT(c, key, "'%s' is only allowed in the top-level layers list", layer_words[kind]);
    l->kind = SPEC_L_COUNT;
    return;
  }
  fe_layer_options(c, l, key, opt, depth);
}

static bool fe_layer_list(Ctx *c, const YNode *seq, const YNode *where, const char *what, int depth, bool top,
                          SpecLayer **out, int *nout) {
  char b[64];
  *out = NULL;
  *nout = 0;
  if (depth > FE_MAX_DEPTH) {
    ERR_AT(c, where, "layers are nested too deeply");
    return false;
  }
  if (!seq || seq->kind != YN_SEQ) {
    ERR_AT(c, seq && !yn_is_null(seq) ? seq : where, "expected a sequence of layers for %s, got %s", what,
           yn_desc(seq, b, sizeof b));
    return false;
  }
  if (seq->n == 0) {
    ERR_AT(c, seq, "%s needs at least one layer", what);
    return false;
  }
  *out = fe_alloc(c->s, (size_t)seq->n * sizeof(SpecLayer));
  *nout = seq->n;
  for (int i = 0; i < seq->n; i++) fe_layer(c, &(*out)[i], seq->kid[i], depth, top);
  return true;
}

/* Sequence compression (Funnel-Transformer): where pool and upsample may stand. A pool is followed
 * by a residual whose body reaches an attention through norms only: that attention pools its
 * queries (stride set on it) and the residual adds the pooled input. The strides' running product
 * divides the context (no partial groups: odd lengths are refused, not padded); lm_head and
 * positions need the full length, so an upsample (one, after the last pool) restores it. */
static void fe_check_funnel(Ctx *c) {
  Spec *s = c->s;
  int64_t factor = 1;
  const SpecLayer *first = NULL, *up = NULL;
  for (int i = 0; i < s->nlayers; i++) {
    SpecLayer *l = &s->layers[i];
    if (l->kind == SPEC_L_POOL) {
      if (!first) first = l;
      if (s->model.kind != SPEC_ENCODER)
        ERR_AT(c, l, "pool needs bidirectional attention ('causal: false'): a pooled position mixes later ones");
      if (up) ERR_AT(c, l, "pool after an upsample is not offered (the upsample at %d:%d restored the length)", up->line,
                     up->col);
      factor = fe_smul(factor, l->stride);
      if (s->model.context > 0 && (factor > s->model.context || s->model.context % factor != 0))
        ERR_AT(c, l, "pool: the strides so far (product %lld) do not divide the context %lld; odd lengths are not "
                     "padded, choose strides whose product divides it", (long long)factor, (long long)s->model.context);
      SpecLayer *r = i + 1 < s->nlayers ? &s->layers[i + 1] : NULL;
      SpecLayer *a = NULL;
      for (int j = 0; r && r->kind == SPEC_L_RESIDUAL && j < r->nbody; j++) {
        SpecLayer *b = &r->body[j];
        if (b->kind == SPEC_L_ATTENTION) a = b;
        if (b->kind != SPEC_L_LAYERNORM && b->kind != SPEC_L_RMSNORM) break;
      }
      if (!a)
        ERR_AT(c, l, "the layer after a pool must be a residual whose body starts with its attention (after norms "
                     "only): that attention pools its queries and the residual the input");
      else if (a->sparse)
        ERR_AT(c, a, "the attention after a pool is dense: a sparse pattern is not offered with pooled queries");
      else if (a->kv_heads != a->heads)
        ERR_AT(c, a, "grouped-query attention ('kv_heads' below 'heads') after a pool is not implemented");
      else
        a->stride = l->stride;
    } else if (l->kind == SPEC_L_UPSAMPLE) {
      if (!first) ERR_AT(c, l, "upsample restores the length a pool shortened, but no pool comes before it");
      else if (up) ERR_AT(c, l, "a model has at most one upsample (the first was at %d:%d)", up->line, up->col);
      else if (factor > 1) {
        l->stride = factor;
        up = l;
        factor = 1;
      }
    } else if (factor > 1 && (l->kind == SPEC_L_LM_HEAD || l->kind == SPEC_L_POSITIONS)) {
      ERR_AT(c, l, "'%s' needs the full sequence, which the pool at %d:%d shortened: put an 'upsample' before it",
             layer_words[l->kind], first->line, first->col);
    }
  }
}

/* Structural rules of the top-level list, and the model kind. */
static void fe_scan_attention(const SpecLayer *ls, int n, int *ncausal, int *nbidir, int depth) {
  for (int i = 0; i < n && depth <= FE_MAX_DEPTH; i++) {
    if (ls[i].kind == SPEC_L_ATTENTION) ++*(ls[i].causal ? ncausal : nbidir);
    if (ls[i].nbody) fe_scan_attention(ls[i].body, ls[i].nbody, ncausal, nbidir, depth + 1);
  }
}

/* Segment memory is all or nothing: the runtime carries the memory of every layer between the
 * segments of a text (t0 goes past the context), which a KV-cached attention cannot follow. The
 * first attention with memory is *first; an attention without it after or before is an error. */
static void fe_scan_memory(Ctx *c, const SpecLayer *ls, int n, const SpecLayer **with, const SpecLayer **without,
                           int depth) {
  for (int i = 0; i < n && depth <= FE_MAX_DEPTH; i++) {
    const SpecLayer *l = &ls[i];
    if (l->kind == SPEC_L_ATTENTION) {
      if (l->memory && !*with) *with = l;
      if (!l->memory && !*without) *without = l;
      if (*with && *without && (l == *with || l == *without))
        ERR_AT(c, l, "every attention layer needs 'memory' when one has it (the layer at line %d, column %d %s)",
               l == *with ? (*without)->line : (*with)->line, l == *with ? (*without)->col : (*with)->col,
               l == *with ? "has none" : "has memory");
    }
    if (l->nbody) fe_scan_memory(c, l->body, l->nbody, with, without, depth + 1);
  }
}

/* rope rotates pairs of dims: every attention's head dimension must be even. */
static void fe_check_rope(Ctx *c, const SpecLayer *ls, int n, int depth) {
  for (int i = 0; i < n && depth <= FE_MAX_DEPTH; i++) {
    const SpecLayer *l = &ls[i];
    if (l->kind == SPEC_L_ATTENTION && l->heads > 0 && (c->s->model.dim / l->heads) % 2 != 0)
      ERR_AT(c, l, "rope positions rotate pairs of dims, but this attention's head dimension %lld (dim %lld / heads %d) "
                   "is odd", (long long)(c->s->model.dim / l->heads), (long long)c->s->model.dim, l->heads);
    if (l->nbody) fe_check_rope(c, l->body, l->nbody, depth + 1);
  }
}

static void fe_check_structure(Ctx *c, const ModelNodes *mn, const YNode *layers_key) {
  Spec *s = c->s;
  int n = s->nlayers;
  if (n == 0) return;
  int ncausal = 0, nbidir = 0;
  fe_scan_attention(s->layers, n, &ncausal, &nbidir, 0);
  s->model.kind = ncausal > 0 || nbidir == 0 ? SPEC_DECODER : SPEC_ENCODER;
  if (ncausal > 0 && nbidir > 0)
    ERR_AT(c, layers_key, "the layers mix causal and non-causal attention; a model is a decoder or an encoder");
  if (mn->kind >= 0 && mn->kind != (int)s->model.kind)
    ERR_AT(c, mn->v[MK_KIND], "model kind '%s' does not match the layers, which make %s", kind_words[mn->kind],
           s->model.kind == SPEC_DECODER ? "a decoder (causal attention)" : "an encoder (non-causal attention)");
  const SpecLayer *with = NULL, *without = NULL;
  fe_scan_memory(c, s->layers, n, &with, &without, 0);
  bool seen_pos = false;
  for (int i = 0; i < n; i++) {
    const SpecLayer *l = &s->layers[i];
    if (l->kind == SPEC_L_POSITIONS && with)
      ERR_AT(c, l, "a model with segment memory (line %d, column %d) takes no 'positions' layer: its attention uses "
                   "relative positions, and an absolute table cannot follow a text past the context",
             with->mem_line, with->mem_col);
    if (l->kind == SPEC_L_EMBEDDING) {
      if (i != 0) ERR_AT(c, l, "'embedding' must be the first layer");
      else s->embedding = l->name;
    } else if (i == 0 && l->kind != SPEC_L_COUNT) {
      ERR_AT(c, l, "the first layer must be 'embedding' (the model's input is token ids), not '%s'",
             layer_words[l->kind]);
    }
    if (l->kind == SPEC_L_POSITIONS) {
      if (seen_pos) ERR_AT(c, l, "a model has at most one 'positions' layer");
      seen_pos = true;
      if (l->pos == SPEC_POS_ROPE) {
        s->rope_theta = l->theta;
        fe_check_rope(c, s->layers, n, 0);
      }
    }
    bool head = l->kind == SPEC_L_LM_HEAD || l->kind == SPEC_L_CLASSIFIER;
    if (head && i != n - 1) ERR_AT(c, l, "'%s' must be the last layer", layer_words[l->kind]);
    if (i == n - 1 && !head && l->kind != SPEC_L_COUNT)
      ERR_AT(c, l, "the last layer must be 'lm_head' or 'classifier', not '%s'", layer_words[l->kind]);
    if (l->kind == SPEC_L_LM_HEAD && l->tied && s->nlayers && s->layers[0].kind == SPEC_L_EMBEDDING &&
        s->layers[0].edim && s->layers[0].edim != s->model.dim)
      ERR_AT(c, l, "a tied lm_head reads the embedding table as [vocab, dim], but the factorised embedding's table is "
                   "[vocab, %lld]: use 'lm_head: {tied: false}'", (long long)s->layers[0].edim);
    if (l->kind == SPEC_L_CLASSIFIER && s->model.kind == SPEC_DECODER)
      ERR_AT(c, l, "a classifier needs an encoder: its attention layers must set 'causal: false'");
  }
  fe_check_funnel(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Parameters of one layer (shared with lower.c).                                               */

static int fe_add_p(SpecParam *out, int k, const char *prefix, const char *name, const char *suffix, int rank,
                    int64_t d0, int64_t d1, InitKind init, double arg, bool decay) {
  SpecParam *p = &out[k];
  snprintf(p->name, sizeof p->name, "%s%s%s", prefix, name, suffix);
  p->rank = rank;
  p->dim[0] = d0;
  p->dim[1] = d1;
  p->init = init;
  p->init_arg = arg;
  p->decay = decay;
  return k + 1;
}

/* A rank-3 parameter [d0, d1, d2] (a moe's experts' weights). */
static int fe_add_p3(SpecParam *out, int k, const char *prefix, const char *name, const char *suffix, int64_t d0,
                     int64_t d1, int64_t d2, InitKind init, double arg, bool decay) {
  k = fe_add_p(out, k, prefix, name, suffix, 3, d0, d1, init, arg, decay);
  out[k - 1].dim[2] = d2;
  return k;
}

int fe_layer_params(const Spec *s, const SpecLayer *l, const char *prefix, SpecParam *out) {
  const int64_t C = s->model.dim, V = s->model.vocab, T = s->model.context;
  const char *n = l->name;
  int k = 0;
  switch (l->kind) {
  case SPEC_L_EMBEDDING:
    k = fe_add_p(out, k, prefix, n, ".weight", 2, V, l->edim ? l->edim : C, INIT_NORMAL, 0.02, true);
    if (l->edim) {
      k = fe_add_p(out, k, prefix, "emb_proj", ".weight", 2, C, l->edim, INIT_NORMAL, 0.02, true);
      k = fe_add_p(out, k, prefix, "emb_proj", ".bias", 1, C, 0, INIT_ZEROS, 0, false);
    }
    break;
  case SPEC_L_POSITIONS:
    if (l->pos == SPEC_POS_LEARNED) k = fe_add_p(out, k, prefix, n, ".weight", 2, T, C, INIT_NORMAL, 0.02, true);
    break;
  case SPEC_L_LAYERNORM:
  case SPEC_L_RMSNORM:
    k = fe_add_p(out, k, prefix, n, ".weight", 1, C, 0, INIT_ONES, 0, false);
    if (l->bias) k = fe_add_p(out, k, prefix, n, ".bias", 1, C, 0, INIT_ZEROS, 0, false);
    break;
  case SPEC_L_ATTENTION: {
    /* q, k, v packed: (heads + 2 kv_heads) head dims; 3C for multi-head attention */
    int64_t W = l->heads > 0 ? fe_smul(l->heads + 2 * (int64_t)l->kv_heads, C / l->heads) : fe_smul(3, C);
    k = fe_add_p(out, k, prefix, n, ".c_attn.weight", 2, W, C, INIT_NORMAL, 0.02, true);
    if (l->bias) k = fe_add_p(out, k, prefix, n, ".c_attn.bias", 1, W, 0, INIT_ZEROS, 0, false);
    if (l->memory) { /* Transformer-XL's relative positions: r_net, r_w_bias (u), r_r_bias (v) */
      k = fe_add_p(out, k, prefix, n, ".r_net.weight", 2, C, C, INIT_NORMAL, 0.02, true);
      k = fe_add_p(out, k, prefix, n, ".r_w_bias", 2, l->heads, l->heads ? C / l->heads : 0, INIT_NORMAL, 0.02, false);
      k = fe_add_p(out, k, prefix, n, ".r_r_bias", 2, l->heads, l->heads ? C / l->heads : 0, INIT_NORMAL, 0.02, false);
    }
    k = fe_add_p(out, k, prefix, n, ".c_proj.weight", 2, C, C, INIT_NORMAL, 0.02, true);
    if (l->bias) k = fe_add_p(out, k, prefix, n, ".c_proj.bias", 1, C, 0, INIT_ZEROS, 0, false);
    break;
  }
  case SPEC_L_MLP:
    k = fe_add_p(out, k, prefix, n, ".c_fc.weight", 2, l->hidden, C, INIT_NORMAL, 0.02, true);
    if (l->bias) k = fe_add_p(out, k, prefix, n, ".c_fc.bias", 1, l->hidden, 0, INIT_ZEROS, 0, false);
    if (l->activation == SPEC_ACT_SWIGLU) {
      k = fe_add_p(out, k, prefix, n, ".c_gate.weight", 2, l->hidden, C, INIT_NORMAL, 0.02, true);
      if (l->bias) k = fe_add_p(out, k, prefix, n, ".c_gate.bias", 1, l->hidden, 0, INIT_ZEROS, 0, false);
    }
    k = fe_add_p(out, k, prefix, n, ".c_proj.weight", 2, C, l->hidden, INIT_NORMAL, 0.02, true);
    if (l->bias) k = fe_add_p(out, k, prefix, n, ".c_proj.bias", 1, C, 0, INIT_ZEROS, 0, false);
    break;
  case SPEC_L_MOE: {
    const int64_t E = l->experts, H = l->hidden;
    k = fe_add_p(out, k, prefix, n, ".router.weight", 2, E, C, INIT_NORMAL, 0.02, true);
    k = fe_add_p3(out, k, prefix, n, ".w1", E, H, C, INIT_NORMAL, 0.02, true);
    k = fe_add_p(out, k, prefix, n, ".b1", 2, E, H, INIT_ZEROS, 0, false);
    k = fe_add_p3(out, k, prefix, n, ".w2", E, C, H, INIT_NORMAL, 0.02, true);
    k = fe_add_p(out, k, prefix, n, ".b2", 2, E, C, INIT_ZEROS, 0, false);
    break;
  }
  case SPEC_L_LM_HEAD:
    if (!l->tied) k = fe_add_p(out, k, prefix, n, ".weight", 2, V, C, INIT_NORMAL, 0.02, true);
    break;
  case SPEC_L_CLASSIFIER:
    k = fe_add_p(out, k, prefix, n, ".weight", 2, l->classes, C, INIT_NORMAL, 0.02, true);
    k = fe_add_p(out, k, prefix, n, ".bias", 1, l->classes, 0, INIT_ZEROS, 0, false);
    break;
  default:
    break;
  }
  return k;
}

/* ------------------------------------------------------------------------------------------ */
/* Duplicate parameter names and the total parameter count.                                     */

typedef struct PName {
  char *name;
  const SpecLayer *layer;
  int order;
} PName;

typedef struct PNames {
  PName *v;
  int n, cap;
  int64_t total;
  bool overflow;
} PNames;

static void fe_collect(Ctx *c, PNames *pn, const SpecLayer *ls, int n, const char *prefix, int depth) {
  for (int i = 0; i < n && depth <= FE_MAX_DEPTH; i++) {
    const SpecLayer *l = &ls[i];
    if (l->kind == SPEC_L_COUNT) continue;
    if (l->kind == SPEC_L_REPEAT) {
      for (int64_t r = 0; r < l->count; r++) {
        char pre[FE_NAME_MAX];
        snprintf(pre, sizeof pre, "%s%s.%lld.", prefix, l->name, (long long)r);
        fe_collect(c, pn, l->body, l->nbody, pre, depth + 1);
      }
      continue;
    }
    if (l->nbody) fe_collect(c, pn, l->body, l->nbody, prefix, depth + 1);
    SpecParam ps[FE_LAYER_MAX_PARAMS];
    int np = fe_layer_params(c->s, l, prefix, ps);
    for (int j = 0; j < np; j++) {
      if (pn->n == pn->cap) {
        pn->cap = pn->cap ? pn->cap * 2 : 64;
        pn->v = realloc(pn->v, (size_t)pn->cap * sizeof *pn->v);
        if (!pn->v) die("out of memory");
      }
      pn->v[pn->n].name = strdup(ps[j].name);
      if (!pn->v[pn->n].name) die("out of memory");
      pn->v[pn->n].layer = l;
      pn->v[pn->n].order = pn->n;
      pn->n++;
      int64_t numel = 1;
      for (int d = 0; d < ps[j].rank; d++)
        if (!fe_mul(numel, ps[j].dim[d], &numel)) pn->overflow = true;
      if (__builtin_add_overflow(pn->total, numel, &pn->total)) pn->overflow = true;
    }
  }
}

static int fe_pname_cmp(const void *a, const void *b) {
  const PName *x = a, *y = b;
  int r = strcmp(x->name, y->name);
  return r ? r : (x->order > y->order) - (x->order < y->order);
}

static void fe_check_params(Ctx *c, const YNode *layers_key, bool sizes_ok) {
  PNames pn = {0};
  fe_collect(c, &pn, c->s->layers, c->s->nlayers, "", 0);
  if (pn.overflow && sizes_ok) ERR_AT(c, layers_key, "size overflow: the total parameter count does not fit in 64 bits");
  if (pn.n > 1) qsort(pn.v, (size_t)pn.n, sizeof *pn.v, fe_pname_cmp);
  /* Report each offending layer once, even when a repeat copies the clash many times. */
  const SpecLayer *reported[16];
  int nrep = 0;
  for (int i = 1; i < pn.n; i++) {
    if (strcmp(pn.v[i].name, pn.v[i - 1].name)) continue;
    const PName *first = &pn.v[i - 1], *dup = &pn.v[i];
    bool seen = false;
    for (int j = 0; j < nrep; j++) seen |= reported[j] == dup->layer;
    if (seen) continue;
    if (nrep < 16) reported[nrep++] = dup->layer;
    ERR_AT(c, dup->layer, "duplicate parameter name '%s' (also made by the layer at line %d, column %d); give one "
                          "of them a different 'name:'",
           dup->name, first->layer->line, first->layer->col);
  }
  for (int i = 0; i < pn.n; i++) free(pn.v[i].name);
  free(pn.v);
}

static void fe_check_repeat_names(Ctx *c) {
  for (int i = 0; i < c->s->nlayers; i++) {
    const SpecLayer *a = &c->s->layers[i];
    if (a->kind != SPEC_L_REPEAT) continue;
    for (int j = 0; j < i; j++) {
      const SpecLayer *b = &c->s->layers[j];
      if (b->kind == SPEC_L_REPEAT && !strcmp(a->name, b->name))
        ERR_AT(c, a, "a second repeat named '%s' (the first is at line %d, column %d); repeat names must differ",
               a->name, b->line, b->col);
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* passes:                                                                                      */

static void fe_check_passes(Ctx *c, const YNode *val) {
  Spec *s = c->s;
  char b[64];
  s->has_passes = true;
  if (yn_is_null(val)) return;
  if (val->kind != YN_SEQ) {
    ERR_AT(c, val, "expected a sequence of passes for 'passes', got %s", yn_desc(val, b, sizeof b));
    return;
  }
  for (int i = 0; i < val->n; i++) {
    const YNode *it = val->kid[i];
    if (it->kind == YN_SCALAR && !yn_is_null(it)) {
      /* Quoted scalars start one column after the node's mark. */
      pass_parse_pipeline(&s->passes, it->text, c->file, it->line, it->col + (it->plain ? 0 : 1), c->d);
      continue;
    }
    if (it->kind != YN_MAP || it->n != 2) {
      ERR_AT(c, it, "expected a pass: a name such as 'fuse', 'checkpoint<every=2>', or 'name: {option: value}'; "
                    "got %s",
             it->kind == YN_MAP ? (it->n ? "a mapping with several keys" : "an empty mapping")
                                : yn_desc(it, b, sizeof b));
      continue;
    }
    const YNode *k = it->kid[0], *opts = it->kid[1];
    if (k->kind != YN_SCALAR) {
      ERR_AT(c, k, "expected a pass name, got %s", yn_desc(k, b, sizeof b));
      continue;
    }
    PipelineEntry *e = pass_pipeline_append(&s->passes, k->text, c->file, k->line, k->col, c->d);
    if (!e) continue;
    if (yn_is_null(opts)) {
      pass_check_entry(e, c->d);
      continue;
    }
    if (opts->kind != YN_MAP) {
      ERR_AT(c, opts, "expected a mapping of options for pass '%s', got %s", k->text, yn_desc(opts, b, sizeof b));
      continue;
    }
    int errs = c->d->nerrors;
    for (int j = 0; j + 1 < opts->n; j += 2) {
      const YNode *ok = opts->kid[j], *ov = opts->kid[j + 1];
      if (ok->kind != YN_SCALAR) {
        ERR_AT(c, ok, "option names must be plain words");
        continue;
      }
      for (int q = 0; q < j; q += 2)
        if (opts->kid[q]->kind == YN_SCALAR && !strcmp(opts->kid[q]->text, ok->text)) {
          ERR_AT(c, ok, "duplicate option '%s' for pass '%s'", ok->text, k->text);
          goto next_option;
        }
      const char *text = ov->kind == YN_SCALAR ? ov->text : NULL;
      if (ov->kind == YN_SEQ) { /* a list of words (skip: [a, b.*]) is the option's comma-separated text */
        size_t len = 1;
        bool words = true;
        for (int q = 0; q < ov->n; q++) {
          words &= ov->kid[q]->kind == YN_SCALAR && ov->kid[q]->len > 0 && !memchr(ov->kid[q]->text, ',', ov->kid[q]->len);
          if (words) len += ov->kid[q]->len + 1;
        }
        if (words) {
          char *t = fe_alloc(c->s, len);
          size_t at = 0;
          for (int q = 0; q < ov->n; q++) {
            if (q) t[at++] = ',';
            memcpy(t + at, ov->kid[q]->text, ov->kid[q]->len);
            at += ov->kid[q]->len;
          }
          t[at] = 0;
          text = t;
        }
      }
      if (!text) {
        ERR_AT(c, ov, "expected a value for option '%s', got %s", ok->text, yn_desc(ov, b, sizeof b));
        continue;
      }
      /* Unknown keys are located at the key, bad values at the value. */
      bool known = false;
      for (int q = 0; q < e->pass->nopts; q++) known |= !strcmp(e->pass->opts[q].key, ok->text);
      if (!known) pass_set_option(e, ok->text, text, c->file, ok->line, ok->col, c->d);
      else if (yn_is_null(ov)) pass_set_option(e, ok->text, "true", c->file, ov->line, ov->col, c->d);
      else pass_set_option(e, ok->text, text, c->file, ov->line, ov->col, c->d);
    next_option:;
    }
    /* The rules between options, once they are all written and each is valid. */
    if (c->d->nerrors == errs) pass_check_entry(e, c->d);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* train:                                                                                       */

static const char *const train_keys[] = {
    "steps", "batch",     "micro_batch", "lr",        "min_lr",       "warmup",    "schedule",
    "optimizer", "beta1", "beta2",       "eps",       "weight_decay", "momentum",  "grad_clip",
    "precision", "seed",  "eval_every",  "checkpoint_every", "data", "prune", "distill"};
enum {
  TK_STEPS, TK_BATCH, TK_MICRO, TK_LR, TK_MIN_LR, TK_WARMUP, TK_SCHEDULE, TK_OPTIMIZER, TK_BETA1, TK_BETA2,
  TK_EPS, TK_WD, TK_MOMENTUM, TK_CLIP, TK_PRECISION, TK_SEED, TK_EVAL, TK_CKPT, TK_DATA, TK_PRUNE, TK_DISTILL, TK_N
};


/* The range rules are the IR's (ir/train.c), so a .mir file's `train {...}` line is held to the
 * same rules as the spec it came from. */
static void fe_train_int(Ctx *c, const YNode *n, const char *key, int64_t *out) {
  const TrainField *f = ir_train_field(key);
  IR_ASSERT(f && f->kind == TF_INT);
  if (n) fe_int(c, n, key, f->ilo, f->ihi, out);
}

static bool fe_train_real(Ctx *c, const YNode *n, const char *key, double *out) {
  const TrainField *f = ir_train_field(key);
  IR_ASSERT(f && f->kind == TF_REAL);
  double v;
  char err[160];
  if (!n || !fe_float(c, n, key, &v)) return false;
  if (!ir_train_check_real(f, v, err, sizeof err)) {
    ERR_AT(c, n, "%s", err);
    return false;
  }
  *out = v;
  return true;
}

static int fe_train_enum(Ctx *c, const YNode *n, const char *key) {
  const TrainField *f = ir_train_field(key);
  IR_ASSERT(f && f->kind == TF_ENUM);
  return n ? fe_enum(c, n, key, f->words, f->nwords) : -1;
}

/* train: prune: {initial: S0, start: T0, end: T1, every: DT}: the gradual pruning schedule of the
 * prune pass's masked weights (Zhu & Gupta 2017). end is required; initial 0, start 0 and every
 * (end - start) / 10 (at least 1) by default. */
static void fe_train_prune(Ctx *c, const YNode *n, SpecTrain *t) {
  static const char *const keys[] = {"initial", "start", "end", "every"};
  const YNode *v[4];
  if (!fe_fields(c, n, "prune", keys, 4, v, NULL)) return;
  if (!v[2]) {
    ERR_AT(c, n, "the pruning schedule needs 'end' (the step at which the target sparsity is reached)");
    return;
  }
  t->prune_initial = 0;
  t->prune_start = 0;
  if (v[0]) fe_train_real(c, v[0], "prune_initial", &t->prune_initial);
  if (v[1]) fe_train_int(c, v[1], "prune_start", &t->prune_start);
  fe_train_int(c, v[2], "prune_end", &t->prune_end);
  t->prune_every = (t->prune_end - t->prune_start) / 10 > 0 ? (t->prune_end - t->prune_start) / 10 : 1;
  if (v[3]) fe_int(c, v[3], "every", 1, INT64_MAX, &t->prune_every);
  if (t->prune_end < t->prune_start)
    ERR_AT(c, v[2], "the pruning schedule's 'end' (%lld) must not come before its 'start' (%lld)",
           (long long)t->prune_end, (long long)t->prune_start);
  else if (t->prune_end > t->steps)
    ERR_AT(c, v[2], "the pruning schedule's 'end' (%lld) is after the last step (%lld)", (long long)t->prune_end,
           (long long)t->steps);
}

static Spec *fe_parse_spec_file_at(const char *path, Diag *d, int depth);

/* train: distill: {teacher: FILE, temperature: T, alpha: A}: knowledge distillation (Hinton et al.
 * 2015). FILE is a spec relative to this one's folder, parsed and checked here (its errors carry its
 * own file:line:col); it must share the vocabulary and the context (the token ids it reads) and
 * produce per-token logits; its depth and width are its own. temperature defaults to 1, alpha to 0.5. */
static void fe_train_distill(Ctx *c, const YNode *n, SpecTrain *t) {
  static const char *const keys[] = {"teacher", "temperature", "alpha"};
  const YNode *v[3];
  if (!fe_fields(c, n, "distill", keys, 3, v, NULL)) return;
  if (c->depth > 0) {
    ERR_AT(c, n, "a teacher's spec may not distill from a teacher of its own");
    return;
  }
  t->distill_temperature = 1.0;
  t->distill_alpha = 0.5;
  if (v[1]) fe_train_real(c, v[1], "distill_temperature", &t->distill_temperature);
  if (v[2]) fe_train_real(c, v[2], "distill_alpha", &t->distill_alpha);
  if (!v[0]) {
    ERR_AT(c, n, "distill: missing required key 'teacher' (the teacher's spec file)");
    return;
  }
  const char *rel = fe_str(c, v[0], "teacher");
  if (!rel) return;
  if (!*rel) {
    ERR_AT(c, v[0], "'teacher' is empty: name the teacher's spec file");
    return;
  }
  /* relative to the folder of this spec */
  const char *slash = strrchr(c->file, '/');
  size_t dl = *rel != '/' && slash ? (size_t)(slash - c->file) + 1 : 0;
  char *path = malloc(dl + strlen(rel) + 1);
  if (!path) die("out of memory");
  memcpy(path, c->file, dl);
  strcpy(path + dl, rel);
  FILE *probe = fopen(path, "rb");
  if (!probe) {
    ERR_AT(c, v[0], "cannot open the teacher's spec '%s': %s", path, strerror(errno));
    free(path);
    return;
  }
  fclose(probe);
  int before = c->d->nerrors;
  Spec *ts = fe_parse_spec_file_at(path, c->d, c->depth + 1);
  if (!ts) {
    if (c->d->nerrors == before) ERR_AT(c, v[0], "the teacher's spec '%s' could not be read", path);
    else ERR_AT(c, v[0], "the teacher's spec '%s' has errors (above)", path);
    free(path);
    return;
  }
  const SpecModel *sm = &c->s->model, *tm = &ts->model;
  const SpecLayer *last = ts->nlayers ? &ts->layers[ts->nlayers - 1] : NULL;
  if (tm->vocab != sm->vocab)
    ERR_AT(c, v[0], "the teacher '%s' has vocabulary %lld, the student %lld: distillation needs the same vocabulary",
           path, (long long)tm->vocab, (long long)sm->vocab);
  else if (tm->context != sm->context)
    ERR_AT(c, v[0], "the teacher '%s' has context %lld, the student %lld: distillation needs the same context", path,
           (long long)tm->context, (long long)sm->context);
  else if (!last || last->kind != SPEC_L_LM_HEAD)
    ERR_AT(c, v[0], "the teacher '%s' must end in an lm_head (per-token logits over the vocabulary)", path);
  else if (!c->s->nlayers || c->s->layers[c->s->nlayers - 1].kind != SPEC_L_LM_HEAD)
    ERR_AT(c, n, "a distilling student must end in an lm_head (per-token logits over the vocabulary)");
  else {
    t->teacher = ts;
    ts = NULL;
  }
  fe_spec_free(ts);
  free(path);
}

static void fe_check_train(Ctx *c, const YNode *key, const YNode *val) {
  SpecTrain *t = &c->s->train;
  const YNode *v[TK_N];
  t->present = true;
  t->line = key->line;
  t->col = key->col;
  if (!fe_fields(c, val, "train", train_keys, TK_N, v, NULL)) return;
  fe_train_int(c, v[TK_STEPS], "steps", &t->steps);
  fe_train_int(c, v[TK_BATCH], "batch", &t->batch);
  t->micro_batch = t->batch;
  bool okm = v[TK_MICRO] && fe_int(c, v[TK_MICRO], "micro_batch", ir_train_field("micro_batch")->ilo,
                                   ir_train_field("micro_batch")->ihi, &t->micro_batch);
  if (okm && t->batch % t->micro_batch != 0)
    ERR_AT(c, v[TK_MICRO], "'micro_batch' (%lld) must divide the training 'batch' (%lld)", (long long)t->micro_batch,
           (long long)t->batch);
  fe_train_real(c, v[TK_LR], "lr", &t->lr);
  t->min_lr = t->lr / 10;
  fe_train_real(c, v[TK_MIN_LR], "min_lr", &t->min_lr);
  if (v[TK_MIN_LR] && t->min_lr > t->lr)
    ERR_AT(c, v[TK_MIN_LR], "'min_lr' (%g) must not exceed 'lr' (%g)", t->min_lr, t->lr);
  t->warmup = t->steps / 10 < 100 ? t->steps / 10 : 100;
  if (v[TK_WARMUP]) {
    int64_t w = -1;
    fe_train_int(c, v[TK_WARMUP], "warmup", &w);
    if (w >= 0) t->warmup = w;
    if (w >= 0 && t->warmup > t->steps)
      ERR_AT(c, v[TK_WARMUP], "'warmup' (%lld) must not exceed 'steps' (%lld)", (long long)t->warmup,
             (long long)t->steps);
  }
  int e;
  if ((e = fe_train_enum(c, v[TK_SCHEDULE], "schedule")) >= 0) t->schedule = (SpecSchedule)e;
  if ((e = fe_train_enum(c, v[TK_OPTIMIZER], "optimizer")) >= 0) t->optimizer = (SpecOptimizer)e;
  if ((e = fe_train_enum(c, v[TK_PRECISION], "precision")) >= 0) t->precision = (SpecPrecision)e;
  fe_train_real(c, v[TK_BETA1], "beta1", &t->beta1);
  fe_train_real(c, v[TK_BETA2], "beta2", &t->beta2);
  fe_train_real(c, v[TK_EPS], "eps", &t->eps);
  fe_train_real(c, v[TK_WD], "weight_decay", &t->weight_decay);
  fe_train_real(c, v[TK_MOMENTUM], "momentum", &t->momentum);
  fe_train_real(c, v[TK_CLIP], "grad_clip", &t->grad_clip);
  fe_train_int(c, v[TK_SEED], "seed", &t->seed);
  fe_train_int(c, v[TK_EVAL], "eval_every", &t->eval_every);
  fe_train_int(c, v[TK_CKPT], "checkpoint_every", &t->checkpoint_every);
  if (v[TK_PRUNE]) fe_train_prune(c, v[TK_PRUNE], t);
  if (v[TK_DISTILL]) fe_train_distill(c, v[TK_DISTILL], t);
  if (v[TK_DATA]) {
    t->data = fe_str(c, v[TK_DATA], "data");
    if (t->data && !*t->data) {
      ERR_AT(c, v[TK_DATA], "'data' is empty: name the training-data file, or leave the key out");
      t->data = NULL;
    }
    t->data_line = v[TK_DATA]->line;
    t->data_col = v[TK_DATA]->col;
  }
}

static void fe_train_defaults(SpecTrain *t, const SpecModel *m) {
  memset(t, 0, sizeof *t);
  t->steps = 1000;
  t->batch = m->batch;
  t->micro_batch = m->batch;
  t->lr = 6e-4;
  t->min_lr = 6e-5;
  t->warmup = 100;
  t->schedule = SPEC_SCHED_COSINE;
  t->optimizer = SPEC_OPT_ADAMW;
  t->beta1 = 0.9;
  t->beta2 = 0.95;
  t->eps = 1e-8;
  t->weight_decay = 0.1;
  t->momentum = 0.9;
  t->grad_clip = 1.0;
  t->precision = SPEC_PREC_FP32;
  t->seed = 1337;
  t->eval_every = 100;
  t->checkpoint_every = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Top level and the public API.                                                                */

static const char *const top_keys[] = {"model", "layers", "passes", "train"};

static void fe_check_top(Ctx *c, const YNode *root) {
  char b[64];
  if (root->kind != YN_MAP) {
    if (yn_is_null(root) && root->plain)
      fe_err(c, c->doc_line, c->doc_col, "empty spec: expected a mapping with 'model:' and 'layers:'");
    else
      ERR_AT(c, root, "the top level of a spec must be a mapping with 'model:' and 'layers:', got %s",
             yn_desc(root, b, sizeof b));
    return;
  }
  const YNode *v[4], *kn[4];
  fe_fields(c, root, "the spec", top_keys, 4, v, kn);
  Spec *s = c->s;
  ModelNodes mn = {{0}, -1};
  bool model_ok = false;
  if (!v[0]) ERR_AT(c, root, "missing required key 'model' at the top level");
  else model_ok = fe_check_model(c, kn[0], v[0], &mn);
  fe_train_defaults(&s->train, &s->model);
  if (!v[1]) ERR_AT(c, root, "missing required key 'layers' at the top level");
  else {
    /* Layers are checked even when model: has errors (size checks then skip unknown sizes). */
    c->norm_k = 0;
    fe_layer_list(c, v[1], kn[1], "'layers'", 1, true, &s->layers, &s->nlayers);
    fe_check_structure(c, &mn, kn[1]);
    fe_check_repeat_names(c);
    fe_check_params(c, kn[1], model_ok);
  }
  if (v[2]) fe_check_passes(c, v[2]);
  if (v[3]) fe_check_train(c, kn[3], v[3]);
}

static Spec *fe_parse_spec_text_at(const char *file, const char *text, size_t len, Diag *d, int depth) {
  Spec *s = calloc(1, sizeof *s);
  if (!s) die("out of memory");
  pass_pipeline_init(&s->passes);
  s->file = fe_strndup(s, file, strlen(file));
  Ctx c = {.d = d, .file = s->file, .text = text, .len = len, .s = s, .depth = depth};
  diag_add_source(d, file, text, len);
  int before = d->nerrors;
  YNode *root = fe_load_yaml(&c);
  if (root) fe_check_top(&c, root);
  yn_free(root);
  if (!root || d->nerrors != before) {
    fe_spec_free(s);
    return NULL;
  }
  return s;
}

Spec *fe_parse_spec_text(const char *file, const char *text, size_t len, Diag *d) {
  return fe_parse_spec_text_at(file, text, len, d, 0);
}

/* Reads a whole file, bounded: a regular file at its size, refused above reg_cap; anything else
 * (a device, a FIFO) read until end of file, refused once it passes other_cap. So `/dev/zero` is
 * a clear error, not a read until memory runs out. `what` names the input in the messages. */
char *fe_read_file(const char *path, const char *what, size_t reg_cap, size_t other_cap, size_t *len,
                   Diag *d) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    diag_error(d, path, 0, 0, "cannot open file '%s': %s", path, strerror(errno));
    return NULL;
  }
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0) {
    diag_error(d, path, 0, 0, "cannot stat %s '%s': %s", what, path, strerror(errno));
    fclose(f);
    return NULL;
  }
  if (S_ISDIR(sb.st_mode)) {
    diag_error(d, path, 0, 0, "cannot read file '%s': is a directory; the %s input must be a file", path, what);
    fclose(f);
    return NULL;
  }
  bool reg = S_ISREG(sb.st_mode);
  size_t limit = reg ? reg_cap : other_cap;
  if (reg && (uint64_t)sb.st_size > (uint64_t)reg_cap) {
    diag_error(d, path, 0, 0, "%s file is %llu bytes; the limit is %zu MiB", what,
               (unsigned long long)sb.st_size, reg_cap >> 20);
    fclose(f);
    return NULL;
  }
  size_t cap = reg ? (size_t)sb.st_size + 1 : (size_t)1 << 16, n = 0;
  char *buf = malloc(cap + 1);
  bool over = false;
  for (size_t k; buf && (k = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += k;
    if (n > limit) {
      over = true;
      break;
    }
    if (n == cap) {
      size_t nc = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
      char *nb = realloc(buf, nc + 1);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap = nc;
    }
  }
  int rerr = ferror(f) ? errno : 0;
  fclose(f);
  if (over) {
    free(buf);
    diag_error(d, path, 0, 0, "%s input is longer than %zu MiB, the limit when it is not a regular file", what,
               limit >> 20);
    return NULL;
  }
  if (!buf) {
    diag_error(d, path, 0, 0, "out of memory reading %s '%s'", what, path);
    return NULL;
  }
  if (rerr) {
    diag_error(d, path, 0, 0, "cannot read %s '%s': %s", what, path, strerror(rerr));
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

static Spec *fe_parse_spec_file_at(const char *path, Diag *d, int depth) {
  size_t len = 0;
  char *buf = fe_read_file(path, "spec", FE_SPEC_MAX_BYTES, FE_SPEC_MAX_BYTES, &len, d);
  if (!buf) return NULL;
  Spec *s = fe_parse_spec_text_at(path, buf, len, d, depth);
  free(buf);
  return s;
}

Spec *fe_parse_spec_file(const char *path, Diag *d) { return fe_parse_spec_file_at(path, d, 0); }

void fe_spec_free(Spec *s) {
  if (!s) return;
  fe_spec_free(s->train.teacher);
  pass_pipeline_free(&s->passes);
  for (SpecBlock *b = s->blocks, *nx; b; b = nx) {
    nx = b->next;
    free(b);
  }
  free(s);
}

const Pipeline *fe_spec_passes(const Spec *s) { return s && s->has_passes ? &s->passes : NULL; }

const SpecTrain *fe_spec_train(const Spec *s) { return &s->train; }
