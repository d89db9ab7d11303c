/* loss.c: the loss of training, cross-entropy over rows of logits (rt_cross_entropy), and its
 * gradient (rt_cross_entropy_grad), the first backward op of the IR (docs/ir.md, "Training"). Each
 * has a naive serial `_ref` twin (double accumulation); tests/unit/test_rt_backward.c compares the
 * fast kernels with their twins and the twins with central differences.
 *
 * rt_linear_xent fuses the LM head with both (the linear_xent op): the logits of a chunk of rows at
 * a time, never of all rows (see its comment below).
 *
 * Threading: the loss sums per-block losses (fixed blocks, not per-thread chunks) in block order,
 * so the result does not depend on the thread count. */
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* -log softmax(l)[t] of one row of V logits, t in [0,V), as the loss adds it */
static double ce_row_loss(const float *l, int t, int V) {
  float mx = rt_max_row(l, V);
  /* exp_row writes; the loss does not need the exponentials, so a small stack tile holds them */
  float sum = 0.0f, tile[256];
  for (int j0 = 0; j0 < V; j0 += 256) {
    int n = V - j0 < 256 ? V - j0 : 256;
    sum += rt_exp_row(tile, l + j0, n, mx);
  }
  return (double)mx + log((double)sum) - (double)l[t];
}

