/* rope.c: rotary position embedding (RoPE; Su et al., "RoFormer"), forward, with its naive `_ref`
 * twin. The layout is llama2.c's and Meta's reference: within each head the dims are rotated in
 * pairs (2i, 2i+1) by the angle pos * theta^(-2i/hd), pos = t0 + t the token's absolute position,
 * so a KV-cache decoding step (t0 > 0) rotates its token as the full sequence would.
 *
 * Shapes: qkv is (B,T,W) row-major, W = C + 2 KV, C = n_head * hd the query width, KV = n_kv_head *
 * hd (grouped-query attention; KV = C for multi-head): q = qkv[b,t,0:C], k = qkv[b,t,C:C+KV],
 * v = qkv[b,t,C+KV:W] as rt_attention_gqa reads them; head h uses columns h*hd..(h+1)*hd of q (of k),
 * hd = C/n_head (even). out is (B,T,W): q and k rotated, v copied. out may equal qkv (in place).
 * inverse != 0 rotates by the negated angle: the transpose of the forward map, i.e. its gradient.
 *
 * Fast version: rows (b,t) split over rt_parallel_for; each row computes the sin/cos of its hd/2
 * angles once (the angle in double, so large positions lose no phase) and applies them to every
 * head of q and k in float. Nothing is precomputed or allocated. The `_ref` twin is serial, all
 * double, one angle per element.
 */
#include "kernels.h"

#include <math.h>
#include <string.h>

typedef struct RopeCtx {
  float *out;
  const float *qkv;
  int T, t0, C, KV, hd;
  double theta, sign;
} RopeCtx;

static void rope_rows(void *p, int lo, int hi) {
  const RopeCtx *c = p;
  int C = c->C, KV = c->KV, hd = c->hd, W = C + 2 * KV;
  for (int r = lo; r < hi; r++) {
    const float *x = c->qkv + (size_t)r * W;
    float *o = c->out + (size_t)r * W;
    if (o != x) memcpy(o + C + KV, x + C + KV, (size_t)KV * sizeof(float)); /* v */
    double pos = (double)(c->t0 + r % c->T);
    for (int i = 0; i < hd / 2; i++) {
      double ang = c->sign * pos * pow(c->theta, -2.0 * i / hd);
      float cs = (float)cos(ang), sn = (float)sin(ang);
      for (int j = 2 * i; j < C + KV; j += hd) { /* dims 2i, 2i+1 of every head of q, then of k */
        float a = x[j], b = x[j + 1];
        o[j] = a * cs - b * sn;
        o[j + 1] = a * sn + b * cs;
      }
    }
  }
}

void rt_rope(float *out, const float *qkv, int B, int T, int t0, int C, int n_head, int n_kv_head, float theta,
             int inverse) {
  int hd = C / n_head;
  RopeCtx c = {out, qkv, T, t0, C, n_kv_head * hd, hd, theta, inverse ? -1.0 : 1.0};
  rt_parallel_for(B * T, rt_row_grain(C + 2 * c.KV), rope_rows, &c);
}

void rt_rope_ref(float *out, const float *qkv, int B, int T, int t0, int C, int n_head, int n_kv_head, float theta,
                 int inverse) {
  int hd = C / n_head, KV = n_kv_head * hd, W = C + 2 * KV;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const float *x = qkv + ((size_t)b * T + t) * W;
      float *o = out + ((size_t)b * T + t) * W;
      for (int part = 0; part < 2; part++) /* q, k */
        for (int h = 0; h < (part ? n_kv_head : n_head); h++)
          for (int i = 0; i < hd / 2; i++) {
            size_t j = (size_t)part * C + (size_t)h * hd + 2 * i;
            double freq = 1.0 / pow((double)theta, (2.0 * i) / hd);
            double ang = (inverse ? -1.0 : 1.0) * (double)(t0 + t) * freq;
            double a = x[j], bb = x[j + 1];
            o[j] = (float)(a * cos(ang) - bb * sin(ang));
            o[j + 1] = (float)(a * sin(ang) + bb * cos(ang));
          }
      for (int k = C + KV; k < W; k++) o[k] = x[k]; /* v */
    }
}
