/* ir.h: the modelc tensor IR.
 *
 * A Module holds parameters (named tensors with shape, storage dtype and format, initialiser and
 * the facts passes attach), the training settings its spec stated (TrainConfig) and functions. A Func is a doubly linked list of Ops in topological order over SSA
 * Values with static shapes. A repeated block is one Func called once per layer by OP_CALL with
 * that layer's parameters as arguments, so weight sharing is "bind the same parameter",
 * autodiff differentiates a block once, and checkpointing re-calls a block.
 *
 * Everything is allocated from the Module's arena and freed at once by ir_module_free().
 * The op table is ir/ops.def, each op's attributes are declared in ir/ops.def (ATTR rows) (checked and read
 * by ir/attrs.c); the text form is described in docs/ir.md (printer ir/print.c, parser
 * ir/parse.c); ir_verify() (ir/verify.c) checks SSA, types and shapes.
 */
#ifndef MODELC_IR_H
#define MODELC_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "diag.h"

#define IR_MAX_RANK 6
/* Elements of one tensor (1 PiB of f32): larger types are rejected by the parser, the verifier and
 * the spec checker alike. */
#define IR_MAX_NUMEL ((int64_t)1 << 48)

/* The quantised dtypes (the quantize pass; docs/passes.md, "quantize") are weight formats: a
 * value of one is an [N,K] weight in that format (int8 or 4-bit values followed by their scales,
 * runtime/modelc_rt.h, RtFormat), read only by the kernels of linear (operand 1) and embedding
 * (the table), passed through call arguments; no other op takes one. A weight's type must say how
 * to read it because it crosses into a block function as an argument: the format is the dtype.
 *   i8_row  int8 per output row with one f32 scale per row
 *   q8_0    int8 in blocks of 32 along K with one f16 scale per block (8.5 bits per weight)
 *   q4_0    4-bit in blocks of 32 along K with one f16 scale per block (4.5 bits per weight)
 *
 * csr is the sparse weight format of the prune pass (docs/passes.md, "prune"): an [N,K] weight's
 * nonzero f32 values in compressed sparse rows (u16 column indices, i32 row pointers; RtFormat
 * RT_FMT_CSR), with room for the parameter's Param.nnz nonzeros; like the quantised dtypes it is
 * read only by linear (operand 1) and passed through call arguments. ir_dtype_packed() says
 * whether a dtype is one of these weight formats. */
typedef enum DType { DT_F32, DT_F16, DT_BF16, DT_I8, DT_I32, DT_I64, DT_I8_ROW, DT_Q8_0, DT_Q4_0, DT_CSR, DT_COUNT } DType;

/* A tensor type: element type and a static shape (rank 0 is a scalar). */
typedef struct Type {
  DType dtype;
  int rank;                   /* 0..IR_MAX_RANK */
  int64_t dim[IR_MAX_RANK];   /* each >= 1 */
} Type;

typedef struct Module Module;
typedef struct Func Func;
typedef struct Op Op;

/* An SSA value: a function argument or an op result. */
typedef struct Value {
  int id;            /* unique within its Func; allocation order, not printed */
  const char *name;  /* printed as %name; NULL: printed as %N, N counting unnamed values in order */
  Type type;         /* static type */
  Op *def;           /* defining op, NULL for a function argument */
  int index;         /* result index in def, or argument index */
  int nuses;         /* operand uses, valid after ir_count_uses() */
} Value;

typedef enum AttrKind { ATTR_INT, ATTR_FLOAT, ATTR_STR, ATTR_SYM, ATTR_INTS } AttrKind;

/* An op attribute. Printed in key order as key=VALUE: 4, 1e-05, "text", @symbol, [1,2]. */
typedef struct Attr {
  const char *key;
  AttrKind kind;
  int64_t i;         /* ATTR_INT */
  double f;          /* ATTR_FLOAT */
  const char *s;     /* ATTR_STR and ATTR_SYM (without '@') */
  int n;             /* ATTR_INTS: count */
  int64_t *ints;     /* ATTR_INTS: values */
} Attr;

