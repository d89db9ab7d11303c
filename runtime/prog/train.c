/* train.c: the train and grad verbs of generated programs (rt_main dispatches here; see
 * docs/runtime.md, "Training").
 *
 * train: seeded random windows of a byte file, gradient accumulation over micro-batches, clipping
 * by global norm, AdamW or SGD with the compiled schedule (prog/schedule.c), validation on the
 * held-out tail, checkpoints (weights + optimiser state + step + RNG state in one safetensors
 * file, resumed bit-exactly: prog/checkpoint.c), a CSV log of every step and an SVG loss curve
 * (prog/report.c). The trainer's state (Trainer) is in prog/train.h.
 * grad: one call of the model's train function on given tokens and targets, gradients written as
 * safetensors (the reference tests compare them with PyTorch's).
 *
 * Everything a user can get wrong is one line on stderr and exit status 1.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prog.h"
#include "train.h"

/* ---- the trainer ---- */

static void trainer_free(Trainer *t) {
  rt_masks_free(t->m, t->masks);
  free(t->W);
  free(t->Wh);
  free(t->G);
  free(t->Gacc);
  free(t->s1);
  free(t->s2);
  free(t->arena);
  free(t->scratch);
  free(t->logits);
  free(t->ids);
  free(t->tgt);
  free(t->data);
  free(t->fix_ids);
  free(t->fix_tgt);
  free(t->hist);
  free(t->log_path);
  free(t->svg_path);
  rt_seg_state_free(&t->seg);
  rt_seg_state_free(&t->seg_eval);
  free(t->seg_rows);
  free(t->moe_load);
  free(t->moe_run);
  free(t->rep);
  free(t->sq);
  free(t->dp.kfirst);
  free(t->dp.pfirst);
  free(t->dp.lo);
  free(t->dp.cnt);
  free(t->dp.pcnt);
  free(t->dp.pdisp);
  free(t->dp.rcnt);
  free(t->dp.rdisp);
  free(t->dp.G2);
  free(t->dp.recv);
  if (t->log) fclose(t->log);
}

/* Floats of a train call's moe load reports (RtStep.moe_load). */
static size_t moe_load_floats(const RtModel *m) {
  size_t n = 0;
  for (int i = 0; i < m->nmoe; i++) n += (size_t)m->moe_experts[i] + 2;
  return n;
}

/* The load reports (per moe layer: its aux loss, dropped pairs, pairs per expert; each value
 * divided by `calls`), one line a layer: "moe layer 0: aux 0.0101, pairs per expert 130 126 ...,
 * dropped 4 of 512 (0.8%)". */
static void moe_print(FILE *f, const RtModel *m, const double *load, double calls, int64_t pairs) {
  size_t off = 0;
  for (int i = 0; i < m->nmoe; i++) {
    int E = m->moe_experts[i];
    fprintf(f, "moe layer %d: aux %.6g, pairs per expert", i, load[off] / calls);
    for (int e = 0; e < E; e++) fprintf(f, " %.6g", load[off + 2 + e] / calls);
    double dropped = load[off + 1] / calls;
    fprintf(f, ", dropped %.6g of %lld (%.1f%%)\n", dropped, (long long)pairs, pairs ? 100.0 * dropped / (double)pairs : 0.0);
    off += (size_t)E + 2;
  }
}

/* The (token, choice) pairs of one call of nb rows: nb T top_k; top_k is what the report's counts
 * sum to (dropped + ran = N K), so it is read from the first report. */
static int64_t moe_pairs(const RtModel *m, const float *load) {
  if (!m->nmoe) return 0;
  double n = load[1];
  for (int e = 0; e < m->moe_experts[0]; e++) n += load[2 + e];
  return (int64_t)(n + 0.5);
}

/* One window per row: context+1 bytes at a random offset of the training part (or the next rows
 * of the fixed batch, cycling). */
static void draw_rows(Trainer *t, int rows) {
  if (t->fix_ids) {
    int per = t->m->out_per_token ? t->T : 1; /* targets per row: every position, or one class */
    for (int r = 0; r < rows; r++, t->fix_next = (t->fix_next + 1) % t->fix_rows) {
      memcpy(t->ids + (size_t)r * t->T, t->fix_ids + t->fix_next * t->T, (size_t)t->T * sizeof(int32_t));
      memcpy(t->tgt + (size_t)r * per, t->fix_tgt + t->fix_next * per, (size_t)per * sizeof(int32_t));
    }
    return;
  }
  size_t range = t->ntrain - (size_t)t->T; /* offsets 0 .. ntrain-T-1 */
  for (int r = 0; r < rows; r++) {
    uint64_t x = rt_rng_u32(&t->rng);
    if ((uint64_t)range > 0xffffffffull) x = (x << 32) | rt_rng_u32(&t->rng);
    const int32_t *w = t->data + (size_t)(x % (uint64_t)range);
    for (int i = 0; i < t->T; i++) {
      t->ids[r * t->T + i] = w[i];
      t->tgt[r * t->T + i] = w[i + 1];
    }
  }
}

/* Segment memory: the rows row0.. of micro-batch rows read the step's segment of their streams
 * (stream r = training bytes [r S, (r+1) S), S = ntrain / B; segment j = step mod (S-1)/T). */
static void draw_segments(Trainer *t, int row0, int rows) {
  size_t S = t->ntrain / (size_t)t->B, J = (S - 1) / (size_t)t->T, j = (size_t)t->step % J;
  for (int r = 0; r < rows; r++) {
    const int32_t *w = t->data + (size_t)(row0 + r) * S + j * (size_t)t->T;
    for (int i = 0; i < t->T; i++) {
      t->ids[r * t->T + i] = w[i];
      t->tgt[r * t->T + i] = w[i + 1];
    }
  }
}

/* Mean next-byte loss (nats) over the held-out tail, windows of the context, batches up to the
 * compiled batch (a shorter last window goes alone); a segment-memory model reads it as streams
 * with the memory carried (segments.c). */
static double evaluate(Trainer *t) {
  const RtModel *m = t->m;
  if (m->memory && t->seg_eval.slot) {
    size_t count = 0;
    RtError e;
    return rt_seg_stream_loss(m, t->arena, t->W, t->scratch, &t->seg_eval, t->data + t->ntrain, t->nval, t->no_memory,
                              &count, &e);
  }
  const int32_t *buf = t->data + t->ntrain;
  size_t n = t->nval, pos = 0, count = 0;
  int B = (int)m->batch, T = t->T;
  double total = 0;
  while (pos + 1 < n) {
    int nb = 0, nt = T;
    size_t left = n - 1 - pos;
    if (left < (size_t)T) nt = (int)left;
    if (m->time_multiple > 1) nt -= nt % m->time_multiple; /* a pooled sequence: whole groups only */
    if (nt == 0) break;
    for (; nb < B && pos + 1 < n && n - 1 - pos >= (size_t)nt; nb++) {
      for (int i = 0; i < nt; i++) {
        t->ids[nb * nt + i] = buf[pos + (size_t)i];
        t->tgt[nb * nt + i] = buf[pos + (size_t)i + 1];
      }
      pos += (size_t)nt;
    }
    RtStep s = {nb, nt, 0, NULL, t->scratch, 0, 0.0f, NULL};
    m->forward(&s, t->arena, t->W, t->ids, t->logits);
    for (int i = 0; i < nb * nt; i++, count++) total += rt_token_nll(t->logits + (size_t)i * (size_t)m->vocab, m->vocab, t->tgt[i]);
  }
  return count ? total / (double)count : NAN;
}

/* Floats of one train call's report in Trainer.rep: its loss parts, then its moe load. */
static size_t report_floats(const RtModel *m) { return 3 + moe_load_floats(m); }

/* The rank that computes micro-batch k (DistPlan.kfirst). */
static int micro_owner(const Trainer *t, int64_t k) {
  int j = 0;
  while (t->dp.kfirst[j + 1] <= k) j++;
  return j;
}

