/* moe.c: the mixture-of-experts kernels (the IR's moe and moe_dx; docs/ir.md, "moe"), forward and
 * backward, with their naive `_ref` twins (tests/unit/test_rt_moe.c compares them).
 *
 * N tokens x (N,C) are routed by a router linear (E,C) (no bias) and a softmax over the E experts
 * to their top K experts (ties: the lower index first). K = 1 is the Switch Transformer (Fedus et
 * al. 2021): the gate is the chosen expert's probability. K > 1 is Shazeer et al. (2017): the K
 * probabilities renormalised to sum 1. Each expert e holds at most cap = min(N, ceil(factor N / E))
 * (token, choice) pairs, taken in order of choice rank, then token (every token's first choice
 * before any second choice; earlier tokens first): a pair over capacity is dropped, its output 0
 * (the token keeps its residual; its renormalised gates are not changed). Each expert's pairs are
 * gathered into rows and run through the expert's two GEMMs, h = act(x W1_e^T + b1_e) (W1 (E,H,C),
 * b1 (E,H)), y_e = h W2_e^T + b2_e (W2 (E,C,H), b2 (E,C)), and written back weighted by the gate
 * (K > 1: a token's gate-weighted outputs summed in the order of its choices). The load-balancing
 * loss (Switch) is aux = A E sum_i f_i P_i, f_i the fraction of tokens whose first choice is i,
 * P_i the mean router probability of i over the N tokens.
 *
 * The experts run as one grouped operation (below, "the experts, grouped"): every expert's rows
 * cut into tiles, one parallel region over all the tiles, each tile's gather, products, bias and
 * activation and gate-weighted write in one thread. The backward recomputes the routing and the
 * experts' activations the same way from x (nothing is saved between the calls), and groups its
 * gradient products the same way (Grads, two regions over every expert's blocks): gradients flow
 * through the gates into the router (and through the renormalisation for K > 1), through the
 * experts, and from daux through P_i into the router; the choice of experts and f_i have none.
 * The tiles depend on the routing alone and every reduction runs in a fixed order (experts in
 * order, their rows in order; the GEMMs' blocks are fixed by the shapes, linear.c), so the bits
 * do not depend on the thread count.
 *
 * Activations (act): 1 gelu (exact), 2 gelu_tanh, 3 relu, 4 silu: the place of the IR's word.
 */
#include "kernels.h"

#include "../gemm/gemm.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static float act_f(int act, float v) {
  switch (act) {
  case 2: return rt_gelu_tanhf(v);
  case 3: return rt_reluf(v);
  case 4: return rt_siluf(v);
  default: return rt_geluf(v);
  }
}
static float act_df(int act, float v) {
  switch (act) {
  case 2: return rt_gelu_tanh_df(v);
  case 3: return rt_relu_df(v);
  case 4: return rt_silu_df(v);
  default: return rt_gelu_df(v);
  }
}

/* a[i] = d[i] * act'(a[i]), the switch outside the loops so that each vectorises */
static void act_dmul(int act, float *a, const float *d, size_t n) {
  switch (act) {
  case 2: for (size_t i = 0; i < n; i++) a[i] = d[i] * rt_gelu_tanh_df(a[i]); break;
  case 3: for (size_t i = 0; i < n; i++) a[i] = d[i] * rt_relu_df(a[i]); break;
  case 4: for (size_t i = 0; i < n; i++) a[i] = d[i] * rt_silu_df(a[i]); break;
  default: for (size_t i = 0; i < n; i++) a[i] = d[i] * rt_gelu_df(a[i]); break;
  }
}

int rt_moe_capacity(int N, int E, float factor) {
  double c = ceil((double)factor * (double)N / (double)E);
  return c > (double)N ? N : c < 1 ? 1 : (int)c;
}

/* The routing of one call, in the scratch. */
typedef struct Route {
  int N, E, K, cap;
  float *P;     /* (N,E) router probabilities */
  int *idx;     /* (N,K) the chosen experts, by rank */
  float *gate;  /* (N,K) their gates */
  int *count;   /* (E) pairs each expert holds (<= cap) */
  int *first;   /* (E) tokens whose first choice it is */
  int *list;    /* (E,cap) each expert's pairs q = n K + r, in order */
} Route;

static size_t align16(size_t n) { return (n + 15) / 16 * 16; }

/* Carves the routing arrays out of scratch; returns the floats after them. */
static float *route_carve(Route *r, float *s, int N, int E, int K) {
  r->N = N, r->E = E, r->K = K;
  r->P = s, s += align16((size_t)N * E);
  r->idx = (int *)s, s += align16((size_t)N * K);
  r->gate = s, s += align16((size_t)N * K);
  r->count = (int *)s, s += align16((size_t)E);
  r->first = (int *)s, s += align16((size_t)E);
  r->list = (int *)s, s += align16((size_t)E * N);
  return s;
}

