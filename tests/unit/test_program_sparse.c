/* test_program_sparse.c: programs built with the sparse-attention pass against PyTorch with the
 * equivalent explicit mask, and the KV cache of a sparse pattern.
 *
 * The reference is tests/reference/make_sparse_fixture.py's: sparse-tiny (2 pre-LN layers at the
 * odd context 19) with its attention a dense softmax over a [T,T] mask built from the element
 * definitions of the Sparse Transformer's reference code. For each pattern (local, strided, fixed,
 * local with global tokens; tile 4, which divides neither T nor the pattern sizes), causal and (on
 * sparse-tiny-bidir.yaml) bidirectional, with the pass before autodiff:
 *   - the program holds the reference's parameters; `PROG forward` gives the logits within 1e-5 of
 *     the largest, `PROG grad` the loss within 1e-5 relative and every gradient within 1e-4 of its
 *     largest element (the block-sparse backward against autograd through the masked softmax);
 *   - the LLVM backend gives the same bytes as the C backend;
 *   - the FLOPs the IR counts for an attention op are its pattern's allowed pairs, counted here
 *     element by element with the runtime's own mask (rt_sparse_allowed).
 * And decoding: the KV cache under a pattern (a ring for local) gives the logits of a recompute
 * (--no-cache) at every step within the context, and under a local ring with no position table,
 * generation goes past the compiled context with the cache's memory fixed. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../compiler/frontend/spec.h"
#include "../../runtime/io/io.h" /* .npy, safetensors (internal) */
#include "../../runtime/modelc_rt.h"
#include "npy_test.h"
#include "ref_program.h"
#include "sh.h"

#define FIX "tests/reference/fixtures/sparse-tiny"
#define SPEC "tests/reference/specs/sparse-tiny.yaml"
#define BIDIR "tests/reference/specs/sparse-tiny-bidir.yaml"
#define LM "tests/specs/sparse-lm.yaml"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_sparse_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

/* the reference's checks (ref_program.h: parameters, logits, loss, gradients within 1e-4 of their
 * largest element, C against LLVM), on the fixture's one weights file */
static void config_on(const char *spec, const char *pass, const char *cfg) {
  char c[64], p[512], q[512];
  snprintf(c, sizeof c, "_%s", cfg);
  ref_config_on(tmp, spec, FIX, pass, c, "", 1e-4);
  /* the pattern changes the answer: the dense program's logits are not these */
  ck_assert_int_eq(sh("%s build %s -o %s/dense && %s/dense forward --weights " FIX "/weights.safetensors --tokens " FIX
                      "/tokens.npy --out %s/dense.npy", MODELC_BIN, spec, tmp, tmp, tmp),
                   0);
  snprintf(p, sizeof p, "%s/dense.npy", tmp);
  snprintf(q, sizeof q, FIX "/logits_%s.npy", cfg);
  RtNpy dn = load(p), r = load(q);
  ck_assert_msg(max_rel(dn.data, r.data, numel(&r)) > 1e-3, "%s: the dense program gives the masked logits", cfg);
  rt_npy_free(&r), rt_npy_free(&dn);
}

static void config(const char *pass, const char *cfg) { config_on(SPEC, pass, cfg); }

START_TEST(local) { config("sparse-attention<pattern=local;window=5;tile=4>", "local-w5"); }
END_TEST
START_TEST(strided) { config("sparse-attention<pattern=strided;stride=4;tile=4>", "strided-l4"); }
END_TEST
START_TEST(fixed) { config("sparse-attention<pattern=fixed;block=6;summary=2;tile=4>", "fixed-l6-c2"); }
END_TEST
START_TEST(local_global) { config("sparse-attention<pattern=local;window=3;global=2;tile=4>", "local-w3-g2"); }
END_TEST

/* Bidirectional (sparse-tiny-bidir.yaml, the same weights): the masks without k <= q, global queries
 * seeing every key (the kernels' ALL tiles and strided's pass B skipping them). */
START_TEST(bidir_local_global) {
  config_on(BIDIR, "sparse-attention<pattern=local;window=3;global=2;tile=4>", "bidir-local-w3-g2");
}
END_TEST
START_TEST(bidir_strided_global) {
  config_on(BIDIR, "sparse-attention<pattern=strided;stride=4;global=1;tile=4>", "bidir-strided-l4-g1");
}
END_TEST
START_TEST(bidir_fixed) { config_on(BIDIR, "sparse-attention<pattern=fixed;block=6;summary=2;tile=4>", "bidir-fixed-l6-c2"); }
END_TEST

