/* weights.c: the driver's safetensors reader and writer (weights.h says what and why).
 *
 * The format: an 8-byte little-endian header length H, H bytes of JSON (an object: each tensor's
 * name maps to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, offsets into the data
 * section that follows; an optional "__metadata__" object of strings), then the data. The JSON
 * reader here takes exactly that subset and stops at the first problem with a message.
 */
#include "weights.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_MAX ((uint64_t)100 << 20) /* 100 MiB of JSON is far more than any model's header */

typedef struct Json {
  const char *p, *end;
  char err[256];
} Json;

static void ws(Json *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static bool fail(Json *j, const char *msg) {
  if (!j->err[0]) snprintf(j->err, sizeof j->err, "%s", msg);
  return false;
}

static bool punct(Json *j, char c) {
  ws(j);
  if (j->p < j->end && *j->p == c) {
    j->p++;
    return true;
  }
  char m[64];
  snprintf(m, sizeof m, "expected '%c' in the JSON header", c);
  return fail(j, m);
}

static bool peek(Json *j, char c) {
  ws(j);
  return j->p < j->end && *j->p == c;
}

/* A JSON string into a malloc'd, NUL-terminated copy (escapes decoded; \u to UTF-8). */
static char *string(Json *j) {
  if (!punct(j, '"')) return NULL;
  size_t cap = 16, n = 0;
  char *s = malloc(cap);
  if (!s) die("out of memory");
  while (j->p < j->end && *j->p != '"') {
    unsigned c = (unsigned char)*j->p++;
    if (c < 0x20) {
      free(s);
      return fail(j, "a control character in a JSON string"), NULL;
    }
    char buf[4];
    int k = 1;
    buf[0] = (char)c;
    if (c == '\\') {
      if (j->p >= j->end) break;
      char e = *j->p++;
      const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
      const char *q = e ? strchr(from, e) : NULL;
      if (q) {
        buf[0] = to[q - from];
      } else if (e == 'u' && j->end - j->p >= 4) {
        unsigned u = 0;
        for (int i = 0; i < 4; i++) {
          char h = *j->p++;
          u = u * 16 + (unsigned)(h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                  : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 99);
          if (u > 0xffff) {
            free(s);
            return fail(j, "a bad \\u escape in a JSON string"), NULL;
          }
        }
        if (u < 0x80) {
          buf[0] = (char)u;
        } else if (u < 0x800) {
          buf[0] = (char)(0xc0 | (u >> 6));
          buf[1] = (char)(0x80 | (u & 0x3f));
          k = 2;
        } else {
          buf[0] = (char)(0xe0 | (u >> 12));
          buf[1] = (char)(0x80 | ((u >> 6) & 0x3f));
          buf[2] = (char)(0x80 | (u & 0x3f));
          k = 3;
        }
      } else {
        free(s);
        return fail(j, "a bad escape in a JSON string"), NULL;
      }
    }
    if (n + (size_t)k + 1 > cap) {
      cap *= 2;
      s = realloc(s, cap);
      if (!s) die("out of memory");
    }
    memcpy(s + n, buf, (size_t)k);
    n += (size_t)k;
  }
  if (j->p >= j->end) {
    free(s);
    return fail(j, "an unterminated JSON string"), NULL;
  }
  j->p++;
  s[n] = 0;
  return s;
}

static bool json_uint(Json *j, uint64_t *v) {
  ws(j);
  if (j->p >= j->end || *j->p < '0' || *j->p > '9') return fail(j, "expected a whole number in the JSON header");
  uint64_t x = 0;
  while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
    if (x > (UINT64_MAX - 9) / 10) return fail(j, "a number too large in the JSON header");
    x = x * 10 + (uint64_t)(*j->p++ - '0');
  }
  *v = x;
  return true;
}