/* Router, softmax, top-k, gates and capacity; returns the load-balancing loss. */
static float route(Route *r, const float *x, const float *wr, int C, float factor, float aux_coef) {
  const int N = r->N, E = r->E, K = r->K;
  rt_linear(r->P, x, wr, NULL, N, E, C, NULL, NULL);
  for (int n = 0; n < N; n++) {
    float *p = r->P + (size_t)n * E, mx = p[0];
    for (int e = 1; e < E; e++) mx = p[e] > mx ? p[e] : mx;
    double sum = 0;
    for (int e = 0; e < E; e++) sum += p[e] = expf(p[e] - mx);
    for (int e = 0; e < E; e++) p[e] = (float)(p[e] / sum);
    int *ix = r->idx + (size_t)n * K;
    float *g = r->gate + (size_t)n * K;
    double s = 0;
    for (int k = 0; k < K; k++) {
      int best = -1;
      for (int e = 0; e < E; e++) {
        bool taken = false;
        for (int j = 0; j < k; j++) taken |= ix[j] == e;
        if (!taken && (best < 0 || p[e] > p[best])) best = e;
      }
      ix[k] = best;
      g[k] = p[best];
      s += p[best];
    }
    if (K > 1)
      for (int k = 0; k < K; k++) g[k] = (float)(g[k] / s);
  }
  r->cap = rt_moe_capacity(N, E, factor);
  memset(r->count, 0, sizeof *r->count * (size_t)E);
  memset(r->first, 0, sizeof *r->first * (size_t)E);
  for (int k = 0; k < K; k++)
    for (int n = 0; n < N; n++) {
      int e = r->idx[(size_t)n * K + k];
      if (k == 0) r->first[e]++;
      if (r->count[e] < r->cap) r->list[(size_t)e * r->cap + r->count[e]++] = n * K + k;
    }
  double aux = 0;
  for (int e = 0; e < E; e++) {
    double pm = 0;
    for (int n = 0; n < N; n++) pm += r->P[(size_t)n * E + e];
    aux += (double)r->first[e] / N * (pm / N);
  }
  return (float)(aux_coef * E * aux);
}

/* ---- the experts, grouped: one parallel region over tiles of every expert's rows ----
 *
 * The kept pairs, sorted by expert, are rows of one buffer: expert e's m_e pairs take rows
 * [p_e, p_e + m_e) of its padded span, p_e the sum of the earlier experts' m rounded up to 16.
 * Each expert's rows split into tiles of at most MOE_TILE rows (ceil(m / MOE_TILE) tiles of
 * equal size, rounded up to 16 but the last), and one rt_parallel_blocks over all the tiles of all
 * the experts runs each tile whole in one thread: the gather of its rows, the first product, its
 * bias and the activation in one pass while the rows are in cache, the second product, and its
 * bias with the gate in the write of the result (straight into y for K = 1). The tiles depend on
 * the routing only, and each tile is one thread's calls, so the bits are the same for any thread
 * count. A GEMM call's shapes are bounded (rows <= MOE_TILE): oneDNN creates a primitive per shape,
 * and a kernel whose shapes followed the routing's counts would create them through training.
 *
 * Why tiles, and why two layouts: a GEMM call on few rows is dominated by the library's copy of
 * its B operand (oneDNN repacks the weight on each call: ~15 us for a 512 x 128 weight, the time
 * of ~15 rows), so E experts of m = N / E rows each cost E copies (E = 16 at moe-tiny's N = 512:
 * ~32 rows an expert). A tile of at most MOE_TRANS
 * rows computes the transposed products instead, h^T (H, r16) = W1_e x^T and y^T (C, r16) =
 * W2_e h^T: the weight is the A operand, read as stored, and the copied B is the few token rows
 * (r rounded up to r16, a multiple of 16, with zero rows: the library's tail over a partial
 * vector of tokens costs a whole one anyway, and the GEMMs meet at most MOE_TRANS / 16 shapes).
 * Larger tiles take the usual layout, h (r, H) = x W1_e^T. tests/bench/moe_kernel.c times them;
 * docs/benchmarks.md ("Mixture of experts") has the measurements, and what the padding costs. */

#define MOE_TILE 128 /* rows per tile at most */
#define MOE_TRANS 64 /* tiles of at most this many rows compute the transposed products */

static int ceil16(int n) { return (n + 15) / 16 * 16; }

/* The tile plan of one call (in the scratch, after the routing). */
typedef struct Tiles {
  int n;             /* tiles */
  int *e, *j0, *rows; /* per tile: the expert, its first row among the expert's pairs, the rows */
  int *p;            /* per tile: its first row in the padded sorted buffers */
  int *pe;           /* (E+1) each expert's first padded row; pe[E] = P, the padded rows */
  int *pos;          /* (N K) pair q's padded sorted row, or -1 when dropped */
} Tiles;

static int max_tiles(int N, int E, int K) { return N * K / 16 + E + 1; }
static size_t max_rows(int N, int E, int K) { return (size_t)N * K + (size_t)16 * E; }

static float *tiles_carve(Tiles *t, float *s, int N, int E, int K) {
  size_t mt = align16((size_t)max_tiles(N, E, K));
  t->e = (int *)s, s += mt;
  t->j0 = (int *)s, s += mt;
  t->rows = (int *)s, s += mt;
  t->p = (int *)s, s += mt;
  t->pe = (int *)s, s += align16((size_t)E + 1);
  t->pos = (int *)s, s += align16((size_t)N * K);
  return s;
}

