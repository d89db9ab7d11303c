/* dtype.c: the dtypes of the file formats (safetensors, .npy): sizes and names, and the scalar
 * conversions between float32 and the 16-bit float types (IEEE binary16, bfloat16) that readers,
 * tests and the `_ref` twins of the cast kernels (core/convert.c) use. */
#include "core.h"

#include <string.h>

/* Indexed by RtDType. */
static const struct {
  const char *name;
  size_t size;
} dtype_info[RT_DT_COUNT] = {
    [RT_DT_INVALID] = {"?", 0}, [RT_DT_F32] = {"F32", 4},   [RT_DT_F16] = {"F16", 2}, [RT_DT_BF16] = {"BF16", 2},
    [RT_DT_F64] = {"F64", 8},   [RT_DT_I8] = {"I8", 1},     [RT_DT_U8] = {"U8", 1},   [RT_DT_I16] = {"I16", 2},
    [RT_DT_U16] = {"U16", 2},   [RT_DT_I32] = {"I32", 4},   [RT_DT_U32] = {"U32", 4}, [RT_DT_I64] = {"I64", 8},
    [RT_DT_U64] = {"U64", 8},   [RT_DT_BOOL] = {"BOOL", 1},
};

size_t rt_dtype_size(RtDType dt) { return (dt > RT_DT_INVALID && dt < RT_DT_COUNT) ? dtype_info[dt].size : 0; }

const char *rt_dtype_name(RtDType dt) { return (dt > RT_DT_INVALID && dt < RT_DT_COUNT) ? dtype_info[dt].name : "?"; }

RtDType rt_dtype_from_name(const char *name) {
  for (int i = RT_DT_INVALID + 1; i < RT_DT_COUNT; i++)
    if (strcmp(name, dtype_info[i].name) == 0)
      return (RtDType)i;
  return RT_DT_INVALID;
}

static float bits_to_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

float rt_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
  if (exp == 0) { /* zero or subnormal: man * 2^-24 */
    float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31)
    return bits_to_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
  return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

float rt_bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

uint16_t rt_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
  u += 0x7fffu + ((u >> 16) & 1u);       /* round to nearest even */
  return (uint16_t)(u >> 16);
}

uint16_t rt_f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u; /* quiet nan */
  if (a >= 0x477ff000u) return sign | 0x7c00u; /* |f| >= 65520 (half-way past 65504): inf */
  if (a >= 0x38800000u) {                      /* normal: rebias the exponent (127 - 15) */
    uint32_t r = a - 0x38000000u;
    r += 0xfffu + ((r >> 13) & 1u); /* round to nearest even; a carry moves into the exponent */
    return sign | (uint16_t)(r >> 13);
  }
  uint32_t e = a >> 23;
  if (e < 102) return sign; /* below 2^-25: rounds to zero */
  /* subnormal: the count of 2^-24 units, rounded to nearest even */
  uint32_t mant = (a & 0x7fffffu) | 0x800000u, sh = 126 - e, q = mant >> sh, rem = mant & ((1u << sh) - 1u),
           half = 1u << (sh - 1);
  if (rem > half || (rem == half && (q & 1u))) q++;
  return sign | (uint16_t)q;
}