static void ce_blocks(void *p, int lo, int hi) {
  CeCtx *c = p;
  int V = c->V;
  for (int blk = lo; blk < hi; blk++) {
    int r0 = blk * c->rows_per_block, r1 = r0 + c->rows_per_block < c->R ? r0 + c->rows_per_block : c->R;
    double acc = 0;
    for (int r = r0; r < r1; r++) {
      int t = c->targets[r];
      if (t >= 0 && t < V)
        acc += ce_row_loss(c->logits + (size_t)r * V, t, V);
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

/* d (V) = k * (softmax(l) - onehot(t)), k = dloss / R; zeros for a target outside [0,V). d may be l. */
static void ce_grad_row(float *d, const float *l, int t, int V, float k) {
  if (t < 0 || t >= V) {
    memset(d, 0, (size_t)V * sizeof(float));
    return;
  }
  float mx = rt_max_row(l, V);
  float s = k / rt_exp_row(d, l, V, mx); /* d may equal l: each element is read before written */
  for (int j = 0; j < V; j++)
    d[j] *= s;
  d[t] -= k;
}

static void ce_grad_rows(void *p, int lo, int hi) {
  const CeCtx *c = p;
  float k = c->dloss / (float)c->R;
  for (int r = lo; r < hi; r++)
    ce_grad_row(c->dlogits + (size_t)r * c->V, c->logits + (size_t)r * c->V, c->targets[r], c->V, k);
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

/* ---- the fused LM head: h (R,C), W (V,C), targets (R) -> dh (R,C), dW (V,C), loss ------------ */

/* Per chunk of n rows (scratch: n doubles for the row losses, then the n x V logits):
 *   1. logits = h W^T                 rt_linear over the chunk's rows
 *   2. each row: its loss term, then its gradient in place (ce_row_loss, ce_grad_row: the
 *      arithmetic of rt_cross_entropy and rt_cross_entropy_grad, row by row, so the same bits)
 *   3. the row terms are added, in row order, into the block partials rt_cross_entropy would have
 *      formed (ce_rows_per_block over all R rows), so the loss is its bits too
 *   4. dh rows = dlogits W             rt_matmul_nn
 *   5. dW (+)= dlogits^T h             rt_linear_dw_acc: chunk 0 writes, the next ones add, in order
 * Every step splits its work by the shapes (chunk, R, V, C), never by the thread count. */

typedef struct XentCtx {
  float *dl;
  double *row_loss;
  const int32_t *targets;
  int V;
  float k;
} XentCtx;

static void xent_rows(void *p, int lo, int hi) {
  const XentCtx *c = p;
  for (int r = lo; r < hi; r++) {
    float *l = c->dl + (size_t)r * c->V;
    int t = c->targets[r];
    c->row_loss[r] = t >= 0 && t < c->V ? ce_row_loss(l, t, c->V) : 0.0;
    ce_grad_row(l, l, t, c->V, c->k);
  }
}

size_t rt_linear_xent_scratch_floats(int chunk, int V) {
  return 2 * (size_t)chunk + (size_t)chunk * (size_t)V;
}

/* The bf16 products need room for their rounded operands after the f32 scratch: the most any of
 * the three takes (dW's: the chunk's dlogits and h rows). */
size_t rt_linear_xent_bf16_scratch_floats(int chunk, int V, int C) {
  return rt_slice_floats(rt_linear_xent_scratch_floats(chunk, V)) + rt_linear_dw_bf16_scratch_floats(chunk, V, C);
}

/* Both kernels: W is f32, or with bf16 set bf16 (the three products then round their f32 operands
 * to bf16 into the scratch after the logits, linear_bf16.c). */
static void linear_xent(float *dh, float *dW, float *loss, const float *h, const void *W, int bf16,
                        const int32_t *targets, int R, int V, int C, float dloss, int chunk, float *scratch) {
  *loss = 0.0f;
  if (V <= 0 || C <= 0)
    return;
  if (R <= 0) {
    memset(dW, 0, (size_t)V * C * sizeof(float));
    return;
  }
  if (chunk < 1)
    chunk = 1;
  double part[CE_BLOCKS] = {0};
  int rpb = ce_rows_per_block(R, V);
  XentCtx c = {scratch + 2 * (size_t)chunk, (double *)(void *)scratch, NULL, V, dloss / (float)R};
  float *half = scratch + rt_slice_floats(rt_linear_xent_scratch_floats(chunk, V));
  for (int r0 = 0; r0 < R; r0 += chunk) {
    int n = R - r0 < chunk ? R - r0 : chunk;
    const float *hc = h + (size_t)r0 * C;
    if (bf16)
      rt_linear_bf16(c.dl, hc, W, NULL, n, V, C, NULL, NULL, half);
    else
      rt_linear(c.dl, hc, W, NULL, n, V, C, NULL, NULL);
    c.targets = targets + r0;
    rt_parallel_for(n, rt_row_grain(V), xent_rows, &c);
    for (int i = 0; i < n; i++)
      part[(r0 + i) / rpb] += c.row_loss[i];
    if (bf16) {
      rt_matmul_nn_bf16(dh + (size_t)r0 * C, c.dl, W, n, V, C, half);
      rt_linear_dw_bf16_acc(dW, c.dl, hc, n, V, C, r0 > 0, half);
    } else {
      rt_matmul_nn(dh + (size_t)r0 * C, c.dl, W, n, V, C);
      rt_linear_dw_acc(dW, c.dl, hc, n, V, C, r0 > 0);
    }
  }
  int nblk = (R + rpb - 1) / rpb;
  double s = 0;
  for (int b = 0; b < nblk; b++)
    s += part[b];
  *loss = (float)(s / R);
}

void rt_linear_xent(float *dh, float *dW, float *loss, const float *h, const float *W, const int32_t *targets, int R,
                    int V, int C, float dloss, int chunk, float *scratch) {
  linear_xent(dh, dW, loss, h, W, 0, targets, R, V, C, dloss, chunk, scratch);
}

void rt_linear_xent_bf16(float *dh, float *dW, float *loss, const float *h, const uint16_t *W,
                         const int32_t *targets, int R, int V, int C, float dloss, int chunk, float *scratch) {
  linear_xent(dh, dW, loss, h, W, 1, targets, R, V, C, dloss, chunk, scratch);
}

/* Both twins: with bf16 set, W holds bf16 bits and every product reads bf16-rounded operands (h
 * and W for the logits; the dlogits, rounded from float, for dh and dW). */
static float opnd(double v, int bf16) { return bf16 ? rt_bf16_to_f32(rt_f32_to_bf16((float)v)) : (float)v; }

static void linear_xent_ref(float *dh, float *dW, float *loss, const float *h, const void *Wv, int bf16,
                            const int32_t *targets, int R, int V, int C, float dloss) {
  const float *W32 = Wv;
  const uint16_t *W16 = Wv;
#define WREF(i) (bf16 ? rt_bf16_to_f32(W16[i]) : W32[i])
  double *l = malloc(sizeof *l * (size_t)(V > 0 ? V : 1));
  double *gw = calloc((size_t)V * (size_t)C + 1, sizeof *gw);
  double s = 0;
  if (!l || !gw)
    abort();
  for (int r = 0; r < R; r++) {
    const float *x = h + (size_t)r * C;
    int t = targets[r];
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++) {
      double a = 0;
      for (int k = 0; k < C; k++)
        a += (double)opnd(x[k], bf16) * WREF((size_t)j * C + k);
      l[j] = a;
      mx = a > mx ? a : mx;
    }
    for (int k = 0; k < C; k++)
      dh[(size_t)r * C + k] = 0.0f;
    if (t < 0 || t >= V)
      continue;
    for (int j = 0; j < V; j++)
      sum += exp(l[j] - mx);
    s += mx + log(sum) - l[t];
    for (int j = 0; j < V; j++) /* l[j] becomes d loss / d logit j */
      l[j] = bf16 ? opnd((double)dloss * (exp(l[j] - mx) / sum - (j == t ? 1.0 : 0.0)) / R, 1)
                  : (double)dloss * (exp(l[j] - mx) / sum - (j == t ? 1.0 : 0.0)) / R;
    for (int k = 0; k < C; k++) {
      double a = 0;
      for (int j = 0; j < V; j++)
        a += l[j] * WREF((size_t)j * C + k);
      dh[(size_t)r * C + k] = (float)a;
    }
    for (int j = 0; j < V; j++)
      for (int k = 0; k < C; k++)
        gw[(size_t)j * C + k] += l[j] * opnd(x[k], bf16);
  }
#undef WREF
  for (size_t i = 0; i < (size_t)V * C; i++)
    dW[i] = (float)gw[i];
  *loss = R > 0 ? (float)(s / R) : 0.0f;
  free(l);
  free(gw);
}

void rt_linear_xent_ref(float *dh, float *dW, float *loss, const float *h, const float *W, const int32_t *targets,
                        int R, int V, int C, float dloss) {
  linear_xent_ref(dh, dW, loss, h, W, 0, targets, R, V, C, dloss);
}

void rt_linear_xent_bf16_ref(float *dh, float *dW, float *loss, const float *h, const uint16_t *W,
                             const int32_t *targets, int R, int V, int C, float dloss) {
  linear_xent_ref(dh, dW, loss, h, W, 1, targets, R, V, C, dloss);
}
