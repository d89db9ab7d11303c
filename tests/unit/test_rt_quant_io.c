/* test_rt_quant_io.c: weights in and out for quantised parameters (runtime/prog/model.c, infer.c):
 * PROG init, export and info driven through rt_main, and rt_prog_load_weights called directly, on a
 * hand-written model (no generated code; its forward is never called) holding a dense f32
 * parameter and one of each quantised format (q8_0 [4,64], q4_0 [3,32], i8_row [2,5]), laid out
 * with core/quant.c's functions as the compiler lays them out. Checks the round trips (init, write,
 * load: the same bytes; floats quantised at load as rt_quantize does; a quantised pair copied),
 * every refusal of the loader by its message, and that an export's data section is the figure info
 * promises. */
#include <check.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_run.h"
#include "rt_test_util.h"

/* ---------------------------------------------------------------------------------------------
 * The model
 * ------------------------------------------------------------------------------------------- */

enum { NP = 4 };
static RtParamInfo params[NP];
static RtModel model;

static void fake_forward(const RtStep *s, char *arena, const void *W, const int32_t *tokens, float *out) {
  (void)s, (void)arena, (void)W, (void)tokens, (void)out;
}

/* params[i] = name, format, [N,K], init; laid out from `*off` (64-byte aligned) */
static void lay_out(int i, const char *name, RtFormat f, int64_t N, int64_t K, RtInit init, float arg, int64_t *off) {
  RtParamInfo *p = &params[i];
  memset(p, 0, sizeof *p);
  p->name = name;
  p->ndim = 2;
  p->shape[0] = N;
  p->shape[1] = K;
  p->format = f;
  p->offset = *off;
  p->init = init;
  p->init_arg = arg;
  int64_t total;
  if (f == RT_FMT_DENSE) {
    p->dtype = RT_DT_F32;
    p->nbytes = total = N * K * 4;
  } else {
    p->dtype = rt_quant_value_dtype(f);
    p->nbytes = rt_quant_values_bytes(f, N, K);
    p->naux = 1;
    p->aux[0] = (RtParamAux){"scale", rt_quant_scale_dtype(f), *off + rt_quant_scales_offset(f, N, K),
                             rt_quant_scales_bytes(f, N, K)};
    total = rt_quant_bytes(f, N, K);
  }
  *off = (*off + total + 63) / 64 * 64;
}

static void make_model(void) {
  int64_t off = 0;
  lay_out(0, "d.weight", RT_FMT_DENSE, 3, 5, RT_INIT_NORMAL, 0.02f, &off);
  lay_out(1, "a.weight", RT_FMT_Q8_0, 4, 64, RT_INIT_NORMAL, 0.02f, &off);
  lay_out(2, "b.weight", RT_FMT_Q4_0, 3, 32, RT_INIT_UNIFORM, 0.1f, &off);
  lay_out(3, "c.weight", RT_FMT_I8_ROW, 2, 5, RT_INIT_NORMAL, 0.5f, &off);
  memset(&model, 0, sizeof model);
  model.name = "fake-quant";
  model.kind = "decoder";
  model.batch = 1;
  model.context = 4;
  model.vocab = 16;
  model.out_per_token = 1;
  model.out_dim = 16;
  model.nparams = NP;
  model.params = params;
  model.weight_bytes = off;
  for (int i = 0; i < NP; i++) model.param_count += rt_param_numel(&params[i]);
  model.param_bytes = rt_model_export_bytes(&model);
  model.arena_bytes = 64;
  model.compile_options = "test";
  model.forward = fake_forward;
}

/* values + scales of every parameter, counted by hand: f32 3*5*4; q8_0 4*64 + 4*2*2; q4_0 3*16 +
 * 3*1*2; i8_row 2*5 + 2*4 */
enum { EXPORT_BYTES = 60 + (256 + 16) + (48 + 6) + (10 + 8) };

/* ---------------------------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------------------------- */

static char dir[64];

/* dir/name, in a ring of 16 buffers */
static const char *P(const char *name) {
  static char bufs[16][256];
  static int k;
  char *b = bufs[k++ % 16];
  snprintf(b, 256, "%s/%s", dir, name);
  return b;
}

static void setup(void) {
  make_model();
  snprintf(dir, sizeof dir, "/tmp/rt_quant_io_XXXXXX");
  ck_assert(mkdtemp(dir) != NULL);
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert(system(cmd) == 0);
}

