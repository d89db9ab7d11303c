/* modelc_rt.h: the ABI of the modelc runtime (libmodelc_rt.a): what generated code calls, and
 * nothing else.
 *
 * Generated model code includes only this header (the compiler passes -I runtime). The runtime
 * knows nothing of the compiler. What the generated code calls: the kernels its ops lower to (GEMM
 * via OpenBLAS, embeddings, norms, softmax, attention, casts, dropout, the backward kernels of
 * training), the scalar activations of its fused loops (inline below), the pool its loops run on
 * (rt_parallel_for), and the program's entry point (rt_main) with the descriptor it fills
 * (RtModel). Everything else (file formats, optimisers, sampling, the command line, the `_ref`
 * twins of the kernels) is internal to the runtime's rooms, each with its own header:
 * core/core.h, kernels/kernels.h, io/io.h, prog/prog.h (docs/runtime.md, "Layout"). docs/runtime.md
 * is the full ABI description; the conventions are:
 *
 * Layout. Every tensor is float32 (unless stated), dense, row-major (C order). Shapes are given in
 * each kernel's comment as (B,T,C) etc.; "x is (R,C)" means x[r*C + c].
 *
 * Errors. Functions that can fail on user input return int: 0 on success, -1 on failure, and when
 * `err` is non-NULL fill err->msg with one line naming the file and the tensor
 * ("w.safetensors: tensor 'wte.weight': ..."). The runtime never calls exit() or abort().
 * Kernels that cannot fail on valid shapes return void; shapes are the caller's (the generated
 * code's) responsibility and are not re-checked in hot paths.
 *
 * Memory. Nothing allocates in a hot loop. Kernels that need scratch take it from the caller and
 * publish a size function (rt_attention_scratch_floats). Readers allocate once at open.
 *
 * Threading. One threading layer: the runtime's own pool (rt_parallel_for, runtime/core/pool.c),
 * with OpenBLAS kept single-threaded inside each task, so BLAS threads and ours never compete for
 * the cores. rt_linear, the norms, softmax and attention split their work over the pool; generated
 * code runs its fused loops through rt_parallel_for. No OpenMP.
 * All functions are reentrant; the only global mutable state is the pool itself (a second thread
 * calling kernels while the pool is busy runs them serially).
 */
#ifndef MODELC_RT_H
#define MODELC_RT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Errors (rt_fail and the clock are in core/core.h)
 * ------------------------------------------------------------------------------------------- */

#define RT_ERR_LEN 256

/* The error sink of every fallible runtime call; may be passed as NULL to ignore the message. */
typedef struct RtError {
  char msg[RT_ERR_LEN];
} RtError;

/* ---------------------------------------------------------------------------------------------
 * Thread pool (runtime/core/pool.c; rt_set_threads and rt_threads are in core/core.h)
 * ------------------------------------------------------------------------------------------- */

/* Splits [0,n) into at most rt_threads() contiguous chunks and runs fn(ctx, lo, hi) on each, the
 * calling thread taking the first; returns when all are done (their writes are then visible).
 * Chunks are multiples of `grain` (the last excepted); n < 2*grain, one thread, nested calls (from
 * inside a task) and calls while another thread is using the pool run fn(ctx, 0, n) inline. n <= 0
 * calls nothing. Idle workers spin ~100 us (MODELC_SPIN_US) on the next job, then sleep. */
typedef void (*RtRangeFn)(void *ctx, int lo, int hi);
void rt_parallel_for(int n, int grain, RtRangeFn fn, void *ctx);

/* ---------------------------------------------------------------------------------------------
 * Casts (runtime/core/convert.c)
 * ------------------------------------------------------------------------------------------- */

/* Conversions of n elements between f32 and the 16-bit float types (mixed precision: the IR's
 * cast op). Round to nearest even; they use the CPU's conversion instructions where it has them
 * (F16C). Their `_ref` twins and the scalar conversions are in core/core.h. */
void rt_cast_f32_bf16(uint16_t *out, const float *x, size_t n);
void rt_cast_bf16_f32(float *out, const uint16_t *x, size_t n);
void rt_cast_f32_f16(uint16_t *out, const float *x, size_t n);
void rt_cast_f16_f32(float *out, const uint16_t *x, size_t n);

/* ---------------------------------------------------------------------------------------------
 * Kernels (runtime/kernels/, one file per op family). Each has a `_ref` twin (kernels/kernels.h):
 * plain loops, double accumulation, obviously correct.
 * ------------------------------------------------------------------------------------------- */

/* Linear layer, PyTorch layout: y = x W^T + bias.
 * x is (M,K), W is (N,K) (out_features, in_features), bias is (N) or NULL, y is (M,N). All
 * row-major. y must not alias x or W. Split over the pool: by rows of y in blocks fixed by M
 * (16-128 rows, the same for any thread count), each block one single-threaded GEMM followed,
 * while its rows are hot in cache, by epi(ctx, row_lo, row_hi) if epi is non-NULL (generated
 * fused epilogues: activation, residual). Below 32 rows (decode) it splits over N instead (blocks
 * of W's rows fixed by K: sgemv for M == 1, a GEMM otherwise) and calls epi(ctx, 0, M) once after
 * all of them. bias is pre-filled into y (beta = 1), so epi sees
 * y = x W^T + bias. An epi runs in pool threads concurrently on disjoint row ranges: it must touch
 * only rows lo..hi. */
void rt_linear(float *y, const float *x, const float *W, const float *bias, int M, int N, int K, RtRangeFn epi,
               void *ctx);

/* The same with W in bf16 (the compute pass): y = bf16(x) W^T + bias, x rounded to bf16 (round to
 * nearest even), the products in bf16 with f32 accumulation on the CPU's matrix units (the GEMM
 * layer, runtime/gemm/), y f32; the blocks and the epilogue as rt_linear's. scratch holds
 * rt_linear_bf16_scratch_floats(M, K) floats (x in bf16). */
size_t rt_linear_bf16_scratch_floats(int M, int K);
void rt_linear_bf16(float *y, const float *x, const uint16_t *W, const float *bias, int M, int N, int K,
                    RtRangeFn epi, void *ctx, float *scratch);

