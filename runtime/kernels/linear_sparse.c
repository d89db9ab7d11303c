/* linear_sparse.c: the linear layer that reads a CSR sparse weight (the prune pass's inference
 * format when the sparsity pays; issue 12), y = x W^T + bias, then the epilogue:
 *   rt_linear_csr       M == 1 (decode): SpMV; M > 1: SpMM on the transposed activations;
 *   rt_linear_csr_ref   the naive twin (double sums), which tests/unit/test_rt_sparse.c compares
 *                       against, besides the dense product of the unpacked weight.
 * The format (core/sparse.c, modelc_rt.h RT_FMT_CSR): W [N,K] as values f32 [cap], cols u16 [cap],
 * rowptr i32 [N+1] at 64-byte aligned offsets fixed by cap; x is (M,K), bias (N) or NULL, y (M,N),
 * all row-major.
 *
 * Why two shapes of loop: decode reads each nonzero once (6 bytes: value and column against 4 per
 * dense weight), so it is bound by the weight bytes and pays at high sparsity; a batch reuses each
 * nonzero M times, so the work is the FMAs, vectorised along M (the dense GEMM's other operand):
 *   SpMV (M == 1): per row n, y[n] = sum_j v_j x[k_j]. AVX-512: 16 nonzeros at a time (their u16
 *     columns widened, x gathered), one FMA into 16 lane sums, the row's last < 16 masked; then
 *     the lanes reduced in a fixed order. AVX2: the same with 8 lanes and the tail in order in
 *     scalar after the lanes' sum. Portable: in order. Rows split over the pool in blocks.
 *   SpMM (M > 1): x transposed once per call into the scratch as xT (M rounded up to Mp, a
 *     multiple of 16, the padding zero; stored as tiles [K, 64] of 64 lanes of M, the last one
 *     narrower: xt_tile); then for each row n and tile of up to 64 (AVX2: 32) lanes of M, every
 *     nonzero (v, k) does acc[m..] += v * xT[k, m..] (linear_sparse_simd.h: two rows of W at once,
 *     FMA; portable: the same loop in C, vectorised by the compiler along M), then y[m, n] =
 *     acc[m] + bias[n], 16 rows of W at a time through a tile on the stack. Rows of W split over
 *     the pool in blocks.
 * Rounding: every output is a fixed computation on its row's nonzeros in their order (SpMV's lanes
 * take nonzeros j = lane mod 16 or 8 of the row, not of a block), so the bits depend on neither the
 * blocks nor the thread count; the ISAs differ from each other and from the twin by float rounding
 * only: the twin sums the products in double and rounds once, so |y - ref| <= (nnz_n + 2) 2^-24
 * (sum_j |v_j x_kj| + |bias_n|).
 * The epilogue as rt_linear_q8_0's: after the products, below RT_LIN_MIN_ROWS rows epi(ctx, 0, M)
 * once, from there on over the pool in row blocks of rt_gemm_rows_block(M). */
#include "kernels.h"

#include <stdlib.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SP_X86 1
#endif

typedef struct LinS {
  float *y;
  const float *x, *bias;
  const float *val;   /* W's nonzeros [cap] */
  const uint16_t *col; /* their columns [cap] */
  const int32_t *rp;  /* row n's nonzeros are rp[n] .. rp[n+1]-1 [N+1] */
  const float *xT;    /* SpMM: x transposed, by tiles of SP_MT lanes (xt_tile) */
  int M, N, K, Mp;
} LinS;

static inline void sp_put(const LinS *c, int m, int n, float v) {
  if (c->bias)
    v += c->bias[n];
  c->y[(size_t)m * c->N + n] = v;
}

/* ---- portable C ---------------------------------------------------------------------------- */

static void spmv_portable(void *p, int lo, int hi) {
  const LinS *c = p;
  for (int n = lo; n < hi; n++) {
    float s = 0.0f;
    for (int32_t j = c->rp[n]; j < c->rp[n + 1]; j++) {
      float t = c->val[j] * c->x[c->col[j]];
      s += t;
    }
    sp_put(c, 0, n, s);
  }
}

enum { SP_MT = 64, SP_NB = 16 }; /* lanes of M per tile (at most); rows of W per tile */

