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
 * b1 (E,H)), y_e = h W2_e^T + b2_e (W2 (E,C,H), b2 (E,C)), and scattered back weighted by the gate.
 * The load-balancing loss (Switch) is aux = A E sum_i f_i P_i, f_i the fraction of tokens whose
 * first choice is i, P_i the mean router probability of i over the N tokens.
 *
 * The backward recomputes the routing and each expert's activations from x (nothing is saved
 * between the calls): gradients flow through the gates into the router (and through the
 * renormalisation for K > 1), through the experts, and from daux through P_i into the router; the
 * choice of experts and f_i have none. All reductions run in a fixed order (experts in order, their
 * rows in order; the GEMMs' blocks are fixed by the shapes, linear.c), so the bits do not depend on
 * the thread count.
 *
 * Activations (act): 1 gelu (exact), 2 gelu_tanh, 3 relu, 4 silu: the place of the IR's word.
 */
#include "kernels.h"

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

size_t rt_moe_scratch_floats(int N, int C, int E, int H, int K) {
  size_t n = (size_t)(N > 0 ? N : 1);
  return align16(n * E) * 2 + align16(n * K) * 3 + align16((size_t)E) * 2 + align16((size_t)E * n) +
         align16(n * C) * 3 + align16(n * H) * 2;
}

/* Expert e's rows: gathers its tokens into xg (m,C), a1 = xg W1_e^T + b1_e (m,H), hh = act(a1) and
 * yg = hh W2_e^T + b2_e (m,C). */
static int expert_forward(const Route *r, int e, const float *x, const float *w1, const float *b1, const float *w2,
                          const float *b2, int C, int H, int act, float *xg, float *a1, float *hh, float *yg) {
  int m = r->count[e];
  if (m == 0) return 0;
  const int *list = r->list + (size_t)e * r->cap;
  for (int j = 0; j < m; j++) memcpy(xg + (size_t)j * C, x + (size_t)(list[j] / r->K) * C, sizeof *xg * (size_t)C);
  rt_linear(a1, xg, w1 + (size_t)e * H * C, b1 + (size_t)e * H, m, H, C, NULL, NULL);
  size_t n = (size_t)m * H; /* activation.c's vectorised kernels (element-wise: any split is exact) */
  switch (act) {
  case 2: rt_gelu_tanh(hh, a1, n); break;
  case 3: rt_relu(hh, a1, n); break;
  case 4: rt_silu(hh, a1, n); break;
  default: rt_gelu(hh, a1, n); break;
  }
  rt_linear(yg, hh, w2 + (size_t)e * C * H, b2 + (size_t)e * C, m, C, H, NULL, NULL);
  return m;
}

void rt_moe(float *y, float *aux, float *load, const float *x, const float *wr, const float *w1, const float *b1, const float *w2,
            const float *b2, int N, int C, int E, int H, int K, float factor, float aux_coef, int act, float *scratch) {
  Route r;
  float *s = route_carve(&r, scratch, N, E, K);
  float *xg = s, *a1 = xg + align16((size_t)N * C), *hh = a1 + align16((size_t)N * H), *yg = hh + align16((size_t)N * H);
  *aux = route(&r, x, wr, C, factor, aux_coef);
  load[0] = *aux, load[1] = 0;
  for (int e = 0; e < E; e++) load[2 + e] = (float)r.count[e], load[1] += (float)r.count[e];
  load[1] = (float)N * K - load[1];
  memset(y, 0, sizeof *y * (size_t)N * C);
  for (int e = 0; e < E; e++) {
    int m = expert_forward(&r, e, x, w1, b1, w2, b2, C, H, act, xg, a1, hh, yg);
    const int *list = r.list + (size_t)e * r.cap;
    for (int j = 0; j < m; j++) {
      float g = r.gate[list[j]], *yo = y + (size_t)(list[j] / K) * C;
      const float *ye = yg + (size_t)j * C;
      for (int c = 0; c < C; c++) yo[c] += g * ye[c];
    }
  }
}

void rt_moe_dx(float *dx, float *dwr, float *dw1, float *db1, float *dw2, float *db2, const float *x, const float *wr,
               const float *w1, const float *b1, const float *w2, const float *b2, const float *dy, float daux, int N,
               int C, int E, int H, int K, float factor, float aux_coef, int act, float *scratch) {
  Route r;
  float *s = route_carve(&r, scratch, N, E, K);
  float *dp = s;                                  /* (N,E) d loss / d P, then d logits */
  float *dgate = dp + align16((size_t)N * E);     /* (N,K) */
  float *xg = dgate + align16((size_t)N * K);     /* (m,C), later the router's d x */
  float *a1 = xg + align16((size_t)N * C);        /* (m,H) pre-activation, then d a1 */
  float *hh = a1 + align16((size_t)N * H);        /* (m,H) */
  float *yg = hh + align16((size_t)N * H);        /* (m,C) */
  float *dyg = yg + align16((size_t)N * C);       /* (m,C) */
  route(&r, x, wr, C, factor, aux_coef);
  memset(dx, 0, sizeof *dx * (size_t)N * C);
  memset(dw1, 0, sizeof *dw1 * (size_t)E * H * C);
  memset(db1, 0, sizeof *db1 * (size_t)E * H);
  memset(dw2, 0, sizeof *dw2 * (size_t)E * C * H);
  memset(db2, 0, sizeof *db2 * (size_t)E * C);
  memset(dgate, 0, sizeof *dgate * (size_t)N * K); /* dropped pairs keep 0 */
  for (int e = 0; e < E; e++) {
    int m = expert_forward(&r, e, x, w1, b1, w2, b2, C, H, act, xg, a1, hh, yg);
    if (m == 0) continue;
    const int *list = r.list + (size_t)e * r.cap;
    for (int j = 0; j < m; j++) {
      const float *d = dy + (size_t)(list[j] / K) * C, *ye = yg + (size_t)j * C;
      float g = r.gate[list[j]], *o = dyg + (size_t)j * C;
      double dot = 0;
      for (int c = 0; c < C; c++) {
        dot += (double)d[c] * ye[c];
        o[c] = g * d[c];
      }
      dgate[list[j]] = (float)dot;
    }
    float *dw2e = dw2 + (size_t)e * C * H, *db2e = db2 + (size_t)e * C;
    rt_linear_dw(dw2e, dyg, hh, m, C, H);
    for (int j = 0; j < m; j++)
      for (int c = 0; c < C; c++) db2e[c] += dyg[(size_t)j * C + c];
    /* d hh = dyg W2_e into hh's place (hh is no longer needed), then d a1 = d hh * act'(a1) */
    rt_matmul_nn(hh, dyg, w2 + (size_t)e * C * H, m, C, H);
    act_dmul(act, a1, hh, (size_t)m * H);
    float *db1e = db1 + (size_t)e * H;
    rt_linear_dw(dw1 + (size_t)e * H * C, a1, xg, m, H, C);
    for (int j = 0; j < m; j++)
      for (int h = 0; h < H; h++) db1e[h] += a1[(size_t)j * H + h];
    rt_matmul_nn(yg, a1, w1 + (size_t)e * H * C, m, H, C); /* d xg into yg's place */
    for (int j = 0; j < m; j++) {
      float *o = dx + (size_t)(list[j] / K) * C;
      const float *d = yg + (size_t)j * C;
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
  rt_matmul_nn(xg, dp, wr, N, E, C);
  for (size_t i = 0; i < (size_t)N * C; i++) dx[i] += xg[i];
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
