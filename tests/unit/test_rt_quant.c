/* test_rt_quant.c: the quantised weight formats (runtime/core/quant.c) and the kernels that read
 * them (runtime/kernels/linear_quant.c).
 *
 * (1) The layout functions on small shapes, rt_quant_check (K % 32 for the block formats), and
 * rt_quantize's exact rules on hand-computed blocks: i8_row's rounding to nearest even, q8_0's
 * f16 scale, q4_0 with a negative maximum, with a tie of magnitudes (the first wins), an all-zero
 * block; a NaN weight and an f16-overflowing scale refused, naming the place.
 * (2) Round trips on random weights, with the bounds the rules give: i8_row and q8_0 round w / d
 * to the nearest integer, so |w - w'| <= d/2 (q8_0's clamp at 127 acts only when d16 rounded
 * amax/127 down, and then costs 127 * 2^-11 d < d/2); q4_0 rounds w / d + 8 half up inside
 * [0, 15] but clips the far end of the range (w = -m is 8 d, stored as 15: 7 d), so
 * |w - w'| <= |d|; plus a few float roundings (2^-22 |w|) and, for q4_0, f16's 2^-11 on 8 d.
 * (3) Each linear kernel against its twin on odd shapes (M 1, 3, 17, 40; N 1, 5, 67; K 32, 96,
 * 160, and 7, 33 for i8_row) with a bias and an epilogue that copies the rows it sees (so it must
 * see y = x Wq^T + bias, every row once; and q8_0 / q4_0 at M 21, 66 with K 544, 1056 for
 * AVX512-VNNI's packed panels: several panels, column blocks and K chunks): i8_row bit for bit
 * (exact int32 sums, the same scaling); q8_0 and q4_0 within 1e-5 * sum_k |x'_k w'_k| (x', w'
 * dequantised; the SIMD paths sum the blocks in 8 or 16 FMA lanes or in order with FMA, the twin
 * in order: float rounding over K/32 terms, far below 1e-5) plus 2^-23 |y| for the bias. The
 * same bits for 1 and 2 threads. At M >= 16 i8_row takes oneDNN's s8 matmul where the build and
 * CPU have it: it must give the bits of our own kernel called row by row (and of the twin);
 * rt_gemm_s8s8s32 is also checked against integer loops. The twins against an f32
 * product of dequantised weights and dequantised activations (double sums): float rounding only,
 * (K/32 + 6) 2^-24 sum |x' w'| (a few roundings per block term: dx * dw, the product, x' and w'
 * themselves; and one per addition of the block sums).
 * (4) rt_quant_act (the kernels' SIMD quantisation of the activations) gives the twin's bytes and
 * scales, ties at .5 included. (5) The embeddings are rt_dequantize's rows and their twin's bytes
 * (rt_embedding_quant_ref); a bad id is a zero row and an error. CTest runs this program three
 * times: natively, MODELC_CPU=avx2 and MODELC_CPU=portable. */
#include "rt_test_util.h"

#include <check.h>
#include <stdio.h>

#include "../../runtime/gemm/gemm.h"
#include "check_run.h"

static void *qalloc(RtFormat f, int N, int K) { return calloc(1, (size_t)rt_quant_bytes(f, N, K) + 64); }

