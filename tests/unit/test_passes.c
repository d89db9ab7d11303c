/* test_passes.c: tests of the pass manager and the passes.
 *
 * - Golden tests: every .mir file under tests/passes/NAME/ carries its own driver line "; RUN: PIPELINE", the
 *   input module, and either "; EXPECT:" followed by the exact printed output or "; ERROR: text"
 *   naming a substring of the expected diagnostics. Each output must also survive
 *   print(parse(print(out))) == print(out).
 * - The pipeline parser: good and bad pipelines, error columns, typed options, size suffixes,
 *   defaults and the canonical pipeline text.
 * - The runner: --print-before/--print-after(-all)/--print-pass-times output, the after_pass hook,
 *   and "IR invalid after pass" reporting.
 * - Equivalence: a small interpreter evaluates element-wise functions before and after
 *   constfold,cse,fuse,dce and the outputs must agree.
 */
#include <check.h>
#include <glob.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../passes/pass.h"
#include "text_test.h"

/* ---- helpers ---- */

/* Drops trailing blanks and newlines in place. */
static void rtrim(char *s) {
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r' || s[n - 1] == '\t')) s[--n] = 0;
}

/* ---- golden tests ---- */

static glob_t golden;

/* test_golden is a loop test over the files: at most GOLDEN_MAX of them (test_golden_files_exist
 * fails when there are more, so a new file is never skipped silently) */
#define GOLDEN_MAX 256

static void golden_setup(void) {
  memset(&golden, 0, sizeof golden);
  glob("tests/passes/*/*.mir", 0, NULL, &golden);
}

START_TEST(test_golden_files_exist) {
  golden_setup();
  ck_assert_msg(golden.gl_pathc >= 16, "expected at least 16 golden files, found %zu", golden.gl_pathc);
  ck_assert_msg(golden.gl_pathc <= GOLDEN_MAX, "%zu golden files: raise GOLDEN_MAX (%d) in test_passes.c",
                golden.gl_pathc, GOLDEN_MAX);
  const char *dirs[] = {"dce", "cse", "constfold", "fuse"};
  for (int k = 0; k < 4; k++) {
    int n = 0;
    char pre[64];
    snprintf(pre, sizeof pre, "tests/passes/%s/", dirs[k]);
    for (size_t i = 0; i < golden.gl_pathc; i++) n += strncmp(golden.gl_pathv[i], pre, strlen(pre)) == 0;
    ck_assert_msg(n >= 4, "%s has %d golden files, want >= 4", dirs[k], n);
  }
}
END_TEST

static void run_golden(const char *path) {
  size_t len;
  char *text = read_file(path, &len);
  ck_assert_msg(text, "%s: cannot read", path);

  /* "; RUN: pipeline" on the first line */
  ck_assert_msg(strncmp(text, "; RUN:", 6) == 0, "%s: must start with '; RUN:'", path);
  char *eol = strchr(text, '\n');
  ck_assert_ptr_nonnull(eol);
  char pipeline[512];
  size_t plen = (size_t)(eol - (text + 6));
  ck_assert(plen < sizeof pipeline);
  memcpy(pipeline, text + 6, plen);
  pipeline[plen] = 0;

  char *expect = strstr(text, "\n; EXPECT:");
  char *error = strstr(text, "\n; ERROR:");
  ck_assert_msg(expect || error, "%s: needs '; EXPECT:' or '; ERROR:'", path);
  char *split = expect ? expect : error;
  size_t in_len = (size_t)(split - text) + 1;
  char *want = NULL;
  if (expect) {
    want = strchr(expect + 1, '\n');
    want = want ? want + 1 : expect + strlen(expect);
  } else {
    want = error + strlen("\n; ERROR:");
    while (*want == ' ') want++;
    char *nl = strchr(want, '\n');
    if (nl) *nl = 0;
    rtrim(want);
  }

  MemDiag md;
  md_open(&md, 0);
  bool ok = true;
  Module *m = ir_parse(path, text, in_len, &md.d);
  if (!m) ok = false;
  Pipeline p;
  pass_pipeline_init(&p);
  /* the pipeline text starts at column 7 of line 1 */
  if (ok) ok = pass_parse_pipeline(&p, pipeline, path, 1, 7, &md.d);
  if (ok) {
    PassRunConfig cfg = {.verify_each = true};
    ok = pass_run_pipeline(m, &p, &cfg, &md.d);
  }
  if (error) {
    ck_assert_msg(!ok, "%s: expected an error containing '%s', but the pipeline succeeded", path, want);
    ck_assert_msg(strstr(md_text(&md), want), "%s: expected an error containing '%s', got:\n%s", path, want,
                  md_text(&md));
  } else {
    ck_assert_msg(ok, "%s: failed:\n%s", path, md_text(&md));
    char *got = ir_print_to_string(m);
    rtrim(got);
    rtrim(want);
    ck_assert_msg(strcmp(got, want) == 0, "%s: output differs.\n--- got:\n%s\n--- want:\n%s", path, got, want);
    /* round trip: print(parse(print(out))) == print(out) */
    Module *m2 = ir_parse(path, got, strlen(got), &md.d);
    ck_assert_msg(m2, "%s: output does not parse back:\n%s", path, md_text(&md));
    char *again = ir_print_to_string(m2);
    rtrim(again);
    ck_assert_msg(strcmp(again, got) == 0, "%s: round trip differs:\n%s\n---\n%s", path, again, got);
    free(again);
    free(got);
    ir_module_free(m2);
  }
  pass_pipeline_free(&p);
  ir_module_free(m);
  md_close(&md);
  free(text);
}

