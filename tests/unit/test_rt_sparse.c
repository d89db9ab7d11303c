/* test_rt_sparse.c: the sparse weight format RT_FMT_CSR and the pruning utilities
 * (runtime/core/sparse.c) and the sparse linear kernel (runtime/kernels/linear_sparse.c).
 *
 * (1) The layout's offsets on hand-computed capacities; pack -> unpack round trips (exact zeros and
 * -0.0 dropped, the bytes deterministic whatever dst held, the unused capacity zero); pack's
 * errors (nnz > cap, K > 65536, a NaN named by row and column; dst untouched); rt_csr_check on
 * corrupt blobs (rowptr[0] != 0, a decreasing rowptr, nnz > cap, a column >= K, a repeated
 * column). (2) rt_linear_csr against its twin (|y - ref| <= (nnz_n + 2) 2^-24 (sum |v x| + |b|):
 * float sums against double) and against the dense rt_linear of the unpacked weight ((K + 4) 2^-24
 * (...)), for M = 1 (SpMV), 2, 7, 33, 64, 70 (SpMM: one vector, tiles of 64 and a 16-lane tail; the
 * epilogue over the pool from 32 rows), odd N and K (1, 37, 300 rows; K 1, 53, 300: full vectors
 * and masked tails), sparsity 0, 50, 90, 100% (all-zero rows), a bias and an epilogue that copies
 * the rows it sees (each row once, after the bias); 1, 2 and 3 threads give the same bytes.
 * (3) Masks: magnitude pruning's exact count and tie rule on a hand example and against a sorted
 * reference with many ties; the global (multi) form equals the single one on the concatenation;
 * N:M keeps exactly n of every group, the largest (ties: lower index), and refuses bad patterns;
 * rt_mask_apply / rt_mask_zeros. (4) Zhu & Gupta's schedule at points computed from its formula,
 * and its due flags. CTest runs this program natively (AVX-512 here), with MODELC_CPU=avx2 and
 * MODELC_CPU=portable. */
#include "rt_test_util.h"

#include <check.h>
#include <stdio.h>

#include "check_run.h"

static void *balloc(int64_t N, int64_t K, int64_t cap) { return rt_xalloc((size_t)rt_csr_bytes(N, K, cap)); }

START_TEST(layout) {
  ck_assert_int_eq(rt_csr_cols_offset(10), 64);
  ck_assert_int_eq(rt_csr_rowptr_offset(10), 128); /* align64(64 + 20) */
  ck_assert_int_eq(rt_csr_bytes(3, 5, 10), 128 + 16);
  ck_assert_int_eq(rt_csr_cols_offset(16), 64);
  ck_assert_int_eq(rt_csr_rowptr_offset(16), 128); /* 64 + 32 = 96 -> 128 */
  ck_assert_int_eq(rt_csr_cols_offset(40), 192);   /* 160 -> 192 */
  ck_assert_int_eq(rt_csr_rowptr_offset(40), 320); /* 192 + 80 = 272 -> 320 */
  ck_assert_int_eq(rt_csr_bytes(7, 9, 0), 32);
  ck_assert_str_eq(rt_format_name(RT_FMT_CSR), "csr");
}
END_TEST

