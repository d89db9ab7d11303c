/* moe_kernel.c: the mixture-of-experts kernels alone (runtime/kernels/moe.c), at moe-tiny's shapes
 * by default, for tests/bench/moe.sh's kernel table and for profiling (perf record on it).
 *
 *   moe_kernel N C H K E[,E...] [RUNS]
 *
 * For each E: x (N,C) drawn from N(0,1) (a layer norm's output), the router and the experts'
 * weights from N(0, 0.02) as the programs' initialiser, capacity factor E (nothing dropped); times
 * rt_moe (the forward) and rt_moe_dx (the backward, which recomputes the forward), each the median
 * of RUNS (default 15) calls after 3 warm-ups, in the threads MODELC_THREADS names. One line per E:
 * 'key=value' fields (microseconds per call and per token, the largest and smallest expert load,
 * the zero rows the transposed tiles add: runtime/kernels/moe.c).
 * MOE_FORWARD_ONLY=1 skips the backward (to profile the forward). */
#include "modelc_rt.h"
#include "core/core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static uint64_t rng = 88172645463325252ull;
static double uni(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static float *normal(size_t n, float sd) {
  float *p = malloc(sizeof *p * (n ? n : 1));
  if (!p) exit(2);
  for (size_t i = 0; i < n; i++) p[i] = (float)(sd * sqrt(-2 * log(uni())) * cos(6.283185307179586 * uni()));
  return p;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: moe_kernel N C H K E[,E...] [RUNS]\n");
    return 2;
  }
  int N = atoi(argv[1]), C = atoi(argv[2]), H = atoi(argv[3]), K = atoi(argv[4]);
  int runs = argc > 6 ? atoi(argv[6]) : 15;
  const char *env = getenv("MODELC_THREADS");
  int fwd_only = getenv("MOE_FORWARD_ONLY") != NULL; /* profiling the forward alone */
  rt_set_threads(env ? atoi(env) : 1);
  for (char *s = argv[5]; *s;) {
    int E = (int)strtol(s, &s, 10);
    if (*s == ',') s++;
    if (E < 1 || E < K) return 2;
    size_t nc = (size_t)N * C;
    float *x = normal(nc, 1.0f), *wr = normal((size_t)E * C, 0.02f), *w1 = normal((size_t)E * H * C, 0.02f);
    float *b1 = normal((size_t)E * H, 0.0f), *w2 = normal((size_t)E * C * H, 0.02f), *b2 = normal((size_t)E * C, 0.0f);
    float *dy = normal(nc, 1.0f), *y = normal(nc, 0), *dx = normal(nc, 0), *dwr = normal((size_t)E * C, 0);
    float *dw1 = normal((size_t)E * H * C, 0), *db1 = normal((size_t)E * H, 0), *dw2 = normal((size_t)E * C * H, 0);
    float *db2 = normal((size_t)E * C, 0), *load = normal((size_t)E + 2, 0);
    float *scratch = calloc(rt_moe_scratch_floats(N, C, E, H, K), sizeof(float)), aux; /* no draws: the same inputs for any scratch size */
    double *tf = malloc(sizeof *tf * (size_t)runs), *tb = malloc(sizeof *tb * (size_t)runs);
    for (int r = -3; r < runs; r++) {
      double t0 = rt_now_seconds();
      rt_moe(y, &aux, load, x, wr, w1, b1, w2, b2, N, C, E, H, K, (float)E, 0.01f, 2, scratch);
      double t1 = rt_now_seconds();
      if (!fwd_only)
        rt_moe_dx(dx, dwr, dw1, db1, dw2, db2, x, wr, w1, b1, w2, b2, dy, 1.0f, N, C, E, H, K, (float)E, 0.01f, 2,
                scratch);
      double t2 = rt_now_seconds();
      if (r >= 0) tf[r] = t1 - t0, tb[r] = t2 - t1;
    }
    qsort(tf, (size_t)runs, sizeof *tf, cmp);
    qsort(tb, (size_t)runs, sizeof *tb, cmp);
    float lo = load[2], hi = load[2];
    int pad = 0; /* the zero rows of the transposed tiles (moe.c's plan: tiles <= 64 rows padded to 16) */
    for (int e = 0; e < E; e++) {
      int m = (int)load[2 + e], nt = (m + 127) / 128, rt = nt ? ((m + nt - 1) / nt + 15) / 16 * 16 : 0;
      for (int j = 0; j < m; j += rt) {
        int r = m - j < rt ? m - j : rt;
        if (r <= 64) pad += (r + 15) / 16 * 16 - r;
      }
      lo = fminf(lo, load[2 + e]), hi = fmaxf(hi, load[2 + e]);
    }
    printf("E=%d K=%d N=%d C=%d H=%d threads=%d forward_us=%.1f forward_us_per_token=%.3f backward_us=%.1f "
           "backward_us_per_token=%.3f load_min=%g load_max=%g padded_rows=%d\n",
           E, K, N, C, H, rt_threads(), tf[runs / 2] * 1e6, tf[runs / 2] * 1e6 / N, tb[runs / 2] * 1e6,
           tb[runs / 2] * 1e6 / N, lo, hi, pad);
    float *all[] = {x, wr, w1, b1, w2, b2, dy, y, dx, dwr, dw1, db1, dw2, db2, load, scratch};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
    free(tf), free(tb);
  }
  return 0;
}
