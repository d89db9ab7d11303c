/* sgemm_peak.c: this machine's reference figures for tests/bench/run.sh.
 *
 *   sgemm_peak [N] [THREADS]      (defaults 1024, 2)
 *
 * 1. OpenBLAS's own cblas_sgemm on N x N x N (row-major, C = A B^T as our linear layers do) with
 *    THREADS BLAS threads: median and best GFLOP/s of 9 calls after 2 warm-ups.
 * 2. Memory bandwidth with THREADS pthreads over arrays of 32 Mi floats (128 MiB each, far beyond
 *    any cache): read (sum), copy (a = b) and triad (a = b + s c), best of 5 passes each, in GB/s
 *    (1e9 bytes/s; bytes counted as the kernel reads and writes them, write-allocate not counted).
 *
 * 3. The linear layers of one decode step of tests/bench/small.yaml at batch 1 (6 layers of
 *    [1152,384] [384,384] [1536,384] [384,1536] plus the [4096,384] head; 49 MB of distinct weights,
 *    so they come from memory as in real decoding) done as our runtime does them, cblas_sgemm with
 *    M = 1, and as cblas_sgemv, with THREADS and with 1 BLAS thread: median ms per step of 15.
 *
 * Prints 'key: value' lines. Build: cc -O2 -march=native sgemm_peak.c -o sgemm_peak -lopenblas -lpthread
 */
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern void openblas_set_num_threads(int);
extern char *openblas_get_config(void);

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

#define NMEM ((size_t)32 << 20)
static float *ma, *mb, *mc;
static volatile float sink[128];

typedef struct {
  int kind, id, nthreads;
} Job;

/* -O3 for this function only: at -O2 GCC does not vectorise the read reduction */
__attribute__((optimize("O3"))) static void *mem_worker(void *p) {
  const Job *j = p;
  size_t lo = NMEM * (size_t)j->id / (size_t)j->nthreads, hi = NMEM * (size_t)(j->id + 1) / (size_t)j->nthreads;
  if (j->kind == 0) {
    /* an integer xor reduction: associative, so the compiler vectorises it (a float sum would be
     * latency-bound without -ffast-math and understate the bandwidth) */
    const unsigned *w = (const unsigned *)mb;
    unsigned x = 0;
    for (size_t i = lo; i < hi; i++) x ^= w[i];
    sink[j->id * 8] = (float)x;
  } else if (j->kind == 1) {
    memcpy(ma + lo, mb + lo, (hi - lo) * sizeof(float));
  } else {
    for (size_t i = lo; i < hi; i++) ma[i] = mb[i] + 3.0f * mc[i];
  }
  return NULL;
}

static double mem_pass(int kind, int nthreads) {
  pthread_t th[16];
  Job jobs[16];
  double t = now();
  for (int i = 0; i < nthreads; i++) {
    jobs[i] = (Job){kind, i, nthreads};
    pthread_create(&th[i], NULL, mem_worker, &jobs[i]);
  }
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
  return now() - t;
}

static double decode_linears(int use_gemv, int threads) {
  static const int shapes[5][2] = {{1152, 384}, {384, 384}, {1536, 384}, {384, 1536}, {4096, 384}};
  static float *w[25], x[4096], y[4096];
  int nw = 0;
  if (!w[0])
    for (int l = 0; l < 25; l++) {
      const int *sh = shapes[l == 24 ? 4 : l % 4];
      w[l] = malloc(sizeof(float) * (size_t)sh[0] * (size_t)sh[1]);
      for (size_t i = 0; i < (size_t)sh[0] * sh[1]; i++) w[l][i] = (float)(i % 17) * 1e-3f;
    }
  for (int i = 0; i < 4096; i++) x[i] = 1e-3f * (float)(i % 13);
  openblas_set_num_threads(threads);
  enum { STEPS = 15 };
  double t[STEPS];
  for (int k = 0; k < STEPS + 2; k++) {
    double t0 = now();
    for (nw = 0; nw < 25; nw++) {
      const int *sh = shapes[nw == 24 ? 4 : nw % 4];
      int N = sh[0], K = sh[1];
      if (use_gemv)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w[nw], K, x, 1, 0.0f, y, 1);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, N, K, 1.0f, x, K, w[nw], K, 0.0f, y, N);
    }
    if (k >= 2) t[k - 2] = now() - t0;
  }
  qsort(t, STEPS, sizeof *t, cmp);
  return 1e3 * t[STEPS / 2];
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1024, threads = argc > 2 ? atoi(argv[2]) : 2;
  if (n <= 0 || threads <= 0 || threads > 16) {
    fprintf(stderr, "usage: sgemm_peak [N] [THREADS<=16]\n");
    return 2;
  }
  openblas_set_num_threads(threads);
  float *A = malloc(sizeof(float) * (size_t)n * n), *B = malloc(sizeof(float) * (size_t)n * n),
        *C = malloc(sizeof(float) * (size_t)n * n);
  if (!A || !B || !C) return 1;
  for (size_t i = 0; i < (size_t)n * n; i++) {
    A[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    B[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
  }
  enum { REPS = 9 };
  double t[REPS];
  for (int k = 0; k < REPS + 2; k++) {
    double t0 = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
    if (k >= 2) t[k - 2] = now() - t0;
  }
  qsort(t, REPS, sizeof *t, cmp);
  double flops = 2.0 * n * n * n;
  printf("openblas_config: %s\nsgemm_n: %d\nsgemm_threads: %d\n", openblas_get_config(), n, threads);
  printf("sgemm_gflops_median: %.2f\nsgemm_gflops_best: %.2f\n", flops / t[REPS / 2] / 1e9, flops / t[0] / 1e9);
  free(A), free(B), free(C);

  ma = malloc(NMEM * sizeof(float)), mb = malloc(NMEM * sizeof(float)), mc = malloc(NMEM * sizeof(float));
  if (!ma || !mb || !mc) return 1;
  for (size_t i = 0; i < NMEM; i++) ma[i] = 0.f, mb[i] = 1.f, mc[i] = 2.f; /* fault the pages in */
  const char *names[3] = {"read", "copy", "triad"};
  const double bytes[3] = {4.0 * NMEM, 8.0 * NMEM, 12.0 * NMEM};
  for (int kind = 0; kind < 3; kind++) {
    double best = 1e30;
    for (int k = 0; k < 5; k++) {
      double s = mem_pass(kind, threads);
      if (s < best) best = s;
    }
    printf("mem_%s_gbs: %.2f\n", names[kind], bytes[kind] / best / 1e9);
  }
  free(ma), free(mb), free(mc);

  printf("decode_linears_ms_sgemm_m1_%dt: %.3f\n", threads, decode_linears(0, threads));
  printf("decode_linears_ms_sgemv_%dt: %.3f\n", threads, decode_linears(1, threads));
  if (threads != 1) {
    printf("decode_linears_ms_sgemm_m1_1t: %.3f\n", decode_linears(0, 1));
    printf("decode_linears_ms_sgemv_1t: %.3f\n", decode_linears(1, 1));
  }
  return 0;
}
