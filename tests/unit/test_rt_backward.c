/* test_rt_backward.c: the training kernels of runtime/kernels/ (loss.c, linear.c, norm.c,
 * embedding.c, attention.c).
 * (1) every fast kernel against its _ref twin (normalised error < 1e-5) on awkward sizes (odd T,
 *     C not a multiple of 8, partial blocks, causal and not) with 1, 2 and 3 pool threads, plus
 *     determinism: the same call twice gives the same bits, and the kernels whose reductions do not
 *     depend on the chunking give the same bits for every thread count;
 * (2) every _ref twin against central differences of the FORWARD kernels (rt_cross_entropy_ref,
 *     rt_matmul_ref, rt_layernorm_ref, rt_rmsnorm_ref, rt_embedding_ref, rt_attention_ref) on the
 *     scalar L = sum(w o forward(x)) for random w, along random directions d restricted to one
 *     input at a time: (L(x + eps d) - L(x - eps d)) against grad . ((x + eps d) - (x - eps d)),
 *     the perturbation actually applied in float (relative tolerance 1e-3): this is what proves the
 *     backward rules right;
 * (3) cross-entropy of uniform logits is log V; gradient rows sum to 0; dloss scales the gradient;
 * (4) embedding_dw accumulates repeated ids and skips out-of-range ones;
 * (5) timing of rt_attention_dx against rt_attention (B=4, T=256, C=384, 6 heads, 2 threads),
 *     printed to stderr, not asserted;
 * (6) the fused LM head rt_linear_xent against its _ref twin (1e-5) and against the unfused
 *     kernels it replaces (rt_linear, rt_cross_entropy, rt_cross_entropy_grad, rt_matmul_nn,
 *     rt_linear_dw): the loss the same bits, d h and d W within 1e-6 of their largest element; the
 *     same bits for 1-4 threads; odd sizes, a chunk above the rows, a target out of range; the
 *     scratch it declares is all it touches. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdio.h>

static void fill_ids(int32_t *ids, int n, int V, uint64_t seed) {
  RtRng r;
  rt_rng_seed(&r, seed);
  for (int i = 0; i < n; i++)
    ids[i] = (int32_t)(rt_rng_u32(&r) % (uint32_t)V);
}

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* ---- (1) fast vs ref --------------------------------------------------------------------------- */

static void check_ce(int R, int V, uint64_t seed) {
  float *l = falloc((size_t)R * V), *g = falloc((size_t)R * V), *gr = falloc((size_t)R * V);
  int32_t *t = malloc((size_t)R * sizeof(int32_t));
  fill_uniform(l, (size_t)R * V, -4, 4, seed);
  fill_ids(t, R, V, seed + 1);
  float f = rt_cross_entropy(l, t, R, V), fr = rt_cross_entropy_ref(l, t, R, V);
  ck_assert_msg(fabsf(f - fr) <= 1e-5f * fabsf(fr), "cross_entropy R=%d V=%d: %.9g vs ref %.9g", R, V, f, fr);
  rt_cross_entropy_grad(g, l, t, R, V, 0.75f);
  rt_cross_entropy_grad_ref(gr, l, t, R, V, 0.75f);
  double e = norm_err(g, gr, (size_t)R * V);
  ck_assert_msg(e < 1e-5, "cross_entropy_grad R=%d V=%d: normalised error %g", R, V, e);
  /* in place (dlogits == logits) gives the same bits */
  rt_cross_entropy_grad(l, l, t, R, V, 0.75f);
  ck_assert(same_bits(l, g, (size_t)R * V));
  free(l), free(g), free(gr), free(t);
}

