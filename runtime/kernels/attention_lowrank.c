/* attention_lowrank.c: Linformer attention (Wang et al. 2020, "Linformer: Self-Attention with
 * Linear Complexity"), forward and backward, with their naive `_ref` twins.
 *
 * Keys and values are projected along the sequence by learned matrices E, F of shape (K, T) before
 * the softmax, so each query attends to K projected positions instead of T:
 *   K'_h = E[:, :nt] K_h   (K,hd)        V'_h = F[:, :nt] V_h   (K,hd)
 *   out_h = softmax(Q_h K'_h^T / sqrt(hd)) V'_h                    (nt,hd)
 * per batch row and head h. There is no mask: every projected key mixes all positions, future ones
 * included, so this is bidirectional attention only (the linformer pass rejects causal attention).
 * Shapes: qkv is (B,nt,3C) row-major as rt_attention reads it (q = columns 0:C, k = C:2C, v =
 * 2C:3C, head h columns h*hd..(h+1)*hd of each, hd = C/n_head); out (B,nt,C); E and F are (K,T)
 * row-major with T the compiled length: a call with nt <= T positions uses their first nt columns
 * (the projection of a shorter sequence is the same matrix with the missing positions' columns
 * dropped, as fairseq's Linformer slices its Linear(max_seq_len, k) for shorter inputs).
 *
 * Every product is an f32 call of the GEMM layer (rt_gemm) reading q, k, v, dy and writing dqkv
 * in place through their leading dimensions (3C, C): nothing is copied. Threading as attention.c:
 * the tasks of rt_parallel_for are (batch, head) pairs, each chunk claiming its own scratch slice.
 *
 * Backward (per (b, h), P recomputed: the K scores of a query are one short row, no online softmax):
 *   dV' = P^T dO,  dP = dO V'^T,  dS = P o (dP - rowsum(P o dP)) / sqrt(hd)
 *   dQ = dS K',  dK' = dS^T Q,  dK = E^T dK',  dV = F^T dV'
 *   dE[:, :nt] = sum over b, h of dK'_bh K_bh^T,  dF likewise from dV', V  (columns nt.. zero)
 * dK' and dV' of every (b, h) go to the scratch as (B, K, C) (heads side by side in the C axis), so
 * dE = sum_b dK'_b K_b^T is one GEMM per batch row contracting over C. A second parallel loop
 * computes dE and dF in fixed blocks of rows, each summing b = 0, 1, ... in order: the result does
 * not depend on the thread count (no per-thread partials). */
#include "kernels.h"

#include "../gemm/gemm.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* rows of dE / dF per task of the reduction loop (fixed: the bits do not depend on the threads) */
#define LIN_ROWS 16

static size_t lin_slice(int T, int C, int n_head, int K) {
  size_t hd = (size_t)(C / n_head), t = (size_t)(T > 0 ? T : 1);
  return rt_slice_floats(2 * (size_t)K * hd + t * (size_t)K);
}

size_t rt_linformer_scratch_floats(int T, int C, int n_head, int K) {
  return lin_slice(T, C, n_head, K) * (size_t)rt_threads();
}

/* Kp = E[:, :nt] K_h and Vp = F[:, :nt] V_h, (K,hd) each; k, v at column h*hd of row 0 (stride ld). */
static void project(float *Kp, float *Vp, const float *E, const float *F, const float *k, const float *v, int ld,
                    int nt, int T, int hd, int K) {
  rt_gemm(0, 0, K, hd, nt, RT_DT_F32, E, T, RT_DT_F32, k, ld, 0.0f, Kp, hd);
  rt_gemm(0, 0, K, hd, nt, RT_DT_F32, F, T, RT_DT_F32, v, ld, 0.0f, Vp, hd);
}

/* P (nt,K) = softmax rows of scale Q Kp^T; q at column h*hd of row 0 (stride ld). */
static void scores(float *P, const float *q, int ld, const float *Kp, int nt, int hd, int K, float scale) {
  rt_gemm(0, 1, nt, K, hd, RT_DT_F32, q, ld, RT_DT_F32, Kp, hd, 0.0f, P, K);
  for (int i = 0; i < nt; i++) {
    float *p = P + (size_t)i * K;
    for (int j = 0; j < K; j++)
      p[j] *= scale;
    float inv = 1.0f / rt_exp_row(p, p, K, rt_max_row(p, K));
    for (int j = 0; j < K; j++)
      p[j] *= inv;
  }
}

