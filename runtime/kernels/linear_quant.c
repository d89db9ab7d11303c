/* linear_quant.c: the linear layers and embeddings that read quantised weights (the quantize
 * pass; the formats are RtFormat's in modelc_rt.h, their rounding core/quant.c's):
 *   rt_linear_i8_row, rt_linear_q8_0, rt_linear_q4_0   y = x Wq^T + bias, then the epilogue;
 *   rt_embedding_i8_row, _q8_0, _q4_0                  rows gathered and dequantised.
 * Each has a `_ref` twin (kernels.h: plain scalar loops) that tests/unit/test_rt_quant.c compares
 * against.
 *
 * One call: (1) the activations x (M,K) are quantised once into the scratch, per row (i8_row) or
 * per block of 32 (q8_0, q4_0): amax, d = amax / 127, q = round-to-nearest-even(x * (127 / amax))
 * (0 when amax is 0), plus, for q4_0 off the packed panels (below), each block's sum of q
 * (rt_quant_act: the SIMD and scalar versions give the same bytes and scales). (2) The products:
 * exact int32 dot products of the int8 values, scaled to f32: i8_row y = (float)isum * (dx * dw[n]);
 * q8_0 / q4_0 y = sum over blocks of (dx_b * dw_b) * (float)isum_b (the SIMD tiles sum the blocks
 * in 8 or 16 f32 lanes with FMA, the packed panels in order with FMA, the scalar ones in order:
 * they differ by float rounding only), then + bias[n].
 * (3) The epilogue, after every column block: below RT_LIN_MIN_ROWS rows epi(ctx, 0, M) once (as
 * rt_linear), from there on over the pool in row blocks of rt_gemm_rows_block(M) (the rows are no
 * longer hot, but a prefill's activation runs on every thread); the oneDNN path calls it per row
 * block right after the block's product.
 *
 * Blocks: the kernels' own path splits N into blocks of rt_lin_cols_block(K) weight rows (the
 * packed panels below: qp_cols_block(K)) over the pool (rt_parallel_blocks) for every M; each
 * output is one tile's sum, so the bits depend on neither the blocks nor the thread count. The
 * tiles (linear_quant_simd.h): 1 row of x against 4 of W for decode (M == 1), 4 rows of x against
 * 2 of W otherwise (with AVX2's 16 registers too: 4 x 2 measured ~12% faster than 4 x 1 at M = 64,
 * 768x768, despite spills), on 256-bit vectors: vpdpbusd with AVX512-VNNI (EVEX, with AVX512-VL)
 * or AVX-VNNI, vpmaddubsw with AVX2 (+ F16C, FMA), chosen once by rt_cpu(); plain C elsewhere (the
 * same loops as the twins, so its bits are the twins'). With AVX512-VNNI, every format with
 * K % 64 == 0 runs on 512-bit vectors instead (tile512, tile512_i8: 64 bytes, two blocks, per
 * instruction; tiles 1 x 4 and 4 x 2), measured single-threaded against the 256-bit tiles (min of
 * 60 calls): at 768x768, q8_0 decode ~0.021 -> ~0.015 ms and M = 64 ~1.1 -> ~0.85 ms, q4_0 M = 64
 * ~1.0 -> ~0.85 ms, i8_row decode ~0.010 -> ~0.008 ms.
 * q8_0 and q4_0 at M >= RT_QP_MIN_ROWS with AVX512-VNNI (a prefill): packed weight panels instead
 * (qp_linear): the lanes are 16 output columns, each weight block repacked once per call into a
 * panel on the stack, the activations flipped to u8, so every lane of vpdpbusd ends a block with
 * the exact int32 block sum of one output; tiles of 4 rows x 32 columns, one cvt + mul + FMA per
 * block and 16 outputs, in column blocks of qp_cols_block(K) over the pool. Measured against the
 * 4 x 2 tiles (tests/bench/quant_gemv.c, 1 thread, M = 512, medians): q8_0 768x768 ~9.7 -> ~1.9 ms
 * (f32 ~5 ms), 3072x768 ~37 -> ~8 ms, 768x3072 ~52 -> ~8.6 ms (f32 ~20 ms), q4_0 alike; M = 64,
 * 768x768 ~1.2 -> ~0.34 ms; GPT-2 small's prefill (2 threads) q8_0 ~460 -> ~880-1000 tokens/s,
 * q4_0 ~450 -> ~1170 (f32 ~700). A 6-row tile measured no faster.
 * i8_row at M >= RT_QDNNL_MIN_ROWS in a build with oneDNN and a CPU with AMX-INT8 or VNNI: oneDNN's
 * s8 x s8 -> s32 matmul (rt_gemm_s8s8s32) per row block of rt_gemm_rows_block(M) rows into the
 * scratch, then y = (float)c * (dx * dw[n]) + bias and epi(ctx, lo, hi) per block: the int32 sums
 * are exact, so the bits are the own path's. i8_row sums K products of at most 127^2 in int32: K up
 * to 133000 (2^31 / 127^2). */
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../gemm/gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define QK_X86 1
#endif

