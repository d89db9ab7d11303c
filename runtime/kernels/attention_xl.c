/* attention_xl.c: segment recurrence (Transformer-XL, Dai et al. 2019, "Transformer-XL: Attentive
 * Language Models Beyond a Fixed-Length Context"): the segment memory and the attention with
 * relative positions over [memory; segment], forward and backward, with their naive `_ref` twins.
 *
 * Memory (rt_xl_memory). A layer's memory is the layer input h of the previous M positions of the
 * same text (the paper's SG(h_{tau-1}^{n-1})): out (B,M+T,C) is [memory; x] with the memory's
 * valid rows last (rows M-mlen..M-1, mlen = min(M, t0)), the rows before them zero, x (B,nt,C) at
 * rows M..M+nt-1 and the compiled rows past nt zero. The kernel then keeps the last M rows of
 * [memory; x] as the next call's memory. The state is two buffers A, B (each (B,M,C)) and a tags
 * slot: tags[k] = t0' + 1 when buffer k holds the memory a call at position t0' reads (0: none).
 * A call at t0 reads the buffer tagged t0 + 1 and writes the other one, tagged t0 + nt + 1; at
 * t0 = 0 it reads nothing (a new text) and writes A. So calling the same step twice (the block's
 * backward recomputes its forward) reads and writes the same: the step is idempotent. Without
 * state (NULL buffers: a plain forward) the memory is empty. The gradient stops at the memory:
 * rt_xl_memory_dx passes rows M..M+nt-1 of d out back to x and drops the rest.
 *
 * Attention (rt_xl_attention), exactly the reference code's RelPartialLearnableMultiHeadAttn
 * (kimiyoung/transformer-xl, pytorch/mem_transformer.py) on its unmasked entries: with q, k, v
 * the heads of qkv (B,M+T,3C) (q = columns 0:C, k = C:2C, v = 2C:3C, head h columns h*hd..; the
 * queries are rows M..M+nt-1), rk (M+T,C) the projected relative embedding indexed by distance
 * (row d = r_net(pos_emb(d))), u = r_w_bias and w = r_r_bias (H,hd):
 *   score(i, j) = [(q_i + u_h) . k_j + (q_i + w_h) . rk_h[M + i - j]] / sqrt(hd)
 * over keys j in [M - mlen, M + i] (the memory's valid rows and the causal segment; the
 * reference's dec_attn_mask = triu(ones(qlen, klen), 1 + mlen)), softmax over j, out_i = sum p v_j.
 * The reference's _rel_shift of BD = (q + w) R^T with R at positions klen-1..0 gives exactly
 * BD[i, j] = (q_i + w) . r[mlen + i - j] on the entries the mask keeps (the distance of key j
 * to query i in its [mems; segment] of klen = mlen + qlen rows), which is rk[M + i - j] here.
 *
 * Fast kernels: per (b, h) AC = (Q + u) K^T and BD = (Q + w) Rk^T are two GEMMs (keys and
 * distances 0..mlen+nt-1), the shift is an index (BD[i, mlen + i - jj] for the key's column jj),
 * then the softmax and P V. Backward (P recomputed): dP = dO V^T, dS = P o (dP - rowsum(P o dP)) /
 * sqrt(hd), dBD[i, d] = dS[i, mlen + i - d] (the shift undone), dQ = dS K + dBD Rk, dK = dS^T (Q + u),
 * dV = P^T dO, dRk_h = sum_b dBD^T (Q + w), du_h = sum_i (dS K)_i, dw_h = sum_i (dBD Rk)_i. The
 * backward's tasks are heads, each summing batch rows in order into its own columns of dRk, du,
 * dw, so its bits do not depend on the thread count; the forward's tasks are (batch, head) pairs.
 * Each chunk of tasks claims one scratch slice, so scratch holds rt_threads() slices. */
#include "kernels.h"

#include "../gemm/gemm.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- memory ------------------------------------------------------------------------------------ */

static int32_t tag_get(const float *tags, int k) {
  int32_t v;
  memcpy(&v, tags + k, sizeof v);
  return v;
}
static void tag_set(float *tags, int k, int32_t v) { memcpy(tags + k, &v, sizeof v); }

