/* kernels.c: the dense element-wise and row-wise kernels generated code calls: linear layers
 * (cblas_sgemm), embeddings, positions, LayerNorm, RMSNorm, activations and softmax, each with a
 * naive `_ref` twin that the tests compare against. Fast versions keep 8 independent float partial
 * sums so compilers can vectorise reductions without -ffast-math; refs accumulate in double. */
#include "modelc_rt.h"

#include <cblas.h>
#include <math.h>
#include <string.h>


/* Sum of x[0..n) with 8 lanes, then a pairwise combine: accurate and vectorisable. */
static float sum8(const float *x, int n) {
  float a[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++)
      a[j] += x[i + j];
  float tail = 0.0f;
  for (; i < n; i++)
    tail += x[i];
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
}

/* Sum of (x[i] - m)^2 with 8 lanes. */
static float sqdev8(const float *x, int n, float m) {
  float a[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) {
      float d = x[i + j] - m;
      a[j] += d * d;
    }
  float tail = 0.0f;
  for (; i < n; i++)
    tail += (x[i] - m) * (x[i] - m);
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
}

/* ---- linear: x (M,K), W (N,K), bias (N) or NULL -> y (M,N) ---------------------------------- */

void rt_matmul(float *y, const float *x, const float *W, const float *bias, int M, int N, int K) {
  if (M <= 0 || N <= 0)
    return;
  float beta = 0.0f;
  if (bias) {
    for (int m = 0; m < M; m++)
      memcpy(y + (size_t)m * N, bias, (size_t)N * sizeof(float));
    beta = 1.0f;
  }
  if (K <= 0) {
    if (!bias)
      memset(y, 0, (size_t)M * N * sizeof(float));
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K, beta, y, N);
}

void rt_matmul_ref(float *y, const float *x, const float *W, const float *bias, int M, int N, int K) {
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double s = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; k++)
        s += (double)x[(size_t)m * K + k] * W[(size_t)n * K + k];
      y[(size_t)m * N + n] = (float)s;
    }
}

/* ---- embedding: ids (n), table (V,C) -> out (n,C); bad ids give zero rows and -1 ------------- */

int rt_embedding(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err) {
  int bad = -1;
  for (int i = 0; i < n; i++) {
    float *o = out + (size_t)i * C;
    int32_t id = ids[i];
    if (id < 0 || id >= V) {
      memset(o, 0, (size_t)C * sizeof(float));
      if (bad < 0)
        bad = i;
      continue;
    }
    memcpy(o, table + (size_t)id * C, (size_t)C * sizeof(float));
  }
  if (bad >= 0)
    return rt_fail(err, "embedding: token id %ld at position %d is outside [0, %d)", (long)ids[bad], bad, V);
  return 0;
}

int rt_embedding_ref(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err) {
  int bad = -1;
  for (int i = 0; i < n; i++) {
    int ok = ids[i] >= 0 && ids[i] < V;
    if (!ok && bad < 0)
      bad = i;
    for (int c = 0; c < C; c++)
      out[(size_t)i * C + c] = ok ? table[(size_t)ids[i] * C + c] : 0.0f;
  }
  if (bad >= 0)
    return rt_fail(err, "embedding: token id %ld at position %d is outside [0, %d)", (long)ids[bad], bad, V);
  return 0;
}

/* ---- positions: x (B,T,C) += pos[t0+t] ------------------------------------------------------ */

void rt_add_positions(float *x, const float *pos, int B, int T, int C, int t0) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      float *restrict xr = x + ((size_t)b * T + t) * C;
      const float *restrict pr = pos + (size_t)(t0 + t) * C;
      for (int c = 0; c < C; c++)
        xr[c] += pr[c];
    }
}

void rt_add_positions_ref(float *x, const float *pos, int B, int T, int C, int t0) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++)
        x[((size_t)b * T + t) * C + c] += pos[(size_t)(t0 + t) * C + c];
}

/* ---- layernorm: x, out (R,C); gain, bias (C) ------------------------------------------------ */

void rt_layernorm(float *out, float *mean_out, float *rstd_out, const float *x, const float *gain, const float *bias,
                  int R, int C, float eps) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    float *o = out + (size_t)r * C;
    float mean = sum8(xr, C) / (float)C;
    float var = sqdev8(xr, C, mean) / (float)C;
    float rstd = 1.0f / sqrtf(var + eps);
    if (bias)
      for (int c = 0; c < C; c++)
        o[c] = (xr[c] - mean) * rstd * gain[c] + bias[c];
    else
      for (int c = 0; c < C; c++)
        o[c] = (xr[c] - mean) * rstd * gain[c];
    if (mean_out)
      mean_out[r] = mean;
    if (rstd_out)
      rstd_out[r] = rstd;
  }
}

