/* train.c: the train and grad commands of generated programs (rt_main dispatches here; see
 * docs/runtime.md, "Training").
 *
 * train: seeded random windows of a byte file, gradient accumulation over micro-batches, clipping
 * by global norm, AdamW or SGD with the compiled schedule, validation on the held-out tail,
 * checkpoints (weights + optimiser state + step + RNG state in one safetensors file, resumed
 * bit-exactly), a CSV log of every step and an SVG loss curve.
 * grad: one call of the model's train function on given tokens and targets, gradients written as
 * safetensors (the reference tests compare them with PyTorch's).
 *
 * Everything a user can get wrong is one line on stderr and exit status 1.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../modelc_rt.h"
#include "../rt_internal.h"

enum { EXIT_OK = 0, EXIT_USER = 1 };

/* runtime/prog.c */
void rt_prog_init_weights(const RtModel *m, float *W, uint64_t seed);
int rt_prog_load_weights(const RtModel *m, float *W, const char *path, RtError *err);
int rt_prog_read_tokens(const RtModel *m, const char *path, int32_t **ids, int *B, int *T, RtError *err);
/* called by rt_main */
int rt_prog_train(const char *prog, int argc, char **argv, const RtModel *m);
int rt_prog_grad(const char *prog, int argc, char **argv, const RtModel *m);


/* ---- options ---- */

typedef struct TOpts {
  const char *data, *weights, *out, *checkpoint, *resume, *log, *tokens, *targets;
  long long steps, batch, micro, eval_every, ckpt_every, stop_at;
  double lr;
  uint64_t seed;
  long threads;
  int have_steps, have_batch, have_micro, have_lr, have_seed, have_eval, have_ckpt_every;
  /* optimiser and schedule overrides of the spec's train: section (have_* says which were given) */
  double min_lr, weight_decay, grad_clip, beta1, beta2, momentum;
  long long warmup;
  int schedule, optimizer;
  int have_min_lr, have_wd, have_clip, have_beta1, have_beta2, have_momentum, have_warmup, have_schedule, have_opt;
  double loss_scale; /* fp16: the initial loss scale and the good steps before it doubles */
  long long scale_window;
  int have_loss_scale, have_scale_window;
} TOpts;

/* Parses a real in [lo, hi] (hi_open: hi excluded). */
static int parse_real(const char *s, double lo, double hi, int hi_open, double *out) {
  char *end;
  errno = 0;
  double d = strtod(s, &end);
  if (errno || end == s || *end || !(d >= lo) || (hi_open ? !(d < hi) : !(d <= hi))) return -1;
  *out = d;
  return 0;
}


static int parse_ll(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end) return -1;
  *out = (uint64_t)v;
  return 0;
}

static int parse_opts(const char *prog, const char *verb, int argc, char **argv, const char *allowed, TOpts *o,
                      int *help) {
  memset(o, 0, sizeof *o);
  for (int i = 2; i < argc; i++) {
    char key[64];
    const char *val;
    int r = rt_next_opt(prog, verb, argc, argv, &i, allowed, "", key, &val);
    if (r < 0) return EXIT_USER;
    if (r == 0) {
      *help = 1;
      return 0;
    }
    long long v;
    if (!strcmp(key, "--data")) o->data = val;
    else if (!strcmp(key, "--weights")) o->weights = val;
    else if (!strcmp(key, "--out")) o->out = val;
    else if (!strcmp(key, "--checkpoint")) o->checkpoint = val;
    else if (!strcmp(key, "--resume")) o->resume = val;
    else if (!strcmp(key, "--log")) o->log = val;
    else if (!strcmp(key, "--tokens")) o->tokens = val;
    else if (!strcmp(key, "--targets")) o->targets = val;
    else if (!strcmp(key, "--seed")) {
      if (parse_u64(val, &o->seed)) return rt_usage_error(prog, verb, "bad --seed '%s'", val);
      o->have_seed = 1;
    } else if (!strcmp(key, "--steps")) {
      if (parse_ll(val, 1, 1000000000000LL, &o->steps)) return rt_usage_error(prog, verb, "bad --steps '%s' (>= 1)", val);
      o->have_steps = 1;
    } else if (!strcmp(key, "--stop-at")) {
      if (parse_ll(val, 1, 1000000000000LL, &o->stop_at))
        return rt_usage_error(prog, verb, "bad --stop-at '%s' (>= 1)", val);
    } else if (!strcmp(key, "--batch")) {
      if (parse_ll(val, 1, 1LL << 30, &o->batch)) return rt_usage_error(prog, verb, "bad --batch '%s' (>= 1)", val);
      o->have_batch = 1;
    } else if (!strcmp(key, "--micro-batch")) {
      if (parse_ll(val, 1, 1LL << 30, &o->micro))
        return rt_usage_error(prog, verb, "bad --micro-batch '%s' (>= 1)", val);
      o->have_micro = 1;
    } else if (!strcmp(key, "--eval-every")) {
      if (parse_ll(val, 0, 1000000000000LL, &o->eval_every))
        return rt_usage_error(prog, verb, "bad --eval-every '%s' (>= 0)", val);
      o->have_eval = 1;
    } else if (!strcmp(key, "--checkpoint-every")) {
      if (parse_ll(val, 0, 1000000000000LL, &o->ckpt_every))
        return rt_usage_error(prog, verb, "bad --checkpoint-every '%s' (>= 0)", val);
      o->have_ckpt_every = 1;
    } else if (!strcmp(key, "--threads")) {
      if (parse_ll(val, 1, 1024, &v)) return rt_usage_error(prog, verb, "bad --threads '%s'", val);
      o->threads = (long)v;
    } else if (!strcmp(key, "--min-lr")) {
      if (parse_real(val, 0, 1e6, 0, &o->min_lr)) return rt_usage_error(prog, verb, "bad --min-lr '%s' (>= 0)", val);
      o->have_min_lr = 1;
    } else if (!strcmp(key, "--weight-decay")) {
      if (parse_real(val, 0, 1e6, 0, &o->weight_decay))
        return rt_usage_error(prog, verb, "bad --weight-decay '%s' (>= 0)", val);
      o->have_wd = 1;
    } else if (!strcmp(key, "--grad-clip")) {
      if (parse_real(val, 0, 1e12, 0, &o->grad_clip))
        return rt_usage_error(prog, verb, "bad --grad-clip '%s' (>= 0; 0 turns clipping off)", val);
      o->have_clip = 1;
    } else if (!strcmp(key, "--beta1") || !strcmp(key, "--beta2") || !strcmp(key, "--momentum")) {
      double d;
      if (parse_real(val, 0, 1, 1, &d)) return rt_usage_error(prog, verb, "bad %s '%s' (in [0, 1))", key, val);
      if (!strcmp(key, "--beta1")) o->beta1 = d, o->have_beta1 = 1;
      else if (!strcmp(key, "--beta2")) o->beta2 = d, o->have_beta2 = 1;
      else o->momentum = d, o->have_momentum = 1;
    } else if (!strcmp(key, "--warmup")) {
      if (parse_ll(val, 0, 1000000000000LL, &o->warmup)) return rt_usage_error(prog, verb, "bad --warmup '%s' (>= 0)", val);
      o->have_warmup = 1;
    } else if (!strcmp(key, "--schedule")) {
      if (!strcmp(val, "cosine")) o->schedule = RT_SCHED_COSINE;
      else if (!strcmp(val, "constant")) o->schedule = RT_SCHED_CONSTANT;
      else if (!strcmp(val, "linear")) o->schedule = RT_SCHED_LINEAR;
      else return rt_usage_error(prog, verb, "bad --schedule '%s' (cosine, constant or linear)", val);
      o->have_schedule = 1;
    } else if (!strcmp(key, "--optimizer")) {
      if (!strcmp(val, "adamw")) o->optimizer = RT_OPT_ADAMW;
      else if (!strcmp(val, "sgd")) o->optimizer = RT_OPT_SGD;
      else return rt_usage_error(prog, verb, "bad --optimizer '%s' (adamw or sgd)", val);
      o->have_opt = 1;
    } else if (!strcmp(key, "--loss-scale")) {
      if (parse_real(val, 1, 1e30, 0, &o->loss_scale))
        return rt_usage_error(prog, verb, "bad --loss-scale '%s' (in [1, 1e30])", val);
      o->have_loss_scale = 1;
    } else if (!strcmp(key, "--loss-scale-window")) {
      if (parse_ll(val, 1, 1000000000000LL, &o->scale_window))
        return rt_usage_error(prog, verb, "bad --loss-scale-window '%s' (>= 1)", val);
      o->have_scale_window = 1;
    } else if (!strcmp(key, "--lr")) {
      char *end;
      errno = 0;
      double d = strtod(val, &end);
      if (errno || end == val || *end || !(d > 0 && d < 1e6)) return rt_usage_error(prog, verb, "bad --lr '%s' (> 0)", val);
      o->lr = d;
      o->have_lr = 1;
    }
  }
  rt_set_threads((int)o->threads);
  return 0;
}