void rt_xl_memory(float *out, const float *x, float *mem_a, float *mem_b, float *tags, int B, int nt, int t0, int T,
                  int M, int C) {
  size_t L = (size_t)M + (size_t)T, rowf = (size_t)C, memf = (size_t)M * rowf;
  const float *src = NULL;
  float *dst = NULL;
  int mlen = 0;
  if (mem_a && mem_b && tags) {
    if (t0 > 0) {
      if (tag_get(tags, 0) == t0 + 1) src = mem_a, dst = mem_b;
      else if (tag_get(tags, 1) == t0 + 1) src = mem_b, dst = mem_a;
      else dst = mem_a; /* not the continuation of the last call: an empty memory */
      if (src) mlen = t0 < M ? t0 : M;
    } else {
      dst = mem_a;
    }
  }
  for (int b = 0; b < B; b++) {
    float *o = out + (size_t)b * L * rowf;
    memset(o, 0, (size_t)(M - mlen) * rowf * sizeof(float));
    if (mlen) memcpy(o + (size_t)(M - mlen) * rowf, src + (size_t)b * memf + (size_t)(M - mlen) * rowf,
                     (size_t)mlen * rowf * sizeof(float));
    memcpy(o + (size_t)M * rowf, x + (size_t)b * nt * rowf, (size_t)nt * rowf * sizeof(float));
    memset(o + ((size_t)M + nt) * rowf, 0, (size_t)(T - nt) * rowf * sizeof(float));
    /* the next memory: the last M rows of [memory; x], rows nt..nt+M-1 of o */
    if (dst) memcpy(dst + (size_t)b * memf, o + (size_t)nt * rowf, memf * sizeof(float));
  }
  if (dst) {
    int k = dst == mem_a ? 0 : 1;
    tag_set(tags, k, t0 + nt + 1);
    if (!src) tag_set(tags, 1 - k, 0);
  }
}

void rt_xl_memory_ref(float *out, const float *x, float *mem_a, float *mem_b, float *tags, int B, int nt, int t0,
                      int T, int M, int C) {
  /* the same contract, element by element: which buffer holds the memory of position t0 */
  int have = mem_a && mem_b && tags;
  int rd = -1, wr = have ? 0 : -1;
  if (have && t0 > 0) {
    for (int k = 1; k >= 0; k--)
      if (tag_get(tags, k) == t0 + 1) rd = k;
    wr = rd == 0 ? 1 : 0;
  }
  int mlen = rd >= 0 ? (t0 < M ? t0 : M) : 0;
  float *bufs[2] = {mem_a, mem_b};
  for (int b = 0; b < B; b++)
    for (int r = 0; r < M + T; r++)
      for (int c = 0; c < C; c++) {
        float v = 0.0f;
        if (r < M && r >= M - mlen) v = bufs[rd][((size_t)b * M + r) * C + c];
        if (r >= M && r < M + nt) v = x[((size_t)b * nt + (r - M)) * C + c];
        out[((size_t)b * (M + T) + r) * C + c] = v;
      }
  if (wr >= 0) {
    for (int b = 0; b < B; b++)
      for (int r = 0; r < M; r++)
        for (int c = 0; c < C; c++)
          bufs[wr][((size_t)b * M + r) * C + c] = out[((size_t)b * (M + T) + nt + r) * C + c];
    tag_set(tags, wr, t0 + nt + 1);
    if (rd < 0) tag_set(tags, 1 - wr, 0);
  }
}

/* dx (B,nt,C) = rows M..M+nt-1 of dcat (B,M+T,C): the memory rows get no gradient */
void rt_xl_memory_dx(float *dx, const float *dcat, int B, int nt, int T, int M, int C) {
  for (int b = 0; b < B; b++)
    memcpy(dx + (size_t)b * nt * C, dcat + ((size_t)b * (M + T) + M) * C, (size_t)nt * C * sizeof(float));
}

void rt_xl_memory_dx_ref(float *dx, const float *dcat, int B, int nt, int T, int M, int C) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < nt; t++)
      for (int c = 0; c < C; c++) dx[((size_t)b * nt + t) * C + c] = dcat[((size_t)b * (M + T) + M + t) * C + c];
}

/* ---- attention ----------------------------------------------------------------------------------- */

static int xl_mlen(int t0, int M) { return t0 <= 0 ? 0 : t0 < M ? t0 : M; }

