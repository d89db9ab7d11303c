/* modelc_rt.h: the one public header of the modelc runtime (libmodelc_rt.a).
 *
 * Generated model code includes only this header. The runtime knows nothing of the compiler: it is
 * a library of inference kernels (GEMM via OpenBLAS, norms, activations, attention), file readers
 * and writers (safetensors, .npy), sampling, a byte-level tokenizer and timing. docs/runtime.md is
 * the full ABI description; the conventions are:
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
 * Threading. One threading layer: the runtime's own pool (rt_parallel_for, runtime/pool.c), with
 * OpenBLAS kept single-threaded inside each task, so BLAS threads and ours never compete for the
 * cores. rt_linear, the norms, softmax and attention split their work over the pool; generated
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
 * Errors and timing
 * ------------------------------------------------------------------------------------------- */

#define RT_ERR_LEN 256

/* The error sink of every fallible runtime call; may be passed as NULL to ignore the message. */
typedef struct RtError {
  char msg[RT_ERR_LEN];
} RtError;

/* Formats a message into err (if non-NULL) and returns -1, so callers can `return rt_fail(...)`. */
int rt_fail(RtError *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Seconds from an arbitrary fixed point, monotonic clock (CLOCK_MONOTONIC). */
double rt_now_seconds(void);

/* ---------------------------------------------------------------------------------------------
 * Thread pool (runtime/pool.c)
 * ------------------------------------------------------------------------------------------- */

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
/* Splits [0,n) into at most rt_threads() contiguous chunks and runs fn(ctx, lo, hi) on each, the
 * calling thread taking the first; returns when all are done (their writes are then visible).
 * Chunks are multiples of `grain` (the last excepted); n < 2*grain, one thread, nested calls (from
 * inside a task) and calls while another thread is using the pool run fn(ctx, 0, n) inline. n <= 0
 * calls nothing. Idle workers spin ~100 us (MODELC_SPIN_US) on the next job, then sleep. */
typedef void (*RtRangeFn)(void *ctx, int lo, int hi);
void rt_parallel_for(int n, int grain, RtRangeFn fn, void *ctx);

/* ---------------------------------------------------------------------------------------------
 * Data types (shared by safetensors and .npy)
 * ------------------------------------------------------------------------------------------- */

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

/* Conversions of n elements between f32 and the 16-bit float types (mixed precision: the IR's
 * cast op). Round to nearest even; fast versions use the CPU's conversion instructions where it
 * has them (F16C), refs convert one element at a time with the functions above. */
void rt_cast_f32_bf16(uint16_t *out, const float *x, size_t n);
void rt_cast_bf16_f32(float *out, const uint16_t *x, size_t n);
void rt_cast_f32_f16(uint16_t *out, const float *x, size_t n);
void rt_cast_f16_f32(float *out, const uint16_t *x, size_t n);
void rt_cast_f32_bf16_ref(uint16_t *out, const float *x, size_t n);
void rt_cast_bf16_f32_ref(float *out, const uint16_t *x, size_t n);
void rt_cast_f32_f16_ref(uint16_t *out, const float *x, size_t n);
void rt_cast_f16_f32_ref(float *out, const uint16_t *x, size_t n);

/* ---------------------------------------------------------------------------------------------
 * Kernels. Each has a `_ref` twin: plain loops, double accumulation, obviously correct.
 * ------------------------------------------------------------------------------------------- */

/* Linear layer, PyTorch layout: y = x W^T + bias.
 * x is (M,K), W is (N,K) (out_features, in_features), bias is (N) or NULL, y is (M,N). All
 * row-major. y must not alias x or W. rt_linear(y, x, W, bias, M, N, K, NULL, NULL). */
void rt_matmul(float *y, const float *x, const float *W, const float *bias, int M, int N, int K);
/* rt_matmul split over the pool: by rows of y in chunks of multiples of 16 rows, each chunk an
 * sgemm followed, while its rows are hot in cache, by epi(ctx, row_lo, row_hi) if epi is non-NULL
 * (generated fused epilogues: activation, residual). Below 32 rows (decode) it splits over N
 * instead (slices of W's rows: sgemv for M == 1, sgemm otherwise) and calls epi(ctx, 0, M) once
 * after all slices. bias is pre-filled into y (beta = 1), so epi sees y = x W^T + bias. An epi
 * runs in pool threads concurrently on disjoint row ranges: it must touch only rows lo..hi. */
void rt_linear(float *y, const float *x, const float *W, const float *bias, int M, int N, int K, RtRangeFn epi,
               void *ctx);
void rt_matmul_ref(float *y, const float *x, const float *W, const float *bias, int M, int N, int K);

/* Token embedding: out[i,:] = table[ids[i],:] for i in [0,n).
 * ids is (n) int32 (n = B*T), table is (V,C), out is (n,C).
 * An id outside [0,V) is not a crash: its row is written as zeros, every other row is still
 * written, and the call returns -1 naming the first bad id and its position. */
int rt_embedding(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err);
int rt_embedding_ref(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err);

/* Learned positions, in place: x[b,t,:] += pos[t0 + t,:].
 * x is (B,T,C), pos is (Tmax,C) with t0 + T <= Tmax (t0 is the first position, for decoding). */
void rt_add_positions(float *x, const float *pos, int B, int T, int C, int t0);
void rt_add_positions_ref(float *x, const float *pos, int B, int T, int C, int t0);

/* LayerNorm over the last axis: out[r,:] = (x[r,:] - mean_r) * rstd_r * gain + bias.
 * x, out are (R,C) (out may equal x); gain is (C); bias is (C) or NULL; rstd_r = 1/sqrt(var_r+eps)
 * with the biased variance. mean_out, rstd_out are (R) or NULL (saved for a backward pass).
 * Two-pass (mean, then centred sum of squares) with 8 float partial sums per pass. */
void rt_layernorm(float *out, float *mean_out, float *rstd_out, const float *x, const float *gain, const float *bias,
                  int R, int C, float eps);
void rt_layernorm_ref(float *out, float *mean_out, float *rstd_out, const float *x, const float *gain,
                      const float *bias, int R, int C, float eps);

/* RMSNorm: out[r,:] = x[r,:] / sqrt(mean(x[r,:]^2) + eps) * gain. x, out (R,C), gain (C).
 * rstd_out is (R) or NULL. out may equal x. */
void rt_rmsnorm(float *out, float *rstd_out, const float *x, const float *gain, int R, int C, float eps);
void rt_rmsnorm_ref(float *out, float *rstd_out, const float *x, const float *gain, int R, int C, float eps);

/* Element-wise activations over n floats; out may equal x. */
void rt_gelu(float *out, const float *x, size_t n);      /* exact: 0.5 x (1 + erf(x/sqrt 2)) */
void rt_gelu_tanh(float *out, const float *x, size_t n); /* tanh approximation (GPT-2 "gelu_new") */
void rt_relu(float *out, const float *x, size_t n);
void rt_silu(float *out, const float *x, size_t n); /* x * sigmoid(x) */
void rt_gelu_ref(float *out, const float *x, size_t n);
void rt_gelu_tanh_ref(float *out, const float *x, size_t n);
void rt_relu_ref(float *out, const float *x, size_t n);
void rt_silu_ref(float *out, const float *x, size_t n);

/* SwiGLU: out[i] = silu(a[i]) * b[i] for i in [0,n); out may equal a or b. */
void rt_swiglu(float *out, const float *a, const float *b, size_t n);
void rt_swiglu_ref(float *out, const float *a, const float *b, size_t n);

/* Softmax over each row, max-subtracted. x, out are (R,C); out may equal x. */
void rt_softmax(float *out, const float *x, int R, int C);
void rt_softmax_ref(float *out, const float *x, int R, int C);

/* ---------------------------------------------------------------------------------------------
 * Attention
 * ------------------------------------------------------------------------------------------- */

/* Multi-head self-attention from a fused qkv buffer.
 * qkv is (B,T,3C): q = qkv[b,t,0:C], k = qkv[b,t,C:2C], v = qkv[b,t,2C:3C]; head h uses columns
 * h*hd..(h+1)*hd of each, hd = C/n_head (C must be a multiple of n_head). out is (B,T,C), heads
 * concatenated in the same column order. Scale 1/sqrt(hd); causal masks key s > query t.
 * Flash-attention style: query blocks x key blocks with an online (streaming) softmax, so at most
 * one (RT_ATTN_BQ x RT_ATTN_BK) tile of scores exists at a time; each tile is two cblas_sgemm
 * calls reading q/k/v in place (leading dimension 3C). scratch holds
 * rt_attention_scratch_floats(T, C, n_head) floats. out must not alias qkv.
 * Parallel over (batch, head) pairs; the scratch holds one slice per thread, so its size depends
 * on rt_threads(): compute it after rt_set_threads (the same holds for the two sizes below). */
#define RT_ATTN_BQ 64
#define RT_ATTN_BK 128
size_t rt_attention_scratch_floats(int T, int C, int n_head);
void rt_attention(float *out, const float *qkv, int B, int T, int C, int n_head, int causal, float *scratch);
/* Naive twin: materialises the full (T,T) score row by row, double accumulation, no scratch. */
void rt_attention_ref(float *out, const float *qkv, int B, int T, int C, int n_head, int causal);

/* Decoding with a KV cache: one new token per sequence, all at position t (0 <= t < Tmax).
 * qkv is (B,3C): the new token's fused q,k,v. kcache, vcache are (B,Tmax,C). The new k,v are
 * written to kcache[b,t,:], vcache[b,t,:], then q attends over positions 0..t (causal by
 * construction). out is (B,C). scratch holds rt_attention_decode_scratch_floats(Tmax) floats
 * (one slice per thread). Parallel over (batch, head) pairs once t is large enough to pay. */
size_t rt_attention_decode_scratch_floats(int Tmax);
void rt_attention_decode(float *out, const float *qkv, float *kcache, float *vcache, int B, int Tmax, int t, int C,
                         int n_head, float *scratch);

/* ---------------------------------------------------------------------------------------------
 * safetensors (read by mmap, fully validated; see docs/runtime.md for the list of checks)
 * ------------------------------------------------------------------------------------------- */

/* One tensor: a view into the file (or, for writing, the caller's memory). */
typedef struct RtTensor {
  const char *name;
  RtDType dtype;
  int ndim; /* 0 for a scalar */
  int64_t shape[RT_MAX_DIMS];
  const void *data; /* aligned to rt_dtype_size(dtype) (the reader copies if needed) */
  size_t nbytes;
} RtTensor;

typedef struct RtSafetensors RtSafetensors; /* opaque */

/* Opens and validates path. On success *out owns the mapping; release with rt_st_close. */
int rt_st_open(RtSafetensors **out, const char *path, RtError *err);
/* Validates an in-memory image (8-byte length, header, data). buf must outlive the handle; `name`
 * is used in messages. Used by tests and fuzz targets. */
int rt_st_open_buffer(RtSafetensors **out, const void *buf, size_t size, const char *name, RtError *err);
void rt_st_close(RtSafetensors *st);

int rt_st_count(const RtSafetensors *st);
const RtTensor *rt_st_tensor(const RtSafetensors *st, int i);          /* header order */
const RtTensor *rt_st_find(const RtSafetensors *st, const char *name); /* NULL if absent */
/* The __metadata__ value for key, or NULL. */
const char *rt_st_metadata(const RtSafetensors *st, const char *key);
/* Finds `name` and checks its dtype and shape (ndim < 0 skips the shape check); on failure the
 * message names the file, the tensor and what differs. *out may be NULL. */
int rt_st_require(const RtSafetensors *st, const char *name, RtDType dtype, int ndim, const int64_t *shape,
                  const RtTensor **out, RtError *err);

/* Writes tensors (in the given order, packed) and optional metadata (n_meta key/value pairs in
 * meta[2*i], meta[2*i+1]) to path: header padded with spaces to a multiple of 8 bytes, written
 * to a temporary file in the same directory, fsync'd, then renamed over path. */
int rt_st_write(const char *path, const RtTensor *tensors, int n, const char *const *meta, int n_meta, RtError *err);

/* Converts any float tensor (F32, F16, BF16, F64) to float32; out holds nbytes/size elements. */
int rt_tensor_to_f32(const RtTensor *t, float *out, RtError *err);

/* ---------------------------------------------------------------------------------------------
 * NumPy .npy (versions 1.0, 2.0, 3.0; dtypes <f4, <i4, <i8; C order only)
 * ------------------------------------------------------------------------------------------- */

typedef struct RtNpy {
  RtDType dtype; /* RT_DT_F32, RT_DT_I32 or RT_DT_I64 */
  int ndim;
  int64_t shape[RT_MAX_DIMS];
  void *data; /* owned, 64-byte aligned; release with rt_npy_free */
  size_t nbytes;
} RtNpy;

int rt_npy_read(const char *path, RtNpy *out, RtError *err);
/* Parses an in-memory image (copies the data); `name` is used in messages. */
int rt_npy_parse(const void *buf, size_t size, const char *name, RtNpy *out, RtError *err);
void rt_npy_free(RtNpy *a);
/* Writes a C-order array; path "-" writes to stdout, any other path is written atomically
 * (temporary file, fsync, rename). Version 1.0 unless the header needs 2.0. */
int rt_npy_write(const char *path, RtDType dtype, int ndim, const int64_t *shape, const void *data, RtError *err);

/* ---------------------------------------------------------------------------------------------
 * Atomic file writing (used by the writers, checkpoints)
 * ------------------------------------------------------------------------------------------- */

typedef struct RtChunk {
  const void *data;
  size_t len;
} RtChunk;

/* Writes the concatenation of chunks to "path.tmp.XXXXXX", fsyncs, renames to path. */
int rt_write_file_atomic(const char *path, const RtChunk *chunks, int n, RtError *err);

/* ---------------------------------------------------------------------------------------------
 * Sampling (reproducible: PCG32 seeded from a uint64)
 * ------------------------------------------------------------------------------------------- */

/* PCG32 (O'Neill, XSH-RR 64/32): 64-bit state, fixed odd increment. */
typedef struct RtRng {
  uint64_t state;
  uint64_t inc;
} RtRng;

void rt_rng_seed(RtRng *rng, uint64_t seed);
uint32_t rt_rng_u32(RtRng *rng);
float rt_rng_uniform(RtRng *rng); /* [0,1), 24 random bits */

typedef struct RtSampleParams {
  float temperature; /* <= 0: greedy */
  int top_k;         /* 0 (or >= V): off; 1: greedy */
  float top_p;       /* >= 1: off; else keep the smallest highest-probability set with mass >= top_p */
} RtSampleParams;

/* Index of the largest logit; ties go to the lowest index. NaNs are never chosen unless all are. */
int rt_sample_argmax(const float *logits, int V);
/* Draws one token id in [0,V) from logits (V) after temperature, top-k, then top-p (top-p mass is
 * measured on the top-k renormalised distribution). Scratch: probs (V floats), idx (V int32).
 * Greedy (temperature <= 0 or top_k == 1) uses no randomness and no scratch. */
int rt_sample(const float *logits, int V, const RtSampleParams *p, RtRng *rng, float *probs, int32_t *idx);

/* ---------------------------------------------------------------------------------------------
 * Byte-level tokenizer: vocabulary 256, id == byte value.
 * ------------------------------------------------------------------------------------------- */

#define RT_BYTE_VOCAB 256
/* ids (n) <- bytes of text (n); returns n. */
size_t rt_byte_encode(int32_t *ids, const void *text, size_t n);
/* text (n bytes) <- ids (n); an id outside [0,256) is an error naming its position. */
int rt_byte_decode(char *text, const int32_t *ids, size_t n, RtError *err);

/* ---------------------------------------------------------------------------------------------
 * Scalar activations, shared by the array kernels above and by generated fused loops
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
void rt_dropout_ref(float *out, const float *x, size_t n, float p, uint64_t key);

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
void rt_sinusoid_ref(float *out, int T, int C);

/* Attention with a KV cache, for prefill and decoding alike. qkv is (B,nt,3C) for tokens at
 * positions t0..t0+nt-1; kcache, vcache are (B,Tmax,C). Their k and v are stored into the cache at
 * those positions, then each query attends causally over the cache positions 0..t0+t. out is
 * (B,nt,C). With t0 == 0 this is rt_attention on qkv (plus the cache writes). scratch holds
 * rt_attention_kv_scratch_floats(Tmax, C, n_head) floats. Only causal attention has a cache. */
size_t rt_attention_kv_scratch_floats(int Tmax, int C, int n_head);
void rt_attention_kv(float *out, const float *qkv, float *kcache, float *vcache, int B, int nt, int t0, int Tmax,
                     int C, int n_head, int causal, float *scratch);

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
} RtTrainConfig;