static void tiles_plan(Tiles *t, const Route *r) {
  int p = 0;
  t->n = 0;
  for (int q = 0; q < r->N * r->K; q++) t->pos[q] = -1;
  for (int e = 0; e < r->E; e++) {
    int m = r->count[e];
    t->pe[e] = p;
    if (m > 0) {
      int nt = (m + MOE_TILE - 1) / MOE_TILE, rt = ceil16((m + nt - 1) / nt);
      for (int j = 0; j < m; j += rt) {
        t->e[t->n] = e, t->j0[t->n] = j, t->rows[t->n] = m - j < rt ? m - j : rt, t->p[t->n] = p + j;
        t->n++;
      }
      for (int j = 0; j < m; j++) t->pos[r->list[(size_t)e * r->cap + j]] = p + j;
    }
    p += ceil16(m);
  }
  t->pe[r->E] = p;
}

size_t rt_moe_scratch_floats(int N, int C, int E, int H, int K) {
  size_t n = (size_t)(N > 0 ? N : 1), P = max_rows(N > 0 ? N : 1, E, K);
  size_t route = align16(n * E) + align16(n * K) * 2 + align16((size_t)E) * 2 + align16((size_t)E * n);
  size_t tiles = align16((size_t)max_tiles((int)n, E, K)) * 4 + align16((size_t)E + 1) + align16(n * K);
  /* the forward's xs, hs, ys (P,C) (P,H) (P,C) and yo (P,C); the backward's d P (N,E), d gate
   * (N,K), xs, hs, ys, a1s and hhs (P,H) each, dys (P,C) and the router's d x (N,C) */
  size_t fwd = align16(P * C) * 3 + align16(P * H);
  size_t bwd = align16(n * E) + align16(n * K) + align16(P * C) * 3 + align16(P * H) * 3 + align16(n * C);
  return route + tiles + (fwd > bwd ? fwd : bwd);
}

/* The bias and the activation in place over n values, h[i] = act(h[i] + b[i]) (b NULL: + bs, one
 * bias for the row; act 0: the bias alone): activation.c's scalar functions, compiled a second time
 * for AVX-512 (the same operations, no contraction under -std=c11: the same bits) and chosen by
 * the CPU's features, never by timing. */
#define ACT_LOOP(f)                                                                                    \
  if (b)                                                                                               \
    for (size_t i = 0; i < n; i++) h[i] = f(h[i] + b[i]);                                              \
  else                                                                                                 \
    for (size_t i = 0; i < n; i++) h[i] = f(h[i] + bs);
#define ACT_NONE(v) (v)
#define ACT_BODY                                                                                       \
  switch (act) {                                                                                       \
  case 0: ACT_LOOP(ACT_NONE); break;                                                                   \
  case 2: ACT_LOOP(rt_gelu_tanhf); break;                                                              \
  case 3: ACT_LOOP(rt_reluf); break;                                                                   \
  case 4: ACT_LOOP(rt_siluf); break;                                                                   \
  default: ACT_LOOP(rt_geluf); break;                                                                  \
  }
static void bias_act_portable(int act, float *h, const float *b, float bs, size_t n) { ACT_BODY }
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma,avx512f"))) static void bias_act_avx512(int act, float *h, const float *b, float bs,
                                                                         size_t n) { ACT_BODY }
#endif
static void bias_act(int act, float *h, const float *b, float bs, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (rt_cpu()->avx512f) {
    bias_act_avx512(act, h, b, bs, n);
    return;
  }
#endif
  bias_act_portable(act, h, b, bs, n);
}

typedef struct Group {
  const Route *r;
  const Tiles *t;
  const float *x, *w1, *b1, *w2, *b2;
  int C, H, act;
  float *xs, *hs, *ys; /* (P,C), (P,H), (P,C): each tile's gathered rows and work, at its rows */
  /* the forward's output: y (N,C) directly for K = 1 (y zeroed before), else yo (P,C), the
   * gate-weighted rows, summed per token afterwards; NULL in the backward */
  float *y, *yo;
  /* the backward's recompute: a1s and hhs (P,H) the pre-activation and the activation row-major,
   * and d gate[q] = dy[n] . y_e(x_n); NULL in the forward */
  float *a1s, *hhs, *dgate;
  const float *dy;
} Group;