/* [n, n, ...] into v (at most cap); *n the count. */
static bool uints(Json *j, uint64_t *v, int cap, int *n, const char *what) {
  *n = 0;
  if (!punct(j, '[')) return false;
  if (peek(j, ']')) return punct(j, ']');
  do {
    if (*n >= cap) {
      char m[96];
      snprintf(m, sizeof m, "%s has more than %d entries", what, cap);
      return fail(j, m);
    }
    if (!json_uint(j, &v[(*n)++])) return false;
  } while (peek(j, ',') && punct(j, ','));
  return punct(j, ']');
}

/* The __metadata__ object: strings only; its text is kept as it is. */
static bool metadata(Json *j, char **out) {
  ws(j);
  const char *start = j->p;
  if (!punct(j, '{')) return false;
  if (!peek(j, '}')) do {
      char *k = string(j);
      if (!k || !punct(j, ':')) return free(k), false;
      free(k);
      char *v = string(j);
      if (!v) return fail(j, "a __metadata__ value is not a string");
      free(v);
    } while (peek(j, ',') && punct(j, ','));
  if (!punct(j, '}')) return false;
  size_t n = (size_t)(j->p - start);
  *out = malloc(n + 1);
  if (!*out) die("out of memory");
  memcpy(*out, start, n);
  (*out)[n] = 0;
  return true;
}

static bool tensor(Json *j, WTensor *t) {
  bool have[3] = {false, false, false};
  if (!punct(j, '{')) return false;
  if (!peek(j, '}')) do {
      char *k = string(j);
      if (!k || !punct(j, ':')) return free(k), false;
      int which = !strcmp(k, "dtype") ? 0 : !strcmp(k, "shape") ? 1 : !strcmp(k, "data_offsets") ? 2 : -1;
      free(k);
      if (which < 0) return fail(j, "a tensor entry has a key other than dtype, shape and data_offsets");
      if (have[which]) return fail(j, "a tensor entry repeats a key");
      have[which] = true;
      uint64_t v[WEIGHTS_MAX_RANK];
      int n = 0;
      if (which == 0) {
        char *s = string(j);
        if (!s) return false;
        bool ok = strlen(s) < sizeof t->dtype;
        if (ok) strcpy(t->dtype, s);
        free(s);
        if (!ok) return fail(j, "an unknown dtype");
      } else if (which == 1) {
        if (!uints(j, v, WEIGHTS_MAX_RANK, &n, "a shape")) return false;
        t->rank = n;
        for (int i = 0; i < n; i++) {
          if (v[i] > (uint64_t)IR_MAX_NUMEL) return fail(j, "a dimension too large");
          t->dim[i] = (int64_t)v[i];
        }
      } else {
        if (!uints(j, v, 2, &n, "data_offsets") || n != 2) return fail(j, "data_offsets must be [begin, end]");
        t->begin = v[0];
        t->end = v[1];
      }
    } while (peek(j, ',') && punct(j, ','));
  if (!punct(j, '}')) return false;
  if (!have[0] || !have[1] || !have[2]) return fail(j, "a tensor entry lacks dtype, shape or data_offsets");
  return true;
}

static size_t dtype_bytes(const char *dt) {
  static const struct { const char *n; size_t b; } k[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
      {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1},  {"BOOL", 1}};
  for (size_t i = 0; i < sizeof k / sizeof *k; i++)
    if (!strcmp(dt, k[i].n)) return k[i].b;
  return 0;
}

