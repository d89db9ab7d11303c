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
 * The same cache serves rt_gemm_s8s8s32: s8 x s8 with exact s32 output (the quantised kernels'
 * i8_row products), keyed with adt = bdt = RT_DT_I8.
 *
 * Memory: plain row-major descriptors with strides from the leading dimensions for A, B and C (a
 * transposed operand is the same memory with swapped strides). A B inside the range the caller
 * declared constant (rt_gemm_constant: the inference verbs' weight buffer) is pre-packed: its
 * primitive is created with the weights format "any", B is reordered once into the layout the
 * primitive picks (a Pack, kept until the range changes) and every later call reads that copy
 * instead of oneDNN repacking B inside each call. The copies cost B's size again in memory.
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
  int packed;    /* B is constant (rt_gemm_constant): the primitive reads it pre-packed */
} Key;

typedef struct Entry {
  Key key;
  dnnl_primitive_t prim;
  dnnl_memory_desc_t md[4]; /* src (A), weights (B: packed when key.packed), dst (C), scratchpad */
  dnnl_memory_desc_t plain; /* key.packed: B as the caller stores it (the reorder's source) */
  size_t scratch;           /* scratchpad bytes */
} Entry;

/* Packed copies of constant B operands, one per (B, packed layout), made once by a reorder and
 * never changed once published. Every B inside the declared range is packed (no capacity limit:
 * the set of packed calls is a function of the program, never of timing, since packed and plain
 * products differ in their last bits). A hash table of published packs, read without a lock;
 * grown under the mutex into a new table (the old ones stay readable until the range changes). */
typedef struct Pack {
  const void *B;
  dnnl_memory_desc_t md;
  void *data;
} Pack;
typedef struct PackTable {
  size_t cap; /* a power of two, at least twice the packs */
  _Atomic(Pack *) *slot;
} PackTable;
static struct {
  const char *base; /* rt_gemm_constant's range: written only while no product runs */
  size_t bytes;
  _Atomic(PackTable *) table;
  size_t n;            /* packs (under mu) */
  PackTable *old[64];  /* replaced tables, freed with the packs */
  int nold;
} P;

static size_t pack_hash(const void *B) {
  uint64_t x = (uint64_t)(uintptr_t)B;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return (size_t)x;
}

static Pack *pack_find(const PackTable *t, const void *B, const dnnl_memory_desc_t *md) {
  if (!t)
    return NULL;
  for (size_t i = pack_hash(B) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
    Pack *p = atomic_load_explicit(&t->slot[i], memory_order_acquire);
    if (!p)
      return NULL;
    if (p->B == B && dnnl_memory_desc_equal(&p->md, md))
      return p;
  }
}

static void pack_insert(PackTable *t, Pack *p) {
  size_t i = pack_hash(p->B) & (t->cap - 1);
  while (atomic_load_explicit(&t->slot[i], memory_order_relaxed))
    i = (i + 1) & (t->cap - 1);
  atomic_store_explicit(&t->slot[i], p, memory_order_release);
}

static PackTable *table_new(size_t cap) {
  PackTable *t = calloc(1, sizeof *t);
  if (t)
    t->slot = calloc(cap, sizeof *t->slot);
  if (!t || !t->slot)
    rt_gemm_internal_error("oneDNN: out of memory for the packed-weights table (%zu slots)", cap);
  t->cap = cap;
  return t;
}

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
                           k->adt == RT_DT_BF16 ? "bf16" : k->adt == RT_DT_I8 ? "s8" : "f32");
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
  dnnl_data_type_t dt = k->adt == RT_DT_BF16 ? dnnl_bf16 : k->adt == RT_DT_I8 ? dnnl_s8 : dnnl_f32;
  dnnl_data_type_t cdt = k->adt == RT_DT_I8 ? dnnl_s32 : dnnl_f32; /* s8 x s8 -> exact s32 sums */
  check(dnnl_memory_desc_init_by_strides(&e->md[0], 2, ad, dt, as), "memory_desc_init (A)", k);
  check(dnnl_memory_desc_init_by_strides(&e->md[1], 2, bd, dt, bs), "memory_desc_init (B)", k);
  e->plain = e->md[1];
  if (k->packed) /* the layout the primitive prefers, chosen below */
    check(dnnl_memory_desc_init_by_tag(&e->md[1], 2, bd, dt, dnnl_format_tag_any), "memory_desc_init (B, any)", k);
  check(dnnl_memory_desc_init_by_strides(&e->md[2], 2, cd, cdt, cs), "memory_desc_init (C)", k);
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
  if (k->packed)
    e->md[1] = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
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