START_TEST(pack_round_trip) {
  const int N = 13, K = 71, cap = 13 * 71 * 2 / 3 + 9; /* at most 2 in 3 are nonzero */
  float *w = falloc(N * K), *back = falloc(N * K);
  fill_uniform(w, N * K, -1, 1, 5);
  int nnz = 0;
  for (int i = 0; i < N * K; i++) {
    if (i % 3 == 0 || (i / K) == 4) /* a third zero, one row all zero */
      w[i] = i % 2 ? -0.0f : 0.0f;
    nnz += w[i] != 0.0f;
  }
  ck_assert_int_le(nnz, cap);
  size_t bytes = (size_t)rt_csr_bytes(N, K, cap);
  unsigned char *a = balloc(N, K, cap), *b = balloc(N, K, cap);
  memset(b, 0xab, bytes);
  RtError err;
  ck_assert_int_eq(rt_csr_pack(a, w, N, K, cap, &err), 0);
  ck_assert_int_eq(rt_csr_pack(b, w, N, K, cap, &err), 0);
  ck_assert_msg(memcmp(a, b, bytes) == 0, "the bytes depend on what dst held");
  ck_assert_int_eq(rt_csr_nnz(a, N, cap), nnz);
  ck_assert_int_eq(rt_csr_check(a, N, K, cap, &err), 0);
  for (int j = nnz; j < cap; j++) { /* the unused capacity is zero */
    float v;
    uint16_t c;
    memcpy(&v, a + 4 * j, 4);
    memcpy(&c, a + rt_csr_cols_offset(cap) + 2 * j, 2);
    ck_assert(v == 0.0f && c == 0);
  }
  int32_t r4, r5;
  memcpy(&r4, a + rt_csr_rowptr_offset(cap) + 16, 4);
  memcpy(&r5, a + rt_csr_rowptr_offset(cap) + 20, 4);
  ck_assert_int_eq(r4, r5); /* the zero row is empty */
  rt_csr_unpack(back, a, N, K, cap);
  for (int i = 0; i < N * K; i++)
    ck_assert_msg(back[i] == w[i] && !signbit(back[i] == 0.0f ? back[i] : 0.0f), "element %d", i);
  /* a zero capacity for an all-zero matrix */
  for (int i = 0; i < N * K; i++)
    w[i] = 0.0f;
  unsigned char *z = balloc(N, K, 0);
  ck_assert_int_eq(rt_csr_pack(z, w, N, K, 0, &err), 0);
  ck_assert_int_eq(rt_csr_nnz(z, N, 0), 0);
  ck_assert_int_eq(rt_csr_check(z, N, K, 0, &err), 0);
  free(w), free(back), free(a), free(b), free(z);
}
END_TEST

START_TEST(pack_errors) {
  const int N = 3, K = 5;
  float w[15];
  for (int i = 0; i < 15; i++)
    w[i] = (float)(i + 1);
  unsigned char *b = balloc(N, K, 14);
  memset(b, 0x5a, (size_t)rt_csr_bytes(N, K, 14));
  RtError err;
  ck_assert_int_eq(rt_csr_pack(b, w, N, K, 14, &err), -1);
  ck_assert_msg(strstr(err.msg, "15 nonzeros") && strstr(err.msg, "capacity of 14"), "%s", err.msg);
  ck_assert_int_eq(b[0], 0x5a); /* untouched */
  w[7] = NAN;
  ck_assert_int_eq(rt_csr_pack(b, w, N, K, 15, &err), -1);
  ck_assert_msg(strstr(err.msg, "row 1, column 2") && strstr(err.msg, "not finite"), "%s", err.msg);
  w[7] = INFINITY;
  ck_assert_int_eq(rt_csr_pack(b, w, N, K, 15, &err), -1);
  ck_assert_int_eq(b[0], 0x5a);
  ck_assert_int_eq(rt_csr_pack(b, w, 0, 65537, 15, &err), -1);
  ck_assert_msg(strstr(err.msg, "65537") && strstr(err.msg, "65536"), "%s", err.msg);
  ck_assert_int_eq(rt_csr_pack(b, w, 1, 5, -1, &err), -1);
  free(b);
  /* K = 65536 itself fits: column 65535 */
  float *row = calloc(65536, sizeof(float));
  row[65535] = 2.0f;
  unsigned char *c = balloc(1, 65536, 1);
  ck_assert_int_eq(rt_csr_pack(c, row, 1, 65536, 1, &err), 0);
  ck_assert_int_eq(rt_csr_check(c, 1, 65536, 1, &err), 0);
  uint16_t col;
  memcpy(&col, c + rt_csr_cols_offset(1), 2);
  ck_assert_int_eq(col, 65535);
  free(row), free(c);
}
END_TEST

