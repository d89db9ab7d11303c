/* safetensors.c: reader (mmap) and writer for the safetensors weight format.
 *
 * Format: an 8-byte little-endian header length N, N bytes of a JSON object (possibly padded with
 * trailing spaces), then the data section. The object maps tensor names to
 * {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (offsets relative to the data
 * section) plus an optional "__metadata__" object of string values.
 *
 * The file is treated as hostile: a small strict JSON parser of our own (objects, arrays, strings
 * with escapes, non-negative integers; no floats, no trailing commas, nothing after the object
 * but whitespace) and then every number is checked before use: header length within the file and
 * under 100 MB, known dtypes, at most RT_MAX_DIMS dims, shape product x dtype size == byte length
 * (with overflow checks), offsets within the data section, no duplicate names, no overlaps, no
 * gaps and no trailing bytes (the reference implementation's rules). Every error names the file
 * and, where there is one, the tensor. Tensors whose bytes are misaligned for their dtype (files
 * whose header is not padded, or packed after odd-sized tensors) are served from one allocation in
 * which every tensor has a 64-byte aligned slot. */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u << 20)

struct RtSafetensors {
  char *path; /* for messages */
  void *map;  /* mmap of the whole file, or NULL for rt_st_open_buffer */
  size_t map_size;
  void *copy;        /* aligned copy of the data section, when some tensor was misaligned */
  RtTensor *tensors; /* header order */
  int n;
  int *by_name;      /* indices sorted by name, for binary search */
  char *strings;     /* decoded names and metadata */
  const char **meta; /* n_meta key/value pairs */
  int n_meta;
};

/* ---- header parsing ------------------------------------------------------------------------ */

typedef struct Entry {
  uint64_t begin, end;
} Entry;

static int parse_tensor(RtJs *j, const char *name, RtTensor *t, Entry *e) {
  if (rt_js_expect(j, '{'))
    return -1;
  int first = 1, r, seen_dtype = 0, seen_shape = 0, seen_off = 0;
  const char *key;
  while ((r = rt_js_next_key(j, &first, &key)) == 1) {
    if (strcmp(key, "dtype") == 0) {
      const char *dt;
      if (seen_dtype++)
        return rt_js_fail(j, "tensor '%s': duplicate key 'dtype'", name);
      if (rt_js_peek(j) != '"')
        return rt_js_fail(j, "tensor '%s': dtype must be a string", name);
      if (rt_js_string(j, &dt))
        return -1;
      t->dtype = rt_dtype_from_name(dt);
      if (t->dtype == RT_DT_INVALID)
        return rt_fail(j->err, "%s: tensor '%s': unknown dtype '%s'", j->file, name, dt);
    } else if (strcmp(key, "shape") == 0) {
      uint64_t dims[RT_MAX_DIMS];
      if (seen_shape++)
        return rt_js_fail(j, "tensor '%s': duplicate key 'shape'", name);
      if (rt_js_uint_array(j, dims, RT_MAX_DIMS, &t->ndim, "shape"))
        return -1;
      for (int i = 0; i < t->ndim; i++)
        t->shape[i] = (int64_t)dims[i];
    } else if (strcmp(key, "data_offsets") == 0) {
      uint64_t off[2];
      int n;
      if (seen_off++)
        return rt_js_fail(j, "tensor '%s': duplicate key 'data_offsets'", name);
      if (rt_js_uint_array(j, off, 2, &n, "data_offsets"))
        return -1;
      if (n != 2)
        return rt_js_fail(j, "tensor '%s': data_offsets must have 2 elements", name);
      e->begin = off[0];
      e->end = off[1];
    } else {
      return rt_js_fail(j, "tensor '%s': unknown key '%s'", name, key);
    }
  }
  if (r < 0)
    return -1;
  if (!seen_dtype || !seen_shape || !seen_off)
    return rt_fail(j->err, "%s: tensor '%s': missing '%s'", j->file, name,
                   !seen_dtype   ? "dtype"
                   : !seen_shape ? "shape"
                                 : "data_offsets");
  return 0;
}

static void fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, cap - k, "[");
  for (int i = 0; i < ndim && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, "%s%" PRId64, i ? "," : "", shape[i]);
  if (k < cap)
    snprintf(buf + k, cap - k, "]");
}