/* ---------------------------------------------------------------------------------------------
 * Training kernels (runtime/backward.c): the backward ops of the IR (docs/ir.md, "Training").
 * Each has a naive _ref twin and is checked against finite differences of the forward kernels.
 * ------------------------------------------------------------------------------------------- */

/* Mean over R rows of -log softmax(logits[r,:])[targets[r]]. logits (R,V), targets (R) int32 in
 * [0,V). Accumulates in double. */
float rt_cross_entropy(const float *logits, const int32_t *targets, int R, int V);
float rt_cross_entropy_ref(const float *logits, const int32_t *targets, int R, int V);
/* dlogits (R,V) = dloss * (softmax(logits[r,:]) - onehot(targets[r])) / R. */
void rt_cross_entropy_grad(float *dlogits, const float *logits, const int32_t *targets, int R, int V, float dloss);
void rt_cross_entropy_grad_ref(float *dlogits, const float *logits, const int32_t *targets, int R, int V,
                               float dloss);
/* y (M,K) = dy (M,N) W (N,K): the input gradient of a linear layer. */
void rt_matmul_nn(float *y, const float *dy, const float *W, int M, int N, int K);
void rt_matmul_nn_ref(float *y, const float *dy, const float *W, int M, int N, int K);
/* dW (N,K) = sum over rows r of dy[r,:]^T x[r,:]; dy (M,N), x (M,K): the weight gradient. */
void rt_linear_dw(float *dW, const float *dy, const float *x, int M, int N, int K);
void rt_linear_dw_ref(float *dW, const float *dy, const float *x, int M, int N, int K);
/* LayerNorm (rms = 0) or RMSNorm (rms = 1) backward over rows of (R,C), recomputing the row
 * statistics from x: dx (R,C) from x, gain (C), dy (R,C); dgain (C) = sum_r dy * xhat. */
