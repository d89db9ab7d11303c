/* bench.c: the bench verb: forward tokens/s at the full compiled batch and context, decode
 * tokens/s with the KV cache, and (with training compiled in) one training step, as medians of
 * several runs, each series after BENCH_WARMUPS untimed calls, printed as 'key: value' lines
 * (tests/bench/ reads them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "prog.h"

/* Untimed calls before each timed series (forward, decode, training step): the benchmark's rule
 * is at least 3 warm-up steps for every engine (tests/bench/run.sh). */
#define BENCH_WARMUPS 3

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int rt_verb_bench(const char *prog, int argc, char **argv, const RtModel *m) {
  RtOpts o;
  int help = 0;
  if (rt_parse_opts(prog, "bench", argc, argv, "--weights --runs --threads --seed -n", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s bench [--weights W] [--runs N] [--threads N] [-n DECODE_TOKENS]\n\n"
           "Forward tokens/s at the full compiled batch and context, and decode tokens/s at batch 1\n"
           "with the KV cache (language models), as medians of N runs (default 7), each series\n"
           "after %d untimed warm-up calls. Programs built with the autodiff pass also time one\n"
           "training step at the full compiled batch and context: train (forward + backward into\n"
           "the gradients) then AdamW over every parameter (lr 1e-4; betas, eps, weight decay\n"
           "from the spec), after %d warm-up steps.\n"
           "Without weights, the parameters are drawn at random (speed does not depend on their\n"
           "values). Prints 'key: value' lines.\n", prog, BENCH_WARMUPS, BENCH_WARMUPS);
    return EXIT_OK;
  }
  RtError err;
  RtRun r;
  int rc = EXIT_OK;
  int B = (int)m->batch, T = (int)m->context;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
  float *out = rt_xalloc(rt_out_floats(m, B, T) * sizeof(float));
  double *times = calloc((size_t)o.runs, sizeof(double));
  RtRng g;
  rt_rng_seed(&g, o.seed);
  if (rt_run_init(&r, m, &err) || !ids || !out || !times ||
      (o.weights || m->embedded_weights ? rt_run_load_weights(&r, o.weights, &err) : 0)) {
    rc = rt_prog_error(prog, &err);
    goto done;
  }
  rt_run_weights_readonly(&r); /* until the training steps below */
  int all_f32 = rt_model_require_f32(m, "bench", NULL) == 0;
  if (!o.weights && !m->embedded_weights) {
    if (all_f32) { /* the whole buffer, padding included */
      float *wf = (float *)r.W;
      for (int64_t i = 0; i < rt_weight_floats(m); i++) wf[i] = 0.02f * rt_normal(&g);
    } else { /* each parameter drawn in f32, stored in its dtype */
      for (int i = 0; i < m->nparams && rc == EXIT_OK; i++) {
        const RtParamInfo *p = &m->params[i];
        float *tmp = malloc((size_t)rt_param_numel(p) * sizeof(float) + 1);
        if (!tmp) {
          fprintf(stderr, "%s: error: out of memory\n", prog);
          rc = EXIT_USER;
          goto done;
        }
        for (int64_t j = 0; j < rt_param_numel(p); j++) tmp[j] = 0.02f * rt_normal(&g);
        int bad = rt_param_store_f32(p, r.W, tmp, &err);
        free(tmp);
        if (bad) {
          rc = rt_prog_error(prog, &err);
          goto done;
        }
      }
    }
  }
  for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(rt_rng_u32(&g) % (uint32_t)m->vocab);
  RtStep s = {B, T, 0, NULL, r.scratch, 0, 0.0f, NULL};
  for (int k = 0; k < BENCH_WARMUPS; k++) m->forward(&s, r.arena, r.W, ids, out);
  for (int k = 0; k < o.runs; k++) {
    double t0 = rt_now_seconds();
    m->forward(&s, r.arena, r.W, ids, out);
    times[k] = rt_now_seconds() - t0;
  }
  double fwd = median(times, (int)o.runs);
  printf("model: %s\nforward_batch: %d\nforward_context: %d\nforward_seconds: %.6f\nforward_tokens_per_s: %.1f\n",
         m->name, B, T, fwd, B * T / fwd);
  printf("forward_gflops: %.2f\n", (double)m->flops_per_token * B * T / fwd / 1e9);
  printf("threads: %d\nwarmups: %d\n", rt_threads(), BENCH_WARMUPS);
  char gemm[256];
  rt_gemm_describe(gemm, sizeof gemm);
  printf("gemm: %s\n", gemm);
  if (rt_is_lm(m) && m->nstate > 0) {
    if (rt_run_kv(&r, 1, &err)) {
      rc = rt_prog_error(prog, &err);
      goto done;
    }
    int steps = o.have_n && o.n > 0 && o.n < T ? (int)o.n : T - 1;
    for (int k = -BENCH_WARMUPS; k < (int)o.runs; k++) { /* k < 0: warm-up sequences */
      RtStep p = {1, 1, 0, r.state, r.scratch, 0, 0.0f, NULL};
      m->forward(&p, r.arena, r.W, ids, out);
      double t0 = rt_now_seconds();
      for (int t = 1; t <= steps; t++) {
        RtStep d = {1, 1, t, r.state, r.scratch, 0, 0.0f, NULL};
        m->forward(&d, r.arena, r.W, ids + t, out);
      }
      if (k >= 0) times[k] = (rt_now_seconds() - t0) / steps;
    }
    double dec = median(times, (int)o.runs);
    printf("decode_tokens: %d\ndecode_seconds_per_token: %.6f\ndecode_tokens_per_s: %.1f\n", steps, dec, 1.0 / dec);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  long rss_inference = ru.ru_maxrss; /* peak_rss_kib: forward and decode only, as before */
  if (m->train && all_f32) {
    /* One optimiser step as PROG train takes it with micro-batch = batch and no clipping: train
     * (forward + backward, gradients written into G) then AdamW on every parameter. The
     * arena and scratch are sized as prog/train.c sizes them; the weights are trained in place
     * (speed does not depend on their values). */
    const RtTrainConfig *c = &m->train_config;
    int64_t nw = rt_weight_floats(m);
    size_t ab = (size_t)(m->train_arena_bytes > m->arena_bytes ? m->train_arena_bytes : m->arena_bytes);
    size_t sf = rt_model_scratch_floats(m, 1);
    float *G = rt_xalloc((size_t)nw * sizeof(float)), *s1 = rt_xalloc((size_t)nw * sizeof(float));
    float *s2 = rt_xalloc((size_t)nw * sizeof(float)), *tscr = rt_xalloc(sf * sizeof(float));
    char *tarena = rt_xalloc(ab);
    int nb = m->out_per_token ? B * T : B;
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)nb);
    if (!G || !s1 || !s2 || !tscr || !tarena || !tgt) {
      fprintf(stderr, "%s: error: out of memory allocating the training state\n", prog);
      rc = EXIT_USER;
    } else {
      uint32_t ncls = (uint32_t)(m->out_per_token ? m->vocab : m->out_dim);
      for (int i = 0; i < nb; i++) tgt[i] = (int32_t)(rt_rng_u32(&g) % ncls);
      float beta1 = c->beta1 > 0 ? (float)c->beta1 : 0.9f, beta2 = c->beta2 > 0 ? (float)c->beta2 : 0.999f;
      float eps = c->eps > 0 ? (float)c->eps : 1e-8f;
      double loss = 0;
      rt_gemm_constant(NULL, 0); /* the steps below change r.W: nothing of it may stay pre-packed */
      for (int k = -BENCH_WARMUPS; k < (int)o.runs; k++) { /* k < 0: warm-up steps */
        RtStep st = {B, T, 0, NULL, tscr, 0, 1.0f, NULL};
        float l[3] = {0, 0, 0}; /* a distilling program writes its KL and CE parts too */
        double t0 = rt_now_seconds();
        m->train(&st, tarena, r.W, ids, tgt, l, G);
        for (int i = 0; i < m->nparams; i++) {
          const RtParamInfo *p = &m->params[i];
          if (!p->trainable) continue;
          float wd = p->decay ? (float)c->weight_decay : 0.0f;
          int64_t off = rt_param_f32_index(p);
          rt_adamw((float *)r.W + off, G + off, s1 + off, s2 + off, rt_param_numel(p), 1e-4f, beta1, beta2,
                   eps, wd, (int64_t)k + BENCH_WARMUPS + 1); /* AdamW's step count: 1, 2, ... */
        }
        if (k >= 0) times[k] = rt_now_seconds() - t0;
        loss = l[0];
      }
      double ts = median(times, (int)o.runs);
      printf("train_batch: %d\ntrain_context: %d\ntrain_loss: %.4f\ntrain_step_seconds: %.6f\n"
             "train_tokens_per_s: %.1f\n", B, T, loss, ts, B * T / ts);
      if (m->train_flops_per_token > 0)
        printf("train_gflops: %.2f\n", (double)m->train_flops_per_token * B * T / ts / 1e9);
      getrusage(RUSAGE_SELF, &ru);
      printf("train_peak_rss_kib: %ld\n", ru.ru_maxrss);
    }
    free(G);
    free(s1);
    free(s2);
    free(tscr);
    free(tarena);
    free(tgt);
    if (rc != EXIT_OK) goto done;
  }
  printf("peak_rss_kib: %ld\narena_bytes: %lld\n", rss_inference, (long long)m->arena_bytes);
done:
  free(ids);
  free(out);
  free(times);
  rt_run_free(&r);
  return rc;
}
