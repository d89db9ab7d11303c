/* quant.c: the quantised weight formats (RtFormat, modelc_rt.h): their layouts and the rounding
 * that makes them (rt_quantize) and undoes them (rt_dequantize). The quantize pass stores weights
 * with these rules and the kernels (kernels/linear_quant.c) read them.
 *
 * Layout of an [N,K] weight: its values from byte 0, its scales at the values' size rounded up to
 * 64 bytes (rt_quant_scales_offset):
 *   i8_row  values int8 [N,K]              scales f32 [N]
 *   q8_0    values int8 [N,K]              scales f16 [N,K/32]  (blocks of 32 along K)
 *   q4_0    values u8 [N,K/2], 16 a block  scales f16 [N,K/32]
 * K must be a multiple of 32 for q8_0 and q4_0 (rt_quant_check); any K >= 1 for i8_row.
 *
 * Rounding of the weights (lrintf rounds to nearest even under the default rounding mode):
 *   i8_row  per row n: amax = max_k |w|; d = amax / 127 (f32, stored);
 *           q = clamp(lrintf(w * (127.0f / amax)), -127, 127); amax == 0: d = 0 and every q = 0.
 *           Dequantised: w' = d * q (f32 product).
 *   q8_0    per block of 32 along K: amax = max |w|; d16 = rt_f32_to_f16(amax / 127) (stored);
 *           df = rt_f16_to_f32(d16); q = clamp(lrintf(w / df), -127, 127); df == 0 (amax 0, or an
 *           amax / 127 that underflows f16): every q = 0. Dequantised: w' = df * q.
 *   q4_0    ggml's Q4_0 rule, per block of 32: m = the element of largest |w|, its sign kept (the
 *           first of equal ones); d = m / -8 (f32); d16 = rt_f32_to_f16(d) (stored), df its value;
 *           id = df != 0 ? 1 / df : 0; q = clamp((int)floorf(w * id + 8.5f), 0, 15); byte j < 16 of
 *           the block's 16 bytes is q[j] | q[j+16] << 4. Dequantised: w' = df * (q - 8). So the
 *           element m itself is q = 0 (w' = m, up to d16's rounding) and the opposite end of the
 *           range is clipped at q = 15 (w' = -7/8 m). An all-zero block: m = 0, d = -0 (stored as
 *           0x8000), every q = 8 (bytes 0x88).
 * A non-finite weight, or a block scale that overflows f16 (amax / 127 or |m| / 8 >= 65520), is an
 * error (-1, naming the row and column), never a silent NaN or infinite scale. Since
 * |w| <= amax, |w * (127 / amax)| <= 127 (1 + 2^-23)^2 < 127.5, so i8_row's clamp never acts;
 * q8_0's can, by one step, when d16 rounded amax / 127 down. */
#include "core.h"

#include <math.h>
#include <string.h>

static int is_block(RtFormat f) { return f == RT_FMT_Q8_0 || f == RT_FMT_Q4_0; }
static int is_quant(RtFormat f) { return f == RT_FMT_I8_ROW || is_block(f); }

int64_t rt_quant_values_bytes(RtFormat f, int64_t N, int64_t K) {
  if (!is_quant(f))
    return 0;
  return f == RT_FMT_Q4_0 ? N * K / 2 : N * K;
}

int64_t rt_quant_scales_offset(RtFormat f, int64_t N, int64_t K) {
  return (rt_quant_values_bytes(f, N, K) + 63) / 64 * 64;
}

RtDType rt_quant_scale_dtype(RtFormat f) {
  return f == RT_FMT_I8_ROW ? RT_DT_F32 : is_block(f) ? RT_DT_F16 : RT_DT_INVALID;
}

RtDType rt_quant_value_dtype(RtFormat f) {
  return f == RT_FMT_Q4_0 ? RT_DT_U8 : is_quant(f) ? RT_DT_I8 : RT_DT_INVALID;
}

int64_t rt_quant_scale_count(RtFormat f, int64_t N, int64_t K) {
  return f == RT_FMT_I8_ROW ? N : is_block(f) ? N * (K / 32) : 0;
}

int64_t rt_quant_scales_bytes(RtFormat f, int64_t N, int64_t K) {
  return rt_quant_scale_count(f, N, K) * (int64_t)rt_dtype_size(rt_quant_scale_dtype(f));
}

int64_t rt_quant_bytes(RtFormat f, int64_t N, int64_t K) {
  return is_quant(f) ? rt_quant_scales_offset(f, N, K) + rt_quant_scales_bytes(f, N, K) : 0;
}

const char *rt_format_name(RtFormat f) {
  switch (f) {
  case RT_FMT_DENSE: return "dense";
  case RT_FMT_I8_ROW: return "i8_row";
  case RT_FMT_Q8_0: return "q8_0";
  case RT_FMT_Q4_0: return "q4_0";
  case RT_FMT_CSR: return "csr";
  default: return "?";
  }
}

int rt_quant_check(RtFormat f, int64_t N, int64_t K, RtError *err) {
  if (f == RT_FMT_DENSE)
    return 0;
  if (!is_quant(f))
    return rt_fail(err, "quantize: unknown weight format %d", (int)f);
  if (N < 1 || K < 1)
    return rt_fail(err, "quantize: a %s weight needs a non-empty [N,K] shape, not [%lld,%lld]", rt_format_name(f),
                   (long long)N, (long long)K);
  if (is_block(f) && K % 32 != 0)
    return rt_fail(err,
                   "quantize: %s stores blocks of 32 weights along K, but K = %lld is not a multiple of 32 "
                   "(use i8_row for this weight)",
                   rt_format_name(f), (long long)K);
  return 0;
}

