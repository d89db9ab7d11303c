/* gemm.c: the GEMM layer's front (gemm.h): the choice of an implementation per dtype class, made
 * once from the CPU features and MODELC_GEMM, the dispatch, the OpenBLAS f32 backend and the plain-C
 * `_ref` twin. The other backends are onednn.c (oneDNN's matmul, cached primitives) and
 * avx512bf16.c (our vdpbf16ps kernel). */
#include "gemm.h"

#include <cblas.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const impl_names[RT_GEMM_NIMPL] = {"ref", "openblas", "onednn", "avx512bf16"};

const char *rt_gemm_impl_name(RtGemmImpl impl) {
  return impl >= 0 && impl < RT_GEMM_NIMPL ? impl_names[impl] : "?";
}

void rt_gemm_internal_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "modelc runtime: internal error: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  abort();
}

/* ---- the choice, once ---------------------------------------------------------------------- */

static struct {
  pthread_once_t once;
  int failed;
  char msg[256];
  const char *forced;      /* MODELC_GEMM's value when it chose, else NULL */
  RtGemmImpl f32, bf16;
} S = {PTHREAD_ONCE_INIT, 0, "", NULL, RT_GEMM_OPENBLAS, RT_GEMM_REF};

int rt_gemm_supports(RtGemmImpl impl, RtDType adt, RtDType bdt) {
  int f32 = adt == RT_DT_F32 && bdt == RT_DT_F32, bf16 = adt == RT_DT_BF16 && bdt == RT_DT_BF16;
  switch (impl) {
  case RT_GEMM_REF:
    return (adt == RT_DT_F32 || adt == RT_DT_BF16) && (bdt == RT_DT_F32 || bdt == RT_DT_BF16);
  case RT_GEMM_OPENBLAS:
    return f32;
  case RT_GEMM_ONEDNN:
    return rt_gemm_onednn_built() && (f32 || bf16);
  case RT_GEMM_AVX512BF16:
    return rt_gemm_avx512bf16_built() && rt_cpu()->avx512_bf16 && bf16;
  default:
    return 0;
  }
}

/* OpenBLAS picks its kernels from the CPU it recognises; Debian's 0.3.21 does not recognise some
 * newer CPUs (this Xeon with AMX among them) and falls back to kernels for pre-AVX cores
 * (Prescott's SSE3: a quarter or less of what the machine's AVX-512 gives). Those names, on a CPU
 * with AVX2 (so MODELC_CPU=portable never sees it), make oneDNN's f32 matmul the f32 default. */
int rt_gemm_openblas_outdated(void) {
  static const char *const old[] = {"Prescott", "Core2",   "Penryn",     "Dunnington", "Nehalem", "Atom",
                                    "Katmai",   "Coppermine", "Northwood", "Banias",  "Opteron", "Opteron_SSE3",
                                    "Barcelona", "Bobcat", "Generic"};
  const char *core = openblas_get_corename();
  if (!core || !rt_cpu()->avx2)
    return 0;
  for (size_t i = 0; i < sizeof old / sizeof *old; i++)
    if (strcasecmp(core, old[i]) == 0)
      return 1;
  return 0;
}

static void choose(void) {
  const RtCpu *cpu = rt_cpu();
  S.f32 = rt_gemm_onednn_built() && rt_gemm_openblas_outdated() ? RT_GEMM_ONEDNN : RT_GEMM_OPENBLAS;
  if (rt_gemm_onednn_built() && (cpu->amx_bf16 || cpu->avx512_bf16))
    S.bf16 = RT_GEMM_ONEDNN;
  else if (rt_gemm_supports(RT_GEMM_AVX512BF16, RT_DT_BF16, RT_DT_BF16))
    S.bf16 = RT_GEMM_AVX512BF16;
  else
    S.bf16 = RT_GEMM_REF;

  const char *env = getenv("MODELC_GEMM");
  if (!env || !*env)
    return;
  int impl = -1;
  for (int i = 0; i < RT_GEMM_NIMPL; i++)
    if (strcmp(env, impl_names[i]) == 0)
      impl = i;
  if (impl < 0) {
    snprintf(S.msg, sizeof S.msg, "MODELC_GEMM='%.60s' is not an implementation (openblas, onednn, avx512bf16, ref)",
             env);
    S.failed = 1;
    return;
  }
  int f32 = rt_gemm_supports((RtGemmImpl)impl, RT_DT_F32, RT_DT_F32);
  int bf16 = rt_gemm_supports((RtGemmImpl)impl, RT_DT_BF16, RT_DT_BF16);
  if (!f32 && !bf16) {
    snprintf(S.msg, sizeof S.msg, "MODELC_GEMM=%s: %s", env,
             impl == RT_GEMM_ONEDNN ? "this runtime was built without oneDNN (configure with -DMODELC_DNNL=ON and "
                                      "libdnnl-dev installed)"
             : !rt_gemm_avx512bf16_built() ? "this runtime was built without the AVX512-BF16 kernel (not x86-64)"
                                           : "this CPU has no AVX512-BF16 (or MODELC_CPU=portable turned it off)");
    S.failed = 1;
    return;
  }
  if (f32)
    S.f32 = (RtGemmImpl)impl;
  if (bf16)
    S.bf16 = (RtGemmImpl)impl;
  S.forced = env;
}

