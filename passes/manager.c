/* manager.c: the pass manager.
 *
 * Parses pipelines written as LLVM's new pass manager writes them ("constfold,cse,fuse<max-ops=8>,
 * dce", options in angle brackets separated by ';', a bare option name meaning "true"), checks
 * every pass name and option against the registry (passes/registry.c) with "did you mean" hints at
 * the exact column, keeps typed option values, prints the canonical pipeline text, and runs a
 * pipeline: verifying the IR after each pass when asked, printing the IR before/after passes
 * (--print-before=P, --print-after=P, --print-after-all) and a table of pass wall times
 * (--print-pass-times). The driver, the spec frontend and the tests all go through here, so a
 * pipeline means the same thing wherever it is written. Facts the module carries complete the
 * pipeline it runs: a training record asking for bf16 or fp16 adds the precision pass after the
 * passes that build @train (pass_pipeline_complete).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pass.h"

/* ---- option values ---- */

static const char *type_desc(PassOptType t) {
  switch (t) {
  case POPT_INT: return "an integer";
  case POPT_FLOAT: return "a number";
  case POPT_BOOL: return "true, false, 1 or 0";
  case POPT_STR: return "text without ';' or '>' (at most 63 bytes)";
  case POPT_SIZE: return "a size in bytes (e.g. 4096, 4KiB, 2MiB, 1G)";
  }
  return "?";
}

/* Parses text as a value of v->type into v. False if the text is not such a value. */
static bool parse_value(PassOptValue *v, const char *text) {
  char *end;
  switch (v->type) {
  case POPT_INT: {
    if (!*text || isspace((unsigned char)*text)) return false;
    errno = 0;
    long long x = strtoll(text, &end, 10);
    if (errno || *end) return false;
    v->i = x;
    return true;
  }
  case POPT_FLOAT: {
    if (!*text || isspace((unsigned char)*text)) return false;
    errno = 0;
    double x = strtod(text, &end);
    if (errno || *end || !isfinite(x)) return false;
    v->f = x;
    return true;
  }
  case POPT_BOOL:
    if (!strcmp(text, "true") || !strcmp(text, "1")) v->i = 1;
    else if (!strcmp(text, "false") || !strcmp(text, "0")) v->i = 0;
    else return false;
    return true;
  case POPT_STR:
    if (strlen(text) >= sizeof v->s || strpbrk(text, ";>")) return false;
    strcpy(v->s, text);
    return true;
  case POPT_SIZE: {
    const char *p = text;
    if (!isdigit((unsigned char)*p)) return false;
    int64_t x = 0;
    for (; isdigit((unsigned char)*p); p++) {
      int dgt = *p - '0';
      if (x > (INT64_MAX - dgt) / 10) return false;  /* overflow */
      x = x * 10 + dgt;
    }
    static const struct { const char *suffix; int64_t mult; } units[] = {
        {"", 1}, {"K", 1 << 10}, {"KiB", 1 << 10}, {"M", 1 << 20}, {"MiB", 1 << 20},
        {"G", (int64_t)1 << 30}, {"GiB", (int64_t)1 << 30},
    };
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
      if (strcmp(p, units[u].suffix) != 0) continue;
      if (x > INT64_MAX / units[u].mult) return false;  /* overflow */
      v->i = x * units[u].mult;
      return true;
    }
    return false;
  }
  }
  return false;
}

static const PassOptValue *find_opt(const PassOptions *o, const char *key) {
  for (int i = 0; i < o->n; i++)
    if (strcmp(o->v[i].key, key) == 0) return &o->v[i];
  die("pass option '%s' does not exist", key);
}

int64_t pass_opt_int(const PassOptions *o, const char *key) {
  const PassOptValue *v = find_opt(o, key);
  IR_ASSERT(v->type == POPT_INT || v->type == POPT_BOOL || v->type == POPT_SIZE);
  return v->i;
}

double pass_opt_float(const PassOptions *o, const char *key) {
  const PassOptValue *v = find_opt(o, key);
  IR_ASSERT(v->type == POPT_FLOAT);
  return v->f;
}

bool pass_opt_bool(const PassOptions *o, const char *key) {
  const PassOptValue *v = find_opt(o, key);
  IR_ASSERT(v->type == POPT_BOOL);
  return v->i != 0;
}

