/* attention_sparse.c: block-sparse multi-head self-attention (issue 13, the runtime half).
 *
 * The pattern (RtSparsePattern, modelc_rt.h) is an element mask rt_sparse_allowed(q, k); the
 * kernels tile queries and keys in blocks of p->block positions and visit, for each query block,
 * only the key blocks rt_sparse_key_blocks lists (those with an allowed element, found by interval
 * arithmetic on the block's query and key ranges, O(T/block) per query block). Blocks whose
 * elements are all allowed ("full") need no mask; in the others each element is tested.
 *
 * Definitions (Child et al. 2019, "Generating Long Sequences with Sparse Transformers", element for
 * element as the reference code openai/sparse_attention, attention.py, defines them):
 *   local   get_attn_mask('local', ctx):  allowed iff 0 <= q - k < ctx (band of ctx keys, itself
 *           included); here ctx = window, and bidirectionally |q - k| < window.
 *   strided the paper's strided pattern is two heads of the reference code, 'local' and 'strided'
 *           with the same local_attn_ctx = l: allowed iff 0 <= q - k < l (A1) or (q - k) mod l == 0
 *           (A2, get_attn_mask 'strided': q >= k and floormod(q - k, l) == 0); here their union (the
 *           paper's merged head); bidirectionally |q - k| < l or |q - k| mod l == 0.
 *   fixed   get_blocksparse_obj('fixed', local_attn_ctx = l, num_verts = 1, vertsize) at block b:
 *           key blocks of the query's own l-block, and key blocks kb with kb mod (l/b) >=
 *           l/b - vertsize, then kb <= qb and the diagonal block masked to k <= q. In elements:
 *           allowed iff k <= q and (k / l == q / l or k mod l >= l - c) with c = vertsize * b
 *           (the paper's A1 and A2 with t = l - c); here c = summary, any 0..l (the reference
 *           needs b | l and b | c: equal results there), independent of our tile size.
 *           Bidirectionally the k <= q condition is dropped. num_verts > 1 (different summary
 *           columns per head) is not offered.
 *   global  (BigBird-style, with any kind) k < G is allowed for every query (causal: every q >= k),
 *           and bidirectionally q < G sees every key.
 * Causal attention masks k > q whatever the pattern.
 *
 * rt_attention_sparse: tasks (batch, head, query block); for each listed key block one score tile
 * S = Q K^T (rt_gemm, q, k, v read in place from the (B,T,3C) buffer, leading dimension 3C),
 * masked, then the online softmax of rt_attention (running max m, denominator l, unnormalised O,
 * rescaled by exp(m_old - m_new)), O += P V. A row none of whose keys are allowed in a tile leaves
 * m, l, O alone (a valid pattern lets every query see itself, so l > 0 at the end). Masked scores
 * are -inf and go through rt_exp_row (the dense kernels' vectorised exponential) as they are:
 * rt_expf clamps its input to -104, whose exponential underflows to exactly 0 (tested).
 *
 * rt_attention_sparse_dx: tasks (batch, head) (dK and dV of a head accumulate over its query
 * blocks, so one task owns them: thread-count independent). Per query block, a panel of its listed
 * key blocks, side by side (width n*block): S and dP = dO V^T block by block, the exact softmax
 * over the panel row (masked entries 0), D = rowsum(P o dP), dS = P o (dP - D), then per key block
 * dV += P^T dO, dQ += scale dS K, dK += scale dS^T Q: five GEMMs per visited (query, key) block
 * pair, as rt_attention_dx has per query block. */
#include "kernels.h"

#include "../gemm/gemm.h"

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- the pattern ---------------------------------------------------------------------------- */

int rt_sparse_check(const RtSparsePattern *p) {
  if (!p || p->block < 1 || p->block > RT_SPARSE_MAX_BLOCK || p->global < 0)
    return -1;
  switch (p->kind) {
  case RT_SPARSE_DENSE:
    return 0;
  case RT_SPARSE_LOCAL:
    return p->window >= 1 ? 0 : -1;
  case RT_SPARSE_STRIDED:
    return p->stride >= 1 ? 0 : -1;
  case RT_SPARSE_FIXED:
    return p->stride >= 1 && p->summary >= 0 && p->summary <= p->stride ? 0 : -1;
  default:
    return -1;
  }
}

static inline int sp_allowed(const RtSparsePattern *p, int causal, int q, int k) {
  if (causal && k > q)
    return 0;
  if (k < p->global || (!causal && q < p->global))
    return 1;
  int d = q - k, ad = d < 0 ? -d : d;
  switch (p->kind) {
  case RT_SPARSE_LOCAL:
    return ad < p->window;
  case RT_SPARSE_STRIDED:
    return ad < p->stride || ad % p->stride == 0;
  case RT_SPARSE_FIXED:
    return q / p->stride == k / p->stride || k % p->stride >= p->stride - p->summary;
  default:
    return 1;
  }
}