/* qsort keys carrying their own data, so sorting needs no global context. */
typedef struct NameKey {
  const char *name;
  int idx;
} NameKey;
static int cmp_name(const void *a, const void *b) {
  return strcmp(((const NameKey *)a)->name, ((const NameKey *)b)->name);
}

typedef struct OffKey {
  uint64_t begin, end;
  int idx;
} OffKey;
static int cmp_offset(const void *a, const void *b) {
  const OffKey *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end)
    return x->end < y->end ? -1 : 1;
  return 0;
}

/* Parses and validates; fills st (except path/map). data/size: whole image. */
static int st_parse(RtSafetensors *st, const unsigned char *data, size_t size, RtError *err) {
  const char *file = st->path;
  if (size < 8)
    return rt_fail(err, "%s: file is %zu bytes, too short for the 8-byte header length", file, size);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | data[i];
  if (hlen > size - 8)
    return rt_fail(err, "%s: header length %" PRIu64 " exceeds the file size (%zu bytes)", file, hlen, size);
  if (hlen > ST_MAX_HEADER)
    return rt_fail(err, "%s: header length %" PRIu64 " exceeds the 100 MB limit", file, hlen);
  if (hlen < 2 || data[8] != '{')
    return rt_fail(err, "%s: header does not start with '{'", file);
  const unsigned char *dsec = data + 8 + hlen;
  size_t dlen = size - 8 - (size_t)hlen;

  st->strings = malloc((size_t)hlen + 1);
  if (!st->strings)
    return rt_fail(err, "%s: out of memory", file);
  const char *hdr = (const char *)data + 8;
  RtJs j = {hdr, hdr, hdr + hlen, file, err, st->strings, 0, NULL};
  Entry *ents = NULL;
  int cap = 0, meta_cap = 0, seen_meta = 0, first = 1, r, rc = -1;
  const char *key;
  if (rt_js_expect(&j, '{'))
    goto out;
  while ((r = rt_js_next_key(&j, &first, &key)) == 1) {
    if (strcmp(key, "__metadata__") == 0) {
      if (seen_meta++) {
        rt_js_fail(&j, "duplicate '__metadata__'");
        goto out;
      }
      if (rt_js_expect(&j, '{'))
        goto out;
      int mfirst = 1, mr;
      const char *mkey, *mval;
      while ((mr = rt_js_next_key(&j, &mfirst, &mkey)) == 1) {
        if (rt_js_peek(&j) != '"') {
          rt_js_fail(&j, "__metadata__ value of '%s' must be a string", mkey);
          goto out;
        }
        if (rt_js_string(&j, &mval))
          goto out;
        if (st->n_meta == meta_cap) {
          meta_cap = meta_cap ? 2 * meta_cap : 8;
          const char **m = realloc(st->meta, (size_t)meta_cap * 2 * sizeof *m);
          if (!m) {
            rt_fail(err, "%s: out of memory", file);
            goto out;
          }
          st->meta = m;
        }
        st->meta[2 * st->n_meta] = mkey;
        st->meta[2 * st->n_meta + 1] = mval;
        st->n_meta++;
      }
      if (mr < 0)
        goto out;
      continue;
    }
    if (key[0] == '\0') {
      rt_js_fail(&j, "empty tensor name");
      goto out;
    }
    if (st->n == cap) {
      cap = cap ? 2 * cap : 16;
      RtTensor *t = realloc(st->tensors, (size_t)cap * sizeof *t);
      if (!t) {
        rt_fail(err, "%s: out of memory", file);
        goto out;
      }
      st->tensors = t;
      Entry *e = realloc(ents, (size_t)cap * sizeof *e);
      if (!e) {
        rt_fail(err, "%s: out of memory", file);
        goto out;
      }
      ents = e;
    }
    RtTensor *t = &st->tensors[st->n];
    memset(t, 0, sizeof *t);
    t->name = key;
    if (parse_tensor(&j, key, t, &ents[st->n]))
      goto out;
    st->n++;
  }
  if (r < 0)
    goto out;
  rt_js_ws(&j);
  if (j.p != j.end) {
    rt_js_fail(&j, "unexpected '%c' after the header object", *j.p);
    goto out;
  }

  /* sizes and bounds */
  for (int i = 0; i < st->n; i++) {
    RtTensor *t = &st->tensors[i];
    Entry *e = &ents[i];
    uint64_t nbytes = rt_dtype_size(t->dtype);
    int overflow = 0;
    for (int d = 0; d < t->ndim; d++) {
      uint64_t dim = (uint64_t)t->shape[d];
      if (dim != 0 && nbytes > UINT64_MAX / dim)
        overflow = 1;
      else
        nbytes *= dim;
    }
    char shp[128];
    fmt_shape(shp, sizeof shp, t->shape, t->ndim);
    if (overflow) {
      rt_fail(err, "%s: tensor '%s': shape %s overflows", file, t->name, shp);
      goto out;
    }
    if (e->begin > e->end) {
      rt_fail(err, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] are reversed", file, t->name, e->begin,
              e->end);
      goto out;
    }
    if (e->end - e->begin != nbytes) {
      rt_fail(err,
              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] do not match shape %s of %s (%" PRIu64
              " bytes)",
              file, t->name, e->begin, e->end, shp, rt_dtype_name(t->dtype), nbytes);
      goto out;
    }
    if (e->end > dlen) {
      rt_fail(err, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] exceed the data section (%zu bytes)", file,
              t->name, e->begin, e->end, dlen);
      goto out;
    }
    t->data = dsec + e->begin;
    t->nbytes = (size_t)nbytes;
  }

  /* duplicate names */
  size_t nk = (size_t)(st->n ? st->n : 1);
  st->by_name = malloc(nk * sizeof(int));
  NameKey *names = malloc(nk * sizeof *names);
  OffKey *offs = malloc(nk * sizeof *offs);
  if (!st->by_name || !names || !offs) {
    free(names);
    free(offs);
    rt_fail(err, "%s: out of memory", file);
    goto out;
  }
  for (int i = 0; i < st->n; i++) {
    names[i] = (NameKey){st->tensors[i].name, i};
    offs[i] = (OffKey){ents[i].begin, ents[i].end, i};
  }
  qsort(names, (size_t)st->n, sizeof *names, cmp_name);
  for (int i = 0; i < st->n; i++)
    st->by_name[i] = names[i].idx;
  for (int i = 1; i < st->n; i++)
    if (strcmp(names[i].name, names[i - 1].name) == 0) {
      rt_fail(err, "%s: tensor '%s': duplicate name in header", file, names[i].name);
      free(names);
      free(offs);
      goto out;
    }
  free(names);

  /* overlaps, gaps, trailing bytes: sorted by offset, each tensor must start where the last ended */
  qsort(offs, (size_t)st->n, sizeof *offs, cmp_offset);
  uint64_t at = 0;
  int prev = -1;
  for (int k = 0; k < st->n; k++) {
    int i = offs[k].idx;
    if (ents[i].begin < at) {
      rt_fail(err,
              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap tensor '%s' [%" PRIu64 ", %" PRIu64 "]",
              file, st->tensors[i].name, ents[i].begin, ents[i].end, st->tensors[prev].name, ents[prev].begin,
              ents[prev].end);
      free(offs);
      goto out;
    }
    if (ents[i].begin > at) {
      rt_fail(err,
              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] leave bytes [%" PRIu64 ", %" PRIu64
              ") of the data section unused",
              file, st->tensors[i].name, ents[i].begin, ents[i].end, at, ents[i].begin);
      free(offs);
      goto out;
    }
    at = ents[i].end;
    prev = i;
  }
  free(offs);
  if (at != dlen) {
    rt_fail(err, "%s: data section has %" PRIu64 " trailing bytes not covered by any tensor", file,
            (uint64_t)dlen - at);
    goto out;
  }

  /* alignment: serve every tensor from an aligned copy if any is misaligned for its dtype */
  int misaligned = 0;
  for (int i = 0; i < st->n; i++)
    if ((uintptr_t)st->tensors[i].data % rt_dtype_size(st->tensors[i].dtype))
      misaligned = 1;
  if (misaligned) { /* one allocation, each tensor at a 64-byte aligned slot */
    size_t total = 64;
    for (int i = 0; i < st->n; i++)
      total += (st->tensors[i].nbytes + 63) / 64 * 64;
    st->copy = aligned_alloc(64, total);
    if (!st->copy) {
      rt_fail(err, "%s: out of memory", file);
      goto out;
    }
    size_t at2 = 0;
    for (int i = 0; i < st->n; i++) {
      char *dst = (char *)st->copy + at2;
      memcpy(dst, dsec + ents[i].begin, st->tensors[i].nbytes);
      st->tensors[i].data = dst;
      at2 += (st->tensors[i].nbytes + 63) / 64 * 64;
    }
  }
  rc = 0;