/* Below this many rows i8_row stays on its own kernels (oneDNN's per-call overhead). */
#define RT_QDNNL_MIN_ROWS 16
/* From this many rows q8_0 and q4_0 take the packed panels with AVX512-VNNI (qp_linear). */
#define RT_QP_MIN_ROWS 16

typedef struct LinQ {
  float *y;
  const float *bias;
  const void *W;      /* the values */
  const float *wd;    /* i8_row's f32 scales [N] */
  const uint16_t *ws; /* q8_0 / q4_0's f16 scales [N, nb] */
  const int8_t *xq;   /* the quantised activations (M,K) */
  const float *dx;    /* their scales [M, nb] */
  const int32_t *sx;  /* q4_0: their block sums [M, nb] */
  int32_t *c32;       /* the oneDNN path's int32 products (M,N) */
  int M, N, K, nb, fmt;
  void (*run)(const struct LinQ *c, int m0, int m1, int n0, int n1);
  RtRangeFn epi;
  void *ctx;
} LinQ;

/* ---- scalar pieces shared by the twins, the portable path and the SIMD tails -------------- */

static inline int32_t idot(const int8_t *a, const int8_t *b, int n) {
  int32_t s = 0;
  for (int i = 0; i < n; i++)
    s += (int32_t)a[i] * b[i];
  return s;
}

static inline int32_t qsum(const int8_t *q, int n) {
  int32_t s = 0;
  for (int i = 0; i < n; i++)
    s += q[i];
  return s;
}

/* separate statements: no FMA contraction, so every path rounds the same way */
static inline void put_i8(const LinQ *c, int m, int n, int32_t isum) {
  float s = c->dx[m] * c->wd[n];
  float v = (float)isum * s;
  if (c->bias)
    v += c->bias[n];
  c->y[(size_t)m * c->N + n] = v;
}

static inline void put_f(const LinQ *c, int m, int n, float v) {
  if (c->bias)
    v += c->bias[n];
  c->y[(size_t)m * c->N + n] = v;
}

/* sum over the blocks, in order, of (dx_b * dw_b) * isum_b */
static float dot_blocks(const LinQ *c, int m, int n) {
  const int K = c->K, nb = c->nb;
  const int8_t *x = c->xq + (size_t)m * K;
  float s = 0.0f;
  for (int b = 0; b < nb; b++) {
    int32_t is = 0;
    if (c->fmt == RT_FMT_Q8_0) {
      is = idot(x + 32 * b, (const int8_t *)c->W + (size_t)n * K + 32 * b, 32);
    } else {
      const uint8_t *w = (const uint8_t *)c->W + (size_t)n * (K / 2) + 16 * b;
      for (int j = 0; j < 16; j++)
        is += x[32 * b + j] * ((w[j] & 15) - 8) + x[32 * b + j + 16] * ((w[j] >> 4) - 8);
    }
    float sc = c->dx[(size_t)m * nb + b] * rt_f16_to_f32(c->ws[(size_t)n * nb + b]);
    float t = sc * (float)is;
    s += t;
  }
  return s;
}

static void run_portable(const LinQ *c, int m0, int m1, int n0, int n1) {
  for (int m = m0; m < m1; m++)
    for (int n = n0; n < n1; n++) {
      if (c->fmt == RT_FMT_I8_ROW)
        put_i8(c, m, n, idot(c->xq + (size_t)m * c->K, (const int8_t *)c->W + (size_t)n * c->K, c->K));
      else
        put_f(c, m, n, dot_blocks(c, m, n));
    }
}

static int32_t quant_group(int8_t *q, float *d, const float *x, int g) {
  float amax = 0.0f;
  for (int i = 0; i < g; i++)
    amax = fmaxf(amax, fabsf(x[i]));
  *d = amax / 127.0f;
  float inv = amax > 0.0f ? 127.0f / amax : 0.0f; /* |x * inv| <= 127 (1 + 2^-23)^2 < 127.5 */
  int32_t s = 0;
  for (int i = 0; i < g; i++)
    s += q[i] = (int8_t)(amax > 0.0f ? lrintf(x[i] * inv) : 0);
  return s;
}

void rt_quant_act_ref(RtFormat f, int8_t *q, float *d, int32_t *sum, const float *x, int M, int K) {
  int g = f == RT_FMT_I8_ROW ? K : 32, ng = K / g;
  for (int i = 0; i < M * ng; i++) {
    int32_t s = quant_group(q + (size_t)i * g, d + i, x + (size_t)i * g, g);
    if (sum)
      sum[i] = s;
  }
}

/* ---- the SIMD paths ------------------------------------------------------------------------ */

