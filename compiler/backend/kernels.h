/* kernels.h: the kernel table (kernels.def) as data, and the lookups both emitters use to lower
 * an op to runtime calls: which kernel rows apply to an op (kt_select), what each argument is
 * (KArg), the op's axis-role rule and persistent state (OpLower). The backends only turn KArgs
 * into C text or LLVM values; which kernel an op calls, with what, lives in kernels.def alone.
 */
#ifndef MODELC_KERNELS_H
#define MODELC_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "../../ir/ir.h"

typedef enum KernelId {
  K_NONE = -1,
#define KERNEL(id, name, ret, params) id,
#include "kernels.def"
  K_COUNT
} KernelId;

/* One entry point. sig[0] is the return type, sig[1..] the parameters: v void, i int (32 bits),
 * l 64 bits (size_t, int64_t, uint64_t), f float, p a data pointer, F an RtRangeFn. */
typedef struct KernelInfo {
  const char *name; /* the C function */
  const char *sig;  /* return type and parameter codes */
  int nparam;       /* strlen(sig) - 1 */
} KernelInfo;
extern const KernelInfo kt_kernels[K_COUNT];
enum { KT_MAX_PARAMS = 24 }; /* the most parameters a KERNEL row may have (kernels.c checks the table) */

/* How one argument of a lowered call is computed (kernels.def describes each kind). */
typedef enum KArgKind {
  KA_END,     /* terminates a list */
  KA_OUT,     /* result i (0 unless the op has several) */
  KA_IN,      /* operand i */
  KA_IN_OPT,  /* operand i, or NULL when the op has fewer operands */
  KA_NULL,    /* NULL */
  KA_ROWS,    /* runtime element count of operand i's axes but the last (i = -1: the result) */
  KA_NUMEL,   /* runtime element count of operand i */
  KA_BYTES,   /* the same in bytes */
  KA_DIM,     /* compiled extent of axis ax of operand i, divided by div */
  KA_ATTR_I,  /* an int attribute */
  KA_CONST,   /* the integer i */
  KA_ATTR_F,  /* a float attribute */
  KA_ATTR_W,  /* a string attribute's 1-based place among its ONE_OF words (0: absent) */
  KA_ATTR_OR_DIM, /* an int attribute when present, else the compiled extent (as KA_DIM) */
  KA_NB,      /* the step's batch */
  KA_NT,      /* the step's length */
  KA_T0,      /* the step's first position */
  KA_SCRATCH, /* the step's scratch */
  KA_STATE,   /* part i of the op's state slot */
  KA_RNG,     /* the op's random stream: rt_mix(rng, 2 * stream + 1) */
  KA_LOAD,    /* the float operand i points to */
  KA_EPI_FN,  /* the fused epilogue's row function, or NULL */
  KA_EPI_CTX, /* its context, or NULL */
  KA_BIAS,    /* operand 2 when the epilogue is a plain bias add, else NULL */
  /* an attention-family op's qkv operand i [..,(H+2G)hd] (ir_kv_heads): */
  KA_QWIDTH,  /* its query width H hd */
  KA_KVWIDTH, /* its key (= value) width G hd */
  KA_KVHEADS, /* G */
} KArgKind;

typedef struct KArg {
  KArgKind kind;
  int i;           /* operand index (-1: the result), or the state part */
  int ax;          /* axis (negative: from the end) */
  int div;         /* divisor of a KA_DIM (1: none) */
  const char *key; /* attribute name */
} KArg;

/* When a LOWER row applies. */
typedef enum KWhen { KW_ALWAYS, KW_STATE, KW_NOSTATE, KW_TRAIN, KW_INFER, KW_CAST, KW_ATTR, KW_DTYPE } KWhen;
typedef struct KCond {
  KWhen when;
  int from, to;           /* KW_CAST: the operand's and the result's DType; KW_DTYPE: operand `from`
                           * has DType `to` */
  const char *key, *word; /* KW_ATTR: the string attribute and the value it must have */
} KCond;

/* One LOWER row. */
typedef struct KLower {
  OpKind op;
  KernelId kernel;
  KCond cond;
  const KArg *args;      /* kt_kernels[kernel].nparam of them, then KA_END */
  KernelId scratch;      /* the scratch-size kernel, or K_NONE */
  const KArg *scratch_args;
} KLower;