START_TEST(layout) {
  ck_assert_int_eq(rt_quant_values_bytes(RT_FMT_I8_ROW, 3, 7), 21);
  ck_assert_int_eq(rt_quant_scales_offset(RT_FMT_I8_ROW, 3, 7), 64);
  ck_assert_int_eq(rt_quant_scales_bytes(RT_FMT_I8_ROW, 3, 7), 12);
  ck_assert_int_eq(rt_quant_bytes(RT_FMT_I8_ROW, 3, 7), 76);
  ck_assert_int_eq(rt_quant_scale_count(RT_FMT_I8_ROW, 3, 7), 3);
  ck_assert_int_eq(rt_quant_scale_dtype(RT_FMT_I8_ROW), RT_DT_F32);
  ck_assert_int_eq(rt_quant_value_dtype(RT_FMT_I8_ROW), RT_DT_I8);
  ck_assert_int_eq(rt_quant_values_bytes(RT_FMT_Q8_0, 2, 96), 192);
  ck_assert_int_eq(rt_quant_scales_offset(RT_FMT_Q8_0, 2, 96), 192);
  ck_assert_int_eq(rt_quant_scale_count(RT_FMT_Q8_0, 2, 96), 6);
  ck_assert_int_eq(rt_quant_scales_bytes(RT_FMT_Q8_0, 2, 96), 12);
  ck_assert_int_eq(rt_quant_bytes(RT_FMT_Q8_0, 2, 96), 204);
  ck_assert_int_eq(rt_quant_scale_dtype(RT_FMT_Q8_0), RT_DT_F16);
  ck_assert_int_eq(rt_quant_values_bytes(RT_FMT_Q4_0, 3, 32), 48);
  ck_assert_int_eq(rt_quant_scales_offset(RT_FMT_Q4_0, 3, 32), 64);
  ck_assert_int_eq(rt_quant_scales_bytes(RT_FMT_Q4_0, 3, 32), 6);
  ck_assert_int_eq(rt_quant_bytes(RT_FMT_Q4_0, 3, 32), 70);
  ck_assert_int_eq(rt_quant_value_dtype(RT_FMT_Q4_0), RT_DT_U8);
  ck_assert_int_eq(rt_quant_scale_dtype(RT_FMT_Q4_0), RT_DT_F16);
  ck_assert_str_eq(rt_format_name(RT_FMT_DENSE), "dense");
  ck_assert_str_eq(rt_format_name(RT_FMT_I8_ROW), "i8_row");
  ck_assert_str_eq(rt_format_name(RT_FMT_Q8_0), "q8_0");
  ck_assert_str_eq(rt_format_name(RT_FMT_Q4_0), "q4_0");
  RtError err;
  ck_assert_int_eq(rt_quant_check(RT_FMT_I8_ROW, 4, 7, &err), 0);
  ck_assert_int_eq(rt_quant_check(RT_FMT_Q8_0, 4, 64, &err), 0);
  ck_assert_int_eq(rt_quant_check(RT_FMT_Q8_0, 4, 48, &err), -1);
  ck_assert_msg(strstr(err.msg, "K = 48 is not a multiple of 32"), "%s", err.msg);
  ck_assert_int_eq(rt_quant_check(RT_FMT_Q4_0, 4, 33, &err), -1);
  ck_assert_msg(strstr(err.msg, "q4_0") && strstr(err.msg, "K = 33"), "%s", err.msg);
  float w[48] = {0};
  ck_assert_int_eq(rt_quantize(RT_FMT_Q8_0, w, w, 1, 48, &err), -1); /* checked before anything is written */
}
END_TEST

static float scale_f32(const void *q, RtFormat f, int N, int K, int i) {
  float d;
  memcpy(&d, (const char *)q + rt_quant_scales_offset(f, N, K) + 4 * i, 4);
  return d;
}
static uint16_t scale_f16(const void *q, RtFormat f, int N, int K, int i) {
  uint16_t d;
  memcpy(&d, (const char *)q + rt_quant_scales_offset(f, N, K) + 2 * i, 2);
  return d;
}