/* forward slice: Qu, Qw (T,hd), AC, BD (T, M+T) */
static size_t xl_slice(int T, int M, int C, int n_head) {
  size_t hd = (size_t)(C / n_head), t = (size_t)T, l = (size_t)M + (size_t)T;
  return rt_slice_floats(2 * t * hd + 2 * t * l);
}

size_t rt_xl_attention_scratch_floats(int T, int M, int C, int n_head) {
  return xl_slice(T, M, C, n_head) * (size_t)rt_threads();
}

/* backward slice: Qu, Qw, G (T,hd), P, dS, dBD (T, M+T) */
static size_t xl_dx_slice(int T, int M, int C, int n_head) {
  size_t hd = (size_t)(C / n_head), t = (size_t)T, l = (size_t)M + (size_t)T;
  return rt_slice_floats(3 * t * hd + 3 * t * l);
}

size_t rt_xl_attention_dx_scratch_floats(int T, int M, int C, int n_head) {
  return xl_dx_slice(T, M, C, n_head) * (size_t)rt_threads();
}

typedef struct XlCtx {
  float *out, *dqkv, *drk, *du, *dw;
  const float *qkv, *rk, *u, *w, *dy;
  int B, nt, T, M, C, n_head, hd, mlen;
  float scale;
  float *scratch;
  size_t slice;
  atomic_int next_slot;
} XlCtx;

/* P (nt, nk) = the softmax rows of one (b, h), nk = mlen + nt keys from row M - mlen of the
 * batch row's qkv block (qb), Qu = Q + u and Qw = Q + w (nt,hd) filled; BD is (nt, nk) scratch. */
static void xl_probs(const XlCtx *a, const float *qb, int h, float *Qu, float *Qw, float *P, float *BD) {
  int nt = a->nt, hd = a->hd, M = a->M, mlen = a->mlen, nk = mlen + nt;
  size_t ld = 3 * (size_t)a->C;
  const float *q = qb + (size_t)M * ld + (size_t)h * hd, *k = qb + (size_t)(M - mlen) * ld + a->C + (size_t)h * hd;
  for (int i = 0; i < nt; i++)
    for (int c = 0; c < hd; c++) {
      float v = q[(size_t)i * ld + c];
      Qu[(size_t)i * hd + c] = v + a->u[(size_t)h * hd + c];
      Qw[(size_t)i * hd + c] = v + a->w[(size_t)h * hd + c];
    }
  rt_gemm(0, 1, nt, nk, hd, RT_DT_F32, Qu, hd, RT_DT_F32, k, (int)ld, 0.0f, P, nk);
  rt_gemm(0, 1, nt, nk, hd, RT_DT_F32, Qw, hd, RT_DT_F32, a->rk + (size_t)h * hd, a->C, 0.0f, BD, nk);
  for (int i = 0; i < nt; i++) {
    float *p = P + (size_t)i * nk;
    const float *bd = BD + (size_t)i * nk;
    int nvis = mlen + i + 1; /* keys jj = 0..mlen+i; key jj is at distance mlen + i - jj */
    float mx = -INFINITY;
    for (int jj = 0; jj < nvis; jj++) {
      p[jj] = (p[jj] + bd[mlen + i - jj]) * a->scale;
      mx = p[jj] > mx ? p[jj] : mx;
    }
    float sum = 0.0f;
    for (int jj = 0; jj < nvis; jj++) {
      p[jj] = expf(p[jj] - mx);
      sum += p[jj];
    }
    float inv = 1.0f / sum;
    for (int jj = 0; jj < nvis; jj++) p[jj] *= inv;
    for (int jj = nvis; jj < nk; jj++) p[jj] = 0.0f;
  }
}

static void xl_tasks(void *p, int lo, int hi) {
  XlCtx *a = p;
  size_t t = (size_t)a->T, l = (size_t)a->M + (size_t)a->T;
  float *Qu = rt_claim_slice(a->scratch, a->slice, &a->next_slot), *Qw = Qu + t * a->hd, *P = Qw + t * a->hd, *BD = P + t * l;
  size_t ld = 3 * (size_t)a->C;
  int nk = a->mlen + a->nt;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    const float *qb = a->qkv + (size_t)b * l * ld;
    xl_probs(a, qb, h, Qu, Qw, P, BD);
    const float *v = qb + (size_t)(a->M - a->mlen) * ld + 2 * (size_t)a->C + (size_t)h * a->hd;
    rt_gemm(0, 0, a->nt, a->hd, nk, RT_DT_F32, P, nk, RT_DT_F32, v, (int)ld, 0.0f,
            a->out + (size_t)b * a->nt * a->C + (size_t)h * a->hd, a->C);
  }
}