const char *pass_opt_str(const PassOptions *o, const char *key) {
  const PassOptValue *v = find_opt(o, key);
  IR_ASSERT(v->type == POPT_STR);
  return v->s;
}

bool pass_opt_is_set(const PassOptions *o, const char *key) { return find_opt(o, key)->set; }

void pass_error(const PassOptions *o, Diag *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(d, o->file, o->line, o->col, fmt, ap);
  va_end(ap);
}

PassSkip pass_skip_new(const char *list) {
  PassSkip s = {list, 1, NULL};
  for (const char *c = list; *c; c++) s.n += *c == ',';
  s.used = calloc((size_t)s.n, sizeof *s.used);
  if (!s.used) die("out of memory");
  return s;
}

bool pass_skip_match(PassSkip *s, const char *name) {
  int k = 0;
  bool hit = false;
  for (const char *c = s->list; *c; k++) {
    const char *e = strchr(c, ',');
    size_t n = e ? (size_t)(e - c) : strlen(c);
    bool prefix = n > 0 && c[n - 1] == '*';
    size_t m = prefix ? n - 1 : n;
    if (n > 0 && (prefix ? strncmp(name, c, m) == 0 : strlen(name) == n && strncmp(name, c, n) == 0)) {
      s->used[k] = true;
      hit = true;
    }
    if (!e) break;
    c = e + 1;
  }
  return hit;
}

bool pass_skip_done(PassSkip *s, const PassOptions *o, Diag *d, const char *pass) {
  bool ok = true;
  for (int k = 0, at = 0; *s->list && k < s->n; k++) {
    const char *e = strchr(s->list + at, ',');
    int n = e ? (int)(e - (s->list + at)) : (int)strlen(s->list + at);
    if (!s->used[k]) {
      pass_error(o, d, "%s: skip=%.*s names no parameter", pass, n, s->list + at);
      ok = false;
    }
    at += n + 1;
  }
  free(s->used);
  s->used = NULL;
  return ok;
}

/* ---- where parameters are read ---- */

static void reach_trace(const Module *m, const Func *f, const Value *v, bool entry, PassReach *r, int depth) {
  if (depth > 64) { /* calls do not recurse in a valid module; stay safe anyway */
    r->other = true;
    return;
  }
  for (int i = 0; i < f->nret; i++) r->other |= f->ret[i] == v;
  for (const Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nin; i++) {
      if (op->in[i] != v) continue;
      if (op->kind == OP_LINEAR && i == 1)
        *(entry ? &r->head : &r->block) = true;
      else if (op->kind == OP_EMBEDDING && i == 1)
        r->embedding = true;
      else if (op->kind == OP_CALL) {
        const Func *g = ir_find_func(m, ir_attr_s(op, "callee"));
        if (g && i < g->narg)
          reach_trace(m, g, g->args[i], false, r, depth + 1);
        else
          r->other = true;
      } else
        r->other = true;
    }
}

PassReach *pass_param_reach(const Module *m) {
  const Func *entry = m->entry ? ir_find_func(m, m->entry) : NULL;
  PassReach *r = calloc((size_t)m->nparam + 1, sizeof *r);
  if (!r) die("out of memory");
  for (int fi = 0; fi < m->nfunc; fi++)
    for (const Op *op = m->funcs[fi]->first; op; op = op->next)
      if (op->kind == OP_PARAM) {
        const Param *p = ir_find_param(m, ir_attr_s(op, "p"));
        if (p) reach_trace(m, m->funcs[fi], op->out[0], m->funcs[fi] == entry, &r[p->index], 0);
      }
  return r;
}

/* The parameter a weight value is bound to at each call of its function: the value itself when it
 * is a param op's result (one binding), else the argument's parameter at every call of f. Fills
 * out (at most cap) and returns the count, or -1 when some binding is not a parameter. */
