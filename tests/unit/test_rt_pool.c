/* test_rt_pool.c: the thread pool (runtime/core/pool.c) and rt_linear.
 * rt_parallel_for covers every index exactly once with chunks that are multiples of the grain, for
 * many (n, grain, threads) including n = 0, 1 and grain > n; nested calls run serially in the
 * calling thread; 10^4 rapid calls, also across idle periods long enough for the workers to fall
 * asleep; rt_set_threads changes between calls; rt_linear with an epilogue against rt_matmul_ref
 * plus the same epilogue applied serially, for M in {1, 3, 17, 256} with 1..3 threads; a fork()ed
 * child gets a working pool. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdatomic.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct Cover {
  atomic_int *hits;
  int grain, n;
  atomic_int calls, bad_chunk;
} Cover;

static void cover_fn(void *p, int lo, int hi) {
  Cover *c = p;
  atomic_fetch_add(&c->calls, 1);
  /* every chunk starts on a grain boundary, and all but the last are multiples of it */
  if (lo % c->grain != 0 || (hi != c->n && (hi - lo) % c->grain != 0) || lo >= hi)
    atomic_fetch_add(&c->bad_chunk, 1);
  for (int i = lo; i < hi; i++)
    atomic_fetch_add_explicit(&c->hits[i], 1, memory_order_relaxed);
}

static void check_cover(int n, int grain, int threads) {
  atomic_int *hits = calloc((size_t)(n > 0 ? n : 1), sizeof *hits);
  Cover c = {hits, grain < 1 ? 1 : grain, n, 0, 0};
  rt_parallel_for(n, grain, cover_fn, &c);
  for (int i = 0; i < n; i++)
    ck_assert_msg(atomic_load(&hits[i]) == 1, "n=%d grain=%d threads=%d: index %d hit %d times", n, grain, threads, i,
                  atomic_load(&hits[i]));
  ck_assert_int_eq(atomic_load(&c.bad_chunk), 0);
  int calls = atomic_load(&c.calls);
  ck_assert_msg(n > 0 ? calls >= 1 && calls <= threads : calls == 0, "n=%d grain=%d: %d calls", n, grain, calls);
  if (n >= 2 * c.grain && threads > 1)
    ck_assert_msg(calls >= 2, "n=%d grain=%d threads=%d: not split (%d call)", n, grain, threads, calls);
  free(hits);
}

START_TEST(covers_every_index_once) {
  int threads = _i;
  rt_set_threads(threads);
  ck_assert_int_eq(rt_threads(), threads);
  static const int ns[] = {0, 1, 2, 3, 5, 7, 16, 31, 32, 33, 100, 127, 1000, 4097, 100000};
  static const int grains[] = {-1, 0, 1, 2, 3, 7, 16, 64, 1000, 200000};
  for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
    for (size_t b = 0; b < sizeof grains / sizeof *grains; b++)
      check_cover(ns[a], grains[b], threads);
}
END_TEST

/* Nested: each outer chunk runs an inner parallel_for, which must run inline in the same thread. */
typedef struct Nest {
  atomic_int *hits;
  int inner_n;
  atomic_int inner_calls;
} Nest;

static void inner_fn(void *p, int lo, int hi) {
  Nest *n = p;
  atomic_fetch_add(&n->inner_calls, 1);
  for (int i = lo; i < hi; i++)
    atomic_fetch_add(&n->hits[i], 1);
}

typedef struct Outer {
  Nest *nests;
  atomic_int bad;
} Outer;

static void outer_fn(void *p, int lo, int hi) {
  Outer *o = p;
  for (int i = lo; i < hi; i++) {
    Nest *n = &o->nests[i];
    rt_parallel_for(n->inner_n, 1, inner_fn, n);
    if (atomic_load(&n->inner_calls) != 1) /* inline: one call covering [0, n) */
      atomic_fetch_add(&o->bad, 1);
    rt_set_threads(1); /* ignored inside a task */
  }
}

START_TEST(nested_calls_run_inline) {
  rt_set_threads(_i);
  enum { NO = 40, NI = 50 };
  Nest nests[NO];
  atomic_int hits[NO][NI];
  memset(hits, 0, sizeof hits);
  for (int i = 0; i < NO; i++) {
    nests[i].hits = hits[i];
    nests[i].inner_n = NI;
    atomic_init(&nests[i].inner_calls, 0);
  }
  Outer o = {nests, 0};
  rt_parallel_for(NO, 1, outer_fn, &o);
  ck_assert_int_eq(atomic_load(&o.bad), 0);
  for (int i = 0; i < NO; i++)
    for (int j = 0; j < NI; j++)
      ck_assert_int_eq(atomic_load(&hits[i][j]), 1);
  ck_assert_int_eq(rt_threads(), _i); /* the nested rt_set_threads(1) changed nothing */
}
END_TEST

/* Plain (non-atomic) writes to disjoint slots must be visible to the caller when the call returns:
 * the completion counter orders them. */
typedef struct Stress {
  int *slots;
  int round;
} Stress;

static void stress_fn(void *p, int lo, int hi) {
  Stress *s = p;
  for (int i = lo; i < hi; i++)
    s->slots[i] = s->round + i;
}