typedef struct LinCtx {
  float *out, *dqkv, *dE, *dF;
  const float *qkv, *E, *F, *dy;
  int B, nt, T, C, n_head, hd, K;
  float scale;
  float *scratch;
  size_t slice;
  float *dKp, *dVp; /* backward: (B,K,C) each, after the per-thread slices */
  atomic_int next_slot; /* each chunk claims one scratch slice */
} LinCtx;

static void lin_tasks(void *p, int lo, int hi) {
  LinCtx *a = p;
  float *Kp = rt_claim_slice(a->scratch, a->slice, &a->next_slot), *Vp = Kp + (size_t)a->K * a->hd, *P = Vp + (size_t)a->K * a->hd;
  int C = a->C, nt = a->nt, hd = a->hd, K = a->K;
  size_t ld = 3 * (size_t)C;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    const float *q = a->qkv + (size_t)b * nt * ld + (size_t)h * hd;
    project(Kp, Vp, a->E, a->F, q + C, q + 2 * C, (int)ld, nt, a->T, hd, K);
    scores(P, q, (int)ld, Kp, nt, hd, K, a->scale);
    rt_gemm(0, 0, nt, hd, K, RT_DT_F32, P, K, RT_DT_F32, Vp, hd, 0.0f, a->out + (size_t)b * nt * C + (size_t)h * hd,
            C);
  }
}

void rt_linformer(float *out, const float *qkv, const float *E, const float *F, int B, int nt, int T, int C,
                  int n_head, int K, float *scratch) {
  if (B <= 0 || nt <= 0)
    return;
  int hd = C / n_head;
  LinCtx a = {.out = out, .qkv = qkv, .E = E, .F = F, .B = B, .nt = nt, .T = T, .C = C, .n_head = n_head, .hd = hd,
              .K = K, .scale = 1.0f / sqrtf((float)hd), .scratch = scratch, .slice = lin_slice(T, C, n_head, K)};
  atomic_init(&a.next_slot, 0);
  int grain = nt >= 16 ? 1 : B * n_head;
  rt_parallel_for(B * n_head, grain, lin_tasks, &a);
}

/* ---- backward ---- */

static size_t lin_dx_slice(int T, int C, int n_head, int K) {
  size_t hd = (size_t)(C / n_head), t = (size_t)(T > 0 ? T : 1);
  return rt_slice_floats(2 * (size_t)K * hd + 2 * t * (size_t)K);
}

size_t rt_linformer_dx_scratch_floats(int B, int T, int C, int n_head, int K) {
  return lin_dx_slice(T, C, n_head, K) * (size_t)rt_threads() + 2 * rt_slice_floats((size_t)B * K * C);
}

static void lin_dx_tasks(void *p, int lo, int hi) {
  LinCtx *a = p;
  int C = a->C, nt = a->nt, hd = a->hd, K = a->K;
  float *Kp = rt_claim_slice(a->scratch, a->slice, &a->next_slot), *Vp = Kp + (size_t)K * hd, *P = Vp + (size_t)K * hd;
  float *dP = P + (size_t)nt * K;
  size_t ld = 3 * (size_t)C;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    size_t off = (size_t)b * nt * ld + (size_t)h * hd;
    const float *q = a->qkv + off, *dO = a->dy + (size_t)b * nt * C + (size_t)h * hd;
    float *dq = a->dqkv + off;
    float *dKp = a->dKp + (size_t)b * K * C + (size_t)h * hd, *dVp = a->dVp + (size_t)b * K * C + (size_t)h * hd;
    project(Kp, Vp, a->E, a->F, q + C, q + 2 * C, (int)ld, nt, a->T, hd, K);
    scores(P, q, (int)ld, Kp, nt, hd, K, a->scale);
    rt_gemm(0, 1, nt, K, hd, RT_DT_F32, dO, C, RT_DT_F32, Vp, hd, 0.0f, dP, K);
    for (int i = 0; i < nt; i++) {
      float *pr = P + (size_t)i * K, *dp = dP + (size_t)i * K;
      float D = 0.0f;
      for (int j = 0; j < K; j++)
        D += pr[j] * dp[j];
      for (int j = 0; j < K; j++) /* dS, times the scale both of its products below apply */
        dp[j] = pr[j] * (dp[j] - D) * a->scale;
    }
    rt_gemm(1, 0, K, hd, nt, RT_DT_F32, P, K, RT_DT_F32, dO, C, 0.0f, dVp, C);
    rt_gemm(0, 0, nt, hd, K, RT_DT_F32, dP, K, RT_DT_F32, Kp, hd, 0.0f, dq, (int)ld);
    rt_gemm(1, 0, K, hd, nt, RT_DT_F32, dP, K, RT_DT_F32, q, (int)ld, 0.0f, dKp, C);
    rt_gemm(1, 0, nt, hd, K, RT_DT_F32, a->E, a->T, RT_DT_F32, dKp, C, 0.0f, dq + C, (int)ld);
    rt_gemm(1, 0, nt, hd, K, RT_DT_F32, a->F, a->T, RT_DT_F32, dVp, C, 0.0f, dq + 2 * C, (int)ld);
  }
}

