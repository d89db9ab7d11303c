/* funnel.c: sequence compression (Funnel-Transformer, Dai et al. 2020): pooling along the time
 * axis, its inverse (upsampling by repetition), and attention whose queries are pooled while the
 * keys and values keep the full length (the reference code's pool_q_only), with their naive
 * `_ref` twins. x is (B,T,C) row-major throughout; stride s divides T (the compiler checks it for
 * the compiled length, the runtime for the step's: RtModel.time_multiple).
 *
 * rt_seq_pool:   y (B,T/s,C), y[b,j] = scale * sum_{i<s} x[b, j s + i]     (mean: scale = 1/s)
 * rt_upsample:   y (B,T s,C), y[b,t] = scale * x[b, t / s]   (T is the input's length here)
 * Each is the other's adjoint at equal stride and scale, so the IR's gradient of one is the other.
 *
 * rt_attention_pool: qkv (B,T,3C) as rt_attention's; per (batch, head) the T queries are averaged
 * in groups of s into a (T/s, hd) scratch block, then rt_attend_head (attention.c) runs the
 * flash-style online softmax of those T/s queries over all T keys (bidirectional), writing out
 * (B,T/s,C). The backward pools the queries again, runs rt_attend_dx_head with a (T/s, hd) d Q
 * block, and spreads d Q / s over each group's s rows of d qkv; d K and d V are the panels'.
 * Threading: (batch, head) pairs, each task with its own scratch slice, as rt_attention. */
#include "kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

void rt_seq_pool(float *out, const float *x, int B, int T, int C, int stride, float scale) {
  int tq = T / stride;
  for (int b = 0; b < B; b++)
    for (int j = 0; j < tq; j++) {
      float *y = out + ((size_t)b * tq + j) * C;
      const float *r = x + ((size_t)b * T + (size_t)j * stride) * C;
      memcpy(y, r, (size_t)C * sizeof(float));
      for (int i = 1; i < stride; i++)
        for (int c = 0; c < C; c++) y[c] += r[(size_t)i * C + c];
      for (int c = 0; c < C; c++) y[c] *= scale;
    }
}

void rt_upsample(float *out, const float *x, int B, int T, int C, int stride, float scale) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const float *r = x + ((size_t)b * T + t) * C;
      float *y = out + ((size_t)b * T + t) * stride * C;
      for (int c = 0; c < C; c++) y[c] = scale * r[c];
      for (int i = 1; i < stride; i++) memcpy(y + (size_t)i * C, y, (size_t)C * sizeof(float));
    }
}

/* The queries of one (batch, head) averaged in groups of s: q (T rows, stride ld) -> Qp (T/s, hd). */
static void pool_queries(float *Qp, const float *q, int ld, int T, int hd, int s) {
  int tq = T / s;
  float inv = 1.0f / (float)s;
  for (int j = 0; j < tq; j++) {
    float *d = Qp + (size_t)j * hd;
    const float *r = q + (size_t)j * s * ld;
    memcpy(d, r, (size_t)hd * sizeof(float));
    for (int i = 1; i < s; i++)
      for (int e = 0; e < hd; e++) d[e] += r[(size_t)i * ld + e];
    for (int e = 0; e < hd; e++) d[e] *= inv;
  }
}

static size_t pool_slice(int T, int C, int n_head, int s) {
  size_t hd = (size_t)(C / n_head), tq = (size_t)(T / s > 0 ? T / s : 1);
  return rt_slice_floats(rt_attend_head_floats((int)hd) + tq * hd);
}

size_t rt_attention_pool_scratch_floats(int T, int C, int n_head, int stride) {
  return pool_slice(T, C, n_head, stride) * (size_t)rt_threads();
}

typedef struct PoolCtx {
  float *out;
  const float *qkv, *dy;
  float *dqkv;
  int T, C, n_head, hd, stride;
  float scale;
  float *scratch;
  size_t slice;
  atomic_int next_slot; /* each chunk claims one scratch slice */
} PoolCtx;

static void pool_tasks(void *p, int lo, int hi) {
  PoolCtx *a = p;
  int C = a->C, T = a->T, hd = a->hd, tq = T / a->stride;
  float *ws = rt_claim_slice(a->scratch, a->slice, &a->next_slot);
  float *Qp = ws + rt_attend_head_floats(hd); /* the pooled queries after rt_attend_head's workspace */
  size_t ld = 3 * (size_t)C;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    const float *q = a->qkv + (size_t)b * T * ld + (size_t)h * hd;
    pool_queries(Qp, q, (int)ld, T, hd, a->stride);
    rt_attend_head(a->out + (size_t)b * tq * C + (size_t)h * hd, C, Qp, hd, tq, q + C, q + 2 * C, (int)ld, T, hd, 0,
                   a->scale, ws);
  }
}

