/* kernels.h: the kernels room of the runtime (runtime/kernels/), internal: not part of the ABI in
 * modelc_rt.h. The helpers the kernel files share (one definition each, so that e.g. the backward
 * norms recompute exactly the row statistics the forward norms computed), the `_ref` twin of
 * every kernel (tests/unit/test_rt_*.c compare against them), the kernels generated code does not
 * call (yet) but tests and the program do, and the optimiser updates. kernels/ includes core/ and
 * nothing of io/ or prog/. */
#ifndef MODELC_RT_KERNELS_H
#define MODELC_RT_KERNELS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../core/core.h"
#include "../modelc_rt.h"

/* ---- helpers shared by the kernel files ---- */

/* Rows per chunk for row-wise kernels over C columns: about 8K floats of work per chunk, so the
 * pool is only used when each thread gets at least that much. */
static inline int rt_row_grain(int C) { return C >= 8192 ? 1 : 8192 / (C > 0 ? C : 1); }

/* The blocks of the linear layers' GEMMs (linear.c, linear_bf16.c), fixed by the shapes so the
 * bits do not depend on the thread count. Rows per block of a GEMM's M (or dW's N) rows: about 8
 * blocks (1..4 threads share them out evenly enough), 16 to 128 rows each, a multiple of 16. */
static inline int rt_gemm_rows_block(int rows) {
  int b = (rows / 8 + 15) / 16 * 16;
  return b < 16 ? 16 : b > 128 ? 128 : b;
}
/* The same for the bf16 products (linear_bf16.c): 4 blocks, 16 to 512 rows each, a multiple of 16.
 * oneDNN's AMX kernels repack B on every call, so fewer, larger calls pay: 4 blocks instead of
 * ~8 made the small config's bf16 training step ~7% faster (0.41 -> 0.38 s, interleaved runs). */
static inline int rt_gemm16_rows_block(int rows) {
  int b = ((rows + 3) / 4 + 15) / 16 * 16;
  return b < 16 ? 16 : b > 512 ? 512 : b;
}
/* Below this many rows a linear layer splits W's rows (the output columns) instead ... */
#define RT_LIN_MIN_ROWS 32
/* The epilogue of a linear kernel that computed all of y first (the quantised and sparse ones):
 * below RT_LIN_MIN_ROWS rows epi(ctx, 0, M) once, as rt_linear; from there on over the pool in
 * row blocks of rt_gemm_rows_block(M) (a prefill's activation runs on every thread). Nothing when
 * epi is NULL. (linear.c) */
void rt_linear_epilogue(RtRangeFn epi, void *ctx, int M);
/* ... in blocks of at least 16K weights, a multiple of 16 columns. */
static inline int rt_lin_cols_block(int K) {
  int g = 16384 / (K > 0 ? K : 1);
  return g < 16 ? 16 : (g + 15) / 16 * 16;
}

/* A linear layer's bias pre-filled into rows [m0,m1), columns [c0,c1) of y (row stride ldy), so the
 * GEMM adds onto it (beta = 1: OpenBLAS would otherwise zero C in a separate pass). Returns the
 * GEMM's beta: 1 with a bias, 0 without. */
static inline float rt_prefill_bias(float *y, const float *bias, int m0, int m1, int ldy, int c0, int c1) {
  if (!bias)
    return 0.0f;
  for (int m = m0; m < m1; m++)
    memcpy(y + (size_t)m * ldy + c0, bias + c0, (size_t)(c1 - c0) * sizeof(float));
  return 1.0f;
}

/* Sum of x[0..n) with 8 lanes, then a pairwise combine: accurate and vectorisable. */
static inline float rt_sum8(const float *x, int n) {
  float a[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) a[j] += x[i + j];
  float tail = 0.0f;
  for (; i < n; i++) tail += x[i];
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
}

/* Sum of (x[i] - m)^2 with 8 lanes. */
static inline float rt_sqdev8(const float *x, int n, float m) {
  float a[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) {
      float d = x[i + j] - m;
      a[j] += d * d;
    }
  float tail = 0.0f;
  for (; i < n; i++) tail += (x[i] - m) * (x[i] - m);
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
}