static void execute(const Entry *e, dnnl_memory_t *mem, const void *A, const void *B, void *C) {
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

/* B packed into e's weights layout: the published copy, or one made now (under the mutex, by a
 * reorder on this thread's stream). */
static const void *pack_of(const Entry *e, const void *B) {
  Pack *p = pack_find(atomic_load_explicit(&P.table, memory_order_acquire), B, &e->md[1]);
  if (p)
    return p->data;
  const Key *k = &e->key;
  pthread_mutex_lock(&mu);
  PackTable *t = atomic_load_explicit(&P.table, memory_order_relaxed);
  if ((p = pack_find(t, B, &e->md[1]))) {
    pthread_mutex_unlock(&mu);
    return p->data;
  }
  p = calloc(1, sizeof *p);
  void *data = rt_xalloc(dnnl_memory_desc_get_size(&e->md[1]));
  if (!p || !data)
    rt_gemm_internal_error("oneDNN: out of memory packing a %dx%d weight", k->K, k->N);
  dnnl_primitive_desc_t rpd;
  dnnl_primitive_t r;
  dnnl_memory_t src, dst;
  check(dnnl_reorder_primitive_desc_create(&rpd, &e->plain, D.eng, &e->md[1], D.eng, NULL), "reorder_pd_create", k);
  check(dnnl_primitive_create(&r, rpd), "reorder primitive_create", k);
  dnnl_primitive_desc_destroy(rpd);
  check(dnnl_memory_create(&src, &e->plain, D.eng, (void *)B), "memory_create (pack source)", k);
  check(dnnl_memory_create(&dst, &e->md[1], D.eng, data), "memory_create (pack)", k);
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
  check(dnnl_primitive_execute(r, T.stream, 2, args), "reorder execute", k);
  check(dnnl_stream_wait(T.stream), "stream_wait", k);
  dnnl_memory_destroy(src);
  dnnl_memory_destroy(dst);
  dnnl_primitive_destroy(r);
  *p = (Pack){B, e->md[1], data};
  if (!t || 2 * (P.n + 1) > t->cap) { /* grow: a new table with every pack, published whole */
    if (P.nold == (int)(sizeof P.old / sizeof *P.old))
      rt_gemm_internal_error("oneDNN: too many packed weights");
    PackTable *g = table_new(t ? 2 * t->cap : 1024);
    for (size_t i = 0; t && i < t->cap; i++) {
      Pack *q = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
      if (q)
        pack_insert(g, q);
    }
    if (t)
      P.old[P.nold++] = t;
    atomic_store_explicit(&P.table, g, memory_order_release);
    t = g;
  }
  pack_insert(t, p);
  P.n++;
  pthread_mutex_unlock(&mu);
  return data;
}

/* the product of key k: its cached primitive (B packed when k->packed), or a fresh one */
static void run(const Key *k, const void *A, const void *B, void *C) {
  thread_ready(k);
  Entry tmp;
  int idx = lookup(k, &tmp);
  if (idx >= 0) {
    execute(&D.e[idx], T.mem[idx], A, k->packed ? pack_of(&D.e[idx], B) : B, C);
    return;
  }
  if (k->packed)
    B = pack_of(&tmp, B); /* the entry cache is full: a fresh primitive, the pack still shared */
  dnnl_memory_t mem[4] = {0};
  execute(&tmp, mem, A, B, C);
  for (int i = 0; i < 4; i++)
    if (mem[i])
      dnnl_memory_destroy(mem[i]);
  dnnl_primitive_destroy(tmp.prim);
}

void rt_gemm_onednn_constant(const void *p, size_t bytes) {
  pthread_mutex_lock(&mu);
  PackTable *t = atomic_load_explicit(&P.table, memory_order_relaxed);
  for (size_t i = 0; t && i < t->cap; i++) {
    Pack *q = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
    if (q) {
      free(q->data);
      free(q);
    }
  }
  if (t)
    P.old[P.nold++] = t;
  for (int i = 0; i < P.nold; i++) {
    free(P.old[i]->slot);
    free(P.old[i]);
  }
  P.nold = 0;
  P.n = 0;
  atomic_store_explicit(&P.table, NULL, memory_order_release);
  P.base = p;
  P.bytes = p ? bytes : 0;
  pthread_mutex_unlock(&mu);
}

int rt_gemm_onednn_packs(void) {
  pthread_mutex_lock(&mu);
  int n = (int)P.n;
  pthread_mutex_unlock(&mu);
  return n;
}

int rt_gemm_onednn_built(void) { return 1; }

int rt_gemm_onednn_cached(void) { return atomic_load(&D.n); }

void rt_gemm_onednn(int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda, RtDType bdt,
                    const void *B, int ldb, float beta, float *C, int ldc) {
  Key k = {transA != 0, transB != 0, M, N, K, (int)adt, (int)bdt, lda, ldb, ldc, 0, 0};
  memcpy(&k.beta, &beta, sizeof beta);
  if (beta == 0.0f)
    k.beta = 0; /* -0.0 is 0 */
  /* B inside the constant range, all of it (its last element too) */
  size_t blast = transB ? (size_t)(N - 1) * ldb + (size_t)K : (size_t)(K - 1) * ldb + (size_t)N;
  size_t esz = bdt == RT_DT_BF16 ? 2 : 4;
  k.packed = P.bytes && (const char *)B >= P.base && (size_t)((const char *)B - P.base) + blast * esz <= P.bytes;
  run(&k, A, B, C);
}

/* the int8 product: the same cache and threads; B never packed (no constant range applies) */
int rt_gemm_s8s8s32(int M, int N, int K, const int8_t *A, const int8_t *B_NK, int32_t *C) {
  /* Exact only with VNNI or AMX: below them oneDNN's s8 x s8 goes through vpmaddubsw, whose int16
   * pair sums saturate (seen under valgrind's emulated CPU). The effective ISA honours
   * ONEDNN_MAX_CPU_ISA. */
  static int exact = -1;
  if (exact < 0) {
    const char *isa = rt_gemm_onednn_isa();
    exact = strstr(isa, "vnni") || strstr(isa, "bf16") || strstr(isa, "amx");
  }
  if (!exact || M <= 0 || N <= 0 || K <= 0)
    return -1;
  Key k = {0, 1, M, N, K, (int)RT_DT_I8, (int)RT_DT_I8, K, K, N, 0, 0};
  run(&k, A, B_NK, C);
  return 0;
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
int rt_gemm_onednn_packs(void) { return 0; }
void rt_gemm_onednn_constant(const void *p, size_t bytes) {
  (void)p;
  (void)bytes;
}
const char *rt_gemm_onednn_isa(void) { return "absent"; }
int rt_gemm_s8s8s32(int M, int N, int K, const int8_t *A, const int8_t *B_NK, int32_t *C) {
  (void)M, (void)N, (void)K, (void)A, (void)B_NK, (void)C;
  return -1;
}
void rt_gemm_onednn(int transA, int transB, int M, int N, int K, RtDType adt, const void *A, int lda, RtDType bdt,
                    const void *B, int ldb, float beta, float *C, int ldc) {
  rt_gemm_internal_error("rt_gemm_onednn: this runtime was built without oneDNN");
}

#endif