START_TEST(exact_rules) {
  RtError err;
  /* i8_row: amax 127, so 127 / amax = 1 and q = rint(w), ties to even; a zero row: d 0, q 0 */
  float wi[2 * 5] = {127, -2.5f, 3.5f, 0.49f, -127, 0, 0, 0, 0, 0};
  int8_t *qi = qalloc(RT_FMT_I8_ROW, 2, 5);
  ck_assert_int_eq(rt_quantize(RT_FMT_I8_ROW, qi, wi, 2, 5, &err), 0);
  int8_t want_i[10] = {127, -2, 4, 0, -127, 0, 0, 0, 0, 0};
  ck_assert(memcmp(qi, want_i, 10) == 0);
  ck_assert(scale_f32(qi, RT_FMT_I8_ROW, 2, 5, 0) == 1.0f);
  ck_assert(scale_f32(qi, RT_FMT_I8_ROW, 2, 5, 1) == 0.0f);
  float back[96];
  rt_dequantize(RT_FMT_I8_ROW, back, qi, 2, 5);
  ck_assert(back[1] == -2.0f && back[2] == 4.0f && back[9] == 0.0f);

  /* q8_0: amax 63.5 gives d = 0.5 exactly in f16; q = rint(w / 0.5); the second block is zeros */
  float w8[64] = {0};
  w8[0] = 63.5f, w8[1] = 1.25f, w8[2] = 0.75f, w8[3] = -0.25f, w8[4] = -10.1f;
  int8_t *q8 = qalloc(RT_FMT_Q8_0, 1, 64);
  ck_assert_int_eq(rt_quantize(RT_FMT_Q8_0, q8, w8, 1, 64, &err), 0);
  ck_assert_int_eq(q8[0], 127);
  ck_assert_int_eq(q8[1], 2); /* 2.5 -> 2 */
  ck_assert_int_eq(q8[2], 2); /* 1.5 -> 2 */
  ck_assert_int_eq(q8[3], 0); /* -0.5 -> 0 */
  ck_assert_int_eq(q8[4], -20);
  ck_assert_uint_eq(scale_f16(q8, RT_FMT_Q8_0, 1, 64, 0), rt_f32_to_f16(0.5f));
  ck_assert_uint_eq(scale_f16(q8, RT_FMT_Q8_0, 1, 64, 1), 0);
  for (int j = 32; j < 64; j++)
    ck_assert_int_eq(q8[j], 0);

  /* q4_0: block 0's largest magnitude is -4 (index 5; +4 at index 9 ties and comes later):
   * d = -4 / -8 = 0.5, id = 2, q = floor(2 w + 8.5): -4 -> 0, 4 -> 16 clipped to 15, 1 -> 10,
   * -0.3 -> 7, 0.26 -> 9, 0 -> 8. Block 1: +4 first, so d = -0.5 and the ends swap. Block 2: zeros
   * (d = -0 / 8 = -0, id 0: every q = 8). */
  float w4[96] = {0};
  w4[0] = 1, w4[5] = -4, w4[9] = 4, w4[16] = -0.3f, w4[20] = 0.26f;
  w4[32 + 2] = 4, w4[32 + 7] = -4, w4[32 + 18] = 1;
  uint8_t *q4 = qalloc(RT_FMT_Q4_0, 1, 96);
  ck_assert_int_eq(rt_quantize(RT_FMT_Q4_0, q4, w4, 1, 96, &err), 0);
  ck_assert_uint_eq(scale_f16(q4, RT_FMT_Q4_0, 1, 96, 0), rt_f32_to_f16(0.5f));
  ck_assert_uint_eq(scale_f16(q4, RT_FMT_Q4_0, 1, 96, 1), rt_f32_to_f16(-0.5f));
  ck_assert_uint_eq(scale_f16(q4, RT_FMT_Q4_0, 1, 96, 2), 0x8000); /* -0 */
  ck_assert_uint_eq(q4[0], 10 | 7 << 4);                           /* w[0] = 1 and w[16] = -0.3 */
  ck_assert_uint_eq(q4[4], 8 | 9 << 4);                            /* w[4] = 0 and w[20] = 0.26 */
  ck_assert_uint_eq(q4[5], 0 | 8 << 4);                            /* the maximum -4 is q = 0 */
  ck_assert_uint_eq(q4[9], 15 | 8 << 4);                           /* +4 = 8 d, clipped to 15 */
  ck_assert_uint_eq(q4[16 + 2], 0 | 6 << 4); /* block 1, d = -0.5: 4 -> 0; w[50] = 1 -> floor(-2 + 8.5) = 6 */
  ck_assert_uint_eq(q4[16 + 7], 15 | 8 << 4);
  for (int j = 32; j < 48; j++)
    ck_assert_uint_eq(q4[j], 0x88);
  rt_dequantize(RT_FMT_Q4_0, back, q4, 1, 96);
  ck_assert(back[5] == -4.0f && back[9] == 3.5f && back[0] == 1.0f && back[16] == -0.5f && back[20] == 0.5f);
  ck_assert(back[34] == 4.0f && back[39] == -3.5f && back[50] == 1.0f && back[70] == 0.0f);

  /* refused: a NaN (naming row and column), an infinity, a q8_0 scale beyond f16 */
  float wn[2 * 32] = {0};
  wn[32 + 3] = NAN;
  ck_assert_int_eq(rt_quantize(RT_FMT_Q8_0, q8, wn, 2, 32, &err), -1);
  ck_assert_msg(strstr(err.msg, "[1,3]"), "%s", err.msg);
  wn[32 + 3] = -INFINITY;
  ck_assert_int_eq(rt_quantize(RT_FMT_I8_ROW, q8, wn, 2, 32, &err), -1);
  ck_assert_msg(strstr(err.msg, "[1,3]"), "%s", err.msg);
  wn[32 + 3] = 1e7f; /* amax / 127 = 78740 > 65504 */
  ck_assert_int_eq(rt_quantize(RT_FMT_Q8_0, q8, wn, 2, 32, &err), -1);
  ck_assert_msg(strstr(err.msg, "overflows f16"), "%s", err.msg);
  ck_assert_int_eq(rt_quantize(RT_FMT_I8_ROW, q8, wn, 2, 32, &err), 0); /* f32 scales: fine */
  wn[32 + 3] = -524160; /* q4_0: d = 65520 rounds to f16's infinity; one less rounds to 65504 */
  ck_assert_int_eq(rt_quantize(RT_FMT_Q4_0, q8, wn, 2, 32, &err), -1);
  ck_assert_msg(strstr(err.msg, "row 1"), "%s", err.msg);
  wn[32 + 3] = -524159;
  ck_assert_int_eq(rt_quantize(RT_FMT_Q4_0, q8, wn, 2, 32, &err), 0);
  ck_assert_uint_eq(scale_f16(q8, RT_FMT_Q4_0, 2, 32, 1), rt_f32_to_f16(65504.0f));
  free(qi), free(q8), free(q4);
}
END_TEST