int rt_sparse_allowed(const RtSparsePattern *p, int causal, int q, int k) { return sp_allowed(p, causal, q, k); }

static int floordiv(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Any allowed element with q in [q0,q1], k in [k0,k1] (non-empty ranges, all positions >= 0).
 * The differences q - k take every value of [q0-k1, q1-k0]; with causal, those >= 0. */
static int sp_any(const RtSparsePattern *p, int causal, int q0, int q1, int k0, int k1) {
  if (causal && k0 > q1)
    return 0;
  if (k0 < p->global || (!causal && q0 < p->global))
    return 1;
  int dlo = q0 - k1, dhi = q1 - k0;
  if (causal && dlo < 0)
    dlo = 0;
  switch (p->kind) {
  case RT_SPARSE_LOCAL:
  case RT_SPARSE_STRIDED: {
    int w = p->kind == RT_SPARSE_LOCAL ? p->window : p->stride;
    if (dlo <= w - 1 && dhi >= -(w - 1))
      return 1; /* some |d| < w */
    if (p->kind == RT_SPARSE_LOCAL)
      return 0;
    return floordiv(dhi, p->stride) * p->stride >= dlo; /* a multiple of the stride in [dlo, dhi] */
  }
  case RT_SPARSE_FIXED: {
    int L = p->stride, c = p->summary;
    /* A1: a shared l-block m; with causal, if the highest shared m has no k <= q, no lower one has */
    int mlo = (q0 / L > k0 / L ? q0 / L : k0 / L), mhi = (q1 / L < k1 / L ? q1 / L : k1 / L);
    if (mlo <= mhi) {
      if (!causal)
        return 1;
      int kmin = k0 > mhi * L ? k0 : mhi * L, qmax = q1 < mhi * L + L - 1 ? q1 : mhi * L + L - 1;
      if (kmin <= qmax)
        return 1;
    }
    /* A2: a summary column k (k mod l >= l - c) in [k0, k1], and with causal k <= q1 */
    if (c <= 0)
      return 0;
    int kk1 = causal && q1 < k1 ? q1 : k1, r = k0 % L;
    int first = r >= L - c ? k0 : k0 + (L - c - r);
    return first <= kk1;
  }
  default:
    return 1;
  }
}

/* Every element with q in [q0,q1], k in [k0,k1] allowed (a sufficient test: 0 means "mask it"). */
static int sp_full(const RtSparsePattern *p, int causal, int q0, int q1, int k0, int k1) {
  if (causal && k1 > q0)
    return 0;
  if (k1 < p->global || (!causal && q1 < p->global))
    return 1;
  switch (p->kind) {
  case RT_SPARSE_LOCAL:
  case RT_SPARSE_STRIDED: {
    int w = p->kind == RT_SPARSE_LOCAL ? p->window : p->stride;
    return q1 - k0 <= w - 1 && q0 - k1 >= -(w - 1);
  }
  case RT_SPARSE_FIXED: {
    int L = p->stride, c = p->summary;
    if (q0 / L == q1 / L && q1 / L == k0 / L && k0 / L == k1 / L)
      return 1;
    return k0 / L == k1 / L && k0 % L >= L - c;
  }
  default:
    return 1;
  }
}

int rt_sparse_key_blocks(const RtSparsePattern *p, int causal, int T, int qb, int *kb, unsigned char *full) {
  int bs = p->block, q0 = qb * bs, q1 = q0 + bs - 1 < T - 1 ? q0 + bs - 1 : T - 1, n = 0;
  int nb = (T + bs - 1) / bs;
  for (int j = 0; j < nb; j++) {
    int k0 = j * bs, k1 = k0 + bs - 1 < T - 1 ? k0 + bs - 1 : T - 1;
    if (!sp_any(p, causal, q0, q1, k0, k1))
      continue;
    if (full)
      full[n] = (unsigned char)sp_full(p, causal, q0, q1, k0, k1);
    kb[n++] = j;
  }
  return n;
}

/* The largest key-block count of any query block (the backward's panel width, in blocks). */
static int sp_max_blocks(const RtSparsePattern *p, int causal, int T) {
  int bs = p->block, nb = (T + bs - 1) / bs, mx = 1;
  for (int qb = 0; qb < nb; qb++) {
    int q0 = qb * bs, q1 = q0 + bs - 1 < T - 1 ? q0 + bs - 1 : T - 1, n = 0;
    for (int j = 0; j < nb; j++)
      n += sp_any(p, causal, q0, q1, j * bs, j * bs + bs - 1 < T - 1 ? j * bs + bs - 1 : T - 1);
    mx = n > mx ? n : mx;
  }
  return mx;
}

/* Scale row s (n) and mask it: masked entries become -inf. */
static void sp_scale_mask(float *s, int n, float scale, int masked, const RtSparsePattern *p, int causal, int q,
                          int k0) {
  if (!masked) {
    for (int j = 0; j < n; j++)
      s[j] *= scale;
    return;
  }
  if (!causal && q < p->global) { /* a global query sees every key */
    for (int j = 0; j < n; j++)
      s[j] *= scale;
    return;
  }
  /* the kind's test hoisted out of the loop; local is an interval of keys (vectorises) */
  int G = p->global, kmax = causal ? q : INT_MAX;
  switch (p->kind) {
  case RT_SPARSE_LOCAL: {
    int lo = q - p->window + 1, hi = causal ? q : q + p->window - 1;
    for (int j = 0; j < n; j++) {
      int k = k0 + j;
      s[j] = k <= kmax && (k < G || (k >= lo && k <= hi)) ? s[j] * scale : -INFINITY;
    }
    return;
  }
  case RT_SPARSE_DENSE:
    for (int j = 0; j < n; j++)
      s[j] = k0 + j <= kmax ? s[j] * scale : -INFINITY;
    return;
  default:
    for (int j = 0; j < n; j++)
      s[j] = sp_allowed(p, causal, q, k0 + j) ? s[j] * scale : -INFINITY;
  }
}

/* ---- forward -------------------------------------------------------------------------------- */

/* Per task: S (bs,bs), O (bs,hd), m, l (bs), the block list (nb ints) and full flags (nb bytes). */
static size_t sp_slice(int T, int hd, int bs) {
  size_t nb = (size_t)((T > 0 ? T : 1) + bs - 1) / (size_t)bs;
  return rt_slice_floats((size_t)bs * bs + (size_t)bs * hd + 2 * (size_t)bs + nb + (nb + 3) / 4);
}

size_t rt_attention_sparse_scratch_floats(int T, int C, int n_head, const RtSparsePattern *p) {
  return sp_slice(T, C / n_head, p->block) * (size_t)rt_threads();
}

typedef struct SpCtx {
  float *out;
  const float *qkv;
  const float *dy; /* backward only */
  float *dqkv;     /* backward only */
  int T, C, n_head, hd, causal, nqb;
  const RtSparsePattern *p;
  float scale;
  float *scratch;
  size_t slice, panel; /* backward: floats of one panel (P or dP) */
  atomic_int next_slot;
} SpCtx;

static void sp_tasks(void *ctx, int lo, int hi) {
  SpCtx *a = ctx;
  int slot = atomic_fetch_add_explicit(&a->next_slot, 1, memory_order_relaxed);
  const RtSparsePattern *p = a->p;
  int C = a->C, T = a->T, hd = a->hd, bs = p->block, causal = a->causal, ld = 3 * C;
  int nb = (T + bs - 1) / bs;
  float *S = a->scratch + (size_t)slot * a->slice;
  float *O = S + (size_t)bs * bs, *m = O + (size_t)bs * hd, *l = m + bs;
  int *kb = (int *)(l + bs);
  unsigned char *full = (unsigned char *)(kb + nb);
  for (int task = lo; task < hi; task++) {
    int bh = task / a->nqb, qb = task % a->nqb, b = bh / a->n_head, h = bh % a->n_head;
    const float *q = a->qkv + (size_t)b * T * ld + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
    int q0 = qb * bs, nq = T - q0 < bs ? T - q0 : bs;
    int n = rt_sparse_key_blocks(p, causal, T, qb, kb, full);
    memset(O, 0, (size_t)nq * hd * sizeof(float));
    for (int i = 0; i < nq; i++)
      m[i] = -INFINITY, l[i] = 0.0f;
    for (int j = 0; j < n; j++) {
      int k0 = kb[j] * bs, nk = T - k0 < bs ? T - k0 : bs;
      rt_gemm(0, 1, nq, nk, hd, RT_DT_F32, q + (size_t)q0 * ld, ld, RT_DT_F32, k + (size_t)k0 * ld, ld, 0.0f, S, nk);
      for (int i = 0; i < nq; i++) {
        float *s = S + (size_t)i * nk;
        sp_scale_mask(s, nk, a->scale, !full[j], p, causal, q0 + i, k0);
        float mx = m[i];
        for (int jj = 0; jj < nk; jj++)
          mx = s[jj] > mx ? s[jj] : mx;
        if (mx == -INFINITY) { /* nothing allowed yet: P row 0, m, l, O unchanged */
          memset(s, 0, (size_t)nk * sizeof(float));
          continue;
        }
        float alpha = expf(m[i] - mx); /* 0 while m = -inf */
        float sum = rt_exp_row(s, s, nk, mx); /* masked: rt_expf(-inf) is exactly 0 */
        l[i] = l[i] * alpha + sum;
        m[i] = mx;
        if (alpha != 1.0f) {
          float *orow = O + (size_t)i * hd;
          for (int d = 0; d < hd; d++)
            orow[d] *= alpha;
        }
      }
      rt_gemm(0, 0, nq, hd, nk, RT_DT_F32, S, nk, RT_DT_F32, v + (size_t)k0 * ld, ld, 1.0f, O, hd);
    }
    for (int i = 0; i < nq; i++) {
      float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
      float *dst = a->out + ((size_t)b * T + q0 + i) * C + (size_t)h * hd;
      for (int d = 0; d < hd; d++)
        dst[d] = O[(size_t)i * hd + d] * inv;
    }
  }
}

void rt_attention_sparse(float *out, const float *qkv, int B, int T, int C, int n_head, int causal,
                         const RtSparsePattern *p, float *scratch) {
  if (B <= 0 || T <= 0)
    return;
  int hd = C / n_head, bs = p->block, nqb = (T + bs - 1) / bs;
  SpCtx a = {out, qkv, NULL, NULL, T, C, n_head, hd, causal, nqb, p, 1.0f / sqrtf((float)hd), scratch,
             sp_slice(T, hd, bs), 0, 0};
  /* a task is one query block: fewer than ~64K flops per chunk cost more in hand-off than they save */
  long per = 4L * bs * bs * hd;
  long g = 65536 / (per > 0 ? per : 1);
  int ntask = B * n_head * nqb, grain = g < 1 ? 1 : g > ntask ? ntask : (int)g;
  rt_parallel_for(ntask, grain, sp_tasks, &a);
}

void rt_attention_sparse_ref(float *out, const float *qkv, int B, int T, int C, int n_head, int causal,
                             const RtSparsePattern *p) {
  int hd = C / n_head;
  double scale = 1.0 / sqrt((double)hd);
  double *w = malloc((size_t)(T > 0 ? T : 1) * sizeof(double)); /* test-only twin: allocation is fine */
  if (!w)
    return;
  size_t ld = 3 * (size_t)C;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++)
      for (int t = 0; t < T; t++) {
        const float *q = qkv + ((size_t)b * T + t) * ld + (size_t)h * hd;
        double mx = -INFINITY, sum = 0;
        for (int s = 0; s < T; s++) {
          w[s] = -INFINITY;
          if (!rt_sparse_allowed(p, causal, t, s))
            continue;
          const float *k = qkv + ((size_t)b * T + s) * ld + C + (size_t)h * hd;
          double d = 0;
          for (int i = 0; i < hd; i++)
            d += (double)q[i] * k[i];
          w[s] = d * scale;
          mx = w[s] > mx ? w[s] : mx;
        }
        for (int s = 0; s < T; s++)
          sum += (w[s] = w[s] == -INFINITY ? 0.0 : exp(w[s] - mx));
        for (int i = 0; i < hd; i++) {
          double acc = 0;
          for (int s = 0; s < T; s++)
            acc += w[s] * qkv[((size_t)b * T + s) * ld + 2 * (size_t)C + (size_t)h * hd + i];
          out[((size_t)b * T + t) * C + (size_t)h * hd + i] = (float)(sum > 0 ? acc / sum : 0.0);
        }
      }
  free(w);
}

