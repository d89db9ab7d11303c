/* prog.c: the command line of every generated program (rt_main): info, init, forward, generate,
 * eval and bench over the model descriptor the generated code provides. Everything a user can get
 * wrong (flags, files, shapes, token ids) is reported as one clear line and exit status 1.
 *
 * Memory is allocated once per command: weights, arena, scratch, KV cache, outputs.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>


#include "../modelc_rt.h"
#include "../rt_internal.h"

enum { EXIT_OK = 0, EXIT_USER = 1 };

/* ---- options ---- */

typedef struct Opts {
  const char *weights, *tokens, *out, *prompt, *data, *logits_out;
  uint64_t seed;
  long n, top_k, runs, threads;
  double temperature, top_p;
  int no_cache;
  int have_n;
} Opts;


static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
  *out = v;
  return 0;
}

/* Parses argv[2..]; `allowed` is a space-separated list of the verb's options. */
static int parse_opts(const char *prog, const char *verb, int argc, char **argv, const char *allowed, Opts *o,
                      int *help) {
  memset(o, 0, sizeof *o);
  o->seed = 1337;
  o->n = 64;
  o->temperature = 1.0;
  o->top_p = 1.0;
  o->runs = 7;
  for (int i = 2; i < argc; i++) {
    char key[64];
    const char *val;
    int r = rt_next_opt(prog, verb, argc, argv, &i, allowed, "--no-cache", key, &val);
    if (r < 0) return EXIT_USER;
    if (r == 0) {
      *help = 1;
      return 0;
    }
    if (!strcmp(key, "--no-cache")) {
      o->no_cache = 1;
      continue;
    }
    long lv;
    double dv;
    if (!strcmp(key, "--weights")) o->weights = val;
    else if (!strcmp(key, "--tokens")) o->tokens = val;
    else if (!strcmp(key, "--out")) o->out = val;
    else if (!strcmp(key, "--prompt")) o->prompt = val;
    else if (!strcmp(key, "--data")) o->data = val;
    else if (!strcmp(key, "--logits-out")) o->logits_out = val;
    else if (!strcmp(key, "--seed")) {
      char *end;
      errno = 0;
      unsigned long long s = strtoull(val, &end, 10);
      if (errno || end == val || *end || val[0] == '-') return rt_usage_error(prog, verb, "bad --seed '%s'", val);
      o->seed = s;
    } else if (!strcmp(key, "-n")) {
      if (parse_long(val, 0, 1000000000L, &lv)) return rt_usage_error(prog, verb, "bad -n '%s'", val);
      o->n = lv;
      o->have_n = 1;
    } else if (!strcmp(key, "--top-k")) {
      if (parse_long(val, 0, 1L << 30, &lv)) return rt_usage_error(prog, verb, "bad --top-k '%s'", val);
      o->top_k = lv;
    } else if (!strcmp(key, "--runs")) {
      if (parse_long(val, 1, 1000, &lv)) return rt_usage_error(prog, verb, "bad --runs '%s' (1..1000)", val);
      o->runs = lv;
    } else if (!strcmp(key, "--threads")) {
      if (parse_long(val, 1, 1024, &lv)) return rt_usage_error(prog, verb, "bad --threads '%s'", val);
      o->threads = lv;
    } else if (!strcmp(key, "--temperature")) {
      if (parse_double(val, 0.0, 1e6, &dv)) return rt_usage_error(prog, verb, "bad --temperature '%s' (>= 0)", val);
      o->temperature = dv;
    } else if (!strcmp(key, "--top-p")) {
      if (parse_double(val, 0.0, 1.0, &dv) || dv <= 0)
        return rt_usage_error(prog, verb, "bad --top-p '%s' (0 < p <= 1)", val);
      o->top_p = dv;
    }
  }
  /* Every command: the pool (and single-threaded OpenBLAS) before any scratch is sized, since
   * the attention scratch holds one slice per thread. 0: MODELC_THREADS or the online CPUs. */
  rt_set_threads((int)o->threads);
  return 0;
}

/* ---- the model in memory ---- */

typedef struct Run {
  const RtModel *m;
  float *W;          /* weights */
  char *arena;
  float *scratch;
  RtKV *kv;          /* NULL until a cache is made */
  float *kvmem;
  int kv_batch;
} Run;