static void check_gemms(int M, int N, int K, uint64_t seed) {
  float *dy = falloc((size_t)M * N), *W = falloc((size_t)N * K), *x = falloc((size_t)M * K);
  float *y = falloc((size_t)M * K), *yr = falloc((size_t)M * K), *dW = falloc((size_t)N * K),
        *dWr = falloc((size_t)N * K);
  fill_uniform(dy, (size_t)M * N, -1, 1, seed);
  fill_uniform(W, (size_t)N * K, -1, 1, seed + 1);
  fill_uniform(x, (size_t)M * K, -1, 1, seed + 2);
  rt_matmul_nn(y, dy, W, M, N, K);
  rt_matmul_nn_ref(yr, dy, W, M, N, K);
  double e = norm_err(y, yr, (size_t)M * K);
  ck_assert_msg(e < 1e-5, "matmul_nn M=%d N=%d K=%d: normalised error %g", M, N, K, e);
  rt_linear_dw(dW, dy, x, M, N, K);
  rt_linear_dw_ref(dWr, dy, x, M, N, K);
  e = norm_err(dW, dWr, (size_t)N * K);
  ck_assert_msg(e < 1e-5, "linear_dw M=%d N=%d K=%d: normalised error %g", M, N, K, e);
  /* the same call again: the same bits */
  rt_matmul_nn(yr, dy, W, M, N, K);
  rt_linear_dw(dWr, dy, x, M, N, K);
  ck_assert(same_bits(y, yr, (size_t)M * K) && same_bits(dW, dWr, (size_t)N * K));
  free(dy), free(W), free(x), free(y), free(yr), free(dW), free(dWr);
}

static void check_norm(int R, int C, int rms, uint64_t seed) {
  size_t n = (size_t)R * C;
  float *x = falloc(n), *g = falloc(C), *dy = falloc(n), *dx = falloc(n), *dxr = falloc(n), *dg = falloc(C),
        *dgr = falloc(C);
  fill_uniform(x, n, -2, 3, seed); /* a non-zero mean */
  fill_uniform(g, C, 0.5f, 1.5f, seed + 1);
  fill_uniform(dy, n, -1, 1, seed + 2);
  rt_norm_dx(dx, x, g, dy, R, C, 1e-5f, rms);
  rt_norm_dx_ref(dxr, x, g, dy, R, C, 1e-5f, rms);
  double e = norm_err(dx, dxr, n);
  ck_assert_msg(e < 1e-5, "norm_dx R=%d C=%d rms=%d: normalised error %g", R, C, rms, e);
  rt_norm_dg(dg, x, dy, R, C, 1e-5f, rms);
  rt_norm_dg_ref(dgr, x, dy, R, C, 1e-5f, rms);
  e = norm_err(dg, dgr, C);
  ck_assert_msg(e < 1e-5, "norm_dg R=%d C=%d rms=%d: normalised error %g", R, C, rms, e);
  /* dx in place of dy */
  memcpy(dxr, dy, n * sizeof(float));
  rt_norm_dx(dxr, x, g, dxr, R, C, 1e-5f, rms);
  ck_assert(same_bits(dx, dxr, n));
  free(x), free(g), free(dy), free(dx), free(dxr), free(dg), free(dgr);
}

static void check_embedding(int n, int V, int C, uint64_t seed) {
  int32_t *ids = malloc((size_t)n * sizeof(int32_t));
  float *dy = falloc((size_t)n * C), *d = falloc((size_t)V * C), *dr = falloc((size_t)V * C);
  fill_ids(ids, n, V, seed);
  fill_uniform(dy, (size_t)n * C, -1, 1, seed + 1);
  fill_uniform(d, (size_t)V * C, 5, 6, seed + 2); /* garbage: the kernel must zero it */
  rt_embedding_dw(d, ids, dy, n, V, C);
  rt_embedding_dw_ref(dr, ids, dy, n, V, C);
  double e = norm_err(d, dr, (size_t)V * C);
  ck_assert_msg(e < 1e-5, "embedding_dw n=%d V=%d C=%d: normalised error %g", n, V, C, e);
  free(ids), free(dy), free(d), free(dr);
}

static void check_attention_dx(int B, int T, int C, int nh, int causal, uint64_t seed) {
  size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
  float *qkv = falloc(nqkv), *dy = falloc(no), *d = falloc(nqkv), *dr = falloc(nqkv);
  float *scratch = falloc(rt_attention_dx_scratch_floats(T, C, nh)); /* exact size: ASan catches overruns */
  fill_uniform(qkv, nqkv, -2, 2, seed);
  fill_uniform(dy, no, -1, 1, seed + 1);
  fill_uniform(d, nqkv, 7, 8, seed + 2); /* garbage: every element must be written */
  rt_attention_dx(d, qkv, dy, B, T, C, nh, causal, scratch);
  rt_attention_dx_ref(dr, qkv, dy, B, T, C, nh, causal);
  double e = norm_err(d, dr, nqkv);
  ck_assert_msg(e < 1e-5, "attention_dx B=%d T=%d C=%d nh=%d causal=%d: normalised error %g", B, T, C, nh, causal, e);
  free(qkv), free(dy), free(d), free(dr), free(scratch);
}

