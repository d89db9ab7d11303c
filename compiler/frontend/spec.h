/* spec.h: the modelc spec language (docs/spec.md): a YAML description of a transformer read into
 * a checked model description (Spec), and its lowering into the IR (lower.c).
 *
 * Parsing reports every problem it finds through Diag with the 1-based FILE:LINE:COL of the
 * offending YAML node, so one run shows all mistakes; any error makes the parse return NULL.
 * A Spec that was returned is fully checked: every default is resolved, every layer has its final
 * name, sizes are positive and their products fit in int64, so lowering cannot fail on user input.
 *
 * The Spec struct is public and read-only for its users (the driver, lowering, and the training
 * code that reads the `train:` section). All its memory is owned by the Spec and freed by
 * fe_spec_free().
 */
#ifndef MODELC_FE_SPEC_H
#define MODELC_FE_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../ir/diag.h"
#include "../../ir/ir.h"
#include "../../passes/pass.h"

/* Maximum nesting of YAML collections in a spec file (deeper input is an error at the node). */
#define FE_MAX_DEPTH 64
/* Longest parameter name (including the repeat prefix "h.11."). */
#define FE_NAME_MAX 128

typedef enum SpecLayerKind {
  SPEC_L_EMBEDDING,   /* token embedding: <name>.weight [vocab, dim]; default name "wte"; with dim E (a
                       * factorised embedding, ALBERT): <name>.weight [vocab, E], then the projection
                       * emb_proj.weight [dim, E] and emb_proj.bias [dim] */
  SPEC_L_POSITIONS,   /* learned: <name>.weight [context, dim] (default "wpe"); sinusoidal: none */
  SPEC_L_LAYERNORM,   /* <name>.weight [dim] (+ <name>.bias [dim]); default name "ln_<k>" */
  SPEC_L_RMSNORM,     /* <name>.weight [dim]; default name "ln_<k>" */
  SPEC_L_ATTENTION,   /* <name>.c_attn.{weight [3dim,dim],bias}, <name>.c_proj.{weight,bias}; "attn" */
  SPEC_L_MLP,         /* <name>.c_fc, (<name>.c_gate), <name>.c_proj; default name "mlp" */
  SPEC_L_RESIDUAL,    /* x + f(x) over the layers in `body` */
  SPEC_L_REPEAT,      /* `count` copies of `body`, parameters <name>.<i>.*; one IR function @<name> */
  SPEC_L_DROPOUT,     /* dropout(p): no parameters */
  SPEC_L_LM_HEAD,     /* tied: uses the embedding's weight; untied: <name>.weight [vocab, dim] */
  SPEC_L_CLASSIFIER,  /* pool, then <name>.weight [classes, dim] and <name>.bias [classes] */
  SPEC_L_POOL,        /* sequence compression (Funnel-Transformer): no parameters; the next layer's
                       * attention pools its queries, its residual the input (docs/spec.md) */
  SPEC_L_UPSAMPLE,    /* restores the full length: repeat, plus the stream before the first pool */
  SPEC_L_MOE,         /* mixture of experts in place of an mlp: <name>.router.weight [E, dim], <name>.w1
                       * [E, hidden, dim], <name>.b1 [E, hidden], <name>.w2 [E, dim, hidden], <name>.b2
                       * [E, dim]; default name "moe" */
  SPEC_L_COUNT
} SpecLayerKind;

typedef enum SpecActivation { SPEC_ACT_GELU, SPEC_ACT_GELU_TANH, SPEC_ACT_RELU, SPEC_ACT_SWIGLU, SPEC_ACT_SILU } SpecActivation;
typedef enum SpecPosKind { SPEC_POS_LEARNED, SPEC_POS_SINUSOIDAL, SPEC_POS_ROPE } SpecPosKind;
typedef enum SpecPool { SPEC_POOL_FIRST, SPEC_POOL_MEAN } SpecPool;
typedef enum SpecModelKind { SPEC_DECODER, SPEC_ENCODER } SpecModelKind;
typedef enum SpecSchedule { SPEC_SCHED_COSINE, SPEC_SCHED_CONSTANT, SPEC_SCHED_LINEAR } SpecSchedule;
typedef enum SpecOptimizer { SPEC_OPT_ADAMW, SPEC_OPT_SGD } SpecOptimizer;
typedef enum SpecPrecision { SPEC_PREC_FP32, SPEC_PREC_BF16, SPEC_PREC_FP16 } SpecPrecision;

