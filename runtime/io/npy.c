/* npy.c: reader and writer for NumPy .npy arrays (token ids in, logits and gradients out).
 *
 * Format: magic "\x93NUMPY", major and minor version bytes, a little-endian header length (u16 for
 * version 1.0, u32 for 2.0 and 3.0), then an ASCII Python dict literal such as
 * {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with spaces and ending in
 * '\n', then the raw C-order data. We accept exactly the dtypes the runtime uses (<f4, <i4, <i8),
 * reject fortran_order True, big-endian and other dtypes, unknown or missing keys, and any data
 * size other than shape product x item size, with a message naming the file. The host is assumed
 * little-endian (x86-64, aarch64). */
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

typedef struct Cur {
  const char *p, *end;
} Cur;

static void ws(Cur *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static int eat(Cur *c, char ch) {
  ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 1;
  }
  return 0;
}

/* A quoted Python string ('..' or ".."), no escapes (none appear in valid headers). */
static int pystr(Cur *c, char *out, size_t cap) {
  ws(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
    return -1;
  char q = *c->p++;
  size_t n = 0;
  while (c->p < c->end && *c->p != q) {
    if (*c->p == '\\' || n + 1 >= cap)
      return -1;
    out[n++] = *c->p++;
  }
  if (c->p >= c->end)
    return -1;
  c->p++;
  out[n] = '\0';
  return 0;
}

static int word(Cur *c, const char *w) {
  ws(c);
  size_t n = strlen(w);
  if ((size_t)(c->end - c->p) >= n && memcmp(c->p, w, n) == 0) {
    c->p += n;
    return 1;
  }
  return 0;
}

static int parse_header(const char *h, size_t len, const char *name, RtNpy *out, RtError *err) {
  Cur c = {h, h + len};
  int seen_descr = 0, seen_fortran = 0, seen_shape = 0;
  char key[32], descr[32];
  if (!eat(&c, '{'))
    return rt_fail(err, "%s: .npy header is not a dict", name);
  for (;;) {
    if (eat(&c, '}'))
      break;
    if (pystr(&c, key, sizeof key))
      return rt_fail(err, "%s: .npy header: expected a quoted key", name);
    if (!eat(&c, ':'))
      return rt_fail(err, "%s: .npy header: expected ':' after '%s'", name, key);
    if (strcmp(key, "descr") == 0 && !seen_descr++) {
      if (pystr(&c, descr, sizeof descr))
        return rt_fail(err, "%s: .npy header: 'descr' must be a string", name);
      if (strcmp(descr, "<f4") == 0)
        out->dtype = RT_DT_F32;
      else if (strcmp(descr, "<i4") == 0)
        out->dtype = RT_DT_I32;
      else if (strcmp(descr, "<i8") == 0)
        out->dtype = RT_DT_I64;
      else
        return rt_fail(err, "%s: unsupported .npy dtype '%s' (supported: <f4, <i4, <i8)", name, descr);
    } else if (strcmp(key, "fortran_order") == 0 && !seen_fortran++) {
      if (word(&c, "True"))
        return rt_fail(err, "%s: fortran_order True is not supported (write C order)", name);
      if (!word(&c, "False"))
        return rt_fail(err, "%s: .npy header: 'fortran_order' must be True or False", name);
    } else if (strcmp(key, "shape") == 0 && !seen_shape++) {
      if (!eat(&c, '('))
        return rt_fail(err, "%s: .npy header: 'shape' must be a tuple", name);
      out->ndim = 0;
      for (;;) {
        if (eat(&c, ')'))
          break;
        ws(&c);
        if (c.p >= c.end || *c.p < '0' || *c.p > '9')
          return rt_fail(err, "%s: .npy header: 'shape' must hold non-negative integers", name);
        if (out->ndim == RT_MAX_DIMS)
          return rt_fail(err, "%s: .npy shape has more than %d dims", name, RT_MAX_DIMS);
        int64_t v = 0;
        while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
          if (v > (INT64_MAX - 9) / 10)
            return rt_fail(err, "%s: .npy shape dimension too large", name);
          v = v * 10 + (*c.p++ - '0');
        }
        out->shape[out->ndim++] = v;
        if (eat(&c, ')'))
          break;
        if (!eat(&c, ','))
          return rt_fail(err, "%s: .npy header: expected ',' or ')' in 'shape'", name);
      }
    } else if (strcmp(key, "descr") == 0 || strcmp(key, "fortran_order") == 0 || strcmp(key, "shape") == 0) {
      return rt_fail(err, "%s: .npy header: duplicate key '%s'", name, key);
    } else {
      return rt_fail(err, "%s: .npy header: unknown key '%s'", name, key);
    }
    if (eat(&c, '}'))
      break;
    if (!eat(&c, ','))
      return rt_fail(err, "%s: .npy header: expected ',' or '}'", name);
  }
  ws(&c);
  if (c.p != c.end)
    return rt_fail(err, "%s: .npy header: unexpected text after the dict", name);
  if (!seen_descr || !seen_fortran || !seen_shape)
    return rt_fail(err, "%s: .npy header: missing key '%s'", name,
                   !seen_descr     ? "descr"
                   : !seen_fortran ? "fortran_order"
                                   : "shape");
  return 0;
}

