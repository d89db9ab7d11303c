/* attention_sparse.c: block-sparse multi-head self-attention (issue 13, the runtime half).
 *
 * The pattern (RtSparsePattern, modelc_rt.h) is an element mask rt_sparse_allowed(q, k). The
 * kernels never form a T x T matrix and never test an element they do not compute: per query tile
 * (p->block queries) they multiply only a few contiguous runs of keys, and mask within those by
 * intervals per row ("the kernels' plan" below has the details).
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
 * rt_attention_sparse: tasks (batch, head); strided's stride columns scored per residue class
 * first; per tile one panel of S = (scale Q) K^T over its segments (rt_gemm, k, v read in place
 * from the (B,T,3C) buffer, leading dimension 3C, the tile's queries scaled into a copy) and its
 * rows' stride columns, the exact softmax of each row (the panel holds every key of the row), over
 * the allowed runs the masks record, O = P V per segment into the output rows, and per class after
 * the tiles.
 *
 * rt_attention_sparse_dx: tasks (batch, head) (dK and dV of a head accumulate over its tiles, so
 * one task owns them: thread-count independent). Nothing is recomputed from the forward: per tile
 * the panel again, P = its softmax, dP = dO V^T, D = rowsum(P o dP) (= rowsum(dO o O)), dS = P o
 * (dP - D), dV += P^T dO, dQ += scale dS K, dK += scale dS^T Q (five GEMMs per segment, as
 * rt_attention_dx per key block); strided's classes the same after the tiles; the gathered summary
 * columns' dK, dV added back to their rows at the end. */
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

/* ---- the kernels' plan: segments of keys per query tile ---------------------------------------- *
 * Queries go in tiles of p->block rows. A tile's keys are a few segments, each a contiguous run of
 * rows of K and V (in place, leading dimension 3C) or of a gathered copy, every allowed key of the
 * tile's queries in exactly one segment, except the strided pattern's stride columns, which are
 * scored per residue class (below):
 *   MAIN     the band around the tile: local and strided keys with |q - k| < window (stride), fixed
 *            the tile's own l-blocks; allowed there: that rule or a global key (k < G)
 *   GLOBAL   keys [0, min(G, MAIN's first)): the global tokens before the band
 *   SUMMARY  fixed: the summary columns (k mod l >= l - c), gathered once per head into Ks, Vs
 *            (rows in position order); allowed: another l-block than the query's (causal: an earlier
 *            one) and k >= G (a global one is the other segments')
 *   ALL      bidirectional, a tile holding a global query (q < G sees every key): keys [0, T) with
 *            the whole pattern's mask (these tiles' rows take no stride columns)
 * Within a segment each query row's allowed keys are one or two intervals of its columns, so the
 * mask is a few vectorised loops, not a test per element (ALL alone tests each element: one or two
 * tiles). The tile's panel holds its segments side by side: S = Q K^T per segment (one GEMM each),
 * masked and scaled, then the rows' stride columns (below), the exact softmax of each whole row,
 * then O = sum over segments of P V (one GEMM each, accumulated in the output rows).
 * Strided's stride columns (|q - k| >= l, (q - k) mod l == 0, k >= G: the global ones are the
 * other segments') are not contiguous for a tile: row q's are the keys of its residue class
 * r = q mod l, positions r, r + l, r + 2l, ... They are scored per class (GEMMs over strided views:
 * the class's positions are rows of K, V, Q with leading dimension l * 3C), into one nc x nc block
 * per class (nc = ceil(T / l); rows the class's queries, columns its keys), before the tiles; each
 * tile's rows then take theirs into the panel after the segments, so the panel holds every key of
 * every row in every pattern: the softmax is exact in the panel and the backward needs nothing
 * from the forward (no recomputation). The rows' P (backward also dS) go back into the blocks, and
 * per class GEMMs finish O (dQ, dK, dV) after the tiles. The blocks are strided's scratch: l * nc^2
 * (about T^2 / l) floats, the pattern's stride pairs (twice in the backward: S and dP). */
enum { SEG_MAIN, SEG_GLOBAL, SEG_SUMMARY, SEG_ALL };
typedef struct Seg {
  int kind, k0, n; /* keys k0 .. k0+n-1: positions (MAIN, GLOBAL, ALL) or rows of Ks, Vs (SUMMARY) */
} Seg;

/* The per-head facts of a pattern at length T. */
typedef struct SpPlan {
  const RtSparsePattern *p;
  int T, causal, bs, G, w; /* w: local's window, strided's stride, dense T; fixed: l */
  int ns, ng;              /* fixed: summary positions (< T), and those < G */
  int qskip;               /* bidirectional with global tokens: queries below it are in ALL tiles */
  int nc;                  /* strided: the positions of the longest residue class, ceil(T / l) */
} SpPlan;

static SpPlan sp_plan(const RtSparsePattern *p, int T, int causal) {
  SpPlan s = {p, T, causal, p->block, p->global < T ? p->global : T, 0, 0, 0, 0, 0};
  s.w = p->kind == RT_SPARSE_LOCAL ? p->window : p->kind == RT_SPARSE_DENSE ? T : p->stride;
  if (p->kind == RT_SPARSE_STRIDED)
    s.nc = (T + s.w - 1) / s.w;
  if (p->kind == RT_SPARSE_FIXED && p->summary > 0)
    for (int k = 0; k < T; k++)
      if (k % p->stride >= p->stride - p->summary)
        s.ns++, s.ng += k < s.G;
  if (!causal && s.G > 0)
    s.qskip = (s.G + s.bs - 1) / s.bs * s.bs;
  return s;
}

