/* test_rt_train.c: the optimisers and schedules (runtime/kernels/optim.c, runtime/prog/schedule.c)
 * against values computed here in double, and the train and grad commands (runtime/prog/train.c)
 * driven through rt_main on a hand-written model: a bigram language model, logits[t] = E[token[t]]
 * + bias, whose forward and training functions are written below (no generated code, no backward
 * kernels).
 */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt_test_util.h"
#include "../../runtime/prog/train.h" /* rt_ckpt_read_meta */

/* ---------------------------------------------------------------------------------------------
 * Optimisers and schedules
 * ------------------------------------------------------------------------------------------- */

/* rt_adamw's builds (baseline and AVX2, runtime/kernels/optim.c) compute the same bits: three steps
 * over 50,003 elements (vector body and tail) against the same float formula written out here;
 * rt_adamw_bf16 updates the same and refreshes the working weights as rt_round_weights would */
START_TEST(test_adamw_bits_any_isa) {
  enum { n = 50003 };
  float *w = malloc(n * sizeof *w), *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v), *g = malloc(n * sizeof *g);
  float *W = malloc(n * sizeof *W), *M = calloc(n, sizeof *M), *V = calloc(n, sizeof *V);
  for (int i = 0; i < n; i++) W[i] = w[i] = sinf((float)i) * 0.5f, g[i] = cosf(0.37f * (float)i) * 1e-2f;
  for (int step = 1; step <= 3; step++) {
    rt_adamw(w, g, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
    double bc1 = 1.0 - pow(0.9f, (double)step), bc2 = 1.0 - pow(0.95f, (double)step);
    const float b1 = 0.9f, b2 = 0.95f, decay = (float)(1.0 - 1e-3f * (double)0.1f), ss = (float)(1e-3f / bc1),
                bs = (float)sqrt(bc2);
    for (int i = 0; i < n; i++) {
      float wi = W[i] * decay, mi = b1 * M[i] + (1.0f - b1) * g[i], vi = b2 * V[i] + (1.0f - b2) * g[i] * g[i];
      M[i] = mi, V[i] = vi, W[i] = wi - ss * mi / (sqrtf(vi) / bs + 1e-8f);
    }
    ck_assert_msg(memcmp(w, W, n * sizeof *w) == 0 && memcmp(m, M, n * sizeof *m) == 0 && memcmp(v, V, n * sizeof *v) == 0,
                  "step %d: AdamW differs from its formula", step);
  }
  /* rt_adamw_bf16: the same update, and wh = the new w rounded to bf16 as rt_round_weights does */
  float *w2 = malloc(n * sizeof *w2), *m2 = malloc(n * sizeof *m2), *v2 = malloc(n * sizeof *v2);
  float *wh = malloc(n * sizeof *wh), *want = malloc(n * sizeof *want);
  memcpy(w2, w, n * sizeof *w), memcpy(m2, m, n * sizeof *m), memcpy(v2, v, n * sizeof *v);
  w2[7] = NAN; /* a NaN weight rounds to a quiet NaN in both */
  memcpy(W, w2, n * sizeof *W);
  rt_adamw(W, g, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 4);
  rt_adamw_bf16(w2, wh, g, m2, v2, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 4);
  rt_round_weights(want, w2, n, RT_PREC_BF16);
  ck_assert_msg(memcmp(w2, W, n * sizeof *W) == 0, "rt_adamw_bf16 updates differently from rt_adamw");
  ck_assert_msg(memcmp(wh, want, n * sizeof *wh) == 0, "rt_adamw_bf16's working weights differ from rt_round_weights");
  free(w2), free(m2), free(v2), free(wh), free(want);
  free(w), free(m), free(v), free(g), free(W), free(M), free(V);
}
END_TEST

START_TEST(test_adamw_two_steps) {
  const int n = 5;
  float w[5] = {0.5f, -1.0f, 2.0f, 0.0f, -0.25f}, m[5] = {0}, v[5] = {0};
  const float g1[5] = {0.1f, -0.2f, 0.3f, 1.0f, -0.05f}, g2[5] = {-0.3f, 0.1f, 0.2f, -1.0f, 0.0f};
  double W[5], M[5] = {0}, Vv[5] = {0};
  for (int i = 0; i < n; i++) W[i] = w[i];
  const double lr = 0.01, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  for (int step = 1; step <= 2; step++) {
    const float *g = step == 1 ? g1 : g2;
    rt_adamw(w, g, m, v, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, step);
    for (int i = 0; i < n; i++) {
      W[i] -= lr * wd * W[i];
      M[i] = b1 * M[i] + (1 - b1) * g[i];
      Vv[i] = b2 * Vv[i] + (1 - b2) * (double)g[i] * g[i];
      double mh = M[i] / (1 - pow(b1, step)), vh = Vv[i] / (1 - pow(b2, step));
      W[i] -= lr * mh / (sqrt(vh) + eps);
    }
    for (int i = 0; i < n; i++) {
      ck_assert_msg(fabs(w[i] - W[i]) <= 1e-6 * fmax(1, fabs(W[i])), "step %d w[%d] %.9g vs %.9g", step, i, w[i],
                    W[i]);
      ck_assert_msg(fabs(m[i] - M[i]) <= 1e-6 * fabs(M[i]), "m[%d] %.9g vs %.9g", i, m[i], M[i]);
      ck_assert_msg(fabs(v[i] - Vv[i]) <= 1e-6 * fabs(Vv[i]), "v[%d] %.9g vs %.9g", i, v[i], Vv[i]);
    }
  }
  /* the first step moves every weight with a gradient by about lr (Adam's normalised step) */
  float a = 1.0f, ga = 123.0f, ma = 0, va = 0;
  rt_adamw(&a, &ga, &ma, &va, 1, 0.01f, 0.9f, 0.95f, 1e-8f, 0.0f, 1);
  ck_assert(fabs(a - 0.99) < 1e-6);
}
END_TEST

