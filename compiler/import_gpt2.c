/* import_gpt2.c: a Hugging Face GPT-2 checkpoint directory -> a modelc spec and weights
 * (import_gpt2.h says what; docs/cli.md, "modelc import", has the mapping).
 *
 * Steps, each complete before the next, so that a bad input writes nothing:
 *   1. config.json: a small JSON reader (any JSON; the top-level object's scalars kept with their
 *      line and column), then each key looked up in one table: used (sizes, activation, epsilon,
 *      tying), must-be-default (it would change the architecture: scale_attn_weights: false, ...),
 *      ignored (dropout probabilities, token ids, generation and task settings), or unknown
 *      (an error at its line:col naming it).
 *   2. model.safetensors (compiler/weights.c reads and validates it): the prefix "transformer." on
 *      every name or on none; each expected tensor present, F32, with the shape the config implies
 *      (Conv1D weights [in, out]); the causal-mask buffers attn.bias / attn.masked_bias skipped;
 *      a stored lm_head.weight equal to wte when tied; anything else an error naming the tensor.
 *   3. The spec text, parsed and lowered here (compiler/frontend) to take the parameter order
 *      and shapes from the module: each parameter's tensor is copied (norms, biases, embeddings)
 *      or transposed (Conv1D [in, out] -> nn.Linear [out, in]) in that order.
 *   4. OUT/model.safetensors (weights_write: temporary file, renamed), then OUT/model.yaml
 *      (likewise); if the second fails the first is removed.
 */
#include "import_gpt2.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../ir/ir.h"
#include "frontend/spec.h"
#include "weights.h"

/* ---- config.json: a JSON reader for GPT2Config's file -------------------------------------------- */

typedef enum { JV_NULL, JV_BOOL, JV_NUM, JV_STR, JV_OTHER } JKind; /* JV_OTHER: an array or object */

typedef struct CfgKey {
  char *key;        /* malloc'd */
  JKind kind;
  bool b;           /* JV_BOOL */
  double num;       /* JV_NUM */
  bool integral;    /* JV_NUM written without '.', 'e' or 'E' */
  char *str;        /* JV_STR, malloc'd */
  int line, col;    /* of the key */
} CfgKey;

typedef struct Cfg {
  const char *path;
  const char *text, *p, *end;
  CfgKey *k;
  int n, cap;
  char err[160];
  const char *err_at;
} Cfg;

static bool jfail(Cfg *c, const char *msg) {
  if (!c->err[0]) {
    snprintf(c->err, sizeof c->err, "%s", msg);
    c->err_at = c->p;
  }
  return false;
}

static void jws(Cfg *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static void line_col(const char *text, const char *at, int *line, int *col) {
  *line = 1, *col = 1;
  for (const char *q = text; q < at; q++) {
    if (*q == '\n') (*line)++, *col = 1;
    else (*col)++;
  }
}

/* A string into a malloc'd copy (out may be NULL to skip it); \u escapes above ASCII become '?'
 * (no key or value this reader uses has one). */
static bool jstring(Cfg *c, char **out) {
  jws(c);
  if (c->p >= c->end || *c->p != '"') return jfail(c, "expected a string");
  c->p++;
  size_t n = 0, cap = 16;
  char *s = malloc(cap);
  if (!s) die("out of memory");
  while (c->p < c->end && *c->p != '"') {
    char ch = *c->p++;
    if ((unsigned char)ch < 0x20) return free(s), jfail(c, "a control character in a string");
    if (ch == '\\') {
      if (c->p >= c->end) break;
      char e = *c->p++;
      const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t", *q = e ? strchr(from, e) : NULL;
      if (q) {
        ch = to[q - from];
      } else if (e == 'u' && c->end - c->p >= 4) {
        unsigned u = 0;
        for (int i = 0; i < 4; i++) {
          char h = *c->p++;
          int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
          if (v < 0) return free(s), jfail(c, "a bad \\u escape");
          u = u * 16 + (unsigned)v;
        }
        ch = u && u < 0x80 ? (char)u : '?';
      } else {
        return free(s), jfail(c, "a bad escape in a string");
      }
    }
    if (n + 2 > cap) {
      cap *= 2;
      if (!(s = realloc(s, cap))) die("out of memory");
    }
    s[n++] = ch;
  }
  if (c->p >= c->end) return free(s), jfail(c, "an unterminated string");
  c->p++;
  s[n] = 0;
  if (out) *out = s;
  else free(s);
  return true;
}

static bool jword(Cfg *c, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(c->end - c->p) >= n && !memcmp(c->p, w, n)) {
    c->p += n;
    return true;
  }
  return false;
}