/* The summary rows (of Ks) of the fixed l-blocks before block b: positions < b * l. */
static int sp_sum_before(const SpPlan *s, int b) {
  int L = s->p->stride, c = s->p->summary, full = b * L < s->T ? b : s->T / L;
  int n = full * c, rest = (b * L < s->T ? b * L : s->T) - full * L; /* a partial last block */
  return n + (rest > L - c ? rest - (L - c) : 0);
}
/* The position of summary row j. */
static int sp_sum_pos(const SpPlan *s, int j) {
  int c = s->p->summary;
  return j / c * s->p->stride + (s->p->stride - c) + j % c;
}

/* n rounded up to a multiple of r, at most cap. */
static int sp_round(int n, int r, int cap) {
  n = (n + r - 1) / r * r;
  return n < cap ? n : cap;
}

/* MAIN: query q's allowed columns of the segment are two intervals, [iv[0], iv[1]) the band
 * (local, strided: |q - k| < window; fixed: q's own l-block), [iv[2], iv[3]) the global keys, k <= q
 * when causal; not clipped to the segment. */
static void sp_main_ivals(const SpPlan *s, const Seg *g, int q, int iv[4]) {
  int kmax = s->causal ? q : s->T - 1, lo, hi; /* positions allowed: <= kmax */
  if (s->p->kind == RT_SPARSE_FIXED)
    lo = q / s->w * s->w, hi = lo + s->w - 1;
  else
    lo = q - s->w + 1, hi = q + s->w - 1;
  hi = hi < kmax ? hi : kmax;
  iv[0] = lo - g->k0, iv[1] = hi + 1 - g->k0;
  iv[2] = -g->k0, iv[3] = (s->G < kmax + 1 ? s->G : kmax + 1) - g->k0;
}

/* The segments of the tile of queries q0..q1; returns their number (at most 3). */
static int sp_segments(const SpPlan *s, int q0, int q1, Seg *seg) {
  int T = s->T, n = 0, lo, hi;
  if (q0 < s->qskip) {
    seg[0] = (Seg){SEG_ALL, 0, T};
    return 1;
  }
  if (s->p->kind == RT_SPARSE_FIXED) {
    int L = s->w;
    lo = q0 / L * L;
    hi = s->causal ? q1 : (q1 / L * L + L - 1 < T - 1 ? q1 / L * L + L - 1 : T - 1);
  } else {
    lo = q0 - s->w + 1 > 0 ? q0 - s->w + 1 : 0;
    hi = s->causal ? q1 : (q1 + s->w - 1 < T - 1 ? q1 + s->w - 1 : T - 1);
  }
  /* Widths rounded up to a multiple of the tile (the band moved back where it would pass T; the
   * extra keys are masked), so that the products have a few shapes only: the GEMM layer keeps
   * one oneDNN primitive per shape, in a bounded cache */
  int wn = sp_round(hi - lo + 1, s->bs, T);
  lo = lo + wn > T ? T - wn : lo;
  seg[n++] = (Seg){SEG_MAIN, lo, wn};
  if (s->G > 0 && lo > 0)
    seg[n++] = (Seg){SEG_GLOBAL, 0, s->G < lo ? s->G : lo};
  if (s->ns > s->ng) {
    int step = sp_round((s->ns + 7) / 8, s->bs, INT_MAX); /* at most 8 widths, multiples of the tile */
    int end = s->causal ? sp_round(sp_sum_before(s, q1 / s->w), step, s->ns) : s->ns;
    if (end > s->ng)
      seg[n++] = (Seg){SEG_SUMMARY, s->ng, end - s->ng};
  }
  return n;
}

/* Strided: row q (query i of class r) sees the class's keys j in [*j0, *j1) but j = i (the band's). */
static void sp_stride_cols(const SpPlan *s, int q, int *i, int *j0, int *j1) {
  int L = s->w, r = q % L;
  *i = q / L;
  *j0 = s->G > r ? (s->G - r + L - 1) / L : 0;
  *j1 = s->causal ? *i : (s->T - r + L - 1) / L;
  if (*j1 < *j0)
    *j1 = *j0;
}

/* Strided's per-class work in chunks of bs queries: class r, its queries i0..i0+nq-1 (the first at
 * position row0), keys 0..nk-1 (causal: those before the chunk's last query, rounded to the tile).
 * SP_FOR_CHUNKS(s, c) visits every chunk with keys (none but for strided): the one place of the
 * walk, which the score, forward and backward loops share. */
typedef struct SpChunk {
  int r, i0, nq, nk, row0;
} SpChunk;
static int sp_chunk_next(const SpPlan *s, SpChunk *c) {
  int L = s->w;
  if (!s->nc)
    return 0;
  if (c->nq == 0)
    c->r = 0, c->i0 = 0;
  else
    c->i0 += s->bs;
  for (; c->r < L && c->r < s->T; c->r++, c->i0 = 0) {
    int nc = (s->T - c->r + L - 1) / L;
    for (; c->i0 < nc; c->i0 += s->bs) {
      c->nq = nc - c->i0 < s->bs ? nc - c->i0 : s->bs;
      c->nk = s->causal ? sp_round(c->i0 + c->nq - 1, s->bs, nc) : nc;
      c->row0 = c->r + c->i0 * L;
      if (c->nk)
        return 1;
    }
  }
  return 0;
}
#define SP_FOR_CHUNKS(s, c) for (SpChunk c = {0}; sp_chunk_next(s, &c);)

/* The widest panel any tile needs (the scratch's): its segments' and the stride columns. */
static int sp_panel_width(const SpPlan *s) {
  int mx = s->qskip > 0 ? s->T : 1;
  for (int q0 = s->qskip; q0 < s->T; q0 += s->bs) {
    Seg seg[3];
    int n = sp_segments(s, q0, q0 + s->bs - 1 < s->T - 1 ? q0 + s->bs - 1 : s->T - 1, seg), w = 0;
    for (int i = 0; i < n; i++)
      w += seg[i].n;
    mx = w > mx ? w : mx;
  }
  return mx + s->nc;
}

