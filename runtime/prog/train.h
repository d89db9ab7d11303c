/* train.h: the training loop's state (Trainer), shared by the files of PROG train inside prog/:
 * train.c (the loop, the train and grad verbs), checkpoint.c and report.c. They depend one way:
 * train.c calls checkpoint.c and report.c, which call nothing of train.c. */
#ifndef MODELC_RT_TRAIN_H
#define MODELC_RT_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "dist.h"
#include "prog.h"

/* One step of the history: for the CSV log and the SVG curve. */
typedef struct Hist {
  int64_t step;
  double loss, val_loss, val_bpb; /* val NAN when not measured */
} Hist;

/* A distilling program's step: the loss's KL and CE parts (RtModel.loss_parts 3), logged. */
typedef struct LossParts {
  double kl, ce;
} LossParts;

/* Data-parallel training (docs/training.md, "Data-parallel training"): how one step is split over
 * the ranks, and what this rank holds for it. Rank j computes the micro-batches [kfirst[j],
 * kfirst[j+1]) and owns the parameters [pfirst[j], pfirst[j+1]) (whole parameters, balanced by
 * elements), the floats [lo[j], lo[j] + cnt[j]) of the weight layout (padding included, so the
 * ranks' ranges tile it): it sums their gradients over the step's micro-batches in order, and
 * with --shard-optimizer keeps their optimiser state alone. */
typedef struct DistPlan {
  int64_t *kfirst;
  int *pfirst, *lo, *cnt;   /* nranks + 1, nranks, nranks */
  int *pcnt, *pdisp;        /* parameters per rank, first parameter: the clip norm's all-gather */
  int *rcnt, *rdisp;        /* report floats per rank, first report float (of rep) */
  float *G2;                /* the second gradient buffer: a micro-batch's is sent while the next computes */
  float *recv;              /* nmicro x cnt[rank]: each micro-batch's gradient of this rank's floats */
  double comm_s;            /* seconds in MPI waits and collectives this session */
  double sent, recvd;       /* bytes this rank sent and received in the last step */
} DistPlan;

typedef struct Trainer {
  const char *prog;
  const RtModel *m;
  RtTrainConfig c;
  int64_t steps, B, M, eval_every, ckpt_every, stop_at;
  int T;
  float *W, *G, *Gacc, *s1, *s2; /* s1: AdamW m or SGD momentum; s2: AdamW v */
  RtPrecision prec;              /* compiled into the train function (the precision pass) */
  float *Wh;                     /* bf16/fp16: the working weights, W rounded, that steps read */
  int wh_fresh;                  /* Wh holds W rounded: set by the first step's rounding, kept by
                                  * each update (rounding the parameters it changed) */
  RtLossScaler ls;               /* fp16: dynamic loss scaling (scale 1 otherwise) */
  char *arena;                   /* max(arena_bytes, train_arena_bytes): forward and train in turn */
  float *scratch, *logits;
  int32_t *ids, *tgt;
  int32_t *fix_ids, *fix_tgt;    /* --tokens/--targets: a fixed batch instead of --data windows */
  int64_t fix_rows, fix_next;    /* its rows, and the next row to use */
  int32_t *data;                 /* --data's ids: its bytes, or --tokenizer's encoding */
  double bytes_per_token;        /* --data's bytes over its ids (1 without --tokenizer): bits per byte */
  size_t ntrain, nval;
  RtRng rng;
  int64_t step; /* optimiser steps done */
  uint8_t **masks; /* the prune pass's masked parameters: 1 kept, 0 pruned (NULL: none); held after every
                    * update, recomputed on the schedule (RtTrainConfig.prune_*), kept in checkpoints */
  uint64_t dropout_seed; /* --seed of the run (kept in checkpoints): dropout masks derive from it */
  double elapsed0;
  LossParts parts;               /* the last step's, when the program distills */
  Hist *hist;
  int64_t nhist;
  char *log_path, *svg_path;
  FILE *log;
  /* segment memory (RtModel.memory > 0, training on --data): row r of a step reads stream r (the
   * training bytes cut in B), segment step mod the stream's segments; seg carries the B rows'
   * memory, seg_eval the validation's, seg_rows one micro-batch's slot pointers; mem_t0 is the t0
   * of the next step (0 at a stream's start, at a session's first step and with no_memory) */
  RtSegState seg, seg_eval;
  void **seg_rows;
  int mem_t0, no_memory;
  /* mixture of experts (RtModel.nmoe > 0): one train call's load reports (RtStep.moe_load), their
   * sums over this session's calls, the calls, and the last step's load-balancing loss (the sum
   * over layers, the mean over micro-batches: part of the step's loss) */
  float *moe_load;
  double *moe_run;
  int64_t moe_calls;
  double aux;
  float *rep;                    /* nmicro x (3 + moe load floats): each micro-batch's loss parts
                                  * and load report, summed in micro-batch order after the step */
  double *sq;                    /* each parameter's sum of squares (the clip norm, summed in order) */
  /* data parallelism (prog/dist.h): this process is rank `rank` of `nranks` (1: alone); s1 and s2
   * hold the floats [opt_lo, opt_lo + opt_n) of the weight layout (all of them unless the
   * optimiser state is sharded) */
  const RtDist *dist;
  int rank, nranks, shard;
  int64_t opt_lo, opt_n;
  DistPlan dp;
} Trainer;