typedef enum OpKind {
#define OP(e, name, mi, ma, no, fl, sh, fo, gr) e,
#include "ops.def"
#undef OP
  OP_COUNT
} OpKind;

enum {
  OPF_PURE = 1,      /* no side effects: CSE and DCE may remove or merge it */
  OPF_EW = 2,        /* scalar element-wise op: may appear in fused expressions */
  OPF_COMMUTE = 4,   /* binary and commutative */
  OPF_RANDOM = 8,    /* draws random numbers at train time (never merged) */
};

typedef struct Op {
  OpKind kind;
  int nin;           /* operands */
  struct Value **in;
  int nout;          /* results */
  struct Value **out;
  int nattr;         /* attributes, kept sorted by key */
  Attr *attr;
  Op *prev, *next;   /* neighbours in the function's op list */
  Func *func;        /* owning function, NULL while detached */
  Module *module;    /* owning module (its arena holds the op) */
  int line, col;     /* source position when parsed from text, else 0 */
} Op;

typedef struct Func {
  const char *name;  /* without '@' */
  int narg;
  Value **args;
  int nret;
  Value **ret;       /* returned values */
  Op *first, *last;  /* op list in topological order */
  int nvalues;       /* next Value id */
  Module *module;
  int line, col;     /* source position when parsed */
} Func;

/* Unstructured pruning of a parameter (the prune pass): the runtime computes its mask from the
 * loaded (or trained) values and holds it (docs/passes.md, "prune").
 *   PRUNE_MAGNITUDE  the Param.sparsity fraction of its elements with the smallest |w| are zero
 *   PRUNE_GLOBAL     the same over every PRUNE_GLOBAL parameter together (one threshold)
 *   PRUNE_NM         in each group of prune_m consecutive elements along K, prune_n are kept */
typedef enum PruneKind { PRUNE_NONE, PRUNE_MAGNITUDE, PRUNE_GLOBAL, PRUNE_NM, PRUNE_COUNT } PruneKind;
/* Structured pruning (prune<kind=neurons|heads>): the parameter is a slice of a larger tensor, the
 * full one a checkpoint holds; which units it keeps the runtime chooses at load by a score shared
 * by its group (the parameters of one MLP or one attention):
 *   SEL_NORM        the units of largest L2 norm over the group's parameters
 *   SEL_IMPORTANCE  the units (heads) of largest GROUP.head_importance (PROG importance) */
typedef enum SelectRule { SEL_NONE, SEL_NORM, SEL_IMPORTANCE, SEL_COUNT } SelectRule;

typedef enum InitKind { INIT_ZEROS, INIT_ONES, INIT_NORMAL, INIT_UNIFORM, INIT_SINUSOID, INIT_COUNT } InitKind;

/* How a parameter's elements are laid out in the weights. Only PF_DENSE exists: every element
 * stored in type.dtype, row-major. Block-quantised and sparse (csr) weights are dtypes instead
 * (DType above: a weight's type must say how to read it, since it crosses into block functions as
 * an argument), their scales or indices counted by ir_param_storage_bytes() from the dtype (and
 * Param.nnz). The text form names a format with format=NAME; the parser accepts only "dense". */
typedef enum ParamFormat { PF_DENSE, PF_COUNT } ParamFormat;

#define IR_MAX_PARAM_AUX 4
/* An auxiliary array a format stores next to a parameter's values (a block format's scales, a
 * sparse format's row pointers or column indices). */
typedef struct ParamAux {
  const char *role;        /* what it holds ("scales", "indices"); the tensor's name suffix in the weights */
  DType dtype;             /* its element type */
  int64_t numel;           /* its element count */
} ParamAux;

/* A model parameter (weight, bias, norm gain, embedding table). Weight sharing is binding the
 * same parameter at several places (several `param {p=@P}` ops): a parameter never aliases
 * another. */
