/* util.c: the runtime's small shared pieces: the error convention (rt_fail), the monotonic clock,
 * dtype names and sizes, half-precision conversions, the byte-level tokenizer and atomic file
 * writing. They live together because each is a few lines and every other runtime file uses them. */
#include "modelc_rt.h"
#include "rt_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int rt_fail(RtError *err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return -1;
}

double rt_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Indexed by RtDType. */
static const struct {
  const char *name;
  size_t size;
} dtype_info[RT_DT_COUNT] = {
    [RT_DT_INVALID] = {"?", 0}, [RT_DT_F32] = {"F32", 4},   [RT_DT_F16] = {"F16", 2}, [RT_DT_BF16] = {"BF16", 2},
    [RT_DT_F64] = {"F64", 8},   [RT_DT_I8] = {"I8", 1},     [RT_DT_U8] = {"U8", 1},   [RT_DT_I16] = {"I16", 2},
    [RT_DT_U16] = {"U16", 2},   [RT_DT_I32] = {"I32", 4},   [RT_DT_U32] = {"U32", 4}, [RT_DT_I64] = {"I64", 8},
    [RT_DT_U64] = {"U64", 8},   [RT_DT_BOOL] = {"BOOL", 1},
};

size_t rt_dtype_size(RtDType dt) { return (dt > RT_DT_INVALID && dt < RT_DT_COUNT) ? dtype_info[dt].size : 0; }

const char *rt_dtype_name(RtDType dt) { return (dt > RT_DT_INVALID && dt < RT_DT_COUNT) ? dtype_info[dt].name : "?"; }

RtDType rt_dtype_from_name(const char *name) {
  for (int i = RT_DT_INVALID + 1; i < RT_DT_COUNT; i++)
    if (strcmp(name, dtype_info[i].name) == 0)
      return (RtDType)i;
  return RT_DT_INVALID;
}

static float bits_to_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

float rt_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
  if (exp == 0) { /* zero or subnormal: man * 2^-24 */
    float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31)
    return bits_to_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
  return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

float rt_bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

uint16_t rt_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
  u += 0x7fffu + ((u >> 16) & 1u);       /* round to nearest even */
  return (uint16_t)(u >> 16);
}

uint16_t rt_f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u; /* quiet nan */
  if (a >= 0x477ff000u) return sign | 0x7c00u; /* |f| >= 65520 (half-way past 65504): inf */
  if (a >= 0x38800000u) {                      /* normal: rebias the exponent (127 - 15) */
    uint32_t r = a - 0x38000000u;
    r += 0xfffu + ((r >> 13) & 1u); /* round to nearest even; a carry moves into the exponent */
    return sign | (uint16_t)(r >> 13);
  }
  uint32_t e = a >> 23;
  if (e < 102) return sign; /* below 2^-25: rounds to zero */
  /* subnormal: the count of 2^-24 units, rounded to nearest even */
  uint32_t mant = (a & 0x7fffffu) | 0x800000u, sh = 126 - e, q = mant >> sh, rem = mant & ((1u << sh) - 1u),
           half = 1u << (sh - 1);
  if (rem > half || (rem == half && (q & 1u))) q++;
  return sign | (uint16_t)q;
}

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

size_t rt_byte_encode(int32_t *ids, const void *text, size_t n) {
  const unsigned char *s = text;
  for (size_t i = 0; i < n; i++)
    ids[i] = s[i];
  return n;
}

int rt_byte_decode(char *text, const int32_t *ids, size_t n, RtError *err) {
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= RT_BYTE_VOCAB)
      return rt_fail(err, "byte tokenizer: id %ld at position %zu is outside [0, 256)", (long)ids[i], i);
    text[i] = (char)(unsigned char)ids[i];
  }
  return 0;
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int rt_write_file_atomic(const char *path, const RtChunk *chunks, int n, RtError *err) {
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 16);
  if (!tmp)
    return rt_fail(err, "%s: out of memory", path);
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp.XXXXXX", 12);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    rt_fail(err, "%s: cannot create temporary file: %s", path, strerror(errno));
    free(tmp);
    return -1;
  }
  const char *what = NULL;
  for (int i = 0; i < n && !what; i++)
    if (chunks[i].len && write_all(fd, chunks[i].data, chunks[i].len) != 0)
      what = "write";
  if (!what && fsync(fd) != 0)
    what = "fsync";
  int saved = errno;
  if (close(fd) != 0 && !what) {
    what = "close";
    saved = errno;
  }
  if (!what && rename(tmp, path) != 0) {
    what = "rename";
    saved = errno;
  }
  if (what) {
    unlink(tmp);
    free(tmp);
    return rt_fail(err, "%s: %s failed: %s", path, what, strerror(saved));
  }
  free(tmp);
  /* Make the rename itself durable: fsync the containing directory (best effort). */
  char *dir = strdup(path);
  if (dir) {
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash) {
      if (slash == dir)
        slash[1] = '\0';
      else
        *slash = '\0';
      d = dir;
    }
    int dfd = open(d, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
    free(dir);
  }
  return 0;
}

/* The whole file into a malloc'd buffer (rt_internal.h). */
int rt_read_file(const char *path, unsigned char **out, size_t *n_out, RtError *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return rt_fail(err, "%s: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  for (size_t k; buf && (k = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += k;
    if (n == cap) {
      unsigned char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  int bad = ferror(f) || !buf;
  fclose(f);
  if (bad) {
    free(buf);
    return rt_fail(err, "%s: cannot read", path);
  }
  *out = buf;
  *n_out = n;
  return 0;
}

int rt_usage_error(const char *prog, const char *verb, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s %s: error: ", prog, verb);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see '%s %s --help')\n", prog, verb);
  return 1;
}

/* True if word is one of the space-separated words of list. */
static int in_list(const char *list, const char *word) {
  size_t n = strlen(word);
  for (const char *p = list; p && *p;) {
    while (*p == ' ') p++;
    const char *e = p;
    while (*e && *e != ' ') e++;
    if ((size_t)(e - p) == n && n && strncmp(p, word, n) == 0) return 1;
    p = e;
  }
  return 0;
}

int rt_next_opt(const char *prog, const char *verb, int argc, char **argv, int *i, const char *allowed,
                const char *flags, char *key, const char **val) {
  const char *a = argv[*i];
  if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 0;
  const char *eq = strchr(a, '=');
  *val = NULL;
  if (strncmp(a, "--", 2) == 0 && eq) {
    snprintf(key, 64, "%.*s", (int)(eq - a), a);
    *val = eq + 1;
  } else {
    snprintf(key, 64, "%s", a);
  }
  if (key[0] != '-' || !in_list(allowed, key)) {
    rt_usage_error(prog, verb, key[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
    return -1;
  }
  if (in_list(flags, key)) {
    if (*val) {
      rt_usage_error(prog, verb, "option '%s' takes no value", key);
      return -1;
    }
    return 1;
  }
  if (!*val) {
    if (*i + 1 >= argc) {
      rt_usage_error(prog, verb, "option '%s' needs a value", key);
      return -1;
    }
    *val = argv[++*i];
  }
  return 1;
}

void *rt_xalloc(size_t n) {
  if (n == 0) n = 64;
  n = (n + 63) / 64 * 64;
  void *p = aligned_alloc(64, n);
  if (p) memset(p, 0, n);
  return p;
}
