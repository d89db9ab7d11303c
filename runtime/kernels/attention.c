/* attention.c: multi-head self-attention kernels.
 *
 * rt_attention is flash-attention style: for each (batch, head), queries are processed in blocks
 * of RT_ATTN_BQ rows and keys in blocks of RT_ATTN_BK; each key block contributes to a running
 * (online) softmax: per query row we keep the running max m, the running denominator l and the
 * unnormalised output O, and rescale them by exp(m_old - m_new) when the max grows. Only one
 * (BQ x BK) score tile exists at a time, so memory is O(BQ*(BK+hd)) instead of O(T^2). The two
 * products per tile (S = Q K^T and O += P V) are f32 calls of the GEMM layer (rt_gemm: OpenBLAS,
 * or oneDNN where OpenBLAS runs outdated kernels; runtime/gemm/) that read q, k, v in place
 * from the fused (B,T,3C) buffer through a leading dimension of 3C, so nothing is copied.
 * Causal attention skips key blocks entirely above the diagonal and masks only the diagonal tile.
 *
 * rt_attention_decode handles one new token per sequence against a KV cache with two sgemv
 * calls per head. rt_attention_ref is the naive full-softmax twin used by the tests.
 * Grouped-query attention (the _gqa forms; the plain ones are them with n_kv_head = n_head): the
 * rows of qkv are q (C = n_head hd), k and v (KV = n_kv_head hd each); query head h reads KV head
 * h / (n_head / n_kv_head), and the KV cache rows are KV wide.
 * Threading: (batch, head) pairs are the tasks of rt_parallel_for (the GEMM layer runs single-threaded
 * inside each); every chunk of tasks claims its own slice of the scratch, which therefore holds
 * rt_threads() per-task slices (the scratch size functions multiply by rt_threads()). */
#include "kernels.h"

#include "../gemm/gemm.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

size_t rt_attend_head_floats(int hd) {
  return (size_t)RT_ATTN_BQ * RT_ATTN_BK + (size_t)RT_ATTN_BQ * (size_t)hd + 2 * (size_t)RT_ATTN_BQ;
}

static size_t attn_slice(int C, int n_head) { return rt_slice_floats(rt_attend_head_floats(C / n_head)); }

size_t rt_attention_scratch_floats(int T, int C, int n_head) {
  (void)T;
  return attn_slice(C, n_head) * (size_t)rt_threads();
}

/* One (batch, head): Tq queries (row stride ldq) over T keys and values; q, k, v point at column
 * h*hd of row 0 (self-attention: ldq = ld = 3C, Tq = T); o (Tq rows, stride ldo = C). The
 * workspace ws (rt_attend_head_floats(hd)) holds S (BQ,BK), the unnormalised O (BQ,hd), the running
 * max m and sum l (BQ each). causal needs Tq = T. rt_attention_pool (funnel.c) passes its pooled
 * queries. */
void rt_attend_head(float *o, int ldo, const float *q, int ldq, int Tq, const float *k, const float *v, int ld, int T,
                    int hd, int causal, float scale, float *ws) {
  float *S = ws, *O = S + (size_t)RT_ATTN_BQ * RT_ATTN_BK, *m = O + (size_t)RT_ATTN_BQ * hd, *l = m + RT_ATTN_BQ;
  for (int q0 = 0; q0 < Tq; q0 += RT_ATTN_BQ) {
    int nq = Tq - q0 < RT_ATTN_BQ ? Tq - q0 : RT_ATTN_BQ;
    int kend = causal ? q0 + nq : T;
    memset(O, 0, (size_t)nq * hd * sizeof(float));
    for (int i = 0; i < nq; i++) {
      m[i] = -INFINITY;
      l[i] = 0.0f;
    }
    for (int k0 = 0; k0 < kend; k0 += RT_ATTN_BK) {
      int nk = kend - k0 < RT_ATTN_BK ? kend - k0 : RT_ATTN_BK;
      /* S (nq,nk) = scale * Q[q0:q0+nq] K[k0:k0+nk]^T (scaled row by row below) */
      rt_gemm(0, 1, nq, nk, hd, RT_DT_F32, q + (size_t)q0 * ldq, ldq, RT_DT_F32, k + (size_t)k0 * ld, ld, 0.0f, S, nk);
      for (int i = 0; i < nq; i++) {
        float *s = S + (size_t)i * nk;
        /* causal: key k0+j is visible to query q0+i iff k0+j <= q0+i; k0 <= q0 so jmax >= 0 */
        int nvis = nk;
        if (causal && k0 + nk - 1 > q0 + i)
          nvis = q0 + i - k0 + 1;
        float mx = m[i];
        for (int j = 0; j < nvis; j++) {
          s[j] *= scale;
          mx = s[j] > mx ? s[j] : mx;
        }
        float alpha = expf(m[i] - mx); /* 0 on the first block (m = -inf) */
        float sum = rt_exp_row(s, s, nvis, mx);
        for (int j = nvis; j < nk; j++)
          s[j] = 0.0f;
        l[i] = l[i] * alpha + sum;
        m[i] = mx;
        if (alpha != 1.0f) {
          float *orow = O + (size_t)i * hd;
          for (int d = 0; d < hd; d++)
            orow[d] *= alpha;
        }
      }
      /* O (nq,hd) += P (nq,nk) V[k0:k0+nk] */
      rt_gemm(0, 0, nq, hd, nk, RT_DT_F32, S, nk, RT_DT_F32, v + (size_t)k0 * ld, ld, 1.0f, O, hd);
    }
    for (int i = 0; i < nq; i++) {
      float inv = 1.0f / l[i];
      float *dst = o + (size_t)(q0 + i) * ldo;
      const float *src = O + (size_t)i * hd;
      for (int d = 0; d < hd; d++)
        dst[d] = src[d] * inv;
    }
  }
}