typedef struct Param {
  const char *name;        /* stable, PyTorch state_dict style: "h.0.attn.c_attn.weight" */
  Type type;               /* logical shape; type.dtype is the storage dtype (f32, bf16 or f16) and the
                              dtype the `param` op yields */
  ParamFormat fmt;         /* storage format (PF_DENSE: type.dtype elements, row-major) */
  int block;               /* elements per block of a block format; 0 for dense */
  int naux;                /* auxiliary arrays of the format (0 for dense) */
  ParamAux aux[IR_MAX_PARAM_AUX]; /* the first naux are used */
  InitKind init;           /* initialiser used by PROG init */
  double init_arg;         /* std for INIT_NORMAL, bound for INIT_UNIFORM */
  bool trainable;          /* false: frozen (printed "frozen") */
  PruneKind prune;         /* unstructured pruning (printed prune=magnitude(S), global(S), nm(N:M)) */
  double sparsity;         /* PRUNE_MAGNITUDE, PRUNE_GLOBAL: the fraction of zeros, in (0, 1) */
  int prune_n, prune_m;    /* PRUNE_NM: n kept of every m */
  int64_t nnz;             /* DT_CSR: the nonzeros its storage has room for (printed nnz=N) */
  SelectRule select;       /* structured pruning: printed select=RULE(@GROUP,AXIS,PARTS,UNIT,OF) */
  const char *select_group;/* the group's key parameter (an MLP's first weight, an attention's output
                            * projection): its name names the group and its score tensor */
  int select_axis;         /* the axis cut: 0 rows, 1 columns */
  int select_parts;        /* the full axis is PARTS equal parts (3 for q, k, v), each of OF units */
  int select_unit;         /* extent of one unit along the axis (a head: head dim; a neuron: 1) */
  int select_of;           /* units per part in the full tensor (the kept ones: dim[axis] / (PARTS*UNIT)) */
  bool decay;              /* weight decay applies (false for biases and norm gains) */
  int lowrank;             /* the lowrank pass: this is a factor (NAME.lr_u [N,R] or NAME.lr_v [R,K]) of a
                            * weight factorised at rank R by truncated SVD (printed lowrank=svd(R) or
                            * lowrank=svd(R,E)); 0: not a factor */
  double lowrank_energy;   /* the retained energy of that SVD (sum of kept s_i^2 / total), in [0, 1];
                            * negative: not known (shapes only, no weights were given) */
  float *data;             /* the parameter's values when the driver read a checkpoint (modelc --weights):
                            * type.dim row-major f32, in the module's arena; NULL: none. Not printed in the
                            * text form; passes that transform weights (lowrank) read and write it */
  int index;               /* its position in Module.params (set by ir_add_param; ir_remove_params renumbers) */
  int line, col;           /* source position when parsed */
} Param;

/* The training settings a spec's `train:` section states (docs/spec.md; every default resolved),
 * carried by the module so a .mir file builds the same program as its spec. The backends compile
 * it into the program's RtTrainConfig; the pass manager places the precision pass from it. Printed
 * as the module's `train {...}` line (docs/ir.md). Enum values equal the runtime's RtSchedule,
 * RtOptimizer and RtPrecision. */
typedef enum TrainSchedule { TRAIN_SCHED_COSINE, TRAIN_SCHED_CONSTANT, TRAIN_SCHED_LINEAR, TRAIN_SCHED_COUNT } TrainSchedule;
typedef enum TrainOptimizer { TRAIN_OPT_ADAMW, TRAIN_OPT_SGD, TRAIN_OPT_COUNT } TrainOptimizer;
typedef enum TrainPrecision { TRAIN_PREC_FP32, TRAIN_PREC_BF16, TRAIN_PREC_FP16, TRAIN_PREC_COUNT } TrainPrecision;

