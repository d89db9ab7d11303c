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
  RtSegState st; /* the same slots a segment-memory run carries (segments.c) */
  if (rt_seg_state_init(&st, r->m, batch, err)) return -1;
  r->state = st.slot;
  r->statemem = st.mem;
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

/* "4,64" into buf: a shape for messages. */
static const char *shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t k = 0;
  buf[0] = 0;
  for (int i = 0; i < ndim && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)shape[i]);
  return buf;
}

static int same_shape(const RtTensor *t, int ndim, const int64_t *shape) {
  int same = t->ndim == ndim;
  for (int k = 0; same && k < ndim; k++) same = t->shape[k] == shape[k];
  return same;
}

static int is_float_dtype(RtDType dt) {
  return dt == RT_DT_F32 || dt == RT_DT_F16 || dt == RT_DT_BF16 || dt == RT_DT_F64;
}

/* A float tensor t of p's (logical) shape into p's storage: as it is when the dtypes agree (dense),
 * else through f32 (rounded to the dtype, or quantised). */
static int load_float(const RtParamInfo *p, const RtTensor *t, unsigned char *W, RtError *err) {
  void *dst = W + p->offset;
  if (p->format == RT_FMT_DENSE && t->dtype == p->dtype) { /* stored as the file has it: the bytes as they are */
    memcpy(dst, t->data, (size_t)p->nbytes);
    return 0;
  }
  if (p->format == RT_FMT_DENSE && p->dtype == RT_DT_F32) return rt_tensor_to_f32(t, dst, err);
  float *tmp = malloc((size_t)rt_param_numel(p) * sizeof(float) + 1);
  if (!tmp) return rt_fail(err, "out of memory converting '%s'", p->name);
  int rc = rt_tensor_to_f32(t, tmp, err);
  if (!rc) rc = rt_param_store_f32(p, W, tmp, err);
  free(tmp);
  return rc;
}

/* The file's form of an [N,K] weight in quantised format f: its values (NAME) and scales
 * (NAME.scale), their dtypes and shapes. */
typedef struct QuantForm {
  RtDType vdt, sdt;
  int vndim, sndim;
  int64_t vshape[2], sshape[2];
} QuantForm;

static QuantForm quant_form(RtFormat f, int64_t N, int64_t K) {
  QuantForm q = {rt_quant_value_dtype(f), rt_quant_scale_dtype(f), 2, f == RT_FMT_I8_ROW ? 1 : 2,
                 {N, f == RT_FMT_Q4_0 ? K / 2 : K}, {N, K / 32}};
  return q;
}

/* "q8_0: I8 [4,64] + F16 [4,2] scales" into buf (named: with the format's name first). */
static const char *quant_form_str(char *buf, size_t cap, RtFormat f, int64_t N, int64_t K, int named) {
  QuantForm q = quant_form(f, N, K);
  char a[64], b[64];
  snprintf(buf, cap, "%s%s%s [%s] + %s [%s] scales", named ? rt_format_name(f) : "", named ? ": " : "",
           rt_dtype_name(q.vdt), shape_str(a, sizeof a, q.vndim, q.vshape), rt_dtype_name(q.sdt),
           shape_str(b, sizeof b, q.sndim, q.sshape));
  return buf;
}

/* 1 when values v and scales s (may be NULL) are the file form of an [N,K] weight in format f. */
static int is_quant_form(RtFormat f, const RtTensor *v, const RtTensor *s, int64_t N, int64_t K) {
  if (rt_quant_check(f, N, K, NULL)) return 0;
  QuantForm q = quant_form(f, N, K);
  return s && v->dtype == q.vdt && same_shape(v, q.vndim, q.vshape) && s->dtype == q.sdt &&
         same_shape(s, q.sndim, q.sshape);
}

/* An already-quantised pair (values v, scales NAME.scale) for quantised parameter p: checked
 * against p's format and copied as it is. */
