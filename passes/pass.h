/* pass.h: the pass manager: a registry of named IR passes with typed options, pipelines written
 * as LLVM's new pass manager writes them ("fuse,dce,cse", "name<key=value;flag>"), and a runner
 * that verifies after every pass and prints the IR before/after passes on request.
 *
 * Each pass lives in its own file passes/NAME.c as
 *     bool pass_NAME(Module *m, const PassOptions *o, Diag *d);
 * and is registered in the one table in passes/registry.c.
 */
#ifndef MODELC_PASS_H
#define MODELC_PASS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../ir/ir.h"

typedef enum PassOptType {
  POPT_INT,    /* decimal integer */
  POPT_FLOAT,  /* real number */
  POPT_BOOL,   /* "name" alone means true; name=true|false|1|0 */
  POPT_STR,    /* any text without ';' or '>' */
  POPT_SIZE,   /* bytes, with optional suffix KiB, MiB, GiB (or K, M, G) */
} PassOptType;

typedef struct PassOptSpec {
  const char *key;
  PassOptType type;
  const char *dflt;   /* default, in the option's text syntax */
  const char *help;   /* one line */
  int64_t lo, hi;     /* INT, SIZE: the values allowed, checked where the option is written;
                       * lo == hi == 0: any value of the type */
  const char *choices; /* STR: the values allowed, separated by '|' ("bf16|f16"); NULL: any text */
} PassOptSpec;

#define PASS_MAX_OPTS 16
typedef struct PassOptValue {
  const char *key;    /* points into the PassOptSpec */
  PassOptType type;
  bool set;           /* given by the user (else the default is in effect) */
  int64_t i;          /* INT, BOOL (0/1), SIZE */
  double f;           /* FLOAT */
  char s[64];         /* STR */
} PassOptValue;

typedef struct PassOptions {
  int n;
  PassOptValue v[PASS_MAX_OPTS];   /* one per PassOptSpec of the pass, in spec order */
  /* Where the pass was written (its pipeline entry), filled in by pass_run_pipeline just before
   * the pass runs, so that a pass's own errors point at the spec or --passes text that asked for
   * it (pass_error). NULL/0 outside a run. */
  const char *file;
  int line, col;
  /* Whether a later pass of the same pipeline builds @train (autodiff or checkpoint), filled in
   * with file/line/col: a pass choosing an inference-only form (prune's sparse format) asks it. */
  bool train_follows;
} PassOptions;

typedef struct Module Module;
typedef struct PipelineEntry PipelineEntry;
typedef bool (*PassFn)(Module *m, const PassOptions *o, Diag *d);
/* Rules between a pass's options (e.g. "exactly one policy"), checked once all of an entry's
 * options are written, before anything runs; reports at the entry and returns false. */
typedef bool (*PassCheckFn)(const PipelineEntry *e, Diag *d);

typedef struct PassInfo {
  const char *name;
  const char *desc;          /* one line, shown by `modelc passes` */
  PassFn run;
  const PassOptSpec *opts;   /* NULL if none */
  int nopts;
  bool once;                 /* may appear only once in a pipeline (a second run is refused) */
  PassCheckFn check;         /* rules between options; NULL if none */
} PassInfo;

const PassInfo *pass_find(const char *name);
const PassInfo *pass_registry(int *n);
/* Gives attention op a block-sparse pattern (passes/sparse_attention.c; the pass and the spec's
 * `attention: {sparse: ...}` both call it): pattern local|strided|fixed, size its window, stride or
 * block, summary (fixed), global tokens, the kernels' tile. A causal local pattern gets a ring KV
 * cache when it sees fewer positions than the context. false with err set if they are invalid. */
bool pass_sparse_set(Op *op, const char *pattern, int64_t size, int64_t summary, int64_t global, int64_t tile,
                     char *err, size_t n);
/* The pipeline used when neither the spec nor --passes gives one. */
const char *pass_default_pipeline(void);

int64_t pass_opt_int(const PassOptions *o, const char *key);   /* INT, BOOL, SIZE */
double pass_opt_float(const PassOptions *o, const char *key);
bool pass_opt_bool(const PassOptions *o, const char *key);
const char *pass_opt_str(const PassOptions *o, const char *key);
bool pass_opt_is_set(const PassOptions *o, const char *key);
/* A skip= option's parameter list: comma-separated names, each optionally ending in '*' to match a
 * prefix (skip=wte.weight,h.0.*). pass_skip_new allocates the "used" marks (one per entry);
 * pass_skip_match says whether name is listed and marks the entries that match; pass_skip_done
 * reports every entry that matched no parameter ("PASS: skip=NAME names no parameter": a typo
 * must not silently change everything), frees the marks and returns whether there was none. */
typedef struct PassSkip {
  const char *list;
  int n;
  bool *used;
} PassSkip;
PassSkip pass_skip_new(const char *list);
bool pass_skip_match(PassSkip *s, const char *name);
bool pass_skip_done(PassSkip *s, const PassOptions *o, Diag *d, const char *pass);
/* Where each parameter's value is read, through call arguments into the functions called (by
 * Param.index; calloc'd, free it): operand 1 of a linear in the entry function (head) or in a called
 * one (block), the table of an embedding, or anything else (an element-wise op, a norm, a return). */
