/* model.c: a model in memory, shared by every verb: the weights, arena, scratch and state (KV caches) of one
 * command (RtRun, allocated once per command), loading weights from safetensors (or the embedded
 * image), initialising them as the spec says, reading token files, and the scratch sizes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"

/* The program's own answer (RtModel.scratch_floats), at least one cache line; NULL (a hand-written
 * test model) needs none. */
size_t rt_model_scratch_floats(const RtModel *m, int training) {
  size_t s = m->scratch_floats ? m->scratch_floats(training) : 0;
  return s > 16 ? s : 16;
}

int64_t rt_model_state_floats(const RtModel *m, int batch) {
  int64_t n = 0;
  for (int i = 0; i < m->nstate; i++) n += (int64_t)batch * m->state[i].row_floats;
  return n;
}

int rt_run_init(RtRun *r, const RtModel *m, RtError *err) {
  memset(r, 0, sizeof *r);
  r->m = m;
  r->W = rt_xalloc((size_t)m->weight_bytes);
  r->arena = rt_xalloc((size_t)m->arena_bytes);
  r->scratch = rt_xalloc(rt_model_scratch_floats(m, 0) * sizeof(float));
  if (!r->W || !r->arena || !r->scratch) return rt_fail(err, "out of memory allocating the model");
  return 0;
}

int rt_run_kv(RtRun *r, int batch, RtError *err) {
  const RtModel *m = r->m;
  r->state = calloc((size_t)(m->nstate ? m->nstate : 1), sizeof *r->state);
  r->statemem = rt_xalloc((size_t)rt_model_state_floats(m, batch) * sizeof(float) + 64);
  if (!r->state || !r->statemem) return rt_fail(err, "out of memory allocating the state (KV cache)");
  float *p = r->statemem;
  for (int i = 0; i < m->nstate; i++) {
    r->state[i] = p;
    p += (size_t)batch * (size_t)m->state[i].row_floats;
  }
  r->state_batch = batch;
  return 0;
}

void rt_run_free(RtRun *r) {
  rt_gemm_constant(NULL, 0); /* whatever rt_run_weights_readonly declared */
  free(r->W);
  free(r->arena);
  free(r->scratch);
  free(r->state);
  free(r->statemem);
}

/* Loads every parameter from a safetensors file (or the embedded image) into r->W. */
int rt_run_load_weights(RtRun *r, const char *path, RtError *err) {
  const RtModel *m = r->m;
  RtSafetensors *st = NULL;
  if (path) {
    if (rt_st_open(&st, path, err)) return -1;
  } else if (m->embedded_weights) {
    if (rt_st_open_buffer(&st, m->embedded_weights, (size_t)(m->embedded_end - m->embedded_weights),
                          "<embedded weights>", err))
      return -1;
    path = "<embedded weights>";
  } else {
    return rt_fail(err, "--weights FILE is required (this program has no embedded weights)");
  }
  int rc = 0;
  for (int i = 0; i < m->nparams && rc == 0; i++) {
    const RtParamInfo *p = &m->params[i];
    const RtTensor *t = rt_st_find(st, p->name);
    if (!t) {
      rc = rt_fail(err, "%s: tensor '%s' is missing (the model needs %d parameters)", path, p->name, m->nparams);
      break;
    }
    int same = t->ndim == p->ndim;
    for (int k = 0; same && k < p->ndim; k++) same = t->shape[k] == p->shape[k];
    if (!same) {
      char want[128], got[128];
      size_t a = 0, b = 0;
      for (int k = 0; k < p->ndim; k++) a += (size_t)snprintf(want + a, sizeof want - a, k ? ",%lld" : "%lld", (long long)p->shape[k]);
      for (int k = 0; k < t->ndim && b < sizeof got; k++)
        b += (size_t)snprintf(got + b, sizeof got - b, k ? ",%lld" : "%lld", (long long)t->shape[k]);
      want[a] = 0;
      got[b < sizeof got ? b : sizeof got - 1] = 0;
      rc = rt_fail(err, "%s: tensor '%s' has shape [%s], the model needs [%s]", path, p->name, got, want);
      break;
    }
    if (t->dtype != RT_DT_F32 && t->dtype != RT_DT_F16 && t->dtype != RT_DT_BF16 && t->dtype != RT_DT_F64) {
      rc = rt_fail(err, "%s: tensor '%s' has dtype %s, expected a float type", path, p->name, rt_dtype_name(t->dtype));
      break;
    }
    void *dst = r->W + p->offset;
    if (t->dtype == p->dtype) { /* stored as the file has it: the bytes as they are */
      memcpy(dst, t->data, (size_t)p->nbytes);
    } else if (p->dtype == RT_DT_F32) {
      rc = rt_tensor_to_f32(t, dst, err);
    } else { /* another float type into 16-bit storage: through f32, rounded to nearest even */
      float *tmp = malloc((size_t)rt_param_numel(p) * sizeof(float) + 1);
      if (!tmp) rc = rt_fail(err, "out of memory converting '%s'", p->name);
      if (!rc) rc = rt_tensor_to_f32(t, tmp, err);
      if (!rc) rt_param_store_f32(p, r->W, tmp);
      free(tmp);
    }
  }
  rt_st_close(st);
  return rc;
}

void rt_run_weights_readonly(RtRun *r) {
  if (rt_gemm_pack_weights()) rt_gemm_constant(r->W, (size_t)r->m->weight_bytes);
}