static int load_quant_pair(const RtSafetensors *st, const char *path, const RtParamInfo *p, const RtTensor *v,
                           unsigned char *W, RtError *err) {
  RtFormat f = p->format;
  int64_t N = p->shape[0], K = p->shape[1];
  char sname[512], want[160], got[64], wshape[64];
  snprintf(sname, sizeof sname, "%s.scale", p->name);
  const RtTensor *s = rt_st_find(st, sname);
  for (int g = RT_FMT_I8_ROW; g < RT_FMT_COUNT; g++)
    if (g != (int)f && is_quant_form((RtFormat)g, v, s, N, K)) {
      char have[128];
      return rt_fail(err, "%s: tensor '%s' is %s (%s), but this program stores it as %s (%s): give it as a float "
                     "tensor [%lld,%lld] (quantised at load)", path, p->name, rt_format_name((RtFormat)g),
                     quant_form_str(have, sizeof have, (RtFormat)g, N, K, 0), rt_format_name(f),
                     quant_form_str(want, sizeof want, f, N, K, 0), (long long)N, (long long)K);
    }
  quant_form_str(want, sizeof want, f, N, K, 1);
  QuantForm q = quant_form(f, N, K);
  if (v->dtype != q.vdt)
    return rt_fail(err, "%s: tensor '%s' has dtype %s, expected a float type [%lld,%lld] or the quantised pair (%s)",
                   path, p->name, rt_dtype_name(v->dtype), (long long)N, (long long)K, want);
  if (!same_shape(v, q.vndim, q.vshape))
    return rt_fail(err, "%s: tensor '%s' has shape [%s], expected %s [%s] (%s)", path, p->name,
                   shape_str(got, sizeof got, v->ndim, v->shape), rt_dtype_name(q.vdt),
                   shape_str(wshape, sizeof wshape, q.vndim, q.vshape), want);
  if (!s)
    return rt_fail(err, "%s: tensor '%s' is missing: the quantised tensor '%s' needs its scales (%s)", path, sname,
                   p->name, want);
  if (s->dtype != q.sdt)
    return rt_fail(err, "%s: tensor '%s' has dtype %s, expected %s (%s)", path, sname, rt_dtype_name(s->dtype),
                   rt_dtype_name(q.sdt), want);
  if (!same_shape(s, q.sndim, q.sshape))
    return rt_fail(err, "%s: tensor '%s' has shape [%s], expected %s [%s] (%s)", path, sname,
                   shape_str(got, sizeof got, s->ndim, s->shape), rt_dtype_name(q.sdt),
                   shape_str(wshape, sizeof wshape, q.sndim, q.sshape), want);
  int64_t ns = rt_quant_scale_count(f, N, K), per_row = ns / N;
  for (int64_t i = 0; i < ns; i++) {
    float d = q.sdt == RT_DT_F32 ? ((const float *)s->data)[i] : rt_f16_to_f32(((const uint16_t *)s->data)[i]);
    if (!isfinite(d)) {
      if (f == RT_FMT_I8_ROW)
        return rt_fail(err, "%s: tensor '%s' has a non-finite scale (%g) for row %lld", path, sname, (double)d,
                       (long long)i);
      return rt_fail(err, "%s: tensor '%s' has a non-finite scale (%g) for row %lld, block %lld", path, sname,
                     (double)d, (long long)(i / per_row), (long long)(i % per_row));
    }
  }
  memcpy(W + p->offset, v->data, v->nbytes);
  memcpy(W + p->aux[0].offset, s->data, s->nbytes);
  return 0;
}