/* ---- backward ------------------------------------------------------------------------------- */

/* Per task: panels P and dP (bs rows x the widest query block's key blocks), the list, the flags. */
static size_t sp_dx_panel(const RtSparsePattern *p, int causal, int T) {
  return rt_slice_floats((size_t)p->block * (size_t)p->block * (size_t)sp_max_blocks(p, causal, T));
}

static size_t sp_dx_slice(size_t panel, int T, int bs) {
  size_t nb = (size_t)((T > 0 ? T : 1) + bs - 1) / (size_t)bs;
  return 2 * panel + rt_slice_floats(nb + (nb + 3) / 4);
}

size_t rt_attention_sparse_dx_scratch_floats(int T, int C, int n_head, const RtSparsePattern *p) {
  (void)C, (void)n_head;
  size_t panel = sp_dx_panel(p, 0, T > 0 ? T : 1); /* bidirectional lists are supersets of causal */
  return sp_dx_slice(panel, T, p->block) * (size_t)rt_threads();
}

static void sp_dx_tasks(void *ctx, int lo, int hi) {
  SpCtx *a = ctx;
  int slot = atomic_fetch_add_explicit(&a->next_slot, 1, memory_order_relaxed);
  const RtSparsePattern *p = a->p;
  int C = a->C, T = a->T, hd = a->hd, bs = p->block, causal = a->causal, ld = 3 * C;
  int nb = (T + bs - 1) / bs;
  float *P = a->scratch + (size_t)slot * a->slice, *dP = P + a->panel;
  int *kb = (int *)(dP + a->panel);
  unsigned char *full = (unsigned char *)(kb + nb);
  float scale = a->scale;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    size_t off = (size_t)b * T * ld + (size_t)h * hd;
    const float *q = a->qkv + off, *k = q + C, *v = q + 2 * C;
    float *dq = a->dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
    const float *dO = a->dy + (size_t)b * T * C + (size_t)h * hd;
    for (int t = 0; t < T; t++) {
      memset(dk + (size_t)t * ld, 0, (size_t)hd * sizeof(float));
      memset(dv + (size_t)t * ld, 0, (size_t)hd * sizeof(float));
    }
    for (int qb = 0; qb < nb; qb++) {
      int q0 = qb * bs, nq = T - q0 < bs ? T - q0 : bs;
      int n = rt_sparse_key_blocks(p, causal, T, qb, kb, full), W = n * bs;
      if (n == 0) { /* not for a valid pattern; keep dQ defined */
        for (int i = 0; i < nq; i++)
          memset(dq + (size_t)(q0 + i) * ld, 0, (size_t)hd * sizeof(float));
        continue;
      }
      /* the panel: block j in columns j*bs .. j*bs+nk-1 (a partial last block leaves columns unused) */
      for (int j = 0; j < n; j++) {
        int k0 = kb[j] * bs, nk = T - k0 < bs ? T - k0 : bs;
        rt_gemm(0, 1, nq, nk, hd, RT_DT_F32, q + (size_t)q0 * ld, ld, RT_DT_F32, k + (size_t)k0 * ld, ld, 0.0f,
                P + (size_t)j * bs, W);
        rt_gemm(0, 1, nq, nk, hd, RT_DT_F32, dO + (size_t)q0 * C, C, RT_DT_F32, v + (size_t)k0 * ld, ld, 0.0f,
                dP + (size_t)j * bs, W);
      }
      for (int i = 0; i < nq; i++) {
        float *pr = P + (size_t)i * W, *dpr = dP + (size_t)i * W;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) {
          int k0 = kb[j] * bs, nk = T - k0 < bs ? T - k0 : bs;
          float *s = pr + (size_t)j * bs;
          sp_scale_mask(s, nk, scale, !full[j], p, causal, q0 + i, k0);
          for (int c = nk; c < bs; c++)
            s[c] = -INFINITY;
          for (int c = 0; c < nk; c++)
            mx = s[c] > mx ? s[c] : mx;
        }
        if (mx == -INFINITY) { /* no allowed key: P = dS = 0 */
          memset(pr, 0, (size_t)W * sizeof(float));
          memset(dpr, 0, (size_t)W * sizeof(float));
          continue;
        }
        float inv = 1.0f / rt_exp_row(pr, pr, W, mx); /* masked and unused columns: 0 */
        float acc[8] = {0}, tail = 0.0f;
        int j = 0;
        for (; j + 8 <= W; j += 8)
          for (int u = 0; u < 8; u++) {
            float pj = pr[j + u] * inv;
            pr[j + u] = pj;
            acc[u] += pj * (pj != 0.0f ? dpr[j + u] : 0.0f); /* unused columns hold garbage in dP */
          }
        for (; j < W; j++) {
          float pj = pr[j] * inv;
          pr[j] = pj;
          tail += pj * (pj != 0.0f ? dpr[j] : 0.0f);
        }
        float D = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
        for (j = 0; j < W; j++) /* dS, times the scale both of its products below apply; 0 where P is */
          dpr[j] = pr[j] != 0.0f ? pr[j] * (dpr[j] - D) * scale : 0.0f;
      }
      for (int j = 0; j < n; j++) {
        int k0 = kb[j] * bs, nk = T - k0 < bs ? T - k0 : bs;
        rt_gemm(1, 0, nk, hd, nq, RT_DT_F32, P + (size_t)j * bs, W, RT_DT_F32, dO + (size_t)q0 * C, C, 1.0f,
                dv + (size_t)k0 * ld, ld);
        rt_gemm(0, 0, nq, hd, nk, RT_DT_F32, dP + (size_t)j * bs, W, RT_DT_F32, k + (size_t)k0 * ld, ld,
                j ? 1.0f : 0.0f, dq + (size_t)q0 * ld, ld);
        rt_gemm(1, 0, nk, hd, nq, RT_DT_F32, dP + (size_t)j * bs, W, RT_DT_F32, q + (size_t)q0 * ld, ld, 1.0f,
                dk + (size_t)k0 * ld, ld);
      }
    }
  }
}

