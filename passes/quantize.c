/* quantize.c: weight quantisation (the `quantize` pass: quantize<scheme=int8|q8_0|q4_0>).
 *
 * Every f32 [N,K] parameter read only as a linear layer's weight (and, with embeddings=true, as
 * an embedding table) gets a quantised dtype (ir.h, DType): int8 per output row with an f32 scale
 * (scheme=int8, dtype i8_row), or blocks of 32 along K with an f16 scale, int8 (q8_0) or 4-bit
 * (q4_0) values. The param op then yields the quantised weight and linear reads it directly: its
 * kernel row is chosen by the weight's dtype (kernels.def, W_DTYPE), which quantises the
 * activations to int8 and accumulates in int32 (docs/passes.md, "quantize", has the rounding).
 *
 *   %0 = param {p=@w} : f32[8,32]         ->    %0 = param {p=@w} : q8_0[8,32]
 *   %1 = linear(%x, %0) : f32[2,8]              %1 = linear(%x, %0) : f32[2,8]
 *
 * A block function takes its weights as arguments: an argument every call binds to a quantised
 * weight becomes quantised itself; when some calls bind a quantised weight and others an f32 one
 * (skip=h.0.*), those calls go to a clone of the function (@h.q8_0) typed for them.
 *
 * What is quantised: the linear weights inside the functions the entry calls (the blocks). By
 * default the embedding tables and the linear weights of the entry function itself (the LM head, a
 * classifier) stay f32; head=true and embeddings=true include them (a tied head is the embedding
 * table: it needs both). skip= keeps listed parameters in f32 (names, '*' for a prefix; a name
 * matching nothing is an error). q8_0 and q4_0 need K a multiple of 32: another weight is an error
 * naming it (skip it, or use int8, which takes any K). A parameter with any other reader (an add,
 * a norm) is left alone. The pass is for inference: a module that trains (@train) is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pass.h"

bool pass_quantize(Module *m, const PassOptions *o, Diag *d) {
  const char *scheme = pass_opt_str(o, "scheme"), *skip = pass_opt_str(o, "skip");
  bool head = pass_opt_bool(o, "head"), embeddings = pass_opt_bool(o, "embeddings");
  DType q = !strcmp(scheme, "int8") ? DT_I8_ROW : !strcmp(scheme, "q8_0") ? DT_Q8_0 : DT_Q4_0; /* registry.c */
  if (ir_train_func(m)) {
    pass_error(o, d, "quantize: the module trains (@%s): quantised weights are for inference (build the "
                     "inference program without autodiff, e.g. --passes='quantize<scheme=%s>,constfold,cse,fuse,"
                     "dce,memplan', and load the trained f32 weights into it)", ir_train_func(m)->name, scheme);
    return false;
  }
  PassReach *r = pass_param_reach(m);
  PassSkip sk = pass_skip_new(skip);
  bool ok = true;
  int nq = 0;
  for (int i = 0; i < m->nparam; i++) {
    Param *p = m->params[i];
    const PassReach *u = &r[i];
    bool skipped = pass_skip_match(&sk, p->name);
    if (skipped || p->type.dtype != DT_F32 || p->fmt != PF_DENSE || p->type.rank != 2 || u->other ||
        !(u->head || u->block || u->embedding))
      continue;
    if (u->embedding && u->head && head != embeddings) {
      pass_error(o, d, "quantize: @%s is both the embedding table and the head's weight (tied): give head=true and "
                       "embeddings=true to quantise it, or neither", p->name);
      ok = false;
      continue;
    }
    if ((u->head && !head) || (u->embedding && !embeddings)) continue;
    int64_t nb = ir_quant_block(q), k = p->type.dim[1];
    if (nb && k % nb) {
      pass_error(o, d, "quantize: @%s [%lld,%lld]: %s needs its input dimension to be a multiple of %lld (skip it "
                       "with skip=%s, or use scheme=int8)", p->name, (long long)p->type.dim[0], (long long)k, scheme,
                 (long long)nb, p->name);
      ok = false;
      continue;
    }
    p->type.dtype = q;
    nq++;
  }
  ok &= pass_skip_done(&sk, o, d, "quantize");
  free(r);
  if (!ok) return false;
  pass_refit_types(m, ir_dtype_name(q)); /* the param ops, then the calls and ops that read them */
  if (nq == 0) {
    pass_error(o, d, "quantize: no parameter to quantise (only f32 [N,K] weights read by linear ops are%s)",
               embeddings ? " and embedding tables" : "; the head and embeddings need head=true, embeddings=true");
    return false;
  }
  return true;
}
