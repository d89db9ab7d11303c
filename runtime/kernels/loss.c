/* loss.c: the loss of training, cross-entropy over rows of logits (rt_cross_entropy), and its
 * gradient (rt_cross_entropy_grad), the first backward op of the IR (docs/ir.md, "Training"). Each
 * has a naive serial `_ref` twin (double accumulation); tests/unit/test_rt_backward.c compares the
 * fast kernels with their twins and the twins with central differences.
 *
 * Threading: the loss sums per-block losses (fixed blocks, not per-thread chunks) in block order,
 * so the result does not depend on the thread count. */
#include "kernels.h"

#include <math.h>

/* ---- cross-entropy: logits (R,V), targets (R) ----------------------------------------------- */

/* The loss is a sum over rows: rows go in at most CE_BLOCKS fixed blocks (not per-thread chunks),
 * each block's sum lands in its own slot and the slots are added in order, so the result is the
 * same for every thread count. A target outside [0,V) is never read out of bounds: its row adds
 * 0 to the loss (still counted in R) and gets a zero gradient. */
#define CE_BLOCKS 64

typedef struct CeCtx {
  float *dlogits;
  const float *logits;
  const int32_t *targets;
  int R, V, rows_per_block;
  float dloss;
  double part[CE_BLOCKS];
} CeCtx;

static void ce_blocks(void *p, int lo, int hi) {
  CeCtx *c = p;
  int V = c->V;
  for (int blk = lo; blk < hi; blk++) {
    int r0 = blk * c->rows_per_block, r1 = r0 + c->rows_per_block < c->R ? r0 + c->rows_per_block : c->R;
    double acc = 0;
    for (int r = r0; r < r1; r++) {
      const float *l = c->logits + (size_t)r * V;
      int t = c->targets[r];
      if (t < 0 || t >= V)
        continue;
      float mx = rt_max_row(l, V);
      /* exp_row writes; the loss does not need the exponentials, so a small stack tile holds them */
      float sum = 0.0f, tile[256];
      for (int j0 = 0; j0 < V; j0 += 256) {
        int n = V - j0 < 256 ? V - j0 : 256;
        sum += rt_exp_row(tile, l + j0, n, mx);
      }
      acc += (double)mx + log((double)sum) - (double)l[t];
    }
    c->part[blk] = acc;
  }
}

/* rows per block: at least about 8K floats of work, and at most CE_BLOCKS blocks */
static int ce_rows_per_block(int R, int V) {
  int rpb = rt_row_grain(V);
  if ((R + rpb - 1) / rpb > CE_BLOCKS)
    rpb = (R + CE_BLOCKS - 1) / CE_BLOCKS;
  return rpb;
}

float rt_cross_entropy(const float *logits, const int32_t *targets, int R, int V) {
  if (R <= 0 || V <= 0)
    return 0.0f;
  CeCtx c = {NULL, logits, targets, R, V, ce_rows_per_block(R, V), 0.0f, {0}};
  int nblk = (R + c.rows_per_block - 1) / c.rows_per_block;
  rt_parallel_for(nblk, 1, ce_blocks, &c);
  double s = 0;
  for (int b = 0; b < nblk; b++)
    s += c.part[b];
  return (float)(s / R);
}

float rt_cross_entropy_ref(const float *logits, const int32_t *targets, int R, int V) {
  if (R <= 0 || V <= 0)
    return 0.0f;
  double s = 0;
  for (int r = 0; r < R; r++) {
    const float *l = logits + (size_t)r * V;
    int t = targets[r];
    if (t < 0 || t >= V)
      continue;
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++)
      mx = l[j] > mx ? l[j] : mx;
    for (int j = 0; j < V; j++)
      sum += exp(l[j] - mx);
    s += mx + log(sum) - l[t];
  }
  return (float)(s / R);
}

static void ce_grad_rows(void *p, int lo, int hi) {
  const CeCtx *c = p;
  int V = c->V;
  float k = c->dloss / (float)c->R;
  for (int r = lo; r < hi; r++) {
    const float *l = c->logits + (size_t)r * V;
    float *d = c->dlogits + (size_t)r * V;
    int t = c->targets[r];
    if (t < 0 || t >= V) {
      memset(d, 0, (size_t)V * sizeof(float));
      continue;
    }
    float mx = rt_max_row(l, V);
    float s = k / rt_exp_row(d, l, V, mx); /* d may equal l: each element is read before written */
    for (int j = 0; j < V; j++)
      d[j] *= s;
    d[t] -= k;
  }
}

void rt_cross_entropy_grad(float *dlogits, const float *logits, const int32_t *targets, int R, int V, float dloss) {
  if (R <= 0 || V <= 0)
    return;
  CeCtx c = {dlogits, logits, targets, R, V, 0, dloss, {0}};
  rt_parallel_for(R, rt_row_grain(V), ce_grad_rows, &c);
}

void rt_cross_entropy_grad_ref(float *dlogits, const float *logits, const int32_t *targets, int R, int V,
                               float dloss) {
  for (int r = 0; r < R; r++) {
    const float *l = logits + (size_t)r * V;
    float *d = dlogits + (size_t)r * V;
    int t = targets[r];
    if (t < 0 || t >= V) {
      for (int j = 0; j < V; j++)
        d[j] = 0.0f;
      continue;
    }
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++)
      mx = l[j] > mx ? l[j] : mx;
    for (int j = 0; j < V; j++)
      sum += exp(l[j] - mx);
    for (int j = 0; j < V; j++) {
      double pj = exp(l[j] - mx) / sum;
      d[j] = (float)((double)dloss * (pj - (j == t ? 1.0 : 0.0)) / R); /* l[j] read first: d may be l */
    }
  }
}