#ifdef QK_X86
#define QK_SUFFIX avx2
#define QK_TARGET __attribute__((target("avx2,fma,f16c")))
#define QK_DPBUSD(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)))
#include "linear_quant_simd.h"

#define QK_SUFFIX avxvnni
#define QK_TARGET __attribute__((target("avx2,fma,f16c,avxvnni")))
#define QK_DPBUSD(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#include "linear_quant_simd.h"

#define QK_SUFFIX vnni512
#define QK_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#define QK_DPBUSD(acc, a, b) _mm256_dpbusd_epi32(acc, a, b)
#include "linear_quant_simd.h"

/* q8_0 and q4_0 with K % 64 == 0 on 512-bit vectors with AVX512-VNNI: two blocks per vpdpbusd (the
 * 256-bit tiles are bound by the per-block work: a conversion and an FMA per block and pair of
 * rows). Tiles of MR rows of x against NR of W, MR * NR <= 8: 1 x 4 for decode, 4 x 2 otherwise.
 * q8_0: x and w in their order, int32 lanes 0-7 are block b, 8-15 block b+1; the sign trick with
 * a mask (no vpsignb on zmm). q4_0: the 32 bytes of two blocks unpack to [b lo | b+1 lo | b hi |
 * b+1 hi] nibbles (128-bit lanes), x's 64 bytes are permuted to match, so lanes 0-3 and 8-11 are
 * block b, 4-7 and 12-15 block b+1; the nibbles' offset, -8 sum(x_b) dx_b dw_b, is subtracted in
 * f32 once per 8 blocks (not per block in int32: fewer instructions, another rounding order). */
#define QK_T512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

static inline __attribute__((always_inline)) QK_T512 void tile512(const LinQ *c, int m, int n, const int MR,
                                                                  const int NR, const int q4) {
  const int K = c->K, nb = c->nb;
  const size_t wrow = q4 ? (size_t)K / 2 : (size_t)K;
  const int8_t *x = c->xq + (size_t)m * K;
  const uint8_t *w = (const uint8_t *)c->W + (size_t)n * wrow;
  const float *dx = c->dx + (size_t)m * nb;
  const int32_t *sx = c->sx + (size_t)m * nb;
  const uint16_t *dw = c->ws + (size_t)n * nb;
  const __m512i lo4 = _mm512_set1_epi8(15), zero = _mm512_setzero_si512();
  const __m512i shift = _mm512_inserti64x4(zero, _mm256_set1_epi16(4), 1);
  __m512 acc[4][4];
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < NR; j++)
      acc[r][j] = _mm512_setzero_ps();
  for (int b0 = 0; b0 < nb; b0 += 8) {
    const int ng = nb - b0 < 8 ? nb - b0 : 8; /* even */
    __m256 sc[4][4]; /* dx_b * dw_b of 8 blocks */
    QK_UNROLL
    for (int r = 0; r < MR; r++)
      QK_UNROLL
      for (int j = 0; j < NR; j++)
        sc[r][j] = scales8_vnni512(dx + (size_t)r * nb + b0, dw + (size_t)j * nb + b0, ng);
    if (q4) /* the correction of q - 8: minus dx_b dw_b 8 sum(x_b), 8 blocks at once (lanes 0-7) */
      QK_UNROLL
      for (int r = 0; r < MR; r++) {
        const int32_t *sr = sx + (size_t)r * nb + b0;
        __m256i si;
        if (ng == 8) {
          si = _mm256_loadu_si256((const __m256i *)sr);
        } else {
          int32_t t[8] = {0};
          for (int i = 0; i < ng; i++)
            t[i] = sr[i];
          si = _mm256_loadu_si256((const __m256i *)t);
        }
        __m256 s8 = _mm256_cvtepi32_ps(_mm256_slli_epi32(si, 3));
        QK_UNROLL
        for (int j = 0; j < NR; j++)
          acc[r][j] = _mm512_sub_ps(acc[r][j], _mm512_zextps256_ps512(_mm256_mul_ps(sc[r][j], s8)));
      }
    for (int p = 0; p < ng; p += 2) {
      const int b = b0 + p;
      __m512i xv[4], ax[4];
      __mmask64 neg[4];
      const __m512i idx =
          q4 ? _mm512_setr_epi32(p, p, p, p, p + 1, p + 1, p + 1, p + 1, p, p, p, p, p + 1, p + 1, p + 1, p + 1)
             : _mm512_setr_epi32(p, p, p, p, p, p, p, p, p + 1, p + 1, p + 1, p + 1, p + 1, p + 1, p + 1, p + 1);
      QK_UNROLL
      for (int r = 0; r < MR; r++) {
        xv[r] = _mm512_loadu_si512((const void *)(x + (size_t)r * K + 32 * b));
        if (q4) { /* x permuted to the nibbles' order */
          xv[r] = _mm512_shuffle_i64x2(xv[r], xv[r], _MM_SHUFFLE(3, 1, 2, 0));
          ax[r] = zero;
          neg[r] = 0;
        } else {
          neg[r] = _mm512_movepi8_mask(xv[r]);
          ax[r] = _mm512_abs_epi8(xv[r]);
        }
      }
      QK_UNROLL
      for (int j = 0; j < NR; j++) {
        __m512i wv;
        if (q4) { /* the 32 bytes in both halves, the upper one shifted right by 4: then the low nibbles */
          __m512i raw = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + j * wrow + 16 * b)));
          wv = _mm512_and_si512(_mm512_srlv_epi16(raw, shift), lo4);
        } else {
          wv = _mm512_loadu_si512((const void *)(w + j * wrow + 32 * b));
        }
        QK_UNROLL
        for (int r = 0; r < MR; r++) {
          __m512i iv = q4 ? _mm512_dpbusd_epi32(zero, wv, xv[r])
                          : _mm512_dpbusd_epi32(zero, ax[r], _mm512_mask_sub_epi8(wv, neg[r], zero, wv));
          __m512 s = _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(sc[r][j]));
          acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iv), s, acc[r][j]);
        }
      }
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < NR; j++)
      put_f(c, m + r, n + j, _mm512_reduce_add_ps(acc[r][j]));
}

