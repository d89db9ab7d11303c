/* sparse.c: the sparse weight format RT_FMT_CSR (its layout, packing, unpacking and validation) and
 * the pruning utilities the prune pass and the trainer use (issue 12): magnitude masks (one array
 * or several together), N:M masks, applying and counting masks, and Zhu & Gupta's gradual
 * schedule. The kernel that reads the format is kernels/linear_sparse.c. Why here: the format and
 * its masks are rules shared by the compiler's pass (through the loader), the trainer and the
 * kernels, and core/ is the room every other room may use.
 *
 * CSR layout of an [N,K] f32 weight with nonzero capacity cap (fixed when the program is
 * compiled; the actual nnz = rowptr[N] <= cap), one blob, 64-byte aligned sections:
 *   values  f32 [cap]  at byte 0                                 nonzeros in row-major order
 *   cols    u16 [cap]  at rt_csr_cols_offset(cap)   = align64(4 cap)
 *   rowptr  i32 [N+1]  at rt_csr_rowptr_offset(cap) = align64(cols_offset + 2 cap)
 *   total   rt_csr_bytes(N, K, cap) = rowptr_offset + 4 (N + 1); K <= 65536 (a u16 column).
 * Row n's nonzeros are entries rowptr[n] .. rowptr[n+1]-1, columns strictly increasing. Unused
 * capacity (entries rowptr[N] .. cap-1) and the padding between sections are zero, so a packed
 * blob's bytes depend only on the matrix. The reading functions go through memcpy, so a blob at
 * any address is read safely; the kernels read it typed and need the 64-byte aligned base the
 * weight buffer gives.
 *
 * Magnitude order: |w| is compared on its bit pattern (sign cleared), which orders the finite
 * values, +-0 and infinities as numbers (a NaN sorts above +inf); ties go by position. The
 * selection is a three-digit radix select on those 31 bits (11 + 10 + 10), O(n) with no
 * allocation. */
#include "core.h"

#include <math.h>
#include <string.h>

static int64_t align64(int64_t n) { return (n + 63) / 64 * 64; }

int64_t rt_csr_cols_offset(int64_t cap) { return align64(4 * cap); }
int64_t rt_csr_rowptr_offset(int64_t cap) { return align64(rt_csr_cols_offset(cap) + 2 * cap); }
int64_t rt_csr_bytes(int64_t N, int64_t K, int64_t cap) {
  (void)K;
  return rt_csr_rowptr_offset(cap) + 4 * (N + 1);
}

/* the bits of |f|: an unsigned order that is the numeric order of |f| */
static uint32_t mag_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u & 0x7fffffffu;
}

static int32_t get_i32(const unsigned char *p, int64_t i) {
  int32_t v;
  memcpy(&v, p + 4 * i, 4);
  return v;
}

static uint16_t get_u16(const unsigned char *p, int64_t i) {
  uint16_t v;
  memcpy(&v, p + 2 * i, 2);
  return v;
}

int rt_csr_pack(void *dst, const float *dense, int64_t N, int64_t K, int64_t cap, RtError *err) {
  if (N < 0 || K < 0 || cap < 0 || cap > INT32_MAX)
    return rt_fail(err, "csr: bad shape [%lld,%lld] or capacity %lld", (long long)N, (long long)K, (long long)cap);
  if (K > 65536)
    return rt_fail(err, "csr: K = %lld columns do not fit the format's u16 column index (at most 65536)",
                   (long long)K);
  int64_t nnz = 0;
  for (int64_t i = 0; i < N * K; i++) {
    if (!isfinite(dense[i]))
      return rt_fail(err, "csr: weight row %lld, column %lld is not finite (%g)", (long long)(i / K),
                     (long long)(i % K), (double)dense[i]);
    nnz += dense[i] != 0.0f;
  }
  if (nnz > cap)
    return rt_fail(err, "csr: %lld nonzeros in a [%lld,%lld] weight exceed the capacity of %lld", (long long)nnz,
                   (long long)N, (long long)K, (long long)cap);
  unsigned char *b = dst;
  memset(b, 0, (size_t)rt_csr_bytes(N, K, cap));
  unsigned char *cols = b + rt_csr_cols_offset(cap), *rowptr = b + rt_csr_rowptr_offset(cap);
  int32_t j = 0;
  for (int64_t n = 0; n < N; n++) {
    memcpy(rowptr + 4 * n, &j, 4);
    for (int64_t k = 0; k < K; k++) {
      float v = dense[n * K + k];
      if (v == 0.0f)
        continue;
      uint16_t c = (uint16_t)k;
      memcpy(b + 4 * (int64_t)j, &v, 4);
      memcpy(cols + 2 * (int64_t)j, &c, 2);
      j++;
    }
  }
  memcpy(rowptr + 4 * N, &j, 4);
  return 0;
}