static int by_begin(const void *a, const void *b) {
  const WTensor *x = *(const WTensor *const *)a, *y = *(const WTensor *const *)b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

void weights_free(Weights *w) {
  for (int i = 0; i < w->n; i++) free(w->t[i].name);
  free(w->t);
  free(w->owned);
  free(w->meta);
  memset(w, 0, sizeof *w);
}

bool weights_read(const char *path, Weights *w, Diag *d) {
  memset(w, 0, sizeof *w);
  w->path = path;
  struct stat st;
  if (stat(path, &st) != 0) {
    diag_error(d, path, 0, 0, "cannot open weights file: %s", strerror(errno));
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    diag_error(d, path, 0, 0, "%s: --weights names a safetensors file", S_ISDIR(st.st_mode) ? "is a directory"
                                                                                            : "is not a regular file");
    return false;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    diag_error(d, path, 0, 0, "cannot open weights file: %s", strerror(errno));
    return false;
  }
  size_t size = (size_t)st.st_size;
  unsigned char *buf = malloc(size ? size : 1);
  if (!buf) die("out of memory");
  if (fread(buf, 1, size, f) != size) {
    const char *why = ferror(f) ? strerror(errno) : "it is shorter than it was";
    diag_error(d, path, 0, 0, "cannot read the weights file: %s", why);
    fclose(f);
    free(buf);
    return false;
  }
  fclose(f);
  if (!weights_parse(buf, size, path, w, d)) {
    free(buf);
    return false;
  }
  w->owned = buf;
  return true;
}

bool weights_parse(const unsigned char *buf, size_t size, const char *path, Weights *w, Diag *d) {
  memset(w, 0, sizeof *w);
  w->path = path;
  uint64_t hlen = 0;
  if (size < 8) {
    diag_error(d, path, 0, 0, "not a safetensors file: shorter than its 8-byte header length");
    return false;
  }
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
  if (hlen < 2 || hlen > HEADER_MAX || hlen > size - 8) {
    diag_error(d, path, 0, 0, "not a safetensors file: a header length of %llu bytes in a file of %llu",
               (unsigned long long)hlen, (unsigned long long)size);
    return false;
  }
  const char *h = (const char *)buf + 8;
  w->data = buf + 8 + hlen;
  w->data_len = size - 8 - hlen;
  Json j = {h, h + hlen, ""};
  int cap = 0;
  bool ok = punct(&j, '{');
  if (ok && !peek(&j, '}')) do {
      char *k = string(&j);
      ok = k && punct(&j, ':');
      if (ok && !strcmp(k, "__metadata__")) {
        ok = !w->meta ? metadata(&j, &w->meta) : fail(&j, "a second __metadata__");
        free(k);
        continue;
      }
      if (!ok) {
        free(k);
        break;
      }
      if (w->n == cap) {
        cap = cap ? cap * 2 : 64;
        w->t = realloc(w->t, sizeof *w->t * (size_t)cap);
        if (!w->t) die("out of memory");
      }
      WTensor *t = &w->t[w->n++];
      memset(t, 0, sizeof *t);
      t->name = k;
      ok = tensor(&j, t);
      if (!ok) {
        char m[sizeof j.err];
        memcpy(m, j.err, sizeof m);
        snprintf(j.err, sizeof j.err, "tensor '%.60s': %.180s", k, m);
      }
    } while (ok && peek(&j, ',') && punct(&j, ','));
  if (ok) ok = punct(&j, '}');
  if (ok) {
    ws(&j);
    if (j.p != j.end) ok = fail(&j, "text after the JSON header's object");
  }
  if (!ok) {
    diag_error(d, path, 0, 0, "bad safetensors header: %s", j.err);
    weights_free(w);
    return false;
  }
  /* every tensor: a known dtype, its size from the shape, inside the data section, no overlaps */
  WTensor **order = malloc(sizeof *order * (size_t)(w->n + 1));
  if (!order) die("out of memory");
  for (int i = 0; i < w->n && ok; i++) {
    WTensor *t = &w->t[i];
    order[i] = t;
    size_t eb = dtype_bytes(t->dtype);
    uint64_t numel = 1;
    for (int k = 0; k < t->rank && numel <= (uint64_t)IR_MAX_NUMEL; k++) /* no overflow: both <= 2^48 */
      numel = t->dim[k] && numel > (uint64_t)IR_MAX_NUMEL / (uint64_t)t->dim[k] ? (uint64_t)IR_MAX_NUMEL + 1
                                                                                  : numel * (uint64_t)t->dim[k];
    for (int k = 0; k < i && ok; k++) ok = strcmp(w->t[k].name, t->name) != 0;
    if (!ok)
      diag_error(d, path, 0, 0, "bad safetensors header: tensor '%s' appears twice", t->name);
    else if (!eb)
      ok = false, diag_error(d, path, 0, 0, "bad safetensors header: tensor '%s' has the unknown dtype '%s'", t->name,
                             t->dtype);
    else if (numel > (uint64_t)IR_MAX_NUMEL)
      ok = false, diag_error(d, path, 0, 0, "bad safetensors header: tensor '%s' has more than 2^48 elements",
                             t->name);
    else if (t->begin > t->end || t->end > w->data_len || t->end - t->begin != numel * eb)
      ok = false, diag_error(d, path, 0, 0, "bad safetensors header: tensor '%s' has data_offsets [%llu, %llu], but "
                             "its shape needs %llu bytes and the data section has %llu", t->name,
                             (unsigned long long)t->begin, (unsigned long long)t->end,
                             (unsigned long long)(numel * eb), (unsigned long long)w->data_len);
  }
  if (ok) {
    qsort(order, (size_t)w->n, sizeof *order, by_begin);
    for (int i = 1; i < w->n && ok; i++)
      if (order[i]->begin < order[i - 1]->end) {
        ok = false;
        diag_error(d, path, 0, 0, "bad safetensors header: tensors '%s' and '%s' overlap", order[i - 1]->name,
                   order[i]->name);
      }
  }
  free(order);
  if (!ok) weights_free(w);
  return ok;
}

static const WTensor *find(const Weights *w, const char *name) {
  for (int i = 0; i < w->n; i++)
    if (!strcmp(w->t[i].name, name)) return &w->t[i];
  return NULL;
}

bool weights_attach(Module *m, const Weights *w, Diag *d) {
  bool ok = true;
  char a[96], b[96];
  for (int i = 0; i < m->nparam; i++) {
    Param *p = m->params[i];
    const WTensor *t = find(w, p->name);
    bool same = t && t->rank == p->type.rank;
    for (int k = 0; same && k < t->rank; k++) same = t->dim[k] == p->type.dim[k];
    if (p->type.dtype != DT_F32 || p->fmt != PF_DENSE) {
      diag_error(d, w->path, 0, 0, "parameter '%s' is %s in the model: --weights reads f32 parameters only", p->name,
                 ir_type_str(&p->type, a, sizeof a));
      ok = false;
    } else if (!t) {
      diag_error(d, w->path, 0, 0, "has no tensor '%s' (the model's %s parameter)", p->name,
                 ir_type_str(&p->type, a, sizeof a));
      ok = false;
    } else if (strcmp(t->dtype, "F32")) {
      diag_error(d, w->path, 0, 0, "tensor '%s' is %s: the compiler reads F32 weights only", p->name, t->dtype);
      ok = false;
    } else if (!same) {
      Type tt = {DT_F32, t->rank > IR_MAX_RANK ? IR_MAX_RANK : t->rank, {0}};
      for (int k = 0; k < tt.rank; k++) tt.dim[k] = t->dim[k];
      diag_error(d, w->path, 0, 0, "tensor '%s' is %s, but the model's parameter is %s", p->name,
                 ir_type_str(&tt, b, sizeof b), ir_type_str(&p->type, a, sizeof a));
      ok = false;
    } else {
      p->data = ir_alloc(m, (size_t)(t->end - t->begin));
      memcpy(p->data, w->data + t->begin, (size_t)(t->end - t->begin));
    }
  }
  return ok;
}

static bool removed_name(const char *name, char *const *removed, int n) {
  static const char *const opt[] = {"opt.m.", "opt.v.", "opt.mom."};
  for (int i = 0; i < n; i++) {
    if (!strcmp(name, removed[i])) return true;
    for (int k = 0; k < 3; k++)
      if (!strncmp(name, opt[k], strlen(opt[k])) && !strcmp(name + strlen(opt[k]), removed[i])) return true;
  }
  return false;
}

/* Appends s to the growing buffer, JSON-escaped when quote. */
static void put(char **buf, size_t *n, size_t *cap, const char *s, bool quote) {
  size_t need = strlen(s) * 6 + 3;
  if (*n + need >= *cap) {
    while (*n + need >= *cap) *cap = *cap ? *cap * 2 : 4096;
    *buf = realloc(*buf, *cap);
    if (!*buf) die("out of memory");
  }
  if (quote) (*buf)[(*n)++] = '"';
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (quote && (c == '"' || c == '\\')) {
      (*buf)[(*n)++] = '\\';
      (*buf)[(*n)++] = (char)c;
    } else if (quote && c < 0x20) {
      *n += (size_t)sprintf(*buf + *n, "\\u%04x", c);
    } else {
      (*buf)[(*n)++] = (char)c;
    }
  }
  if (quote) (*buf)[(*n)++] = '"';
  (*buf)[*n] = 0;
}