/* i8_row with K % 64 == 0: 64 bytes per vpdpbusd, exact int32 sums, one scale */
static inline __attribute__((always_inline)) QK_T512 void tile512_i8(const LinQ *c, int m, int n, const int MR,
                                                                     const int NR) {
  const int K = c->K;
  const int8_t *x = c->xq + (size_t)m * K, *w = (const int8_t *)c->W + (size_t)n * K;
  const __m512i zero = _mm512_setzero_si512();
  __m512i acc[4][4];
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < NR; j++)
      acc[r][j] = zero;
  for (int k = 0; k < K; k += 64) {
    __m512i xv[4], ax[4];
    __mmask64 neg[4];
    QK_UNROLL
    for (int r = 0; r < MR; r++) {
      xv[r] = _mm512_loadu_si512((const void *)(x + (size_t)r * K + k));
      neg[r] = _mm512_movepi8_mask(xv[r]);
      ax[r] = _mm512_abs_epi8(xv[r]);
    }
    QK_UNROLL
    for (int j = 0; j < NR; j++) {
      __m512i wv = _mm512_loadu_si512((const void *)(w + (size_t)j * K + k));
      QK_UNROLL
      for (int r = 0; r < MR; r++)
        acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], ax[r], _mm512_mask_sub_epi8(wv, neg[r], zero, wv));
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < NR; j++)
      put_i8(c, m + r, n + j, _mm512_reduce_add_epi32(acc[r][j]));
}

/* fmt: 0 q8_0, 1 q4_0, 2 i8_row */
static inline __attribute__((always_inline)) QK_T512 void any512(const LinQ *c, int m, int n, const int MR,
                                                                 const int NR, const int fmt) {
  if (fmt == 2)
    tile512_i8(c, m, n, MR, NR);
  else
    tile512(c, m, n, MR, NR, fmt);
}

static inline __attribute__((always_inline)) QK_T512 void rows512(const LinQ *c, int m0, int m1, int n, const int NR,
                                                                  const int fmt) {
  int m = m0;
  for (; m + 4 <= m1; m += 4)
    any512(c, m, n, 4, NR, fmt);
  switch (m1 - m) {
  case 3: any512(c, m, n, 3, NR, fmt); break;
  case 2: any512(c, m, n, 2, NR, fmt); break;
  case 1: any512(c, m, n, 1, NR, fmt); break;
  default: break;
  }
}

static QK_T512 void run512(const LinQ *c, int m0, int m1, int n0, int n1, const int fmt) {
  int n = n0;
  if (m1 - m0 == 1) {
    for (; n + 4 <= n1; n += 4)
      any512(c, m0, n, 1, 4, fmt);
    for (; n < n1; n++)
      any512(c, m0, n, 1, 1, fmt);
    return;
  }
  for (; n + 2 <= n1; n += 2)
    rows512(c, m0, m1, n, 2, fmt);
  for (; n < n1; n++)
    rows512(c, m0, m1, n, 1, fmt);
}

static QK_T512 void run_vnni512_wide(const LinQ *c, int m0, int m1, int n0, int n1) {
  if (c->K % 64)
    run_vnni512(c, m0, m1, n0, n1);
  else if (c->fmt == RT_FMT_I8_ROW)
    run512(c, m0, m1, n0, n1, 2);
  else if (c->fmt == RT_FMT_Q4_0)
    run512(c, m0, m1, n0, n1, 1);
  else
    run512(c, m0, m1, n0, n1, 0);
}