/* Quantised linear layers (the quantize pass; docs/passes.md, "quantize"): y = x Wq^T + bias with
 * Wq an [N,K] weight in one of the quantised formats (RtFormat below: RT_FMT_I8_ROW,
 * RT_FMT_Q8_0, RT_FMT_Q4_0), read at Wq as the format's values followed by its scales at the next
 * 64-byte boundary (rt_quant_scales_offset). The activation rows are quantised once per call to
 * int8 into the scratch (per row for i8_row, per block of 32 for q8_0 and q4_0: amax over the
 * row or block, d = amax / 127, q = round-to-nearest-even(x * (127 / amax)), 0 when amax is 0),
 * the dot products accumulate exactly in int32 and are scaled to f32: i8_row
 * y = (float)isum * (dx * dw[n]); q8_0 / q4_0 y = sum over blocks of (dx_b * dw_b) * (float)isum_b.
 * Then bias, then epi(ctx, lo, hi) as rt_linear's. K is a multiple of 32 for q8_0 and q4_0 (the
 * pass refuses other weights); any K >= 1 for i8_row (up to 133000: the int32 sums). scratch holds
 * rt_linear_q_scratch_floats(format, M, N, K) floats. Kernels chosen by CPU features at run time
 * (AVX512-VNNI, AVX-VNNI, AVX2, portable C; rt_quant_isa names the choice; i8_row at M >= 16
 * through oneDNN's s8 x s8 -> s32 matmul where the runtime has it: AMX-INT8 or VNNI, in row blocks
 * with epi per block); the blocks are fixed by the shapes, so the bits do not depend on the thread
 * count. */
size_t rt_linear_q_scratch_floats(int format, int M, int N, int K);
void rt_linear_i8_row(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K,
                      RtRangeFn epi, void *ctx, float *scratch);
void rt_linear_q8_0(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K, RtRangeFn epi,
                    void *ctx, float *scratch);
void rt_linear_q4_0(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K, RtRangeFn epi,
                    void *ctx, float *scratch);
/* The instruction set those kernels run on here ("avx512_vnni", "avx_vnni", "avx2" or "portable"),
 * for PROG info. */
const char *rt_quant_isa(void);

/* Sparse linear layer (the prune pass's CSR format, RT_FMT_CSR below; runtime/kernels/
 * linear_sparse.c): y = x W^T + bias with W an [N,K] weight stored as CSR with nonzero capacity
 * cap (the compiled capacity: the blob's section offsets depend on it), at Ws (64-byte aligned).
 * x is (M,K), bias (N) or NULL, y (M,N), row-major. M == 1 (decode): SpMV, rows of W over the pool
 * (AVX-512: 16 nonzeros a step, x gathered, lane sums; AVX2: 8); M > 1: SpMM, x transposed into
 * the scratch as xT (K x M rounded up to 16, in tiles of 64 lanes of M), each nonzero (v, k) of row
 * n does acc[m..] += v xT[k, m..] vectorised along M, then y[m,n] = acc[m] + bias[n]. Then
 * epi(ctx, lo, hi) as rt_linear's (below 32 rows once for all, from 32 on over the pool in row
 * blocks). Every output is a fixed
 * computation on its row's nonzeros in order: the bits do not depend on the thread count. scratch
 * holds rt_linear_csr_scratch_floats(M, N, K) floats (0 for M == 1: scratch may be NULL).
 * K <= 65536. rt_sparse_isa names the path ("avx512", "avx2", "portable"), chosen once by CPU
 * features. */
size_t rt_linear_csr_scratch_floats(int M, int N, int K);
void rt_linear_csr(float *y, const float *x, const void *Ws, const float *bias, int M, int N, int K, int cap,
                   RtRangeFn epi, void *ctx, float *scratch);
const char *rt_sparse_isa(void);
/* Token embedding from a quantised [V,C] table: the gathered rows dequantised to f32 (w = d * q;
 * q4_0: d * (q - 8)); bad ids as rt_embedding. */
int rt_embedding_i8_row(float *out, const int32_t *ids, const void *table, int n, int V, int C, RtError *err);
int rt_embedding_q8_0(float *out, const int32_t *ids, const void *table, int n, int V, int C, RtError *err);
int rt_embedding_q4_0(float *out, const int32_t *ids, const void *table, int n, int V, int C, RtError *err);

/* Token embedding: out[i,:] = table[ids[i],:] for i in [0,n).
 * ids is (n) int32 (n = B*T), table is (V,C), out is (n,C).
 * An id outside [0,V) is not a crash: its row is written as zeros, every other row is still
 * written, and the call returns -1 naming the first bad id and its position. */
int rt_embedding(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err);
/* The same for a bf16 table and a bf16 result (the compute pass widens the gathered rows). */
int rt_embedding_bf16(uint16_t *out, const int32_t *ids, const uint16_t *table, int n, int V, int C, RtError *err);

/* LayerNorm over the last axis: out[r,:] = (x[r,:] - mean_r) * rstd_r * gain + bias.
 * x, out are (R,C) (out may equal x); gain is (C); bias is (C) or NULL; rstd_r = 1/sqrt(var_r+eps)
 * with the biased variance. mean_out, rstd_out are (R) or NULL (saved for a backward pass).
 * Two-pass (mean, then centred sum of squares) with 8 float partial sums per pass. */
void rt_layernorm(float *out, float *mean_out, float *rstd_out, const float *x, const float *gain, const float *bias,
                  int R, int C, float eps);

/* RMSNorm: out[r,:] = x[r,:] / sqrt(mean(x[r,:]^2) + eps) * gain. x, out (R,C), gain (C).
 * rstd_out is (R) or NULL. out may equal x. */
void rt_rmsnorm(float *out, float *rstd_out, const float *x, const float *gain, int R, int C, float eps);

/* Softmax over each row, max-subtracted. x, out are (R,C); out may equal x. */
void rt_softmax(float *out, const float *x, int R, int C);

/* Pooling over time (runtime/kernels/pool.c): x is (B,T,C), out (B,C). first: position 0; mean:
 * the float sum over t in order divided by (float)T. The backwards write dx (B,T,C) from dy (B,C):
 * first puts dy at position 0 and zeros elsewhere, mean writes dy / (float)T everywhere. */
void rt_pool_first(float *out, const float *x, int B, int T, int C);
void rt_pool_mean(float *out, const float *x, int B, int T, int C);
void rt_pool_first_dx(float *dx, const float *dy, int B, int T, int C);
void rt_pool_mean_dx(float *dx, const float *dy, int B, int T, int C);

/* ---------------------------------------------------------------------------------------------
 * Attention
 * ------------------------------------------------------------------------------------------- */

/* Multi-head self-attention from a fused qkv buffer.
 * qkv is (B,T,3C): q = qkv[b,t,0:C], k = qkv[b,t,C:2C], v = qkv[b,t,2C:3C]; head h uses columns
 * h*hd..(h+1)*hd of each, hd = C/n_head (C must be a multiple of n_head). out is (B,T,C), heads
 * concatenated in the same column order. Scale 1/sqrt(hd); causal masks key s > query t.
 * Flash-attention style: query blocks x key blocks with an online (streaming) softmax, so at most
 * one (RT_ATTN_BQ x RT_ATTN_BK, kernels/kernels.h) tile of scores exists at a time; each tile is
 * two cblas_sgemm calls reading q/k/v in place (leading dimension 3C). scratch holds
 * rt_attention_scratch_floats(T, C, n_head) floats. out must not alias qkv.
 * Parallel over (batch, head) pairs; the scratch holds one slice per thread, so its size depends
 * on rt_threads(): compute it after rt_set_threads (the same holds for the other scratch sizes). */
