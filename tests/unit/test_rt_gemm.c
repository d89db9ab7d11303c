/* test_rt_gemm.c: the runtime's GEMM layer (runtime/gemm/).
 *
 * (1) Every implementation this build and CPU have (openblas, onednn, avx512bf16) for every dtype
 *     class it computes (f32 x f32, bf16 x bf16) against the `_ref` twin on awkward shapes: M, N, K
 *     of 1 and not multiples of 16, past the AVX512-BF16 kernel's blocks (K > 256, N > 512, M > 96),
 *     the four transposes (NT: y = x W^T, NN: dx = dy W, TN: dW = dy^T x, TT), leading dimensions
 *     equal to and larger than the width, beta 0 (C pre-filled with NaN: never read) and 1 and 0.5.
 *     The reference runs on the same inputs (bf16 inputs are the f32 ones rounded to bf16), in
 *     double; the bound per element is
 *         |C - ref| <= (K + 4) 2^-24 (sum_k |a_mk| |b_kn| + |beta c0|)
 *     (f32 accumulation of exact products: at most about one f32 rounding per product, the
 *     kernel's K blocks and the beta term; bf16 products are exact in f32).
 * (2) The choice: the rule of gemm.h from rt_cpu(), the build and MODELC_GEMM (CTest runs this
 *     program again with MODELC_CPU=portable, MODELC_GEMM=ref, MODELC_GEMM=onednn, and an
 *     impossible MODELC_GEMM that must fail at rt_gemm_init with a message); the describe line.
 * (3) A mixed f32 x bf16 call stops the program (SIGABRT, an internal error).
 * (4) bf16 through pool blocks fixed by the shape (as kernels/linear.c splits its GEMMs): the
 *     same bits with 1, 2, 3 and 4 threads, for every bf16 implementation.
 *     oneDNN once more with every B declared constant (rt_gemm_constant): read from a copy packed
 *     once, with the same bound, the second call equal to the first, the copy freed after.
 * (5) oneDNN: no thread appears (/proc/self/task counted before and after GEMMs run over a
 *     4-thread pool) and one cached primitive per new shape, none for a repeated one. */
#include "rt_test_util.h"

#include "../../runtime/gemm/gemm.h"

#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"

/* ---- operands ---------------------------------------------------------------------------- */

typedef struct Mat {
  RtDType dt;
  void *p;
  float *f; /* the values as f32 (after bf16 rounding when dt is bf16) */
} Mat;

/* rows x cols with row stride ld, random in [-1,1); the padding is garbage (never read) */
static Mat make(RtDType dt, int rows, int ld, uint64_t seed) {
  size_t n = (size_t)rows * ld;
  Mat m = {dt, NULL, falloc(n)};
  fill_uniform(m.f, n, -1, 1, seed);
  if (dt == RT_DT_BF16) {
    m.p = malloc((n ? n : 1) * sizeof(uint16_t));
    rt_cast_f32_bf16(m.p, m.f, n);
    rt_cast_bf16_f32(m.f, m.p, n);
  } else {
    m.p = m.f;
  }
  return m;
}

static void drop(Mat *m) {
  if (m->p != m->f)
    free(m->p);
  free(m->f);
}

static RtDType cls_dt(int bf16) { return bf16 ? RT_DT_BF16 : RT_DT_F32; }

