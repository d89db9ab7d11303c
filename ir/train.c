/* train.c: the module's training settings (TrainConfig): the table of its fields with their names,
 * kinds and allowed ranges, and the checks of a value against them.
 *
 * The spec checker (compiler/frontend/spec.c) reads a `train:` section and the IR parser reads a
 * `train {...}` line; both take their range rules and wording from this one table, so a .mir file
 * is held to exactly what its spec was held to. The printer writes the fields in table order.
 */
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "ir.h"

static const char *const sched_words[] = {"cosine", "constant", "linear"};
static const char *const opt_words[] = {"adamw", "sgd"};
static const char *const prec_words[] = {"fp32", "bf16", "fp16"};

#define TI(k, lo) {#k, TF_INT, lo, INT64_MAX, 0, 0, false, false, NULL, 0, offsetof(TrainConfig, k), false}
#define TR(k, lo, lo_open, hi, hi_open) {#k, TF_REAL, 0, 0, lo, hi, lo_open, hi_open, NULL, 0, offsetof(TrainConfig, k), false}
#define TE(k, w) {#k, TF_ENUM, 0, 0, 0, 0, false, false, w, (int)(sizeof w / sizeof *w), offsetof(TrainConfig, k), false}

const TrainField ir_train_fields[] = {
    TI(steps, 1),
    TI(batch, 1),
    TI(micro_batch, 1),
    TI(warmup, 0),
    TI(seed, 0),
    TI(eval_every, 0),
    TI(checkpoint_every, 0),
    TR(lr, 0, true, INFINITY, false),
    TR(min_lr, 0, false, INFINITY, false),
    TR(beta1, 0, false, 1, true),
    TR(beta2, 0, false, 1, true),
    TR(eps, 0, true, INFINITY, false),
    TR(weight_decay, 0, false, INFINITY, false),
    TR(momentum, 0, false, 1, true),
    TR(grad_clip, 0, false, INFINITY, false),
    TE(schedule, sched_words),
    TE(optimizer, opt_words),
    TE(precision, prec_words),
    {"data", TF_STR, 0, 0, 0, 0, false, false, NULL, 0, offsetof(TrainConfig, data), true},
    {"prune_initial", TF_REAL, 0, 0, 0, 1, false, true, NULL, 0, offsetof(TrainConfig, prune_initial), true},
    {"prune_start", TF_INT, 0, INT64_MAX, 0, 0, false, false, NULL, 0, offsetof(TrainConfig, prune_start), true},
    {"prune_end", TF_INT, 0, INT64_MAX, 0, 0, false, false, NULL, 0, offsetof(TrainConfig, prune_end), true},
    {"prune_every", TF_INT, 0, INT64_MAX, 0, 0, false, false, NULL, 0, offsetof(TrainConfig, prune_every), true},
    {"distill_temperature", TF_REAL, 0, 0, 0, INFINITY, true, false, NULL, 0, offsetof(TrainConfig, distill_temperature), true},
    {"distill_alpha", TF_REAL, 0, 0, 0, 1, false, false, NULL, 0, offsetof(TrainConfig, distill_alpha), true},
};
const int ir_train_nfields = (int)(sizeof ir_train_fields / sizeof *ir_train_fields);

_Static_assert(sizeof sched_words / sizeof *sched_words == TRAIN_SCHED_COUNT, "a name per schedule");
_Static_assert(sizeof opt_words / sizeof *opt_words == TRAIN_OPT_COUNT, "a name per optimizer");
_Static_assert(sizeof prec_words / sizeof *prec_words == TRAIN_PREC_COUNT, "a name per precision");

const TrainField *ir_train_field(const char *key) {
  for (int i = 0; key && i < ir_train_nfields; i++)
    if (strcmp(ir_train_fields[i].key, key) == 0) return &ir_train_fields[i];
  return NULL;
}

bool ir_train_field_present(const TrainConfig *t, const TrainField *f) {
  if (!f->optional) return true;
  if (f->kind == TF_STR) return *(const char *const *)((const char *)t + f->offset) != NULL;
  if (strncmp(f->key, "distill_", 8) == 0) return t->distill_temperature > 0;
  return t->prune_every > 0; /* the prune_ schedule */
}

bool ir_train_check_int(const TrainField *f, int64_t v, char *err, size_t n) {
  IR_ASSERT(f->kind == TF_INT);
  if (v >= f->ilo && v <= f->ihi) return true;
  if (v < f->ilo && f->ilo == 1) snprintf(err, n, "'%s' must be positive, got %" PRId64, f->key, v);
  else if (v < f->ilo) snprintf(err, n, "'%s' must be at least %" PRId64 ", got %" PRId64, f->key, f->ilo, v);
  else snprintf(err, n, "'%s' must be at most %" PRId64 ", got %" PRId64, f->key, f->ihi, v);
  return false;
}

bool ir_train_check_real(const TrainField *f, double v, char *err, size_t n) {
  IR_ASSERT(f->kind == TF_REAL);
  if (!isfinite(v)) {
    snprintf(err, n, "'%s' must be a finite number, got %g", f->key, v);
    return false;
  }
  bool ok = (f->lo_open ? v > f->lo : v >= f->lo) && (f->hi_open ? v < f->hi : v <= f->hi);
  if (ok) return true;
  if (isinf(f->hi))
    snprintf(err, n, "'%s' must be %s %g, got %g", f->key, f->lo_open ? "greater than" : "at least", f->lo, v);
  else
    snprintf(err, n, "'%s' must be in %c%g, %g%c, got %g", f->key, f->lo_open ? '(' : '[', f->lo, f->hi,
             f->hi_open ? ')' : ']', v);
  return false;
}

bool ir_train_check_relations(const TrainConfig *t, const char **key, char *err, size_t n) {
  if (t->micro_batch < 1 || t->batch % t->micro_batch != 0) {
    *key = "micro_batch";
    snprintf(err, n, "'micro_batch' (%lld) must divide the training 'batch' (%lld)", (long long)t->micro_batch,
             (long long)t->batch);
  } else if (t->min_lr > t->lr) {
    *key = "min_lr";
    snprintf(err, n, "'min_lr' (%g) must not exceed 'lr' (%g)", t->min_lr, t->lr);
  } else if (t->warmup > t->steps) {
    *key = "warmup";
    snprintf(err, n, "'warmup' (%lld) must not exceed 'steps' (%lld)", (long long)t->warmup, (long long)t->steps);
  } else if (t->prune_every > 0 && t->prune_end < t->prune_start) {
    *key = "prune_end";
    snprintf(err, n, "the pruning schedule's 'end' (%lld) must not come before its 'start' (%lld)",
             (long long)t->prune_end, (long long)t->prune_start);
  } else {
    return true;
  }
  return false;
}

_Static_assert(sizeof(TrainSchedule) == sizeof(int) && sizeof(TrainOptimizer) == sizeof(int) &&
                   sizeof(TrainPrecision) == sizeof(int),
               "the printer and parser access enum fields as int through the table's offsets");
