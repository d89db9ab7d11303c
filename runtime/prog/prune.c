/* prune.c: what the prune pass (docs/passes.md, "prune") asks of a program at run time: the masks
 * of unstructured and N:M pruning, computed from the weights (RtPruneInfo; the mask arithmetic is
 * core/sparse.c's), and the units a structurally pruned parameter keeps when the file holds the
 * full tensor (RtPruneInfo.select). The loader (model.c) calls rt_prune_select_load for select
 * parameters and rt_prune_finish after loading; the trainer (train.c) holds masks with
 * rt_masks_compute / rt_masks_apply; PROG importance (rt_verb_importance) writes the head scores
 * that select=importance reads.
 *
 * Mask rules (each parameter's RtPruneInfo, at a sparsity s):
 *   magnitude  the floor(s n + 0.5) elements of smallest |w| are zero (ties: the lower index first)
 *   global     the same over all global parameters together, floor(s sum(n) + 0.5) of them
 *   nm         in each group of m consecutive elements along K, the n of largest |w| are kept
 * A csr parameter is packed from the masked dense values at load (room for exactly what the mask
 * leaves). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"

int rt_param_masked(const RtParamInfo *p) {
  return p->prune && p->prune->kind != RT_PRUNE_NONE && p->format == RT_FMT_DENSE && p->dtype == RT_DT_F32;
}

int rt_model_has_masks(const RtModel *m) {
  for (int i = 0; i < m->nparams; i++)
    if (rt_param_masked(&m->params[i])) return 1;
  return 0;
}

/* The sparsity in force for p after `step` optimiser steps (step < 0: its target). */
static double sparsity_at(const RtParamInfo *p, const RtTrainConfig *c, int64_t step) {
  double target = p->prune->kind == RT_PRUNE_NM ? 1.0 - (double)p->prune->n / p->prune->m : p->prune->sparsity;
  if (step < 0 || !c || c->prune_every <= 0) return target;
  if (p->prune->kind == RT_PRUNE_NM) return step >= c->prune_start ? target : 0.0; /* the pattern, or nothing */
  return rt_prune_schedule(step, c->prune_initial, target, c->prune_start, c->prune_end, c->prune_every);
}

int rt_masks_compute(const RtModel *m, float *W, uint8_t *const *masks, const RtTrainConfig *c, int64_t step,
                     RtError *err) {
  int nglobal = 0;
  int64_t total = 0;
  double gs = 0;
  for (int i = 0; i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!rt_param_masked(p)) continue;
    int64_t n = rt_param_numel(p);
    float *w = W + p->offset / 4;
    uint8_t *mask = masks ? masks[i] : malloc((size_t)n + 1);
    if (!mask) return rt_fail(err, "out of memory computing the mask of '%s'", p->name);
    double s = sparsity_at(p, c, step);
    int rc = 0;
    if (p->prune->kind == RT_PRUNE_GLOBAL) {
      nglobal++;
      total += n;
      gs = s;
    } else if (p->prune->kind == RT_PRUNE_NM) {
      if (s > 0) {
        RtError e;
        if (rt_prune_nm(w, mask, p->shape[0], p->shape[1], p->prune->n, p->prune->m, &e))
          rc = rt_fail(err, "'%s': %s", p->name, e.msg);
      } else
        memset(mask, 1, (size_t)n);
    } else {
      rt_prune_magnitude(w, mask, n, (int64_t)floor(s * (double)n + 0.5));
    }
    if (!masks) free(mask);
    if (rc) return rc;
  }
  if (nglobal == 0) return 0;
  float **ws = calloc((size_t)nglobal, sizeof *ws);
  uint8_t **ms = calloc((size_t)nglobal, sizeof *ms);
  int64_t *ns = calloc((size_t)nglobal, sizeof *ns);
  int k = 0, rc = 0;
  if (!ws || !ms || !ns) rc = rt_fail(err, "out of memory computing the global mask");
  for (int i = 0; !rc && i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!rt_param_masked(p) || p->prune->kind != RT_PRUNE_GLOBAL) continue;
    ws[k] = W + p->offset / 4;
    ns[k] = rt_param_numel(p);
    ms[k] = masks ? masks[i] : malloc((size_t)ns[k] + 1);
    if (!ms[k]) rc = rt_fail(err, "out of memory computing the global mask");
    k++;
  }
  if (!rc) rt_prune_magnitude_multi(ws, ms, ns, nglobal, (int64_t)floor(gs * (double)total + 0.5));
  for (int j = 0; !masks && ms && j < k; j++) free(ms[j]);
  free(ws);
  free(ms);
  free(ns);
  return rc;
}