START_TEST(round_trip_bounds) {
  enum { N = 7, K = 160 };
  float *w = falloc(N * K), *back = falloc(N * K);
  fill_uniform(w, N * K, -3, 3, 5);
  for (int k = 0; k < K; k++)
    w[2 * K + k] *= 1e-3f; /* a row of small weights */
  const RtFormat fs[3] = {RT_FMT_I8_ROW, RT_FMT_Q8_0, RT_FMT_Q4_0};
  for (int t = 0; t < 3; t++) {
    RtFormat f = fs[t];
    void *q = qalloc(f, N, K);
    ck_assert_int_eq(rt_quantize(f, q, w, N, K, NULL), 0);
    rt_dequantize(f, back, q, N, K);
    double worst = 0;
    for (int n = 0; n < N; n++)
      for (int k = 0; k < K; k++) {
        float d =
            f == RT_FMT_I8_ROW ? scale_f32(q, f, N, K, n) : rt_f16_to_f32(scale_f16(q, f, N, K, n * (K / 32) + k / 32));
        double e = fabs((double)w[n * K + k] - back[n * K + k]);
        double bound = f == RT_FMT_Q4_0 ? fabs(d) * (1 + 0x1p-8) : 0.5 * d;
        bound += 0x1p-22 * fabs(w[n * K + k]);
        ck_assert_msg(e <= bound, "%s [%d,%d]: %.9g -> %.9g (d %.9g)", rt_format_name(f), n, k, w[n * K + k],
                      back[n * K + k], d);
        worst = fmax(worst, e / fabs(d));
      }
    printf("%s round trip: worst |w - w'| = %.3f d\n", rt_format_name(f), worst);
    free(q);
  }
  free(w), free(back);
}
END_TEST