size_t rt_attention_scratch_floats(int T, int C, int n_head);
void rt_attention(float *out, const float *qkv, int B, int T, int C, int n_head, int causal, float *scratch);

/* Attention with a KV cache, for prefill and decoding alike. qkv is (B,nt,3C) for tokens at
 * positions t0..t0+nt-1; kcache, vcache are (B,Tmax,C). Their k and v are stored into the cache at
 * those positions, then each query attends causally over the cache positions 0..t0+t. out is
 * (B,nt,C). With t0 == 0 this is rt_attention on qkv (plus the cache writes). scratch holds
 * rt_attention_kv_scratch_floats(Tmax, C, n_head) floats. Only causal attention has a cache. */
size_t rt_attention_kv_scratch_floats(int Tmax, int C, int n_head);
void rt_attention_kv(float *out, const float *qkv, float *kcache, float *vcache, int B, int nt, int t0, int Tmax,
                     int C, int n_head, int causal, float *scratch);
/* Grouped-query forms of rt_attention, rt_attention_kv and rt_attention_dx (the plain ones are
 * these with n_kv_head = n_head; generated code calls these): n_kv_head divides n_head, hd =
 * C/n_head, KV = n_kv_head hd. qkv rows are (C + 2 KV): q = [0,C), k = [C,C+KV), v = [C+KV,C+2KV);
 * query head h reads KV head h / (n_head / n_kv_head). out (and dy) are (B,T,C); dqkv is qkv's
 * shape (each KV head's gradient sums over its query heads); kcache, vcache are (B,Tmax,KV). The
 * scratch sizes are the plain forms' (of T, C, n_head). */
void rt_attention_gqa(float *out, const float *qkv, int B, int T, int C, int n_head, int n_kv_head, int causal,
                      float *scratch);
void rt_attention_gqa_kv(float *out, const float *qkv, float *kcache, float *vcache, int B, int nt, int t0, int Tmax,
                         int C, int n_head, int n_kv_head, int causal, float *scratch);
void rt_attention_gqa_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                         int n_kv_head, int causal, float *scratch);

/* Sequence compression (runtime/kernels/funnel.c; Funnel-Transformer). x is (B,T,C), stride
 * s >= 2 divides T. rt_seq_pool: out (B,T/s,C), out[b,j] = scale * sum of x[b, j*s .. j*s+s-1]
 * (mean pooling: scale 1/s). rt_upsample: T is the input's length, out (B,T*s,C),
 * out[b,t] = scale * x[b, t/s]. rt_attention_pool: qkv (B,T,3C) as rt_attention's; the queries
 * averaged in groups of s attend (bidirectional, scale 1/sqrt(hd)) over all T keys and values:
 * out (B,T/s,C). rt_attention_pool_dx: d qkv (B,T,3C) from dy (B,T/s,C), written, not
 * accumulated. scratch: the matching _scratch_floats(T, C, n_head, stride). */
void rt_seq_pool(float *out, const float *x, int B, int T, int C, int stride, float scale);
void rt_upsample(float *out, const float *x, int B, int T, int C, int stride, float scale);
size_t rt_attention_pool_scratch_floats(int T, int C, int n_head, int stride);
void rt_attention_pool(float *out, const float *qkv, int B, int T, int C, int n_head, int stride, float *scratch);
size_t rt_attention_pool_dx_scratch_floats(int T, int C, int n_head, int stride);
void rt_attention_pool_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head, int stride,
                          float *scratch);

/* Block-sparse attention (runtime/kernels/attention_sparse.c; docs/runtime.md, "Block-sparse
 * attention"). A pattern is a few ints. The element mask, for query q and key k (0-based):
 *   causal and k > q                                  -> masked, always
 *   k < global, or (not causal) q < global            -> allowed (global tokens)
 *   RT_SPARSE_DENSE                                   -> allowed
 *   RT_SPARSE_LOCAL   |q-k| < window                  (causal: the window keys q-window+1..q)
 *   RT_SPARSE_STRIDED |q-k| < stride or |q-k| % stride == 0
 *   RT_SPARSE_FIXED   q/stride == k/stride or k % stride >= stride - summary
 * (Sparse Transformer, Child et al. 2019, element for element as the reference code
 * openai/sparse_attention defines its 'local', 'strided' and 'fixed' masks; bidirectional forms
 * drop the k <= q condition.) `block` is the kernels' tile: queries and keys in blocks of `block`
 * positions; only key blocks with an allowed element are computed. Fields a kind does not use are
 * ignored. */
enum { RT_SPARSE_DENSE = 0, RT_SPARSE_LOCAL = 1, RT_SPARSE_STRIDED = 2, RT_SPARSE_FIXED = 3 };
typedef struct RtSparsePattern {
  int kind;    /* RT_SPARSE_* */
  int block;   /* tile size in positions, 1..RT_SPARSE_MAX_BLOCK */
  int window;  /* LOCAL: keys each query sees on each side (itself included), >= 1 */
  int stride;  /* STRIDED: the stride l; FIXED: the length l of a fixed block; >= 1 */
  int summary; /* FIXED: the last `summary` positions of every fixed block (the paper's c), 0..stride */
  int global;  /* the first `global` positions attend to and are attended by all (>= 0) */
} RtSparsePattern;
#define RT_SPARSE_MAX_BLOCK 512
/* 0 if the pattern is valid (the ranges above), -1 otherwise. The kernels assume a valid one. */
int rt_sparse_check(const RtSparsePattern *p);
/* The element mask above: 1 if query q may attend to key k. */
int rt_sparse_allowed(const RtSparsePattern *p, int causal, int q, int k);
/* rt_attention with the pattern's mask: qkv (B,T,3C), out (B,T,C), layout and scale as
 * rt_attention. Queries in tiles of `block`; each tile attends to a few contiguous segments of
 * keys (the band, the global tokens, fixed's gathered summary columns; strided's stride columns
 * per residue class, over strided views), never a T x T matrix; masks are intervals per row.
 * Tasks are (batch, head) pairs, each writing its own columns, so the result does not depend on
 * the thread count. scratch holds rt_attention_sparse_scratch_floats(T, C, n_head, p) floats
 * (after rt_set_threads): linear in T. */
size_t rt_attention_sparse_scratch_floats(int T, int C, int n_head, const RtSparsePattern *p);
void rt_attention_sparse(float *out, const float *qkv, int B, int T, int C, int n_head, int causal,
                         const RtSparsePattern *p, float *scratch);
/* Its backward: dqkv (B,T,3C) from qkv and dy (B,T,C), recomputing the forward (its output and
 * softmax statistics) and the scores of the same segments. Tasks are (batch, head) pairs (dK and dV
 * accumulate over query tiles). scratch holds rt_attention_sparse_dx_scratch_floats(T, C, n_head, p)
 * floats: linear in T. */