/* The IR's FLOPs of an attention op = its allowed pairs x (4C + 5 heads), at odd lengths, causal and
 * not, every kind, with global tokens: against an element-by-element count with the runtime's mask. */
START_TEST(flops_count_allowed_pairs) {
  static const char *const pat[] = {"local", "strided", "fixed"};
  static const int Ts[] = {1, 7, 19, 64, 130};
  for (int causal = 0; causal < 2; causal++)
    for (int kind = 1; kind <= 3; kind++)
      for (int ti = 0; ti < 5; ti++)
        for (int gi = 0; gi < 3; gi++)
          for (int si = 0; si < 4; si++) {
            static const int gs[] = {0, 3, 140}, sizes[] = {1, 5, 9, 33};
            int g = gs[gi], size = sizes[si];
            int T = Ts[ti], C = 8, H = 2, summary = kind == 3 ? size / 2 : 0;
            char text[1024];
            snprintf(text, sizeof text,
                     "module @m {batch=1, context=%d, vocab=4}\nfunc @main(%%x: f32[1,%d,%d]) -> f32[1,%d,%d] {\n"
                     "  %%0 = attention(%%x) {causal=%d, heads=%d} : f32[1,%d,%d]\n  return %%0\n}\n",
                     T, T, 3 * C, T, C, causal, H, T, C);
            Diag d;
            diag_init(&d, stderr);
            Module *m = ir_parse("t.mir", text, strlen(text), &d);
            ck_assert_ptr_nonnull(m);
            Op *op = m->funcs[0]->first;
            char err[200];
            ck_assert_msg(pass_sparse_set(op, pat[kind - 1], size, summary, g, 4, err, sizeof err), "%s", err);
            RtSparsePattern p = {kind, 4, kind == 1 ? size : 0, kind == 1 ? 0 : size, summary, g};
            int64_t pairs = 0;
            for (int qi = 0; qi < T; qi++)
              for (int k = 0; k < T; k++) pairs += rt_sparse_allowed(&p, causal, qi, k);
            ck_assert_msg(ir_op_flops(m, op) == pairs * (4 * C + 5 * H), "%s causal=%d T=%d size=%d global=%d: %lld FLOPs, %lld pairs",
                          pat[kind - 1], causal, T, size, g, (long long)ir_op_flops(m, op), (long long)pairs);
            ir_module_free(m);
            diag_free(&d);
          }
}
END_TEST

/* Greedy decoding with the pattern's KV cache (local: a ring of window positions) gives every
 * step's logits of a full recompute, within the context. */
static void cache_matches_recompute(const char *pass) {
  ck_assert_int_eq(sh("%s build --passes='%s,constfold,cse,fuse,dce,memplan' " LM " -o %s/g && %s/g init --seed 3 "
                      "--out %s/w.safetensors", MODELC_BIN, pass, tmp, tmp, tmp), 0);
  ck_assert_int_eq(sh("%s/g generate --weights %s/w.safetensors --prompt abc -n 20 --temperature 0 "
                      "--logits-out %s/kv.npy > %s/kv.txt", tmp, tmp, tmp, tmp), 0);
  ck_assert_int_eq(sh("%s/g generate --weights %s/w.safetensors --prompt abc -n 20 --temperature 0 "
                      "--no-cache --logits-out %s/re.npy > %s/re.txt", tmp, tmp, tmp, tmp), 0);
  char p[512], q[512];
  snprintf(p, sizeof p, "%s/kv.npy", tmp);
  snprintf(q, sizeof q, "%s/re.npy", tmp);
  RtNpy a = load(p), b = load(q);
  ck_assert_int_eq(numel(&a), numel(&b));
  double e = max_rel(a.data, b.data, numel(&b));
  ck_assert_msg(e <= 1e-5, "%s: cached logits differ from the recompute's by %g", pass, e);
  ck_assert_int_eq(sh("cmp -s %s/kv.txt %s/re.txt", tmp, tmp), 0);
  rt_npy_free(&a), rt_npy_free(&b);
}

START_TEST(kv_cache_local_ring) { cache_matches_recompute("sparse-attention<pattern=local;window=5;global=2;tile=4>"); }
END_TEST
START_TEST(kv_cache_strided) { cache_matches_recompute("sparse-attention<pattern=strided;stride=4;tile=4>"); }
END_TEST
START_TEST(kv_cache_fixed) { cache_matches_recompute("sparse-attention<pattern=fixed;block=6;summary=2;tile=4>"); }
END_TEST

