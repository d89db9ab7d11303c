/* onednn.c: the oneDNN backend of the GEMM layer (gemm.h): oneDNN's matmul primitive for f32 x f32
 * and bf16 x bf16 with f32 output, on whatever ISA oneDNN dispatches to (AMX tiles on CPUs with
 * AMX-BF16, vdpbf16ps with AVX512-BF16, ...). Compiled to stubs when the runtime is built without
 * oneDNN (CMake's MODELC_DNNL; MODELC_HAVE_DNNL).
 *
 * Primitives: one per (transposes, M, N, K, dtypes, leading dimensions, beta), created on the first
 * call of that key and kept in a bounded cache (RT_DNNL_CACHE entries, never evicted) that threads
 * read without a lock: entries are appended under a mutex and published by an atomic count, and an
 * entry never changes once published. So after the first call of a shape nothing is created on the
 * hot path but, in each thread, the entry's four memory objects (once per thread and entry: oneDNN
 * memory objects carry a data handle, so threads cannot share them). A program has few shapes: each
 * GEMM call site splits its output into blocks fixed by the shapes (kernels/linear.c), so it makes
 * at most two block shapes (the full block and the last); a GPT forward and backward have a few tens.
 * When the cache is full, a call creates a primitive, runs it and destroys it (slow, correct).
 *
 * Memory: plain row-major descriptors with strides from the leading dimensions for A, B and C (a
 * transposed operand is the same memory with swapped strides). Weights are not pre-packed into a
 * blocked layout (the layer takes any B on every call; packing belongs to a weight-aware caller).
 * beta != 0 is a sum post-op with scale beta. The scratchpad is user-managed: one buffer per
 * thread, grown to the largest a primitive asks for (an allocation only when a thread first meets
 * a bigger shape), so executing one primitive from several threads at once is safe.
 *
 * Threads: oneDNN is built with OpenMP (libgomp). Each thread calls omp_set_num_threads(1) before
 * its first primitive creation or execution, so oneDNN runs every call in the calling thread and
 * never starts OpenMP threads; the pool runs the blocks (tests/unit/test_rt_gemm.c counts
 * /proc/self/task). One stream per thread. */
#include "gemm.h"

#ifdef MODELC_HAVE_DNNL

#include <dnnl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libgomp, oneDNN's OpenMP runtime (declared here: clang's include path has no omp.h). */
extern void omp_set_num_threads(int n);

#define RT_DNNL_CACHE 1024

typedef struct Key {
  int ta, tb, M, N, K, adt, bdt, lda, ldb, ldc;
  uint32_t beta; /* beta's bits */
} Key;

typedef struct Entry {
  Key key;
  dnnl_primitive_t prim;
  dnnl_memory_desc_t md[4]; /* src (A), weights (B), dst (C), scratchpad */
  size_t scratch;           /* scratchpad bytes */
} Entry;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* creates the engine and entries */
static struct {
  dnnl_engine_t eng;
  atomic_int n; /* published entries */
  Entry e[RT_DNNL_CACHE];
} D;

static _Thread_local struct {
  int ready;
  dnnl_stream_t stream;
  dnnl_memory_t mem[RT_DNNL_CACHE][4];
  void *scratch;
  size_t scratch_bytes;
} T;

static void check(dnnl_status_t s, const char *what, const Key *k) {
  if (s != dnnl_success)
    rt_gemm_internal_error("oneDNN: %s failed (status %d) for the GEMM M=%d N=%d K=%d trans=%d%d ld=%d,%d,%d %s", what,
                           (int)s, k->M, k->N, k->K, k->ta, k->tb, k->lda, k->ldb, k->ldc,
                           k->adt == RT_DT_BF16 ? "bf16" : "f32");
}

/* the engine, once (under mu) */
static void engine_locked(const Key *k) {
  if (!D.eng)
    check(dnnl_engine_create(&D.eng, dnnl_cpu, 0), "dnnl_engine_create", k);
}

/* this thread's OpenMP confinement and stream, before its first oneDNN call */
static void thread_ready(const Key *k) {
  if (T.ready)
    return;
  omp_set_num_threads(1);
  pthread_mutex_lock(&mu);
  engine_locked(k);
  pthread_mutex_unlock(&mu);
  check(dnnl_stream_create(&T.stream, D.eng, dnnl_stream_default_flags), "dnnl_stream_create", k);
  T.ready = 1;
}

static void create(Entry *e, const Key *k) {
  dnnl_dims_t ad = {k->M, k->K}, as = {k->ta ? 1 : k->lda, k->ta ? k->lda : 1};
  dnnl_dims_t bd = {k->K, k->N}, bs = {k->tb ? 1 : k->ldb, k->tb ? k->ldb : 1};
  dnnl_dims_t cd = {k->M, k->N}, cs = {k->ldc, 1};
  dnnl_data_type_t dt = k->adt == RT_DT_BF16 ? dnnl_bf16 : dnnl_f32;
  check(dnnl_memory_desc_init_by_strides(&e->md[0], 2, ad, dt, as), "memory_desc_init (A)", k);
  check(dnnl_memory_desc_init_by_strides(&e->md[1], 2, bd, dt, bs), "memory_desc_init (B)", k);
  check(dnnl_memory_desc_init_by_strides(&e->md[2], 2, cd, dnnl_f32, cs), "memory_desc_init (C)", k);
  dnnl_matmul_desc_t mm;
  check(dnnl_matmul_desc_init(&mm, &e->md[0], &e->md[1], NULL, &e->md[2]), "dnnl_matmul_desc_init", k);
  dnnl_primitive_attr_t attr;
  check(dnnl_primitive_attr_create(&attr), "primitive_attr_create", k);
  check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "set_scratchpad_mode", k);
  float beta;
  memcpy(&beta, &k->beta, sizeof beta);
  if (beta != 0.0f) {
    dnnl_post_ops_t po;
    check(dnnl_post_ops_create(&po), "post_ops_create", k);
    check(dnnl_post_ops_append_sum(po, beta), "post_ops_append_sum", k);
    check(dnnl_primitive_attr_set_post_ops(attr, po), "set_post_ops", k);
    dnnl_post_ops_destroy(po);
  }
  dnnl_primitive_desc_t pd;
  check(dnnl_primitive_desc_create(&pd, &mm, attr, D.eng, NULL), "matmul primitive_desc_create", k);
  dnnl_primitive_attr_destroy(attr);
  e->md[3] = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  e->scratch = dnnl_memory_desc_get_size(&e->md[3]);
  check(dnnl_primitive_create(&e->prim, pd), "primitive_create", k);
  dnnl_primitive_desc_destroy(pd);
  e->key = *k;
}