START_TEST(test_sgd) {
  float w[3] = {1.0f, -2.0f, 0.5f}, mom[3] = {0};
  const float g[3] = {0.5f, 0.25f, -1.0f};
  double W[3] = {1.0, -2.0, 0.5}, B[3] = {0};
  for (int step = 0; step < 3; step++) {
    rt_sgd(w, g, mom, 3, 0.1f, 0.9f, 0.01f);
    for (int i = 0; i < 3; i++) {
      double d = g[i] + 0.01 * W[i];
      B[i] = 0.9 * B[i] + d;
      W[i] -= 0.1 * B[i];
      ck_assert_msg(fabs(w[i] - W[i]) < 1e-6, "step %d w[%d] %.9g vs %.9g", step, i, w[i], W[i]);
    }
  }
}
END_TEST

START_TEST(test_big_arrays_threads) {
  /* element-wise updates and the sum of squares give the same bits for any thread count */
  const int64_t n = 300007;
  float *g = falloc((size_t)n), *w1 = falloc((size_t)n), *w3 = falloc((size_t)n);
  float *m1 = calloc((size_t)n, 4), *v1 = calloc((size_t)n, 4), *m3 = calloc((size_t)n, 4), *v3 = calloc((size_t)n, 4);
  fill_uniform(g, (size_t)n, -1, 1, 7);
  fill_uniform(w1, (size_t)n, -1, 1, 8);
  memcpy(w3, w1, (size_t)n * 4);
  double ref = 0;
  for (int64_t i = 0; i < n; i++) ref += (double)g[i] * g[i];
  rt_set_threads(1);
  double s1 = rt_sum_squares(g, n);
  rt_adamw(w1, g, m1, v1, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
  rt_set_threads(3);
  double s3 = rt_sum_squares(g, n);
  rt_adamw(w3, g, m3, v3, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
  ck_assert(s1 == s3);
  ck_assert_msg(fabs(s1 - ref) <= 1e-12 * ref, "%.17g vs %.17g", s1, ref);
  ck_assert(memcmp(w1, w3, (size_t)n * 4) == 0);
  ck_assert(memcmp(v1, v3, (size_t)n * 4) == 0);
  ck_assert(rt_sum_squares(g, 0) == 0.0);
  free(g), free(w1), free(w3), free(m1), free(v1), free(m3), free(v3);
}
END_TEST

START_TEST(test_lr_schedule) {
  RtTrainConfig c;
  memset(&c, 0, sizeof c);
  c.steps = 100;
  c.warmup = 10;
  c.lr = 1e-3;
  c.min_lr = 1e-4;
  c.schedule = RT_SCHED_COSINE;
  /* warm-up: linear from 0 to lr */
  ck_assert(fabs(rt_lr_at(&c, 1) - 1e-4) < 1e-15);
  ck_assert(fabs(rt_lr_at(&c, 5) - 5e-4) < 1e-15);
  ck_assert(fabs(rt_lr_at(&c, 10) - 1e-3) < 1e-15);
  /* cosine: halfway down at the middle of the decay, min_lr at the end, monotone */
  ck_assert(fabs(rt_lr_at(&c, 55) - 5.5e-4) < 1e-12);
  ck_assert(fabs(rt_lr_at(&c, 100) - 1e-4) < 1e-15);
  ck_assert(fabs(rt_lr_at(&c, 150) - 1e-4) < 1e-15);
  for (int s = 11; s <= 100; s++) ck_assert(rt_lr_at(&c, s) <= rt_lr_at(&c, s - 1) + 1e-18);
  c.schedule = RT_SCHED_LINEAR;
  ck_assert(fabs(rt_lr_at(&c, 55) - 5.5e-4) < 1e-12);
  ck_assert(fabs(rt_lr_at(&c, 28) - (1e-3 - 9e-4 * 18.0 / 90.0)) < 1e-12);
  ck_assert(fabs(rt_lr_at(&c, 100) - 1e-4) < 1e-15);
  c.schedule = RT_SCHED_CONSTANT;
  ck_assert(fabs(rt_lr_at(&c, 5) - 5e-4) < 1e-15);
  ck_assert(rt_lr_at(&c, 11) == 1e-3 && rt_lr_at(&c, 100) == 1e-3);
  c.warmup = 0;
  c.schedule = RT_SCHED_COSINE;
  ck_assert(fabs(rt_lr_at(&c, 1) - (1e-4 + 0.5 * (1 + cos(M_PI * 0.01)) * 9e-4)) < 1e-15);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * A hand-written model: bigram LM, logits[t] = E[token[t]] + bias
 * ------------------------------------------------------------------------------------------- */

#define V 256
#define EOFF 0
#define BOFF (V * V)

static void fake_forward(const RtStep *s, char *arena, const void *Wv, const int32_t *tokens, float *out) {
  (void)arena;
  const float *W = Wv;
  for (int i = 0; i < s->nb * s->nt; i++)
    for (int v = 0; v < V; v++) out[(size_t)i * V + v] = W[EOFF + tokens[i] * V + v] + W[BOFF + v];
}

/* mean cross-entropy and its gradient, in double */
static void fake_train(const RtStep *s, char *arena, const void *Wv, const int32_t *tokens, const int32_t *targets,
                       float *loss, float *G) {
  (void)arena;
  const float *W = Wv;
  int R = s->nb * s->nt;
  memset(G + EOFF, 0, sizeof(float) * V * V);
  memset(G + BOFF, 0, sizeof(float) * V);
  double total = 0, p[V];
  for (int i = 0; i < R; i++) {
    const float *e = W + EOFF + tokens[i] * V;
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < V; v++) {
      p[v] = (double)e[v] + W[BOFF + v];
      mx = p[v] > mx ? p[v] : mx;
    }
    for (int v = 0; v < V; v++) sum += (p[v] = exp(p[v] - mx));
    total += log(sum) - log(p[targets[i]]);
    for (int v = 0; v < V; v++) {
      double d = (p[v] / sum - (v == targets[i])) / R;
      G[EOFF + tokens[i] * V + v] += (float)d;
      G[BOFF + v] += (float)d;
    }
  }
  *loss = (float)(total / R);
}

/* offsets in bytes (RtParamInfo): EOFF, BOFF are float indices */
static const RtParamInfo fake_params[] = {
    {.name = "emb.weight", .ndim = 2, .shape = {V, V}, .dtype = RT_DT_F32, .offset = 4 * EOFF, .nbytes = 4 * V * V,
     .init = RT_INIT_NORMAL, .init_arg = 0.02f, .decay = 1, .trainable = 1},
    {.name = "bias", .ndim = 1, .shape = {V}, .dtype = RT_DT_F32, .offset = 4 * BOFF, .nbytes = 4 * V,
     .init = RT_INIT_ZEROS, .init_arg = 0.0f, .decay = 0, .trainable = 1},
};

static RtModel make_fake(const char *name) {
  RtModel m;
  memset(&m, 0, sizeof m);
  m.name = name;
  m.kind = "decoder";
  m.batch = 4;
  m.context = 8;
  m.vocab = V;
  m.out_per_token = 1;
  m.out_dim = V;
  m.nparams = 2;
  m.params = fake_params;
  m.weight_bytes = 4 * (V * V + V);
  m.param_count = V * V + V;
  m.param_bytes = 4 * m.param_count;
  m.flops_per_token = 2 * V;
  m.arena_bytes = 64;
  m.compile_options = "test";
  m.forward = fake_forward;
  m.train = fake_train;
  m.train_arena_bytes = 64;
  m.train_flops_per_token = 6 * V;
  RtTrainConfig c = {.steps = 20, .batch = 4, .micro_batch = 4, .warmup = 2, .seed = 1337, .eval_every = 5,
                     .checkpoint_every = 0, .lr = 0.05, .min_lr = 0.005, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                     .weight_decay = 0.1, .momentum = 0.9, .grad_clip = 1.0, .schedule = RT_SCHED_COSINE,
                     .optimizer = RT_OPT_ADAMW, .precision = RT_PREC_FP32, .data = NULL};
  m.train_config = c;
  return m;
}

/* ---------------------------------------------------------------------------------------------
 * Driving rt_main
 * ------------------------------------------------------------------------------------------- */

static char dir[64], errpath[128];
static char errbuf[4096];

/* dir/name, in a ring of 64 buffers (enough for the arguments of any one call) */
static const char *P(const char *name) {
  static char bufs[64][256];
  static int k;
  char *b = bufs[k++ % 64];
  snprintf(b, 256, "%s/%s", dir, name);
  return b;
}

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/rt_train_XXXXXX");
  ck_assert(mkdtemp(dir) != NULL);
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", dir);
  /* some repeated sentences: a bigram model learns them well */
  FILE *f = fopen(P("text.txt"), "w");
  ck_assert(f != NULL);
  const char *s[] = {"the cat sat on the mat. ", "a dog ate the bone. ", "the sun is hot today. "};
  for (int i = 0; i < 200; i++) fputs(s[(i * 7) % 3], f);
  fclose(f);
  f = fopen(P("tiny.txt"), "w");
  fputs("seventeen bytes!!", f); /* context 8: 9 to train on + 9 held out = 18 at least */
  fclose(f);
  f = fopen(P("just.txt"), "w");
  fputs("eighteen bytes!!!!", f);
  fclose(f);
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert(system(cmd) == 0);
}

/* rt_main(argv...) with stdout discarded and stderr captured in errbuf. NULL-terminated. */
static int run(const RtModel *m, ...) {
  char *argv[64];
  int argc = 0;
  argv[argc++] = "fake";
  va_list ap;
  va_start(ap, m);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 63;) argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  fflush(stdout);
  fflush(stderr);
  int so = dup(1), se = dup(2);
  int fo = open("/dev/null", O_WRONLY), fe = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ck_assert(so >= 0 && se >= 0 && fo >= 0 && fe >= 0);
  dup2(fo, 1);
  dup2(fe, 2);
  int rc = rt_main(argc, argv, m);
  fflush(stdout);
  fflush(stderr);
  dup2(so, 1);
  dup2(se, 2);
  close(so), close(se), close(fo), close(fe);
  FILE *f = fopen(errpath, "r");
  size_t n = f ? fread(errbuf, 1, sizeof errbuf - 1, f) : 0;
  errbuf[n] = 0;
  if (f) fclose(f);
  return rc;
}

