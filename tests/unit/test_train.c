/* test_train.c: training through generated code against PyTorch (tests/reference/fixtures).
 *
 * For gpt-tiny and the two test models (RMSNorm/SwiGLU/sinusoidal/untied head; ReLU/mean-pool
 * classifier), `PROG grad` on the fixture batch must give PyTorch's loss and the gradient of every
 * parameter (float64 autograd in the fixtures). Tolerance: loss within 1e-5 relative; each
 * parameter's gradient within 1e-4 of its largest element (max |ours - ref| / max |ref|). The
 * backward pass chains about twice as many float32 reductions as the forward (whose logits agree
 * to ~1e-6), some of them over all B*T rows (weight gradients sum 512 row products), and the
 * gradients of small parameters (norm gains, biases) are sums of many terms of both signs, so
 * their relative rounding is larger than the forward's; 1e-4 still catches any wrong rule, which
 * shows at 1e-2 or worse. bert-tiny has dropout 0.1: `grad` computes without dropout (seed 0, as
 * PyTorch's fixture in eval mode); `train` draws masks (test_dropout_trains).
 */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../runtime/modelc_rt.h"
#include "../../runtime/io/io.h" /* .npy, safetensors (internal) */
#include "sh.h"
#include "npy_test.h"

#define FIX "tests/reference/fixtures"
/* with xent_fuse: the PyTorch comparisons below hold for the fused LM head and loss (a no-op on the
 * classifiers) */
#define TRAIN_PASSES "autodiff,xent_fuse,constfold,cse,fuse,dce,memplan"
static char tmp[256];

static const struct {
  const char *name, *spec;
} models[] = {
    {"gpt-tiny", "examples/gpt-tiny.yaml"},
    {"bert-tiny", "examples/bert-tiny.yaml"}, /* dropout 0.1: `grad` runs without dropout, as eval mode */
    {"llama-tiny", "tests/reference/specs/llama-tiny.yaml"},
    {"enc-mean", "tests/reference/specs/enc-mean.yaml"},
};

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_train_XXXXXX");
  ck_assert(mkdtemp(tmp));
  for (size_t i = 0; i < sizeof models / sizeof *models; i++)
    ck_assert_int_eq(sh("%s build --passes=" TRAIN_PASSES " %s -o %s/%s", MODELC_BIN, models[i].spec, tmp,
                        models[i].name),
                     0);
}

static void teardown(void) { sh("rm -rf %s", tmp); }

/* The worst over parameters of max |ours - ref| / max |ref| between the gradients in `path` and
 * those in `rp` (named `fixture` in messages); each must be within tol. */