START_TEST(check_corrupt) {
  const int N = 4, K = 6, cap = 12;
  float w[24];
  for (int i = 0; i < 24; i++)
    w[i] = i % 2 ? (float)i : 0.0f; /* 3 a row, columns 1 3 5 */
  unsigned char *good = balloc(N, K, cap), *b = balloc(N, K, cap);
  size_t bytes = (size_t)rt_csr_bytes(N, K, cap);
  RtError err;
  ck_assert_int_eq(rt_csr_pack(good, w, N, K, cap, &err), 0);
  ck_assert_int_eq(rt_csr_check(good, N, K, cap, &err), 0);
  unsigned char *rp = b + rt_csr_rowptr_offset(cap), *cols = b + rt_csr_cols_offset(cap);
  int32_t v;
  uint16_t c;
  memcpy(b, good, bytes), v = 1, memcpy(rp, &v, 4);
  ck_assert_int_eq(rt_csr_check(b, N, K, cap, &err), -1);
  ck_assert_msg(strstr(err.msg, "rowptr[0] is 1"), "%s", err.msg);
  memcpy(b, good, bytes), v = 2, memcpy(rp + 8, &v, 4); /* rowptr 0 3 2 9 12 */
  ck_assert_int_eq(rt_csr_check(b, N, K, cap, &err), -1);
  ck_assert_msg(strstr(err.msg, "decreases at row 1"), "%s", err.msg);
  memcpy(b, good, bytes), v = 13, memcpy(rp + 16, &v, 4);
  ck_assert_int_eq(rt_csr_check(b, N, K, cap, &err), -1);
  ck_assert_msg(strstr(err.msg, "13 nonzeros exceed the capacity of 12"), "%s", err.msg);
  memcpy(b, good, bytes), c = 6, memcpy(cols + 2 * 4, &c, 2); /* row 1's second entry */
  ck_assert_int_eq(rt_csr_check(b, N, K, cap, &err), -1);
  ck_assert_msg(strstr(err.msg, "row 1, entry 4: column 6 is not below K = 6"), "%s", err.msg);
  memcpy(b, good, bytes), c = 1, memcpy(cols + 2 * 7, &c, 2); /* row 2: 1 1 5 */
  ck_assert_int_eq(rt_csr_check(b, N, K, cap, &err), -1);
  ck_assert_msg(strstr(err.msg, "row 2, entry 7: column 1 does not follow column 1"), "%s", err.msg);
  ck_assert_int_eq(rt_csr_check(good, N, 65537, cap, &err), -1);
  /* an unaligned copy reads the same */
  unsigned char *u = malloc(bytes + 1);
  memcpy(u + 1, good, bytes);
  ck_assert_int_eq(rt_csr_check(u + 1, N, K, cap, &err), 0);
  ck_assert_int_eq(rt_csr_nnz(u + 1, N, cap), 12);
  free(good), free(b), free(u);
}
END_TEST

/* ---- the kernel ---------------------------------------------------------------------------- */

static double worst_ref = 0, worst_dense = 0;

