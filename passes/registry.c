/* registry.c: the one table of IR passes.
 *
 * Every pass the pipeline parser, `modelc passes` and the docs know about is listed here once:
 * its name (as written in --passes), a one-line description, its entry point and its typed
 * options with their ranges, whether it may run only once in a pipeline, and the rules between its
 * options. Adding a pass means writing passes/NAME.c and adding one row below.
 */
#include <string.h>

#include "pass.h"

bool pass_autodiff(Module *m, const PassOptions *o, Diag *d);
bool pass_checkpoint(Module *m, const PassOptions *o, Diag *d);
bool pass_compute(Module *m, const PassOptions *o, Diag *d);
bool pass_constfold(Module *m, const PassOptions *o, Diag *d);
bool pass_cse(Module *m, const PassOptions *o, Diag *d);
bool pass_dce(Module *m, const PassOptions *o, Diag *d);
bool pass_fuse(Module *m, const PassOptions *o, Diag *d);
bool pass_linformer(Module *m, const PassOptions *o, Diag *d);
bool pass_memplan(Module *m, const PassOptions *o, Diag *d);
bool pass_precision(Module *m, const PassOptions *o, Diag *d);
bool pass_quantize(Module *m, const PassOptions *o, Diag *d);
bool pass_prune(Module *m, const PassOptions *o, Diag *d);
bool pass_prune_check(const PipelineEntry *e, Diag *d);
bool pass_share(Module *m, const PassOptions *o, Diag *d);
bool pass_store(Module *m, const PassOptions *o, Diag *d);
bool pass_xent_fuse(Module *m, const PassOptions *o, Diag *d);
bool pass_checkpoint_check(const PipelineEntry *e, Diag *d);
bool pass_precision_check(const PipelineEntry *e, Diag *d);
bool pass_share_check(const PipelineEntry *e, Diag *d);
bool pass_sparse_attention(Module *m, const PassOptions *o, Diag *d);
bool pass_sparse_attention_check(const PipelineEntry *e, Diag *d);
bool pass_lowrank(Module *m, const PassOptions *o, Diag *d);
bool pass_lowrank_check(const PipelineEntry *e, Diag *d);

/* Option ranges: lo..hi for INT and SIZE, choices for STR (see PassOptSpec); checked where the
 * option is written (pass_set_option), so `modelc check` reports them at the spec's line and column
 * and the passes can rely on them. */
#define ANY_VALUE 0, 0, NULL
#define AT_LEAST(n) (n), INT64_MAX, NULL
#define BETWEEN(lo, hi) (lo), (hi), NULL
#define ONE_OF(words) 0, 0, (words)

static const PassOptSpec checkpoint_opts[] = {
    {"store", POPT_BOOL, "false", "keep every activation the backward needs: no recompute, most memory", ANY_VALUE},
    {"every", POPT_INT, "1", "keep the input of every N-th block, recompute the others", AT_LEAST(1)},
    {"sqrt", POPT_BOOL, "false", "keep about sqrt(blocks) inputs (Chen et al. 2016)", ANY_VALUE},
    {"budget", POPT_SIZE, "0", "least recompute whose planned training arena fits BYTES", AT_LEAST(1)},
};

static const PassOptSpec fuse_opts[] = {
    {"max-ops", POPT_INT, "16", "maximum element-wise operations in one fused expression", BETWEEN(1, 1000000)},
    {"epilogue", POPT_BOOL, "true", "fold element-wise consumers into a linear op's epilogue", ANY_VALUE},
};

static const PassOptSpec precision_opts[] = {
    {"bf16", POPT_BOOL, "false", "store activations between forward and backward, and gradients, in bfloat16", ANY_VALUE},
    {"fp16", POPT_BOOL, "false", "the same in IEEE half precision, with dynamic loss scaling", ANY_VALUE},
    {"products", POPT_STR, "auto", "matrix products: bf16 (on the matrix units; the default with bf16) or f32 "
                                   "(the default with fp16)", ONE_OF("auto|bf16|f32")},
};

static const PassOptSpec store_opts[] = {
    {"dtype", POPT_STR, "bf16", "the storage dtype of the weights: bf16 or f16", ONE_OF("bf16|f16")},
    {"skip", POPT_STR, "", "parameters kept in f32: comma-separated names, a trailing '*' matching a prefix", ANY_VALUE},
};