/* ---- q8_0 and q4_0 batches (M >= RT_QP_MIN_ROWS) with AVX512-VNNI: packed weight panels -----
 * The tiles above sum each block's 64 byte products along K in vector lanes, so every block and
 * pair of rows pays a conversion, a permute and an FMA for one or two vpdpbusd. Here the lanes are
 * columns instead: a column block (qp_cols_block(K), a multiple of QP_NC = 32) is repacked, QP_KB
 * blocks of K at a time, into a panel on the stack (qp_pack): per block b and step s (k = 32 b +
 * 4 s .. + 3), 128 bytes holding the 4 weights of each of the 32 columns (two zmm of 16 columns),
 * as s8 (q4_0: the nibble - 8), with per block and column corr = -128 sum_k w and the f32 scale
 * dw. The activations are flipped to u8 (x + 128 = x ^ 0x80, once per call in qp_linear), so
 * vpdpbusd(x + 128 broadcast, w) over a block's 8 steps, started from corr, leaves in each lane the
 * exact int32 sum_k x w of one row and column: no horizontal sums. Then one cvt, one vmulps (the
 * scale dx_b * dw_b) and one FMA per block per 16 outputs. Tiles of 4 rows x 32 columns (8 int32
 * and 8 f32 accumulators; 3, 2, 1 rows at the end of M; masked columns at the end of N) run over
 * every row of x against the panel while it is in L1. Between the K chunks the running f32 sums
 * wait in y; each output is one FMA chain over its blocks in order, so the bits depend on neither
 * the chunks, the tiles nor the thread count. */
enum { QP_NC = 32, QP_KB = 16 };

typedef struct QPanel {
  int8_t w[QP_KB][8][QP_NC * 4]; /* block, step: column i's 4 weights at bytes 4 i .. 4 i + 3 */
  int32_t corr[QP_KB][QP_NC];    /* -128 * the block's sum of w, per column */
  float dw[QP_KB][QP_NC];        /* the block's scale, per column */
} QPanel;

/* the column blocks of this path: rt_lin_cols_block(K) rounded up to whole panels */
static int qp_cols_block(int K) { return (rt_lin_cols_block(K) + QP_NC - 1) / QP_NC * QP_NC; }

/* columns [n0, min(n0 + 32, n1)) (the rest zero), blocks [b0, b0 + kb) into p */
static QK_T512 void qp_pack(QPanel *p, const LinQ *c, int n0, int n1, int b0, int kb) {
  const int K = c->K, nb = c->nb, q4 = c->fmt == RT_FMT_Q4_0, nc = n1 - n0 < QP_NC ? n1 - n0 : QP_NC;
  const size_t wrow = q4 ? (size_t)K / 2 : (size_t)K;
  for (int i = 0; i < QP_NC; i++) {
    const uint8_t *src = i < nc ? (const uint8_t *)c->W + (size_t)(n0 + i) * wrow : NULL;
    for (int b = 0; b < kb; b++) {
      p->dw[b][i] = src ? _cvtsh_ss(c->ws[(size_t)(n0 + i) * nb + b0 + b]) : 0.0f;
      for (int s = 0; s < 8; s++) {
        uint32_t u = 0;
        if (src && q4) { /* byte j: weight j low, j + 16 high; stored as nibbles, - 8 below */
          memcpy(&u, src + 16 * (b0 + b) + 4 * (s & 3), 4);
          u = (s < 4 ? u : u >> 4) & 0x0f0f0f0fu;
        } else if (src) {
          memcpy(&u, src + 32 * (b0 + b) + 4 * s, 4);
        } else if (q4) {
          u = 0x08080808u;
        }
        memcpy(&p->w[b][s][4 * i], &u, 4);
      }
    }
  }
  const __m512i ones = _mm512_set1_epi8(1), eight = _mm512_set1_epi8(8), zero = _mm512_setzero_si512();
  for (int b = 0; b < kb; b++)
    for (int h = 0; h < QP_NC / 16; h++) {
      __m512i sum = zero;
      for (int s = 0; s < 8; s++) {
        __m512i v = _mm512_loadu_si512((const void *)&p->w[b][s][64 * h]);
        if (q4) {
          v = _mm512_sub_epi8(v, eight);
          _mm512_storeu_si512((void *)&p->w[b][s][64 * h], v);
        }
        sum = _mm512_dpbusd_epi32(sum, ones, v);
      }
      _mm512_storeu_si512((void *)&p->corr[b][16 * h], _mm512_sub_epi32(zero, _mm512_slli_epi32(sum, 7)));
    }
}

static inline QK_T512 __m512i qp_bcast4(const int8_t *x) {
  int32_t v;
  memcpy(&v, x, 4);
  return _mm512_set1_epi32(v);
}