static void load_params(const char *path, float *W) {
  RtSafetensors *st;
  RtError err;
  ck_assert_msg(rt_st_open(&st, path, &err) == 0, "%s", err.msg);
  const RtTensor *e, *b;
  int64_t se[2] = {V, V}, sb[1] = {V};
  ck_assert_msg(rt_st_require(st, "emb.weight", RT_DT_F32, 2, se, &e, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_st_require(st, "bias", RT_DT_F32, 1, sb, &b, &err) == 0, "%s", err.msg);
  memcpy(W + EOFF, e->data, e->nbytes);
  memcpy(W + BOFF, b->data, b->nbytes);
  rt_st_close(st);
}

static int count_lines(const char *path) {
  size_t n;
  unsigned char *b = slurp(path, &n);
  ck_assert_msg(b != NULL, "cannot read %s", path);
  int k = 0;
  for (size_t i = 0; i < n; i++) k += b[i] == '\n';
  free(b);
  return k;
}

/* the loss column (3rd) of CSV row `row` (1-based data row) */
static double csv_field(const char *path, int row, int field) {
  size_t n;
  unsigned char *b = slurp(path, &n);
  ck_assert(b != NULL);
  char *p = (char *)b;
  for (int r = 0; r < row && p; r++) p = strchr(p, '\n'), p = p ? p + 1 : NULL;
  ck_assert(p != NULL);
  for (int f = 0; f < field; f++) p = strchr(p, ',') + 1;
  double v = *p == ',' || *p == '\n' ? NAN : atof(p);
  free(b);
  return v;
}

START_TEST(test_train_loss_falls) {
  RtModel m = make_fake("fake-bigram");
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("w.safetensors"), "--steps", "40", "--lr",
                    "0.05", "--eval-every", "10", NULL) == 0,
                "%s", errbuf);
  /* CSV: header + one row per step; default log and SVG next to --out */
  ck_assert_int_eq(count_lines(P("w.csv")), 41);
  double first = csv_field(P("w.csv"), 1, 2), last = csv_field(P("w.csv"), 40, 2);
  ck_assert_msg(first > 5.0 && first < 5.9, "first loss %g (ln 256 = 5.545)", first);
  ck_assert_msg(last < first - 2.0, "loss %g -> %g", first, last);
  ck_assert(isnan(csv_field(P("w.csv"), 9, 3)));
  double v10 = csv_field(P("w.csv"), 10, 3), v40 = csv_field(P("w.csv"), 40, 3);
  ck_assert_msg(v40 < v10, "val %g -> %g", v10, v40);
  ck_assert(fabs(csv_field(P("w.csv"), 40, 4) - v40 / log(2.0)) < 1e-5);
  size_t n;
  unsigned char *svg = slurp(P("w.svg"), &n);
  ck_assert(svg != NULL && !strncmp((char *)svg, "<svg", 4) && strstr((char *)svg, "</svg>") &&
            strstr((char *)svg, "<polyline") && strstr((char *)svg, "<circle"));
  free(svg);
  /* the weights file holds the parameters */
  RtSafetensors *st;
  RtError err;
  ck_assert_msg(rt_st_open(&st, P("w.safetensors"), &err) == 0, "%s", err.msg);
  ck_assert_int_eq(rt_st_count(st), 2);
  ck_assert_str_eq(rt_st_metadata(st, "modelc_model"), "fake-bigram");
  rt_st_close(st);
  /* the trained weights are usable by eval, and better than fresh ones */
  ck_assert(run(&m, "eval", "--weights", P("w.safetensors"), "--data", P("text.txt"), NULL) == 0);
  /* --log elsewhere, SGD */
  m.train_config.optimizer = RT_OPT_SGD;
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("s.safetensors"), "--steps", "30", "--lr", "1.0",
                    "--log", P("sgd.csv"), "--eval-every", "0", NULL) == 0,
                "%s", errbuf);
  ck_assert_int_eq(count_lines(P("sgd.csv")), 31);
  ck_assert(access(P("sgd.svg"), F_OK) == 0);
  ck_assert_msg(csv_field(P("sgd.csv"), 30, 2) < csv_field(P("sgd.csv"), 1, 2) - 0.5, "sgd loss does not fall");
  ck_assert(isnan(csv_field(P("sgd.csv"), 30, 3)));
}
END_TEST