static void group_tile(const Group *g, int i) {
  const Route *r = g->r;
  const int C = g->C, H = g->H, K = r->K, e = g->t->e[i], m = g->t->rows[i];
  const int *list = r->list + (size_t)e * r->cap + g->t->j0[i];
  const size_t p = (size_t)g->t->p[i];
  const float *w1 = g->w1 + (size_t)e * H * C, *b1 = g->b1 + (size_t)e * H;
  const float *w2 = g->w2 + (size_t)e * C * H, *b2 = g->b2 + (size_t)e * C;
  float *xg = g->xs + p * C, *h = g->hs + p * H, *yt = g->ys + p * C;
  for (int j = 0; j < m; j++) memcpy(xg + (size_t)j * C, g->x + (size_t)(list[j] / K) * C, sizeof *xg * (size_t)C);
  int trans = m <= MOE_TRANS, m16 = ceil16(m);
  /* h, then the bias and the activation over it while it is in cache (the backward keeps the
   * pre-activation: the bias first, a copy, then the activation) */
  int fuse = g->a1s == NULL;
  size_t ys_row, ys_col; /* element (j, c) of the tile's y (without its bias) is yt[j ys_row + c ys_col] */
  if (trans) {
    memset(xg + (size_t)m * C, 0, sizeof *xg * (size_t)(m16 - m) * C);
    rt_gemm(0, 1, H, m16, C, RT_DT_F32, w1, C, RT_DT_F32, xg, C, 0.0f, h, m16);
    for (int k = 0; k < H; k++) bias_act(fuse ? g->act : 0, h + (size_t)k * m16, NULL, b1[k], (size_t)m16);
    if (!fuse) {
      for (int j = 0; j < m; j++)
        for (int k = 0; k < H; k++) g->a1s[(p + j) * H + k] = h[(size_t)k * m16 + j];
      bias_act(g->act, h, NULL, 0.0f, (size_t)H * m16);
      for (int j = 0; j < m; j++)
        for (int k = 0; k < H; k++) g->hhs[(p + j) * H + k] = h[(size_t)k * m16 + j];
    }
    rt_gemm(0, 0, C, m16, H, RT_DT_F32, w2, H, RT_DT_F32, h, m16, 0.0f, yt, m16);
    ys_row = 1, ys_col = (size_t)m16;
  } else {
    rt_gemm(0, 1, m, H, C, RT_DT_F32, xg, C, RT_DT_F32, w1, C, 0.0f, h, H);
    for (int j = 0; j < m; j++) bias_act(fuse ? g->act : 0, h + (size_t)j * H, b1, 0.0f, (size_t)H);
    if (!fuse) {
      memcpy(g->a1s + p * H, h, sizeof *h * (size_t)m * H);
      bias_act(g->act, h, NULL, 0.0f, (size_t)m * H);
      memcpy(g->hhs + p * H, h, sizeof *h * (size_t)m * H);
    }
    rt_gemm(0, 1, m, C, H, RT_DT_F32, h, H, RT_DT_F32, w2, H, 0.0f, yt, C);
    ys_row = (size_t)C, ys_col = 1;
  }
  for (int j = 0; j < m; j++) {
    const int q = list[j];
    const float *ye = yt + j * ys_row;
    if (g->dgate) {
      const float *d = g->dy + (size_t)(q / K) * C;
      double dot = 0;
      for (int c = 0; c < C; c++) dot += (double)d[c] * (ye[c * ys_col] + b2[c]);
      g->dgate[q] = (float)dot;
      continue;
    }
    float gate = r->gate[q], *o = K == 1 ? g->y + (size_t)(q / K) * C : g->yo + (p + j) * C;
    for (int c = 0; c < C; c++) o[c] = gate * (ye[c * ys_col] + b2[c]);
  }
}

static void group_tiles(void *ctx, int lo, int hi) {
  for (int i = lo; i < hi; i++) group_tile(ctx, i);
}

void rt_moe(float *y, float *aux, float *load, const float *x, const float *wr, const float *w1, const float *b1, const float *w2,
            const float *b2, int N, int C, int E, int H, int K, float factor, float aux_coef, int act, float *scratch) {
  Route r;
  Tiles t;
  float *s = tiles_carve(&t, route_carve(&r, scratch, N, E, K), N, E, K);
  size_t P = max_rows(N, E, K);
  float *xs = s, *hs = xs + align16(P * C), *ys = hs + align16(P * H), *yo = ys + align16(P * C);
  *aux = route(&r, x, wr, C, factor, aux_coef);
  load[0] = *aux, load[1] = 0;
  for (int e = 0; e < E; e++) load[2 + e] = (float)r.count[e], load[1] += (float)r.count[e];
  load[1] = (float)N * K - load[1];
  tiles_plan(&t, &r);
  if (K == 1) memset(y, 0, sizeof *y * (size_t)N * C); /* dropped tokens */
  Group g = {&r, &t, x, w1, b1, w2, b2, C, H, act, xs, hs, ys, y, yo, NULL, NULL, NULL, NULL};
  rt_parallel_blocks(t.n, 1, group_tiles, &g);
  if (K > 1) /* each token's gate-weighted expert outputs, in the order of its choices */
    for (int n = 0; n < N; n++) {
      float *o = y + (size_t)n * C;
      memset(o, 0, sizeof *o * (size_t)C);
      for (int k = 0; k < K; k++) {
        int pq = t.pos[n * K + k];
        if (pq < 0) continue;
        const float *v = yo + (size_t)pq * C;
        for (int c = 0; c < C; c++) o[c] += v[c];
      }
    }
}