/* Loads every parameter from a safetensors file (or the embedded image) into r->W. Tensors the
 * model does not name are ignored (a NAME.scale next to a dense or float parameter too). */
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
  int64_t **sel = calloc((size_t)m->nparams + 1, sizeof *sel); /* structured pruning: each group's kept units */
  if (!sel) rc = rt_fail(err, "out of memory");
  int nneed = 0; /* the parameters this file gives: the student's, or (r->teacher) the teacher's */
  for (int i = 0; i < m->nparams; i++) nneed += rt_param_is_teacher(m, &m->params[i]) == !!r->teacher;
  size_t skip = r->teacher ? strlen(m->teacher_prefix) : 0;
  for (int i = 0; i < m->nparams && rc == 0; i++) {
    const RtParamInfo *p = &m->params[i];
    if (rt_param_is_teacher(m, p) != !!r->teacher) continue;
    const RtTensor *t = rt_st_find(st, p->name + skip);
    if (!t) {
      rc = rt_fail(err, "%s: tensor '%s' is missing (the %s needs %d parameters)", path, p->name + skip,
                   r->teacher ? "teacher" : "model", nneed);
      break;
    }
    if (r->teacher && !same_shape(t, p->ndim, p->shape)) {
      char want[128], got[128];
      rc = rt_fail(err, "%s: tensor '%s' has shape [%s], the teacher needs [%s]", path, p->name + skip,
                   shape_str(got, sizeof got, t->ndim, t->shape), shape_str(want, sizeof want, p->ndim, p->shape));
      break;
    }
    if ((rt_prune_is_full(p, t) || p->format == RT_FMT_CSR) && is_float_dtype(t->dtype)) {
      /* a slice of the full tensor (structured pruning), or dense values packed as csr */
      float *x = malloc((size_t)rt_param_numel(p) * sizeof(float) + 1);
      RtError e;
      if (!x)
        rc = rt_fail(err, "out of memory loading '%s'", p->name);
      else if (rt_prune_is_full(p, t))
        rc = rt_prune_select_load(m, st, path, p, t, sel, x, err);
      else if (!same_shape(t, p->ndim, p->shape)) {
        char want[128], got[128];
        rc = rt_fail(err, "%s: tensor '%s' has shape [%s], the model needs [%s] (dense f32 values, packed as csr at "
                     "load)", path, p->name, shape_str(got, sizeof got, t->ndim, t->shape),
                     shape_str(want, sizeof want, p->ndim, p->shape));
      } else if (rt_tensor_to_f32(t, x, &e))
        rc = rt_fail(err, "%s: %s", path, e.msg);
      if (!rc && p->format == RT_FMT_CSR) /* x is ours: masked in place and packed */
        rc = rt_prune_pack_csr(p, r->W, x, &e) ? rt_fail(err, "%s: %s", path, e.msg) : 0;
      else if (!rc && (rc = rt_param_store_f32(p, r->W, x, &e)) != 0)
        rt_fail(err, "%s: %s", path, e.msg);
      free(x);
      continue;
    }
    if (p->format != RT_FMT_DENSE && (t->dtype == RT_DT_I8 || t->dtype == RT_DT_U8)) {
      rc = load_quant_pair(st, path, p, t, r->W, err);
      continue;
    }
    char want[128], got[128];
    if (!same_shape(t, p->ndim, p->shape)) {
      rc = rt_fail(err, "%s: tensor '%s' has shape [%s], the model needs [%s]", path, p->name,
                   shape_str(got, sizeof got, t->ndim, t->shape), shape_str(want, sizeof want, p->ndim, p->shape));
      break;
    }
    if (!is_float_dtype(t->dtype)) {
      if (p->format == RT_FMT_DENSE)
        rc = rt_fail(err, "%s: tensor '%s' has dtype %s, expected a float type", path, p->name,
                     rt_dtype_name(t->dtype));
      else
        rc = rt_fail(err, "%s: tensor '%s' has dtype %s, expected a float type or the quantised pair (%s)", path,
                     p->name, rt_dtype_name(t->dtype),
                     quant_form_str(want, sizeof want, p->format, p->shape[0], p->shape[1], 1));
      break;
    }
    RtError e;
    if ((rc = load_float(p, t, r->W, &e)) != 0) rt_fail(err, "%s: %s", path, e.msg);
  }
  for (int i = 0; sel && i < m->nparams; i++) free(sel[i]);
  free(sel);
  rt_st_close(st);
  /* the masks of pruned dense parameters, from the loaded values (the trainer holds its own) */
  if (!rc && !r->no_masks && rt_model_has_masks(m)) rc = rt_masks_compute(m, (float *)r->W, NULL, NULL, -1, err);
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

