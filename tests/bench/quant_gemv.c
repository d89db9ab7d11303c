/* quant_gemv.c: the quantised linear kernels (runtime/kernels/linear_quant.c) against f32 rt_linear
 * at GPT-2 small's shapes (N x K = 768x768, 3072x768, 768x3072), for decode (M = 1) and batches
 * (M = 64, and M = 512 as in a prefill): the median of RUNS timed calls after warm-up, as ms per
 * call and GB/s of weight bytes read (the format's values and scales; f32: 4 N K). Not part of
 * CTest; for tuning. Build from the repo root after building build/ (the runtime's static library),
 * then run (M: only that one of 1, 64, 512):
 *   cc -O2 -Iruntime tests/bench/quant_gemv.c build/libmodelc_rt.a -o /tmp/quant_gemv -lopenblas -ldnnl -lgomp -lm -lpthread && /tmp/quant_gemv [threads [M]]
 * (drop -ldnnl -lgomp for a runtime built with -DMODELC_DNNL=OFF). MODELC_CPU=avx2|portable
 * selects the other paths. Machines here are shared: run it a few times and compare medians. */
#include "modelc_rt.h"
#include "core/core.h"
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>

enum { RUNS = 25, WARM = 3 };

typedef void (*LinQFn)(float *, const float *, const void *, const float *, int, int, int, RtRangeFn, void *, float *);

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* median seconds of one call; f NULL: f32 rt_linear on Wf */
static double time_one(RtFormat fmt, LinQFn f, float *y, const float *x, const void *W, int M, int N, int K,
                       float *scratch) {
  double t[RUNS];
  for (int r = -WARM; r < RUNS; r++) {
    double t0 = rt_now_seconds();
    int reps = M == 1 ? 20 : M < 512 ? 2 : 1; /* GEMVs are short: several per sample */
    for (int i = 0; i < reps; i++) {
      if (f)
        f(y, x, W, NULL, M, N, K, NULL, NULL, scratch);
      else
        rt_linear(y, x, W, NULL, M, N, K, NULL, NULL);
    }
    if (r >= 0)
      t[r] = (rt_now_seconds() - t0) / reps;
  }
  (void)fmt;
  qsort(t, RUNS, sizeof t[0], cmp);
  return t[RUNS / 2];
}

int main(int argc, char **argv) {
  rt_set_threads(argc > 1 ? atoi(argv[1]) : 0);
  char cpu[256];
  rt_cpu_describe(cpu, sizeof cpu);
  printf("threads %d, quantised kernels: %s\ncpu: %s\n", rt_threads(), rt_quant_isa(), cpu);
  const int shapes[3][2] = {{768, 768}, {3072, 768}, {768, 3072}};
  const int Ms[3] = {1, 64, 512}, only = argc > 2 ? atoi(argv[2]) : 0;
  const RtFormat fmts[4] = {RT_FMT_DENSE, RT_FMT_Q8_0, RT_FMT_Q4_0, RT_FMT_I8_ROW};
  const LinQFn fns[4] = {NULL, rt_linear_q8_0, rt_linear_q4_0, rt_linear_i8_row};
  printf("%-6s %4s %5s %5s %10s %8s %8s\n", "format", "M", "N", "K", "ms/call", "GB/s", "vs f32");
  for (int s = 0; s < 3; s++)
    for (int mi = 0; mi < 3; mi++) {
      int N = shapes[s][0], K = shapes[s][1], M = Ms[mi];
      if (only && M != only)
        continue;
      float *w = malloc((size_t)N * K * sizeof(float)), *x = malloc((size_t)M * K * sizeof(float));
      float *y = malloc((size_t)M * N * sizeof(float));
      for (size_t i = 0; i < (size_t)N * K; i++) w[i] = (float)((i * 2654435761u) % 2001) * 1e-3f - 1.0f;
      for (size_t i = 0; i < (size_t)M * K; i++) x[i] = (float)((i * 40503u) % 1001) * 2e-3f - 1.0f;
      double f32 = 0;
      for (int t = 0; t < 4; t++) {
        RtFormat fmt = fmts[t];
        void *W = w;
        float *scratch = NULL;
        double bytes = 4.0 * N * K;
        if (fmt != RT_FMT_DENSE) {
          W = rt_xalloc((size_t)rt_quant_bytes(fmt, N, K));
          if (rt_quantize(fmt, W, w, N, K, NULL))
            return 1;
          scratch = rt_xalloc(rt_linear_q_scratch_floats(fmt, M, N, K) * sizeof(float));
          bytes = (double)rt_quant_values_bytes(fmt, N, K) + (double)rt_quant_scales_bytes(fmt, N, K);
        }
        double sec = time_one(fmt, fns[t], y, x, W, M, N, K, scratch);
        if (fmt == RT_FMT_DENSE)
          f32 = sec;
        printf("%-6s %4d %5d %5d %10.4f %8.1f %7.2fx\n", rt_format_name(fmt), M, N, K, sec * 1e3, bytes / sec * 1e-9,
               f32 / sec);
        if (W != w)
          free(W);
        free(scratch);
      }
      free(w), free(x), free(y);
    }
  return 0;
}