START_TEST(test_micro_batches) {
  RtModel m = make_fake("fake-bigram");
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("a.safetensors"), "--steps", "6", "--batch", "4",
                    "--micro-batch", "4", NULL) == 0, "%s", errbuf);
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("b.safetensors"), "--steps", "6", "--batch", "4",
                    "--micro-batch", "2", NULL) == 0, "%s", errbuf);
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("c.safetensors"), "--steps", "6", "--batch", "4",
                    "--micro-batch", "1", "--threads", "3", NULL) == 0, "%s", errbuf);
  float *a = falloc(V * V + V), *b = falloc(V * V + V), *c = falloc(V * V + V);
  load_params(P("a.safetensors"), a);
  load_params(P("b.safetensors"), b);
  load_params(P("c.safetensors"), c);
  double d = 0, moved = 0;
  float *w0 = calloc(V * V + V, 4);
  for (int i = 0; i < V * V + V; i++) {
    d = fmax(d, fabs(a[i] - b[i]));
    d = fmax(d, fabs(a[i] - c[i]));
  }
  ck_assert_msg(d <= 1e-6, "B=4,M=4 vs M=2/M=1 differ by %g", d);
  /* and training did move the weights (bias starts at zero) */
  for (int i = BOFF; i < BOFF + V; i++) moved = fmax(moved, fabs(a[i] - w0[i]));
  ck_assert(moved > 1e-3);
  /* a batch larger than the compiled one, by accumulation */
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("d.safetensors"), "--steps", "2", "--batch", "12",
                    NULL) == 0, "%s", errbuf);
  free(a), free(b), free(c), free(w0);
}
END_TEST

static int same_file(const char *x, const char *y) {
  size_t nx = 0, ny = 0;
  unsigned char *a = slurp(x, &nx), *b = slurp(y, &ny);
  int same = a && b && nx == ny && memcmp(a, b, nx) == 0;
  free(a);
  free(b);
  return same;
}

