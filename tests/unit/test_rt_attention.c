/* test_rt_attention.c: the tiled (flash-style) rt_attention against the naive rt_attention_ref,
 * causal and bidirectional, on sizes that leave partial query/key blocks; KV-cache decoding token
 * by token against causal rt_attention_ref over the whole sequence; and a timing report
 * (T=256, C=384, 6 heads) printed to stderr, not asserted (machines here are noisy). The
 * comparisons are loop tests run with 1, 2 and 3 pool threads (rt_set_threads(_i) before the
 * scratch is sized: it holds one slice per thread). */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdio.h>

static void check_attention(int B, int T, int C, int nh, int causal, uint64_t seed) {
  size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
  float *qkv = falloc(nqkv), *o = falloc(no), *r = falloc(no);
  float *scratch = falloc(rt_attention_scratch_floats(T, C, nh)); /* exact size: ASan catches overruns */
  fill_uniform(qkv, nqkv, -2, 2, seed);
  rt_attention(o, qkv, B, T, C, nh, causal, scratch);
  rt_attention_ref(r, qkv, B, T, C, nh, causal);
  double e = norm_err(o, r, no);
  ck_assert_msg(e < 1e-5, "attention B=%d T=%d C=%d nh=%d causal=%d: normalised error %g", B, T, C, nh, causal, e);
  free(qkv), free(o), free(r), free(scratch);
}

START_TEST(attention_vs_ref) {
  rt_set_threads(_i);
  for (int causal = 0; causal <= 1; causal++) {
    check_attention(2, 67, 40, 5, causal, 1);  /* hd = 8, one partial query block */
    check_attention(1, 1, 12, 3, causal, 2);   /* a single token */
    check_attention(2, 203, 48, 3, causal, 3); /* several query and key blocks, both partial */
    check_attention(1, 129, 36, 1, causal, 4); /* one head, hd = 36 */
    check_attention(1, 64, 64, 2, causal, 5);  /* exactly one block */
    check_attention(3, 70, 40, 5, causal, 6);  /* 15 (batch, head) tasks over the threads */
  }
}
END_TEST

START_TEST(causal_row0_is_v0) {
  /* With causal masking, token 0 attends only to itself: out[0] == v[0]. */
  enum { T = 5, C = 6, NH = 2 };
  float qkv[T * 3 * C], o[T * C];
  float *scratch = falloc(rt_attention_scratch_floats(T, C, NH));
  fill_uniform(qkv, T * 3 * C, -1, 1, 9);
  rt_attention(o, qkv, 1, T, C, NH, 1, scratch);
  for (int c = 0; c < C; c++)
    ck_assert(fabsf(o[c] - qkv[2 * C + c]) < 1e-6f);
  free(scratch);
}
END_TEST

START_TEST(decode_matches_full) {
  rt_set_threads(_i);
  /* hd = 16: from t ~ 130 on, the (batch, head) tasks are split over the threads */
  enum { B = 2, T = 300, C = 64, NH = 4, TMAX = 310 };
  float *qkv = falloc((size_t)B * T * 3 * C), *ref = falloc((size_t)B * T * C);
  float *kc = falloc((size_t)B * TMAX * C), *vc = falloc((size_t)B * TMAX * C);
  float step[B * 3 * C], out[B * C];
  float *scratch = falloc(rt_attention_decode_scratch_floats(TMAX));
  fill_uniform(qkv, (size_t)B * T * 3 * C, -2, 2, 7);
  rt_attention_ref(ref, qkv, B, T, C, NH, 1);
  double worst = 0;
  for (int t = 0; t < T; t++) {
    for (int b = 0; b < B; b++)
      memcpy(step + b * 3 * C, qkv + ((size_t)b * T + t) * 3 * C, 3 * C * sizeof(float));
    rt_attention_decode(out, step, kc, vc, B, TMAX, t, C, NH, scratch);
    for (int b = 0; b < B; b++) {
      double e = norm_err(out + b * C, ref + ((size_t)b * T + t) * C, C);
      worst = e > worst ? e : worst;
    }
  }
  ck_assert_msg(worst < 1e-5, "decode vs full causal: normalised error %g", worst);
  /* the cache holds every k and v */
  ck_assert(memcmp(kc + (size_t)1 * TMAX * C + 5 * C, qkv + ((size_t)1 * T + 5) * 3 * C + C, C * sizeof(float)) == 0);
  free(qkv), free(ref), free(kc), free(vc), free(scratch);
}
END_TEST

