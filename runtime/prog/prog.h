/* prog.h: the prog room of the runtime (runtime/prog/), internal: not part of the ABI in
 * modelc_rt.h. The generated program's command line: the verbs rt_main dispatches to, their
 * options (parsed in one place, prog/options.c), a model in memory shared by every verb
 * (prog/model.c), sampling for generate, and the training loop's schedule and loss scaling.
 * prog/ may include every other room; nothing outside prog/ includes this header. Files depend
 * one way: main.c (the verb table) -> the verbs (infer.c, generate.c, bench.c, train.c) ->
 * model.c, options.c, sample.c, schedule.c; train.c -> checkpoint.c, report.c (prog/train.h);
 * main.c, train.c -> dist.c (prog/dist.h: one process, or MPI's table from dist_mpi.c). */
#ifndef MODELC_RT_PROG_H
#define MODELC_RT_PROG_H

#include <stddef.h>
#include <stdint.h>

#include "../core/core.h"
#include "../gemm/gemm.h"
#include "../io/io.h"
#include "../kernels/kernels.h"
#include "../modelc_rt.h"

/* Exit statuses of the verbs. */
enum { EXIT_OK = 0, EXIT_USER = 1 };

/* ---------------------------------------------------------------------------------------------
 * The verbs (rt_main's table in prog/main.c): each parses its own options, prints its --help, and
 * returns the exit status.
 * ------------------------------------------------------------------------------------------- */

int rt_verb_info(const char *prog, int argc, char **argv, const RtModel *m);     /* prog/infer.c */
int rt_verb_init(const char *prog, int argc, char **argv, const RtModel *m);     /* prog/infer.c */
int rt_verb_export(const char *prog, int argc, char **argv, const RtModel *m);   /* prog/infer.c */
int rt_verb_forward(const char *prog, int argc, char **argv, const RtModel *m);  /* prog/infer.c */
int rt_verb_eval(const char *prog, int argc, char **argv, const RtModel *m);     /* prog/infer.c */
int rt_verb_generate(const char *prog, int argc, char **argv, const RtModel *m); /* prog/generate.c */
int rt_verb_bench(const char *prog, int argc, char **argv, const RtModel *m);    /* prog/bench.c */
int rt_verb_train(const char *prog, int argc, char **argv, const RtModel *m);    /* prog/train.c */
int rt_verb_grad(const char *prog, int argc, char **argv, const RtModel *m);     /* prog/train.c */
int rt_verb_importance(const char *prog, int argc, char **argv, const RtModel *m); /* prog/importance.c */

/* ---------------------------------------------------------------------------------------------
 * Options (prog/options.c)
 * ------------------------------------------------------------------------------------------- */

/* The options of every verb (one table in prog/options.c names each once). Defaults: seed 1337,
 * n 64, runs 7, temperature 1, top_p 1, everything else 0 or NULL; have_* says which were given
 * (train overrides the spec's train: section only with those). */
typedef struct RtOpts {
  const char *weights, *tokens, *targets, *out, *data, *prompt, *logits_out, *checkpoint, *resume, *log;
  const char *teacher_weights; /* train, grad: a distilling program's teacher */
  const char *prompt_tokens, *tokens_out; /* generate: a prompt of token ids "1,2"; the ids made (.npy) */
  const char *tokenizer;     /* generate, eval, train: --tokenizer FILE (NULL: bytes) */
  uint64_t seed;
  long long threads;         /* 0: MODELC_THREADS or the online CPUs */
  long long n, top_k, runs;  /* generate, bench */
  double temperature, top_p; /* generate */
  int no_cache;              /* generate */
  int no_memory;             /* eval, train: a segment-memory model resets its memory at every segment */
  /* train */
  long long steps, stop_at, batch, micro, eval_every, ckpt_every, warmup;
  double lr, min_lr, weight_decay, grad_clip, beta1, beta2, momentum;
  int schedule, optimizer;   /* RtSchedule, RtOptimizer */
  double loss_scale;         /* fp16: the initial loss scale and the good steps before it doubles */
  long long scale_window;
  int shard_optimizer;       /* train over MPI: each process keeps the optimiser state of its parameters */
  int have_n, have_seed, have_steps, have_batch, have_micro, have_lr, have_eval, have_ckpt_every;
  int have_min_lr, have_wd, have_clip, have_beta1, have_beta2, have_momentum, have_warmup, have_schedule, have_opt;
  int have_loss_scale, have_scale_window;
} RtOpts;

