/* emit_llvm.c: the LLVM backend. Builds the same program as the C backend (emit_c.c) through the
 * LLVM 14 C API, from the same analysis (plan.c's BackendPlan): one LLVM function per IR
 * function with the C backend's signature (s, A, W, st, rng, args..., results...), runtime kernels
 * called through the same ABI (runtime/modelc_rt.h), every element-wise group as a row function
 * run by rt_parallel_for (or as rt_linear's epilogue) whose inner loop LLVM vectorises, feature
 * sizes as constants and the batch and time extents read from the step. The module also holds
 * model_forward / model_train, the RtParamInfo table, the RtModel constant (LLVM constant structs
 * laid out like the C structs), the embedded weights and main() calling rt_main.
 *
 * The header's inline helpers (rt_expf, rt_geluf, rt_mix, ...) are rebuilt here as internal
 * always-inline functions with the same operations in the same order, and no fast-math flags are
 * used, so the two backends compute bit-identical results (tests/cli/llvm.sh checks it).
 *
 * Outputs: textual IR, bitcode, an object file from LLVM's target machine, or an in-memory ORC
 * LLJIT run (modelc run) whose runtime symbols resolve from the modelc process itself.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../passes/memplan.h"
#include "backend.h"
#include "kernels.h"

#ifdef MODELC_HAVE_LLVM

#include <llvm-c/Analysis.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Core.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

/* The state of one module's code generation. */
typedef struct Ll {
  LLVMContextRef cx; /* the context everything is built in (the JIT's thread-safe one for modelc run) */
  LLVMModuleRef mod; /* the module being built */
  LLVMBuilderRef b;  /* the builder of the function being built */
  LLVMTypeRef vd, i8, i32, i64, f32, f64, p8, pf, pi; /* void, scalars, i8*, float*, i32* */
  LLVMTypeRef ph;                                     /* i16*: bf16 / f16 tensors (cast only) */
  LLVMTypeRef pp8, step_t, pstep;                     /* i8** (RtStep.state), RtStep, RtStep* */
  LLVMTypeRef range_t, prange;                        /* RtRangeFn's function type and pointer */
  BackendPlan *p;                                     /* the shared analysis */
  Diag *d;                                            /* where errors go */
  bool ok;                                            /* no error so far */
  const Func *f;                                      /* the IR function being built */
  FuncInfo *fi;                                       /* its analysis */
  LLVMValueRef fn;                                    /* the LLVM function being built */
  LLVMBasicBlockRef entry;                            /* its entry block (allocas) */
  LLVMValueRef *val;                                  /* storage pointer of each value of f, by Value.id */
  LLVMValueRef s, A, W, st, rng, nb, nt, t0;          /* f's parameters and the step's sizes (nb, nt, t0 as i64) */
  LLVMValueRef *fns;                                  /* the LLVM function of each IR function (NULL if not emitted) */
  int st_local, nloops, nsin;                         /* state slots used so far in f, loop and sinusoid counts */
} Ll;

/* ---- types, constants, runtime declarations ---- */

static LLVMValueRef ci32(Ll *e, long long v) { return LLVMConstInt(e->i32, (unsigned long long)v, 1); }
static LLVMValueRef ci64(Ll *e, long long v) { return LLVMConstInt(e->i64, (unsigned long long)v, 1); }

/* The float the C backend's literal for v denotes: "%.9g" of the double, read as a float. */
static LLVMValueRef cf32(Ll *e, double v) {
  char buf[48];
  snprintf(buf, sizeof buf, "%.9g", v);
  return LLVMConstReal(e->f32, strtof(buf, NULL));
}

static LLVMTypeRef elem_t(Ll *e, const Value *v) { return backend_is_int(v) ? e->i32 : e->f32; }
static bool is_half(const Value *v) { return v->type.dtype == DT_BF16 || v->type.dtype == DT_F16; }
/* The pointer type of v's storage (a quantised weight, ir.h, is bytes to the kernels that read it). */
static LLVMTypeRef ptr_t(Ll *e, const Value *v) {
  return backend_is_int(v) ? e->pi : is_half(v) ? e->ph : ir_dtype_packed(v->type.dtype) ? e->p8 : e->pf;
}

/* The LLVM type of a kernel-table signature code (kernels.h): v void, p pointer (i8*), i int,
 * l 64 bits, f float, F RtRangeFn. */
static LLVMTypeRef sig_type(Ll *e, char c) {
  switch (c) {
  case 'v': return e->vd;
  case 'p': return e->p8;
  case 'i': return e->i32;
  case 'l': return e->i64;
  case 'f': return e->f32;
  case 'F': return e->prange;
  default: die("bad signature character %c", c);
  }
}

/* The declaration of kernel k, made on first use from its kernel-table row. */
static LLVMValueRef decl(Ll *e, KernelId k, LLVMTypeRef *fty) {
  const KernelInfo *ki = &kt_kernels[k];
  LLVMTypeRef ps[KT_MAX_PARAMS];
  IR_ASSERT(ki->nparam <= KT_MAX_PARAMS);
  for (int i = 0; i < ki->nparam; i++)
    ps[i] = sig_type(e, ki->sig[i + 1]);
  *fty = LLVMFunctionType(sig_type(e, ki->sig[0]), ps, (unsigned)ki->nparam, 0);
  LLVMValueRef f = LLVMGetNamedFunction(e->mod, ki->name);
  if (!f) {
    f = LLVMAddFunction(e->mod, ki->name, *fty);
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(e->cx, LLVMGetEnumAttributeKindForName("nounwind", 8), 0));
  }
  return f;
}

/* Calls kernel k; pointer arguments are cast to i8*, integers to the declared width. */
static LLVMValueRef kcall(Ll *e, KernelId k, LLVMValueRef *args) {
  LLVMTypeRef fty;
  LLVMValueRef f = decl(e, k, &fty);
  const KernelInfo *ki = &kt_kernels[k];
  LLVMValueRef a[KT_MAX_PARAMS];
  for (int i = 0; i < ki->nparam; i++) {
    LLVMTypeRef want = sig_type(e, ki->sig[i + 1]);
    LLVMTypeRef have = LLVMTypeOf(args[i]);
    if (have == want)
      a[i] = args[i];
    else if (LLVMGetTypeKind(want) == LLVMPointerTypeKind)
      a[i] = LLVMBuildPointerCast(e->b, args[i], want, "");
    else if (LLVMGetTypeKind(want) == LLVMIntegerTypeKind)
      a[i] = LLVMBuildIntCast2(e->b, args[i], want, 1, "");
    else
      die("call of %s: argument %d has the wrong type", ki->name, i);
  }
  return LLVMBuildCall2(e->b, fty, f, a, (unsigned)ki->nparam, "");
}

static LLVMValueRef null8(Ll *e) { return LLVMConstNull(e->p8); }

/* ---- loops ---- */

typedef struct Loop {
  LLVMBasicBlockRef head, body, exit;
  LLVMValueRef iv;
} Loop;

/* for (iv = lo; iv < hi; iv++) over i64; the builder is left in the body. */
static LLVMValueRef loop_begin(Ll *e, Loop *l, LLVMValueRef lo, LLVMValueRef hi) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(e->b);
  l->head = LLVMAppendBasicBlockInContext(e->cx, e->fn, "loop");
  l->body = LLVMAppendBasicBlockInContext(e->cx, e->fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(e->cx, e->fn, "done");
  LLVMBuildBr(e->b, l->head);
  LLVMPositionBuilderAtEnd(e->b, l->head);
  l->iv = LLVMBuildPhi(e->b, e->i64, "i");
  LLVMAddIncoming(l->iv, &lo, &pre, 1);
  LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, l->iv, hi, ""), l->body, l->exit);
  LLVMPositionBuilderAtEnd(e->b, l->body);
  return l->iv;
}

static void loop_end(Ll *e, Loop *l) {
  LLVMValueRef next = LLVMBuildNSWAdd(e->b, l->iv, ci64(e, 1), "");
  LLVMBasicBlockRef from = LLVMGetInsertBlock(e->b);
  LLVMBuildBr(e->b, l->head);
  LLVMAddIncoming(l->iv, &next, &from, 1);
  LLVMPositionBuilderAtEnd(e->b, l->exit);
}

/* A stack slot in the entry block of the function being built (not in a loop). */
static LLVMValueRef entry_alloca(Ll *e, LLVMTypeRef t) {
  LLVMBuilderRef ab = LLVMCreateBuilderInContext(e->cx);
  LLVMValueRef first = LLVMGetFirstInstruction(e->entry);
  if (first)
    LLVMPositionBuilderBefore(ab, first);
  else
    LLVMPositionBuilderAtEnd(ab, e->entry);
  LLVMValueRef a = LLVMBuildAlloca(ab, t, "");
  LLVMDisposeBuilder(ab);
  return a;
}

/* ---- sizes and addresses ---- */

/* Runtime extent of axis i of v (i64). */
static LLVMValueRef extent(Ll *e, const Value *v, int i) {
  AxisRole r = e->fi->vals[v->id].role[i];
  int64_t k = r == AX_TIME ? backend_time_div(e->p, e->fi, v, i) : 1; /* > 1: a pooled sequence (seq_pool) */
  if (k > 1) return LLVMBuildExactSDiv(e->b, e->nt, ci64(e, (long long)k), "");
  return r == AX_BATCH ? e->nb : r == AX_TIME ? e->nt : ci64(e, (long long)v->type.dim[i]);
}

/* Runtime element count of v's axes but the last `skip` (i64). */
static LLVMValueRef numel(Ll *e, const Value *v, int skip) {
  LLVMValueRef n = ci64(e, 1);
  for (int i = 0; i + skip < v->type.rank; i++)
    n = LLVMBuildNSWMul(e->b, n, extent(e, v, i), "");
  return n;
}

static LLVMValueRef gep(Ll *e, LLVMTypeRef et, LLVMValueRef ptr, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(e->b, et, ptr, &idx, 1, "");
}

static LLVMValueRef bytes_of(Ll *e, LLVMValueRef n) { return LLVMBuildNSWMul(e->b, n, ci64(e, 4), ""); }

static LLVMValueRef step_field(Ll *e, int k, LLVMTypeRef t) {
  return LLVMBuildLoad2(e->b, t, LLVMBuildStructGEP2(e->b, e->step_t, e->s, (unsigned)k, ""), "");
}


/* Which result of the function being emitted returns v first (-1: none); from the plan, O(1). */
static int ret_index(const Ll *e, const Value *v) { return e->fi->ret[v->id]; }

