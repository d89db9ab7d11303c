/* rt_internal.h: helpers shared by the runtime's own sources (not part of the public ABI in
 * modelc_rt.h). One definition each, so that e.g. the backward norms recompute exactly the row
 * statistics the forward norms computed. */
#ifndef MODELC_RT_INTERNAL_H
#define MODELC_RT_INTERNAL_H

#include <stddef.h>

#include "modelc_rt.h"

/* Rows per chunk for row-wise kernels over C columns: about 8K floats of work per chunk, so the
 * pool is only used when each thread gets at least that much. */
static inline int rt_row_grain(int C) { return C >= 8192 ? 1 : 8192 / (C > 0 ? C : 1); }

/* Sum of x[0..n) with 8 lanes, then a pairwise combine: accurate and vectorisable. */
static inline float rt_sum8(const float *x, int n) {
  float a[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) a[j] += x[i + j];
  float tail = 0.0f;
  for (; i < n; i++) tail += x[i];
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
}

/* Sum of (x[i] - m)^2 with 8 lanes. */
static inline float rt_sqdev8(const float *x, int n, float m) {
  float a[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) {
      float d = x[i + j] - m;
      a[j] += d * d;
    }
  float tail = 0.0f;
  for (; i < n; i++) tail += (x[i] - m) * (x[i] - m);
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
}

/* Max of x[0..n) (n >= 1). */
static inline float rt_max_row(const float *x, int n) {
  float m = x[0];
  for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

/* e[j] = exp(x[j] - mx) for j < n (e may equal x); returns their sum with 8 partial sums, so the
 * loop vectorises. The forward attention and its backward use this one formula, so the backward
 * recomputes exactly the forward's probabilities. */
static inline float rt_exp_row(float *e, const float *x, int n, float mx) {
  float a[8] = {0};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) {
      float v = rt_expf(x[j + k] - mx);
      e[j + k] = v;
      a[k] += v;
    }
  float tail = 0.0f;
  for (; j < n; j++) tail += e[j] = rt_expf(x[j] - mx);
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
}

/* Floats of one per-task scratch slice, rounded up to a cache line (no false sharing). */
static inline size_t rt_slice_floats(size_t n) { return (n + 15) / 16 * 16; }

/* A zeroed, 64-byte aligned block of at least n bytes (rounded up), or NULL. */
void *rt_xalloc(size_t n);

/* Elements of a parameter. */
static inline int64_t rt_param_numel(const RtParamInfo *p) {
  int64_t n = 1;
  for (int i = 0; i < p->ndim; i++) n *= p->shape[i];
  return n;
}

/* Floats of scratch a model's forward (training: any call of a training step) needs at the
 * current rt_threads(), as the program says (RtModel.scratch_floats); runtime/prog.c. */
size_t rt_model_scratch_floats(const RtModel *m, int training);
/* Floats of all the program's state slots for runs of `batch` sequences. */
int64_t rt_model_state_floats(const RtModel *m, int batch);

/* Reads a whole file into a malloc'd buffer (*out, *n). -1 with a message naming the file. */
int rt_read_file(const char *path, unsigned char **out, size_t *n, RtError *err);

/* Prints "PROG VERB: error: MESSAGE (see 'PROG VERB --help')" to stderr; returns 1, the user-error
 * exit status. */
int rt_usage_error(const char *prog, const char *verb, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Reads the option at argv[*i] of a verb's command line (GNU style: --key value or --key=value).
 * `allowed` lists the verb's options separated by spaces; `flags` those that take no value.
 * Returns 1 with key (at most 63 bytes) and *val (NULL for a flag), advancing *i past a separate
 * value; 0 for --help or -h; -1 after printing the error (unknown option, missing value). */
int rt_next_opt(const char *prog, const char *verb, int argc, char **argv, int *i, const char *allowed,
                const char *flags, char *key, const char **val);

#endif