void rt_attention_pool(float *out, const float *qkv, int B, int T, int C, int n_head, int stride, float *scratch) {
  if (B <= 0 || T < stride) return;
  int hd = C / n_head;
  PoolCtx a = {out, qkv, NULL, NULL, T, C, n_head, hd, stride, 1.0f / sqrtf((float)hd), scratch,
               pool_slice(T, C, n_head, stride), 0};
  rt_parallel_for(B * n_head, T >= 16 ? 1 : B * n_head, pool_tasks, &a);
}

/* backward scratch per task: the P and dP panels (bq x T each, bq = min(T/s, BQ)), Qp and dQp */
static size_t pool_dx_slice(int T, int C, int n_head, int s) {
  size_t tq = (size_t)(T / s > 0 ? T / s : 1), bq = tq < RT_ATTN_BQ ? tq : RT_ATTN_BQ;
  size_t t = (size_t)(T > 0 ? T : 1), hd = (size_t)(C / n_head);
  return rt_slice_floats(2 * bq * t + 2 * tq * hd);
}

size_t rt_attention_pool_dx_scratch_floats(int T, int C, int n_head, int stride) {
  return pool_dx_slice(T, C, n_head, stride) * (size_t)rt_threads();
}

static void pool_dx_tasks(void *p, int lo, int hi) {
  PoolCtx *a = p;
  int C = a->C, T = a->T, hd = a->hd, s = a->stride, tq = T / s;
  size_t bq = (size_t)(tq < RT_ATTN_BQ ? tq : RT_ATTN_BQ);
  float *P = rt_claim_slice(a->scratch, a->slice, &a->next_slot);
  float *dP = P + bq * (size_t)T;
  float *Qp = dP + bq * (size_t)T;
  float *dQp = Qp + (size_t)tq * hd;
  size_t ld = 3 * (size_t)C;
  float inv = 1.0f / (float)s;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    size_t off = (size_t)b * T * ld + (size_t)h * hd;
    const float *q = a->qkv + off;
    float *dq = a->dqkv + off;
    pool_queries(Qp, q, (int)ld, T, hd, s);
    rt_attend_dx_head(dQp, hd, tq, dq + C, dq + 2 * C, Qp, q + C, q + 2 * C, a->dy + (size_t)b * tq * C + (size_t)h * hd,
                      (int)ld, C, T, hd, 0, a->scale, P, dP, 1);
    for (int t = 0; t < T; t++) { /* every row of a group gets its pooled query's gradient / s */
      const float *g = dQp + (size_t)(t / s) * hd;
      float *d = dq + (size_t)t * ld;
      for (int e = 0; e < hd; e++) d[e] = g[e] * inv;
    }
  }
}

void rt_attention_pool_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head, int stride,
                          float *scratch) {
  if (B <= 0 || T < stride) return;
  int hd = C / n_head;
  PoolCtx a = {NULL, qkv, dy, dqkv, T, C, n_head, hd, stride, 1.0f / sqrtf((float)hd), scratch,
               pool_dx_slice(T, C, n_head, stride), 0};
  rt_parallel_for(B * n_head, T >= 16 ? 1 : B * n_head, pool_dx_tasks, &a);
}

/* ---- naive twins: element by element from the definitions, double accumulation ---- */

void rt_seq_pool_ref(float *out, const float *x, int B, int T, int C, int stride, double scale) {
  size_t n = (size_t)B * (size_t)(T / stride) * (size_t)C;
  for (size_t o = 0; o < n; o++) {
    size_t c = o % (size_t)C, j = o / (size_t)C % (size_t)(T / stride), b = o / ((size_t)C * (size_t)(T / stride));
    double acc = 0;
    for (int i = 0; i < stride; i++) acc += x[((size_t)b * T + j * (size_t)stride + (size_t)i) * C + c];
    out[o] = (float)(scale * acc);
  }
}

void rt_upsample_ref(float *out, const float *x, int B, int T, int C, int stride, double scale) {
  size_t n = (size_t)B * (size_t)T * (size_t)stride * (size_t)C;
  for (size_t o = 0; o < n; o++) {
    size_t c = o % (size_t)C, t = o / (size_t)C % ((size_t)T * (size_t)stride), b = o / ((size_t)C * (size_t)T * (size_t)stride);
    out[o] = (float)(scale * x[((size_t)b * T + t / (size_t)stride) * C + c]);
  }
}