/* The storage of op's result k: the caller's result buffer or its planned place in the frame. */
static LLVMValueRef out_ptr_k(Ll *e, const Op *op, int k) {
  const Value *v = op->out[k];
  int ri = ret_index(e, v);
  LLVMValueRef p;
  if (ri >= 0) {
    p = LLVMGetParam(e->fn, (unsigned)(5 + e->f->narg + ri));
  } else {
    int64_t off = 0;
    if (!memplan_offset(v, &off))
      die("value without a planned place");
    p = LLVMBuildPointerCast(e->b, gep(e, e->i8, e->A, ci64(e, (long long)off)), ptr_t(e, v), "");
  }
  e->val[v->id] = p;
  return p;
}

static LLVMValueRef out_ptr(Ll *e, const Op *op) { return out_ptr_k(e, op, 0); }

static LLVMValueRef V(Ll *e, const Value *v) {
  IR_ASSERT(e->val[v->id]);
  return e->val[v->id];
}

/* ---- scalar helpers: the header's inline functions, operation for operation ---- */

static LLVMValueRef fmul(Ll *e, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(e->b, a, b, ""); }
static LLVMValueRef fadd(Ll *e, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(e->b, a, b, ""); }
static LLVMValueRef fsub(Ll *e, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(e->b, a, b, ""); }
static LLVMValueRef fdiv(Ll *e, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(e->b, a, b, ""); }
static LLVMValueRef fk(Ll *e, const char *lit) { return LLVMConstReal(e->f32, strtof(lit, NULL)); }

typedef enum Helper {
  H_EXPF,
  H_SIGMOID,
  H_RELU,
  H_SILU,
  H_GELU,
  H_GELU_TANH,
  H_GELU_D,
  H_GELU_TANH_D,
  H_RELU_D,
  H_SILU_D,
  H_NHELPER
} Helper;
static const char *const helper_names[H_NHELPER] = {"rt_expf",    "rt_sigmoidf",   "rt_reluf",   "rt_siluf",
                                                    "rt_geluf",   "rt_gelu_tanhf", "rt_gelu_df", "rt_gelu_tanh_df",
                                                    "rt_relu_df", "rt_silu_df"};

static LLVMValueRef call_helper(Ll *e, Helper h, LLVMValueRef x);

static LLVMValueRef libm1(Ll *e, KernelId k, LLVMValueRef x) { return kcall(e, k, &x); }

/* rt_expf of modelc_rt.h: range clamp, Cody-Waite reduction, degree-6 polynomial, 2^n as two
 * exponent-field products, NaN passed through with masks. */
static LLVMValueRef build_expf(Ll *e, LLVMValueRef x) {
  LLVMBuilderRef b = e->b;
  LLVMValueRef ux = LLVMBuildBitCast(b, x, e->i32, ""), x0 = ux;
  LLVMValueRef sign = LLVMBuildLShr(b, ux, ci32(e, 31), "");
  ux = LLVMBuildAnd(b, ux, ci32(e, 0x7fffffff), "");
  LLVMValueRef nanmask = LLVMBuildSub(
      b, ci32(e, 0), LLVMBuildZExt(b, LLVMBuildICmp(b, LLVMIntUGT, ux, ci32(e, 0x7f800000), ""), e->i32, ""), "");
  LLVMValueRef lim =
      LLVMBuildAdd(b, ci32(e, 0x42b20000), LLVMBuildMul(b, sign, ci32(e, 0x42d00000 - 0x42b20000), ""), "");
  ux = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntULT, ux, lim, ""), ux, lim, "");
  ux = LLVMBuildOr(b, ux, LLVMBuildShl(b, sign, ci32(e, 31), ""), "");
  LLVMValueRef xc = LLVMBuildBitCast(b, ux, e->f32, "");
  LLVMValueRef magic = fk(e, "12582912.0");
  LLVMValueRef n = fsub(e, fadd(e, fmul(e, xc, fk(e, "1.44269504088896341")), magic), magic);
  LLVMValueRef r = fadd(e, fsub(e, xc, fmul(e, n, fk(e, "0.693359375"))), fmul(e, n, fk(e, "2.12194440e-4")));
  LLVMValueRef p = fk(e, "1.9875691500e-4");
  p = fadd(e, fmul(e, p, r), fk(e, "1.3981999507e-3"));
  p = fadd(e, fmul(e, p, r), fk(e, "8.3334519073e-3"));
  p = fadd(e, fmul(e, p, r), fk(e, "4.1665795894e-2"));
  p = fadd(e, fmul(e, p, r), fk(e, "1.6666665459e-1"));
  p = fadd(e, fmul(e, p, r), fk(e, "5.0000001201e-1"));
  p = fadd(e, fadd(e, fmul(e, fmul(e, p, r), r), r), fk(e, "1.0"));
  LLVMValueRef ni = LLVMBuildFPToSI(b, n, e->i32, "");
  LLVMValueRef n1 = LLVMBuildSDiv(b, ni, ci32(e, 2), ""), n2 = LLVMBuildSub(b, ni, n1, "");
  LLVMValueRef b1 = LLVMBuildShl(b, LLVMBuildAdd(b, n1, ci32(e, 127), ""), ci32(e, 23), "");
  LLVMValueRef b2 = LLVMBuildShl(b, LLVMBuildAdd(b, n2, ci32(e, 127), ""), ci32(e, 23), "");
  LLVMValueRef res = fmul(e, fmul(e, p, LLVMBuildBitCast(b, b1, e->f32, "")), LLVMBuildBitCast(b, b2, e->f32, ""));
  LLVMValueRef ur = LLVMBuildBitCast(b, res, e->i32, "");
  ur = LLVMBuildOr(b, LLVMBuildAnd(b, x0, nanmask, ""), LLVMBuildAnd(b, ur, LLVMBuildNot(b, nanmask, ""), ""), "");
  return LLVMBuildBitCast(b, ur, e->f32, "");
}

static LLVMValueRef gelu_u(Ll *e, LLVMValueRef x) { /* x + 0.044715f * x * x * x */
  return fadd(e, x, fmul(e, fmul(e, fmul(e, fk(e, "0.044715"), x), x), x));
}

static LLVMValueRef build_helper(Ll *e, Helper h, LLVMValueRef x) {
  LLVMValueRef one = fk(e, "1.0"), zero = fk(e, "0.0"), half = fk(e, "0.5");
  LLVMValueRef sq2i = fk(e, "0.70710678118654752"), c = fk(e, "0.79788456080286536");
  switch (h) {
  case H_EXPF: return build_expf(e, x);
  case H_SIGMOID: return fdiv(e, one, fadd(e, one, call_helper(e, H_EXPF, LLVMBuildFNeg(e->b, x, ""))));
  case H_RELU: return LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOGT, x, zero, ""), x, zero, "");
  case H_RELU_D: return LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOGT, x, zero, ""), one, zero, "");
  case H_SILU: return fdiv(e, x, fadd(e, one, call_helper(e, H_EXPF, LLVMBuildFNeg(e->b, x, ""))));
  case H_GELU: return fmul(e, fmul(e, half, x), libm1(e, K_ERFCF, fmul(e, LLVMBuildFNeg(e->b, x, ""), sq2i)));
  case H_GELU_TANH: {
    LLVMValueRef k = fmul(e, fk(e, "-2.0"), c);
    return fdiv(e, x, fadd(e, one, call_helper(e, H_EXPF, fmul(e, k, gelu_u(e, x)))));
  }
  case H_GELU_D: {
    LLVMValueRef a = fmul(e, half, libm1(e, K_ERFCF, fmul(e, LLVMBuildFNeg(e->b, x, ""), sq2i)));
    LLVMValueRef g = call_helper(e, H_EXPF, fmul(e, fmul(e, fk(e, "-0.5"), x), x));
    return fadd(e, a, fmul(e, fmul(e, x, fk(e, "0.39894228040143268")), g));
  }
  case H_GELU_TANH_D: {
    LLVMValueRef u = fmul(e, c, gelu_u(e, x));
    LLVMValueRef t =
        fsub(e, fdiv(e, fk(e, "2.0"), fadd(e, one, call_helper(e, H_EXPF, fmul(e, fk(e, "-2.0"), u)))), one);
    LLVMValueRef a = fmul(e, half, fadd(e, one, t));
    LLVMValueRef k3 = fmul(e, fk(e, "3.0"), fk(e, "0.044715"));
    LLVMValueRef bb = fmul(e, fmul(e, fmul(e, half, x), fsub(e, one, fmul(e, t, t))), c);
    return fadd(e, a, fmul(e, bb, fadd(e, one, fmul(e, fmul(e, k3, x), x))));
  }
  case H_SILU_D: {
    LLVMValueRef s = fdiv(e, one, fadd(e, one, call_helper(e, H_EXPF, LLVMBuildFNeg(e->b, x, ""))));
    return fmul(e, s, fadd(e, one, fmul(e, x, fsub(e, one, s))));
  }
  default: die("bad helper");
  }
}

/* Calls helper h, defining it (internal, always-inline) on first use. */
static LLVMValueRef call_helper(Ll *e, Helper h, LLVMValueRef x) {
  LLVMTypeRef fty = LLVMFunctionType(e->f32, &e->f32, 1, 0);
  char name[48];
  snprintf(name, sizeof name, "mc.%s", helper_names[h]);
  LLVMValueRef f = LLVMGetNamedFunction(e->mod, name);
  if (!f) {
    f = LLVMAddFunction(e->mod, name, fty);
    LLVMSetLinkage(f, LLVMInternalLinkage);
    static const char *const attrs[] = {"alwaysinline", "nounwind"};
    for (int i = 0; i < 2; i++)
      LLVMAddAttributeAtIndex(
          f, LLVMAttributeFunctionIndex,
          LLVMCreateEnumAttribute(e->cx, LLVMGetEnumAttributeKindForName(attrs[i], strlen(attrs[i])), 0));
    LLVMBuilderRef saved = e->b;
    LLVMValueRef saved_fn = e->fn;
    e->b = LLVMCreateBuilderInContext(e->cx);
    e->fn = f;
    LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->cx, f, "entry"));
    LLVMBuildRet(e->b, build_helper(e, h, LLVMGetParam(f, 0)));
    LLVMDisposeBuilder(e->b);
    e->b = saved;
    e->fn = saved_fn;
  }
  return LLVMBuildCall2(e->b, fty, f, &x, 1, "");
}

/* rt_mix of modelc_rt.h (a splitmix-style 64-bit hash of two words). */
static LLVMValueRef build_mix(Ll *e, LLVMValueRef a, long long bconst) {
  LLVMBuilderRef b = e->b;
  LLVMValueRef t = LLVMBuildAdd(b, ci64(e, bconst), LLVMConstInt(e->i64, 0x9e3779b97f4a7c15ull, 0), "");
  t = LLVMBuildAdd(b, t, LLVMBuildShl(b, a, ci64(e, 6), ""), "");
  t = LLVMBuildAdd(b, t, LLVMBuildLShr(b, a, ci64(e, 2), ""), "");
  LLVMValueRef z = LLVMBuildXor(b, a, t, "");
  z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, ci64(e, 30), ""), ""),
                   LLVMConstInt(e->i64, 0xbf58476d1ce4e5b9ull, 0), "");
  z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, ci64(e, 27), ""), ""),
                   LLVMConstInt(e->i64, 0x94d049bb133111ebull, 0), "");
  return LLVMBuildXor(b, z, LLVMBuildLShr(b, z, ci64(e, 31), ""), "");
}