void rt_xl_attention(float *out, const float *qkv, const float *rk, const float *u, const float *w, int B, int nt,
                     int t0, int T, int M, int C, int n_head, float *scratch) {
  if (B <= 0 || nt <= 0) return;
  XlCtx a = {.out = out, .qkv = qkv, .rk = rk, .u = u, .w = w, .B = B, .nt = nt, .T = T, .M = M, .C = C,
             .n_head = n_head, .hd = C / n_head, .mlen = xl_mlen(t0, M), .scale = 1.0f / sqrtf((float)(C / n_head)),
             .scratch = scratch, .slice = xl_slice(T, M, C, n_head)};
  atomic_init(&a.next_slot, 0);
  int grain = nt + M >= 16 ? 1 : B * n_head;
  rt_parallel_for(B * n_head, grain, xl_tasks, &a);
}

static void xl_dx_tasks(void *p, int lo, int hi) {
  XlCtx *a = p;
  size_t t = (size_t)a->T, l = (size_t)a->M + (size_t)a->T, ld = 3 * (size_t)a->C;
  int nt = a->nt, hd = a->hd, M = a->M, mlen = a->mlen, nk = mlen + nt, C = a->C;
  float *Qu = rt_claim_slice(a->scratch, a->slice, &a->next_slot), *Qw = Qu + t * hd, *G = Qw + t * hd, *P = G + t * hd,
        *dS = P + t * l, *dBD = dS + t * l;
  for (int h = lo; h < hi; h++) {
    for (int b = 0; b < a->B; b++) {
      const float *qb = a->qkv + (size_t)b * l * ld, *dyb = a->dy + (size_t)b * nt * C + (size_t)h * hd;
      float *db = a->dqkv + (size_t)b * l * ld;
      xl_probs(a, qb, h, Qu, Qw, P, dBD);
      const float *k = qb + (size_t)(M - mlen) * ld + C + (size_t)h * hd, *v = k + C;
      /* dP = dO V^T, then dS in place */
      rt_gemm(0, 1, nt, nk, hd, RT_DT_F32, dyb, C, RT_DT_F32, v, (int)ld, 0.0f, dS, nk);
      for (int i = 0; i < nt; i++) {
        float *ds = dS + (size_t)i * nk, *dbd = dBD + (size_t)i * nk;
        const float *pr = P + (size_t)i * nk;
        float dot = 0.0f;
        for (int jj = 0; jj < nk; jj++) dot += pr[jj] * ds[jj];
        for (int jj = 0; jj < nk; jj++) ds[jj] = pr[jj] * (ds[jj] - dot) * a->scale;
        for (int d = 0; d < nk; d++) dbd[d] = d <= mlen + i ? ds[mlen + i - d] : 0.0f;
      }
      float *dq = db + (size_t)M * ld + (size_t)h * hd, *dk = db + (size_t)(M - mlen) * ld + C + (size_t)h * hd,
            *dv = dk + C;
      /* dQ = dS K + dBD Rk; du, dw their row sums */
      rt_gemm(0, 0, nt, hd, nk, RT_DT_F32, dS, nk, RT_DT_F32, k, (int)ld, 0.0f, G, hd);
      for (int i = 0; i < nt; i++)
        for (int c = 0; c < hd; c++) {
          dq[(size_t)i * ld + c] = G[(size_t)i * hd + c];
          a->du[(size_t)h * hd + c] += G[(size_t)i * hd + c];
        }
      rt_gemm(0, 0, nt, hd, nk, RT_DT_F32, dBD, nk, RT_DT_F32, a->rk + (size_t)h * hd, C, 0.0f, G, hd);
      for (int i = 0; i < nt; i++)
        for (int c = 0; c < hd; c++) {
          dq[(size_t)i * ld + c] += G[(size_t)i * hd + c];
          a->dw[(size_t)h * hd + c] += G[(size_t)i * hd + c];
        }
      rt_gemm(1, 0, nk, hd, nt, RT_DT_F32, dS, nk, RT_DT_F32, Qu, hd, 0.0f, dk, (int)ld);
      rt_gemm(1, 0, nk, hd, nt, RT_DT_F32, P, nk, RT_DT_F32, dyb, C, 0.0f, dv, (int)ld);
      rt_gemm(1, 0, nk, hd, nt, RT_DT_F32, dBD, nk, RT_DT_F32, Qw, hd, 1.0f, a->drk + (size_t)h * hd, C);
    }
  }
}