START_TEST(test_resume_bit_exact) {
  RtModel m = make_fake("fake-bigram");
  /* one session of 10 steps, against 5 + resume 5 (cosine schedule with warm-up, clipping on) */
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("full.safetensors"), "--steps", "10",
                    "--eval-every", "3", NULL) == 0, "%s", errbuf);
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("half.safetensors"), "--steps", "10",
                    "--stop-at", "5", "--checkpoint", P("ck.safetensors"), "--eval-every", "3", NULL) == 0,
                "%s", errbuf);
  ck_assert_int_eq(count_lines(P("half.csv")), 6);
  ck_assert(!same_file(P("full.safetensors"), P("half.safetensors")));
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("half.safetensors"), "--resume",
                    P("ck.safetensors"), "--checkpoint", P("ck2.safetensors"), "--eval-every", "3", NULL) == 0,
                "%s", errbuf);
  ck_assert(same_file(P("full.safetensors"), P("half.safetensors")));
  /* the log continues: header + 10 rows, and the same losses */
  ck_assert_int_eq(count_lines(P("half.csv")), 11);
  for (int r = 1; r <= 10; r++) ck_assert(csv_field(P("full.csv"), r, 2) == csv_field(P("half.csv"), r, 2));
  ck_assert(csv_field(P("full.csv"), 9, 3) == csv_field(P("half.csv"), 9, 3));

  /* a constant schedule: --steps 4 then --resume --steps 8 is one run of 8 (SGD state too) */
  m.train_config.schedule = RT_SCHED_CONSTANT;
  m.train_config.warmup = 0;
  m.train_config.optimizer = RT_OPT_SGD;
  ck_assert(run(&m, "train", "--data", P("text.txt"), "--out", P("c8.safetensors"), "--steps", "8", "--lr", "0.5",
                "--threads", "1", NULL) == 0);
  ck_assert(run(&m, "train", "--data", P("text.txt"), "--out", P("c4.safetensors"), "--steps", "4", "--lr", "0.5",
                "--checkpoint", P("cks.safetensors"), "--checkpoint-every", "2", NULL) == 0);
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("c4.safetensors"), "--steps", "8", "--lr", "0.5",
                    "--resume", P("cks.safetensors"), "--threads", "3", NULL) == 0, "%s", errbuf);
  ck_assert(same_file(P("c8.safetensors"), P("c4.safetensors")));
}
END_TEST

/* --tokens rows cycle through steps and a resume continues at the next row: 3 rows at batch 2,
 * 5 steps in one session against 2 + resume 3 (4 rows drawn before the checkpoint, not a multiple
 * of 3: a cursor restarted at row 0 would train on other rows). */
START_TEST(test_resume_fixed_rows) {
  RtModel m = make_fake("fake-bigram");
  int32_t ids[3 * 8], tgt[3 * 8];
  for (int i = 0; i < 3 * 8; i++) ids[i] = (i * 7) % V, tgt[i] = (i * 5 + 3) % V;
  const int64_t shape[2] = {3, 8};
  RtError err;
  ck_assert(rt_npy_write(P("t.npy"), RT_DT_I32, 2, shape, ids, &err) == 0);
  ck_assert(rt_npy_write(P("y.npy"), RT_DT_I32, 2, shape, tgt, &err) == 0);
#define ROWS "train", "--tokens", P("t.npy"), "--targets", P("y.npy"), "--batch", "2", "--steps", "5"
  ck_assert_msg(run(&m, ROWS, "--out", P("full.safetensors"), NULL) == 0, "%s", errbuf);
  ck_assert_msg(run(&m, ROWS, "--out", P("half.safetensors"), "--stop-at", "2", "--checkpoint", P("ck.safetensors"),
                    NULL) == 0, "%s", errbuf);
  ck_assert(!same_file(P("full.safetensors"), P("half.safetensors")));
  RtSafetensors *st;
  ck_assert(rt_st_open(&st, P("ck.safetensors"), &err) == 0);
  ck_assert_str_eq(rt_st_metadata(st, "tokens_rows"), "3");
  ck_assert_str_eq(rt_st_metadata(st, "tokens_next"), "1"); /* rows 0 1 | 2 0: row 1 is next */
  rt_st_close(st);
  ck_assert_msg(run(&m, ROWS, "--out", P("half.safetensors"), "--resume", P("ck.safetensors"), NULL) == 0, "%s",
                errbuf);
  ck_assert(same_file(P("full.safetensors"), P("half.safetensors")));
  /* other rows than the checkpointed run's are refused */
  const int64_t shape4[2] = {4, 8};
  int32_t ids4[4 * 8] = {0};
  ck_assert(rt_npy_write(P("t4.npy"), RT_DT_I32, 2, shape4, ids4, &err) == 0);
  ck_assert(rt_npy_write(P("y4.npy"), RT_DT_I32, 2, shape4, ids4, &err) == 0);
  ck_assert(run(&m, "train", "--tokens", P("t4.npy"), "--targets", P("y4.npy"), "--batch", "2", "--steps", "5",
                "--out", P("x.safetensors"), "--resume", P("ck.safetensors"), NULL) == 1);
  ck_assert_msg(strstr(errbuf, "checkpoint metadata 'tokens_rows' is '3': the checkpointed run trained on 3 --tokens "
                               "rows, this one on 4") != NULL, "%s", errbuf);
#undef ROWS
}
END_TEST

/* The metadata checks (rt_ckpt_read_meta) name the field that is wrong, at each bound. */
typedef struct Kv {
  const char *k[20], *v[20];
} Kv;
static const char *kv_get(const void *src, const char *key) {
  const Kv *kv = src;
  for (int i = 0; i < 20 && kv->k[i]; i++)
    if (!strcmp(kv->k[i], key)) return kv->v[i];
  return NULL;
}
static int meta_check(const char *extra_k, const char *extra_v, const char *extra_k2, const char *extra_v2,
                      int64_t rows, RtCkptMeta *out, RtError *err) {
  Kv kv = {{"modelc_checkpoint", "model", "optimizer", "step", "rng_state", "rng_inc", extra_k, extra_k2},
           {"1", "m", "adamw", "4", "5", "7", extra_v, extra_v2}};
  err->msg[0] = 0;
  return rt_ckpt_read_meta("ck", kv_get, &kv, "m", RT_OPT_ADAMW, rows, out, err);
}