/* The largest of x[0..n) (-inf for n = 0). Eight lanes: no dependency chain through one max. */
static float sp_max(const float *x, int n) {
  float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int u = 0; u < 8; u++)
      m[u] = x[j + u] > m[u] ? x[j + u] : m[u];
  for (; j < n; j++)
    m[0] = x[j] > m[0] ? x[j] : m[0];
  float a = m[0] > m[4] ? m[0] : m[4], b = m[1] > m[5] ? m[1] : m[5], c = m[2] > m[6] ? m[2] : m[6],
        d = m[3] > m[7] ? m[3] : m[7];
  a = a > c ? a : c, b = b > d ? b : d;
  return a > b ? a : b;
}

/* y[0..n) = scale x[0..n); returns their largest (-inf for n = 0). */
static float sp_scale_max(float *y, const float *x, int n, float scale) {
  for (int j = 0; j < n; j++)
    y[j] = x[j] * scale;
  return sp_max(y, n);
}

/* The allowed runs of a panel row (columns [a, b) pairs, ascending), which the masks record as they
 * go: the softmax exponentiates just these and the masked columns are written 0 at once. A row
 * of an ALL tile, masked element by element, has n = -1 instead: its masked columns are -inf and
 * the softmax finds the runs itself (sp_exp_runs). At most SP_RUNS runs per row: MAIN and SUMMARY
 * two each, GLOBAL one, the stride columns two (a hole at the query's own class key). */
#define SP_RUNS 8
typedef struct SpRuns {
  int n, a[SP_RUNS], b[SP_RUNS];
} SpRuns;

static void sp_run_add(SpRuns *r, int a, int b) {
  if (b <= a)
    return;
  if (r->n > 0 && r->b[r->n - 1] == a) /* adjacent to the last: one longer run */
    r->b[r->n - 1] = b;
  else
    r->a[r->n] = a, r->b[r->n++] = b;
}

/* Keep s[a0..a1) and s[b0..b1) (columns of a row of n, scaled scores), 0 elsewhere, the runs
 * recorded at panel column c + a0 etc.; returns the largest kept value (-inf: none allowed). */
static float sp_mask2(float *s, int n, int a0, int a1, int b0, int b1, SpRuns *rr, int c) {
  a0 = a0 < 0 ? 0 : a0 > n ? n : a0, a1 = a1 > n ? n : a1;
  b0 = b0 < 0 ? 0 : b0 > n ? n : b0, b1 = b1 > n ? n : b1;
  if (a1 < a0)
    a1 = a0;
  if (b1 < b0)
    b1 = b0;
  if (b0 < a0) { /* order the two intervals */
    int t0 = a0, t1 = a1;
    a0 = b0, a1 = b1, b0 = t0, b1 = t1;
  }
  if (b0 < a1)
    b0 = a1; /* overlapping: the second starts where the first ends */
  if (b1 < b0)
    b1 = b0;
  memset(s, 0, (size_t)a0 * sizeof(float));
  float m1 = sp_max(s + a0, a1 - a0);
  memset(s + a1, 0, (size_t)(b0 - a1) * sizeof(float));
  float m2 = sp_max(s + b0, b1 - b0);
  memset(s + b1, 0, (size_t)(n - b1) * sizeof(float));
  sp_run_add(rr, c + a0, c + a1);
  sp_run_add(rr, c + b0, c + b1);
  return m1 > m2 ? m1 : m2;
}

/* The softmax's exponentials: e = exp(row - mx) in place over the row's allowed runs (the masked
 * columns are 0 already); returns the sum. Masked columns never go through an exponential: exp of
 * a large negative argument goes through subnormal intermediates, which cost the CPU a microcode
 * assist per element (the band's masked triangles were 40% of the forward's time when they went
 * through rt_exp_row), and finding the runs by scanning the row for -inf took a sixth of the
 * forward's time: the masks know them. An ALL tile's row (rr->n = -1) is scanned (sp_exp_runs). */
static float sp_exp_runs(float *row, int n, float mx);
static float sp_softmax_exp(float *row, int n, const SpRuns *rr, float mx) {
  if (rr->n < 0)
    return sp_exp_runs(row, n, mx);
  float sum = 0.0f;
  for (int i = 0; i < rr->n; i++)
    sum += rt_exp_row(row + rr->a[i], row + rr->a[i], rr->b[i] - rr->a[i], mx);
  return sum;
}

/* The end of the run from j of elements that are -inf (masked = 1) or are not (masked = 0): eight
 * at a time while a whole group agrees (the runs are long: a band's triangles, its middle). */
static int sp_run_end(const float *row, int j, int n, int masked) {
  while (j + 8 <= n) {
    int c = 0;
    for (int u = 0; u < 8; u++)
      c += row[j + u] == -INFINITY;
    if (c != (masked ? 8 : 0))
      break;
    j += 8;
  }
  while (j < n && (row[j] == -INFINITY) == masked)
    j++;
  return j;
}

/* exp over a row masked with -inf, the runs found by scanning (ALL tiles) */
static float sp_exp_runs(float *row, int n, float mx) {
  float sum = 0.0f;
  for (int j = 0; j < n;) {
    int e = sp_run_end(row, j, n, 1);
    memset(row + j, 0, (size_t)(e - j) * sizeof(float));
    j = e;
    if (j == n)
      break;
    e = sp_run_end(row, j, n, 0);
    sum += rt_exp_row(row + j, row + j, e - j, mx);
    j = e;
  }
  return sum;
}

static float sp_dot(const float *a, const float *b, int n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4)
    s0 += a[i] * b[i], s1 += a[i + 1] * b[i + 1], s2 += a[i + 2] * b[i + 2], s3 += a[i + 3] * b[i + 3];
  for (; i < n; i++)
    s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

/* Mask query q's row of segment g (row: its n columns of scaled scores, at panel column c; the
 * allowed runs into rr); returns the row's largest allowed score there. */