typedef struct TrainConfig {
  bool present;            /* the module carries training settings (else the runtime's defaults apply) */
  int64_t steps;           /* optimiser steps, >= 1 */
  int64_t batch;           /* rows per step, >= 1 */
  int64_t micro_batch;     /* rows per forward/backward, divides batch */
  int64_t warmup;          /* linear warm-up steps, <= steps */
  int64_t seed;            /* initialisation and data-order seed, >= 0 */
  int64_t eval_every;      /* steps between validation passes (0: never) */
  int64_t checkpoint_every;/* steps between checkpoints (0: only at the end) */
  double lr;               /* peak learning rate, > 0 */
  double min_lr;           /* schedule floor, in [0, lr] */
  double beta1, beta2;     /* AdamW moment decays, in [0, 1) */
  double eps;              /* AdamW epsilon, > 0 */
  double weight_decay;     /* decoupled weight decay, >= 0 */
  double momentum;         /* SGD momentum, in [0, 1) */
  double grad_clip;        /* global gradient-norm clip (0: none), >= 0 */
  TrainSchedule schedule;  /* learning-rate schedule */
  TrainOptimizer optimizer;/* optimiser */
  TrainPrecision precision;/* fp32, or the precision pass's 16-bit activation storage */
  const char *data;        /* training text file, or NULL */
  /* gradual pruning (train: prune: {initial, start, end, every}; Zhu & Gupta 2017): the prune
   * pass's masked weights go from sparsity prune_initial to their target over steps
   * prune_start..prune_end, masks recomputed every prune_every steps; prune_every 0: no schedule
   * (the target from step 0). Written in the text form only when prune_every > 0. */
  double prune_initial;    /* in [0, 1) */
  int64_t prune_start, prune_end, prune_every;
  /* knowledge distillation (train: distill: {teacher, temperature, alpha}; Hinton et al. 2015):
   * the module holds the teacher's forward as @teacher (tokens -> logits, frozen parameters named
   * "teacher.*", its blocks @teacher.NAME) and autodiff's loss is distill_loss (docs/training.md).
   * distill_temperature 0: no distillation; written in the text form only when > 0. */
  double distill_temperature; /* T > 0 */
  double distill_alpha;       /* the KL's weight, in [0, 1] */
  int line, col;           /* source position of the `train` line when parsed, else 0 */
} TrainConfig;

/* One field of TrainConfig: its name in the spec and the text form, kind, allowed range and
 * place. The spec checker and the IR parser both read their range rules from this table. */
typedef enum TrainFieldKind { TF_INT, TF_REAL, TF_ENUM, TF_STR } TrainFieldKind;
typedef struct TrainField {
  const char *key;         /* "steps", "lr", ... */
  TrainFieldKind kind;
  int64_t ilo, ihi;        /* TF_INT: the closed range */
  double lo, hi;           /* TF_REAL: the range, ends open or closed as below (hi may be inf) */
  bool lo_open, hi_open;   /* TF_REAL: whether lo, hi are excluded */
  const char *const *words;/* TF_ENUM: the names, indexed by the enum value */
  int nwords;              /* TF_ENUM: how many */
  size_t offset;           /* offsetof(TrainConfig, field) */
  bool optional;           /* may be absent from a `train {...}` line (data; the prune_ schedule) */
} TrainField;
extern const TrainField ir_train_fields[];
extern const int ir_train_nfields;
const TrainField *ir_train_field(const char *key);   /* NULL if unknown */
/* Checks one value against its field's range; on failure writes "'lr' must be greater than 0, got
 * -1" (the spec checker's wording) into err and returns false. */
/* Whether field f is written in t's text form (optional fields only when their group is set:
 * data when non-NULL, the prune_ schedule when prune_every > 0, distill_ when distilling). */
bool ir_train_field_present(const TrainConfig *t, const TrainField *f);
bool ir_train_check_int(const TrainField *f, int64_t v, char *err, size_t n);
bool ir_train_check_real(const TrainField *f, double v, char *err, size_t n);
/* Checks the relations between fields (micro_batch divides batch, min_lr <= lr, warmup <= steps);
 * on failure writes the message, sets *key to the offending field's name and returns false. */
bool ir_train_check_relations(const TrainConfig *t, const char **key, char *err, size_t n);

typedef struct ArenaChunk ArenaChunk;

/* A name -> item hash table (open addressing, linear probing) in the module's arena, so that
 * looking a parameter or function up by name costs O(1), not a scan: passes look names up once
 * per op, and a model with thousands of layers has tens of thousands of parameters. */
typedef struct IrSymSlot {
  const char *name;        /* the item's own name string; NULL: empty slot */
  void *item;              /* the Param or Func; NULL with a name: a removed entry (tombstone) */
} IrSymSlot;
typedef struct IrSymIndex {
  int cap;                 /* slots, a power of two (0: not allocated yet) */
  int used;                /* slots holding a name (live entries and tombstones) */
  IrSymSlot *slot;
} IrSymIndex;