size_t rt_attention_sparse_dx_scratch_floats(int T, int C, int n_head, const RtSparsePattern *p);
void rt_attention_sparse_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                            int causal, const RtSparsePattern *p, float *scratch);

/* Its KV-cache form (causal only), for prefill (t0 == 0: rt_attention_sparse, then the cache
 * writes) and decoding: qkv (B,nt,3C) holds the tokens at positions t0..t0+nt-1; kcache, vcache
 * (B,ncache,C). Position p is cached at slot p while p < ncache; beyond, only under a LOCAL pattern
 * (ncache >= window + global, checked by the compiler), the cache is a ring: global positions keep
 * their slots, the others share the rest (slot global + (p - global) mod (ncache - global)), so
 * decoding goes on past any length with constant memory. T is the compiled context (the longest
 * prefill). scratch holds rt_attention_sparse_kv_scratch_floats(T, ncache, C, n_head, p). */
size_t rt_attention_sparse_kv_scratch_floats(int T, int ncache, int C, int n_head, const RtSparsePattern *p);
void rt_attention_sparse_kv(float *out, const float *qkv, float *kcache, float *vcache, int B, int nt, int t0,
                            int ncache, int C, int n_head, const RtSparsePattern *p, int T, float *scratch);
/* The three kernels as generated code calls them (kernels.def), the pattern passed as its fields
 * kind, block, window, stride, summary, global. */
size_t rt_attention_bs_scratch_floats(int T, int C, int n_head, int kind, int block, int window, int stride,
                                      int summary, int global);
void rt_attention_bs(float *out, const float *qkv, int B, int T, int C, int n_head, int causal, int kind, int block,
                     int window, int stride, int summary, int global, float *scratch);
size_t rt_attention_bs_kv_scratch_floats(int T, int ncache, int C, int n_head, int kind, int block, int window,
                                         int stride, int summary, int global);
void rt_attention_bs_kv(float *out, const float *qkv, float *kcache, float *vcache, int B, int nt, int t0, int T,
                        int ncache, int C, int n_head, int kind, int block, int window, int stride, int summary,
                        int global, float *scratch);
size_t rt_attention_bs_dx_scratch_floats(int T, int C, int n_head, int kind, int block, int window, int stride,
                                         int summary, int global);
void rt_attention_bs_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head, int causal,
                        int kind, int block, int window, int stride, int summary, int global, float *scratch);

/* Rotary position embedding (RoPE), llama2.c's / Meta's layout (runtime/kernels/rope.c).
 * qkv is (B,T,C+2KV) row-major as rt_attention_gqa reads it (KV = n_kv_head hd; C = KV when
 * n_kv_head = n_head); head h uses columns h*hd..(h+1)*hd of q and of k, hd = C/n_head (even).
 * out is qkv's shape: v copied; q and k of every head rotated in pairs
 * (2i, 2i+1): x'[2i] = x[2i] cos a - x[2i+1] sin a, x'[2i+1] = x[2i] sin a + x[2i+1] cos a, with
 * a = (t0 + t) * theta^(-2i/hd) for the token at row t (t0: the first token's position, > 0 when
 * decoding with a KV cache). inverse != 0 rotates by -a (the transpose: the backward of the
 * forward map). out may equal qkv. Parallel over rows. */
void rt_rope(float *out, const float *qkv, int B, int T, int t0, int C, int n_head, int n_kv_head, float theta,
             int inverse);

/* Linformer attention (Wang et al. 2020; runtime/kernels/attention_lowrank.c): keys and values
 * projected along the sequence, K'_h = E[:, :nt] K_h and V'_h = F[:, :nt] V_h (K,hd), then
 * out_h = softmax(Q_h K'_h^T / sqrt(hd)) V'_h, no mask (bidirectional only). qkv is (B,nt,3C) and
 * out (B,nt,C) as rt_attention's; E and F are (K,T) row-major, T the compiled length: a call with
 * nt <= T positions uses their first nt columns. E may equal F. Parallel over (batch, head) pairs;
 * scratch holds rt_linformer_scratch_floats(T, C, n_head, K) floats (after rt_set_threads). */
size_t rt_linformer_scratch_floats(int T, int C, int n_head, int K);
void rt_linformer(float *out, const float *qkv, const float *E, const float *F, int B, int nt, int T, int C,
                  int n_head, int K, float *scratch);

/* Segment recurrence (Transformer-XL, Dai et al. 2019; kernels/attention_xl.c describes the math).
 * rt_xl_memory: out (B,M+T,C) = [memory; x] of x (B,nt,C), the memory's min(M, t0) valid rows last
 * in rows 0..M-1 (zeros before them) and zeros in rows M+nt..; then the last M rows become the next
 * call's memory. mem_a, mem_b (B,M,C) and tags (2 floats used) are the op's state (RtStep.state):
 * a call at t0 reads the buffer written by the call that ended at t0 (t0 = 0: none) and writes
 * the other, so repeating a step gives the same result. NULL state: an empty memory, nothing kept.
 * rt_xl_memory_dx: dx (B,nt,C) = rows M..M+nt-1 of dcat (the memory is not differentiated). */
void rt_xl_memory(float *out, const float *x, float *mem_a, float *mem_b, float *tags, int B, int nt, int t0, int T,
                  int M, int C);
void rt_xl_memory_dx(float *dx, const float *dcat, int B, int nt, int T, int M, int C);
/* rt_xl_attention: out (B,nt,C) from qkv (B,M+T,3C) (the projection of rt_xl_memory's rows; the
 * queries are rows M..M+nt-1), rk (M+T,C) the projected relative embedding by distance, u = r_w_bias
 * and w = r_r_bias (H,hd): score(i,j) = ((q_i+u).k_j + (q_i+w).rk[M+i-j]) / sqrt(hd) over the keys
 * j in [M - min(M,t0), M+i]. Parallel over (batch, head); scratch holds
 * rt_xl_attention_scratch_floats(T, M, C, n_head) floats. rt_xl_attention_dx: dqkv (B,M+T,3C)
 * (zero where nothing flows), drk (M+T,C), du, dw (H,hd) summed over batch rows; independent of the
 * thread count; scratch rt_xl_attention_dx_scratch_floats(T, M, C, n_head). rt_sinusoid_halves:
 * out (K,C) = [sin(d f_i) | cos(d f_i)], f_i = 10000^(-2i/C), the relative table (C even). */
size_t rt_xl_attention_scratch_floats(int T, int M, int C, int n_head);
void rt_xl_attention(float *out, const float *qkv, const float *rk, const float *u, const float *w, int B, int nt,
                     int t0, int T, int M, int C, int n_head, float *scratch);