START_TEST(test_golden) {
  golden_setup();
  if ((size_t)_i >= golden.gl_pathc) return;
  run_golden(golden.gl_pathv[_i]);
}
END_TEST

/* ---- pipeline parser ---- */

/* Parses text at --passes:1:1; returns ok and leaves the diagnostics in md. */
static bool parse_pl(Pipeline *p, const char *text, MemDiag *md) {
  pass_pipeline_init(p);
  return pass_parse_pipeline(p, text, "--passes", 1, 1, &md->d);
}

/* The pipeline must fail with a diagnostic at col containing msg. */
static void bad(const char *text, int col, const char *msg) {
  MemDiag md;
  md_open(&md, 0);
  Pipeline p;
  bool ok = parse_pl(&p, text, &md);
  char loc[64];
  snprintf(loc, sizeof loc, "--passes:1:%d: error: ", col);
  ck_assert_msg(!ok, "'%s' should not parse", text);
  ck_assert_msg(strstr(md_text(&md), loc), "'%s': want an error at %s, got: %s", text, loc, md_text(&md));
  ck_assert_msg(strstr(md_text(&md), msg), "'%s': want '%s', got: %s", text, msg, md_text(&md));
  pass_pipeline_free(&p);
  md_close(&md);
}

static void canon(const char *text, const char *want) {
  MemDiag md;
  md_open(&md, 0);
  Pipeline p;
  ck_assert_msg(parse_pl(&p, text, &md), "'%s': %s", text, md_text(&md));
  char buf[256];
  ck_assert_str_eq(pass_pipeline_str(&p, buf, sizeof buf), want);
  /* the canonical text parses to the same canonical text */
  Pipeline q;
  ck_assert(parse_pl(&q, buf, &md));
  char buf2[256];
  ck_assert_str_eq(pass_pipeline_str(&q, buf2, sizeof buf2), want);
  pass_pipeline_free(&p);
  pass_pipeline_free(&q);
  md_close(&md);
}