/* A number by JSON's grammar. */
static bool jnumber(Cfg *c, double *v, bool *integral) {
  const char *s = c->p;
  *integral = true;
  if (c->p < c->end && *c->p == '-') c->p++;
  if (c->p >= c->end || *c->p < '0' || *c->p > '9') return jfail(c, "expected a value");
  while (c->p < c->end && ((*c->p >= '0' && *c->p <= '9') || strchr(".eE+-", *c->p))) {
    if (strchr(".eE", *c->p)) *integral = false;
    c->p++;
  }
  char buf[64];
  size_t n = (size_t)(c->p - s);
  if (n >= sizeof buf) return c->p = s, jfail(c, "a number too long");
  memcpy(buf, s, n);
  buf[n] = 0;
  char *e;
  *v = strtod(buf, &e);
  if (*e) return c->p = s, jfail(c, "a malformed number");
  return true;
}

/* Any value; depth bounds nesting. The top level's scalars are kept by the caller. */
static bool jvalue(Cfg *c, CfgKey *k, int depth) {
  jws(c);
  if (depth > 64) return jfail(c, "nesting deeper than 64");
  if (c->p >= c->end) return jfail(c, "expected a value");
  char ch = *c->p;
  if (ch == '{' || ch == '[') {
    char close = ch == '{' ? '}' : ']';
    k->kind = JV_OTHER;
    c->p++;
    jws(c);
    if (c->p < c->end && *c->p == close) return c->p++, true;
    for (;;) {
      CfgKey sub = {0};
      if (ch == '{') {
        if (!jstring(c, NULL)) return false;
        jws(c);
        if (c->p >= c->end || *c->p != ':') return jfail(c, "expected ':'");
        c->p++;
      }
      bool ok = jvalue(c, &sub, depth + 1);
      free(sub.str);
      if (!ok) return false;
      jws(c);
      if (c->p < c->end && *c->p == ',') {
        c->p++;
        continue;
      }
      if (c->p < c->end && *c->p == close) return c->p++, true;
      return jfail(c, ch == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
  }
  if (ch == '"') return k->kind = JV_STR, jstring(c, &k->str);
  if (jword(c, "true")) return k->kind = JV_BOOL, k->b = true, true;
  if (jword(c, "false")) return k->kind = JV_BOOL, k->b = false, true;
  if (jword(c, "null")) return k->kind = JV_NULL, true;
  k->kind = JV_NUM;
  return jnumber(c, &k->num, &k->integral);
}

static void cfg_free(Cfg *c) {
  for (int i = 0; i < c->n; i++) free(c->k[i].key), free(c->k[i].str);
  free(c->k);
}

/* Parses the top-level object of text into c->k. False (reported at the line and column) on bad JSON
 * or a repeated key. */
static bool cfg_parse(Cfg *c, Diag *d) {
  c->p = c->text;
  bool ok = true;
  jws(c);
  if (c->p >= c->end || *c->p != '{') ok = jfail(c, "expected a JSON object ('{')");
  else c->p++;
  jws(c);
  if (ok && c->p < c->end && *c->p == '}') c->p++;
  else while (ok) {
      jws(c);
      const char *at = c->p;
      char *key = NULL;
      ok = jstring(c, &key);
      if (!ok) break;
      jws(c);
      if (c->p >= c->end || *c->p != ':') {
        free(key);
        ok = jfail(c, "expected ':'");
        break;
      }
      c->p++;
      if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        if (!(c->k = realloc(c->k, sizeof *c->k * (size_t)c->cap))) die("out of memory");
      }
      CfgKey *k = &c->k[c->n++];
      memset(k, 0, sizeof *k);
      k->key = key;
      line_col(c->text, at, &k->line, &k->col);
      for (int i = 0; i < c->n - 1; i++)
        if (!strcmp(c->k[i].key, key)) {
          diag_error(d, c->path, k->line, k->col, "the key '%s' appears twice (first at line %d)", key, c->k[i].line);
          return false;
        }
      ok = jvalue(c, k, 1);
      if (!ok) break;
      jws(c);
      if (c->p < c->end && *c->p == ',') {
        c->p++;
        continue;
      }
      if (c->p < c->end && *c->p == '}') {
        c->p++;
        break;
      }
      ok = jfail(c, "expected ',' or '}'");
    }
  if (ok) {
    jws(c);
    if (c->p != c->end) ok = jfail(c, "text after the JSON object");
  }
  if (!ok) {
    int line, col;
    line_col(c->text, c->err_at ? c->err_at : c->p, &line, &col);
    diag_error(d, c->path, line, col, "bad JSON: %s", c->err);
  }
  return ok;
}

/* ---- the config's keys ------------------------------------------------------------------------ */

typedef enum {
  K_USED,      /* read below */
  K_DEFAULT,   /* changes the architecture unless it has its default (null: must be absent or null) */
  K_IGNORED,   /* no effect on the forward: dropout, token ids, generation settings, bookkeeping */
} KeyRole;

static const struct {
  const char *key;
  KeyRole role;
  const char *dflt; /* K_DEFAULT: the JSON text of the one accepted value */
} cfg_keys[] = {
    {"vocab_size", K_USED, NULL},
    {"n_positions", K_USED, NULL},
    {"n_ctx", K_USED, NULL},
    {"n_embd", K_USED, NULL},
    {"n_layer", K_USED, NULL},
    {"n_head", K_USED, NULL},
    {"n_inner", K_USED, NULL},
    {"activation_function", K_USED, NULL},
    {"layer_norm_epsilon", K_USED, NULL},
    {"tie_word_embeddings", K_USED, NULL},
    {"model_type", K_USED, NULL},
    {"scale_attn_weights", K_DEFAULT, "true"},
    {"scale_attn_by_inverse_layer_idx", K_DEFAULT, "false"},
    {"add_cross_attention", K_DEFAULT, "false"},
    {"is_encoder_decoder", K_DEFAULT, "false"},
    {"attn_pdrop", K_IGNORED, NULL},
    {"embd_pdrop", K_IGNORED, NULL},
    {"resid_pdrop", K_IGNORED, NULL},
    {"summary_type", K_IGNORED, NULL},
    {"summary_use_proj", K_IGNORED, NULL},
    {"summary_activation", K_IGNORED, NULL},
    {"summary_proj_to_labels", K_IGNORED, NULL},
    {"summary_first_dropout", K_IGNORED, NULL},
    {"reorder_and_upcast_attn", K_IGNORED, NULL},
    {"initializer_range", K_IGNORED, NULL},
    {"bos_token_id", K_IGNORED, NULL},
    {"eos_token_id", K_IGNORED, NULL},
    {"pad_token_id", K_IGNORED, NULL},
    {"task_specific_params", K_IGNORED, NULL},
    {"architectures", K_IGNORED, NULL},
    {"_name_or_path", K_IGNORED, NULL},
    {"torch_dtype", K_IGNORED, NULL},
    {"transformers_version", K_IGNORED, NULL},
    {"use_cache", K_IGNORED, NULL},
    {"id2label", K_IGNORED, NULL},
    {"label2id", K_IGNORED, NULL},
    {"output_attentions", K_IGNORED, NULL},
    {"output_hidden_states", K_IGNORED, NULL},
    {"return_dict", K_IGNORED, NULL},
    {"gradient_checkpointing", K_IGNORED, NULL},
};
#define NCFG_KEYS ((int)(sizeof cfg_keys / sizeof *cfg_keys))

/* HF's activation_function names -> the spec's mlp activation. gelu_new, gelu_fast and
 * gelu_pytorch_tanh are all 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))); gelu is the exact erf. */
static const struct { const char *hf, *ours; } activations[] = {
    {"gelu_new", "gelu_tanh"}, {"gelu_pytorch_tanh", "gelu_tanh"}, {"gelu_fast", "gelu_tanh"},
    {"gelu", "gelu"},          {"relu", "relu"},
};

typedef struct Gpt2 {
  int64_t vocab, positions, dim, layers, heads, hidden;
  double eps;
  const char *act;   /* ours */
  const char *act_hf;
  bool tied;
} Gpt2;

static const CfgKey *cfg_get(const Cfg *c, const char *key) {
  for (int i = 0; i < c->n; i++)
    if (!strcmp(c->k[i].key, key)) return &c->k[i];
  return NULL;
}

/* An integer key in [lo, hi]; *v keeps its value when the key is absent (and !required). */
static bool cfg_int(const Cfg *c, const char *key, int64_t lo, int64_t hi, bool required, int64_t *v, Diag *d) {
  const CfgKey *k = cfg_get(c, key);
  if (!k) {
    if (required) diag_error(d, c->path, 0, 0, "no '%s': modelc import needs it", key);
    return !required;
  }
  if (k->kind != JV_NUM || !k->integral || !(k->num >= (double)lo && k->num <= (double)hi)) {
    diag_error(d, c->path, k->line, k->col, "'%s' must be a whole number from %lld to %lld", key, (long long)lo,
               (long long)hi);
    return false;
  }
  *v = (int64_t)k->num;
  return true;
}

static bool read_config(Cfg *c, Gpt2 *g, Diag *d) {
  bool ok = true;
  /* every key known */
  for (int i = 0; i < c->n; i++) {
    const CfgKey *k = &c->k[i];
    int r = -1;
    for (int j = 0; j < NCFG_KEYS && r < 0; j++)
      if (!strcmp(cfg_keys[j].key, k->key)) r = j;
    if (r < 0) {
      const char *names[NCFG_KEYS];
      for (int j = 0; j < NCFG_KEYS; j++) names[j] = cfg_keys[j].key;
      const char *s = diag_suggest(k->key, names, NCFG_KEYS);
      diag_error(d, c->path, k->line, k->col,
                 "unknown config key '%s': modelc import does not know whether it changes the architecture%s%s%s",
                 k->key, s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
      ok = false;
    } else if (cfg_keys[r].role == K_DEFAULT) {
      bool want = !strcmp(cfg_keys[r].dflt, "true");
      if (k->kind != JV_BOOL || k->b != want) {
        diag_error(d, c->path, k->line, k->col, "'%s' other than %s changes the architecture: not supported by "
                   "modelc import", k->key, cfg_keys[r].dflt);
        ok = false;
      }
    }
  }
  const int64_t big = INT32_MAX;
  g->vocab = g->positions = g->dim = g->layers = g->heads = 0;
  ok &= cfg_int(c, "vocab_size", 1, big, true, &g->vocab, d);
  ok &= cfg_int(c, "n_embd", 1, big, true, &g->dim, d);
  ok &= cfg_int(c, "n_layer", 1, 4096, true, &g->layers, d);
  ok &= cfg_int(c, "n_head", 1, big, true, &g->heads, d);
  /* n_positions (n_ctx in older configs; both must agree) */
  int64_t np = 0, nc = 0;
  bool hp = cfg_get(c, "n_positions"), hc = cfg_get(c, "n_ctx");
  ok &= cfg_int(c, "n_positions", 1, big, false, &np, d) && cfg_int(c, "n_ctx", 1, big, false, &nc, d);
  if (!hp && !hc) {
    diag_error(d, c->path, 0, 0, "no 'n_positions' (or 'n_ctx'): modelc import needs the context length");
    ok = false;
  } else if (hp && hc && np && nc && np != nc) {
    const CfgKey *k = cfg_get(c, "n_ctx");
    diag_error(d, c->path, k->line, k->col, "'n_ctx' (%lld) differs from 'n_positions' (%lld)", (long long)nc,
               (long long)np);
    ok = false;
  }
  g->positions = hp ? np : nc;
  if (ok && g->dim % g->heads) {
    const CfgKey *k = cfg_get(c, "n_head");
    diag_error(d, c->path, k->line, k->col, "'n_head' (%lld) must divide 'n_embd' (%lld)", (long long)g->heads,
               (long long)g->dim);
    ok = false;
  }
  /* n_inner: null or absent means 4 n_embd */
  g->hidden = 4 * g->dim;
  const CfgKey *k = cfg_get(c, "n_inner");
  if (k && k->kind != JV_NULL) ok &= cfg_int(c, "n_inner", 1, big, false, &g->hidden, d);
  g->eps = 1e-5;
  if ((k = cfg_get(c, "layer_norm_epsilon"))) {
    if (k->kind != JV_NUM || !(k->num > 0 && k->num < 1)) {
      diag_error(d, c->path, k->line, k->col, "'layer_norm_epsilon' must be a number in (0, 1)");
      ok = false;
    } else {
      g->eps = k->num;
    }
  }
  g->act = "gelu_tanh", g->act_hf = "gelu_new";
  if ((k = cfg_get(c, "activation_function"))) {
    const char *a = NULL;
    for (size_t i = 0; k->kind == JV_STR && i < sizeof activations / sizeof *activations; i++)
      if (!strcmp(k->str, activations[i].hf)) a = activations[i].ours, g->act_hf = activations[i].hf;
    if (!a) {
      diag_error(d, c->path, k->line, k->col, "'activation_function' %s%s%s is not supported (gelu_new, "
                 "gelu_pytorch_tanh, gelu_fast, gelu or relu)", k->kind == JV_STR ? "'" : "",
                 k->kind == JV_STR ? k->str : "(not a string)", k->kind == JV_STR ? "'" : "");
      ok = false;
    } else {
      g->act = a;
    }
  }
  g->tied = true;
  if ((k = cfg_get(c, "tie_word_embeddings"))) {
    if (k->kind != JV_BOOL) {
      diag_error(d, c->path, k->line, k->col, "'tie_word_embeddings' must be true or false");
      ok = false;
    } else {
      g->tied = k->b;
    }
  }
  if ((k = cfg_get(c, "model_type")) && (k->kind != JV_STR || strcmp(k->str, "gpt2"))) {
    diag_error(d, c->path, k->line, k->col, "'model_type' is %s%s%s: modelc import reads GPT-2 ('gpt2') "
               "directories", k->kind == JV_STR ? "'" : "", k->kind == JV_STR ? k->str : "not a string",
               k->kind == JV_STR ? "'" : "");
    ok = false;
  }
  return ok;
}

/* ---- the checkpoint's tensors ------------------------------------------------------------------ */

typedef struct Want {
  char ours[128];      /* our parameter name (= HF's without the prefix) */
  int rank;
  int64_t dim[2];      /* the shape in the checkpoint ([in, out] for a Conv1D weight) */
  bool conv1d;         /* transposed into ours */
  const WTensor *t;    /* found */
} Want;

static void want(Want *w, int *n, const char *name, int rank, int64_t d0, int64_t d1, bool conv1d) {
  Want *x = &w[(*n)++];
  memset(x, 0, sizeof *x);
  snprintf(x->ours, sizeof x->ours, "%s", name);
  x->rank = rank, x->dim[0] = d0, x->dim[1] = d1, x->conv1d = conv1d;
}

/* The tensors a GPT-2 of g's sizes has, in HF's layout (lm_head.weight added when untied). */
static Want *wanted(const Gpt2 *g, int *n) {
  Want *w = malloc(sizeof *w * (size_t)(12 * g->layers + 5));
  if (!w) die("out of memory");
  int64_t C = g->dim, Hd = g->hidden;
  *n = 0;
  want(w, n, "wte.weight", 2, g->vocab, C, false);
  want(w, n, "wpe.weight", 2, g->positions, C, false);
  char b[128];
#define W(suffix, rank, d0, d1, conv) (snprintf(b, sizeof b, "h.%d.%s", i, suffix), want(w, n, b, rank, d0, d1, conv))
  for (int i = 0; i < (int)g->layers; i++) {
    W("ln_1.weight", 1, C, 0, false);
    W("ln_1.bias", 1, C, 0, false);
    W("attn.c_attn.weight", 2, C, 3 * C, true);
    W("attn.c_attn.bias", 1, 3 * C, 0, false);
    W("attn.c_proj.weight", 2, C, C, true);
    W("attn.c_proj.bias", 1, C, 0, false);
    W("ln_2.weight", 1, C, 0, false);
    W("ln_2.bias", 1, C, 0, false);
    W("mlp.c_fc.weight", 2, C, Hd, true);
    W("mlp.c_fc.bias", 1, Hd, 0, false);
    W("mlp.c_proj.weight", 2, Hd, C, true);
    W("mlp.c_proj.bias", 1, C, 0, false);
  }
#undef W
  want(w, n, "ln_f.weight", 1, C, 0, false);
  want(w, n, "ln_f.bias", 1, C, 0, false);
  if (!g->tied) want(w, n, "lm_head.weight", 2, g->vocab, C, false);
  return w;
}

static void shape_str(char *buf, size_t cap, int rank, const int64_t *dim) {
  size_t n = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < rank && n < cap; i++) n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)dim[i]);
  if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* h.N.attn.bias / h.N.attn.masked_bias (after the prefix): the causal mask buffers. */