START_TEST(fast_vs_ref) {
  rt_set_threads(_i);
  check_ce(37, 131, 1);
  check_ce(1, 7, 2);
  check_ce(300, 67, 3); /* several cross-entropy blocks */
  check_ce(2000, 5, 4); /* more rows than 64 blocks of the minimum size */
  check_gemms(45, 37, 29, 10);
  check_gemms(3, 5, 7, 11);     /* below one chunk */
  check_gemms(130, 67, 51, 12); /* several chunks, partial last one */
  check_gemms(33, 1, 9, 13);
  for (int rms = 0; rms <= 1; rms++) {
    check_norm(67, 37, rms, 20);
    check_norm(1, 5, rms, 21);
    check_norm(1100, 21, rms, 22); /* three row groups of rt_norm_dg, several column chunks */
    check_norm(40, 300, rms, 23);
  }
  check_embedding(300, 53, 19, 30);
  check_embedding(5, 1000, 9, 31);
  check_embedding(2000, 7, 64, 32);
  for (int causal = 0; causal <= 1; causal++) {
    check_attention_dx(2, 67, 40, 5, causal, 40);  /* hd = 8, one partial query block */
    check_attention_dx(1, 1, 12, 3, causal, 41);   /* a single token */
    check_attention_dx(2, 203, 48, 3, causal, 42); /* several query blocks, the last partial */
    check_attention_dx(1, 129, 36, 1, causal, 43); /* one head, hd = 36 */
    check_attention_dx(1, 64, 64, 2, causal, 44);  /* exactly one block */
    check_attention_dx(3, 70, 20, 5, causal, 45);  /* 15 (batch, head) tasks, hd = 4 */
    check_attention_dx(1, 9, 15, 3, causal, 46);   /* T < 16: inline, hd = 5 */
  }
}
END_TEST

/* The kernels whose reductions do not follow the pool's chunks give the same bits with 1 and 3
 * threads (cross-entropy, its gradient, norms, embedding_dw, attention_dx). */
START_TEST(thread_count_invariance) {
  enum { R = 700, V = 53, C = 45, B = 2, T = 131, CA = 48, NH = 4 };
  float *l = falloc((size_t)R * V), *x = falloc((size_t)R * C), *g = falloc(C), *dy = falloc((size_t)R * C);
  int32_t *t = malloc(R * sizeof(int32_t));
  float *qkv = falloc((size_t)B * T * 3 * CA), *ady = falloc((size_t)B * T * CA);
  fill_uniform(l, (size_t)R * V, -3, 3, 1);
  fill_uniform(x, (size_t)R * C, -1, 2, 2);
  fill_uniform(g, C, 0.5f, 1.5f, 3);
  fill_uniform(dy, (size_t)R * C, -1, 1, 4);
  fill_uniform(qkv, (size_t)B * T * 3 * CA, -2, 2, 5);
  fill_uniform(ady, (size_t)B * T * CA, -1, 1, 6);
  fill_ids(t, R, V, 7);
  float loss[2], *gl[2], *dx[2], *dg[2], *de[2], *da[2];
  for (int k = 0; k < 2; k++) {
    rt_set_threads(k ? 3 : 1);
    gl[k] = falloc((size_t)R * V), dx[k] = falloc((size_t)R * C), dg[k] = falloc(C), de[k] = falloc((size_t)V * C);
    da[k] = falloc((size_t)B * T * 3 * CA);
    float *scratch = falloc(rt_attention_dx_scratch_floats(T, CA, NH));
    loss[k] = rt_cross_entropy(l, t, R, V);
    rt_cross_entropy_grad(gl[k], l, t, R, V, 1.0f);
    rt_norm_dx(dx[k], x, g, dy, R, C, 1e-5f, 0);
    rt_norm_dg(dg[k], x, dy, R, C, 1e-5f, 1);
    rt_embedding_dw(de[k], t, dy, R, V, C);
    rt_attention_dx(da[k], qkv, ady, B, T, CA, NH, 1, scratch);
    free(scratch);
  }
  ck_assert(memcmp(&loss[0], &loss[1], sizeof(float)) == 0);
  ck_assert(same_bits(gl[0], gl[1], (size_t)R * V));
  ck_assert(same_bits(dx[0], dx[1], (size_t)R * C));
  ck_assert(same_bits(dg[0], dg[1], C));
  ck_assert(same_bits(de[0], de[1], (size_t)V * C));
  ck_assert(same_bits(da[0], da[1], (size_t)B * T * 3 * CA));
  for (int k = 0; k < 2; k++)
    free(gl[k]), free(dx[k]), free(dg[k]), free(de[k]), free(da[k]);
  free(l), free(x), free(g), free(dy), free(t), free(qkv), free(ady);
}
END_TEST