/* ---- element-wise expressions ---- */

/* Converts an int32 operand to float (C's usual arithmetic conversions). */
static LLVMValueRef as_float(Ll *e, LLVMValueRef v) {
  return v && LLVMTypeOf(v) == e->i32 ? LLVMBuildSIToFP(e->b, v, e->f32, "") : v;
}

/* One element-wise op. As in C, int32 operands stay integers when both are (add, sub, mul, div,
 * neg), and are converted to float otherwise. */
static LLVMValueRef ew_ll(Ll *e, OpKind k, LLVMValueRef a, LLVMValueRef b) {
  bool ia = LLVMTypeOf(a) == e->i32, ib = !b || LLVMTypeOf(b) == e->i32;
  if (ia && ib)
    switch (k) {
    case OP_ADD: return LLVMBuildAdd(e->b, a, b, "");
    case OP_SUB: return LLVMBuildSub(e->b, a, b, "");
    case OP_MUL: return LLVMBuildMul(e->b, a, b, "");
    case OP_DIV: return LLVMBuildSDiv(e->b, a, b, "");
    case OP_NEG: return LLVMBuildNeg(e->b, a, "");
    default: break;
    }
  a = as_float(e, a);
  b = as_float(e, b);
  switch (k) {
  case OP_ADD: return fadd(e, a, b);
  case OP_SUB: return fsub(e, a, b);
  case OP_MUL: return fmul(e, a, b);
  case OP_DIV: return fdiv(e, a, b);
  case OP_NEG: return LLVMBuildFNeg(e->b, a, "");
  case OP_EXP: return libm1(e, K_EXPF, a);
  case OP_TANH: return libm1(e, K_TANHF, a);
  case OP_SIGMOID: return call_helper(e, H_SIGMOID, a);
  case OP_RELU: return call_helper(e, H_RELU, a);
  case OP_GELU: return call_helper(e, H_GELU, a);
  case OP_GELU_TANH: return call_helper(e, H_GELU_TANH, a);
  case OP_SILU: return call_helper(e, H_SILU, a);
  case OP_GELU_D: return call_helper(e, H_GELU_D, a);
  case OP_GELU_TANH_D: return call_helper(e, H_GELU_TANH_D, a);
  case OP_RELU_D: return call_helper(e, H_RELU_D, a);
  case OP_SILU_D: return call_helper(e, H_SILU_D, a);
  default: die("not an element-wise op: %s", ir_op_name(k));
  }
}

static LLVMValueRef expr_ll(Ll *e, const Expr *x, LLVMValueRef *args) {
  if (x->kind == EX_ARG)
    return args[x->arg];
  if (x->kind == EX_CONST)
    return cf32(e, x->c);
  LLVMValueRef a = expr_ll(e, x->kid[0], args);
  LLVMValueRef b = x->nkid > 1 ? expr_ll(e, x->kid[1], args) : NULL;
  return ew_ll(e, x->op, a, b);
}

/* The index of operand v inside a loop nest over result r at coordinates c[0..rank-1]: Horner
 * form over v's own runtime extents; broadcast axes (extent 1) index 0, and a static axis aligned
 * with r's time axis (a position table) is indexed at the absolute position t0 + t. */
static LLVMValueRef operand_index(Ll *e, const Value *v, const Value *r, LLVMValueRef *c) {
  int shift = r->type.rank - v->type.rank;
  LLVMValueRef idx = ci64(e, 0);
  for (int j = 0; j < v->type.rank; j++) {
    AxisRole vr = e->fi->vals[v->id].role[j], rr = e->fi->vals[r->id].role[j + shift];
    LLVMValueRef coord;
    if (v->type.dim[j] == 1)
      coord = ci64(e, 0);
    else if (vr == AX_STATIC && rr == AX_TIME)
      coord = LLVMBuildNSWAdd(e->b, e->t0, c[j + shift], "");
    else
      coord = c[j + shift];
    idx = LLVMBuildNSWAdd(e->b, LLVMBuildNSWMul(e->b, idx, extent(e, v, j), ""), coord, "");
  }
  return idx;
}

/* The row function of an element-wise loop nest out = expr(operands) over result r: a context
 * struct {operand pointers..., nb, nt, t0} and void mc.loopN(i8 *ctx, i32 lo, i32 hi) over rows
 * lo..hi (all axes but the last). Fills *ctxp with the context (an alloca in the calling function)
 * and returns the function, for rt_parallel_for or rt_linear's epilogue. */
static LLVMValueRef ew_loop(Ll *e, const Value *r, LLVMValueRef outp, int nops, const Value *const *ops,
                            LLVMValueRef *opptrs, const Expr *x, LLVMValueRef *ctxp) {
  int rank = r->type.rank;
  IR_ASSERT(nops <= 62);
  /* distinct pointers, the result first: an operand that is the result (a linear epilogue's $0)
   * or an earlier operand shares its field, so LLVM sees one pointer and needs no alias check */
  LLVMTypeRef ft[66];
  LLVMValueRef fields[66];
  int fidx[64], nf = 0;
  ft[nf] = ptr_t(e, r), fields[nf++] = outp;
  for (int k = 0; k < nops; k++) {
    fidx[k] = ops[k] == r ? 0 : -1;
    for (int j = 0; j < k && fidx[k] < 0; j++)
      if (ops[j] == ops[k])
        fidx[k] = fidx[j];
    if (fidx[k] < 0)
      fidx[k] = nf, ft[nf] = ptr_t(e, ops[k]), fields[nf++] = opptrs[k];
  }
  ft[nf] = ft[nf + 1] = ft[nf + 2] = e->i32;
  LLVMTypeRef ctx_t = LLVMStructTypeInContext(e->cx, ft, (unsigned)nf + 3, 0);
  /* the context, in the caller */
  LLVMValueRef ctx = entry_alloca(e, ctx_t);
  fields[nf] = LLVMBuildTrunc(e->b, e->nb, e->i32, "");
  fields[nf + 1] = LLVMBuildTrunc(e->b, e->nt, e->i32, "");
  fields[nf + 2] = LLVMBuildTrunc(e->b, e->t0, e->i32, "");
  for (int k = 0; k < nf + 3; k++)
    LLVMBuildStore(e->b, fields[k], LLVMBuildStructGEP2(e->b, ctx_t, ctx, (unsigned)k, ""));
  *ctxp = LLVMBuildPointerCast(e->b, ctx, e->p8, "");

  /* the row function */
  char name[32];
  snprintf(name, sizeof name, "mc.loop%d", e->nloops++);
  LLVMTypeRef ps[3] = {e->p8, e->i32, e->i32};
  LLVMValueRef fn = LLVMAddFunction(e->mod, name, LLVMFunctionType(e->vd, ps, 3, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  LLVMBuilderRef saved_b = e->b;
  LLVMValueRef saved_fn = e->fn, snb = e->nb, snt = e->nt, st0 = e->t0;
  e->b = LLVMCreateBuilderInContext(e->cx);
  e->fn = fn;
  LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->cx, fn, "entry"));
  LLVMValueRef c = LLVMBuildPointerCast(e->b, LLVMGetParam(fn, 0), LLVMPointerType(ctx_t, 0), "");
  LLVMValueRef p[66];
  for (int k = 0; k < nf; k++)
    p[k] = LLVMBuildLoad2(e->b, ft[k], LLVMBuildStructGEP2(e->b, ctx_t, c, (unsigned)k, ""), "");
  e->nb = LLVMBuildSExt(e->b, LLVMBuildLoad2(e->b, e->i32, LLVMBuildStructGEP2(e->b, ctx_t, c, (unsigned)nf, ""), ""),
                        e->i64, "nb");
  e->nt = LLVMBuildSExt(
      e->b, LLVMBuildLoad2(e->b, e->i32, LLVMBuildStructGEP2(e->b, ctx_t, c, (unsigned)nf + 1, ""), ""), e->i64, "nt");
  e->t0 = LLVMBuildSExt(
      e->b, LLVMBuildLoad2(e->b, e->i32, LLVMBuildStructGEP2(e->b, ctx_t, c, (unsigned)nf + 2, ""), ""), e->i64, "t0");
  Loop rows;
  LLVMValueRef row = loop_begin(e, &rows, LLVMBuildSExt(e->b, LLVMGetParam(fn, 1), e->i64, ""),
                                LLVMBuildSExt(e->b, LLVMGetParam(fn, 2), e->i64, ""));
  LLVMValueRef coord[IR_MAX_RANK];
  LLVMValueRef rr = row;
  for (int i = rank - 2; i >= 0; i--) { /* the row's coordinates (unused ones are dead code) */
    if (i == 0) {
      coord[0] = rr;
    } else {
      LLVMValueRef ex = extent(e, r, i);
      coord[i] = LLVMBuildURem(e->b, rr, ex, "");
      rr = LLVMBuildUDiv(e->b, rr, ex, "");
    }
  }
  Loop inner;
  LLVMValueRef last_ex = rank >= 1 ? extent(e, r, rank - 1) : NULL;
  if (rank >= 1)
    coord[rank - 1] = loop_begin(e, &inner, ci64(e, 0), last_ex);
  /* the result, and every operand of its shape and axis roles, is indexed by row */
  LLVMValueRef ri =
      rank >= 1 ? LLVMBuildNSWAdd(e->b, LLVMBuildNSWMul(e->b, row, last_ex, ""), coord[rank - 1], "") : ci64(e, 0);
  LLVMValueRef args[64];
  for (int k = 0; k < nops; k++) {
    const ValueInfo *vk = &e->fi->vals[ops[k]->id], *vr = &e->fi->vals[r->id];
    LLVMValueRef idx;
    if (ops[k] == r || (ir_type_eq(&ops[k]->type, &r->type) && memcmp(vk->role, vr->role, sizeof vk->role) == 0))
      idx = ri;
    else
      idx = operand_index(e, ops[k], r, coord);
    args[k] = LLVMBuildLoad2(e->b, elem_t(e, ops[k]), gep(e, elem_t(e, ops[k]), p[fidx[k]], idx), "");
  }
  LLVMValueRef y = expr_ll(e, x, args);
  if (backend_is_int(r) && LLVMTypeOf(y) != e->i32)
    y = LLVMBuildFPToSI(e->b, y, e->i32, "");
  else if (!backend_is_int(r))
    y = as_float(e, y);
  LLVMBuildStore(e->b, y, gep(e, elem_t(e, r), p[0], ri));
  if (rank >= 1)
    loop_end(e, &inner);
  loop_end(e, &rows);
  LLVMBuildRetVoid(e->b);
  LLVMDisposeBuilder(e->b);
  e->b = saved_b;
  e->fn = saved_fn;
  e->nb = snb, e->nt = snt, e->t0 = st0;
  return fn;
}

