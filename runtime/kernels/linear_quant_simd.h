/* linear_quant_simd.h: the x86 SIMD bodies of the quantised linear kernels (linear_quant.c), written
 * once and compiled once per ISA: linear_quant.c includes this file three times, each time with
 *   QK_SUFFIX   the name suffix of the functions (avx2, avxvnni, vnni512),
 *   QK_TARGET   their __attribute__((target(...))),
 *   QK_DPBUSD   acc + (per 32-bit lane) the sum of four u8 x s8 byte products: vpdpbusd with VNNI,
 *               vpmaddubsw + vpmaddwd with AVX2 (its int16 pair sums cannot saturate here: the u8
 *               side is |x| <= 127 or a nibble <= 15, the s8 side |w| <= 128, so a pair is at
 *               most 2 * 127 * 128 = 32512).
 * The products are s8 x s8 for i8_row and q8_0: with the sign trick, |x| (u8) times w * sign(x)
 * (s8, vpsignb), which is x * w; and u8 x s8 for q4_0: the nibble q (0..15) times x, the block's
 * sum then corrected by -8 * sum(x) (the activation block sums are in the scratch). All on 256-bit
 * vectors (32 bytes: one block of q8_0 / q4_0).
 *
 * Tiles: MR rows of x against NR rows of W (MR * NR <= 8 accumulators), each weight chunk loaded
 * once per tile: 1 x 4 for decode (M == 1), 4 x 2 otherwise (3, 2, 1 rows at the end of M, 1 weight
 * row at the end of N). The tile
 * functions are always inlined with constant MR, NR, so the accumulators stay in registers. */

#define QK_CAT2(a, b) a##_##b
#define QK_CAT(a, b) QK_CAT2(a, b)
#define QK(name) QK_CAT(name, QK_SUFFIX)
#define QK_AI __attribute__((always_inline)) QK_TARGET
#define QK_UNROLL _Pragma("GCC unroll 4")

static inline QK_AI int32_t QK(hsum_i)(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

/* a fixed order of additions: the same bits on every call */
static inline QK_AI float QK(hsum_f)(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

/* ---- activation quantisation: the same bytes and scales as rt_quant_act_ref ---------------- */

/* max |x[i]| over n values: a max is exact, so any order gives the scalar loop's value */
static inline QK_AI float QK(amax)(const float *x, int n) {
  const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8)
    m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), abs));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  float a = _mm_cvtss_f32(h);
  for (; i < n; i++)
    a = fmaxf(a, fabsf(x[i]));
  return a;
}

/* q[i] = round-to-nearest-even(x[i] * inv) for n values: vcvtps2dq under the default MXCSR is
 * lrintf; |x * inv| <= 127.5 (quant_group), so the saturating packs never saturate */
static inline QK_AI void QK(round_run)(int8_t *q, const float *x, int n, float inv) {
  const __m256 vi = _mm256_set1_ps(inv);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
    __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vi));
    __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), vi));
    __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), vi));
    /* the packs interleave the 128-bit lanes: dwords come out as 0 2 4 6 1 3 5 7 */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(p, perm));
  }
  for (; i < n; i++)
    q[i] = (int8_t)lrintf(x[i] * inv);
}

static QK_TARGET void QK(act)(int8_t *q, float *d, int32_t *sum, const float *x, int M, int K, int per_row) {
  int g = per_row ? K : 32, ng = K / g;
  for (int i = 0; i < M * ng; i++) {
    const float *xs = x + (size_t)i * g;
    float amax = QK(amax)(xs, g);
    d[i] = amax / 127.0f;
    QK(round_run)(q + (size_t)i * g, xs, g, amax > 0.0f ? 127.0f / amax : 0.0f);
    if (sum)
      sum[i] = qsum(q + (size_t)i * g, g);
  }
}

/* ---- the tiles ----------------------------------------------------------------------------- */

/* i8_row: exact int32 sums over K (32 bytes at a time, the K % 32 tail in scalar), one scale */
static inline QK_AI void QK(tile_i8)(const LinQ *c, int m, int n, const int MR, const int NR) {
  const int K = c->K;
  const int8_t *x = c->xq + (size_t)m * K, *w = (const int8_t *)c->W + (size_t)n * K;
  __m256i acc[4][4];
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < NR; j++)
      acc[r][j] = _mm256_setzero_si256();
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    __m256i xv[4], ax[4];
    QK_UNROLL
    for (int r = 0; r < MR; r++) {
      xv[r] = _mm256_loadu_si256((const __m256i *)(x + (size_t)r * K + k));
      ax[r] = _mm256_sign_epi8(xv[r], xv[r]);
    }
    QK_UNROLL
    for (int j = 0; j < NR; j++) {
      __m256i wv = _mm256_loadu_si256((const __m256i *)(w + (size_t)j * K + k));
      QK_UNROLL
      for (int r = 0; r < MR; r++)
        acc[r][j] = QK_DPBUSD(acc[r][j], ax[r], _mm256_sign_epi8(wv, xv[r]));
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < NR; j++)
      put_i8(c, m + r, n + j,
             QK(hsum_i)(acc[r][j]) + idot(x + (size_t)r * K + k, w + (size_t)j * K + k, K - k));
}

/* dx[i] * dw[i] (f16) for i < ng <= 8, the lanes from ng on zero: the scales of 8 blocks at once */
static inline QK_AI __m256 QK(scales8)(const float *dx, const uint16_t *dw, int ng) {
  if (ng == 8)
    return _mm256_mul_ps(_mm256_loadu_ps(dx), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dw)));
  float t[8] = {0};
  for (int i = 0; i < ng; i++)
    t[i] = dx[i] * _cvtsh_ss(dw[i]);
  return _mm256_loadu_ps(t);
}

