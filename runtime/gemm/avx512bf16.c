/* avx512bf16.c: our own bf16 x bf16 -> f32 GEMM backend (gemm.h) with AVX512-BF16's vdpbf16ps,
 * for CPUs that have the instruction (Intel Cooper Lake and later, AMD Zen 4) when oneDNN is not
 * built in or MODELC_GEMM=avx512bf16 forces it. gemm.c calls it only when rt_cpu()->avx512_bf16;
 * the file is compiled for any x86-64 (the target attribute enables the instructions per function).
 *
 * vdpbf16ps adds, in each of 16 f32 lanes, the products of one pair of bf16 values from each
 * operand: lane j += a[2j] b[2j] + a[2j+1] b[2j+1] (products exact, sums rounded to f32, denormals
 * flushed to zero as the instruction defines). So both operands are packed with K in pairs:
 *   A: panels of MR = 6 rows, for each pair p the 6 rows' (A[m][2p], A[m][2p+1]) as 32-bit words;
 *   B: panels of NR = 64 columns, for each pair p the 64 columns' (B[2p][n], B[2p+1][n]).
 * The micro-kernel keeps a 6 x 64 block of C in 24 zmm accumulators, and for each pair loads 4 B
 * vectors and broadcasts 6 A words: 24 vdpbf16ps per 10 loads. Around it, Goto-style blocking:
 * B in blocks of KC x NC (packed once per block, kept in L2; one 64-column micro-panel of it in L1),
 * A in blocks of MC x KC, zero-padded at the edges (odd K, M and N tails cost nothing but the
 * padding), C stored with masks. Over K blocks C accumulates in memory: the first block writes
 * acc + beta C (acc when beta is 0, C unread), the next ones C += acc. The order of operations
 * depends on the shapes only: the same bits on every run. Packing buffers are per thread (static
 * thread-local storage, 304 KiB): no allocation. */
#include "gemm.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#define TGT __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))

enum { MR = 6, NR = 64, KC = 256, KCP = KC / 2, MC = 96, NC = 512 };

static _Thread_local uint32_t Apack[MC * KCP] __attribute__((aligned(64)));
static _Thread_local uint32_t Bpack[NC * KCP] __attribute__((aligned(64)));

static inline uint32_t pair(uint16_t lo, uint16_t hi) { return (uint32_t)lo | (uint32_t)hi << 16; }

/* op(A)[m][k] and op(B)[k][n] as stored */
static inline uint16_t at(const uint16_t *X, int trans, int ld, int r, int c) {
  return trans ? X[(size_t)c * ld + r] : X[(size_t)r * ld + c];
}

/* A rows [m0, m0+mc), K [k0, k0+kc) -> panels of MR rows, zero-padded */
static void pack_a(const uint16_t *A, int ta, int lda, int M, int K, int m0, int mc, int k0, int kc) {
  int kcp = (kc + 1) / 2, npanel = (mc + MR - 1) / MR;
  for (int q = 0; q < npanel; q++) {
    uint32_t *dst = Apack + (size_t)q * kcp * MR;
    for (int r = 0; r < MR; r++) {
      int m = m0 + q * MR + r;
      for (int p = 0; p < kcp; p++) {
        int k = k0 + 2 * p;
        uint32_t w = 0;
        if (m < M)
          w = pair(at(A, ta, lda, m, k), k + 1 < K ? at(A, ta, lda, m, k + 1) : 0);
        dst[(size_t)p * MR + r] = w;
      }
    }
  }
}