void rt_norm_dx(float *dx, const float *x, const float *gain, const float *dy, int R, int C, float eps, int rms);
void rt_norm_dx_ref(float *dx, const float *x, const float *gain, const float *dy, int R, int C, float eps, int rms);
void rt_norm_dg(float *dgain, const float *x, const float *dy, int R, int C, float eps, int rms);
void rt_norm_dg_ref(float *dgain, const float *x, const float *dy, int R, int C, float eps, int rms);
/* dtable (V,C) = zeros, then dtable[ids[i],:] += dy[i,:] for i in [0,n). */
void rt_embedding_dw(float *dtable, const int32_t *ids, const float *dy, int n, int V, int C);
void rt_embedding_dw_ref(float *dtable, const int32_t *ids, const float *dy, int n, int V, int C);
/* Attention backward: dqkv (B,T,3C) from qkv (B,T,3C) and dy (B,T,C), the same layout and
 * scaling as rt_attention (recomputed, flash-attention style). scratch holds
 * rt_attention_dx_scratch_floats(T, C, n_head) floats (call after rt_set_threads). */
size_t rt_attention_dx_scratch_floats(int T, int C, int n_head);
void rt_attention_dx(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head, int causal,
                     float *scratch);
void rt_attention_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                         int causal);

/* ---------------------------------------------------------------------------------------------
 * Optimisers and schedules (runtime/optim.c)
 * ------------------------------------------------------------------------------------------- */