typedef struct AttnCtx {
  float *out;
  const float *qkv;
  int T, C, n_head, n_kv_head, hd, causal;
  float scale;
  float *scratch;
  size_t slice;
  atomic_int next_slot; /* each chunk claims one scratch slice */
} AttnCtx;

static void attn_tasks(void *p, int lo, int hi) {
  AttnCtx *a = p;
  float *ws = rt_claim_slice(a->scratch, a->slice, &a->next_slot);
  int C = a->C, T = a->T, hd = a->hd, KV = a->n_kv_head * hd, rep = a->n_head / a->n_kv_head;
  size_t ld = (size_t)C + 2 * (size_t)KV;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    const float *row = a->qkv + (size_t)b * T * ld;
    const float *k = row + C + (size_t)(h / rep) * hd;
    rt_attend_head(a->out + (size_t)b * T * C + (size_t)h * hd, C, row + (size_t)h * hd, (int)ld, T, k, k + KV, (int)ld, T,
                   hd, a->causal, a->scale, ws);
  }
}

void rt_attention(float *out, const float *qkv, int B, int T, int C, int n_head, int causal, float *scratch) {
  rt_attention_gqa(out, qkv, B, T, C, n_head, n_head, causal, scratch);
}

void rt_attention_gqa(float *out, const float *qkv, int B, int T, int C, int n_head, int n_kv_head, int causal,
                      float *scratch) {
  if (B <= 0 || T <= 0)
    return;
  AttnCtx a = {out, qkv, T, C, n_head, n_kv_head, C / n_head, causal, 1.0f / sqrtf((float)(C / n_head)), scratch,
               attn_slice(C, n_head), 0};
  /* one (batch, head) at T = 16 is already ~10 us of work: every pair is worth a task, except for
   * tiny T where the whole call is inline */
  int grain = T >= 16 ? 1 : B * n_head;
  rt_parallel_for(B * n_head, grain, attn_tasks, &a);
}

void rt_attention_ref(float *out, const float *qkv, int B, int T, int C, int n_head, int causal) {
  rt_attention_gqa_ref(out, qkv, B, T, C, n_head, n_head, causal);
}

void rt_attention_gqa_ref(float *out, const float *qkv, int B, int T, int C, int n_head, int n_kv_head, int causal) {
  int hd = C / n_head, KV = n_kv_head * hd, W = C + 2 * KV;
  double scale = 1.0 / sqrt((double)hd);
  double *p = malloc((size_t)(T > 0 ? T : 1) * sizeof(double)); /* test-only twin: allocation is fine */
  if (!p)
    return;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++)
      for (int t = 0; t < T; t++) {
        const float *q = qkv + ((size_t)b * T + t) * W + (size_t)h * hd;
        size_t kcol = C + (size_t)(h * n_kv_head / n_head) * hd; /* KV head floor(h G / H) */
        int ns = causal ? t + 1 : T;
        double mx = -INFINITY, sum = 0;
        for (int s = 0; s < ns; s++) {
          const float *k = qkv + ((size_t)b * T + s) * W + kcol;
          double d = 0;
          for (int i = 0; i < hd; i++)
            d += (double)q[i] * k[i];
          p[s] = d * scale;
          mx = p[s] > mx ? p[s] : mx;
        }
        for (int s = 0; s < ns; s++)
          sum += (p[s] = exp(p[s] - mx));
        for (int i = 0; i < hd; i++) {
          double acc = 0;
          for (int s = 0; s < ns; s++)
            acc += p[s] * qkv[((size_t)b * T + s) * W + KV + kcol + i];
          out[((size_t)b * T + t) * C + (size_t)h * hd + i] = (float)(acc / sum);
        }
      }
  free(p);
}

