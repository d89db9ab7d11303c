/* sparse_gemv.c: the break-even sparsity of the CSR linear kernel (runtime/kernels/linear_sparse.c)
 * against the dense f32 rt_linear (the f32 GEMM layer: OpenBLAS sgemv for decode, the selected
 * f32 GEMM otherwise), which the prune pass uses to choose a weight's format (issue 12).
 *
 * For each weight shape N x K (GPT-2 small's 768x768, 3072x768, 768x3072; gpt-tiny's 512x128,
 * 128x512) and M (1 = decode, 64, 512 = a prefill; argv[2] picks one): the dense time, then for
 * sparsities 30, 40, 50, 70, 80, 90, 95% (random weights pruned by magnitude with
 * rt_prune_magnitude, packed with cap = nnz) the sparse time, each the median of RUNS samples
 * after warm-up (a sample repeats the call until it lasts >= 2 ms), as ms per call and dense /
 * sparse. The break-even sparsity of a shape and M is where dense / sparse first reaches 1,
 * linearly interpolated between the measured points ("<= 30%" when sparse already wins at 30%,
 * "none up to 95%" when it never does). The weights are hot in cache between calls (as in
 * quant_gemv.c): the kernels' own speed, not DRAM's.
 * Run by tests/bench/sparse_breakeven.sh (which builds it against the Release runtime), 1 thread:
 *   sparse_gemv [threads [M]] */
#include "modelc_rt.h"
#include "core/core.h"
#include "gemm/gemm.h"
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>

enum { RUNS = 31, WARM = 3, NS = 7 };
static const int sparsities[NS] = {30, 40, 50, 70, 80, 90, 95};

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct Call {
  float *y;
  const float *x, *w;
  const void *Ws;
  float *scratch;
  int M, N, K, cap;
} Call;

static void once(const Call *c) {
  if (c->Ws)
    rt_linear_csr(c->y, c->x, c->Ws, NULL, c->M, c->N, c->K, c->cap, NULL, NULL, c->scratch);
  else
    rt_linear(c->y, c->x, c->w, NULL, c->M, c->N, c->K, NULL, NULL);
}

/* median seconds of one call */
static double time_call(const Call *c) {
  double t0 = rt_now_seconds();
  once(c);
  double first = rt_now_seconds() - t0;
  int reps = first > 2e-3 ? 1 : (int)(2e-3 / (first > 1e-7 ? first : 1e-7)) + 1;
  double t[RUNS];
  for (int r = -WARM; r < RUNS; r++) {
    t0 = rt_now_seconds();
    for (int i = 0; i < reps; i++)
      once(c);
    if (r >= 0)
      t[r] = (rt_now_seconds() - t0) / reps;
  }
  qsort(t, RUNS, sizeof t[0], cmp);
  return t[RUNS / 2];
}

int main(int argc, char **argv) {
  rt_set_threads(argc > 1 ? atoi(argv[1]) : 1);
  const int only = argc > 2 ? atoi(argv[2]) : 0;
  char cpu[256];
  rt_cpu_describe(cpu, sizeof cpu);
  char gemm[256];
  rt_gemm_init(NULL);
  rt_gemm_describe(gemm, sizeof gemm);
  printf("threads %d, sparse kernels: %s\ncpu: %s\ngemm: %s\n", rt_threads(), rt_sparse_isa(), cpu, gemm);
  const int shapes[5][2] = {{768, 768}, {3072, 768}, {768, 3072}, {512, 128}, {128, 512}};
  const int Ms[3] = {1, 64, 512};
  printf("\n| N x K | M | dense ms |");
  for (int s = 0; s < NS; s++)
    printf(" %d%% ms (x) |", sparsities[s]);
  printf(" break-even |\n|---|---:|---:|");
  for (int s = 0; s < NS; s++)
    printf("---:|");
  printf("---:|\n");
  for (int mi = 0; mi < 3; mi++)
    for (int si = 0; si < 5; si++) {
      const int N = shapes[si][0], K = shapes[si][1], M = Ms[mi];
      if (only && M != only)
        continue;
      size_t NK = (size_t)N * K;
      float *w0 = malloc(NK * sizeof(float)), *w = malloc(NK * sizeof(float));
      float *x = malloc((size_t)M * K * sizeof(float)), *y = malloc((size_t)M * N * sizeof(float));
      uint8_t *mask = malloc(NK);
      for (size_t i = 0; i < NK; i++) w0[i] = (float)((i * 2654435761u) % 2001) * 1e-3f - 1.0f;
      for (size_t i = 0; i < (size_t)M * K; i++) x[i] = (float)((i * 40503u) % 1001) * 2e-3f - 1.0f;
      Call dense = {y, x, w0, NULL, NULL, M, N, K, 0};
      double td = time_call(&dense), ratio[NS];
      printf("| %dx%d | %d | %.4f |", N, K, M, td * 1e3);
      fflush(stdout);
      for (int s = 0; s < NS; s++) {
        memcpy(w, w0, NK * sizeof(float));
        rt_prune_magnitude(w, mask, (int64_t)NK, (int64_t)(NK * sparsities[s] / 100));
        int64_t cap = (int64_t)NK - rt_mask_zeros(mask, (int64_t)NK);
        void *Ws = rt_xalloc((size_t)rt_csr_bytes(N, K, cap));
        if (rt_csr_pack(Ws, w, N, K, cap, NULL))
          return 1;
        size_t sf = rt_linear_csr_scratch_floats(M, N, K);
        float *scratch = sf ? rt_xalloc(sf * sizeof(float)) : NULL;
        Call sp = {y, x, NULL, Ws, scratch, M, N, K, (int)cap};
        double ts = time_call(&sp);
        ratio[s] = td / ts;
        printf(" %.4f (%.2fx) |", ts * 1e3, ratio[s]);
        fflush(stdout);
        free(Ws), free(scratch);
      }
      /* the first crossing from below 1 to at least 1, interpolated */
      if (ratio[0] >= 1.0) {
        printf(" <= %d%% |\n", sparsities[0]);
      } else {
        int s = 1;
        while (s < NS && ratio[s] < 1.0)
          s++;
        if (s == NS)
          printf(" none up to %d%% |\n", sparsities[NS - 1]);
        else
          printf(" %.1f%% |\n", sparsities[s - 1] + (sparsities[s] - sparsities[s - 1]) * (1.0 - ratio[s - 1]) /
                                                        (ratio[s] - ratio[s - 1]));
      }
      free(w0), free(w), free(x), free(y), free(mask);
    }
  return 0;
}
