/* test_program_prune.c: pruned programs (the prune pass) end to end, on quant-tiny
 * (tests/reference/specs/quant-tiny.yaml: 2 layers, dim 64, 4 heads of 16, MLP 256, tied head).
 *
 *   - Structured pruning is exact on zeroed units: weights whose removed units are zero (MLP units:
 *     their fc row, fc bias and proj column; heads: their q, k, v rows and biases and output
 *     projection columns) give the dense program's logits in the pruned one (loaded from the
 *     full-size file, the units chosen at load by L2 norm, or for heads by PROG importance's
 *     scores, which are 0 for a zeroed head), to f32 rounding (the GEMMs sum fewer zero terms).
 *     The exported pruned weights load to the same bytes of logits.
 *   - Masked pruning: the csr program (the sparse kernel) against the dense masked one (dense
 *     kernel on the masked matrix) at 90% and 2:4->1:4; C and LLVM backends byte for byte; both
 *     export the same file (the masked dense values).
 *   - Training with masks: every pruned weight of the trained file has exactly the mask's zeros
 *     (floor(s n + 0.5)); a run stopped and resumed from its checkpoint ends byte-identical to the
 *     uninterrupted one; under a gradual schedule the sparsity at each step is the schedule's. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/io/io.h" /* .npy, safetensors (internal) */
#include "../../runtime/modelc_rt.h"
#include "npy_test.h"
#include "sh.h"

#define SPEC "tests/reference/specs/quant-tiny.yaml"
#define INFER "constfold,cse,fuse,dce,memplan"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_prune_XXXXXX");
  ck_assert(mkdtemp(tmp));
  /* random full-size weights and a token batch, a byte file to train on */
  ck_assert_int_eq(sh("%s build --passes=autodiff," INFER " " SPEC " -o %s/dense", MODELC_BIN, tmp), 0);
  ck_assert_int_eq(sh("%s/dense init --seed 7 --out %s/w.safetensors > /dev/null", tmp, tmp), 0);
  FILE *f;
  char p[300];
  snprintf(p, sizeof p, "%s/tok.npy", tmp);
  write_tokens_npy(p, "It was the best of times, it was the worst of times.", 2, 16);
  snprintf(p, sizeof p, "%s/text.txt", tmp);
  ck_assert((f = fopen(p, "w")) != NULL);
  for (int i = 0; i < 60; i++) fprintf(f, "It was the best of times, it was the worst of times, line %d.\n", i);
  fclose(f);
}
static void teardown(void) { sh("rm -rf %s", tmp); }

static void build(const char *prog, const char *passes, const char *flags) {
  ck_assert_int_eq(sh("%s build %s --passes='%s' " SPEC " -o %s/%s", MODELC_BIN, flags, passes, tmp, prog), 0);
}

static RtNpy forward(const char *prog, const char *weights) {
  char out[300];
  snprintf(out, sizeof out, "%s/%s.npy", tmp, prog);
  ck_assert_int_eq(sh("%s/%s forward --weights %s/%s --tokens %s/tok.npy --out %s", tmp, prog, tmp, weights, tmp, out), 0);
  return load(out);
}

/* A copy of tmp/w.safetensors as tmp/out with, in every layer, MLP units u % 2 == 1 zeroed (mlp)
 * and/or heads 1 and 3 zeroed (heads). */
static void write_zeroed(const char *out, int mlp, int heads) {
  RtSafetensors *st;
  RtError err;
  char p[300];
  snprintf(p, sizeof p, "%s/w.safetensors", tmp);
  ck_assert_msg(rt_st_open(&st, p, &err) == 0, "%s", err.msg);
  int n = rt_st_count(st);
  RtTensor *ts = calloc((size_t)n, sizeof *ts);
  float **bufs = calloc((size_t)n, sizeof *bufs);
  for (int i = 0; i < n; i++) {
    const RtTensor *t = rt_st_tensor(st, i);
    ts[i] = *t;
    bufs[i] = malloc(t->nbytes);
    memcpy(bufs[i], t->data, t->nbytes);
    ts[i].data = (const unsigned char *)bufs[i];
    float *x = bufs[i];
    const char *nm = strchr(t->name, '.') ? strchr(strchr(t->name, '.') + 1, '.') : NULL; /* after "h.L" */
    if (!nm || strncmp(t->name, "h.", 2)) continue;
    int64_t r = t->shape[0], c = t->ndim == 2 ? t->shape[1] : 1;
    for (int64_t a = 0; a < r; a++)
      for (int64_t b = 0; b < c; b++) {
        int zero = 0;
        if (mlp && !strcmp(nm, ".mlp.c_fc.weight")) zero = a % 2;
        if (mlp && !strcmp(nm, ".mlp.c_fc.bias")) zero = a % 2;
        if (mlp && !strcmp(nm, ".mlp.c_proj.weight")) zero = b % 2;
        if (heads && (!strcmp(nm, ".attn.c_attn.weight") || !strcmp(nm, ".attn.c_attn.bias"))) zero = (a % 64) / 16 % 2;
        if (heads && !strcmp(nm, ".attn.c_proj.weight")) zero = b / 16 % 2;
        if (zero) x[a * c + b] = 0;
      }
  }
  snprintf(p, sizeof p, "%s/%s", tmp, out);
  ck_assert_msg(rt_st_write(p, ts, n, NULL, 0, &err) == 0, "%s", err.msg);
  for (int i = 0; i < n; i++) free(bufs[i]);
  free(bufs);
  free(ts);
  rt_st_close(st);
}