static float sp_mask_seg(const SpPlan *s, const Seg *g, int q, float *row, SpRuns *rr, int c) {
  const RtSparsePattern *p = s->p;
  int n = g->n, k0 = g->k0, G = s->G, kmax = s->causal ? q : s->T - 1; /* positions allowed: <= kmax */
  switch (g->kind) {
  case SEG_ALL: {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
      row[j] = sp_allowed(p, s->causal, q, k0 + j) ? row[j] : -INFINITY;
      mx = row[j] > mx ? row[j] : mx;
    }
    rr->n = -1;
    return mx;
  }
  case SEG_GLOBAL: /* k < G and k <= q */
    return sp_mask2(row, n, 0, (G < kmax + 1 ? G : kmax + 1) - k0, 0, 0, rr, c);
  case SEG_SUMMARY: { /* rows of other (causal: earlier) l-blocks, positions >= G: rows >= ng */
    int b = q / s->w, r0 = sp_sum_before(s, b) - k0, r1 = sp_sum_before(s, b + 1) - k0;
    return s->causal ? sp_mask2(row, n, 0, r0, 0, 0, rr, c) : sp_mask2(row, n, 0, r0, r1, n, rr, c);
  }
  default: { /* MAIN: the band (fixed: q's own l-block) or a global key, and k <= q */
    int iv[4];
    sp_main_ivals(s, g, q, iv);
    return sp_mask2(row, n, iv[0], iv[1], iv[2], iv[3], rr, c);
  }
  }
}

/* Per-task scratch of the forward: the panel S (bs x W), its rows' largest values rmax (bs) and
 * allowed runs (bs), the tile's queries times the scale Qs (bs x hd), the row statistics m, l (T
 * each) and fixed's gathered Ks, Vs (ns x hd each). */
typedef struct SpWork {
  int ldp; /* the row stride of S and dP: the widest panel's, so every tile's products have the
            * same leading dimensions (fewer GEMM shapes) */
  float *S, *rmax, *m, *l, *Ks, *Vs, *Qs;
  SpRuns *runs;
  float *B; /* strided: the classes' blocks of S, then P (l x nc x nc) */
  /* backward: dP (bs x W), dKs, dVs (ns x hd), strided's blocks of dP, then dS */
  float *dP, *dKs, *dVs, *dB;
} SpWork;

/* n rows' SpRuns in floats of the scratch (ints and floats: 4 bytes each) */
#define SP_RUNS_FLOATS(n) rt_slice_floats((size_t)(n) * (sizeof(SpRuns) / sizeof(float)))
static size_t sp_fwd_floats(const SpPlan *s, int hd, int W) {
  return rt_slice_floats((size_t)s->bs * W) + rt_slice_floats((size_t)s->bs) + SP_RUNS_FLOATS(s->bs) +
         rt_slice_floats((size_t)s->bs * hd) + 2 * rt_slice_floats((size_t)s->T) +
         2 * rt_slice_floats((size_t)s->ns * hd) + rt_slice_floats((size_t)s->w * s->nc * s->nc);
}
static size_t sp_dx_floats(const SpPlan *s, int hd, int W) {
  return sp_fwd_floats(s, hd, W) + rt_slice_floats((size_t)s->bs * W) + 2 * rt_slice_floats((size_t)s->ns * hd) +
         rt_slice_floats((size_t)s->w * s->nc * s->nc);
}
static SpWork sp_work(const SpPlan *s, int hd, int W, float *base, int backward) {
  SpWork w = {0};
  w.ldp = W;
  float *at = base;
#define TAKE(ptr, n) (ptr = at, at += rt_slice_floats((size_t)(n)))
  TAKE(w.S, (size_t)s->bs * W);
  TAKE(w.rmax, s->bs);
  w.runs = (SpRuns *)at, at += SP_RUNS_FLOATS(s->bs);
  TAKE(w.Qs, (size_t)s->bs * hd);
  TAKE(w.m, s->T);
  TAKE(w.l, s->T);
  TAKE(w.Ks, (size_t)s->ns * hd);
  TAKE(w.Vs, (size_t)s->ns * hd);
  TAKE(w.B, (size_t)s->w * s->nc * s->nc);
  if (backward) {
    TAKE(w.dP, (size_t)s->bs * W);
    TAKE(w.dKs, (size_t)s->ns * hd);
    TAKE(w.dVs, (size_t)s->ns * hd);
    TAKE(w.dB, (size_t)s->w * s->nc * s->nc);
  }
#undef TAKE
  return w;
}

/* One head's operands: q, k, v at column h*hd of row 0 (leading dimension ld = 3C). */
typedef struct SpHead {
  const float *q, *k, *v;
  int ld, hd;
  float scale;
} SpHead;

static void sp_gather_summary(const SpPlan *s, const SpHead *h, const SpWork *w) {
  for (int j = 0; j < s->ns; j++) {
    int pos = sp_sum_pos(s, j);
    memcpy(w->Ks + (size_t)j * h->hd, h->k + (size_t)pos * h->ld, (size_t)h->hd * sizeof(float));
    memcpy(w->Vs + (size_t)j * h->hd, h->v + (size_t)pos * h->ld, (size_t)h->hd * sizeof(float));
  }
}

/* A segment's K and V rows and their leading dimension. */
static void sp_seg_kv(const SpHead *h, const SpWork *w, const Seg *g, const float **K, const float **V, int *ldk) {
  if (g->kind == SEG_SUMMARY) {
    *K = w->Ks + (size_t)g->k0 * h->hd, *V = w->Vs + (size_t)g->k0 * h->hd, *ldk = h->hd;
  } else {
    *K = h->k + (size_t)g->k0 * h->ld, *V = h->v + (size_t)g->k0 * h->ld, *ldk = h->ld;
  }
}