/* ---- (2) finite differences of the forward kernels -------------------------------------------- */

/* A scalar function of the buffers its context points at; fd_check perturbs one of them in place. */
typedef double (*LossFn)(void *ctx);

/* Worst relative error, over `ndir` random directions supported on x[0..n), between the central
 * difference L(x+) - L(x-) and g . (x+ - x-), with x+- = float(x +- eps d). */
static double fd_check(LossFn L, void *ctx, float *x, size_t n, const float *g, double eps, int ndir, uint64_t seed) {
  float *x0 = falloc(n), *d = falloc(n), *xp = falloc(n);
  memcpy(x0, x, n * sizeof(float));
  double worst = 0;
  for (int k = 0; k < ndir; k++) {
    fill_uniform(d, n, -1, 1, seed * 977 + (uint64_t)k);
    for (size_t i = 0; i < n; i++)
      x[i] = xp[i] = (float)(x0[i] + eps * d[i]);
    double lp = L(ctx);
    double an = 0;
    for (size_t i = 0; i < n; i++) {
      x[i] = (float)(x0[i] - eps * d[i]);
      an += (double)g[i] * ((double)xp[i] - x[i]);
    }
    double lm = L(ctx);
    double fd = lp - lm, e = fabs(fd - an) / fmax(fabs(an), 1e-30);
    worst = e > worst ? e : worst;
  }
  memcpy(x, x0, n * sizeof(float));
  free(x0), free(d), free(xp);
  return worst;
}

static double dot(const float *w, const float *y, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++)
    s += (double)w[i] * y[i];
  return s;
}

#define FD_TOL 1e-3

/* cross-entropy: L = rt_cross_entropy_ref(logits) */
typedef struct CeFd {
  float *logits;
  const int32_t *t;
  int R, V;
} CeFd;
static double ce_loss(void *p) {
  CeFd *c = p;
  return rt_cross_entropy_ref(c->logits, c->t, c->R, c->V);
}

START_TEST(fd_cross_entropy) {
  enum { R = 5, V = 11 };
  float l[R * V], g[R * V], g2[R * V];
  int32_t t[R];
  fill_uniform(l, R * V, -2, 2, 1);
  fill_ids(t, R, V, 2);
  rt_cross_entropy_grad_ref(g, l, t, R, V, 1.0f);
  CeFd c = {l, t, R, V};
  double e = fd_check(ce_loss, &c, l, R * V, g, 1e-2, 6, 3);
  fprintf(stderr, "fd cross_entropy: %.2e\n", e);
  ck_assert_msg(e < FD_TOL, "cross_entropy_grad_ref vs finite differences: %g", e);
  /* dloss scales the gradient */
  rt_cross_entropy_grad_ref(g2, l, t, R, V, -2.5f);
  for (int i = 0; i < R * V; i++)
    ck_assert(fabsf(g2[i] + 2.5f * g[i]) <= 1e-6f);
}
END_TEST

/* linear: L = sum(w o (x W^T)) through rt_matmul_ref; dx = w W (matmul_nn), dW = w^T x (linear_dw) */
typedef struct LinFd {
  float *x, *W, *y;
  const float *w;
  int M, N, K;
} LinFd;
static double lin_loss(void *p) {
  LinFd *c = p;
  rt_matmul_ref(c->y, c->x, c->W, NULL, c->M, c->N, c->K);
  return dot(c->w, c->y, (size_t)c->M * c->N);
}

