/* npy_test.h: reading .npy fixtures in the Check tests that compare programs with PyTorch
 * (test_program, test_program_bf16, test_rope): a failed read fails the test with its message. */
#ifndef NPY_TEST_H
#define NPY_TEST_H

#include <check.h>
#include <stddef.h>

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

#endif