static int clampi(long v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)v; }

/* the f16 scale of a block, or -1 (err) when it overflows f16 */
static int block_scale(uint16_t *d16, float d, int64_t n, int64_t k, RtError *err) {
  *d16 = rt_f32_to_f16(d);
  if (isinf(rt_f16_to_f32(*d16)))
    return rt_fail(err, "quantize: weight row %lld, block at column %lld: the scale %g overflows f16", (long long)n,
                   (long long)k, (double)d);
  return 0;
}

static int quant_row(RtFormat f, unsigned char *v, unsigned char *s, const float *w, int64_t n, int64_t K,
                     RtError *err) {
  if (f == RT_FMT_I8_ROW) {
    float amax = 0.0f;
    for (int64_t k = 0; k < K; k++)
      amax = fmaxf(amax, fabsf(w[k]));
    float d = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t k = 0; k < K; k++)
      ((int8_t *)v)[n * K + k] = (int8_t)(amax > 0.0f ? clampi(lrintf(w[k] * inv), -127, 127) : 0);
    memcpy(s + n * sizeof(float), &d, sizeof d);
    return 0;
  }
  for (int64_t b = 0; b < K / 32; b++) {
    const float *x = w + 32 * b;
    uint16_t d16;
    if (f == RT_FMT_Q8_0) {
      float amax = 0.0f;
      for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
      if (block_scale(&d16, amax / 127.0f, n, 32 * b, err))
        return -1;
      float df = rt_f16_to_f32(d16);
      int8_t *q = (int8_t *)v + n * K + 32 * b;
      for (int j = 0; j < 32; j++)
        q[j] = (int8_t)(df != 0.0f ? clampi(lrintf(x[j] / df), -127, 127) : 0);
    } else {
      float m = 0.0f, am = 0.0f;
      for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > am) /* strictly: the first of equal magnitudes */
          am = fabsf(x[j]), m = x[j];
      if (block_scale(&d16, m / -8.0f, n, 32 * b, err))
        return -1;
      float df = rt_f16_to_f32(d16), id = df != 0.0f ? 1.0f / df : 0.0f;
      unsigned char *q = v + n * (K / 2) + 16 * b;
      for (int j = 0; j < 16; j++) {
        int lo = clampi((long)floorf(x[j] * id + 8.5f), 0, 15), hi = clampi((long)floorf(x[j + 16] * id + 8.5f), 0, 15);
        q[j] = (unsigned char)(lo | hi << 4);
      }
    }
    memcpy(s + (n * (K / 32) + b) * sizeof d16, &d16, sizeof d16);
  }
  return 0;
}

int rt_quantize(RtFormat f, void *dst, const float *src, int64_t N, int64_t K, RtError *err) {
  if (rt_quant_check(f, N, K, err))
    return -1;
  if (f == RT_FMT_DENSE) {
    memcpy(dst, src, (size_t)(N * K) * sizeof(float));
    return 0;
  }
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++)
      if (!isfinite(src[n * K + k]))
        return rt_fail(err, "quantize: weight [%lld,%lld] is %g: only finite weights can be quantised", (long long)n,
                       (long long)k, (double)src[n * K + k]);
  unsigned char *v = dst, *s = v + rt_quant_scales_offset(f, N, K);
  memset(v + rt_quant_values_bytes(f, N, K), 0, (size_t)(s - v - rt_quant_values_bytes(f, N, K))); /* the padding */
  for (int64_t n = 0; n < N; n++)
    if (quant_row(f, v, s, src + n * K, n, K, err))
      return -1;
  return 0;
}

void rt_dequantize_row(RtFormat f, float *dst, const void *src, int64_t N, int64_t K, int64_t n) {
  const unsigned char *v = src, *s = v + rt_quant_scales_offset(f, N, K);
  if (f == RT_FMT_DENSE) {
    memcpy(dst, (const float *)src + n * K, (size_t)K * sizeof(float));
  } else if (f == RT_FMT_I8_ROW) {
    float d;
    memcpy(&d, s + n * sizeof d, sizeof d);
    const int8_t *q = (const int8_t *)v + n * K;
    for (int64_t k = 0; k < K; k++)
      dst[k] = d * (float)q[k];
  } else {
    for (int64_t b = 0; b < K / 32; b++) {
      uint16_t d16;
      memcpy(&d16, s + (n * (K / 32) + b) * sizeof d16, sizeof d16);
      float df = rt_f16_to_f32(d16), *o = dst + 32 * b;
      if (f == RT_FMT_Q8_0) {
        const int8_t *q = (const int8_t *)v + n * K + 32 * b;
        for (int j = 0; j < 32; j++)
          o[j] = df * (float)q[j];
      } else {
        const unsigned char *q = v + n * (K / 2) + 16 * b;
        for (int j = 0; j < 16; j++) {
          o[j] = df * (float)((q[j] & 15) - 8);
          o[j + 16] = df * (float)((q[j] >> 4) - 8);
        }
      }
    }
  }
}

void rt_dequantize(RtFormat f, float *dst, const void *src, int64_t N, int64_t K) {
  for (int64_t n = 0; n < N; n++)
    rt_dequantize_row(f, dst + n * K, src, N, K, n);
}