/* The backward's gradient products, grouped like the forward's tiles: in stage 1 every expert's
 * dW2_e = dyg^T hh and d hh = dyg W2_e, in stage 2 its dW1_e = da1^T xg and d xg = da1 W1_e, each
 * product cut into blocks of at most MOE_TILE output rows, each block one rt_gemm call in one
 * thread, one parallel region over the blocks of every expert. The blocks depend on the routing
 * alone (the same bits for any thread count). Against a loop over the experts with each product
 * split over the pool (rt_linear_dw, rt_matmul_nn): two regions instead of four per expert, and
 * an expert of m <= 128 rows makes one call per product (one copy of its weight by the library)
 * instead of one per 16-row block. */
typedef struct Grads {
  const Route *r;
  const Tiles *t;
  int C, H, stage;
  const float *w1, *w2;
  float *xs, *a1s, *hhs, *dys, *dhs, *dxs; /* (P,C), (P,H) d a1 in stage 2, (P,H), (P,C), (P,H), (P,C) */
  float *dw1, *dw2;
} Grads;

static int blocks_of(int rows) { return (rows + MOE_TILE - 1) / MOE_TILE; }

/* expert e's blocks in the stage: its dW's rows (C in stage 1, H in stage 2), then its m16 rows */
static int grad_blocks(const Grads *g, int e) {
  int m = g->r->count[e];
  return m ? blocks_of(g->stage == 1 ? g->C : g->H) + blocks_of(ceil16(m)) : 0;
}

static int grad_count(const Grads *g) {
  int n = 0;
  for (int e = 0; e < g->r->E; e++) n += grad_blocks(g, e);
  return n;
}

static void grad_task(const Grads *g, int i) {
  int e = 0;
  while (i >= grad_blocks(g, e)) i -= grad_blocks(g, e), e++;
  const int C = g->C, H = g->H, m16 = ceil16(g->r->count[e]), nw = blocks_of(g->stage == 1 ? C : H);
  const size_t p = (size_t)g->t->pe[e];
  const int lo = (i < nw ? i : i - nw) * MOE_TILE, rows = i < nw ? (g->stage == 1 ? C : H) : m16;
  const int n = rows - lo < MOE_TILE ? rows - lo : MOE_TILE;
  if (g->stage == 1 && i < nw) /* dW2_e rows lo.. of C: dyg^T (C, m16) hh (m16, H) */
    rt_gemm(1, 0, n, H, m16, RT_DT_F32, g->dys + p * C + lo, C, RT_DT_F32, g->hhs + p * H, H, 0.0f,
            g->dw2 + ((size_t)e * C + lo) * H, H);
  else if (g->stage == 1) /* d hh rows lo..: dyg (n, C) W2_e (C, H) */
    rt_gemm(0, 0, n, H, C, RT_DT_F32, g->dys + (p + lo) * C, C, RT_DT_F32, g->w2 + (size_t)e * C * H, H, 0.0f,
            g->dhs + (p + lo) * H, H);
  else if (i < nw) /* dW1_e rows lo.. of H: da1^T (H, m16) xg (m16, C) */
    rt_gemm(1, 0, n, C, m16, RT_DT_F32, g->a1s + p * H + lo, H, RT_DT_F32, g->xs + p * C, C, 0.0f,
            g->dw1 + ((size_t)e * H + lo) * C, C);
  else /* d xg rows lo..: da1 (n, H) W1_e (H, C) */
    rt_gemm(0, 0, n, C, H, RT_DT_F32, g->a1s + (p + lo) * H, H, RT_DT_F32, g->w1 + (size_t)e * H * C, C, 0.0f,
            g->dxs + (p + lo) * C, C);
}

static void grad_tasks_run(void *ctx, int lo, int hi) {
  for (int i = lo; i < hi; i++) grad_task(ctx, i);
}