void rt_layernorm_ref(float *out, float *mean_out, float *rstd_out, const float *x, const float *gain,
                      const float *bias, int R, int C, float eps) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    double m = 0, v = 0;
    for (int c = 0; c < C; c++)
      m += xr[c];
    m /= C;
    for (int c = 0; c < C; c++)
      v += (xr[c] - m) * (xr[c] - m);
    v /= C;
    double rstd = 1.0 / sqrt(v + eps);
    for (int c = 0; c < C; c++)
      out[(size_t)r * C + c] = (float)((xr[c] - m) * rstd * gain[c] + (bias ? bias[c] : 0.0));
    if (mean_out)
      mean_out[r] = (float)m;
    if (rstd_out)
      rstd_out[r] = (float)rstd;
  }
}

/* ---- rmsnorm: x, out (R,C); gain (C) -------------------------------------------------------- */

void rt_rmsnorm(float *out, float *rstd_out, const float *x, const float *gain, int R, int C, float eps) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    float *o = out + (size_t)r * C;
    float ms = sqdev8(xr, C, 0.0f) / (float)C;
    float rstd = 1.0f / sqrtf(ms + eps);
    for (int c = 0; c < C; c++)
      o[c] = xr[c] * rstd * gain[c];
    if (rstd_out)
      rstd_out[r] = rstd;
  }
}

void rt_rmsnorm_ref(float *out, float *rstd_out, const float *x, const float *gain, int R, int C, float eps) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    double ms = 0;
    for (int c = 0; c < C; c++)
      ms += (double)xr[c] * xr[c];
    double rstd = 1.0 / sqrt(ms / C + eps);
    for (int c = 0; c < C; c++)
      out[(size_t)r * C + c] = (float)(xr[c] * rstd * gain[c]);
    if (rstd_out)
      rstd_out[r] = (float)rstd;
  }
}

/* ---- activations: x, out (n) ---------------------------------------------------------------- */

/* 1 + erf(z) is computed as erfc(-z): no cancellation for negative x. */
void rt_gelu(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = rt_geluf(x[i]);
}

void rt_gelu_tanh(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = rt_gelu_tanhf(x[i]);
}

void rt_relu(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = rt_reluf(x[i]);
}

void rt_silu(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = rt_siluf(x[i]);
}

void rt_swiglu(float *out, const float *a, const float *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = rt_siluf(a[i]) * b[i];
}

void rt_gelu_ref(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0))));
}

void rt_gelu_tanh_ref(float *out, const float *x, size_t n) {
  const double k = sqrt(2.0 / 3.14159265358979323846);
  for (size_t i = 0; i < n; i++) {
    double v = x[i];
    out[i] = (float)(0.5 * v * (1.0 + tanh(k * (v + 0.044715 * v * v * v))));
  }
}

void rt_relu_ref(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = rt_reluf(x[i]);
}

void rt_silu_ref(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = (float)(x[i] / (1.0 + exp(-(double)x[i])));
}

void rt_swiglu_ref(float *out, const float *a, const float *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = (float)(a[i] / (1.0 + exp(-(double)a[i])) * b[i]);
}

/* ---- softmax over rows: x, out (R,C); an all -inf row becomes zeros ------------------------- */

void rt_softmax(float *out, const float *x, int R, int C) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    float *o = out + (size_t)r * C;
    float mx = -INFINITY;
    for (int c = 0; c < C; c++)
      mx = xr[c] > mx ? xr[c] : mx;
    if (mx == -INFINITY) {
      memset(o, 0, (size_t)C * sizeof(float));
      continue;
    }
    for (int c = 0; c < C; c++)
      o[c] = expf(xr[c] - mx);
    float inv = 1.0f / sum8(o, C);
    for (int c = 0; c < C; c++)
      o[c] *= inv;
  }
}

void rt_softmax_ref(float *out, const float *x, int R, int C) {
  for (int r = 0; r < R; r++) {
    const float *xr = x + (size_t)r * C;
    double mx = -INFINITY, s = 0;
    for (int c = 0; c < C; c++)
      mx = xr[c] > mx ? xr[c] : mx;
    if (mx == -INFINITY) {
      for (int c = 0; c < C; c++)
        out[(size_t)r * C + c] = 0.0f;
      continue;
    }
    for (int c = 0; c < C; c++)
      s += exp(xr[c] - mx);
    for (int c = 0; c < C; c++)
      out[(size_t)r * C + c] = (float)(exp(xr[c] - mx) / s);
  }
}

/* ---- sinusoidal positions: out (T,C) --------------------------------------------------------- */

/* The angle t / 10000^(2i/C) for column pair i, in double; the table is computed once per program
 * (generated code caches it), so accuracy matters more than speed. */
void rt_sinusoid(float *out, int T, int C) {
  for (int i = 0; 2 * i < C; i++) {
    double inv = pow(10000.0, -(2.0 * i) / C);
    for (int t = 0; t < T; t++) {
      double a = t * inv;
      out[(size_t)t * C + 2 * i] = (float)sin(a);
      if (2 * i + 1 < C) out[(size_t)t * C + 2 * i + 1] = (float)cos(a);
    }
  }
}

void rt_sinusoid_ref(float *out, int T, int C) {
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++) {
      double a = t / pow(10000.0, (double)(c - c % 2) / C);
      out[(size_t)t * C + c] = (float)(c % 2 ? cos(a) : sin(a));
    }
}