static double grad_diff(const char *path, const char *rp, const char *fixture, double tol, char worst_name[128],
                        int *n) {
  RtSafetensors *ours, *ref;
  RtError err;
  ck_assert_msg(rt_st_open(&ours, path, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_st_open(&ref, rp, &err) == 0, "%s", err.msg);
  double worst = 0;
  for (int i = 0; i < rt_st_count(ref); i++) {
    const RtTensor *r = rt_st_tensor(ref, i), *o = rt_st_find(ours, r->name);
    ck_assert_msg(o, "%s: no gradient for %s", fixture, r->name);
    ck_assert_int_eq(o->nbytes, r->nbytes);
    const float *a = o->data, *b = r->data;
    double md = 0, mb = 1e-30;
    for (size_t k = 0; k < r->nbytes / 4; k++) {
      double dd = fabs((double)a[k] - b[k]);
      if (!(dd <= md)) md = dd;
      if (fabs(b[k]) > mb) mb = fabs(b[k]);
    }
    if (md / mb > worst || md != md) {
      worst = md / mb;
      snprintf(worst_name, 128, "%s", r->name);
    }
    ck_assert_msg(md / mb <= tol, "%s: gradient of %s differs from PyTorch by %g (max |ref| %g)", fixture, r->name,
                  md / mb, mb);
  }
  *n = rt_st_count(ref);
  rt_st_close(ours);
  rt_st_close(ref);
  return worst;
}

/* grad_diff against the fixture's PyTorch gradients. */
static double grad_error(const char *path, const char *fixture, double tol, char worst_name[128], int *n) {
  char rp[512];
  snprintf(rp, sizeof rp, FIX "/%s/grads.safetensors", fixture);
  return grad_diff(path, rp, fixture, tol, worst_name, n);
}

/* Runs PROG grad on the fixture's batch, writing DIR/STEM.safetensors; returns the loss and sets
 * *want to PyTorch's. */
static double run_grad(const char *prog, const char *fixture, const char *stem, double *want) {
  ck_assert_int_eq(sh("%s grad --weights " FIX "/%s/weights.safetensors --tokens " FIX "/%s/tokens.npy --targets " FIX
                      "/%s/targets.npy --out %s/%s.safetensors > %s/%s.txt",
                      prog, fixture, fixture, fixture, tmp, stem, tmp, stem),
                   0);
  char path[512];
  snprintf(path, sizeof path, "%s/%s.txt", tmp, stem);
  double loss = read_loss(path);
  RtNpy ref_loss;
  RtError err;
  snprintf(path, sizeof path, FIX "/%s/loss.npy", fixture);
  ck_assert_msg(rt_npy_read(path, &ref_loss, &err) == 0, "%s", err.msg);
  *want = ((float *)ref_loss.data)[0];
  rt_npy_free(&ref_loss);
  return loss;
}

START_TEST(test_gradients_match_pytorch) {
  const char *name = models[_i].name;
  char prog[512], path[512];
  snprintf(prog, sizeof prog, "%s/%s", tmp, name);
  double want, loss = run_grad(prog, name, "g", &want);
  printf("%s: loss %.7f, PyTorch %.7f\n", name, loss, want);
  ck_assert_msg(fabs(loss - want) <= 1e-5 * fabs(want), "%s: loss %.8g vs PyTorch %.8g", name, loss, want);

  snprintf(path, sizeof path, "%s/g.safetensors", tmp);
  char worst_name[128] = "";
  int n = 0;
  double worst = grad_error(path, name, 1e-5, worst_name, &n);
  printf("%s: %d parameter gradients, worst normalised error %.3g (%s)\n", name, n, worst, worst_name);
}
END_TEST

/* Ten AdamW steps on the fixture batch (constant lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay
 * 0.1 on 2-D weights only, no clipping: the specs tests/reference/specs/NAME-adamw.yaml) give, step by
 * step, the losses of torch.optim.AdamW with the same settings (both in float32). Tolerance 1e-5
 * relative per step: measured ~1e-6, and the loss falls from 6.0 to 2.1, so an optimiser error
 * (bias correction, decay on the wrong parameters, a missed step) shows at 1e-3 or more. */
static const struct {
  const char *fixture, *spec;
} adamw_models[] = {
    {"gpt-tiny", "tests/reference/specs/gpt-tiny-adamw.yaml"},
    {"bert-tiny", "tests/reference/specs/bert-tiny-adamw.yaml"}, /* dropout 0: PyTorch ran in eval mode */
};

START_TEST(test_adamw_steps_match_pytorch) {
  const char *fx = adamw_models[_i].fixture;
  ck_assert_int_eq(sh("%s build %s -o %s/ga", MODELC_BIN, adamw_models[_i].spec, tmp), 0);
  ck_assert_int_eq(sh("%s/ga train --weights " FIX "/%s/weights.safetensors --tokens " FIX "/%s/tokens.npy --targets " FIX
                      "/%s/targets.npy --out %s/ga.safetensors --log %s/ga.csv 2>/dev/null",
                      tmp, fx, fx, fx, tmp, tmp),
                   0);
  RtNpy ref;
  RtError err;
  char path[512], line[512];
  snprintf(path, sizeof path, FIX "/%s/adamw_losses.npy", fx);
  ck_assert_msg(rt_npy_read(path, &ref, &err) == 0, "%s", err.msg);
  snprintf(path, sizeof path, "%s/ga.csv", tmp);
  FILE *f = fopen(path, "r");
  ck_assert(f);
  ck_assert(fgets(line, sizeof line, f)); /* header */
  int steps = 0;
  long step;
  double lr, loss;
  while (fgets(line, sizeof line, f) && sscanf(line, "%ld,%lf,%lf", &step, &lr, &loss) == 3) {
    ck_assert_int_eq(step, steps + 1);
    ck_assert_int_lt(steps, ref.shape[0]);
    double want = ((float *)ref.data)[steps];
    printf("%s AdamW step %ld: loss %.7f, PyTorch %.7f\n", fx, step, loss, want);
    ck_assert_msg(fabs(loss - want) <= 1e-5 * fmax(1.0, fabs(want)), "%s step %ld: loss %.7g vs PyTorch %.7g", fx, step,
                  loss, want);
    steps++;
  }
  fclose(f);
  ck_assert_int_eq(steps, ref.shape[0]);
  rt_npy_free(&ref);
}
END_TEST

static double csv_loss(const char *path, int step) {
  FILE *f = fopen(path, "r");
  ck_assert_msg(f, "%s", path);
  char line[512];
  long st;
  double lr, loss = NAN;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%ld,%lf,%lf", &st, &lr, &loss) == 3 && st == step) break;
  fclose(f);
  return loss;
}

/* bert-tiny (dropout 0.1) trains on its labelled fixture batch: training steps draw dropout masks
 * (two seeds give two different first-step losses, one seed twice the same), those losses differ
 * from the dropout-free loss `grad` reports, and 30 steps fit the batch. */
START_TEST(test_dropout_trains) {
  const char *b = FIX "/bert-tiny";
  ck_assert_int_eq(sh("%s build examples/bert-tiny.yaml -o %s/bert", MODELC_BIN, tmp), 0);
  for (int run = 0; run < 3; run++)
    ck_assert_int_eq(sh("%s/bert train --weights %s/weights.safetensors --tokens %s/tokens.npy --targets %s/targets.npy "
                        "--steps %d --lr 1e-4 --seed %d --out %s/b%d.safetensors 2>/dev/null >/dev/null",
                        tmp, b, b, b, run == 2 ? 30 : 1, run == 1 ? 8 : 7, tmp, run),
                     0);
  char p0[512], p1[512], p2[512];
  snprintf(p0, sizeof p0, "%s/b0.csv", tmp);
  snprintf(p1, sizeof p1, "%s/b1.csv", tmp);
  snprintf(p2, sizeof p2, "%s/b2.csv", tmp);
  double l0 = csv_loss(p0, 1), l1 = csv_loss(p1, 1), l2 = csv_loss(p2, 1), last = csv_loss(p2, 30);
  RtNpy ref;
  RtError err;
  ck_assert_msg(rt_npy_read(FIX "/bert-tiny/loss.npy", &ref, &err) == 0, "%s", err.msg);
  double nodrop = ((float *)ref.data)[0];
  rt_npy_free(&ref);
  printf("bert-tiny: step-1 loss %.6f (seed 7), %.6f (seed 8), %.6f (seed 7 again), without dropout %.6f; "
         "step 30: %.6f\n", l0, l1, l2, nodrop, last);
  ck_assert_msg(l0 == l2, "the same seed gave different dropout masks");
  ck_assert_msg(l0 != l1, "two seeds gave the same dropout masks");
  ck_assert_msg(fabs(l0 - nodrop) > 1e-5, "training loss equals the dropout-free loss: no dropout applied");
  ck_assert_msg(last < 0.5 * l0, "30 steps did not fit the batch (%g -> %g)", l0, last);
}
END_TEST

/* Gradient checkpointing changes memory and recompute, never the numbers: the gradients of
 * gpt-tiny built with checkpoint<every=2>, <sqrt> and <budget=...> are byte-identical to those of
 * the default build (the same kernels on the same inputs). */
START_TEST(test_checkpoint_policies_same_gradients) {
  const char *pol[] = {"every=2", "sqrt", "every=4", "budget=7MiB", "store", "budget=64MiB"};
  const char *grad = "grad --weights " FIX "/gpt-tiny/weights.safetensors --tokens " FIX "/gpt-tiny/tokens.npy "
                     "--targets " FIX "/gpt-tiny/targets.npy";
  ck_assert_int_eq(sh("%s/gpt-tiny %s --out %s/g_ref.safetensors > /dev/null", tmp, grad, tmp), 0);
  for (size_t i = 0; i < sizeof pol / sizeof *pol; i++) {
    ck_assert_int_eq(sh("%s build '--passes=autodiff,checkpoint<%s>,xent_fuse,constfold,cse,fuse,dce,memplan' "
                        "examples/gpt-tiny.yaml -o %s/gck",
                        MODELC_BIN, pol[i], tmp),
                     0);
    ck_assert_int_eq(sh("%s/gck %s --out %s/g_ck.safetensors > /dev/null", tmp, grad, tmp), 0);
    ck_assert_msg(sh("cmp -s %s/g_ref.safetensors %s/g_ck.safetensors", tmp, tmp) == 0,
                  "checkpoint<%s> changed the gradients", pol[i]);
  }
}
END_TEST

/* The xent_fuse pass (docs/passes.md) changes the planned training arena, not the numbers: gpt-tiny
 * built without it gives the same loss bits and gradients within 1e-6 of each parameter's largest
 * gradient (measured: byte-identical; the chunks of d wte's head part are summed in order, which
 * may differ from one GEMM over all rows in the last bits), and its planned training arena is
 * larger (7,733,248 bytes against 6,946,880 with the pass: the [512, 256] logits and their
 * gradient). */
static long long train_arena(const char *prog) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s info", prog);
  FILE *p = popen(cmd, "r");
  ck_assert(p);
  char line[512];
  long long bytes = -1;
  while (fgets(line, sizeof line, p)) {
    const char *at = strstr(line, "train arena ");
    if (at) bytes = atoll(at + strlen("train arena "));
  }
  pclose(p);
  return bytes;
}