/* The panel of the tile q0..q0+nq-1: S = (scale Q) K^T per segment (the tile's queries scaled
 * once, not every score: the masks then only read the allowed scores for their max), masked, each
 * row's largest allowed value in rmax, its allowed runs in w->runs; returns its width. */
static int sp_panel(const SpPlan *s, const SpHead *h, const SpWork *w, int q0, int nq, const Seg *seg, int nseg,
                    float *rmax) {
  for (int r = 0; r < nq; r++) {
    rmax[r] = -INFINITY, w->runs[r].n = 0;
    const float *qr = h->q + (size_t)(q0 + r) * h->ld;
    for (int d = 0; d < h->hd; d++)
      w->Qs[(size_t)r * h->hd + d] = qr[d] * h->scale;
  }
  int W = 0;
  for (int i = 0; i < nseg; i++)
    W += seg[i].n;
  for (int i = 0, c = 0; i < nseg; c += seg[i++].n) {
    const float *K, *V;
    int ldk;
    sp_seg_kv(h, w, &seg[i], &K, &V, &ldk);
    rt_gemm(0, 1, nq, seg[i].n, h->hd, RT_DT_F32, w->Qs, h->hd, RT_DT_F32, K, ldk, 0.0f, w->S + c, w->ldp);
    for (int r = 0; r < nq; r++) {
      float mx = sp_mask_seg(s, &seg[i], q0 + r, w->S + (size_t)r * w->ldp + c, &w->runs[r], c);
      rmax[r] = mx > rmax[r] ? mx : rmax[r];
    }
  }
  return W;
}

/* ---- strided's class products: small GEMMs (a class chunk is at most tile x nc x hd) ----------- *
 * A class's rows are l * 3C floats apart, so its chunks are many small products (at T = 1024 and
 * l = 128: 8 x 8 x hd); rt_gemm's per-call cost (oneDNN's primitive lookup) was a third of the
 * kernel's time there. Below SP_SMALL multiply-adds they run here instead (measured: from 32 x 32
 * x 32, T = 4096 at l = 128, oneDNN is the faster by a quarter or more), C = beta C + op(A) op(B)
 * with beta 0 or 1, for the three shapes the classes use (NT: S = Q K^T; NN: O += P V; TN: dV +=
 * P^T dO). One body, built for the baseline, AVX2 and AVX-512 (the CPU's widest used): lanes are
 * independent sums in a fixed order and contraction is off, so every build gives the same bits. */
#define SP_SMALL (16 * 16 * 64)
#define SP_LANES 16
#define SP_GEMM_BODY                                                                                   \
  if (!ta && tb) { /* C[i][j] = beta C + A[i] . B[j] (rows of k) */                                   \
    for (int i = 0; i < m; i++)                                                                        \
      for (int j = 0; j < n; j++) {                                                                    \
        const float *a = A + (size_t)i * lda, *b = B + (size_t)j * ldb;                                \
        float acc[SP_LANES] = {0}, t = 0.0f;                                                           \
        int d = 0;                                                                                     \
        for (; d + SP_LANES <= k; d += SP_LANES)                                                       \
          for (int u = 0; u < SP_LANES; u++)                                                           \
            acc[u] += a[d + u] * b[d + u];                                                             \
        for (; d < k; d++)                                                                             \
          t += a[d] * b[d];                                                                            \
        for (int u = 0; u < 8; u++) /* halving: fixed trip counts, one vector add each */             \
          acc[u] += acc[u + 8];                                                                        \
        for (int u = 0; u < 4; u++)                                                                    \
          acc[u] += acc[u + 4];                                                                        \
        for (int u = 0; u < 2; u++)                                                                    \
          acc[u] += acc[u + 2];                                                                        \
        float v = (acc[0] + acc[1]) + t;                                                               \
        C[(size_t)i * ldc + j] = beta != 0.0f ? C[(size_t)i * ldc + j] + v : v;                        \
      }                                                                                                \
  } else {                                                                                             \
    if (beta == 0.0f)                                                                                  \
      for (int i = 0; i < m; i++)                                                                      \
        memset(C + (size_t)i * ldc, 0, (size_t)n * sizeof(float));                                     \
    for (int i = 0; i < m; i++) /* NN: C[i] += sum_p A[i][p] B[p]; TN: A[p][i] (A is k x m) */  \
      for (int p = 0; p < k; p++) {                                                                    \
        float x = ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];                                \
        const float *b = B + (size_t)p * ldb;                                                          \
        float *c = C + (size_t)i * ldc;                                                                \
        if (x != 0.0f)                                                                                 \
          for (int j = 0; j < n; j++)                                                                  \
            c[j] += x * b[j];                                                                          \
      }                                                                                                \
  }
#define SP_GEMM_ARGS                                                                                   \
  int ta, int tb, int m, int n, int k, const float *restrict A, int lda, const float *restrict B, int ldb, float beta, \
      float *restrict C, int ldc

static void sp_gemm_portable(SP_GEMM_ARGS) { SP_GEMM_BODY }
#if defined(__x86_64__) && defined(__GNUC__)
#ifndef __clang__ /* GCC: vectorise at -O2 too; clang does, and ignores these */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off", "tree-vectorize")
#endif
__attribute__((target("avx2"))) static void sp_gemm_avx2(SP_GEMM_ARGS) { SP_GEMM_BODY }
__attribute__((target("avx512f"))) static void sp_gemm_avx512(SP_GEMM_ARGS) { SP_GEMM_BODY }
#ifndef __clang__
#pragma GCC pop_options
#endif
#endif