void rt_moe_dx(float *dx, float *dwr, float *dw1, float *db1, float *dw2, float *db2, const float *x, const float *wr,
               const float *w1, const float *b1, const float *w2, const float *b2, const float *dy, float daux, int N,
               int C, int E, int H, int K, float factor, float aux_coef, int act, float *scratch) {
  Route r;
  Tiles t;
  float *s = tiles_carve(&t, route_carve(&r, scratch, N, E, K), N, E, K);
  size_t P = max_rows(N, E, K);
  float *dp = s;                               /* (N,E) d loss / d P, then d logits */
  float *dgate = dp + align16((size_t)N * E);  /* (N,K) */
  float *xs = dgate + align16((size_t)N * K);  /* (P,C) the gathered rows */
  float *hs = xs + align16(P * C);             /* (P,H) the tiles' work, then d hh */
  float *ys = hs + align16(P * H);             /* (P,C) the tiles' work, then d xs */
  float *a1s = ys + align16(P * C);            /* (P,H) pre-activation, then d a1 */
  float *hhs = a1s + align16(P * H);           /* (P,H) activation */
  float *dys = hhs + align16(P * H);           /* (P,C) gate * dy */
  float *dxr = dys + align16(P * C);           /* (N,C) the router's d x */
  route(&r, x, wr, C, factor, aux_coef);
  tiles_plan(&t, &r);
  memset(dgate, 0, sizeof *dgate * (size_t)N * K); /* dropped pairs keep 0 */
  /* the forward again, every expert's tiles in one region, keeping what the gradients need */
  Group gr = {&r, &t, x, w1, b1, w2, b2, C, H, act, xs, hs, ys, NULL, NULL, a1s, hhs, dgate, dy};
  rt_parallel_blocks(t.n, 1, group_tiles, &gr);
  memset(dx, 0, sizeof *dx * (size_t)N * C);
  memset(db1, 0, sizeof *db1 * (size_t)E * H);
  memset(db2, 0, sizeof *db2 * (size_t)E * C);
  /* The gradient products on each expert's rows rounded up to m16 (zero rows add exact zeros: a
   * bounded set of GEMM shapes), grouped as the forward's tiles (grad_task): first every dyg row
   * (gate dy) and db2, then one region for every expert's dW2 and d hh, d a1 = d hh act'(a1) and
   * db1, one region for every dW1 and d xg, and d xg added into dx, experts in order. */
  Grads gd = {&r, &t, C, H, 1, w1, w2, xs, a1s, hhs, dys, hs, ys, dw1, dw2};
  for (int e = 0; e < E; e++) {
    int m = r.count[e];
    size_t p = (size_t)t.pe[e], pad = (size_t)(ceil16(m) - m);
    if (m == 0) {
      memset(dw1 + (size_t)e * H * C, 0, sizeof *dw1 * (size_t)H * C);
      memset(dw2 + (size_t)e * C * H, 0, sizeof *dw2 * (size_t)C * H);
      continue;
    }
    const int *list = r.list + (size_t)e * r.cap;
    float *dyg = dys + p * C, *db2e = db2 + (size_t)e * C;
    for (int j = 0; j < m; j++) {
      const float *d = dy + (size_t)(list[j] / K) * C;
      float gq = r.gate[list[j]], *o = dyg + (size_t)j * C;
      for (int c = 0; c < C; c++) o[c] = gq * d[c];
    }
    memset(dyg + (size_t)m * C, 0, sizeof *dyg * pad * C);
    memset(hhs + (p + m) * H, 0, sizeof *hhs * pad * H);
    memset(xs + (p + m) * C, 0, sizeof *xs * pad * C);
    for (int j = 0; j < m; j++)
      for (int c = 0; c < C; c++) db2e[c] += dyg[(size_t)j * C + c];
  }
  rt_parallel_blocks(grad_count(&gd), 1, grad_tasks_run, &gd);
  for (int e = 0; e < E; e++) { /* d a1 = d hh * act'(a1) into a1's place (its pad rows: 0) */
    int m = r.count[e];
    if (m == 0) continue;
    size_t p = (size_t)t.pe[e];
    float *a1 = a1s + p * H, *db1e = db1 + (size_t)e * H;
    act_dmul(act, a1, hs + p * H, (size_t)m * H);
    memset(a1 + (size_t)m * H, 0, sizeof *a1 * (size_t)(ceil16(m) - m) * H);
    for (int j = 0; j < m; j++)
      for (int h = 0; h < H; h++) db1e[h] += a1[(size_t)j * H + h];
  }
  gd.stage = 2;
  rt_parallel_blocks(grad_count(&gd), 1, grad_tasks_run, &gd);
  for (int e = 0; e < E; e++) {
    const int *list = r.list + (size_t)e * r.cap;
    const float *dxg = ys + (size_t)t.pe[e] * C;
    for (int j = 0; j < r.count[e]; j++) {
      float *o = dx + (size_t)(list[j] / K) * C;
      const float *d = dxg + (size_t)j * C;
      for (int c = 0; c < C; c++) o[c] += d[c];
    }
  }
  /* d P: the gates (renormalised for K > 1: g_k = p_k / S, d p_j = (d g_j - sum_k d g_k g_k) / S) and
   * the load-balancing loss (d P[n,i] = daux A E f_i / N); then the softmax's backward */
  memset(dp, 0, sizeof *dp * (size_t)N * E);
  for (int n = 0; n < N; n++) {
    float *d = dp + (size_t)n * E;
    const float *p = r.P + (size_t)n * E, *g = r.gate + (size_t)n * K, *dg = dgate + (size_t)n * K;
    const int *ix = r.idx + (size_t)n * K;
    if (K == 1) {
      d[ix[0]] += dg[0];
    } else {
      double S = 0, sg = 0;
      for (int k = 0; k < K; k++) S += p[ix[k]], sg += (double)dg[k] * g[k];
      for (int k = 0; k < K; k++) d[ix[k]] += (float)((dg[k] - sg) / S);
    }
    for (int e = 0; e < E; e++) d[e] += (float)((double)daux * aux_coef * E * r.first[e] / N / N);
    double dot = 0;
    for (int e = 0; e < E; e++) dot += (double)p[e] * d[e];
    for (int e = 0; e < E; e++) d[e] = (float)(p[e] * (d[e] - dot));
  }
  rt_linear_dw(dwr, dp, x, N, E, C);
  rt_matmul_nn(dxr, dp, wr, N, E, C);
  for (size_t i = 0; i < (size_t)N * C; i++) dx[i] += dxr[i];
}

/* ---- naive twins: serial, double accumulation, each (token, choice) pair computed on its own ---- */