/* tasks: the row blocks of dE, then those of dF; each sums over the batch rows in order */
static void lin_dproj_tasks(void *p, int lo, int hi) {
  LinCtx *a = p;
  int nblk = (a->K + LIN_ROWS - 1) / LIN_ROWS, C = a->C, nt = a->nt, T = a->T;
  size_t ld = 3 * (size_t)C;
  for (int task = lo; task < hi; task++) {
    int which = task / nblk, r0 = task % nblk * LIN_ROWS, nr = a->K - r0 < LIN_ROWS ? a->K - r0 : LIN_ROWS;
    float *d = (which ? a->dF : a->dE) + (size_t)r0 * T;
    const float *g = (which ? a->dVp : a->dKp) + (size_t)r0 * C;
    for (int b = 0; b < a->B; b++)
      rt_gemm(0, 1, nr, nt, C, RT_DT_F32, g + (size_t)b * a->K * C, C, RT_DT_F32,
              a->qkv + (size_t)b * nt * ld + (size_t)(which ? 2 : 1) * C, (int)ld, b ? 1.0f : 0.0f, d, T);
    for (int r = 0; r < nr && nt < T; r++) /* positions past the call's length get no gradient */
      memset(d + (size_t)r * T + nt, 0, (size_t)(T - nt) * sizeof(float));
  }
}

void rt_linformer_dx(float *dqkv, float *dE, float *dF, const float *qkv, const float *E, const float *F,
                     const float *dy, int B, int nt, int T, int C, int n_head, int K, float *scratch) {
  if (B <= 0 || nt <= 0) {
    memset(dE, 0, (size_t)K * T * sizeof(float));
    memset(dF, 0, (size_t)K * T * sizeof(float));
    return;
  }
  int hd = C / n_head, threads = rt_threads();
  size_t slice = lin_dx_slice(T, C, n_head, K);
  float *dKp = scratch + slice * (size_t)threads;
  LinCtx a = {.dqkv = dqkv, .dE = dE, .dF = dF, .qkv = qkv, .E = E, .F = F, .dy = dy, .B = B, .nt = nt, .T = T,
              .C = C, .n_head = n_head, .hd = hd, .K = K, .scale = 1.0f / sqrtf((float)hd), .scratch = scratch,
              .slice = slice, .dKp = dKp, .dVp = dKp + rt_slice_floats((size_t)B * K * C)};
  atomic_init(&a.next_slot, 0);
  int grain = nt >= 16 ? 1 : B * n_head;
  rt_parallel_for(B * n_head, grain, lin_dx_tasks, &a);
  rt_parallel_for(2 * ((K + LIN_ROWS - 1) / LIN_ROWS), 1, lin_dproj_tasks, &a);
}

/* ---- naive twins: serial, all double, the projections materialised per (b, h) ---- */

/* kp = E[:, :nt] K_h, vp = F[:, :nt] V_h (K,hd) in double; base: column h*hd of qkv's row 0 */
static void ref_project(double *kp, double *vp, const float *E, const float *F, const float *base, int nt, int T,
                        int C, int hd, int K) {
  for (int r = 0; r < K; r++)
    for (int i = 0; i < hd; i++) {
      double ak = 0, av = 0;
      for (int t = 0; t < nt; t++) {
        ak += (double)E[(size_t)r * T + t] * base[(size_t)t * 3 * C + C + i];
        av += (double)F[(size_t)r * T + t] * base[(size_t)t * 3 * C + 2 * C + i];
      }
      kp[(size_t)r * hd + i] = ak, vp[(size_t)r * hd + i] = av;
    }
}