out:
  free(ents);
  return rc;
}

static RtSafetensors *st_new(const char *name) {
  RtSafetensors *st = calloc(1, sizeof *st);
  if (!st)
    return NULL;
  st->path = strdup(name);
  if (!st->path) {
    free(st);
    return NULL;
  }
  return st;
}

void rt_st_close(RtSafetensors *st) {
  if (!st)
    return;
  if (st->map)
    munmap(st->map, st->map_size);
  free(st->copy);
  free(st->tensors);
  free(st->by_name);
  free(st->strings);
  free(st->meta);
  free(st->path);
  free(st);
}

int rt_st_open_buffer(RtSafetensors **out, const void *buf, size_t size, const char *name, RtError *err) {
  *out = NULL;
  RtSafetensors *st = st_new(name);
  if (!st)
    return rt_fail(err, "%s: out of memory", name);
  if (st_parse(st, buf, size, err)) {
    rt_st_close(st);
    return -1;
  }
  *out = st;
  return 0;
}

int rt_st_open(RtSafetensors **out, const char *path, RtError *err) {
  *out = NULL;
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return rt_fail(err, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    return rt_fail(err, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return rt_fail(err, S_ISDIR(sb.st_mode) ? "%s: is a directory, not a safetensors file" : "%s: not a regular file",
                   path);
  }
  size_t size = (size_t)sb.st_size;
  if (size < 8) {
    close(fd);
    return rt_fail(err, "%s: file is %zu bytes, too short for the 8-byte header length", path, size);
  }
  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  if (map == MAP_FAILED)
    return rt_fail(err, "%s: cannot mmap: %s", path, strerror(e));
  RtSafetensors *st = st_new(path);
  if (!st) {
    munmap(map, size);
    return rt_fail(err, "%s: out of memory", path);
  }
  st->map = map;
  st->map_size = size;
  if (st_parse(st, map, size, err)) {
    rt_st_close(st);
    return -1;
  }
  *out = st;
  return 0;
}

int rt_st_count(const RtSafetensors *st) { return st->n; }

const RtTensor *rt_st_tensor(const RtSafetensors *st, int i) { return i >= 0 && i < st->n ? &st->tensors[i] : NULL; }

const RtTensor *rt_st_find(const RtSafetensors *st, const char *name) {
  int lo = 0, hi = st->n - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    const RtTensor *t = &st->tensors[st->by_name[mid]];
    int c = strcmp(name, t->name);
    if (c == 0)
      return t;
    if (c < 0)
      hi = mid - 1;
    else
      lo = mid + 1;
  }
  return NULL;
}