/* ---- random numbers for init ---- */

float rt_normal(RtRng *g) {
  /* Box-Muller on two uniforms in (0,1]. */
  float u1 = 1.0f - rt_rng_uniform(g), u2 = rt_rng_uniform(g);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

void rt_param_store_f32(const RtParamInfo *p, void *W, const float *src) {
  void *dst = (unsigned char *)W + p->offset;
  size_t n = (size_t)rt_param_numel(p);
  if (p->dtype == RT_DT_BF16)
    rt_cast_f32_bf16(dst, src, n);
  else if (p->dtype == RT_DT_F16)
    rt_cast_f32_f16(dst, src, n);
  else if (dst != (const void *)src)
    memcpy(dst, src, n * sizeof(float));
}

int rt_model_require_f32(const RtModel *m, const char *what, RtError *err) {
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i].dtype != RT_DT_F32 || m->params[i].format != RT_FMT_DENSE)
      return rt_fail(err, "%s needs every parameter stored as dense f32; '%s' is stored as %s (built with the store "
                     "pass: rebuild without it to train)",
                     what, m->params[i].name, rt_dtype_name(m->params[i].dtype));
  return 0;
}

/* Initialises every parameter of W as the spec says, from a PCG32 seeded with seed: values drawn
 * in f32 (the same stream whatever the storage), then stored in each parameter's dtype. */
int rt_prog_init_weights(const RtModel *m, void *W, uint64_t seed, RtError *err) {
  RtRng g;
  rt_rng_seed(&g, seed);
  for (int i = 0; i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    int64_t k = rt_param_numel(p);
    float *w = p->dtype == RT_DT_F32 ? (float *)((unsigned char *)W + p->offset) : malloc((size_t)k * sizeof(float) + 1);
    if (!w) return rt_fail(err, "out of memory initialising '%s'", p->name);
    for (int64_t j = 0; j < k; j++) {
      switch (p->init) {
      case RT_INIT_ZEROS: w[j] = 0.0f; break;
      case RT_INIT_ONES: w[j] = 1.0f; break;
      case RT_INIT_NORMAL: w[j] = p->init_arg * rt_normal(&g); break;
      case RT_INIT_UNIFORM: w[j] = p->init_arg * (2.0f * rt_rng_uniform(&g) - 1.0f); break;
      case RT_INIT_SINUSOID: break;
      }
    }
    if (p->init == RT_INIT_SINUSOID && p->ndim == 2) rt_sinusoid(w, (int)p->shape[0], (int)p->shape[1]);
    if (p->dtype != RT_DT_F32) {
      rt_param_store_f32(p, W, w);
      free(w);
    }
  }
  return 0;
}

/* load_weights into any buffer of weight_bytes bytes (path NULL: the embedded weights). */
int rt_prog_load_weights(const RtModel *m, void *W, const char *path, RtError *err) {
  RtRun r;
  memset(&r, 0, sizeof r);
  r.m = m;
  r.W = W;
  return rt_run_load_weights(&r, path, err);
}

/* Reads a token file (int32/int64 [B,T]) into int32 ids, checking shapes and ranges. */
int rt_prog_read_tokens(const RtModel *m, const char *path, int32_t **ids, int *B, int *T, RtError *err) {
  RtNpy a;
  if (rt_npy_read(path, &a, err)) return -1;
  int rc = 0;
  if (a.dtype != RT_DT_I32 && a.dtype != RT_DT_I64)
    rc = rt_fail(err, "%s: tokens must be int32 or int64, not %s", path, rt_dtype_name(a.dtype));
  else if (a.ndim != 2)
    rc = rt_fail(err, "%s: tokens must be [B,T], got %d dimensions", path, a.ndim);
  else if (a.shape[0] < 1 || a.shape[0] > m->batch || a.shape[1] < 1 || a.shape[1] > m->context)
    rc = rt_fail(err, "%s: tokens [%lld,%lld] exceed the compiled shape [%lld,%lld] (or are empty)", path,
                 (long long)a.shape[0], (long long)a.shape[1], (long long)m->batch, (long long)m->context);
  if (rc) {
    rt_npy_free(&a);
    return rc;
  }
  size_t n = (size_t)(a.shape[0] * a.shape[1]);
  *ids = malloc(n * sizeof(int32_t));
  if (!*ids) {
    rt_npy_free(&a);
    return rt_fail(err, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    int64_t v = a.dtype == RT_DT_I32 ? ((int32_t *)a.data)[i] : ((int64_t *)a.data)[i];
    if (v < 0 || v >= m->vocab) {
      rc = rt_fail(err, "%s: token %lld at [%lld,%lld] is outside the vocabulary [0,%lld)", path, (long long)v,
                   (long long)(i / (size_t)a.shape[1]), (long long)(i % (size_t)a.shape[1]), (long long)m->vocab);
      break;
    }
    (*ids)[i] = (int32_t)v;
  }
  *B = (int)a.shape[0];
  *T = (int)a.shape[1];
  rt_npy_free(&a);
  if (rc) {
    free(*ids);
    *ids = NULL;
  }
  return rc;
}

size_t rt_out_floats(const RtModel *m, int B, int T) {
  return (size_t)B * (size_t)(m->out_per_token ? T : 1) * (size_t)m->out_dim;
}