START_TEST(test_checkpoint_meta) {
  RtCkptMeta o;
  RtError err;
  ck_assert(meta_check(NULL, NULL, NULL, NULL, 0, &o, &err) == 0);
  ck_assert(o.step == 4 && o.rng_state == 5 && o.rng_inc == 7 && o.fix_next == 0 && !o.have_loss_scale);
  ck_assert(meta_check(NULL, NULL, NULL, NULL, 3, &o, &err) == 0 && o.fix_next == 0); /* older: row 0 */
  ck_assert(meta_check("tokens_rows", "3", "tokens_next", "2", 3, &o, &err) == 0 && o.fix_next == 2);
  ck_assert(meta_check("tokens_rows", "3", "tokens_next", "3", 3, &o, &err) == -1);
  ck_assert_str_eq(err.msg, "ck: checkpoint metadata 'tokens_next' is '3': expected a row from 0 to 2");
  ck_assert(meta_check("tokens_rows", "3", "tokens_next", "-1", 3, &o, &err) == -1);
  ck_assert(strstr(err.msg, "'tokens_next' is '-1'") != NULL);
  ck_assert(meta_check("tokens_rows", "3", NULL, NULL, 3, &o, &err) == -1);
  ck_assert(strstr(err.msg, "has 'tokens_rows' but no 'tokens_next'") != NULL);
  ck_assert(meta_check("tokens_next", "0", NULL, NULL, 3, &o, &err) == -1);
  ck_assert(strstr(err.msg, "'tokens_next' is '0' without 'tokens_rows'") != NULL);
  ck_assert(meta_check("tokens_rows", "3x", "tokens_next", "0", 3, &o, &err) == -1);
  ck_assert(strstr(err.msg, "'tokens_rows' is '3x': expected a row count") != NULL);
  ck_assert(meta_check("tokens_rows", "3", "tokens_next", "0", 0, &o, &err) == -1);
  ck_assert(strstr(err.msg, "this one on none") != NULL);
  ck_assert(meta_check("elapsed_s", "nan", NULL, NULL, 0, &o, &err) == -1);
  ck_assert(strstr(err.msg, "'elapsed_s' is 'nan'") != NULL);
  ck_assert(meta_check("elapsed_s", "12.5", "loss_scale", "8", 0, &o, &err) == 0);
  ck_assert(o.elapsed == 12.5 && o.have_loss_scale && o.loss_scale == 8);
}
END_TEST

START_TEST(test_checkpoint_contents) {
  RtModel m = make_fake("fake-bigram");
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--out", P("w.safetensors"), "--steps", "3", "--seed", "42",
                    "--checkpoint", P("ck.safetensors"), NULL) == 0, "%s", errbuf);
  RtSafetensors *st;
  RtError err;
  ck_assert_msg(rt_st_open(&st, P("ck.safetensors"), &err) == 0, "%s", err.msg);
  ck_assert_int_eq(rt_st_count(st), 6);
  const char *names[] = {"emb.weight", "bias", "opt.m.emb.weight", "opt.m.bias", "opt.v.emb.weight", "opt.v.bias"};
  for (int i = 0; i < 6; i++) ck_assert_msg(rt_st_find(st, names[i]) != NULL, "%s missing", names[i]);
  ck_assert_str_eq(rt_st_metadata(st, "model"), "fake-bigram");
  ck_assert_str_eq(rt_st_metadata(st, "optimizer"), "adamw");
  ck_assert_str_eq(rt_st_metadata(st, "step"), "3");
  /* the RNG state is the PCG32 stream seeded with 42 after 3 steps x 4 rows (one draw each) */
  RtRng g;
  rt_rng_seed(&g, 42);
  for (int i = 0; i < 12; i++) rt_rng_u32(&g);
  char s[32], inc[32];
  snprintf(s, sizeof s, "%llu", (unsigned long long)g.state);
  snprintf(inc, sizeof inc, "%llu", (unsigned long long)g.inc);
  ck_assert_str_eq(rt_st_metadata(st, "rng_state"), s);
  ck_assert_str_eq(rt_st_metadata(st, "rng_inc"), inc);
  /* the weights in the checkpoint are the final weights */
  float *a = falloc(V * V + V), *b = falloc(V * V + V);
  load_params(P("w.safetensors"), a);
  load_params(P("ck.safetensors"), b);
  ck_assert(memcmp(a, b, sizeof(float) * (V * V + V)) == 0);
  /* v is non-negative, and nonzero where the bias had gradients */
  const RtTensor *v = rt_st_find(st, "opt.v.bias");
  float vb[V];
  memcpy(vb, v->data, sizeof vb);
  int pos = 0;
  for (int i = 0; i < V; i++) ck_assert(vb[i] >= 0), pos += vb[i] > 0;
  ck_assert(pos > 0);
  rt_st_close(st);
  /* SGD: opt.mom.* */
  m.train_config.optimizer = RT_OPT_SGD;
  ck_assert(run(&m, "train", "--data", P("text.txt"), "--out", P("w.safetensors"), "--steps", "2", "--checkpoint",
                P("cks.safetensors"), NULL) == 0);
  ck_assert(rt_st_open(&st, P("cks.safetensors"), &err) == 0);
  ck_assert_int_eq(rt_st_count(st), 4);
  ck_assert(rt_st_find(st, "opt.mom.emb.weight") && rt_st_find(st, "opt.mom.bias"));
  ck_assert_str_eq(rt_st_metadata(st, "optimizer"), "sgd");
  rt_st_close(st);
  free(a), free(b);
}
END_TEST

