/* gemm.h: the gemm room of the runtime (runtime/gemm/), internal: not part of the ABI in
 * modelc_rt.h. One typed, single-threaded matrix product with implementations chosen once at
 * start-up per dtype class:
 *
 *   C = op(A) op(B) + beta C      row-major; op(A) is (M,K), op(B) is (K,N), C is (M,N) f32
 *
 * A is stored (M,K) with row stride lda >= K, or, with transA, (K,M) with lda >= M; B is stored
 * (K,N) with ldb >= N, or, with transB, (N,K) with ldb >= K (cblas_sgemm's row-major meaning);
 * C has row stride ldc >= N. A and B are each RT_DT_F32 (float) or RT_DT_BF16 (uint16_t bfloat16
 * bits); the products accumulate in f32 and C is f32. beta == 0 never reads C (NaNs there are
 * overwritten). M, N <= 0 does nothing; K <= 0 gives C = beta C.
 *
 * The dtype classes are f32 x f32 and bf16 x bf16. A mixed call (f32 x bf16) is a caller's bug:
 * rt_gemm stops the program with an internal error naming the call (convert the f32 operand with
 * rt_cast_f32_bf16 first; rt_gemm_ref accepts any mix, for tests).
 *
 * Threads: rt_gemm runs in the calling thread and starts no thread (oneDNN's OpenMP is confined to
 * one thread per calling thread). Kernels split their output into blocks fixed by the shapes and
 * call rt_gemm once per block over the pool (rt_parallel_blocks), so results are the same bits for
 * any thread count. gemm/ reaches core/ only; kernels/ and prog/ reach it (docs/runtime.md). */
#ifndef MODELC_RT_GEMM_H
#define MODELC_RT_GEMM_H

#include <stddef.h>

#include "../core/core.h"

/* The implementations (MODELC_GEMM names them: openblas, onednn, avx512bf16, ref). */
typedef enum RtGemmImpl {
  RT_GEMM_REF,        /* plain C, double accumulation: every dtype; the fallback (gemm.c) */
  RT_GEMM_OPENBLAS,   /* cblas_sgemm: f32 only (gemm.c) */
  RT_GEMM_ONEDNN,     /* oneDNN's matmul primitive, cached per shape: f32 and bf16 (onednn.c) */
  RT_GEMM_AVX512BF16, /* our vdpbf16ps kernel: bf16 only (avx512bf16.c) */
  RT_GEMM_NIMPL
} RtGemmImpl;

/* The product above with the implementation chosen for the dtypes (see rt_gemm_init). */
void rt_gemm(int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda, RtDType bdt,
             const void *B, int ldb, float beta, float *C, int ldc);

/* The same with a given implementation, which must support the dtypes (rt_gemm_supports): for tests
 * comparing every implementation available on the machine. */
void rt_gemm_with(RtGemmImpl impl, int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda,
                  RtDType bdt, const void *B, int ldb, float beta, float *C, int ldc);

/* The `_ref` twin: plain loops, double accumulation of the exact products, one rounding to f32 at
 * the end (C = (float)(sum + beta * C)); any mix of f32 and bf16 operands. */
void rt_gemm_ref(int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda, RtDType bdt,
                 const void *B, int ldb, float beta, float *C, int ldc);

/* Chooses the implementation of each dtype class, once (later calls return the first result):
 *   f32  x f32:  openblas, unless OpenBLAS runs kernels of a pre-AVX core on this AVX2 CPU
 *                (rt_gemm_openblas_outdated: Debian's 0.3.21 on CPUs it does not recognise) and
 *                the runtime was built with oneDNN: then onednn;
 *   bf16 x bf16: onednn when the runtime was built with oneDNN and the CPU has AMX-BF16 or
 *                AVX512-BF16 (rt_cpu()), else avx512bf16 when the CPU has AVX512-BF16, else ref.
 * The rule reads CPU features only, never a timing, so every run of a program on a machine makes
 * the same choice (and the same bits). MODELC_CPU=portable reads every feature as absent: bf16 is
 * then ref. MODELC_GEMM=openblas|onednn|avx512bf16|ref forces an implementation for the classes it
 * supports (openblas: f32; avx512bf16: bf16; onednn and ref: both); an impossible choice (onednn
 * in a build without oneDNN, avx512bf16 on a CPU without it, an unknown name) fails here with a
 * message, never silently falls back. rt_main calls this first and exits 1 on failure; rt_gemm
 * calls it on first use and stops with that message as an internal error. */
