/* json.c: the strict JSON cursor of the io room (io.h, RtJs): the safetensors header
 * (io/safetensors.c) and the tokenizers' JSON files (io/bpe.c) parse with it. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "io.h"

int rt_js_fail(RtJs *j, const char *fmt, ...) {
  char what[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return rt_fail(j->err, "%s: invalid %s at byte %ld: %s", j->file, j->what ? j->what : "JSON header",
                 (long)(j->p - j->start), what);
}

void rt_js_ws(RtJs *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
    j->p++;
}

int rt_js_expect(RtJs *j, char c) {
  rt_js_ws(j);
  if (j->p >= j->end)
    return rt_js_fail(j, "expected '%c', found end of header", c);
  if (*j->p != c)
    return rt_js_fail(j, "expected '%c', found '%c'", c, *j->p);
  j->p++;
  return 0;
}

int rt_js_peek(RtJs *j) {
  rt_js_ws(j);
  return j->p < j->end ? (unsigned char)*j->p : -1;
}

int rt_hex_digits(const char *s, int n, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < n; i++) {
    char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

/* Parses a JSON string into the arena (NUL-terminated; an embedded \u0000 is rejected). */
int rt_js_string(RtJs *j, const char **out) {
  if (rt_js_expect(j, '"'))
    return -1;
  char *dst = j->arena + j->used, *o = dst;
  for (;;) {
    if (j->p >= j->end)
      return rt_js_fail(j, "unterminated string");
    unsigned char c = (unsigned char)*j->p++;
    if (c == '"')
      break;
    if (c < 0x20)
      return rt_js_fail(j, "control character 0x%02x in string", c);
    if (c != '\\') {
      *o++ = (char)c;
      continue;
    }
    if (j->p >= j->end)
      return rt_js_fail(j, "unterminated string");
    char e = *j->p++;
    switch (e) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '/': *o++ = '/'; break;
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (j->end - j->p < 4 || rt_hex_digits(j->p, 4, &cp))
        return rt_js_fail(j, "bad \\u escape");
      j->p += 4;
      if (cp >= 0xd800 && cp <= 0xdbff) {
        if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || rt_hex_digits(j->p + 2, 4, &lo) || lo < 0xdc00 || lo > 0xdfff)
          return rt_js_fail(j, "unpaired surrogate in \\u escape");
        j->p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      } else if (cp >= 0xdc00 && cp <= 0xdfff) {
        return rt_js_fail(j, "unpaired surrogate in \\u escape");
      }
      if (cp == 0)
        return rt_js_fail(j, "\\u0000 in string");
      if (cp < 0x80)
        *o++ = (char)cp;
      else if (cp < 0x800) {
        *o++ = (char)(0xc0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3f));
      } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
      } else {
        *o++ = (char)(0xf0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
      }
      break;
    }
    default: return rt_js_fail(j, "bad escape '\\%c'", e);
    }
  }
  *o++ = '\0';
  j->used += (size_t)(o - dst);
  *out = dst;
  return 0;
}

/* A non-negative JSON integer that fits in int64. */
int rt_js_uint(RtJs *j, uint64_t *out) {
  rt_js_ws(j);
  if (j->p >= j->end)
    return rt_js_fail(j, "expected an integer, found end of header");
  if (*j->p == '-')
    return rt_js_fail(j, "expected a non-negative integer");
  if (*j->p < '0' || *j->p > '9')
    return rt_js_fail(j, "expected an integer, found '%c'", *j->p);
  if (*j->p == '0' && j->p + 1 < j->end && j->p[1] >= '0' && j->p[1] <= '9')
    return rt_js_fail(j, "integer with a leading zero");
  uint64_t v = 0;
  while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
    unsigned d = (unsigned)(*j->p - '0');
    if (v > ((uint64_t)INT64_MAX - d) / 10)
      return rt_js_fail(j, "integer too large");
    v = v * 10 + d;
    j->p++;
  }
  if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
    return rt_js_fail(j, "expected an integer");
  *out = v;
  return 0;
}