void rt_masks_apply(const RtModel *m, float *W, uint8_t *const *masks) {
  for (int i = 0; i < m->nparams; i++)
    if (masks[i]) rt_mask_apply(W + m->params[i].offset / 4, masks[i], rt_param_numel(&m->params[i]));
}

uint8_t **rt_masks_new(const RtModel *m) {
  uint8_t **masks = calloc((size_t)m->nparams + 1, sizeof *masks);
  if (!masks) return NULL;
  for (int i = 0; i < m->nparams; i++)
    if (rt_param_masked(&m->params[i])) {
      int64_t n = rt_param_numel(&m->params[i]);
      if (!(masks[i] = malloc((size_t)n + 1))) {
        rt_masks_free(m, masks);
        return NULL;
      }
      memset(masks[i], 1, (size_t)n);
    }
  return masks;
}

void rt_masks_free(const RtModel *m, uint8_t **masks) {
  if (!masks) return;
  for (int i = 0; i < m->nparams; i++) free(masks[i]);
  free(masks);
}

int rt_prune_pack_csr(const RtParamInfo *p, void *W, float *dense, RtError *err) {
  int64_t N = p->shape[0], K = p->shape[1], n = N * K;
  uint8_t *mask = malloc((size_t)n + 1);
  if (!mask) return rt_fail(err, "out of memory packing '%s'", p->name);
  int rc = 0;
  if (p->prune->kind == RT_PRUNE_NM) {
    RtError e;
    if (rt_prune_nm(dense, mask, N, K, p->prune->n, p->prune->m, &e)) rc = rt_fail(err, "'%s': %s", p->name, e.msg);
  } else {
    rt_prune_magnitude(dense, mask, n, n - p->prune->nnz);
  }
  free(mask);
  RtError e;
  if (!rc && rt_csr_pack((unsigned char *)W + p->offset, dense, N, K, p->prune->nnz, &e))
    rc = rt_fail(err, "'%s' (stored as csr): %s", p->name, e.msg);
  return rc;
}

/* ---- structured pruning: which units a select parameter keeps ---- */

/* The full tensor's shape of select parameter p. */
static void full_shape(const RtParamInfo *p, int64_t *dims) {
  for (int d = 0; d < p->ndim; d++) dims[d] = p->shape[d];
  dims[p->prune->axis] = (int64_t)p->prune->parts * p->prune->unit * p->prune->of;
}

/* Element (part, unit u, j within the unit) of the cut axis: its index along that axis. */
static int64_t axis_index(const RtPruneInfo *s, int part, int64_t u, int j) {
  return ((int64_t)part * s->of + u) * s->unit + j;
}

/* Adds to score[u] the squares of unit u's elements of tensor x (full shape of p, f32). */
static void add_norms(const RtParamInfo *p, const float *x, double *score) {
  const RtPruneInfo *s = p->prune;
  int64_t dims[4];
  full_shape(p, dims);
  int64_t rows = p->ndim == 2 ? dims[0] : dims[0], cols = p->ndim == 2 ? dims[1] : 1;
  for (int part = 0; part < s->parts; part++)
    for (int64_t u = 0; u < s->of; u++)
      for (int j = 0; j < s->unit; j++) {
        int64_t a = axis_index(s, part, u, j);
        double acc = 0;
        if (s->axis == 0)
          for (int64_t c = 0; c < cols; c++) acc += (double)x[a * cols + c] * x[a * cols + c];
        else
          for (int64_t r = 0; r < rows; r++) acc += (double)x[r * cols + a] * x[r * cols + a];
        score[u] += acc;
      }
}