/* A class chunk's product: C = beta C + op(A) op(B), here when small, else by rt_gemm. */
static void sp_cgemm(SP_GEMM_ARGS) {
  if ((long)m * n * k >= SP_SMALL) {
    rt_gemm(ta, tb, m, n, k, RT_DT_F32, A, lda, RT_DT_F32, B, ldb, beta, C, ldc);
    return;
  }
#if defined(__x86_64__) && defined(__GNUC__)
  if (rt_cpu()->avx512f)
    sp_gemm_avx512(ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc);
  else if (rt_cpu()->avx2)
    sp_gemm_avx2(ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc);
  else
#endif
    sp_gemm_portable(ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc);
}

/* Strided: query i of class r's row of the blocks. */
static float *sp_brow(const SpPlan *s, float *B, int r, int i) { return B + ((size_t)r * s->nc + i) * s->nc; }

/* Strided, before the tiles: per class chunk S = Q K^T into w->B and, for the backward (dO), dP =
 * dO V^T into w->dB. */
static void sp_stride_scores(const SpPlan *s, const SpHead *h, const SpWork *w, const float *dO, int lddo) {
  int L = s->w, ldc = L * h->ld;
  SP_FOR_CHUNKS(s, c) {
    size_t row0 = (size_t)c.row0;
    sp_cgemm(0, 1, c.nq, c.nk, h->hd, h->q + row0 * h->ld, ldc, h->k + (size_t)c.r * h->ld, ldc,
            0.0f, sp_brow(s, w->B, c.r, c.i0), s->nc);
    if (dO)
      sp_cgemm(0, 1, c.nq, c.nk, h->hd, dO + row0 * lddo, L * lddo, h->v + (size_t)c.r * h->ld, ldc,
              0.0f, sp_brow(s, w->dB, c.r, c.i0), s->nc);
  }
}

/* Strided: the stride columns of the tile q0..q0+nq-1 into its panel at column c0 (S scaled from
 * the blocks, 0 where masked, the runs recorded; backward also dP, 0 where masked); rmax updated;
 * returns their number (the most any row of the tile sees; 0 but for strided, and in ALL tiles). */
static int sp_stride_panel(const SpPlan *s, const SpHead *h, const SpWork *w, int q0, int nq, int c0, float *rmax) {
  if (!s->nc || q0 < s->qskip)
    return 0;
  int ns = 0, i, j0, j1;
  for (int a = 0; a < nq; a++) {
    sp_stride_cols(s, q0 + a, &i, &j0, &j1);
    ns = j1 - j0 > ns ? j1 - j0 : ns;
  }
  for (int a = 0; a < nq; a++) {
    int q = q0 + a;
    sp_stride_cols(s, q, &i, &j0, &j1);
    const float *b = sp_brow(s, w->B, q % s->w, i) + j0;
    float *row = w->S + (size_t)a * w->ldp + c0;
    int n = j1 - j0, hole = i - j0 >= 0 && i - j0 < n ? i - j0 : n; /* the class's own key i: the band's */
    float m1 = sp_scale_max(row, b, hole, h->scale), m2 = -INFINITY;
    if (hole < n)
      row[hole] = 0.0f, m2 = sp_scale_max(row + hole + 1, b + hole + 1, n - hole - 1, h->scale);
    memset(row + n, 0, (size_t)(ns - n) * sizeof(float));
    sp_run_add(&w->runs[a], c0, c0 + hole);
    sp_run_add(&w->runs[a], c0 + hole + 1, c0 + n);
    m1 = m1 > m2 ? m1 : m2;
    rmax[a] = m1 > rmax[a] ? m1 : rmax[a];
    if (w->dP) {
      float *drow = w->dP + (size_t)a * w->ldp + c0;
      memcpy(drow, sp_brow(s, w->dB, q % s->w, i) + j0, (size_t)n * sizeof(float));
      memset(drow + n, 0, (size_t)(ns - n) * sizeof(float));
    }
  }
  return ns;
}

/* Strided: the tile's stride columns of P (backward also dS) back into the blocks, which hold 0 at
 * every other key of the row; an ALL tile's rows get zeros (its panel has every key). */
static void sp_stride_store(const SpPlan *s, const SpWork *w, int q0, int nq, int c0) {
  if (!s->nc)
    return;
  int i, j0, j1;
  for (int a = 0; a < nq; a++) {
    int q = q0 + a;
    sp_stride_cols(s, q, &i, &j0, &j1);
    if (q0 < s->qskip)
      j1 = j0;
    float *b = sp_brow(s, w->B, q % s->w, i), *db = w->dP ? sp_brow(s, w->dB, q % s->w, i) : NULL;
    memset(b, 0, (size_t)s->nc * sizeof(float));
    memcpy(b + j0, w->S + (size_t)a * w->ldp + c0, (size_t)(j1 - j0) * sizeof(float));
    if (db) {
      memset(db, 0, (size_t)s->nc * sizeof(float));
      memcpy(db + j0, w->dP + (size_t)a * w->ldp + c0, (size_t)(j1 - j0) * sizeof(float));
    }
  }
}

