/* convert.c: element-wise conversions between f32 and the 16-bit float types, the kernels behind
 * the IR's cast op (mixed-precision training stores activations in 16 bits). The fast versions
 * are branch-free loops (bf16: with an AVX-512F path, else what the compiler vectorises) or the
 * CPU's F16C instructions (f16; both checked at run time by core/cpu.c); the `_ref` twins convert one element at a time with rt_f32_to_bf16 and
 * friends (core/dtype.c). Both round to nearest even and agree bit for bit. */
#include "core.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define RT_HAVE_F16C_PATH 1
#endif

#ifdef RT_HAVE_F16C_PATH
/* The scalar loop below, 16 lanes at a time with AVX-512F integer ops: the same round to nearest
 * even and the same NaN rule, so the same bits (AVX512-BF16's vcvtneps2bf16 is not used: it
 * flushes denormal inputs to zero). */
__attribute__((target("avx512f"))) static size_t f32_bf16_avx512(uint16_t *out, const float *x, size_t n) {
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff), abs = _mm512_set1_epi32(0x7fffffff),
                inf = _mm512_set1_epi32(0x7f800000), quiet = _mm512_set1_epi32(0x40);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i u = _mm512_loadu_si512((const void *)(x + i)), hi = _mm512_srli_epi32(u, 16);
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(hi, one)), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs), inf);
    r = _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(hi, quiet));
    _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtepi32_epi16(r));
  }
  return i;
}
#endif

void rt_cast_f32_bf16(uint16_t *out, const float *x, size_t n) {
  size_t i = 0;
#ifdef RT_HAVE_F16C_PATH
  if (rt_cpu()->avx512f) i = f32_bf16_avx512(out, x, n);
#endif
  for (; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], sizeof u);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = (u >> 16) | 0x40u;
    out[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : r);
  }
}

void rt_cast_bf16_f32(float *out, const uint16_t *x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)x[i] << 16;
    memcpy(&out[i], &u, sizeof u);
  }
}

#ifdef RT_HAVE_F16C_PATH
__attribute__((target("avx,f16c"))) static size_t f32_f16_hw(uint16_t *out, const float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  return i;
}
__attribute__((target("avx,f16c"))) static size_t f16_f32_hw(float *out, const uint16_t *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
  return i;
}
static int have_f16c(void) { return rt_cpu()->f16c; }
#endif

void rt_cast_f32_f16(uint16_t *out, const float *x, size_t n) {
  size_t i = 0;
#ifdef RT_HAVE_F16C_PATH
  if (have_f16c()) i = f32_f16_hw(out, x, n);
#endif
  for (; i < n; i++) out[i] = rt_f32_to_f16(x[i]);
}

void rt_cast_f16_f32(float *out, const uint16_t *x, size_t n) {
  size_t i = 0;
#ifdef RT_HAVE_F16C_PATH
  if (have_f16c()) i = f16_f32_hw(out, x, n);
#endif
  for (; i < n; i++) out[i] = rt_f16_to_f32(x[i]);
}

void rt_cast_f32_bf16_ref(uint16_t *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = rt_f32_to_bf16(x[i]);
}
void rt_cast_bf16_f32_ref(float *out, const uint16_t *x, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = rt_bf16_to_f32(x[i]);
}
void rt_cast_f32_f16_ref(uint16_t *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = rt_f32_to_f16(x[i]);
}
void rt_cast_f16_f32_ref(float *out, const uint16_t *x, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = rt_f16_to_f32(x[i]);
}