START_TEST(test_pipeline_good) {
  MemDiag md;
  md_open(&md, 0);
  Pipeline p;
  ck_assert(parse_pl(&p, "fuse,dce,cse", &md));
  ck_assert_int_eq(p.n, 3);
  ck_assert_str_eq(p.e[0].pass->name, "fuse");
  ck_assert_str_eq(p.e[1].pass->name, "dce");
  ck_assert_str_eq(p.e[2].pass->name, "cse");
  ck_assert_int_eq(p.e[1].col, 6);
  ck_assert_str_eq(p.e[1].file, "--passes");
  /* defaults */
  ck_assert_int_eq(pass_opt_int(&p.e[0].opts, "max-ops"), 16);
  ck_assert(pass_opt_bool(&p.e[0].opts, "epilogue"));
  ck_assert(!pass_opt_is_set(&p.e[0].opts, "max-ops"));
  pass_pipeline_free(&p);

  ck_assert(parse_pl(&p, " fuse < max-ops = 8 ; epilogue=false > , dce ", &md));
  ck_assert_int_eq(p.n, 2);
  ck_assert_int_eq(pass_opt_int(&p.e[0].opts, "max-ops"), 8);
  ck_assert(!pass_opt_bool(&p.e[0].opts, "epilogue"));
  ck_assert(pass_opt_is_set(&p.e[0].opts, "epilogue"));
  ck_assert_int_eq(p.e[0].col, 2);
  ck_assert_int_eq(p.e[1].col, 42);
  pass_pipeline_free(&p);

  ck_assert(parse_pl(&p, "fuse<epilogue=false;epilogue>", &md));
  ck_assert(pass_opt_bool(&p.e[0].opts, "epilogue"));   /* a bare flag means true; last wins */
  pass_pipeline_free(&p);

  ck_assert(parse_pl(&p, "", &md));   /* the empty pipeline */
  ck_assert_int_eq(p.n, 0);
  pass_pipeline_free(&p);

  ck_assert(parse_pl(&p, pass_default_pipeline(), &md));
  ck_assert_int_eq(p.n, 5);
  pass_pipeline_free(&p);
  ck_assert_int_eq(md.d.nerrors, 0);
  md_close(&md);

  canon("fuse,dce,cse", "fuse,dce,cse");
  canon("  fuse<epilogue=0; max-ops=3>,dce", "fuse<max-ops=3;epilogue=false>,dce");
  canon("fuse<epilogue=1>", "fuse<epilogue>");
  canon("fuse<>", "fuse");
  canon("fuse<max-ops=16>", "fuse<max-ops=16>");   /* set explicitly: kept */
}
END_TEST

START_TEST(test_pipeline_bad) {
  bad("fuse,dcee", 6, "unknown pass 'dcee'; did you mean 'dce'?");
  bad("constfld", 1, "did you mean 'constfold'?");
  bad("fuse,, dce", 6, "empty pipeline element");
  bad("fuse,", 6, "empty pipeline element");
  bad(",fuse", 1, "empty pipeline element");
  bad("fuse<max-opps=3>", 6, "unknown option 'max-opps' for pass 'fuse'; did you mean 'max-ops'?");
  bad("dce<x=1>", 5, "pass 'dce' takes no options");
  bad("fuse<max-ops=abc>", 14, "invalid value 'abc' for option 'max-ops' of pass 'fuse': expected an integer");
  bad("fuse<max-ops=99999999999999999999>", 14, "invalid value");
  bad("fuse<epilogue=maybe>", 15, "expected true, false, 1 or 0");
  bad("fuse<max-ops>", 6, "option 'max-ops' of pass 'fuse' needs a value");
  bad("fuse<max-ops=3", 15, "expected '>' to close the options of 'fuse'");
  bad("fuse<max-ops=3,dce", 19, "expected '>'");
  bad("fuse dce", 6, "expected ',' or '<' after pass 'fuse'");
  bad("fuse;dce", 5, "expected ',' or '<'");
  bad("fuse<;max-ops=3>", 6, "empty option");
  /* option ranges and rules between options: refused where they are written, before any run */
  bad("fuse<max-ops=-1>", 14, "option 'max-ops' of pass 'fuse' must be in [1, 1000000], not -1");
  bad("fuse<max-ops=1000001>", 14, "option 'max-ops' of pass 'fuse' must be in [1, 1000000], not 1000001");
  bad("autodiff,checkpoint<every=0>", 27, "option 'every' of pass 'checkpoint' must be at least 1, not 0");
  bad("autodiff,checkpoint<budget=0>", 28, "option 'budget' of pass 'checkpoint' must be at least 1, not 0");
  bad("store<dtype=f32>", 13, "invalid value 'f32' for option 'dtype' of pass 'store': expected \"bf16\" or \"f16\"");
  bad("autodiff,checkpoint<every=2;sqrt>", 10, "checkpoint: give exactly one policy");
  bad("autodiff,checkpoint<store=false>", 10, "store=false is no policy");
  bad("autodiff,precision", 10, "precision: give exactly one of bf16 or fp16");
  /* passes that cannot run twice are refused at the second entry, with a note at the first */
  bad("autodiff,dce,autodiff", 14, "pass 'autodiff' is listed twice; it runs once in a pipeline");
  bad("autodiff,checkpoint<sqrt>,checkpoint<store>", 27, "pass 'checkpoint' is listed twice");
  bad("autodiff,precision<bf16>,precision<bf16>", 26, "pass 'precision' is listed twice");
  {
    MemDiag md;
    md_open(&md, 0);
    Pipeline p;
    ck_assert(!parse_pl(&p, "autodiff,dce,autodiff", &md));
    ck_assert(strstr(md_text(&md), "--passes:1:1: note: 'autodiff' is first listed here"));
    pass_pipeline_free(&p);
    md_close(&md);
    /* the passes that may repeat still do */
    md_open(&md, 0);
    ck_assert_msg(parse_pl(&p, "constfold,cse,fuse,dce,constfold,cse,fuse,dce,store,store,memplan,memplan", &md),
                  "%s", md_text(&md));
    pass_pipeline_free(&p);
    md_close(&md);
  }
  /* every error of a pipeline is reported, not only the first */
  MemDiag md;
  md_open(&md, 0);
  Pipeline p;
  ck_assert(!parse_pl(&p, "fusee,dcee<x>", &md));
  ck_assert_int_eq(md.d.nerrors, 2);
  pass_pipeline_free(&p);
  md_close(&md);
}
END_TEST