struct Module {
  ArenaChunk *arena;       /* all IR memory */
  const char *name;        /* model name */
  const char *file;        /* the source it came from (spec or .mir), for diagnostics; NULL if built */
  int nattr;               /* module attributes (batch, context, vocab, kind, ...), sorted */
  Attr *attr;
  int nparam, capparam;
  Param **params;          /* in creation order (this order is the safetensors order) */
  int nfunc, capfunc;
  Func **funcs;            /* callees before callers is not required */
  const char *entry;       /* name of the entry function ("forward") */
  IrSymIndex param_index;  /* params by name (ir_find_param), kept by ir_add_param */
  IrSymIndex func_index;   /* funcs by name (ir_find_func), kept by ir_add_func / ir_remove_func */
  TrainConfig train;       /* the spec's training settings (train.present), printed as `train {...}` */
};

/* ---- op table (ir.c) ---- */
typedef struct OpInfo {
  const char *name;
  int min_in, max_in, nout, flags;
} OpInfo;
extern const OpInfo ir_op_info[OP_COUNT];
const char *ir_op_name(OpKind k);
int ir_op_by_name(const char *name);   /* -1 if unknown */
const char *ir_dtype_name(DType t);
int ir_dtype_by_name(const char *name);  /* -1 if unknown */
size_t ir_dtype_bits(DType t);  /* of the values (a quantised dtype's scales are not counted) */
bool ir_dtype_quantised(DType t); /* i8_row, q8_0, q4_0 */
bool ir_dtype_packed(DType t);    /* a weight format read only by kernels: quantised or csr */
/* Elements per scale of a quantised dtype along the last axis (32; i8_row: 0, one per row). */
int ir_quant_block(DType t);
const char *ir_init_name(InitKind k);

/* ---- types ---- */
Type ir_type(DType dt, int rank, const int64_t *dims);
Type ir_type1(DType dt, int64_t d0);
Type ir_type2(DType dt, int64_t d0, int64_t d1);
Type ir_type3(DType dt, int64_t d0, int64_t d1, int64_t d2);
bool ir_type_eq(const Type *a, const Type *b);
int64_t ir_type_numel(const Type *t);
int64_t ir_type_bytes(const Type *t);
/* Writes "f32[4,128,128]" into buf; returns buf. */
char *ir_type_str(const Type *t, char *buf, size_t n);

/* ---- module, arena ---- */
Module *ir_module_new(const char *name);
void ir_module_free(Module *m);
void *ir_alloc(Module *m, size_t n);          /* zeroed */
char *ir_strdup(Module *m, const char *s);
void ir_module_set_attr(Module *m, Attr a);   /* replaces an attribute of the same key */
Func *ir_train_func(const Module *m);         /* the function module attribute train names, or NULL */
const Attr *ir_module_attr(const Module *m, const char *key);

/* ---- parameters ---- */
Param *ir_add_param(Module *m, const char *name, Type t, InitKind init, double init_arg);  /* NULL if the name exists */
Param *ir_find_param(const Module *m, const char *name);
/* Removes the parameters p with drop[p->index] (indexed by the current Param.index; no op may load
 * them any more), keeping the others in order. This is the one place a Param.index changes: the
 * parameters after a removed one move down (index = their new position in Module.params), so
 * tables indexed by the old indices become stale. The share pass uses it. */
void ir_remove_params(Module *m, const bool *drop);
const char *ir_param_format_name(ParamFormat f);
int ir_param_format_by_name(const char *name);   /* -1 if unknown */
/* Bytes the parameter occupies in the weights: its values in its format plus its auxiliary arrays. */
int64_t ir_param_storage_bytes(const Param *p);
/* The CSR layout of an [N,K] weight with room for cap nonzeros (RT_FMT_CSR): f32 values at 0, u16
 * columns at ir_csr_cols_offset, i32 row pointers [N+1] at ir_csr_rowptr_offset; total bytes. */
