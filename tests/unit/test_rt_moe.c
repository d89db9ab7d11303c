/* test_rt_moe.c: rt_moe and rt_moe_dx (runtime/kernels/moe.c) against their naive double twins,
 * forward (y and the load-balancing loss) and backward (every gradient), at shapes with top_k 1, 2
 * and 3, capacities that drop pairs and that do not, one expert (a dense MLP) and 16 (some with no
 * tokens), each activation; with 1, 2 and 3 threads (the scratch sized exactly, so ASan catches an
 * overrun); 1 against 2 threads bit for bit; a capacity of one pair per expert (exactly E tokens
 * get an output, the dropped ones exactly 0); and the backward twin against central differences
 * of the forward twin (L = sum(dy * y) + daux * aux). The larger cases reach every tile shape of the
 * grouped kernel: transposed tiles (at most 64 rows), row-major ones, experts of several tiles.
 * CTest runs it once more with MODELC_CPU=portable (the activation's portable clone). */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdbool.h>
#include <stdio.h>

typedef struct Case {
  int N, C, E, H, K;
  float factor;
  int act; /* 1 gelu, 2 gelu_tanh, 3 relu, 4 silu */
} Case;

static const Case cases[] = {
    {16, 8, 4, 12, 1, 0.5f, 1},   /* Switch with drops: 2 tokens per expert */
    {37, 16, 8, 20, 2, 1.0f, 4},  /* top-2, odd N, drops */
    {20, 12, 5, 9, 3, 2.0f, 2},   /* top-3 */
    {9, 8, 1, 16, 1, 1.0f, 3},    /* one expert: a dense MLP */
    {40, 24, 16, 8, 2, 1.25f, 1}, /* 16 experts */
    {70, 32, 4, 40, 1, 4.0f, 4},  /* capacity N: no drops; GEMMs past RT_LIN_MIN_ROWS */
    /* the grouped kernel's tiles (moe.c): experts of ~50 rows (transposed products, rows padded
     * to 16), of ~100 (one row-major tile), and of ~300 at top-2 (three tiles per expert), with
     * C and H not multiples of 16 */
    {150, 16, 3, 10, 1, 3.0f, 4},
    {200, 12, 2, 36, 1, 2.0f, 3},
    {300, 20, 2, 24, 2, 2.0f, 2},
    {260, 17, 3, 33, 2, 0.8f, 1}, /* top-2 with drops, tiles on both sides of 64 rows */
};

typedef struct Bufs {
  float *x, *wr, *w1, *b1, *w2, *b2, *dy;
  float *y, *dx, *dwr, *dw1, *db1, *dw2, *db2, *load;
  float aux;
} Bufs;

static void bufs_new(Bufs *b, const Case *c, uint64_t seed) {
  size_t N = c->N, C = c->C, E = c->E, H = c->H;
  b->x = falloc(N * C), b->wr = falloc(E * C), b->w1 = falloc(E * H * C), b->b1 = falloc(E * H);
  b->w2 = falloc(E * C * H), b->b2 = falloc(E * C), b->dy = falloc(N * C);
  b->y = falloc(N * C), b->dx = falloc(N * C), b->dwr = falloc(E * C), b->dw1 = falloc(E * H * C);
  b->db1 = falloc(E * H), b->dw2 = falloc(E * C * H), b->db2 = falloc(E * C), b->load = falloc(E + 2);
  fill_uniform(b->x, N * C, -1, 1, seed);
  fill_uniform(b->wr, E * C, -1, 1, seed + 1);
  fill_uniform(b->w1, E * H * C, -0.5f, 0.5f, seed + 2);
  fill_uniform(b->b1, E * H, -0.5f, 0.5f, seed + 3);
  fill_uniform(b->w2, E * C * H, -0.5f, 0.5f, seed + 4);
  fill_uniform(b->b2, E * C, -0.5f, 0.5f, seed + 5);
  fill_uniform(b->dy, N * C, -1, 1, seed + 6);
}
static void bufs_free(Bufs *b) {
  float *p[] = {b->x, b->wr, b->w1, b->b1, b->w2, b->b2, b->dy, b->y, b->dx, b->dwr, b->dw1, b->db1, b->dw2, b->db2, b->load};
  for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
}

static const float AUXC = 0.3f, DAUX = 1.7f;