/* ---- ops ---- */

static void unsupported(Ll *e, const Op *op, const char *why) {
  diag_error(e->d, e->p->m->file, op->line, op->col, "LLVM backend: in @%s: %s: %s", e->f->name, ir_op_name(op->kind),
             why);
  e->ok = false;
}

static LLVMValueRef i32v(Ll *e, LLVMValueRef v) { return LLVMBuildTrunc(e->b, v, e->i32, ""); }

static void memcpy_n(Ll *e, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef n) {
  LLVMBuildMemCpy(e->b, dst, 4, src, 4, bytes_of(e, n));
}

/* ---- kernel calls from the kernel table (kernels.def) ---- */

/* The LLVM value of argument a of op's call; o is the result, epi / epictx the fused epilogue's
 * row function and context (NULL: none). */
static LLVMValueRef ll_arg(Ll *e, const Op *op, const KArg *a, LLVMValueRef o, LLVMValueRef epi, LLVMValueRef epictx) {
  switch (a->kind) {
  case KA_OUT: return a->i > 0 ? V(e, op->out[a->i]) : o;
  case KA_IN: return V(e, op->in[a->i]);
  case KA_IN_OPT: return a->i < op->nin ? V(e, op->in[a->i]) : null8(e);
  case KA_NULL: return null8(e);
  case KA_ROWS: return numel(e, kt_value(op, a->i), 1);
  case KA_NUMEL: return numel(e, kt_value(op, a->i), 0);
  case KA_BYTES: {
    const Value *v = kt_value(op, a->i);
    return LLVMBuildNSWMul(e->b, numel(e, v, 0), ci64(e, (long long)(ir_dtype_bits(v->type.dtype) / 8)), "");
  }
  case KA_DIM:
  case KA_CONST:
  case KA_ATTR_W:
  case KA_ATTR_OR_DIM:
  case KA_QWIDTH:
  case KA_KVWIDTH:
  case KA_KVHEADS:
  case KA_ATTR_I: return ci64(e, (long long)kt_static_arg(op, a));
  case KA_ATTR_F: return cf32(e, ir_attr_f(op, a->key));
  case KA_NB: return e->nb;
  case KA_NT: { /* the step's length, or its pooled share (seq_pool) */
    const Value *tv = backend_nt_value(e->fi, op);
    return tv ? extent(e, tv, 1) : e->nt;
  }
  case KA_T0: return e->t0;
  case KA_SCRATCH: return step_field(e, 4, e->pf);
  case KA_STATE: {
    LLVMValueRef slots = step_field(e, 3, e->pp8);
    LLVMValueRef slot = gep(e, e->p8, slots, LLVMBuildAdd(e->b, e->st, ci32(e, e->st_local + a->i), ""));
    return LLVMBuildPointerCast(e->b, LLVMBuildLoad2(e->b, e->p8, slot, ""), e->pf, "");
  }
  case KA_RNG: return build_mix(e, e->rng, 2 * (long long)ir_attr_i(op, "stream") + 1);
  case KA_LOAD: return LLVMBuildLoad2(e->b, e->f32, V(e, op->in[a->i]), "");
  case KA_EPI_FN: return epi ? epi : LLVMConstNull(e->prange);
  case KA_EPI_CTX: return epictx ? epictx : null8(e);
  case KA_BIAS: return kt_bias_only(op) ? V(e, op->in[a->i]) : null8(e);
  case KA_END: break;
  }
  die("bad kernel argument kind %d", (int)a->kind);
}

/* One call of row's kernel; a float result is stored in the result's element 0. */
static void ll_call(Ll *e, const Op *op, const KLower *row, LLVMValueRef o, LLVMValueRef epi, LLVMValueRef epictx) {
  LLVMValueRef args[KT_MAX_PARAMS];
  int j = 0;
  for (const KArg *a = row->args; a->kind != KA_END; a++, j++) {
    IR_ASSERT(j < KT_MAX_PARAMS);
    args[j] = ll_arg(e, op, a, o, epi, epictx);
  }
  IR_ASSERT(j == kt_kernels[row->kernel].nparam);
  LLVMValueRef r = kcall(e, row->kernel, args);
  if (kt_kernels[row->kernel].sig[0] == 'f') LLVMBuildStore(e->b, r, o);
}

/* Lowers op through its kernel-table rows; false if it has none. */
static bool ll_kernel_op(Ll *e, const Op *op) {
  const KLower *rows[2];
  const char *why = NULL;
  int n = kt_select(op, rows, &why);
  if (n == 0)
    return false;
  if (n < 0) {
    unsupported(e, op, why);
    return true;
  }
  LLVMValueRef o = out_ptr(e, op), epi = NULL, epictx = NULL;
  for (int k = 1; k < op->nout; k++)
    out_ptr_k(e, op, k);
  bool takes_epi = false;
  for (const KArg *a = rows[0]->args; a->kind != KA_END; a++)
    takes_epi |= a->kind == KA_EPI_FN;
  const char *epis = takes_epi ? ir_attr_s(op, "epi") : NULL;
  if (epis && !kt_bias_only(op)) { /* linear's epi: $0 the product, $1.. the operands after the weight */
    char err[160];
    Expr *ex = ir_expr_parse((Module *)e->p->m, epis, op->nin - 1, err, sizeof err);
    if (!ex)
      die("bad epilogue: %s", err);
    const Value *ops[64];
    LLVMValueRef ptrs[64];
    IR_ASSERT(op->nin - 1 <= 62);
    ops[0] = op->out[0], ptrs[0] = o;
    for (int i = 2; i < op->nin; i++)
      ops[i - 1] = op->in[i], ptrs[i - 1] = V(e, op->in[i]);
    epi = ew_loop(e, op->out[0], o, op->nin - 1, ops, ptrs, ex, &epictx);
  }
  if (n == 1) {
    ll_call(e, op, rows[0], o, epi, epictx);
  } else {
    LLVMValueRef cond = rows[0]->cond.when == KW_STATE
                            ? LLVMBuildIsNotNull(e->b, step_field(e, 3, e->pp8), "")
                            : LLVMBuildICmp(e->b, LLVMIntNE, step_field(e, 5, e->i64), ci64(e, 0), "");
    LLVMBasicBlockRef yes = LLVMAppendBasicBlockInContext(e->cx, e->fn, "k.then"),
                      no = LLVMAppendBasicBlockInContext(e->cx, e->fn, "k.else"),
                      done = LLVMAppendBasicBlockInContext(e->cx, e->fn, "k.done");
    LLVMBuildCondBr(e->b, cond, yes, no);
    LLVMPositionBuilderAtEnd(e->b, yes);
    ll_call(e, op, rows[0], o, epi, epictx);
    LLVMBuildBr(e->b, done);
    LLVMPositionBuilderAtEnd(e->b, no);
    ll_call(e, op, rows[1], o, epi, epictx);
    LLVMBuildBr(e->b, done);
    LLVMPositionBuilderAtEnd(e->b, done);
  }
  e->st_local += kt_nstate(op);
  return true;
}