#define EXPECT_FAIL(substr, ...)                                                                                     \
  do {                                                                                                               \
    int rc_ = run(__VA_ARGS__, NULL);                                                                                \
    ck_assert_msg(rc_ == 1, "exit %d, expected 1 (%s)", rc_, substr);                                                \
    ck_assert_msg(strstr(errbuf, substr) != NULL, "message '%s' lacks '%s'", errbuf, substr);                        \
  } while (0)

START_TEST(test_bad_inputs) {
  RtModel m = make_fake("fake-bigram");
  char text[256], out[256];
  snprintf(text, sizeof text, "%s", P("text.txt"));
  snprintf(out, sizeof out, "%s", P("w.safetensors"));
  EXPECT_FAIL("--data FILE (or --tokens and --targets) is required", &m, "train", "--out", out);
  EXPECT_FAIL("--out W.safetensors is required", &m, "train", "--data", text);
  EXPECT_FAIL("No such file", &m, "train", "--data", P("missing.txt"), "--out", out);
  EXPECT_FAIL("17 bytes is too small", &m, "train", "--data", P("tiny.txt"), "--out", out);
  ck_assert_msg(run(&m, "train", "--data", P("just.txt"), "--out", out, "--steps", "2", "--eval-every", "1", NULL) == 0,
                "%s", errbuf);
  EXPECT_FAIL("does not divide", &m, "train", "--data", text, "--out", out, "--batch", "4", "--micro-batch", "3");
  EXPECT_FAIL("exceeds the compiled batch", &m, "train", "--data", text, "--out", out, "--batch", "8",
              "--micro-batch", "8");
  EXPECT_FAIL("bad --steps", &m, "train", "--data", text, "--out", out, "--steps", "0");
  EXPECT_FAIL("unknown option", &m, "train", "--data", text, "--out", out, "--temperature", "1");
  EXPECT_FAIL("exclude each other", &m, "train", "--data", text, "--out", out, "--weights", out, "--resume", out);
  EXPECT_FAIL("needs --checkpoint", &m, "train", "--data", text, "--out", out, "--checkpoint-every", "2");
  /* checkpoints: another model's, another optimiser's, not a checkpoint, corrupt, missing state */
  RtModel other = make_fake("other-model");
  ck_assert(run(&other, "train", "--data", text, "--out", P("o.safetensors"), "--steps", "2", "--checkpoint",
                P("other.safetensors"), NULL) == 0);
  EXPECT_FAIL("checkpoint of model 'other-model', but this program is model 'fake-bigram'", &m, "train", "--data",
              text, "--out", out, "--resume", P("other.safetensors"));
  RtModel sgd = make_fake("fake-bigram");
  sgd.train_config.optimizer = RT_OPT_SGD;
  ck_assert(run(&m, "train", "--data", text, "--out", out, "--steps", "2", "--checkpoint", P("ck.safetensors"),
                NULL) == 0);
  EXPECT_FAIL("holds adamw optimiser state, but this run uses sgd", &sgd, "train", "--data", text, "--out", out,
              "--resume", P("ck.safetensors"));
  ck_assert(run(&m, "init", "--out", P("init.safetensors"), NULL) == 0);
  EXPECT_FAIL("not a modelc training checkpoint", &m, "train", "--data", text, "--out", out, "--resume",
              P("init.safetensors"));
  size_t n;
  unsigned char *ck = slurp(P("ck.safetensors"), &n);
  ck_assert(ck != NULL && n > 100);
  FILE *f = fopen(P("corrupt.safetensors"), "wb");
  fwrite(ck, 1, n - 100, f); /* truncated */
  fclose(f);
  free(ck);
  EXPECT_FAIL("corrupt.safetensors", &m, "train", "--data", text, "--out", out, "--resume", P("corrupt.safetensors"));
  EXPECT_FAIL("beyond --steps", &m, "train", "--data", text, "--out", out, "--resume", P("ck.safetensors"), "--steps",
              "1");
  /* a model of other shapes with the same name: its checkpoint does not fit */
  static const RtParamInfo small_params[] = {
      {.name = "emb.weight", .ndim = 2, .shape = {V, 128}, .dtype = RT_DT_F32, .offset = 0, .nbytes = 4 * V * 128,
       .init = RT_INIT_NORMAL, .init_arg = 0.02f, .decay = 1, .trainable = 1},
      {.name = "bias", .ndim = 1, .shape = {V}, .dtype = RT_DT_F32, .offset = 4 * BOFF, .nbytes = 4 * V,
       .init = RT_INIT_ZEROS, .init_arg = 0.0f, .decay = 0, .trainable = 1}};
  RtModel shaped = make_fake("fake-bigram");
  shaped.params = small_params;
  shaped.nparams = 2;
  EXPECT_FAIL("emb.weight", &shaped, "grad", "--weights", P("ck.safetensors"), "--tokens", P("none.npy"),
              "--targets", P("none.npy"), "--out", P("g.safetensors"));
  EXPECT_FAIL("shape", &shaped, "train", "--data", text, "--out", out, "--resume", P("ck.safetensors"));
  /* no training support; classifiers */
  RtModel notrain = make_fake("fake-bigram");
  notrain.train = NULL;
  EXPECT_FAIL("built without training support (add the autodiff pass)", &notrain, "train", "--data", text, "--out",
              out);
  EXPECT_FAIL("built without training support", &notrain, "grad", "--tokens", "x", "--targets", "y", "--out", out);
  RtModel cls = make_fake("fake-bigram");
  cls.out_per_token = 0;
  cls.out_dim = 3;
  EXPECT_FAIL("classifier", &cls, "train", "--data", text, "--out", out);
  /* help works without training support */
  ck_assert(run(&notrain, "train", "--help", NULL) == 0);
  ck_assert(run(&m, "grad", "--help", NULL) == 0);
}
END_TEST