/* A fake pass with one option of each type, to test the typed options directly. */
static bool run_nothing(Module *m, const PassOptions *o, Diag *d) { return true; }
static const PassOptSpec fake_opts[] = {
    {"budget", POPT_SIZE, "1MiB", "a size", 0, 0, NULL},
    {"ratio", POPT_FLOAT, "0.5", "a number", 0, 0, NULL},
    {"label", POPT_STR, "x", "text", 0, 0, NULL},
    {"n", POPT_INT, "-3", "an int", 0, 0, NULL},
};
static const PassInfo fake_pass = {"fake", "for tests", run_nothing, fake_opts, 4, false, NULL};

static PipelineEntry fake_entry(void) {
  PipelineEntry e;
  memset(&e, 0, sizeof e);
  e.pass = &fake_pass;
  e.opts.n = 4;
  for (int i = 0; i < 4; i++) {
    e.opts.v[i].key = fake_opts[i].key;
    e.opts.v[i].type = fake_opts[i].type;
  }
  return e;
}

static int64_t size_of(const char *text, bool *ok) {
  MemDiag md;
  md_open(&md, 0);
  PipelineEntry e = fake_entry();
  *ok = pass_set_option(&e, "budget", text, "t", 1, 1, &md.d);
  md_close(&md);
  return pass_opt_int(&e.opts, "budget");
}

START_TEST(test_option_types) {
  bool ok;
  ck_assert_int_eq(size_of("123", &ok), 123);
  ck_assert(ok);
  ck_assert_int_eq(size_of("4KiB", &ok), 4096);
  ck_assert(ok);
  ck_assert_int_eq(size_of("2MiB", &ok), 2 << 20);
  ck_assert(ok);
  ck_assert_int_eq(size_of("1GiB", &ok), (int64_t)1 << 30);
  ck_assert(ok);
  ck_assert_int_eq(size_of("3K", &ok), 3072);
  ck_assert(ok);
  ck_assert_int_eq(size_of("5M", &ok), 5 << 20);
  ck_assert(ok);
  ck_assert_int_eq(size_of("2G", &ok), (int64_t)2 << 30);
  ck_assert(ok);
  size_of("8589934592G", &ok);   /* 2^33 GiB = 2^63 bytes: overflow */
  ck_assert(!ok);
  size_of("99999999999999999999", &ok);
  ck_assert(!ok);
  size_of("4KB", &ok);
  ck_assert(!ok);
  size_of("-1", &ok);
  ck_assert(!ok);
  size_of("", &ok);
  ck_assert(!ok);
  ck_assert_int_eq(size_of("8589934591", &ok), 8589934591LL);
  ck_assert(ok);

  MemDiag md;
  md_open(&md, 0);
  PipelineEntry e = fake_entry();
  ck_assert(pass_set_option(&e, "ratio", "0.25", "t", 1, 1, &md.d));
  ck_assert(pass_opt_float(&e.opts, "ratio") == 0.25);
  ck_assert(!pass_set_option(&e, "ratio", "1.5x", "t", 1, 1, &md.d));
  ck_assert(!pass_set_option(&e, "ratio", "inf", "t", 1, 1, &md.d));
  ck_assert(pass_set_option(&e, "label", "hello world", "t", 1, 1, &md.d));
  ck_assert_str_eq(pass_opt_str(&e.opts, "label"), "hello world");
  ck_assert(!pass_set_option(&e, "label", "0123456789012345678901234567890123456789012345678901234567890123456789",
                             "t", 1, 1, &md.d));
  ck_assert(pass_set_option(&e, "n", "-42", "t", 1, 1, &md.d));
  ck_assert_int_eq(pass_opt_int(&e.opts, "n"), -42);
  ck_assert(!pass_set_option(&e, "nn", "1", "t", 1, 1, &md.d));
  ck_assert(strstr(md_text(&md), "did you mean 'n'?"));
  ck_assert(pass_set_option(&e, "budget", "2048", "t", 1, 1, &md.d));

  Pipeline p = {.n = 1, .cap = 1, .e = &e};
  char buf[256];
  ck_assert_str_eq(pass_pipeline_str(&p, buf, sizeof buf), "fake<budget=2KiB;ratio=0.25;label=hello world;n=-42>");
  ck_assert(pass_set_option(&e, "budget", "1000", "t", 1, 1, &md.d));
  ck_assert(pass_set_option(&e, "budget", "3GiB", "t", 1, 1, &md.d));
  ck_assert_str_eq(pass_pipeline_str(&p, buf, sizeof buf), "fake<budget=3GiB;ratio=0.25;label=hello world;n=-42>");
  /* a short buffer truncates safely */
  ck_assert_str_eq(pass_pipeline_str(&p, buf, 8), "fake<bu");
  md_close(&md);
}
END_TEST

