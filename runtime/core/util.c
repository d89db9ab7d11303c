/* util.c: the runtime's smallest shared pieces: the error convention (rt_fail), the monotonic
 * clock and the aligned allocation every buffer of the runtime comes from (rt_xalloc). */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int rt_fail(RtError *err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return -1;
}

double rt_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void *rt_xalloc(size_t n) {
  if (n == 0) n = 64;
  n = (n + 63) / 64 * 64;
  void *p = aligned_alloc(64, n);
  if (p) memset(p, 0, n);
  return p;
}