/* one product by impl against rt_gemm_ref, with the bound of (1) */
static void check_one(RtGemmImpl impl, int bf16, int ta, int tb, int M, int N, int K, int pad, float beta, int packed) {
  RtDType dt = cls_dt(bf16);
  int arows = ta ? K : M, acols = ta ? M : K, brows = tb ? N : K, bcols = tb ? K : N;
  int lda = acols + pad, ldb = bcols + pad, ldc = N + pad;
  uint64_t seed = (uint64_t)(M * 131 + N * 17 + K) * 8 + (uint64_t)(ta * 2 + tb);
  Mat A = make(dt, arows, lda, seed), B = make(dt, brows, ldb, seed + 1);
  size_t nc = (size_t)M * ldc;
  float *c0 = falloc(nc), *C = falloc(nc), *R = falloc(nc);
  fill_uniform(c0, nc, -1, 1, seed + 2);
  if (beta == 0.0f)
    for (size_t i = 0; i < nc; i++)
      c0[i] = NAN;
  memcpy(C, c0, nc * sizeof(float));
  memcpy(R, c0, nc * sizeof(float));
  if (packed) { /* B declared constant (oneDNN reads a pre-packed copy): twice, the cached copy equal */
    size_t bbytes = (size_t)brows * ldb * (bf16 ? 2 : 4);
    float *C1 = falloc(nc);
    memcpy(C1, c0, nc * sizeof(float));
    rt_gemm_constant(B.p, bbytes);
    rt_gemm_with(impl, ta, tb, M, N, K, dt, A.p, lda, dt, B.p, ldb, beta, C1, ldc);
    if (impl == RT_GEMM_ONEDNN)
      ck_assert_msg(rt_gemm_onednn_packs() == 1, "onednn: %d packs for one constant B", rt_gemm_onednn_packs());
    rt_gemm_with(impl, ta, tb, M, N, K, dt, A.p, lda, dt, B.p, ldb, beta, C, ldc);
    ck_assert_msg(memcmp(C, C1, nc * sizeof(float)) == 0, "packed B: the second call differs from the first");
    if (impl == RT_GEMM_ONEDNN)
      ck_assert_int_eq(rt_gemm_onednn_packs(), 1); /* the copy was reused */
    rt_gemm_constant(NULL, 0);
    ck_assert_int_eq(rt_gemm_onednn_packs(), 0);
    free(C1);
  } else
    rt_gemm_with(impl, ta, tb, M, N, K, dt, A.p, lda, dt, B.p, ldb, beta, C, ldc);
  rt_gemm_ref(ta, tb, M, N, K, dt, A.p, lda, dt, B.p, ldb, beta, R, ldc);
  for (int m = 0; m < M; m++) {
    for (int j = 0; j < N; j++) {
      double s = beta == 0.0f ? 0 : fabs((double)beta * c0[(size_t)m * ldc + j]);
      for (int k = 0; k < K; k++)
        s += fabs((double)A.f[ta ? (size_t)k * lda + m : (size_t)m * lda + k]) *
             fabs((double)B.f[tb ? (size_t)j * ldb + k : (size_t)k * ldb + j]);
      double bound = (K + 4) * ldexp(1.0, -24) * s + 1e-30;
      double got = C[(size_t)m * ldc + j], want = R[(size_t)m * ldc + j];
      ck_assert_msg(fabs(got - want) <= bound,
                    "%s %s trans=%d%d M=%d N=%d K=%d pad=%d beta=%g: C[%d][%d] = %.9g, ref %.9g (bound %.3g)",
                    rt_gemm_impl_name(impl), bf16 ? "bf16" : "f32", ta, tb, M, N, K, pad, beta, m, j, got, want, bound);
    }
    for (int j = N; j < ldc; j++) /* the padding of C is untouched */
      ck_assert_msg(memcmp(&C[(size_t)m * ldc + j], &c0[(size_t)m * ldc + j], sizeof(float)) == 0,
                    "%s: C's padding written (M=%d N=%d K=%d)", rt_gemm_impl_name(impl), M, N, K);
  }
  free(c0), free(C), free(R);
  drop(&A), drop(&B);
}

static const int shapes[][3] = {{1, 1, 1},    {1, 37, 19},  {17, 1, 33},   {5, 7, 3},    {33, 65, 129},
                                {70, 45, 300}, {128, 96, 257}, {97, 530, 20}, {16, 64, 512}, {7, 600, 513}};

static void check_impl(RtGemmImpl impl, int bf16, int packed) {
  static const float betas[] = {0.0f, 1.0f, 0.5f};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int t = 0; t < 4; t++)
      for (int pad = 0; pad <= 5; pad += 5)
        check_one(impl, bf16, t >> 1, t & 1, shapes[s][0], shapes[s][1], shapes[s][2], pad, betas[(s + t + pad) % 3],
                  packed);
}

/* (1) every implementation against the twin (the whole sweep once: in the runs under another
 * environment, which check the choice, only the chosen implementations on one shape) */
