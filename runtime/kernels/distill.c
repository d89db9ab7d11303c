/* distill.c: the knowledge-distillation loss (the distill_loss op) and its gradient with respect to
 * the student's logits (distill_grad), Hinton et al. 2015 as DistilBERT trains with it:
 *
 *   loss = alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * CE(z_s, targets)
 *
 * z_s (student) and z_t (teacher) are (R,V) row-major logits, targets (R) int32. Both parts are
 * means over the R rows (the KL summed over the V classes of a row first), as cross-entropy is
 * (rt_cross_entropy). The gradient of one row (k = dloss / R):
 *
 *   d z_s = k * (alpha * T * (softmax(z_s/T) - softmax(z_t/T)) + (1 - alpha) * (softmax(z_s) - onehot))
 *
 * A target outside [0,V) adds nothing to the CE part (its row is still counted in R) and no
 * one-hot term, as rt_cross_entropy does; its KL part counts. The teacher gets no gradient.
 *
 * Each row's three log-sum-exps are computed in float with rt_expf and summed in double; the
 * rows go in fixed blocks (not per-thread chunks) whose sums are added in block order, so the
 * result does not depend on the thread count. The `_ref` twins are serial, all in double. */
#include "kernels.h"

#include <math.h>
#include <string.h>

#define DL_BLOCKS 64

/* log sum_j exp(x[j] * s), max-subtracted */
static double lse(const float *x, int V, float s) {
  float mx = -INFINITY;
  for (int j = 0; j < V; j++) mx = x[j] * s > mx ? x[j] * s : mx;
  double sum = 0;
  for (int j = 0; j < V; j++) sum += rt_expf(x[j] * s - mx);
  return (double)mx + log(sum);
}

typedef struct DlCtx {
  float *d;
  const float *zs, *zt;
  const int32_t *targets;
  int R, V, rows_per_block;
  float T, alpha, dloss;
  double kl[DL_BLOCKS], ce[DL_BLOCKS];
} DlCtx;

static void dl_blocks(void *p, int lo, int hi) {
  DlCtx *c = p;
  int V = c->V;
  float it = 1.0f / c->T;
  for (int blk = lo; blk < hi; blk++) {
    int r0 = blk * c->rows_per_block, r1 = r0 + c->rows_per_block < c->R ? r0 + c->rows_per_block : c->R;
    double kl = 0, ce = 0;
    for (int r = r0; r < r1; r++) {
      const float *s = c->zs + (size_t)r * V, *t = c->zt + (size_t)r * V;
      double ls = lse(s, V, it), lt = lse(t, V, it), k = 0;
      for (int j = 0; j < V; j++) { /* p_t (log p_t - log p_s) */
        double a = (double)(t[j] * it) - lt;
        k += (double)rt_expf((float)a) * (a - ((double)(s[j] * it) - ls));
      }
      kl += k;
      int y = c->targets[r];
      if (y >= 0 && y < V) ce += lse(s, V, 1.0f) - (double)s[y];
    }
    c->kl[blk] = kl;
    c->ce[blk] = ce;
  }
}

static int dl_rows_per_block(int R, int V) {
  int rpb = rt_row_grain(V);
  if ((R + rpb - 1) / rpb > DL_BLOCKS) rpb = (R + DL_BLOCKS - 1) / DL_BLOCKS;
  return rpb;
}

void rt_distill_loss(float *loss, float *kl, float *ce, const float *zs, const float *zt, const int32_t *targets,
                     int R, int V, float temperature, float alpha) {
  *loss = *kl = *ce = 0.0f;
  if (R <= 0 || V <= 0) return;
  DlCtx c = {NULL, zs, zt, targets, R, V, dl_rows_per_block(R, V), temperature, alpha, 0.0f, {0}, {0}};
  int nblk = (R + c.rows_per_block - 1) / c.rows_per_block;
  rt_parallel_for(nblk, 1, dl_blocks, &c);
  double k = 0, e = 0;
  for (int b = 0; b < nblk; b++) k += c.kl[b], e += c.ce[b];
  k /= R, e /= R;
  double T = temperature;
  *kl = (float)k;
  *ce = (float)e;
  *loss = (float)(alpha * T * T * k + (1.0 - alpha) * e);
}