typedef struct PassReach {
  bool head, block, embedding, other;
} PassReach;
PassReach *pass_param_reach(const Module *m);
/* The parameter a weight value w of f is bound to at each call of f: the value itself when it is
 * a param op's result (one binding), else the argument's parameter at every call of f. Fills out
 * (at most cap) and returns the count, or -1 when some binding is not a parameter (prune, lowrank). */
int pass_param_bindings(const Module *m, const Func *f, const Value *w, Param **out, int cap);
/* After passes changed parameter types (a dtype: quantised, csr; a shape: structured pruning): the
 * param ops yield the new types, then every function is re-inferred from the roots (functions no
 * call names) down, each call first fixing its callee: the callee's arguments retyped when all its
 * calls pass the same types, else the call goes to a clone (NAME.TAG, NAME.TAG.2, ...) typed for
 * it. A type the ops cannot take is an internal error (the pass checked it). */
void pass_refit_types(Module *m, const char *tag);
/* The prune pass's break-even sparsity for csr storage of an [N,K] weight (measured: passes/prune.c). */
double pass_prune_breakeven(int64_t N, int64_t K);
/* The lowrank pass's SVD (LAPACK dgesdd, in double) of an [N,K] row-major f32 matrix W = U S V^T:
 * s the mn = min(N,K) singular values in descending order, u [N,mn] column-major (u[i + j N]), vt
 * [mn,K] column-major (vt[j + i mn]); malloc'd, pass_svd_free releases them. False when LAPACK
 * fails (or the matrix is too large for its int sizes). pass_svd_energy: the retained energy of
 * rank r (sum_{i<r} s_i^2 / sum s_i^2); pass_svd_rank_for: the smallest rank keeping >= energy;
 * pass_svd_factors: the balanced rank-r factors u [N,r] = U_r S_r^1/2 and v [r,K] = S_r^1/2 V_r^T,
 * row-major f32, so W ~ u v. */
typedef struct PassSvd {
  int64_t N, K;
  int mn;
  double *s, *u, *vt;
} PassSvd;
bool pass_svd(const float *w, int64_t N, int64_t K, PassSvd *out);
void pass_svd_free(PassSvd *s);
double pass_svd_energy(const PassSvd *s, int r);
int pass_svd_rank_for(const PassSvd *s, double energy);
void pass_svd_factors(const PassSvd *s, int r, float *u, float *v);
/* Reports an error at the pipeline entry the running pass came from (o->file:line:col). */
void pass_error(const PassOptions *o, Diag *d, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

struct PipelineEntry {
  const PassInfo *pass;
  PassOptions opts;
  const char *file;   /* where it was written (spec file or "--passes"), for diagnostics */
  int line, col;
};

typedef struct Pipeline {
  int n, cap;
  PipelineEntry *e;   /* malloc'd */
} Pipeline;

void pass_pipeline_init(Pipeline *p);
void pass_pipeline_free(Pipeline *p);
/* Parses "a,b<k=v;flag>,c" and appends its entries. file/line/col locate text[0]; errors are
 * reported at the exact column of the bad name or option. Returns false on any error. */
bool pass_parse_pipeline(Pipeline *p, const char *text, const char *file, int line, int col, Diag *d);
/* Appends one pass by name (unknown names get a "did you mean"; a second entry of a `once` pass is
 * refused at file:line:col with a note at the first); NULL on error. */
PipelineEntry *pass_pipeline_append(Pipeline *p, const char *name, const char *file, int line, int col,
                                    Diag *d);
/* Sets one option from its text value, checking key, type and range (PassOptSpec lo/hi/choices) at
 * file:line:col; false on error. */
bool pass_set_option(PipelineEntry *e, const char *key, const char *value, const char *file, int line,
                     int col, Diag *d);
/* Checks the rules between an entry's options (PassInfo.check), once all of them are set. Called
 * by pass_parse_pipeline for each entry; callers that set options one by one (the spec's
 * `name: {option: value}` form) call it after the last. False (reported at the entry) on error. */
bool pass_check_entry(const PipelineEntry *e, Diag *d);
/* Writes the canonical pipeline text ("fuse,checkpoint<every=2>") into buf. */
char *pass_pipeline_str(const Pipeline *p, char *buf, size_t n);

/* Completes p with what the module's facts ask for: when m->train asks for 16-bit precision, p
 * builds @train (autodiff or checkpoint) and neither p nor m has a precision yet, precision<bf16>
 * or precision<fp16> goes right after the last of those passes. pass_run_pipeline calls it on a
 * copy of its pipeline; false (reported to d) only on an internal error. */
bool pass_pipeline_complete(Pipeline *p, const Module *m, Diag *d);

typedef struct PassRunConfig {
  bool verify_each;          /* run ir_verify after every pass (debug and test builds) */
  bool print_after_all;
  const char *print_after;   /* pass name or NULL */
  const char *print_before;  /* pass name or NULL */
  bool print_times;          /* per-pass wall time */
  FILE *dump;                /* where --print-* and times go (stderr) */
  /* Called after every pass (after verification) when non-NULL: stats tables use it. */
  void (*after_pass)(void *ctx, const Module *m, const PipelineEntry *e);
  void *ctx;
} PassRunConfig;

/* Runs the pipeline in order; stops at the first failing pass or verification. */
bool pass_run_pipeline(Module *m, const Pipeline *p, const PassRunConfig *cfg, Diag *d);

#endif