START_TEST(test_grad) {
  RtModel m = make_fake("fake-bigram");
  RtError err;
  ck_assert(run(&m, "init", "--seed", "5", "--out", P("w.safetensors"), NULL) == 0);
  int32_t tok[2 * 8], tgt[2 * 8];
  for (int i = 0; i < 16; i++) tok[i] = (i * 37) % V, tgt[i] = (i * 11 + 3) % V;
  int64_t shape[2] = {2, 8};
  ck_assert(rt_npy_write(P("t.npy"), RT_DT_I32, 2, shape, tok, &err) == 0);
  ck_assert(rt_npy_write(P("y.npy"), RT_DT_I32, 2, shape, tgt, &err) == 0);
  ck_assert_msg(run(&m, "grad", "--weights", P("w.safetensors"), "--tokens", P("t.npy"), "--targets", P("y.npy"),
                    "--out", P("g.safetensors"), NULL) == 0, "%s", errbuf);
  float *W = falloc(V * V + V), *G = falloc(V * V + V), *H = falloc(V * V + V);
  load_params(P("w.safetensors"), W);
  load_params(P("g.safetensors"), G);
  RtStep s = {2, 8, 0, NULL, NULL, 0, 1.0f, NULL};
  float loss;
  fake_train(&s, NULL, W, tok, tgt, &loss, H);
  ck_assert(memcmp(G, H, sizeof(float) * (V * V + V)) == 0);
  RtSafetensors *st;
  ck_assert(rt_st_open(&st, P("g.safetensors"), &err) == 0);
  ck_assert_int_eq(rt_st_count(st), 2);
  ck_assert(fabs(atof(rt_st_metadata(st, "loss")) - loss) < 1e-6);
  rt_st_close(st);
  /* targets of another shape, out of range */
  int64_t bad[2] = {2, 7};
  ck_assert(rt_npy_write(P("y2.npy"), RT_DT_I32, 2, bad, tgt, &err) == 0);
  EXPECT_FAIL("targets must be [2,8]", &m, "grad", "--weights", P("w.safetensors"), "--tokens", P("t.npy"),
              "--targets", P("y2.npy"), "--out", P("g.safetensors"));
  tgt[5] = 999;
  ck_assert(rt_npy_write(P("y3.npy"), RT_DT_I32, 2, shape, tgt, &err) == 0);
  EXPECT_FAIL("outside [0,256)", &m, "grad", "--weights", P("w.safetensors"), "--tokens", P("t.npy"), "--targets",
              P("y3.npy"), "--out", P("g.safetensors"));
  EXPECT_FAIL("--targets FILE is required", &m, "grad", "--weights", P("w.safetensors"), "--tokens", P("t.npy"),
              "--out", P("g.safetensors"));
  free(W), free(G), free(H);
}
END_TEST

/* A frozen parameter (trainable = 0) keeps its loaded values through training, weight decay
 * included, while the others learn. */
START_TEST(test_train_frozen_param) {
  static const RtParamInfo frozen_params[] = {
      {.name = "emb.weight", .ndim = 2, .shape = {V, V}, .dtype = RT_DT_F32, .offset = 4 * EOFF, .nbytes = 4 * V * V,
       .init = RT_INIT_NORMAL, .init_arg = 0.02f, .decay = 1, .trainable = 0},
      {.name = "bias", .ndim = 1, .shape = {V}, .dtype = RT_DT_F32, .offset = 4 * BOFF, .nbytes = 4 * V,
       .init = RT_INIT_ZEROS, .init_arg = 0.0f, .decay = 0, .trainable = 1}};
  RtModel m = make_fake("fake-bigram");
  m.params = frozen_params;
  ck_assert(run(&m, "init", "--seed", "5", "--out", P("f0.safetensors"), NULL) == 0);
  ck_assert_msg(run(&m, "train", "--data", P("text.txt"), "--weights", P("f0.safetensors"), "--out",
                    P("f1.safetensors"), "--steps", "5", "--lr", "0.05", "--eval-every", "0", NULL) == 0,
                "%s", errbuf);
  float *a = falloc(V * V + V), *b = falloc(V * V + V);
  load_params(P("f0.safetensors"), a);
  load_params(P("f1.safetensors"), b);
  ck_assert(memcmp(a + EOFF, b + EOFF, sizeof(float) * V * V) == 0); /* frozen (decay 0.1 would shrink it) */
  ck_assert(memcmp(a + BOFF, b + BOFF, sizeof(float) * V) != 0);     /* trained */
  free(a), free(b);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("rt_train");
  TCase *o = tcase_create("optim");
  tcase_add_test(o, test_adamw_two_steps);
  tcase_add_test(o, test_adamw_bits_any_isa);
  tcase_add_test(o, test_sgd);
  tcase_add_test(o, test_big_arrays_threads);
  tcase_add_test(o, test_lr_schedule);
  suite_add_tcase(s, o);
  TCase *t = tcase_create("train");
  tcase_add_checked_fixture(t, setup, teardown);
  tcase_set_timeout(t, 120);
  tcase_add_test(t, test_train_loss_falls);
  tcase_add_test(t, test_train_frozen_param);
  tcase_add_test(t, test_micro_batches);
  tcase_add_test(t, test_resume_bit_exact);
  tcase_add_test(t, test_checkpoint_contents);
  tcase_add_test(t, test_resume_fixed_rows);
  tcase_add_test(t, test_checkpoint_meta);
  tcase_add_test(t, test_bad_inputs);
  tcase_add_test(t, test_grad);
  suite_add_tcase(s, t);
  return s;
}

int main(void) {
  SRunner *r = srunner_create(suite());
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