/* Max of x[0..n) (n >= 1). */
static inline float rt_max_row(const float *x, int n) {
  float m = x[0];
  for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

/* e[j] = exp(x[j] - mx) for j < n (e may equal x); returns their sum with 8 partial sums. The
 * forward attention and its backward use this one formula, so the backward recomputes exactly the
 * forward's probabilities. The loop body is RT_EXP_ROW_BODY, compiled twice (softmax.c): for the
 * baseline ISA (SSE2 cannot vectorise rt_expf's unsigned min) and with AVX2, chosen by rt_cpu() (so
 * MODELC_CPU=portable takes the first). Both do the same IEEE operations in the same order on each
 * element and partial sum (no FMA contraction), so they return the same bits (test_rt_kernels). */
float rt_exp_row(float *e, const float *x, int n, float mx);
float rt_exp_row_portable(float *e, const float *x, int n, float mx);
#define RT_EXP_ROW_BODY                                                                                              \
  float a[8] = {0};                                                                                                  \
  int j = 0;                                                                                                         \
  for (; j + 8 <= n; j += 8)                                                                                         \
    for (int k = 0; k < 8; k++) {                                                                                    \
      float v = rt_expf(x[j + k] - mx);                                                                              \
      e[j + k] = v;                                                                                                  \
      a[k] += v;                                                                                                     \
    }                                                                                                                \
  float tail = 0.0f;                                                                                                 \
  for (; j < n; j++)                                                                                                 \
    tail += e[j] = rt_expf(x[j] - mx);                                                                               \
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;

/* Floats of one per-task scratch slice, rounded up to a cache line (no false sharing). */
static inline size_t rt_slice_floats(size_t n) { return (n + 15) / 16 * 16; }

/* A kernel's per-chunk scratch: rt_parallel_for runs a call on at most rt_threads() chunks at once,
 * so a kernel sizes its scratch as slice x rt_threads() and each chunk claims the next slice as it
 * starts (the counter lives in the kernel's per-call context, zero at the start). */
static inline float *rt_claim_slice(float *scratch, size_t slice, atomic_int *next) {
  return scratch + (size_t)atomic_fetch_add_explicit(next, 1, memory_order_relaxed) * slice;
}

/* ---- linear (kernels/linear.c) ---- */

/* y = x W^T + bias, the layout of rt_linear (modelc_rt.h) without an epilogue:
 * rt_linear(y, x, W, bias, M, N, K, NULL, NULL). */
void rt_matmul(float *y, const float *x, const float *W, const float *bias, int M, int N, int K);
void rt_matmul_ref(float *y, const float *x, const float *W, const float *bias, int M, int N, int K);
void rt_matmul_nn_ref(float *y, const float *dy, const float *W, int M, int N, int K);
void rt_linear_dw_ref(float *dW, const float *dy, const float *x, int M, int N, int K);
/* rt_linear_dw, or with accumulate != 0 dW += dy^T x (the same blocks and calls, beta = 1): the
 * chunks of rt_linear_xent add into one weight gradient this way. */
void rt_linear_dw_acc(float *dW, const float *dy, const float *x, int M, int N, int K, int accumulate);

/* ---- embedding and positions (kernels/embedding.c) ---- */

int rt_embedding_ref(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err);
/* The first id of ids (n) outside [0,V): -1 and the error every embedding kernel reports for it
 * (its value and position), else 0. */
int rt_embedding_bad_id(const int32_t *ids, int n, int V, RtError *err);
/* The row gather behind rt_embedding and rt_embedding_bf16: rows of C elements of elsize bytes. */
int rt_gather_rows(void *out, const int32_t *ids, const void *table, int n, int V, int C, size_t elsize,
                   RtError *err);
/* Its twin: one byte at a time (the twins of rt_embedding and rt_embedding_bf16). */
int rt_gather_rows_ref(void *out, const int32_t *ids, const void *table, int n, int V, int C, size_t elsize,
                       RtError *err);
/* The twins of linear_bf16.c: y = bf16(x) W^T + bias in double from the rounded inputs. */
void rt_linear_bf16_ref(float *y, const float *x, const uint16_t *W, const float *bias, int M, int N, int K);
int rt_embedding_bf16_ref(uint16_t *out, const int32_t *ids, const uint16_t *table, int n, int V, int C,
                          RtError *err);
/* rt_linear_dw_bf16, or with accumulate != 0 dW += (rt_linear_xent_bf16's chunks). */
void rt_linear_dw_bf16_acc(float *dW, const float *dy, const float *x, int M, int N, int K, int accumulate,
                           float *scratch);
/* The twins of the bf16 backward products: the rounded operands' products summed in double. */
void rt_matmul_nn_bf16_ref(float *y, const float *dy, const uint16_t *W, int M, int N, int K);
void rt_linear_dw_bf16_ref(float *dW, const float *dy, const float *x, int M, int N, int K);
void rt_linear_xent_bf16_ref(float *dh, float *dW, float *loss, const float *h, const uint16_t *W,
                             const int32_t *targets, int R, int V, int C, float dloss);
/* Learned positions, in place: x[b,t,:] += pos[t0 + t,:].
 * x is (B,T,C), pos is (Tmax,C) with t0 + T <= Tmax (t0 is the first position, for decoding). */
void rt_add_positions(float *x, const float *pos, int B, int T, int C, int t0);
void rt_add_positions_ref(float *x, const float *pos, int B, int T, int C, int t0);
void rt_sinusoid_ref(float *out, int T, int C);
void rt_embedding_dw_ref(float *dtable, const int32_t *ids, const float *dy, int n, int V, int C);

/* ---- quantised weights (kernels/linear_quant.c; the formats in modelc_rt.h, core/quant.c) ---- */

/* The twins of rt_linear_i8_row, rt_linear_q8_0 and rt_linear_q4_0 (no epilogue, no scratch: they
 * allocate): the activations quantised by rt_quant_act_ref, exact integer dot products, scaled
 * and (q8_0, q4_0) summed over the blocks in order, then + bias. */
void rt_linear_i8_row_ref(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K);
void rt_linear_q8_0_ref(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K);
void rt_linear_q4_0_ref(float *y, const float *x, const void *Wq, const float *bias, int M, int N, int K);
/* The activation quantisation of those kernels: x (M,K) -> q int8 (M,K) and scales d, per row
 * (f == RT_FMT_I8_ROW: d [M]) or per block of 32 (q8_0, q4_0: d [M,K/32]); sum (NULL, or d's
 * shape) gets each group's sum of q. rt_quant_act uses the kernels' SIMD code, its twin scalar
 * loops: the same bytes and scales. */
void rt_quant_act(RtFormat f, int8_t *q, float *d, int32_t *sum, const float *x, int M, int K);
void rt_quant_act_ref(RtFormat f, int8_t *q, float *d, int32_t *sum, const float *x, int M, int K);
/* The ISA of the quantised kernels on this CPU: "avx512_vnni", "avx_vnni", "avx2" or "portable". */
const char *rt_quant_isa(void);
/* The twin of rt_embedding_i8_row/_q8_0/_q4_0 (format f): the whole table dequantised
 * (rt_dequantize), then the f32 rows gathered byte by byte (rt_gather_rows_ref). */
int rt_embedding_quant_ref(RtFormat f, float *out, const int32_t *ids, const void *table, int n, int V, int C,
                           RtError *err);

/* ---- sparse weights (kernels/linear_sparse.c; the format RT_FMT_CSR in modelc_rt.h) ---- */

/* The twin of rt_linear_csr (no epilogue, no scratch): per output the products of its row's
 * nonzeros summed in order in double, + bias, rounded once. */
void rt_linear_csr_ref(float *y, const float *x, const void *Ws, const float *bias, int M, int N, int K, int cap);
/* The path of rt_linear_csr on this CPU: "avx512", "avx2" or "portable". */
const char *rt_sparse_isa(void);

/* ---- norms (kernels/norm.c) ---- */

void rt_layernorm_ref(float *out, float *mean_out, float *rstd_out, const float *x, const float *gain,
                      const float *bias, int R, int C, float eps);
void rt_rmsnorm_ref(float *out, float *rstd_out, const float *x, const float *gain, int R, int C, float eps);
void rt_norm_dx_ref(float *dx, const float *x, const float *gain, const float *dy, int R, int C, float eps, int rms);
void rt_norm_dg_ref(float *dgain, const float *x, const float *dy, int R, int C, float eps, int rms);

/* ---- element-wise (kernels/activation.c) ---- */

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

void rt_dropout_ref(float *out, const float *x, size_t n, float p, uint64_t key);

/* ---- softmax and loss (kernels/softmax.c, kernels/loss.c) ---- */

void rt_softmax_ref(float *out, const float *x, int R, int C);
/* Pooling twins (pool.c): mean = 0 first, 1 mean; double accumulation. */
void rt_pool_ref(float *out, const float *x, int B, int T, int C, int mean);
void rt_pool_dx_ref(float *dx, const float *dy, int B, int T, int C, int mean);
float rt_cross_entropy_ref(const float *logits, const int32_t *targets, int R, int V);
void rt_cross_entropy_grad_ref(float *dlogits, const float *logits, const int32_t *targets, int R, int V,
                               float dloss);
/* rt_distill_loss / rt_distill_grad's twins (distill.c): serial, all double; dzs must not alias zs. */
void rt_distill_loss_ref(float *loss, float *kl, float *ce, const float *zs, const float *zt, const int32_t *targets,
                         int R, int V, float temperature, float alpha);
void rt_distill_grad_ref(float *dzs, const float *zs, const float *zt, const int32_t *targets, int R, int V,
                         float temperature, float alpha, float dloss);
/* rt_linear_xent's twin: serial, all double, the logits of one row at a time (V doubles
 * allocated); the same results (dh, dW, *loss). */
void rt_linear_xent_ref(float *dh, float *dW, float *loss, const float *h, const float *W, const int32_t *targets,
                        int R, int V, int C, float dloss);

/* ---- attention (kernels/attention.c) ---- */

/* The tile of rt_attention (modelc_rt.h): query blocks of RT_ATTN_BQ rows, key blocks of
 * RT_ATTN_BK; the backward takes query blocks of RT_ATTN_BQ rows too. */
#define RT_ATTN_BQ 64
#define RT_ATTN_BK 128
/* Naive twin: materialises the full (T,T) score row by row, double accumulation, no scratch. */
void rt_attention_ref(float *out, const float *qkv, int B, int T, int C, int n_head, int causal);
/* Its grouped-query form (layout as rt_attention_gqa, modelc_rt.h), and the grouped-query
 * backward's twin, written out in double (independent of the sparse twins). */
void rt_attention_gqa_ref(float *out, const float *qkv, int B, int T, int C, int n_head, int n_kv_head, int causal);
void rt_attention_gqa_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                             int n_kv_head, int causal);