/* The attention-backward scratch size lives in runtime/backward.c. Referenced weakly: a program
 * whose train function uses the backward kernels links backward.o and so defines it; a program
 * that does not (inference only, or the tests' hand-written models) needs no such scratch. */
#if defined(__GNUC__)
extern size_t rt_attention_dx_scratch_floats(int T, int C, int n_head) __attribute__((weak));
#endif

size_t rt_model_scratch_floats(const RtModel *m, int training) {
  size_t s = 16;
  if (m->kv_slots) {
    size_t a = rt_attention_scratch_floats((int)m->attn_t, (int)m->attn_c, (int)m->attn_heads);
    size_t b = rt_attention_kv_scratch_floats((int)m->attn_t, (int)m->attn_c, (int)m->attn_heads);
    s = a > b ? a : b;
#if defined(__GNUC__)
    if (training && rt_attention_dx_scratch_floats) {
      size_t c = rt_attention_dx_scratch_floats((int)m->attn_t, (int)m->attn_c, (int)m->attn_heads);
      s = c > s ? c : s;
    }
#endif
  }
  return s;
}

static int run_init(Run *r, const RtModel *m, RtError *err) {
  memset(r, 0, sizeof *r);
  r->m = m;
  r->W = rt_xalloc((size_t)m->weight_floats * sizeof(float));
  r->arena = rt_xalloc((size_t)m->arena_bytes);
  r->scratch = rt_xalloc(rt_model_scratch_floats(m, 0) * sizeof(float));
  if (!r->W || !r->arena || !r->scratch) return rt_fail(err, "out of memory allocating the model");
  return 0;
}

static int run_kv(Run *r, int batch, RtError *err) {
  const RtModel *m = r->m;
  size_t per = (size_t)batch * (size_t)m->context * (size_t)m->attn_c;
  r->kv = calloc((size_t)(m->kv_slots ? m->kv_slots : 1), sizeof *r->kv);
  r->kvmem = rt_xalloc(2 * per * (size_t)m->kv_slots * sizeof(float));
  if (!r->kv || !r->kvmem) return rt_fail(err, "out of memory allocating the KV cache");
  for (int i = 0; i < m->kv_slots; i++) {
    r->kv[i].k = r->kvmem + (size_t)(2 * i) * per;
    r->kv[i].v = r->kvmem + (size_t)(2 * i + 1) * per;
  }
  r->kv_batch = batch;
  return 0;
}

static void run_free(Run *r) {
  free(r->W);
  free(r->arena);
  free(r->scratch);
  free(r->kv);
  free(r->kvmem);
}


/* Loads every stored parameter from a safetensors file (or the embedded image) into r->W. */
static int load_weights(Run *r, const char *path, RtError *err) {
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
    if (!p->stored) continue;
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
    rc = rt_tensor_to_f32(t, r->W + p->offset, err);
  }
  rt_st_close(st);
  return rc;
}

/* ---- random numbers for init ---- */

static float normal(RtRng *g) {
  /* Box-Muller on two uniforms in (0,1]. */
  float u1 = 1.0f - rt_rng_uniform(g), u2 = rt_rng_uniform(g);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

/* ---- shared with runtime/train.c (which declares these three) ---- */

/* Initialises every stored parameter of W as the spec says, from a PCG32 seeded with seed. */
void rt_prog_init_weights(const RtModel *m, float *W, uint64_t seed) {
  RtRng g;
  rt_rng_seed(&g, seed);
  for (int i = 0; i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!p->stored) continue;
    float *w = W + p->offset;
    int64_t k = rt_param_numel(p);
    for (int64_t j = 0; j < k; j++) {
      switch (p->init) {
      case RT_INIT_ZEROS: w[j] = 0.0f; break;
      case RT_INIT_ONES: w[j] = 1.0f; break;
      case RT_INIT_NORMAL: w[j] = p->init_arg * normal(&g); break;
      case RT_INIT_UNIFORM: w[j] = p->init_arg * (2.0f * rt_rng_uniform(&g) - 1.0f); break;
      case RT_INIT_SINUSOID: break;
      }
    }
    if (p->init == RT_INIT_SINUSOID && p->ndim == 2) rt_sinusoid(w, (int)p->shape[0], (int)p->shape[1]);
  }
}