const char *rt_st_metadata(const RtSafetensors *st, const char *key) {
  for (int i = 0; i < st->n_meta; i++)
    if (strcmp(st->meta[2 * i], key) == 0)
      return st->meta[2 * i + 1];
  return NULL;
}

int rt_st_require(const RtSafetensors *st, const char *name, RtDType dtype, int ndim, const int64_t *shape,
                  const RtTensor **out, RtError *err) {
  if (out)
    *out = NULL;
  const RtTensor *t = rt_st_find(st, name);
  if (!t)
    return rt_fail(err, "%s: tensor '%s' not found", st->path, name);
  if (t->dtype != dtype)
    return rt_fail(err, "%s: tensor '%s' has dtype %s, expected %s", st->path, name, rt_dtype_name(t->dtype),
                   rt_dtype_name(dtype));
  if (ndim >= 0) {
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
      same = t->shape[i] == shape[i];
    if (!same) {
      char have[128], want[128];
      fmt_shape(have, sizeof have, t->shape, t->ndim);
      fmt_shape(want, sizeof want, shape, ndim < RT_MAX_DIMS ? ndim : RT_MAX_DIMS);
      return rt_fail(err, "%s: tensor '%s' has shape %s, expected %s", st->path, name, have, want);
    }
  }
  if (out)
    *out = t;
  return 0;
}

/* ---- writer --------------------------------------------------------------------------------- */

typedef struct Buf {
  char *p;
  size_t len, cap;
  int oom;
} Buf;