START_TEST(test_xent_fuse_same_gradients) {
  const char *grad = "grad --weights " FIX "/gpt-tiny/weights.safetensors --tokens " FIX "/gpt-tiny/tokens.npy "
                     "--targets " FIX "/gpt-tiny/targets.npy";
  ck_assert_int_eq(sh("%s build '--passes=autodiff,constfold,cse,fuse,dce,memplan' examples/gpt-tiny.yaml -o %s/gnf",
                      MODELC_BIN, tmp),
                   0);
  ck_assert_int_eq(sh("%s/gnf %s --out %s/g_nf.safetensors > %s/g_nf.txt", tmp, grad, tmp, tmp), 0);
  ck_assert_int_eq(sh("%s/gpt-tiny %s --out %s/g_f.safetensors > %s/g_f.txt", tmp, grad, tmp, tmp), 0);
  ck_assert_msg(sh("cmp -s %s/g_nf.txt %s/g_f.txt", tmp, tmp) == 0, "the loss printed differs");
  char a[512], b[512], pa[512], pb[512], worst_name[128] = "";
  int n = 0;
  snprintf(a, sizeof a, "%s/g_nf.safetensors", tmp);
  snprintf(b, sizeof b, "%s/g_f.safetensors", tmp);
  double worst = grad_diff(b, a, "unfused gpt-tiny", 1e-6, worst_name, &n);
  snprintf(pa, sizeof pa, "%s/gnf", tmp);
  snprintf(pb, sizeof pb, "%s/gpt-tiny", tmp);
  long long unfused = train_arena(pa), fused = train_arena(pb);
  printf("xent_fuse: gradients within %.3g of the unfused build; train arena %lld -> %lld bytes\n", worst, unfused,
         fused);
  ck_assert_msg(fused > 0 && unfused - fused >= 2LL * 4 * 128 * 256, "train arena %lld -> %lld", unfused, fused);
}
END_TEST

