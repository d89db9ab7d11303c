/* pool.c: the runtime's one threading layer, a persistent pool of worker threads.
 *
 * rt_parallel_for(n, grain, fn, ctx) cuts [0,n) into at most rt_threads() contiguous chunks (sizes
 * multiples of grain, the last excepted); the caller runs chunk 0 and worker w runs chunk w.
 * OpenBLAS is set to one thread, so every cblas call inside a chunk runs in the calling thread.
 * rt_parallel_blocks(n, block, fn, ctx) runs fn on fixed blocks of [0,n) (ranges that do not
 * depend on the thread count), a contiguous run of blocks per chunk.
 *
 * Protocol (all shared state is in the static `P`, so nothing is ever freed and LeakSanitizer sees
 * it as reachable):
 *  - A job is published by writing its plain fields (fn, ctx, n, grain, nblocks), then storing the
 *    64-bit word `job` = (generation << 8) | nchunks with seq_cst (a release). Workers load `job`
 *    (acquire); a worker w >= nchunks ignores the job without reading anything else, so the caller
 *    only ever waits for participants.
 *  - `pending` = nchunks - 1; each participant decrements it (release) after its chunk; the caller
 *    spins on it (acquire) after running chunk 0. Job fields are rewritten only after pending hits
 *    0, i.e. after every participant has finished reading them.
 *  - An idle worker spins on `job` with a pause instruction for RT_POOL_SPIN_US microseconds
 *    (MODELC_SPIN_US overrides), then sleeps on a condition variable: it increments `nsleep` and
 *    re-checks `job` under the mutex before waiting; the caller stores `job` and then reads
 *    `nsleep` (both seq_cst), and broadcasts under the mutex if it is non-zero. One of the two
 *    always sees the other's write, so no wake-up is lost.
 *  - Nested calls (from inside a chunk), calls while another thread owns the pool (the `busy`
 *    flag) and small n run fn(ctx, 0, n) inline.
 *  - Oversubscribed (more threads than CPUs this process may run on, e.g. tests with 3 threads on
 *    2 CPUs): a spinning thread would hold the CPU a descheduled participant needs, so workers
 *    sleep after a few pauses instead of spinning, and the caller yields while it waits.
 *  - After fork() the child has no workers: an atfork handler resets the pool, which restarts its
 *    workers on next use. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "core.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define RT_POOL_MAX 64      /* threads, caller included */
#define RT_POOL_DEFAULT_MAX 16 /* cap on the default (online CPUs) */
#define RT_POOL_SPIN_US 100