/* ---- small helpers ---- */



/* A growing string (for the SVG and the rewritten CSV). */
typedef struct Str {
  char *s;
  size_t len, cap;
  int oom;
} Str;

static void sputf(Str *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void sputf(Str *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int k = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
    va_end(ap);
    if (k < 0) {
      b->oom = 1;
      return;
    }
    if (b->s && (size_t)k < room) {
      b->len += (size_t)k;
      return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + (size_t)k + 1) cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) {
      b->oom = 1;
      return;
    }
    b->s = ns;
    b->cap = cap;
  }
}

/* "w.safetensors" -> "w" + ext; anything else -> path + ext */
static char *with_ext(const char *path, const char *strip, const char *ext) {
  size_t n = strlen(path), s = strlen(strip);
  if (n > s && !strcmp(path + n - s, strip)) n -= s;
  char *r = malloc(n + strlen(ext) + 1);
  if (r) {
    memcpy(r, path, n);
    strcpy(r + n, ext);
  }
  return r;
}

/* ---- the trainer ---- */

typedef struct Hist {
  int64_t step;
  double loss, val_loss, val_bpb; /* val NAN when not measured */
} Hist;

typedef struct Trainer {
  const char *prog;
  const RtModel *m;
  RtTrainConfig c;
  int64_t steps, B, M, eval_every, ckpt_every, stop_at;
  int T;
  float *W, *G, *Gacc, *s1, *s2; /* s1: AdamW m or SGD momentum; s2: AdamW v */
  RtPrecision prec;              /* compiled into the train function (the precision pass) */
  float *Wh;                     /* bf16/fp16: the working weights, W rounded, that steps read */
  RtLossScaler ls;               /* fp16: dynamic loss scaling (scale 1 otherwise) */
  char *arena;                   /* max(arena_bytes, train_arena_bytes): forward and train in turn */
  float *scratch, *logits;
  int32_t *ids, *tgt;
  int32_t *fix_ids, *fix_tgt;    /* --tokens/--targets: a fixed batch instead of --data windows */
  int64_t fix_rows, fix_next;    /* its rows, and the next row to use */
  unsigned char *data;
  size_t ntrain, nval;
  RtRng rng;
  int64_t step; /* optimiser steps done */
  uint64_t dropout_seed; /* --seed of the run (kept in checkpoints): dropout masks derive from it */
  double elapsed0;
  Hist *hist;
  int64_t nhist;
  char *log_path, *svg_path;
  FILE *log;
} Trainer;

static void trainer_free(Trainer *t) {
  free(t->W);
  free(t->Wh);
  free(t->G);
  free(t->Gacc);
  free(t->s1);
  free(t->s2);
  free(t->arena);
  free(t->scratch);
  free(t->logits);
  free(t->ids);
  free(t->tgt);
  free(t->data);
  free(t->fix_ids);
  free(t->fix_tgt);
  free(t->hist);
  free(t->log_path);
  free(t->svg_path);
  if (t->log) fclose(t->log);
}

static const char *opt_name(RtOptimizer o) { return o == RT_OPT_SGD ? "sgd" : "adamw"; }
static const char *prec_name(RtPrecision p) { return p == RT_PREC_BF16 ? "bf16" : p == RT_PREC_FP16 ? "fp16" : "fp32"; }

/* One window per row: context+1 bytes at a random offset of the training part (or the next rows
 * of the fixed batch, cycling). */
static void draw_rows(Trainer *t, int rows) {
  if (t->fix_ids) {
    int per = t->m->out_per_token ? t->T : 1; /* targets per row: every position, or one class */
    for (int r = 0; r < rows; r++, t->fix_next = (t->fix_next + 1) % t->fix_rows) {
      memcpy(t->ids + (size_t)r * t->T, t->fix_ids + t->fix_next * t->T, (size_t)t->T * sizeof(int32_t));
      memcpy(t->tgt + (size_t)r * per, t->fix_tgt + t->fix_next * per, (size_t)per * sizeof(int32_t));
    }
    return;
  }
  size_t range = t->ntrain - (size_t)t->T; /* offsets 0 .. ntrain-T-1 */
  for (int r = 0; r < rows; r++) {
    uint64_t x = rt_rng_u32(&t->rng);
    if ((uint64_t)range > 0xffffffffull) x = (x << 32) | rt_rng_u32(&t->rng);
    const unsigned char *w = t->data + (size_t)(x % (uint64_t)range);
    for (int i = 0; i < t->T; i++) {
      t->ids[r * t->T + i] = w[i];
      t->tgt[r * t->T + i] = w[i + 1];
    }
  }
}

/* Mean next-byte loss (nats) over the held-out tail, windows of the context, batches up to the
 * compiled batch (a shorter last window goes alone). */
