/* test_import_gpt2.c: `modelc import DIR -o OUT` of a Hugging Face GPT-2 checkpoint against its
 * PyTorch reference.
 *
 * The checkpoint is tests/reference/make_hfgpt2_fixture.py's: a tiny GPT-2 (V 64, context 16,
 * width 32, 2 layers, 4 heads, gelu_new) written in HF's exact layout (transformer.* names,
 * Conv1D weights [in, out], the attn.bias / attn.masked_bias buffers) with its logits computed in
 * float64 by an independent forward (HF's Conv1D: y = x @ W + b).
 *   - import, then build the spec it wrote with both backends (C and LLVM, --batch=2) and run
 *     `forward` with the weights it wrote: the logits of two full-length sequences and of one of 7
 *     tokens within 1e-5 of the largest (max |ours - ref| / max |ref|), the backends byte-identical;
 *   - every Conv1D weight of the output is the checkpoint's transposed, element for element, and
 *     every other tensor the same bytes, under the name without the prefix; the buffers are gone;
 *   - the same weights saved as GPT2Model's state_dict (no prefix, no buffers, a stored tied
 *     lm_head.weight, n_inner given, no n_ctx) import to the same bytes and the same spec.
 * The error cases are tests/cli/import_gpt2.sh's. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "npy_test.h"
#include "sh.h"

#define FIX "tests/reference/fixtures/hfgpt2-tiny"
static char tmp[256];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/modelc_hfgpt2_XXXXXX");
  ck_assert(mkdtemp(tmp));
}
static void teardown(void) { sh("rm -rf %s", tmp); }

static void check_logits(const char *got, const char *want, const char *what) {
  RtNpy y = load(got), r = load(want);
  ck_assert_int_eq(y.ndim, r.ndim);
  for (int i = 0; i < r.ndim; i++) ck_assert_int_eq(y.shape[i], r.shape[i]);
  double e = npy_max_rel(&y, &r);
  printf("hfgpt2-tiny %s: logits %.3g\n", what, e);
  ck_assert_msg(e <= 1e-5, "%s: logits differ from PyTorch by %g", what, e);
  rt_npy_free(&y), rt_npy_free(&r);
}

START_TEST(import_matches_reference) {
  ck_assert_int_eq(sh("%s import " FIX " -o %s/out", MODELC_BIN, tmp), 0);
  const char *backends[] = {"c", "llvm"};
  for (int b = 0; b < 2; b++) {
    ck_assert_int_eq(sh("%s build --batch=2 --backend=%s %s/out/model.yaml -o %s/%s", MODELC_BIN, backends[b], tmp,
                        tmp, backends[b]),
                     0);
    ck_assert_int_eq(sh("%s/%s forward --weights %s/out/model.safetensors --tokens " FIX "/tokens.npy --out %s/%s.npy",
                        tmp, backends[b], tmp, tmp, backends[b]),
                     0);
    ck_assert_int_eq(sh("%s/%s forward --weights %s/out/model.safetensors --tokens " FIX
                        "/short.npy --out %s/%s_short.npy",
                        tmp, backends[b], tmp, tmp, backends[b]),
                     0);
  }
  char p[512];
  snprintf(p, sizeof p, "%s/c.npy", tmp);
  check_logits(p, FIX "/logits.npy", "2 x 16 tokens");
  snprintf(p, sizeof p, "%s/c_short.npy", tmp);
  check_logits(p, FIX "/logits_short.npy", "7 tokens");
  ck_assert_msg(sh("cmp -s %s/c.npy %s/llvm.npy", tmp, tmp) == 0, "logits, C vs LLVM");
  ck_assert_msg(sh("cmp -s %s/c_short.npy %s/llvm_short.npy", tmp, tmp) == 0, "short logits, C vs LLVM");
}
END_TEST

/* Every output tensor is the checkpoint's, Conv1D weights transposed. */
START_TEST(tensors_transposed) {
  ck_assert_int_eq(sh("%s import " FIX " -o %s/out", MODELC_BIN, tmp), 0);
  char p[512];
  snprintf(p, sizeof p, "%s/out/model.safetensors", tmp);
  RtSafetensors *o, *h;
  RtError err;
  ck_assert_msg(rt_st_open(&o, p, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_st_open(&h, FIX "/model.safetensors", &err) == 0, "%s", err.msg);
  int nconv = 0, nsame = 0;
  for (int i = 0; i < rt_st_count(o); i++) {
    const RtTensor *t = rt_st_tensor(o, i);
    char hn[256];
    snprintf(hn, sizeof hn, "transformer.%s", t->name);
    const RtTensor *u = rt_st_find(h, hn);
    ck_assert_msg(u != NULL, "output tensor '%s' has no '%s' in the checkpoint", t->name, hn);
    ck_assert_int_eq(t->dtype, RT_DT_F32);
    ck_assert_int_eq(t->nbytes, u->nbytes);
    bool conv = strstr(t->name, "c_attn.weight") || strstr(t->name, "c_proj.weight") || strstr(t->name, "c_fc.weight");
    if (conv) {
      ck_assert_int_eq(t->ndim, 2);
      ck_assert_int_eq(u->ndim, 2);
      ck_assert_int_eq(t->shape[0], u->shape[1]);
      ck_assert_int_eq(t->shape[1], u->shape[0]);
      const float *a = t->data, *b = u->data;
      int64_t out = t->shape[0], in = t->shape[1];
      for (int64_t r = 0; r < out; r++)
        for (int64_t k = 0; k < in; k++)
          ck_assert_msg(a[r * in + k] == b[k * out + r], "%s[%lld][%lld]", t->name, (long long)r, (long long)k);
      nconv++;
    } else {
      ck_assert_int_eq(t->ndim, u->ndim);
      for (int k = 0; k < t->ndim; k++) ck_assert_int_eq(t->shape[k], u->shape[k]);
      ck_assert_msg(memcmp(t->data, u->data, t->nbytes) == 0, "%s differs", t->name);
      nsame++;
    }
  }
  /* 2 layers: c_attn, c_proj, c_fc, mlp.c_proj each; wte, wpe, 8 per layer (norms, biases), ln_f x2 */
  ck_assert_int_eq(nconv, 8);
  ck_assert_int_eq(nsame, 2 + 2 * 8 + 2);
  ck_assert_ptr_null(rt_st_find(o, "h.0.attn.bias"));
  ck_assert_ptr_null(rt_st_find(o, "lm_head.weight"));
  rt_st_close(o), rt_st_close(h);
}
END_TEST

/* GPT2Model's names: the same weights and the same spec (but for its comment naming the directory). */
START_TEST(without_prefix) {
  ck_assert_int_eq(sh("%s import " FIX " -o %s/a", MODELC_BIN, tmp), 0);
  ck_assert_int_eq(sh("%s import " FIX "/noprefix -o %s/b", MODELC_BIN, tmp), 0);
  ck_assert_msg(sh("cmp -s %s/a/model.safetensors %s/b/model.safetensors", tmp, tmp) == 0, "weights differ");
  ck_assert_msg(sh("grep -v '^#' %s/a/model.yaml > %s/a.yaml && grep -v '^#' %s/b/model.yaml > %s/b.yaml && "
                   "cmp -s %s/a.yaml %s/b.yaml",
                   tmp, tmp, tmp, tmp, tmp, tmp) == 0,
                "specs differ");
  ck_assert_int_eq(sh("%s check %s/b/model.yaml > /dev/null", MODELC_BIN, tmp), 0);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("import_gpt2");
  TCase *tc = tcase_create("import");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, import_matches_reference);
  tcase_add_test(tc, tensors_transposed);
  tcase_add_test(tc, without_prefix);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_run(suite()); }