int pass_param_bindings(const Module *m, const Func *f, const Value *w, Param **out, int cap) {
  if (w->def) {
    if (w->def->kind != OP_PARAM) return -1;
    out[0] = ir_find_param(m, ir_attr_s(w->def, "p"));
    return out[0] ? 1 : -1;
  }
  int k = 0;
  for (int fi = 0; fi < m->nfunc; fi++)
    for (const Op *c = m->funcs[fi]->first; c; c = c->next) {
      if (c->kind != OP_CALL || strcmp(ir_attr_s(c, "callee"), f->name) || w->index >= c->nin) continue;
      const Value *a = c->in[w->index];
      if (!a->def || a->def->kind != OP_PARAM || k >= cap) return -1;
      if (!(out[k++] = ir_find_param(m, ir_attr_s(a->def, "p")))) return -1;
    }
  return k;
}

/* ---- retyping after parameter types change ---- */

static void infer_or_die(const Module *m, Op *op) {
  char err[256];
  if (!ir_infer(m, op, err, sizeof err)) die("%s", err);
}

/* True if every argument of g has the type the call passes. */
static bool signature_fits(const Func *g, const Op *call) {
  for (int j = 0; j < g->narg && j < call->nin; j++)
    if (!ir_type_eq(&g->args[j]->type, &call->in[j]->type)) return false;
  return true;
}

/* The arguments of g as the call passes them. */
static void retype_args(Func *g, const Op *call) {
  for (int j = 0; j < g->narg && j < call->nin; j++) g->args[j]->type = call->in[j]->type;
}

static void fix_func(Module *m, Func *f, const char *tag, int depth);

/* Points the call at a function whose arguments have the types it passes: the callee itself
 * retyped when every call of it passes the same types, else a clone (NAME.TAG, NAME.TAG.2, ...). */
static void fix_call(Module *m, Op *call, const char *tag, int depth) {
  Func *g = ir_find_func(m, ir_attr_s(call, "callee"));
  IR_ASSERT(g && depth < 64);
  if (signature_fits(g, call)) return;
  bool all = true; /* every call of g passes these types */
  for (int fi = 0; fi < m->nfunc && all; fi++)
    for (const Op *op = m->funcs[fi]->first; op && all; op = op->next)
      if (op->kind == OP_CALL && op != call && strcmp(ir_attr_s(op, "callee"), g->name) == 0)
        for (int j = 0; j < op->nin && j < call->nin; j++) all &= ir_type_eq(&op->in[j]->type, &call->in[j]->type);
  if (!all) {
    char name[512];
    Func *c = NULL;
    for (int k = 1; k < 1000 && !c; k++) {
      snprintf(name, sizeof name, k == 1 ? "%s.%s" : "%s.%s.%d", g->name, tag, k);
      Func *h = ir_find_func(m, name);
      if (!h)
        c = ir_clone_func(m, g, name);
      else if (signature_fits(h, call))
        c = h;
    }
    if (!c) die("cannot name a clone of @%s", g->name);
    ir_set_attr_sym(call, "callee", c->name);
    if (signature_fits(c, call)) return;
    g = c;
  }
  retype_args(g, call);
  fix_func(m, g, tag, depth + 1);
}

/* Re-infers f's ops after its weights (param results or arguments) changed type, fixing each call
 * before the ops that read its results. */
static void fix_func(Module *m, Func *f, const char *tag, int depth) {
  for (Op *op = f->first; op; op = op->next) {
    if (op->kind == OP_CALL) fix_call(m, op, tag, depth);
    infer_or_die(m, op);
  }
}

void pass_refit_types(Module *m, const char *tag) {
  for (int fi = 0; fi < m->nfunc; fi++)
    for (Op *op = m->funcs[fi]->first; op; op = op->next)
      if (op->kind == OP_PARAM) op->out[0]->type = ir_find_param(m, ir_attr_s(op, "p"))->type;
  int nfunc = m->nfunc; /* clones are appended; they are fixed when made */
  bool *called = calloc((size_t)nfunc + 1, sizeof *called);
  if (!called) die("out of memory");
  for (int fi = 0; fi < nfunc; fi++)
    for (const Op *op = m->funcs[fi]->first; op; op = op->next)
      if (op->kind == OP_CALL)
        for (int gi = 0; gi < nfunc; gi++) called[gi] |= strcmp(m->funcs[gi]->name, ir_attr_s(op, "callee")) == 0;
  for (int fi = 0; fi < nfunc; fi++) /* from the roots down: a callee is fixed through its calls */
    if (!called[fi]) fix_func(m, m->funcs[fi], tag, 0);
  free(called);
}