static double evaluate(Trainer *t) {
  const RtModel *m = t->m;
  const unsigned char *buf = t->data + t->ntrain;
  size_t n = t->nval, pos = 0, count = 0;
  int B = (int)m->batch, T = t->T;
  double total = 0;
  while (pos + 1 < n) {
    int nb = 0, nt = T;
    size_t left = n - 1 - pos;
    if (left < (size_t)T) nt = (int)left;
    for (; nb < B && pos + 1 < n && n - 1 - pos >= (size_t)nt; nb++) {
      for (int i = 0; i < nt; i++) {
        t->ids[nb * nt + i] = buf[pos + (size_t)i];
        t->tgt[nb * nt + i] = buf[pos + (size_t)i + 1];
      }
      pos += (size_t)nt;
    }
    RtStep s = {nb, nt, 0, NULL, t->scratch, 0, 0.0f};
    m->forward(&s, t->arena, t->W, t->ids, t->logits);
    for (int i = 0; i < nb * nt; i++) {
      const float *l = t->logits + (size_t)i * (size_t)m->vocab;
      double mx = l[0], sum = 0;
      for (int v = 1; v < m->vocab; v++) mx = l[v] > mx ? l[v] : mx;
      for (int v = 0; v < m->vocab; v++) sum += exp(l[v] - mx);
      total += mx + log(sum) - l[t->tgt[i]];
      count++;
    }
  }
  return count ? total / (double)count : NAN;
}

/* One optimiser step (t->step + 1): B/M train calls, averaged, clipped, applied. Returns the loss. */
static double train_step(Trainer *t, double lr) {
  const RtModel *m = t->m;
  int64_t nmicro = t->B / t->M;
  double loss = 0;
  float *g = nmicro > 1 ? t->Gacc : t->G;
  const float *W = t->W;
  if (t->Wh) { /* mixed precision: the step reads the master weights rounded to 16 bits */
    rt_round_weights(t->Wh, t->W, m->weight_floats, t->prec);
    W = t->Wh;
  }
  for (int64_t k = 0; k < nmicro; k++) {
    draw_rows(t, (int)t->M);
    /* dropout masks: a seed per (step, micro-batch) derived from the run's stream constant (set by
     * --seed, kept in checkpoints), not drawn from the data stream, so the windows do not depend
     * on M; never 0, which means inference */
    uint64_t seed = rt_mix(t->dropout_seed, ((uint64_t)(t->step + 1) << 20) | (uint64_t)k) | 1;
    RtStep s = {(int)t->M, t->T, 0, NULL, t->scratch, seed, (float)t->ls.scale};
    float l = 0;
    m->train(&s, t->arena, W, t->ids, t->tgt, &l, t->G);
    loss += l;
    if (nmicro > 1) {
      for (int i = 0; i < m->nparams; i++) {
        const RtParamInfo *p = &m->params[i];
        if (!p->stored) continue;
        float *a = t->Gacc + p->offset;
        const float *b = t->G + p->offset;
        int64_t n = rt_param_numel(p);
        if (k == 0) memcpy(a, b, (size_t)n * sizeof(float));
        else
          for (int64_t j = 0; j < n; j++) a[j] += b[j];
      }
    }
  }
  loss /= (double)nmicro;
  int64_t step = t->step + 1;
  double unscale = 1.0; /* the gradients carry the loss scale this step used */
  if (t->prec == RT_PREC_FP16) { /* dynamic loss scaling: skip the update on inf/nan gradients */
    int finite = 1;
    for (int i = 0; i < m->nparams && finite; i++)
      if (m->params[i].stored) finite = rt_all_finite(g + m->params[i].offset, rt_param_numel(&m->params[i]));
    unscale = 1.0 / t->ls.scale;
    if (!rt_loss_scaler_update(&t->ls, finite)) {
      t->step = step;
      return loss;
    }
  }
  double norm2 = 0;
  float scale = (float)(unscale / (double)nmicro);
  if (scale != 1.0f)
    for (int i = 0; i < m->nparams; i++) {
      const RtParamInfo *p = &m->params[i];
      if (!p->stored) continue;
      float *a = g + p->offset;
      int64_t n = rt_param_numel(p);
      for (int64_t j = 0; j < n; j++) a[j] *= scale;
    }
  if (t->c.grad_clip > 0) {
    for (int i = 0; i < m->nparams; i++)
      if (m->params[i].stored) norm2 += rt_sum_squares(g + m->params[i].offset, rt_param_numel(&m->params[i]));
    /* as torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1 */
    double coef = t->c.grad_clip / (sqrt(norm2) + 1e-6);
    if (coef < 1.0)
      for (int i = 0; i < m->nparams; i++) {
        const RtParamInfo *p = &m->params[i];
        if (!p->stored) continue;
        float *a = g + p->offset, cf = (float)coef;
        int64_t n = rt_param_numel(p);
        for (int64_t j = 0; j < n; j++) a[j] *= cf;
      }
  }
  int64_t opt_step = step - t->ls.skipped; /* AdamW's bias correction counts applied updates */
  for (int i = 0; i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!p->stored) continue;
    int64_t o = p->offset, n = rt_param_numel(p);
    float wd = p->decay ? (float)t->c.weight_decay : 0.0f;
    if (t->c.optimizer == RT_OPT_SGD)
      rt_sgd(t->W + o, g + o, t->s1 + o, n, (float)lr, (float)t->c.momentum, wd);
    else
      rt_adamw(t->W + o, g + o, t->s1 + o, t->s2 + o, n, (float)lr, (float)t->c.beta1, (float)t->c.beta2,
               (float)t->c.eps, wd, opt_step);
  }
  t->step = step;
  return loss;
}

/* ---- files: weights, checkpoints ---- */

static int nstored(const RtModel *m) {
  int n = 0;
  for (int i = 0; i < m->nparams; i++) n += m->params[i].stored != 0;
  return n;
}

static void tensor_of(RtTensor *ts, const RtParamInfo *p, const char *name, const float *base) {
  memset(ts, 0, sizeof *ts);
  ts->name = name;
  ts->dtype = RT_DT_F32;
  ts->ndim = p->ndim;
  for (int d = 0; d < p->ndim; d++) ts->shape[d] = p->shape[d];
  ts->data = base + p->offset;
  ts->nbytes = (size_t)rt_param_numel(p) * sizeof(float);
}

/* Writes the stored parameters of buf (W's layout) under their names, with metadata. */
static int write_params(const RtModel *m, const char *path, const float *buf, const char *const *meta, int nmeta,
                        RtError *err) {
  RtTensor *ts = calloc((size_t)m->nparams + 1, sizeof *ts);
  if (!ts) return rt_fail(err, "out of memory");
  int n = 0;
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i].stored) tensor_of(&ts[n++], &m->params[i], m->params[i].name, buf);
  int rc = rt_st_write(path, ts, n, meta, nmeta, err);
  free(ts);
  return rc;
}