static void dl_grad_rows(void *p, int lo, int hi) {
  const DlCtx *c = p;
  int V = c->V;
  float it = 1.0f / c->T, k = c->dloss / (float)c->R;
  float ka = k * c->alpha * c->T, kc = k * (1.0f - c->alpha);
  for (int r = lo; r < hi; r++) {
    const float *s = c->zs + (size_t)r * V, *t = c->zt + (size_t)r * V;
    float *d = c->d + (size_t)r * V; /* may be s: each element is read before it is written */
    float ls = (float)lse(s, V, it), lt = (float)lse(t, V, it), l1 = (float)lse(s, V, 1.0f);
    int y = c->targets[r];
    for (int j = 0; j < V; j++) {
      float ps = rt_expf(s[j] * it - ls), pt = rt_expf(t[j] * it - lt), p1 = rt_expf(s[j] - l1);
      d[j] = ka * (ps - pt) + (y >= 0 && y < V ? kc * p1 : 0.0f);
    }
    if (y >= 0 && y < V) d[y] -= kc;
  }
}

void rt_distill_grad(float *dzs, const float *zs, const float *zt, const int32_t *targets, int R, int V,
                     float temperature, float alpha, float dloss) {
  if (R <= 0 || V <= 0) return;
  DlCtx c = {dzs, zs, zt, targets, R, V, 0, temperature, alpha, dloss, {0}, {0}};
  rt_parallel_for(R, rt_row_grain(V), dl_grad_rows, &c);
}

/* ---- the twins: serial, double ---- */

static double lse_ref(const float *x, int V, double s) {
  double mx = -INFINITY, sum = 0;
  for (int j = 0; j < V; j++) mx = x[j] * s > mx ? x[j] * s : mx;
  for (int j = 0; j < V; j++) sum += exp(x[j] * s - mx);
  return mx + log(sum);
}

void rt_distill_loss_ref(float *loss, float *kl, float *ce, const float *zs, const float *zt, const int32_t *targets,
                         int R, int V, float temperature, float alpha) {
  double T = temperature, k = 0, e = 0;
  for (int r = 0; r < R; r++) {
    const float *s = zs + (size_t)r * V, *t = zt + (size_t)r * V;
    double ls = lse_ref(s, V, 1 / T), lt = lse_ref(t, V, 1 / T);
    for (int j = 0; j < V; j++) {
      double a = t[j] / T - lt;
      k += exp(a) * (a - (s[j] / T - ls));
    }
    int y = targets[r];
    if (y >= 0 && y < V) e += lse_ref(s, V, 1) - s[y];
  }
  k = R > 0 ? k / R : 0;
  e = R > 0 ? e / R : 0;
  *kl = (float)k;
  *ce = (float)e;
  *loss = (float)(alpha * T * T * k + (1 - alpha) * e);
}

void rt_distill_grad_ref(float *dzs, const float *zs, const float *zt, const int32_t *targets, int R, int V,
                         float temperature, float alpha, float dloss) {
  double T = temperature, k = (double)dloss / (R > 0 ? R : 1);
  for (int r = 0; r < R; r++) {
    const float *s = zs + (size_t)r * V, *t = zt + (size_t)r * V;
    double ls = lse_ref(s, V, 1 / T), lt = lse_ref(t, V, 1 / T), l1 = lse_ref(s, V, 1);
    int y = targets[r];
    for (int j = 0; j < V; j++) {
      double g = alpha * T * (exp(s[j] / T - ls) - exp(t[j] / T - lt));
      if (y >= 0 && y < V) g += (1 - alpha) * (exp(s[j] - l1) - (j == y ? 1.0 : 0.0));
      dzs[(size_t)r * V + j] = (float)(k * g);
    }
  }
}