/* ---- pipelines ---- */

void pass_pipeline_init(Pipeline *p) { memset(p, 0, sizeof *p); }

void pass_pipeline_free(Pipeline *p) {
  free(p->e);
  memset(p, 0, sizeof *p);
}

static const char *const *pass_names(int *n) {
  static const char *names[64];
  const PassInfo *reg = pass_registry(n);
  IR_ASSERT(*n <= 64);
  for (int i = 0; i < *n; i++) names[i] = reg[i].name;
  return names;
}

PipelineEntry *pass_pipeline_append(Pipeline *p, const char *name, const char *file, int line, int col,
                                    Diag *d) {
  const PassInfo *pi = pass_find(name);
  if (!pi) {
    int n;
    const char *const *names = pass_names(&n);
    const char *hint = diag_suggest(name, names, n);
    if (hint) diag_error(d, file, line, col, "unknown pass '%s'; did you mean '%s'?", name, hint);
    else diag_error(d, file, line, col, "unknown pass '%s' (`modelc passes` lists them)", name);
    return NULL;
  }
  if (pi->once)
    for (int i = 0; i < p->n; i++)
      if (p->e[i].pass == pi) {
        diag_error(d, file, line, col, "pass '%s' is listed twice; it runs once in a pipeline", name);
        diag_note(d, p->e[i].file, p->e[i].line, p->e[i].col, "'%s' is first listed here", name);
        return NULL;
      }
  if (p->n == p->cap) {
    int cap = p->cap ? 2 * p->cap : 8;
    PipelineEntry *e = realloc(p->e, (size_t)cap * sizeof *e);
    if (!e) die("out of memory");
    p->e = e;
    p->cap = cap;
  }
  PipelineEntry *e = &p->e[p->n++];
  memset(e, 0, sizeof *e);
  e->pass = pi;
  e->file = file;
  e->line = line;
  e->col = col;
  IR_ASSERT(pi->nopts <= PASS_MAX_OPTS);
  e->opts.n = pi->nopts;
  for (int i = 0; i < pi->nopts; i++) {
    PassOptValue *v = &e->opts.v[i];
    v->key = pi->opts[i].key;
    v->type = pi->opts[i].type;
    if (!parse_value(v, pi->opts[i].dflt))
      die("pass '%s': bad default '%s' for option '%s'", pi->name, pi->opts[i].dflt, v->key);
  }
  return e;
}

/* Checks a parsed value against its option's range (lo/hi) or choices; the one place where the
 * ranges in the registry are enforced, so `modelc check` reports them where they are written. */
static bool in_range(const PassOptSpec *os, const PassOptValue *v, const char *text, const char *pass,
                     const char *file, int line, int col, Diag *d) {
  if ((v->type == POPT_INT || v->type == POPT_SIZE) && (os->lo || os->hi) && (v->i < os->lo || v->i > os->hi)) {
    if (os->hi == INT64_MAX)
      diag_error(d, file, line, col, "option '%s' of pass '%s' must be at least %" PRId64 ", not %s", os->key, pass,
                 os->lo, text);
    else
      diag_error(d, file, line, col, "option '%s' of pass '%s' must be in [%" PRId64 ", %" PRId64 "], not %s",
                 os->key, pass, os->lo, os->hi, text);
    return false;
  }
  if (v->type == POPT_STR && os->choices && !ir_words_have(os->choices, v->s)) {
    char want[128];
    ir_words_text(os->choices, want, sizeof want);
    diag_error(d, file, line, col, "invalid value '%s' for option '%s' of pass '%s': expected %s", text, os->key,
               pass, want);
    return false;
  }
  return true;
}