/* Kept units of group g (sorted ascending, keep of them) by its rule: computed from the file. */
static int group_keep(const RtModel *m, const RtSafetensors *st, const char *path, int g, const RtParamInfo *p,
                      int64_t *kept, int keep, RtError *err) {
  const RtPruneInfo *s = p->prune;
  double *score = calloc((size_t)s->of, sizeof *score);
  if (!score) return rt_fail(err, "out of memory");
  int rc = 0;
  if (s->select == RT_SEL_IMPORTANCE) {
    char name[512];
    snprintf(name, sizeof name, "%s.head_importance", m->params[g].name);
    const RtTensor *t = rt_st_find(st, name);
    if (!t)
      rc = rt_fail(err, "%s: tensor '%s' is missing: prune<kind=heads;score=importance> keeps the heads it ranks "
                   "first; write it with the unpruned program's importance verb, or build with score=norm", path, name);
    else if (t->dtype != RT_DT_F32 || t->ndim != 1 || t->shape[0] != s->of)
      rc = rt_fail(err, "%s: tensor '%s' must be F32 [%d] (one score per head)", path, name, s->of);
    else
      for (int u = 0; u < s->of; u++) {
        float v;
        memcpy(&v, t->data + (size_t)u * 4, 4);
        if (!isfinite(v)) rc = rt_fail(err, "%s: tensor '%s' has a non-finite score for head %d", path, name, u);
        score[u] = v;
      }
  } else {
    for (int i = 0; i < m->nparams && !rc; i++) {
      const RtParamInfo *q = &m->params[i];
      if (!q->prune || q->prune->select == RT_SEL_NONE || q->prune->group != g) continue;
      const RtTensor *t = rt_st_find(st, q->name);
      int64_t dims[4];
      full_shape(q, dims);
      int64_t n = 1;
      for (int d = 0; d < q->ndim; d++) n *= dims[d];
      int same = t && t->ndim == q->ndim;
      for (int d = 0; same && d < q->ndim; d++) same = t->shape[d] == dims[d];
      if (!same) {
        rc = rt_fail(err, "%s: tensor '%s' is missing or not full-size: selecting the units of '%s' reads every "
                     "tensor of its group at full size", path, q->name, m->params[g].name);
        break;
      }
      float *x = malloc((size_t)n * sizeof(float) + 1);
      if (!x) {
        rc = rt_fail(err, "out of memory");
        break;
      }
      RtError e;
      if (rt_tensor_to_f32(t, x, &e)) rc = rt_fail(err, "%s: %s", path, e.msg);
      else add_norms(q, x, score);
      free(x);
    }
  }
  if (!rc) { /* the keep largest, ties to the lower index, then in ascending order */
    char *taken = calloc((size_t)s->of, 1);
    if (!taken) rc = rt_fail(err, "out of memory");
    for (int k = 0; !rc && k < keep; k++) {
      int best = -1;
      for (int u = 0; u < s->of; u++)
        if (!taken[u] && (best < 0 || score[u] > score[best])) best = u;
      taken[best] = 1;
    }
    for (int u = 0, k = 0; !rc && u < s->of; u++)
      if (taken[u]) kept[k++] = u;
    free(taken);
  }
  free(score);
  return rc;
}

int rt_prune_select_load(const RtModel *m, const RtSafetensors *st, const char *path, const RtParamInfo *p,
                         const RtTensor *t, int64_t **cache, float *out, RtError *err) {
  const RtPruneInfo *s = p->prune;
  int g = s->group;
  if (g < 0 || g >= m->nparams) return rt_fail(err, "'%s': invalid selection group", p->name);
  int keep = (int)(p->shape[s->axis] / ((int64_t)s->parts * s->unit));
  if (!cache[g]) {
    if (!(cache[g] = malloc(sizeof(int64_t) * (size_t)keep))) return rt_fail(err, "out of memory");
    int rc = group_keep(m, st, path, g, p, cache[g], keep, err);
    if (rc) {
      free(cache[g]);
      cache[g] = NULL;
      return rc;
    }
  }
  int64_t dims[4], n = 1;
  full_shape(p, dims);
  for (int d = 0; d < p->ndim; d++) n *= dims[d];
  float *x = malloc((size_t)n * sizeof(float) + 1);
  if (!x) return rt_fail(err, "out of memory");
  RtError e;
  if (rt_tensor_to_f32(t, x, &e)) {
    free(x);
    return rt_fail(err, "%s: %s", path, e.msg);
  }
  int64_t cols = p->ndim == 2 ? dims[1] : 1, ocols = p->ndim == 2 ? p->shape[1] : 1;
  for (int part = 0; part < s->parts; part++)
    for (int k = 0; k < keep; k++)
      for (int j = 0; j < s->unit; j++) {
        int64_t a = axis_index(s, part, cache[g][k], j), b = ((int64_t)part * keep + k) * s->unit + j;
        if (s->axis == 0)
          memcpy(out + b * ocols, x + a * cols, (size_t)cols * sizeof(float));
        else
          for (int64_t r = 0; r < dims[0]; r++) out[r * ocols + b] = x[r * cols + a];
      }
  free(x);
  return 0;
}

int rt_prune_is_full(const RtParamInfo *p, const RtTensor *t) {
  if (!p->prune || p->prune->select == RT_SEL_NONE || t->ndim != p->ndim) return 0;
  int64_t dims[4];
  full_shape(p, dims);
  for (int d = 0; d < p->ndim; d++)
    if (t->shape[d] != dims[d]) return 0;
  return 1;
}