size_t rt_attention_decode_scratch_floats(int Tmax) {
  return rt_slice_floats((size_t)(Tmax > 0 ? Tmax : 1)) * (size_t)rt_threads();
}

typedef struct DecCtx {
  float *out;
  const float *qkv;
  float *kcache, *vcache;
  int Tmax, t, C, n_head, n_kv_head, hd;
  float scale;
  float *scratch;
  size_t slice;
  atomic_int next_slot;
} DecCtx;

/* tasks are (b, h) pairs, after the new cache rows are written (several heads may read one KV head) */
static void dec_tasks(void *p, int lo, int hi) {
  DecCtx *d = p;
  float *s = rt_claim_slice(d->scratch, d->slice, &d->next_slot);
  int C = d->C, hd = d->hd, t = d->t, n = t + 1, KV = d->n_kv_head * hd, rep = d->n_head / d->n_kv_head;
  for (int task = lo; task < hi; task++) {
    int b = task / d->n_head, h = task % d->n_head;
    const float *row = d->qkv + (size_t)b * (C + 2 * KV);
    const float *kc = d->kcache + (size_t)b * d->Tmax * KV + (size_t)(h / rep) * hd;
    const float *vc = d->vcache + (size_t)b * d->Tmax * KV + (size_t)(h / rep) * hd;
    /* s (n) = scale * K_g[0:n] (n,hd; stride KV) q_h */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, hd, d->scale, kc, KV, row + (size_t)h * hd, 1, 0.0f, s, 1);
    float mx = -INFINITY;
    for (int j = 0; j < n; j++)
      mx = s[j] > mx ? s[j] : mx;
    float sum = rt_exp_row(s, s, n, mx);
    /* out_h (hd) = V_h[0:n]^T s / sum */
    cblas_sgemv(CblasRowMajor, CblasTrans, n, hd, 1.0f / sum, vc, KV, s, 1, 0.0f, d->out + (size_t)b * C + (size_t)h * hd,
                1);
  }
}

void rt_attention_decode(float *out, const float *qkv, float *kcache, float *vcache, int B, int Tmax, int t, int C,
                         int n_head, float *scratch) {
  rt_attention_gqa_decode(out, qkv, kcache, vcache, B, Tmax, t, C, n_head, n_head, scratch);
}

void rt_attention_gqa_decode(float *out, const float *qkv, float *kcache, float *vcache, int B, int Tmax, int t, int C,
                             int n_head, int n_kv_head, float *scratch) {
  if (B <= 0)
    return;
  int hd = C / n_head, KV = n_kv_head * hd;
  for (int b = 0; b < B; b++) { /* the new token's k and v into row t of the cache */
    const float *row = qkv + (size_t)b * (C + 2 * KV);
    memcpy(kcache + ((size_t)b * Tmax + t) * KV, row + C, (size_t)KV * sizeof(float));
    memcpy(vcache + ((size_t)b * Tmax + t) * KV, row + C + KV, (size_t)KV * sizeof(float));
  }
  DecCtx d = {out, qkv, kcache, vcache, Tmax, t, C, n_head, n_kv_head, hd, 1.0f / sqrtf((float)hd), scratch,
              rt_slice_floats((size_t)(Tmax > 0 ? Tmax : 1)), 0};
  /* a task reads 2 (t+1) hd floats of cache; below ~16K floats per chunk the pool costs more than
   * it saves (early positions of a decode are a few microseconds in all) */
  long per = 2L * (t + 1) * hd;
  long g = 16384 / (per > 0 ? per : 1);
  int grain = g < 1 ? 1 : g > B * n_head ? B * n_head : (int)g;
  rt_parallel_for(B * n_head, grain, dec_tasks, &d);
}

/* ---- attention with a KV cache, any number of new tokens ------------------------------------- */