START_TEST(activations_same_bytes) {
  const int Ks[] = {7, 33, 96, 160};
  for (int t = 0; t < 4; t++) {
    int M = 5, K = Ks[t];
    float *x = falloc((size_t)M * K);
    fill_uniform(x, (size_t)M * K, -4, 4, 40 + t);
    for (int k = 0; k < K; k++)
      x[K + k] = 0; /* a zero row */
    x[2 * K] = 127; /* row 2: amax 127, so x * (127 / amax) = x: ties at .5 */
    for (int k = 1; k < K; k++)
      x[2 * K + k] = (float)(k % 9) - 4.5f;
    for (int k = 0; k < K; k++)
      x[3 * K + k] *= 1e-30f; /* tiny */
    const RtFormat fs[2] = {RT_FMT_I8_ROW, RT_FMT_Q4_0};
    for (int i = 0; i < (K % 32 ? 1 : 2); i++) {
      int ng = i == 0 ? M : M * K / 32;
      int8_t *q = malloc((size_t)M * K), *qr = malloc((size_t)M * K);
      float *d = falloc(ng), *dr = falloc(ng);
      int32_t *s = malloc(ng * 4), *sr = malloc(ng * 4);
      rt_quant_act(fs[i], q, d, s, x, M, K);
      rt_quant_act_ref(fs[i], qr, dr, sr, x, M, K);
      ck_assert_msg(memcmp(q, qr, (size_t)M * K) == 0, "K=%d %s: int8 bytes differ", K, rt_format_name(fs[i]));
      ck_assert_msg(memcmp(d, dr, ng * 4) == 0, "K=%d: scales differ", K);
      ck_assert_msg(memcmp(s, sr, ng * 4) == 0, "K=%d: sums differ", K);
      if (i == 0)
        ck_assert(qr[2 * K] == 127 && (K < 2 || qr[2 * K + 1] == -4) && (K < 3 || qr[2 * K + 2] == -2));
      free(q), free(qr), free(d), free(dr), free(s), free(sr);
    }
    free(x);
  }
}
END_TEST

typedef void (*LinQFn)(float *, const float *, const void *, const float *, int, int, int, RtRangeFn, void *, float *);
typedef void (*LinQRef)(float *, const float *, const void *, const float *, int, int, int);

static void check_linear(RtFormat f, int M, int N, int K, uint64_t seed) {
  LinQFn fn = f == RT_FMT_I8_ROW ? rt_linear_i8_row : f == RT_FMT_Q8_0 ? rt_linear_q8_0 : rt_linear_q4_0;
  LinQRef ref = f == RT_FMT_I8_ROW ? rt_linear_i8_row_ref : f == RT_FMT_Q8_0 ? rt_linear_q8_0_ref : rt_linear_q4_0_ref;
  size_t MN = (size_t)M * N;
  float *x = falloc((size_t)M * K), *w = falloc((size_t)N * K), *bias = falloc(N);
  float *y1 = falloc(MN), *y2 = falloc(MN), *yr = falloc(MN), *copy = falloc(MN);
  float *wd = falloc((size_t)N * K), *xd = falloc((size_t)M * K);
  int *calls = calloc(M, sizeof(int));
  fill_uniform(x, (size_t)M * K, -2, 2, seed);
  fill_uniform(w, (size_t)N * K, -1, 1, seed + 1);
  fill_uniform(bias, N, -1, 1, seed + 2);
  void *q = qalloc(f, N, K);
  ck_assert_int_eq(rt_quantize(f, q, w, N, K, NULL), 0);
  rt_dequantize(f, wd, q, N, K);
  float *scratch = falloc(rt_linear_q_scratch_floats(f, M, N, K));
  Seen s = {y1, copy, calls, N};
  rt_set_threads(1);
  fn(y1, x, q, bias, M, N, K, epi_record, &s, scratch);
  rt_set_threads(2);
  fn(y2, x, q, bias, M, N, K, NULL, NULL, scratch);
  ref(yr, x, q, bias, M, N, K);
  ck_assert_msg(memcmp(y1, y2, MN * sizeof(float)) == 0, "%s M=%d N=%d K=%d: 1 and 2 threads differ", rt_format_name(f),
                M, N, K);
  ck_assert_msg(memcmp(y1, copy, MN * sizeof(float)) == 0, "the epilogue saw other values");
  if (f == RT_FMT_I8_ROW && M >= 16) { /* oneDNN's s8 matmul (where used) vs our kernel: one row at a time */
    for (int m = 0; m < M; m++)
      fn(y2 + (size_t)m * N, x + (size_t)m * K, q, bias, 1, N, K, NULL, NULL, scratch);
    ck_assert_msg(memcmp(y1, y2, MN * sizeof(float)) == 0,
                  "i8_row M=%d N=%d K=%d: the batched and row-by-row calls differ", M, N, K);
  }
  for (int m = 0; m < M; m++)
    ck_assert_msg(calls[m] == 1, "row %d: %d epilogue calls", m, calls[m]);
  /* the dequantised activations: d * q from the twin's quantisation */
  int ng = f == RT_FMT_I8_ROW ? M : M * (K / 32), g = f == RT_FMT_I8_ROW ? K : 32;
  int8_t *xq = malloc((size_t)M * K);
  float *dx = falloc(ng);
  rt_quant_act_ref(f, xq, dx, NULL, x, M, K);
  for (size_t i = 0; i < (size_t)M * K; i++)
    xd[i] = dx[i / g] * xq[i];
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double mag = 0, exact = 0;
      for (int k = 0; k < K; k++) {
        double p = (double)xd[(size_t)m * K + k] * wd[(size_t)n * K + k];
        mag += fabs(p), exact += p;
      }
      size_t i = (size_t)m * N + n;
      if (f == RT_FMT_I8_ROW)
        ck_assert_msg(y1[i] == yr[i], "i8_row M=%d N=%d K=%d [%d,%d]: %.9g vs ref %.9g", M, N, K, m, n, y1[i], yr[i]);
      else
        ck_assert_msg(fabs(y1[i] - yr[i]) <= 1e-5 * mag + 0x1p-23 * fabs(yr[i]) + 1e-30,
                      "%s M=%d N=%d K=%d [%d,%d]: %.9g vs ref %.9g (mag %.3g)", rt_format_name(f), M, N, K, m, n, y1[i],
                      yr[i], mag);
      /* the twin is the product of the dequantised operands, up to float rounding */
      double want = exact + bias[n], nb = f == RT_FMT_I8_ROW ? 1 : K / 32;
      ck_assert_msg(fabs(yr[i] - want) <= (nb + 6) * 0x1p-24 * (mag + fabs(bias[n])) + 1e-30,
                    "%s ref [%d,%d]: %.9g vs %.9g", rt_format_name(f), m, n, yr[i], want);
    }
  free(x), free(w), free(bias), free(y1), free(y2), free(yr), free(copy), free(wd), free(xd), free(calls), free(q);
  free(scratch), free(xq), free(dx);
}