/* AdamW (Loshchilov & Hutter; as torch.optim.AdamW): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * w -= lr * wd * w (decoupled); w -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps).
 * step >= 1. n floats. */
void rt_adamw(float *w, const float *g, float *m, float *v, int64_t n, float lr, float beta1, float beta2, float eps,
              float wd, int64_t step);
/* SGD with momentum (as torch.optim.SGD): mom = momentum * mom + g (+ wd * w); w -= lr * mom. */
void rt_sgd(float *w, const float *g, float *mom, int64_t n, float lr, float momentum, float wd);
/* sum of g[i]^2 in double (for clipping by global norm). */
double rt_sum_squares(const float *g, int64_t n);
/* Working weights for mixed precision: out[i] = w[i] rounded to bf16 or fp16 (and back to f32,
 * which is what sgemm reads); a copy for fp32. n floats. */
void rt_round_weights(float *out, const float *w, int64_t n, RtPrecision p);
/* Dynamic loss scaling (as torch.cuda.amp.GradScaler): the loss gradient is multiplied by scale;
 * a step whose gradients are not all finite is skipped and halves the scale; `window` good steps
 * in a row double it (up to 2^64, so that the scale stays a finite float). */
typedef struct RtLossScaler {
  double scale;   /* initial 65536 */
  int64_t window; /* good steps before growing (2000) */
  int64_t good;   /* good steps since the scale last changed */
  int64_t skipped;/* steps skipped so far */
} RtLossScaler;
/* Records a step's outcome; returns 1 when its update should be applied, 0 to skip it. */
int rt_loss_scaler_update(RtLossScaler *s, int grads_finite);
/* 1 when all n values are finite. */
int rt_all_finite(const float *g, int64_t n);
/* The learning rate at step (1-based): linear warm-up from 0 over `warmup` steps, then cosine or
 * linear decay to min_lr at `steps`, or constant. */