int64_t ir_csr_cols_offset(int64_t cap);
int64_t ir_csr_rowptr_offset(int64_t cap);
int64_t ir_csr_bytes(int64_t N, int64_t cap);
/* The full tensor's shape of a structurally pruned parameter (Param.select): dim[axis] is
 * parts * unit * of. Writes into dims; returns the rank. */
int ir_param_full_shape(const Param *p, int64_t *dims);
const char *ir_prune_name(PruneKind k);   /* "magnitude", "global", "nm" */
const char *ir_select_name(SelectRule r); /* "norm", "importance" */

/* ---- functions ---- */
Func *ir_add_func(Module *m, const char *name);  /* NULL if the name exists */
Func *ir_find_func(const Module *m, const char *name);
void ir_remove_func(Module *m, Func *f);
Value *ir_add_arg(Func *f, const char *name, Type t);
void ir_set_return(Func *f, int n, Value *const *vals);
Value *ir_new_value(Func *f, const char *name, Type t);
/* Renumbers Value.id of every function in definition order (arguments, then op results) and
 * resets nvalues, so ids no longer depend on the history of passes: a module built from a spec and
 * the same module printed and parsed back get the same ids (and the backends the same names).
 * Tables indexed by the old ids become stale. The text form does not change. */
void ir_renumber_values(Module *m);

/* ---- ops ---- */
/* A new detached op with nin operands (copied) and nout results whose types are filled by
 * ir_infer(); for OP_CALL nout must be the callee's return count. */
Op *ir_op_new(Func *f, OpKind k, int nin, Value *const *in, int nout);
void ir_append(Func *f, Op *op);
/* A copy of op appended to dst, its operands mapped through map (indexed by Value.id of op's
 * function), its results entered in map. NULL (err filled) when the mapped operands' types do not
 * infer. */
Op *ir_clone_op(const Module *m, Func *dst, const Op *op, Value **map, char *err, size_t n);
/* A copy of f named name (arguments, ops, returns, attributes); NULL if the name exists. */
Func *ir_clone_func(Module *m, const Func *f, const char *name);
/* A distilling module's teacher (TrainConfig.distill_temperature > 0): its forward function and the
 * prefix of its (frozen) parameters' and block functions' names. */
#define IR_TEACHER_FUNC "teacher"
#define IR_TEACHER_PREFIX "teacher."
/* Copies src's parameters and functions into dst (a distillation teacher, docs/training.md): every
 * parameter as prefix + its name, frozen; src's entry function as @entry, every other function as
 * @prefix + its name; `param` and `call` ops renamed to match. false (err filled) on a name that
 * exists already in dst. */
bool ir_module_import(Module *dst, const Module *src, const char *prefix, const char *entry, char *err, size_t n);
void ir_insert_before(Op *pos, Op *op);
void ir_insert_after(Op *pos, Op *op);
void ir_unlink(Op *op);                       /* detach from its function (memory stays in the arena) */
void ir_set_operands(Op *op, int nin, Value *const *in);

void ir_set_attr_int(Op *op, const char *key, int64_t v);
void ir_set_attr_float(Op *op, const char *key, double v);
void ir_set_attr_str(Op *op, const char *key, const char *v);
void ir_set_attr_sym(Op *op, const char *key, const char *v);
void ir_set_attr_ints(Op *op, const char *key, int n, const int64_t *v);
void ir_set_attr(Op *op, Attr a);             /* generic; replaces a same-key attribute */
void ir_remove_attr(Op *op, const char *key);
const Attr *ir_attr(const Op *op, const char *key);
/* Untyped reads with the default at the call site (kept for code not yet converted to the typed
 * accessors below; they accept any key). */
int64_t ir_attr_int(const Op *op, const char *key, int64_t dflt);
double ir_attr_float(const Op *op, const char *key, double dflt); /* accepts ATTR_INT too */
const char *ir_attr_str(const Op *op, const char *key);           /* STR or SYM; NULL if absent */
bool ir_attr_eq(const Attr *a, const Attr *b);

/* ---- the attribute table (ir/ops.def (ATTR rows), ir/attrs.c) ----
 * Every op's attributes are declared in ops.def (ATTR rows): key, kind, required or a default, and a rule
 * for the value. ir_check_attrs() enforces the table; the parser, the verifier and ir_infer() all
 * call it, so one message describes one bad attribute wherever it is found. */