size_t rt_attention_kv_scratch_floats(int Tmax, int C, int n_head) {
  size_t a = rt_attention_scratch_floats(Tmax, C, n_head), b = rt_attention_decode_scratch_floats(Tmax);
  return a > b ? a : b;
}

void rt_attention_kv(float *out, const float *qkv, float *kcache, float *vcache, int B, int nt, int t0, int Tmax,
                     int C, int n_head, int causal, float *scratch) {
  rt_attention_gqa_kv(out, qkv, kcache, vcache, B, nt, t0, Tmax, C, n_head, n_head, causal, scratch);
}

void rt_attention_gqa_kv(float *out, const float *qkv, float *kcache, float *vcache, int B, int nt, int t0, int Tmax,
                         int C, int n_head, int n_kv_head, int causal, float *scratch) {
  int KV = C / n_head * n_kv_head, W = C + 2 * KV;
  if (t0 == 0) {
    /* prefill: plain attention over the new tokens, and their k, v into the cache */
    rt_attention_gqa(out, qkv, B, nt, C, n_head, n_kv_head, causal, scratch);
    for (int b = 0; b < B; b++)
      for (int t = 0; t < nt; t++) {
        const float *row = qkv + ((size_t)b * nt + t) * W;
        memcpy(kcache + ((size_t)b * Tmax + t) * KV, row + C, (size_t)KV * sizeof(float));
        memcpy(vcache + ((size_t)b * Tmax + t) * KV, row + C + KV, (size_t)KV * sizeof(float));
      }
    return;
  }
  /* decoding: token t of sequence b sits at position t0 + t and sees positions 0..t0+t */
  for (int b = 0; b < B; b++)
    for (int t = 0; t < nt; t++)
      rt_attention_gqa_decode(out + ((size_t)b * nt + t) * C, qkv + ((size_t)b * nt + t) * W,
                              kcache + (size_t)b * Tmax * KV, vcache + (size_t)b * Tmax * KV, 1, Tmax, t0 + t, C,
                              n_head, n_kv_head, scratch);
}

/* ---- attention backward ---------------------------------------------------------------------- *
 * Per (batch, head), queries in blocks of RT_ATTN_BQ rows; each block takes a panel of all the
 * keys it sees (kend = T, or q0 + nq when causal):
 *   S  (nq,kend) = scale Q_blk K^T                   sgemm NT
 *   P  = softmax rows of S (masked entries 0)        exact: the panel holds the whole row
 *   dP (nq,kend) = dO_blk V^T                        sgemm NT
 *   D_i = sum_j P_ij dP_ij  (= rowsum(dO o O): O itself is never formed)
 *   dS = P o (dP - D)                                in place of dP
 *   dV += P^T dO_blk                                 sgemm TN, beta 1, into dqkv
 *   dQ_blk = scale dS K                              sgemm NN, beta 0, into dqkv
 *   dK += scale dS^T Q_blk                           sgemm TN, beta 1, into dqkv
 * Five GEMMs per block, the minimum (flash-attention-2 with stored statistics also needs five;
 * without the forward's logsumexp it needs seven, since a key-tiled panel must recompute Q K^T and
 * O). The price is the panel: scratch is two nq x kend tiles per task, 2 * BQ * T floats per
 * thread (T = 1024: 512 KB per thread), linear in T, not quadratic. q, k, v, dy and dqkv are read
 * and written in place through their leading dimensions (3C, C); nothing is copied. Each task
 * writes only its own head's columns of dqkv, so the result does not depend on the thread count. */

static size_t attn_dx_slice(int T) {
  size_t bq = T < RT_ATTN_BQ ? (size_t)(T > 0 ? T : 1) : RT_ATTN_BQ;
  return rt_slice_floats(2 * bq * (size_t)(T > 0 ? T : 1));
}

size_t rt_attention_dx_scratch_floats(int T, int C, int n_head) {
  (void)C, (void)n_head;
  return attn_dx_slice(T) * (size_t)rt_threads();
}

/* One (batch, head). q, k, v: column h*hd of row 0 of qkv (stride ld = 3C); dq, dk, dv the same
 * in dqkv; dO: column h*hd of row 0 of dy (stride ldo = C). P, dP: scratch of BQ * T floats each.
 * Tq queries of row stride ldq (q and dq; self-attention: Tq = T, ldq = ld; causal needs Tq = T):
 * rt_attention_pool_dx (attention_pool.c) passes its pooled queries. zero: dk, dv start at 0 (the
 * first query head of a KV group; the others add to them). */