double rt_lr_at(const RtTrainConfig *c, int64_t step);

/* ---------------------------------------------------------------------------------------------
 * Generated programs: the model descriptor and the command line (runtime/prog.c)
 * ------------------------------------------------------------------------------------------- */

typedef enum RtInit { RT_INIT_ZEROS, RT_INIT_ONES, RT_INIT_NORMAL, RT_INIT_UNIFORM, RT_INIT_SINUSOID } RtInit;

/* One parameter: its safetensors name and shape, and where it lives in the weight buffer. */
typedef struct RtParamInfo {
  const char *name;
  int ndim;
  int64_t shape[4];
  int64_t offset;   /* floats from the start of the weight buffer (64-byte aligned) */
  RtInit init;      /* initialiser for PROG init */
  float init_arg;   /* std (normal) or bound (uniform) */
  int stored;       /* 0: shares another parameter's storage (not in the weights file) */
  int decay;        /* weight decay applies (training) */
} RtParamInfo;

/* One persistent state slot of the generated program (an attention op's k or v cache, later
 * segment memory): the runtime allocates batch * row_floats floats for a run of `batch` sequences,
 * zeroed when a new sequence starts, and passes it in RtStep.state. The generated code declares
 * its slots (RtModel.state); the runtime knows no model's shapes. */