START_TEST(fd_linear) {
  enum { M = 6, N = 5, K = 7 };
  float x[M * K], W[N * K], y[M * N], w[M * N], dx[M * K], dW[N * K];
  fill_uniform(x, M * K, -1, 1, 1);
  fill_uniform(W, N * K, -1, 1, 2);
  fill_uniform(w, M * N, -1, 1, 3);
  rt_matmul_nn_ref(dx, w, W, M, N, K);
  rt_linear_dw_ref(dW, w, x, M, N, K);
  LinFd c = {x, W, y, w, M, N, K};
  double ex = fd_check(lin_loss, &c, x, M * K, dx, 1e-2, 4, 4);
  double ew = fd_check(lin_loss, &c, W, N * K, dW, 1e-2, 4, 5);
  fprintf(stderr, "fd linear: dx %.2e dW %.2e\n", ex, ew);
  ck_assert_msg(ex < FD_TOL && ew < FD_TOL, "linear backward vs finite differences: dx %g dW %g", ex, ew);
}
END_TEST

/* norms: L = sum(w o norm(x; gain, bias)) through rt_layernorm_ref / rt_rmsnorm_ref */
typedef struct NormFd {
  float *x, *g, *b, *y;
  const float *w;
  int R, C, rms;
} NormFd;
static double norm_loss(void *p) {
  NormFd *c = p;
  if (c->rms)
    rt_rmsnorm_ref(c->y, NULL, c->x, c->g, c->R, c->C, 1e-5f);
  else
    rt_layernorm_ref(c->y, NULL, NULL, c->x, c->g, c->b, c->R, c->C, 1e-5f);
  return dot(c->w, c->y, (size_t)c->R * c->C);
}

START_TEST(fd_norms) {
  enum { R = 4, C = 13 };
  for (int rms = 0; rms <= 1; rms++) {
    float x[R * C], g[C], b[C], y[R * C], w[R * C], dx[R * C], dg[C];
    fill_uniform(x, R * C, -1, 2, 1 + rms);
    fill_uniform(g, C, 0.5f, 1.5f, 3);
    fill_uniform(b, C, -1, 1, 4);
    fill_uniform(w, R * C, -1, 1, 5);
    rt_norm_dx_ref(dx, x, g, w, R, C, 1e-5f, rms);
    rt_norm_dg_ref(dg, x, w, R, C, 1e-5f, rms);
    NormFd c = {x, g, b, y, w, R, C, rms};
    double ex = fd_check(norm_loss, &c, x, R * C, dx, 1e-2, 6, 6);
    double eg = fd_check(norm_loss, &c, g, C, dg, 1e-2, 6, 7);
    fprintf(stderr, "fd %s: dx %.2e dgain %.2e\n", rms ? "rmsnorm" : "layernorm", ex, eg);
    ck_assert_msg(ex < FD_TOL && eg < FD_TOL, "norm backward (rms=%d) vs finite differences: dx %g dgain %g", rms, ex,
                  eg);
  }
}
END_TEST

/* embedding: L = sum(w o table[ids]) through rt_embedding_ref */
typedef struct EmbFd {
  float *table, *y;
  const float *w;
  const int32_t *ids;
  int n, V, C;
} EmbFd;
static double emb_loss(void *p) {
  EmbFd *c = p;
  rt_embedding_ref(c->y, c->ids, c->table, c->n, c->V, c->C, NULL);
  return dot(c->w, c->y, (size_t)c->n * c->C);
}

START_TEST(fd_embedding) {
  enum { N = 9, V = 5, C = 4 };
  float table[V * C], y[N * C], w[N * C], dt[V * C];
  int32_t ids[N] = {3, 0, 3, 4, 3, 0, 2, 4, 3}; /* repeats; id 1 unused */
  fill_uniform(table, V * C, -1, 1, 1);
  fill_uniform(w, N * C, -1, 1, 2);
  rt_embedding_dw_ref(dt, ids, w, N, V, C);
  EmbFd c = {table, y, w, ids, N, V, C};
  double e = fd_check(emb_loss, &c, table, V * C, dt, 1e-2, 4, 8);
  fprintf(stderr, "fd embedding: %.2e\n", e);
  ck_assert_msg(e < FD_TOL, "embedding_dw_ref vs finite differences: %g", e);
}
END_TEST

/* attention: L = sum(w o attention(qkv)) through rt_attention_ref; directions on q, k, v alone
 * (each a column band of every row, so gathered into a packed copy and scattered back) */