int rt_gemm_init(RtError *err);

/* Whether OpenBLAS runs the kernels of a pre-AVX core (openblas_get_corename(): Prescott, Core2,
 * ...) on a CPU with AVX2: the f32 rule above. */
int rt_gemm_openblas_outdated(void);

/* Declares [p, p + bytes) read-only until the next call (NULL, 0: nothing): a product whose B lies
 * inside reads a copy of B packed once into the layout its implementation wants (oneDNN: the
 * layout its matmul picks for weights of format "any", made by a reorder on first use and kept)
 * instead of repacking B on every call. Every such B is packed (the packed set depends on the
 * program only, so results stay the same bits for any thread count). The caller must not change
 * those bytes while they are declared, and must not call this while a product runs (it frees the
 * copies). The verbs that never change their weights declare them when rt_gemm_pack_weights()
 * says so (prog/model.c, rt_run_weights_readonly); training never does. */
void rt_gemm_constant(const void *p, size_t bytes);
/* Whether the verbs that keep their weights declare them (MODELC_GEMM_PACK=1, with oneDNN chosen
 * for a dtype class): off by default, since on the machines measured it bought no speed
 * (docs/benchmarks.md) and costs the weights' size again in memory. */
int rt_gemm_pack_weights(void);
/* How many packed copies the oneDNN backend holds (tests). */
int rt_gemm_onednn_packs(void);

/* The implementation rt_gemm uses for dtype class dt (RT_DT_F32 or RT_DT_BF16). */
RtGemmImpl rt_gemm_selected(RtDType dt);
/* Whether impl exists in this build on this CPU and computes adt x bdt. */
int rt_gemm_supports(RtGemmImpl impl, RtDType adt, RtDType bdt);
/* "openblas", "onednn", "avx512bf16", "ref". */
const char *rt_gemm_impl_name(RtGemmImpl impl);
/* The choice as one line, e.g. "f32: openblas; bf16: onednn (avx512_core_amx)", for PROG info
 * and PROG bench ("MODELC_GEMM=..." appended when it forced the choice). */
void rt_gemm_describe(char *buf, size_t n);

/* ---- the backends, internal to the room (gemm.c dispatches; K >= 1, M, N >= 1 here) ---- */

/* onednn.c: whether the runtime was built with oneDNN; the product through a cached primitive. */
int rt_gemm_onednn_built(void);
void rt_gemm_onednn_constant(const void *p, size_t bytes);
void rt_gemm_onednn(int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda, RtDType bdt,
                    const void *B, int ldb, float beta, float *C, int ldc);
/* C (M,N) int32 = A (M,K) int8 x B^T, B_NK int8 stored (N,K) (a linear layer's weight), all dense
 * row-major, exact int32 sums: oneDNN's s8 x s8 -> s32 matmul, cached per shape, in the calling
 * thread (the quantised kernels, kernels/linear_quant.c). Returns -1, computing nothing, in a build
 * without oneDNN, or when oneDNN's ISA (rt_gemm_onednn_isa) has neither VNNI nor AMX: there its
 * s8 x s8 kernels sum pairs of products in saturating int16 and are not exact. */
int rt_gemm_s8s8s32(int M, int N, int K, const int8_t *A, const int8_t *B_NK, int32_t *C);
/* oneDNN's effective ISA name ("avx512_core_amx", ...) or "absent"; the primitives cached. */
const char *rt_gemm_onednn_isa(void);
int rt_gemm_onednn_cached(void);

/* avx512bf16.c: whether this build has the kernel (x86-64); bf16 x bf16 only. */
int rt_gemm_avx512bf16_built(void);
void rt_gemm_avx512bf16(int transA, int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                        int ldb, float beta, float *C, int ldc);

/* gemm.c: stops the program for a caller's bug (stderr, then abort): the one place the runtime
 * aborts, like a failed assertion; never reached on valid calls. */
void rt_gemm_internal_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;

#endif