static void emit_op(Ll *e, const Op *op) {
  const Value *r = op->out[0];
  LLVMValueRef o, a[16];
  if (ll_kernel_op(e, op))
    return;
  switch (op->kind) {
  case OP_PARAM: {
    const Param *q = ir_find_param(e->p->m, ir_attr_s(op, "p"));
    int qi = q->index;
    e->val[r->id] =
        LLVMBuildPointerCast(e->b, gep(e, e->i8, e->W, ci64(e, (long long)e->p->param_offset[qi])), ptr_t(e, r), "");
    return;
  }
  case OP_CONST: {
    o = out_ptr(e, op);
    Loop l;
    LLVMValueRef i = loop_begin(e, &l, ci64(e, 0), numel(e, r, 0));
    LLVMBuildStore(e->b, cf32(e, ir_attr_f(op, "value")), gep(e, e->f32, o, i));
    loop_end(e, &l);
    return;
  }
  case OP_SINUSOID: { /* a table computed once per process */
    int64_t n = ir_type_numel(&r->type);
    char name[32];
    snprintf(name, sizeof name, "mc.sin%d", e->nsin);
    LLVMTypeRef at = LLVMArrayType(e->f32, (unsigned)n);
    LLVMValueRef tab = LLVMAddGlobal(e->mod, at, name);
    LLVMSetLinkage(tab, LLVMInternalLinkage);
    LLVMSetInitializer(tab, LLVMConstNull(at));
    LLVMSetAlignment(tab, 64);
    snprintf(name, sizeof name, "mc.sin%d.ready", e->nsin++);
    LLVMValueRef ready = LLVMAddGlobal(e->mod, e->i32, name);
    LLVMSetLinkage(ready, LLVMInternalLinkage);
    LLVMSetInitializer(ready, ci32(e, 0));
    LLVMValueRef tp = LLVMBuildPointerCast(e->b, tab, e->pf, "");
    LLVMBasicBlockRef fill = LLVMAppendBasicBlockInContext(e->cx, e->fn, "sin.fill"),
                      done = LLVMAppendBasicBlockInContext(e->cx, e->fn, "sin.done");
    LLVMValueRef is0 = LLVMBuildICmp(e->b, LLVMIntEQ, LLVMBuildLoad2(e->b, e->i32, ready, ""), ci32(e, 0), "");
    LLVMBuildCondBr(e->b, is0, fill, done);
    LLVMPositionBuilderAtEnd(e->b, fill);
    a[0] = tp, a[1] = ci32(e, (long long)r->type.dim[0]), a[2] = ci32(e, (long long)r->type.dim[1]);
    kcall(e, ir_attr_s(op, "layout") ? K_SINUSOID_HALVES : K_SINUSOID, a); /* halves: the relative table */
    LLVMBuildStore(e->b, ci32(e, 1), ready);
    LLVMBuildBr(e->b, done);
    LLVMPositionBuilderAtEnd(e->b, done);
    if (ret_index(e, r) >= 0) {
      o = out_ptr(e, op);
      memcpy_n(e, o, tp, ci64(e, (long long)n));
    } else {
      e->val[r->id] = tp;
    }
    return;
  }
  case OP_CALL: {
    const Func *g = ir_find_func(e->p->m, ir_attr_s(op, "callee"));
    FuncInfo *gi = backend_func(e->p, g);
    int gidx = 0;
    while (e->p->m->funcs[gidx] != g)
      gidx++;
    LLVMValueRef callee = e->fns[gidx];
    LLVMValueRef *args = calloc((size_t)(5 + op->nin + op->nout), sizeof *args);
    if (!args)
      die("out of memory");
    for (int i = 0; i < op->nout; i++) {
      const Value *v = op->out[i];
      int ri = ret_index(e, v);
      int64_t off = 0;
      if (ri >= 0)
        e->val[v->id] = LLVMGetParam(e->fn, (unsigned)(5 + e->f->narg + ri));
      else if (memplan_offset(v, &off))
        e->val[v->id] = LLVMBuildPointerCast(e->b, gep(e, e->i8, e->A, ci64(e, (long long)off)), ptr_t(e, v), "");
      else
        die("call result without a place");
    }
    /* the callee's random stream: the call's stream J (layer index), apart from dropout's 2K+1 */
    args[0] = e->s, args[1] = gep(e, e->i8, e->A, ci64(e, (long long)e->fi->frame)), args[2] = e->W;
    bool shared = false;
    args[3] = LLVMBuildAdd(e->b, e->st, ci32(e, backend_call_state(e->p, e->f, op, &shared)), "");
    args[4] = build_mix(e, e->rng, 2 * (long long)ir_attr_i(op, "stream") + 2);
    for (int i = 0; i < op->nin; i++)
      args[5 + i] = V(e, op->in[i]);
    for (int i = 0; i < op->nout; i++)
      args[5 + op->nin + i] = V(e, op->out[i]);
    LLVMBuildCall2(e->b, LLVMGlobalGetValueType(callee), callee, args, (unsigned)(5 + op->nin + op->nout), "");
    free(args);
    if (!shared) e->st_local += gi->nstate;
    return;
  }
  case OP_LOSS_SCALE:
    o = out_ptr(e, op);
    LLVMBuildStore(e->b, step_field(e, 6, e->f32), o);
    return;
  case OP_SUM_TO: { /* zero the whole (compiled-size) result, then add every input element in */
    o = out_ptr(e, op);
    const Value *x = op->in[0];
    LLVMBuildMemSet(e->b, o, LLVMConstInt(e->i8, 0, 0), ci64(e, (long long)ir_type_numel(&r->type) * 4), 4);
    Loop l[IR_MAX_RANK];
    LLVMValueRef c[IR_MAX_RANK];
    for (int i = 0; i < x->type.rank; i++)
      c[i] = loop_begin(e, &l[i], ci64(e, 0), extent(e, x, i));
    LLVMValueRef xi = operand_index(e, x, x, c);
    int shift = x->type.rank - r->type.rank;
    LLVMValueRef ri = ci64(e, 0);
    for (int j = 0; j < r->type.rank; j++)
      ri = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, ri, extent(e, r, j), ""),
                        r->type.dim[j] == 1 ? ci64(e, 0) : c[j + shift], "");
    LLVMValueRef dst = gep(e, e->f32, o, ri);
    LLVMBuildStore(
        e->b,
        fadd(e, LLVMBuildLoad2(e->b, e->f32, dst, ""), LLVMBuildLoad2(e->b, e->f32, gep(e, e->f32, V(e, x), xi), "")),
        dst);
    for (int i = x->type.rank - 1; i >= 0; i--)
      loop_end(e, &l[i]);
    return;
  }
  default: break;
  }
  /* element-wise: a single op or a fused group */
  const Expr *ex = backend_op_expr(e->p->m, op);
  if (!ex) {
    unsupported(e, op, "not supported by the LLVM backend");
    return;
  }
  o = out_ptr(e, op);
  LLVMValueRef ptrs[64], ctx;
  IR_ASSERT(op->nin <= 62);
  for (int i = 0; i < op->nin; i++)
    ptrs[i] = V(e, op->in[i]);
  LLVMValueRef fn = ew_loop(e, r, o, op->nin, (const Value *const *)op->in, ptrs, ex, &ctx);
  int64_t inner = r->type.rank ? r->type.dim[r->type.rank - 1] : 1;
  a[0] = i32v(e, numel(e, r, 1)), a[1] = ci32(e, inner >= 4096 ? 1 : 4096 / inner), a[2] = fn, a[3] = ctx;
  kcall(e, K_PARALLEL_FOR, a);
}

/* ---- functions ---- */

static LLVMTypeRef func_type(Ll *e, const Func *f) {
  LLVMTypeRef *ps = calloc((size_t)(5 + f->narg + f->nret), sizeof *ps);
  if (!ps)
    die("out of memory");
  ps[0] = e->pstep, ps[1] = e->p8, ps[2] = e->p8, ps[3] = e->i32, ps[4] = e->i64; /* s, A, W (bytes), st, rng */
  for (int i = 0; i < f->narg; i++)
    ps[5 + i] = ptr_t(e, f->args[i]);
  for (int i = 0; i < f->nret; i++)
    ps[5 + f->narg + i] = ptr_t(e, f->ret[i]);
  LLVMTypeRef t = LLVMFunctionType(e->vd, ps, (unsigned)(5 + f->narg + f->nret), 0);
  free(ps);
  return t;
}

static void emit_func(Ll *e, int idx) {
  const Func *f = e->p->m->funcs[idx];
  e->f = f;
  e->fi = backend_func(e->p, f);
  e->fn = e->fns[idx];
  e->st_local = 0;
  e->val = calloc((size_t)f->nvalues + 1, sizeof *e->val);
  if (!e->val)
    die("out of memory");
  e->entry = LLVMAppendBasicBlockInContext(e->cx, e->fn, "entry");
  LLVMPositionBuilderAtEnd(e->b, e->entry);
  e->s = LLVMGetParam(e->fn, 0), e->A = LLVMGetParam(e->fn, 1), e->W = LLVMGetParam(e->fn, 2);
  e->st = LLVMGetParam(e->fn, 3), e->rng = LLVMGetParam(e->fn, 4);
  e->nb = LLVMBuildSExt(e->b, step_field(e, 0, e->i32), e->i64, "nb");
  e->nt = LLVMBuildSExt(e->b, step_field(e, 1, e->i32), e->i64, "nt");
  e->t0 = LLVMBuildSExt(e->b, step_field(e, 2, e->i32), e->i64, "t0");
  for (int i = 0; i < f->narg; i++)
    e->val[f->args[i]->id] = LLVMGetParam(e->fn, (unsigned)(5 + i));
  for (const Op *op = f->first; op && e->ok; op = op->next) /* the first unsupported op ends it */
    emit_op(e, op);
  /* Results not written in place: arguments, parameters, or a value returned twice. */
  for (int i = 0; i < f->nret && e->ok; i++) {
    const Value *v = f->ret[i];
    if (v->def && v->def->kind != OP_PARAM && v->def->kind != OP_SINUSOID && ret_index(e, v) == i)
      continue;
    memcpy_n(e, LLVMGetParam(e->fn, (unsigned)(5 + f->narg + i)), V(e, v), numel(e, v, 0));
  }
  LLVMBuildRetVoid(e->b);
  free(e->val);
  e->val = NULL;
}

/* ---- the model descriptor ---- */

static LLVMValueRef cstr(Ll *e, const char *s) {
  if (!s)
    return null8(e);
  LLVMValueRef init = LLVMConstStringInContext(e->cx, s, (unsigned)strlen(s), 0);
  LLVMValueRef g = LLVMAddGlobal(e->mod, LLVMTypeOf(init), ".str");
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMPrivateLinkage);
  LLVMSetUnnamedAddress(g, LLVMGlobalUnnamedAddr);
  return LLVMConstPointerCast(g, e->p8);
}

static int64_t mattr(const Module *m, const char *k) {
  const Attr *a = ir_module_attr(m, k);
  return a && a->kind == ATTR_INT ? a->i : 0;
}

/* The most bytes --embed-weights can bake in through the LLVM C API: LLVMConstStringInContext
 * takes an unsigned length. */
#define LL_EMBED_MAX_BYTES ((size_t)UINT_MAX)

/* Reads a whole file (the embedded weights), at most LL_EMBED_MAX_BYTES: an endless or larger
 * input (a device, a pipe, a file of 4 GiB or more) is an error, not memory exhaustion. */
static char *slurp(const char *path, size_t *len, Diag *d) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    diag_error(d, path, 0, 0, "cannot open weights file");
    return NULL;
  }
  char *buf = NULL;
  size_t cap = 0, n = 0;
  struct stat st;
  bool big = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > LL_EMBED_MAX_BYTES;
  while (!big) {
    if (n == cap) {
      if (cap > LL_EMBED_MAX_BYTES) { /* read one byte past the limit */
        big = true;
        break;
      }
      cap = cap ? cap * 2 : 1 << 20;
      if (cap > LL_EMBED_MAX_BYTES + 1)
        cap = LL_EMBED_MAX_BYTES + 1;
      char *nb = realloc(buf, cap);
      if (!nb)
        die("out of memory");
      buf = nb;
    }
    size_t k = fread(buf + n, 1, cap - n, f);
    if (k == 0)
      break;
    n += k;
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad || big) {
    free(buf);
    if (big)
      diag_error(d, path, 0, 0, "--embed-weights: more than %zu bytes, the most the LLVM backend can embed "
                                "(use --backend=c, or pass the weights with --weights at run time)",
                 LL_EMBED_MAX_BYTES);
    else
      diag_error(d, path, 0, 0, "cannot read weights file");
    return NULL;
  }
  *len = n;
  return buf;
}