/* the pooled query (double) of group j of head h, batch b */
static void ref_qbar(double *qb, const float *qkv, int b, int j, int h, int T, int C, int hd, int s) {
  for (int e = 0; e < hd; e++) {
    double acc = 0;
    for (int i = 0; i < s; i++) acc += qkv[((size_t)b * T + (size_t)j * s + i) * 3 * C + (size_t)h * hd + e];
    qb[e] = acc / s;
  }
}

/* softmax row p (T) of pooled query qb against the keys of (b, h) */
static void ref_probs(double *p, const double *qb, const float *qkv, int b, int h, int T, int C, int hd) {
  double mx = -INFINITY, sum = 0, scale = 1.0 / sqrt((double)hd);
  for (int k = 0; k < T; k++) {
    const float *kr = qkv + ((size_t)b * T + k) * 3 * C + C + (size_t)h * hd;
    double d = 0;
    for (int e = 0; e < hd; e++) d += qb[e] * kr[e];
    p[k] = d * scale;
    mx = p[k] > mx ? p[k] : mx;
  }
  for (int k = 0; k < T; k++) sum += (p[k] = exp(p[k] - mx));
  for (int k = 0; k < T; k++) p[k] /= sum;
}

void rt_attention_pool_ref(float *out, const float *qkv, int B, int T, int C, int n_head, int stride) {
  int hd = C / n_head, tq = T / stride;
  double *p = malloc(sizeof(double) * (size_t)(T + hd)); /* test-only twin: allocation is fine */
  if (!p) return;
  double *qb = p + T;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++)
      for (int j = 0; j < tq; j++) {
        ref_qbar(qb, qkv, b, j, h, T, C, hd, stride);
        ref_probs(p, qb, qkv, b, h, T, C, hd);
        for (int e = 0; e < hd; e++) {
          double acc = 0;
          for (int k = 0; k < T; k++) acc += p[k] * qkv[((size_t)b * T + k) * 3 * C + 2 * C + (size_t)h * hd + e];
          out[((size_t)b * tq + j) * C + (size_t)h * hd + e] = (float)acc;
        }
      }
  free(p);
}

/* The textbook backward of softmax(qbar K^T / sqrt(hd)) V per pooled query: dV += P^T dO,
 * dP = dO V^T, dS = P o (dP - rowsum(P o dP)), dqbar = scale dS K, dK += scale dS^T qbar, and
 * each of the group's s query rows gets dqbar / s. All in double, then rounded once. */
void rt_attention_pool_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                              int stride) {
  int hd = C / n_head, tq = T / stride;
  size_t n = (size_t)B * T * 3 * C;
  double *acc = calloc(n + (size_t)2 * T + 2 * (size_t)hd, sizeof(double));
  if (!acc) return;
  double *p = acc + n, *dp = p + T, *qb = dp + T, *dqb = qb + hd, scale = 1.0 / sqrt((double)hd);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++)
      for (int j = 0; j < tq; j++) {
        ref_qbar(qb, qkv, b, j, h, T, C, hd, stride);
        ref_probs(p, qb, qkv, b, h, T, C, hd);
        const float *dO = dy + ((size_t)b * tq + j) * C + (size_t)h * hd;
        double D = 0;
        for (int k = 0; k < T; k++) {
          const float *vr = qkv + ((size_t)b * T + k) * 3 * C + 2 * C + (size_t)h * hd;
          double d = 0;
          for (int e = 0; e < hd; e++) d += (double)dO[e] * vr[e];
          dp[k] = d;
          D += p[k] * d;
        }
        for (int e = 0; e < hd; e++) dqb[e] = 0;
        for (int k = 0; k < T; k++) {
          size_t row = ((size_t)b * T + k) * 3 * C + (size_t)h * hd;
          double ds = p[k] * (dp[k] - D) * scale;
          for (int e = 0; e < hd; e++) {
            dqb[e] += ds * qkv[row + C + e];
            acc[row + C + e] += ds * qb[e];
            acc[row + 2 * C + e] += p[k] * dO[e];
          }
        }
        for (int i = 0; i < stride; i++)
          for (int e = 0; e < hd; e++) acc[((size_t)b * T + (size_t)j * stride + i) * 3 * C + (size_t)h * hd + e] = dqb[e] / stride;
      }
  for (size_t i = 0; i < n; i++) dqkv[i] = (float)acc[i];
  free(acc);
}