START_TEST(test_registry) {
  int n;
  const PassInfo *r = pass_registry(&n);
  ck_assert_int_ge(n, 4);
  for (int i = 0; i < n; i++) {
    ck_assert_ptr_eq(pass_find(r[i].name), &r[i]);
    ck_assert(r[i].desc && r[i].desc[0] && r[i].run);
  }
  ck_assert_ptr_null(pass_find("nope"));
  ck_assert_str_eq(pass_default_pipeline(), "constfold,cse,fuse,dce,memplan");
}
END_TEST

/* ---- runner ---- */

/* forward(%x: f32[2,4]) = gelu_tanh(add(x, 0) * 1) with a dead neg(x), built without the parser. */
static Module *small_module(void) {
  Module *m = ir_module_new("m");
  m->entry = "forward";
  Func *f = ir_add_func(m, "forward");
  Type t = ir_type2(DT_F32, 2, 4);
  Value *x = ir_add_arg(f, "x", t);
  Op *z = ir_op_new(f, OP_CONST, 0, NULL, 1);
  ir_set_attr_ints(z, "shape", 2, (int64_t[]){2, 4});
  ir_set_attr_float(z, "value", 0.0);
  Value *zero = ir_emit(f, z);
  Value *a = ir_emit(f, ir_op_new(f, OP_ADD, 2, (Value *[]){x, zero}, 1));
  ir_emit(f, ir_op_new(f, OP_NEG, 1, (Value *[]){x}, 1));
  Value *g = ir_emit(f, ir_op_new(f, OP_GELU_TANH, 1, (Value *[]){a}, 1));
  ir_set_return(f, 1, (Value *[]){g});
  return m;
}

static int hook_calls;
static void hook(void *ctx, const Module *m, const PipelineEntry *e) {
  hook_calls++;
  ck_assert_ptr_eq(ctx, &hook_calls);
}