size_t rt_xl_attention_dx_scratch_floats(int T, int M, int C, int n_head);
void rt_xl_attention_dx(float *dqkv, float *drk, float *du, float *dw, const float *qkv, const float *rk,
                        const float *u, const float *w, const float *dy, int B, int nt, int t0, int T, int M, int C,
                        int n_head, float *scratch);
void rt_sinusoid_halves(float *out, int K, int C);

/* ---------------------------------------------------------------------------------------------
 * Scalar activations, shared by the array kernels and by generated fused loops
 * ------------------------------------------------------------------------------------------- */

/* exp(x), branch-free and vectorisable (no libm call, no float compares: GCC will not if-convert
 * those under its default -ftrapping-math). Cephes-style: clamp x to [-104, 89] on the integer bits
 * (sign-dependent limit on |x|; NaN clamps too), n = round(x log2 e) with the 1.5*2^23 trick,
 * r = x - n ln2 (two-part ln2), Cephes' degree-6 polynomial for e^r on [-ln2/2, ln2/2], then
 * scale by 2^n as two exponent-bit multiplies 2^(n/2) * 2^(n - n/2), so the result underflows
 * gradually to denormals and 0 and overflows to +inf like expf; NaN gives NaN (an integer select,
 * so still branch-free). Relative error <= 2 ulp over the normal range (tests/unit/test_rt_kernels.c
 * checks it against exp() in double). */
static inline float rt_expf(float x) {
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  uint32_t ux, sign, x0;
  memcpy(&ux, &x, sizeof ux);
  x0 = ux;
  sign = ux >> 31;
  ux &= 0x7fffffffu;
  uint32_t nanmask = 0u - (uint32_t)(ux > 0x7f800000u); /* all ones if x is NaN */
  uint32_t lim = 0x42b20000u + sign * (0x42d00000u - 0x42b20000u); /* 89.0f, or 104.0f if x < 0 */
  ux = ux < lim ? ux : lim;
  ux |= sign << 31;
  float xc;
  memcpy(&xc, &ux, sizeof xc);
  float n = (xc * 1.44269504088896341f + magic) - magic;
  float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t ni = (int32_t)n, n1 = ni / 2, n2 = ni - n1; /* each in [-75, 64] */
  uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
  float s1, s2;
  memcpy(&s1, &b1, sizeof s1);
  memcpy(&s2, &b2, sizeof s2);
  float res = p * s1 * s2;
  uint32_t ur;
  memcpy(&ur, &res, sizeof ur);
  ur = (x0 & nanmask) | (ur & ~nanmask); /* masks, not ?: (GCC would branch around the math) */
  memcpy(&res, &ur, sizeof res);
  return res;
}

static inline float rt_sigmoidf(float x) { return 1.0f / (1.0f + rt_expf(-x)); }
static inline float rt_reluf(float x) { return x > 0.0f ? x : 0.0f; }
static inline float rt_siluf(float x) { return x / (1.0f + rt_expf(-x)); }
/* exact GELU: 0.5 x (1 + erf(x / sqrt 2)), computed as 0.5 x erfc(-x / sqrt 2) (no cancellation
 * for negative x) */
static inline float rt_geluf(float x) { return 0.5f * x * erfcf(-x * 0.70710678118654752f); }
/* tanh approximation (GPT-2): 0.5 x (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3), computed as
 * x / (1 + exp(-2u)): the same value without cancellation */
static inline float rt_gelu_tanhf(float x) {
  return x / (1.0f + rt_expf(-2.0f * 0.79788456080286536f * (x + 0.044715f * x * x * x)));
}

