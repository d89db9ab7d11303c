/* test_rt_convert.c: the f32 <-> bf16 / f16 conversions behind the IR's cast op, checked against
 * the definition of the formats rather than against another implementation: every 16-bit pattern
 * decodes to sign * mantissa * 2^exponent; every pattern round-trips; and for every pair of
 * neighbouring 16-bit values, the f32 just below their midpoint rounds down, the one just above
 * rounds up and the midpoint itself rounds to the even one (round to nearest even). Overflow,
 * infinities and NaN are checked explicitly, and the fast kernels equal their _ref twins bit for bit
 * on random bit patterns (subnormals and NaNs included). Also the two mixed-precision helpers of
 * the trainer: working-weight rounding and the dynamic loss scaler. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { BF16, F16 } Fmt;

/* The exact value of a finite 16-bit pattern, from the format's definition. */
static double decode(Fmt f, uint16_t h) {
  int sign = h >> 15;
  int ebits = f == BF16 ? 8 : 5, mbits = f == BF16 ? 7 : 10, bias = (1 << (ebits - 1)) - 1;
  int e = (h >> mbits) & ((1 << ebits) - 1);
  int m = h & ((1 << mbits) - 1);
  double v = e == 0 ? ldexp(m, 1 - bias - mbits) : ldexp(m + (1 << mbits), e - bias - mbits);
  return sign ? -v : v;
}
static int is_nan16(Fmt f, uint16_t h) {
  return f == BF16 ? (h & 0x7f80) == 0x7f80 && (h & 0x7f) : (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}
static int is_inf16(Fmt f, uint16_t h) { return (h & 0x7fff) == (f == BF16 ? 0x7f80 : 0x7c00); }

static uint16_t down(Fmt f, float x, int fast) {
  uint16_t h;
  if (f == BF16) (fast ? rt_cast_f32_bf16 : rt_cast_f32_bf16_ref)(&h, &x, 1);
  else (fast ? rt_cast_f32_f16 : rt_cast_f32_f16_ref)(&h, &x, 1);
  return h;
}
static float up(Fmt f, uint16_t h, int fast) {
  float x;
  if (f == BF16) (fast ? rt_cast_bf16_f32 : rt_cast_bf16_f32_ref)(&x, &h, 1);
  else (fast ? rt_cast_f16_f32 : rt_cast_f16_f32_ref)(&x, &h, 1);
  return x;
}

static void check_format(Fmt f, int fast) {
  const char *fn = f == BF16 ? "bf16" : "f16";
  for (uint32_t u = 0; u < 0x10000; u++) {
    uint16_t h = (uint16_t)u;
    float x = up(f, h, fast);
    if (is_nan16(f, h)) {
      ck_assert_msg(isnan(x), "%s %04x should decode to nan", fn, u);
      ck_assert_msg(is_nan16(f, down(f, x, fast)), "%s: nan should stay nan", fn);
      continue;
    }
    if (is_inf16(f, h)) {
      ck_assert_msg(isinf(x) && (x < 0) == (u >> 15), "%s %04x should decode to an infinity", fn, u);
      ck_assert_int_eq(down(f, x, fast), h);
      continue;
    }
    ck_assert_msg((double)x == decode(f, h), "%s %04x decodes to %.9g, expected %.9g", fn, u, x, decode(f, h));
    ck_assert_msg(down(f, x, fast) == h || (x == 0 && (down(f, x, fast) & 0x7fff) == 0), "%s %04x does not round-trip",
                  fn, u);
    /* neighbours: h and the next pattern up in magnitude (same sign), if that is finite */
    uint16_t g = (uint16_t)(h + 1);
    if (is_inf16(f, g) || is_nan16(f, g) || (g & 0x7fff) == 0) continue;
    float y = up(f, g, fast), mid = (float)((decode(f, h) + decode(f, g)) / 2);
    ck_assert_msg((double)mid == (decode(f, h) + decode(f, g)) / 2, "midpoint not exact in f32");
    uint16_t even = (h & 1) ? g : h;
    ck_assert_msg(down(f, mid, fast) == even, "%s: midpoint of %04x and %04x rounds to %04x, expected %04x", fn, u,
                  (unsigned)g, down(f, mid, fast), even);
    ck_assert_msg(down(f, nextafterf(mid, x), fast) == h, "%s: just inside %04x", fn, u);
    ck_assert_msg(down(f, nextafterf(mid, y), fast) == g, "%s: just inside %04x", fn, (unsigned)g);
  }
}

START_TEST(bf16_definition) { check_format(BF16, _i); }
END_TEST

START_TEST(f16_definition) { check_format(F16, _i); }
END_TEST

START_TEST(overflow_and_specials) {
  for (int fast = 0; fast < 2; fast++) {
    ck_assert_int_eq(down(F16, 65504.0f, fast), 0x7bff);
    ck_assert_int_eq(down(F16, 65519.99f, fast), 0x7bff);
    ck_assert_int_eq(down(F16, 65520.0f, fast), 0x7c00); /* half-way to 65536 rounds to even: inf */
    ck_assert_int_eq(down(F16, -1e10f, fast), 0xfc00);
    ck_assert_int_eq(down(F16, 1e-30f, fast), 0x0000);
    ck_assert_int_eq(down(F16, -1e-30f, fast), 0x8000);
    ck_assert_int_eq(down(BF16, 3.4e38f, fast), 0x7f80); /* rounds past the largest bf16 */
    ck_assert_int_eq(down(BF16, INFINITY, fast), 0x7f80);
    ck_assert(is_nan16(BF16, down(BF16, NAN, fast)));
    ck_assert(is_nan16(F16, down(F16, -NAN, fast)));
  }
}
END_TEST

/* Fast kernels (vectorised, AVX-512F, F16C) equal the refs on arrays of random bit patterns: bit for
 * bit for bf16 (NaNs included: both keep the payload's top bits and set the quiet bit). */
START_TEST(fast_equals_ref) {
  enum { N = 1 << 20 };
  float *x = malloc(N * sizeof *x), *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
  uint16_t *h1 = malloc(N * sizeof *h1), *h2 = malloc(N * sizeof *h2);
  RtRng r;
  rt_rng_seed(&r, 7);
  for (size_t i = 0; i < N; i++) {
    uint32_t u = rt_rng_u32(&r);
    if (i % 3 == 0) u = (u & 0x8fffffffu) | 0x30000000u; /* many values near the 16-bit ranges */
    memcpy(&x[i], &u, sizeof u);
  }
  for (int f = 0; f < 2; f++) {
    if (f == BF16) {
      rt_cast_f32_bf16(h1, x, N);
      rt_cast_f32_bf16_ref(h2, x, N);
    } else {
      rt_cast_f32_f16(h1, x, N);
      rt_cast_f32_f16_ref(h2, x, N);
    }
    for (size_t i = 0; i < N; i++)
      ck_assert_msg(h1[i] == h2[i] || (f != BF16 && is_nan16((Fmt)f, h1[i]) && is_nan16((Fmt)f, h2[i])),
                    "fmt %d: %a -> %04x fast, %04x ref", f, x[i], h1[i], h2[i]);
    if (f == BF16) {
      rt_cast_bf16_f32(a, h2, N);
      rt_cast_bf16_f32_ref(b, h2, N);
    } else {
      rt_cast_f16_f32(a, h2, N);
      rt_cast_f16_f32_ref(b, h2, N);
    }
    for (size_t i = 0; i < N; i++) ck_assert(a[i] == b[i] || (isnan(a[i]) && isnan(b[i])));
  }
  free(x), free(a), free(b), free(h1), free(h2);
}
END_TEST

/* Working weights: every element rounded as the scalar conversions round it (any length, including
 * a partial last block), fp32 a plain copy. */
START_TEST(round_weights) {
  enum { N = 10000 };
  float *w = malloc(N * sizeof *w), *out = malloc(N * sizeof *out);
  fill_uniform(w, N, -3, 3, 11);
  rt_round_weights(out, w, N, RT_PREC_BF16);
  for (int i = 0; i < N; i++) ck_assert(out[i] == rt_bf16_to_f32(rt_f32_to_bf16(w[i])));
  rt_round_weights(out, w, N, RT_PREC_FP16);
  for (int i = 0; i < N; i++) ck_assert(out[i] == rt_f16_to_f32(rt_f32_to_f16(w[i])));
  int changed = 0;
  for (int i = 0; i < N; i++) changed += out[i] != w[i];
  ck_assert_int_gt(changed, N / 2);
  rt_round_weights(out, w, N, RT_PREC_FP32);
  ck_assert(memcmp(out, w, N * sizeof *w) == 0);
  free(w), free(out);
}
END_TEST

/* Dynamic loss scaling, as torch.cuda.amp.GradScaler: an overflow skips the step and halves the
 * scale; `window` good steps in a row double it; an overflow restarts the count. */
START_TEST(loss_scaler) {
  RtLossScaler s = {.scale = 1024, .window = 3};
  ck_assert_int_eq(rt_loss_scaler_update(&s, 0), 0);
  ck_assert(s.scale == 512 && s.skipped == 1);
  ck_assert_int_eq(rt_loss_scaler_update(&s, 1), 1);
  ck_assert_int_eq(rt_loss_scaler_update(&s, 1), 1);
  ck_assert(s.scale == 512);
  ck_assert_int_eq(rt_loss_scaler_update(&s, 1), 1);
  ck_assert(s.scale == 1024 && s.good == 0);
  ck_assert_int_eq(rt_loss_scaler_update(&s, 1), 1);
  ck_assert_int_eq(rt_loss_scaler_update(&s, 0), 0);
  ck_assert(s.scale == 512 && s.good == 0 && s.skipped == 2);
  RtLossScaler big = {.scale = 0x1p64, .window = 1};
  ck_assert_int_eq(rt_loss_scaler_update(&big, 1), 1);
  ck_assert(big.scale == 0x1p64); /* no growth past 2^64 */
  float g[5] = {1, 2, 3, 4, 5};
  ck_assert(rt_all_finite(g, 5));
  g[3] = INFINITY;
  ck_assert(!rt_all_finite(g, 5));
  g[3] = NAN;
  ck_assert(!rt_all_finite(g, 5));
}
END_TEST

/* The CPU features are consistent (an extension implies the ones it builds on), and
 * MODELC_CPU=portable turns them all off: CTest runs this program twice, once so (the portable
 * conversion loops then meet the same exhaustive checks as the F16C ones). */
START_TEST(cpu_features) {
  const RtCpu *c = rt_cpu();
  char buf[256];
  rt_cpu_describe(buf, sizeof buf);
  printf("cpu features: %s\n", buf);
  const char *env = getenv("MODELC_CPU");
  if (env && strcmp(env, "portable") == 0) {
    RtCpu none;
    memset(&none, 0, sizeof none);
    ck_assert(memcmp(c, &none, sizeof none) == 0);
    ck_assert_str_eq(buf, "none (portable paths)");
  }
  ck_assert(!c->f16c || c->avx);
  ck_assert(!c->avx2 || c->avx);
  ck_assert(!c->avx512f || c->avx);
  ck_assert(!(c->avx512_bf16 || c->avx512_vnni || c->avx512bw) || c->avx512f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_convert");
  TCase *tc = tcase_create("convert");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, bf16_definition, 0, 2);
  tcase_add_loop_test(tc, f16_definition, 0, 2);
  tcase_add_test(tc, cpu_features);
  tcase_add_test(tc, overflow_and_specials);
  tcase_add_test(tc, fast_equals_ref);
  tcase_add_test(tc, round_weights);
  tcase_add_test(tc, loss_scaler);
  suite_add_tcase(s, tc);
  return check_run(s);
}