typedef struct AttFd {
  float *qkv, *y, *part; /* part: the packed (B*T, C) band being perturbed */
  const float *w;
  int B, T, C, nh, causal, band;
} AttFd;
static void band_io(AttFd *c, int to_qkv) {
  for (int r = 0; r < c->B * c->T; r++) {
    float *row = c->qkv + (size_t)r * 3 * c->C + (size_t)c->band * c->C, *p = c->part + (size_t)r * c->C;
    if (to_qkv)
      memcpy(row, p, (size_t)c->C * sizeof(float));
    else
      memcpy(p, row, (size_t)c->C * sizeof(float));
  }
}
static double att_loss(void *p) {
  AttFd *c = p;
  band_io(c, 1);
  rt_attention_ref(c->y, c->qkv, c->B, c->T, c->C, c->nh, c->causal);
  return dot(c->w, c->y, (size_t)c->B * c->T * c->C);
}

START_TEST(fd_attention) {
  enum { B = 2, T = 7, C = 12, NH = 3 };
  for (int causal = 0; causal <= 1; causal++) {
    float qkv[B * T * 3 * C], y[B * T * C], w[B * T * C], d[B * T * 3 * C], part[B * T * C], gpart[B * T * C];
    fill_uniform(qkv, B * T * 3 * C, -1.5f, 1.5f, 1 + causal);
    fill_uniform(w, B * T * C, -1, 1, 3);
    rt_attention_dx_ref(d, qkv, w, B, T, C, NH, causal);
    AttFd c = {qkv, y, part, w, B, T, C, NH, causal, 0};
    double e[3];
    for (int band = 0; band < 3; band++) {
      c.band = band;
      band_io(&c, 0); /* part <- the band of qkv */
      for (int r = 0; r < B * T; r++)
        memcpy(gpart + r * C, d + (size_t)r * 3 * C + band * C, C * sizeof(float));
      e[band] = fd_check(att_loss, &c, part, B * T * C, gpart, 1e-2, 6, 9 + band);
      band_io(&c, 1); /* restore */
    }
    fprintf(stderr, "fd attention causal=%d: dq %.2e dk %.2e dv %.2e\n", causal, e[0], e[1], e[2]);
    ck_assert_msg(e[0] < FD_TOL && e[1] < FD_TOL && e[2] < FD_TOL,
                  "attention_dx_ref (causal=%d) vs finite differences: dq %g dk %g dv %g", causal, e[0], e[1], e[2]);
  }
}
END_TEST

/* ---- (3), (4) properties ---------------------------------------------------------------------- */

START_TEST(cross_entropy_properties) {
  rt_set_threads(_i);
  enum { R = 9, V = 97 };
  float l[R * V], g[R * V];
  int32_t t[R];
  for (int i = 0; i < R * V; i++)
    l[i] = 3.25f; /* uniform logits (any constant) */
  fill_ids(t, R, V, 1);
  ck_assert_msg(fabs(rt_cross_entropy(l, t, R, V) - log((double)V)) < 1e-6 * log((double)V), "uniform: %g vs %g",
                rt_cross_entropy(l, t, R, V), log((double)V));
  ck_assert(fabs(rt_cross_entropy_ref(l, t, R, V) - log((double)V)) < 1e-6 * log((double)V));
  fill_uniform(l, R * V, -5, 5, 2);
  rt_cross_entropy_grad(g, l, t, R, V, 1.5f);
  for (int r = 0; r < R; r++) {
    double s = 0;
    for (int j = 0; j < V; j++) {
      s += g[r * V + j];
      ck_assert(j == t[r] ? g[r * V + j] < 0 : g[r * V + j] >= 0);
    }
    ck_assert_msg(fabs(s) < 1e-6, "gradient row %d sums to %g", r, s);
  }
  /* a single row with the target certain: loss ~ 0 */
  float one[3] = {-30.0f, 30.0f, -30.0f};
  int32_t t1 = 1;
  ck_assert(rt_cross_entropy(one, &t1, 1, 3) < 1e-6f && rt_cross_entropy(one, &t1, 1, 3) >= 0.0f);
}
END_TEST