/* One optimiser step (t->step + 1): B/M train calls, averaged, clipped, applied. Returns the loss.
 * Over several ranks (t->nranks > 1) each computes its own micro-batches (every rank draws them
 * all, so the data stream is one process's) and sends each gradient's slices to their owners as
 * soon as it is made; an owner sums its slice over the micro-batches in their order, scales and
 * clips it as one process does (the norm from every parameter's sum of squares, added in parameter
 * order) and the update follows: the same operations on the same numbers as one process, so the
 * same bytes (docs/training.md, "Data-parallel training"). */
static double train_step(Trainer *t, double lr) {
  const RtModel *m = t->m;
  DistPlan *d = t->nranks > 1 ? &t->dp : NULL;
  const RtDist *x = t->dist;
  int me = t->rank;
  int64_t nmicro = t->B / t->M;
  size_t R = report_floats(m);
  double loss = 0, kl = 0, ce = 0;
  float *g = nmicro > 1 || d ? t->Gacc : t->G;
  const float *W = t->W;
  if (t->Wh) { /* mixed precision: the step reads the master weights rounded to 16 bits, made
                 * here once, then kept up to date by each update (train.h, Trainer.wh_fresh) */
    if (!t->wh_fresh) rt_round_weights(t->Wh, t->W, rt_weight_floats(m), t->prec);
    t->wh_fresh = 1;
    W = t->Wh;
  }
  int segs = t->seg.slot != NULL; /* segment memory: consecutive segments of B streams */
  if (segs && (size_t)t->step % ((t->ntrain / (size_t)t->B - 1) / (size_t)t->T) == 0) t->mem_t0 = 0; /* a stream's start */
  int64_t k0 = d ? d->kfirst[me] : 0, k1 = d ? d->kfirst[me + 1] : nmicro;
  int mine = d ? d->cnt[me] : 0; /* floats of the gradient this rank sums */
  double c0 = 0;
  if (d) { /* this step's slices of the others' micro-batches, tagged by micro-batch */
    d->sent = d->recvd = 0;
    for (int64_t k = 0; k < nmicro && mine > 0; k++)
      if (k < k0 || k >= k1) {
        x->post(2, 0, d->recv + k * mine, mine, micro_owner(t, k), (int)k);
        d->recvd += 4.0 * mine;
      }
  }
  for (int64_t k = 0; k < nmicro; k++) {
    int own = k >= k0 && k < k1;
    if (segs) {
      if (own) draw_segments(t, (int)(k * t->M), (int)t->M);
    } else {
      draw_rows(t, (int)t->M); /* every rank draws every micro-batch: one data stream */
    }
    if (!own) continue;
    /* dropout masks: a seed per (step, micro-batch) derived from the run's stream constant (set by
     * --seed, kept in checkpoints), not drawn from the data stream, so the windows do not depend
     * on M; never 0, which means inference */
    uint64_t seed = rt_mix(t->dropout_seed, ((uint64_t)(t->step + 1) << 20) | (uint64_t)k) | 1;
    RtStep s = {(int)t->M, t->T, 0, NULL, t->scratch, seed, (float)t->ls.scale, t->moe_load};
    if (segs) {
      rt_seg_state_rows(&t->seg, m, (int)(k * t->M), t->seg_rows);
      s.state = t->seg_rows, s.t0 = t->mem_t0;
    }
    float *G = t->G;
    if (d) { /* two gradient buffers: the one two micro-batches back may still be on its way */
      int b = (int)((k - k0) & 1);
      G = b ? d->G2 : t->G;
      if (k - k0 >= 2) {
        double w0 = rt_now_seconds();
        x->wait(b);
        c0 += rt_now_seconds() - w0;
      }
    }
    float l[3] = {0, 0, 0}; /* the loss, and a distilling program's KL and CE parts */
    m->train(&s, t->arena, W, t->ids, t->tgt, l, G);
    float *rep = t->rep + (size_t)k * R;
    memcpy(rep, l, sizeof l);
    if (m->nmoe) memcpy(rep + 3, t->moe_load, moe_load_floats(m) * sizeof(float));
    if (d) {
      for (int j = 0; j < t->nranks; j++)
        if (j != me && d->cnt[j] > 0) {
          x->post((int)((k - k0) & 1), 1, G + d->lo[j], d->cnt[j], j, (int)k);
          d->sent += 4.0 * d->cnt[j];
        }
      memcpy(d->recv + k * mine, G + d->lo[me], (size_t)mine * sizeof(float));
    } else if (nmicro > 1) {
      for (int i = 0; i < m->nparams; i++) {
        const RtParamInfo *p = &m->params[i];
        float *a = t->Gacc + rt_param_f32_index(p);
        const float *b = t->G + rt_param_f32_index(p);
        int64_t n = rt_param_numel(p);
        if (k == 0) memcpy(a, b, (size_t)n * sizeof(float));
        else
          for (int64_t j = 0; j < n; j++) a[j] += b[j];
      }
    }
  }
  int p0 = d ? d->pfirst[me] : 0, p1 = d ? d->pfirst[me + 1] : m->nparams; /* the parameters this rank sums */
  if (d) {
    double w0 = rt_now_seconds();
    for (int grp = 0; grp < RT_DIST_GROUPS; grp++) x->wait(grp);
    x->allgatherv_f32(t->rep, d->rcnt, d->rdisp); /* every micro-batch's report, for the sums below */
    c0 += rt_now_seconds() - w0;
    d->recvd += 4.0 * (double)(nmicro * (int64_t)R - d->rcnt[me]);
    /* this rank's slice summed over the micro-batches in their order, as one process sums them */
    for (int i = p0; i < p1; i++) {
      const RtParamInfo *p = &m->params[i];
      int64_t o = rt_param_f32_index(p), n = rt_param_numel(p);
      float *a = t->Gacc + o;
      for (int64_t k = 0; k < nmicro; k++) {
        const float *b = d->recv + k * mine + (o - d->lo[me]);
        if (k == 0) memcpy(a, b, (size_t)n * sizeof(float));
        else
          for (int64_t j = 0; j < n; j++) a[j] += b[j];
      }
    }
  }
  for (int64_t k = 0; k < nmicro; k++) { /* the reports, in micro-batch order */
    const float *rep = t->rep + (size_t)k * R;
    loss += rep[0], kl += rep[1], ce += rep[2];
    if (m->nmoe) { /* the load reports: the step's aux loss, the session's sums */
      const float *load = rep + 3;
      if (k == 0) t->aux = 0;
      size_t off = 0;
      for (int i = 0; i < m->nmoe; i++) {
        t->aux += load[off] / (double)nmicro;
        off += (size_t)m->moe_experts[i] + 2;
      }
      for (size_t j = 0; j < off; j++) t->moe_run[j] += load[j];
      t->moe_calls++;
      if (k == nmicro - 1) memcpy(t->moe_load, load, off * sizeof(float)); /* the last call's, as one process has it */
    }
  }
  loss /= (double)nmicro;
  t->parts = (LossParts){kl / (double)nmicro, ce / (double)nmicro};
  /* the next segment continues the memory (a t0 that int holds; past it the streams restart it) */
  if (segs) t->mem_t0 = t->no_memory || t->mem_t0 > 0x3fffffff ? 0 : t->mem_t0 + t->T;
  int64_t step = t->step + 1;
  double unscale = 1.0; /* the gradients carry the loss scale this step used */
  if (t->prec == RT_PREC_FP16) { /* dynamic loss scaling: skip the update on inf/nan gradients */
    int finite = 1;
    for (int i = p0; i < p1 && finite; i++)
      finite = rt_all_finite(g + rt_param_f32_index(&m->params[i]), rt_param_numel(&m->params[i]));
    if (d) {
      double w0 = rt_now_seconds();
      finite = x->all_and(finite);
      c0 += rt_now_seconds() - w0;
    }
    unscale = 1.0 / t->ls.scale;
    if (!rt_loss_scaler_update(&t->ls, finite)) {
      t->step = step;
      if (d) d->comm_s += c0;
      return loss;
    }
  }
  double norm2 = 0;
  float scale = (float)(unscale / (double)nmicro);
  if (scale != 1.0f)
    for (int i = p0; i < p1; i++) {
      const RtParamInfo *p = &m->params[i];
      float *a = g + rt_param_f32_index(p);
      int64_t n = rt_param_numel(p);
      for (int64_t j = 0; j < n; j++) a[j] *= scale;
    }
  if (t->c.grad_clip > 0) {
    for (int i = p0; i < p1; i++)
      t->sq[i] = rt_sum_squares(g + rt_param_f32_index(&m->params[i]), rt_param_numel(&m->params[i]));
    if (d) {
      double w0 = rt_now_seconds();
      x->allgatherv_f64(t->sq, d->pcnt, d->pdisp);
      c0 += rt_now_seconds() - w0;
      d->recvd += 8.0 * (m->nparams - d->pcnt[me]);
    }
    for (int i = 0; i < m->nparams; i++) norm2 += t->sq[i]; /* in parameter order, on every rank */
    /* as torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1 */
    double coef = t->c.grad_clip / (sqrt(norm2) + 1e-6);
    if (coef < 1.0)
      for (int i = p0; i < p1; i++)
        rt_scale(g + rt_param_f32_index(&m->params[i]), rt_param_numel(&m->params[i]), (float)coef);
  }
  int u0 = 0, u1 = m->nparams; /* the parameters this rank updates */
  if (d && t->shard) {
    u0 = p0, u1 = p1;
  } else if (d) { /* every rank applies the whole update: it needs the whole gradient */
    double w0 = rt_now_seconds();
    x->allgatherv_f32(g, d->cnt, d->lo);
    c0 += rt_now_seconds() - w0;
    d->recvd += 4.0 * (double)(rt_weight_floats(m) - mine);
  }
  int64_t opt_step = step - t->ls.skipped; /* AdamW's bias correction counts applied updates */
  for (int i = u0; i < u1; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!p->trainable) continue; /* frozen: no gradient, no update, no decay */
    int64_t o = rt_param_f32_index(p), n = rt_param_numel(p), so = o - t->opt_lo;
    float wd = p->decay ? (float)t->c.weight_decay : 0.0f;
    float *wh = t->Wh && t->prec == RT_PREC_BF16 ? t->Wh + o : NULL; /* AdamW refreshes it in its pass */
    if (t->c.optimizer == RT_OPT_SGD)
      rt_sgd(t->W + o, g + o, t->s1 + so, n, (float)lr, (float)t->c.momentum, wd);
    else
      rt_adamw_bf16(t->W + o, wh, g + o, t->s1 + so, t->s2 + so, n, (float)lr, (float)t->c.beta1, (float)t->c.beta2,
                    (float)t->c.eps, wd, opt_step);
    if (t->Wh && (t->c.optimizer == RT_OPT_SGD || !wh)) rt_round_weights(t->Wh + o, t->W + o, n, t->prec);
  }
  if (d && t->shard) { /* ZeRO-1: the updated parameters from their owners; the 16-bit copies made here */
    double w0 = rt_now_seconds();
    x->allgatherv_f32(t->W, d->cnt, d->lo);
    c0 += rt_now_seconds() - w0;
    d->recvd += 4.0 * (double)(rt_weight_floats(m) - mine);
    for (int i = 0; i < m->nparams && t->Wh; i++) {
      const RtParamInfo *p = &m->params[i];
      if ((i < p0 || i >= p1) && p->trainable)
        rt_round_weights(t->Wh + rt_param_f32_index(p), t->W + rt_param_f32_index(p), rt_param_numel(p), t->prec);
    }
  }
  if (d) d->comm_s += c0;
  t->step = step;
  if (t->masks) { /* pruning: the masks held after the update, recomputed when the schedule says */
    if (t->c.prune_every > 0 && rt_prune_schedule_due(step, t->c.prune_start, t->c.prune_end, t->c.prune_every)) {
      RtError e;
      if (rt_masks_compute(m, t->W, t->masks, &t->c, step, &e)) return NAN; /* out of memory */
    } else {
      rt_masks_apply(m, t->W, t->masks);
    }
    t->wh_fresh = 0;
  }
  return loss;
}

