/* rt_test_util.h: helpers shared by the runtime's Check tests (tests/unit/test_rt_*.c): a seeded
 * fill of random floats, the normalised error used to compare a kernel with its _ref twin, and a
 * whole file read into memory. */
#ifndef RT_TEST_UTIL_H
#define RT_TEST_UTIL_H

#include "../../runtime/modelc_rt.h"
/* the runtime's internal headers: the _ref twins, file formats, sampling, the pool's setters */
#include "../../runtime/core/core.h"
#include "../../runtime/io/io.h"
#include "../../runtime/kernels/kernels.h"
#include "../../runtime/prog/prog.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Uniform floats in [lo, hi) from a seeded PCG32. */
static inline void fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed) {
  RtRng r;
  rt_rng_seed(&r, seed);
  for (size_t i = 0; i < n; i++)
    x[i] = lo + (hi - lo) * rt_rng_uniform(&r);
}

/* max |a - b| / max(max |b|, 1e-12): the error of a relative to reference b, normalised. */
static inline double norm_err(const float *a, const float *b, size_t n) {
  double md = 0, mb = 1e-12;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (d > md || d != d)
      md = d != d ? INFINITY : d;
    if (fabs(b[i]) > mb)
      mb = fabs(b[i]);
  }
  return md / mb;
}

/* max over elements of |a - b| / max(|b|, floor): per-element relative error with an absolute
 * floor so values near zero do not dominate. */
static inline double max_rel_err(const float *a, const float *b, size_t n, double floor) {
  double m = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]) / fmax(fabs(b[i]), floor);
    if (d > m || d != d)
      m = d != d ? INFINITY : d;
  }
  return m;
}

static inline float *falloc(size_t n) {
  float *p = malloc((n ? n : 1) * sizeof(float));
  return p;
}

/* A whole file into a malloc'd buffer with a NUL after it (*n bytes), or NULL if it cannot be opened. */
static inline unsigned char *slurp(const char *path, size_t *n) {
  *n = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)len + 1);
  *n = fread(b, 1, (size_t)len, f);
  b[*n] = 0;
  fclose(f);
  return b;
}

/* A linear kernel's epilogue for tests (test_rt_quant, test_rt_sparse): copies rows [lo,hi) of y
 * as it sees them and counts each row's calls. */
typedef struct Seen {
  const float *y;
  float *copy;
  int *calls;
  int N;
} Seen;
static inline void epi_record(void *p, int lo, int hi) {
  Seen *s = p;
  memcpy(s->copy + (size_t)lo * s->N, s->y + (size_t)lo * s->N, (size_t)(hi - lo) * s->N * sizeof(float));
  for (int m = lo; m < hi; m++)
    s->calls[m]++;
}

#endif