START_TEST(test_run_print) {
  Module *m = small_module();
  MemDiag md;
  md_open(&md, 0);
  Pipeline p;
  ck_assert(parse_pl(&p, "constfold,dce", &md));
  char *out = NULL;
  size_t len = 0;
  FILE *dump = open_memstream(&out, &len);
  hook_calls = 0;
  PassRunConfig cfg = {.verify_each = true, .print_after_all = true, .print_before = "dce", .print_times = true,
                       .dump = dump, .after_pass = hook, .ctx = &hook_calls};
  ck_assert_msg(pass_run_pipeline(m, &p, &cfg, &md.d), "%s", md_text(&md));
  fclose(dump);
  ck_assert_int_eq(hook_calls, 2);
  const char *after_cf = strstr(out, "; *** IR Dump After constfold ***\nmodule @m\n");
  const char *before_dce = strstr(out, "; *** IR Dump Before dce ***\nmodule @m\n");
  const char *after_dce = strstr(out, "; *** IR Dump After dce ***\nmodule @m\n");
  ck_assert_msg(after_cf && before_dce && after_dce, "%s", out);
  ck_assert(after_cf < before_dce && before_dce < after_dce);
  ck_assert_ptr_null(strstr(out, "Before constfold"));
  /* after constfold the add is gone, the dead neg still there; after dce it is gone too */
  ck_assert_ptr_nonnull(strstr(after_cf, "neg(%x)"));
  ck_assert_ptr_null(strstr(after_dce, "neg(%x)"));
  ck_assert_ptr_nonnull(strstr(after_dce, "gelu_tanh(%x)"));
  /* the times table */
  const char *times = strstr(out, "; *** Pass execution times ***");
  ck_assert_msg(times && times > after_dce, "%s", out);
  ck_assert_ptr_nonnull(strstr(times, "constfold\n"));
  ck_assert_ptr_nonnull(strstr(times, "dce\n"));
  ck_assert_ptr_nonnull(strstr(times, "total\n"));
  free(out);

  /* print-after a single pass only */
  out = NULL;
  dump = open_memstream(&out, &len);
  PassRunConfig cfg2 = {.print_after = "dce", .dump = dump};
  ck_assert(pass_run_pipeline(m, &p, &cfg2, &md.d));
  fclose(dump);
  ck_assert_ptr_null(strstr(out, "After constfold"));
  ck_assert_ptr_nonnull(strstr(out, "; *** IR Dump After dce ***"));
  ck_assert_ptr_null(strstr(out, "Pass execution times"));
  free(out);

  pass_pipeline_free(&p);
  ir_module_free(m);
  md_close(&md);
}
END_TEST

/* A pass that breaks the IR: it returns a value of the wrong type. */
static bool run_evil(Module *m, const PassOptions *o, Diag *d) {
  Func *f = m->funcs[0];
  f->ret[0] = f->args[0];
  f->args[0]->type = ir_type1(DT_F32, 3);
  return true;
}
static const PassInfo evil_pass = {"evil", "breaks the IR", run_evil, NULL, 0, false, NULL};
static bool run_failing(Module *m, const PassOptions *o, Diag *d) { return false; }
static const PassInfo failing_pass = {"failing", "fails silently", run_failing, NULL, 0, false, NULL};

START_TEST(test_run_verify_failure) {
  Module *m = small_module();
  MemDiag md;
  md_open(&md, 0);
  Pipeline p;
  ck_assert(parse_pl(&p, "dce,dce", &md));
  p.e[0].pass = &evil_pass;
  hook_calls = 0;
  PassRunConfig cfg = {.verify_each = true, .after_pass = hook, .ctx = &hook_calls};
  ck_assert(!pass_run_pipeline(m, &p, &cfg, &md.d));
  ck_assert_msg(strstr(md_text(&md), "--passes:1:1: error: IR invalid after pass 'evil'"), "%s", md_text(&md));
  ck_assert_int_ge(md.d.nerrors, 2);   /* ours and the verifier's */
  ck_assert_int_eq(hook_calls, 0);     /* stopped before the hook and the second pass */

  p.e[0].pass = &failing_pass;
  int before = md.d.nerrors;
  ck_assert(!pass_run_pipeline(m, &p, &cfg, &md.d));
  ck_assert_int_eq(md.d.nerrors, before + 1);
  ck_assert(strstr(md_text(&md), "pass 'failing' failed"));
  pass_pipeline_free(&p);
  ir_module_free(m);
  md_close(&md);
}
END_TEST

/* ---- equivalence: a tiny interpreter for element-wise functions ---- */

typedef struct Tensor {
  int64_t n;
  double *v;
} Tensor;

/* Offset into t (type ty) for output multi-index idx of out type ot, NumPy broadcasting. */
static int64_t bcast_offset(const Type *ty, const Type *ot, const int64_t *idx) {
  int64_t off = 0;
  for (int i = 0; i < ty->rank; i++) {
    int oi = ot->rank - ty->rank + i;
    int64_t k = ty->dim[i] == 1 ? 0 : idx[oi];
    off = off * ty->dim[i] + k;
  }
  return off;
}

static void unflatten(const Type *t, int64_t flat, int64_t *idx) {
  for (int i = t->rank - 1; i >= 0; i--) {
    idx[i] = flat % t->dim[i];
    flat /= t->dim[i];
  }
}

/* Deterministic pseudo-random values in [-2, 2]. */
static double fill_value(uint64_t seed, int64_t i) {
  uint64_t x = seed * 6364136223846793005ull + (uint64_t)i * 1442695040888963407ull + 1;
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 32;
  return (double)(x % 4001) / 1000.0 - 2.0;
}