START_TEST(embedding_dw_accumulates) {
  rt_set_threads(_i);
  enum { N = 6, V = 4, C = 3 };
  int32_t ids[N] = {2, 0, 2, -1, 2, 4}; /* 2 three times; -1 and 4 (== V) out of range: skipped */
  float dy[N * C], d[V * C];
  for (int i = 0; i < N * C; i++)
    dy[i] = (float)(i + 1);
  for (int i = 0; i < V * C; i++)
    d[i] = 99.0f;
  rt_embedding_dw(d, ids, dy, N, V, C);
  for (int c = 0; c < C; c++) {
    ck_assert(d[0 * C + c] == dy[1 * C + c]);
    ck_assert(d[1 * C + c] == 0.0f && d[3 * C + c] == 0.0f);
    ck_assert(d[2 * C + c] == dy[0 * C + c] + dy[2 * C + c] + dy[4 * C + c]);
  }
  float dr[V * C];
  rt_embedding_dw_ref(dr, ids, dy, N, V, C);
  ck_assert(same_bits(d, dr, V * C));
}
END_TEST

/* ---- (5) timing ------------------------------------------------------------------------------- */

static double median3(double a, double b, double c) {
  return a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
}

START_TEST(attention_dx_timing) {
  rt_set_threads(2);
  enum { B = 4, T = 256, C = 384, NH = 6 };
  size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
  float *qkv = falloc(nqkv), *dy = falloc(no), *o = falloc(no), *d = falloc(nqkv);
  size_t sf = rt_attention_scratch_floats(T, C, NH), sb = rt_attention_dx_scratch_floats(T, C, NH);
  float *sfw = falloc(sf), *sbw = falloc(sb);
  fill_uniform(qkv, nqkv, -2, 2, 1);
  fill_uniform(dy, no, -1, 1, 2);
  for (int causal = 0; causal <= 1; causal++) {
    double tf[3], tb[3];
    for (int rep = 0; rep < 3; rep++) {
      double t0 = rt_now_seconds();
      for (int i = 0; i < 5; i++)
        rt_attention(o, qkv, B, T, C, NH, causal, sfw);
      double t1 = rt_now_seconds();
      for (int i = 0; i < 5; i++)
        rt_attention_dx(d, qkv, dy, B, T, C, NH, causal, sbw);
      double t2 = rt_now_seconds();
      tf[rep] = (t1 - t0) / 5, tb[rep] = (t2 - t1) / 5;
    }
    double f = median3(tf[0], tf[1], tf[2]), b = median3(tb[0], tb[1], tb[2]);
    double flops = 2.0 * B * NH * (double)T * T * (C / NH) * (causal ? 0.5 : 1.0); /* one T x T x hd GEMM */
    fprintf(stderr,
            "attention B=%d T=%d C=%d heads=%d causal=%d, %d threads: forward %.3f ms (%.1f GFLOP/s), backward %.3f ms "
            "(%.1f GFLOP/s, 5 GEMMs), %.2fx; scratch %zu + %zu floats\n",
            B, T, C, NH, causal, rt_threads(), f * 1e3, 2 * flops / f * 1e-9, b * 1e3, 5 * flops / b * 1e-9, b / f, sf,
            sb);
  }
  free(qkv), free(dy), free(o), free(d), free(sfw), free(sbw);
}
END_TEST

/* ---- (6) the fused LM head ---------------------------------------------------------------------- */