/* splitmix64 of a ^ b: derives independent random streams (per layer call, per dropout op). */
static inline uint64_t rt_mix(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Dropout with a counter-based mask: element i is kept iff the top 32 bits of rt_mix(key, i) are
 * >= p * 2^32, and kept elements are scaled by 1/(1-p). The mask depends only on (key, i), so
 * the backward pass (the same call on dy) and a recomputed forward draw the same mask without
 * storing it. x, out (n); out may equal x. */
void rt_dropout(float *out, const float *x, size_t n, float p, uint64_t key);

/* Derivatives of the activations (training; the IR's gelu_d, gelu_tanh_d, relu_d, silu_d). */
static inline float rt_gelu_df(float x) { /* Phi(x) + x phi(x) */
  return 0.5f * erfcf(-x * 0.70710678118654752f) + x * 0.39894228040143268f * rt_expf(-0.5f * x * x);
}
static inline float rt_gelu_tanh_df(float x) { /* tanh u = 2 / (1 + exp(-2u)) - 1, vectorisable */
  float u = 0.79788456080286536f * (x + 0.044715f * x * x * x), t = 2.0f / (1.0f + rt_expf(-2.0f * u)) - 1.0f;
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * 0.79788456080286536f * (1.0f + 3.0f * 0.044715f * x * x);
}
static inline float rt_relu_df(float x) { return x > 0.0f ? 1.0f : 0.0f; }
static inline float rt_silu_df(float x) {
  float s = 1.0f / (1.0f + rt_expf(-x));
  return s * (1.0f + x * (1.0f - s));
}

/* Sinusoidal positions (Vaswani et al. 2017): out[t, 2i] = sin(t / 10000^(2i/C)),
 * out[t, 2i+1] = cos(t / 10000^(2i/C)). out is (T,C). Computed in double, stored as float. */
void rt_sinusoid(float *out, int T, int C);

/* Training settings compiled in from the spec's train: section (docs/spec.md); PROG train flags
 * override them. */
typedef enum RtSchedule { RT_SCHED_COSINE, RT_SCHED_CONSTANT, RT_SCHED_LINEAR } RtSchedule;
typedef enum RtOptimizer { RT_OPT_ADAMW, RT_OPT_SGD } RtOptimizer;
typedef enum RtPrecision { RT_PREC_FP32, RT_PREC_BF16, RT_PREC_FP16 } RtPrecision;
typedef struct RtTrainConfig {
  int64_t steps, batch, micro_batch, warmup, seed, eval_every, checkpoint_every;
  double lr, min_lr, beta1, beta2, eps, weight_decay, momentum, grad_clip;
  RtSchedule schedule;
  RtOptimizer optimizer;
  RtPrecision precision;
  const char *data; /* default --data, or NULL */
  /* gradual pruning (Zhu & Gupta 2017; train: prune: in the spec): the masked parameters' sparsity
   * goes from prune_initial to their target over steps prune_start..prune_end, the masks recomputed
   * every prune_every steps (core/sparse.c, rt_prune_schedule); prune_every 0: the target from step 0 */
  double prune_initial;
  int64_t prune_start, prune_end, prune_every;
} RtTrainConfig;

/* ---------------------------------------------------------------------------------------------
 * Training kernels (runtime/kernels/: loss.c (with the fused LM head), linear.c, norm.c, embedding.c, attention.c): the
 * backward ops of the IR (docs/ir.md, "Training"). Each has a naive _ref twin (kernels/kernels.h)
 * and is checked against finite differences of the forward kernels.
 * ------------------------------------------------------------------------------------------- */

/* Mean over R rows of -log softmax(logits[r,:])[targets[r]]. logits (R,V), targets (R) int32 in
 * [0,V). Accumulates in double. */
float rt_cross_entropy(const float *logits, const int32_t *targets, int R, int V);
/* dlogits (R,V) = dloss * (softmax(logits[r,:]) - onehot(targets[r])) / R. */
void rt_cross_entropy_grad(float *dlogits, const float *logits, const int32_t *targets, int R, int V, float dloss);
/* The LM head, its loss and their backward in one (the linear_xent op, pass xent_fuse): h (R,C),
 * W (V,C), targets (R): logits = h W^T, *loss = their mean cross-entropy (rt_cross_entropy), and
 * with dlogits = rt_cross_entropy_grad(logits, dloss): dh (R,C) = dlogits W, dW (V,C) =
 * dlogits^T h. Rows go in chunks of `chunk` (fixed by the call, not the thread count); only one
 * chunk's logits exist, in scratch (rt_linear_xent_scratch_floats(chunk, V) floats). The loss and
 * dh are the bits of the unfused kernels; dW sums its chunks in order (not one GEMM over R rows). */
size_t rt_linear_xent_scratch_floats(int chunk, int V);
void rt_linear_xent(float *dh, float *dW, float *loss, const float *h, const float *W, const int32_t *targets, int R,
                    int V, int C, float dloss, int chunk, float *scratch);
/* Knowledge distillation (the distill_loss / distill_grad ops; runtime/kernels/distill.c): student
 * logits zs and teacher logits zt (R,V), targets (R) int32. *loss = alpha T^2 *kl + (1 - alpha) *ce
 * with *kl the mean over rows of KL(softmax(zt/T) || softmax(zs/T)) and *ce the mean cross-entropy
 * of zs (rt_cross_entropy's). dzs (R,V) = dloss / R * (alpha T (softmax(zs/T) - softmax(zt/T)) +
 * (1 - alpha) (softmax(zs) - onehot(targets))); dzs may equal zs. Accumulates in double, rows in
 * fixed blocks: the same bits for any thread count. */
void rt_distill_loss(float *loss, float *kl, float *ce, const float *zs, const float *zt, const int32_t *targets,
                     int R, int V, float temperature, float alpha);
void rt_distill_grad(float *dzs, const float *zs, const float *zt, const int32_t *targets, int R, int V,
                     float temperature, float alpha, float dloss);
/* y (M,K) = dy (M,N) W (N,K): the input gradient of a linear layer. */
void rt_matmul_nn(float *y, const float *dy, const float *W, int M, int N, int K);
/* dW (N,K) = sum over rows r of dy[r,:]^T x[r,:]; dy (M,N), x (M,K): the weight gradient. */
void rt_linear_dw(float *dW, const float *dy, const float *x, int M, int N, int K);
/* The same three with bf16 products (precision<bf16>: training on the matrix units, the GEMM
 * layer): every f32 operand is rounded to bf16 (round to nearest even) into scratch and the
 * products accumulate in f32; W is bf16 (the trainer's working weights, rounded once per step).
 *   rt_matmul_nn_bf16    y = bf16(dy) W             scratch: rt_matmul_nn_bf16_scratch_floats(M, N)
 *   rt_linear_dw_bf16    dW = bf16(dy)^T bf16(x)    scratch: rt_linear_dw_bf16_scratch_floats(M, N, K)
 *   rt_linear_xent_bf16  rt_linear_xent's head and loss with its three products so
 *                        scratch: rt_linear_xent_bf16_scratch_floats(chunk, V, C) */
size_t rt_matmul_nn_bf16_scratch_floats(int M, int N);
void rt_matmul_nn_bf16(float *y, const float *dy, const uint16_t *W, int M, int N, int K, float *scratch);
size_t rt_linear_dw_bf16_scratch_floats(int M, int N, int K);
void rt_linear_dw_bf16(float *dW, const float *dy, const float *x, int M, int N, int K, float *scratch);
size_t rt_linear_xent_bf16_scratch_floats(int chunk, int V, int C);
void rt_linear_xent_bf16(float *dh, float *dW, float *loss, const float *h, const uint16_t *W,
                         const int32_t *targets, int R, int V, int C, float dloss, int chunk, float *scratch);
/* LayerNorm (rms = 0) or RMSNorm (rms = 1) backward over rows of (R,C), recomputing the row
 * statistics from x: dx (R,C) from x, gain (C), dy (R,C); dgain (C) = sum_r dy * xhat. */
void rt_norm_dx(float *dx, const float *x, const float *gain, const float *dy, int R, int C, float eps, int rms);
void rt_norm_dg(float *dgain, const float *x, const float *dy, int R, int C, float eps, int rms);
/* dtable (V,C) = zeros, then dtable[ids[i],:] += dy[i,:] for i in [0,n). */
void rt_embedding_dw(float *dtable, const int32_t *ids, const float *dy, int n, int V, int C);
/* Attention backward: dqkv (B,T,3C) from qkv (B,T,3C) and dy (B,T,C), the same layout and
 * scaling as rt_attention (recomputed, flash-attention style). scratch holds
 * rt_attention_dx_scratch_floats(T, C, n_head) floats (call after rt_set_threads). */
size_t rt_attention_dx_scratch_floats(int T, int C, int n_head);
void rt_attention_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head, int causal,
                     float *scratch);
/* Linformer backward: dqkv (B,nt,3C), dE and dF (K,T) from qkv, E, F and dy (B,nt,C), layout as
 * rt_linformer; dE and dF are summed over batch rows and heads (columns nt.. are zero). The result
 * does not depend on the thread count. scratch holds rt_linformer_dx_scratch_floats(B, T, C,
 * n_head, K) floats (B the compiled batch; after rt_set_threads). */
size_t rt_linformer_dx_scratch_floats(int B, int T, int C, int n_head, int K);
void rt_linformer_dx(float *dqkv, float *dE, float *dF, const float *qkv, const float *E, const float *F,
                     const float *dy, int B, int nt, int T, int C, int n_head, int K, float *scratch);