/* ---- train ---- */

static void train_help(const char *prog, const RtModel *m) {
  const RtTrainConfig *c = &m->train_config;
  printf("usage: %s train --data FILE --out W.safetensors [--weights INIT | --resume CKPT] [--steps N]\n"
         "       [--batch B] [--micro-batch M] [--lr LR] [--seed S] [--eval-every K]\n"
         "       [--checkpoint PATH] [--checkpoint-every K] [--stop-at K] [--log FILE.csv] [--threads N]\n"
         "       [--optimizer adamw|sgd] [--schedule cosine|linear|constant] [--warmup N] [--min-lr X]\n"
         "       [--weight-decay X] [--grad-clip X] [--beta1 X] [--beta2 X] [--momentum X]\n"
         "       [--tokens T.npy --targets Y.npy]   (a fixed batch every step instead of --data)\n"
         "       [--loss-scale S] [--loss-scale-window N]   (fp16 programs: initial 65536, window 2000)\n"
         "       [--teacher-weights T.safetensors]   (a distilling program: its teacher's weights, required)\n\n"
         "       [--tokenizer FILE]   (train on FILE's tokens: llama2.c tokenizer.bin, GPT-2 BPE)\n"
         "       [--shard-optimizer]   (under mpirun: each process keeps its parameters' optimiser state)\n\n"
         "Train on the bytes of FILE (byte-level vocabulary). The last 10%% of FILE (at least context+1\n"
         "bytes) is held out for validation. Each step draws B windows of context+1 bytes at random\n"
         "offsets (PCG32 seeded by --seed) and averages the gradients of B/M micro-batches of M rows\n"
         "(M <= %lld, the compiled batch), clips them by global norm, then applies %s with the %s\n"
         "schedule. Without --weights or --resume, the weights are initialised like 'init --seed S'.\n"
         "--eval-every K measures the validation loss and bits per byte every K steps (0: never).\n"
         "--checkpoint PATH saves weights, optimiser state, step and RNG state every\n"
         "--checkpoint-every K steps and at the end; --resume CKPT continues such a run bit-exactly up\n"
         "to --steps (default: the checkpoint's). --stop-at K ends this session after step K (the\n"
         "schedule still runs to --steps). Writes the final weights to --out, a CSV of every step to\n"
         "--log (default OUT.csv next to --out) and the loss curve next to it (.svg).\n"
         "Over MPI (a program built with 'modelc build --mpi', started by 'mpirun -np N'), each process\n"
         "computes B/M/N of the micro-batches and the run ends with the one-process bytes (rank 0 writes).\n"
         "Mixed precision is compiled in (train: precision, the precision pass): this program trains\n"
         "in %s.\n"
         "Defaults (from the spec): steps %lld, batch %lld, micro-batch %lld, lr %g, seed %lld,\n"
         "eval-every %lld, checkpoint-every %lld.\n",
         prog, (long long)m->batch, rt_opt_name(c->optimizer),
         c->schedule == RT_SCHED_COSINE ? "cosine" : c->schedule == RT_SCHED_LINEAR ? "linear" : "constant",
         rt_prec_name(m->train_precision), (long long)c->steps, (long long)c->batch, (long long)c->micro_batch, c->lr, (long long)c->seed,
         (long long)c->eval_every, (long long)c->checkpoint_every);
}

/* The compiled configuration with the values 0 cannot mean replaced by the spec's defaults. */
static RtTrainConfig effective_config(const RtModel *m) {
  RtTrainConfig c = m->train_config;
  if (c.steps <= 0) c.steps = 1000;
  if (c.batch <= 0) c.batch = m->batch;
  if (c.micro_batch <= 0) c.micro_batch = c.batch < m->batch ? c.batch : m->batch;
  if (!(c.lr > 0)) c.lr = 6e-4;
  if (!(c.eps > 0)) c.eps = 1e-8;
  if (c.seed < 0) c.seed = 1337;
  return c;
}

static int read_targets(const RtModel *m, const char *path, int B, int T, int32_t **out, RtError *err);

/* The split of a step over t->nranks ranks (train.h, DistPlan): micro-batches in blocks, whole
 * parameters balanced by elements; -1 with a message when out of memory. */