static void check_linear_xent(int R, int V, int C, int chunk, uint64_t seed, int threads) {
  size_t nh = (size_t)R * C, nw = (size_t)V * C, nl = (size_t)R * V, ns = rt_linear_xent_scratch_floats(chunk, V);
  float *h = falloc(nh), *W = falloc(nw), *dh = falloc(nh), *dW = falloc(nw), *dhr = falloc(nh), *dWr = falloc(nw);
  float *dh1 = falloc(nh), *dW1 = falloc(nw), *l = falloc(nl), *dhu = falloc(nh), *dWu = falloc(nw);
  float *scratch = falloc(ns + 16);
  int32_t *t = malloc((size_t)R * sizeof(int32_t));
  fill_uniform(h, nh, -1, 1, seed);
  fill_uniform(W, nw, -0.5, 0.5, seed + 1);
  fill_ids(t, R, V, seed + 2);
  t[R / 2] = V; /* out of range: no loss, no gradient from this row */
  const float dloss = 0.75f;
  for (int i = 0; i < 16; i++)
    scratch[ns + i] = 1234.5f;
  float loss, loss1, lossr, lossu;
  rt_set_threads(1);
  rt_linear_xent(dh1, dW1, &loss1, h, W, t, R, V, C, dloss, chunk, scratch);
  rt_set_threads(threads);
  rt_linear_xent(dh, dW, &loss, h, W, t, R, V, C, dloss, chunk, scratch);
  for (int i = 0; i < 16; i++)
    ck_assert_msg(scratch[ns + i] == 1234.5f, "linear_xent wrote past its scratch");
  ck_assert_msg(loss == loss1 && same_bits(dh, dh1, nh) && same_bits(dW, dW1, nw),
                "linear_xent R=%d V=%d C=%d chunk=%d: %d threads differ from 1", R, V, C, chunk, threads);
  rt_linear_xent_ref(dhr, dWr, &lossr, h, W, t, R, V, C, dloss);
  ck_assert_msg(fabsf(loss - lossr) <= 1e-5f * fabsf(lossr), "linear_xent loss %.9g vs ref %.9g", loss, lossr);
  ck_assert_msg(norm_err(dh, dhr, nh) < 1e-5, "linear_xent dh: %g", norm_err(dh, dhr, nh));
  ck_assert_msg(norm_err(dW, dWr, nw) < 1e-5, "linear_xent dW: %g", norm_err(dW, dWr, nw));
  /* the unfused sequence autodiff emits */
  rt_linear(l, h, W, NULL, R, V, C, NULL, NULL);
  lossu = rt_cross_entropy(l, t, R, V);
  rt_cross_entropy_grad(l, l, t, R, V, dloss);
  rt_matmul_nn(dhu, l, W, R, V, C);
  rt_linear_dw(dWu, l, h, R, V, C);
  double eh = norm_err(dh, dhu, nh), ew = norm_err(dW, dWu, nw);
  ck_assert_msg(loss == lossu, "linear_xent loss %.9g vs unfused %.9g", loss, lossu);
  ck_assert_msg(eh <= 1e-6 && ew <= 1e-6, "linear_xent R=%d V=%d C=%d chunk=%d vs unfused: dh %g, dW %g", R, V, C,
                chunk, eh, ew);
  if (threads == 1)
    fprintf(stderr, "linear_xent R=%d V=%d C=%d chunk=%d vs unfused: loss same bits, dh %s (%.3g), dW %s (%.3g)\n", R,
            V, C, chunk, same_bits(dh, dhu, nh) ? "same bits" : "differs", eh, same_bits(dW, dWu, nw) ? "same bits" : "differs",
            ew);
  free(h), free(W), free(dh), free(dW), free(dhr), free(dWr), free(dh1), free(dW1), free(l), free(dhu), free(dWu);
  free(scratch), free(t);
}

START_TEST(linear_xent_vs_unfused) {
  check_linear_xent(37, 53, 19, 8, 11, _i);     /* odd sizes, 5 chunks, the last partial */
  check_linear_xent(5, 7, 3, 16, 12, _i);       /* one chunk larger than the rows */
  check_linear_xent(300, 301, 33, 128, 13, _i); /* several cross-entropy blocks per chunk */
  check_linear_xent(129, 1000, 24, 37, 14, _i); /* chunks that straddle the loss's row blocks */
  check_linear_xent(512, 256, 128, 256, 15, _i); /* gpt-tiny's head */
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_backward");
  TCase *tc = tcase_create("backward");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, fast_vs_ref, 1, 4); /* _i = 1..3 threads */
  tcase_add_test(tc, thread_count_invariance);
  tcase_add_test(tc, fd_cross_entropy);
  tcase_add_test(tc, fd_linear);
  tcase_add_test(tc, fd_norms);
  tcase_add_test(tc, fd_embedding);
  tcase_add_test(tc, fd_attention);
  tcase_add_loop_test(tc, cross_entropy_properties, 1, 4);
  tcase_add_loop_test(tc, embedding_dw_accumulates, 1, 4);
  tcase_add_test(tc, attention_dx_timing);
  tcase_add_loop_test(tc, linear_xent_vs_unfused, 1, 5); /* _i = 1..4 threads */
  suite_add_tcase(s, tc);
  return check_run(s);
}