/* sparsity in percent; rows n % 5 == 2 forced all zero when sparsity >= 50 */
static void check_linear(int M, int N, int K, int sparsity, uint64_t seed) {
  size_t MN = (size_t)M * N, NK = (size_t)N * K;
  float *x = falloc((size_t)M * K), *w = falloc(NK), *wd = falloc(NK), *bias = falloc(N);
  float *y1 = falloc(MN), *y2 = falloc(MN), *y3 = falloc(MN), *yr = falloc(MN), *yd = falloc(MN), *copy = falloc(MN);
  uint8_t *mask = malloc(NK);
  int *calls = calloc(M, sizeof(int));
  fill_uniform(x, (size_t)M * K, -2, 2, seed);
  fill_uniform(w, NK, -1, 1, seed + 1);
  fill_uniform(bias, N, -1, 1, seed + 2);
  rt_prune_magnitude(w, mask, (int64_t)NK, (int64_t)(NK * sparsity / 100));
  if (sparsity >= 50)
    for (int n = 2; n < N; n += 5)
      memset(w + (size_t)n * K, 0, K * sizeof(float));
  int64_t nnz = 0;
  for (size_t i = 0; i < NK; i++)
    nnz += w[i] != 0.0f;
  int64_t cap = nnz + 3;
  void *Ws = balloc(N, K, cap);
  ck_assert_int_eq(rt_csr_pack(Ws, w, N, K, cap, NULL), 0);
  rt_csr_unpack(wd, Ws, N, K, cap);
  size_t sf = rt_linear_csr_scratch_floats(M, N, K);
  if (M == 1)
    ck_assert_int_eq(sf, 0);
  float *scratch = sf ? falloc(sf) : NULL;
  if (scratch)
    for (size_t i = 0; i < sf; i++)
      scratch[i] = NAN; /* the kernel must write what it reads */
  Seen s = {y1, copy, calls, N};
  rt_set_threads(1);
  rt_linear_csr(y1, x, Ws, bias, M, N, K, (int)cap, epi_record, &s, scratch);
  rt_set_threads(2);
  rt_linear_csr(y2, x, Ws, bias, M, N, K, (int)cap, NULL, NULL, scratch);
  rt_set_threads(3);
  rt_linear_csr(y3, x, Ws, bias, M, N, K, (int)cap, NULL, NULL, scratch);
  rt_set_threads(2);
  ck_assert_msg(memcmp(y1, y2, MN * sizeof(float)) == 0 && memcmp(y1, y3, MN * sizeof(float)) == 0,
                "M=%d N=%d K=%d s=%d: 1, 2 and 3 threads differ", M, N, K, sparsity);
  ck_assert_msg(memcmp(y1, copy, MN * sizeof(float)) == 0, "the epilogue saw other values");
  for (int m = 0; m < M; m++)
    ck_assert_msg(calls[m] == 1, "row %d: %d epilogue calls", m, calls[m]);
  rt_linear_csr_ref(yr, x, Ws, bias, M, N, K, (int)cap);
  rt_linear(yd, x, wd, bias, M, N, K, NULL, NULL);
  for (int n = 0; n < N; n++) {
    int rn = 0;
    for (int k = 0; k < K; k++)
      rn += wd[(size_t)n * K + k] != 0.0f;
    for (int m = 0; m < M; m++) {
      double mag = fabs(bias[n]), exact = bias[n];
      for (int k = 0; k < K; k++) {
        double p = (double)x[(size_t)m * K + k] * wd[(size_t)n * K + k];
        mag += fabs(p), exact += p;
      }
      size_t i = (size_t)m * N + n;
      ck_assert_msg(fabs((double)yr[i] - exact) <= 0x1p-24 * fabs(exact) + 1e-12 * mag + 1e-300, "ref [%d,%d]", m, n);
      double er = fabs((double)y1[i] - yr[i]), ed = fabs((double)y1[i] - yd[i]);
      ck_assert_msg(er <= (rn + 2) * 0x1p-24 * mag + 1e-30, "M=%d N=%d K=%d s=%d [%d,%d]: %.9g vs ref %.9g (mag %.3g)",
                    M, N, K, sparsity, m, n, y1[i], yr[i], mag);
      ck_assert_msg(ed <= (K + 4) * 0x1p-24 * mag + 1e-30, "M=%d N=%d K=%d s=%d [%d,%d]: %.9g vs dense %.9g", M, N, K,
                    sparsity, m, n, y1[i], yd[i]);
      if (rn == 0)
        ck_assert(y1[i] == bias[n]); /* an empty row is the bias */
    }
  }
  double e1 = norm_err(y1, yr, MN), e2 = norm_err(y1, yd, MN);
  worst_ref = e1 > worst_ref ? e1 : worst_ref, worst_dense = e2 > worst_dense ? e2 : worst_dense;
  free(x), free(w), free(wd), free(bias), free(y1), free(y2), free(y3), free(yr), free(yd), free(copy), free(mask);
  free(calls), free(Ws), free(scratch);
}

START_TEST(linear_vs_ref) {
  const int Ms[] = {1, 2, 7, 64}, Ns[] = {1, 37}, Ks[] = {1, 53, 300}, Ss[] = {0, 50, 90, 100};
  uint64_t seed = 1000;
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 2; b++)
      for (int c = 0; c < 3; c++)
        for (int d = 0; d < 4; d++)
          check_linear(Ms[a], Ns[b], Ks[c], Ss[d], seed += 3);
  check_linear(1, 300, 300, 90, 7); /* several row blocks */
  check_linear(1, 301, 768, 50, 8);
  check_linear(33, 300, 53, 90, 9); /* the epilogue over the pool */
  check_linear(70, 101, 129, 70, 10); /* a 64-lane tile and a 16-lane one */
  check_linear(5, 2, 7, 0, 11);
  printf("sparse kernels: %s; normalised error vs twin %.3g, vs dense %.3g\n", rt_sparse_isa(), worst_ref,
         worst_dense);
  ck_assert(worst_ref < 1e-5 && worst_dense < 1e-5);
}
END_TEST