typedef enum AttrRuleKind {
  AR_ANY,     /* no constraint beyond the kind */
  AR_RANGE,   /* a number between lo and hi */
  AR_ONE_OF,  /* a string among words */
  AR_EXPR,    /* a fused expression over the op's operands */
} AttrRuleKind;
typedef struct AttrRule {
  AttrRuleKind kind;
  double lo, hi;          /* AR_RANGE: bounds; -inf / inf: unbounded on that side */
  bool lo_open, hi_open;  /* AR_RANGE: the bound itself is excluded */
  const char *words;      /* AR_ONE_OF: the allowed strings, '|'-separated ("first|mean") */
  int skip;               /* AR_EXPR: operands that are not expression arguments ($i < nin - skip) */
} AttrRule;
typedef struct AttrSpec {
  int op;                 /* the OpKind it belongs to; -1: every op (pass annotations) */
  const char *key;
  AttrKind kind;          /* ATTR_FLOAT also accepts an ATTR_INT value */
  bool required;          /* every op of the kind carries it */
  double dflt;            /* value of an absent optional INT or FLOAT attribute */
  AttrRule rule;
} AttrSpec;
extern const AttrSpec ir_attr_table[];   /* the rows of ops.def (ATTR rows), in order */
extern const int ir_attr_table_len;
/* The declaration of key on ops of kind k, or NULL if k has no such attribute. */
const AttrSpec *ir_attr_spec(OpKind k, const char *key);
/* Checks op's attributes against the table: every key declared for the op's kind, of the declared
 * kind, every required one present, every value within its rule (ranges, allowed strings, fused
 * expressions that parse). On the first problem writes a message to err (without location: the
 * caller adds it) and returns false. Rules that need operand types stay in the shape rules. */
bool ir_check_attrs(const Op *op, char *err, size_t n);
/* Allowed-word lists written "a|b|c" (attribute rules, pass options): is s one of the words, and
 * the list as text for a message ("\"a\", \"b\" or \"c\"", truncated to fit buf). */
bool ir_words_have(const char *words, const char *s);
int ir_words_place(const char *words, const char *s); /* 1-based place of s among words; 0: none */
void ir_words_text(const char *words, char *buf, size_t n);
/* Typed reads: the attribute's value, or the table's default when it is absent (NULL / no
 * elements for STR, SYM and INTS). A key not declared for the op's kind, or declared with another
 * kind, is an internal error (die). An op that fails ir_check_attrs reads as the default. */
int64_t ir_attr_i(const Op *op, const char *key);                   /* INT */
double ir_attr_f(const Op *op, const char *key);                    /* FLOAT (an INT value converts) */
const char *ir_attr_s(const Op *op, const char *key);               /* STR or SYM (without '@') */
int ir_attr_word(const Op *op, const char *key); /* a ONE_OF string's 1-based place among its words; 0: absent */
const int64_t *ir_attr_ints(const Op *op, const char *key, int *n); /* INTS: *n elements */
/* An attention-family op's (attention, attention_dx, rope) KV heads G: its kv_heads, or heads when
 * it is absent or 0 (multi-head attention). Its qkv operand's last axis is (heads + 2 G) * hd. */
int64_t ir_kv_heads(const Op *op);

/* Checks the op's operand count and attributes (ir_check_attrs), runs its shape rule and sets its
 * result types. On a user-level mismatch writes a message to err and returns false. */
bool ir_infer(const Module *m, Op *op, char *err, size_t n);
/* Builder convenience: ir_infer + ir_append; a failure is an internal error (die). Returns out[0]. */
Value *ir_emit(Func *f, Op *op);

/* ---- uses ---- */
void ir_count_uses(Func *f);                          /* sets Value.nuses (counting returns) */
int ir_replace_uses(Func *f, Value *from, Value *to); /* operands and returns; returns count */