typedef struct RtStateInfo {
  int64_t row_floats; /* floats per batch row (an attention cache: context * C) */
} RtStateInfo;

/* One call of the generated forward: runtime batch nb <= batch, length nt <= context, position of
 * the first token t0 (t0 + nt <= context), the state slots (RtModel.nstate pointers, each to
 * nb * row_floats floats; NULL: no persistent state, a plain forward), the scratch
 * (RtModel.scratch_floats(training) floats). */
typedef struct RtStep {
  int nb, nt, t0;
  void **state;
  float *scratch;
  uint64_t seed; /* 0: inference (dropout is the identity); else the training step's random seed */
  float loss_scale; /* training under fp16: the loss scale the loss_scale op reads (docs/passes.md) */
} RtStep;


typedef struct RtModel {
  const char *name;
  const char *kind;             /* "decoder" or "encoder" */
  int64_t batch, context, vocab;  /* compiled maxima; vocab of the token ids */
  int out_per_token;            /* 1: output (B,T,out_dim) logits; 0: (B,out_dim) (classifier) */
  int64_t out_dim;
  int nparams;
  const RtParamInfo *params;
  int64_t weight_floats;        /* size of the weight buffer */
  int64_t param_count, param_bytes, flops_per_token, arena_bytes;
  int nstate;                   /* persistent state slots (two per attention op instance: k, v) */
  const RtStateInfo *state;     /* their sizes */
  /* Floats of scratch the kernels the program calls need at the current rt_threads() (call it
   * after rt_set_threads): for a forward (training = 0), or for any call of a training step. */
  size_t (*scratch_floats)(int training);
  const char *compile_options;
  /* The model: tokens (nb,nt) int32 -> out. arena holds arena_bytes, W weight_floats floats. */
  void (*forward)(const RtStep *s, char *arena, const float *W, const int32_t *tokens, float *out);
  const unsigned char *embedded_weights, *embedded_end; /* a safetensors image, or NULL */
  /* Training (NULL when the program was built without the autodiff pass): tokens (nb,nt) and
   * targets (nb,nt) int32 (targets (nb) for a classifier) -> *loss, the mean cross-entropy over
   * the nb*nt (or nb) targets, and the gradient of every stored trainable parameter written (not
   * accumulated) at its offset in G, which has W's layout. arena holds train_arena_bytes. */
  void (*train)(const RtStep *s, char *arena, const float *W, const int32_t *tokens, const int32_t *targets,
                float *loss, float *G);
  int64_t train_arena_bytes, train_flops_per_token;
  RtTrainConfig train_config;
  /* Mixed precision compiled into train (the precision pass): activations stored in bf16 or fp16;
   * the trainer then steps with working weights rounded to that type, and under fp16 scales the
   * loss dynamically (RtLossScaler). */
  RtPrecision train_precision;
} RtModel;

/* The generated program's command line: info, init, forward, generate, eval, bench (each with
 * --help). Returns the process exit status: 0, 1 for user errors. */
int rt_main(int argc, char **argv, const RtModel *m);

#ifdef __cplusplus
}
#endif
#endif /* MODELC_RT_H */