/* q8_0 and q4_0 (q4 != 0): per block an exact int32 sum in 8 lanes, scaled by dx_b * dw_b into 8
 * f32 lanes. q4_0's nibbles are unpacked to 32 u8 in x's order (low nibbles are weights 0..15,
 * high ones 16..31) and its block sums corrected by -8 sum(x) in lane 0. */
static inline QK_AI void QK(tile_blk)(const LinQ *c, int m, int n, const int MR, const int NR, const int q4) {
  const int K = c->K, nb = c->nb;
  const size_t wrow = q4 ? (size_t)K / 2 : (size_t)K; /* bytes per weight row */
  const int8_t *x = c->xq + (size_t)m * K;
  const uint8_t *w = (const uint8_t *)c->W + (size_t)n * wrow;
  const float *dx = c->dx + (size_t)m * nb;
  const int32_t *sx = c->sx + (size_t)m * nb;
  const uint16_t *dw = c->ws + (size_t)n * nb;
  const __m256i lo4 = _mm256_set1_epi8(15);
  __m256 acc[4][4];
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < NR; j++)
      acc[r][j] = _mm256_setzero_ps();
  for (int b0 = 0; b0 < nb; b0 += 8) {
    /* the scales dx_b * dw_b of 8 blocks at once (vcvtph2ps, one vmulps), read back by broadcasts */
    const int ng = nb - b0 < 8 ? nb - b0 : 8;
    float sc[8][8];
    QK_UNROLL
    for (int r = 0; r < MR; r++)
      QK_UNROLL
      for (int j = 0; j < NR; j++)
        _mm256_storeu_ps(sc[r * NR + j], QK(scales8)(dx + (size_t)r * nb + b0, dw + (size_t)j * nb + b0, ng));
    for (int b = b0; b < b0 + ng; b++) {
      __m256i xv[4], ax[4];
      QK_UNROLL
      for (int r = 0; r < MR; r++) {
        xv[r] = _mm256_loadu_si256((const __m256i *)(x + (size_t)r * K + 32 * b));
        /* q8_0: |x|; q4_0: the correction -8 sum(x) of the block, in lane 0 */
        ax[r] = q4 ? _mm256_setr_epi32(8 * sx[(size_t)r * nb + b], 0, 0, 0, 0, 0, 0, 0)
                   : _mm256_sign_epi8(xv[r], xv[r]);
      }
      QK_UNROLL
      for (int j = 0; j < NR; j++) {
        __m256i wv;
        if (q4) {
          __m128i raw = _mm_loadu_si128((const __m128i *)(w + j * wrow + 16 * b));
          wv = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), lo4);
        } else {
          wv = _mm256_loadu_si256((const __m256i *)(w + j * wrow + 32 * b));
        }
        QK_UNROLL
        for (int r = 0; r < MR; r++) {
          __m256i iv = q4 ? _mm256_sub_epi32(QK_DPBUSD(_mm256_setzero_si256(), wv, xv[r]), ax[r])
                          : QK_DPBUSD(_mm256_setzero_si256(), ax[r], _mm256_sign_epi8(wv, xv[r]));
          acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iv), _mm256_broadcast_ss(&sc[r * NR + j][b - b0]), acc[r][j]);
        }
      }
    }
  }
  QK_UNROLL
  for (int r = 0; r < MR; r++)
    QK_UNROLL
    for (int j = 0; j < NR; j++)
      put_f(c, m + r, n + j, QK(hsum_f)(acc[r][j]));
}

static inline QK_AI void QK(tile)(const LinQ *c, int m, int n, const int MR, const int NR) {
  switch (c->fmt) {
  case RT_FMT_I8_ROW: QK(tile_i8)(c, m, n, MR, NR); break;
  case RT_FMT_Q8_0: QK(tile_blk)(c, m, n, MR, NR, 0); break;
  default: QK(tile_blk)(c, m, n, MR, NR, 1); break;
  }
}

/* rows m0..m1 of x against NR rows of W from n: tiles of 4 rows, then the 1..3 left */
static inline QK_AI void QK(rows)(const LinQ *c, int m0, int m1, int n, const int NR) {
  int m = m0;
  for (; m + 4 <= m1; m += 4)
    QK(tile)(c, m, n, 4, NR);
  switch (m1 - m) {
  case 3: QK(tile)(c, m, n, 3, NR); break;
  case 2: QK(tile)(c, m, n, 2, NR); break;
  case 1: QK(tile)(c, m, n, 1, NR); break;
  default: break;
  }
}

/* y[m0..m1, n0..n1) (bias added; no epilogue) */
static QK_TARGET void QK(run)(const LinQ *c, int m0, int m1, int n0, int n1) {
  if (m1 - m0 == 1) {
    int n = n0;
    for (; n + 4 <= n1; n += 4)
      QK(tile)(c, m0, n, 1, 4);
    for (; n < n1; n++)
      QK(tile)(c, m0, n, 1, 1);
    return;
  }
  int n = n0;
  for (; n + 2 <= n1; n += 2)
    QK(rows)(c, m0, m1, n, 2);
  for (; n < n1; n++)
    QK(rows)(c, m0, m1, n, 1);
}

#undef QK_SUFFIX
#undef QK_TARGET
#undef QK_DPBUSD