/* [int, ...] with at most max elements. */
int rt_js_uint_array(RtJs *j, uint64_t *vals, int max, int *n, const char *what) {
  if (rt_js_expect(j, '['))
    return -1;
  *n = 0;
  int first = 1, r;
  while ((r = rt_js_next_elem(j, &first, what)) == 1) {
    if (*n == max)
      return rt_js_fail(j, "%s has more than %d elements", what, max);
    if (rt_js_uint(j, &vals[(*n)++]))
      return -1;
  }
  return r;
}

/* Iterates the elements of an array whose '[' has been read (io.h). A ',' is always followed by an
 * element, read by the caller, so "[1,]" fails there: no trailing comma. */
int rt_js_next_elem(RtJs *j, int *first, const char *what) {
  int c = rt_js_peek(j);
  if (c == ']') { /* "[]", or the end after an element (after a ',' the element is read first) */
    j->p++;
    return 0;
  }
  if (*first) {
    *first = 0;
    return 1;
  }
  if (c != ',')
    return rt_js_fail(j, "expected ',' or ']' in %s", what);
  j->p++;
  return 1;
}

/* Iterates "key": value pairs of an object: call with *first = 1; returns 1 with *key set and the
 * cursor at the value, 0 at the closing brace, -1 on error. */
int rt_js_next_key(RtJs *j, int *first, const char **key) {
  int c = rt_js_peek(j);
  if (*first) {
    *first = 0;
    if (c == '}') {
      j->p++;
      return 0;
    }
  } else {
    if (c == '}') {
      j->p++;
      return 0;
    }
    if (c != ',')
      return rt_js_fail(j, "expected ',' or '}'");
    j->p++;
  }
  if (rt_js_peek(j) != '"')
    return rt_js_fail(j, "expected a string key");
  if (rt_js_string(j, key))
    return -1;
  if (rt_js_expect(j, ':'))
    return -1;
  return 1;
}

/* Skips one value of any kind (nesting up to 64 deep). */
int rt_js_skip(RtJs *j) {
  int depth = 0;
  char stack[64];
  for (;;) {
    int c = rt_js_peek(j);
    if (c < 0)
      return rt_js_fail(j, "expected a value, found end of input");
    if (c == '{' || c == '[') {
      if (depth == 64)
        return rt_js_fail(j, "nested more than 64 deep");
      stack[depth++] = (char)(c == '{' ? '}' : ']');
      j->p++;
      if (rt_js_peek(j) == stack[depth - 1]) {
        j->p++;
        depth--;
        goto after;
      }
      if (c == '{') {
        const char *key;
        if (rt_js_string(j, &key) || rt_js_expect(j, ':'))
          return -1;
      }
      continue;
    }
    if (c == '"') {
      const char *s;
      if (rt_js_string(j, &s))
        return -1;
      j->used -= strlen(s) + 1; /* not kept */
    } else {
      const char *q = j->p;
      while (j->p < j->end && (*j->p == '-' || *j->p == '+' || *j->p == '.' || (*j->p >= '0' && *j->p <= '9') ||
                               (*j->p >= 'a' && *j->p <= 'z') || (*j->p >= 'A' && *j->p <= 'Z')))
        j->p++;
      size_t n = (size_t)(j->p - q);
      int num = n && (q[0] == '-' || (q[0] >= '0' && q[0] <= '9'));
      if (!num && !(n == 4 && !memcmp(q, "true", 4)) && !(n == 5 && !memcmp(q, "false", 5)) &&
          !(n == 4 && !memcmp(q, "null", 4)))
        return rt_js_fail(j, "expected a value");
    }
  after:
    for (;;) {
      if (!depth)
        return 0;
      int d = rt_js_peek(j);
      if (d == stack[depth - 1]) {
        j->p++;
        depth--;
        continue;
      }
      if (d != ',')
        return rt_js_fail(j, "expected ',' or '%c'", stack[depth - 1]);
      j->p++;
      if (stack[depth - 1] == '}') {
        const char *key;
        if (rt_js_string(j, &key) || rt_js_expect(j, ':'))
          return -1;
        j->used -= strlen(key) + 1;
      }
      break;
    }
  }
}