/* Decoding with a KV cache: one new token per sequence, all at position t (0 <= t < Tmax).
 * qkv is (B,3C): the new token's fused q,k,v. kcache, vcache are (B,Tmax,C). The new k,v are
 * written to kcache[b,t,:], vcache[b,t,:], then q attends over positions 0..t (causal by
 * construction). out is (B,C). scratch holds rt_attention_decode_scratch_floats(Tmax) floats
 * (one slice per thread). Parallel over (batch, head) pairs once t is large enough to pay. */
size_t rt_attention_decode_scratch_floats(int Tmax);
void rt_attention_decode(float *out, const float *qkv, float *kcache, float *vcache, int B, int Tmax, int t, int C,
                         int n_head, float *scratch);
/* The same with grouped-query rows (C + 2KV) and (B,Tmax,KV) caches, KV = n_kv_head * C/n_head. */
void rt_attention_gqa_decode(float *out, const float *qkv, float *kcache, float *vcache, int B, int Tmax, int t, int C,
                             int n_head, int n_kv_head, float *scratch);

void rt_attention_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                         int causal);

/* ---- segment recurrence (kernels/attention_xl.c) ---- */

/* Naive twins of rt_xl_memory, rt_xl_memory_dx, rt_xl_attention, rt_xl_attention_dx and
 * rt_sinusoid_halves (modelc_rt.h): the formulas element by element, double, no scratch. */
