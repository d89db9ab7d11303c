/* pool.c: sequence pooling over time and its backward, with their naive `_ref` twins.
 * x is (B,T,C) row-major, the pooled result (B,C). "first" takes position 0 (BERT's [CLS]);
 * "mean" averages over the T positions: a float sum over t in order, divided by (float)T, the
 * exact operations the backends used to emit inline, so results are unchanged bit for bit. These
 * are small (B*T*C adds), so they run serially. */
#include "kernels.h"

#include <string.h>

void rt_pool_first(float *out, const float *x, int B, int T, int C) {
  for (int b = 0; b < B; b++) memcpy(out + (size_t)b * C, x + (size_t)b * T * C, (size_t)C * sizeof(float));
}

void rt_pool_mean(float *out, const float *x, int B, int T, int C) {
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++) {
      float acc = 0.0f;
      for (int t = 0; t < T; t++) acc += x[((size_t)b * T + t) * C + c];
      out[(size_t)b * C + c] = acc / (float)T;
    }
}

/* dx (B,T,C) from dy (B,C): first puts dy at position 0 (zeros elsewhere), mean spreads dy / T. */
void rt_pool_first_dx(float *dx, const float *dy, int B, int T, int C) {
  memset(dx, 0, (size_t)B * T * C * sizeof(float));
  for (int b = 0; b < B; b++) memcpy(dx + (size_t)b * T * C, dy + (size_t)b * C, (size_t)C * sizeof(float));
}

void rt_pool_mean_dx(float *dx, const float *dy, int B, int T, int C) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++) dx[((size_t)b * T + t) * C + c] = dy[(size_t)b * C + c] / (float)T;
}

/* ---- naive twins: double accumulation ---- */

void rt_pool_ref(float *out, const float *x, int B, int T, int C, int mean) {
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++) {
      double acc = 0;
      for (int t = 0; t < (mean ? T : 1); t++) acc += x[((size_t)b * T + t) * C + c];
      out[(size_t)b * C + c] = (float)(mean ? acc / T : acc);
    }
}

void rt_pool_dx_ref(float *dx, const float *dy, int B, int T, int C, int mean) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++)
        dx[((size_t)b * T + t) * C + c] =
            mean ? (float)((double)dy[(size_t)b * C + c] / T) : t == 0 ? dy[(size_t)b * C + c] : 0.0f;
}