static uint64_t str_seed(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* Evaluates f on deterministic arguments; returns the first result (malloc'd). */
static Tensor eval_func(Module *m, Func *f) {
  Tensor *vals = calloc((size_t)f->nvalues + 1, sizeof *vals);
  for (int a = 0; a < f->narg; a++) {
    Value *v = f->args[a];
    Tensor t = {ir_type_numel(&v->type), NULL};
    t.v = malloc(sizeof(double) * (size_t)t.n);
    for (int64_t i = 0; i < t.n; i++) t.v[i] = fill_value((uint64_t)a + 7, i);
    vals[v->id] = t;
  }
  for (Op *op = f->first; op; op = op->next) {
    const Type *ot = &op->out[0]->type;
    Tensor r = {ir_type_numel(ot), NULL};
    r.v = malloc(sizeof(double) * (size_t)r.n);
    int64_t idx[IR_MAX_RANK];
    switch (op->kind) {
    case OP_CONST:
      for (int64_t i = 0; i < r.n; i++) r.v[i] = ir_attr_float(op, "value", 0);
      break;
    case OP_PARAM:
      for (int64_t i = 0; i < r.n; i++) r.v[i] = fill_value(str_seed(ir_attr_str(op, "p")), i);
      break;
    case OP_DROPOUT:   /* identity at inference */
      memcpy(r.v, vals[op->in[0]->id].v, sizeof(double) * (size_t)r.n);
      break;
    case OP_EW: {
      char err[256];
      Expr *e = ir_expr_parse(m, ir_attr_str(op, "expr"), op->nin, err, sizeof err);
      ck_assert_msg(e, "%s", err);
      double args[32];
      for (int64_t i = 0; i < r.n; i++) {
        unflatten(ot, i, idx);
        for (int k = 0; k < op->nin; k++)
          args[k] = vals[op->in[k]->id].v[bcast_offset(&op->in[k]->type, ot, idx)];
        r.v[i] = ir_expr_eval(e, args);
      }
      break;
    }
    case OP_LINEAR: {
      const Type *xt = &op->in[0]->type;
      int64_t K = xt->dim[xt->rank - 1], N = ot->dim[ot->rank - 1];
      const double *x = vals[op->in[0]->id].v, *w = vals[op->in[1]->id].v;
      const char *epi = ir_attr_str(op, "epi");
      char err[256];
      Expr *e = epi ? ir_expr_parse(m, epi, op->nin - 1, err, sizeof err) : NULL;
      ck_assert(!epi || e);
      for (int64_t i = 0; i < r.n; i++) {
        int64_t row = i / N, col = i % N;
        double s = 0;
        for (int64_t k = 0; k < K; k++) s += x[row * K + k] * w[col * K + k];
        if (e) {
          double args[32];
          args[0] = s;
          unflatten(ot, i, idx);
          for (int k = 2; k < op->nin; k++)
            args[k - 1] = vals[op->in[k]->id].v[bcast_offset(&op->in[k]->type, ot, idx)];
          s = ir_expr_eval(e, args);
        }
        r.v[i] = s;
      }
      break;
    }
    default:
      ck_assert_msg(ir_op_info[op->kind].flags & OPF_EW, "interpreter: unsupported op %s", ir_op_name(op->kind));
      for (int64_t i = 0; i < r.n; i++) {
        unflatten(ot, i, idx);
        double a = vals[op->in[0]->id].v[bcast_offset(&op->in[0]->type, ot, idx)];
        double b = op->nin > 1 ? vals[op->in[1]->id].v[bcast_offset(&op->in[1]->type, ot, idx)] : 0;
        r.v[i] = ir_ew_apply(op->kind, a, b);
      }
    }
    vals[op->out[0]->id] = r;
  }
  Tensor out = vals[f->ret[0]->id];
  Tensor copy = {out.n, malloc(sizeof(double) * (size_t)out.n)};
  memcpy(copy.v, out.v, sizeof(double) * (size_t)out.n);
  for (int i = 0; i < f->nvalues; i++) free(vals[i].v);
  free(vals);
  return copy;
}

static const char *equiv_src =
    "module @eq\n"
    "entry @forward\n"
    "param @w : f32[3,4] init=normal(0.02)\n"
    "param @b : f32[3] init=zeros nodecay\n"
    "func @forward(%x: f32[2,4], %r: f32[2,3]) -> f32[2,3] {\n"
    "  %c0 = const {shape=[2,3], value=0.0} : f32[2,3]\n"
    "  %c1 = const {shape=[3], value=1.0} : f32[3]\n"
    "  %c2 = const {shape=[3], value=2.0} : f32[3]\n"
    "  %c3 = add(%c1, %c2) : f32[3]\n"
    "  %w1 = param {p=@w} : f32[3,4]\n"
    "  %l = linear(%x, %w1) : f32[2,3]\n"
    "  %b1 = param {p=@b} : f32[3]\n"
    "  %b2 = param {p=@b} : f32[3]\n"
    "  %s = add(%l, %b1) : f32[2,3]\n"
    "  %g = gelu_tanh(%s) : f32[2,3]\n"
    "  %h = add(%r, %g) : f32[2,3]\n"
    "  %z = add(%h, %c0) : f32[2,3]\n"
    "  %m = mul(%z, %c3) : f32[2,3]\n"
    "  %n1 = sub(%m, %b2) : f32[2,3]\n"
    "  %n2 = sub(%m, %b1) : f32[2,3]\n"
    "  %q = mul(%n1, %n2) : f32[2,3]\n"
    "  %t = tanh(%q) : f32[2,3]\n"
    "  %e = exp(%r) : f32[2,3]\n"
    "  %u = div(%t, %e) : f32[2,3]\n"
    "  %v = silu(%u) : f32[2,3]\n"
    "  %y = add(%v, %u) : f32[2,3]\n"
    "  return %y\n"
    "}\n";

static void check_equiv(const char *pipeline, int max_ops_left) {
  MemDiag md;
  md_open(&md, 0);
  Module *m = ir_parse("equiv.mir", equiv_src, strlen(equiv_src), &md.d);
  ck_assert_msg(m, "%s", md_text(&md));
  Tensor before = eval_func(m, ir_find_func(m, "forward"));
  Pipeline p;
  pass_pipeline_init(&p);
  ck_assert(pass_parse_pipeline(&p, pipeline, "t", 1, 1, &md.d));
  PassRunConfig cfg = {.verify_each = true};
  ck_assert_msg(pass_run_pipeline(m, &p, &cfg, &md.d), "%s", md_text(&md));
  Func *f = ir_find_func(m, "forward");
  int nops = 0;
  for (Op *op = f->first; op; op = op->next) nops++;
  char *text = ir_print_to_string(m);
  ck_assert_msg(nops <= max_ops_left, "%s: %d ops left:\n%s", pipeline, nops, text);
  Tensor after = eval_func(m, f);
  ck_assert_int_eq(before.n, after.n);
  for (int64_t i = 0; i < before.n; i++)
    ck_assert_msg(fabs(before.v[i] - after.v[i]) <= 1e-12 * (1 + fabs(before.v[i])), "%s: [%lld] %g vs %g\n%s",
                  pipeline, (long long)i, before.v[i], after.v[i], text);
  free(text);
  free(before.v);
  free(after.v);
  pass_pipeline_free(&p);
  ir_module_free(m);
  md_close(&md);
}

START_TEST(test_equivalence) {
  check_equiv("constfold", 100);
  check_equiv("cse", 100);
  check_equiv("dce", 100);
  check_equiv("fuse", 100);
  check_equiv("fuse<epilogue=false>,dce", 100);
  check_equiv("fuse<max-ops=2>,dce", 100);
  /* the whole default pipeline leaves: the const, the params, one linear and one ew */
  check_equiv("constfold,cse,fuse,dce", 6);
}
END_TEST

static Suite *passes_suite(void) {
  Suite *s = suite_create("passes");
  TCase *tc = tcase_create("manager");
  tcase_add_test(tc, test_pipeline_good);
  tcase_add_test(tc, test_pipeline_bad);
  tcase_add_test(tc, test_option_types);
  tcase_add_test(tc, test_registry);
  tcase_add_test(tc, test_run_print);
  tcase_add_test(tc, test_run_verify_failure);
  suite_add_tcase(s, tc);
  TCase *tg = tcase_create("golden");
  tcase_add_test(tg, test_golden_files_exist);
  tcase_add_loop_test(tg, test_golden, 0, GOLDEN_MAX);
  tcase_add_test(tg, test_equivalence);
  suite_add_tcase(s, tg);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(passes_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