void rt_linformer_ref(float *out, const float *qkv, const float *E, const float *F, int B, int nt, int T, int C,
                      int n_head, int K) {
  int hd = C / n_head;
  double scale = 1.0 / sqrt((double)hd);
  double *kp = malloc(sizeof(double) * (size_t)K * hd * 2 + sizeof(double) * (size_t)K); /* test-only twin */
  if (!kp)
    return;
  double *vp = kp + (size_t)K * hd, *s = vp + (size_t)K * hd;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++) {
      const float *base = qkv + (size_t)b * nt * 3 * C + (size_t)h * hd;
      ref_project(kp, vp, E, F, base, nt, T, C, hd, K);
      for (int t = 0; t < nt; t++) {
        double mx = -INFINITY, sum = 0;
        for (int r = 0; r < K; r++) {
          double d = 0;
          for (int i = 0; i < hd; i++)
            d += (double)base[(size_t)t * 3 * C + i] * kp[(size_t)r * hd + i];
          s[r] = d * scale;
          mx = s[r] > mx ? s[r] : mx;
        }
        for (int r = 0; r < K; r++)
          sum += (s[r] = exp(s[r] - mx));
        for (int i = 0; i < hd; i++) {
          double acc = 0;
          for (int r = 0; r < K; r++)
            acc += s[r] * vp[(size_t)r * hd + i];
          out[((size_t)b * nt + t) * C + (size_t)h * hd + i] = (float)(acc / sum);
        }
      }
    }
  free(kp);
}

void rt_linformer_dx_ref(float *dqkv, float *dE, float *dF, const float *qkv, const float *E, const float *F,
                         const float *dy, int B, int nt, int T, int C, int n_head, int K) {
  int hd = C / n_head;
  double scale = 1.0 / sqrt((double)hd);
  size_t pk = (size_t)K * hd;
  /* kp, vp, dkp, dvp (K,hd); p, dp (K); de, df (K,T) accumulated over b, h */
  double *kp = calloc(4 * pk + 2 * (size_t)K + 2 * (size_t)K * T, sizeof(double)); /* test-only twin */
  if (!kp)
    return;
  double *vp = kp + pk, *dkp = vp + pk, *dvp = dkp + pk, *p = dvp + pk, *dp = p + K, *de = dp + K, *df = de + (size_t)K * T;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++) {
      const float *base = qkv + (size_t)b * nt * 3 * C + (size_t)h * hd;
      const float *dO = dy + (size_t)b * nt * C + (size_t)h * hd;
      float *dbase = dqkv + (size_t)b * nt * 3 * C + (size_t)h * hd;
      ref_project(kp, vp, E, F, base, nt, T, C, hd, K);
      memset(dkp, 0, 2 * pk * sizeof(double));
      for (int t = 0; t < nt; t++) {
        const float *q = base + (size_t)t * 3 * C;
        double mx = -INFINITY, sum = 0, D = 0;
        for (int r = 0; r < K; r++) {
          double d = 0, g = 0;
          for (int i = 0; i < hd; i++) {
            d += (double)q[i] * kp[(size_t)r * hd + i];
            g += (double)dO[(size_t)t * C + i] * vp[(size_t)r * hd + i];
          }
          p[r] = d * scale, dp[r] = g;
          mx = p[r] > mx ? p[r] : mx;
        }
        for (int r = 0; r < K; r++)
          sum += (p[r] = exp(p[r] - mx));
        for (int r = 0; r < K; r++)
          D += (p[r] /= sum) * dp[r];
        for (int i = 0; i < hd; i++) {
          double acc = 0;
          for (int r = 0; r < K; r++) {
            double ds = p[r] * (dp[r] - D) * scale;
            acc += ds * kp[(size_t)r * hd + i];
            dkp[(size_t)r * hd + i] += ds * q[i];
            dvp[(size_t)r * hd + i] += p[r] * dO[(size_t)t * C + i];
          }
          dbase[(size_t)t * 3 * C + i] = (float)acc;
        }
      }
      for (int t = 0; t < nt; t++)
        for (int i = 0; i < hd; i++) {
          double gk = 0, gv = 0;
          for (int r = 0; r < K; r++) {
            gk += (double)E[(size_t)r * T + t] * dkp[(size_t)r * hd + i];
            gv += (double)F[(size_t)r * T + t] * dvp[(size_t)r * hd + i];
            de[(size_t)r * T + t] += dkp[(size_t)r * hd + i] * base[(size_t)t * 3 * C + C + i];
            df[(size_t)r * T + t] += dvp[(size_t)r * hd + i] * base[(size_t)t * 3 * C + 2 * C + i];
          }
          dbase[(size_t)t * 3 * C + C + i] = (float)gk;
          dbase[(size_t)t * 3 * C + 2 * C + i] = (float)gv;
        }
    }
  for (size_t i = 0; i < (size_t)K * T; i++)
    dE[i] = (float)de[i], dF[i] = (float)df[i];
  free(kp);
}