/* Sets option key (at kcol) to value (at vcol; NULL: the bare flag form). */
static bool set_option(PipelineEntry *e, const char *key, const char *value, const char *file, int line,
                       int kcol, int vcol, Diag *d) {
  const PassInfo *pi = e->pass;
  int k = -1;
  for (int i = 0; i < e->opts.n; i++)
    if (strcmp(e->opts.v[i].key, key) == 0) k = i;
  if (k < 0) {
    const char *keys[PASS_MAX_OPTS];
    for (int i = 0; i < pi->nopts; i++) keys[i] = pi->opts[i].key;
    const char *hint = pi->nopts ? diag_suggest(key, keys, pi->nopts) : NULL;
    if (hint)
      diag_error(d, file, line, kcol, "unknown option '%s' for pass '%s'; did you mean '%s'?", key, pi->name,
                 hint);
    else if (pi->nopts)
      diag_error(d, file, line, kcol, "unknown option '%s' for pass '%s'", key, pi->name);
    else
      diag_error(d, file, line, kcol, "unknown option '%s': pass '%s' takes no options", key, pi->name);
    return false;
  }
  PassOptValue *v = &e->opts.v[k];
  if (!value) {
    if (v->type != POPT_BOOL) {
      diag_error(d, file, line, kcol, "option '%s' of pass '%s' needs a value (%s)", key, pi->name,
                 type_desc(v->type));
      return false;
    }
    value = "true";
  }
  PassOptValue tmp = *v;
  if (!parse_value(&tmp, value)) {
    diag_error(d, file, line, vcol, "invalid value '%s' for option '%s' of pass '%s': expected %s", value, key,
               pi->name, type_desc(v->type));
    return false;
  }
  if (!in_range(&pi->opts[k], &tmp, value, pi->name, file, line, vcol, d)) return false;
  *v = tmp;
  v->set = true;
  return true;
}

bool pass_set_option(PipelineEntry *e, const char *key, const char *value, const char *file, int line,
                     int col, Diag *d) {
  return set_option(e, key, value, file, line, col, col, d);
}

bool pass_check_entry(const PipelineEntry *e, Diag *d) { return !e->pass->check || e->pass->check(e, d); }

static bool is_name_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.'; }

/* Copies text[a,b) trimmed of surrounding blanks into buf (size n); returns the start offset used. */
static size_t copy_trim(const char *text, size_t a, size_t b, char *buf, size_t n) {
  while (a < b && isspace((unsigned char)text[a])) a++;
  while (b > a && isspace((unsigned char)text[b - 1])) b--;
  size_t len = b - a < n - 1 ? b - a : n - 1;
  memcpy(buf, text + a, len);
  buf[len] = 0;
  return a;
}

bool pass_parse_pipeline(Pipeline *p, const char *text, const char *file, int line, int col, Diag *d) {
  size_t len = strlen(text), i = 0;
  bool ok = true;
  /* An entirely blank pipeline is the empty pipeline (run no passes). */
  size_t s = 0;
  while (s < len && isspace((unsigned char)text[s])) s++;
  if (s == len) return true;

#define COL(off) (col + (int)(off))
  for (;;) {
    /* one element: blanks NAME blanks ['<' options '>'] blanks */
    while (i < len && isspace((unsigned char)text[i])) i++;
    size_t name_at = i;
    while (i < len && is_name_char(text[i])) i++;
    if (i == name_at) {
      if (i == len || text[i] == ',')
        diag_error(d, file, line, COL(i), "empty pipeline element: expected a pass name");
      else
        diag_error(d, file, line, COL(i), "expected a pass name, found '%c'", text[i]);
      return false;
    }
    char name[64];
    copy_trim(text, name_at, i, name, sizeof name);
    PipelineEntry *e = pass_pipeline_append(p, name, file, line, COL(name_at), d);
    if (!e) ok = false;
    while (i < len && isspace((unsigned char)text[i])) i++;
    bool opts_ok = true;
    if (i < len && text[i] == '<') {
      size_t open = i++;
      for (int nopt = 0;; nopt++) {
        /* one option: blanks KEY blanks ['=' VALUE] up to ';' or '>' */
        size_t a = i;
        while (i < len && text[i] != ';' && text[i] != '>') i++;
        if (i == len) {
          diag_error(d, file, line, COL(len), "expected '>' to close the options of '%s' opened at column %d",
                     name, COL(open));
          return false;
        }
        const char *eq = memchr(text + a, '=', i - a);
        size_t kend = eq ? (size_t)(eq - text) : i;
        char key[64], value[256];
        size_t kat = copy_trim(text, a, kend, key, sizeof key);
        if (!key[0] && !eq && nopt == 0 && text[i] == '>') {
          /* "name<>": no options */
        } else if (!key[0]) {
          diag_error(d, file, line, COL(kat), "empty option in the options of '%s'", name);
          opts_ok = false;
        } else if (e) {
          size_t vat = eq ? copy_trim(text, kend + 1, i, value, sizeof value) : 0;
          if (!set_option(e, key, eq ? value : NULL, file, line, COL(kat), COL(vat), d)) opts_ok = false;
        }
        if (text[i++] == '>') break;
      }
      while (i < len && isspace((unsigned char)text[i])) i++;
    }
    if (!opts_ok) ok = false;
    else if (e && !pass_check_entry(e, d)) ok = false;
    if (i == len) break;
    if (text[i] != ',') {
      diag_error(d, file, line, COL(i), "expected ',' or '<' after pass '%s', found '%c'", name, text[i]);
      return false;
    }
    i++;
  }
#undef COL
  return ok;
}