int rt_param_store_f32(const RtParamInfo *p, void *W, const float *src, RtError *err) {
  void *dst = (unsigned char *)W + p->offset;
  size_t n = (size_t)rt_param_numel(p);
  if (p->format == RT_FMT_CSR) { /* the masked values packed (rt_prune_pack_csr masks a copy) */
    float *x = malloc(n * sizeof(float) + 1);
    if (!x) return rt_fail(err, "out of memory storing '%s'", p->name);
    memcpy(x, src, n * sizeof(float));
    int rc = rt_prune_pack_csr(p, W, x, err);
    free(x);
    return rc;
  }
  if (p->format != RT_FMT_DENSE) {
    RtError e;
    if (rt_quantize(p->format, dst, src, p->shape[0], p->shape[1], &e))
      return rt_fail(err, "'%s' (stored as %s): %s", p->name, rt_format_name(p->format), e.msg);
  } else if (p->dtype == RT_DT_BF16) {
    rt_cast_f32_bf16(dst, src, n);
  } else if (p->dtype == RT_DT_F16) {
    rt_cast_f32_f16(dst, src, n);
  } else if (dst != (const void *)src) {
    memcpy(dst, src, n * sizeof(float));
  }
  return 0;
}

int rt_model_require_f32(const RtModel *m, const char *what, RtError *err) {
  for (int i = 0; i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    if (p->format == RT_FMT_CSR)
      return rt_fail(err, "%s needs every parameter stored as dense f32; '%s' is stored as csr (the prune pass's "
                     "sparse storage, for inference): build the training program with prune before autodiff (it keeps "
                     "dense masked weights)", what, p->name);
    if (p->format != RT_FMT_DENSE)
      return rt_fail(err, "%s needs every parameter stored as dense f32; '%s' is stored as %s (built with the "
                     "quantize pass): quantised programs are for inference; rebuild without it to train",
                     what, p->name, rt_format_name(p->format));
    if (p->dtype != RT_DT_F32)
      return rt_fail(err, "%s needs every parameter stored as dense f32; '%s' is stored as %s (built with the store "
                     "pass: rebuild without it to train)",
                     what, p->name, rt_dtype_name(p->dtype));
  }
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
    int in_place = p->dtype == RT_DT_F32 && p->format == RT_FMT_DENSE;
    float *w = in_place ? (float *)((unsigned char *)W + p->offset) : malloc((size_t)k * sizeof(float) + 1);
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
    if (!in_place) {
      int rc = rt_param_store_f32(p, W, w, err);
      free(w);
      if (rc) return rc;
    }
  }
  return 0;
}

int64_t rt_model_export_bytes(const RtModel *m) {
  int64_t n = 0;
  for (int i = 0; i < m->nparams; i++) {
    if (rt_param_is_teacher(m, &m->params[i])) continue; /* not in the student's files */
    n += m->params[i].format == RT_FMT_CSR ? rt_param_numel(&m->params[i]) * 4 : m->params[i].nbytes; /* dense */
    for (int a = 0; a < m->params[i].naux; a++) n += m->params[i].aux[a].nbytes;
  }
  return n;
}

int rt_prog_write_weights(const RtModel *m, const void *W, const char *path, const char *const *meta, int nmeta,
                          RtError *err) {
  return rt_prog_write_weights_extra(m, W, path, meta, nmeta, NULL, 0, err);
}

