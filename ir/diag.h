/* diag.h: user-facing diagnostics, collected across a whole run.
 *
 * Every user error is printed as "FILE:LINE:COL: error: MESSAGE", followed (when the source text
 * was registered with diag_add_source) by the source line and a caret under the column, as clang
 * does. Errors are printed as they are reported and counted; after `max_errors` further errors are
 * dropped and one "too many errors" line is printed. Lines and columns are 1-based; line 0 means
 * "no location" and prints "FILE: error: MESSAGE" (or "modelc: error: MESSAGE" with no file).
 */
#ifndef MODELC_DIAG_H
#define MODELC_DIAG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct DiagSource {
  char *file;          /* file name as given by the user */
  char *text;          /* the whole file, owned */
  size_t len;          /* bytes in text */
  struct DiagSource *next;
} DiagSource;

typedef struct Diag {
  FILE *out;           /* where messages go (stderr in the driver, a memstream in tests) */
  int nerrors;         /* errors reported so far (including dropped ones) */
  int nwarnings;       /* warnings reported so far */
  int max_errors;      /* cap on printed errors; 0 means the default (20) */
  bool capped;         /* the "too many errors" line has been printed */
  DiagSource *sources; /* registered source texts, for caret lines */
} Diag;

void diag_init(Diag *d, FILE *out);
void diag_free(Diag *d);
/* Registers a copy of a file's text so later errors in it show the line and a caret. */
void diag_add_source(Diag *d, const char *file, const char *text, size_t len);
void diag_error(Diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void diag_verror(Diag *d, const char *file, int line, int col, const char *fmt, va_list ap);
void diag_warning(Diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void diag_note(Diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* True once the error cap is reached: callers may stop looking for more errors. */
bool diag_full(const Diag *d);

/* Levenshtein-closest candidate within a small distance, or NULL: for "did you mean" hints. */
const char *diag_suggest(const char *word, const char *const *candidates, int n);

/* Internal errors (bugs, never user input): print file:line and abort. */
_Noreturn void ir_die(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define die(...) ir_die(__FILE__, __LINE__, __VA_ARGS__)
#define IR_ASSERT(c) ((c) ? (void)0 : ir_die(__FILE__, __LINE__, "assertion failed: %s", #c))

#endif