/* The routing, written out again: probabilities (N,E), the chosen experts and gates (N,K), and
 * kept[q] whether pair q = n K + k is within its expert's capacity. Returns the loss. */
static double route_ref(const float *x, const float *wr, int N, int C, int E, int K, float factor, float aux_coef,
                        double *P, int *idx, double *gate, int *kept, int *first) {
  for (int n = 0; n < N; n++) {
    double mx = -INFINITY, sum = 0;
    for (int e = 0; e < E; e++) {
      double z = 0;
      for (int c = 0; c < C; c++) z += (double)x[(size_t)n * C + c] * wr[(size_t)e * C + c];
      P[(size_t)n * E + e] = z;
      if (z > mx) mx = z;
    }
    for (int e = 0; e < E; e++) sum += P[(size_t)n * E + e] = exp(P[(size_t)n * E + e] - mx);
    for (int e = 0; e < E; e++) P[(size_t)n * E + e] /= sum;
    double s = 0;
    for (int k = 0; k < K; k++) { /* the k-th largest: the largest not yet chosen, lower index on ties */
      int best = -1;
      for (int e = 0; e < E; e++) {
        int used = 0;
        for (int j = 0; j < k; j++) used |= idx[(size_t)n * K + j] == e;
        if (!used && (best < 0 || (float)P[(size_t)n * E + e] > (float)P[(size_t)n * E + best])) best = e;
      }
      idx[(size_t)n * K + k] = best;
      s += gate[(size_t)n * K + k] = P[(size_t)n * E + best];
    }
    if (K > 1)
      for (int k = 0; k < K; k++) gate[(size_t)n * K + k] /= s;
  }
  int cap = rt_moe_capacity(N, E, factor);
  for (int e = 0; e < E; e++) {
    int used = 0;
    first[e] = 0;
    for (int k = 0; k < K; k++)
      for (int n = 0; n < N; n++)
        if (idx[(size_t)n * K + k] == e) {
          kept[(size_t)n * K + k] = used < cap;
          used++;
          first[e] += k == 0;
        }
  }
  double aux = 0;
  for (int e = 0; e < E; e++) {
    double pm = 0;
    for (int n = 0; n < N; n++) pm += P[(size_t)n * E + e];
    aux += (double)first[e] / N * pm / N;
  }
  return aux_coef * E * aux;
}

typedef struct RefBuf {
  double *P, *gate, *hpre, *ye, *acc, *dg;
  int *idx, *kept, *first;
} RefBuf;

static bool refbuf_new(RefBuf *b, int N, int C, int E, int H, int K) {
  b->P = malloc(sizeof *b->P * (size_t)N * E);
  b->gate = malloc(sizeof *b->gate * (size_t)N * K);
  b->hpre = malloc(sizeof *b->hpre * (size_t)H);
  b->ye = malloc(sizeof *b->ye * (size_t)C);
  b->acc = malloc(sizeof *b->acc * (size_t)C);
  b->dg = malloc(sizeof *b->dg * (size_t)K);
  b->idx = malloc(sizeof *b->idx * (size_t)N * K);
  b->kept = malloc(sizeof *b->kept * (size_t)N * K);
  b->first = malloc(sizeof *b->first * (size_t)E);
  return b->P && b->gate && b->hpre && b->ye && b->acc && b->dg && b->idx && b->kept && b->first;
}
static void refbuf_free(RefBuf *b) {
  free(b->P), free(b->gate), free(b->hpre), free(b->ye), free(b->acc), free(b->dg), free(b->idx), free(b->kept), free(b->first);
}

/* expert e on token row xn: hpre = W1_e xn + b1_e (H), ye = W2_e act(hpre) + b2_e (C) */
static void expert_ref(const float *xn, const float *w1, const float *b1, const float *w2, const float *b2, int e,
                       int C, int H, int act, double *hpre, double *ye) {
  for (int h = 0; h < H; h++) {
    double z = b1[(size_t)e * H + h];
    for (int c = 0; c < C; c++) z += (double)w1[((size_t)e * H + h) * C + c] * xn[c];
    hpre[h] = z;
  }
  for (int c = 0; c < C; c++) {
    double z = b2[(size_t)e * C + c];
    for (int h = 0; h < H; h++) z += (double)w2[((size_t)e * C + c) * H + h] * act_f(act, (float)hpre[h]);
    ye[c] = z;
  }
}

void rt_moe_ref(float *y, float *aux, float *load, const float *x, const float *wr, const float *w1, const float *b1,
                const float *w2, const float *b2, int N, int C, int E, int H, int K, float factor, float aux_coef,
                int act) {
  RefBuf b;
  if (!refbuf_new(&b, N, C, E, H, K)) abort(); /* test-only twin */
  *aux = (float)route_ref(x, wr, N, C, E, K, factor, aux_coef, b.P, b.idx, b.gate, b.kept, b.first);
  for (int e = 0; e < E + 2; e++) load[e] = 0;
  load[0] = *aux;
  for (int q = 0; q < N * K; q++) {
    if (b.kept[q]) load[2 + b.idx[q]] += 1;
    else load[1] += 1;
  }
  for (int n = 0; n < N; n++) {
    double *acc = b.acc;
    for (int c = 0; c < C; c++) acc[c] = 0;
    for (int k = 0; k < K; k++) {
      size_t q = (size_t)n * K + k;
      if (!b.kept[q]) continue;
      expert_ref(x + (size_t)n * C, w1, b1, w2, b2, b.idx[q], C, H, act, b.hpre, b.ye);
      for (int c = 0; c < C; c++) acc[c] += b.gate[q] * b.ye[c];
    }
    for (int c = 0; c < C; c++) y[(size_t)n * C + c] = (float)acc[c];
  }
  refbuf_free(&b);
}