/* Mixture of experts (the moe and moe_dx ops; runtime/kernels/moe.c states the semantics): x (N,C)
 * tokens, router wr (E,C), experts w1 (E,H,C), b1 (E,H), w2 (E,C,H), b2 (E,C); top K of E experts
 * per token, capacity rt_moe_capacity(N, E, factor) pairs per expert, act 1 gelu, 2 gelu_tanh,
 * 3 relu, 4 silu. rt_moe writes y (N,C) (0 for a token all of whose pairs were dropped), *aux,
 * the load-balancing loss aux_coef E sum_i f_i P_i, and load (E+2): aux, the dropped pairs, the
 * pairs each expert ran (as floats). rt_moe_dx recomputes the routing and the
 * experts from x and writes (not accumulates) dx (N,C), dwr, dw1, db1, dw2, db2 (the operands'
 * shapes) from dy (N,C) and daux. Bits do not depend on the thread count. scratch holds
 * rt_moe_scratch_floats(N, C, E, H, K) floats (either kernel; N the compiled tokens). */
int rt_moe_capacity(int N, int E, float factor); /* min(N, ceil(factor N / E)), at least 1 */
size_t rt_moe_scratch_floats(int N, int C, int E, int H, int K);
void rt_moe(float *y, float *aux, float *load, const float *x, const float *wr, const float *w1, const float *b1, const float *w2,
            const float *b2, int N, int C, int E, int H, int K, float factor, float aux_coef, int act, float *scratch);
void rt_moe_dx(float *dx, float *dwr, float *dw1, float *db1, float *dw2, float *db2, const float *x, const float *wr,
               const float *w1, const float *b1, const float *w2, const float *b2, const float *dy, float daux, int N,
               int C, int E, int H, int K, float factor, float aux_coef, int act, float *scratch);

/* ---------------------------------------------------------------------------------------------
 * Generated programs: the model descriptor and the command line (runtime/prog/main.c)
 * ------------------------------------------------------------------------------------------- */

typedef enum RtInit { RT_INIT_ZEROS, RT_INIT_ONES, RT_INIT_NORMAL, RT_INIT_UNIFORM, RT_INIT_SINUSOID } RtInit;

/* Element types (shared with the safetensors and .npy readers): a parameter's storage dtype. */
typedef enum RtDType {
  RT_DT_INVALID = 0,
  RT_DT_F32,
  RT_DT_F16,
  RT_DT_BF16,
  RT_DT_F64,
  RT_DT_I8,
  RT_DT_U8,
  RT_DT_I16,
  RT_DT_U16,
  RT_DT_I32,
  RT_DT_U32,
  RT_DT_I64,
  RT_DT_U64,
  RT_DT_BOOL,
  RT_DT_COUNT
} RtDType;

/* A parameter's storage format: dense elements of its dtype, or a quantised [N,K] weight (the
 * quantize pass; docs/passes.md has the exact rounding). A quantised parameter's values (dtype
 * RT_DT_I8, or RT_DT_U8 for q4_0's packed nibbles) are followed at the next 64-byte boundary by
 * its scales, its one auxiliary array aux[0] (role "scale"):
 *   RT_FMT_I8_ROW  values int8 [N,K], w = d[n] * q;            scales f32 [N]
 *   RT_FMT_Q8_0    values int8 [N,K], w = d[n,b] * q, b = k/32; scales f16 [N,K/32]
 *   RT_FMT_Q4_0    values u8 [N,K/2]: in row n, block b (32 weights), byte 16b + j holds weight
 *                  32b + j in its low nibble and 32b + j + 16 in its high one; w = d[n,b] * (q - 8);
 *                  scales f16 [N,K/32]
 * In a safetensors file the values are the tensor NAME (I8 [N,K], or U8 [N,K/2]) and the scales
 * NAME.scale (F32 [N] or F16 [N,K/32]).
 *   RT_FMT_CSR     a sparse [N,K] f32 weight (the prune pass) with nonzero capacity cap, fixed when
 *                  the program is compiled (the actual nnz = rowptr[N] <= cap), one blob:
 *                    values f32 [cap] at byte 0 (the nonzeros in row-major order; unused tail 0)
 *                    cols   u16 [cap] at rt_csr_cols_offset(cap) = align64(4 cap)
 *                    rowptr i32 [N+1] at rt_csr_rowptr_offset(cap) = align64(cols offset + 2 cap)
 *                  rt_csr_bytes(N, K, cap) = rowptr offset + 4 (N+1) bytes; row n's nonzeros are
 *                  rowptr[n] .. rowptr[n+1]-1 with strictly increasing columns; K <= 65536;
 *                  padding and unused capacity zero (core/sparse.c). In a weights file it
 *                  is the dense masked f32 [N,K] tensor NAME (packed at load). */
typedef enum RtFormat { RT_FMT_DENSE = 0, RT_FMT_I8_ROW, RT_FMT_Q8_0, RT_FMT_Q4_0, RT_FMT_CSR, RT_FMT_COUNT } RtFormat;

/* One auxiliary array of a non-dense parameter (its role, e.g. "scale", its dtype and place). */
typedef struct RtParamAux {
  const char *role;
  RtDType dtype;
  int64_t offset;   /* bytes from the start of the weight buffer (64-byte aligned) */
  int64_t nbytes;
} RtParamAux;

#define RT_PARAM_MAX_AUX 4

/* What the prune pass says of a parameter (docs/passes.md, "prune"); RtParamInfo.prune, NULL for
 * most parameters. The runtime computes masks from the values it loads (and, training, holds them
 * after every optimiser step and recomputes them on the train config's schedule):
 *   RT_PRUNE_MAGNITUDE  `sparsity` of its elements, those of smallest |w|, are zero
 *   RT_PRUNE_GLOBAL     the same over all RT_PRUNE_GLOBAL parameters together
 *   RT_PRUNE_NM         n kept of every m consecutive elements along K
 * A structurally pruned parameter (select != RT_SEL_NONE) is a slice of a larger tensor: along axis
 * `axis`, the full tensor has `parts` parts of `of` units of `unit` elements; this one keeps
 * shape[axis] / (parts * unit) units per part, the same in every part, chosen at load (when the
 * file has the full tensor) by the group's score: RT_SEL_NORM the units of largest L2 norm over all
 * parameters of the group (those with the same `group`, the index of its key parameter), RT_SEL_IMPORTANCE
 * those of largest NAME.head_importance, NAME the key parameter's (written by PROG importance).
 * heads > 0 marks an attention's output projection whose K axis holds `heads` heads: PROG importance
 * scores them (Michel et al. 2019). */
typedef enum RtPrune { RT_PRUNE_NONE = 0, RT_PRUNE_MAGNITUDE, RT_PRUNE_GLOBAL, RT_PRUNE_NM } RtPrune;
typedef enum RtSelect { RT_SEL_NONE = 0, RT_SEL_NORM, RT_SEL_IMPORTANCE } RtSelect;
typedef struct RtPruneInfo {
  int kind;         /* RtPrune */
  float sparsity;   /* RT_PRUNE_MAGNITUDE, RT_PRUNE_GLOBAL */
  int n, m;         /* RT_PRUNE_NM */
  int64_t nnz;      /* RT_FMT_CSR: the nonzeros its storage has room for */
  int select;       /* RtSelect */
  int group;        /* the group's key parameter (index into RtModel.params) */
  int axis, parts, unit, of;
  int heads;
} RtPruneInfo;