/* xT's layout: tile t holds lanes m0 = 64 t .. m0 + w - 1 (w = min(64, Mp - m0)) of every k, as
 * [K, w] from xT + K m0: each tile's rows are contiguous (one [K, Mp] array would put a tile's
 * 256-byte rows 4 Mp bytes apart: at M = 512 every row on the same 1/8 of the cache sets, and the
 * SpMM of 768x3072 ran 5x slower than at M = 64 per output). Returns the address of xT[0, m]
 * (m0 <= m < m0 + w) and the tile's row stride in *ld. */
static inline const float *xt_tile(const LinS *c, int m, size_t *ld) {
  const int m0 = m / SP_MT * SP_MT;
  *ld = (size_t)(c->Mp - m0 < SP_MT ? c->Mp - m0 : SP_MT);
  return c->xT + (size_t)c->K * m0 + (m - m0);
}

/* y[m0 + m, b0 + i] = tb[i][m] + bias for i < b1 - b0 and m < min(w, M - m0): rows of y */
static void sp_flush(const LinS *c, float (*tb)[SP_MT], int b0, int b1, int m0, int w) {
  const int wm = c->M - m0 < w ? c->M - m0 : w;
  for (int m = 0; m < wm; m++) {
    float *yr = c->y + (size_t)(m0 + m) * c->N;
    for (int n = b0; n < b1; n++) {
      float v = tb[n - b0][m];
      if (c->bias)
        v += c->bias[n];
      yr[n] = v;
    }
  }
}

static void spmm_portable(void *p, int lo, int hi) {
  const LinS *c = p;
  float tb[SP_NB][SP_MT];
  for (int m0 = 0; m0 < c->M; m0 += SP_MT) {
    size_t ld;
    const float *xt = xt_tile(c, m0, &ld);
    const int w = (int)ld;
    for (int b0 = lo; b0 < hi; b0 += SP_NB) {
      const int b1 = hi - b0 < SP_NB ? hi : b0 + SP_NB;
      for (int n = b0; n < b1; n++) {
        float *acc = tb[n - b0];
        for (int i = 0; i < w; i++)
          acc[i] = 0.0f;
        for (int32_t j = c->rp[n]; j < c->rp[n + 1]; j++) {
          const float v = c->val[j], *xr = xt + (size_t)c->col[j] * ld;
          for (int i = 0; i < w; i++) {
            float t = v * xr[i];
            acc[i] += t;
          }
        }
      }
      sp_flush(c, tb, b0, b1, m0, w);
    }
  }
}

/* rows [lo, hi) of xT = x^T in tiles (xt_tile), the padding lanes zero; in blocks of 16 k x 16 m
 * (16 cache lines read, 16 written: reading x down a column instead strides K floats a step, and
 * cost more than the products at 128x512, M = 512). A full block goes to blk16 when non-NULL (an
 * in-register transpose), the rest element by element. */
typedef void (*Tr16Fn)(float *dst, size_t ldd, const float *src, size_t lds);
static inline __attribute__((always_inline)) void transpose_with(const LinS *c, int lo, int hi, Tr16Fn blk16) {
  for (int m0 = 0; m0 < c->Mp; m0 += SP_MT) {
    size_t ld;
    float *t = (float *)xt_tile(c, m0, &ld);
    const int wm = c->M - m0 < (int)ld ? c->M - m0 : (int)ld;
    for (int k0 = lo; k0 < hi; k0 += 16) {
      const int k1 = hi - k0 < 16 ? hi : k0 + 16;
      for (int mb = 0; mb < (int)ld; mb += 16) {
        if (blk16 && k1 - k0 == 16 && mb + 16 <= wm) {
          blk16(t + (size_t)k0 * ld + mb, ld, c->x + (size_t)(m0 + mb) * c->K + k0, (size_t)c->K);
          continue;
        }
        for (int m = mb; m < mb + 16; m++) {
          if (m >= wm) {
            for (int k = k0; k < k1; k++)
              t[(size_t)k * ld + m] = 0.0f;
            continue;
          }
          const float *xr = c->x + (size_t)(m0 + m) * c->K;
          for (int k = k0; k < k1; k++)
            t[(size_t)k * ld + m] = xr[k];
        }
      }
    }
  }
}

