/* checkpoint.c: parameters and training checkpoints as safetensors: the parameters of a
 * weight-layout buffer under their names (rt_write_params: PROG train's --out, PROG grad's
 * gradients), and checkpoints holding weights, optimiser state, step, RNG and loss-scaling state
 * in one file (written atomically; loaded after checking model, optimiser and every shape), so
 * that --resume continues a run bit-exactly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"
#include "train.h"

/* ---- files: weights, checkpoints ---- */

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

/* Writes the parameters of buf (W's layout) under their names, with metadata. */
int rt_write_params(const RtModel *m, const char *path, const void *buf, const char *const *meta, int nmeta,
                        RtError *err) {
  RtTensor *ts = calloc((size_t)m->nparams + 1, sizeof *ts);
  if (!ts) return rt_fail(err, "out of memory");
  int n = 0;
  for (int i = 0; i < m->nparams; i++)
    tensor_of(&ts[n++], &m->params[i], m->params[i].name, buf);
  int rc = rt_st_write(path, ts, n, meta, nmeta, err);
  free(ts);
  return rc;
}

int rt_write_checkpoint(Trainer *t, const char *path, double elapsed, RtError *err) {
  const RtModel *m = t->m;
  int sgd = t->c.optimizer == RT_OPT_SGD, ns = m->nparams, per = sgd ? 2 : 3;
  RtTensor *ts = calloc((size_t)(ns * per) + 1, sizeof *ts);
  char **names = calloc((size_t)(ns * per) + 1, sizeof *names);
  int rc = 0, n = 0;
  if (!ts || !names) rc = rt_fail(err, "out of memory");
  for (int i = 0; i < m->nparams && !rc; i++) {
    const RtParamInfo *p = &m->params[i];
    tensor_of(&ts[n++], p, p->name, t->W);
  }
  for (int k = 1; k < per && !rc; k++) {
    const char *prefix = sgd ? "opt.mom." : k == 1 ? "opt.m." : "opt.v.";
    const float *base = k == 1 ? t->s1 : t->s2;
    for (int i = 0; i < m->nparams && !rc; i++) {
      const RtParamInfo *p = &m->params[i];
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
                          rt_opt_name(t->c.optimizer), "step", step, "steps", steps, "rng_state", st, "rng_inc", inc,
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

#define CK_MAX_COUNT ((uint64_t)INT64_MAX / 2)

/* Loads a checkpoint into the trainer after checking it is one of this model's, with this
 * optimiser, holding every tensor with its exact shape. */
int rt_load_checkpoint(Trainer *t, const char *path, int64_t *ck_steps, RtError *err) {
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
  else if (strcmp(opt, rt_opt_name(t->c.optimizer)))
    rc = rt_fail(err, "%s: checkpoint holds %s optimiser state, but this run uses %s", path, opt,
                 rt_opt_name(t->c.optimizer));
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
  else if (el) {
    char *end = NULL;
    double e = strtod(el, &end);
    if (end == el || *end || !(e >= 0 && e < 1e15))
      rc = rt_fail(err, "%s: checkpoint metadata 'elapsed_s' is '%s': expected seconds, a number from 0", path, el);
  }
  int sgd = t->c.optimizer == RT_OPT_SGD;
  for (int k = 0; k < (sgd ? 2 : 3) && !rc; k++) {
    const char *prefix = k == 0 ? "" : sgd ? "opt.mom." : k == 1 ? "opt.m." : "opt.v.";
    float *base = k == 0 ? t->W : k == 1 ? t->s1 : t->s2;
    for (int i = 0; i < m->nparams && !rc; i++) {
      const RtParamInfo *p = &m->params[i];
      char name[512];
      snprintf(name, sizeof name, "%s%s", prefix, p->name);
      const RtTensor *ten = NULL;
      if (rt_st_require(st, name, RT_DT_F32, p->ndim, p->shape, &ten, err)) {
        rc = -1;
        break;
      }
      memcpy((unsigned char *)base + p->offset, ten->data, ten->nbytes);
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