/* rt_attention_kv: a prefill of P tokens, then the rest in chunks of 1 and 3 tokens (t0 > 0), each
 * against causal rt_attention_ref over the whole sequence. */
START_TEST(kv_prefill_then_chunks) {
  rt_set_threads(_i);
  enum { B = 2, T = 41, C = 24, NH = 3, TMAX = 48, P = 17 };
  float *qkv = falloc((size_t)B * T * 3 * C), *ref = falloc((size_t)B * T * C);
  float *kc = falloc((size_t)B * TMAX * C), *vc = falloc((size_t)B * TMAX * C);
  float *chunk = falloc((size_t)B * P * 3 * C), *out = falloc((size_t)B * P * C);
  float *scratch = falloc(rt_attention_kv_scratch_floats(TMAX, C, NH));
  fill_uniform(qkv, (size_t)B * T * 3 * C, -2, 2, 11);
  rt_attention_ref(ref, qkv, B, T, C, NH, 1);
  double worst = 0;
  for (int t0 = 0, n = P; t0 < T; t0 += n, n = (t0 / 3) % 2 ? 3 : 1) {
    if (t0 + n > T) n = T - t0;
    for (int b = 0; b < B; b++) /* (B,n,3C) rows of this chunk */
      memcpy(chunk + (size_t)b * n * 3 * C, qkv + ((size_t)b * T + t0) * 3 * C, (size_t)n * 3 * C * sizeof(float));
    rt_attention_kv(out, chunk, kc, vc, B, n, t0, TMAX, C, NH, 1, scratch);
    for (int b = 0; b < B; b++) {
      double e = norm_err(out + (size_t)b * n * C, ref + ((size_t)b * T + t0) * C, (size_t)n * C);
      worst = e > worst ? e : worst;
    }
  }
  ck_assert_msg(worst < 1e-5, "rt_attention_kv vs full causal: normalised error %g", worst);
  free(qkv), free(ref), free(kc), free(vc), free(chunk), free(out), free(scratch);
}
END_TEST

static double median3(double a, double b, double c) {
  return a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
}

START_TEST(attention_timing) {
  enum { B = 1, T = 256, C = 384, NH = 6 };
  size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
  float *qkv = falloc(nqkv), *o = falloc(no), *r = falloc(no);
  float *scratch = falloc(rt_attention_scratch_floats(T, C, NH));
  fill_uniform(qkv, nqkv, -2, 2, 11);
  for (int causal = 0; causal <= 1; causal++) {
    double tf[3], tr[3];
    for (int rep = 0; rep < 3; rep++) {
      double t0 = rt_now_seconds();
      for (int i = 0; i < 10; i++)
        rt_attention(o, qkv, B, T, C, NH, causal, scratch);
      double t1 = rt_now_seconds();
      rt_attention_ref(r, qkv, B, T, C, NH, causal);
      double t2 = rt_now_seconds();
      tf[rep] = (t1 - t0) / 10;
      tr[rep] = t2 - t1;
    }
    double f = median3(tf[0], tf[1], tf[2]), rr = median3(tr[0], tr[1], tr[2]);
    double flops = 4.0 * B * NH * (double)T * T * (C / NH) * (causal ? 0.5 : 1.0);
    fprintf(stderr, "attention B=%d T=%d C=%d heads=%d causal=%d: fast %.3f ms (%.2f GFLOP/s), ref %.3f ms, %.1fx\n", B,
            T, C, NH, causal, f * 1e3, flops / f * 1e-9, rr * 1e3, rr / f);
    ck_assert(norm_err(o, r, no) < 1e-5);
  }
  free(qkv), free(o), free(r), free(scratch);
}
END_TEST

/* Grouped-query attention (rows C + 2 G hd, query head h reading KV head h / (H/G)): the fast
 * forward and backward against their _ref twins; the twins with G = H against the multi-head twins
 * (the backward's: the sparse twin's dense kind, an independent copy); and the KV-cache form (a
 * prefill, then one token at a time into G-head caches) against the full causal twin. */