/* model_forward, model_train, model_params, the RtModel constant "model" and main(). */
static bool emit_descriptor(Ll *e, const EmitOptions *opt) {
  BackendPlan *p = e->p;
  const Module *m = p->m;
  const Func *ent = p->entry;
  int ent_idx = 0, tr_idx = 0;
  while (m->funcs[ent_idx] != ent)
    ent_idx++;
  LLVMTypeRef fwd_ps[5] = {e->pstep, e->p8, e->p8, e->pi, e->pf};
  LLVMTypeRef fwd_t = LLVMFunctionType(e->vd, fwd_ps, 5, 0);
  LLVMValueRef fwd = LLVMAddFunction(e->mod, "model_forward", fwd_t);
  LLVMSetLinkage(fwd, LLVMInternalLinkage);
  LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->cx, fwd, "entry"));
  e->s = LLVMGetParam(fwd, 0);
  LLVMValueRef args[8] = {LLVMGetParam(fwd, 0),     LLVMGetParam(fwd, 1), LLVMGetParam(fwd, 2), ci32(e, 0),
                          step_field(e, 5, e->i64), LLVMGetParam(fwd, 3), LLVMGetParam(fwd, 4)};
  LLVMBuildCall2(e->b, LLVMGlobalGetValueType(e->fns[ent_idx]), e->fns[ent_idx], args, 7, "");
  LLVMBuildRetVoid(e->b);

  LLVMTypeRef tr_ps[7] = {e->pstep, e->p8, e->p8, e->pi, e->pi, e->pf, e->pf};
  LLVMTypeRef tr_t = LLVMFunctionType(e->vd, tr_ps, 7, 0);
  LLVMValueRef trn = LLVMConstNull(LLVMPointerType(tr_t, 0));
  if (p->train) {
    const Func *tf = p->train;
    if (tf->narg != 2 || tf->nret < 1) {
      diag_error(e->d, e->p->m->file, tf->line, tf->col,
                 "LLVM backend: @%s must take tokens and targets and return the loss first", tf->name);
      return false;
    }
    while (m->funcs[tr_idx] != tf)
      tr_idx++;
    trn = LLVMAddFunction(e->mod, "model_train", tr_t);
    LLVMSetLinkage(trn, LLVMInternalLinkage);
    LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->cx, trn, "entry"));
    e->s = LLVMGetParam(trn, 0);
    LLVMValueRef *ta = calloc((size_t)(5 + tf->narg + tf->nret), sizeof *ta);
    if (!ta)
      die("out of memory");
    ta[0] = LLVMGetParam(trn, 0), ta[1] = LLVMGetParam(trn, 1), ta[2] = LLVMGetParam(trn, 2), ta[3] = ci32(e, 0);
    ta[4] = step_field(e, 5, e->i64), ta[5] = LLVMGetParam(trn, 3), ta[6] = LLVMGetParam(trn, 4);
    ta[7] = LLVMGetParam(trn, 5);
    int k = 1;
    for (int i = 0; i < m->nparam; i++) {
      const Param *q = m->params[i];
      if (!q->trainable)
        continue;
      if (k >= tf->nret || !ir_type_eq(&tf->ret[k]->type, &q->type) || q->type.dtype != DT_F32) {
        diag_error(e->d, e->p->m->file, tf->line, tf->col,
                   "LLVM backend: @%s does not return the f32 gradient of @%s as result %d", tf->name, q->name, k);
        free(ta);
        return false;
      }
      ta[5 + tf->narg + k] = gep(e, e->f32, LLVMGetParam(trn, 6), ci64(e, (long long)(p->param_offset[i] / 4)));
      k++;
    }
    if (k + p->loss_parts - 1 + p->nmoe != tf->nret) {
      diag_error(e->d, e->p->m->file, tf->line, tf->col, "LLVM backend: @%s returns %d results for %d gradients",
                 tf->name, tf->nret, k - 1);
      free(ta);
      return false;
    }
    for (int j = 1; j < p->loss_parts; j++, k++) /* distillation: the KL and CE parts after the loss */
      ta[5 + tf->narg + k] = gep(e, e->f32, LLVMGetParam(trn, 5), ci64(e, j));
    /* then the moe layers' load reports: into s->moe_load, or a sink on the stack */
    if (p->nmoe) {
      LLVMValueRef sink = LLVMBuildArrayAlloca(e->b, e->f32, ci64(e, (long long)p->moe_load_floats), "sink");
      LLVMValueRef ml = step_field(e, 7, e->pf);
      ml = LLVMBuildSelect(e->b, LLVMBuildIsNull(e->b, ml, ""), sink, ml, "ml");
      for (int64_t off = 0, j = 0; k < tf->nret; k++, j++) {
        ta[5 + tf->narg + k] = gep(e, e->f32, ml, ci64(e, (long long)off));
        off += p->moe_experts[j] + 2;
      }
    }
    LLVMBuildCall2(e->b, LLVMGlobalGetValueType(e->fns[tr_idx]), e->fns[tr_idx], ta,
                   (unsigned)(5 + tf->narg + tf->nret), "");
    LLVMBuildRetVoid(e->b);
    free(ta);
  }

  /* RtParamAux {role, dtype, offset, nbytes};
   * RtParamInfo {name, ndim, shape[4], dtype, format, offset, nbytes, init, init_arg, decay, trainable, naux,
   * aux[4], prune} */
  LLVMTypeRef ax_f[4] = {e->p8, e->i32, e->i64, e->i64};
  LLVMTypeRef ax_t = LLVMStructCreateNamed(e->cx, "RtParamAux");
  LLVMStructSetBody(ax_t, ax_f, 4, 0);
  LLVMTypeRef pi_f[14] = {e->p8,  e->i32, LLVMArrayType(e->i64, 4), e->i32, e->i32, e->i64, e->i64,
                          e->i32, e->f32, e->i32, e->i32, e->i32, LLVMArrayType(ax_t, 4), e->p8};
  LLVMTypeRef pi_t = LLVMStructCreateNamed(e->cx, "RtParamInfo");
  LLVMStructSetBody(pi_t, pi_f, 14, 0);
  /* RtPruneInfo {kind, sparsity, n, m, nnz, select, group, axis, parts, unit, of, heads} */
  LLVMTypeRef pr_f[12] = {e->i32, e->f32, e->i32, e->i32, e->i64, e->i32,
                          e->i32, e->i32, e->i32, e->i32, e->i32, e->i32};
  LLVMTypeRef pr_t = LLVMStructCreateNamed(e->cx, "RtPruneInfo");
  LLVMStructSetBody(pr_t, pr_f, 12, 0);
  int np = m->nparam ? m->nparam : 1;
  LLVMValueRef *rows = calloc((size_t)np, sizeof *rows);
  int *heads = kt_attention_heads(m);
  if (!rows)
    die("out of memory");
  for (int i = 0; i < np; i++) {
    const Param *q = m->nparam ? m->params[i] : NULL;
    LLVMValueRef dims[4];
    for (int k = 0; k < 4; k++)
      dims[k] = ci64(e, q && k < q->type.rank ? (long long)q->type.dim[k] : 0);
    KParamAbi a = {0};
    if (q)
      a = kt_param_abi(m, q, p->param_offset[i], heads[i]);
    else
      a.dtype_value = kt_rt_dtype_value(DT_F32);
    LLVMValueRef aux[4];
    for (int k = 0; k < 4; k++) {
      LLVMValueRef af[4] = {cstr(e, k < a.naux ? a.aux_role : NULL), ci32(e, k < a.naux ? a.aux_dtype_value : 0),
                            ci64(e, k < a.naux ? (long long)a.aux_offset : 0),
                            ci64(e, k < a.naux ? (long long)a.aux_nbytes : 0)};
      aux[k] = LLVMConstNamedStruct(ax_t, af, 4);
    }
    LLVMValueRef prune = LLVMConstNull(e->p8);
    if (a.has_prune) {
      LLVMValueRef pf[12] = {ci32(e, a.prune_kind), cf32(e, a.sparsity), ci32(e, a.prune_n), ci32(e, a.prune_m),
                             ci64(e, (long long)a.nnz), ci32(e, a.select), ci32(e, a.group), ci32(e, a.axis),
                             ci32(e, a.parts), ci32(e, a.unit), ci32(e, a.of), ci32(e, a.heads)};
      LLVMValueRef g = LLVMAddGlobal(e->mod, pr_t, "model_prune");
      LLVMSetInitializer(g, LLVMConstNamedStruct(pr_t, pf, 12));
      LLVMSetGlobalConstant(g, 1);
      LLVMSetLinkage(g, LLVMInternalLinkage);
      prune = LLVMConstBitCast(g, e->p8);
    }
    LLVMValueRef f[14] = {cstr(e, q ? q->name : NULL),
                          ci32(e, q ? q->type.rank : 0),
                          LLVMConstArray(e->i64, dims, 4),
                          ci32(e, a.dtype_value),
                          ci32(e, a.format_value),
                          ci64(e, q ? (long long)p->param_offset[i] : 0),
                          ci64(e, (long long)a.nbytes),
                          ci32(e, q ? (int)q->init : 0),
                          cf32(e, q ? q->init_arg : 0),
                          ci32(e, q && q->decay),
                          ci32(e, q && q->trainable),
                          ci32(e, a.naux),
                          LLVMConstArray(ax_t, aux, 4),
                          prune};
    rows[i] = LLVMConstNamedStruct(pi_t, f, 14);
  }
  LLVMValueRef ptab = LLVMAddGlobal(e->mod, LLVMArrayType(pi_t, (unsigned)np), "model_params");
  LLVMSetInitializer(ptab, LLVMConstArray(pi_t, rows, (unsigned)np));
  free(heads);
  LLVMSetGlobalConstant(ptab, 1);
  LLVMSetLinkage(ptab, LLVMInternalLinkage);
  free(rows);

  /* embedded weights: the file's bytes as a constant */
  LLVMValueRef blob = null8(e), blob_end = null8(e);
  if (opt->embed_weights) {
    size_t len = 0;
    char *bytes = slurp(opt->embed_weights, &len, e->d);
    if (!bytes)
      return false;
    LLVMValueRef init = LLVMConstStringInContext(e->cx, bytes, (unsigned)len, 1);
    free(bytes);
    LLVMValueRef g = LLVMAddGlobal(e->mod, LLVMTypeOf(init), "modelc_weights_blob");
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, 1);
    LLVMSetLinkage(g, LLVMInternalLinkage);
    LLVMSetAlignment(g, 64);
    LLVMValueRef idx[2] = {ci64(e, 0), ci64(e, (long long)len)};
    blob = LLVMConstPointerCast(g, e->p8);
    blob_end = LLVMConstInBoundsGEP2(LLVMTypeOf(init), g, idx, 2);
    blob_end = LLVMConstPointerCast(blob_end, e->p8);
  }

  /* RtTrainConfig {steps, batch, micro_batch, warmup, seed, eval_every, checkpoint_every (int64_t),
   * lr, min_lr, beta1, beta2, eps, weight_decay, momentum, grad_clip (double), schedule,
   * optimizer, precision (enums), data, prune_initial (double), prune_start, prune_end, prune_every} */
  LLVMTypeRef tc_f[23];
  for (int i = 0; i < 7; i++)
    tc_f[i] = e->i64;
  for (int i = 7; i < 15; i++)
    tc_f[i] = e->f64;
  tc_f[15] = tc_f[16] = tc_f[17] = e->i32;
  tc_f[18] = e->p8;
  tc_f[19] = e->f64;
  tc_f[20] = tc_f[21] = tc_f[22] = e->i64;
  LLVMTypeRef tc_t = LLVMStructCreateNamed(e->cx, "RtTrainConfig");
  LLVMStructSetBody(tc_t, tc_f, 23, 0);
  LLVMValueRef tc;
  if (m->train.present) {
    const TrainConfig *t = &m->train;
    const int64_t iv[7] = {t->steps, t->batch, t->micro_batch, t->warmup, t->seed, t->eval_every, t->checkpoint_every};
    const double dv[8] = {t->lr, t->min_lr, t->beta1, t->beta2, t->eps, t->weight_decay, t->momentum, t->grad_clip};
    LLVMValueRef f[23];
    for (int i = 0; i < 7; i++)
      f[i] = ci64(e, (long long)iv[i]);
    for (int i = 0; i < 8; i++) { /* the C backend writes these as float literals: round through float */
      char buf[48];
      snprintf(buf, sizeof buf, "%.9g", dv[i]);
      f[7 + i] = LLVMConstReal(e->f64, (double)strtof(buf, NULL));
    }
    f[15] = ci32(e, (int)t->schedule), f[16] = ci32(e, (int)t->optimizer), f[17] = ci32(e, (int)t->precision);
    f[18] = cstr(e, t->data);
    char pb[48];
    snprintf(pb, sizeof pb, "%.9g", t->prune_initial);
    f[19] = LLVMConstReal(e->f64, (double)strtof(pb, NULL));
    f[20] = ci64(e, (long long)t->prune_start), f[21] = ci64(e, (long long)t->prune_end);
    f[22] = ci64(e, (long long)t->prune_every);
    tc = LLVMConstNamedStruct(tc_t, f, 23);
  } else {
    tc = LLVMConstNull(tc_t);
  }

  /* RtStateInfo {row_floats}: the persistent state slots */
  LLVMTypeRef si_f[1] = {e->i64};
  LLVMTypeRef si_t = LLVMStructCreateNamed(e->cx, "RtStateInfo");
  LLVMStructSetBody(si_t, si_f, 1, 0);
  int nsl = p->nstate ? p->nstate : 1;
  LLVMValueRef *srows = calloc((size_t)nsl, sizeof *srows);
  if (!srows)
    die("out of memory");
  for (int i = 0; i < nsl; i++) {
    LLVMValueRef f1 = ci64(e, p->nstate ? (long long)p->state_rows[i] : 0);
    srows[i] = LLVMConstNamedStruct(si_t, &f1, 1);
  }
  LLVMValueRef stab = LLVMAddGlobal(e->mod, LLVMArrayType(si_t, (unsigned)nsl), "model_state");
  LLVMSetInitializer(stab, LLVMConstArray(si_t, srows, (unsigned)nsl));
  LLVMSetGlobalConstant(stab, 1);
  LLVMSetLinkage(stab, LLVMInternalLinkage);
  free(srows);

  /* size_t model_scratch_floats(int training): the largest scratch-size call (train-only ones
   * when training) */
  LLVMTypeRef sc_p[1] = {e->i32};
  LLVMTypeRef sc_t = LLVMFunctionType(e->i64, sc_p, 1, 0);
  LLVMValueRef scf = LLVMAddFunction(e->mod, "model_scratch_floats", sc_t);
  LLVMSetLinkage(scf, LLVMInternalLinkage);
  LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->cx, scf, "entry"));
  LLVMValueRef training = LLVMBuildICmp(e->b, LLVMIntNE, LLVMGetParam(scf, 0), ci32(e, 0), "");
  LLVMValueRef nmax = ci64(e, 0);
  for (int i = 0; i < p->nscratch; i++) {
    const BackendScratch *sc = &p->scratch[i];
    LLVMValueRef sa[BACKEND_MAX_SCRATCH_ARGS];
    for (int j = 0; j < sc->nargs; j++)
      sa[j] = ci64(e, (long long)sc->arg[j]);
    LLVMValueRef k = kcall(e, sc->kernel, sa);
    if (sc->train_only)
      k = LLVMBuildSelect(e->b, training, k, ci64(e, 0), "");
    nmax = LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntUGT, k, nmax, ""), k, nmax, "");
  }
  LLVMBuildRet(e->b, nmax);

  /* RtModel, field for field as in modelc_rt.h */
  LLVMTypeRef m_f[33] = {e->p8,
                         e->p8,
                         e->i64,
                         e->i64,
                         e->i64,
                         e->i32,
                         e->i64,
                         e->i32,
                         LLVMPointerType(pi_t, 0),
                         e->i64,
                         e->i64,
                         e->i64,
                         e->i64,
                         e->i64,
                         e->i32,
                         LLVMPointerType(si_t, 0),
                         LLVMPointerType(sc_t, 0),
                         e->p8,
                         LLVMPointerType(fwd_t, 0),
                         e->p8,
                         e->p8,
                         LLVMPointerType(tr_t, 0),
                         e->i64,
                         e->i64,
                         tc_t,
                         e->i32, e->i32, e->i32, e->p8, e->i32,
                         e->i32, e->i32, e->pi};
  LLVMTypeRef model_t = LLVMStructCreateNamed(e->cx, "RtModel");
  LLVMStructSetBody(model_t, m_f, 33, 0);
  const Attr *kind = ir_module_attr(m, "kind");
  const Value *ret = ent->ret[0];
  bool per_token = ret->type.rank >= 2 && backend_func(p, ent)->vals[ret->id].role[1] == AX_TIME;
  int64_t tokens = ent->args[0]->type.dim[0] * ent->args[0]->type.dim[1];
  const Attr *prec = ir_module_attr(m, "precision"); /* RtPrecision: 1 bf16, 2 fp16 */
  int train_prec = p->train && prec && prec->kind == ATTR_STR ? (!strcmp(prec->s, "bf16") ? 1 : 2) : 0;
  /* RtModel.moe_experts: the experts of each moe layer's load report */
  LLVMValueRef moe_tab = LLVMConstNull(e->pi);
  if (p->nmoe) {
    LLVMValueRef *ev = malloc(sizeof *ev * (size_t)p->nmoe);
    if (!ev)
      die("out of memory");
    for (int i = 0; i < p->nmoe; i++)
      ev[i] = ci32(e, p->moe_experts[i]);
    LLVMTypeRef at = LLVMArrayType(e->i32, (unsigned)p->nmoe);
    LLVMValueRef g = LLVMAddGlobal(e->mod, at, "model_moe_experts");
    LLVMSetInitializer(g, LLVMConstArray(e->i32, ev, (unsigned)p->nmoe));
    LLVMSetGlobalConstant(g, 1);
    LLVMSetLinkage(g, LLVMInternalLinkage);
    moe_tab = LLVMConstPointerCast(g, e->pi);
    free(ev);
  }
  LLVMValueRef mv[33] = {
      cstr(e, m->name),
      cstr(e, kind && kind->kind == ATTR_STR ? kind->s : "decoder"),
      ci64(e, (long long)ent->args[0]->type.dim[0]),
      ci64(e, (long long)ent->args[0]->type.dim[1]),
      ci64(e, (long long)mattr(m, "vocab")),
      ci32(e, per_token ? 1 : 0),
      ci64(e, (long long)ret->type.dim[ret->type.rank - 1]),
      ci32(e, m->nparam),
      LLVMConstPointerCast(ptab, LLVMPointerType(pi_t, 0)),
      ci64(e, (long long)p->weight_bytes),
      ci64(e, (long long)ir_param_count(m)),
      ci64(e, (long long)ir_param_bytes(m)),
      ci64(e, (long long)(ir_func_flops(m, ent) / tokens)),
      ci64(e, (long long)p->arena_bytes),
      ci32(e, p->nstate),
      LLVMConstPointerCast(stab, LLVMPointerType(si_t, 0)),
      scf,
      cstr(e, opt->compile_options ? opt->compile_options : ""),
      fwd,
      blob,
      blob_end,
      trn,
      ci64(e, p->train ? (long long)p->train_arena_bytes : 0),
      ci64(e, p->train ? (long long)(ir_func_flops(m, p->train) / tokens) : 0),
      tc,
      ci32(e, train_prec),
      ci32(e, p->decode_unbounded ? 1 : 0),
      ci32(e, p->train ? p->loss_parts : 1),
      m->train.distill_temperature > 0 ? cstr(e, IR_TEACHER_PREFIX) : LLVMConstNull(e->p8),
      ci32(e, (long long)p->memory),
      ci32(e, (int)p->time_multiple),
      ci32(e, p->nmoe),
      moe_tab,
  };
  LLVMValueRef model = LLVMAddGlobal(e->mod, model_t, "model");
  LLVMSetInitializer(model, LLVMConstNamedStruct(model_t, mv, 33));
  LLVMSetGlobalConstant(model, 1);
  LLVMSetLinkage(model, LLVMInternalLinkage);

  /* int main(int argc, char **argv) { return rt_main(argc, argv, &model); } */
  LLVMTypeRef main_ps[2] = {e->i32, LLVMPointerType(e->p8, 0)};
  LLVMValueRef mainf = LLVMAddFunction(e->mod, "main", LLVMFunctionType(e->i32, main_ps, 2, 0));
  LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->cx, mainf, "entry"));
  LLVMValueRef ma[3] = {LLVMGetParam(mainf, 0), LLVMGetParam(mainf, 1), LLVMConstPointerCast(model, e->p8)};
  LLVMBuildRet(e->b, kcall(e, K_MAIN, ma));
  return true;
}