static void transpose_portable(void *p, int lo, int hi) { transpose_with(p, lo, hi, NULL); }

/* ---- x86 SIMD ------------------------------------------------------------------------------ */

#ifdef SP_X86
#define SP_T512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))
#define SP_T256 __attribute__((target("avx2,fma")))

/* acc + the products of entries [j, j + 16) (masked to those below e) */
static inline __attribute__((always_inline)) SP_T512 __m512 spmv16(const LinS *c, int32_t j, int32_t e, __m512 acc) {
  if (j + 16 <= e) {
    __m512i idx = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(c->col + j)));
    return _mm512_fmadd_ps(_mm512_loadu_ps(c->val + j), _mm512_i32gather_ps(idx, c->x, 4), acc);
  }
  const __mmask16 k = (__mmask16)((1u << (e - j)) - 1); /* the masked lanes keep their sums */
  __m512i idx = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, c->col + j));
  __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, idx, c->x, 4);
  return _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(k, c->val + j), xv, acc, k);
}

/* two rows at a time, in lockstep for the shorter one's steps (independent chains in flight);
 * lane i of a row sums its entries i, i + 16, ... in order, whatever its partner */
static SP_T512 void spmv_avx512(void *p, int lo, int hi) {
  const LinS *c = p;
  int n = lo;
  for (; n + 2 <= hi; n += 2) {
    int32_t j0 = c->rp[n], e0 = c->rp[n + 1], j1 = e0, e1 = c->rp[n + 2];
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    for (; j0 < e0 && j1 < e1; j0 += 16, j1 += 16) {
      a0 = spmv16(c, j0, e0, a0);
      a1 = spmv16(c, j1, e1, a1);
    }
    for (; j0 < e0; j0 += 16)
      a0 = spmv16(c, j0, e0, a0);
    for (; j1 < e1; j1 += 16)
      a1 = spmv16(c, j1, e1, a1);
    sp_put(c, 0, n, _mm512_reduce_add_ps(a0));
    sp_put(c, 0, n + 1, _mm512_reduce_add_ps(a1));
  }
  if (n < hi) {
    __m512 a = _mm512_setzero_ps();
    for (int32_t j = c->rp[n], e = c->rp[n + 1]; j < e; j += 16)
      a = spmv16(c, j, e, a);
    sp_put(c, 0, n, _mm512_reduce_add_ps(a));
  }
}

static SP_T256 void spmv_avx2(void *p, int lo, int hi) {
  const LinS *c = p;
  for (int n = lo; n < hi; n++) {
    int32_t j = c->rp[n];
    const int32_t e = c->rp[n + 1];
    __m256 acc = _mm256_setzero_ps();
    for (; j + 8 <= e; j += 8) {
      __m256i idx = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(c->col + j)));
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(c->val + j), _mm256_i32gather_ps(c->x, idx, 4), acc);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    float t = _mm_cvtss_f32(s);
    for (; j < e; j++)
      t = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(c->val[j]), _mm_set_ss(c->x[c->col[j]]), _mm_set_ss(t)));
    sp_put(c, 0, n, t);
  }
}

/* dst[j ldd + i] = src[i lds + j] for i, j < 16: three rounds of shuffles (pairs of rows, then
 * 64-bit pairs, then 128-bit lanes twice) */
static SP_T512 void tr16_avx512(float *dst, size_t ldd, const float *src, size_t lds) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; i++)
    r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; i++) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int h = 0; h < 2; h++)
    for (int i = 0; i < 4; i++) {
      t[8 * h + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0x88);
      t[8 * h + 4 + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0xdd);
    }
  for (int i = 0; i < 8; i++) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
  }
  for (int i = 0; i < 16; i++)
    _mm512_storeu_ps(dst + i * ldd, r[i]);
}

static void transpose_avx512(void *p, int lo, int hi) { transpose_with(p, lo, hi, tr16_avx512); }

