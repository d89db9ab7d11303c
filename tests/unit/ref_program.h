/* ref_program.h: a program built with a pass against a PyTorch reference fixture (test_program_linformer;
 * the comparisons themselves are npy_test.h's). A fixture folder FIX holds, per
 * configuration CFG (a file-name suffix), weightsCFG.safetensors, logitsCFG.npy, lossCFG.npy and
 * gradsCFG.safetensors, and tokens.npy, targets.npy for all (or, with ref_config_on, one weights file
 * weightsW.safetensors for several configurations: test_program_sparse). ref_config builds the spec with
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

/* Builds DIR/c (C backend) and DIR/l (LLVM) with PASS and checks them against FIX's CFG, run on the
 * weights weightsW.safetensors. */
static inline void ref_config_on(const char *dir, const char *spec, const char *fix, const char *pass, const char *cfg,
                                 const char *w, double gtol) {
  char p[512], q[512];
  ref_build(dir, spec, pass, "c", "");
  ref_build(dir, spec, pass, "l", "--backend=llvm");
  /* the program's parameters are the reference's */
  ck_assert_int_eq(sh("%s/c init --seed 1 --out %s/init.safetensors", dir, dir), 0);
  snprintf(p, sizeof p, "%s/init.safetensors", dir);
  snprintf(q, sizeof q, "%s/weights%s.safetensors", fix, w);
  compare_tensors(p, q, -1);
  ref_run(dir, fix, "c", w);
  ref_run(dir, fix, "l", w);
  /* logits */
  snprintf(p, sizeof p, "%s/c.npy", dir);
  snprintf(q, sizeof q, "%s/logits%s.npy", fix, cfg);
  RtNpy y = load(p), r = load(q);
  ck_assert_int_eq(numel(&y), numel(&r));
  double e = max_rel(y.data, r.data, numel(&r));
  /* loss */
  snprintf(p, sizeof p, "%s/c.txt", dir);
  double loss = read_loss(p);
  snprintf(q, sizeof q, "%s/loss%s.npy", fix, cfg);
  RtNpy rl = load(q);
  double want = ((float *)rl.data)[0];
  /* gradients */
  snprintf(p, sizeof p, "%s/c.safetensors", dir);
  snprintf(q, sizeof q, "%s/grads%s.safetensors", fix, cfg);
  double ge = compare_tensors(p, q, gtol);
  printf("%s %s: logits %.3g, loss %.8g vs %.8g, worst gradient %.3g\n", spec, pass, e, loss, want, ge);
  ck_assert_msg(e <= 1e-5, "%s: logits differ from PyTorch by %g", pass, e);
  ck_assert_msg(fabs(loss - want) <= 1e-5 * fabs(want), "%s: loss %.8g, PyTorch %.8g", pass, loss, want);
  /* the backends agree to the byte */
  ck_assert_msg(sh("cmp -s %s/c.npy %s/l.npy", dir, dir) == 0, "%s: logits, C vs LLVM", pass);
  ck_assert_msg(sh("cmp -s %s/c.safetensors %s/l.safetensors", dir, dir) == 0, "%s: gradients, C vs LLVM", pass);
  rt_npy_free(&y), rt_npy_free(&r), rt_npy_free(&rl);
}

/* ref_config_on with the configuration's own weights, weightsCFG.safetensors */
static inline void ref_config(const char *dir, const char *spec, const char *fix, const char *pass, const char *cfg,
                              double gtol) {
  ref_config_on(dir, spec, fix, pass, cfg, cfg, gtol);
}

/* Builds SPEC with PASS by both backends, runs `forward` on WEIGHTS and TOKENS (a call other than
 * the fixture's batch, e.g. shorter than the compiled length) and checks the logits against WANT
 * (within 1e-5 of the largest) and C against LLVM (the same bytes). */
static inline void ref_forward_call(const char *dir, const char *spec, const char *pass, const char *weights,
                                    const char *tokens, const char *want, const char *label) {
  ref_build(dir, spec, pass, "c", "");
  ref_build(dir, spec, pass, "l", "--backend=llvm");
  for (int b = 0; b < 2; b++)
    ck_assert_int_eq(sh("%s/%s forward --weights %s --tokens %s --out %s/%s.npy", dir, b ? "l" : "c", weights, tokens, dir,
                        b ? "l" : "c"),
                     0);
  char p[512];
  snprintf(p, sizeof p, "%s/c.npy", dir);
  RtNpy y = load(p), r = load(want);
  ck_assert_int_eq(numel(&y), numel(&r));
  double e = max_rel(y.data, r.data, numel(&r));
  printf("%s: logits %.3g\n", label, e);
  ck_assert_msg(e <= 1e-5, "%s: logits differ from PyTorch by %g", label, e);
  ck_assert_msg(sh("cmp -s %s/c.npy %s/l.npy", dir, dir) == 0, "%s: C vs LLVM", label);
  rt_npy_free(&y), rt_npy_free(&r);
}

#endif