/* The names the log, help and checkpoints use. */
static inline const char *rt_opt_name(RtOptimizer o) { return o == RT_OPT_SGD ? "sgd" : "adamw"; }
static inline const char *rt_prec_name(RtPrecision p) { return p == RT_PREC_BF16 ? "bf16" : p == RT_PREC_FP16 ? "fp16" : "fp32"; }

/* ---- checkpoint.c ---- */

/* Weights, optimiser state (s1, s2: in the weight layout, all of it), step, RNG and loss-scaling
 * state in one safetensors file. */
int rt_write_checkpoint(Trainer *t, const char *path, double elapsed, const float *s1, const float *s2,
                        RtError *err);
/* A checkpoint's metadata (see docs/runtime.md, "Checkpoints"), read and checked by rt_ckpt_read_meta. */
typedef struct RtCkptMeta {
  int64_t step, steps;                      /* steps done (<= 2^62 - 1), the run's total (0: not stored) */
  uint64_t rng_state, rng_inc, dropout_seed; /* rng_inc odd */
  int have_loss_scale;                      /* loss_scale stored (older checkpoints lack it) */
  double loss_scale;                        /* [1e-30, 1e30] */
  int64_t ls_good, ls_skipped;              /* ls_skipped <= step */
  double elapsed;                           /* seconds, [0, 1e15) */
  int64_t fix_next;                         /* the --tokens cursor, in [0, tokens_rows); 0 when not stored */
} RtCkptMeta;
/* The metadata value of key in src, or NULL. */
typedef const char *(*RtCkptMetaGet)(const void *src, const char *key);
/* Reads and checks a checkpoint's metadata (get(src, key)) against this run: the model's name, the
 * optimiser, the rows of its --tokens (0: none). 0 with *out filled, or -1 with a message that
 * names the field that is wrong (path is the file's name for it). Pure: reads no file. */
int rt_ckpt_read_meta(const char *path, RtCkptMetaGet get, const void *src, const char *model, RtOptimizer opt,
                      int64_t fix_rows, RtCkptMeta *out, RtError *err);
/* Loads a checkpoint into the trainer after checking it is one of this model's, with this
 * optimiser, holding every tensor with its exact shape (the optimiser state of the parameters
 * in t->s1/s2's range only); *ck_steps gets its --steps. */
int rt_load_checkpoint(Trainer *t, const char *path, int64_t *ck_steps, RtError *err);

/* ---- report.c ---- */

/* Opens the CSV log: fresh, or on resume the old one cut to the rows up to the resumed step. */
int rt_open_log(Trainer *t, int resumed, RtError *err);
/* 1 when a derived path may be written: nothing is there, or a file a run of ours wrote (a CSV
 * log starting with our header line; an SVG starting with <svg xmlns=... and holding
 * rt_svg_marker() in its first 1 KiB). */
int rt_log_replaceable(const char *path);
int rt_svg_replaceable(const char *path);
const char *rt_svg_marker(void);
/* The loss curve as a hand-written SVG next to the log. */
int rt_write_svg(const Trainer *t, RtError *err);
/* "w.safetensors" -> "w" + ext when path ends in strip; anything else -> path + ext (malloc'd). */
char *rt_with_ext(const char *path, const char *strip, const char *ext);
/* A duration for people: "42s", "3m07s", "2h05m", or "?". */
void rt_fmt_secs(char *buf, size_t n, double s);

#endif
