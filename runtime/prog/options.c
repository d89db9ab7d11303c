/* options.c: the generated program's command-line options: reading one GNU-style option
 * (--key value, --key=value, flags) against a verb's list, and the one-line usage error. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"

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



int rt_parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

int rt_parse_double(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
  *out = v;
  return 0;
}

int rt_parse_opts(const char *prog, const char *verb, int argc, char **argv, const char *allowed, RtOpts *o,
                      int *help) {
  memset(o, 0, sizeof *o);
  o->seed = 1337;
  o->n = 64;
  o->temperature = 1.0;
  o->top_p = 1.0;
  o->runs = 7;
  for (int i = 2; i < argc; i++) {
    char key[64];
    const char *val;
    int r = rt_next_opt(prog, verb, argc, argv, &i, allowed, "--no-cache", key, &val);
    if (r < 0) return EXIT_USER;
    if (r == 0) {
      *help = 1;
      return 0;
    }
    if (!strcmp(key, "--no-cache")) {
      o->no_cache = 1;
      continue;
    }
    long lv;
    double dv;
    if (!strcmp(key, "--weights")) o->weights = val;
    else if (!strcmp(key, "--tokens")) o->tokens = val;
    else if (!strcmp(key, "--out")) o->out = val;
    else if (!strcmp(key, "--prompt")) o->prompt = val;
    else if (!strcmp(key, "--data")) o->data = val;
    else if (!strcmp(key, "--logits-out")) o->logits_out = val;
    else if (!strcmp(key, "--seed")) {
      char *end;
      errno = 0;
      unsigned long long s = strtoull(val, &end, 10);
      if (errno || end == val || *end || val[0] == '-') return rt_usage_error(prog, verb, "bad --seed '%s'", val);
      o->seed = s;
    } else if (!strcmp(key, "-n")) {
      if (rt_parse_long(val, 0, 1000000000L, &lv)) return rt_usage_error(prog, verb, "bad -n '%s'", val);
      o->n = lv;
      o->have_n = 1;
    } else if (!strcmp(key, "--top-k")) {
      if (rt_parse_long(val, 0, 1L << 30, &lv)) return rt_usage_error(prog, verb, "bad --top-k '%s'", val);
      o->top_k = lv;
    } else if (!strcmp(key, "--runs")) {
      if (rt_parse_long(val, 1, 1000, &lv)) return rt_usage_error(prog, verb, "bad --runs '%s' (1..1000)", val);
      o->runs = lv;
    } else if (!strcmp(key, "--threads")) {
      if (rt_parse_long(val, 1, 1024, &lv)) return rt_usage_error(prog, verb, "bad --threads '%s'", val);
      o->threads = lv;
    } else if (!strcmp(key, "--temperature")) {
      if (rt_parse_double(val, 0.0, 1e6, &dv)) return rt_usage_error(prog, verb, "bad --temperature '%s' (>= 0)", val);
      o->temperature = dv;
    } else if (!strcmp(key, "--top-p")) {
      if (rt_parse_double(val, 0.0, 1.0, &dv) || dv <= 0)
        return rt_usage_error(prog, verb, "bad --top-p '%s' (0 < p <= 1)", val);
      o->top_p = dv;
    }
  }
  /* Every command: the pool (and single-threaded OpenBLAS) before any scratch is sized, since
   * the attention scratch holds one slice per thread. 0: MODELC_THREADS or the online CPUs. */
  rt_set_threads((int)o->threads);
  return 0;
}

int rt_parse_real(const char *s, double lo, double hi, int hi_open, double *out) {
  char *end;
  errno = 0;
  double d = strtod(s, &end);
  if (errno || end == s || *end || !(d >= lo) || (hi_open ? !(d < hi) : !(d <= hi))) return -1;
  *out = d;
  return 0;
}


int rt_parse_int(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

int rt_parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end) return -1;
  *out = (uint64_t)v;
  return 0;
}