int rt_prog_write_weights_extra(const RtModel *m, const void *W, const char *path, const char *const *meta,
                                int nmeta, const RtTensor *extra, int nextra, RtError *err) {
  int nt = nextra;
  for (int i = 0; i < m->nparams; i++) nt += 1 + rt_format_has_scales(m->params[i].format);
  RtTensor *ts = calloc((size_t)nt + 1, sizeof *ts);
  /* what this write allocates per parameter: a quantised one's scale-tensor name, a csr one's dense values */
  void **owned = calloc((size_t)m->nparams + 1, sizeof *owned);
  if (!ts || !owned) {
    free(ts);
    free(owned);
    return rt_fail(err, "%s: out of memory", path);
  }
  int n = 0, rc = 0;
  for (int i = 0; i < m->nparams && !rc; i++) {
    const RtParamInfo *p = &m->params[i];
    if (rt_param_is_teacher(m, p)) continue; /* the teacher's come from its own file */
    RtTensor *t = &ts[n++];
    t->name = p->name;
    t->dtype = p->dtype; /* as stored: a bf16 parameter is written as BF16, a quantised one as its values */
    t->data = (const unsigned char *)W + p->offset;
    t->nbytes = (size_t)p->nbytes;
    if (p->format == RT_FMT_CSR) { /* written dense: the masked f32 [N,K] matrix */
      float *x = malloc((size_t)rt_param_numel(p) * sizeof(float) + 1);
      if (!x) {
        rc = rt_fail(err, "%s: out of memory", path);
        break;
      }
      rt_csr_unpack(x, (const unsigned char *)W + p->offset, p->shape[0], p->shape[1], p->prune ? p->prune->nnz : 0);
      owned[i] = x;
      t->dtype = RT_DT_F32;
      t->data = (const unsigned char *)x;
      t->nbytes = (size_t)rt_param_numel(p) * sizeof(float);
      t->ndim = p->ndim;
      for (int d = 0; d < p->ndim; d++) t->shape[d] = p->shape[d];
      continue;
    }
    if (p->format == RT_FMT_DENSE) {
      t->ndim = p->ndim;
      for (int d = 0; d < p->ndim; d++) t->shape[d] = p->shape[d];
      continue;
    }
    QuantForm q = quant_form(p->format, p->shape[0], p->shape[1]);
    t->ndim = q.vndim;
    memcpy(t->shape, q.vshape, sizeof q.vshape);
    size_t len = strlen(p->name) + sizeof ".scale";
    char *sname = malloc(len);
    if (!(owned[i] = sname)) {
      rc = rt_fail(err, "%s: out of memory", path);
      break;
    }
    snprintf(sname, len, "%s.scale", p->name);
    RtTensor *s = &ts[n++];
    s->name = sname;
    s->dtype = p->aux[0].dtype;
    s->ndim = q.sndim;
    memcpy(s->shape, q.sshape, sizeof q.sshape);
    s->data = (const unsigned char *)W + p->aux[0].offset;
    s->nbytes = (size_t)p->aux[0].nbytes;
  }
  for (int i = 0; i < nextra && !rc; i++) ts[n++] = extra[i];
  const char *plain[] = {"format", "pt", "modelc_model", m->name};
  if (!rc) rc = meta ? rt_st_write(path, ts, n, meta, nmeta, err) : rt_st_write(path, ts, n, plain, 2, err);
  for (int i = 0; i < m->nparams; i++) free(owned[i]);
  free(owned);
  free(ts);
  return rc;
}

/* load_weights into any buffer of weight_bytes bytes (path NULL: the embedded weights). */
int rt_prog_load_weights(const RtModel *m, void *W, const char *path, RtError *err) {
  RtRun r;
  memset(&r, 0, sizeof r);
  r.m = m;
  r.W = W;
  return rt_run_load_weights(&r, path, err);
}

int rt_prog_load_teacher(const RtModel *m, void *W, const char *path, RtError *err) {
  if (!m->teacher_prefix) return rt_fail(err, "--teacher-weights: this program does not distill (no train: distill:)");
  RtRun r;
  memset(&r, 0, sizeof r);
  r.m = m;
  r.W = W;
  r.teacher = 1;
  r.no_masks = 1;
  return rt_run_load_weights(&r, path, err);
}

int rt_prog_load_weights_unmasked(const RtModel *m, void *W, const char *path, RtError *err) {
  RtRun r;
  memset(&r, 0, sizeof r);
  r.m = m;
  r.W = W;
  r.no_masks = 1;
  return rt_run_load_weights(&r, path, err);
}

double rt_token_nll(const float *l, int64_t V, int target) {
  double mx = l[0], sum = 0;
  for (int64_t v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
  for (int64_t v = 0; v < V; v++) sum += exp(l[v] - mx);
  return mx + log(sum) - l[target];
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
  else if (a.shape[0] < 1 || a.shape[0] > m->batch || a.shape[1] < 1 || (a.shape[1] > m->context && !m->memory) ||
           a.shape[1] > 0x7fffffff / 2) /* a segment-memory model reads longer rows as segments (segments.c) */
    rc = rt_fail(err, "%s: tokens [%lld,%lld] exceed the compiled shape [%lld,%lld] (or are empty)", path,
                 (long long)a.shape[0], (long long)a.shape[1], (long long)m->batch, (long long)m->context);
  else if (m->time_multiple > 1 && a.shape[1] % m->time_multiple != 0)
    rc = rt_fail(err, "%s: tokens [%lld,%lld]: the model pools its sequence, so the length must be a multiple of %d",
                 path, (long long)a.shape[0], (long long)a.shape[1], m->time_multiple);
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