/* Builds the whole program into a new module of cx. Returns NULL after reporting to d. */
static LLVMModuleRef build_module(LLVMContextRef cx, const Module *m, const EmitOptions *opt, Diag *d) {
  BackendPlan p;
  if (!backend_plan(&p, m, d)) {
    backend_plan_free(&p);
    return NULL;
  }
  Ll e;
  memset(&e, 0, sizeof e);
  e.cx = cx, e.p = &p, e.d = d, e.ok = true;
  e.mod = LLVMModuleCreateWithNameInContext(m->name, cx);
  e.b = LLVMCreateBuilderInContext(cx);
  e.vd = LLVMVoidTypeInContext(cx), e.i8 = LLVMInt8TypeInContext(cx);
  e.i32 = LLVMInt32TypeInContext(cx), e.i64 = LLVMInt64TypeInContext(cx), e.f32 = LLVMFloatTypeInContext(cx);
  e.f64 = LLVMDoubleTypeInContext(cx);
  e.p8 = LLVMPointerType(e.i8, 0), e.pf = LLVMPointerType(e.f32, 0), e.pi = LLVMPointerType(e.i32, 0);
  e.ph = LLVMPointerType(LLVMInt16TypeInContext(cx), 0);
  e.pp8 = LLVMPointerType(e.p8, 0);
  /* RtStep {int nb, nt, t0; void **state; float *scratch; uint64_t seed; float loss_scale; float *moe_load} */
  LLVMTypeRef sf[8] = {e.i32, e.i32, e.i32, e.pp8, e.pf, e.i64, e.f32, e.pf};
  e.step_t = LLVMStructCreateNamed(cx, "RtStep");
  LLVMStructSetBody(e.step_t, sf, 8, 0);
  e.pstep = LLVMPointerType(e.step_t, 0);
  LLVMTypeRef rps[3] = {e.p8, e.i32, e.i32};
  e.range_t = LLVMFunctionType(e.vd, rps, 3, 0);
  e.prange = LLVMPointerType(e.range_t, 0);
  e.fns = calloc((size_t)m->nfunc + 1, sizeof *e.fns);
  if (!e.fns)
    die("out of memory");
  for (int i = 0; i < m->nfunc; i++) {
    if (!backend_func(&p, m->funcs[i])->analysed)
      continue;
    char name[300];
    snprintf(name, sizeof name, "f.%s", m->funcs[i]->name);
    e.fns[i] = LLVMAddFunction(e.mod, name, func_type(&e, m->funcs[i]));
    LLVMSetLinkage(e.fns[i], LLVMInternalLinkage);
  }
  for (int i = 0; i < m->nfunc && e.ok; i++)
    if (e.fns[i])
      emit_func(&e, i);
  bool ok = e.ok && emit_descriptor(&e, opt);
  LLVMDisposeBuilder(e.b);
  free(e.fns);
  backend_plan_free(&p);
  if (!ok) {
    LLVMDisposeModule(e.mod);
    return NULL;
  }
  return e.mod;
}