void rt_attention_sparse_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                            int causal, const RtSparsePattern *p, float *scratch) {
  if (B <= 0 || T <= 0)
    return;
  int hd = C / n_head, bs = p->block;
  size_t panel = sp_dx_panel(p, 0, T); /* the scratch function's choice: the bidirectional widest */
  SpCtx a = {NULL, qkv, dy, dqkv, T, C, n_head, hd, causal, 0, p, 1.0f / sqrtf((float)hd), scratch,
             sp_dx_slice(panel, T, bs), panel, 0};
  int grain = T >= 16 ? 1 : B * n_head;
  rt_parallel_for(B * n_head, grain, sp_dx_tasks, &a);
}

void rt_attention_sparse_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                                int causal, const RtSparsePattern *p) {
  int hd = C / n_head;
  double scale = 1.0 / sqrt((double)hd);
  size_t TT = (size_t)(T > 0 ? T : 1) * (size_t)(T > 0 ? T : 1);
  /* test-only twin: allocation is fine. P, dS (T,T); O, dQ, dK, dV (T,hd) */
  double *P = malloc(TT * sizeof(double)), *dS = malloc(TT * sizeof(double));
  double *O = malloc((size_t)(T > 0 ? T : 1) * hd * 4 * sizeof(double));
  if (!P || !dS || !O) {
    free(P), free(dS), free(O);
    return;
  }
  double *dQ = O + (size_t)T * hd, *dK = dQ + (size_t)T * hd, *dV = dK + (size_t)T * hd;
  size_t ld = 3 * (size_t)C;
#define Q_(t, i) ((double)qkv[((size_t)b * T + (t)) * ld + (size_t)h * hd + (i)])
#define K_(t, i) ((double)qkv[((size_t)b * T + (t)) * ld + C + (size_t)h * hd + (i)])
#define V_(t, i) ((double)qkv[((size_t)b * T + (t)) * ld + 2 * (size_t)C + (size_t)h * hd + (i)])
#define DO_(t, i) ((double)dy[((size_t)b * T + (t)) * C + (size_t)h * hd + (i)])
  for (int b = 0; b < B; b++)
    for (int h = 0; h < n_head; h++) {
      /* forward: P (masked entries 0) and O = P V */
      for (int t = 0; t < T; t++) {
        double *pr = P + (size_t)t * T, mx = -INFINITY, sum = 0;
        for (int s = 0; s < T; s++) {
          pr[s] = -INFINITY;
          if (!rt_sparse_allowed(p, causal, t, s))
            continue;
          double d = 0;
          for (int i = 0; i < hd; i++)
            d += Q_(t, i) * K_(s, i);
          pr[s] = d * scale;
          mx = pr[s] > mx ? pr[s] : mx;
        }
        for (int s = 0; s < T; s++)
          sum += (pr[s] = pr[s] == -INFINITY ? 0.0 : exp(pr[s] - mx));
        for (int s = 0; s < T; s++)
          pr[s] = sum > 0 ? pr[s] / sum : 0.0;
        for (int i = 0; i < hd; i++) {
          double acc = 0;
          for (int s = 0; s < T; s++)
            acc += pr[s] * V_(s, i);
          O[(size_t)t * hd + i] = acc;
        }
      }
      /* dS = P o (dO V^T - rowsum(dO o O)) */
      for (int t = 0; t < T; t++) {
        double D = 0;
        for (int i = 0; i < hd; i++)
          D += DO_(t, i) * O[(size_t)t * hd + i];
        for (int s = 0; s < T; s++) {
          double dp = 0;
          for (int i = 0; i < hd; i++)
            dp += DO_(t, i) * V_(s, i);
          dS[(size_t)t * T + s] = P[(size_t)t * T + s] * (dp - D);
        }
      }
      /* dV = P^T dO, dQ = scale dS K, dK = scale dS^T Q */
      for (int s = 0; s < T; s++)
        for (int i = 0; i < hd; i++) {
          double vv = 0, kk = 0, qq = 0;
          for (int t = 0; t < T; t++) {
            vv += P[(size_t)t * T + s] * DO_(t, i);
            kk += dS[(size_t)t * T + s] * Q_(t, i);
            qq += dS[(size_t)s * T + t] * K_(t, i);
          }
          dV[(size_t)s * hd + i] = vv;
          dK[(size_t)s * hd + i] = kk * scale;
          dQ[(size_t)s * hd + i] = qq * scale;
        }
      for (int t = 0; t < T; t++)
        for (int i = 0; i < hd; i++) {
          float *row = dqkv + ((size_t)b * T + t) * ld + (size_t)h * hd + i;
          row[0] = (float)dQ[(size_t)t * hd + i];
          row[C] = (float)dK[(size_t)t * hd + i];
          row[2 * C] = (float)dV[(size_t)t * hd + i];
        }
    }
#undef Q_
#undef K_
#undef V_
#undef DO_
  free(P), free(dS), free(O);
}