/* rt_main(argv...) with stdout into dir/stdout.txt. NULL-terminated. */
static int run(const char *first, ...) {
  char *argv[16];
  int argc = 0;
  argv[argc++] = "fake";
  argv[argc++] = (char *)first;
  va_list ap;
  va_start(ap, first);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 15;) argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  fflush(stdout);
  int so = dup(1), fo = open(P("stdout.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ck_assert(so >= 0 && fo >= 0);
  dup2(fo, 1);
  int rc = rt_main(argc, argv, &model);
  fflush(stdout);
  dup2(so, 1);
  close(so), close(fo);
  return rc;
}

/* A tensor to write: name, dtype, shape (ndim 1 or 2), data. */
static RtTensor T(const char *name, RtDType dt, int ndim, int64_t s0, int64_t s1, const void *data) {
  RtTensor t = {name, dt, ndim, {s0, s1}, data, rt_dtype_size(dt) * (size_t)s0 * (size_t)(ndim > 1 ? s1 : 1)};
  return t;
}

static void write_st(const char *path, const RtTensor *ts, int n) {
  RtError err;
  ck_assert_msg(rt_st_write(path, ts, n, NULL, 0, &err) == 0, "%s", err.msg);
}

/* The model's weights from path into a fresh zeroed buffer (the caller frees it); *rc the result. */
static unsigned char *load(const char *path, int *rc, RtError *err) {
  unsigned char *W = rt_xalloc((size_t)model.weight_bytes);
  ck_assert(W != NULL);
  *rc = rt_prog_load_weights(&model, W, path, err);
  return W;
}

/* Float weights for every parameter (f32, values in [-1,1)), seeded by the parameter's index. */
static float w_d[15], w_a[256], w_b[96], w_c[10];
static void fill_weights(void) {
  fill_uniform(w_d, 15, -1, 1, 11);
  fill_uniform(w_a, 256, -1, 1, 12);
  fill_uniform(w_b, 96, -1, 1, 13);
  fill_uniform(w_c, 10, -1, 1, 14);
}

/* The quantised pairs of those weights (rt_quantize), as the loader must take them. */
static unsigned char q_a[1024], q_b[1024], q_c[1024];
static void quantise_weights(void) {
  RtError err;
  memset(q_a, 0, sizeof q_a), memset(q_b, 0, sizeof q_b), memset(q_c, 0, sizeof q_c);
  ck_assert_msg(rt_quantize(RT_FMT_Q8_0, q_a, w_a, 4, 64, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_quantize(RT_FMT_Q4_0, q_b, w_b, 3, 32, &err) == 0, "%s", err.msg);
  ck_assert_msg(rt_quantize(RT_FMT_I8_ROW, q_c, w_c, 2, 5, &err) == 0, "%s", err.msg);
}

/* The scales of a quantised parameter within its quantised bytes q. */
static void *scales_of(unsigned char *q, int i) { return q + (params[i].aux[0].offset - params[i].offset); }

/* W holds parameter i as the quantised bytes q (values and scales). */
static void assert_param_bytes(const unsigned char *W, int i, unsigned char *q) {
  const RtParamInfo *p = &params[i];
  ck_assert_msg(memcmp(W + p->offset, q, (size_t)p->nbytes) == 0, "'%s': values differ", p->name);
  ck_assert_msg(memcmp(W + p->aux[0].offset, scales_of(q, i), (size_t)p->aux[0].nbytes) == 0, "'%s': scales differ",
                p->name);
}

/* Loading path gives d as w_d and the quantised parameters as the bytes q_a, q_b, q_c. */
static void assert_loads(const char *path) {
  RtError err;
  int rc;
  unsigned char *W = load(path, &rc, &err);
  ck_assert_msg(rc == 0, "%s", err.msg);
  ck_assert(memcmp(W + params[0].offset, w_d, sizeof w_d) == 0);
  assert_param_bytes(W, 1, q_a);
  assert_param_bytes(W, 2, q_b);
  assert_param_bytes(W, 3, q_c);
  free(W);
}

/* A file of the four parameters as quantised pairs (d as f32), each tensor of subs in place of the
 * one of its name (dropping it when its data is NULL), or appended when no tensor has its name. */
static void write_pairs(const char *path, const RtTensor *subs, int nsubs) {
  RtTensor base[] = {
      T("d.weight", RT_DT_F32, 2, 3, 5, w_d),
      T("a.weight", RT_DT_I8, 2, 4, 64, q_a),
      T("a.weight.scale", RT_DT_F16, 2, 4, 2, scales_of(q_a, 1)),
      T("b.weight", RT_DT_U8, 2, 3, 16, q_b),
      T("b.weight.scale", RT_DT_F16, 2, 3, 1, scales_of(q_b, 2)),
      T("c.weight", RT_DT_I8, 2, 2, 5, q_c),
      T("c.weight.scale", RT_DT_F32, 1, 2, 0, scales_of(q_c, 3)),
  };
  enum { NB = (int)(sizeof base / sizeof base[0]) };
  RtTensor ts[16];
  int n = 0, used[8] = {0};
  for (int i = 0; i < NB; i++) {
    const RtTensor *t = &base[i];
    for (int k = 0; k < nsubs; k++)
      if (!strcmp(subs[k].name, t->name)) t = &subs[k], used[k] = 1;
    if (t->data) ts[n++] = *t;
  }
  for (int k = 0; k < nsubs; k++)
    if (!used[k]) ts[n++] = subs[k];
  write_st(path, ts, n);
}

/* A tensor to drop from write_pairs' file. */
static RtTensor DROP(const char *name) { return (RtTensor){.name = name}; }


/* ---------------------------------------------------------------------------------------------
 * Round trips
 * ------------------------------------------------------------------------------------------- */

/* init writes the pairs (right names, dtypes and shapes), and loading them back gives the bytes
 * rt_prog_init_weights made */
START_TEST(test_init_write_load) {
  ck_assert_int_eq(run("init", "--seed", "7", "--out", P("init.st"), NULL), 0);
  unsigned char *W0 = rt_xalloc((size_t)model.weight_bytes);
  RtError err;
  ck_assert_msg(rt_prog_init_weights(&model, W0, 7, &err) == 0, "%s", err.msg);
  int rc;
  unsigned char *W = load(P("init.st"), &rc, &err);
  ck_assert_msg(rc == 0, "%s", err.msg);
  ck_assert_msg(memcmp(W, W0, (size_t)model.weight_bytes) == 0, "init -> write -> load is not bit-identical");
  /* the quantised draws are not all zero (the scales are there) */
  float back[256];
  rt_dequantize(RT_FMT_Q8_0, back, W + params[1].offset, 4, 64);
  double amax = 0;
  for (int i = 0; i < 256; i++) amax = fmax(amax, fabs(back[i]));
  ck_assert_msg(amax > 0.01 && amax < 0.2, "q8_0 init dequantises to amax %g (normal(0, 0.02))", amax);
  RtSafetensors *st;
  ck_assert_msg(rt_st_open(&st, P("init.st"), &err) == 0, "%s", err.msg);
  ck_assert_int_eq(rt_st_count(st), 7);
  ck_assert_str_eq(rt_st_metadata(st, "modelc_model"), "fake-quant");
  const struct {
    const char *name;
    RtDType dt;
    int ndim;
    int64_t shape[2];
  } want[] = {{"d.weight", RT_DT_F32, 2, {3, 5}},        {"a.weight", RT_DT_I8, 2, {4, 64}},
              {"a.weight.scale", RT_DT_F16, 2, {4, 2}}, {"b.weight", RT_DT_U8, 2, {3, 16}},
              {"b.weight.scale", RT_DT_F16, 2, {3, 1}}, {"c.weight", RT_DT_I8, 2, {2, 5}},
              {"c.weight.scale", RT_DT_F32, 1, {2}}};
  for (int i = 0; i < 7; i++)
    ck_assert_msg(rt_st_require(st, want[i].name, want[i].dt, want[i].ndim, want[i].shape, NULL, &err) == 0, "%s",
                  err.msg);
  rt_st_close(st);
  free(W0);
  free(W);
}
END_TEST

/* float tensors (F32, F16, F64) of the logical shapes are quantised at load, as rt_quantize does */
START_TEST(test_load_floats_quantised) {
  fill_weights();
  uint16_t b16[96];
  double c64[10];
  for (int i = 0; i < 96; i++) b16[i] = rt_f32_to_f16(w_b[i]), w_b[i] = rt_f16_to_f32(b16[i]);
  for (int i = 0; i < 10; i++) c64[i] = w_c[i];
  quantise_weights();
  RtTensor ts[] = {T("d.weight", RT_DT_F32, 2, 3, 5, w_d), T("a.weight", RT_DT_F32, 2, 4, 64, w_a),
                   T("b.weight", RT_DT_F16, 2, 3, 32, b16), T("c.weight", RT_DT_F64, 2, 2, 5, c64)};
  write_st(P("floats.st"), ts, 4);
  assert_loads(P("floats.st"));
  /* export writes them in their storage form: the pairs as rt_quantize made them */
  ck_assert_int_eq(run("export", "--weights", P("floats.st"), "--out", P("exp.st"), NULL), 0);
  RtSafetensors *st;
  RtError err;
  ck_assert_msg(rt_st_open(&st, P("exp.st"), &err) == 0, "%s", err.msg);
  const RtTensor *t = rt_st_find(st, "a.weight"), *s = rt_st_find(st, "a.weight.scale");
  ck_assert(t && s && t->nbytes == 256 && s->nbytes == 16);
  ck_assert(memcmp(t->data, q_a, 256) == 0 && memcmp(s->data, scales_of(q_a, 1), 16) == 0);
  t = rt_st_find(st, "b.weight"), s = rt_st_find(st, "b.weight.scale");
  ck_assert(t && s && memcmp(t->data, q_b, 48) == 0 && memcmp(s->data, scales_of(q_b, 2), 6) == 0);
  t = rt_st_find(st, "c.weight"), s = rt_st_find(st, "c.weight.scale");
  ck_assert(t && s && memcmp(t->data, q_c, 10) == 0 && memcmp(s->data, scales_of(q_c, 3), 8) == 0);
  rt_st_close(st);
}
END_TEST

/* a quantised pair is copied as it is (values and scales that rt_quantize would not make: any
 * int8, any finite scale); tensors the model does not name are ignored, a .scale next to the dense
 * parameter too */
START_TEST(test_load_pairs_copied) {
  fill_weights();
  quantise_weights();
  for (int i = 0; i < 256; i++) q_a[i] = (unsigned char)(i * 37 + 5);
  for (int i = 0; i < 48; i++) q_b[i] = (unsigned char)(i * 11 + 3);
  for (int i = 0; i < 10; i++) q_c[i] = (unsigned char)(250 - i * 29);
  uint16_t *sa = scales_of(q_a, 1);
  sa[3] = rt_f32_to_f16(-1.5f); /* negative, still finite */
  float *sc = scales_of(q_c, 3);
  sc[1] = 1e30f;
  float extra[2] = {1, 2};
  RtTensor ex[] = {T("d.weight.scale", RT_DT_F32, 1, 2, 0, extra), T("zzz", RT_DT_F32, 1, 2, 0, extra)};
  write_pairs(P("pairs.st"), ex, 2);
  assert_loads(P("pairs.st"));
}
END_TEST

/* export of a loaded model writes the init file again, byte for byte; export's own refusals */
START_TEST(test_export_equals_init) {
  ck_assert_int_eq(run("init", "--seed", "3", "--out", P("init.st"), NULL), 0);
  ck_assert_int_eq(run("export", "--weights", P("init.st"), "--out", P("exp.st"), NULL), 0);
  size_t n0, n1;
  unsigned char *a = slurp(P("init.st"), &n0), *b = slurp(P("exp.st"), &n1);
  ck_assert(a && b);
  ck_assert_msg(n0 == n1 && memcmp(a, b, n0) == 0, "export of the init weights differs from the init file");
  free(a);
  free(b);
  /* no --weights and nothing embedded; --out the input; no --out */
  ck_assert_int_eq(run("export", "--out", P("x.st"), NULL), 1);
  ck_assert_int_eq(run("export", "--weights", P("init.st"), "--out", P("init.st"), NULL), 1);
  ck_assert_int_eq(run("export", "--weights", P("init.st"), NULL), 1);
  ck_assert_int_eq(run("export", "--help", NULL), 0);
  size_t nh;
  char *help = (char *)slurp(P("stdout.txt"), &nh);
  ck_assert(help && strstr(help, "usage: fake export") && strstr(help, "values + scales"));
  free(help);
  /* the input is left as it was */
  unsigned char *c = slurp(P("init.st"), &n1);
  ck_assert(c && n1 == n0);
  free(c);
}
END_TEST

/* the data section of an export (file size - 8 - header) is the figure info prints */
START_TEST(test_export_bytes) {
  ck_assert_int_eq(rt_model_export_bytes(&model), EXPORT_BYTES);
  ck_assert_int_eq(run("init", "--out", P("init.st"), NULL), 0);
  ck_assert_int_eq(run("export", "--weights", P("init.st"), "--out", P("exp.st"), NULL), 0);
  size_t n;
  unsigned char *b = slurp(P("exp.st"), &n);
  ck_assert(b && n > 8);
  uint64_t h = 0;
  for (int i = 0; i < 8; i++) h |= (uint64_t)b[i] << (8 * i);
  ck_assert_int_eq((int64_t)(n - 8 - h), EXPORT_BYTES);
  free(b);
  ck_assert_int_eq(run("info", NULL), 0);
  char *info = (char *)slurp(P("stdout.txt"), &n);
  char want[128];
  snprintf(want, sizeof want, "export bytes:     %d (", EXPORT_BYTES);
  ck_assert_msg(strstr(info, want), "no '%s' in:\n%s", want, info);
  ck_assert_msg(strstr(info, "weight formats:   f32 60, i8_row 18, q8_0 272, q4_0 54 (bytes; quantised: values + "
                             "scales)\n"), "%s", info);
  ck_assert_msg(strstr(info, "weight bytes:     ") && strstr(info, "parameters:       "), "%s", info);
  snprintf(want, sizeof want, "quantised linear: %s\n", rt_quant_isa());
  ck_assert_msg(strstr(info, want), "%s", info);
  free(info);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Refusals
 * ------------------------------------------------------------------------------------------- */

/* every malformed quantised input: the load fails with a message naming the tensor and what was
 * expected */
START_TEST(test_load_errors) {
  fill_weights();
  quantise_weights();
  uint16_t s16[16] = {0};
  float f32[256] = {0}, nan_a[256];
  int32_t i32[256] = {0};
  memcpy(nan_a, w_a, sizeof nan_a);
  nan_a[70] = NAN;
  uint16_t inf_a[8];
  memcpy(inf_a, scales_of(q_a, 1), sizeof inf_a);
  inf_a[5] = 0x7c00; /* +inf: row 2, block 1 */
  float nan_c[2] = {0.5f, NAN};
  const struct {
    RtTensor with;
    const char *msg;
  } cases[] = {
      {DROP("a.weight.scale"), "tensor 'a.weight.scale' is missing: the quantised tensor 'a.weight' needs its scales"},
      {T("a.weight.scale", RT_DT_F16, 2, 4, 3, s16),
       "tensor 'a.weight.scale' has shape [4,3], expected F16 [4,2]"},
      {T("a.weight.scale", RT_DT_F16, 1, 8, 0, s16),
       "tensor 'a.weight.scale' has shape [8], expected F16 [4,2]"},
      {T("a.weight.scale", RT_DT_F32, 2, 4, 2, f32),
       "tensor 'a.weight.scale' has dtype F32, expected F16"},
      {T("c.weight.scale", RT_DT_F16, 1, 2, 0, s16),
       "tensor 'c.weight.scale' has dtype F16, expected F32"},
      {T("a.weight.scale", RT_DT_F16, 2, 4, 2, inf_a),
       "tensor 'a.weight.scale' has a non-finite scale (inf) for row 2, block 1"},
      {T("c.weight.scale", RT_DT_F32, 1, 2, 0, nan_c),
       "tensor 'c.weight.scale' has a non-finite scale (nan) for row 1"},
      {T("a.weight", RT_DT_I8, 2, 4, 32, q_a), "tensor 'a.weight' has shape [4,32], expected I8 [4,64]"},
      {T("b.weight", RT_DT_I8, 2, 3, 16, q_b),
       "tensor 'b.weight' has dtype I8, expected a float type [3,32] or the quantised pair (q4_0: U8 [3,16] + F16 "
       "[3,1] scales)"},
      {T("a.weight", RT_DT_I32, 2, 4, 64, i32),
       "tensor 'a.weight' has dtype I32, expected a float type or the quantised pair (q8_0: I8 [4,64] + F16 [4,2]"},
      {T("a.weight", RT_DT_F32, 2, 4, 63, f32), "tensor 'a.weight' has shape [4,63], the model needs [4,64]"},
      {T("a.weight", RT_DT_F32, 2, 4, 64, nan_a), "'a.weight' (stored as q8_0): "},
      {DROP("d.weight"), "tensor 'd.weight' is missing"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    write_pairs(P("bad.st"), &cases[k].with, 1);
    RtError err = {{0}};
    int rc;
    free(load(P("bad.st"), &rc, &err));
    ck_assert_msg(rc != 0, "case %zu (%s) loaded", k, cases[k].msg);
    ck_assert_msg(strstr(err.msg, cases[k].msg) && strstr(err.msg, "bad.st: "), "case %zu: got '%s', want '%s'", k,
                  err.msg, cases[k].msg);
  }
}
END_TEST

/* a pair of another format: said so, with both forms */
START_TEST(test_load_wrong_format) {
  fill_weights();
  quantise_weights();
  unsigned char q4[1024] = {0}, q8[1024] = {0}, i8[1024] = {0};
  RtError err;
  float b64[256];
  fill_uniform(b64, 256, -1, 1, 5);
  ck_assert(rt_quantize(RT_FMT_Q4_0, q4, b64, 4, 64, &err) == 0);       /* a q4_0 [4,64] for a.weight (q8_0) */
  ck_assert(rt_quantize(RT_FMT_I8_ROW, i8, b64, 4, 64, &err) == 0);     /* an i8_row [4,64] for a.weight */
  ck_assert(rt_quantize(RT_FMT_Q8_0, q8, w_b, 3, 32, &err) == 0);       /* a q8_0 [3,32] for b.weight (q4_0) */
  int64_t so4 = rt_quant_scales_offset(RT_FMT_Q4_0, 4, 64), soi = rt_quant_scales_offset(RT_FMT_I8_ROW, 4, 64),
          so8 = rt_quant_scales_offset(RT_FMT_Q8_0, 3, 32);
  const struct {
    RtTensor v, s;
    const char *msg;
  } cases[] = {
      {T("a.weight", RT_DT_U8, 2, 4, 32, q4), T("a.weight.scale", RT_DT_F16, 2, 4, 2, q4 + so4),
       "tensor 'a.weight' is q4_0 (U8 [4,32] + F16 [4,2] scales), but this program stores it as q8_0 (I8 [4,64] + "
       "F16 [4,2] scales): give it as a float tensor [4,64] (quantised at load)"},
      {T("a.weight", RT_DT_I8, 2, 4, 64, i8), T("a.weight.scale", RT_DT_F32, 1, 4, 0, i8 + soi),
       "tensor 'a.weight' is i8_row (I8 [4,64] + F32 [4] scales), but this program stores it as q8_0"},
      {T("b.weight", RT_DT_I8, 2, 3, 32, q8), T("b.weight.scale", RT_DT_F16, 2, 3, 1, q8 + so8),
       "tensor 'b.weight' is q8_0 (I8 [3,32] + F16 [3,1] scales), but this program stores it as q4_0"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    RtTensor pair[2] = {cases[k].v, cases[k].s};
    write_pairs(P("other.st"), pair, 2);
    int rc;
    err.msg[0] = 0;
    free(load(P("other.st"), &rc, &err));
    ck_assert_msg(rc != 0 && strstr(err.msg, cases[k].msg), "case %zu: got '%s', want '%s'", k, err.msg, cases[k].msg);
    /* the command says it too, exit 1 */
    ck_assert_int_eq(run("export", "--weights", P("other.st"), "--out", P("o.st"), NULL), 1);
  }
}
END_TEST

/* training refuses a quantised program, saying why */
START_TEST(test_require_f32) {
  RtError err;
  ck_assert_int_eq(rt_model_require_f32(&model, "training", &err), -1);
  ck_assert_msg(strstr(err.msg, "training needs every parameter stored as dense f32; 'a.weight' is stored as q8_0") &&
                    strstr(err.msg, "quantised programs are for inference"),
                "%s", err.msg);
  /* a non-finite f32 weight into a quantised parameter is an error naming it */
  float w[10] = {0, 1, 2, 3, 4, 5, 6, 7, INFINITY, 9};
  unsigned char *W = rt_xalloc((size_t)model.weight_bytes);
  ck_assert_int_eq(rt_param_store_f32(&params[3], W, w, &err), -1);
  ck_assert_msg(strstr(err.msg, "'c.weight' (stored as i8_row): "), "%s", err.msg);
  w[8] = 8;
  ck_assert_int_eq(rt_param_store_f32(&params[3], W, w, &err), 0);
  free(W);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_quant_io");
  TCase *tc = tcase_create("quant_io");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_init_write_load);
  tcase_add_test(tc, test_load_floats_quantised);
  tcase_add_test(tc, test_load_pairs_copied);
  tcase_add_test(tc, test_export_equals_init);
  tcase_add_test(tc, test_export_bytes);
  tcase_add_test(tc, test_load_errors);
  tcase_add_test(tc, test_load_wrong_format);
  tcase_add_test(tc, test_require_f32);
  suite_add_tcase(s, tc);
  return check_run(s);
}
