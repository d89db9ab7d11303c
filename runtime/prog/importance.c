/* importance.c: the importance verb: head importance scores (Michel et al. 2019, "Are Sixteen
 * Heads Really Better than One?") for the prune pass's kind=heads, score=importance.
 *
 * A gate xi_h on head h's output (all ones) has I_h = E_x |dL(x)/dxi_h|. The head's output enters
 * the model only through the attention's output projection Wo [C_out, C], whose columns h*hd ..
 * (h+1)*hd - 1 read it; scaling them by xi_h is the gate, so dL/dxi_h = sum over those columns
 * of Wo (.) dL/dWo, which the training function gives (RtModel.train: the gradient of every
 * parameter). An example x is one window of context+1 bytes of the data at a seeded random offset,
 * run alone (batch 1, no dropout); the scores are the mean over -n examples. The output is the
 * weights file as stored, plus one F32 [heads] tensor NAME.head_importance per output projection
 * NAME (RtPruneInfo.heads > 0), which a program pruned with kind=heads, score=importance reads
 * when it loads these full-size weights (prog/prune.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"

static void help(const char *prog, const RtModel *m) {
  printf("usage: %s importance [--weights W.safetensors] [--data FILE] [-n EXAMPLES] [--seed S] --out OUT.safetensors\n\n"
         "Head importance (Michel et al. 2019): for every attention, I_h = mean over examples of |dL/dxi_h|, xi_h a\n"
         "gate on head h's output, from the gradient of its output projection. EXAMPLES (default 64) windows of %lld\n"
         "bytes of FILE (default: the spec's train: data) at seeded random offsets, one at a time. Writes the\n"
         "weights as stored plus NAME.head_importance [heads] (F32) for each output projection NAME; a program\n"
         "built with prune<kind=heads;score=importance> keeps the heads of largest importance when it loads them.\n",
         prog, (long long)m->context + 1);
}

int rt_verb_importance(const char *prog, int argc, char **argv, const RtModel *m) {
  RtOpts o;
  int hlp = 0;
  if (rt_parse_opts(prog, "importance", argc, argv, "--weights --data -n --seed --out --threads", &o, &hlp))
    return EXIT_USER;
  if (hlp) {
    help(prog, m);
    return EXIT_OK;
  }
  if (!m->train)
    return rt_usage_error(prog, "importance", "this program was built without training support (the scores are "
                                              "gradients: add the autodiff pass)");
  if (!rt_is_lm(m) || m->vocab < RT_BYTE_VOCAB)
    return rt_usage_error(prog, "importance", "the scores are computed on bytes: a language model with a vocabulary "
                                              "of at least 256 is needed");
  const char *data = o.data ? o.data : m->train_config.data;
  if (!data) return rt_usage_error(prog, "importance", "--data FILE is required (the spec names no train: data)");
  if (!o.out) return rt_usage_error(prog, "importance", "--out OUT.safetensors is required");
  int nh = 0;
  int64_t nscore = 0; /* the heads of all output projections: each one's scores at its base */
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i].prune && m->params[i].prune->heads > 0) nh++, nscore += m->params[i].prune->heads;
  if (!nh) return rt_usage_error(prog, "importance", "this model has no attention output projection to score");
  long long nex = o.have_n ? o.n : 64;
  if (nex < 1) return rt_usage_error(prog, "importance", "-n must be at least 1");
  const RtPathArg outs[] = {{"--out", o.out, "name another --out", NULL}};
  const RtPathArg ins[] = {{"--weights", o.weights, NULL, NULL}, {o.data ? "--data" : "the spec's data", data, NULL, NULL}};
  if (rt_check_outputs(prog, "importance", outs, 1, ins, 2)) return EXIT_USER;
  RtError err;
  err.msg[0] = 0;
  int rc = EXIT_OK, T = (int)m->context;
  size_t wbytes = (size_t)rt_weight_floats(m) * sizeof(float), n = 0;
  unsigned char *text = NULL;
  float *W = NULL, *G = NULL, *scratch = NULL;
  char *arena = NULL;
  double *score = NULL;
  float *out = NULL;
  int32_t *ids = malloc((size_t)T * sizeof *ids), *tgt = malloc((size_t)T * sizeof *tgt);
  RtTensor *ts = NULL;
  char **names = NULL;
  if (rt_model_require_f32(m, "importance", &err) || rt_read_file(data, &text, &n, &err)) goto fail;
  if (n < (size_t)T + 1) {
    rt_fail(&err, "%s: %zu bytes is too small: an example is %d bytes", data, n, T + 1);
    goto fail;
  }
  W = rt_xalloc(wbytes);
  G = rt_xalloc(wbytes);
  arena = rt_xalloc((size_t)m->train_arena_bytes);
  scratch = rt_xalloc(rt_model_scratch_floats(m, 1) * sizeof(float));
  score = calloc((size_t)nscore + 1, sizeof *score);
  if (!W || !G || !arena || !scratch || !score || !ids || !tgt) {
    rt_fail(&err, "out of memory");
    goto fail;
  }
  if (rt_prog_load_weights(m, W, o.weights, &err)) goto fail;
  RtRng g;
  rt_rng_seed(&g, o.have_seed ? o.seed : (uint64_t)m->train_config.seed);
  size_t range = n - (size_t)T; /* offsets 0 .. n-T-1 */
  for (long long e = 0; e < nex; e++) {
    uint64_t x = rt_rng_u32(&g);
    if ((uint64_t)range > 0xffffffffull) x = (x << 32) | rt_rng_u32(&g);
    const unsigned char *w = text + (size_t)(x % (uint64_t)range);
    for (int i = 0; i < T; i++) ids[i] = w[i], tgt[i] = w[i + 1];
    RtStep s = {1, T, 0, NULL, scratch, 0, 1.0f, NULL};
    float loss[3] = {0, 0, 0}; /* a distilling program writes its KL and CE parts too */
    m->train(&s, arena, W, ids, tgt, loss, G);
    for (int i = 0, base = 0; i < m->nparams; i++) {
      const RtParamInfo *p = &m->params[i];
      if (!p->prune || p->prune->heads <= 0) continue;
      int H = p->prune->heads;
      int64_t rows = p->shape[0], C = p->shape[1], hd = C / H;
      const float *wp = W + rt_param_f32_index(p), *gp = G + rt_param_f32_index(p);
      for (int h = 0; h < H; h++) {
        double acc = 0;
        for (int64_t r = 0; r < rows; r++)
          for (int64_t c = h * hd; c < (h + 1) * hd; c++) acc += (double)wp[r * C + c] * gp[r * C + c];
        score[base + h] += fabs(acc) / (double)nex;
      }
      base += H;
    }
  }
  /* the weights as stored, plus the scores */
  ts = calloc((size_t)nh + 1, sizeof *ts);
  names = calloc((size_t)nh + 1, sizeof *names);
  out = calloc((size_t)nscore + 1, sizeof *out);
  if (!ts || !names || !out) {
    rt_fail(&err, "out of memory");
    goto fail;
  }
  int k = 0, base = 0;
  for (int i = 0; i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!p->prune || p->prune->heads <= 0) continue;
    size_t len = strlen(p->name) + sizeof ".head_importance";
    if (!(names[k] = malloc(len))) {
      rt_fail(&err, "out of memory");
      goto fail;
    }
    snprintf(names[k], len, "%s.head_importance", p->name);
    int H = p->prune->heads;
    for (int h = 0; h < H; h++) out[base + h] = (float)score[base + h];
    ts[k] = (RtTensor){.name = names[k], .dtype = RT_DT_F32, .ndim = 1, .shape = {H},
                       .data = (const unsigned char *)(out + base), .nbytes = (size_t)H * sizeof(float)};
    printf("%s:", names[k]);
    for (int h = 0; h < H; h++) printf(" %.6g", (double)out[base + h]);
    printf("\n");
    base += H;
    k++;
  }
  char ex[32];
  snprintf(ex, sizeof ex, "%lld", nex);
  const char *meta[] = {"format", "pt", "modelc_model", m->name, "importance_examples", ex};
  if (rt_prog_write_weights_extra(m, W, o.out, meta, 3, ts, k, &err)) goto fail;
  goto done;
fail:
  rc = rt_prog_error(prog, &err);
done:
  for (int i = 0; names && i < nh; i++) free(names[i]);
  free(names);
  free(ts);
  free(out);
  free(score);
  free(text);
  free(W);
  free(G);
  free(arena);
  free(scratch);
  free(ids);
  free(tgt);
  return rc;
}