/* ---- attention with a KV cache under a pattern ---------------------------------------------- *
 * The cache holds ncache positions per batch row. Position p lives at slot p while p < ncache; a
 * local pattern's cache may be a ring (ncache < the positions decoded, docs/runtime.md): the
 * global tokens keep slots 0..G-1, the others share the rest, position p at G + (p - G) mod
 * (ncache - G). A query at q sees at most the window's keys q-window+1..q besides the global ones,
 * and ncache >= window + G, so every key a query needs is still in the cache (the new tokens' keys
 * are read from qkv itself and written to the cache after the step's queries). */

static inline int sp_slot(int pos, int ncache, int G) {
  return pos < ncache ? pos : G + (pos - G) % (ncache - G);
}

typedef struct SpKvCtx {
  float *out;
  const float *qkv;
  float *kcache, *vcache;
  int nt, t0, ncache, C, n_head, hd, causal;
  const RtSparsePattern *p;
  float scale;
  float *scratch;
  size_t slice;
  atomic_int next_slot;
} SpKvCtx;

static float sp_dot(const float *a, const float *b, int n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4)
    s0 += a[i] * b[i], s1 += a[i + 1] * b[i + 1], s2 += a[i + 2] * b[i + 2], s3 += a[i + 3] * b[i + 3];
  for (; i < n; i++)
    s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

