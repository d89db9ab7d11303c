/* options.c: the generated program's command-line options: reading one GNU-style option
 * (--key value, --key=value, flags) against a verb's list, and the one-line usage error. */
#include "../modelc_rt.h"
#include "../rt_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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
