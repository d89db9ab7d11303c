/* test_rt_threads.c: the runtime's results do not depend on the number of threads.
 *
 * (1) The BLAS calls of the GEMM kernels (rt_linear on its row and column paths, rt_matmul_nn,
 *     rt_linear_dw) are the same calls, with the same sizes and operands, for 1, 2, 3 and 4 pool
 *     threads: this program defines cblas_sgemm and cblas_sgemv itself (the executable's
 *     definitions take the place of OpenBLAS's for the runtime library linked into it), records
 *     every call and forwards it to OpenBLAS. Equal calls mean equal bits whatever OpenBLAS's own
 *     blocking does inside one call, on any CPU its dispatch picks. The kernels reach OpenBLAS
 *     through the GEMM layer (runtime/gemm/): an f32 rt_gemm is exactly one cblas_sgemm with the
 *     caller's transposes, sizes, leading dimensions and beta (gemm_layer_is_one_sgemm); the
 *     layer's bf16 paths and oneDNN's threads are tests/unit/test_rt_gemm.c's.
 * (2) The outputs of every threaded kernel with a reduction or a library call (the GEMMs, the
 *     attention forward, decode and backward, the norms and their gradients, cross-entropy, the
 *     embedding gradient, the global gradient norm) are bit-identical for 1, 2, 3 and 4 threads.
 * End to end (trained weights, checkpoints resumed with another thread count) is tests/cli/threads.sh. */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "rt_test_util.h"

#include "../../runtime/gemm/gemm.h"

#include <cblas.h>
#include <check.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "check_run.h"

/* ---- the recording BLAS -------------------------------------------------------------------- */

typedef struct Call {
  int kind; /* 0 sgemm, 1 sgemv */
  int ta, tb, M, N, K, lda, ldb, ldc;
  const float *A, *B;
  float *C;
  float alpha, beta;
} Call;

enum { MAX_CALLS = 4096 };
static Call calls[MAX_CALLS];
static int ncalls, overflow;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void record(const Call *c) {
  pthread_mutex_lock(&mu);
  if (ncalls < MAX_CALLS)
    calls[ncalls++] = *c;
  else
    overflow = 1;
  pthread_mutex_unlock(&mu);
}

typedef void (*SgemmFn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE,
                        const blasint, const blasint, const blasint, const float, const float *, const blasint,
                        const float *, const blasint, const float, float *, const blasint);
typedef void (*SgemvFn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const blasint, const blasint,
                        const float, const float *, const blasint, const float *, const blasint, const float,
                        float *, const blasint);