static void check_gqa(int B, int T, int C, int H, int G, int causal, uint64_t seed) {
  int KV = C / H * G, W = C + 2 * KV, TMAX = T + 3;
  size_t nqkv = (size_t)B * T * W, no = (size_t)B * T * C;
  float *qkv = falloc(nqkv), *o = falloc(no), *r = falloc(no), *dy = falloc(no), *dx = falloc(nqkv),
        *dr = falloc(nqkv);
  float *scratch = falloc(rt_attention_kv_scratch_floats(TMAX, C, H)),
        *dscratch = falloc(rt_attention_dx_scratch_floats(T, C, H));
  fill_uniform(qkv, nqkv, -2, 2, seed);
  fill_uniform(dy, no, -1, 1, seed + 1);
  rt_attention_gqa(o, qkv, B, T, C, H, G, causal, scratch);
  rt_attention_gqa_ref(r, qkv, B, T, C, H, G, causal);
  double e = norm_err(o, r, no);
  ck_assert_msg(e < 1e-5, "gqa B=%d T=%d C=%d H=%d G=%d causal=%d: normalised error %g", B, T, C, H, G, causal, e);
  rt_attention_gqa_dx(dx, qkv, dy, B, T, C, H, G, causal, dscratch);
  rt_attention_gqa_dx_ref(dr, qkv, dy, B, T, C, H, G, causal);
  e = norm_err(dx, dr, nqkv);
  ck_assert_msg(e < 1e-5, "gqa_dx B=%d T=%d C=%d H=%d G=%d causal=%d: normalised error %g", B, T, C, H, G, causal, e);
  if (G == H) {
    rt_attention_ref(o, qkv, B, T, C, H, causal);
    ck_assert(norm_err(o, r, no) < 1e-6);
    rt_attention_dx_ref(dx, qkv, dy, B, T, C, H, causal);
    ck_assert_msg(norm_err(dx, dr, nqkv) < 1e-6, "gqa_dx_ref vs attention_dx_ref: %g", norm_err(dx, dr, nqkv));
  }
  if (causal) {
    float *kc = falloc((size_t)B * TMAX * KV), *vc = falloc((size_t)B * TMAX * KV), *chunk = falloc(nqkv);
    int P = T / 2;
    double worst = 0;
    for (int t0 = 0, n = P; t0 < T; t0 += n, n = 1) {
      for (int b = 0; b < B; b++)
        memcpy(chunk + (size_t)b * n * W, qkv + ((size_t)b * T + t0) * W, (size_t)n * W * sizeof(float));
      rt_attention_gqa_kv(o, chunk, kc, vc, B, n, t0, TMAX, C, H, G, 1, scratch);
      for (int b = 0; b < B; b++) {
        double eb = norm_err(o + (size_t)b * n * C, r + ((size_t)b * T + t0) * C, (size_t)n * C);
        worst = eb > worst ? eb : worst;
      }
    }
    ck_assert_msg(worst < 1e-5, "gqa kv cache vs full: %g", worst);
    /* the caches hold the G KV heads' rows */
    ck_assert(memcmp(kc + ((size_t)(B - 1) * TMAX + T - 1) * KV, qkv + ((size_t)(B - 1) * T + T - 1) * W + C,
                     (size_t)KV * sizeof(float)) == 0);
    free(kc), free(vc), free(chunk);
  }
  free(qkv), free(o), free(r), free(dy), free(dx), free(dr), free(scratch), free(dscratch);
}

START_TEST(gqa_vs_ref) {
  rt_set_threads(_i);
  for (int causal = 0; causal <= 1; causal++) {
    check_gqa(2, 67, 64, 8, 4, causal, 1);  /* 2 query heads per KV head, a partial block */
    check_gqa(1, 130, 48, 6, 1, causal, 2); /* multi-query, several blocks */
    check_gqa(2, 9, 24, 3, 3, causal, 3);   /* G = H: multi-head */
    check_gqa(3, 20, 32, 4, 2, causal, 4);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_attention");
  TCase *tc = tcase_create("attention");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, attention_vs_ref, 1, 4); /* _i = 1..3 threads */
  tcase_add_test(tc, causal_row0_is_v0);
  tcase_add_loop_test(tc, decode_matches_full, 1, 4);
  tcase_add_loop_test(tc, kv_prefill_then_chunks, 1, 4);
  tcase_add_loop_test(tc, gqa_vs_ref, 1, 4);
  tcase_add_test(tc, attention_timing);
  suite_add_tcase(s, tc);
  return check_run(s);
}