void rt_xl_memory_ref(float *out, const float *x, float *mem_a, float *mem_b, float *tags, int B, int nt, int t0,
                      int T, int M, int C);
void rt_xl_memory_dx_ref(float *dx, const float *dcat, int B, int nt, int T, int M, int C);
void rt_xl_attention_ref(float *out, const float *qkv, const float *rk, const float *u, const float *w, int B, int nt,
                         int t0, int T, int M, int C, int n_head);
void rt_xl_attention_dx_ref(float *dqkv, float *drk, float *du, float *dw, const float *qkv, const float *rk,
                            const float *u, const float *w, const float *dy, int B, int nt, int t0, int T, int M,
                            int C, int n_head);
void rt_sinusoid_halves_ref(float *out, int K, int C);

/* ---- block-sparse attention (kernels/attention_sparse.c) ---- */

/* Naive twins of rt_attention_sparse and rt_attention_sparse_dx (modelc_rt.h): dense attention
 * with the explicit element mask rt_sparse_allowed, full rows in double as rt_attention_ref and
 * rt_attention_dx_ref. */
void rt_attention_sparse_ref(float *out, const float *qkv, int B, int T, int C, int n_head, int causal,
                             const RtSparsePattern *p);
void rt_attention_sparse_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                                int causal, const RtSparsePattern *p);

/* ---- Linformer attention (kernels/attention_lowrank.c) ---- */

/* Naive twins of rt_linformer and rt_linformer_dx (modelc_rt.h): serial, double accumulation, the
 * projected keys and values materialised per (batch, head); no scratch. */