/* Appends printf text to buf[*at..n), truncating safely. */
static void put(char *buf, size_t n, size_t *at, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t n, size_t *at, const char *fmt, ...) {
  if (*at >= n) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(buf + *at, n - *at, fmt, ap);
  va_end(ap);
  if (k > 0) *at += (size_t)k;
  if (*at >= n) *at = n - 1;
}

char *pass_pipeline_str(const Pipeline *p, char *buf, size_t n) {
  size_t at = 0;
  IR_ASSERT(n > 0);
  buf[0] = 0;
  for (int k = 0; k < p->n; k++) {
    const PipelineEntry *e = &p->e[k];
    put(buf, n, &at, "%s%s", k ? "," : "", e->pass->name);
    int nset = 0;
    for (int i = 0; i < e->opts.n; i++) {
      const PassOptValue *v = &e->opts.v[i];
      if (!v->set) continue;
      put(buf, n, &at, "%s", nset++ ? ";" : "<");
      switch (v->type) {
      case POPT_INT: put(buf, n, &at, "%s=%" PRId64, v->key, v->i); break;
      case POPT_BOOL:
        if (v->i) put(buf, n, &at, "%s", v->key);
        else put(buf, n, &at, "%s=false", v->key);
        break;
      case POPT_FLOAT: {
        char num[40];
        for (int prec = 1; prec <= 17; prec++) {   /* shortest text that reads back exactly */
          snprintf(num, sizeof num, "%.*g", prec, v->f);
          if (strtod(num, NULL) == v->f) break;
        }
        put(buf, n, &at, "%s=%s", v->key, num);
        break;
      }
      case POPT_STR: put(buf, n, &at, "%s=%s", v->key, v->s); break;
      case POPT_SIZE: {
        static const char *const sfx[] = {"GiB", "MiB", "KiB"};
        static const int shift[] = {30, 20, 10};
        int u = 0;
        while (u < 3 && !(v->i != 0 && v->i % ((int64_t)1 << shift[u]) == 0)) u++;
        if (u < 3) put(buf, n, &at, "%s=%" PRId64 "%s", v->key, v->i >> shift[u], sfx[u]);
        else put(buf, n, &at, "%s=%" PRId64, v->key, v->i);
        break;
      }
      }
    }
    if (nset) put(buf, n, &at, ">");
  }
  return buf;
}

/* ---- running ---- */

/* True if name is in list, a comma-separated list of pass names ("fuse" or "fuse,dce"). */
static bool name_in_list(const char *list, const char *name) {
  if (!list) return false;
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *q = strchr(p, ',');
    size_t len = q ? (size_t)(q - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0) return true;
    if (!q) break;
    p = q + 1;
  }
  return false;
}

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void print_times(FILE *out, const Pipeline *p, const double *t, int nrun) {
  double total = 0;
  for (int k = 0; k < nrun; k++) total += t[k];
  fprintf(out, "; *** Pass execution times ***\n");
  fprintf(out, "; %12s  %6s  %s\n", "wall (ms)", "%", "pass");
  for (int k = 0; k < nrun; k++)
    fprintf(out, "; %12.3f  %6.1f  %s\n", t[k] * 1e3, total > 0 ? 100.0 * t[k] / total : 0.0,
            p->e[k].pass->name);
  fprintf(out, "; %12.3f  %6.1f  %s\n", total * 1e3, 100.0, "total");
}

/* Verifies m after entry e; on failure reports "IR invalid after pass 'NAME'" followed by the
 * verifier's own messages, and returns false. */