/* Mixed precision (the precision pass, docs/passes.md): gpt-tiny with every activation the
 * backward reads stored in 16 bits (checkpoint<store>: all of them; the default: the block
 * inputs), each block's incoming gradient through 16 bits, and working weights rounded to 16 bits,
 * against PyTorch's float64 gradients; bf16 also computes every product in bf16 (products=f32
 * keeps them f32). bf16 keeps 8 significant bits (a rounding error of up to
 * 2^-9 = 0.2% per stored value), fp16 11 bits (2^-12); the gradients chain a dozen such roundings,
 * so the bounds are 4e-2 (bf16, measured 1.5e-2) and 5e-3 (fp16, measured 1.9e-3) of each
 * parameter's largest gradient, and the loss within 1e-3 / 2e-4. The floors (1e-3, 1e-4; fp32
 * builds agree to ~1e-6) show the 16-bit storage really happened. */
static const struct {
  const char *passes;
  double tol, floor, loss_tol;
} mixed[] = {
    {"autodiff,checkpoint<store>,precision<bf16>,constfold,cse,fuse,dce,memplan", 4e-2, 1e-3, 1e-3},
    {"autodiff,precision<bf16>,constfold,cse,fuse,dce,memplan", 4e-2, 1e-3, 1e-3},
    {"autodiff,checkpoint<store>,precision<fp16>,constfold,cse,fuse,dce,memplan", 5e-3, 1e-4, 2e-4},
    {"autodiff,precision<fp16>,constfold,cse,fuse,dce,memplan", 5e-3, 1e-4, 2e-4},
    /* the fused head (xent_fuse before precision): its operands are not stored in 16 bits */
    {"autodiff,xent_fuse,precision<bf16>,constfold,cse,fuse,dce,memplan", 4e-2, 1e-3, 1e-3},
    /* bf16 storage without the bf16 products (precision<bf16>'s products=f32) */
    {"autodiff,xent_fuse,precision<bf16;products=f32>,constfold,cse,fuse,dce,memplan", 4e-2, 1e-3, 1e-3},
    {"autodiff,checkpoint<store>,xent_fuse,precision<fp16>,constfold,cse,fuse,dce,memplan", 5e-3, 1e-4, 2e-4},
};