/* B columns [n0, n0+nc), K [k0, k0+kc) -> panels of NR columns, zero-padded */
static void pack_b(const uint16_t *B, int tb, int ldb, int N, int K, int n0, int nc, int k0, int kc) {
  int kcp = (kc + 1) / 2, npanel = (nc + NR - 1) / NR;
  for (int q = 0; q < npanel; q++) {
    uint32_t *dst = Bpack + (size_t)q * kcp * NR;
    for (int c = 0; c < NR; c++) {
      int n = n0 + q * NR + c;
      if (n >= N) {
        for (int p = 0; p < kcp; p++)
          dst[(size_t)p * NR + c] = 0;
        continue;
      }
      if (tb) { /* B stored (N,K): the pair is two adjacent halves of row n */
        const uint16_t *row = B + (size_t)n * ldb + k0;
        int full = kc / 2;
        for (int p = 0; p < full; p++) {
          uint32_t w;
          memcpy(&w, row + 2 * p, sizeof w); /* little-endian: k in the low half */
          dst[(size_t)p * NR + c] = w;
        }
        if (full < kcp)
          dst[(size_t)full * NR + c] = pair(row[2 * full], 0);
      } else {
        for (int p = 0; p < kcp; p++) {
          int k = k0 + 2 * p;
          dst[(size_t)p * NR + c] = pair(B[(size_t)k * ldb + n], k + 1 < K ? B[(size_t)(k + 1) * ldb + n] : 0);
        }
      }
    }
  }
}

/* C[0..mr) x [0..nr) (+)= Apanel Bpanel over kcp pairs; first: acc + beta C (C unread if beta 0) */
TGT static void micro(int kcp, const uint32_t *Ap, const uint32_t *Bp, float *C, int ldc, int mr, int nr, float beta,
                      int first) {
  __m512 acc[MR][4];
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
      acc[r][j] = _mm512_setzero_ps();
  for (int p = 0; p < kcp; p++) {
    const uint32_t *b = Bp + (size_t)p * NR;
    __m512i b0 = _mm512_load_si512(b), b1 = _mm512_load_si512(b + 16), b2 = _mm512_load_si512(b + 32),
            b3 = _mm512_load_si512(b + 48);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      __m512bh a = (__m512bh)_mm512_set1_epi32((int)Ap[(size_t)p * MR + r]);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, (__m512bh)b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, (__m512bh)b1);
      acc[r][2] = _mm512_dpbf16_ps(acc[r][2], a, (__m512bh)b2);
      acc[r][3] = _mm512_dpbf16_ps(acc[r][3], a, (__m512bh)b3);
    }
  }
  __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 4
  for (int j = 0; j < 4; j++) {
    int valid = nr - 16 * j;
    if (valid <= 0)
      break;
    __mmask16 mk = valid >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << valid) - 1);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      if (r >= mr)
        break;
      float *c = C + (size_t)r * ldc + 16 * j;
      __m512 v = acc[r][j];
      if (!first)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, c));
      else if (beta != 0.0f)
        v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, c), v);
      _mm512_mask_storeu_ps(c, mk, v);
    }
  }
}

int rt_gemm_avx512bf16_built(void) { return 1; }

void rt_gemm_avx512bf16(int transA, int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                        int ldb, float beta, float *C, int ldc) {
  for (int n0 = 0; n0 < N; n0 += NC) {
    int nc = N - n0 < NC ? N - n0 : NC;
    for (int k0 = 0; k0 < K; k0 += KC) {
      int kc = K - k0 < KC ? K - k0 : KC, kcp = (kc + 1) / 2;
      pack_b(B, transB, ldb, N, K, n0, nc, k0, kc);
      for (int m0 = 0; m0 < M; m0 += MC) {
        int mc = M - m0 < MC ? M - m0 : MC;
        pack_a(A, transA, lda, M, K, m0, mc, k0, kc);
        for (int jn = 0; jn < nc; jn += NR)
          for (int im = 0; im < mc; im += MR)
            micro(kcp, Apack + (size_t)(im / MR) * kcp * MR, Bpack + (size_t)(jn / NR) * kcp * NR,
                  C + (size_t)(m0 + im) * ldc + n0 + jn, ldc, mc - im < MR ? mc - im : MR,
                  nc - jn < NR ? nc - jn : NR, beta, k0 == 0);
      }
    }
  }
}

#else /* not x86-64: the kernel does not exist; gemm.c never selects it */

int rt_gemm_avx512bf16_built(void) { return 0; }
void rt_gemm_avx512bf16(int transA, int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                        int ldb, float beta, float *C, int ldc) {
  rt_gemm_internal_error("rt_gemm_avx512bf16: not built on this architecture");
}

#endif