START_TEST(test_structured_exact_on_zeroed_units) {
  write_zeroed("wz.safetensors", 1, 1);
  build("plain", INFER, "");
  build("neurons", "prune<kind=neurons;sparsity=0.5>," INFER, "");
  build("heads", "prune<kind=heads;heads=2;score=norm>," INFER, "");
  build("both", "prune<kind=neurons;sparsity=0.5>,prune<kind=heads;heads=2>," INFER, "--backend=llvm");
  RtNpy d = forward("plain", "wz.safetensors");
  RtNpy a = forward("neurons", "wz.safetensors"), b = forward("heads", "wz.safetensors");
  ck_assert_msg(npy_max_rel(&a, &d) < 1e-5, "neurons: %g", npy_max_rel(&a, &d));
  ck_assert_msg(npy_max_rel(&b, &d) < 1e-5, "heads: %g", npy_max_rel(&b, &d));
  /* score=importance: the dense program's scores put the zeroed heads last */
  ck_assert_int_eq(sh("%s/dense importance --weights %s/wz.safetensors --data %s/text.txt -n 4 --out %s/wi.safetensors "
                      "> %s/imp.txt", tmp, tmp, tmp, tmp, tmp), 0);
  ck_assert_int_eq(sh("grep -q 'h.1.attn.c_proj.weight.head_importance: [0-9.e-]* 0 [0-9.e-]* 0$' %s/imp.txt", tmp), 0);
  RtNpy c = forward("both", "wi.safetensors");
  ck_assert_msg(npy_max_rel(&c, &d) < 1e-5, "neurons + heads (importance, LLVM): %g", npy_max_rel(&c, &d));
  /* without the scores, a score=importance program says what is missing */
  ck_assert_int_ne(sh("%s/both forward --weights %s/wz.safetensors --tokens %s/tok.npy --out %s/x.npy 2> %s/err.txt", tmp,
                      tmp, tmp, tmp, tmp), 0);
  ck_assert_int_eq(sh("grep -q 'head_importance.* is missing' %s/err.txt", tmp), 0);
  /* the exported small file: the same logits, byte for byte */
  ck_assert_int_eq(sh("%s/neurons export --weights %s/wz.safetensors --out %s/ws.safetensors", tmp, tmp, tmp), 0);
  RtNpy e = forward("neurons", "ws.safetensors");
  ck_assert(memcmp(e.data, a.data, numel(&a) * 4) == 0);
  /* and on weights that are not zeroed the pruned model differs (the test can fail) */
  RtNpy f = forward("neurons", "w.safetensors"), g = forward("plain", "w.safetensors");
  ck_assert_msg(npy_max_rel(&f, &g) > 1e-3, "pruning half the units of random weights changed nothing: %g", npy_max_rel(&f, &g));
  rt_npy_free(&a), rt_npy_free(&b), rt_npy_free(&c), rt_npy_free(&d), rt_npy_free(&e), rt_npy_free(&f), rt_npy_free(&g);
}
END_TEST

START_TEST(test_masked_csr_against_dense) {
  static const char *const kinds[][2] = {{"kind=magnitude;sparsity=0.9", "90%"}, {"kind=nm;n=1;m=4", "1:4"}};
  for (int k = 0; k < 2; k++) {
    char p[200];
    snprintf(p, sizeof p, "prune<%s;format=csr>," INFER, kinds[k][0]);
    build("csr", p, "");
    build("csrl", p, "--backend=llvm");
    snprintf(p, sizeof p, "prune<%s;format=dense>," INFER, kinds[k][0]);
    build("masked", p, "");
    ck_assert_int_eq(sh("%s/csr info | grep -q 'csr'", tmp), 0);
    RtNpy a = forward("csr", "w.safetensors"), b = forward("masked", "w.safetensors"), c = forward("csrl", "w.safetensors");
    ck_assert_msg(npy_max_rel(&a, &b) < 1e-5, "%s: csr vs dense masked: %g", kinds[k][1], npy_max_rel(&a, &b));
    ck_assert_msg(memcmp(a.data, c.data, numel(&a) * 4) == 0, "%s: C and LLVM differ", kinds[k][1]);
    ck_assert_int_eq(sh("%s/csr export --weights %s/w.safetensors --out %s/e1.safetensors && %s/masked export --weights "
                        "%s/w.safetensors --out %s/e2.safetensors && cmp -s %s/e1.safetensors %s/e2.safetensors",
                        tmp, tmp, tmp, tmp, tmp, tmp, tmp, tmp), 0);
    rt_npy_free(&a), rt_npy_free(&b), rt_npy_free(&c);
  }
}
END_TEST