void rt_xl_attention_dx(float *dqkv, float *drk, float *du, float *dw, const float *qkv, const float *rk,
                        const float *u, const float *w, const float *dy, int B, int nt, int t0, int T, int M, int C,
                        int n_head, float *scratch) {
  size_t l = (size_t)M + (size_t)T;
  memset(dqkv, 0, (size_t)(B > 0 ? B : 0) * l * 3 * (size_t)C * sizeof(float));
  memset(drk, 0, l * (size_t)C * sizeof(float));
  memset(du, 0, (size_t)C * sizeof(float));
  memset(dw, 0, (size_t)C * sizeof(float));
  if (B <= 0 || nt <= 0) return;
  XlCtx a = {.dqkv = dqkv, .drk = drk, .du = du, .dw = dw, .qkv = qkv, .rk = rk, .u = u, .w = w, .dy = dy, .B = B,
             .nt = nt, .T = T, .M = M, .C = C, .n_head = n_head, .hd = C / n_head, .mlen = xl_mlen(t0, M),
             .scale = 1.0f / sqrtf((float)(C / n_head)), .scratch = scratch, .slice = xl_dx_slice(T, M, C, n_head)};
  atomic_init(&a.next_slot, 0);
  rt_parallel_for(n_head, 1, xl_dx_tasks, &a);
}

/* ---- the naive twins: the paper's formula element by element, double, no scratch -------------- */

/* the score row of query i (b, h): s[j] for cat rows j (M + T of them), -inf where masked */
static void ref_scores(double *s, const float *qkv, const float *rk, const float *u, const float *w, int b, int h,
                       int i, int T, int M, int C, int hd, int mlen) {
  size_t L = (size_t)M + T, ld = 3 * (size_t)C;
  const float *q = qkv + ((size_t)b * L + M + i) * ld + (size_t)h * hd;
  for (int j = 0; j < M + T; j++) {
    if (j < M - mlen || j > M + i) {
      s[j] = -INFINITY;
      continue;
    }
    const float *k = qkv + ((size_t)b * L + j) * ld + C + (size_t)h * hd;
    const float *r = rk + (size_t)(M + i - j) * C + (size_t)h * hd;
    double ac = 0, bd = 0;
    for (int c = 0; c < hd; c++) {
      ac += ((double)q[c] + u[h * hd + c]) * k[c];
      bd += ((double)q[c] + w[h * hd + c]) * r[c];
    }
    s[j] = (ac + bd) / sqrt((double)hd);
  }
}

static void ref_softmax(double *s, int n) {
  double mx = -INFINITY, sum = 0;
  for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
  for (int j = 0; j < n; j++) sum += s[j] = s[j] == -INFINITY ? 0.0 : exp(s[j] - mx);
  for (int j = 0; j < n; j++) s[j] /= sum;
}

void rt_xl_attention_ref(float *out, const float *qkv, const float *rk, const float *u, const float *w, int B, int nt,
                         int t0, int T, int M, int C, int n_head) {
  int hd = C / n_head, mlen = xl_mlen(t0, M);
  size_t L = (size_t)M + T, ld = 3 * (size_t)C;
  double *p = malloc(L * sizeof *p);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++)
      for (int i = 0; i < nt; i++) {
        ref_scores(p, qkv, rk, u, w, b, h, i, T, M, C, hd, mlen);
        ref_softmax(p, (int)L);
        for (int c = 0; c < hd; c++) {
          double o = 0;
          for (size_t j = 0; j < L; j++) o += p[j] * qkv[((size_t)b * L + j) * ld + 2 * C + (size_t)h * hd + c];
          out[((size_t)b * nt + i) * C + (size_t)h * hd + c] = (float)o;
        }
      }
  free(p);
}