#define SP_SUFFIX avx512
#define SP_TARGET SP_T512
#define SP_V __m512
#define SP_L 16
#define SP_ZERO() _mm512_setzero_ps()
#define SP_SET1(f) _mm512_set1_ps(f)
#define SP_LOAD(p) _mm512_loadu_ps(p)
#define SP_STORE(p, v) _mm512_storeu_ps(p, v)
#define SP_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#include "linear_sparse_simd.h"

#define SP_SUFFIX avx2
#define SP_TARGET SP_T256
#define SP_V __m256
#define SP_L 8
#define SP_ZERO() _mm256_setzero_ps()
#define SP_SET1(f) _mm256_set1_ps(f)
#define SP_LOAD(p) _mm256_loadu_ps(p)
#define SP_STORE(p, v) _mm256_storeu_ps(p, v)
#define SP_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#include "linear_sparse_simd.h"
#endif

typedef struct SpImpl {
  const char *name;
  RtRangeFn spmv, spmm; /* over rows [lo, hi) of W */
  RtRangeFn transpose;  /* over rows [lo, hi) of xT (k) */
} SpImpl;

/* the implementation for this CPU, chosen once (racing first calls choose the same) */
static const SpImpl *impl(void) {
  static const SpImpl *chosen;
  if (chosen)
    return chosen;
  static const SpImpl portable = {"portable", spmv_portable, spmm_portable, transpose_portable};
  const SpImpl *p = &portable;
#ifdef SP_X86
  static const SpImpl avx2 = {"avx2", spmv_avx2, spmm_avx2, transpose_portable},
                      avx512 = {"avx512", spmv_avx512, spmm_avx512, transpose_avx512};
  const RtCpu *cpu = rt_cpu();
  if (cpu->avx2 && cpu->fma) {
    p = &avx2;
    if (cpu->avx512f && cpu->avx512bw && cpu->avx512vl)
      p = &avx512;
  }
#endif
  chosen = p;
  return p;
}

const char *rt_sparse_isa(void) { return impl()->name; }

/* ---- the kernel ---------------------------------------------------------------------------- */

static int pad_m(int M) { return (M + 15) / 16 * 16; }

size_t rt_linear_csr_scratch_floats(int M, int N, int K) {
  (void)N;
  if (M <= 1)
    return 0;
  return rt_slice_floats((size_t)(K > 0 ? K : 1) * (size_t)pad_m(M));
}

static LinS csr_view(const void *Ws, int cap) {
  const char *b = Ws;
  LinS c;
  memset(&c, 0, sizeof c);
  c.val = (const float *)Ws;
  c.col = (const uint16_t *)(const void *)(b + rt_csr_cols_offset(cap));
  c.rp = (const int32_t *)(const void *)(b + rt_csr_rowptr_offset(cap));
  return c;
}

void rt_linear_csr(float *y, const float *x, const void *Ws, const float *bias, int M, int N, int K, int cap,
                   RtRangeFn epi, void *ctx, float *scratch) {
  if (M <= 0 || N <= 0)
    return;
  if (K <= 0) { /* an empty product: the bias (or zeros) and the epilogue, as rt_linear */
    rt_linear(y, x, NULL, bias, M, N, 0, epi, ctx);
    return;
  }
  const SpImpl *im = impl();
  LinS c = csr_view(Ws, cap);
  c.y = y, c.x = x, c.bias = bias, c.M = M, c.N = N, c.K = K, c.Mp = pad_m(M);
  if (M == 1) {
    rt_parallel_blocks(N, rt_gemm_rows_block(N), im->spmv, &c);
  } else {
    c.xT = scratch;
    rt_parallel_for(K, rt_row_grain(c.Mp), im->transpose, &c);
    rt_parallel_blocks(N, rt_gemm_rows_block(N), im->spmm, &c);
  }
  rt_linear_epilogue(epi, ctx, M);
}

void rt_linear_csr_ref(float *y, const float *x, const void *Ws, const float *bias, int M, int N, int K, int cap) {
  LinS c = csr_view(Ws, cap);
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double s = 0.0;
      for (int32_t j = K > 0 ? c.rp[n] : 0; j < (K > 0 ? c.rp[n + 1] : 0); j++)
        s += (double)c.val[j] * x[(size_t)m * K + c.col[j]];
      if (bias)
        s += bias[n];
      y[(size_t)m * N + n] = (float)s;
    }
}