static int read_tokens(const RtModel *m, const char *path, int32_t **ids, int *B, int *T, RtError *err);

/* load_weights into any buffer of weight_floats floats (path NULL: the embedded weights). */
int rt_prog_load_weights(const RtModel *m, float *W, const char *path, RtError *err) {
  Run r;
  memset(&r, 0, sizeof r);
  r.m = m;
  r.W = W;
  return load_weights(&r, path, err);
}

/* read_tokens: int32/int64 [B,T] within the compiled shape and the vocabulary; *ids is malloc'd. */
int rt_prog_read_tokens(const RtModel *m, const char *path, int32_t **ids, int *B, int *T, RtError *err) {
  return read_tokens(m, path, ids, B, T, err);
}

/* runtime/train.c */
int rt_prog_train(const char *prog, int argc, char **argv, const RtModel *m);
int rt_prog_grad(const char *prog, int argc, char **argv, const RtModel *m);

/* ---- verbs ---- */

static const char *prog_name(const char *argv0) {
  const char *s = strrchr(argv0, '/');
  return s ? s + 1 : argv0;
}

static void print_info(const RtModel *m, FILE *o) {
  fprintf(o, "model:            %s (%s)\n", m->name, m->kind);
  fprintf(o, "compiled shapes:  batch %lld, context %lld, vocab %lld, output %s[%lld]\n", (long long)m->batch,
          (long long)m->context, (long long)m->vocab, m->out_per_token ? "per token " : "per sequence ",
          (long long)m->out_dim);
  fprintf(o, "parameters:       %lld\n", (long long)m->param_count);
  fprintf(o, "parameter bytes:  %lld\n", (long long)m->param_bytes);
  fprintf(o, "forward FLOPs:    %lld per token\n", (long long)m->flops_per_token);
  fprintf(o, "arena bytes:      %lld (planned activations)\n", (long long)m->arena_bytes);
  if (m->train)
    fprintf(o, "training:         %lld FLOPs per token (forward, recompute, backward), train arena %lld bytes\n",
            (long long)m->train_flops_per_token, (long long)m->train_arena_bytes);
  if (m->train)
    fprintf(o, "precision:        %s\n", m->train_precision == RT_PREC_BF16   ? "bf16 (activations stored in bfloat16)"
                                      : m->train_precision == RT_PREC_FP16 ? "fp16 (activations stored in binary16, "
                                                                              "dynamic loss scaling)"
                                                                            : "fp32");
  else
    fprintf(o, "training:         not compiled in (add the autodiff pass)\n");
  fprintf(o, "KV cache bytes:   %lld at batch 1 (%d attention layers)\n",
          (long long)(2 * (int64_t)m->kv_slots * m->context * m->attn_c * 4), m->kv_slots);
  fprintf(o, "compile options:  %s\n", m->compile_options);
}

static int cmd_info(const char *prog, int argc, char **argv, const RtModel *m) {
  Opts o;
  int help = 0;
  if (parse_opts(prog, "info", argc, argv, "", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s info\n\nPrint the model's name, parameters, bytes, FLOPs per token, planned arena and\n"
           "compile options. With embedded weights, also checks them.\n", prog);
    return EXIT_OK;
  }
  print_info(m, stdout);
  if (m->embedded_weights) {
    Run r;
    RtError err;
    if (run_init(&r, m, &err) || load_weights(&r, NULL, &err)) {
      fprintf(stderr, "%s: error: %s\n", prog, err.msg);
      run_free(&r);
      return EXIT_USER;
    }
    printf("weights:          embedded (%lld bytes), checked\n", (long long)(m->embedded_end - m->embedded_weights));
    run_free(&r);
  } else {
    printf("weights:          not embedded (pass --weights FILE)\n");
  }
  return EXIT_OK;
}