START_TEST(impls_match_ref) {
  int tested = 0;
  if (getenv("MODELC_GEMM") || getenv("MODELC_CPU")) {
    if (rt_gemm_init(NULL) == 0)
      for (int bf16 = 0; bf16 <= 1; bf16++)
        check_one(rt_gemm_selected(cls_dt(bf16)), bf16, 0, 1, 33, 65, 129, 3, 1.0f, 1);
    return;
  }
  for (int impl = RT_GEMM_OPENBLAS; impl < RT_GEMM_NIMPL; impl++)
    for (int bf16 = 0; bf16 <= 1; bf16++)
      if (rt_gemm_supports((RtGemmImpl)impl, cls_dt(bf16), cls_dt(bf16))) {
        fprintf(stderr, "test_rt_gemm: %s %s against the reference\n", rt_gemm_impl_name((RtGemmImpl)impl),
                bf16 ? "bf16" : "f32");
        check_impl((RtGemmImpl)impl, bf16, 0);
        if (impl == RT_GEMM_ONEDNN) /* and with B declared constant: read pre-packed */
          check_impl((RtGemmImpl)impl, bf16, 1);
        tested++;
      }
  ck_assert_int_ge(tested, 1); /* openblas f32 at least */
}
END_TEST

/* the twin itself on a case worked by hand: op(A) = [[1,2],[3,4]], op(B) = [[5,6],[7,8]] */
START_TEST(ref_by_hand) {
  float A[4] = {1, 2, 3, 4}, At[4] = {1, 3, 2, 4}, B[4] = {5, 6, 7, 8}, Bt[4] = {5, 7, 6, 8};
  float want[4] = {19, 22, 43, 50};
  for (int t = 0; t < 4; t++) {
    float C[4] = {1, 1, 1, 1};
    rt_gemm_ref(t >> 1, t & 1, 2, 2, 2, RT_DT_F32, t >> 1 ? At : A, 2, RT_DT_F32, t & 1 ? Bt : B, 2, 2.0f, C, 2);
    for (int i = 0; i < 4; i++)
      ck_assert_float_eq(C[i], want[i] + 2.0f);
  }
  uint16_t Ah[4], Bh[4];
  rt_cast_f32_bf16(Ah, A, 4);
  rt_cast_f32_bf16(Bh, B, 4);
  float C[4] = {NAN, NAN, NAN, NAN};
  rt_gemm_ref(0, 0, 2, 2, 2, RT_DT_BF16, Ah, 2, RT_DT_BF16, Bh, 2, 0.0f, C, 2);
  for (int i = 0; i < 4; i++)
    ck_assert_float_eq(C[i], want[i]);
  /* K = 0 through the dispatcher: C = beta C */
  float D[2] = {3, NAN};
  rt_gemm_with(RT_GEMM_OPENBLAS, 0, 1, 1, 1, 0, RT_DT_F32, A, 1, RT_DT_F32, B, 1, 0.5f, D, 1);
  ck_assert_float_eq(D[0], 1.5f);
}
END_TEST

