/* sparse_attention.c: block-sparse attention (the `sparse-attention` pass:
 * sparse-attention<pattern=local|strided|fixed;window;stride;block;summary;global;tile>).
 *
 * Every attention op of the module gets the pattern as attributes (ops.def: sparse, window, stride,
 * summary, global, tile, cache); nothing else changes. The backends then call the block-sparse
 * kernels (kernels.def, the rows with W_ATTR / W_STATE_IF("sparse", "*")), which visit only the
 * tiles the pattern reaches, forward and backward; the FLOP count (ir.c, attention_pairs) counts
 * the allowed query-key pairs. The patterns are those of Child et al. 2019 as their reference code
 * defines them, with BigBird-style global tokens on top (docs/passes.md has the definitions and
 * pictures; runtime/kernels/attention_sparse.c the kernels):
 *
 *   %a = attention(%qkv) {causal=1, heads=4}
 *     -> %a = attention(%qkv) {cache=256, causal=1, heads=4, sparse="local", tile=64, window=256}
 *
 * The options name the paper's sizes: local's window, strided's stride l, fixed's block l and
 * summary c; IR and runtime call fixed's l `stride` too (one field). A causal local pattern whose
 * window and global tokens are fewer than the context keeps its KV cache as a ring of that many
 * positions (cache=): bounded memory, and decoding past the compiled context. The spec's
 * `attention: {sparse: {...}}` sets the same attributes through pass_sparse_set.
 *
 * It runs before autodiff (attention_dx copies the pattern from the forward op): a module that
 * already trains is refused, as is an attention op that has a pattern already.
 */
#include <stdio.h>
#include <string.h>

#include "pass.h"

bool pass_sparse_set(Op *op, const char *pattern, int64_t size, int64_t summary, int64_t global, int64_t tile,
                     char *err, size_t n) {
  int64_t T = op->in[0]->type.dim[1];
  bool local = strcmp(pattern, "local") == 0, fixed = strcmp(pattern, "fixed") == 0;
  if (ir_attr(op, "sparse")) {
    snprintf(err, n, "the attention already has a sparse pattern (sparse=%s)", ir_attr_s(op, "sparse"));
    return false;
  }
  if (size < 1) {
    snprintf(err, n, "sparse pattern %s needs %s >= 1", pattern, local ? "window" : fixed ? "block" : "stride");
    return false;
  }
  if (fixed && (summary < 0 || summary > size)) {
    snprintf(err, n, "sparse pattern fixed: summary %lld must be between 0 and the block %lld", (long long)summary,
             (long long)size);
    return false;
  }
  if (global < 0 || tile < 1 || tile > 512) {
    snprintf(err, n, global < 0 ? "global tokens must be >= 0" : "tile must be between 1 and 512 positions");
    return false;
  }
  ir_set_attr_str(op, "sparse", pattern);
  ir_set_attr_int(op, local ? "window" : "stride", size);
  if (fixed) ir_set_attr_int(op, "summary", summary);
  if (global) ir_set_attr_int(op, "global", global);
  ir_set_attr_int(op, "tile", tile);
  /* a ring of the positions a query can see, when that is fewer than the context */
  if (local && ir_attr_i(op, "causal") && size + global < T) ir_set_attr_int(op, "cache", size + global);
  return true;
}

bool pass_sparse_attention_check(const PipelineEntry *e, Diag *d) {
  const PassOptions *o = &e->opts;
  const char *p = pass_opt_str(o, "pattern");
  /* the options holding a size, and whose size each is; a pattern's own is sizes[pattern index] */
  static const char *const sizes[] = {"window", "stride", "block", "summary"};
  static const char *const whose[] = {"local's size", "strided's size", "fixed's size", "fixed's summary columns"};
  int pi = !strcmp(p, "local") ? 0 : !strcmp(p, "strided") ? 1 : 2;
  if (!pass_opt_is_set(o, sizes[pi])) {
    diag_error(d, e->file, e->line, e->col, "sparse-attention: pattern=%s needs %s=", p, sizes[pi]);
    return false;
  }
  for (int i = 0; i < 4; i++) {
    bool mine = i == pi || (pi == 2 && i == 3);
    if (!mine && pass_opt_is_set(o, sizes[i])) {
      diag_error(d, e->file, e->line, e->col, "sparse-attention: pattern=%s takes no %s= (%s)", p, sizes[i], whose[i]);
      return false;
    }
  }
  if (pi == 2 && pass_opt_int(o, "summary") > pass_opt_int(o, "block")) {
    diag_error(d, e->file, e->line, e->col, "sparse-attention: summary=%lld is above block=%lld",
               (long long)pass_opt_int(o, "summary"), (long long)pass_opt_int(o, "block"));
    return false;
  }
  return true;
}

bool pass_sparse_attention(Module *m, const PassOptions *o, Diag *d) {
  const char *pattern = pass_opt_str(o, "pattern");
  const char *sz = !strcmp(pattern, "local") ? "window" : !strcmp(pattern, "strided") ? "stride" : "block";
  if (ir_train_func(m)) {
    pass_error(o, d, "sparse-attention: the module already trains (@%s): run it before autodiff, so that the "
                     "backward attends with the same pattern", ir_train_func(m)->name);
    return false;
  }
  int count = 0;
  for (int fi = 0; fi < m->nfunc; fi++) {
    Func *f = m->funcs[fi];
    for (Op *op = f->first; op; op = op->next) {
      if (op->kind != OP_ATTENTION) continue;
      char err[200];
      if (!pass_sparse_set(op, pattern, pass_opt_int(o, sz), pass_opt_int(o, "summary"), pass_opt_int(o, "global"),
                           pass_opt_int(o, "tile"), err, sizeof err)) {
        pass_error(o, d, "sparse-attention: in @%s: %s", f->name, err);
        return false;
      }
      count++;
    }
  }
  if (!count) {
    pass_error(o, d, "sparse-attention: the module has no attention op");
    return false;
  }
  return true;
}