static int cmd_init(const char *prog, int argc, char **argv, const RtModel *m) {
  Opts o;
  int help = 0;
  if (parse_opts(prog, "init", argc, argv, "--seed --out", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s init [--seed N] --out W.safetensors\n\nInitialise the parameters as the spec says "
           "(normal(0, 0.02) for linear and embedding\nweights, zeros for biases, ones for norm gains) with a "
           "seeded generator (default seed 1337),\nand write them as safetensors.\n", prog);
    return EXIT_OK;
  }
  if (!o.out) return rt_usage_error(prog, "init", "--out FILE is required");
  Run r;
  RtError err;
  if (run_init(&r, m, &err)) {
    fprintf(stderr, "%s: error: %s\n", prog, err.msg);
    return EXIT_USER;
  }
  rt_prog_init_weights(m, r.W, o.seed);
  RtTensor *ts = calloc((size_t)m->nparams + 1, sizeof *ts);
  int n = 0;
  for (int i = 0; i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!p->stored) continue;
    float *w = r.W + p->offset;
    int64_t k = rt_param_numel(p);
    ts[n].name = p->name;
    ts[n].dtype = RT_DT_F32;
    ts[n].ndim = p->ndim;
    for (int d = 0; d < p->ndim; d++) ts[n].shape[d] = p->shape[d];
    ts[n].data = w;
    ts[n].nbytes = (size_t)k * sizeof(float);
    n++;
  }
  const char *meta[] = {"format", "pt", "modelc_model", m->name};
  int rc = rt_st_write(o.out, ts, n, meta, 2, &err);
  free(ts);
  run_free(&r);
  if (rc) {
    fprintf(stderr, "%s: error: %s\n", prog, err.msg);
    return EXIT_USER;
  }
  return EXIT_OK;
}