/* rows m .. m + MR - 1 against the panel's 32 columns from n0 (mk: the valid ones of each 16) */
static inline __attribute__((always_inline)) QK_T512 void qp_tile(const LinQ *c, const QPanel *p, int m, int n0,
                                                                  int b0, int kb, const __mmask16 mk[2], int first,
                                                                  int last, const int MR) {
  const int K = c->K, nb = c->nb, N = c->N;
  __m512 acc[4][2];
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < 2; j++)
      acc[r][j] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk[j], c->y + (size_t)(m + r) * N + n0 + 16 * j);
  for (int b = 0; b < kb; b++) {
    const int8_t *x = c->xq + (size_t)m * K + 32 * (b0 + b);
    __m512i ia[4][2];
    QK_UNROLL
    for (int j = 0; j < 2; j++) {
      __m512i corr = _mm512_loadu_si512((const void *)&p->corr[b][16 * j]);
      QK_UNROLL
      for (int r = 0; r < MR; r++)
        ia[r][j] = corr;
    }
    QK_UNROLL
    for (int s = 0; s < 8; s++) {
      __m512i w0 = _mm512_loadu_si512((const void *)&p->w[b][s][0]);
      __m512i w1 = _mm512_loadu_si512((const void *)&p->w[b][s][64]);
      QK_UNROLL
      for (int r = 0; r < MR; r++) {
        __m512i xv = qp_bcast4(x + (size_t)r * K + 4 * s);
        ia[r][0] = _mm512_dpbusd_epi32(ia[r][0], xv, w0);
        ia[r][1] = _mm512_dpbusd_epi32(ia[r][1], xv, w1);
      }
    }
    const __m512 dw0 = _mm512_loadu_ps(&p->dw[b][0]), dw1 = _mm512_loadu_ps(&p->dw[b][16]);
    QK_UNROLL
    for (int r = 0; r < MR; r++) {
      const __m512 dx = _mm512_set1_ps(c->dx[(size_t)(m + r) * nb + b0 + b]);
      acc[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[r][0]), _mm512_mul_ps(dx, dw0), acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[r][1]), _mm512_mul_ps(dx, dw1), acc[r][1]);
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < 2; j++) {
      __m512 v = acc[r][j];
      if (last && c->bias)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk[j], c->bias + n0 + 16 * j));
      _mm512_mask_storeu_ps(c->y + (size_t)(m + r) * N + n0 + 16 * j, mk[j], v);
    }
}

/* columns [lo, hi) of y for every row: panel by panel, QP_KB blocks at a time */
static QK_T512 void qp_block(void *ctx, int lo, int hi) {
  const LinQ *c = ctx;
  QPanel p;
  for (int n0 = lo; n0 < hi; n0 += QP_NC) {
    __mmask16 mk[2];
    for (int j = 0; j < 2; j++) {
      int v = hi - n0 - 16 * j;
      mk[j] = v >= 16 ? (__mmask16)0xffff : v <= 0 ? (__mmask16)0 : (__mmask16)((1u << v) - 1);
    }
    for (int b0 = 0; b0 < c->nb; b0 += QP_KB) {
      const int kb = c->nb - b0 < QP_KB ? c->nb - b0 : QP_KB, first = b0 == 0, last = b0 + kb == c->nb;
      qp_pack(&p, c, n0, hi, b0, kb);
      int m = 0;
      for (; m + 4 <= c->M; m += 4)
        qp_tile(c, &p, m, n0, b0, kb, mk, first, last, 4);
      switch (c->M - m) {
      case 3: qp_tile(c, &p, m, n0, b0, kb, mk, first, last, 3); break;
      case 2: qp_tile(c, &p, m, n0, b0, kb, mk, first, last, 2); break;
      case 1: qp_tile(c, &p, m, n0, b0, kb, mk, first, last, 1); break;
      default: break;
      }
    }
  }
}

/* the batch path: x + 128 as u8 (in place: this call reads xq nowhere else), then the blocks */
static QK_T512 void qp_linear(LinQ *c) {
  uint8_t *q = (uint8_t *)c->xq;
  size_t n = (size_t)c->M * c->K, i = 0;
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  for (; i + 64 <= n; i += 64)
    _mm512_storeu_si512((void *)(q + i), _mm512_xor_si512(_mm512_loadu_si512((const void *)(q + i)), flip));
  for (; i < n; i++)
    q[i] ^= 0x80;
  rt_parallel_blocks(c->N, qp_cols_block(c->K), qp_block, c);
}
#endif

typedef struct QImpl {
  const char *name;
  void (*act)(int8_t *q, float *d, int32_t *sum, const float *x, int M, int K, int per_row);
  void (*run)(const LinQ *c, int m0, int m1, int n0, int n1);
  void (*batch)(LinQ *c); /* q8_0 / q4_0 at M >= RT_QP_MIN_ROWS, or NULL: run's tiles */
} QImpl;

static void act_portable(int8_t *q, float *d, int32_t *sum, const float *x, int M, int K, int per_row) {
  rt_quant_act_ref(per_row ? RT_FMT_I8_ROW : RT_FMT_Q8_0, q, d, sum, x, M, K);
}