/* ---- target machine, verification, optimisation ---- */

static void init_llvm(void) {
  static bool done;
  if (done)
    return;
  done = true;
  LLVMInitializeAllTargetInfos();
  LLVMInitializeAllTargets();
  LLVMInitializeAllTargetMCs();
  LLVMInitializeAllAsmPrinters();
}

/* The target machine for lo (the host by default). Returns NULL after a user error. */
static LLVMTargetMachineRef target_machine(const LlvmOptions *lo, Diag *d) {
  init_llvm();
  char *triple = lo->triple ? LLVMNormalizeTargetTriple(lo->triple) : LLVMGetDefaultTargetTriple();
  LLVMTargetRef t;
  char *err = NULL;
  if (LLVMGetTargetFromTriple(triple, &t, &err)) {
    diag_error(d, NULL, 0, 0, "--target=%s: %s", lo->triple ? lo->triple : triple, err ? err : "unknown target");
    LLVMDisposeMessage(err);
    LLVMDisposeMessage(triple);
    return NULL;
  }
  bool native = (!lo->cpu && !lo->triple) || (lo->cpu && strcmp(lo->cpu, "native") == 0);
  if (native && lo->triple) {
    char *host = LLVMGetDefaultTargetTriple();
    bool same = strcmp(host, triple) == 0;
    LLVMDisposeMessage(host);
    if (!same) {
      diag_error(d, NULL, 0, 0, "--mcpu=native describes this machine, not the target %s: name a CPU", triple);
      LLVMDisposeMessage(triple);
      return NULL;
    }
  }
  char *cpu = native ? LLVMGetHostCPUName() : NULL;
  char *features = native ? LLVMGetHostCPUFeatures() : NULL;
  static const LLVMCodeGenOptLevel levels[4] = {LLVMCodeGenLevelNone, LLVMCodeGenLevelLess, LLVMCodeGenLevelDefault,
                                                LLVMCodeGenLevelAggressive};
  /* LLVM reports a CPU it does not know only as a warning on stderr while it creates the machine
   * (and aborts later, generating code): capture stderr meanwhile and make that a user error. */
  fflush(stderr);
  FILE *cap = tmpfile();
  int saved = cap ? dup(2) : -1;
  if (saved >= 0)
    dup2(fileno(cap), 2);
  LLVMTargetMachineRef tm =
      LLVMCreateTargetMachine(t, triple,
                              native    ? cpu
                              : lo->cpu ? lo->cpu
                                        : "generic",
                              native ? features : "", levels[lo->opt_level], LLVMRelocPIC, LLVMCodeModelDefault);
  char said[1024] = "";
  if (saved >= 0) {
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(cap);
    said[fread(said, 1, sizeof said - 1, cap)] = 0;
  }
  if (cap)
    fclose(cap);
  if (tm && strstr(said, "is not a recognized")) {
    char *nl = strchr(said, '\n');
    if (nl)
      *nl = 0;
    diag_error(d, NULL, 0, 0,
               "--mcpu=%s: LLVM does not know this CPU for %s (%s; 'llc-14 -mtriple=%s -mcpu=help' "
               "lists them)",
               lo->cpu, triple, said, triple);
    LLVMDisposeTargetMachine(tm);
    tm = NULL;
  } else {
    fputs(said, stderr);
    if (!tm)
      diag_error(d, NULL, 0, 0, "LLVM cannot create a target machine for this target and CPU");
  }
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  LLVMDisposeMessage(triple);
  return tm;
}

/* Sets the target, verifies and optimises mod. 0, or 2 (internal error) after reporting to d. */
static int finish_module(LLVMModuleRef mod, LLVMTargetMachineRef tm, const LlvmOptions *lo, Diag *d) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(mod, dl);
  LLVMDisposeTargetData(dl);
  /* the target's CPU and features on every function, so the JIT's code generator sees them too */
  char *cpu = LLVMGetTargetMachineCPU(tm), *feat = LLVMGetTargetMachineFeatureString(tm);
  LLVMContextRef cx = LLVMGetModuleContext(mod);
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
    if (LLVMCountBasicBlocks(f)) {
      LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                              LLVMCreateStringAttribute(cx, "target-cpu", 10, cpu, (unsigned)strlen(cpu)));
      if (*feat)
        LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                                LLVMCreateStringAttribute(cx, "target-features", 15, feat, (unsigned)strlen(feat)));
    }
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  char *msg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
    diag_error(d, NULL, 0, 0, "internal error: the LLVM backend built an invalid module: %s", msg ? msg : "");
    LLVMDisposeMessage(msg);
    return 2;
  }
  LLVMDisposeMessage(msg);
  char pipeline[32];
  snprintf(pipeline, sizeof pipeline, "default<O%d>", lo->opt_level);
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, lo->opt_level >= 2);
  LLVMPassBuilderOptionsSetSLPVectorization(po, lo->opt_level >= 2);
  LLVMErrorRef err = LLVMRunPasses(mod, pipeline, tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (err) {
    char *em = LLVMGetErrorMessage(err);
    diag_error(d, NULL, 0, 0, "internal error: LLVM's %s pipeline failed: %s", pipeline, em);
    LLVMDisposeErrorMessage(em);
    return 2;
  }
  return 0;
}

bool emitll_available(void) { return true; }

int emitll_write(const Module *m, const EmitOptions *o, const LlvmOptions *lo, LlvmOutput kind, const char *path,
                 Diag *d) {
  LLVMTargetMachineRef tm = target_machine(lo, d);
  if (!tm)
    return 1;
  LLVMContextRef cx = LLVMContextCreate();
  LLVMModuleRef mod = build_module(cx, m, o, d);
  int rc = mod ? finish_module(mod, tm, lo, d) : 1;
  if (rc == 0) {
    char *err = NULL;
    bool bad = false;
    if (kind == LLVM_OUT_IR)
      bad = LLVMPrintModuleToFile(mod, path, &err) != 0;
    else if (kind == LLVM_OUT_BC)
      bad = LLVMWriteBitcodeToFile(mod, path) != 0;
    else
      bad = LLVMTargetMachineEmitToFile(tm, mod, (char *)path, LLVMObjectFile, &err) != 0;
    if (bad) {
      diag_error(d, path, 0, 0, "cannot write: %s", err ? err : "LLVM could not write the file");
      rc = 1;
    }
    LLVMDisposeMessage(err);
  }
  if (mod)
    LLVMDisposeModule(mod);
  LLVMContextDispose(cx);
  LLVMDisposeTargetMachine(tm);
  return rc;
}

static int jit_error(LLVMErrorRef err, const char *what, Diag *d) {
  char *msg = LLVMGetErrorMessage(err);
  diag_error(d, NULL, 0, 0, "internal error: the JIT could not %s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return 2;
}

int emitll_run(const Module *m, const EmitOptions *o, const LlvmOptions *lo, int argc, char **argv, int *status,
               Diag *d) {
  if (lo->triple) {
    diag_error(d, NULL, 0, 0, "--target: 'modelc run' runs on this machine; use 'modelc build' to cross-compile");
    return 1;
  }
  LLVMTargetMachineRef tm = target_machine(lo, d);
  if (!tm)
    return 1;
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMModuleRef mod = build_module(LLVMOrcThreadSafeContextGetContext(tsc), m, o, d);
  int rc = mod ? finish_module(mod, tm, lo, d) : 1;
  LLVMDisposeTargetMachine(tm);
  if (rc != 0) {
    if (mod)
      LLVMDisposeModule(mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return rc;
  }
  LLVMOrcLLJITRef jit = NULL;
  LLVMErrorRef err = LLVMOrcCreateLLJIT(&jit, LLVMOrcCreateLLJITBuilder());
  if (err) {
    LLVMDisposeModule(mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return jit_error(err, "start", d);
  }
  /* rt_*, libm and libc resolve from this process (modelc links the whole runtime and exports it) */
  LLVMOrcDefinitionGeneratorRef gen = NULL;
  err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
  if (!err) {
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(jit);
    LLVMOrcJITDylibAddGenerator(jd, gen);
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
    err = LLVMOrcLLJITAddLLVMIRModule(jit, jd, tsm);
    if (err)
      LLVMOrcDisposeThreadSafeModule(tsm);
  } else {
    LLVMDisposeModule(mod);
  }
  LLVMOrcDisposeThreadSafeContext(tsc); /* the module keeps the context alive */
  LLVMOrcExecutorAddress addr = 0;
  if (!err)
    err = LLVMOrcLLJITLookup(jit, &addr, "main");
  if (err) {
    rc = jit_error(err, "compile the model", d);
    LLVMOrcDisposeLLJIT(jit);
    return rc;
  }
  int (*entry)(int, char **) = (int (*)(int, char **))(uintptr_t)addr;
  fflush(stdout);
  *status = entry(argc, argv);
  fflush(stdout);
  err = LLVMOrcDisposeLLJIT(jit);
  if (err)
    return jit_error(err, "shut down", d);
  return 0;
}

#else /* built without LLVM (cmake -DMODELC_LLVM=OFF) */

bool emitll_available(void) { return false; }

static int no_llvm(Diag *d) {
  diag_error(d, NULL, 0, 0,
             "this modelc was built without LLVM (cmake -DMODELC_LLVM=OFF): the LLVM backend and "
             "'modelc run' are unavailable");
  return 1;
}

int emitll_write(const Module *m, const EmitOptions *o, const LlvmOptions *lo, LlvmOutput kind, const char *path,
                 Diag *d) {
  (void)m, (void)o, (void)lo, (void)kind, (void)path;
  return no_llvm(d);
}

int emitll_run(const Module *m, const EmitOptions *o, const LlvmOptions *lo, int argc, char **argv, int *status,
               Diag *d) {
  (void)m, (void)o, (void)lo, (void)argc, (void)argv, (void)status;
  return no_llvm(d);
}

#endif