static bool mask_buffer(const char *s) {
  if (strncmp(s, "h.", 2)) return false;
  s += 2;
  if (*s < '0' || *s > '9') return false;
  while (*s >= '0' && *s <= '9') s++;
  return !strcmp(s, ".attn.bias") || !strcmp(s, ".attn.masked_bias");
}

static bool match_tensors(const Weights *w, const Gpt2 *g, const char *cfg_path, Want *want, int nwant, Diag *d) {
  /* the prefix: on every name but lm_head.weight (GPT2LMHeadModel) or on none (GPT2Model) */
  const char *prefix = "transformer.";
  size_t pl = strlen(prefix);
  bool pre = false;
  for (int i = 0; i < w->n && !pre; i++) pre = !strncmp(w->t[i].name, prefix, pl);
  bool ok = true;
  const WTensor *lm = NULL;
  char *used = calloc((size_t)w->n + 1, 1);
  if (!used) die("out of memory");
  for (int i = 0; i < w->n; i++) {
    const char *nm = w->t[i].name;
    if (!strcmp(nm, "lm_head.weight")) {
      lm = &w->t[i];
      used[i] = 1;
      continue;
    }
    if (pre && strncmp(nm, prefix, pl)) continue; /* reported below as unexpected */
    const char *s = pre ? nm + pl : nm;
    if (mask_buffer(s)) {
      used[i] = 1;
      continue;
    }
    for (int k = 0; k < nwant; k++)
      if (!strcmp(want[k].ours, s) && strcmp(s, "lm_head.weight")) want[k].t = &w->t[i], used[i] = 1;
  }
  for (int i = 0; i < w->n; i++)
    if (!used[i]) {
      diag_error(d, w->path, 0, 0, "unexpected tensor '%s': not part of a GPT-2 language model of %s%s", w->t[i].name,
                 cfg_path, pre && strncmp(w->t[i].name, prefix, pl) ? " (the other tensors have the 'transformer.' prefix)" : "");
      ok = false;
    }
  free(used);
  char a[96], b[96];
  for (int k = 0; k < nwant; k++) {
    Want *x = &want[k];
    if (!strcmp(x->ours, "lm_head.weight")) x->t = lm;
    const char *p = !strcmp(x->ours, "lm_head.weight") || !pre ? "" : prefix;
    if (!x->t) {
      diag_error(d, w->path, 0, 0, "missing tensor '%s%s' (%s)", p, x->ours,
                 !strcmp(x->ours, "lm_head.weight") ? "tie_word_embeddings is false" : "every GPT-2 has it");
      ok = false;
      continue;
    }
    shape_str(a, sizeof a, x->rank, x->dim);
    shape_str(b, sizeof b, x->t->rank, x->t->dim);
    bool same = x->t->rank == x->rank;
    for (int i = 0; same && i < x->rank; i++) same = x->t->dim[i] == x->dim[i];
    if (strcmp(x->t->dtype, "F32")) {
      diag_error(d, w->path, 0, 0, "tensor '%s' is %s: modelc import reads F32 checkpoints only", x->t->name,
                 x->t->dtype);
      ok = false;
    } else if (!same) {
      diag_error(d, w->path, 0, 0, "tensor '%s' is %s, but %s makes it %s%s", x->t->name, b, cfg_path, a,
                 x->conv1d ? " (a Conv1D weight: [in, out])" : "");
      ok = false;
    }
  }
  /* tied: a stored lm_head.weight must be wte itself */
  if (g->tied && lm && ok) {
    const WTensor *wte = want[0].t;
    bool same = !strcmp(lm->dtype, "F32") && lm->rank == 2 && lm->dim[0] == g->vocab && lm->dim[1] == g->dim &&
                !memcmp(w->data + lm->begin, w->data + wte->begin, (size_t)(wte->end - wte->begin));
    if (!same) {
      diag_error(d, w->path, 0, 0, "tensor 'lm_head.weight' differs from '%s' while %s ties them "
                 "(tie_word_embeddings true or absent)", wte->name, cfg_path);
      ok = false;
    }
  }
  return ok;
}