/* Parses argv[2..] of VERB; `allowed` is the space-separated list of the verb's options. Returns
 * 0 (with *help = 1 for --help or -h, and then without reading further), or 1 (EXIT_USER) after
 * printing the error. On success sets the pool's thread count (rt_set_threads(threads)). */
int rt_parse_opts(const char *prog, const char *verb, int argc, char **argv, const char *allowed, RtOpts *o,
                  int *help);

/* A file a verb reads or writes: how the message names it ("--weights", "the CSV log next to
 * --out"), its path (NULL: not given), for an output how to choose another ("name another with
 * --log FILE"), and the one input it may be (--checkpoint may be the --resume file), or NULL. */
typedef struct RtPathArg {
  const char *what, *path, *hint, *may_be;
} RtPathArg;

/* Refuses an output that is the same file (device and inode, rt_same_file) as one of the inputs,
 * or the same file or path as another output: prints the error naming both (rt_usage_error) and
 * returns 1 (EXIT_USER); 0 when every output is distinct. Verbs call it before writing anything.
 * Outputs named "-" (stdout) are not files and are skipped. */
int rt_check_outputs(const char *prog, const char *verb, const RtPathArg *outs, int nout, const RtPathArg *ins,
                     int nin);

/* Number parsers for option values and file metadata: 0 with *out set when all of s is a number
 * in range, else -1. */
/* a real in [lo, hi]; lo_open / hi_open exclude that end */
int rt_parse_real(const char *s, double lo, double hi, int lo_open, int hi_open, double *out);
int rt_parse_int(const char *s, long long lo, long long hi, long long *out);
/* decimal digits only: no sign, no space */
int rt_parse_u64(const char *s, uint64_t *out);

/* Prints "PROG: error: MESSAGE" (the error's message, "out of memory" when it has none) to stderr;
 * returns EXIT_USER, the exit status of an error the run's inputs caused. */
int rt_prog_error(const char *prog, const RtError *e);

/* Prints "PROG VERB: error: MESSAGE (see 'PROG VERB --help')" to stderr; returns 1, the user-error
 * exit status. */