/* Reads a token file (int32/int64 [B,T]) into int32 ids, checking shapes and ranges. */
static int read_tokens(const RtModel *m, const char *path, int32_t **ids, int *B, int *T, RtError *err) {
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

static size_t out_floats(const RtModel *m, int B, int T) {
  return (size_t)B * (size_t)(m->out_per_token ? T : 1) * (size_t)m->out_dim;
}

static int cmd_forward(const char *prog, int argc, char **argv, const RtModel *m) {
  Opts o;
  int help = 0;
  if (parse_opts(prog, "forward", argc, argv, "--weights --tokens --out --threads", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s forward [--weights W.safetensors] --tokens T.npy --out OUT.npy [--threads N]\n\n"
           "Run the model on token ids T (int32 or int64 [B,T], B <= %lld, T <= %lld) and write\n"
           "float32 %s.\n", prog, (long long)m->batch, (long long)m->context,
           m->out_per_token ? "logits [B,T,V]" : "outputs [B,classes]");
    return EXIT_OK;
  }
  if (!o.tokens) return rt_usage_error(prog, "forward", "--tokens FILE is required");
  if (!o.out) return rt_usage_error(prog, "forward", "--out FILE is required");
  RtError err;
  Run r;
  int32_t *ids = NULL;
  int B = 0, T = 0, rc = EXIT_OK;
  float *out = NULL;
  if (run_init(&r, m, &err) || load_weights(&r, o.weights, &err) || read_tokens(m, o.tokens, &ids, &B, &T, &err)) {
    rc = EXIT_USER;
  } else {
    out = rt_xalloc(out_floats(m, B, T) * sizeof(float));
    RtStep s = {B, T, 0, NULL, r.scratch, 0, 0.0f};
    m->forward(&s, r.arena, r.W, ids, out);
    int64_t shape[3] = {B, m->out_per_token ? T : m->out_dim, m->out_dim};
    if (rt_npy_write(o.out, RT_DT_F32, m->out_per_token ? 3 : 2, shape, out, &err)) rc = EXIT_USER;
  }
  if (rc) fprintf(stderr, "%s: error: %s\n", prog, err.msg);
  free(out);
  free(ids);
  run_free(&r);
  return rc;
}

static int is_lm(const RtModel *m) { return m->out_per_token && m->out_dim == m->vocab; }

static int cmd_generate(const char *prog, int argc, char **argv, const RtModel *m) {
  Opts o;
  int help = 0;
  if (parse_opts(prog, "generate", argc, argv,
                 "--weights --prompt -n --temperature --top-k --top-p --seed --no-cache --logits-out --threads", &o,
                 &help))
    return EXIT_USER;
  if (help) {
    printf("usage: %s generate [--weights W] --prompt TEXT [-n N] [--temperature X] [--top-k K]\n"
           "       [--top-p P] [--seed S] [--no-cache] [--logits-out L.npy] [--threads N]\n\n"
           "Continue TEXT by N tokens (default 64), streaming them to stdout. Uses the KV cache unless\n"
           "--no-cache (then every step recomputes the whole sequence). --temperature 0 is greedy.\n"
           "Defaults: temperature 1, top-k off, top-p 1 (off), seed 1337. Past the compiled context\n"
           "(%lld tokens) the window slides: its last half is re-encoded. --logits-out writes each\n"
           "step's logits [N,V].\n",
           prog, (long long)m->context);
    return EXIT_OK;
  }
  if (!is_lm(m)) return rt_usage_error(prog, "generate", "this model has no language-model head");
  if (!o.prompt || !o.prompt[0]) return rt_usage_error(prog, "generate", "--prompt TEXT is required (non-empty)");
  if (m->vocab < RT_BYTE_VOCAB)
    return rt_usage_error(prog, "generate", "the byte tokenizer needs a vocabulary of at least 256");
  RtError err;
  Run r;
  int rc = EXIT_OK;
  size_t plen = strlen(o.prompt);
  int ctx = (int)m->context;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)ctx);
  float *logits = rt_xalloc((size_t)ctx * (size_t)m->vocab * sizeof(float));
  float *probs = rt_xalloc((size_t)m->vocab * sizeof(float));
  int32_t *idx = rt_xalloc((size_t)m->vocab * sizeof(int32_t));
  float *lsave = o.logits_out ? rt_xalloc((size_t)(o.n ? o.n : 1) * (size_t)m->vocab * sizeof(float)) : NULL;
  if (run_init(&r, m, &err) || load_weights(&r, o.weights, &err) || run_kv(&r, 1, &err) || !ids || !logits ||
      !probs || !idx || (o.logits_out && !lsave)) {
    fprintf(stderr, "%s: error: %s\n", prog, err.msg[0] ? err.msg : "out of memory");
    rc = EXIT_USER;
    goto done;
  }
  /* keep the end of a prompt longer than the context, leaving room to generate */
  if (plen >= (size_t)ctx) {
    fprintf(stderr, "%s: note: prompt truncated to its last %d bytes\n", prog, ctx - 1);
    o.prompt += plen - (size_t)(ctx - 1);
    plen = (size_t)(ctx - 1);
  }
  int len = (int)rt_byte_encode(ids, o.prompt, plen);
  RtSampleParams sp = {(float)o.temperature, (int)o.top_k, (float)o.top_p};
  RtRng g;
  rt_rng_seed(&g, o.seed);
  /* prefill */
  RtStep s = {1, len, 0, o.no_cache ? NULL : r.kv, r.scratch, 0, 0.0f};
  m->forward(&s, r.arena, r.W, ids, logits);
  const float *last = logits + (size_t)(len - 1) * (size_t)m->vocab;
  long made = 0;
  for (; made < o.n; made++) {
    if (lsave) memcpy(lsave + (size_t)made * (size_t)m->vocab, last, (size_t)m->vocab * sizeof(float));
    int tok = rt_sample(last, (int)m->vocab, &sp, &g, probs, idx);
    if (tok < RT_BYTE_VOCAB) {
      putchar(tok);
    } else {
      printf("<%d>", tok);
    }
    fflush(stdout);
    if (made + 1 == o.n) {
      made++;
      break;
    }
    if (len >= ctx) {
      /* the window is full: keep its last half and re-encode it from position 0 (a sliding
       * window in steps of ctx/2, so the cache is rebuilt once every ctx/2 tokens) */
      int keep = ctx / 2;
      memmove(ids, ids + len - keep, (size_t)keep * sizeof(int32_t));
      len = keep;
      ids[len++] = tok;
      RtStep pre = {1, len, 0, o.no_cache ? NULL : r.kv, r.scratch, 0, 0.0f};
      m->forward(&pre, r.arena, r.W, ids, logits);
      last = logits + (size_t)(len - 1) * (size_t)m->vocab;
      continue;
    }
    ids[len++] = tok;
    if (o.no_cache) {
      RtStep full = {1, len, 0, NULL, r.scratch, 0, 0.0f};
      m->forward(&full, r.arena, r.W, ids, logits);
      last = logits + (size_t)(len - 1) * (size_t)m->vocab;
    } else {
      RtStep step = {1, 1, len - 1, r.kv, r.scratch, 0, 0.0f};
      m->forward(&step, r.arena, r.W, ids + len - 1, logits);
      last = logits;
    }
  }
  if (lsave) {
    int64_t shape[2] = {made, m->vocab};
    if (rt_npy_write(o.logits_out, RT_DT_F32, 2, shape, lsave, &err)) {
      fprintf(stderr, "%s: error: %s\n", prog, err.msg);
      rc = EXIT_USER;
    }
  }