/* ---- the spec ---------------------------------------------------------------------------------- */

static char *spec_text(const Gpt2 *g, const char *dir) {
  char safe[512];
  size_t n = 0;
  for (const char *s = dir; *s && n + 1 < sizeof safe; s++) safe[n++] = (unsigned char)*s < 0x20 ? '?' : *s;
  safe[n] = 0;
  char *t = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&t, &len);
  if (!f) die("out of memory");
  fprintf(f,
          "# Imported by `modelc import` from the Hugging Face GPT-2 checkpoint %s\n"
          "# (config.json: n_embd %lld, n_layer %lld, n_head %lld, n_inner %lld, n_positions %lld, vocab_size %lld,\n"
          "# activation_function %s, layer_norm_epsilon %.9g). model.safetensors holds the weights under these\n"
          "# names (docs/spec.md), HF's names without 'transformer.'; its Conv1D weights [in, out] are stored\n"
          "# transposed, [out, in]. No dropout: add dropout layers to train with HF's *_pdrop.\n",
          safe, (long long)g->dim, (long long)g->layers, (long long)g->heads, (long long)g->hidden,
          (long long)g->positions, (long long)g->vocab, g->act_hf, g->eps);
  fprintf(f,
          "model:\n  name: gpt2\n  vocab: %lld\n  context: %lld\n  batch: 1\n  dim: %lld\n"
          "layers:\n"
          "  - embedding: {}                      # wte.weight [%lld, %lld]\n"
          "  - positions: {kind: learned}         # wpe.weight [%lld, %lld]\n"
          "  - repeat: %lld\n    name: h\n    block:\n"
          "      - residual:\n          - layernorm: {eps: %.9g}\n          - attention: {heads: %lld, causal: true}\n"
          "      - residual:\n          - layernorm: {eps: %.9g}\n          - mlp: {hidden: %lld, activation: %s}\n"
          "  - layernorm: {name: ln_f, eps: %.9g}\n"
          "  - lm_head: {tied: %s}\n"
          "passes:\n  - constfold\n  - cse\n  - fuse\n  - dce\n  - memplan\n",
          (long long)g->vocab, (long long)g->positions, (long long)g->dim, (long long)g->vocab, (long long)g->dim,
          (long long)g->positions, (long long)g->dim, (long long)g->layers, g->eps, (long long)g->heads, g->eps,
          (long long)g->hidden, g->act, g->eps, g->tied ? "true" : "false");
  if (fclose(f) != 0) die("out of memory");
  return t;
}