void rt_csr_unpack(float *dense, const void *src, int64_t N, int64_t K, int64_t cap) {
  const unsigned char *b = src, *cols = b + rt_csr_cols_offset(cap), *rowptr = b + rt_csr_rowptr_offset(cap);
  memset(dense, 0, (size_t)(N * K) * sizeof(float));
  for (int64_t n = 0; n < N; n++)
    for (int32_t j = get_i32(rowptr, n), e = get_i32(rowptr, n + 1); j < e; j++)
      memcpy(dense + n * K + get_u16(cols, j), b + 4 * (int64_t)j, 4);
}

int64_t rt_csr_nnz(const void *src, int64_t N, int64_t cap) {
  return get_i32((const unsigned char *)src + rt_csr_rowptr_offset(cap), N);
}

int rt_csr_check(const void *src, int64_t N, int64_t K, int64_t cap, RtError *err) {
  if (N < 0 || K < 0 || cap < 0 || K > 65536)
    return rt_fail(err, "csr: bad shape [%lld,%lld] or capacity %lld (K at most 65536)", (long long)N, (long long)K,
                   (long long)cap);
  const unsigned char *b = src, *cols = b + rt_csr_cols_offset(cap), *rowptr = b + rt_csr_rowptr_offset(cap);
  if (get_i32(rowptr, 0) != 0)
    return rt_fail(err, "csr: rowptr[0] is %d, not 0", get_i32(rowptr, 0));
  if (get_i32(rowptr, N) > cap)
    return rt_fail(err, "csr: %d nonzeros exceed the capacity of %lld", get_i32(rowptr, N), (long long)cap);
  for (int64_t n = 0; n < N; n++) {
    int32_t j0 = get_i32(rowptr, n), j1 = get_i32(rowptr, n + 1);
    if (j1 < j0)
      return rt_fail(err, "csr: rowptr decreases at row %lld (%d then %d)", (long long)n, j0, j1);
    for (int32_t j = j0; j < j1; j++) {
      uint16_t c = get_u16(cols, j);
      if (c >= K)
        return rt_fail(err, "csr: row %lld, entry %d: column %u is not below K = %lld", (long long)n, j, c,
                       (long long)K);
      if (j > j0 && c <= get_u16(cols, j - 1))
        return rt_fail(err, "csr: row %lld, entry %d: column %u does not follow column %u", (long long)n, j, c,
                       get_u16(cols, j - 1));
    }
  }
  return 0;
}

/* ---- masks ---------------------------------------------------------------------------------- */

void rt_mask_apply(float *w, const uint8_t *mask, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!mask[i])
      w[i] = 0.0f;
}

int64_t rt_mask_zeros(const uint8_t *mask, int64_t n) {
  int64_t z = 0;
  for (int64_t i = 0; i < n; i++)
    z += mask[i] == 0;
  return z;
}

/* Global magnitude pruning: the nzero entries of smallest (|w|, array, index) over the arrays are
 * zeroed (w = +0) and masked (0), every other one kept (mask 1). Radix select of the nzero-th
 * smallest magnitude T over the 31 bits (digits of 11, 10, 10 bits): after it, the entries with
 * |w| below T and the first `eq` entries equal to T are exactly the nzero to remove. */