done:
  free(ids);
  free(logits);
  free(probs);
  free(idx);
  free(lsave);
  run_free(&r);
  return rc;
}

static int cmd_eval(const char *prog, int argc, char **argv, const RtModel *m) {
  Opts o;
  int help = 0;
  if (parse_opts(prog, "eval", argc, argv, "--weights --data --threads", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s eval [--weights W] --data FILE\n\nMean next-token cross-entropy (nats) and bits per byte "
           "over the bytes of FILE, in\nwindows of the compiled context.\n", prog);
    return EXIT_OK;
  }
  if (!is_lm(m) || m->vocab < RT_BYTE_VOCAB) return rt_usage_error(prog, "eval", "eval needs a byte-level language model");
  if (!o.data) return rt_usage_error(prog, "eval", "--data FILE is required");
  RtError err;
  unsigned char *buf = NULL;
  size_t n = 0;
  if (rt_read_file(o.data, &buf, &n, &err)) {
    fprintf(stderr, "%s: error: %s\n", prog, err.msg);
    return EXIT_USER;
  }
  if (n < 2) {
    fprintf(stderr, "%s: error: %s: needs at least 2 bytes\n", prog, o.data);
    free(buf);
    return EXIT_USER;
  }
  Run r;
  int rc = EXIT_OK;
  int B = (int)m->batch, T = (int)m->context;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
  int32_t *tgt = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
  float *logits = rt_xalloc((size_t)B * (size_t)T * (size_t)m->vocab * sizeof(float));
  if (run_init(&r, m, &err) || load_weights(&r, o.weights, &err) || !ids || !tgt || !logits) {
    fprintf(stderr, "%s: error: %s\n", prog, err.msg);
    rc = EXIT_USER;
  } else {
    double total = 0;
    size_t count = 0, pos = 0;
    while (pos + 1 < n) {
      int nb = 0, nt = T;
      /* a batch of windows of T inputs and their next bytes; the last window may be shorter */
      size_t left = n - 1 - pos;
      if (left < (size_t)T) nt = (int)left;
      for (; nb < B && pos + 1 < n && n - 1 - pos >= (size_t)nt; nb++) {
        for (int t = 0; t < nt; t++) {
          ids[nb * nt + t] = buf[pos + (size_t)t];
          tgt[nb * nt + t] = buf[pos + (size_t)t + 1];
        }
        pos += (size_t)nt;
      }
      RtStep s = {nb, nt, 0, NULL, r.scratch, 0, 0.0f};
      m->forward(&s, r.arena, r.W, ids, logits);
      for (int i = 0; i < nb * nt; i++) {
        const float *l = logits + (size_t)i * (size_t)m->vocab;
        double mx = l[0], sum = 0;
        for (int v = 1; v < m->vocab; v++) mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < m->vocab; v++) sum += exp(l[v] - mx);
        total += mx + log(sum) - l[tgt[i]];
        count++;
      }
    }
    double loss = total / (double)count;
    printf("tokens:        %zu\nloss:          %.6f nats/token\nbits per byte: %.6f\n", count, loss,
           loss / log(2.0));
  }
  free(buf);
  free(ids);
  free(tgt);
  free(logits);
  run_free(&r);
  return rc;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int cmd_bench(const char *prog, int argc, char **argv, const RtModel *m) {
  Opts o;
  int help = 0;
  if (parse_opts(prog, "bench", argc, argv, "--weights --runs --threads --seed -n", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s bench [--weights W] [--runs N] [--threads N] [-n DECODE_TOKENS]\n\n"
           "Forward tokens/s at the full compiled batch and context, and decode tokens/s at batch 1\n"
           "with the KV cache (language models), as medians of N runs (default 7). Programs built\n"
           "with the autodiff pass also time one training step at the full compiled batch and\n"
           "context: train (forward + backward into the gradients) then AdamW over every stored\n"
           "parameter (lr 1e-4; betas, eps, weight decay from the spec), after a warm-up step.\n"
           "Without weights, the parameters are drawn at random (speed does not depend on their\n"
           "values). Prints 'key: value' lines.\n", prog);
    return EXIT_OK;
  }
  RtError err;
  Run r;
  int rc = EXIT_OK;
  int B = (int)m->batch, T = (int)m->context;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
  float *out = rt_xalloc(out_floats(m, B, T) * sizeof(float));
  double *times = calloc((size_t)o.runs, sizeof(double));
  RtRng g;
  rt_rng_seed(&g, o.seed);
  if (run_init(&r, m, &err) || !ids || !out || !times ||
      (o.weights || m->embedded_weights ? load_weights(&r, o.weights, &err) : 0)) {
    fprintf(stderr, "%s: error: %s\n", prog, err.msg);
    rc = EXIT_USER;
    goto done;
  }
  if (!o.weights && !m->embedded_weights)
    for (int64_t i = 0; i < m->weight_floats; i++) r.W[i] = 0.02f * normal(&g);
  for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(rt_rng_u32(&g) % (uint32_t)m->vocab);
  RtStep s = {B, T, 0, NULL, r.scratch, 0, 0.0f};
  m->forward(&s, r.arena, r.W, ids, out); /* warm-up */
  for (int k = 0; k < o.runs; k++) {
    double t0 = rt_now_seconds();
    m->forward(&s, r.arena, r.W, ids, out);
    times[k] = rt_now_seconds() - t0;
  }
  double fwd = median(times, (int)o.runs);
  printf("model: %s\nforward_batch: %d\nforward_context: %d\nforward_seconds: %.6f\nforward_tokens_per_s: %.1f\n",
         m->name, B, T, fwd, B * T / fwd);
  printf("forward_gflops: %.2f\n", (double)m->flops_per_token * B * T / fwd / 1e9);
  printf("threads: %d\n", rt_threads());
  if (is_lm(m) && m->kv_slots > 0) {
    if (run_kv(&r, 1, &err)) {
      fprintf(stderr, "%s: error: %s\n", prog, err.msg);
      rc = EXIT_USER;
      goto done;
    }
    int steps = o.have_n && o.n > 0 && o.n < T ? (int)o.n : T - 1;
    for (int k = 0; k < o.runs; k++) {
      RtStep p = {1, 1, 0, r.kv, r.scratch, 0, 0.0f};
      m->forward(&p, r.arena, r.W, ids, out);
      double t0 = rt_now_seconds();
      for (int t = 1; t <= steps; t++) {
        RtStep d = {1, 1, t, r.kv, r.scratch, 0, 0.0f};
        m->forward(&d, r.arena, r.W, ids + t, out);
      }
      times[k] = (rt_now_seconds() - t0) / steps;
    }
    double dec = median(times, (int)o.runs);
    printf("decode_tokens: %d\ndecode_seconds_per_token: %.6f\ndecode_tokens_per_s: %.1f\n", steps, dec, 1.0 / dec);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  long rss_inference = ru.ru_maxrss; /* peak_rss_kib: forward and decode only, as before */
  if (m->train) {
    /* One optimiser step as PROG train takes it with micro-batch = batch and no clipping: train
     * (forward + backward, gradients written into G) then AdamW on every stored parameter. The
     * arena and scratch are sized as runtime/train.c sizes them; the weights are trained in place
     * (speed does not depend on their values). */
    const RtTrainConfig *c = &m->train_config;
    int64_t nw = m->weight_floats;
    size_t ab = (size_t)(m->train_arena_bytes > m->arena_bytes ? m->train_arena_bytes : m->arena_bytes);
    size_t sf = rt_model_scratch_floats(m, 1);
    float *G = rt_xalloc((size_t)nw * sizeof(float)), *s1 = rt_xalloc((size_t)nw * sizeof(float));
    float *s2 = rt_xalloc((size_t)nw * sizeof(float)), *tscr = rt_xalloc(sf * sizeof(float));
    char *tarena = rt_xalloc(ab);
    int nb = m->out_per_token ? B * T : B;
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)nb);
    if (!G || !s1 || !s2 || !tscr || !tarena || !tgt) {
      fprintf(stderr, "%s: error: out of memory allocating the training state\n", prog);
      rc = EXIT_USER;
    } else {
      uint32_t ncls = (uint32_t)(m->out_per_token ? m->vocab : m->out_dim);
      for (int i = 0; i < nb; i++) tgt[i] = (int32_t)(rt_rng_u32(&g) % ncls);
      float beta1 = c->beta1 > 0 ? (float)c->beta1 : 0.9f, beta2 = c->beta2 > 0 ? (float)c->beta2 : 0.999f;
      float eps = c->eps > 0 ? (float)c->eps : 1e-8f;
      double loss = 0;
      for (int k = -1; k < (int)o.runs; k++) { /* k = -1: warm-up */
        RtStep st = {B, T, 0, NULL, tscr, 0, 1.0f};
        float l = 0;
        double t0 = rt_now_seconds();
        m->train(&st, tarena, r.W, ids, tgt, &l, G);
        for (int i = 0; i < m->nparams; i++) {
          const RtParamInfo *p = &m->params[i];
          if (!p->stored) continue;
          float wd = p->decay ? (float)c->weight_decay : 0.0f;
          rt_adamw(r.W + p->offset, G + p->offset, s1 + p->offset, s2 + p->offset, rt_param_numel(p), 1e-4f, beta1, beta2,
                   eps, wd, (int64_t)k + 2);
        }
        if (k >= 0) times[k] = rt_now_seconds() - t0;
        loss = l;
      }
      double ts = median(times, (int)o.runs);
      printf("train_batch: %d\ntrain_context: %d\ntrain_loss: %.4f\ntrain_step_seconds: %.6f\n"
             "train_tokens_per_s: %.1f\n", B, T, loss, ts, B * T / ts);
      if (m->train_flops_per_token > 0)
        printf("train_gflops: %.2f\n", (double)m->train_flops_per_token * B * T / ts / 1e9);
      getrusage(RUSAGE_SELF, &ru);
      printf("train_peak_rss_kib: %ld\n", ru.ru_maxrss);
    }
    free(G);
    free(s1);
    free(s2);
    free(tscr);
    free(tarena);
    free(tgt);
    if (rc != EXIT_OK) goto done;
  }
  printf("peak_rss_kib: %ld\narena_bytes: %lld\n", rss_inference, (long long)m->arena_bytes);