/* One parameter: its safetensors name, shape and storage, and where it lives in the weight buffer.
 * Generated code reads it at W + offset as its dtype (f32: float, bf16/f16: uint16_t). */
typedef struct RtParamInfo {
  const char *name;
  int ndim;
  int64_t shape[4];
  RtDType dtype;    /* storage dtype: RT_DT_F32, RT_DT_BF16 or RT_DT_F16; quantised: RT_DT_I8 or RT_DT_U8 */
  RtFormat format;  /* RT_FMT_DENSE or a quantised format (shape is then the logical [N,K]) */
  int64_t offset;   /* bytes from the start of the weight buffer (64-byte aligned) */
  int64_t nbytes;   /* bytes of its elements (of a quantised format: its values; aux[0] the scales) */
  RtInit init;      /* initialiser for PROG init (values drawn in f32, then rounded to dtype) */
  float init_arg;   /* std (normal) or bound (uniform) */
  int decay;        /* weight decay applies (training) */
  int trainable;    /* 0: frozen (the IR's `frozen`): the train function gives it no gradient and the
                     * trainer leaves it as loaded */
  int naux;         /* auxiliary arrays (0 for dense) */
  RtParamAux aux[RT_PARAM_MAX_AUX];
  const RtPruneInfo *prune; /* pruning facts, or NULL */
} RtParamInfo;

/* One persistent state slot of the generated program (an attention op's k or v cache, later
 * segment memory): the runtime allocates batch * row_floats floats for a run of `batch` sequences,
 * zeroed when allocated (a position is always written before it is read), and passes it in
 * RtStep.state. The generated code declares its slots (RtModel.state); the runtime knows no
 * model's shapes. */
typedef struct RtStateInfo {
  int64_t row_floats; /* floats per batch row (an attention cache: context * C) */
} RtStateInfo;

/* One call of the generated forward: runtime batch nb <= batch, length nt <= context, position of
 * the first token t0 (t0 + nt <= context, unless RtModel.decode_unbounded), the state slots (RtModel.nstate pointers, each to
 * nb * row_floats floats; NULL: no persistent state, a plain forward), the scratch
 * (RtModel.scratch_floats(training) floats). */
typedef struct RtStep {
  int nb, nt, t0;
  void **state;
  float *scratch;
  uint64_t seed; /* 0: inference (dropout is the identity); else the training step's random seed */
  float loss_scale; /* training under fp16: the loss scale the loss_scale op reads (docs/passes.md) */
  /* training: NULL, or room for the load reports of the program's moe layers (RtModel.nmoe): a
   * train call writes, per moe layer in forward order, RtModel.moe_experts[i] + 2 floats: its
   * load-balancing loss, the (token, choice) pairs it dropped, the pairs each expert ran */
  float *moe_load;
} RtStep;


typedef struct RtModel {
  const char *name;
  const char *kind;             /* "decoder" or "encoder" */
  int64_t batch, context, vocab;  /* compiled maxima; vocab of the token ids */
  int out_per_token;            /* 1: output (B,T,out_dim) logits; 0: (B,out_dim) (classifier) */
  int64_t out_dim;
  int nparams;
  const RtParamInfo *params;
  int64_t weight_bytes;         /* size of the weight buffer (parameters at their offsets, typed) */
  int64_t param_count, param_bytes, flops_per_token, arena_bytes;
  int nstate;                   /* persistent state slots (two per attention op instance: k, v) */
  const RtStateInfo *state;     /* their sizes */
  /* Floats of scratch the kernels the program calls need at the current rt_threads() (call it
   * after rt_set_threads): for a forward (training = 0), or for any call of a training step. */
  size_t (*scratch_floats)(int training);
  const char *compile_options;
  /* The model: tokens (nb,nt) int32 -> out. arena holds arena_bytes, W weight_bytes bytes. */
  void (*forward)(const RtStep *s, char *arena, const void *W, const int32_t *tokens, float *out);
  const unsigned char *embedded_weights, *embedded_end; /* a safetensors image, or NULL */
  /* Training (NULL when the program was built without the autodiff pass): tokens (nb,nt) and
   * targets (nb,nt) int32 (targets (nb) for a classifier) -> *loss, the mean cross-entropy over
   * the nb*nt (or nb) targets, and the gradient of every trainable parameter written (not
   * accumulated) at its offset in G, which has W's layout. Training needs every parameter stored
   * in f32 (the trainer refuses other storage). arena holds train_arena_bytes. */
  void (*train)(const RtStep *s, char *arena, const void *W, const int32_t *tokens, const int32_t *targets,
                float *loss, float *G);
  int64_t train_arena_bytes, train_flops_per_token;
  RtTrainConfig train_config;
  /* Mixed precision compiled into train (the precision pass): activations stored in bf16 or fp16;
   * the trainer then steps with working weights rounded to that type, and under fp16 scales the
   * loss dynamically (RtLossScaler). */
  RtPrecision train_precision;
  /* 1: KV-cache decoding may go on past the context (t0 + nt > context): every state slot is a
   * ring (a local attention pattern's) and no op reads a position table, so generate never
   * re-encodes a sliding window; 0: t0 + nt <= context. */
  int decode_unbounded;
  /* Floats train writes at loss: 1 (the loss), or 3 for a distilling program (the loss, then its
   * KL and CE parts: docs/training.md, "Distillation"). 0 in a hand-written descriptor means 1. */
  int loss_parts;
  /* A distilling program: the prefix ("teacher.") of its teacher's frozen parameters, which
   * PROG train loads from --teacher-weights (their names without it) and no weights file of the
   * student holds; NULL: no teacher. */
  const char *teacher_prefix;
  /* > 0: the attention keeps a segment memory of this many positions per layer (Transformer-XL,
   * the xl_memory op's state): forward, grad, eval and train run a text longer than the context as
   * consecutive segments of the context at t0 = 0, T, 2T, ..., the state carrying the memory
   * (docs/runtime.md, "Segment memory"); 0: none. */
  int memory;
  /* > 1: the model pools its sequence (seq_pool, Funnel-Transformer): a step's length nt must be a
   * multiple of it (the runtime refuses other token lengths); 0 or 1: any length. */
  int time_multiple;
  /* Mixture-of-experts layers the train function reports on (RtStep.moe_load), in forward order,
   * and the experts of each (NULL when nmoe is 0). */
  int nmoe;
  const int32_t *moe_experts;
} RtModel;

/* The generated program's command line: info, init, export, forward, generate, eval, bench, train,
 * grad (each with --help). Returns the process exit status: 0, 1 for user errors. */
int rt_main(int argc, char **argv, const RtModel *m);

#ifdef __cplusplus
}
#endif
#endif /* MODELC_RT_H */
