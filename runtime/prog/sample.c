/* sample.c: token sampling for generation: greedy, temperature, top-k and top-p (nucleus), driven
 * by PCG32 (M. O'Neill's XSH-RR 64/32 generator) seeded from a uint64 so that a run with the same
 * seed repeats exactly. No allocation: the caller provides V floats and V int32 of scratch.
 * Ordering between equal probabilities always prefers the lower index, so results do not depend
 * on sort stability. Non-finite logits never make it read outside its buffers: it then returns
 * some index in [0, V) (generate reports such logits before sampling). */
#include "prog.h"

#include <math.h>

#define PCG_MULT 6364136223846793005ULL
#define PCG_INC 0xda3e39cb94b95bdbULL /* any odd constant; one fixed stream */

void rt_rng_seed(RtRng *rng, uint64_t seed) {
  rng->state = 0;
  rng->inc = (PCG_INC << 1) | 1u;
  (void)rt_rng_u32(rng);
  rng->state += seed;
  (void)rt_rng_u32(rng);
}

uint32_t rt_rng_u32(RtRng *rng) {
  uint64_t old = rng->state;
  rng->state = old * PCG_MULT + rng->inc;
  uint32_t xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);
  uint32_t rot = (uint32_t)(old >> 59);
  return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
}

float rt_rng_uniform(RtRng *rng) { return (float)(rt_rng_u32(rng) >> 8) * (1.0f / 16777216.0f); }

int rt_sample_argmax(const float *logits, int V) {
  int best = 0;
  for (int i = 1; i < V; i++)
    if (logits[i] > logits[best] || (logits[best] != logits[best] && logits[i] == logits[i]))
      best = i;
  return best;
}

/* a ranks before b: higher probability, then lower index */
static int better(const float *p, int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); }

/* Sift down in a heap whose root is the *worst* element (min-heap under `better`). */
static void sift_down(int32_t *h, int n, int i, const float *p) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, w = i;
    if (l < n && better(p, h[w], h[l]))
      w = l;
    if (r < n && better(p, h[w], h[r]))
      w = r;
    if (w == i)
      return;
    int32_t t = h[i];
    h[i] = h[w];
    h[w] = t;
    i = w;
  }
}

/* Sorts a heap (root worst) into best-first order. */
static void heap_sort_best_first(int32_t *h, int n, const float *p) {
  for (int end = n - 1; end > 0; end--) {
    int32_t t = h[0];
    h[0] = h[end];
    h[end] = t;
    sift_down(h, end, 0, p);
  }
}

int rt_sample(const float *logits, int V, const RtSampleParams *sp, RtRng *rng, float *probs, int32_t *idx) {
  if (V <= 1)
    return 0;
  if (sp->temperature <= 0.0f || sp->top_k == 1)
    return rt_sample_argmax(logits, V);
  int k = sp->top_k > 0 && sp->top_k < V ? sp->top_k : V;
  float top_p = sp->top_p;
  float mx = logits[rt_sample_argmax(logits, V)];
  float invt = 1.0f / sp->temperature, sum = 0.0f;
  for (int i = 0; i < V; i++)
    sum += probs[i] = expf((logits[i] - mx) * invt);

  if (k == V && top_p >= 1.0f) { /* plain temperature sampling: no sort */
    float r = rt_rng_uniform(rng) * sum, cum = 0.0f;
    int last = 0;
    for (int i = 0; i < V; i++) {
      if (probs[i] <= 0.0f)
        continue;
      cum += probs[i];
      last = i;
      if (r < cum)
        return i;
    }
    return last;
  }

  int n = 0;
  float total;
  if (k < V) { /* top-k: keep a heap of the k best, worst at the root */
    for (int i = 0; i < k; i++)
      idx[n++] = i;
    for (int i = k / 2 - 1; i >= 0; i--)
      sift_down(idx, n, i, probs);
    for (int i = k; i < V; i++)
      if (better(probs, i, idx[0])) {
        idx[0] = i;
        sift_down(idx, n, 0, probs);
      }
    total = 0.0f;
    for (int i = 0; i < n; i++)
      total += probs[idx[i]];
  } else { /* top-p only: an element below (1-p)/V of the mass can never be in the nucleus */
    float cutoff = (1.0f - top_p) / (float)V * sum;
    for (int i = 0; i < V; i++)
      if (probs[i] >= cutoff)
        idx[n++] = i;
    for (int i = n / 2 - 1; i >= 0; i--)
      sift_down(idx, n, i, probs);
    total = sum;
  }
  if (n == 0) /* no candidate: non-finite logits (a NaN sum fails every comparison) */
    return rt_sample_argmax(logits, V);
  heap_sort_best_first(idx, n, probs);

  float kept = total;
  if (top_p < 1.0f) { /* smallest best-first prefix whose mass reaches top_p */
    float cum = 0.0f, need = top_p * total;
    for (int i = 0; i < n; i++) {
      cum += probs[idx[i]];
      if (cum >= need) {
        n = i + 1;
        break;
      }
    }
    kept = cum;
  }
  float r = rt_rng_uniform(rng) * kept, cum = 0.0f;
  for (int i = 0; i < n; i++) {
    cum += probs[idx[i]];
    if (r < cum)
      return idx[i];
  }
  return idx[n - 1];
}