START_TEST(empty_shapes) {
  float y[6] = {9, 9, 9, 9, 9, 9}, bias[3] = {1, 2, 3}, x[2] = {0};
  unsigned char *Ws = balloc(3, 0, 0);
  rt_linear_csr(y, x, Ws, bias, 2, 3, 0, 0, NULL, NULL, NULL); /* K = 0: the bias */
  for (int i = 0; i < 6; i++)
    ck_assert(y[i] == bias[i % 3]);
  rt_linear_csr(y, x, Ws, NULL, 0, 3, 0, 0, NULL, NULL, NULL); /* M = 0: nothing */
  free(Ws);
}
END_TEST

/* ---- masks --------------------------------------------------------------------------------- */

START_TEST(magnitude_hand) {
  float w[8] = {3, -1, 0, 1, -0.0f, 2, 1, -3};
  uint8_t mask[8];
  rt_prune_magnitude(w, mask, 8, 4); /* by (|w|, index): 2, 4 (zeros), 1, 3 (|1|), then 6 stays */
  const uint8_t want[8] = {1, 0, 0, 0, 0, 1, 1, 1};
  ck_assert(memcmp(mask, want, 8) == 0);
  ck_assert(w[0] == 3 && w[1] == 0 && w[3] == 0 && w[6] == 1 && w[7] == -3);
  ck_assert(!signbit(w[4]) && !signbit(w[1])); /* zeroed to +0 */
  ck_assert_int_eq(rt_mask_zeros(mask, 8), 4);
  float v[3] = {1, 2, 3};
  rt_prune_magnitude(v, mask, 3, 0);
  ck_assert(mask[0] && mask[1] && mask[2] && v[0] == 1);
  rt_prune_magnitude(v, mask, 3, 5);
  ck_assert(!mask[0] && !mask[1] && !mask[2] && v[2] == 0);
  float u[4] = {5, 6, 7, 8};
  const uint8_t m2[4] = {1, 0, 1, 0};
  rt_mask_apply(u, m2, 4);
  ck_assert(u[0] == 5 && u[1] == 0 && u[2] == 7 && u[3] == 0);
}
END_TEST