typedef struct Out {
  const char *name;
  const void *bytes;
  uint64_t len;
  const char *dtype;
  int rank;
  const int64_t *dim;
} Out;

bool weights_write(const char *path, const Module *m, const Weights *in, char *const *removed, int nremoved,
                   Diag *d) {
  Out *o = malloc(sizeof *o * (size_t)(in->n + m->nparam + 1));
  if (!o) die("out of memory");
  int n = 0;
  for (int i = 0; i < in->n; i++) {
    const WTensor *t = &in->t[i];
    if (removed_name(t->name, removed, nremoved)) continue;
    o[n++] = (Out){t->name, in->data + t->begin, t->end - t->begin, t->dtype, t->rank, t->dim};
  }
  for (int i = 0; i < m->nparam; i++) {
    const Param *p = m->params[i];
    if (!p->data || find(in, p->name)) continue;
    o[n++] = (Out){p->name, p->data, (uint64_t)ir_type_numel(&p->type) * 4, "F32", p->type.rank, p->type.dim};
  }
  char *h = NULL, num[64];
  size_t hn = 0, hcap = 0;
  uint64_t off = 0;
  put(&h, &hn, &hcap, "{", false);
  if (in->meta) {
    put(&h, &hn, &hcap, "\"__metadata__\":", false);
    put(&h, &hn, &hcap, in->meta, false);
  }
  for (int i = 0; i < n; i++) {
    if (i || in->meta) put(&h, &hn, &hcap, ",", false);
    put(&h, &hn, &hcap, o[i].name, true);
    put(&h, &hn, &hcap, ":{\"dtype\":", false);
    put(&h, &hn, &hcap, o[i].dtype, true);
    put(&h, &hn, &hcap, ",\"shape\":[", false);
    for (int k = 0; k < o[i].rank; k++) {
      snprintf(num, sizeof num, "%s%lld", k ? "," : "", (long long)o[i].dim[k]);
      put(&h, &hn, &hcap, num, false);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
             (unsigned long long)(off + o[i].len));
    put(&h, &hn, &hcap, num, false);
    off += o[i].len;
  }
  put(&h, &hn, &hcap, "}", false);
  while (hn % 8) put(&h, &hn, &hcap, " ", false); /* the data 8-byte aligned */
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
  int fd = mkstemp(tmp);
  FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
  bool ok = f != NULL;
  if (f) fchmod(fd, 0644);
  if (!f) {
    if (fd >= 0) close(fd);
    diag_error(d, path, 0, 0, "cannot create a temporary file next to the output: %s", strerror(errno));
  } else {
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h, 1, hn, f) == hn;
    for (int i = 0; i < n && ok; i++) ok = fwrite(o[i].bytes, 1, o[i].len, f) == o[i].len;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (ok && rename(tmp, path) != 0) ok = false;
    if (!ok) {
      diag_error(d, path, 0, 0, "cannot write the weights: %s", strerror(errno));
      remove(tmp);
    }
  }
  free(h);
  free(o);
  return ok;
}