void rt_xl_attention_dx_ref(float *dqkv, float *drk, float *du, float *dw, const float *qkv, const float *rk,
                            const float *u, const float *w, const float *dy, int B, int nt, int t0, int T, int M,
                            int C, int n_head) {
  int hd = C / n_head, mlen = xl_mlen(t0, M);
  size_t L = (size_t)M + T, ld = 3 * (size_t)C;
  double *p = malloc(L * sizeof *p), *ds = malloc(L * sizeof *ds);
  double *g = calloc((size_t)B * L * ld + L * C + 2 * (size_t)C, sizeof *g);
  double *gq = g, *grk = g + (size_t)B * L * ld, *gu = grk + L * C, *gw = gu + C;
  double scale = 1.0 / sqrt((double)hd);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++)
      for (int i = 0; i < nt; i++) {
        ref_scores(p, qkv, rk, u, w, b, h, i, T, M, C, hd, mlen);
        ref_softmax(p, (int)L);
        const float *dyi = dy + ((size_t)b * nt + i) * C + (size_t)h * hd;
        double dot = 0;
        for (size_t j = 0; j < L; j++) {
          double dp = 0;
          for (int c = 0; c < hd; c++) dp += (double)dyi[c] * qkv[((size_t)b * L + j) * ld + 2 * C + (size_t)h * hd + c];
          ds[j] = dp;
          dot += p[j] * dp;
        }
        const float *q = qkv + ((size_t)b * L + M + i) * ld + (size_t)h * hd;
        for (size_t j = 0; j < L; j++) {
          double s = p[j] * (ds[j] - dot) * scale;
          for (int c = 0; c < hd; c++) gq[((size_t)b * L + j) * ld + 2 * C + (size_t)h * hd + c] += p[j] * dyi[c];
          if (p[j] == 0.0) continue;
          const float *k = qkv + ((size_t)b * L + j) * ld + C + (size_t)h * hd;
          const float *r = rk + (size_t)(M + i - (int)j) * C + (size_t)h * hd;
          for (int c = 0; c < hd; c++) {
            double qu = (double)q[c] + u[h * hd + c], qw = (double)q[c] + w[h * hd + c];
            gq[((size_t)b * L + M + i) * ld + (size_t)h * hd + c] += s * ((double)k[c] + r[c]);
            gq[((size_t)b * L + j) * ld + C + (size_t)h * hd + c] += s * qu;
            grk[(size_t)(M + i - (int)j) * C + (size_t)h * hd + c] += s * qw;
            gu[h * hd + c] += s * k[c];
            gw[h * hd + c] += s * r[c];
          }
        }
      }
  for (size_t x = 0; x < (size_t)B * L * ld; x++) dqkv[x] = (float)gq[x];
  for (size_t x = 0; x < L * C; x++) drk[x] = (float)grk[x];
  for (int c = 0; c < C; c++) du[c] = (float)gu[c], dw[c] = (float)gw[c];
  free(p), free(ds), free(g);
}

/* ---- the relative position table: pos_emb of the reference, sin and cos in halves --------------- */

/* out (K,C): out[d, i] = sin(d f_i), out[d, C/2 + i] = cos(d f_i), f_i = 10000^(-2i/C), i < C/2
 * (the reference's PositionalEmbedding: inv_freq = 1 / 10000^(arange(0, C, 2) / C), [sin, cos]).
 * C is even (the shape rule checks). */
void rt_sinusoid_halves(float *out, int K, int C) {
  int h = C / 2;
  for (int i = 0; i < h; i++) {
    double f = 1.0 / pow(10000.0, (2.0 * i) / C);
    for (int d = 0; d < K; d++) {
      double a = d * f;
      out[(size_t)d * C + i] = (float)sin(a);
      out[(size_t)d * C + h + i] = (float)cos(a);
    }
  }
}

void rt_sinusoid_halves_ref(float *out, int K, int C) {
  for (int d = 0; d < K; d++)
    for (int c = 0; c < C; c++) {
      int i = c < C / 2 ? c : c - C / 2;
      double a = d / pow(10000.0, 2.0 * i / C);
      out[(size_t)d * C + c] = (float)(c < C / 2 ? sin(a) : cos(a));
    }
}