typedef struct Key {
  uint32_t bits;
  int64_t i;
} Key;
static int cmp_key(const void *a, const void *b) {
  const Key *x = a, *y = b;
  if (x->bits != y->bits)
    return x->bits < y->bits ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

/* the mask by a full sort of (|w| bits, index) */
static void sorted_mask(uint8_t *mask, const float *w, int64_t n, int64_t nzero) {
  Key *k = malloc((size_t)n * sizeof(Key));
  for (int64_t i = 0; i < n; i++) {
    float a = fabsf(w[i]);
    memcpy(&k[i].bits, &a, 4);
    k[i].i = i;
  }
  qsort(k, (size_t)n, sizeof(Key), cmp_key);
  for (int64_t i = 0; i < n; i++)
    mask[k[i].i] = i >= nzero;
  free(k);
}

START_TEST(magnitude_sorted) {
  const int64_t n = 30011;
  float *w = falloc(n), *w0 = falloc(n);
  uint8_t *mask = malloc(n), *want = malloc(n);
  fill_uniform(w0, n, -1, 1, 77);
  for (int64_t i = 0; i < n; i++) /* few levels: many ties; some tiny and huge ones */
    w0[i] = i % 7 == 0 ? roundf(w0[i] * 8) / 8 : i % 11 == 0 ? w0[i] * 1e-30f : i % 13 == 0 ? w0[i] * 1e30f : w0[i];
  const int64_t nz[] = {1, 9001, 15000, 30010, n};
  for (int t = 0; t < 5; t++) {
    memcpy(w, w0, n * sizeof(float));
    rt_prune_magnitude(w, mask, n, nz[t]);
    sorted_mask(want, w0, n, nz[t]);
    ck_assert_msg(memcmp(mask, want, n) == 0, "nzero %lld: not the sorted order's mask", (long long)nz[t]);
    ck_assert_int_eq(rt_mask_zeros(mask, n), nz[t]);
    for (int64_t i = 0; i < n; i++)
      ck_assert(w[i] == (mask[i] ? w0[i] : 0.0f));
  }
  free(w), free(w0), free(mask), free(want);
}
END_TEST

START_TEST(magnitude_multi) {
  const int64_t n[3] = {1000, 1, 2500}, tot = 3501;
  float *cat = falloc(tot), *parts[3];
  uint8_t *mcat = malloc(tot), *masks[3];
  fill_uniform(cat, tot, -1, 1, 99);
  for (int64_t i = 0; i < tot; i++)
    cat[i] = roundf(cat[i] * 16) / 16; /* ties across the arrays */
  for (int a = 0, off = 0; a < 3; off += (int)n[a], a++) {
    parts[a] = falloc(n[a]), masks[a] = malloc(n[a]);
    memcpy(parts[a], cat + off, n[a] * sizeof(float));
  }
  rt_prune_magnitude_multi(parts, masks, n, 3, 1700);
  rt_prune_magnitude(cat, mcat, tot, 1700);
  for (int a = 0, off = 0; a < 3; off += (int)n[a], a++) {
    ck_assert(memcmp(masks[a], mcat + off, n[a]) == 0);
    ck_assert(memcmp(parts[a], cat + off, n[a] * sizeof(float)) == 0);
    free(parts[a]), free(masks[a]);
  }
  free(cat), free(mcat);
}
END_TEST

START_TEST(nm_pattern) {
  const int rows = 5, K = 24;
  float w[120], w0[120];
  uint8_t mask[120];
  fill_uniform(w0, 120, -1, 1, 3);
  for (int i = 0; i < 120; i += 5)
    w0[i] = w0[i + 1 < 120 ? i + 1 : i] * (i % 2 ? 1 : -1); /* equal magnitudes inside groups */
  const int pat[][2] = {{2, 4}, {1, 4}, {3, 8}, {1, 1}, {4, 4}, {2, 3}};
  for (int t = 0; t < 6; t++) {
    int n = pat[t][0], m = pat[t][1];
    memcpy(w, w0, sizeof w);
    ck_assert_int_eq(rt_prune_nm(w, mask, rows, K, n, m, NULL), 0);
    for (int g = 0; g < rows * K; g += m) {
      int kept = 0;
      for (int j = 0; j < m; j++) {
        kept += mask[g + j];
        ck_assert(w[g + j] == (mask[g + j] ? w0[g + j] : 0.0f));
        if (!mask[g + j]) /* every kept one beats every removed one: larger, or equal and earlier */
          for (int i = 0; i < m; i++)
            if (mask[g + i])
              ck_assert(fabsf(w0[g + i]) > fabsf(w0[g + j]) || (fabsf(w0[g + i]) == fabsf(w0[g + j]) && i < j));
      }
      ck_assert_int_eq(kept, n);
    }
  }
  float h[4] = {1, -2, 2, 0.5f};
  ck_assert_int_eq(rt_prune_nm(h, mask, 1, 4, 2, 4, NULL), 0); /* |-2| and |2| tie: both kept */
  ck_assert(mask[0] == 0 && mask[1] == 1 && mask[2] == 1 && mask[3] == 0);
  float e[4] = {1, 1, 1, 1};
  ck_assert_int_eq(rt_prune_nm(e, mask, 1, 4, 1, 4, NULL), 0); /* all tie: the first kept */
  ck_assert(mask[0] == 1 && mask[1] == 0 && mask[2] == 0 && mask[3] == 0);
  RtError err;
  ck_assert_int_eq(rt_prune_nm(w, mask, rows, 22, 2, 4, &err), -1);
  ck_assert_msg(strstr(err.msg, "K = 22 is not a multiple of 4"), "%s", err.msg);
  ck_assert_int_eq(rt_prune_nm(w, mask, rows, K, 5, 4, &err), -1);
  ck_assert_msg(strstr(err.msg, "5:4"), "%s", err.msg);
  ck_assert_int_eq(rt_prune_nm(w, mask, rows, K, 0, 4, &err), -1);
}
END_TEST

/* ---- the schedule -------------------------------------------------------------------------- */

/* the formula itself, for the test's expectations */
static double zg(int64_t t, double si, double sf, int64_t start, int64_t end) {
  double f = 1.0 - (double)(t - start) / (double)(end - start);
  return sf + (si - sf) * f * f * f;
}

START_TEST(schedule) {
  /* s_init 0, s_final 0.9, start 10, end 50, every 10: steps 10-19 -> t 10 (0), 20-29 -> t 20
   * (0.9 - 0.9 * 0.75^3 = 0.5203125), 30-39 -> 0.7875, 40-49 -> 0.8859375, 50 on 0.9 */
  const int64_t steps[] = {1, 9, 10, 15, 19, 20, 29, 30, 39, 40, 49, 50, 51, 1000};
  const int64_t ts[] = {-1, -1, 10, 10, 10, 20, 20, 30, 30, 40, 40, 50, 50, 50};
  for (int i = 0; i < 14; i++) {
    double want = ts[i] < 0 ? 0.0 : zg(ts[i], 0.0, 0.9, 10, 50);
    ck_assert_msg(fabs(rt_prune_schedule(steps[i], 0.0, 0.9, 10, 50, 10) - want) < 1e-12, "step %lld",
                  (long long)steps[i]);
  }
  ck_assert(fabs(rt_prune_schedule(20, 0.0, 0.9, 10, 50, 10) - 0.5203125) < 1e-12);
  ck_assert(fabs(rt_prune_schedule(35, 0.0, 0.9, 10, 50, 10) - 0.7875) < 1e-12);
  ck_assert(fabs(rt_prune_schedule(45, 0.0, 0.9, 10, 50, 10) - 0.8859375) < 1e-12);
  ck_assert(rt_prune_schedule(50, 0.0, 0.9, 10, 50, 10) == 0.9);
  /* every 7: t = 10 + floor((48 - 10) / 7) * 7 = 45 */
  ck_assert(fabs(rt_prune_schedule(48, 0.2, 0.8, 10, 50, 7) - zg(45, 0.2, 0.8, 10, 50)) < 1e-12);
  ck_assert(rt_prune_schedule(5, 0.2, 0.8, 10, 50, 7) == 0.2);
  ck_assert(fabs(rt_prune_schedule(10, 0.2, 0.8, 10, 50, 7) - 0.2) < 1e-12);
  /* end == start: s_final from start on; every 0 counts as 1 */
  ck_assert(rt_prune_schedule(9, 0.0, 0.5, 10, 10, 1) == 0.0);
  ck_assert(rt_prune_schedule(10, 0.0, 0.5, 10, 10, 1) == 0.5);
  ck_assert(fabs(rt_prune_schedule(13, 0.0, 0.9, 10, 50, 0) - zg(13, 0.0, 0.9, 10, 50)) < 1e-12);
  /* due */
  const int64_t dsteps[] = {9, 10, 11, 19, 20, 40, 49, 50, 51, 60};
  const int dwant[] = {0, 1, 0, 0, 1, 1, 0, 1, 0, 0};
  for (int i = 0; i < 10; i++)
    ck_assert_msg(rt_prune_schedule_due(dsteps[i], 10, 50, 10) == dwant[i], "due at %lld", (long long)dsteps[i]);
  ck_assert(rt_prune_schedule_due(45, 10, 50, 7) && rt_prune_schedule_due(50, 10, 50, 7));
  ck_assert(!rt_prune_schedule_due(46, 10, 50, 7) && !rt_prune_schedule_due(52, 10, 50, 7));
  ck_assert(rt_prune_schedule_due(10, 10, 10, 1) && !rt_prune_schedule_due(11, 10, 10, 1));
  /* a due step is where the target changes: between due steps it is constant */
  for (int64_t s = 11; s <= 60; s++)
    if (!rt_prune_schedule_due(s, 10, 50, 7))
      ck_assert(rt_prune_schedule(s, 0.0, 0.9, 10, 50, 7) == rt_prune_schedule(s - 1, 0.0, 0.9, 10, 50, 7));
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_sparse");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, layout);
  tcase_add_test(tc, pack_round_trip);
  tcase_add_test(tc, pack_errors);
  tcase_add_test(tc, check_corrupt);
  tcase_add_test(tc, linear_vs_ref);
  tcase_add_test(tc, empty_shapes);
  tcase_add_test(tc, magnitude_hand);
  tcase_add_test(tc, magnitude_sorted);
  tcase_add_test(tc, magnitude_multi);
  tcase_add_test(tc, nm_pattern);
  tcase_add_test(tc, schedule);
  suite_add_tcase(s, tc);
  return check_run(s);
}