void rt_moe_dx_ref(float *dx, float *dwr, float *dw1, float *db1, float *dw2, float *db2, const float *x,
                   const float *wr, const float *w1, const float *b1, const float *w2, const float *b2,
                   const float *dy, float daux, int N, int C, int E, int H, int K, float factor, float aux_coef,
                   int act) {
  RefBuf b;
  if (!refbuf_new(&b, N, C, E, H, K)) abort(); /* test-only twin */
  route_ref(x, wr, N, C, E, K, factor, aux_coef, b.P, b.idx, b.gate, b.kept, b.first);
  size_t nx = (size_t)N * C, n1 = (size_t)E * H * C, n2 = (size_t)E * C * H;
  double *gx = calloc(nx, sizeof *gx), *gr = calloc((size_t)E * C, sizeof *gr), *g1 = calloc(n1, sizeof *g1);
  double *gb1 = calloc((size_t)E * H, sizeof *gb1), *g2 = calloc(n2, sizeof *g2), *gb2 = calloc((size_t)E * C, sizeof *gb2);
  double *dP = calloc((size_t)E, sizeof *dP), *dh = calloc((size_t)H, sizeof *dh);
  if (!gx || !gr || !g1 || !gb1 || !g2 || !gb2 || !dP || !dh) abort(); /* test-only twin */
  for (int n = 0; n < N; n++) {
    const float *xn = x + (size_t)n * C, *d = dy + (size_t)n * C;
    const double *p = b.P + (size_t)n * E;
    double *dg = b.dg;
    for (int k = 0; k < K; k++) {
      size_t q = (size_t)n * K + k;
      int e = b.idx[q];
      dg[k] = 0;
      if (!b.kept[q]) continue;
      expert_ref(xn, w1, b1, w2, b2, e, C, H, act, b.hpre, b.ye);
      for (int c = 0; c < C; c++) dg[k] += d[c] * b.ye[c];
      for (int h = 0; h < H; h++) {
        double s = 0;
        for (int c = 0; c < C; c++) {
          double dyc = b.gate[q] * d[c];
          s += dyc * w2[((size_t)e * C + c) * H + h];
          g2[((size_t)e * C + c) * H + h] += dyc * act_f(act, (float)b.hpre[h]);
        }
        dh[h] = s * act_df(act, (float)b.hpre[h]);
        gb1[(size_t)e * H + h] += dh[h];
      }
      for (int c = 0; c < C; c++) gb2[(size_t)e * C + c] += b.gate[q] * d[c];
      for (int h = 0; h < H; h++)
        for (int c = 0; c < C; c++) {
          g1[((size_t)e * H + h) * C + c] += dh[h] * xn[c];
          gx[(size_t)n * C + c] += dh[h] * w1[((size_t)e * H + h) * C + c];
        }
    }
    /* d P of this token: the gates, then the load-balancing loss */
    for (int e = 0; e < E; e++) dP[e] = (double)daux * aux_coef * E * b.first[e] / N / N;
    if (K == 1) {
      dP[b.idx[(size_t)n * K]] += dg[0];
    } else {
      double S = 0;
      for (int k = 0; k < K; k++) S += p[b.idx[(size_t)n * K + k]];
      for (int j = 0; j < K; j++) /* g_k = p_k / S: d g_k / d p_j = (delta_kj - g_k) / S */
        for (int k = 0; k < K; k++)
          dP[b.idx[(size_t)n * K + j]] += dg[k] * ((j == k) - b.gate[(size_t)n * K + k]) / S;
    }
    double dot = 0;
    for (int e = 0; e < E; e++) dot += p[e] * dP[e];
    for (int e = 0; e < E; e++) {
      double dz = p[e] * (dP[e] - dot);
      for (int c = 0; c < C; c++) {
        gr[(size_t)e * C + c] += dz * xn[c];
        gx[(size_t)n * C + c] += dz * wr[(size_t)e * C + c];
      }
    }
  }
  for (size_t i = 0; i < nx; i++) dx[i] = (float)gx[i];
  for (size_t i = 0; i < (size_t)E * C; i++) dwr[i] = (float)gr[i], db2[i] = (float)gb2[i];
  for (size_t i = 0; i < n1; i++) dw1[i] = (float)g1[i];
  for (size_t i = 0; i < n2; i++) dw2[i] = (float)g2[i];
  for (size_t i = 0; i < (size_t)E * H; i++) db1[i] = (float)gb1[i];
  free(gx), free(gr), free(g1), free(gb1), free(g2), free(gb2), free(dP), free(dh);
  refbuf_free(&b);
}