static inline void cpu_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static struct {
  _Alignas(64) _Atomic uint64_t job; /* (generation << 8) | nchunks */
  _Alignas(64) atomic_int pending;   /* participants still running */
  _Alignas(64) atomic_int nsleep;    /* workers blocked (or about to block) on cv */
  _Alignas(64) atomic_flag busy;     /* a thread is publishing / waiting on a job */
  atomic_int nthreads;               /* 0: not initialised */
  atomic_int ready;                  /* workers for nthreads are running (reset after fork) */
  atomic_int spin_us;
  atomic_int oversub;                /* nthreads > CPUs available: do not spin */
  int nstarted;                      /* workers started (under mu) */
  /* the job (written by the owner of `busy` before publishing) */
  RtRangeFn fn;
  void *ctx;
  int n, grain, nblocks, nchunks;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t tid[RT_POOL_MAX];
  uint64_t start_job[RT_POOL_MAX]; /* the `job` word current when worker w was started */
} P = {.busy = ATOMIC_FLAG_INIT, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static _Thread_local int tl_in_pool; /* set in workers, and in the caller while it runs chunk 0 */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* [lo, hi) of chunk c: blocks of `grain` split as evenly as possible over nchunks. */
static inline void chunk_range(int c, int *lo, int *hi) {
  long long b0 = (long long)c * P.nblocks / P.nchunks, b1 = (long long)(c + 1) * P.nblocks / P.nchunks;
  long long l = b0 * P.grain, h = b1 * P.grain;
  *lo = (int)l;
  *hi = h < P.n ? (int)h : P.n;
}

static void *worker_main(void *arg) {
  int w = (int)(intptr_t)arg;
  tl_in_pool = 1;
  uint64_t seen = P.start_job[w];
  for (;;) {
    uint64_t j;
    double t_end = -1.0;
    unsigned spins = 0;
    while ((j = atomic_load_explicit(&P.job, memory_order_acquire)) == seen) {
      cpu_pause();
      if ((++spins & 127u) == 0) {
        double now = rt_now_seconds();
        if (t_end < 0) {
          t_end = now + atomic_load_explicit(&P.spin_us, memory_order_relaxed) * 1e-6;
        }
        if (now > t_end || atomic_load_explicit(&P.oversub, memory_order_relaxed)) {
          pthread_mutex_lock(&P.mu);
          atomic_fetch_add(&P.nsleep, 1);
          while ((j = atomic_load(&P.job)) == seen)
            pthread_cond_wait(&P.cv, &P.mu);
          atomic_fetch_sub(&P.nsleep, 1);
          pthread_mutex_unlock(&P.mu);
          break;
        }
      }
    }
    seen = j;
    if (w < (int)(j & 0xff)) {
      int lo, hi;
      chunk_range(w, &lo, &hi);
      if (lo < hi)
        P.fn(P.ctx, lo, hi);
      atomic_fetch_sub_explicit(&P.pending, 1, memory_order_release);
    }
  }
  return NULL;
}

static void atfork_prepare(void) { pthread_mutex_lock(&P.mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&P.mu); }
static void atfork_child(void) {
  /* The child has only the forking thread: forget the workers; they restart on next use. */
  P.nstarted = 0;
  atomic_store(&P.nsleep, 0);
  atomic_store(&P.pending, 0);
  atomic_store(&P.ready, 0);
  atomic_flag_clear(&P.busy);
  pthread_mutex_init(&P.mu, NULL);
  pthread_cond_init(&P.cv, NULL);
}
static void register_atfork(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

static int default_threads(void) {
  const char *e = getenv("MODELC_THREADS");
  if (e && *e) {
    char *end;
    long v = strtol(e, &end, 10);
    if (*end == '\0' && v > 0)
      return v < RT_POOL_MAX ? (int)v : RT_POOL_MAX;
  }
  long c = sysconf(_SC_NPROCESSORS_ONLN);
  if (c < 1)
    c = 1;
  return c < RT_POOL_DEFAULT_MAX ? (int)c : RT_POOL_DEFAULT_MAX;
}

/* CPUs this process may run on (affinity mask), else the online CPUs. */
static int available_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return CPU_COUNT(&set);
  long c = sysconf(_SC_NPROCESSORS_ONLN);
  return c > 0 ? (int)c : 1;
}

/* Starts workers 1..nthreads-1 that are not running yet. Caller holds mu and `busy` (so no job is
 * in flight and P.job is stable). A worker that cannot be created lowers nthreads. */
static void start_workers_locked(void) {
  int n = atomic_load(&P.nthreads);
  while (P.nstarted < n - 1) {
    int w = P.nstarted + 1;
    P.start_job[w] = atomic_load(&P.job);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&P.tid[w], &attr, worker_main, (void *)(intptr_t)w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
      atomic_store(&P.nthreads, w);
      break;
    }
    P.nstarted = w;
  }
  atomic_store(&P.ready, 1);
}

static void acquire_busy(void) {
  unsigned spins = 0;
  while (atomic_flag_test_and_set_explicit(&P.busy, memory_order_acquire)) {
    if (++spins < 1000)
      cpu_pause();
    else
      sched_yield();
  }
}