/* One head's forward: o (rows of ldo) normalised; m, l (per row) the softmax statistics. */
static void sp_head_fwd(const SpPlan *s, const SpHead *h, const SpWork *w, float *o, int ldo) {
  int T = s->T, hd = h->hd, bs = s->bs;
  if (s->ns)
    sp_gather_summary(s, h, w);
  if (s->nc)
    sp_stride_scores(s, h, w, NULL, 0);
  for (int q0 = 0; q0 < T; q0 += bs) {
    int nq = T - q0 < bs ? T - q0 : bs;
    Seg seg[3];
    int nseg = sp_segments(s, q0, q0 + nq - 1, seg);
    int WA = sp_panel(s, h, w, q0, nq, seg, nseg, w->m + q0);
    int W = WA + sp_stride_panel(s, h, w, q0, nq, WA, w->m + q0); /* finite: every query sees itself */
    for (int r = 0; r < nq; r++)
      w->l[q0 + r] = sp_softmax_exp(w->S + (size_t)r * w->ldp, W, &w->runs[r], w->m[q0 + r]);
    sp_stride_store(s, w, q0, nq, WA);
    for (int i = 0, c = 0; i < nseg; c += seg[i++].n) {
      const float *K, *V;
      int ldk;
      sp_seg_kv(h, w, &seg[i], &K, &V, &ldk);
      rt_gemm(0, 0, nq, hd, seg[i].n, RT_DT_F32, w->S + c, w->ldp, RT_DT_F32, V, ldk, i ? 1.0f : 0.0f, o + (size_t)q0 * ldo,
              ldo);
    }
  }
  SP_FOR_CHUNKS(s, c) /* O += P V over the classes' keys */
    sp_cgemm(0, 0, c.nq, hd, c.nk, sp_brow(s, w->B, c.r, c.i0), s->nc, h->v + (size_t)c.r * h->ld, s->w * h->ld, 1.0f,
             o + (size_t)c.row0 * ldo, s->w * ldo);
  for (int q = 0; q < T; q++) {
    float inv = 1.0f / w->l[q], *dst = o + (size_t)q * ldo;
    for (int d = 0; d < hd; d++)
      dst[d] *= inv;
  }
}

/* The backward's row: P = the softmax of the scaled, masked row pr, D = rowsum(P o dP) (=
 * rowsum(dO o O): the panel holds every key of the row), dpr = dS = P o (dP - D) times the scale
 * of its two products, over the allowed runs only (P is 0 elsewhere, and so is dS). */
static void sp_softmax_dx_row(float *pr, float *dpr, int W, const SpRuns *rr, float mx, float scale) {
  SpRuns all = {1, {0}, {W}};
  float inv = 1.0f / sp_softmax_exp(pr, W, rr, mx);
  rr = rr->n < 0 ? &all : rr; /* an ALL tile's row: every column, the masked ones P = 0 */
  float acc[8] = {0};
  for (int i = 0; i < rr->n; i++) {
    int j = rr->a[i], e = rr->b[i];
    for (; j + 8 <= e; j += 8)
      for (int u = 0; u < 8; u++) {
        pr[j + u] *= inv;
        acc[u] += pr[j + u] * dpr[j + u];
      }
    for (; j < e; j++) {
      pr[j] *= inv;
      acc[0] += pr[j] * dpr[j];
    }
  }
  float D = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (int i = 0, end = 0; i <= rr->n; i++) {
    int a = i < rr->n ? rr->a[i] : W; /* the gap before run i (after the last: to W) */
    memset(dpr + end, 0, (size_t)(a - end) * sizeof(float));
    if (i == rr->n)
      break;
    for (int j = a; j < rr->b[i]; j++)
      dpr[j] = pr[j] * (dpr[j] - D) * scale;
    end = rr->b[i];
  }
}

/* One head's backward: dq (rows of ld, written), dk, dv (accumulated: zeroed by the caller) from
 * dO (rows of lddo). Per tile: the panel again, P its softmax, dP = dO V^T, D = rowsum(P o dP)
 * (= rowsum(dO o O): the panel holds every key of the row), dS = P o (dP - D), then dV += P^T dO,
 * dQ += scale dS K, dK += scale dS^T Q per segment; strided's classes the same after the tiles. */
static void sp_head_dx(const SpPlan *s, const SpHead *h, const SpWork *w, const float *dO, int lddo, float *dq,
                       float *dk, float *dv) {
  int T = s->T, hd = h->hd, bs = s->bs, ld = h->ld;
  if (s->ns) {
    sp_gather_summary(s, h, w); /* the forward gathers them; here nothing else does */
    memset(w->dKs, 0, (size_t)s->ns * hd * sizeof(float));
    memset(w->dVs, 0, (size_t)s->ns * hd * sizeof(float));
  }
  if (s->nc)
    sp_stride_scores(s, h, w, dO, lddo);
  for (int q0 = 0; q0 < T; q0 += bs) {
    int nq = T - q0 < bs ? T - q0 : bs;
    Seg seg[3];
    int nseg = sp_segments(s, q0, q0 + nq - 1, seg);
    int WA = sp_panel(s, h, w, q0, nq, seg, nseg, w->rmax);
    for (int i = 0, c = 0; i < nseg; c += seg[i++].n) {
      const float *K, *V;
      int ldk;
      sp_seg_kv(h, w, &seg[i], &K, &V, &ldk);
      rt_gemm(0, 1, nq, seg[i].n, hd, RT_DT_F32, dO + (size_t)q0 * lddo, lddo, RT_DT_F32, V, ldk, 0.0f, w->dP + c, w->ldp);
    }
    int W = WA + sp_stride_panel(s, h, w, q0, nq, WA, w->rmax);
    for (int r = 0; r < nq; r++)
      sp_softmax_dx_row(w->S + (size_t)r * w->ldp, w->dP + (size_t)r * w->ldp, W, &w->runs[r], w->rmax[r], h->scale);
    sp_stride_store(s, w, q0, nq, WA);
    for (int i = 0, c = 0; i < nseg; c += seg[i++].n) {
      const float *K, *V;
      int ldk;
      sp_seg_kv(h, w, &seg[i], &K, &V, &ldk);
      float *dK = seg[i].kind == SEG_SUMMARY ? w->dKs + (size_t)seg[i].k0 * hd : dk + (size_t)seg[i].k0 * ld;
      float *dV = seg[i].kind == SEG_SUMMARY ? w->dVs + (size_t)seg[i].k0 * hd : dv + (size_t)seg[i].k0 * ld;
      int n = seg[i].n;
      rt_gemm(1, 0, n, hd, nq, RT_DT_F32, w->S + c, w->ldp, RT_DT_F32, dO + (size_t)q0 * lddo, lddo, 1.0f, dV, ldk);
      rt_gemm(0, 0, nq, hd, n, RT_DT_F32, w->dP + c, w->ldp, RT_DT_F32, K, ldk, i ? 1.0f : 0.0f, dq + (size_t)q0 * ld, ld);
      rt_gemm(1, 0, n, hd, nq, RT_DT_F32, w->dP + c, w->ldp, RT_DT_F32, h->q + (size_t)q0 * ld, ld, 1.0f, dK, ldk);
    }
  }
  int L = s->w, ldc = L * ld;
  SP_FOR_CHUNKS(s, c) { /* the classes' dV, dQ, dK */
    size_t row0 = (size_t)c.row0;
    const float *P = sp_brow(s, w->B, c.r, c.i0), *dS = sp_brow(s, w->dB, c.r, c.i0);
    sp_cgemm(1, 0, c.nk, hd, c.nq, P, s->nc, dO + row0 * lddo, L * lddo, 1.0f, dv + (size_t)c.r * ld, ldc);
    sp_cgemm(0, 0, c.nq, hd, c.nk, dS, s->nc, h->k + (size_t)c.r * ld, ldc, 1.0f, dq + row0 * ld, ldc);
    sp_cgemm(1, 0, c.nk, hd, c.nq, dS, s->nc, h->q + row0 * ld, ldc, 1.0f, dk + (size_t)c.r * ld, ldc);
  }
  for (int j = 0; j < s->ns; j++) { /* the summary columns' gradients back to their rows */
    int pos = sp_sum_pos(s, j);
    float *a = dk + (size_t)pos * ld, *b = dv + (size_t)pos * ld;
    const float *x = w->dKs + (size_t)j * hd, *y = w->dVs + (size_t)j * hd;
    for (int d = 0; d < hd; d++)
      a[d] += x[d], b[d] += y[d];
  }
}