static void buf_put(Buf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (b->len + n + 1 > cap)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void buf_str(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_json_string(Buf *b, const char *s) {
  buf_put(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      buf_put(b, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      buf_put(b, esc, 6);
    } else {
      buf_put(b, (const char *)&c, 1);
    }
  }
  buf_put(b, "\"", 1);
}

int rt_st_write(const char *path, const RtTensor *tensors, int n, const char *const *meta, int n_meta, RtError *err) {
  Buf h = {0};
  uint64_t off = 0;
  char num[64];
  buf_str(&h, "{");
  if (n_meta > 0) {
    buf_str(&h, "\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
      if (i)
        buf_str(&h, ",");
      buf_json_string(&h, meta[2 * i]);
      buf_str(&h, ":");
      buf_json_string(&h, meta[2 * i + 1]);
    }
    buf_str(&h, "}");
  }
  for (int i = 0; i < n; i++) {
    const RtTensor *t = &tensors[i];
    uint64_t want = rt_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
      want *= (uint64_t)t->shape[d];
    if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0) {
      free(h.p);
      return rt_fail(err, "%s: tensor %d: invalid name", path, i);
    }
    if (rt_dtype_size(t->dtype) == 0 || t->ndim < 0 || t->ndim > RT_MAX_DIMS || want != t->nbytes) {
      free(h.p);
      return rt_fail(err, "%s: tensor '%s': nbytes %zu does not match its dtype and shape", path, t->name, t->nbytes);
    }
    for (int k = 0; k < i; k++)
      if (strcmp(tensors[k].name, t->name) == 0) {
        free(h.p);
        return rt_fail(err, "%s: tensor '%s': duplicate name", path, t->name);
      }
    buf_str(&h, n_meta > 0 || i > 0 ? "," : "");
    buf_json_string(&h, t->name);
    buf_str(&h, ":{\"dtype\":\"");
    buf_str(&h, rt_dtype_name(t->dtype));
    buf_str(&h, "\",\"shape\":[");
    for (int d = 0; d < t->ndim; d++) {
      snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
      buf_str(&h, num);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + t->nbytes);
    buf_str(&h, num);
    off += t->nbytes;
  }
  buf_str(&h, "}");
  while ((8 + h.len) % 8)
    buf_str(&h, " ");
  if (h.oom) {
    free(h.p);
    return rt_fail(err, "%s: out of memory", path);
  }
  unsigned char lenb[8];
  for (int i = 0; i < 8; i++)
    lenb[i] = (unsigned char)(((uint64_t)h.len >> (8 * i)) & 0xff);
  RtChunk *chunks = malloc((size_t)(n + 2) * sizeof *chunks);
  if (!chunks) {
    free(h.p);
    return rt_fail(err, "%s: out of memory", path);
  }
  chunks[0] = (RtChunk){lenb, 8};
  chunks[1] = (RtChunk){h.p, h.len};
  for (int i = 0; i < n; i++)
    chunks[2 + i] = (RtChunk){tensors[i].data, tensors[i].nbytes};
  int rc = rt_write_file_atomic(path, chunks, n + 2, err);
  free(chunks);
  free(h.p);
  return rc;
}

/* Any float tensor (F32, F16, BF16, F64) to float32 (modelc_rt.h). */
int rt_tensor_to_f32(const RtTensor *t, float *out, RtError *err) {
  size_t es = rt_dtype_size(t->dtype);
  if (es == 0)
    return rt_fail(err, "tensor '%s': invalid dtype", t->name ? t->name : "?");
  size_t n = t->nbytes / es;
  switch (t->dtype) {
  case RT_DT_F32: memcpy(out, t->data, n * 4); return 0;
  case RT_DT_F64: {
    const double *d = t->data;
    for (size_t i = 0; i < n; i++)
      out[i] = (float)d[i];
    return 0;
  }
  case RT_DT_F16: {
    const uint16_t *d = t->data;
    for (size_t i = 0; i < n; i++)
      out[i] = rt_f16_to_f32(d[i]);
    return 0;
  }
  case RT_DT_BF16: {
    const uint16_t *d = t->data;
    for (size_t i = 0; i < n; i++)
      out[i] = rt_bf16_to_f32(d[i]);
    return 0;
  }
  default:
    return rt_fail(err, "tensor '%s': dtype %s is not a float type", t->name ? t->name : "?", rt_dtype_name(t->dtype));
  }
}