static void set_threads(int n, int only_if_unset) {
  if (tl_in_pool)
    return; /* from inside a task: ignored */
  pthread_once(&atfork_once, register_atfork);
  acquire_busy();
  pthread_mutex_lock(&P.mu);
  if (!only_if_unset || atomic_load(&P.nthreads) == 0) {
    if (n <= 0)
      n = default_threads();
    if (n > RT_POOL_MAX)
      n = RT_POOL_MAX;
    const char *s = getenv("MODELC_SPIN_US");
    int us = s && *s ? atoi(s) : RT_POOL_SPIN_US;
    atomic_store(&P.spin_us, us > 0 ? us : 0);
    openblas_set_num_threads(1);
    atomic_store(&P.nthreads, n);
    atomic_store(&P.oversub, n > available_cpus());
  }
  start_workers_locked();
  pthread_mutex_unlock(&P.mu);
  atomic_flag_clear_explicit(&P.busy, memory_order_release);
}

void rt_set_threads(int n) { set_threads(n, 0); }

/* Makes sure the pool is initialised (and, after a fork, restarted). */
static inline int pool_threads(void) {
  if (!atomic_load_explicit(&P.ready, memory_order_acquire))
    set_threads(0, 1);
  return atomic_load_explicit(&P.nthreads, memory_order_relaxed);
}

int rt_threads(void) {
  if (tl_in_pool) {
    int n = atomic_load_explicit(&P.nthreads, memory_order_relaxed);
    return n > 0 ? n : 1;
  }
  return pool_threads();
}

void rt_parallel_for(int n, int grain, RtRangeFn fn, void *ctx) {
  if (n <= 0)
    return;
  if (grain < 1)
    grain = 1;
  if (tl_in_pool || n < 2 * grain) {
    fn(ctx, 0, n);
    return;
  }
  int nt = pool_threads();
  int nblocks = n / grain + (n % grain != 0);
  int nchunks = nt < nblocks ? nt : nblocks;
  if (nchunks < 2 || atomic_flag_test_and_set_explicit(&P.busy, memory_order_acquire)) {
    fn(ctx, 0, n); /* one thread, or another thread owns the pool */
    return;
  }
  P.fn = fn;
  P.ctx = ctx;
  P.n = n;
  P.grain = grain;
  P.nblocks = nblocks;
  P.nchunks = nchunks;
  atomic_store_explicit(&P.pending, nchunks - 1, memory_order_relaxed);
  uint64_t j = atomic_load_explicit(&P.job, memory_order_relaxed);
  atomic_store(&P.job, (((j >> 8) + 1) << 8) | (uint64_t)nchunks); /* seq_cst: see the header */
  if (atomic_load(&P.nsleep) > 0) {
    pthread_mutex_lock(&P.mu);
    pthread_cond_broadcast(&P.cv);
    pthread_mutex_unlock(&P.mu);
  }
  int lo, hi;
  chunk_range(0, &lo, &hi);
  tl_in_pool = 1;
  fn(ctx, lo, hi);
  tl_in_pool = 0;
  unsigned spins = 0, patience = atomic_load_explicit(&P.oversub, memory_order_relaxed) ? 64 : 20000;
  while (atomic_load_explicit(&P.pending, memory_order_acquire) != 0) {
    if (++spins < patience)
      cpu_pause();
    else
      sched_yield(); /* a participant is not running: let it */
  }
  atomic_flag_clear_explicit(&P.busy, memory_order_release);
}

/* ---- fixed blocks over the pool ---- */

typedef struct Blocks {
  int n, block;
  RtRangeFn fn;
  void *ctx;
} Blocks;

static void run_blocks(void *p, int lo, int hi) {
  const Blocks *b = p;
  for (int k = lo; k < hi; k++) {
    int r0 = k * b->block, r1 = b->n - r0 < b->block ? b->n : r0 + b->block;
    b->fn(b->ctx, r0, r1);
  }
}

void rt_parallel_blocks(int n, int block, RtRangeFn fn, void *ctx) {
  if (n <= 0)
    return;
  if (block < 1)
    block = 1;
  Blocks b = {n, block, fn, ctx};
  rt_parallel_for(n / block + (n % block != 0), 1, run_blocks, &b);
}