/* ---- the kernels ------------------------------------------------------------------------------ */

typedef struct SpCtx {
  float *out;
  const float *qkv;
  const float *dy; /* backward only */
  float *dqkv;     /* backward only */
  int T, C, n_head, hd;
  SpPlan plan;
  int W; /* the scratch layout's panel width */
  float scale;
  float *scratch;
  size_t slice;
  atomic_int next_slot;
} SpCtx;

/* The panel width and slice the scratch is laid out with: the bidirectional plan's (a superset of
 * the causal one's), so the scratch size functions need no causal flag. */
static int sp_alloc_width(const RtSparsePattern *p, int T) {
  SpPlan b = sp_plan(p, T > 0 ? T : 1, 0);
  return sp_panel_width(&b);
}

size_t rt_attention_sparse_scratch_floats(int T, int C, int n_head, const RtSparsePattern *p) {
  SpPlan b = sp_plan(p, T > 0 ? T : 1, 0);
  return sp_fwd_floats(&b, C / n_head, sp_alloc_width(p, T)) * (size_t)rt_threads();
}

size_t rt_attention_sparse_dx_scratch_floats(int T, int C, int n_head, const RtSparsePattern *p) {
  SpPlan b = sp_plan(p, T > 0 ? T : 1, 0);
  return sp_dx_floats(&b, C / n_head, sp_alloc_width(p, T)) * (size_t)rt_threads();
}

static void sp_tasks(void *ctx, int lo, int hi) {
  SpCtx *a = ctx;
  SpWork w = sp_work(&a->plan, a->hd, a->W, rt_claim_slice(a->scratch, a->slice, &a->next_slot), a->dy != NULL);
  int C = a->C, T = a->T, ld = 3 * C;
  for (int task = lo; task < hi; task++) {
    int b = task / a->n_head, h = task % a->n_head;
    size_t off = (size_t)b * T * ld + (size_t)a->hd * h;
    SpHead hh = {a->qkv + off, a->qkv + off + C, a->qkv + off + 2 * C, ld, a->hd, a->scale};
    if (!a->dy) {
      sp_head_fwd(&a->plan, &hh, &w, a->out + (size_t)b * T * C + (size_t)h * a->hd, C);
      continue;
    }
    float *dq = a->dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
    for (int t = 0; t < T; t++) {
      memset(dk + (size_t)t * ld, 0, (size_t)a->hd * sizeof(float));
      memset(dv + (size_t)t * ld, 0, (size_t)a->hd * sizeof(float));
    }
    sp_head_dx(&a->plan, &hh, &w, a->dy + (size_t)b * T * C + (size_t)h * a->hd, C, dq, dk, dv);
  }
}

static void sp_run(float *out, float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                   int causal, const RtSparsePattern *p, float *scratch) {
  if (B <= 0 || T <= 0)
    return;
  int hd = C / n_head, W = sp_alloc_width(p, T);
  SpCtx a = {out, qkv, dy, dqkv, T, C, n_head, hd, sp_plan(p, T, causal), W, 1.0f / sqrtf((float)hd), scratch, 0, 0};
  SpPlan b = sp_plan(p, T, 0);
  a.slice = dy ? sp_dx_floats(&b, hd, W) : sp_fwd_floats(&b, hd, W);
  rt_parallel_for(B * n_head, 1, sp_tasks, &a);
}

void rt_attention_sparse(float *out, const float *qkv, int B, int T, int C, int n_head, int causal,
                         const RtSparsePattern *p, float *scratch) {
  sp_run(out, NULL, qkv, NULL, B, T, C, n_head, causal, p, scratch);
}

void rt_attention_sparse_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                            int causal, const RtSparsePattern *p, float *scratch) {
  sp_run(NULL, dqkv, qkv, dy, B, T, C, n_head, causal, p, scratch);
}

/* ---- the naive twins: dense attention with the explicit element mask --------------------------- */

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

/* tasks are (b, h): the head's queries of the step, then its columns of the new cache rows */
static void sp_kv_tasks(void *ctx, int lo, int hi) {
  SpKvCtx *a = ctx;
  float *s = rt_claim_slice(a->scratch, a->slice, &a->next_slot);
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
