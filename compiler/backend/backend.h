/* backend.h: what the backends share: the analysis of a lowered, memory-planned module into facts
 * code generation needs (which axes of each tensor are the dynamic batch and time axes, where each
 * parameter lives in the weight buffer, the persistent state slots and scratch the program needs),
 * and the backends' entry points.
 *
 * Dynamic shapes. IR shapes are the compiled maxima. A generated program runs any batch
 * nb <= B and sequence length nt <= T: tensors derived from the tokens carry a batch axis (B) and
 * a time axis (T) whose runtime extents are nb and nt, packed densely. A static tensor aligned with
 * a time axis by broadcasting (a learned or sinusoidal position table [T,C]) is indexed at the
 * absolute position t0 + t, so the same code serves a full forward (t0 = 0) and KV-cache decoding
 * (nt = 1, t0 = position). Every other axis is static.
 */
#ifndef MODELC_BACKEND_H
#define MODELC_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../../ir/ir.h"
#include "kernels.h"

/* An integer tensor (token ids, targets, integer element-wise results): both backends store it as int32. */
static inline bool backend_is_int(const Value *v) { return v->type.dtype == DT_I32 || v->type.dtype == DT_I64; }

/* The largest constant table (a sinusoid op's [T, C] floats) the backends compile into the
 * program's data section: 256 MiB. Larger ones are rejected by backend_plan (docs/ir.md). */
#define BACKEND_MAX_TABLE_BYTES ((int64_t)256 << 20)

typedef enum AxisRole { AX_STATIC = 0, AX_BATCH, AX_TIME } AxisRole;

typedef struct ValueInfo {
  AxisRole role[IR_MAX_RANK]; /* per axis */
  bool known;                 /* roles computed */
  int call_st;                /* a call's first result: the state slot the call passes (backend_call_state) */
  bool call_shared;           /* ... that of an earlier call it recomputes */
} ValueInfo;

typedef struct FuncInfo {
  const Func *f;
  ValueInfo *vals;     /* indexed by Value.id */
  int *ret;            /* by Value.id: the first result of f that returns it, or -1 */
  int nstate;          /* persistent state slots f and its callees use (kernels.def, OPLOWER) */
  int64_t frame;       /* bytes of f's own frame (memplan) */
  bool analysed;
} FuncInfo;

enum { BACKEND_MAX_SCRATCH_ARGS = 12 };
/* One scratch-size call the program makes to size its scratch (RtModel.scratch_floats). */
typedef struct BackendScratch {
  KernelId kernel;  /* a size kernel (returns size_t floats) */
  int nargs;
  int64_t arg[BACKEND_MAX_SCRATCH_ARGS]; /* its compile-time arguments */
  bool train_only;  /* needed by the training function only */
} BackendScratch;

typedef struct BackendPlan {
  const Module *m;
  FuncInfo *funcs;         /* parallel to m->funcs */
  const Func *entry;
  const Func *train;       /* the training function (module attribute train), or NULL */
  int64_t train_arena_bytes;
  int loss_parts;          /* floats the training function writes at its loss: 1, or 3 when distilling (the
                            * loss, its KL and CE parts, returned after the gradients; RtModel.loss_parts) */
  int64_t *param_offset;   /* bytes into the weight buffer, parallel to m->params (64-byte aligned) */
  int64_t weight_bytes;    /* size of the weight buffer */
  int64_t arena_bytes;     /* the whole planned arena (entry frame + deepest callee arena) */
  int nstate;              /* persistent state slots of the whole program (the entry's), in call order */
  int64_t *state_rows;     /* floats per batch row of each slot */
  bool decode_unbounded;   /* every slot is a ring and no position table is read: RtModel.decode_unbounded */
  int64_t time_multiple;   /* the largest backend_time_div of any value: RtModel.time_multiple */
  int64_t memory;          /* the largest segment memory of an xl_memory op (RtModel.memory), 0: none */
  int nscratch;            /* distinct scratch-size calls (kernels.def, LOWER's SCRATCH_ID) */
  BackendScratch *scratch;
  /* @train's results after the loss and the gradients: the moe layers' load reports f32[E+2]
   * (docs/ir.md, "moe"), written to RtStep.moe_load; RtModel.nmoe, .moe_experts */
  int ngrads;              /* trainable parameters (the gradients @train returns) */
  int nmoe;                /* load reports */
  int32_t *moe_experts;    /* E of each */
  int64_t moe_load_floats; /* sum of E + 2 */
} BackendPlan;

