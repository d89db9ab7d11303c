/* embedding.c: token embeddings and positions. Forward: rt_embedding (a row gather; a bad id is a
 * zero row and an error, never a crash), learned positions (rt_add_positions) and the sinusoidal
 * table (rt_sinusoid). Backward: rt_embedding_dw, the scatter-add of the output gradient into the
 * table's rows. Each has a naive serial `_ref` twin the tests compare against.
 *
 * Threading: rows split over rt_parallel_for; rt_embedding_dw splits vocabulary rows (each row
 * summed in id order), so its result does not depend on the thread count. */
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- embedding: ids (n), table (V,C) -> out (n,C); bad ids give zero rows and -1 ------------- */

typedef struct EmbCtx {
  char *out;
  const int32_t *ids;
  const char *table;
  int V;
  size_t row; /* bytes per row */
} EmbCtx;

static void emb_rows(void *p, int lo, int hi) {
  const EmbCtx *e = p;
  for (int i = lo; i < hi; i++) {
    char *o = e->out + (size_t)i * e->row;
    int32_t id = e->ids[i];
    if (id < 0 || id >= e->V)
      memset(o, 0, e->row);
    else
      memcpy(o, e->table + (size_t)id * e->row, e->row);
  }
}

int rt_embedding_bad_id(const int32_t *ids, int n, int V, RtError *err) {
  for (int i = 0; i < n; i++) /* serially: n ints are cheap to scan */
    if (ids[i] < 0 || ids[i] >= V)
      return rt_fail(err, "embedding: token id %ld at position %d is outside [0, %d)", (long)ids[i], i, V);
  return 0;
}

int rt_gather_rows(void *out, const int32_t *ids, const void *table, int n, int V, int C, size_t elsize,
                   RtError *err) {
  EmbCtx e = {out, ids, table, V, (size_t)C * elsize};
  rt_parallel_for(n, rt_row_grain((int)((size_t)C * elsize / sizeof(float))), emb_rows, &e);
  return rt_embedding_bad_id(ids, n, V, err);
}

int rt_embedding(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err) {
  return rt_gather_rows(out, ids, table, n, V, C, sizeof(float), err);
}

int rt_gather_rows_ref(void *out, const int32_t *ids, const void *table, int n, int V, int C, size_t elsize,
                       RtError *err) {
  unsigned char *o = out;
  const unsigned char *t = table;
  for (int i = 0; i < n; i++) {
    int ok = ids[i] >= 0 && ids[i] < V;
    for (size_t b = 0; b < (size_t)C * elsize; b++) /* byte by byte: a zero row is zero bytes */
      o[(size_t)i * C * elsize + b] = ok ? t[(size_t)ids[i] * C * elsize + b] : 0;
  }
  return rt_embedding_bad_id(ids, n, V, err);
}

int rt_embedding_ref(float *out, const int32_t *ids, const float *table, int n, int V, int C, RtError *err) {
  return rt_gather_rows_ref(out, ids, table, n, V, C, sizeof(float), err);
}

/* ---- positions: x (B,T,C) += pos[t0+t] ------------------------------------------------------ */

typedef struct PosCtx {
  float *x;
  const float *pos;
  int T, C, t0;
} PosCtx;

static void pos_rows(void *p, int lo, int hi) {
  const PosCtx *c = p;
  for (int r = lo; r < hi; r++) {
    float *restrict xr = c->x + (size_t)r * c->C;
    const float *restrict pr = c->pos + (size_t)(c->t0 + r % c->T) * c->C;
    for (int i = 0; i < c->C; i++)
      xr[i] += pr[i];
  }
}

void rt_add_positions(float *x, const float *pos, int B, int T, int C, int t0) {
  PosCtx c = {x, pos, T, C, t0};
  rt_parallel_for(B * T, rt_row_grain(C), pos_rows, &c);
}

void rt_add_positions_ref(float *x, const float *pos, int B, int T, int C, int t0) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++)
        x[((size_t)b * T + t) * C + c] += pos[(size_t)(t0 + t) * C + c];
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

/* ---- embedding backward: dtable (V,C) = scatter-add of dy (n,C) at ids ---------------------- *
 * Split over vocabulary rows: each task zeroes its rows and scans all ids in order, adding the
 * rows that fall in its range, so every row is summed in id order whatever the thread count.
 * Ids outside [0,V) are skipped (the forward wrote zeros for them: their gradient is nowhere). */

typedef struct EmbDwCtx {
  float *dtable;
  const int32_t *ids;
  const float *dy;
  int n, C;
} EmbDwCtx;

static void emb_dw_rows(void *p, int lo, int hi) {
  const EmbDwCtx *e = p;
  int C = e->C;
  memset(e->dtable + (size_t)lo * C, 0, (size_t)(hi - lo) * C * sizeof(float));
  for (int i = 0; i < e->n; i++) {
    int id = e->ids[i];
    if (id < lo || id >= hi)
      continue;
    float *d = e->dtable + (size_t)id * C;
    const float *s = e->dy + (size_t)i * C;
    for (int c = 0; c < C; c++)
      d[c] += s[c];
  }
}

void rt_embedding_dw(float *dtable, const int32_t *ids, const float *dy, int n, int V, int C) {
  if (V <= 0 || C <= 0)
    return;
  EmbDwCtx e = {dtable, ids, dy, n > 0 ? n : 0, C};
  /* a task zeroes (hi-lo) C floats and scans n ids: at least ~8K floats of zeroing per chunk */
  rt_parallel_for(V, rt_row_grain(C), emb_dw_rows, &e);
}

void rt_embedding_dw_ref(float *dtable, const int32_t *ids, const float *dy, int n, int V, int C) {
  double *acc = calloc((size_t)V * C > 0 ? (size_t)V * C : 1, sizeof(double)); /* test-only twin */
  if (!acc)
    return;
  for (int i = 0; i < n; i++)
    if (ids[i] >= 0 && ids[i] < V)
      for (int c = 0; c < C; c++)
        acc[(size_t)ids[i] * C + c] += dy[(size_t)i * C + c];
  for (size_t j = 0; j < (size_t)V * C; j++)
    dtable[j] = (float)acc[j];
  free(acc);
}