/* tasks are (b, h): the head's queries of the step, then its columns of the new cache rows */
static void sp_kv_tasks(void *ctx, int lo, int hi) {
  SpKvCtx *a = ctx;
  int slot = atomic_fetch_add_explicit(&a->next_slot, 1, memory_order_relaxed);
  float *s = a->scratch + (size_t)slot * a->slice;
  int *pos = (int *)(s + a->slice / 2);
  const RtSparsePattern *p = a->p;
  int C = a->C, hd = a->hd, nt = a->nt, t0 = a->t0, G = p->global, ld = 3 * C;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    const float *rows = a->qkv + (size_t)b * nt * ld + (size_t)h * hd;
    float *kc = a->kcache + (size_t)b * a->ncache * C + (size_t)h * hd;
    float *vc = a->vcache + (size_t)b * a->ncache * C + (size_t)h * hd;
    for (int i = 0; i < nt; i++) {
      int q = t0 + i, n = 0;
      /* the keys q sees (causal: k <= q), ascending: global ones, then the pattern's */
      int lo_k = p->kind == RT_SPARSE_LOCAL ? q - p->window + 1 : 0;
      for (int k = 0; k <= q; k++) {
        if (k >= G && k < lo_k) {
          k = lo_k - 1;
          continue;
        }
        if (sp_allowed(p, 1, q, k)) pos[n++] = k;
      }
      const float *qv = rows + (size_t)i * ld;
      float mx = -INFINITY;
      for (int j = 0; j < n; j++) {
        int k = pos[j];
        const float *kv = k >= t0 ? rows + (size_t)(k - t0) * ld + C : kc + (size_t)sp_slot(k, a->ncache, G) * C;
        s[j] = sp_dot(qv, kv, hd) * a->scale;
        mx = s[j] > mx ? s[j] : mx;
      }
      float inv = 1.0f / rt_exp_row(s, s, n, mx);
      float *o = a->out + ((size_t)b * nt + i) * C + (size_t)h * hd;
      memset(o, 0, (size_t)hd * sizeof(float));
      for (int j = 0; j < n; j++) {
        int k = pos[j];
        const float *vv = k >= t0 ? rows + (size_t)(k - t0) * ld + 2 * C : vc + (size_t)sp_slot(k, a->ncache, G) * C;
        float w = s[j] * inv;
        for (int d = 0; d < hd; d++)
          o[d] += w * vv[d];
      }
    }
    for (int i = 0; i < nt; i++) {
      int sl = sp_slot(t0 + i, a->ncache, G);
      memcpy(kc + (size_t)sl * C, rows + (size_t)i * ld + C, (size_t)hd * sizeof(float));
      memcpy(vc + (size_t)sl * C, rows + (size_t)i * ld + 2 * C, (size_t)hd * sizeof(float));
    }
  }
}