void rt_prune_magnitude_multi(float *const *w, uint8_t *const *mask, const int64_t *n, int count, int64_t nzero) {
  int64_t total = 0;
  for (int a = 0; a < count; a++)
    total += n[a];
  if (nzero > total)
    nzero = total;
  uint32_t T = 0;
  int64_t neq = 0; /* how many entries equal to T go */
  if (nzero > 0) {
    static const int shift[3] = {20, 10, 0}, width[3] = {11, 10, 10};
    uint32_t prefix = 0, known = 0; /* the bits of T fixed so far, and which */
    int64_t rank = nzero - 1;       /* T's 0-based rank among the entries matching prefix */
    for (int d = 0; d < 3; d++) {
      int64_t hist[2048] = {0};
      const uint32_t dmask = (1u << width[d]) - 1;
      for (int a = 0; a < count; a++)
        for (int64_t i = 0; i < n[a]; i++) {
          uint32_t m = mag_bits(w[a][i]);
          if ((m & known) == prefix)
            hist[m >> shift[d] & dmask]++;
        }
      uint32_t bin = 0;
      while (rank >= hist[bin])
        rank -= hist[bin++];
      prefix |= bin << shift[d];
      known |= dmask << shift[d];
    }
    T = prefix;
    neq = rank + 1;
  }
  for (int a = 0; a < count; a++)
    for (int64_t i = 0; i < n[a]; i++) {
      uint32_t m = mag_bits(w[a][i]);
      int drop = nzero > 0 && (m < T || (m == T && neq > 0));
      if (drop && m == T)
        neq--;
      mask[a][i] = (uint8_t)!drop;
      if (drop)
        w[a][i] = 0.0f;
    }
}

void rt_prune_magnitude(float *w, uint8_t *mask, int64_t n, int64_t nzero) {
  rt_prune_magnitude_multi(&w, &mask, &n, 1, nzero);
}

int rt_prune_nm(float *w, uint8_t *mask, int64_t rows, int64_t K, int n, int m, RtError *err) {
  if (m < 1 || n < 1 || n > m)
    return rt_fail(err, "prune: an N:M pattern needs 1 <= N <= M, not %d:%d", n, m);
  if (K % m != 0)
    return rt_fail(err, "prune: %d:%d groups %d weights along K, but K = %lld is not a multiple of %d", n, m, m,
                   (long long)K, m);
  for (int64_t g = 0; g < rows * K; g += m) { /* a group never straddles rows: K % m == 0 */
    for (int j = 0; j < m; j++) {
      uint32_t mj = mag_bits(w[g + j]);
      int beaten = 0; /* the entries kept before this one: larger, or equal and earlier */
      for (int i = 0; i < m && beaten < n; i++) {
        uint32_t mi = mag_bits(w[g + i]);
        beaten += mi > mj || (mi == mj && i < j);
      }
      mask[g + j] = (uint8_t)(beaten < n);
    }
    for (int j = 0; j < m; j++)
      if (!mask[g + j])
        w[g + j] = 0.0f;
  }
  return 0;
}

/* ---- Zhu & Gupta's gradual schedule (docs/runtime.md, "Sparse weights") --------------------- */

double rt_prune_schedule(int64_t step, double s_init, double s_final, int64_t start, int64_t end, int64_t every) {
  if (step < start)
    return s_init;
  if (step >= end)
    return s_final;
  if (every < 1)
    every = 1;
  int64_t t = start + (step - start) / every * every; /* step >= start: the division floors */
  if (t > end)
    t = end;
  double f = 1.0 - (double)(t - start) / (double)(end - start);
  return s_final + (s_init - s_final) * f * f * f;
}

int rt_prune_schedule_due(int64_t step, int64_t start, int64_t end, int64_t every) {
  if (every < 1)
    every = 1;
  if (step < start || step > end)
    return 0;
  return (step - start) % every == 0 || step == end;
}