void rt_attend_dx_head(float *dq, int ldq, int Tq, float *dk, float *dv, const float *q, const float *k, const float *v,
                       const float *dO, int ld, int ldo, int T, int hd, int causal, float scale, float *P, float *dP,
                       int zero) {
  for (int t = 0; zero && t < T; t++) { /* dK, dV accumulate over query blocks */
    memset(dk + (size_t)t * ld, 0, (size_t)hd * sizeof(float));
    memset(dv + (size_t)t * ld, 0, (size_t)hd * sizeof(float));
  }
  /* A causal panel's width grows with the block; rounded up to a multiple of `step` (about T/8,
   * the keys past the diagonal masked) the products take at most ~9 shapes instead of T/BQ: the GEMM
   * layer keeps one oneDNN primitive per shape in a bounded cache (1024), which T/BQ widths x 5
   * products filled at T = 16384, making every later product in the process create its own. */
  int step = (T / 8 + RT_ATTN_BQ - 1) / RT_ATTN_BQ * RT_ATTN_BQ;
  step = step > 0 ? step : RT_ATTN_BQ;
  for (int q0 = 0; q0 < Tq; q0 += RT_ATTN_BQ) {
    int nq = Tq - q0 < RT_ATTN_BQ ? Tq - q0 : RT_ATTN_BQ;
    int kend = causal ? (q0 + nq + step - 1) / step * step : T;
    kend = kend < T ? kend : T;
    /* P = scale Q K^T (scaled row by row below, as the forward's S), dP = dO V^T */
    rt_gemm(0, 1, nq, kend, hd, RT_DT_F32, q + (size_t)q0 * ldq, ldq, RT_DT_F32, k, ld, 0.0f, P, kend);
    rt_gemm(0, 1, nq, kend, hd, RT_DT_F32, dO + (size_t)q0 * ldo, ldo, RT_DT_F32, v, ld, 0.0f, dP, kend);
    for (int i = 0; i < nq; i++) {
      float *p = P + (size_t)i * kend, *dp = dP + (size_t)i * kend;
      int nvis = causal ? q0 + i + 1 : kend;
      for (int j = 0; j < nvis; j++)
        p[j] *= scale;
      float mx = rt_max_row(p, nvis);
      float inv = 1.0f / rt_exp_row(p, p, nvis, mx);
      float a[8] = {0}, tail = 0.0f;
      int j = 0;
      for (; j + 8 <= nvis; j += 8)
        for (int u = 0; u < 8; u++) {
          float pj = p[j + u] * inv;
          p[j + u] = pj;
          a[u] += pj * dp[j + u];
        }
      for (; j < nvis; j++) {
        float pj = p[j] * inv;
        p[j] = pj;
        tail += pj * dp[j];
      }
      float D = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
      for (j = 0; j < nvis; j++) /* dS, times the scale both of its products below apply */
        dp[j] = p[j] * (dp[j] - D) * scale;
      for (; j < kend; j++) /* masked: P = 0, so dS = 0 */
        p[j] = dp[j] = 0.0f;
    }
    rt_gemm(1, 0, kend, hd, nq, RT_DT_F32, P, kend, RT_DT_F32, dO + (size_t)q0 * ldo, ldo, 1.0f, dv, ld);
    rt_gemm(0, 0, nq, hd, kend, RT_DT_F32, dP, kend, RT_DT_F32, k, ld, 0.0f, dq + (size_t)q0 * ldq, ldq);
    rt_gemm(1, 0, kend, hd, nq, RT_DT_F32, dP, kend, RT_DT_F32, q + (size_t)q0 * ldq, ldq, 1.0f, dk, ld);
  }
}

typedef struct AttnDxCtx {
  float *dqkv;
  const float *qkv, *dy;
  int T, C, n_head, n_kv_head, hd, causal;
  float scale;
  float *scratch;
  size_t slice;
  atomic_int next_slot; /* each chunk claims one scratch slice */
} AttnDxCtx;