static int write_checkpoint(Trainer *t, const char *path, double elapsed, RtError *err) {
  const RtModel *m = t->m;
  int sgd = t->c.optimizer == RT_OPT_SGD, ns = nstored(m), per = sgd ? 2 : 3;
  RtTensor *ts = calloc((size_t)(ns * per) + 1, sizeof *ts);
  char **names = calloc((size_t)(ns * per) + 1, sizeof *names);
  int rc = 0, n = 0;
  if (!ts || !names) rc = rt_fail(err, "out of memory");
  for (int i = 0; i < m->nparams && !rc; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!p->stored) continue;
    tensor_of(&ts[n++], p, p->name, t->W);
  }
  for (int k = 1; k < per && !rc; k++) {
    const char *prefix = sgd ? "opt.mom." : k == 1 ? "opt.m." : "opt.v.";
    const float *base = k == 1 ? t->s1 : t->s2;
    for (int i = 0; i < m->nparams && !rc; i++) {
      const RtParamInfo *p = &m->params[i];
      if (!p->stored) continue;
      size_t len = strlen(prefix) + strlen(p->name) + 1;
      if (!(names[n] = malloc(len))) {
        rc = rt_fail(err, "out of memory");
        break;
      }
      snprintf(names[n], len, "%s%s", prefix, p->name);
      tensor_of(&ts[n], p, names[n], base);
      n++;
    }
  }
  if (!rc) {
    char step[32], steps[32], st[32], inc[32], el[32], ds[32], ls[48], lsg[32], lss[32];
    snprintf(ls, sizeof ls, "%.17g", t->ls.scale);
    snprintf(lsg, sizeof lsg, "%lld", (long long)t->ls.good);
    snprintf(lss, sizeof lss, "%lld", (long long)t->ls.skipped);
    snprintf(ds, sizeof ds, "%llu", (unsigned long long)t->dropout_seed);
    snprintf(step, sizeof step, "%lld", (long long)t->step);
    snprintf(steps, sizeof steps, "%lld", (long long)t->steps);
    snprintf(st, sizeof st, "%llu", (unsigned long long)t->rng.state);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)t->rng.inc);
    snprintf(el, sizeof el, "%.3f", elapsed);
    const char *meta[] = {"format", "pt", "modelc_checkpoint", "1", "model", m->name, "optimizer",
                          opt_name(t->c.optimizer), "step", step, "steps", steps, "rng_state", st, "rng_inc", inc,
                          "elapsed_s", el, "dropout_seed", ds, "loss_scale", ls, "loss_scale_good", lsg,
                          "skipped_steps", lss};
    rc = rt_st_write(path, ts, n, meta, (int)(sizeof meta / sizeof *meta / 2), err);
  }
  if (names)
    for (int i = 0; i < ns * per; i++) free(names[i]);
  free(names);
  free(ts);
  return rc;
}

/* Loads a checkpoint into the trainer after checking it is one of this model's, with this
 * optimiser, holding every tensor with its exact shape. */
static int load_checkpoint(Trainer *t, const char *path, int64_t *ck_steps, RtError *err) {
  const RtModel *m = t->m;
  RtSafetensors *st = NULL;
  if (rt_st_open(&st, path, err)) return -1;
  int rc = 0;
  const char *model = rt_st_metadata(st, "model"), *opt = rt_st_metadata(st, "optimizer");
  const char *step = rt_st_metadata(st, "step"), *rs = rt_st_metadata(st, "rng_state");
  const char *ri = rt_st_metadata(st, "rng_inc"), *steps = rt_st_metadata(st, "steps");
  const char *el = rt_st_metadata(st, "elapsed_s"), *dsd = rt_st_metadata(st, "dropout_seed");
  const char *ls = rt_st_metadata(st, "loss_scale"), *lsg = rt_st_metadata(st, "loss_scale_good"),
             *lss = rt_st_metadata(st, "skipped_steps");
  uint64_t u_step = 0, u_state = 0, u_inc = 0, u_steps = 0, u_ds = 0, u_good = 0, u_skip = 0;
  double d_scale = 1.0;
  if (!rt_st_metadata(st, "modelc_checkpoint") || !model || !opt || !step || !rs || !ri)
    rc = rt_fail(err, "%s: not a modelc training checkpoint (its metadata lacks model, optimizer, step or the RNG "
                      "state)", path);
  else if (strcmp(model, m->name))
    rc = rt_fail(err, "%s: checkpoint of model '%s', but this program is model '%s'", path, model, m->name);
  else if (strcmp(opt, opt_name(t->c.optimizer)))
    rc = rt_fail(err, "%s: checkpoint holds %s optimiser state, but this run uses %s", path, opt,
                 opt_name(t->c.optimizer));
  else if (parse_u64(step, &u_step) || u_step > (uint64_t)INT64_MAX / 2 || parse_u64(rs, &u_state) ||
           parse_u64(ri, &u_inc) || !(u_inc & 1) || (steps && parse_u64(steps, &u_steps)) ||
           (dsd && parse_u64(dsd, &u_ds)))
    rc = rt_fail(err, "%s: bad step or RNG state in the checkpoint metadata", path);
  else if ((ls && parse_real(ls, 1e-30, 1e30, 0, &d_scale)) || (lsg && parse_u64(lsg, &u_good)) ||
           (lss && (parse_u64(lss, &u_skip) || u_skip > u_step)))
    rc = rt_fail(err, "%s: bad loss-scaling state in the checkpoint metadata", path);
  int sgd = t->c.optimizer == RT_OPT_SGD;
  for (int k = 0; k < (sgd ? 2 : 3) && !rc; k++) {
    const char *prefix = k == 0 ? "" : sgd ? "opt.mom." : k == 1 ? "opt.m." : "opt.v.";
    float *base = k == 0 ? t->W : k == 1 ? t->s1 : t->s2;
    for (int i = 0; i < m->nparams && !rc; i++) {
      const RtParamInfo *p = &m->params[i];
      if (!p->stored) continue;
      char name[512];
      snprintf(name, sizeof name, "%s%s", prefix, p->name);
      const RtTensor *ten = NULL;
      if (rt_st_require(st, name, RT_DT_F32, p->ndim, p->shape, &ten, err)) {
        rc = -1;
        break;
      }
      memcpy(base + p->offset, ten->data, ten->nbytes);
    }
  }
  if (!rc) {
    t->step = (int64_t)u_step;
    t->rng.state = u_state;
    t->rng.inc = u_inc;
    t->dropout_seed = u_ds;
    if (ls) t->ls.scale = d_scale; /* older checkpoints: the run's initial scale */
    t->ls.good = (int64_t)u_good;
    t->ls.skipped = (int64_t)u_skip;
    t->elapsed0 = el ? atof(el) : 0.0;
    *ck_steps = (int64_t)u_steps;
  }
  rt_st_close(st);
  return rc;
}

/* ---- log and plot ---- */

/* Opens the CSV log: fresh, or on resume the old one cut to the rows up to the resumed step. */
static int open_log(Trainer *t, int resumed, RtError *err) {
  const char *header = "step,lr,loss,val_loss,val_bpb,tokens_per_s,elapsed_s,loss_scale\n";
  Str keep = {0};
  if (resumed) {
    unsigned char *old = NULL;
    size_t n = 0;
    RtError e2;
    if (rt_read_file(t->log_path, &old, &n, &e2) == 0) {
      size_t i = 0;
      while (i < n && old[i] != '\n') i++; /* skip the header */
      i++;
      while (i < n) {
        size_t j = i;
        while (j < n && old[j] != '\n') j++;
        char line[512];
        size_t len = j - i < sizeof line - 1 ? j - i : sizeof line - 1;
        memcpy(line, old + i, len);
        line[len] = 0;
        char *f[9] = {0};
        int nf = 0;
        for (char *c = line; nf < 9;) {
          f[nf++] = c;
          char *comma = strchr(c, ',');
          if (!comma) break;
          *comma = 0;
          c = comma + 1;
        }
        long long s;
        if (nf == 8 && parse_ll(f[0], 1, INT64_MAX, &s) == 0 && s <= t->step && t->nhist < t->steps) {
          Hist *h = &t->hist[t->nhist++];
          h->step = s;
          h->loss = atof(f[2]);
          h->val_loss = f[3][0] ? atof(f[3]) : NAN;
          h->val_bpb = f[4][0] ? atof(f[4]) : NAN;
          sputf(&keep, "%.*s\n", (int)(j - i), (const char *)old + i);
        }
        i = j + 1;
      }
      free(old);
    }
  }
  t->log = fopen(t->log_path, "w");
  if (!t->log) {
    free(keep.s);
    return rt_fail(err, "%s: %s", t->log_path, strerror(errno));
  }
  fputs(header, t->log);
  if (keep.len) fwrite(keep.s, 1, keep.len, t->log);
  free(keep.s);
  fflush(t->log);
  return 0;
}