/* (2) the choice follows gemm.h's rule from the CPU features, the build and MODELC_GEMM */
START_TEST(selection_rule) {
  const RtCpu *cpu = rt_cpu();
  const char *env = getenv("MODELC_GEMM");
  int dnnl = rt_gemm_onednn_built();
  RtGemmImpl f32 = dnnl && rt_gemm_openblas_outdated() ? RT_GEMM_ONEDNN : RT_GEMM_OPENBLAS;
  RtGemmImpl bf16 = dnnl && (cpu->amx_bf16 || cpu->avx512_bf16) ? RT_GEMM_ONEDNN
                    : cpu->avx512_bf16 && rt_gemm_avx512bf16_built() ? RT_GEMM_AVX512BF16
                                                                      : RT_GEMM_REF;
  const char *cpu_env = getenv("MODELC_CPU");
  if (cpu_env && strcmp(cpu_env, "portable") == 0)
  { /* every feature off: the plain-C bf16 path, OpenBLAS for f32 */
    ck_assert_int_eq(bf16, RT_GEMM_REF);
    ck_assert_int_eq(f32, RT_GEMM_OPENBLAS);
  }
  int fail = 0;
  if (env && *env) {
    if (!strcmp(env, "ref"))
      f32 = bf16 = RT_GEMM_REF;
    else if (!strcmp(env, "openblas"))
      f32 = RT_GEMM_OPENBLAS;
    else if (!strcmp(env, "onednn") && dnnl)
      f32 = bf16 = RT_GEMM_ONEDNN;
    else if (!strcmp(env, "avx512bf16") && cpu->avx512_bf16 && rt_gemm_avx512bf16_built())
      bf16 = RT_GEMM_AVX512BF16;
    else
      fail = 1;
  }
  RtError err;
  err.msg[0] = 0;
  int rc = rt_gemm_init(&err);
  ck_assert_int_eq(rc, fail ? -1 : 0);
  ck_assert_int_eq(rt_gemm_init(NULL), rc); /* once: the same answer again */
  if (fail) {
    fprintf(stderr, "test_rt_gemm: MODELC_GEMM=%s refused: %s\n", env, err.msg);
    ck_assert_msg(strstr(err.msg, "MODELC_GEMM") && strstr(err.msg, env), "message '%s'", err.msg);
    return;
  }
  ck_assert_int_eq(rt_gemm_selected(RT_DT_F32), f32);
  ck_assert_int_eq(rt_gemm_selected(RT_DT_BF16), bf16);
  char line[256], want[128];
  rt_gemm_describe(line, sizeof line);
  fprintf(stderr, "test_rt_gemm: gemm: %s\n", line);
  snprintf(want, sizeof want, "f32: %s; bf16: %s", rt_gemm_impl_name(f32), rt_gemm_impl_name(bf16));
  ck_assert_msg(strncmp(line, want, strlen(want)) == 0, "'%s' does not start with '%s'", line, want);
  if (f32 == RT_GEMM_ONEDNN || bf16 == RT_GEMM_ONEDNN)
    ck_assert_ptr_nonnull(strstr(line, rt_gemm_onednn_isa()));
  if (env && *env)
    ck_assert_ptr_nonnull(strstr(line, "MODELC_GEMM="));
}
END_TEST

/* (3) f32 x bf16 is not a class of the layer: an internal error (abort) */
START_TEST(mixed_dtypes_abort) {
  float a = 1, c = 0;
  uint16_t b = 0x3f80;
  rt_gemm(0, 0, 1, 1, 1, RT_DT_F32, &a, 1, RT_DT_BF16, &b, 1, 0.0f, &c, 1);
}
END_TEST

/* ---- (4) bf16 over the pool in blocks fixed by the shape ------------------------------------ */

typedef struct BlockCtx {
  RtGemmImpl impl;
  int ta, tb, M, N, K;
  const uint16_t *A, *B;
  float *C;
} BlockCtx;

/* rows [lo,hi) of C = op(A) op(B): A's rows (or columns, transposed) lo..hi */
static void block_rows(void *p, int lo, int hi) {
  const BlockCtx *c = p;
  const uint16_t *a = c->ta ? c->A + lo : c->A + (size_t)lo * c->K;
  rt_gemm_with(c->impl, c->ta, c->tb, hi - lo, c->N, c->K, RT_DT_BF16, a, c->ta ? c->M : c->K, RT_DT_BF16, c->B,
               c->tb ? c->K : c->N, 0.0f, c->C + (size_t)lo * c->N, c->N);
}

static void run_blocks(RtGemmImpl impl, int ta, int tb, int M, int N, int K, const uint16_t *A, const uint16_t *B,
                       float *C) {
  BlockCtx c = {impl, ta, tb, M, N, K, A, B, C};
  rt_parallel_blocks(M, 48, block_rows, &c);
}