START_TEST(linear_vs_ref) {
  const int Ms[] = {1, 3, 17, 40}, Ns[] = {1, 5, 67}, Ks[] = {32, 96, 160, 7, 33};
  const RtFormat fs[3] = {RT_FMT_I8_ROW, RT_FMT_Q8_0, RT_FMT_Q4_0};
  uint64_t seed = 100;
  for (int t = 0; t < 3; t++)
    for (int a = 0; a < 4; a++)
      for (int b = 0; b < 3; b++)
        for (int c = 0; c < (fs[t] == RT_FMT_I8_ROW ? 5 : 3); c++)
          check_linear(fs[t], Ms[a], Ns[b], Ks[c], seed += 3);
  check_linear(RT_FMT_Q4_0, 1, 300, 768, 7); /* several column blocks */
  check_linear(RT_FMT_Q8_0, 1, 300, 768, 9);
  check_linear(RT_FMT_Q8_0, 1, 67, 320, 10); /* K % 64 == 0: the 512-bit decode, 8 + 2 blocks */
  check_linear(RT_FMT_Q4_0, 1, 67, 320, 11);
  check_linear(RT_FMT_Q8_0, 7, 67, 320, 12); /* 512-bit, M > 1: 4 x 2 tiles and the row tail */
  check_linear(RT_FMT_Q4_0, 7, 67, 320, 13);
  check_linear(RT_FMT_Q8_0, 21, 70, 544, 17); /* M >= 16 with AVX512-VNNI: the packed panels, 16 + 1 blocks */
  check_linear(RT_FMT_Q4_0, 21, 70, 544, 18);
  check_linear(RT_FMT_Q8_0, 66, 100, 1056, 19); /* several panels and column blocks, 3 chunks of K */
  check_linear(RT_FMT_Q4_0, 66, 100, 1056, 20);
  check_linear(RT_FMT_I8_ROW, 1, 67, 768, 14); /* i8_row with K % 64 == 0: 512-bit */
  check_linear(RT_FMT_I8_ROW, 7, 67, 128, 15);
  check_linear(RT_FMT_I8_ROW, 17, 67, 128, 16); /* oneDNN vs the 512-bit rows */
  check_linear(RT_FMT_I8_ROW, 64, 130, 200, 8);
  printf("quantised kernels: %s; oneDNN %s\n", rt_quant_isa(), rt_gemm_onednn_built() ? "built" : "absent");
}
END_TEST