/* ---- writing ----------------------------------------------------------------------------------- */

static bool write_text(const char *path, const char *text, Diag *d) {
  char tmp[4096 + 16];
  snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
  int fd = mkstemp(tmp);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f) {
    if (fd >= 0) close(fd), remove(tmp);
    diag_error(d, path, 0, 0, "cannot create a temporary file next to it: %s", strerror(errno));
    return false;
  }
  fchmod(fd, 0644);
  size_t n = strlen(text);
  bool ok = fwrite(text, 1, n, f) == n;
  ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
  ok &= fclose(f) == 0;
  if (ok && rename(tmp, path) != 0) ok = false;
  if (!ok) {
    diag_error(d, path, 0, 0, "cannot write: %s", strerror(errno));
    remove(tmp);
  }
  return ok;
}

static float ld(const unsigned char *p) {
  float v;
  memcpy(&v, p, 4);
  return v;
}

int import_gpt2(const char *dir, const char *out_dir, Diag *d) {
  char cpath[4096], wpath[4096], ypath[4096], opath[4096];
  if (strlen(dir) > 4000 || strlen(out_dir) > 4000) {
    diag_error(d, NULL, 0, 0, "modelc import: a path longer than 4000 bytes");
    return 1;
  }
  snprintf(cpath, sizeof cpath, "%s/config.json", dir);
  snprintf(wpath, sizeof wpath, "%s/model.safetensors", dir);
  snprintf(ypath, sizeof ypath, "%s/model.yaml", out_dir);
  snprintf(opath, sizeof opath, "%s/model.safetensors", out_dir);
  /* 1. the config */
  size_t len = 0;
  char *text = fe_read_file(cpath, "config", (size_t)16 << 20, (size_t)16 << 20, &len, d);
  if (!text) return 1;
  diag_add_source(d, cpath, text, len);
  Cfg c = {.path = cpath, .text = text, .end = text + len};
  Gpt2 g;
  bool ok = cfg_parse(&c, d) && read_config(&c, &g, d);
  cfg_free(&c);
  free(text);
  if (!ok) return 1;
  /* 2. the tensors */
  struct stat st;
  if (stat(wpath, &st) != 0) {
    char ix[4096];
    snprintf(ix, sizeof ix, "%s/model.safetensors.index.json", dir);
    diag_error(d, wpath, 0, 0, "cannot open: %s%s", strerror(errno),
               access(ix, F_OK) == 0 ? " (a sharded checkpoint, model.safetensors.index.json, is not supported: "
                                       "merge the shards into one file)" : "");
    return 1;
  }
  Weights w;
  if (!weights_read(wpath, &w, d)) return 1;
  int nwant = 0;
  Want *want = wanted(&g, &nwant);
  ok = match_tensors(&w, &g, cpath, want, nwant, d);
  /* 3. the spec, lowered: its parameters are the output's tensors, in its order */
  char *spec = ok ? spec_text(&g, dir) : NULL;
  Module *m = NULL;
  Spec *s = NULL;
  unsigned char *data = NULL;
  WTensor *ot = NULL;
  if (ok) {
    s = fe_parse_spec_text(ypath, spec, strlen(spec), d);
    m = s ? fe_lower(s, d) : NULL;
    if (!m) { /* sizes the frontend refuses (its limits, docs/spec.md), reported above */
      diag_error(d, cpath, 0, 0, "the spec for this configuration does not check (above): nothing written");
      ok = false;
    }
  }
  if (ok) {
    if (m->nparam != nwant) die("the imported spec has %d parameters, the checkpoint %d", m->nparam, nwant);
    uint64_t total = 0;
    for (int i = 0; i < m->nparam; i++) total += (uint64_t)ir_type_numel(&m->params[i]->type) * 4;
    data = malloc(total ? total : 1);
    ot = calloc((size_t)m->nparam, sizeof *ot);
    if (!data || !ot) die("out of memory");
    uint64_t off = 0;
    for (int i = 0; i < m->nparam; i++) {
      const Param *p = m->params[i];
      const Want *x = NULL;
      for (int k = 0; k < nwant && !x; k++)
        if (!strcmp(want[k].ours, p->name)) x = &want[k];
      if (!x) die("the imported spec's parameter '%s' has no tensor", p->name);
      int64_t r0 = x->conv1d ? x->dim[1] : x->dim[0], r1 = x->rank == 2 ? (x->conv1d ? x->dim[0] : x->dim[1]) : 0;
      if (p->type.rank != x->rank || p->type.dim[0] != r0 || (x->rank == 2 && p->type.dim[1] != r1))
        die("the imported spec's parameter '%s' has another shape than its tensor", p->name);
      WTensor *t = &ot[i];
      t->name = (char *)p->name;
      strcpy(t->dtype, "F32");
      t->rank = p->type.rank;
      for (int k = 0; k < t->rank; k++) t->dim[k] = p->type.dim[k];
      t->begin = off;
      t->end = off + (x->t->end - x->t->begin);
      const unsigned char *src = w.data + x->t->begin;
      float *dst = (float *)(data + off);
      if (x->conv1d) { /* [in, out] -> [out, in] */
        int64_t in = x->dim[0], out = x->dim[1];
        for (int64_t o = 0; o < out; o++)
          for (int64_t k = 0; k < in; k++) dst[o * in + k] = ld(src + 4 * (k * out + o));
      } else {
        memcpy(dst, src, (size_t)(t->end - t->begin));
      }
      off = t->end;
    }
    /* 4. the files */
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
      diag_error(d, out_dir, 0, 0, "cannot create the output directory: %s", strerror(errno));
      ok = false;
    } else if (stat(out_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
      diag_error(d, out_dir, 0, 0, "-o names a directory, and this is not one");
      ok = false;
    }
    char meta[] = "{\"format\":\"pt\"}";
    Weights out = {.path = wpath, .n = m->nparam, .t = ot, .data = data, .data_len = off, .meta = meta};
    Module none;
    memset(&none, 0, sizeof none); /* no parameters to append: every tensor is in out */
    if (ok) ok = weights_write(opath, &none, &out, NULL, 0, d);
    if (ok && !write_text(ypath, spec, d)) {
      remove(opath);
      ok = false;
    }
  }
  if (m) ir_module_free(m);
  if (s) fe_spec_free(s);
  free(ot);
  free(data);
  free(spec);
  free(want);
  weights_free(&w);
  return ok ? 0 : 1;
}