/* the implementation for this CPU, chosen once (racing first calls choose the same) */
static const QImpl *impl(void) {
  static const QImpl *chosen;
  if (chosen)
    return chosen;
  static const QImpl portable = {"portable", act_portable, run_portable, NULL};
  const QImpl *p = &portable;
#ifdef QK_X86
  static const QImpl avx2 = {"avx2", act_avx2, run_avx2, NULL},
                     avxvnni = {"avx_vnni", act_avxvnni, run_avxvnni, NULL},
                     vnni512 = {"avx512_vnni", act_vnni512, run_vnni512_wide, qp_linear};
  const RtCpu *cpu = rt_cpu();
  if (cpu->avx2 && cpu->fma && cpu->f16c) {
    p = &avx2;
    if (cpu->avx_vnni)
      p = &avxvnni;
    if (cpu->avx512_vnni && cpu->avx512vl && cpu->avx512bw)
      p = &vnni512;
  }
#endif
  chosen = p;
  return p;
}

const char *rt_quant_isa(void) { return impl()->name; }

void rt_quant_act(RtFormat f, int8_t *q, float *d, int32_t *sum, const float *x, int M, int K) {
  impl()->act(q, d, sum, x, M, K, f == RT_FMT_I8_ROW);
}

/* ---- the kernels --------------------------------------------------------------------------- */

/* The scratch: the int8 activations, their scales, their block sums, and for i8_row at
 * M >= RT_QDNNL_MIN_ROWS the int32 products; each slice rounded up to a cache line. */
static size_t act_floats(int M, int K) { return rt_slice_floats(((size_t)M * K + 3) / 4); }
static int groups(int format, int K) { return format == RT_FMT_I8_ROW ? 1 : K / 32 > 0 ? K / 32 : 1; }

size_t rt_linear_q_scratch_floats(int format, int M, int N, int K) {
  M = M > 0 ? M : 1, N = N > 0 ? N : 1, K = K > 0 ? K : 1;
  size_t g = (size_t)M * groups(format, K);
  size_t n = act_floats(M, K) + 2 * rt_slice_floats(g);
  if (format == RT_FMT_I8_ROW && M >= RT_QDNNL_MIN_ROWS)
    n += rt_slice_floats((size_t)M * N);
  return n;
}

static void cols_block(void *p, int lo, int hi) {
  const LinQ *c = p;
  c->run(c, 0, c->M, lo, hi);
}

/* rows [lo,hi) of i8_row through oneDNN (or, if it declines, the own kernel), then the epilogue */
static void dnnl_rows(void *p, int lo, int hi) {
  const LinQ *c = p;
  int32_t *C = c->c32 + (size_t)lo * c->N;
  if (rt_gemm_s8s8s32(hi - lo, c->N, c->K, c->xq + (size_t)lo * c->K, c->W, C) == 0) {
    for (int m = lo; m < hi; m++)
      for (int n = 0; n < c->N; n++)
        put_i8(c, m, n, C[(size_t)(m - lo) * c->N + n]);
  } else {
    c->run(c, lo, hi, 0, c->N);
  }
  if (c->epi)
    c->epi(c->ctx, lo, hi);
}

static int dnnl_int8_cpu(void) {
  const RtCpu *cpu = rt_cpu();
  return cpu->amx_int8 || cpu->avx512_vnni || cpu->avx_vnni;
}

static void linear_q(RtFormat f, float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K,
                     RtRangeFn epi, void *ctx, float *scratch) {
  if (M <= 0 || N <= 0)
    return;
  if (K <= 0) { /* an empty product: the bias (or zeros) and the epilogue, as rt_linear */
    rt_linear(y, x, NULL, bias, M, N, 0, epi, ctx);
    return;
  }
  const QImpl *im = impl();
  int nb = groups(f, K);
  const char *scales = (const char *)Wq + rt_quant_scales_offset(f, N, K);
  int8_t *xq = (int8_t *)scratch;
  float *dx = scratch + act_floats(M, K);
  int32_t *sx = (int32_t *)(dx + rt_slice_floats((size_t)M * nb));
  LinQ c = {y,       bias, Wq, (const float *)scales, (const uint16_t *)scales, xq, dx, sx, NULL, M, N, K, nb, (int)f,
            im->run, epi,  ctx};
  int batch = im->batch && f != RT_FMT_I8_ROW && M >= RT_QP_MIN_ROWS; /* no block sums needed there */
  im->act(xq, dx, f == RT_FMT_Q4_0 && !batch ? sx : NULL, x, M, K, f == RT_FMT_I8_ROW);
  if (batch) {
    im->batch(&c);
  } else if (f == RT_FMT_I8_ROW && M >= RT_QDNNL_MIN_ROWS && rt_gemm_onednn_built() && dnnl_int8_cpu()) {
    c.c32 = sx + rt_slice_floats((size_t)M * nb);
    rt_parallel_blocks(M, rt_gemm_rows_block(M), dnnl_rows, &c);
    return;
  } else {
    rt_parallel_blocks(N, rt_lin_cols_block(K), cols_block, &c);
  }
  rt_linear_epilogue(epi, ctx, M);
}