int rt_gemm_init(RtError *err) {
  pthread_once(&S.once, choose);
  return S.failed ? rt_fail(err, "%s", S.msg) : 0;
}

static void init_or_die(void) {
  if (rt_gemm_init(NULL))
    rt_gemm_internal_error("%s", S.msg);
}

RtGemmImpl rt_gemm_selected(RtDType dt) {
  init_or_die();
  return dt == RT_DT_BF16 ? S.bf16 : S.f32;
}

void rt_gemm_describe(char *buf, size_t n) {
  init_or_die();
  int k = snprintf(buf, n, "f32: %s; bf16: %s", impl_names[S.f32], impl_names[S.bf16]);
  if (k >= 0 && (size_t)k < n && (S.f32 == RT_GEMM_ONEDNN || S.bf16 == RT_GEMM_ONEDNN))
    k += snprintf(buf + k, n - (size_t)k, " (%s)", rt_gemm_onednn_isa());
  if (k >= 0 && (size_t)k < n && !S.forced && S.f32 == RT_GEMM_ONEDNN && rt_gemm_openblas_outdated())
    k += snprintf(buf + k, n - (size_t)k, " (OpenBLAS runs its %s kernels here)", openblas_get_corename());
  if (k >= 0 && (size_t)k < n && S.forced)
    k += snprintf(buf + k, n - (size_t)k, " (MODELC_GEMM=%s)", S.forced);
  if (k >= 0 && (size_t)k < n && rt_gemm_pack_weights())
    snprintf(buf + k, n - (size_t)k, " (weights pre-packed: MODELC_GEMM_PACK=1)");
}

void rt_gemm_constant(const void *p, size_t bytes) { rt_gemm_onednn_constant(p, bytes); }

int rt_gemm_pack_weights(void) {
  const char *e = getenv("MODELC_GEMM_PACK");
  if (!e || strcmp(e, "1") != 0)
    return 0;
  return rt_gemm_selected(RT_DT_F32) == RT_GEMM_ONEDNN || rt_gemm_selected(RT_DT_BF16) == RT_GEMM_ONEDNN;
}

/* ---- dispatch -------------------------------------------------------------------------------- */

static const char *dt_name(RtDType dt) { return dt == RT_DT_F32 ? "f32" : dt == RT_DT_BF16 ? "bf16" : rt_dtype_name(dt); }

void rt_gemm_with(RtGemmImpl impl, int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda,
                  RtDType bdt, const void *B, int ldb, float beta, float *C, int ldc) {
  if (!rt_gemm_supports(impl, adt, bdt))
    rt_gemm_internal_error("rt_gemm: %s does not compute %s x %s (M=%d N=%d K=%d)", rt_gemm_impl_name(impl),
                           dt_name(adt), dt_name(bdt), M, N, K);
  if (M <= 0 || N <= 0)
    return;
  if (K <= 0) { /* no products: C = beta C (beta 0 does not read C) */
    for (int m = 0; m < M; m++)
      for (int j = 0; j < N; j++)
        C[(size_t)m * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)m * ldc + j];
    return;
  }
  switch (impl) {
  case RT_GEMM_OPENBLAS:
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
                A, lda, B, ldb, beta, C, ldc);
    return;
  case RT_GEMM_ONEDNN:
    rt_gemm_onednn(transA, transB, M, N, K, adt, A, lda, bdt, B, ldb, beta, C, ldc);
    return;
  case RT_GEMM_AVX512BF16:
    rt_gemm_avx512bf16(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
    return;
  default:
    rt_gemm_ref(transA, transB, M, N, K, adt, A, lda, bdt, B, ldb, beta, C, ldc);
    return;
  }
}

void rt_gemm(int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda, RtDType bdt,
             const void *B, int ldb, float beta, float *C, int ldc) {
  if (adt != bdt || (adt != RT_DT_F32 && adt != RT_DT_BF16))
    rt_gemm_internal_error("rt_gemm: %s x %s is not a dtype class of the GEMM layer (f32 x f32, bf16 x bf16; "
                           "cast the f32 operand to bf16 first) (M=%d N=%d K=%d)",
                           dt_name(adt), dt_name(bdt), M, N, K);
  rt_gemm_with(rt_gemm_selected(adt), transA, transB, M, N, K, adt, A, lda, bdt, B, ldb, beta, C, ldc);
}

/* ---- the `_ref` twin ------------------------------------------------------------------------- */

static double elem(RtDType dt, const void *p, size_t i) {
  return dt == RT_DT_BF16 ? (double)rt_bf16_to_f32(((const uint16_t *)p)[i]) : (double)((const float *)p)[i];
}

void rt_gemm_ref(int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda, RtDType bdt,
                 const void *B, int ldb, float beta, float *C, int ldc) {
  for (int m = 0; m < M; m++)
    for (int j = 0; j < N; j++) {
      double s = 0;
      for (int k = 0; k < K; k++) {
        size_t ia = transA ? (size_t)k * lda + m : (size_t)m * lda + k;
        size_t ib = transB ? (size_t)j * ldb + k : (size_t)k * ldb + j;
        s += elem(adt, A, ia) * elem(bdt, B, ib);
      }
      float *c = &C[(size_t)m * ldc + j];
      *c = (float)(beta == 0.0f ? s : s + (double)beta * *c);
    }
}