/* ---- analyses ---- */
int64_t ir_op_flops(const Module *m, const Op *op);   /* forward FLOPs of one op (calls: the callee's) */
int64_t ir_func_flops(const Module *m, const Func *f);
int64_t ir_param_count(const Module *m);              /* elements of all parameters */
int64_t ir_param_bytes(const Module *m);              /* storage bytes: ir_param_storage_bytes summed */
/* Peak bytes of simultaneously live intermediate values of a function under a liveness plan that
 * frees a value after its last use (callee peaks included at their call sites). Function
 * arguments and parameters are not counted. */
int64_t ir_func_peak_bytes(const Module *m, const Func *f);

/* ---- gradients (ir/grad.c) ----
 * Reverse-mode differentiation is driven by the autodiff pass (passes/autodiff.c); the rule of
 * each op lives here, named in ops.def's GRAD column. A rule reads the gradient of the op's
 * result, emits ops into the backward function, and accumulates the gradients of the inputs
 * that need one. Forward values are mapped to their copies in the backward function. */
typedef struct GradCtx {
  Func *f;          /* the backward function the gradient ops are appended to */
  Value **val;      /* forward Value.id -> the value in f (its copy, or f's argument) */
  Value **adj;      /* forward Value.id -> accumulated gradient in f; NULL: zero so far */
  const bool *needs;/* forward Value.id -> some requested gradient depends on this value */
} GradCtx;
typedef bool (*GradFn)(GradCtx *g, const Op *op, char *err, size_t n);
/* The op's gradient rule, or NULL if it is not differentiable. */
GradFn ir_op_grad(OpKind k);
/* adj[fwd] += d (an add op when fwd already has a gradient); d must have fwd's type. */
void ir_grad_accumulate(GradCtx *g, const Value *fwd, Value *d);
/* Sums d down to type t (inverse of broadcasting), or returns d when it already has type t. */
Value *ir_grad_reduce(Func *f, Value *d, const Type *t);

/* ---- fused element-wise expressions (ir/expr.c) ----
 * Grammar:  expr := '$' INT | NUMBER | NAME '(' expr (',' expr)* ')'
 * NAME is an OPF_EW op name; '$i' is operand i of the owning op (for linear's epi, $0 is the
 * product and $1.. are the operands after the weight). */
typedef enum ExprKind { EX_ARG, EX_CONST, EX_OP } ExprKind;
typedef struct Expr {
  ExprKind kind;
  int arg;              /* EX_ARG */
  double c;             /* EX_CONST */
  OpKind op;            /* EX_OP: an OPF_EW op */
  int nkid;             /* EX_OP: 1 or 2 */
  struct Expr *kid[2];
} Expr;
/* Parses s; nargs bounds '$i'. Returns NULL with a message in err on error. Arena-allocated. */
Expr *ir_expr_parse(Module *m, const char *s, int nargs, char *err, size_t n);
/* Scalar semantics of an OPF_EW op, shared by constant folding, expression evaluation and tests. */
double ir_ew_apply(OpKind k, double a, double b);
double ir_expr_eval(const Expr *e, const double *args);
int ir_expr_count_ops(const Expr *e);   /* element-wise operations per output element */

/* ---- text form (ir/print.c, ir/parse.c) ---- */
void ir_print_module(FILE *out, const Module *m);
void ir_print_func(FILE *out, const Module *m, const Func *f);
char *ir_print_to_string(const Module *m);    /* malloc'd */
/* Parses the text form; errors go to d located FILE:LINE:COL. NULL on error. */
/* The module's 'vocab' attribute against its parameters: when the entry embeds its token ids (an
 * embedding op whose operand 0 is an entry argument), vocab must be an integer equal to the table's
 * rows. Returns the offending embedding op with the message in err, or NULL when they agree. */
const Op *ir_vocab_problem(const Module *m, char *err, size_t n);
Module *ir_parse(const char *file, const char *text, size_t len, Diag *d);

/* ---- verifier (ir/verify.c) ---- */
/* Checks SSA (defined before use, single definition, no dangling values), op arity, attribute
 * presence and kinds, types via each op's shape rule, calls against callee signatures, parameter
 * references, return types, and fused expressions. Reports every problem to d. */
bool ir_verify(const Module *m, Diag *d);

#endif