static int dist_plan(Trainer *t, RtError *err) {
  const RtModel *m = t->m;
  DistPlan *d = &t->dp;
  int N = t->nranks, P = m->nparams;
  int64_t nmicro = t->B / t->M, total = 0;
  d->kfirst = calloc((size_t)N + 1, sizeof *d->kfirst);
  d->pfirst = calloc((size_t)N + 1, sizeof *d->pfirst);
  d->lo = calloc((size_t)N, sizeof(int)), d->cnt = calloc((size_t)N, sizeof(int));
  d->pcnt = calloc((size_t)N, sizeof(int)), d->pdisp = calloc((size_t)N, sizeof(int));
  d->rcnt = calloc((size_t)N, sizeof(int)), d->rdisp = calloc((size_t)N, sizeof(int));
  if (!d->kfirst || !d->pfirst || !d->lo || !d->cnt || !d->pcnt || !d->pdisp || !d->rcnt || !d->rdisp)
    return rt_fail(err, "out of memory");
  for (int j = 0; j <= N; j++) d->kfirst[j] = nmicro * j / N;
  for (int i = 0; i < P; i++) total += rt_param_numel(&m->params[i]);
  /* rank j's parameters end at the cut nearest to (j+1)/N of the elements: a parameter joins it
   * while the running count with it is no farther from that than without it */
  int64_t run = 0;
  for (int j = 0, i = 0; j < N; j++) {
    d->pfirst[j] = i;
    while (i < P && (j == N - 1 || (2 * run + rt_param_numel(&m->params[i])) * N <= 2 * total * (j + 1)))
      run += rt_param_numel(&m->params[i++]);
  }
  d->pfirst[N] = P;
  int64_t R = (int64_t)report_floats(m);
  for (int j = 0; j < N; j++) {
    int a = d->pfirst[j], b = d->pfirst[j + 1];
    int64_t lo = a == 0 ? 0 : a < P ? rt_param_f32_index(&m->params[a]) : rt_weight_floats(m);
    int64_t hi = b < P ? rt_param_f32_index(&m->params[b]) : rt_weight_floats(m);
    if (a == P) lo = hi = rt_weight_floats(m);
    d->lo[j] = (int)lo, d->cnt[j] = (int)(hi - lo);
    d->pcnt[j] = b - a, d->pdisp[j] = a;
    d->rcnt[j] = (int)((d->kfirst[j + 1] - d->kfirst[j]) * R), d->rdisp[j] = (int)(d->kfirst[j] * R);
  }
  d->G2 = rt_xalloc((size_t)rt_weight_floats(m) * sizeof(float));
  d->recv = rt_xalloc((size_t)nmicro * (size_t)d->cnt[t->rank] * sizeof(float));
  if (!d->G2 || !d->recv) return rt_fail(err, "out of memory allocating the data-parallel buffers");
  return 0;
}

/* Every rank's verdict on its setup, once, before the first step: 0 when every rank is ready to
 * train. Otherwise rank 0 says why (the first failing rank's message, which a rank other than 0
 * captured: rt_dist_quiet_begin) and every rank ends. */
static int dist_agree(const RtDist *x, const char *prog, int ready, int failed, const char *said) {
  int N = x->size(), me = x->rank();
  int who = x->all_min(failed ? me : N), all_ready = x->all_and(ready);
  if (who < N) {
    if (who != 0) {
      char msg[1024] = "";
      if (me == who) snprintf(msg, sizeof msg, "%s", said);
      x->bcast(msg, sizeof msg, who);
      if (me == 0) fprintf(stderr, "%s train: rank %d of %d failed while setting up:\n%s", prog, who, N, msg);
    }
    return 1;
  }
  if (!all_ready && ready)
    fprintf(stderr, "%s train: error: rank %d: another rank stopped before training (were the ranks given the "
                    "same arguments?)\n", prog, me);
  return !all_ready;
}

/* rank 0's outcome rc of a step only it took (writing files), on every rank. */
static int dist_status(const Trainer *t, int rc) {
  if (t->nranks > 1) t->dist->bcast(&rc, sizeof rc, 0);
  return rc;
}

/* A checkpoint, written by rank 0 (with a sharded optimiser the moments gathered to it first, so
 * that the file is one process's); every rank calls it and gets rank 0's outcome. */
static int save_checkpoint(Trainer *t, const char *path, double elapsed, RtError *err) {
  const float *s1 = t->s1, *s2 = t->s2;
  float *f1 = NULL, *f2 = NULL;
  int rc = 0;
  if (t->nranks > 1 && t->shard) {
    size_t wb = (size_t)rt_weight_floats(t->m) * sizeof(float);
    if (t->rank == 0 && (!(f1 = rt_xalloc(wb)) || (t->s2 && !(f2 = rt_xalloc(wb))))) {
      fprintf(stderr, "%s: error: out of memory gathering the optimiser state for %s\n", t->prog, path);
      t->dist->abort(EXIT_USER); /* the others are in the gather */
    }
    t->dist->gatherv_f32(t->s1, f1, t->dp.cnt, t->dp.lo, 0);
    if (t->s2) t->dist->gatherv_f32(t->s2, f2, t->dp.cnt, t->dp.lo, 0);
    s1 = f1, s2 = f2;
  }
  if (t->rank == 0) rc = rt_write_checkpoint(t, path, elapsed, s1, s2, err);
  free(f1);
  free(f2);
  return dist_status(t, rc);
}

