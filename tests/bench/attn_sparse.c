/* attn_sparse.c: the attention kernels at long contexts (issue 13's table: docs/benchmarks.md,
 * "Block-sparse attention (issue 13)"), run by tests/bench/sparse_attention.sh.
 *
 *   attn_sparse T C HEADS CAUSAL TILE [RUNS]
 *
 * Times, at batch 1, the dense kernels (rt_attention, rt_attention_dx) and the block-sparse ones
 * (rt_attention_sparse, rt_attention_sparse_dx) for local window 256, strided l = 128, fixed
 * l = 128 with c = 16 summary columns, and local 256 with 16 global tokens, at tile TILE: the
 * forward, and a training step's attention (the forward, then the backward, which recomputes the
 * scores), each the median of RUNS (default 7) calls after 2 warm-ups. The kernels take turns
 * (round i times each kernel's forward, then each one's training step), so that a change of the
 * machine's speed during the run (a shared VM) falls on all of them alike, not on one. For each it prints the
 * allowed query-key pairs (rt_sparse_allowed, counted per row in closed form by the IR's FLOP rule;
 * here by intervals), their fraction of dense's, the FLOP-proportional ideal speed-up (dense pairs
 * / pattern pairs), the measured speed-ups, and the scratch floats the kernels ask for (with the
 * (T, 3C) activations, their planned memory). One line per kernel: 'key=value' fields. */
#include "modelc_rt.h"
#include "core/core.h"
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct Run {
  const RtSparsePattern *p; /* NULL: dense */
  float *out, *dqkv, *scratch, *scratch_dx;
  const float *qkv, *dy;
  int T, C, H, causal;
} Run;

static void fwd(const Run *r) {
  if (r->p)
    rt_attention_sparse(r->out, r->qkv, 1, r->T, r->C, r->H, r->causal, r->p, r->scratch);
  else
    rt_attention(r->out, r->qkv, 1, r->T, r->C, r->H, r->causal, r->scratch);
}
static void bwd(const Run *r) {
  if (r->p)
    rt_attention_sparse_dx(r->dqkv, r->qkv, r->dy, 1, r->T, r->C, r->H, r->causal, r->p, r->scratch_dx);
  else
    rt_attention_dx(r->dqkv, r->qkv, r->dy, 1, r->T, r->C, r->H, r->causal, r->scratch_dx);
}

static double median(double *t, int n) {
  qsort(t, (size_t)n, sizeof t[0], cmp);
  return t[n / 2];
}

/* seconds of one fwd (train = 0) or fwd + bwd (train = 1) */
static double time_one(const Run *r, int train) {
  double t0 = rt_now_seconds();
  fwd(r);
  if (train)
    bwd(r);
  return rt_now_seconds() - t0;
}

static long long pairs(const RtSparsePattern *p, int T, int causal) {
  long long n = 0;
  if (!p)
    return causal ? (long long)T * (T + 1) / 2 : (long long)T * T;
  for (int q = 0; q < T; q++)
    for (int k = 0; k < T; k++)
      n += rt_sparse_allowed(p, causal, q, k);
  return n;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: attn_sparse T C HEADS CAUSAL TILE [RUNS]\n");
    return 2;
  }
  int T = atoi(argv[1]), C = atoi(argv[2]), H = atoi(argv[3]), causal = atoi(argv[4]), tile = atoi(argv[5]);
  int runs = argc > 6 ? atoi(argv[6]) : 7;
  if (runs < 1 || runs > 64)
    runs = 7;
  const char *thr = getenv("MODELC_THREADS");
  rt_set_threads(thr ? atoi(thr) : 2);
  const RtSparsePattern pats[] = {
      {RT_SPARSE_LOCAL, tile, 256, 0, 0, 0},
      {RT_SPARSE_STRIDED, tile, 0, 128, 0, 0},
      {RT_SPARSE_FIXED, tile, 0, 128, 16, 0},
      {RT_SPARSE_LOCAL, tile, 256, 0, 0, 16},
  };
  const char *names[] = {"dense", "local256", "strided128", "fixed128c16", "local256g16"};
  size_t nq = (size_t)T * 3 * C, no = (size_t)T * C;
  float *qkv = malloc(nq * sizeof(float)), *dy = malloc(no * sizeof(float));
  float *out = malloc(no * sizeof(float)), *dq = malloc(nq * sizeof(float));
  if (!qkv || !dy || !out || !dq)
    return 1;
  uint64_t s = 12345;
  for (size_t i = 0; i < nq; i++)
    qkv[i] = (float)((s = s * 6364136223846793005ULL + 1442695040888963407ULL) >> 40) / (float)(1 << 24) * 2 - 1;
  for (size_t i = 0; i < no; i++)
    dy[i] = (float)((s = s * 6364136223846793005ULL + 1442695040888963407ULL) >> 40) / (float)(1 << 24) - 0.5f;
  enum { NK = 5 };
  Run r[NK];
  size_t sf[NK], sd[NK];
  for (int k = 0; k < NK; k++) {
    const RtSparsePattern *p = k ? &pats[k - 1] : NULL;
    sf[k] = p ? rt_attention_sparse_scratch_floats(T, C, H, p) : rt_attention_scratch_floats(T, C, H);
    sd[k] = p ? rt_attention_sparse_dx_scratch_floats(T, C, H, p) : rt_attention_dx_scratch_floats(T, C, H);
    r[k] = (Run){p, out, dq, malloc(sf[k] * sizeof(float)), malloc(sd[k] * sizeof(float)), qkv, dy, T, C, H, causal};
    if (!r[k].scratch || !r[k].scratch_dx)
      return 1;
  }
  static double tf[NK][64], tt[NK][64];
  for (int i = -2; i < runs; i++) /* i < 0: warm-ups */
    for (int train = 0; train <= 1; train++)
      for (int k = 0; k < NK; k++) {
        double t = time_one(&r[k], train);
        if (i >= 0)
          (train ? tt : tf)[k][i] = t;
      }
  double dense_f = median(tf[0], runs), dense_t = median(tt[0], runs);
  long long dense_pairs = pairs(NULL, T, causal);
  for (int k = 0; k < NK; k++) {
    const RtSparsePattern *p = r[k].p;
    double f = median(tf[k], runs), t = median(tt[k], runs);
    long long np = pairs(p, T, causal);
    printf("kernel=%s T=%d causal=%d tile=%d threads=%d pairs=%lld fraction=%.4f ideal=%.2f fwd_ms=%.3f train_ms=%.3f "
           "fwd_x=%.2f train_x=%.2f scratch_floats=%zu dx_scratch_floats=%zu\n",
           names[k], T, causal, p ? tile : 0, rt_threads(), np, (double)np / dense_pairs, (double)dense_pairs / np,
           f * 1e3, t * 1e3, dense_f / f, dense_t / t, sf[k], sd[k]);
    fflush(stdout);
    free(r[k].scratch), free(r[k].scratch_dx);
  }
  free(qkv), free(dy), free(out), free(dq);
  return 0;
}