/* Past the compiled context (24) with a local ring (window 5, no global tokens, no position
 * table): the ring decodes on in constant memory; the model is translation invariant beyond its
 * receptive field (2 layers x 4 keys back), so the recompute's sliding window (its last 12
 * tokens re-encoded from position 0) gives the same logits at every step: the ring holds exactly
 * the keys the pattern needs. A few training steps first, so the text is not one repeated byte. */
START_TEST(ring_past_context) {
  ck_assert_int_eq(sh("%s build --passes='sparse-attention<pattern=local;window=5;tile=4>,autodiff,constfold,cse,fuse,dce,"
                      "memplan' " LM " -o %s/g && %s/g info > %s/info.txt && grep -q 'rings: decoding goes past the "
                      "context' %s/info.txt", MODELC_BIN, tmp, tmp, tmp, tmp), 0);
  ck_assert_int_eq(sh("%s/g train --data docs/spec.md --steps 200 --batch 8 --lr 1e-2 --seed 1 --out %s/w.safetensors "
                      "> /dev/null 2>&1", tmp, tmp), 0);
  const char *gen = "%s/g generate --weights %s/w.safetensors --prompt 'The ' -n 70 --temperature 0.8 --seed 5 %s "
                    "--logits-out %s/%s.npy > %s/%s.txt";
  ck_assert_int_eq(sh(gen, tmp, tmp, "", tmp, "kv", tmp, "kv"), 0);
  ck_assert_int_eq(sh(gen, tmp, tmp, "--no-cache", tmp, "re", tmp, "re"), 0);
  char p[512], q[512];
  snprintf(p, sizeof p, "%s/kv.npy", tmp);
  snprintf(q, sizeof q, "%s/re.npy", tmp);
  RtNpy a = load(p), b = load(q);
  ck_assert_int_eq(numel(&a), 70 * 256);
  ck_assert_int_eq(numel(&a), numel(&b));
  double e = max_rel(a.data, b.data, numel(&b));
  ck_assert_msg(e <= 1e-5, "ring decoding past the context differs from the sliding recompute by %g", e);
  ck_assert_int_eq(sh("cmp -s %s/kv.txt %s/re.txt", tmp, tmp), 0);
  /* the LLVM backend's program decodes the same bytes (the ring kernel's 18 arguments) */
  ck_assert_int_eq(sh("%s build --backend=llvm --passes='sparse-attention<pattern=local;window=5;tile=4>,constfold,cse,fuse,"
                      "dce,memplan' " LM " -o %s/gl", MODELC_BIN, tmp), 0);
  ck_assert_int_eq(sh("%s/gl generate --weights %s/w.safetensors --prompt 'The ' -n 70 --temperature 0.8 --seed 5 "
                      "--logits-out %s/ll.npy > %s/ll.txt && cmp -s %s/ll.txt %s/kv.txt && cmp -s %s/ll.npy %s/kv.npy",
                      tmp, tmp, tmp, tmp, tmp, tmp, tmp, tmp), 0);
  /* a position table (sparse-tiny's learned wpe) keeps the context bound, ring or not */
  ck_assert_int_eq(sh("%s build --passes='sparse-attention<pattern=local;window=5;tile=4>,constfold,cse,fuse,dce,memplan' "
                      SPEC " -o %s/p && %s/p info > %s/info2.txt && ! grep -q rings %s/info2.txt", MODELC_BIN, tmp, tmp,
                      tmp, tmp), 0);
  rt_npy_free(&a), rt_npy_free(&b);
}
END_TEST

int main(void) {
  Suite *s = suite_create("program_sparse");
  TCase *tc = tcase_create("sparse");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, local);
  tcase_add_test(tc, strided);
  tcase_add_test(tc, fixed);
  tcase_add_test(tc, local_global);
  tcase_add_test(tc, bidir_local_global);
  tcase_add_test(tc, bidir_strided_global);
  tcase_add_test(tc, bidir_fixed);
  tcase_add_test(tc, flops_count_allowed_pairs);
  tcase_add_test(tc, kv_cache_local_ring);
  tcase_add_test(tc, kv_cache_strided);
  tcase_add_test(tc, kv_cache_fixed);
  tcase_add_test(tc, ring_past_context);
  suite_add_tcase(s, tc);
  return check_run(s);
}