static int train_main(const char *prog, int argc, char **argv, const RtModel *m, int *agreed) {
  RtOpts o;
  int help = 0;
  if (rt_parse_opts(prog, "train", argc, argv,
                 "--data --weights --out --steps --stop-at --batch --micro-batch --lr --seed --eval-every "
                 "--checkpoint --checkpoint-every --resume --log --threads --tokens --targets --min-lr "
                 "--weight-decay --grad-clip --beta1 --beta2 --momentum --warmup --schedule --optimizer --loss-scale "
                 "--loss-scale-window --teacher-weights --no-memory --tokenizer --shard-optimizer",
                 &o, &help))
    return EXIT_USER;
  if (help) {
    train_help(prog, m);
    return EXIT_OK;
  }
  if (!m->train)
    return rt_usage_error(prog, "train", "this program was built without training support (add the autodiff pass)");
  if (!o.tokens && !m->out_per_token)
    return rt_usage_error(prog, "train", "training a classifier (one output per sequence) on raw bytes is not "
                                      "supported yet; give labelled batches with --tokens and --targets");
  if (!o.tokens && (m->out_dim != m->vocab || (!o.tokenizer && m->vocab < RT_BYTE_VOCAB)))
    return rt_usage_error(prog, "train", "training on bytes needs a language model with a vocabulary of at least 256 "
                                         "(or give --tokenizer)");
  if (o.tokenizer && !o.data && o.tokens)
    return rt_usage_error(prog, "train", "--tokenizer applies to --data's text; --tokens are ids already");
  Trainer t;
  memset(&t, 0, sizeof t);
  t.prog = prog;
  t.m = m;
  t.c = effective_config(m);
  t.T = (int)m->context;
  t.prec = m->train_precision;
  t.ls = (RtLossScaler){.scale = 1.0, .window = 2000};
  t.bytes_per_token = 1;
  if (t.prec == RT_PREC_FP16) t.ls.scale = 65536.0; /* torch.cuda.amp.GradScaler's defaults */
  if (o.have_loss_scale || o.have_scale_window) {
    if (t.prec != RT_PREC_FP16)
      return rt_usage_error(prog, "train", "--loss-scale and --loss-scale-window apply to fp16 training; this program "
                                           "trains in %s", rt_prec_name(t.prec));
    if (o.have_loss_scale) t.ls.scale = o.loss_scale;
    if (o.have_scale_window) t.ls.window = o.scale_window;
  }
  const char *data = o.data ? o.data : o.tokens ? NULL : t.c.data;
  if (!data && !o.tokens) return rt_usage_error(prog, "train", "--data FILE (or --tokens and --targets) is required");
  if (o.no_memory && !m->memory) return rt_usage_error(prog, "train", "--no-memory: this model keeps no segment memory");
  if (!o.tokens != !o.targets) return rt_usage_error(prog, "train", "--tokens and --targets go together");
  RtError ferr;
  if (o.tokens) { /* a fixed batch: every step trains on these rows */
    int fb = 0, ft = 0;
    if (rt_prog_read_tokens(m, o.tokens, &t.fix_ids, &fb, &ft, &ferr) ||
        read_targets(m, o.targets, fb, ft, &t.fix_tgt, &ferr)) {
      fprintf(stderr, "%s: error: %s\n", prog, ferr.msg);
      trainer_free(&t);
      return EXIT_USER;
    }
    t.fix_rows = fb;
    if (ft > m->context) { /* segment memory reads longer rows (forward, grad); training rows are one segment */
      free(t.fix_ids), free(t.fix_tgt), t.fix_ids = NULL, t.fix_tgt = NULL;
      return rt_usage_error(prog, "train", "--tokens rows of %d tokens exceed the context %lld: train --tokens takes "
                            "rows of at most one segment (the memory is not carried; give --data)", ft,
                            (long long)m->context);
    }
    t.T = ft;
    if (!o.have_batch) o.batch = fb, o.have_batch = 1;
    if (!o.have_micro && o.batch <= m->batch) o.micro = o.batch, o.have_micro = 1;
    if (!data) o.eval_every = 0, o.have_eval = 1; /* nothing held out */
  }
  if (!o.out) return trainer_free(&t), rt_usage_error(prog, "train", "--out W.safetensors is required");
  if (m->teacher_prefix && !o.teacher_weights)
    return trainer_free(&t), rt_usage_error(prog, "train", "this program distills from a teacher: --teacher-weights "
                                            "T.safetensors is required (the teacher's trained weights)");
  if (!m->teacher_prefix && o.teacher_weights)
    return trainer_free(&t), rt_usage_error(prog, "train", "--teacher-weights: this program does not distill (its "
                                            "spec has no train: distill:)");
  if (o.resume && o.weights) return trainer_free(&t), rt_usage_error(prog, "train", "--resume and --weights exclude each other");
  if (o.have_ckpt_every && o.ckpt_every > 0 && !o.checkpoint)
    return trainer_free(&t), rt_usage_error(prog, "train", "--checkpoint-every needs --checkpoint PATH");
  /* What the run writes, checked against what it reads before anything is read or written: the
   * CSV log (--log, or next to --out) and the SVG curve next to the log are outputs too. */
  t.log_path = o.log ? strdup(o.log) : rt_with_ext(o.out, ".safetensors", ".csv");
  t.svg_path = t.log_path ? rt_with_ext(t.log_path, ".csv", ".svg") : NULL;
  if (!t.log_path || !t.svg_path) return trainer_free(&t), rt_usage_error(prog, "train", "out of memory");
  const char *log_what = o.log ? "--log" : "the CSV log next to --out";
  const char *svg_hint = "name another log with --log FILE (the curve goes next to it, as .svg)";
  const RtPathArg outs[] = {{"--out", o.out, "name another --out", NULL},
                            {"--checkpoint", o.checkpoint, "name another --checkpoint", "--resume"},
                            {log_what, t.log_path, "name another with --log FILE", NULL},
                            {"the SVG loss curve next to the log", t.svg_path, svg_hint, NULL}};
  const RtPathArg ins[] = {{o.data ? "--data" : "the spec's train: data", data, NULL, NULL},
                           {"--weights", o.weights, NULL, NULL},
                           {"--resume", o.resume, NULL, NULL},
                           {"--tokens", o.tokens, NULL, NULL},
                           {"--targets", o.targets, NULL, NULL},
                           {"--teacher-weights", o.teacher_weights, NULL, NULL}};
  if (rt_check_outputs(prog, "train", outs, 4, ins, 6)) return trainer_free(&t), EXIT_USER;
  /* A derived path replaces only a file of ours: never something the user keeps there. */
  int clash = 0;
  if (!o.log && !rt_log_replaceable(t.log_path))
    clash = rt_usage_error(prog, "train", "the CSV log next to --out, '%s', exists and is not a log of ours (no "
                           "'step,lr,loss,...' header): not overwriting it; name another with --log FILE, or "
                           "remove it", t.log_path);
  else if (!rt_svg_replaceable(t.svg_path))
    clash = rt_usage_error(prog, "train", "the SVG loss curve next to the log, '%s', exists and is not a curve of "
                           "ours (no %s): not overwriting it; %s, or remove it", t.svg_path, rt_svg_marker(),
                           svg_hint);
  if (clash) return trainer_free(&t), EXIT_USER;
  t.B = o.have_batch ? o.batch : t.c.batch;
  if (o.have_micro) {
    t.M = o.micro;
  } else if (t.B % t.c.micro_batch == 0 && t.c.micro_batch <= m->batch) {
    t.M = t.c.micro_batch;
  } else {
    for (t.M = t.B < m->batch ? t.B : m->batch; t.B % t.M; t.M--) {
    }
  }
  if (t.M > m->batch)
    return trainer_free(&t), rt_usage_error(prog, "train", "--micro-batch %lld exceeds the compiled batch %lld", (long long)t.M,
                       (long long)m->batch);
  if (t.B % t.M)
    return trainer_free(&t), rt_usage_error(prog, "train", "--micro-batch %lld does not divide --batch %lld", (long long)t.M,
                       (long long)t.B);
  t.dist = rt_dist();
  t.rank = t.dist->rank(), t.nranks = t.dist->size(), t.shard = o.shard_optimizer;
  if (t.nranks > 1 && t.B / t.M < t.nranks)
    return trainer_free(&t), rt_usage_error(prog, "train", "%lld micro-batch(es) per step (--batch %lld / --micro-batch "
                       "%lld) for %d processes: each process computes whole micro-batches; give --micro-batch at most "
                       "%lld", (long long)(t.B / t.M), (long long)t.B, (long long)t.M, t.nranks,
                       (long long)(t.B / t.nranks));
  if (t.nranks > 1 && (t.B / t.M > 32767 || rt_weight_floats(m) > 0x7fffffff))
    return trainer_free(&t), rt_usage_error(prog, "train", "over MPI a step holds at most 32767 micro-batches and a "
                       "model at most 2^31-1 floats (MPI's int counts)");
  if (o.have_lr) { /* min_lr keeps the spec's ratio to lr (lr/10 by default) */
    double ratio = t.c.min_lr >= 0 && t.c.min_lr <= t.c.lr ? t.c.min_lr / t.c.lr : 0.1;
    t.c.lr = o.lr;
    t.c.min_lr = o.lr * ratio;
  }
  if (o.have_min_lr) t.c.min_lr = o.min_lr;
  if (t.c.min_lr > t.c.lr)
    return trainer_free(&t), rt_usage_error(prog, "train", "--min-lr %g exceeds the learning rate %g", t.c.min_lr, t.c.lr);
  if (o.have_wd) t.c.weight_decay = o.weight_decay;
  if (o.have_clip) t.c.grad_clip = o.grad_clip;
  if (o.have_beta1) t.c.beta1 = o.beta1;
  if (o.have_beta2) t.c.beta2 = o.beta2;
  if (o.have_momentum) t.c.momentum = o.momentum;
  if (o.have_warmup) t.c.warmup = o.warmup;
  if (o.have_schedule) t.c.schedule = (RtSchedule)o.schedule;
  if (o.have_opt) t.c.optimizer = (RtOptimizer)o.optimizer;
  uint64_t seed = o.have_seed ? o.seed : (uint64_t)t.c.seed;
  t.eval_every = o.have_eval ? o.eval_every : t.c.eval_every;
  t.ckpt_every = o.checkpoint ? (o.have_ckpt_every ? o.ckpt_every : t.c.checkpoint_every) : 0;

  RtError err;
  err.msg[0] = 0;
  int rc = EXIT_OK;
  size_t n = 0;
  if (!data) goto no_data;
  {
    /* the text's ids: its bytes, or --tokenizer's encoding of it (vocabulary checked first) */
    RtTokenizer tk;
    unsigned char *text = NULL;
    size_t nbytes = 0;
    if (o.tokenizer && rt_prog_tokenizer(prog, "train", m, o.tokenizer, &tk)) return trainer_free(&t), EXIT_USER;
    int bad = rt_read_file(data, &text, &nbytes, &err) ||
              rt_prog_text_ids(o.tokenizer ? &tk : NULL, text, nbytes, &t.data, &n, &err);
    free(text);
    if (o.tokenizer) rt_tok_free(&tk);
    if (bad) goto fail;
    if (n) t.bytes_per_token = (double)nbytes / (double)n;
  }
  const char *unit = o.tokenizer ? "tokens" : "bytes";
  t.nval = n / 10 + (n % 10 != 0);
  if (t.nval < (size_t)t.T + 1) t.nval = (size_t)t.T + 1;
  if (n < t.nval + (size_t)t.T + 1) {
    rt_fail(&err, "%s: %zu %s is too small: training needs at least %lld (context+1 %s to train on plus a "
                  "held-out tail of 10%%, at least context+1 %s)", data, n, unit, (long long)(t.nval + (size_t)t.T + 1),
                  unit, unit);
    goto fail;
  }
  t.ntrain = n - t.nval;
  if (m->memory && !o.tokens && t.ntrain / (size_t)t.B < (size_t)t.T + 1) {
    rt_fail(&err, "%s: %zu training bytes is too small for segment memory: each of the %lld batch rows reads its own "
                  "stream of at least context+1 (%lld) bytes", data, t.ntrain, (long long)t.B, (long long)t.T + 1);
    goto fail;
  }
no_data:;
  if (rt_model_require_f32(m, "training", &err)) goto fail;
  size_t wbytes = (size_t)rt_weight_floats(m) * sizeof(float);
  size_t abytes = (size_t)(m->arena_bytes > m->train_arena_bytes ? m->arena_bytes : m->train_arena_bytes);
  size_t rows = (size_t)(m->batch > t.M ? m->batch : t.M) * (size_t)t.T;
  t.W = rt_xalloc(wbytes);
  t.G = rt_xalloc(wbytes);
  if (t.prec != RT_PREC_FP32 && !(t.Wh = rt_xalloc(wbytes))) {
    rt_fail(&err, "out of memory allocating the working weights");
    goto fail;
  }
  int need_acc = t.B / t.M > 1 || t.nranks > 1;
  t.Gacc = need_acc ? rt_xalloc(wbytes) : NULL;
  t.opt_lo = 0, t.opt_n = rt_weight_floats(m);
  if (t.nranks > 1) {
    if (dist_plan(&t, &err)) goto fail;
    if (t.shard) t.opt_lo = t.dp.lo[t.rank], t.opt_n = t.dp.cnt[t.rank]; /* ZeRO-1: this rank's moments */
  }
  size_t obytes = (size_t)t.opt_n * sizeof(float); /* per moment, measured: what is allocated */
  t.s1 = rt_xalloc(obytes);
  t.s2 = t.c.optimizer == RT_OPT_ADAMW ? rt_xalloc(obytes) : NULL;
  t.rep = calloc((size_t)(t.B / t.M) * report_floats(m), sizeof(float));
  t.sq = calloc((size_t)m->nparams + 1, sizeof(double));
  t.arena = rt_xalloc(abytes);
  t.scratch = rt_xalloc(rt_model_scratch_floats(m, 1) * sizeof(float));
  t.logits = rt_xalloc((size_t)m->batch * (size_t)t.T * (size_t)m->vocab * sizeof(float));
  t.ids = rt_xalloc(rows * sizeof(int32_t));
  t.tgt = rt_xalloc(rows * sizeof(int32_t));
  if (m->nmoe) {
    t.moe_load = calloc(moe_load_floats(m), sizeof *t.moe_load);
    t.moe_run = calloc(moe_load_floats(m), sizeof *t.moe_run);
  }
  if (!t.W || !t.G || (need_acc && !t.Gacc) || !t.s1 || (t.c.optimizer == RT_OPT_ADAMW && !t.s2) || !t.rep || !t.sq || !t.arena ||
      !t.scratch || !t.logits || !t.ids || !t.tgt || (m->nmoe && (!t.moe_load || !t.moe_run))) {
    rt_fail(&err, "out of memory allocating the training state");
    goto fail;
  }

  t.no_memory = o.no_memory;
  if (m->memory && !o.tokens) { /* segment memory: the streams' state, and the validation's */
    t.seg_rows = calloc((size_t)(m->nstate ? m->nstate : 1), sizeof *t.seg_rows);
    if (!t.seg_rows || rt_seg_state_init(&t.seg, m, (int)t.B, &err) || rt_seg_state_init(&t.seg_eval, m, (int)m->batch, &err))
      goto fail;
  }

  int64_t ck_steps = 0;
  if (rt_model_has_masks(m) && !(t.masks = rt_masks_new(m))) {
    rt_fail(&err, "out of memory allocating the pruning masks");
    goto fail;
  }
  if (o.resume) {
    if (rt_load_checkpoint(&t, o.resume, &ck_steps, &err)) goto fail;
  } else if (o.weights || m->embedded_weights) {
    if (rt_prog_load_weights_unmasked(m, t.W, o.weights, &err)) goto fail;
    rt_rng_seed(&t.rng, seed);
    t.dropout_seed = seed;
  } else {
    if (rt_prog_init_weights(m, t.W, seed, &err)) goto fail;
    rt_rng_seed(&t.rng, seed);
    t.dropout_seed = seed;
  }
  if (o.teacher_weights && rt_prog_load_teacher(m, t.W, o.teacher_weights, &err)) goto fail;
  /* a fresh run's masks: the sparsity in force at its step (the target without a schedule) */
  if (t.masks && !o.resume && rt_masks_compute(m, t.W, t.masks, &t.c, t.step, &err)) goto fail;
  t.steps = o.have_steps ? o.steps : (o.resume && ck_steps > 0) ? ck_steps : t.c.steps;
  t.c.steps = t.steps;
  if (t.c.warmup > t.steps) t.c.warmup = t.steps;
  if (t.step > t.steps) {
    rt_fail(&err, "%s: the checkpoint is at step %lld, beyond --steps %lld", o.resume, (long long)t.step,
            (long long)t.steps);
    goto fail;
  }
  t.stop_at = o.stop_at && o.stop_at < t.steps ? o.stop_at : t.steps;
  if (t.stop_at < t.step) t.stop_at = t.step;
  /* The history holds the steps this session ends at (resumed log rows up to t.step, then the
   * steps it runs): sized by --stop-at, never by --steps, which may be huge. */
  t.hist = calloc((size_t)t.stop_at + 1, sizeof *t.hist);
  if (!t.hist) {
    rt_fail(&err, "out of memory");
    goto fail;
  }
  if (t.rank == 0 && rt_open_log(&t, o.resume != NULL, &err)) goto fail; /* rank 0 writes the files */
  char said[1024]; /* a rank's captured stderr while setting up */
  /* the optimiser state each rank holds, as allocated: 1/N of one process's with --shard-optimizer */
  double opt_bytes = (double)obytes * (t.s2 ? 2 : 1), *rank_bytes = NULL;
  if (t.nranks > 1) {
    if (t.rank) rt_dist_quiet_end(said, sizeof said);
    *agreed = 1;
    if (dist_agree(t.dist, prog, 1, 0, said)) {
      trainer_free(&t);
      return EXIT_USER;
    }
    if (!(rank_bytes = calloc((size_t)t.nranks, sizeof *rank_bytes))) {
      fprintf(stderr, "%s: error: out of memory\n", prog);
      t.dist->abort(EXIT_USER);
    }
    rank_bytes[t.rank] = opt_bytes;
    int *c1 = calloc((size_t)t.nranks, sizeof *c1), *d1 = calloc((size_t)t.nranks, sizeof *d1);
    if (!c1 || !d1) {
      fprintf(stderr, "%s: error: out of memory\n", prog);
      t.dist->abort(EXIT_USER);
    }
    for (int j = 0; j < t.nranks; j++) c1[j] = 1, d1[j] = j; /* one double per rank */
    t.dist->allgatherv_f64(rank_bytes, c1, d1);
    free(c1), free(d1);
  }

  int tty = isatty(STDERR_FILENO);
  int64_t first = t.step, every = t.steps / 10 > 0 ? t.steps / 10 : 1;
  double t_start = rt_now_seconds(), t_train = 0, last_draw = 0, last_val = NAN;
  double tokens_per_step = (double)t.B * (double)t.T;
  if (t.rank == 0)
    fprintf(stderr, "%s train: %s, %lld parameters, %zu training bytes, %zu held out, steps %lld..%lld of %lld, "
                    "batch %lld (micro %lld), %s, lr %g, %s, %d threads\n",
            prog, m->name, (long long)m->param_count, t.ntrain, t.nval, (long long)t.step + 1, (long long)t.stop_at,
            (long long)t.steps, (long long)t.B, (long long)t.M, rt_opt_name(t.c.optimizer), t.c.lr,
            rt_prec_name(t.prec), rt_threads());
  if (t.rank == 0 && t.nranks > 1) {
    fprintf(stderr, "%s train: data parallel over %d processes (MPI), %lld micro-batches a step; optimiser state "
                    "per rank:", prog, t.nranks, (long long)(t.B / t.M));
    for (int j = 0; j < t.nranks; j++) fprintf(stderr, " %.0f", rank_bytes[j]);
    fprintf(stderr, " bytes (%s; one process holds %.0f)\n", t.shard ? "sharded: --shard-optimizer" : "whole on every rank",
            (double)rt_weight_floats(m) * sizeof(float) * (t.s2 ? 2 : 1));
  }
  free(rank_bytes);
  while (t.step < t.stop_at) {
    double lr = rt_lr_at(&t.c, t.step + 1);
    double t0 = rt_now_seconds();
    double loss = train_step(&t, lr);
    double dt = rt_now_seconds() - t0;
    t_train += dt;
    int64_t s = t.step;
    if (!isfinite(loss)) { /* the loss of the whole batch: every rank stops here */
      if (tty && t.rank == 0) fputc('\n', stderr);
      rt_fail(&err, "the loss is %g at step %lld (try a lower --lr)", loss, (long long)s);
      goto fail;
    }
    Hist *h = &t.hist[t.nhist++];
    h->step = s;
    h->loss = loss;
    h->val_loss = h->val_bpb = NAN;
    int evald = 0;
    if (t.eval_every > 0 && (s % t.eval_every == 0 || s == t.steps)) {
      if (t.rank == 0) { /* the others wait at the next step */
        h->val_loss = last_val = evaluate(&t);
        h->val_bpb = h->val_loss / log(2.0) / t.bytes_per_token;
      }
      evald = 1;
    }
    double elapsed = t.elapsed0 + rt_now_seconds() - t_start;
    if (!t.log) {
      /* a rank other than 0 writes nothing */
    } else if (evald)
      fprintf(t.log, "%lld,%.9g,%.8g,%.8g,%.8g,%.1f,%.3f,%.9g", (long long)s, lr, loss, h->val_loss, h->val_bpb,
              dt > 0 ? tokens_per_step / dt : 0.0, elapsed, t.ls.scale);
    else
      fprintf(t.log, "%lld,%.9g,%.8g,,,%.1f,%.3f,%.9g", (long long)s, lr, loss, dt > 0 ? tokens_per_step / dt : 0.0,
              elapsed, t.ls.scale);
    if (t.log) {
      if (m->loss_parts == 3) fprintf(t.log, ",%.8g,%.8g", t.parts.kl, t.parts.ce); /* distillation's KL and CE */
      fputc('\n', t.log);
      fflush(t.log);
    }
    if (evald && dist_status(&t, t.rank == 0 && rt_write_svg(&t, &err))) goto fail;
    if (o.checkpoint && t.ckpt_every > 0 && s % t.ckpt_every == 0 && s != t.stop_at &&
        save_checkpoint(&t, o.checkpoint, elapsed, &err))
      goto fail;
    if (t.rank != 0) continue;
    /* progress */
    double tps = tokens_per_step * (double)(s - first) / t_train;
    double eta = (double)(t.stop_at - s) * t_train / (double)(s - first);
    char etas[32], val[96] = "";
    rt_fmt_secs(etas, sizeof etas, eta);
    size_t vl = 0;
    if (m->loss_parts == 3) vl = (size_t)snprintf(val, sizeof val, " (kl %.4f, ce %.4f)", t.parts.kl, t.parts.ce);
    if (isfinite(last_val)) snprintf(val + vl, sizeof val - vl, " | val %.4f", last_val);
    if (m->nmoe) snprintf(val + strlen(val), sizeof val - strlen(val), " | aux %.4f", t.aux);
    double now = rt_now_seconds();
    if (tty) {
      if (now - last_draw > 0.1 || s == t.stop_at || evald) {
        fprintf(stderr, "\rstep %lld/%lld | loss %.4f%s | %.0f tok/s | ETA %s   ", (long long)s, (long long)t.steps,
                loss, val, tps, etas);
        last_draw = now;
      }
    } else if (evald || s % every == 0 || s == t.stop_at) {
      fprintf(stderr, "step %lld/%lld | loss %.4f%s | %.0f tok/s | ETA %s\n", (long long)s, (long long)t.steps, loss,
              val, tps, etas);
    }
  }
  if (tty && t.step > first && t.rank == 0) fputc('\n', stderr);
  double elapsed = t.elapsed0 + rt_now_seconds() - t_start;
  if (o.checkpoint && save_checkpoint(&t, o.checkpoint, elapsed, &err)) goto fail;
  if (t.rank == 0) {
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)t.step);
    const char *meta[] = {"format", "pt", "modelc_model", m->name, "step", step};
    rc = rt_prog_write_weights(m, t.W, o.out, meta, 3, &err) || rt_write_svg(&t, &err);
  }
  if (dist_status(&t, rc)) goto fail;
  if (t.rank == 0 && t.nranks > 1 && t.step > first) { /* what the ranks' exchange cost (tests/bench/mpi.sh) */
    double per = t.dp.comm_s / (double)(t.step - first);
    fprintf(stderr, "%s train: MPI: %.3f ms a step in MPI waits and collectives (%.1f%% of the step); the last step "
                    "rank 0 sent %.0f bytes and received %.0f (the gradients: %.0f bytes)\n", prog, 1e3 * per,
            100.0 * per * (double)(t.step - first) / t_train, t.dp.sent, t.dp.recvd,
            (double)rt_weight_floats(m) * sizeof(float));
  }
  if (t.nhist > 0) {
    const Hist *h = &t.hist[t.nhist - 1];
    printf("step %lld: loss %.6f", (long long)h->step, h->loss);
    if (m->loss_parts == 3) printf(" (kl %.6f, ce %.6f)", t.parts.kl, t.parts.ce);
    if (m->nmoe) printf(" (of which load-balancing %.6f)", t.aux);
    if (isfinite(last_val)) printf(", val loss %.6f (%.4f bits per byte)", last_val, last_val / log(2.0) / t.bytes_per_token);
    if (t.prec == RT_PREC_FP16)
      printf(", loss scale %g, %lld step(s) skipped for overflow", t.ls.scale, (long long)t.ls.skipped);
    printf("\n");
  }
  if (m->nmoe && t.moe_calls > 0) { /* the experts' load, the mean over this session's train calls */
    printf("expert load, mean over %lld train call(s) of %lld rows:\n", (long long)t.moe_calls, (long long)t.M);
    moe_print(stdout, m, t.moe_run, (double)t.moe_calls, moe_pairs(m, t.moe_load));
  }
  printf("wrote %s, %s, %s%s%s\n", o.out, t.log_path, t.svg_path, o.checkpoint ? ", " : "",
         o.checkpoint ? o.checkpoint : "");
  trainer_free(&t);
  return rc;