/* 1, 2 or 5 times a power of ten, about span/5. */
static double nice_step(double span) {
  if (!(span > 0)) return 1;
  double raw = span / 5, p = pow(10, floor(log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

/* The loss curve as a hand-written SVG: training loss (a polyline, averaged into at most 1000
 * points), validation loss (points joined by a dashed line), axes with ticks and labels. */
static int write_svg(const Trainer *t, RtError *err) {
  const double Wd = 800, Ht = 480, L = 70, R = 20, Tp = 40, Bt = 55;
  double pw = Wd - L - R, ph = Ht - Tp - Bt;
  int64_t x0 = 0, x1 = t->steps;
  double ylo = INFINITY, yhi = -INFINITY;
  for (int64_t i = 0; i < t->nhist; i++) {
    const Hist *h = &t->hist[i];
    if (isfinite(h->loss)) ylo = fmin(ylo, h->loss), yhi = fmax(yhi, h->loss);
    if (isfinite(h->val_loss)) ylo = fmin(ylo, h->val_loss), yhi = fmax(yhi, h->val_loss);
  }
  if (!(ylo <= yhi)) ylo = 0, yhi = 1;
  if (yhi - ylo < 1e-9) ylo -= 0.5, yhi += 0.5;
  double ys = nice_step(yhi - ylo);
  ylo = floor(ylo / ys) * ys;
  yhi = ceil(yhi / ys) * ys;
  double xs = nice_step((double)(x1 - x0));
  if (xs < 1) xs = 1;
#define SX(v) (L + ((double)(v) - (double)x0) / (double)(x1 > x0 ? x1 - x0 : 1) * pw)
#define SY(v) (Tp + (yhi - (v)) / (yhi - ylo) * ph)
  Str b = {0};
  sputf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n", Wd, Ht, Wd, Ht);
  sputf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  sputf(&b, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">%s: loss</text>\n", L + pw / 2,
        t->m->name);
  /* grid, ticks and tick labels */
  for (double y = ylo; y <= yhi + ys * 1e-6; y += ys) {
    double py = SY(y);
    sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", L, py, L + pw, py);
    sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", L - 5, py, L, py);
    sputf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 8, py + 4, y);
  }
  for (double x = (double)x0; x <= (double)x1 + xs * 1e-6; x += xs) {
    double px = SX(x);
    sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", px, Tp, px, Tp + ph);
    sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", px, Tp + ph, px,
          Tp + ph + 5);
    sputf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", px, Tp + ph + 18, x);
  }
  sputf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n", L, Tp,
        pw, ph);
  sputf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", L + pw / 2, Ht - 12);
  sputf(&b, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">loss (nats per byte)</text>\n",
        Tp + ph / 2);
  /* training loss, bucket means */
  int64_t per = t->nhist > 1000 ? (t->nhist + 999) / 1000 : 1;
  sputf(&b, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
  for (int64_t i = 0; i < t->nhist; i += per) {
    double s = 0, l = 0;
    int64_t k = 0;
    for (int64_t j = i; j < i + per && j < t->nhist; j++, k++) s += (double)t->hist[j].step, l += t->hist[j].loss;
    if (isfinite(l)) sputf(&b, "%.1f,%.1f ", SX(s / (double)k), SY(l / (double)k));
  }
  sputf(&b, "\"/>\n");
  /* validation */
  sputf(&b, "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\" points=\"");
  for (int64_t i = 0; i < t->nhist; i++)
    if (isfinite(t->hist[i].val_loss)) sputf(&b, "%.1f,%.1f ", SX(t->hist[i].step), SY(t->hist[i].val_loss));
  sputf(&b, "\"/>\n");
  for (int64_t i = 0; i < t->nhist; i++)
    if (isfinite(t->hist[i].val_loss))
      sputf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", SX(t->hist[i].step),
            SY(t->hist[i].val_loss));
  /* legend */
  double lx = L + pw - 150, ly = Tp + 15;
  sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
            "<text x=\"%.1f\" y=\"%.1f\">train loss</text>\n", lx, ly, lx + 25, ly, lx + 32, ly + 4);
  sputf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" stroke-width=\"2\" "
            "stroke-dasharray=\"4 3\"/><circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>"
            "<text x=\"%.1f\" y=\"%.1f\">validation loss</text>\n", lx, ly + 18, lx + 25, ly + 18, lx + 12.5, ly + 18,
        lx + 32, ly + 22);
  sputf(&b, "</svg>\n");
#undef SX
#undef SY
  if (b.oom) {
    free(b.s);
    return rt_fail(err, "out of memory writing %s", t->svg_path);
  }
  RtChunk ch = {b.s, b.len};
  int rc = rt_write_file_atomic(t->svg_path, &ch, 1, err);
  free(b.s);
  return rc;
}

