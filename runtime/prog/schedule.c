/* schedule.c: the training loop's step policy: the learning rate at each step (linear warm-up,
 * then cosine, linear or constant; docs/runtime.md, "Training") and dynamic loss scaling for fp16
 * (as torch.cuda.amp.GradScaler). The updates themselves are kernels (kernels/optim.c). */
#include <math.h>
#include <stdint.h>

#include "prog.h"

double rt_lr_at(const RtTrainConfig *c, int64_t step) {
  double lr = c->lr, min_lr = c->min_lr;
  if (step < 0) step = 0;
  if (c->warmup > 0 && step <= c->warmup) return lr * (double)step / (double)c->warmup;
  if (c->schedule == RT_SCHED_CONSTANT) return lr;
  int64_t span = c->steps - (c->warmup > 0 ? c->warmup : 0);
  if (span <= 0) return lr; /* all warm-up: the decay never starts */
  double p = (double)(step - (c->warmup > 0 ? c->warmup : 0)) / (double)span;
  if (p > 1.0) p = 1.0;
  if (p < 0.0) p = 0.0;
  if (c->schedule == RT_SCHED_LINEAR) return lr + (min_lr - lr) * p;
  return min_lr + 0.5 * (1.0 + cos(3.14159265358979323846 * p)) * (lr - min_lr);
}

int rt_loss_scaler_update(RtLossScaler *s, int grads_finite) {
  if (!grads_finite) {
    s->scale *= 0.5;
    s->good = 0;
    s->skipped++;
    return 0;
  }
  if (++s->good >= s->window) {
    if (s->scale < 0x1p64) s->scale *= 2.0; /* past 2^64 every fp16 gradient overflows: stop growing */
    s->good = 0;
  }
  return 1;
}