done:
  free(ids);
  free(out);
  free(times);
  run_free(&r);
  return rc;
}

int rt_main(int argc, char **argv, const RtModel *m) {
  const char *prog = prog_name(argc > 0 ? argv[0] : "model");
  const char *verbs = "info, init, forward, generate, eval, bench, train, grad";
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fprintf(argc < 2 ? stderr : stdout,
            "usage: %s COMMAND [options]\n\n%s: a standalone program for the model \"%s\", compiled by modelc.\n\n"
            "commands:\n"
            "  info       model facts: parameters, bytes, FLOPs, planned memory, compile options\n"
            "  init       initialise weights and write them as safetensors\n"
            "  forward    run token ids (.npy) through the model, write the outputs (.npy)\n"
            "  generate   continue a text prompt (KV cache, greedy or sampled)\n"
            "  eval       next-token loss and bits per byte over a text file\n"
            "  bench      forward and decode speed\n"
            "  train      train on a byte file (AdamW/SGD, checkpoints, CSV log, SVG loss curve)\n"
            "  grad       one training step's loss and parameter gradients (.safetensors)\n\n"
            "Run '%s COMMAND --help' for each command's options.\n",
            prog, prog, m->name, prog);
    return argc < 2 ? EXIT_USER : EXIT_OK;
  }
  const char *v = argv[1];
  if (!strcmp(v, "info")) return cmd_info(prog, argc, argv, m);
  if (!strcmp(v, "init")) return cmd_init(prog, argc, argv, m);
  if (!strcmp(v, "forward")) return cmd_forward(prog, argc, argv, m);
  if (!strcmp(v, "generate")) return cmd_generate(prog, argc, argv, m);
  if (!strcmp(v, "eval")) return cmd_eval(prog, argc, argv, m);
  if (!strcmp(v, "bench")) return cmd_bench(prog, argc, argv, m);
  if (!strcmp(v, "train")) return rt_prog_train(prog, argc, argv, m);
  if (!strcmp(v, "grad")) return rt_prog_grad(prog, argc, argv, m);
  fprintf(stderr, "%s: error: unknown command '%s' (commands: %s; see '%s --help')\n", prog, v, verbs, prog);
  return EXIT_USER;
}
