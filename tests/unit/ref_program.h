/* ref_program.h: a program built with a pass against a PyTorch reference fixture, the checks that
 * test_program_share and test_program_linformer share. A fixture folder FIX holds, per
 * configuration CFG (a file-name suffix), weightsCFG.safetensors, logitsCFG.npy, lossCFG.npy and
 * gradsCFG.safetensors, and tokens.npy, targets.npy for all. ref_config builds the spec with
 * --passes='PASS,autodiff,constfold,cse,fuse,dce,memplan' by both backends and checks:
 *   - the program holds exactly the reference's parameters (`PROG init` writes the same names and
 *     shapes as the fixture's weights file, no more);
 *   - `PROG forward` gives the logits within 1e-5 of the largest (max |ours - ref| / max |ref|),
 *     `PROG grad` the loss within 1e-5 relative and every parameter's gradient within gtol of its
 *     largest element;
 *   - the LLVM backend gives the same bytes of logits and gradients as the C backend. */
#ifndef REF_PROGRAM_H
#define REF_PROGRAM_H

#include <check.h>
#include <math.h>
#include <stdio.h>

#include "../../runtime/io/io.h" /* .npy, safetensors (internal) */
#include "npy_test.h"
#include "sh.h"

/* max |a - b| / max |b| (NaN propagates) */
static inline double ref_max_rel(const float *a, const float *b, size_t n) {
  double md = 0, mb = 1e-30;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= md)) md = d;
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  return md / mb;
}

/* Every tensor of ref is in ours with its shape (and ours has no other); with tol >= 0 each one's
 * values are within tol of ref's largest element. Returns the worst such error. */
static inline double ref_compare_tensors(const char *ours_path, const char *ref_path, double tol) {
  RtSafetensors *o, *r;
  RtError err;
  ck_assert_msg(rt_st_open(&o, ours_path, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_st_open(&r, ref_path, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_st_count(o) == rt_st_count(r), "%s holds %d tensors, the reference %s %d", ours_path,
                rt_st_count(o), ref_path, rt_st_count(r));
  double worst = 0;
  for (int i = 0; i < rt_st_count(r); i++) {
    const RtTensor *t = rt_st_tensor(r, i), *u = rt_st_find(o, t->name);
    ck_assert_msg(u, "%s: no tensor %s", ours_path, t->name);
    ck_assert_msg(u->ndim == t->ndim && u->nbytes == t->nbytes, "%s: %s has another shape", ours_path, t->name);
    if (tol < 0) continue;
    double e = ref_max_rel(u->data, t->data, t->nbytes / 4);
    ck_assert_msg(e <= tol, "%s: %s differs from PyTorch's by %g of its largest element", ours_path, t->name, e);
    if (e > worst) worst = e;
  }
  rt_st_close(o), rt_st_close(r);
  return worst;
}

static inline void ref_build(const char *dir, const char *spec, const char *pass, const char *prog, const char *flags) {
  ck_assert_int_eq(sh("%s build %s --passes='%s,autodiff,constfold,cse,fuse,dce,memplan' %s -o %s/%s", MODELC_BIN, flags,
                      pass, spec, dir, prog),
                   0);
}

/* forward and grad of one program on the configuration's weights: DIR/PROG.npy, DIR/PROG.safetensors */
static inline void ref_run(const char *dir, const char *fix, const char *prog, const char *cfg) {
  ck_assert_int_eq(sh("%s/%s forward --weights %s/weights%s.safetensors --tokens %s/tokens.npy --out %s/%s.npy", dir, prog,
                      fix, cfg, fix, dir, prog),
                   0);
  ck_assert_int_eq(sh("%s/%s grad --weights %s/weights%s.safetensors --tokens %s/tokens.npy --targets %s/targets.npy "
                      "--out %s/%s.safetensors > %s/%s.txt",
                      dir, prog, fix, cfg, fix, fix, dir, prog, dir, prog),
                   0);
}

/* Builds DIR/c (C backend) and DIR/l (LLVM) with PASS and checks them against FIX's CFG. */
static inline void ref_config(const char *dir, const char *spec, const char *fix, const char *pass, const char *cfg,
                              double gtol) {
  char p[512], q[512];
  ref_build(dir, spec, pass, "c", "");
  ref_build(dir, spec, pass, "l", "--backend=llvm");
  /* the program's parameters are the reference's */
  ck_assert_int_eq(sh("%s/c init --seed 1 --out %s/init.safetensors", dir, dir), 0);
  snprintf(p, sizeof p, "%s/init.safetensors", dir);
  snprintf(q, sizeof q, "%s/weights%s.safetensors", fix, cfg);
  ref_compare_tensors(p, q, -1);
  ref_run(dir, fix, "c", cfg);
  ref_run(dir, fix, "l", cfg);
  /* logits */
  snprintf(p, sizeof p, "%s/c.npy", dir);
  snprintf(q, sizeof q, "%s/logits%s.npy", fix, cfg);
  RtNpy y = load(p), r = load(q);
  ck_assert_int_eq(numel(&y), numel(&r));
  double e = ref_max_rel(y.data, r.data, numel(&r));
  /* loss */
  snprintf(p, sizeof p, "%s/c.txt", dir);
  FILE *f = fopen(p, "r");
  ck_assert_ptr_nonnull(f);
  double loss = NAN;
  char line[256];
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "loss: %lf", &loss) == 1) break;
  fclose(f);
  snprintf(q, sizeof q, "%s/loss%s.npy", fix, cfg);
  RtNpy rl = load(q);
  double want = ((float *)rl.data)[0];
  /* gradients */
  snprintf(p, sizeof p, "%s/c.safetensors", dir);
  snprintf(q, sizeof q, "%s/grads%s.safetensors", fix, cfg);
  double ge = ref_compare_tensors(p, q, gtol);
  printf("%s %s: logits %.3g, loss %.8g vs %.8g, worst gradient %.3g\n", spec, pass, e, loss, want, ge);
  ck_assert_msg(e <= 1e-5, "%s: logits differ from PyTorch by %g", pass, e);
  ck_assert_msg(fabs(loss - want) <= 1e-5 * fabs(want), "%s: loss %.8g, PyTorch %.8g", pass, loss, want);
  /* the backends agree to the byte */
  ck_assert_msg(sh("cmp -s %s/c.npy %s/l.npy", dir, dir) == 0, "%s: logits, C vs LLVM", pass);
  ck_assert_msg(sh("cmp -s %s/c.safetensors %s/l.safetensors", dir, dir) == 0, "%s: gradients, C vs LLVM", pass);
  rt_npy_free(&y), rt_npy_free(&r), rt_npy_free(&rl);
}

#endif
