/* npy_test.h: reading .npy fixtures in the Check tests that compare programs with PyTorch
 * (test_program, test_program_bf16, test_rope): a failed read fails the test with its message. */
#ifndef NPY_TEST_H
#define NPY_TEST_H

#include <check.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../../runtime/io/io.h" /* .npy (internal) */

static inline RtNpy load(const char *path) {
  RtNpy a;
  RtError err;
  ck_assert_msg(rt_npy_read(path, &a, &err) == 0, "%s", err.msg);
  return a;
}

static inline size_t numel(const RtNpy *a) {
  size_t n = 1;
  for (int i = 0; i < a->ndim; i++) n *= (size_t)a->shape[i];
  return n;
}

/* Writes an int32 .npy of shape (rows, cols) holding the bytes of text (rows * cols of them). */
static inline void write_tokens_npy(const char *path, const char *text, int rows, int cols) {
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "cannot write %s", path);
  char hdr[128];
  int n = snprintf(hdr, sizeof hdr, "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols);
  while ((10 + n + 1) % 64) hdr[n++] = ' ';
  hdr[n++] = '\n';
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  unsigned char hl[2] = {(unsigned char)(n & 255), (unsigned char)(n >> 8)};
  fwrite(hl, 1, 2, f);
  fwrite(hdr, 1, (size_t)n, f);
  for (int i = 0; i < rows * cols; i++) {
    int32_t t = text[i];
    fwrite(&t, 4, 1, f);
  }
  fclose(f);
}

/* max |a - b| over max |b| of two f32 arrays of the same size. */
static inline double npy_max_rel(const RtNpy *a, const RtNpy *b) {
  ck_assert_int_eq(numel(a), numel(b));
  double d = 0, s = 1e-30;
  for (size_t i = 0; i < numel(a); i++) {
    double e = fabs((double)((float *)a->data)[i] - ((float *)b->data)[i]);
    d = e > d ? e : d;
    s = fabs(((float *)b->data)[i]) > s ? fabs(((float *)b->data)[i]) : s;
  }
  return d / s;
}

#endif
