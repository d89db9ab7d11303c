/* checkpoint.c: training checkpoints as safetensors (the parameters alone, PROG train's --out and
 * PROG grad's gradients, are written by rt_prog_write_weights, prog/model.c): weights, optimiser
 * state, step, RNG and loss-scaling state and the --tokens row cursor in one file (written
 * atomically; loaded after checking model, optimiser, the metadata (rt_ckpt_read_meta, pure, so
 * that it can be fuzzed) and every shape), so that --resume continues a run bit-exactly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"
#include "train.h"

/* ---- checkpoints ---- */

/* Parameter p of a weight-layout buffer (weights, gradients or moments) as a tensor, in its dtype. */
static void tensor_of(RtTensor *ts, const RtParamInfo *p, const char *name, const void *base) {
  memset(ts, 0, sizeof *ts);
  ts->name = name;
  ts->dtype = p->dtype;
  ts->ndim = p->ndim;
  for (int d = 0; d < p->ndim; d++) ts->shape[d] = p->shape[d];
  ts->data = (const unsigned char *)base + p->offset;
  ts->nbytes = (size_t)p->nbytes;
}

int rt_write_checkpoint(Trainer *t, const char *path, double elapsed, const float *s1, const float *s2,
                        RtError *err) {
  const RtModel *m = t->m;
  int sgd = t->c.optimizer == RT_OPT_SGD, ns = m->nparams, per = sgd ? 2 : 3;
  RtTensor *ts = calloc((size_t)(ns * (per + 1)) + 1, sizeof *ts);
  char **names = calloc((size_t)(ns * (per + 1)) + 1, sizeof *names);
  int rc = 0, n = 0;
  if (!ts || !names) rc = rt_fail(err, "out of memory");
  for (int i = 0; i < m->nparams && !rc; i++) {
    const RtParamInfo *p = &m->params[i];
    if (rt_param_is_teacher(m, p)) continue; /* frozen, from --teacher-weights again on --resume */
    tensor_of(&ts[n++], p, p->name, t->W);
  }
  for (int k = 1; k < per && !rc; k++) {
    const char *prefix = sgd ? "opt.mom." : k == 1 ? "opt.m." : "opt.v.";
    const float *base = k == 1 ? s1 : s2;
    for (int i = 0; i < m->nparams && !rc; i++) {
      const RtParamInfo *p = &m->params[i];
      if (rt_param_is_teacher(m, p)) continue;
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
  for (int i = 0; i < m->nparams && !rc && t->masks; i++) { /* pruning masks: NAME.mask, U8, 1 kept */
    const RtParamInfo *p = &m->params[i];
    if (!t->masks[i]) continue;
    size_t len = strlen(p->name) + sizeof ".mask";
    if (!(names[n] = malloc(len))) {
      rc = rt_fail(err, "out of memory");
      break;
    }
    snprintf(names[n], len, "%s.mask", p->name);
    tensor_of(&ts[n], p, names[n], t->W);
    ts[n].dtype = RT_DT_U8;
    ts[n].data = t->masks[i];
    ts[n].nbytes = (size_t)rt_param_numel(p);
    n++;
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
    char frows[32], fnext[32];
    snprintf(frows, sizeof frows, "%lld", (long long)t->fix_rows);
    snprintf(fnext, sizeof fnext, "%lld", (long long)t->fix_next);
    const char *meta[] = {"format", "pt", "modelc_checkpoint", "1", "model", m->name, "optimizer",
                          rt_opt_name(t->c.optimizer), "step", step, "steps", steps, "rng_state", st, "rng_inc", inc,
                          "elapsed_s", el, "dropout_seed", ds, "loss_scale", ls, "loss_scale_good", lsg,
                          "skipped_steps", lss, "tokens_rows", frows, "tokens_next", fnext};
    int nmeta = (int)(sizeof meta / sizeof *meta / 2) - (t->fix_ids ? 0 : 2); /* the cursor: --tokens runs */
    rc = rt_st_write(path, ts, n, meta, nmeta, err);
  }
  if (names)
    for (int i = 0; i < ns * (per + 1); i++) free(names[i]);
  free(names);
  free(ts);
  return rc;
}

#define CK_MAX_COUNT ((uint64_t)INT64_MAX / 2)

int rt_ckpt_read_meta(const char *path, RtCkptMetaGet get, const void *src, const char *model_name,
                      RtOptimizer optimizer, int64_t fix_rows, RtCkptMeta *out, RtError *err) {
  memset(out, 0, sizeof *out);
  out->loss_scale = 1.0;
  int rc = 0;
  const char *model = get(src, "model"), *opt = get(src, "optimizer");
  const char *step = get(src, "step"), *rs = get(src, "rng_state");
  const char *ri = get(src, "rng_inc"), *steps = get(src, "steps");
  const char *el = get(src, "elapsed_s"), *dsd = get(src, "dropout_seed");
  const char *ls = get(src, "loss_scale"), *lsg = get(src, "loss_scale_good"), *lss = get(src, "skipped_steps");
  const char *frows = get(src, "tokens_rows"), *fnext = get(src, "tokens_next");
  uint64_t u_step = 0, u_state = 0, u_inc = 0, u_steps = 0, u_ds = 0, u_good = 0, u_skip = 0, u_rows = 0,
           u_next = 0;
  double d_scale = 1.0, d_el = 0.0;
  if (!get(src, "modelc_checkpoint") || !model || !opt || !step || !rs || !ri)
    rc = rt_fail(err, "%s: not a modelc training checkpoint (its metadata lacks model, optimizer, step or the RNG "
                      "state)", path);
  else if (strcmp(model, model_name))
    rc = rt_fail(err, "%s: checkpoint of model '%s', but this program is model '%s'", path, model, model_name);
  else if (strcmp(opt, rt_opt_name(optimizer)))
    rc = rt_fail(err, "%s: checkpoint holds %s optimiser state, but this run uses %s", path, opt,
                 rt_opt_name(optimizer));
  /* Each field checked on its own, so the message names the one that is wrong. Counts are bounded
   * by 2^62 so that step arithmetic (step + 1, steps - step) cannot overflow an int64. */
  else if (rt_parse_u64(step, &u_step) || u_step > CK_MAX_COUNT)
    rc = rt_fail(err, "%s: checkpoint metadata 'step' is '%s': expected a step count from 0 to %llu", path, step,
                 (unsigned long long)CK_MAX_COUNT);
  else if (steps && (rt_parse_u64(steps, &u_steps) || u_steps > CK_MAX_COUNT))
    rc = rt_fail(err, "%s: checkpoint metadata 'steps' is '%s': expected a step count from 0 to %llu", path, steps,
                 (unsigned long long)CK_MAX_COUNT);
  else if (rt_parse_u64(rs, &u_state))
    rc = rt_fail(err, "%s: checkpoint metadata 'rng_state' is '%s': expected an unsigned 64-bit integer", path, rs);
  else if (rt_parse_u64(ri, &u_inc) || !(u_inc & 1))
    rc = rt_fail(err, "%s: checkpoint metadata 'rng_inc' is '%s': expected an odd unsigned 64-bit integer", path, ri);
  else if (dsd && rt_parse_u64(dsd, &u_ds))
    rc = rt_fail(err, "%s: checkpoint metadata 'dropout_seed' is '%s': expected an unsigned 64-bit integer", path,
                 dsd);
  else if (ls && rt_parse_real(ls, 1e-30, 1e30, 0, 0, &d_scale))
    rc = rt_fail(err, "%s: checkpoint metadata 'loss_scale' is '%s': expected a number from 1e-30 to 1e30", path, ls);
  else if (lsg && (rt_parse_u64(lsg, &u_good) || u_good > CK_MAX_COUNT))
    rc = rt_fail(err, "%s: checkpoint metadata 'loss_scale_good' is '%s': expected a step count from 0 to %llu",
                 path, lsg, (unsigned long long)CK_MAX_COUNT);
  else if (lss && (rt_parse_u64(lss, &u_skip) || u_skip > u_step))
    rc = rt_fail(err, "%s: checkpoint metadata 'skipped_steps' is '%s': expected a count from 0 to the step (%llu)",
                 path, lss, (unsigned long long)u_step);
  else if (el && rt_parse_real(el, 0, 1e15, 0, 1, &d_el))
    rc = rt_fail(err, "%s: checkpoint metadata 'elapsed_s' is '%s': expected seconds, a number from 0", path, el);
  /* The --tokens row cursor: a run on fixed rows resumes at the row it would have drawn next, so
   * only with the same number of rows (a checkpoint without them, older or of a --data run,
   * starts the cursor at row 0). */
  else if (frows && rt_parse_u64(frows, &u_rows))
    rc = rt_fail(err, "%s: checkpoint metadata 'tokens_rows' is '%s': expected a row count", path, frows);
  else if (frows && (fix_rows <= 0 || u_rows != (uint64_t)fix_rows)) {
    char this_run[32] = "none";
    if (fix_rows > 0) snprintf(this_run, sizeof this_run, "%lld", (long long)fix_rows);
    rc = rt_fail(err, "%s: checkpoint metadata 'tokens_rows' is '%s': the checkpointed run trained on %s --tokens "
                      "rows, this one on %s; resume with the same --tokens and --targets", path, frows, frows,
                 this_run);
  } else if (frows && !fnext)
    rc = rt_fail(err, "%s: checkpoint metadata has 'tokens_rows' but no 'tokens_next' (the next row to train on)",
                 path);
  else if (fnext && !frows)
    rc = rt_fail(err, "%s: checkpoint metadata 'tokens_next' is '%s' without 'tokens_rows'", path, fnext);
  else if (fnext && (rt_parse_u64(fnext, &u_next) || u_next >= u_rows))
    rc = rt_fail(err, "%s: checkpoint metadata 'tokens_next' is '%s': expected a row from 0 to %llu", path, fnext,
                 (unsigned long long)(u_rows - 1));
  if (rc) return rc;
  out->step = (int64_t)u_step;
  out->steps = (int64_t)u_steps;
  out->rng_state = u_state;
  out->rng_inc = u_inc;
  out->dropout_seed = u_ds;
  out->have_loss_scale = ls != NULL;
  out->loss_scale = d_scale;
  out->ls_good = (int64_t)u_good;
  out->ls_skipped = (int64_t)u_skip;
  out->elapsed = d_el;
  out->fix_next = (int64_t)u_next;
  return 0;
}

static const char *st_meta(const void *st, const char *key) { return rt_st_metadata(st, key); }

/* Loads a checkpoint into the trainer after checking it is one of this model's, with this
 * optimiser, holding every tensor with its exact shape. */
int rt_load_checkpoint(Trainer *t, const char *path, int64_t *ck_steps, RtError *err) {
  const RtModel *m = t->m;
  RtSafetensors *st = NULL;
  if (rt_st_open(&st, path, err)) return -1;
  RtCkptMeta meta;
  int rc = rt_ckpt_read_meta(path, st_meta, st, m->name, t->c.optimizer, t->fix_ids ? t->fix_rows : 0, &meta, err);
  int sgd = t->c.optimizer == RT_OPT_SGD;
  for (int k = 0; k < (sgd ? 2 : 3) && !rc; k++) {
    const char *prefix = k == 0 ? "" : sgd ? "opt.mom." : k == 1 ? "opt.m." : "opt.v.";
    float *base = k == 0 ? t->W : k == 1 ? t->s1 : t->s2;
    int64_t lo = k == 0 ? 0 : t->opt_lo, hi = k == 0 ? rt_weight_floats(m) : t->opt_lo + t->opt_n;
    for (int i = 0; i < m->nparams && !rc; i++) {
      const RtParamInfo *p = &m->params[i];
      if (rt_param_is_teacher(m, p)) continue;
      char name[512];
      snprintf(name, sizeof name, "%s%s", prefix, p->name);
      const RtTensor *ten = NULL;
      if (rt_st_require(st, name, RT_DT_F32, p->ndim, p->shape, &ten, err)) {
        rc = -1;
        break;
      }
      /* the moments of this process's parameters (a sharded optimiser keeps those alone) */
      int64_t o = rt_param_f32_index(p);
      if (o >= lo && o < hi) memcpy(base + (o - lo), ten->data, ten->nbytes);
    }
  }
  for (int i = 0; i < m->nparams && !rc && t->masks; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!t->masks[i]) continue;
    char name[512];
    snprintf(name, sizeof name, "%s.mask", p->name);
    const RtTensor *ten = NULL;
    if (rt_st_require(st, name, RT_DT_U8, p->ndim, p->shape, &ten, err)) {
      rc = -1;
      break;
    }
    const unsigned char *b = ten->data;
    for (size_t j = 0; j < ten->nbytes && !rc; j++)
      if (b[j] > 1) rc = rt_fail(err, "%s: tensor '%s' holds %u at %zu: a mask holds 0 or 1", path, name, (unsigned)b[j], j);
    if (!rc) memcpy(t->masks[i], ten->data, ten->nbytes);
  }
  if (!rc) {
    t->step = meta.step;
    t->rng.state = meta.rng_state;
    t->rng.inc = meta.rng_inc;
    t->dropout_seed = meta.dropout_seed;
    if (meta.have_loss_scale) t->ls.scale = meta.loss_scale; /* older checkpoints: the run's initial scale */
    t->ls.good = meta.ls_good;
    t->ls.skipped = meta.ls_skipped;
    t->elapsed0 = meta.elapsed;
    t->fix_next = meta.fix_next;
    *ck_steps = meta.steps;
  }
  rt_st_close(st);
  return rc;
}
