/* text_test.h: text for the tests that read specs and IR and check diagnostics (test_frontend,
 * test_ir, test_passes): a Diag whose output is kept in memory (open_memstream), and a whole file
 * read into memory. */
#ifndef TEXT_TEST_H
#define TEXT_TEST_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../ir/diag.h"

typedef struct MemDiag {
  Diag d;
  FILE *f;
  char *text;
  size_t len;
} MemDiag;

/* Starts capturing; at most max_errors errors are printed (0: the Diag's default). */
static inline void md_open(MemDiag *md, int max_errors) {
  md->text = NULL;
  md->len = 0;
  md->f = open_memstream(&md->text, &md->len);
  ck_assert_ptr_nonnull(md->f);
  diag_init(&md->d, md->f);
  if (max_errors > 0) md->d.max_errors = max_errors;
}

/* Flushes and returns the text so far (valid until md_close). */
static inline const char *md_text(MemDiag *md) {
  fflush(md->f);
  return md->text ? md->text : "";
}

static inline void md_close(MemDiag *md) {
  diag_free(&md->d);
  fclose(md->f);
  free(md->text);
}

/* The file's bytes, NUL-terminated (its length in *len when len is not NULL); NULL when it cannot
 * be opened. */
static inline char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  ck_assert_ptr_nonnull(s);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = 0;
  fclose(f);
  if (len) *len = got;
  return s;
}

#endif