static void run(const Case *c, int th, Bufs *b) {
  rt_set_threads(th);
  float *s = falloc(rt_moe_scratch_floats(c->N, c->C, c->E, c->H, c->K));
  /* the outputs are written, not accumulated */
  size_t N = c->N, C = c->C, E = c->E, H = c->H;
  for (size_t i = 0; i < N * C; i++) b->y[i] = b->dx[i] = 5.0f;
  for (size_t i = 0; i < E * H * C; i++) b->dw1[i] = b->dw2[i] = 5.0f;
  rt_moe(b->y, &b->aux, b->load, b->x, b->wr, b->w1, b->b1, b->w2, b->b2, c->N, c->C, c->E, c->H, c->K, c->factor, AUXC, c->act,
         s);
  rt_moe_dx(b->dx, b->dwr, b->dw1, b->db1, b->dw2, b->db2, b->x, b->wr, b->w1, b->b1, b->w2, b->b2, b->dy, DAUX, c->N,
            c->C, c->E, c->H, c->K, c->factor, AUXC, c->act, s);
  free(s);
}

START_TEST(moe_vs_ref) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const Case *c = &cases[i];
    Bufs b, r;
    bufs_new(&b, c, 10 + 7 * i);
    bufs_new(&r, c, 10 + 7 * i);
    run(c, _i, &b);
    rt_moe_ref(r.y, &r.aux, r.load, r.x, r.wr, r.w1, r.b1, r.w2, r.b2, c->N, c->C, c->E, c->H, c->K, c->factor, AUXC, c->act);
    rt_moe_dx_ref(r.dx, r.dwr, r.dw1, r.db1, r.dw2, r.db2, r.x, r.wr, r.w1, r.b1, r.w2, r.b2, r.dy, DAUX, c->N, c->C,
                  c->E, c->H, c->K, c->factor, AUXC, c->act);
    size_t N = c->N, C = c->C, E = c->E, H = c->H;
    double e[7] = {norm_err(b.y, r.y, N * C),         norm_err(b.dx, r.dx, N * C),       norm_err(b.dwr, r.dwr, E * C),
                   norm_err(b.dw1, r.dw1, E * H * C), norm_err(b.db1, r.db1, E * H),     norm_err(b.dw2, r.dw2, E * C * H),
                   norm_err(b.db2, r.db2, E * C)};
    double worst = 0;
    for (int k = 0; k < 7; k++) worst = fmax(worst, e[k]);
    ck_assert_msg(worst < 1e-5 && fabs(b.aux - r.aux) <= 1e-6 * fabs(r.aux) + 1e-7,
                  "moe N=%d C=%d E=%d H=%d K=%d factor=%g threads=%d: y %g dx %g dwr %g dw1 %g db1 %g dw2 %g db2 %g, "
                  "aux %g vs %g",
                  c->N, c->C, c->E, c->H, c->K, c->factor, _i, e[0], e[1], e[2], e[3], e[4], e[5], e[6], b.aux, r.aux);
    ck_assert(r.aux > 0);
    /* the load: the same counts as the twin's, every pair ran or dropped */
    double ran = 0;
    for (int k = 1; k < c->E + 2; k++) ck_assert_msg(b.load[k] == r.load[k], "load[%d] %g vs %g", k, b.load[k], r.load[k]);
    for (int k = 2; k < c->E + 2; k++) ran += b.load[k];
    ck_assert(ran + b.load[1] == (double)c->N * c->K && b.load[0] == b.aux);
    bufs_free(&b), bufs_free(&r);
  }
}
END_TEST

START_TEST(threads_bit_identical) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const Case *c = &cases[i];
    Bufs b[2];
    for (int t = 0; t < 2; t++) {
      bufs_new(&b[t], c, 40 + i);
      run(c, t + 1, &b[t]);
    }
    size_t N = c->N, C = c->C, E = c->E, H = c->H;
    ck_assert(memcmp(b[0].y, b[1].y, N * C * sizeof(float)) == 0 && b[0].aux == b[1].aux);
    ck_assert(memcmp(b[0].dx, b[1].dx, N * C * sizeof(float)) == 0);
    ck_assert(memcmp(b[0].dwr, b[1].dwr, E * C * sizeof(float)) == 0);
    ck_assert(memcmp(b[0].dw1, b[1].dw1, E * H * C * sizeof(float)) == 0);
    ck_assert(memcmp(b[0].dw2, b[1].dw2, E * C * H * sizeof(float)) == 0);
    ck_assert(memcmp(b[0].db1, b[1].db1, E * H * sizeof(float)) == 0);
    ck_assert(memcmp(b[0].db2, b[1].db2, E * C * sizeof(float)) == 0);
    bufs_free(&b[0]), bufs_free(&b[1]);
  }
}
END_TEST