/* The zeros of tensor name in file (relative to tmp). */
static int64_t zeros_of(const char *file, const char *name, int64_t *count) {
  RtSafetensors *st;
  RtError err;
  char p[300];
  snprintf(p, sizeof p, "%s/%s", tmp, file);
  ck_assert_msg(rt_st_open(&st, p, &err) == 0, "%s", err.msg);
  const RtTensor *t = rt_st_find(st, name);
  ck_assert(t && t->dtype == RT_DT_F32);
  int64_t z = 0, n = (int64_t)(t->nbytes / 4);
  for (int64_t i = 0; i < n; i++) {
    float v;
    memcpy(&v, (const unsigned char *)t->data + 4 * i, 4);
    z += v == 0.0f;
  }
  *count = n;
  rt_st_close(st);
  return z;
}

START_TEST(test_masks_through_training_and_resume) {
  build("tr", "prune<kind=magnitude;sparsity=0.5>,autodiff," INFER, "");
  const char *common = "--data %s/text.txt --steps 6 --lr 1e-3 --eval-every 0 --threads 1";
  char c1[512];
  snprintf(c1, sizeof c1, common, tmp);
  ck_assert_int_eq(sh("%s/tr train --weights %s/w.safetensors %s --out %s/a.safetensors > /dev/null 2>&1", tmp, tmp, c1,
                      tmp), 0);
  ck_assert_int_eq(sh("%s/tr train --weights %s/w.safetensors %s --stop-at 3 --checkpoint %s/ck.safetensors --out "
                      "%s/b0.safetensors > /dev/null 2>&1 && %s/tr train --resume %s/ck.safetensors %s --out "
                      "%s/b.safetensors > /dev/null 2>&1", tmp, tmp, c1, tmp, tmp, tmp, tmp, c1, tmp), 0);
  ck_assert_msg(sh("cmp -s %s/a.safetensors %s/b.safetensors", tmp, tmp) == 0, "a resumed pruned run differs");
  int64_t n = 0;
  ck_assert_int_eq(zeros_of("a.safetensors", "h.1.mlp.c_fc.weight", &n), (int64_t)floor(0.5 * n + 0.5));
  ck_assert_int_eq(zeros_of("a.safetensors", "h.0.attn.c_proj.weight", &n), (int64_t)floor(0.5 * n + 0.5));
  ck_assert_int_eq(zeros_of("a.safetensors", "h.0.mlp.c_fc.bias", &n), 0); /* biases are not pruned */
  /* a checkpoint without its masks does not resume a pruned run */
  build("plain_tr", "autodiff," INFER, "");
  ck_assert_int_eq(sh("%s/plain_tr train --weights %s/w.safetensors %s --checkpoint %s/ck2.safetensors --out "
                      "%s/c.safetensors > /dev/null 2>&1", tmp, tmp, c1, tmp, tmp), 0);
  ck_assert_int_ne(sh("%s/tr train --resume %s/ck2.safetensors %s --out %s/d.safetensors 2> %s/err.txt", tmp, tmp, c1,
                      tmp, tmp), 0);
  ck_assert_int_eq(sh("grep -q 'mask' %s/err.txt", tmp), 0);
}
END_TEST

START_TEST(test_gradual_schedule) {
  /* the spec with a schedule: 0 -> 0.8 over steps 2..6, masks every 2 steps */
  ck_assert_int_eq(sh("sed 's/^  - lm_head: {tied: true}/&\\npasses: [prune: {kind: magnitude, sparsity: 0.8}, autodiff, "
                      "constfold, cse, fuse, dce, memplan]\\ntrain: {steps: 8, lr: 1.0e-3, eval_every: 0, prune: {initial: "
                      "0.0, start: 2, end: 6, every: 2}}/' " SPEC " > %s/sched.yaml && %s build %s/sched.yaml -o %s/sched",
                      tmp, MODELC_BIN, tmp, tmp), 0);
  for (int stop = 1; stop <= 8; stop++) {
    ck_assert_int_eq(sh("%s/sched train --weights %s/w.safetensors --data %s/text.txt --stop-at %d --threads 1 --out "
                        "%s/s.safetensors > /dev/null 2>&1", tmp, tmp, tmp, stop, tmp), 0);
    int64_t n = 0, z = zeros_of("s.safetensors", "h.0.mlp.c_proj.weight", &n);
    /* Zhu & Gupta: s_t = 0.8 (1 - (1 - (t - 2) / 4)^3) at t = 2, 4, 6, held in between */
    int t = stop < 2 ? -1 : stop >= 6 ? 6 : 2 + (stop - 2) / 2 * 2;
    double s = t < 0 ? 0.0 : 0.8 * (1.0 - pow(1.0 - (t - 2) / 4.0, 3));
    ck_assert_msg(z == (int64_t)floor(s * n + 0.5), "after step %d: %lld zeros, the schedule says %lld", stop,
                  (long long)z, (long long)floor(s * n + 0.5));
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_prune");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 600);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_structured_exact_on_zeroed_units);
  tcase_add_test(tc, test_masked_csr_against_dense);
  tcase_add_test(tc, test_masks_through_training_and_resume);
  tcase_add_test(tc, test_gradual_schedule);
  suite_add_tcase(s, tc);
  return check_run(s);
}