START_TEST(gemm_s8s8s32) {
  enum { M = 19, N = 37, K = 75 };
  int8_t A[M * K], B[N * K];
  int32_t C[M * N];
  for (int i = 0; i < M * K; i++)
    A[i] = (int8_t)((i * 37 + 11) % 255 - 127);
  for (int i = 0; i < N * K; i++)
    B[i] = (int8_t)((i * 53 + 5) % 255 - 127);
  int r = rt_gemm_s8s8s32(M, N, K, A, B, C);
  printf("rt_gemm_s8s8s32: %s (oneDNN isa %s)\n", r ? "declined" : "exact int32", rt_gemm_onednn_isa());
  if (!rt_gemm_onednn_built())
    ck_assert_int_eq(r, -1);
  if (r)
    return;
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      int32_t s = 0;
      for (int k = 0; k < K; k++)
        s += A[m * K + k] * B[n * K + k];
      ck_assert_int_eq(C[m * N + n], s);
    }
}
END_TEST

START_TEST(embeddings) {
  enum { n = 50, V = 9, C = 64 };
  const RtFormat fs[3] = {RT_FMT_I8_ROW, RT_FMT_Q8_0, RT_FMT_Q4_0};
  float *table = falloc(V * C), *deq = falloc(V * C), *out = falloc(n * C), *ref = falloc(n * C);
  fill_uniform(table, V * C, -1, 1, 77);
  int32_t ids[n];
  for (int i = 0; i < n; i++)
    ids[i] = (int32_t)((i * 5u) % V);
  for (int t = 0; t < 3; t++) {
    void *q = qalloc(fs[t], V, C);
    ck_assert_int_eq(rt_quantize(fs[t], q, table, V, C, NULL), 0);
    rt_dequantize(fs[t], deq, q, V, C);
    int (*emb)(float *, const int32_t *, const void *, int, int, int, RtError *) = t == 0   ? rt_embedding_i8_row
                                                                                   : t == 1 ? rt_embedding_q8_0
                                                                                            : rt_embedding_q4_0;
    RtError err;
    ck_assert_int_eq(emb(out, ids, q, n, V, C, &err), 0);
    for (int i = 0; i < n; i++)
      ck_assert(memcmp(out + i * C, deq + ids[i] * C, C * sizeof(float)) == 0);
    ck_assert_int_eq(rt_embedding_quant_ref(fs[t], ref, ids, q, n, V, C, &err), 0); /* the twin: the same bytes */
    ck_assert(memcmp(out, ref, n * C * sizeof(float)) == 0);
    ids[17] = -1; /* a bad id: a zero row, the others written, an error naming it */
    memset(out, 0xff, n * C * sizeof(float));
    ck_assert_int_eq(emb(out, ids, q, n, V, C, &err), -1);
    ck_assert_msg(strstr(err.msg, "token id -1 at position 17"), "%s", err.msg);
    for (int c = 0; c < C; c++)
      ck_assert(out[17 * C + c] == 0.0f);
    ck_assert(memcmp(out + 18 * C, deq + ids[18] * C, C * sizeof(float)) == 0);
    RtError eref;
    ck_assert_int_eq(rt_embedding_quant_ref(fs[t], ref, ids, q, n, V, C, &eref), -1);
    ck_assert(memcmp(out, ref, n * C * sizeof(float)) == 0);
    ck_assert_str_eq(err.msg, eref.msg);
    ids[17] = (int32_t)((17 * 5u) % V);
    free(q);
  }
  free(table), free(deq), free(out), free(ref);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_quant");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, layout);
  tcase_add_test(tc, exact_rules);
  tcase_add_test(tc, round_trip_bounds);
  tcase_add_test(tc, activations_same_bytes);
  tcase_add_test(tc, linear_vs_ref);
  tcase_add_test(tc, gemm_s8s8s32);
  tcase_add_test(tc, embeddings);
  suite_add_tcase(s, tc);
  return check_run(s);
}
