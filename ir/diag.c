/* diag.c: clang-style diagnostics with source carets, collected over a whole run (see diag.h). */
#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { DIAG_DEFAULT_MAX = 20 };

void diag_init(Diag *d, FILE *out) {
  memset(d, 0, sizeof *d);
  d->out = out ? out : stderr;
  d->max_errors = DIAG_DEFAULT_MAX;
}

void diag_free(Diag *d) {
  DiagSource *s = d->sources;
  while (s) {
    DiagSource *n = s->next;
    free(s->file);
    free(s->text);
    free(s);
    s = n;
  }
  d->sources = NULL;
}

void diag_add_source(Diag *d, const char *file, const char *text, size_t len) {
  if (!file || !text) return;
  for (DiagSource *s = d->sources; s; s = s->next)
    if (strcmp(s->file, file) == 0) return;
  DiagSource *s = calloc(1, sizeof *s);
  if (!s) return;
  s->file = strdup(file);
  s->text = malloc(len + 1);
  if (!s->file || !s->text) {
    free(s->file);
    free(s->text);
    free(s);
    return;
  }
  memcpy(s->text, text, len);
  s->text[len] = 0;
  s->len = len;
  s->next = d->sources;
  d->sources = s;
}

/* Prints the source line `line` of `file` and a caret under column `col`, if the text is known. */
static void print_caret(Diag *d, const char *file, int line, int col) {
  if (!file || line <= 0) return;
  const DiagSource *s = d->sources;
  while (s && strcmp(s->file, file) != 0) s = s->next;
  if (!s) return;
  const char *p = s->text, *end = s->text + s->len;
  for (int l = 1; l < line && p < end; l++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return;
    p = nl + 1;
  }
  if (p > end) return;
  const char *e = p;
  while (e < end && *e != '\n' && *e != '\r') e++;
  if (e - p > 400) e = p + 400; /* keep absurd lines readable */
  fprintf(d->out, "%.*s\n", (int)(e - p), p);
  int c = col < 1 ? 1 : col;
  for (int i = 1; i < c && p + i - 1 < e; i++) fputc(p[i - 1] == '\t' ? '\t' : ' ', d->out);
  fputs("^\n", d->out);
}

static void report(Diag *d, const char *kind, const char *file, int line, int col, const char *fmt,
                   va_list ap) {
  if (file && line > 0)
    fprintf(d->out, "%s:%d:%d: %s: ", file, line, col < 1 ? 1 : col, kind);
  else if (file)
    fprintf(d->out, "%s: %s: ", file, kind);
  else
    fprintf(d->out, "modelc: %s: ", kind);
  vfprintf(d->out, fmt, ap);
  fputc('\n', d->out);
  print_caret(d, file, line, col);
}

void diag_verror(Diag *d, const char *file, int line, int col, const char *fmt, va_list ap) {
  d->nerrors++;
  int cap = d->max_errors > 0 ? d->max_errors : DIAG_DEFAULT_MAX;
  if (d->nerrors > cap) {
    if (!d->capped) {
      fprintf(d->out, "modelc: fatal error: too many errors emitted (%d), stopping now\n", cap);
      d->capped = true;
    }
    return;
  }
  report(d, "error", file, line, col, fmt, ap);
}

void diag_error(Diag *d, const char *file, int line, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(d, file, line, col, fmt, ap);
  va_end(ap);
}

void diag_warning(Diag *d, const char *file, int line, int col, const char *fmt, ...) {
  va_list ap;
  d->nwarnings++;
  va_start(ap, fmt);
  report(d, "warning", file, line, col, fmt, ap);
  va_end(ap);
}

void diag_note(Diag *d, const char *file, int line, int col, const char *fmt, ...) {
  if (d->capped) return;
  va_list ap;
  va_start(ap, fmt);
  report(d, "note", file, line, col, fmt, ap);
  va_end(ap);
}

bool diag_full(const Diag *d) {
  int cap = d->max_errors > 0 ? d->max_errors : DIAG_DEFAULT_MAX;
  return d->nerrors >= cap;
}

/* Optimal-string-alignment distance: insertions, deletions, substitutions and transpositions of
 * neighbours each cost 1, so "fsue" is one step from "fuse". */
static int edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return 1000;
  int dist[65][65];
  for (size_t i = 0; i <= la; i++) dist[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++) dist[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      int best = dist[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (dist[i - 1][j] + 1 < best) best = dist[i - 1][j] + 1;
      if (dist[i][j - 1] + 1 < best) best = dist[i][j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && dist[i - 2][j - 2] + 1 < best)
        best = dist[i - 2][j - 2] + 1;
      dist[i][j] = best;
    }
  return dist[la][lb];
}

const char *diag_suggest(const char *word, const char *const *candidates, int n) {
  if (!word) return NULL;
  int limit = (int)strlen(word) / 3 + 1;
  if (limit > 3) limit = 3;
  const char *best = NULL;
  int bestd = limit + 1;
  for (int i = 0; i < n; i++) {
    if (!candidates[i]) continue;
    int dist = edit_distance(word, candidates[i]);
    if (dist < bestd) {
      bestd = dist;
      best = candidates[i];
    }
  }
  return best;
}

_Noreturn void ir_die(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  fprintf(stderr, "%s:%d: internal error: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}