int rt_usage_error(const char *prog, const char *verb, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---------------------------------------------------------------------------------------------
 * Sampling (prog/sample.c; reproducible: PCG32 seeded from a uint64)
 * ------------------------------------------------------------------------------------------- */

/* PCG32 (O'Neill, XSH-RR 64/32): 64-bit state, fixed odd increment. */
typedef struct RtRng {
  uint64_t state;
  uint64_t inc;
} RtRng;

void rt_rng_seed(RtRng *rng, uint64_t seed);
uint32_t rt_rng_u32(RtRng *rng);
float rt_rng_uniform(RtRng *rng); /* [0,1), 24 random bits */

typedef struct RtSampleParams {
  float temperature; /* <= 0: greedy */
  int top_k;         /* 0 (or >= V): off; 1: greedy */
  float top_p;       /* >= 1: off; else keep the smallest highest-probability set with mass >= top_p */
} RtSampleParams;

/* Index of the largest logit; ties go to the lowest index. NaNs are never chosen unless all are. */
int rt_sample_argmax(const float *logits, int V);
/* Draws one token id in [0,V) from logits (V) after temperature, top-k, then top-p (top-p mass is
 * measured on the top-k renormalised distribution). Scratch: probs (V floats), idx (V int32).
 * Greedy (temperature <= 0 or top_k == 1) uses no randomness and no scratch. */
int rt_sample(const float *logits, int V, const RtSampleParams *p, RtRng *rng, float *probs, int32_t *idx);

/* ---------------------------------------------------------------------------------------------
 * A model in memory (prog/model.c)
 * ------------------------------------------------------------------------------------------- */

/* Elements of a parameter. */
static inline int64_t rt_param_numel(const RtParamInfo *p) {
  int64_t n = 1;
  for (int i = 0; i < p->ndim; i++) n *= p->shape[i];
  return n;
}

/* 1 for a distillation teacher's parameter (RtModel.teacher_prefix): loaded from --teacher-weights
 * by train and grad only, never read from or written to a weights file or checkpoint of the student. */
static inline int rt_param_is_teacher(const RtModel *m, const RtParamInfo *p) {
  return m->teacher_prefix && strncmp(p->name, m->teacher_prefix, strlen(m->teacher_prefix)) == 0;
}

/* 1 for a language model: an output per token over the vocabulary. */
static inline int rt_is_lm(const RtModel *m) { return m->out_per_token && m->out_dim == m->vocab; }

/* What one command allocates to run the model (once): weights, arena, scratch, KV cache. */
typedef struct RtRun {
  const RtModel *m;
  unsigned char *W;  /* the weight buffer: each parameter at its byte offset, in its storage dtype */
  char *arena;
  float *scratch;
  void **state;      /* the program's state slots (KV caches, RtModel.state), NULL until made */
  float *statemem;   /* their memory */
  int state_batch;   /* the sequences they hold */
  int no_masks;      /* rt_run_load_weights leaves pruned dense parameters unmasked (the trainer masks) */
  int teacher;       /* rt_run_load_weights loads the teacher's parameters (their names without
                      * RtModel.teacher_prefix) instead of the student's */
} RtRun;

/* ---- segments.c: segment-memory models (RtModel.memory > 0, Transformer-XL) ---- */

/* The state of a segment-memory model for `batch` rows (each slot batch x row_floats, zeroed). */
typedef struct RtSegState {
  void **slot;
  float *mem;
  int batch;
} RtSegState;
int rt_seg_state_init(RtSegState *s, const RtModel *m, int batch, RtError *err);
void rt_seg_state_free(RtSegState *s);
/* out[i] = slot i advanced to row row0 (a micro-batch's rows keep their own memory). */
void rt_seg_state_rows(const RtSegState *s, const RtModel *m, int row0, void **out);
/* The outputs (B,T,V) of ids (B,T), T any length, as consecutive segments of the context with the
 * memory carried (st for B rows, reset first). */
int rt_seg_forward(const RtModel *m, char *arena, const void *W, float *scratch, RtSegState *st, const int32_t *ids,
                   const int32_t *tgt, int B, int T, float *out, float *loss, float *G, RtError *err);
/* Mean next-token loss (nats) of the bytes buf[0..n) as nb = min(B, n-1) contiguous streams of L =
 * (n-1)/nb predictions each, read in consecutive segments of the context with the memory carried
 * (no_memory: reset at every segment); the last (n-1) - nb*L predictions are not scored. *count: the
 * scored ones. st holds the compiled batch's rows. */
double rt_seg_stream_loss(const RtModel *m, char *arena, const void *W, float *scratch, RtSegState *st,
                          const int32_t *buf, size_t n, int no_memory, size_t *count, RtError *err);

/* Allocates weights, arena and inference scratch (-1 and a message when out of memory). */
int rt_run_init(RtRun *r, const RtModel *m, RtError *err);
/* Allocates the program's state slots (zeroed) for runs of `batch` sequences. */
int rt_run_kv(RtRun *r, int batch, RtError *err);
void rt_run_free(RtRun *r);
/* Loads every stored parameter from a safetensors file (path NULL: the embedded image) into r->W.
 * A dense parameter from any float tensor of its shape. A quantised one (format not dense) from a
 * float tensor of its logical shape [N,K], quantised at load, or from the pair NAME + NAME.scale in
 * its format's dtypes and shapes, copied as it is (a pair of another format, a missing or
 * mis-shaped .scale, a non-finite scale: -1 saying what was expected). A csr one from a float
 * tensor of its shape, masked and packed. A structurally pruned one (RtPruneInfo.select) from its
 * own shape or from the full tensor, its units chosen by its group's score (prog/prune.c). Then
 * the masked (pruned dense) parameters are masked from their loaded values, unless r->no_masks.
 * Other tensors are ignored. */
int rt_run_load_weights(RtRun *r, const char *path, RtError *err);
/* Declares r->W read-only to the GEMM layer until rt_run_free when MODELC_GEMM_PACK=1 asks for it
 * (rt_gemm_constant: the products read pre-packed copies of the weights): for verbs that never
 * change the weights (forward, eval, generate, bench's forward and decode); never train or grad. */
void rt_run_weights_readonly(RtRun *r);

/* Floats of scratch a model's forward (training: any call of a training step) needs at the current
 * rt_threads(), as the program says (RtModel.scratch_floats): one place for every verb's sizes. */
size_t rt_model_scratch_floats(const RtModel *m, int training);
/* Floats of all the program's state slots for runs of `batch` sequences. */
int64_t rt_model_state_floats(const RtModel *m, int batch);
/* Floats of the forward's output for B sequences of T tokens. */
size_t rt_out_floats(const RtModel *m, int B, int T);
/* A standard normal draw (Box-Muller on two uniforms). */
float rt_normal(RtRng *g);
/* Initialises every parameter of W as the spec says, from a PCG32 seeded with seed (values drawn
 * in f32, stored in each parameter's dtype); -1 when out of memory. */
int rt_prog_init_weights(const RtModel *m, void *W, uint64_t seed, RtError *err);
/* rt_run_load_weights into any buffer of weight_bytes bytes (path NULL: the embedded weights). */
int rt_prog_load_weights(const RtModel *m, void *W, const char *path, RtError *err);
/* A distilling program's teacher parameters from path (PROG train/grad --teacher-weights): the
 * file holds them under the teacher's own names (as the teacher's program writes them). */
int rt_prog_load_teacher(const RtModel *m, void *W, const char *path, RtError *err);
/* The same, leaving the masked parameters as the file has them (the trainer computes their masks). */
int rt_prog_load_weights_unmasked(const RtModel *m, void *W, const char *path, RtError *err);
static inline int rt_format_has_scales(RtFormat f) {
  return f == RT_FMT_I8_ROW || f == RT_FMT_Q8_0 || f == RT_FMT_Q4_0;
}

/* ---- pruning (prog/prune.c; the prune pass's facts, RtPruneInfo) ---- */
/* 1 when p is a pruned dense f32 parameter: the runtime holds a mask for it. */
int rt_param_masked(const RtParamInfo *p);
int rt_model_has_masks(const RtModel *m);
/* Computes the mask of every masked parameter from its values in W (f32 buffer in W's layout) at the
 * sparsity in force after `step` optimiser steps on c's schedule (c NULL, no schedule, or step < 0:
 * the target), zeroing what it removes; masks (per parameter, NULL where not masked; or masks NULL:
 * temporary) receive them. */
int rt_masks_compute(const RtModel *m, float *W, uint8_t *const *masks, const RtTrainConfig *c, int64_t step,
                     RtError *err);
/* W = 0 where a mask is 0. */
void rt_masks_apply(const RtModel *m, float *W, uint8_t *const *masks);
/* Masks of every masked parameter, all ones (NULL elsewhere); NULL when out of memory. */
uint8_t **rt_masks_new(const RtModel *m);
void rt_masks_free(const RtModel *m, uint8_t **masks);
/* Masks dense f32 values (in place) by csr parameter p's rule and packs them at p's place in W. */
int rt_prune_pack_csr(const RtParamInfo *p, void *W, float *dense, RtError *err);
/* 1 when tensor t is the full-size tensor of structurally pruned parameter p. */
int rt_prune_is_full(const RtParamInfo *p, const RtTensor *t);
/* p's slice of the full tensor t (f32 into out, p's shape): the units its group keeps, chosen once
 * per group (cache, by group index) from the file st by the group's rule. */
int rt_prune_select_load(const RtModel *m, const RtSafetensors *st, const char *path, const RtParamInfo *p,
                         const RtTensor *t, int64_t **cache, float *out, RtError *err);

/* Typed weights (RtParamInfo.dtype). The trainer's buffers (weights, gradients, moments) hold f32
 * parameters only, indexed in floats: rt_param_f32_index(p) = p->offset / 4 and
 * rt_weight_floats(m) = m->weight_bytes / 4. rt_model_require_f32 says which parameter is not. */
static inline int64_t rt_param_f32_index(const RtParamInfo *p) { return p->offset / 4; }
static inline int64_t rt_weight_floats(const RtModel *m) { return m->weight_bytes / 4; }
/* 0 when every parameter is stored in f32, else -1 naming the first that is not and what needs it. */
int rt_model_require_f32(const RtModel *m, const char *what, RtError *err);
/* Stores parameter p's elements, given as f32 in src, at its place in W in its storage: rounded to
 * nearest even for bf16/f16, quantised (rt_quantize: values, then scales at aux[0]) for a quantised
 * format; -1 naming the parameter when a quantised one has a non-finite weight. */
int rt_param_store_f32(const RtParamInfo *p, void *W, const float *src, RtError *err);
/* Writes every parameter of W (or of any buffer in W's layout: train's gradients) to a safetensors
 * file in its storage form (init, export, train's --out, grad): a dense one as the tensor NAME in
 * its dtype, a quantised one as the pair NAME (its values) and NAME.scale (its scales; modelc_rt.h,
 * RtFormat). The data section is rt_model_export_bytes(m) bytes. Metadata: nmeta key/value pairs
 * in meta, or (meta NULL) format "pt" and modelc_model, the model's name. */
int rt_prog_write_weights(const RtModel *m, const void *W, const char *path, const char *const *meta, int nmeta,
                          RtError *err);
/* The same with nextra further tensors after the parameters (PROG importance's scores). */
int rt_prog_write_weights_extra(const RtModel *m, const void *W, const char *path, const char *const *meta,
                                int nmeta, const RtTensor *extra, int nextra, RtError *err);
/* Bytes of every parameter's storage, values and scales, without the 64-byte alignment padding. */
int64_t rt_model_export_bytes(const RtModel *m);
/* ---- text (prog/text.c): bytes, or --tokenizer's ids ---- */
/* Loads --tokenizer path for verb and checks its vocabulary is the model's: 0, or 1 (EXIT_USER) after
 * printing the error (naming both sizes when they differ). */
int rt_prog_tokenizer(const char *prog, const char *verb, const RtModel *m, const char *path, RtTokenizer *t);
/* The ids of n bytes of text: the bytes themselves (t NULL) or t's encoding (llama2.c: with BOS). */
int rt_prog_text_ids(const RtTokenizer *t, const void *text, size_t n, int32_t **ids, size_t *count, RtError *err);

/* Reads a token file (int32/int64 [B,T]) within the compiled shape and the vocabulary into int32
 * ids; *ids is malloc'd. */
int rt_prog_read_tokens(const RtModel *m, const char *path, int32_t **ids, int *B, int *T, RtError *err);
/* -log softmax(l)[target] over l[0..V), in double (the eval verbs' next-token loss). */
double rt_token_nll(const float *l, int64_t V, int target);

/* ---------------------------------------------------------------------------------------------
 * The training loop's step policy (prog/schedule.c)
 * ------------------------------------------------------------------------------------------- */

/* Dynamic loss scaling (as torch.cuda.amp.GradScaler): the loss gradient is multiplied by scale;
 * a step whose gradients are not all finite is skipped and halves the scale; `window` good steps
 * in a row double it (up to 2^64, so that the scale stays a finite float). */
typedef struct RtLossScaler {
  double scale;   /* initial 65536 */
  int64_t window; /* good steps before growing (2000) */
  int64_t good;   /* good steps since the scale last changed */
  int64_t skipped;/* steps skipped so far */
} RtLossScaler;
/* Records a step's outcome; returns 1 when its update should be applied, 0 to skip it. */
int rt_loss_scaler_update(RtLossScaler *s, int grads_finite);
/* The learning rate at step (1-based): linear warm-up from 0 over `warmup` steps, then cosine or
 * linear decay to min_lr at `steps`, or constant. */
double rt_lr_at(const RtTrainConfig *c, int64_t step);

#endif