/* capacity 1 pair per expert (factor 1/N): exactly E of the N tokens have an output, the others
 * exactly 0 (they pass through the residual), and the dropped tokens get no expert gradient: their
 * dx is the router's term alone */
START_TEST(one_pair_per_expert) {
  const Case c = {24, 8, 3, 10, 1, 1.0f / 24, 1};
  ck_assert_int_eq(rt_moe_capacity(24, 3, c.factor), 1);
  ck_assert_int_eq(rt_moe_capacity(24, 3, 100.0f), 24);
  ck_assert_int_eq(rt_moe_capacity(10, 4, 1.25f), 4); /* ceil(3.125) */
  Bufs b;
  bufs_new(&b, &c, 90);
  run(&c, 2, &b);
  int nonzero = 0;
  for (int n = 0; n < c.N; n++) {
    bool any = false;
    for (int k = 0; k < c.C; k++) any |= b.y[n * c.C + k] != 0.0f;
    nonzero += any;
  }
  ck_assert_int_le(nonzero, c.E);
  ck_assert_int_ge(nonzero, 1);
  for (int e = 0; e < c.E; e++) ck_assert(b.load[2 + e] <= 1.0f);
  ck_assert(b.load[1] == (float)(c.N - (b.load[2] + b.load[3] + b.load[4])));
  ck_assert_int_eq(nonzero, (int)(b.load[2] + b.load[3] + b.load[4]));
  bufs_free(&b);
}
END_TEST

/* The backward twin against central differences of the forward twin (gelu; h = 1e-3 in float
 * inputs, the twins in double; tolerance 1e-3 of the largest gradient). A perturbation that flips
 * a choice would show as a jump: the seeds give none. */
static double loss_of(const Case *c, const Bufs *b, float *y) {
  float aux, load[64];
  rt_moe_ref(y, &aux, load, b->x, b->wr, b->w1, b->b1, b->w2, b->b2, c->N, c->C, c->E, c->H, c->K, c->factor, AUXC, c->act);
  double L = (double)DAUX * aux;
  for (size_t i = 0; i < (size_t)c->N * c->C; i++) L += (double)b->dy[i] * y[i];
  return L;
}

START_TEST(twin_vs_differences) {
  const Case cases2[] = {{12, 6, 3, 7, 1, 0.75f, 1}, {12, 6, 4, 7, 2, 1.0f, 1}};
  for (int ci = 0; ci < 2; ci++) {
    const Case *c = &cases2[ci];
    Bufs b;
    bufs_new(&b, c, 70 + ci);
    rt_moe_dx_ref(b.dx, b.dwr, b.dw1, b.db1, b.dw2, b.db2, b.x, b.wr, b.w1, b.b1, b.w2, b.b2, b.dy, DAUX, c->N, c->C,
                  c->E, c->H, c->K, c->factor, AUXC, c->act);
    size_t N = c->N, C = c->C, E = c->E, H = c->H;
    float *xs[6] = {b.x, b.wr, b.w1, b.b1, b.w2, b.b2}, *gs[6] = {b.dx, b.dwr, b.dw1, b.db1, b.dw2, b.db2};
    size_t ns[6] = {N * C, E * C, E * H * C, E * H, E * C * H, E * C};
    const char *names[6] = {"dx", "dwr", "dw1", "db1", "dw2", "db2"};
    const float h = 1e-3f;
    for (int w = 0; w < 6; w++) {
      double gmax = 1e-30, worst = 0;
      for (size_t i = 0; i < ns[w]; i++) gmax = fmax(gmax, fabs(gs[w][i]));
      for (size_t i = 0; i < ns[w]; i += 3) {
        float x0 = xs[w][i];
        xs[w][i] = x0 + h;
        double lp = loss_of(c, &b, b.y);
        xs[w][i] = x0 - h;
        double lm = loss_of(c, &b, b.y);
        xs[w][i] = x0;
        double fd = (lp - lm) / ((double)(x0 + h) - (double)(x0 - h));
        worst = fmax(worst, fabs(fd - gs[w][i]) / gmax);
      }
      ck_assert_msg(worst < 1e-3, "top_k %d %s: the twin's gradient differs from central differences by %g of its largest",
                    c->K, names[w], worst);
    }
    bufs_free(&b);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_moe");
  TCase *tc = tcase_create("moe");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, moe_vs_ref, 1, 4); /* _i = 1..3 threads */
  tcase_add_test(tc, threads_bit_identical);
  tcase_add_test(tc, one_pair_per_expert);
  tcase_add_test(tc, twin_vs_differences);
  suite_add_tcase(s, tc);
  return check_run(s);
}