static const PassOptSpec quantize_opts[] = {
    {"scheme", POPT_STR, "q8_0", "int8 (per output row, f32 scale), q8_0 (int8 in blocks of 32, f16 scale) or q4_0 "
                                 "(4-bit in blocks of 32, f16 scale)", ONE_OF("int8|q8_0|q4_0")},
    {"skip", POPT_STR, "", "parameters kept in f32: comma-separated names, a trailing '*' matching a prefix", ANY_VALUE},
    {"head", POPT_BOOL, "false", "quantise the entry function's own linear weights too (the LM head, a classifier)",
     ANY_VALUE},
    {"embeddings", POPT_BOOL, "false", "quantise the embedding tables too (rows dequantised as they are gathered)",
     ANY_VALUE},
};
static const PassOptSpec prune_opts[] = {
    {"kind", POPT_STR, "magnitude", "magnitude (smallest |w|), nm (n of every m along K), neurons (MLP hidden units) or "
                                    "heads (attention heads)", ONE_OF("magnitude|nm|neurons|heads")},
    {"sparsity", POPT_FLOAT, "0.5", "magnitude: the fraction of weights zeroed; neurons: of hidden units removed", ANY_VALUE},
    {"scope", POPT_STR, "layer", "magnitude: the sparsity of each matrix (layer) or over all of them (global)",
     ONE_OF("layer|global")},
    {"n", POPT_INT, "2", "nm: weights kept of every m", BETWEEN(1, 1 << 16)},
    {"m", POPT_INT, "4", "nm: the group length along the input dimension", BETWEEN(2, 1 << 16)},
    {"heads", POPT_INT, "1", "heads: heads removed from every attention", BETWEEN(1, 1 << 16)},
    {"score", POPT_STR, "importance", "heads: which heads stay: importance (Michel et al., from PROG importance) or "
                                      "norm (L2 of their weights)", ONE_OF("importance|norm")},
    {"format", POPT_STR, "auto", "magnitude, nm: the inference storage: csr (sparse kernel), dense (masked f32) or "
                                 "auto (csr from the measured break-even sparsity)", ONE_OF("auto|dense|csr")},
    {"skip", POPT_STR, "", "magnitude, nm: weights left dense: comma-separated names, a trailing '*' matching a prefix",
     ANY_VALUE},
    {"head", POPT_BOOL, "false", "magnitude, nm: prune the entry function's own linear weights too (an untied head)",
     ANY_VALUE},
};
static const PassOptSpec lowrank_opts[] = {
    {"rank", POPT_INT, "0", "the rank R of every factorised weight W [N,K] ~ U [N,R] V [R,K] (at most min(N,K))",
     BETWEEN(0, 1 << 24)},
    {"energy", POPT_FLOAT, "0", "instead of rank=: per weight the smallest rank keeping this fraction (0, 1] of its "
                                "squared singular values (needs --weights)", ANY_VALUE},
    {"scope", POPT_STR, "all", "which block linears: all, attention (the linears into and out of an attention) or ffn "
                               "(the others)", ONE_OF("all|attention|ffn")},
    {"skip", POPT_STR, "", "weights left dense: comma-separated names, a trailing '*' matching a prefix", ANY_VALUE},
    {"head", POPT_BOOL, "false", "factorise the entry function's own linear weights too (an untied head)", ANY_VALUE},
    {"force", POPT_BOOL, "false", "factorise even where the rank saves nothing (R (N+K) >= N K; full-rank tests)",
     ANY_VALUE},
    {"uniform", POPT_BOOL, "false", "one rank per block weight, the largest its layers need (energy=: one block "
                                    "function, not a clone per layer)", ANY_VALUE},
};
static const PassOptSpec compute_opts[] = {
    {"dtype", POPT_STR, "bf16", "the dtype of the products: bf16 (f32 accumulation)", ONE_OF("bf16")},
};

static const PassOptSpec share_opts[] = {
    {"mode", POPT_STR, "all", "what the layers share: all block parameters, the attention sub-layer's or the "
                              "feed-forward's", ONE_OF("all|attention|ffn")},
    {"group", POPT_INT, "0", "share within groups of N consecutive layers (0: all layers one group)",
     BETWEEN(0, 1 << 20)},
};

static const PassOptSpec sparse_attention_opts[] = {
    {"pattern", POPT_STR, "local", "local (a band of keys), strided or fixed (Child et al. 2019)",
     ONE_OF("local|strided|fixed")},
    {"window", POPT_INT, "256", "local: each query sees the keys within |q - k| < window (causal: the window last)",
     BETWEEN(1, INT32_MAX)},
    {"stride", POPT_INT, "128", "strided: keys within the stride l, and every l-th before (and after)",
     BETWEEN(1, INT32_MAX)},
    {"block", POPT_INT, "128", "fixed: the block length l: keys of the query's own block and the summary columns",
     BETWEEN(1, INT32_MAX)},
    {"summary", POPT_INT, "0", "fixed: the last c positions of every block, which every later query sees",
     BETWEEN(0, INT32_MAX)},
    {"global", POPT_INT, "0", "the first G positions attend to and are attended by all (BigBird's global tokens)",
     BETWEEN(0, INT32_MAX)},
    {"tile", POPT_INT, "64", "the kernels' tile in positions (a measured default)", BETWEEN(1, 512)},
};