/* One entry of a layer list. Only the fields of its kind are meaningful. */
typedef struct SpecLayer {
  SpecLayerKind kind;
  const char *name;          /* final name (default resolved); relative to the enclosing repeat */
  int line, col;             /* location of the layer's key in the spec */
  int64_t edim;              /* embedding: the table's width E, 1..model.dim; 0: model.dim, no projection */
  double eps;                /* layernorm, rmsnorm */
  bool bias;                 /* layernorm, attention, mlp (classifier always has a bias) */
  int heads;                 /* attention: divides model.dim */
  int kv_heads;              /* attention: grouped-query KV heads, divides heads (= heads unless given) */
  bool causal;               /* attention */
  int sparse;                /* attention: 0 dense, else 1 + SPEC_SPARSE_WORDS' place (local, strided, fixed) */
  int64_t sp_size;           /* sparse: local's window, strided's stride, fixed's block */
  int64_t sp_summary, sp_global, sp_tile; /* sparse: fixed's summary, global tokens, the kernels' tile */
  int64_t memory;            /* attention: Transformer-XL segment memory M (positions kept), 0: none */
  int mem_line, mem_col;     /* attention: location of the memory value */
  int64_t hidden;            /* mlp, moe (each expert's) */
  SpecActivation activation; /* mlp, moe (not swiglu) */
  int64_t experts, top_k;    /* moe: E >= 1, K in [1, E] */
  double capacity_factor;    /* moe: > 0 */
  double aux_loss;           /* moe: the load-balancing loss's coefficient A >= 0 */
  double p;                  /* dropout, in [0, 1) */
  bool tied;                 /* lm_head */
  int64_t classes;           /* classifier, >= 2 */
  SpecPool pool;             /* classifier */
  SpecPosKind pos;           /* positions */
  double theta;              /* positions kind rope: the frequency base (default 10000) */
  int64_t count;             /* repeat: number of copies, >= 1 */
  int64_t stride;            /* pool: the sequence shortens by it (>= 2); upsample: the product of the
                              * pools' strides before it (checked); attention: > 1 when it is the
                              * first attention after a pool (pooled queries), else 0 */
  int nbody;                 /* residual, repeat: the nested layer list */
  struct SpecLayer *body;
} SpecLayer;

typedef struct SpecModel {
  const char *name;          /* module name */
  int64_t vocab, context, batch, dim;
  SpecModelKind kind;        /* inferred: decoder if any attention is causal, else encoder */
  int line, col;             /* location of the `model:` key */
} SpecModel;

/* The `train:` section (parsed and range-checked; defaults documented in docs/spec.md). */
typedef struct SpecTrain {
  bool present;              /* the spec has a train: section */
  int line, col;             /* location of the `train:` key (0 when absent) */
  int64_t steps, batch, micro_batch, warmup, seed, eval_every, checkpoint_every;
  double lr, min_lr, beta1, beta2, eps, weight_decay, momentum, grad_clip;
  SpecSchedule schedule;
  SpecOptimizer optimizer;
  SpecPrecision precision;
  const char *data;          /* NULL when not given */
  int data_line, data_col;   /* location of the data value, for errors opening it later */
  /* prune: {initial, start, end, every}: the gradual pruning schedule (every 0: none) */
  double prune_initial;
  int64_t prune_start, prune_end, prune_every;
  /* distill: {teacher, temperature, alpha}: knowledge distillation from the teacher's spec (parsed
   * and checked, owned; NULL: no distillation). Its path is relative to the student's spec file. */
  struct Spec *teacher;
  double distill_temperature, distill_alpha;
} SpecTrain;

typedef struct SpecBlock SpecBlock;   /* allocation list (private) */

typedef struct Spec {
  const char *file;          /* file name as given */
  SpecModel model;
  int nlayers;
  SpecLayer *layers;         /* the top-level layer list */
  const char *embedding;     /* name of the embedding layer (tied heads use <embedding>.weight) */
  double rope_theta;         /* positions {kind: rope}: every attention rotates q, k (0: no rope) */
  bool has_passes;           /* the spec has a passes: key */
  Pipeline passes;           /* its pipeline (owned) */
  SpecTrain train;
  SpecBlock *blocks;         /* everything above is allocated here */
} Spec;

Spec *fe_parse_spec_file(const char *path, Diag *d);  /* NULL on any error */

/* Input size limits (docs/cli.md): a spec may be 64 MiB; an IR (.mir) file 2 GiB if regular, 256
 * MiB if not (a device or a FIFO). */
#define FE_SPEC_MAX_BYTES ((size_t)64 << 20)
#define FE_MIR_MAX_BYTES ((size_t)2 << 30)
#define FE_MIR_MAX_STREAM_BYTES ((size_t)256 << 20)

/* The whole file into a malloc'd, NUL-terminated buffer (*len bytes before the NUL): a regular file
 * at its size up to reg_cap, anything else up to other_cap; a directory, an oversized file or a
 * read error is a diagnostic naming `what` ("spec", "IR") and NULL. */
char *fe_read_file(const char *path, const char *what, size_t reg_cap, size_t other_cap, size_t *len,
                   Diag *d);
Spec *fe_parse_spec_text(const char *file, const char *text, size_t len, Diag *d);
void fe_spec_free(Spec *s);
const Pipeline *fe_spec_passes(const Spec *s);         /* NULL when the spec has no passes: key */
const SpecTrain *fe_spec_train(const Spec *s);         /* always non-NULL; check ->present */
const char *fe_layer_kind_name(SpecLayerKind k);

/* Spec -> IR module (lower.c). NULL with an error in d if the module cannot be built. */
Module *fe_lower(const Spec *s, Diag *d);

/* The parameters one layer owns (not those of nested layers): name (prefix + layer name +
 * suffix), shape, initialiser and decay. Shared by checking (duplicate names, sizes) and lowering
 * so both agree on names and order. Returns the count (at most FE_LAYER_MAX_PARAMS). */
#define FE_LAYER_MAX_PARAMS 8
typedef struct SpecParam {
  char name[FE_NAME_MAX];
  int rank;                  /* 1..3 (3: a moe's per-expert weights) */
  int64_t dim[3];
  InitKind init;
  double init_arg;
  bool decay;
} SpecParam;
int fe_layer_params(const Spec *s, const SpecLayer *l, const char *prefix, SpecParam *out);

#endif