static void attn_dx_tasks(void *p, int lo, int hi) {
  AttnDxCtx *a = p;
  float *P = rt_claim_slice(a->scratch, a->slice, &a->next_slot);
  float *dP = P + a->slice / 2; /* slice = 2 * bq * T rounded up to 16: each half holds bq * T */
  int C = a->C, T = a->T, hd = a->hd, KV = a->n_kv_head * hd, rep = a->n_head / a->n_kv_head;
  size_t ld = (size_t)C + 2 * (size_t)KV;
  for (int task = lo; task < hi; task++) { /* a task is a (batch, KV head): its query heads in turn */
    int b = task / a->n_kv_head, g = task % a->n_kv_head;
    size_t row = (size_t)b * T * ld, kcol = (size_t)C + (size_t)g * hd;
    for (int h = g * rep; h < (g + 1) * rep; h++)
      rt_attend_dx_head(a->dqkv + row + (size_t)h * hd, (int)ld, T, a->dqkv + row + kcol, a->dqkv + row + kcol + KV,
                        a->qkv + row + (size_t)h * hd, a->qkv + row + kcol, a->qkv + row + kcol + KV,
                        a->dy + (size_t)b * T * C + (size_t)h * hd, (int)ld, C, T, hd, a->causal, a->scale, P, dP,
                        h == g * rep);
  }
}

void rt_attention_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head, int causal,
                     float *scratch) {
  rt_attention_gqa_dx(dqkv, qkv, dy, B, T, C, n_head, n_head, causal, scratch);
}

void rt_attention_gqa_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                         int n_kv_head, int causal, float *scratch) {
  if (B <= 0 || T <= 0)
    return;
  int hd = C / n_head;
  AttnDxCtx a = {dqkv, qkv, dy, T, C, n_head, n_kv_head, hd, causal, 1.0f / sqrtf((float)hd), scratch,
                 attn_dx_slice(T), 0};
  int grain = T >= 16 ? 1 : B * n_kv_head;
  rt_parallel_for(B * n_kv_head, grain, attn_dx_tasks, &a);
}

void rt_attention_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                         int causal) {
  /* the dense mask is the sparse twin's dense kind (k > q masked when causal): one textbook copy */
  RtSparsePattern dense = {RT_SPARSE_DENSE, 1, 0, 0, 0, 0};
  rt_attention_sparse_dx_ref(dqkv, qkv, dy, B, T, C, n_head, causal, &dense);
}

/* The grouped-query backward written out (full rows in double, per query head: P, dP = dO V^T,
 * dS = P (dP - rowsum(P dP)), then dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO into the KV head
 * the query head reads): the twin of rt_attention_gqa_dx. */
void rt_attention_gqa_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                             int n_kv_head, int causal) {
  int hd = C / n_head, KV = n_kv_head * hd, W = C + 2 * KV;
  double scale = 1.0 / sqrt((double)hd);
  size_t n = (size_t)B * T * W, tt = (size_t)(T > 0 ? T : 1);
  double *acc = calloc(n, sizeof(double)), *p = malloc(tt * sizeof(double)), *dp = malloc(tt * sizeof(double));
  if (!acc || !p || !dp) {
    free(acc), free(p), free(dp);
    return;
  }
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++)
      for (int t = 0; t < T; t++) {
        size_t qo = ((size_t)b * T + t) * W + (size_t)h * hd, kcol = C + (size_t)(h * n_kv_head / n_head) * hd;
        const float *q = qkv + qo, *dO = dy + ((size_t)b * T + t) * C + (size_t)h * hd;
        int ns = causal ? t + 1 : T;
        double mx = -INFINITY, sum = 0, D = 0;
        for (int s = 0; s < ns; s++) {
          const float *k = qkv + ((size_t)b * T + s) * W + kcol, *v = k + KV;
          double d = 0, e = 0;
          for (int i = 0; i < hd; i++)
            d += (double)q[i] * k[i], e += (double)dO[i] * v[i];
          p[s] = d * scale, dp[s] = e;
          mx = p[s] > mx ? p[s] : mx;
        }
        for (int s = 0; s < ns; s++)
          sum += (p[s] = exp(p[s] - mx));
        for (int s = 0; s < ns; s++)
          D += (p[s] /= sum) * dp[s];
        for (int s = 0; s < ns; s++) {
          size_t ko = ((size_t)b * T + s) * W + kcol;
          double ds = p[s] * (dp[s] - D) * scale;
          for (int i = 0; i < hd; i++) {
            acc[qo + i] += ds * qkv[ko + i];
            acc[ko + i] += ds * q[i];
            acc[ko + KV + i] += p[s] * dO[i];
          }
        }
      }
  for (size_t i = 0; i < n; i++)
    dqkv[i] = (float)acc[i];
  free(acc), free(p), free(dp);
}