/* the entry of key k: a lock-free scan of the published entries, else created under the mutex;
 * -1 when the cache is full (tmp then holds a fresh entry the caller destroys) */
static int lookup(const Key *k, Entry *tmp) {
  int n = atomic_load_explicit(&D.n, memory_order_acquire);
  for (int i = 0; i < n; i++)
    if (memcmp(&D.e[i].key, k, sizeof *k) == 0)
      return i;
  pthread_mutex_lock(&mu);
  n = atomic_load_explicit(&D.n, memory_order_relaxed);
  for (int i = 0; i < n; i++)
    if (memcmp(&D.e[i].key, k, sizeof *k) == 0) {
      pthread_mutex_unlock(&mu);
      return i;
    }
  int idx = -1;
  if (n < RT_DNNL_CACHE) {
    create(&D.e[n], k);
    atomic_store_explicit(&D.n, n + 1, memory_order_release);
    idx = n;
  } else {
    static int warned;
    if (!warned)
      fprintf(stderr, "modelc runtime: more than %d oneDNN GEMM shapes: the others are created at each call (slow)\n",
              RT_DNNL_CACHE);
    warned = 1;
    create(tmp, k);
  }
  pthread_mutex_unlock(&mu);
  return idx;
}

static void execute(const Entry *e, dnnl_memory_t *mem, const void *A, const void *B, float *C) {
  const Key *k = &e->key;
  for (int i = 0; i < 4; i++)
    if (!mem[i] && (i < 3 || e->scratch))
      check(dnnl_memory_create(&mem[i], &e->md[i], D.eng, DNNL_MEMORY_NONE), "memory_create", k);
  if (e->scratch > T.scratch_bytes) {
    free(T.scratch);
    T.scratch = rt_xalloc(e->scratch);
    if (!T.scratch)
      rt_gemm_internal_error("oneDNN: out of memory for a %zu-byte scratchpad", e->scratch);
    T.scratch_bytes = e->scratch;
  }
  check(dnnl_memory_set_data_handle(mem[0], (void *)A), "set_data_handle", k);
  check(dnnl_memory_set_data_handle(mem[1], (void *)B), "set_data_handle", k);
  check(dnnl_memory_set_data_handle(mem[2], C), "set_data_handle", k);
  dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}};
  int nargs = 3;
  if (e->scratch) {
    check(dnnl_memory_set_data_handle(mem[3], T.scratch), "set_data_handle", k);
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mem[3]};
  }
  check(dnnl_primitive_execute(e->prim, T.stream, nargs, args), "primitive_execute", k);
  check(dnnl_stream_wait(T.stream), "stream_wait", k);
}

int rt_gemm_onednn_built(void) { return 1; }

int rt_gemm_onednn_cached(void) { return atomic_load(&D.n); }

void rt_gemm_onednn(int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda, RtDType bdt,
                    const void *B, int ldb, float beta, float *C, int ldc) {
  Key k = {transA != 0, transB != 0, M, N, K, (int)adt, (int)bdt, lda, ldb, ldc, 0};
  memcpy(&k.beta, &beta, sizeof beta);
  if (beta == 0.0f)
    k.beta = 0; /* -0.0 is 0 */
  thread_ready(&k);
  Entry tmp;
  int idx = lookup(&k, &tmp);
  if (idx >= 0) {
    execute(&D.e[idx], T.mem[idx], A, B, C);
    return;
  }
  dnnl_memory_t mem[4] = {0};
  execute(&tmp, mem, A, B, C);
  for (int i = 0; i < 4; i++)
    if (mem[i])
      dnnl_memory_destroy(mem[i]);
  dnnl_primitive_destroy(tmp.prim);
}

const char *rt_gemm_onednn_isa(void) {
  switch (dnnl_get_effective_cpu_isa()) {
  case dnnl_cpu_isa_sse41: return "sse41";
  case dnnl_cpu_isa_avx: return "avx";
  case dnnl_cpu_isa_avx2: return "avx2";
  case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
  case dnnl_cpu_isa_avx512_core: return "avx512_core";
  case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
  case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
  case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
  default: return "other isa";
  }
}

#else /* built without oneDNN: rt_gemm_supports never offers it */

int rt_gemm_onednn_built(void) { return 0; }
int rt_gemm_onednn_cached(void) { return 0; }
const char *rt_gemm_onednn_isa(void) { return "absent"; }
void rt_gemm_onednn(int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda, RtDType bdt,
                    const void *B, int ldb, float beta, float *C, int ldc) {
  rt_gemm_internal_error("rt_gemm_onednn: this runtime was built without oneDNN");
}

#endif