static const PassOptSpec linformer_opts[] = {
    {"k", POPT_INT, "0", "the projected length K of keys and values, 1 <= K <= T (0: T/4)", BETWEEN(0, 1 << 20)},
    {"share", POPT_STR, "none", "projections: none (E and F per layer), kv (one per layer for keys and values) or "
                                "layer (one for all layers)", ONE_OF("none|kv|layer")},
};

static const PassOptSpec xent_fuse_opts[] = {
    {"chunk", POPT_INT, "256", "rows of logits computed at a time (scratch chunk x vocab floats)", BETWEEN(1, 1 << 20)},
};

#define NOPTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const PassInfo registry[] = {
    {"autodiff", "reverse-mode differentiation: @train(tokens, targets) -> (loss, parameter gradients)",
     pass_autodiff, NULL, 0, true, NULL},
    {"checkpoint", "gradient-checkpoint placement over the block chain (store, every=N, sqrt or budget=BYTES)",
     pass_checkpoint, checkpoint_opts, NOPTS(checkpoint_opts), true, pass_checkpoint_check},
    {"constfold", "fold element-wise ops on constants and simplify x+0, x*1, dropout(p=0)",
     pass_constfold, NULL, 0, false, NULL},
    {"cse", "merge identical pure ops (including repeated parameter loads)", pass_cse, NULL, 0, false, NULL},
    {"dce", "remove unused pure ops and functions unreachable from the entry", pass_dce, NULL, 0, false, NULL},
    {"fuse", "fuse element-wise chains into one loop and into linear epilogues", pass_fuse, fuse_opts,
     NOPTS(fuse_opts), false, NULL},
    {"precision", "mixed-precision training: 16-bit activation storage (bf16 or fp16, with loss scaling), bf16 products",
     pass_precision, precision_opts, NOPTS(precision_opts), true, pass_precision_check},
    {"store", "16-bit weight storage: f32 parameters stored in bf16 or f16, cast to f32 where they are read",
     pass_store, store_opts, NOPTS(store_opts), false, NULL},
    {"quantize", "int8 / 4-bit weights (int8, q8_0, q4_0) read by integer kernels: linear layers, optionally head "
                 "and embeddings", pass_quantize, quantize_opts, NOPTS(quantize_opts), true, NULL},
    {"prune", "weight pruning: magnitude / N:M masks (csr storage where it pays), or MLP neurons / attention heads "
              "removed (smaller matrices)", pass_prune, prune_opts, NOPTS(prune_opts), false, pass_prune_check},
    {"compute", "products in bf16 from bf16-stored weights: linear and embedding read them without a cast",
     pass_compute, compute_opts, NOPTS(compute_opts), true, NULL},
    {"share", "cross-layer parameter sharing (ALBERT): the layers of a repeated block bind one parameter set",
     pass_share, share_opts, NOPTS(share_opts), true, pass_share_check},
    {"sparse-attention", "block-sparse attention: local, strided or fixed patterns with global tokens; kernels "
                         "skip absent tiles; a local causal cache becomes a ring", pass_sparse_attention,
     sparse_attention_opts, NOPTS(sparse_attention_opts), true, pass_sparse_attention_check},
    {"linformer", "Linformer attention: keys and values projected along the sequence to K (bidirectional only)",
     pass_linformer, linformer_opts, NOPTS(linformer_opts), true, NULL},
    {"xent_fuse", "LM head + cross-entropy + their backward in one op over row chunks: no [rows, vocab] logits",
     pass_xent_fuse, xent_fuse_opts, NOPTS(xent_fuse_opts), false, NULL},
    {"lowrank", "low-rank factorisation of trained linear weights by truncated SVD: W [N,K] ~ U [N,R] V [R,K] "
                "(rank=R or energy=E)", pass_lowrank, lowrank_opts, NOPTS(lowrank_opts), false, pass_lowrank_check},
    {"memplan", "place every intermediate tensor at a static offset in one arena (liveness, greedy by size)",
     pass_memplan, NULL, 0, false, NULL},
};

const PassInfo *pass_registry(int *n) {
  if (n) *n = NOPTS(registry);
  return registry;
}

const PassInfo *pass_find(const char *name) {
  for (int i = 0; i < NOPTS(registry); i++)
    if (strcmp(registry[i].name, name) == 0) return &registry[i];
  return NULL;
}

const char *pass_default_pipeline(void) { return "constfold,cse,fuse,dce,memplan"; }