void cblas_sgemm(const enum CBLAS_ORDER o, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A,
                 const blasint lda, const float *B, const blasint ldb, const float beta, float *C,
                 const blasint ldc) {
  static SgemmFn real;
  if (!real)
    real = (SgemmFn)dlsym(RTLD_NEXT, "cblas_sgemm");
  ck_assert_ptr_nonnull(real);
  record(&(Call){0, (int)ta, (int)tb, (int)M, (int)N, (int)K, (int)lda, (int)ldb, (int)ldc, A, B, C, alpha, beta});
  real(o, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cblas_sgemv(const enum CBLAS_ORDER o, const enum CBLAS_TRANSPOSE t, const blasint M, const blasint N,
                 const float alpha, const float *A, const blasint lda, const float *x, const blasint incx,
                 const float beta, float *y, const blasint incy) {
  static SgemvFn real;
  if (!real)
    real = (SgemvFn)dlsym(RTLD_NEXT, "cblas_sgemv");
  ck_assert_ptr_nonnull(real);
  record(&(Call){1, (int)t, 0, (int)M, (int)N, 0, (int)lda, (int)incx, (int)incy, A, x, y, alpha, beta});
  real(o, t, M, N, alpha, A, lda, x, incx, beta, y, incy);
}

static int cmp_call(const void *a, const void *b) {
  const Call *x = a, *y = b;
  /* by output address, then by everything else (padding-free: compare field by field) */
  if (x->C != y->C) return (uintptr_t)x->C < (uintptr_t)y->C ? -1 : 1;
  if (x->A != y->A) return (uintptr_t)x->A < (uintptr_t)y->A ? -1 : 1;
  if (x->B != y->B) return (uintptr_t)x->B < (uintptr_t)y->B ? -1 : 1;
  int u[] = {x->kind, x->ta, x->tb, x->M, x->N, x->K, x->lda, x->ldb, x->ldc};
  int v[] = {y->kind, y->ta, y->tb, y->M, y->N, y->K, y->lda, y->ldb, y->ldc};
  for (int i = 0; i < 9; i++)
    if (u[i] != v[i]) return u[i] < v[i] ? -1 : 1;
  if (x->alpha != y->alpha) return x->alpha < y->alpha ? -1 : 1;
  if (x->beta != y->beta) return x->beta < y->beta ? -1 : 1;
  return 0;
}

/* ---- (1) the GEMM kernels' calls ----------------------------------------------------------- */

typedef struct Bufs {
  float *x, *W, *bias, *y, *dy, *dx, *dW;
} Bufs;

/* one shape on every path: rows (M >= 32), columns (M == 1 sgemv, small M sgemm), both backward */
static void run_gemms(const Bufs *b, int M, int N, int K) {
  rt_linear(b->y, b->x, b->W, b->bias, M, N, K, NULL, NULL);
  rt_linear(b->y + (size_t)M * N, b->x, b->W, b->bias, 1, N, K, NULL, NULL);
  rt_linear(b->y + (size_t)(M + 1) * N, b->x, b->W, NULL, 7, N, K, NULL, NULL);
  rt_matmul_nn(b->dx, b->dy, b->W, M, N, K);
  rt_linear_dw(b->dW, b->dy, b->x, M, N, K);
}

static void check_calls(int M, int N, int K) {
  Bufs b = {falloc((size_t)M * K), falloc((size_t)N * K), falloc(N), falloc((size_t)(M + 8) * N),
            falloc((size_t)M * N), falloc((size_t)M * K), falloc((size_t)N * K)};
  fill_uniform(b.x, (size_t)M * K, -1, 1, 1);
  fill_uniform(b.W, (size_t)N * K, -1, 1, 2);
  fill_uniform(b.bias, N, -1, 1, 3);
  fill_uniform(b.dy, (size_t)M * N, -1, 1, 4);
  Call *first = NULL;
  int nfirst = 0;
  float *y1 = falloc((size_t)(M + 8) * N), *dx1 = falloc((size_t)M * K), *dW1 = falloc((size_t)N * K);
  for (int t = 1; t <= 4; t++) {
    rt_set_threads(t);
    ck_assert_int_eq(rt_threads(), t);
    ncalls = overflow = 0;
    run_gemms(&b, M, N, K);
    ck_assert(!overflow);
    qsort(calls, (size_t)ncalls, sizeof(Call), cmp_call);
    if (t == 1) {
      ck_assert_int_gt(ncalls, 5); /* the shapes are large enough to be split into blocks */
      first = malloc((size_t)ncalls * sizeof(Call));
      memcpy(first, calls, (size_t)ncalls * sizeof(Call));
      nfirst = ncalls;
      memcpy(y1, b.y, (size_t)(M + 8) * N * sizeof(float));
      memcpy(dx1, b.dx, (size_t)M * K * sizeof(float));
      memcpy(dW1, b.dW, (size_t)N * K * sizeof(float));
      continue;
    }
    ck_assert_msg(ncalls == nfirst, "M=%d N=%d K=%d: %d BLAS calls with %d threads, %d with 1", M, N, K, ncalls, t,
                  nfirst);
    for (int i = 0; i < ncalls; i++)
      ck_assert_msg(cmp_call(&calls[i], &first[i]) == 0,
                    "M=%d N=%d K=%d, %d threads: BLAS call %d differs (M=%d N=%d K=%d vs M=%d N=%d K=%d with 1)", M, N,
                    K, t, i, calls[i].M, calls[i].N, calls[i].K, first[i].M, first[i].N, first[i].K);
    ck_assert(memcmp(y1, b.y, (size_t)(M + 8) * N * sizeof(float)) == 0);
    ck_assert(memcmp(dx1, b.dx, (size_t)M * K * sizeof(float)) == 0);
    ck_assert(memcmp(dW1, b.dW, (size_t)N * K * sizeof(float)) == 0);
  }
  free(first), free(y1), free(dx1), free(dW1);
  free(b.x), free(b.W), free(b.bias), free(b.y), free(b.dy), free(b.dx), free(b.dW);
}

START_TEST(gemm_calls_fixed_by_shape) {
  if (rt_gemm_selected(RT_DT_F32) != RT_GEMM_OPENBLAS)
    return; /* f32 runs on oneDNN here: tests/CMakeLists.txt runs this once more with MODELC_GEMM=openblas */
  check_calls(300, 200, 70);   /* rows in blocks of 48, 7 blocks: uneven over 3 and 4 threads */
  check_calls(1024, 96, 384);  /* blocks of 128 rows; columns in blocks of 48 */
  check_calls(45, 1000, 33);   /* few rows: blocks of 16; many narrow column blocks */
}
END_TEST

/* ---- (2) every threaded kernel's bits -------------------------------------------------------- */

enum { R = 530, C = 72, V = 61, B = 3, T = 97, NH = 4, TMAX = 128 };

typedef struct Outs {
  float attn[B * T * C], dec[B * 2 * C], dqkv[B * T * 3 * C];
  float ln[R * C], rms[R * C], ndx[R * C], ndg[C];
  float ce, ceg[R * V], edw[V * C];
  double sumsq;
} Outs;

static void run_kernels(Outs *o, const float *qkv, const float *ady, const float *x, const float *g,
                        const float *dy, const float *logits, const int32_t *ids) {
  float *s = falloc(rt_attention_scratch_floats(T, C, NH));
  rt_attention(o->attn, qkv, B, T, C, NH, 1, s);
  free(s);
  /* decode: fill a cache with the first T tokens, then two more tokens at t0 = T */
  float *kc = falloc((size_t)B * TMAX * C), *vc = falloc((size_t)B * TMAX * C);
  float *sk = falloc(rt_attention_kv_scratch_floats(TMAX, C, NH));
  float *pre = falloc((size_t)B * T * C);
  rt_attention_kv(pre, qkv, kc, vc, B, T, 0, TMAX, C, NH, 1, sk);
  float step[B * 2 * 3 * C];
  for (int i = 0; i < B * 2 * 3 * C; i++) step[i] = qkv[i] * 0.5f;
  rt_attention_kv(o->dec, step, kc, vc, B, 2, T, TMAX, C, NH, 1, sk);
  free(kc), free(vc), free(sk), free(pre);
  float *sd = falloc(rt_attention_dx_scratch_floats(T, C, NH));
  rt_attention_dx(o->dqkv, qkv, ady, B, T, C, NH, 1, sd);
  free(sd);
  rt_layernorm(o->ln, NULL, NULL, x, g, g, R, C, 1e-5f);
  rt_rmsnorm(o->rms, NULL, x, g, R, C, 1e-5f);
  rt_norm_dx(o->ndx, x, g, dy, R, C, 1e-5f, 0);
  rt_norm_dg(o->ndg, x, dy, R, C, 1e-5f, 0);
  o->ce = rt_cross_entropy(logits, ids, R, V);
  rt_cross_entropy_grad(o->ceg, logits, ids, R, V, 1.0f);
  rt_embedding_dw(o->edw, ids, dy, R, V, C);
  o->sumsq = rt_sum_squares(dy, (int64_t)R * C);
}

START_TEST(kernels_same_bits) {
  float *qkv = falloc((size_t)B * T * 3 * C), *ady = falloc((size_t)B * T * C), *x = falloc((size_t)R * C),
        *g = falloc(C), *dy = falloc((size_t)R * C), *logits = falloc((size_t)R * V);
  int32_t *ids = malloc(R * sizeof(int32_t));
  fill_uniform(qkv, (size_t)B * T * 3 * C, -2, 2, 11);
  fill_uniform(ady, (size_t)B * T * C, -1, 1, 12);
  fill_uniform(x, (size_t)R * C, -1, 2, 13);
  fill_uniform(g, C, 0.5f, 1.5f, 14);
  fill_uniform(dy, (size_t)R * C, -1, 1, 15);
  fill_uniform(logits, (size_t)R * V, -3, 3, 16);
  for (int i = 0; i < R; i++) ids[i] = (int32_t)((i * 7919u) % V);
  Outs *o[4];
  for (int t = 1; t <= 4; t++) {
    rt_set_threads(t);
    o[t - 1] = calloc(1, sizeof(Outs));
    run_kernels(o[t - 1], qkv, ady, x, g, dy, logits, ids);
    if (t > 1)
      ck_assert_msg(memcmp(o[0], o[t - 1], sizeof(Outs)) == 0, "%d threads: outputs differ from 1 thread", t);
  }
  for (int t = 0; t < 4; t++) free(o[t]);
  free(qkv), free(ady), free(x), free(g), free(dy), free(logits), free(ids);
}
END_TEST

/* the layer between the kernels and OpenBLAS adds nothing: one call, the caller's arguments */
START_TEST(gemm_layer_is_one_sgemm) {
  if (rt_gemm_selected(RT_DT_F32) != RT_GEMM_OPENBLAS)
    return; /* MODELC_GEMM moved f32 elsewhere: nothing of OpenBLAS's to record */
  float *a = falloc(40 * 50), *b = falloc(40 * 50), *c = falloc(40 * 50);
  fill_uniform(a, 40 * 50, -1, 1, 21);
  fill_uniform(b, 40 * 50, -1, 1, 22);
  fill_uniform(c, 40 * 50, -1, 1, 23);
  for (int t = 0; t < 4; t++) {
    ncalls = overflow = 0;
    float beta = t == 3 ? 1.0f : 0.0f;
    rt_gemm(t >> 1, t & 1, 9, 11, 13, RT_DT_F32, a, 40, RT_DT_F32, b, 41, beta, c, 42);
    ck_assert_int_eq(ncalls, 1);
    Call want = {0, t >> 1 ? CblasTrans : CblasNoTrans, t & 1 ? CblasTrans : CblasNoTrans, 9, 11, 13, 40, 41, 42,
                 a, b, c, 1.0f, beta};
    ck_assert_msg(cmp_call(&calls[0], &want) == 0, "trans=%d%d: the layer's sgemm call differs from its arguments",
                  t >> 1, t & 1);
  }
  free(a), free(b), free(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_threads");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, gemm_calls_fixed_by_shape);
  tcase_add_test(tc, kernels_same_bits);
  tcase_add_test(tc, gemm_layer_is_one_sgemm);
  suite_add_tcase(s, tc);
  return check_run(s);
}