static void fmt_secs(char *buf, size_t n, double s) {
  if (!(s >= 0) || s > 1e8) snprintf(buf, n, "?");
  else if (s < 60) snprintf(buf, n, "%.0fs", s);
  else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
  else snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

/* ---- train ---- */

static void train_help(const char *prog, const RtModel *m) {
  const RtTrainConfig *c = &m->train_config;
  printf("usage: %s train --data FILE --out W.safetensors [--weights INIT | --resume CKPT] [--steps N]\n"
         "       [--batch B] [--micro-batch M] [--lr LR] [--seed S] [--eval-every K]\n"
         "       [--checkpoint PATH] [--checkpoint-every K] [--stop-at K] [--log FILE.csv] [--threads N]\n"
         "       [--optimizer adamw|sgd] [--schedule cosine|linear|constant] [--warmup N] [--min-lr X]\n"
         "       [--weight-decay X] [--grad-clip X] [--beta1 X] [--beta2 X] [--momentum X]\n"
         "       [--tokens T.npy --targets Y.npy]   (a fixed batch every step instead of --data)\n"
         "       [--loss-scale S] [--loss-scale-window N]   (fp16 programs: initial 65536, window 2000)\n\n"
         "Train on the bytes of FILE (byte-level vocabulary). The last 10%% of FILE (at least context+1\n"
         "bytes) is held out for validation. Each step draws B windows of context+1 bytes at random\n"
         "offsets (PCG32 seeded by --seed) and averages the gradients of B/M micro-batches of M rows\n"
         "(M <= %lld, the compiled batch), clips them by global norm, then applies %s with the %s\n"
         "schedule. Without --weights or --resume, the weights are initialised like 'init --seed S'.\n"
         "--eval-every K measures the validation loss and bits per byte every K steps (0: never).\n"
         "--checkpoint PATH saves weights, optimiser state, step and RNG state every\n"
         "--checkpoint-every K steps and at the end; --resume CKPT continues such a run bit-exactly up\n"
         "to --steps (default: the checkpoint's). --stop-at K ends this session after step K (the\n"
         "schedule still runs to --steps). Writes the final weights to --out, a CSV of every step to\n"
         "--log (default OUT.csv next to --out) and the loss curve next to it (.svg).\n"
         "Mixed precision is compiled in (train: precision, the precision pass): this program trains\n"
         "in %s.\n"
         "Defaults (from the spec): steps %lld, batch %lld, micro-batch %lld, lr %g, seed %lld,\n"
         "eval-every %lld, checkpoint-every %lld.\n",
         prog, (long long)m->batch, opt_name(c->optimizer),
         c->schedule == RT_SCHED_COSINE ? "cosine" : c->schedule == RT_SCHED_LINEAR ? "linear" : "constant",
         prec_name(m->train_precision), (long long)c->steps, (long long)c->batch, (long long)c->micro_batch, c->lr, (long long)c->seed,
         (long long)c->eval_every, (long long)c->checkpoint_every);
}

/* The compiled configuration with the values 0 cannot mean replaced by the spec's defaults. */
static RtTrainConfig effective_config(const RtModel *m) {
  RtTrainConfig c = m->train_config;
  if (c.steps <= 0) c.steps = 1000;
  if (c.batch <= 0) c.batch = m->batch;
  if (c.micro_batch <= 0) c.micro_batch = c.batch < m->batch ? c.batch : m->batch;
  if (!(c.lr > 0)) c.lr = 6e-4;
  if (!(c.eps > 0)) c.eps = 1e-8;
  if (c.seed < 0) c.seed = 1337;
  return c;
}

static int read_targets(const RtModel *m, const char *path, int B, int T, int32_t **out, RtError *err);

int rt_prog_train(const char *prog, int argc, char **argv, const RtModel *m) {
  TOpts o;
  int help = 0;
  if (parse_opts(prog, "train", argc, argv,
                 "--data --weights --out --steps --stop-at --batch --micro-batch --lr --seed --eval-every "
                 "--checkpoint --checkpoint-every --resume --log --threads --tokens --targets --min-lr "
                 "--weight-decay --grad-clip --beta1 --beta2 --momentum --warmup --schedule --optimizer --loss-scale "
                 "--loss-scale-window",
                 &o, &help))
    return EXIT_USER;
  if (help) {
    train_help(prog, m);
    return EXIT_OK;
  }
  if (!m->train)
    return rt_usage_error(prog, "train", "this program was built without training support (add the autodiff pass)");
  if (!o.tokens && !m->out_per_token)
    return rt_usage_error(prog, "train", "training a classifier (one output per sequence) on raw bytes is not "
                                      "supported yet; give labelled batches with --tokens and --targets");
  if (!o.tokens && (m->out_dim != m->vocab || m->vocab < RT_BYTE_VOCAB))
    return rt_usage_error(prog, "train", "training on bytes needs a language model with a vocabulary of at least 256");
  Trainer t;
  memset(&t, 0, sizeof t);
  t.prog = prog;
  t.m = m;
  t.c = effective_config(m);
  t.T = (int)m->context;
  t.prec = m->train_precision;
  t.ls = (RtLossScaler){.scale = 1.0, .window = 2000};
  if (t.prec == RT_PREC_FP16) t.ls.scale = 65536.0; /* torch.cuda.amp.GradScaler's defaults */
  if (o.have_loss_scale || o.have_scale_window) {
    if (t.prec != RT_PREC_FP16)
      return rt_usage_error(prog, "train", "--loss-scale and --loss-scale-window apply to fp16 training; this program "
                                           "trains in %s", prec_name(t.prec));
    if (o.have_loss_scale) t.ls.scale = o.loss_scale;
    if (o.have_scale_window) t.ls.window = o.scale_window;
  }
  const char *data = o.data ? o.data : o.tokens ? NULL : t.c.data;
  if (!data && !o.tokens) return rt_usage_error(prog, "train", "--data FILE (or --tokens and --targets) is required");
  if (!o.tokens != !o.targets) return rt_usage_error(prog, "train", "--tokens and --targets go together");
  RtError ferr;
  if (o.tokens) { /* a fixed batch: every step trains on these rows */
    int fb = 0, ft = 0;
    if (rt_prog_read_tokens(m, o.tokens, &t.fix_ids, &fb, &ft, &ferr) ||
        read_targets(m, o.targets, fb, ft, &t.fix_tgt, &ferr)) {
      fprintf(stderr, "%s: error: %s\n", prog, ferr.msg);
      trainer_free(&t);
      return EXIT_USER;
    }
    t.fix_rows = fb;
    t.T = ft;
    if (!o.have_batch) o.batch = fb, o.have_batch = 1;
    if (!o.have_micro && o.batch <= m->batch) o.micro = o.batch, o.have_micro = 1;
    if (!data) o.eval_every = 0, o.have_eval = 1; /* nothing held out */
  }
  if (!o.out) return trainer_free(&t), rt_usage_error(prog, "train", "--out W.safetensors is required");
  if (o.resume && o.weights) return trainer_free(&t), rt_usage_error(prog, "train", "--resume and --weights exclude each other");
  if (o.have_ckpt_every && o.ckpt_every > 0 && !o.checkpoint)
    return trainer_free(&t), rt_usage_error(prog, "train", "--checkpoint-every needs --checkpoint PATH");
  t.B = o.have_batch ? o.batch : t.c.batch;
  if (o.have_micro) {
    t.M = o.micro;
  } else if (t.B % t.c.micro_batch == 0 && t.c.micro_batch <= m->batch) {
    t.M = t.c.micro_batch;
  } else {
    for (t.M = t.B < m->batch ? t.B : m->batch; t.B % t.M; t.M--) {
    }
  }
  if (t.M > m->batch)
    return trainer_free(&t), rt_usage_error(prog, "train", "--micro-batch %lld exceeds the compiled batch %lld", (long long)t.M,
                       (long long)m->batch);
  if (t.B % t.M)
    return trainer_free(&t), rt_usage_error(prog, "train", "--micro-batch %lld does not divide --batch %lld", (long long)t.M,
                       (long long)t.B);
  if (o.have_lr) { /* min_lr keeps the spec's ratio to lr (lr/10 by default) */
    double ratio = t.c.min_lr >= 0 && t.c.min_lr <= t.c.lr ? t.c.min_lr / t.c.lr : 0.1;
    t.c.lr = o.lr;
    t.c.min_lr = o.lr * ratio;
  }
  if (o.have_min_lr) t.c.min_lr = o.min_lr;
  if (t.c.min_lr > t.c.lr)
    return trainer_free(&t), rt_usage_error(prog, "train", "--min-lr %g exceeds the learning rate %g", t.c.min_lr, t.c.lr);
  if (o.have_wd) t.c.weight_decay = o.weight_decay;
  if (o.have_clip) t.c.grad_clip = o.grad_clip;
  if (o.have_beta1) t.c.beta1 = o.beta1;
  if (o.have_beta2) t.c.beta2 = o.beta2;
  if (o.have_momentum) t.c.momentum = o.momentum;
  if (o.have_warmup) t.c.warmup = o.warmup;
  if (o.have_schedule) t.c.schedule = (RtSchedule)o.schedule;
  if (o.have_opt) t.c.optimizer = (RtOptimizer)o.optimizer;
  uint64_t seed = o.have_seed ? o.seed : (uint64_t)t.c.seed;
  t.eval_every = o.have_eval ? o.eval_every : t.c.eval_every;
  t.ckpt_every = o.checkpoint ? (o.have_ckpt_every ? o.ckpt_every : t.c.checkpoint_every) : 0;

  RtError err;
  err.msg[0] = 0;
  int rc = EXIT_OK;
  size_t n = 0;
  if (!data) goto no_data;
  if (rt_read_file(data, &t.data, &n, &err)) goto fail;
  t.nval = n / 10 + (n % 10 != 0);
  if (t.nval < (size_t)t.T + 1) t.nval = (size_t)t.T + 1;
  if (n < t.nval + (size_t)t.T + 1) {
    rt_fail(&err, "%s: %zu bytes is too small: training needs at least %lld (context+1 bytes to train on plus a "
                  "held-out tail of 10%%, at least context+1 bytes)", data, n, (long long)(t.nval + (size_t)t.T + 1));
    goto fail;
  }
  t.ntrain = n - t.nval;
no_data:;
  size_t wbytes = (size_t)m->weight_floats * sizeof(float);
  size_t abytes = (size_t)(m->arena_bytes > m->train_arena_bytes ? m->arena_bytes : m->train_arena_bytes);
  size_t rows = (size_t)(m->batch > t.M ? m->batch : t.M) * (size_t)t.T;
  t.W = rt_xalloc(wbytes);
  t.G = rt_xalloc(wbytes);
  if (t.prec != RT_PREC_FP32 && !(t.Wh = rt_xalloc(wbytes))) {
    rt_fail(&err, "out of memory allocating the working weights");
    goto fail;
  }
  t.Gacc = t.B / t.M > 1 ? rt_xalloc(wbytes) : NULL;
  t.s1 = rt_xalloc(wbytes);
  t.s2 = t.c.optimizer == RT_OPT_ADAMW ? rt_xalloc(wbytes) : NULL;
  t.arena = rt_xalloc(abytes);
  t.scratch = rt_xalloc(rt_model_scratch_floats(m, 1) * sizeof(float));
  t.logits = rt_xalloc((size_t)m->batch * (size_t)t.T * (size_t)m->vocab * sizeof(float));
  t.ids = rt_xalloc(rows * sizeof(int32_t));
  t.tgt = rt_xalloc(rows * sizeof(int32_t));
  if (!t.W || !t.G || (t.B / t.M > 1 && !t.Gacc) || !t.s1 || (t.c.optimizer == RT_OPT_ADAMW && !t.s2) || !t.arena ||
      !t.scratch || !t.logits || !t.ids || !t.tgt) {
    rt_fail(&err, "out of memory allocating the training state");
    goto fail;
  }

  int64_t ck_steps = 0;
  if (o.resume) {
    if (load_checkpoint(&t, o.resume, &ck_steps, &err)) goto fail;
  } else if (o.weights || m->embedded_weights) {
    if (rt_prog_load_weights(m, t.W, o.weights, &err)) goto fail;
    rt_rng_seed(&t.rng, seed);
    t.dropout_seed = seed;
  } else {
    rt_prog_init_weights(m, t.W, seed);
    rt_rng_seed(&t.rng, seed);
    t.dropout_seed = seed;
  }
  t.steps = o.have_steps ? o.steps : (o.resume && ck_steps > 0) ? ck_steps : t.c.steps;
  t.c.steps = t.steps;
  if (t.c.warmup > t.steps) t.c.warmup = t.steps;
  if (t.step > t.steps) {
    rt_fail(&err, "%s: the checkpoint is at step %lld, beyond --steps %lld", o.resume, (long long)t.step,
            (long long)t.steps);
    goto fail;
  }
  t.stop_at = o.stop_at && o.stop_at < t.steps ? o.stop_at : t.steps;
  if (t.stop_at < t.step) t.stop_at = t.step;
  t.hist = calloc((size_t)t.steps + 1, sizeof *t.hist);
  t.log_path = o.log ? strdup(o.log) : with_ext(o.out, ".safetensors", ".csv");
  t.svg_path = t.log_path ? with_ext(t.log_path, ".csv", ".svg") : NULL;
  if (!t.hist || !t.log_path || !t.svg_path) {
    rt_fail(&err, "out of memory");
    goto fail;
  }
  if (open_log(&t, o.resume != NULL, &err)) goto fail;

  int tty = isatty(STDERR_FILENO);
  int64_t first = t.step, every = t.steps / 10 > 0 ? t.steps / 10 : 1;
  double t_start = rt_now_seconds(), t_train = 0, last_draw = 0, last_val = NAN;
  double tokens_per_step = (double)t.B * (double)t.T;
  fprintf(stderr, "%s train: %s, %lld parameters, %zu training bytes, %zu held out, steps %lld..%lld of %lld, "
                  "batch %lld (micro %lld), %s, lr %g, %s, %d threads\n",
          prog, m->name, (long long)m->param_count, t.ntrain, t.nval, (long long)t.step + 1, (long long)t.stop_at,
          (long long)t.steps, (long long)t.B, (long long)t.M, opt_name(t.c.optimizer), t.c.lr, prec_name(t.prec),
          rt_threads());
  while (t.step < t.stop_at) {
    double lr = rt_lr_at(&t.c, t.step + 1);
    double t0 = rt_now_seconds();
    double loss = train_step(&t, lr);
    double dt = rt_now_seconds() - t0;
    t_train += dt;
    int64_t s = t.step;
    if (!isfinite(loss)) {
      if (tty) fputc('\n', stderr);
      rt_fail(&err, "the loss is %g at step %lld (try a lower --lr)", loss, (long long)s);
      goto fail;
    }
    Hist *h = &t.hist[t.nhist++];
    h->step = s;
    h->loss = loss;
    h->val_loss = h->val_bpb = NAN;
    int evald = 0;
    if (t.eval_every > 0 && (s % t.eval_every == 0 || s == t.steps)) {
      h->val_loss = last_val = evaluate(&t);
      h->val_bpb = h->val_loss / log(2.0);
      evald = 1;
    }
    double elapsed = t.elapsed0 + rt_now_seconds() - t_start;
    if (evald)
      fprintf(t.log, "%lld,%.9g,%.8g,%.8g,%.8g,%.1f,%.3f,%.9g\n", (long long)s, lr, loss, h->val_loss, h->val_bpb,
              dt > 0 ? tokens_per_step / dt : 0.0, elapsed, t.ls.scale);
    else
      fprintf(t.log, "%lld,%.9g,%.8g,,,%.1f,%.3f,%.9g\n", (long long)s, lr, loss, dt > 0 ? tokens_per_step / dt : 0.0,
              elapsed, t.ls.scale);
    fflush(t.log);
    if (evald && write_svg(&t, &err)) goto fail;
    if (o.checkpoint && t.ckpt_every > 0 && s % t.ckpt_every == 0 && s != t.stop_at &&
        write_checkpoint(&t, o.checkpoint, elapsed, &err))
      goto fail;
    /* progress */
    double tps = tokens_per_step * (double)(s - first) / t_train;
    double eta = (double)(t.stop_at - s) * t_train / (double)(s - first);
    char etas[32], val[48] = "";
    fmt_secs(etas, sizeof etas, eta);
    if (isfinite(last_val)) snprintf(val, sizeof val, " | val %.4f", last_val);
    double now = rt_now_seconds();
    if (tty) {
      if (now - last_draw > 0.1 || s == t.stop_at || evald) {
        fprintf(stderr, "\rstep %lld/%lld | loss %.4f%s | %.0f tok/s | ETA %s   ", (long long)s, (long long)t.steps,
                loss, val, tps, etas);
        last_draw = now;
      }
    } else if (evald || s % every == 0 || s == t.stop_at) {
      fprintf(stderr, "step %lld/%lld | loss %.4f%s | %.0f tok/s | ETA %s\n", (long long)s, (long long)t.steps, loss,
              val, tps, etas);
    }
  }
  if (tty && t.step > first) fputc('\n', stderr);
  double elapsed = t.elapsed0 + rt_now_seconds() - t_start;
  if (o.checkpoint && write_checkpoint(&t, o.checkpoint, elapsed, &err)) goto fail;
  {
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)t.step);
    const char *meta[] = {"format", "pt", "modelc_model", m->name, "step", step};
    if (write_params(m, o.out, t.W, meta, 3, &err)) goto fail;
  }
  if (write_svg(&t, &err)) goto fail;
  if (t.nhist > 0) {
    const Hist *h = &t.hist[t.nhist - 1];
    printf("step %lld: loss %.6f", (long long)h->step, h->loss);
    if (isfinite(last_val)) printf(", val loss %.6f (%.4f bits per byte)", last_val, last_val / log(2.0));
    if (t.prec == RT_PREC_FP16)
      printf(", loss scale %g, %lld step(s) skipped for overflow", t.ls.scale, (long long)t.ls.skipped);
    printf("\n");
  }
  printf("wrote %s, %s, %s%s%s\n", o.out, t.log_path, t.svg_path, o.checkpoint ? ", " : "",
         o.checkpoint ? o.checkpoint : "");
  trainer_free(&t);
  return rc;