START_TEST(bf16_thread_invariance) {
  const int M = 300, N = 200, K = 130;
  Mat A = make(RT_DT_BF16, M, K, 7), At = make(RT_DT_BF16, K, M, 8), B = make(RT_DT_BF16, N, K, 9);
  float *C1 = falloc((size_t)M * N), *C = falloc((size_t)M * N);
  int tested = 0;
  for (int impl = RT_GEMM_REF; impl < RT_GEMM_NIMPL; impl++) {
    if (!rt_gemm_supports((RtGemmImpl)impl, RT_DT_BF16, RT_DT_BF16))
      continue;
    for (int pk = 0; pk <= (impl == RT_GEMM_ONEDNN); pk++) /* pk: B declared constant, packed by the pool */
      for (int ta = 0; ta <= 1; ta++)
        for (int t = 1; t <= 4; t++) {
          rt_set_threads(t);
          ck_assert_int_eq(rt_threads(), t);
          if (pk)
            rt_gemm_constant(B.p, (size_t)N * K * sizeof(uint16_t)); /* fresh: the packs made by t threads */
          float *out = t == 1 ? C1 : C;
          for (size_t i = 0; i < (size_t)M * N; i++)
            out[i] = NAN;
          run_blocks((RtGemmImpl)impl, ta, 1, M, N, K, ta ? At.p : A.p, B.p, out);
          if (t > 1)
            ck_assert_msg(memcmp(C1, C, (size_t)M * N * sizeof(float)) == 0,
                          "%s bf16 trans=%d1%s: %d threads differ from 1", rt_gemm_impl_name((RtGemmImpl)impl), ta,
                          pk ? " packed" : "", t);
          if (pk)
            rt_gemm_constant(NULL, 0);
        }
    tested++;
  }
  ck_assert_int_ge(tested, 1); /* ref at least */
  free(C1), free(C);
  drop(&A), drop(&At), drop(&B);
}
END_TEST

/* ---- (5) oneDNN starts no thread and caches one primitive per shape ------------------------- */

static int count_tasks(void) {
  DIR *d = opendir("/proc/self/task");
  ck_assert_ptr_nonnull(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

START_TEST(onednn_threads_and_cache) {
  if (!rt_gemm_onednn_built()) {
    fprintf(stderr, "test_rt_gemm: built without oneDNN: nothing to check\n");
    return;
  }
  rt_set_threads(4);
  ck_assert_int_eq(rt_threads(), 4);
  int before = count_tasks();
  const int M = 300, N = 200, K = 130;
  Mat A = make(RT_DT_BF16, M, K, 10), B = make(RT_DT_BF16, N, K, 11);
  float *C = falloc((size_t)M * N), *C1 = falloc((size_t)M * N);
  int cached0 = rt_gemm_onednn_cached();
  run_blocks(RT_GEMM_ONEDNN, 0, 1, M, N, K, A.p, B.p, C);
  /* blocks of 48 rows: 6 full ones and a last of 12, so two shapes */
  ck_assert_int_eq(rt_gemm_onednn_cached(), cached0 + 2);
  run_blocks(RT_GEMM_ONEDNN, 0, 1, M, N, K, A.p, B.p, C1);
  ck_assert_int_eq(rt_gemm_onednn_cached(), cached0 + 2);
  ck_assert(memcmp(C, C1, (size_t)M * N * sizeof(float)) == 0);
  /* f32 through oneDNN too, over the pool */
  Mat Af = make(RT_DT_F32, M, K, 12), Bf = make(RT_DT_F32, N, K, 13);
  for (int lo = 0; lo < M; lo += 100)
    rt_gemm_with(RT_GEMM_ONEDNN, 0, 1, 100, N, K, RT_DT_F32, Af.f + (size_t)lo * K, K, RT_DT_F32, Bf.f, K, 0.0f,
                 C + (size_t)lo * N, N);
  ck_assert_int_eq(rt_gemm_onednn_cached(), cached0 + 3);
  int after = count_tasks();
  fprintf(stderr, "test_rt_gemm: %d threads before oneDNN ran, %d after (isa %s)\n", before, after,
          rt_gemm_onednn_isa());
  ck_assert_int_eq(after, before);
  free(C), free(C1);
  drop(&A), drop(&B), drop(&Af), drop(&Bf);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_gemm");
  TCase *tc = tcase_create("gemm");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, ref_by_hand);
  tcase_add_test(tc, impls_match_ref);
  tcase_add_test(tc, selection_rule);
  tcase_add_test_raise_signal(tc, mixed_dtypes_abort, SIGABRT);
  tcase_add_test(tc, bf16_thread_invariance);
  tcase_add_test(tc, onednn_threads_and_cache);
  suite_add_tcase(s, tc);
  return check_run(s);
}