/* Analyses m (which must have been through memplan). Reports unsupported constructs to d. */
bool backend_plan(BackendPlan *p, const Module *m, Diag *d);
void backend_plan_free(BackendPlan *p);
FuncInfo *backend_func(const BackendPlan *p, const Func *f);
/* A shortened time axis (the seq_pool op, Funnel-Transformer): axis i of v, a time axis of compiled
 * extent T/k (T the tokens' length), has the runtime extent nt/k; returns k (1: not a time axis, or
 * the full length). The program requires nt to be a multiple of every k (RtModel.time_multiple). */
int64_t backend_time_div(const BackendPlan *p, const FuncInfo *fi, const Value *v, int i);
/* The value whose time axis a kernel's NT argument measures: operand 0 if its axis 1 is a time
 * axis, else the result (pool_dx's dy has none); NULL when neither has one. */
const Value *backend_nt_value(const FuncInfo *fi, const Op *op);
/* The state slot a call op in f passes its callee, counted from f's own first slot. A call that
 * recomputes an earlier call of @g in f (a call of @g or of @g.bwd, autodiff's backward, with that
 * call's leading operands, up to recomputes) passes that call's slots (it reads the same segment
 * memory; *shared true) and takes none of its own; any other call takes the next slots after the
 * ops before it. */
int backend_call_state(const BackendPlan *p, const Func *f, const Op *call, bool *shared);
/* The expression an element-wise op computes over its operands $0..: a fused group's expr, or
 * op($0, $1) for a single OPF_EW op (arena-allocated in m); NULL for any other op. */
const Expr *backend_op_expr(const Module *m, const Op *op);

/* How to build the program. The training defaults compiled into it come from the module
 * (Module.train, the spec's train: section), not from here. */
typedef struct EmitOptions {
  const char *compile_options;  /* recorded in the program (PROG info) */
  const char *embed_weights;    /* safetensors file baked into the program, or NULL */
} EmitOptions;

/* The C backend: writes one C file for the whole program to out. */
bool emitc_module(const Module *m, const EmitOptions *o, FILE *out, Diag *d);

/* The LLVM backend (emit_llvm.c): the same program built through the LLVM C API. Its entry
 * points return 0 on success, 1 after a user error (bad target, unwritable file, unsupported
 * construct) and 2 after an internal error (LLVMVerifyModule rejected the module), each reported
 * to d. Without LLVM (cmake -DMODELC_LLVM=OFF) they report that and return 1. */
typedef struct LlvmOptions {
  int opt_level;      /* 0..3: LLVM's default<On> pipeline and the code generator's level */
  const char *triple; /* --target: a target triple; NULL: this machine */
  const char *cpu;    /* --mcpu: a CPU name or "native"; NULL: native for this machine, else generic */
} LlvmOptions;
typedef enum LlvmOutput { LLVM_OUT_IR, LLVM_OUT_BC, LLVM_OUT_OBJ } LlvmOutput;
bool emitll_available(void);
/* Writes the program as textual LLVM IR (.ll), bitcode (.bc) or an object file to path. */
int emitll_write(const Module *m, const EmitOptions *o, const LlvmOptions *lo, LlvmOutput kind, const char *path,
                 Diag *d);
/* Compiles the program in memory with ORC LLJIT and runs its main(argc, argv) (rt_main with the
 * model), whose exit status goes to *status. The runtime's symbols come from this process. */
int emitll_run(const Module *m, const EmitOptions *o, const LlvmOptions *lo, int argc, char **argv, int *status,
               Diag *d);

#endif