void rt_linear_i8_row(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K, RtRangeFn epi,
                      void *ctx, float *scratch) {
  linear_q(RT_FMT_I8_ROW, y, x, Wq, bias, M, N, K, epi, ctx, scratch);
}

void rt_linear_q8_0(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K, RtRangeFn epi,
                    void *ctx, float *scratch) {
  linear_q(RT_FMT_Q8_0, y, x, Wq, bias, M, N, K, epi, ctx, scratch);
}

void rt_linear_q4_0(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K, RtRangeFn epi,
                    void *ctx, float *scratch) {
  linear_q(RT_FMT_Q4_0, y, x, Wq, bias, M, N, K, epi, ctx, scratch);
}

/* The twins: the activations quantised by the scalar rule into their own buffers, then the
 * portable loops (exact integer dots, blocks summed in order). */
static void linear_q_ref(RtFormat f, float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K) {
  if (M <= 0 || N <= 0)
    return;
  if (K <= 0) {
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++)
        y[(size_t)m * N + n] = bias ? bias[n] : 0.0f;
    return;
  }
  int nb = groups(f, K);
  int8_t *xq = malloc((size_t)M * K);
  float *dx = malloc((size_t)M * nb * sizeof(float));
  int32_t *sx = malloc((size_t)M * nb * sizeof(int32_t));
  if (!xq || !dx || !sx) {
    free(xq), free(dx), free(sx);
    return;
  }
  rt_quant_act_ref(f, xq, dx, sx, x, M, K);
  const char *scales = (const char *)Wq + rt_quant_scales_offset(f, N, K);
  LinQ c = {y,    bias, Wq,  (const float *)scales, (const uint16_t *)scales, xq, dx, sx, NULL, M, N, K, nb, (int)f,
            NULL, NULL, NULL};
  run_portable(&c, 0, M, 0, N);
  free(xq), free(dx), free(sx);
}

void rt_linear_i8_row_ref(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K) {
  linear_q_ref(RT_FMT_I8_ROW, y, x, Wq, bias, M, N, K);
}

void rt_linear_q8_0_ref(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K) {
  linear_q_ref(RT_FMT_Q8_0, y, x, Wq, bias, M, N, K);
}

void rt_linear_q4_0_ref(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K) {
  linear_q_ref(RT_FMT_Q4_0, y, x, Wq, bias, M, N, K);
}

/* ---- embeddings: ids (n), a quantised table [V,C] -> out (n,C) f32 ----------------------- */

typedef struct EmbQ {
  float *out;
  const int32_t *ids;
  const void *table;
  int V, C;
  RtFormat f;
} EmbQ;

static void emb_rows(void *p, int lo, int hi) {
  const EmbQ *e = p;
  for (int i = lo; i < hi; i++) {
    float *o = e->out + (size_t)i * e->C;
    int32_t id = e->ids[i];
    if (id < 0 || id >= e->V)
      memset(o, 0, (size_t)e->C * sizeof(float));
    else
      rt_dequantize_row(e->f, o, e->table, e->V, e->C, id);
  }
}

static int embedding_q(RtFormat f, float *out, const int32_t *ids, const void *table, int n, int V, int C,
                       RtError *err) {
  EmbQ e = {out, ids, table, V, C, f};
  rt_parallel_for(n, rt_row_grain(C), emb_rows, &e);
  return rt_embedding_bad_id(ids, n, V, err);
}

int rt_embedding_quant_ref(RtFormat f, float *out, const int32_t *ids, const void *table, int n, int V, int C,
                           RtError *err) {
  float *deq = malloc((size_t)V * (size_t)C * sizeof(float) + 1);
  if (!deq) return rt_fail(err, "out of memory");
  rt_dequantize(f, deq, table, V, C);
  int rc = rt_gather_rows_ref(out, ids, deq, n, V, C, sizeof(float), err);
  free(deq);
  return rc;
}

int rt_embedding_i8_row(float *out, const int32_t *ids, const void *table, int n, int V, int C, RtError *err) {
  return embedding_q(RT_FMT_I8_ROW, out, ids, table, n, V, C, err);
}

int rt_embedding_q8_0(float *out, const int32_t *ids, const void *table, int n, int V, int C, RtError *err) {
  return embedding_q(RT_FMT_Q8_0, out, ids, table, n, V, C, err);
}

int rt_embedding_q4_0(float *out, const int32_t *ids, const void *table, int n, int V, int C, RtError *err) {
  return embedding_q(RT_FMT_Q4_0, out, ids, table, n, V, C, err);
}