fail:
  fprintf(stderr, "%s: error: %s\n", prog, err.msg);
  trainer_free(&t);
  return EXIT_USER;
}

/* ---- grad ---- */

/* Targets: int32/int64, [B,T] like the tokens (language model) or [B] (classifier), in [0,out_dim). */
static int read_targets(const RtModel *m, const char *path, int B, int T, int32_t **out, RtError *err) {
  RtNpy a;
  if (rt_npy_read(path, &a, err)) return -1;
  int rc = 0;
  if (a.dtype != RT_DT_I32 && a.dtype != RT_DT_I64)
    rc = rt_fail(err, "%s: targets must be int32 or int64, not %s", path, rt_dtype_name(a.dtype));
  else if (m->out_per_token && (a.ndim != 2 || a.shape[0] != B || a.shape[1] != T))
    rc = rt_fail(err, "%s: targets must be [%d,%d] like the tokens", path, B, T);
  else if (!m->out_per_token && (a.ndim != 1 || a.shape[0] != B))
    rc = rt_fail(err, "%s: targets of a classifier must be [%d] (one class per sequence)", path, B);
  size_t n = m->out_per_token ? (size_t)B * (size_t)T : (size_t)B;
  if (!rc && !(*out = malloc(n * sizeof(int32_t)))) rc = rt_fail(err, "out of memory");
  for (size_t i = 0; !rc && i < n; i++) {
    int64_t v = a.dtype == RT_DT_I32 ? ((int32_t *)a.data)[i] : ((int64_t *)a.data)[i];
    if (v < 0 || v >= m->out_dim) {
      rc = rt_fail(err, "%s: target %lld at index %zu is outside [0,%lld)", path, (long long)v, i,
                   (long long)m->out_dim);
      free(*out);
      *out = NULL;
      break;
    }
    (*out)[i] = (int32_t)v;
  }
  rt_npy_free(&a);
  return rc;
}

