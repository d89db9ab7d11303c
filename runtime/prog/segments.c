/* segments.c: running a segment-memory model (RtModel.memory > 0: Transformer-XL's attention with
 * an xl_memory op per layer) over texts longer than its compiled context.
 *
 * A text is read as consecutive segments of the context T: the call for segment k has t0 = k T
 * and the program's state, in which each layer's xl_memory op keeps its input of the last M
 * positions, so segment k attends to min(M, t0) positions before it (docs/runtime.md, "Segment
 * memory"). A call at t0 = 0 starts a new text: the memory is empty. Nothing further back than
 * M positions reaches a segment's attention directly (deeper layers see further, each layer's
 * memory being the previous layer's output: at most L x M positions for L layers, as in the paper).
 *
 * forward / grad (rt_seg_forward): the rows of a [B, T'] token file are B texts, run side by side.
 * grad's loss is the mean over all B T' targets and its gradient the sum over segments of each
 * segment's gradient weighted by its share of the targets, with the memory a constant (no gradient
 * flows from one segment into the previous one: the paper's stop-gradient).
 * eval / train's validation (rt_seg_stream_loss): a byte text is cut into B contiguous streams,
 * one per batch row, read segment by segment. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"

int rt_seg_state_init(RtSegState *s, const RtModel *m, int batch, RtError *err) {
  memset(s, 0, sizeof *s);
  s->slot = calloc((size_t)(m->nstate ? m->nstate : 1), sizeof *s->slot);
  s->mem = rt_xalloc((size_t)rt_model_state_floats(m, batch) * sizeof(float) + 64);
  if (!s->slot || !s->mem) {
    rt_seg_state_free(s);
    return rt_fail(err, "out of memory allocating the state (KV cache, segment memory)");
  }
  float *p = s->mem;
  for (int i = 0; i < m->nstate; i++) {
    s->slot[i] = p;
    p += (size_t)batch * (size_t)m->state[i].row_floats;
  }
  s->batch = batch;
  return 0;
}

void rt_seg_state_free(RtSegState *s) {
  free(s->slot);
  free(s->mem);
  memset(s, 0, sizeof *s);
}

void rt_seg_state_rows(const RtSegState *s, const RtModel *m, int row0, void **out) {
  for (int i = 0; i < m->nstate; i++) out[i] = (float *)s->slot[i] + (size_t)row0 * (size_t)m->state[i].row_floats;
}

int rt_seg_forward(const RtModel *m, char *arena, const void *W, float *scratch, RtSegState *st, const int32_t *ids,
                   const int32_t *tgt, int B, int T, float *out, float *loss, float *G, RtError *err) {
  int Tc = (int)m->context;
  int64_t V = m->out_dim, nw = rt_weight_floats(m);
  int32_t *si = malloc(sizeof(int32_t) * (size_t)B * (size_t)Tc), *sg = malloc(sizeof(int32_t) * (size_t)B * (size_t)Tc);
  float *so = out ? rt_xalloc((size_t)B * (size_t)Tc * (size_t)V * sizeof(float)) : NULL;
  float *g = G ? rt_xalloc((size_t)nw * sizeof(float)) : NULL;
  if (!si || !sg || (out && !so) || (G && !g)) {
    free(si), free(sg), free(so), free(g);
    return rt_fail(err, "out of memory running the segments");
  }
  if (G) memset(G, 0, (size_t)nw * sizeof(float));
  double total = 0;
  for (int t0 = 0; t0 < T; t0 += Tc) {
    int nt = T - t0 < Tc ? T - t0 : Tc;
    for (int b = 0; b < B; b++) {
      memcpy(si + (size_t)b * nt, ids + (size_t)b * T + t0, (size_t)nt * sizeof(int32_t));
      if (tgt) memcpy(sg + (size_t)b * nt, tgt + (size_t)b * T + t0, (size_t)nt * sizeof(int32_t));
    }
    RtStep s = {B, nt, t0, st->slot, scratch, 0, 1.0f, NULL};
    if (out) {
      m->forward(&s, arena, W, si, so);
      for (int b = 0; b < B; b++)
        memcpy(out + ((size_t)b * T + t0) * (size_t)V, so + (size_t)b * nt * (size_t)V, (size_t)nt * (size_t)V * sizeof(float));
    }
    if (G) {
      float l[3] = {0, 0, 0}; /* a distilling program writes its KL and CE parts too */
      m->train(&s, arena, W, si, sg, l, g);
      double share = (double)nt / (double)T; /* this segment's part of the mean over all targets */
      total += share * l[0];
      for (int64_t i = 0; i < nw; i++) G[i] += (float)(share * g[i]);
    }
  }
  if (loss) *loss = (float)total;
  free(si), free(sg), free(so), free(g);
  return 0;
}

double rt_seg_stream_loss(const RtModel *m, char *arena, const void *W, float *scratch, RtSegState *st,
                          const int32_t *buf, size_t n, int no_memory, size_t *count, RtError *err) {
  int B = (int)m->batch, Tc = (int)m->context;
  *count = 0;
  if (n < 2) return NAN;
  int nb = (size_t)B < n - 1 ? B : (int)(n - 1);
  size_t L = (n - 1) / (size_t)nb; /* predictions per stream */
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)nb * (size_t)Tc), *tgt = malloc(sizeof(int32_t) * (size_t)nb * (size_t)Tc);
  float *logits = rt_xalloc((size_t)nb * (size_t)Tc * (size_t)m->vocab * sizeof(float));
  if (!ids || !tgt || !logits) {
    free(ids), free(tgt), free(logits);
    rt_fail(err, "out of memory evaluating");
    return NAN;
  }
  double total = 0;
  for (size_t pos = 0; pos < L; pos += (size_t)Tc) {
    int nt = L - pos < (size_t)Tc ? (int)(L - pos) : Tc;
    for (int b = 0; b < nb; b++)
      for (int t = 0; t < nt; t++) {
        const int32_t *w = buf + (size_t)b * L + pos + (size_t)t;
        ids[b * nt + t] = w[0];
        tgt[b * nt + t] = w[1];
      }
    /* t0 > INT_MAX cannot be passed: past it a stream restarts its memory (t0 = 0) */
    int t0 = no_memory || pos > (size_t)0x7fffffff - (size_t)Tc ? 0 : (int)pos;
    RtStep s = {nb, nt, t0, st->slot, scratch, 0, 0.0f, NULL};
    m->forward(&s, arena, W, ids, logits);
    for (int i = 0; i < nb * nt; i++, ++*count) total += rt_token_nll(logits + (size_t)i * (size_t)m->vocab, m->vocab, tgt[i]);
  }
  free(ids), free(tgt), free(logits);
  return *count ? total / (double)*count : NAN;
}