/* The keys one query can see: at most every cached position and the step's new ones. */
static size_t sp_kv_slice(int T, int ncache) {
  int n = (T > ncache ? T : ncache) + 1;
  return 2 * rt_slice_floats((size_t)n);
}

size_t rt_attention_sparse_kv_scratch_floats(int T, int ncache, int C, int n_head, const RtSparsePattern *p) {
  size_t a = rt_attention_sparse_scratch_floats(T, C, n_head, p), b = sp_kv_slice(T, ncache) * (size_t)rt_threads();
  return a > b ? a : b;
}

void rt_attention_sparse_kv(float *out, const float *qkv, float *kcache, float *vcache, int B, int nt, int t0,
                            int ncache, int C, int n_head, const RtSparsePattern *p, int T, float *scratch) {
  if (B <= 0 || nt <= 0)
    return;
  int hd = C / n_head;
  if (t0 == 0) {
    /* prefill: the block-sparse kernel over the new tokens, then their k, v into the cache */
    rt_attention_sparse(out, qkv, B, nt, C, n_head, 1, p, scratch);
    for (int b = 0; b < B; b++)
      for (int t = 0; t < nt; t++) {
        const float *row = qkv + ((size_t)b * nt + t) * 3 * C;
        size_t at = ((size_t)b * ncache + (size_t)sp_slot(t, ncache, p->global)) * C;
        memcpy(kcache + at, row + C, (size_t)C * sizeof(float));
        memcpy(vcache + at, row + 2 * C, (size_t)C * sizeof(float));
      }
    return;
  }
  SpKvCtx a = {out, qkv, kcache, vcache, nt, t0, ncache, C, n_head, hd, 1, p, 1.0f / sqrtf((float)hd), scratch,
               sp_kv_slice(T, ncache), 0};
  long per = 2L * nt * (p->kind == RT_SPARSE_LOCAL ? p->window + p->global : t0 + nt) * hd;
  long g = 16384 / (per > 0 ? per : 1);
  int grain = g < 1 ? 1 : g > B * n_head ? B * n_head : (int)g;
  rt_parallel_for(B * n_head, grain, sp_kv_tasks, &a);
}