void rt_linformer_ref(float *out, const float *qkv, const float *E, const float *F, int B, int nt, int T, int C,
                      int n_head, int K);
void rt_linformer_dx_ref(float *dqkv, float *dE, float *dF, const float *qkv, const float *E, const float *F,
                         const float *dy, int B, int nt, int T, int C, int n_head, int K);

/* ---- sequence compression (kernels/funnel.c) ---- */

/* One (batch, head) of attention with Tq queries (row stride ldq) over T keys and values (stride
 * ld), forward and backward (attention.c; their scratch as rt_attention's and rt_attention_dx's
 * per-task slices). rt_attention passes its own queries (Tq = T), rt_attention_pool its pooled ones. */
void rt_attend_head(float *o, int ldo, const float *q, int ldq, int Tq, const float *k, const float *v, int ld, int T,
                    int hd, int causal, float scale, float *ws);
size_t rt_attend_head_floats(int hd); /* rt_attend_head's workspace ws */
void rt_attend_dx_head(float *dq, int ldq, int Tq, float *dk, float *dv, const float *q, const float *k, const float *v,
                       const float *dO, int ld, int ldo, int T, int hd, int causal, float scale, float *P, float *dP,
                       int zero);
/* Naive twins of rt_seq_pool, rt_upsample, rt_attention_pool(_dx) (modelc_rt.h): each output
 * element from its definition, double accumulation, serial, no scratch. */
void rt_seq_pool_ref(float *out, const float *x, int B, int T, int C, int stride, double scale);
void rt_upsample_ref(float *out, const float *x, int B, int T, int C, int stride, double scale);
void rt_attention_pool_ref(float *out, const float *qkv, int B, int T, int C, int n_head, int stride);
void rt_attention_pool_dx_ref(float *dqkv, const float *qkv, const float *dy, int B, int T, int C, int n_head,
                              int stride);

/* ---- mixture of experts (kernels/moe.c) ---- */

/* Naive twins of rt_moe and rt_moe_dx (modelc_rt.h): serial, double accumulation, the routing
 * written out again and every kept (token, choice) pair's expert computed on its own; no scratch. */
void rt_moe_ref(float *y, float *aux, float *load, const float *x, const float *wr, const float *w1, const float *b1,
                const float *w2, const float *b2, int N, int C, int E, int H, int K, float factor, float aux_coef,
                int act);
void rt_moe_dx_ref(float *dx, float *dwr, float *dw1, float *db1, float *dw2, float *db2, const float *x,
                   const float *wr, const float *w1, const float *b1, const float *w2, const float *b2,
                   const float *dy, float daux, int N, int C, int E, int H, int K, float factor, float aux_coef,
                   int act);

/* ---- rotary positions (kernels/rope.c) ---- */

/* Naive twin of rt_rope (modelc_rt.h): serial, double precision, one angle per element. */
void rt_rope_ref(float *out, const float *qkv, int B, int T, int t0, int C, int n_head, int n_kv_head, float theta,
                 int inverse);

/* ---- optimiser updates (kernels/optim.c) ---- */

/* AdamW (Loshchilov & Hutter; as torch.optim.AdamW): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * w -= lr * wd * w (decoupled); w -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps).
 * step >= 1. n floats. */
void rt_adamw(float *w, const float *g, float *m, float *v, int64_t n, float lr, float beta1, float beta2, float eps,
              float wd, int64_t step);
/* rt_adamw that also refreshes wh[i] = the new w[i] rounded to bf16 (as rt_round_weights with
 * RT_PREC_BF16) in the same pass; wh NULL: rt_adamw. */
void rt_adamw_bf16(float *w, float *wh, const float *g, float *m, float *v, int64_t n, float lr, float beta1,
                   float beta2, float eps, float wd, int64_t step);
/* SGD with momentum (as torch.optim.SGD): mom = momentum * mom + g (+ wd * w); w -= lr * mom. */
void rt_sgd(float *w, const float *g, float *mom, int64_t n, float lr, float momentum, float wd);
/* x[i] *= c for i < n, over the pool (clipping by global norm). */
void rt_scale(float *x, int64_t n, float c);
/* sum of g[i]^2 in double (for clipping by global norm). */
double rt_sum_squares(const float *g, int64_t n);
/* Working weights for mixed precision: out[i] = w[i] rounded to bf16 or fp16 (and back to f32,
 * which is what sgemm reads); a copy for fp32. n floats. */
void rt_round_weights(float *out, const float *w, int64_t n, RtPrecision p);
/* 1 when all n values are finite. */
int rt_all_finite(const float *g, int64_t n);

#endif