int rt_npy_parse(const void *buf, size_t size, const char *name, RtNpy *out, RtError *err) {
  const unsigned char *b = buf;
  memset(out, 0, sizeof *out);
  if (size < 10 || memcmp(b, npy_magic, 6) != 0)
    return rt_fail(err, "%s: not a .npy file (bad magic)", name);
  unsigned major = b[6], minor = b[7];
  size_t pre, hlen;
  if (major == 1 && minor == 0) {
    pre = 10;
    hlen = (size_t)b[8] | (size_t)b[9] << 8;
  } else if ((major == 2 || major == 3) && minor == 0) {
    if (size < 12)
      return rt_fail(err, "%s: truncated .npy preamble", name);
    pre = 12;
    hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
  } else {
    return rt_fail(err, "%s: unsupported .npy version %u.%u", name, major, minor);
  }
  if (hlen > size - pre)
    return rt_fail(err, "%s: .npy header length %zu exceeds the file size", name, hlen);
  if (hlen == 0 || b[pre + hlen - 1] != '\n')
    return rt_fail(err, "%s: .npy header does not end with a newline", name);
  if (parse_header((const char *)b + pre, hlen, name, out, err))
    return -1;
  uint64_t nbytes = rt_dtype_size(out->dtype);
  for (int i = 0; i < out->ndim; i++) {
    if (out->shape[i] != 0 && nbytes > UINT64_MAX / (uint64_t)out->shape[i])
      return rt_fail(err, "%s: .npy shape overflows", name);
    nbytes *= (uint64_t)out->shape[i];
  }
  size_t have = size - pre - hlen;
  if (have != nbytes)
    return rt_fail(err, "%s: .npy data is %zu bytes, expected %" PRIu64 " for its shape and dtype", name, have, nbytes);
  out->data = aligned_alloc(64, ((size_t)nbytes + 63) / 64 * 64 + 64);
  if (!out->data)
    return rt_fail(err, "%s: out of memory", name);
  memcpy(out->data, b + pre + hlen, (size_t)nbytes);
  out->nbytes = (size_t)nbytes;
  return 0;
}

int rt_npy_read(const char *path, RtNpy *out, RtError *err) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f)
    return rt_fail(err, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
    fclose(f);
    return rt_fail(err, "%s: is a directory, not a .npy file", path);
  }
  if (fseek(f, 0, SEEK_END) != 0) {
    fclose(f);
    return rt_fail(err, "%s: cannot seek", path);
  }
  long sz = ftell(f);
  rewind(f);
  if (sz < 0) {
    fclose(f);
    return rt_fail(err, "%s: cannot size", path);
  }
  char *buf = malloc((size_t)sz + 1);
  if (!buf) {
    fclose(f);
    return rt_fail(err, "%s: out of memory", path);
  }
  size_t got = fread(buf, 1, (size_t)sz, f);
  fclose(f);
  if (got != (size_t)sz) {
    free(buf);
    return rt_fail(err, "%s: short read", path);
  }
  int rc = rt_npy_parse(buf, got, path, out, err);
  free(buf);
  return rc;
}

void rt_npy_free(RtNpy *a) {
  free(a->data);
  a->data = NULL;
  a->nbytes = 0;
}

int rt_npy_write(const char *path, RtDType dtype, int ndim, const int64_t *shape, const void *data, RtError *err) {
  const char *descr = dtype == RT_DT_F32 ? "<f4" : dtype == RT_DT_I32 ? "<i4" : dtype == RT_DT_I64 ? "<i8" : NULL;
  if (!descr)
    return rt_fail(err, "%s: .npy writer does not support dtype %s", path, rt_dtype_name(dtype));
  if (ndim < 0 || ndim > RT_MAX_DIMS)
    return rt_fail(err, "%s: .npy writer: bad ndim %d", path, ndim);
  char dict[64 + RT_MAX_DIMS * 24];
  size_t k = (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  size_t nbytes = rt_dtype_size(dtype);
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return rt_fail(err, "%s: .npy writer: negative dimension", path);
    k += (size_t)snprintf(dict + k, sizeof dict - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    nbytes *= (size_t)shape[i];
  }
  k += (size_t)snprintf(dict + k, sizeof dict - k, "%s), }", ndim == 1 ? "," : "");
  /* version 1.0: 10-byte preamble; header padded with spaces so data starts at a multiple of 64 */
  size_t total = (10 + k + 1 + 63) / 64 * 64;
  size_t hlen = total - 10;
  unsigned char head[10 + sizeof dict + 64];
  memcpy(head, npy_magic, 6);
  head[6] = 1;
  head[7] = 0;
  head[8] = (unsigned char)(hlen & 0xff);
  head[9] = (unsigned char)(hlen >> 8);
  memcpy(head + 10, dict, k);
  memset(head + 10 + k, ' ', hlen - k - 1);
  head[total - 1] = '\n';
  if (strcmp(path, "-") == 0) {
    if (fwrite(head, 1, total, stdout) != total || (nbytes && fwrite(data, 1, nbytes, stdout) != nbytes) ||
        fflush(stdout) != 0)
      return rt_fail(err, "<stdout>: write failed: %s", strerror(errno));
    return 0;
  }
  RtChunk chunks[2] = {{head, total}, {data, nbytes}};
  return rt_write_file_atomic(path, chunks, 2, err);
}