fail:
  /* once the ranks agreed, rank 0 speaks for them: the others failed on its word or on the same
   * loss; before, a rank other than 0 writes to its capture (dist_agree) */
  if (t.rank == 0 || !*agreed) fprintf(stderr, "%s: error: %s\n", prog, err.msg);
  trainer_free(&t);
  return EXIT_USER;
}

int rt_verb_train(const char *prog, int argc, char **argv, const RtModel *m) {
  const RtDist *x = rt_dist();
  int agreed = 0;
  if (x->size() == 1) return train_main(prog, argc, argv, m, &agreed);
  if (x->rank() != 0) rt_dist_quiet_begin();
  int rc = train_main(prog, argc, argv, m, &agreed);
  if (!agreed) { /* stopped before the first step: --help, or an error the others must hear of */
    char said[1024];
    if (x->rank() != 0) rt_dist_quiet_end(said, sizeof said);
    dist_agree(x, prog, 0, rc != EXIT_OK, x->rank() ? said : "");
  }
  return rc;
}

/* ---- grad ---- */

/* Targets: int32/int64, [B,T] like the tokens (language model) or [B] (classifier), in [0,out_dim). */
static int read_targets(const RtModel *m, const char *path, int B, int T, int32_t **out, RtError *err) {
  RtNpy a;
  if (rt_npy_read(path, &a, err)) return -1;
  int rc = 0;
  if (a.dtype != RT_DT_I32 && a.dtype != RT_DT_I64)
    rc = rt_fail(err, "%s: targets must be int32 or int64, not %s", path, rt_dtype_name(a.dtype));
  else if (m->out_per_token && (a.ndim != 2 || a.shape[0] != B || a.shape[1] != T))
    rc = rt_fail(err, "%s: targets must be [%d,%d] like the tokens", path, B, T);
  else if (!m->out_per_token && (a.ndim != 1 || a.shape[0] != B))
    rc = rt_fail(err, "%s: targets of a classifier must be [%d] (one class per sequence)", path, B);
  size_t n = m->out_per_token ? (size_t)B * (size_t)T : (size_t)B;
  if (!rc && !(*out = malloc(n * sizeof(int32_t)))) rc = rt_fail(err, "out of memory");
  for (size_t i = 0; !rc && i < n; i++) {
    int64_t v = a.dtype == RT_DT_I32 ? ((int32_t *)a.data)[i] : ((int64_t *)a.data)[i];
    if (v < 0 || v >= m->out_dim) {
      rc = rt_fail(err, "%s: target %lld at index %zu is outside [0,%lld)", path, (long long)v, i,
                   (long long)m->out_dim);
      free(*out);
      *out = NULL;
      break;
    }
    (*out)[i] = (int32_t)v;
  }
  rt_npy_free(&a);
  return rc;
}

