/* npy_test.h: reading .npy and safetensors fixtures in the Check tests that compare programs with
 * PyTorch (test_program*, test_rope, test_train): a failed read fails the test with its message;
 * the relative error the comparisons use; the loss a program printed. */
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

/* max |a - b| over max |b| of n floats (a NaN in a counts as an infinite difference). */
static inline double max_rel(const float *a, const float *b, size_t n) {
  double md = 0, mb = 1e-30;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= md)) md = d;
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  return md / mb;
}

/* The same for two f32 arrays of the same size. */
static inline double npy_max_rel(const RtNpy *a, const RtNpy *b) {
  ck_assert_int_eq(numel(a), numel(b));
  return max_rel(a->data, b->data, numel(a));
}

/* The "loss: X" line a program's grad or train verb printed into path. */
static inline double read_loss(const char *path) {
  FILE *f = fopen(path, "r");
  ck_assert_msg(f, "%s", path);
  double loss = NAN;
  char line[256];
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "loss: %lf", &loss) == 1) break;
  fclose(f);
  return loss;
}

/* Every tensor of the safetensors file ref_path is in ours_path with its byte size (and ours has no
 * other); with tol >= 0 each one's values are within tol of ref's largest element (max_rel).
 * Returns the worst such error. */
static inline double compare_tensors(const char *ours_path, const char *ref_path, double tol) {
  RtSafetensors *o, *r;
  RtError err;
  ck_assert_msg(rt_st_open(&o, ours_path, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_st_open(&r, ref_path, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_st_count(o) == rt_st_count(r), "%s holds %d tensors, the reference %s %d", ours_path,
                rt_st_count(o), ref_path, rt_st_count(r));
  double worst = 0;
  for (int i = 0; i < rt_st_count(r); i++) {
    const RtTensor *t = rt_st_tensor(r, i), *u = rt_st_find(o, t->name);
    ck_assert_msg(u, "%s: no tensor %s", ours_path, t->name);
    ck_assert_msg(u->ndim == t->ndim && u->nbytes == t->nbytes, "%s: %s has another shape", ours_path, t->name);
    if (tol < 0) continue;
    double e = max_rel((const float *)u->data, (const float *)t->data, t->nbytes / 4);
    ck_assert_msg(e <= tol, "%s: %s differs from PyTorch's by %g of its largest element", ours_path, t->name, e);
    if (e > worst) worst = e;
  }
  rt_st_close(o), rt_st_close(r);
  return worst;
}

#endif