/* The axis-role rule of an op's result and the checks on its operands (backend.h). */
typedef enum KRole { KR_SAME0, KR_LEAD0, KR_STATIC, KR_BT, KR_B } KRole;
enum { KC_LAST_STATIC = 1, KC_BT0 = 2, KC_EPI = 4, KC_W2 = 8, KC_STATIC0 = 16 };

typedef struct OpLower {
  bool present;      /* the op has an OPLOWER row (it lowers to kernels) */
  KRole role;
  unsigned checks;   /* KC_* */
  int nstate;        /* persistent state slots per instance (0: none) */
  const KArg *state; /* each slot's floats per batch row: the product of these compile-time arguments */
  const char *state_if; /* NULL, or the int attribute that must be non-zero for the state to exist */
} OpLower;

/* The runtime's RtDType for an IR dtype (ABI_DTYPE rows): its enumerator name and value; NULL / 0
 * for a dtype parameters cannot have. */
const char *kt_rt_dtype_name(DType t);
int kt_rt_dtype_value(DType t);

/* A parameter's RtParamInfo storage fields, for a parameter at byte offset `offset` of the
 * weights: its RtDType and RtFormat (names for the C backend, values for LLVM), the bytes of its
 * values, and for a quantised dtype its scales as aux[0] ("scale": f32 per row or f16 per block,
 * at the values rounded up to 64 bytes). */
typedef struct KParamAbi {
  const char *dtype, *format, *aux_role, *aux_dtype;
  int dtype_value, format_value, aux_dtype_value;
  int64_t nbytes;
  int naux;
  int64_t aux_offset, aux_nbytes;
  /* RtPruneInfo (has_prune false: RtParamInfo.prune is NULL) */
  bool has_prune;
  int prune_kind, prune_n, prune_m, select, group, axis, parts, unit, of, heads;
  double sparsity;
  int64_t nnz;
} KParamAbi;
KParamAbi kt_param_abi(const Module *m, const Param *q, int64_t offset, int heads);
/* Per parameter (by Param.index; malloc'd, free it): the heads of the attention whose output
 * projection it is (the weight of a linear reading an attention op's result, in the function that
 * binds it or in a block it is passed to), else 0: RtPruneInfo.heads, for PROG importance. */
int *kt_attention_heads(const Module *m);

/* The OPLOWER row of k (present == false when the backends lower k themselves). */
const OpLower *kt_op(OpKind k);
/* The rows op lowers to: 1 (a call), 2 (a runtime pair: `if (cond of rows[0]) rows[0] else
 * rows[1]`), 0 if op has no kernel rows, -1 if none of its compile-time rows matches (a cast
 * between types the runtime has no kernel for; *why says so). */
int kt_select(const Op *op, const KLower *rows[2], const char **why);
/* A compile-time argument of op: KA_DIM, KA_ATTR_I, or (in scratch sizes) KA_ROWS / KA_NUMEL at
 * the compiled extents. */
int64_t kt_static_arg(const Op *op, const KArg *a);
/* The largest value argument a of op can take, from the compiled shapes: a KA_DIM or KA_ATTR_I
 * itself, a KA_ROWS / KA_NUMEL / KA_BYTES the product over the compiled extents (saturating at
 * INT64_MAX); -1 for kinds that are not counts fixed by the shapes (pointers, floats, the step's
 * nb / nt / t0, which are bounded by the compiled batch and context). */
int64_t kt_max_arg(const Op *op, const KArg *a);
/* True when every int-typed (I) argument of row, and of its scratch-size call, fits in an int
 * (at most INT32_MAX) at the compiled shapes; otherwise *arg is the 1-based argument position of
 * the first one that does not (its scratch call's: negative) and *value its largest value. */
bool kt_int_args_fit(const Op *op, const KLower *row, int *arg, int64_t *value);
/* The state slots an instance of op keeps: its OPLOWER NSTATE, or 0 when its WHEN says no. */
int kt_nstate(const Op *op);
/* The floats per batch row of one state slot of op (the product of its OPLOWER state arguments). */
int64_t kt_state_floats(const Op *op);
/* The operand a KArg names (i = -1: the result). */
const Value *kt_value(const Op *op, int i);
/* True for a linear whose epilogue is a plain bias add (passed as the kernel's bias argument). */
bool kt_bias_only(const Op *op);

#endif