START_TEST(test_mixed_precision_gradients) {
  ck_assert_int_eq(sh("%s build '--passes=%s' examples/gpt-tiny.yaml -o %s/gmp", MODELC_BIN, mixed[_i].passes, tmp), 0);
  char prog[512], path[512];
  snprintf(prog, sizeof prog, "%s/gmp", tmp);
  double want, loss = run_grad(prog, "gpt-tiny", "gmp", &want);
  snprintf(path, sizeof path, "%s/gmp.safetensors", tmp);
  char worst_name[128] = "";
  int n = 0;
  double worst = grad_error(path, "gpt-tiny", mixed[_i].tol, worst_name, &n);
  printf("%s: loss %.7f (PyTorch fp32 %.7f), worst gradient error %.3g (%s)\n", mixed[_i].passes, loss, want, worst,
         worst_name);
  ck_assert_msg(fabs(loss - want) <= mixed[_i].loss_tol * want, "loss %.7f vs %.7f", loss, want);
  ck_assert_msg(worst >= mixed[_i].floor, "worst error %.3g: no 16-bit rounding visible", worst);
}
END_TEST

/* sqrt(sum over every gradient element of (ours - ref)^2 / sum of ref^2) */
static double grad_rel_l2(const char *path, const char *rp) {
  RtSafetensors *ours, *ref;
  RtError err;
  ck_assert_msg(rt_st_open(&ours, path, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_st_open(&ref, rp, &err) == 0, "%s", err.msg);
  double num = 0, den = 1e-300;
  for (int i = 0; i < rt_st_count(ref); i++) {
    const RtTensor *r = rt_st_tensor(ref, i), *o = rt_st_find(ours, r->name);
    ck_assert_msg(o && o->nbytes == r->nbytes, "no gradient for %s", r->name);
    const float *a = o->data, *b = r->data;
    for (size_t k = 0; k < r->nbytes / 4; k++) num += ((double)a[k] - b[k]) * ((double)a[k] - b[k]), den += (double)b[k] * b[k];
  }
  rt_st_close(ours);
  rt_st_close(ref);
  return sqrt(num / den);
}

/* bf16 products in training (precision<bf16>, pass 4 of docs/passes.md) against PyTorch computing
 * the same rules (tests/reference/make_bf16_fixture.py: weights rounded to bf16, the head's three
 * products on bf16-rounded operands summed exactly, the LayerNorm's backward from its bf16-stored
 * input) on head-tiny, a model without a chain of products:
 *   - with the plain-C GEMM (MODELC_GEMM=ref: products summed in double, as PyTorch's float64
 *     here) every gradient within 1e-5 of the largest of its parameter (measured 2.2e-7) and the
 *     loss within 1e-6: the program computes exactly these rules;
 *   - with the machine's GEMM (oneDNN on AMX, ...: f32 accumulation) a dlogit or an activation now
 *     and then rounds to the other bf16 neighbour, so the bound is on the relative L2 error over
 *     all gradients: 1e-3 (measured 1.9e-4), and at most a quarter of what the same model with f32
 *     products (products=f32: 1.7e-3) and the float64 gradients without rounding (3.5e-3) are from
 *     that reference: the products really are bf16. */
START_TEST(test_bf16_products_match_pytorch) {
  const char *base = "autodiff,xent_fuse,%s,constfold,cse,fuse,dce,memplan";
  const char *spec = "tests/reference/specs/head-tiny.yaml";
#define fx FIX "/head-tiny"
  char pipe[256], path[512];
  snprintf(pipe, sizeof pipe, base, "precision<bf16>");
  ck_assert_int_eq(sh("%s build '--passes=%s' %s -o %s/hb16", MODELC_BIN, pipe, spec, tmp), 0);
  snprintf(pipe, sizeof pipe, base, "precision<bf16;products=f32>");
  ck_assert_int_eq(sh("%s build '--passes=%s' %s -o %s/hb32", MODELC_BIN, pipe, spec, tmp), 0);
  const char *runs[3][2] = {{"MODELC_GEMM=ref", "hb16"}, {"", "hb16"}, {"", "hb32"}};
  double l2[3], loss[3];
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(sh("%s %s/%s grad --weights %s/weights.safetensors --tokens %s/tokens.npy --targets %s/targets.npy "
                        "--out %s/g%d.safetensors > %s/g%d.txt",
                        runs[i][0], tmp, runs[i][1], fx, fx, fx, tmp, i, tmp, i),
                     0);
    snprintf(path, sizeof path, "%s/g%d.txt", tmp, i);
    loss[i] = read_loss(path);
    snprintf(path, sizeof path, "%s/g%d.safetensors", tmp, i);
    l2[i] = grad_rel_l2(path, fx "/grads_bf16.safetensors");
  }
  double l2_32 = grad_rel_l2(fx "/grads.safetensors", fx "/grads_bf16.safetensors");
  RtNpy ref;
  RtError err;
  ck_assert_msg(rt_npy_read(fx "/loss_bf16.npy", &ref, &err) == 0, "%s", err.msg);
  double want = ((float *)ref.data)[0];
  rt_npy_free(&ref);
  char worst_name[128] = "";
  int n = 0;
  snprintf(path, sizeof path, "%s/g0.safetensors", tmp);
  double worst = grad_diff(path, fx "/grads_bf16.safetensors", "head-tiny", 1e-5, worst_name, &n);
  printf("head-tiny bf16 products: loss %.8f (PyTorch %.8f); gradients, relative L2 from PyTorch's bf16 rules: "
         "plain-C GEMM %.3g (worst %.3g, %s), machine GEMM %.3g, f32 products %.3g, unrounded float64 %.3g\n",
         loss[1], want, l2[0], worst, worst_name, l2[1], l2[2], l2_32);
  ck_assert_msg(fabs(loss[0] - want) <= 1e-6 * want && fabs(loss[1] - want) <= 1e-6 * want, "loss %.8f / %.8f vs %.8f",
                loss[0], loss[1], want);
  ck_assert_msg(l2[1] <= 1e-3, "relative L2 %.3g", l2[1]);
  ck_assert_msg(4 * l2[1] <= l2[2] && 4 * l2[1] <= l2_32, "bf16 products %.3g, f32 products %.3g, float64 %.3g", l2[1],
                l2[2], l2_32);
#undef fx
}
END_TEST