int rt_verb_grad(const char *prog, int argc, char **argv, const RtModel *m) {
  RtOpts o;
  int help = 0;
  if (rt_parse_opts(prog, "grad", argc, argv, "--weights --tokens --targets --out --threads --teacher-weights", &o,
                    &help))
    return EXIT_USER;
  if (help) {
    printf("usage: %s grad [--weights W.safetensors] --tokens T.npy --targets Y.npy --out G.safetensors\n"
           "       [--teacher-weights T.safetensors]   (required by a distilling program)\n\n"
           "One call of the model's training function: the mean cross-entropy of the outputs for tokens T\n"
           "(int32/int64 [B,T], B <= %lld, T <= %lld) against targets Y (%s), and the gradient of\n"
           "every stored parameter, written as float32 under the parameter's name to G, with the loss in\n"
           "its metadata (\"loss\"). Prints 'loss: X'. A distilling program's loss is the distillation\n"
           "loss (docs/training.md), its KL and CE parts also in the metadata (\"kl\", \"ce\") and\n"
           "printed ('kl: X', 'ce: X'); the teacher's parameters get no gradient and are not written.\n"
           "Moe layers: each one's load is printed too (its load-balancing loss, the (token, choice)\n"
           "pairs each expert ran, the pairs dropped).\n",
           prog, (long long)m->batch, (long long)m->context, m->out_per_token ? "[B,T] like T" : "[B]");
    return EXIT_OK;
  }
  if (!m->train)
    return rt_usage_error(prog, "grad", "this program was built without training support (add the autodiff pass)");
  if (!o.tokens) return rt_usage_error(prog, "grad", "--tokens FILE is required");
  if (!o.targets) return rt_usage_error(prog, "grad", "--targets FILE is required");
  if (!o.out) return rt_usage_error(prog, "grad", "--out FILE is required");
  if (m->teacher_prefix && !o.teacher_weights)
    return rt_usage_error(prog, "grad", "this program distills from a teacher: --teacher-weights T.safetensors is "
                                        "required (the teacher's trained weights)");
  if (!m->teacher_prefix && o.teacher_weights)
    return rt_usage_error(prog, "grad", "--teacher-weights: this program does not distill (its spec has no train: "
                                        "distill:)");
  const RtPathArg outs[] = {{"--out", o.out, "name another --out", NULL}};
  const RtPathArg ins[] = {{"--weights", o.weights, NULL, NULL},
                           {"--tokens", o.tokens, NULL, NULL},
                           {"--targets", o.targets, NULL, NULL},
                           {"--teacher-weights", o.teacher_weights, NULL, NULL}};
  if (rt_check_outputs(prog, "grad", outs, 1, ins, 4)) return EXIT_USER;
  RtError err;
  err.msg[0] = 0;
  int B = 0, T = 0, rc = EXIT_OK;
  int32_t *ids = NULL, *tgt = NULL;
  float loss[3] = {0, 0, 0}; /* the loss, and a distilling program's KL and CE parts */
  if (rt_model_require_f32(m, "grad", &err)) {
    fprintf(stderr, "%s: error: %s\n", prog, err.msg);
    return EXIT_USER;
  }
  size_t wbytes = (size_t)rt_weight_floats(m) * sizeof(float);
  float *W = rt_xalloc(wbytes), *G = rt_xalloc(wbytes);
  char *arena = rt_xalloc((size_t)m->train_arena_bytes);
  float *scratch = rt_xalloc(rt_model_scratch_floats(m, 1) * sizeof(float));
  if (!W || !G || !arena || !scratch) {
    rt_fail(&err, "out of memory allocating the model");
    rc = EXIT_USER;
  } else if (rt_prog_load_weights(m, W, o.weights, &err) ||
             (o.teacher_weights && rt_prog_load_teacher(m, W, o.teacher_weights, &err)) ||
             rt_prog_read_tokens(m, o.tokens, &ids, &B, &T, &err) || read_targets(m, o.targets, B, T, &tgt, &err)) {
    rc = EXIT_USER;
  } else {
    /* as a training step computes them: working weights rounded to the compiled precision, loss
     * scale 1 (so the gradients are the true ones) */
    rt_round_weights(W, W, rt_weight_floats(m), m->train_precision);
    float *ml = m->nmoe ? calloc(moe_load_floats(m), sizeof *ml) : NULL;
    RtStep s = {B, T, 0, NULL, scratch, 0, 1.0f, ml};
    RtSegState st = {0};
    if (!m->memory) m->train(&s, arena, W, ids, tgt, loss, G);
    else if (rt_seg_state_init(&st, m, B, &err) ||
             rt_seg_forward(m, arena, W, scratch, &st, ids, tgt, B, T, NULL, loss, G, &err))
      rc = EXIT_USER; /* segment memory: the segments' gradients, the memory a constant */
    rt_seg_state_free(&st);
    if (!rc) {
      char ls[48], kls[48], ces[48];
      snprintf(ls, sizeof ls, "%.9g", (double)loss[0]);
      snprintf(kls, sizeof kls, "%.9g", (double)loss[1]);
      snprintf(ces, sizeof ces, "%.9g", (double)loss[2]);
      const char *meta[] = {"format", "pt", "modelc_model", m->name, "loss", ls, "kl", kls, "ce", ces};
      if (rt_prog_write_weights(m, G, o.out, meta, m->loss_parts == 3 ? 5 : 3, &err)) rc = EXIT_USER;
      else if (m->loss_parts == 3) printf("loss: %.9g\nkl: %.9g\nce: %.9g\n", (double)loss[0], (double)loss[1], (double)loss[2]);
      else printf("loss: %.9g\n", (double)loss[0]);
    }
    if (rc == EXIT_OK && ml) { /* the experts' load of this call */
      double *d = malloc(sizeof *d * moe_load_floats(m));
      if (d) {
        for (size_t j = 0; j < moe_load_floats(m); j++) d[j] = ml[j];
        moe_print(stdout, m, d, 1.0, moe_pairs(m, ml));
      }
      free(d);
    }
    free(ml);
  }
  if (rc) fprintf(stderr, "%s: error: %s\n", prog, err.msg);
  free(ids);
  free(tgt);
  free(W);
  free(G);
  free(arena);
  free(scratch);
  return rc;
}