int rt_prog_grad(const char *prog, int argc, char **argv, const RtModel *m) {
  TOpts o;
  int help = 0;
  if (parse_opts(prog, "grad", argc, argv, "--weights --tokens --targets --out --threads", &o, &help))
    return EXIT_USER;
  if (help) {
    printf("usage: %s grad [--weights W.safetensors] --tokens T.npy --targets Y.npy --out G.safetensors\n\n"
           "One call of the model's training function: the mean cross-entropy of the outputs for tokens T\n"
           "(int32/int64 [B,T], B <= %lld, T <= %lld) against targets Y (%s), and the gradient of\n"
           "every stored parameter, written as float32 under the parameter's name to G, with the loss in\n"
           "its metadata (\"loss\"). Prints 'loss: X'.\n",
           prog, (long long)m->batch, (long long)m->context, m->out_per_token ? "[B,T] like T" : "[B]");
    return EXIT_OK;
  }
  if (!m->train)
    return rt_usage_error(prog, "grad", "this program was built without training support (add the autodiff pass)");
  if (!o.tokens) return rt_usage_error(prog, "grad", "--tokens FILE is required");
  if (!o.targets) return rt_usage_error(prog, "grad", "--targets FILE is required");
  if (!o.out) return rt_usage_error(prog, "grad", "--out FILE is required");
  RtError err;
  err.msg[0] = 0;
  int B = 0, T = 0, rc = EXIT_OK;
  int32_t *ids = NULL, *tgt = NULL;
  size_t wbytes = (size_t)m->weight_floats * sizeof(float);
  float *W = rt_xalloc(wbytes), *G = rt_xalloc(wbytes);
  char *arena = rt_xalloc((size_t)m->train_arena_bytes);
  float *scratch = rt_xalloc(rt_model_scratch_floats(m, 1) * sizeof(float));
  if (!W || !G || !arena || !scratch) {
    rt_fail(&err, "out of memory allocating the model");
    rc = EXIT_USER;
  } else if (rt_prog_load_weights(m, W, o.weights, &err) || rt_prog_read_tokens(m, o.tokens, &ids, &B, &T, &err) ||
             read_targets(m, o.targets, B, T, &tgt, &err)) {
    rc = EXIT_USER;
  } else {
    /* as a training step computes them: working weights rounded to the compiled precision, loss
     * scale 1 (so the gradients are the true ones) */
    rt_round_weights(W, W, m->weight_floats, m->train_precision);
    RtStep s = {B, T, 0, NULL, scratch, 0, 1.0f};
    float loss = 0;
    m->train(&s, arena, W, ids, tgt, &loss, G);
    char ls[48];
    snprintf(ls, sizeof ls, "%.9g", (double)loss);
    const char *meta[] = {"format", "pt", "modelc_model", m->name, "loss", ls};
    if (write_params(m, o.out, G, meta, 3, &err)) rc = EXIT_USER;
    else printf("loss: %.9g\n", (double)loss);
  }
  if (rc) fprintf(stderr, "%s: error: %s\n", prog, err.msg);
  free(ids);
  free(tgt);
  free(W);
  free(G);
  free(arena);
  free(scratch);
  return rc;
}
