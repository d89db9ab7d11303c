/* core.h: the core room of the runtime (runtime/core/), internal: not part of the ABI in
 * modelc_rt.h. Errors, the clock, aligned allocation, the thread count, the dtypes of the file
 * formats and the scalar float conversions, and the `_ref` twins of the cast kernels. core/
 * includes nothing of the runtime but modelc_rt.h (the pool and the casts it implements are ABI);
 * every other room may include this header. */
#ifndef MODELC_RT_CORE_H
#define MODELC_RT_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "../modelc_rt.h"

/* ---- errors, clock, allocation (core/util.c) ---- */

/* Formats a message into err (if non-NULL) and returns -1, so callers can `return rt_fail(...)`. */
int rt_fail(RtError *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Seconds from an arbitrary fixed point, monotonic clock (CLOCK_MONOTONIC). */
double rt_now_seconds(void);

/* A zeroed, 64-byte aligned block of at least n bytes (rounded up), or NULL. */
void *rt_xalloc(size_t n);

/* ---- the thread count (core/pool.c; rt_parallel_for is in modelc_rt.h) ---- */

/* Sets the number of threads (calling thread included) used from now on; n <= 0 means
 * MODELC_THREADS if set, else the online CPUs capped at 16; at most 64. Makes OpenBLAS
 * single-threaded (openblas_set_num_threads(1)) and starts the missing workers (persistent,
 * detached; never stopped: lowering n just leaves some idle). May be called again between calls
 * of the kernels; ignored when called from inside a task. Called by rt_main with --threads (0 by
 * default); the first kernel or rt_threads() call does rt_set_threads(0) if nobody did.
 * Size scratch (rt_attention_*_scratch_floats) after the last call: it scales with rt_threads(). */
void rt_set_threads(int n);
/* The current number of threads (initialising the pool if needed). */
int rt_threads(void);

/* Runs fn(ctx, lo, hi) once for every block [k*block, min(n, (k+1)*block)) of [0,n), the blocks
 * spread over the pool (each thread a contiguous run of them, in order). Unlike rt_parallel_for's
 * chunks, the ranges fn sees depend only on n and block, never on the thread count: a kernel that
 * calls a library (an OpenBLAS GEMM) or reduces once per range gives the same bits with any
 * number of threads. block < 1 counts as 1. */
void rt_parallel_blocks(int n, int block, RtRangeFn fn, void *ctx);

/* ---- CPU features (core/cpu.c), read once; MODELC_CPU=portable reads every one as absent,
 * MODELC_CPU=avx2 every one beyond AVX2, FMA and F16C (avx_vnni, avx512*, amx*) ---- */

typedef struct RtCpu {
  int avx, fma, f16c, avx2;          /* with the OS saving the YMM state */
  int avx_vnni;                      /* the VEX vpdpbusd (256-bit), YMM state */
  int avx512f, avx512bw, avx512vl, avx512_vnni, avx512_bf16; /* with the ZMM state */
  int amx_bf16, amx_int8;            /* with the tile state (XCR0) */
} RtCpu;
const RtCpu *rt_cpu(void);
/* The present features as one line ("avx fma f16c ..."), for PROG info and benchmarks. */
void rt_cpu_describe(char *buf, size_t n);

/* ---- data types, shared by safetensors and .npy (core/dtype.c) ---- */

/* RtDType is in modelc_rt.h (parameters carry their storage dtype in the ABI). */

#define RT_MAX_DIMS 8

/* Bytes per element (0 for RT_DT_INVALID). */
size_t rt_dtype_size(RtDType dt);
/* The safetensors name ("F32", "BF16", ...), or "?" . */
const char *rt_dtype_name(RtDType dt);
/* Parses a safetensors dtype name; RT_DT_INVALID if unknown. */
RtDType rt_dtype_from_name(const char *name);

/* Half-precision conversions (IEEE binary16 and bfloat16), round-to-nearest-even on the way down. */
float rt_f16_to_f32(uint16_t h);
float rt_bf16_to_f32(uint16_t h);
uint16_t rt_f32_to_bf16(float f);
uint16_t rt_f32_to_f16(float f); /* overflow (|f| >= 65520) gives inf, as IEEE rounding does */

/* ---- the `_ref` twins of the cast kernels (core/convert.c): one element at a time with the
 * functions above; they agree with rt_cast_* bit for bit ---- */

void rt_cast_f32_bf16_ref(uint16_t *out, const float *x, size_t n);
void rt_cast_bf16_f32_ref(float *out, const uint16_t *x, size_t n);
void rt_cast_f32_f16_ref(uint16_t *out, const float *x, size_t n);
void rt_cast_f16_f32_ref(float *out, const uint16_t *x, size_t n);

/* ---- quantised weight formats (core/quant.c; the layouts are RtFormat's, modelc_rt.h) ----
 * For an [N,K] weight in format f (RT_FMT_I8_ROW, RT_FMT_Q8_0, RT_FMT_Q4_0): the bytes of its
 * values, the offset of its scales from its start (the values rounded up to 64 bytes), the bytes of
 * the scales, the whole (offset + scales), and the scales' dtype and element count. These are the
 * runtime's copy of the rule the compiler's ir_param_storage_bytes applies (tests/unit/test_abi.c
 * checks they agree). rt_quant_check says whether [N,K] can be stored in f (0), else -1 with a
 * reason in err (K not a multiple of 32 for the block formats). */
int64_t rt_quant_values_bytes(RtFormat f, int64_t N, int64_t K);
int64_t rt_quant_scales_offset(RtFormat f, int64_t N, int64_t K);
int64_t rt_quant_scales_bytes(RtFormat f, int64_t N, int64_t K);
int64_t rt_quant_bytes(RtFormat f, int64_t N, int64_t K);
RtDType rt_quant_scale_dtype(RtFormat f);
int64_t rt_quant_scale_count(RtFormat f, int64_t N, int64_t K);
RtDType rt_quant_value_dtype(RtFormat f);
int rt_quant_check(RtFormat f, int64_t N, int64_t K, RtError *err);
const char *rt_format_name(RtFormat f); /* "dense", "i8_row", "q8_0", "q4_0", "csr" */
/* Weights: src f32 [N,K] -> dst (rt_quant_bytes(f, N, K) bytes, values then scales) with the
 * format's rounding (docs/passes.md; core/quant.c's header); and back: dst f32 [N,K] = the
 * dequantised values. A non-finite weight is an error (-1, naming its row and column), never a
 * silent NaN scale; so is a block whose f16 scale would overflow (q8_0: a block's max |w| with
 * amax / 127 >= 65520, about 8.32e6; q4_0: |m| >= 8 * 65520 = 524160), never a silent infinite one. */
int rt_quantize(RtFormat f, void *dst, const float *src, int64_t N, int64_t K, RtError *err);
void rt_dequantize(RtFormat f, float *dst, const void *src, int64_t N, int64_t K);
/* Row n of that: dst f32 [K] = the dequantised row n of the [N,K] weight at src (the embedding kernels
 * gather rows this way). */
void rt_dequantize_row(RtFormat f, float *dst, const void *src, int64_t N, int64_t K, int64_t n);

/* ---- the sparse format and pruning (core/sparse.c; the layout is RT_FMT_CSR's, modelc_rt.h) ----
 * The sections of an [N,K] CSR weight with nonzero capacity cap: cols at rt_csr_cols_offset(cap),
 * rowptr at rt_csr_rowptr_offset(cap), rt_csr_bytes(N, K, cap) bytes in all (K is not needed:
 * it is there so the three read alike at the call sites). */
int64_t rt_csr_cols_offset(int64_t cap);
int64_t rt_csr_rowptr_offset(int64_t cap);
int64_t rt_csr_bytes(int64_t N, int64_t K, int64_t cap);
/* dense f32 [N,K] -> dst (rt_csr_bytes(N, K, cap) bytes): the nonzeros in row-major order (exact
 * zeros, -0.0 included, are dropped), everything else zero. -1 with a message in err when nnz >
 * cap, K > 65536, a shape or cap is negative (or cap > INT32_MAX), or a value is not finite (naming
 * its row and column); dst is then untouched. */
int rt_csr_pack(void *dst, const float *dense, int64_t N, int64_t K, int64_t cap, RtError *err);
/* back: dense f32 [N,K] (zeros where nothing is stored); the blob is trusted (rt_csr_check) */
void rt_csr_unpack(float *dense, const void *src, int64_t N, int64_t K, int64_t cap);
/* the stored nonzeros, rowptr[N] */
int64_t rt_csr_nnz(const void *src, int64_t N, int64_t cap);
/* 0 when src is a valid blob: rowptr[0] = 0, rowptr monotone, rowptr[N] <= cap, columns < K and
 * strictly increasing within a row; else -1 naming the first fault in err. Reads through memcpy
 * (any alignment). Values are not checked. */
int rt_csr_check(const void *src, int64_t N, int64_t K, int64_t cap, RtError *err);

/* Masks are u8, 1 = kept. Magnitude pruning: exactly the min(nzero, n) entries of smallest |w| are
 * zeroed (+0) and masked, the others' mask set to 1; ties of |w| remove the lower index first; a
 * weight already zero counts as small (|w| compared by its bits: a NaN is above +inf). O(n), no
 * allocation (radix select). The multi form prunes several arrays together (global magnitude
 * pruning: one threshold over all count arrays of n[a] entries; ties in (array, index) order). */
void rt_prune_magnitude(float *w, uint8_t *mask, int64_t n, int64_t nzero);
void rt_prune_magnitude_multi(float *const *w, uint8_t *const *mask, const int64_t *n, int count, int64_t nzero);
/* N:M pruning of w (rows, K) row-major: in every group of m consecutive elements along K of each
 * row the n of largest |w| are kept (ties: the lower index kept), the other m - n zeroed and
 * masked. -1 (err) unless 1 <= n <= m and K % m == 0. */
int rt_prune_nm(float *w, uint8_t *mask, int64_t rows, int64_t K, int n, int m, RtError *err);
/* w[i] = 0 where mask[i] == 0; the number of zeros of a mask */
void rt_mask_apply(float *w, const uint8_t *mask, int64_t n);
int64_t rt_mask_zeros(const uint8_t *mask, int64_t n);
/* Zhu & Gupta (2017)'s gradual schedule (docs/runtime.md, "Sparse weights"): the target sparsity
 * in force after optimiser step `step` (counted from 1): s_init before start, s_final from end
 * on (and from start on when end <= start), else with t = start + floor((step - start) / every)
 * every, s_final + (s_init - s_final) (1 - (t - start) / (end - start))^3. every < 1 counts as 1.
 * _due is 1 when the masks are recomputed after this step: start <= step <= end and
 * ((step - start) % every == 0 or step == end). */
double rt_prune_schedule(int64_t step, double s_init, double s_final, int64_t start, int64_t end, int64_t every);
int rt_prune_schedule_due(int64_t step, int64_t start, int64_t end, int64_t every);

#endif