/* The ten AdamW steps of test_adamw_steps_match_pytorch with train: precision bf16 / fp16 in the
 * spec (so modelc adds the precision pass itself) stay within 5e-3 / 1e-3 of PyTorch's float32
 * losses at every step (measured 5.6e-4 / 6e-5), while the loss falls from 6.0 to 2.1. */
START_TEST(test_mixed_precision_adamw_steps) {
  const char *prec = _i ? "fp16" : "bf16";
  double tol = _i ? 1e-3 : 5e-3;
  ck_assert_int_eq(sh("sed 's/^train:/train:\\n  precision: %s/' tests/reference/specs/gpt-tiny-adamw.yaml > %s/mp.yaml",
                      prec, tmp),
                   0);
  ck_assert_int_eq(sh("%s build %s/mp.yaml -o %s/mp && %s/mp info | grep -q 'precision: *%s'", MODELC_BIN, tmp, tmp,
                      tmp, prec),
                   0);
  ck_assert_int_eq(sh("%s/mp train --weights " FIX "/gpt-tiny/weights.safetensors --tokens " FIX
                      "/gpt-tiny/tokens.npy --targets " FIX "/gpt-tiny/targets.npy --out %s/mp.safetensors 2>/dev/null "
                      ">/dev/null",
                      tmp, tmp),
                   0);
  RtNpy ref;
  RtError err;
  ck_assert_msg(rt_npy_read(FIX "/gpt-tiny/adamw_losses.npy", &ref, &err) == 0, "%s", err.msg);
  char path[512];
  snprintf(path, sizeof path, "%s/mp.csv", tmp);
  double worst = 0;
  for (int k = 0; k < ref.shape[0]; k++) {
    double loss = csv_loss(path, k + 1), want = ((float *)ref.data)[k];
    ck_assert_msg(fabs(loss - want) <= tol * want, "%s step %d: loss %.7f vs PyTorch fp32 %.7f", prec, k + 1, loss, want);
    worst = fmax(worst, fabs(loss - want) / want);
  }
  printf("%s: 10 AdamW steps, worst relative loss difference from PyTorch fp32 %.3g\n", prec, worst);
  rt_npy_free(&ref);
}
END_TEST

int main(void) {
  Suite *s = suite_create("train");
  TCase *tc = tcase_create("train");
  tcase_set_timeout(tc, 300);
  tcase_add_unchecked_fixture(tc, setup, teardown);
  tcase_add_loop_test(tc, test_gradients_match_pytorch, 0, (int)(sizeof models / sizeof *models));
  tcase_add_loop_test(tc, test_adamw_steps_match_pytorch, 0, (int)(sizeof adamw_models / sizeof *adamw_models));
  tcase_add_test(tc, test_dropout_trains);
  tcase_add_test(tc, test_checkpoint_policies_same_gradients);
  tcase_add_test(tc, test_xent_fuse_same_gradients);
  tcase_add_loop_test(tc, test_mixed_precision_gradients, 0, (int)(sizeof mixed / sizeof *mixed));
  tcase_add_loop_test(tc, test_mixed_precision_adamw_steps, 0, 2);
  tcase_add_test(tc, test_bf16_products_match_pytorch);
  suite_add_tcase(s, tc);
  return check_run(s);
}