static bool verify_after(const Module *m, const PipelineEntry *e, Diag *d) {
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&text, &len);
  if (!mem) die("open_memstream failed");
  Diag scratch;
  diag_init(&scratch, mem);
  bool ok = ir_verify(m, &scratch);
  fclose(mem);
  if (!ok || scratch.nerrors) {
    diag_error(d, e->file, e->line, e->col, "IR invalid after pass '%s'", e->pass->name);
    if (d->out && text) fputs(text, d->out);
    d->nerrors += scratch.nerrors;
    ok = false;
  }
  diag_free(&scratch);
  free(text);
  return ok;
}

bool pass_pipeline_complete(Pipeline *p, const Module *m, Diag *d) {
  const TrainConfig *t = &m->train;
  if (!t->present || t->precision == TRAIN_PREC_FP32 || ir_module_attr(m, "precision")) return true;
  int at = -1;
  for (int i = 0; i < p->n; i++) {
    const char *n = p->e[i].pass->name;
    if (!strcmp(n, "precision")) return true;
    if (!strcmp(n, "autodiff") || !strcmp(n, "checkpoint") || !strcmp(n, "xent_fuse")) at = i;
  }
  if (at < 0) return true; /* the pipeline does not build @train: nothing to train in 16 bits */
  const char *text = t->precision == TRAIN_PREC_BF16 ? "precision<bf16>" : "precision<fp16>";
  if (!pass_parse_pipeline(p, text, m->file, t->line, t->col, d)) return false;
  PipelineEntry e = p->e[p->n - 1];
  memmove(&p->e[at + 2], &p->e[at + 1], sizeof *p->e * (size_t)(p->n - 2 - at));
  p->e[at + 1] = e;
  return true;
}

bool pass_run_pipeline(Module *m, const Pipeline *given, const PassRunConfig *cfg, Diag *d) {
  static const PassRunConfig none = {0};
  if (!cfg) cfg = &none;
  /* The pipeline as the module's facts complete it (the spec's train: precision). */
  Pipeline full = {given->n, given->n, NULL};
  if (given->n) {
    full.e = malloc(sizeof *full.e * (size_t)given->n);
    if (!full.e) die("out of memory");
    memcpy(full.e, given->e, sizeof *full.e * (size_t)given->n);
  }
  if (!pass_pipeline_complete(&full, m, d)) {
    pass_pipeline_free(&full);
    return false;
  }
  const Pipeline *p = &full;
  FILE *dump = cfg->dump ? cfg->dump : stderr;
  double *times = calloc((size_t)p->n + 1, sizeof *times);
  if (!times) die("out of memory");
  bool ok = true;
  int nrun = 0;
  for (int k = 0; k < p->n && ok; k++) {
    const PipelineEntry *e = &p->e[k];
    const char *name = e->pass->name;
    if (name_in_list(cfg->print_before, name)) {
      fprintf(dump, "; *** IR Dump Before %s ***\n", name);
      ir_print_module(dump, m);
    }
    int errs = d->nerrors;
    PassOptions opts = e->opts;
    opts.file = e->file;
    opts.line = e->line;
    opts.col = e->col;
    opts.train_follows = false;
    for (int j = k + 1; j < p->n; j++)
      opts.train_follows |= !strcmp(p->e[j].pass->name, "autodiff") || !strcmp(p->e[j].pass->name, "checkpoint");
    double t0 = now_sec();
    bool pass_ok = e->pass->run(m, &opts, d);
    times[k] = now_sec() - t0;
    nrun = k + 1;
    if (!pass_ok) {
      if (d->nerrors == errs) diag_error(d, e->file, e->line, e->col, "pass '%s' failed", name);
      ok = false;
      break;
    }
    if (cfg->verify_each && !verify_after(m, e, d)) {
      ok = false;
      break;
    }
    if (cfg->print_after_all || name_in_list(cfg->print_after, name)) {
      fprintf(dump, "; *** IR Dump After %s ***\n", name);
      ir_print_module(dump, m);
    }
    if (cfg->after_pass) cfg->after_pass(cfg->ctx, m, e);
  }
  if (cfg->print_times) print_times(dump, p, times, nrun);
  free(times);
  pass_pipeline_free(&full);
  return ok;
}