START_TEST(stress_many_calls) {
  rt_set_threads(_i);
  enum { N = 64, CALLS = 10000 };
  int slots[N];
  Stress s = {slots, 0};
  for (int r = 0; r < CALLS; r++) {
    s.round = r;
    int n = 2 + r % (N - 1);
    rt_parallel_for(n, 1 + r % 3, stress_fn, &s);
    for (int i = 0; i < n; i++)
      if (slots[i] != r + i)
        ck_abort_msg("call %d: slot %d holds %d, expected %d", r, i, slots[i], r + i);
  }
  /* across idle gaps longer than the spin period, so the workers go to sleep and are woken */
  for (int r = 0; r < 30; r++) {
    struct timespec ts = {0, 300000 + (r % 3) * 100000};
    nanosleep(&ts, NULL);
    s.round = CALLS + r;
    rt_parallel_for(N, 4, stress_fn, &s);
    for (int i = 0; i < N; i++)
      ck_assert_int_eq(slots[i], CALLS + r + i);
  }
}
END_TEST

START_TEST(change_thread_count) {
  for (int k = 0; k < 12; k++) {
    int t = 1 + (k * 5) % 4; /* 1, 2, 3, 4 in some order */
    rt_set_threads(t);
    ck_assert_int_eq(rt_threads(), t);
    check_cover(1000, 10, t);
  }
  setenv("MODELC_THREADS", "3", 1);
  rt_set_threads(0);
  ck_assert_int_eq(rt_threads(), 3);
  unsetenv("MODELC_THREADS");
  rt_set_threads(0);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  ck_assert_int_eq(rt_threads(), cpus < 1 ? 1 : cpus > 16 ? 16 : (int)cpus);
  rt_set_threads(1000);
  ck_assert_int_eq(rt_threads(), 64);
  check_cover(100000, 1, 64);
}
END_TEST

START_TEST(pool_after_fork) {
  rt_set_threads(3);
  check_cover(1000, 1, 3);
  pid_t pid = fork();
  ck_assert(pid >= 0);
  if (pid == 0) {
    /* the child has no workers until the pool restarts them */
    int n = 5000;
    atomic_int *hits = calloc((size_t)n, sizeof *hits);
    Cover c = {hits, 1, n, 0, 0};
    rt_parallel_for(n, 1, cover_fn, &c);
    int ok = atomic_load(&c.calls) == 3;
    for (int i = 0; i < n; i++)
      ok &= atomic_load(&hits[i]) == 1;
    free(hits);
    _exit(ok ? 0 : 1);
  }
  int st = 0;
  ck_assert(waitpid(pid, &st, 0) == pid);
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

/* ---- rt_linear ---------------------------------------------------------------------------- */

/* The epilogue generated code would fuse: y = gelu_tanh(y) + res, on rows [lo, hi). */
typedef struct Epi {
  float *y;
  const float *res;
  int N;
  atomic_int rows_seen;
} Epi;

static void epi_fn(void *p, int lo, int hi) {
  Epi *e = p;
  for (int m = lo; m < hi; m++)
    for (int n = 0; n < e->N; n++) {
      size_t i = (size_t)m * e->N + n;
      e->y[i] = rt_gelu_tanhf(e->y[i]) + e->res[i];
    }
  atomic_fetch_add(&e->rows_seen, hi - lo);
}

static void check_linear(int M, int N, int K, int with_bias, uint64_t seed) {
  size_t ny = (size_t)M * N;
  float *x = falloc((size_t)M * K), *W = falloc((size_t)N * K), *b = falloc((size_t)N), *res = falloc(ny);
  float *y = falloc(ny), *yr = falloc(ny);
  fill_uniform(x, (size_t)M * K, -1, 1, seed);
  fill_uniform(W, (size_t)N * K, -1, 1, seed + 1);
  fill_uniform(b, (size_t)N, -1, 1, seed + 2);
  fill_uniform(res, ny, -1, 1, seed + 3);
  Epi e = {y, res, N, 0};
  rt_linear(y, x, W, with_bias ? b : NULL, M, N, K, epi_fn, &e);
  ck_assert_int_eq(atomic_load(&e.rows_seen), M); /* every row exactly once (M == 1: once, after) */
  rt_matmul_ref(yr, x, W, with_bias ? b : NULL, M, N, K);
  Epi er = {yr, res, N, 0};
  epi_fn(&er, 0, M);
  double err = norm_err(y, yr, ny);
  ck_assert_msg(err < 1e-5, "linear %dx%dx%d bias=%d threads=%d: normalised error %g", M, N, K, with_bias, rt_threads(),
                err);
  /* without an epilogue: rt_matmul */
  rt_matmul(y, x, W, with_bias ? b : NULL, M, N, K);
  rt_matmul_ref(yr, x, W, with_bias ? b : NULL, M, N, K);
  ck_assert(norm_err(y, yr, ny) < 1e-5);
  free(x), free(W), free(b), free(res), free(y), free(yr);
}

START_TEST(linear_with_epilogue) {
  rt_set_threads(_i);
  static const int Ms[] = {1, 3, 17, 256};
  for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++) {
    int M = Ms[a];
    check_linear(M, 1000, 100, 1, 50 + M); /* N split (M < 32) or row split */
    check_linear(M, 67, 33, 0, 60 + M);    /* small */
    check_linear(M, 513, 384, 1, 70 + M);
  }
  check_linear(2, 5, 0, 1, 80); /* K = 0: y = bias, then the epilogue */
  check_linear(4, 7, 0, 0, 81);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_pool");
  TCase *tc = tcase_create("pool");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, covers_every_index_once, 1, 5); /* 1..4 threads */
  tcase_add_loop_test(tc, nested_calls_run_inline, 1, 4);
  tcase_add_loop_test(tc, stress_many_calls, 1, 4);
  tcase_add_test(tc, change_thread_count);
  tcase_add_test(tc, pool_after_fork);
  tcase_add_loop_test(tc, linear_with_epilogue, 1, 4);
  suite_add_tcase(s, tc);
  return check_run(s);
}