/* ---- the entry points generated code calls (kernels.def): the pattern as its ints ------------ */

static RtSparsePattern sp_of(int kind, int block, int window, int stride, int summary, int global) {
  return (RtSparsePattern){kind, block, window, stride, summary, global};
}

size_t rt_attention_bs_scratch_floats(int T, int C, int n_head, int kind, int block, int window, int stride,
                                      int summary, int global) {
  RtSparsePattern p = sp_of(kind, block, window, stride, summary, global);
  return rt_attention_sparse_scratch_floats(T, C, n_head, &p);
}

void rt_attention_bs(float *out, const float *qkv, int B, int T, int C, int n_head, int causal, int kind, int block,
                     int window, int stride, int summary, int global, float *scratch) {
  RtSparsePattern p = sp_of(kind, block, window, stride, summary, global);
  rt_attention_sparse(out, qkv, B, T, C, n_head, causal, &p, scratch);
}

size_t rt_attention_bs_kv_scratch_floats(int T, int ncache, int C, int n_head, int kind, int block, int window,
                                         int stride, int summary, int global) {
  RtSparsePattern p = sp_of(kind, block, window, stride, summary, global);
  return rt_attention_sparse_kv_scratch_floats(T, ncache, C, n_head, &p);
}

void rt_attention_bs_kv(float *out, const float *qkv, float *kcache, float *vcache, int B, int nt, int t0, int T,
                        int ncache, int C, int n_head, int kind, int block, int window, int stride, int summary,
                        int global, float *scratch) {
  RtSparsePattern p = sp_of(kind, block, window, stride, summary, global);
  rt_attention_sparse_kv(out, qkv, kcache, vcache, B, nt, t0, ncache, C, n_head, &p, T, scratch);
}

size_t rt_attention_bs_dx_scratch_floats(int T, int C, int n_head, int kind, int block, int window, int stride,
                                         int summary, int global) {
  RtSparsePattern p = sp_of(kind, block, window, stride, summary, global);
  return rt_attention_sparse_dx_scratch_floats(T, C, n_head, &p);
}

void rt_attention_bs_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head, int causal,
                        int kind, int block, int window, int stride, int summary, int global, float *scratch) {
  RtSparsePattern p = sp_of(kind, block, window, stride, summary, global);
  rt_attention_sparse_dx(dqkv, qkv, dy, B, T, C, n_head, causal, &p, scratch);
}
