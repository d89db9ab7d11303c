/* test_ir.c: unit tests of the IR core as seen from outside: the builder, the verifier (accepts
 * good modules, rejects each kind of bad one with a specific message), the printer/parser round
 * trip on hand-written modules and on every .mir file in tests/ir, parse errors with exact
 * line:col, fused expressions, and a robustness test that truncates and mutates a valid module at
 * many positions (the parser must return NULL or a module that verifies, never crash; CI runs
 * this under ASan/UBSan).
 */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../ir/ir.h"
#include "text_test.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static Module *parse_text(const char *text, MemDiag *c) {
  return ir_parse("t.mir", text, strlen(text), &c->d);
}

/* Parses, prints, re-parses and re-prints; asserts the two prints are equal and both verify. */
static void check_round_trip(const char *name, const char *text, size_t len) {
  MemDiag c;
  md_open(&c, 1000);
  Module *m = ir_parse(name, text, len, &c.d);
  ck_assert_msg(m != NULL, "%s does not parse:\n%s", name, md_text(&c));
  ck_assert_msg(ir_verify(m, &c.d), "%s does not verify:\n%s", name, md_text(&c));
  char *p1 = ir_print_to_string(m);
  Module *m2 = ir_parse("printed.mir", p1, strlen(p1), &c.d);
  ck_assert_msg(m2 != NULL, "printed %s does not parse:\n%s\n%s", name, md_text(&c), p1);
  ck_assert(ir_verify(m2, &c.d));
  char *p2 = ir_print_to_string(m2);
  ck_assert_msg(strcmp(p1, p2) == 0, "round trip of %s differs:\n%s\n----\n%s", name, p1, p2);
  free(p1);
  free(p2);
  ir_module_free(m);
  ir_module_free(m2);
  md_close(&c);
}

/* A small valid module built with the builder: @blk(x, g) -> layernorm(x,g)+x, called by @main. */
static Module *build_module(void) {
  Module *m = ir_module_new("unit");
  ir_module_set_attr(m, (Attr){.key = "dim", .kind = ATTR_INT, .i = 8});
  ir_module_set_attr(m, (Attr){.key = "batch", .kind = ATTR_INT, .i = 2});
  Param *g = ir_add_param(m, "ln.weight", ir_type1(DT_F32, 8), INIT_ONES, 0);
  g->decay = false;
  ir_add_param(m, "w", ir_type2(DT_F32, 8, 8), INIT_NORMAL, 0.02);

  Func *blk = ir_add_func(m, "blk");
  Value *x = ir_add_arg(blk, "x", ir_type2(DT_F32, 2, 8));
  Value *gg = ir_add_arg(blk, "g", ir_type1(DT_F32, 8));
  Op *ln = ir_op_new(blk, OP_LAYERNORM, 2, (Value *[]){x, gg}, 1);
  ir_set_attr_float(ln, "eps", 1e-5);
  Value *y = ir_emit(blk, ln);
  Value *z = ir_emit(blk, ir_op_new(blk, OP_ADD, 2, (Value *[]){x, y}, 1));
  ir_set_return(blk, 1, &z);

  Func *f = ir_add_func(m, "main");
  m->entry = ir_strdup(m, "main");
  Value *in = ir_add_arg(f, "in", ir_type2(DT_F32, 2, 8));
  Op *pg = ir_op_new(f, OP_PARAM, 0, NULL, 1);
  ir_set_attr_sym(pg, "p", "ln.weight");
  Value *gv = ir_emit(f, pg);
  Op *pw = ir_op_new(f, OP_PARAM, 0, NULL, 1);
  ir_set_attr_sym(pw, "p", "w");
  Value *wv = ir_emit(f, pw);
  wv->name = "w";
  Value *h = ir_emit(f, ir_op_new(f, OP_LINEAR, 2, (Value *[]){in, wv}, 1));
  Op *call = ir_op_new(f, OP_CALL, 2, (Value *[]){h, gv}, 1);
  ir_set_attr_sym(call, "callee", "blk");
  Value *r = ir_emit(f, call);
  ir_set_return(f, 1, &r);
  return m;
}

static Op *find_op(Func *f, OpKind k) {
  for (Op *op = f->first; op; op = op->next)
    if (op->kind == k) return op;
  return NULL;
}

/* Runs ir_verify and asserts it fails with a message containing want. */
static void expect_verify_error(Module *m, const char *want) {
  MemDiag c;
  md_open(&c, 1000);
  bool ok = ir_verify(m, &c.d);
  const char *t = md_text(&c);
  ck_assert_msg(!ok, "verifier accepted a module that should fail with '%s'", want);
  ck_assert_msg(strstr(t, want) != NULL, "verifier said:\n%s\nexpected to contain: %s", t, want);
  md_close(&c);
  ir_module_free(m);
}

/* ---- builder and printer ------------------------------------------------------------------ */

static const char *const built_text =
    "module @unit {batch=2, dim=8}\n"
    "entry @main\n"
    "\n"
    "param @ln.weight : f32[8] init=ones nodecay\n"
    "param @w : f32[8,8] init=normal(0.02)\n"
    "\n"
    "func @blk(%x: f32[2,8], %g: f32[8]) -> f32[2,8] {\n"
    "  %0 = layernorm(%x, %g) {eps=1e-05} : f32[2,8]\n"
    "  %1 = add(%x, %0) : f32[2,8]\n"
    "  return %1\n"
    "}\n"
    "\n"
    "func @main(%in: f32[2,8]) -> f32[2,8] {\n"
    "  %0 = param {p=@ln.weight} : f32[8]\n"
    "  %w = param {p=@w} : f32[8,8]\n"
    "  %1 = linear(%in, %w) : f32[2,8]\n"
    "  %2 = call(%1, %0) {callee=@blk} : f32[2,8]\n"
    "  return %2\n"
    "}\n";

START_TEST(test_builder_and_print) {
  Module *m = build_module();
  MemDiag c;
  md_open(&c, 1000);
  ck_assert_msg(ir_verify(m, &c.d), "%s", md_text(&c));
  char *s = ir_print_to_string(m);
  ck_assert_str_eq(s, built_text);
  free(s);
  ck_assert_int_eq(ir_param_count(m), 8 + 64);
  md_close(&c);
  ir_module_free(m);
}
END_TEST

START_TEST(test_print_values) {
  Module *m = ir_module_new("v");
  Param *p = ir_add_param(m, "p", ir_type(DT_BF16, 0, NULL), INIT_UNIFORM, 100000.0);
  p->trainable = false;
  ir_add_param(m, "h", ir_type1(DT_F16, 3), INIT_ONES, 0)->decay = false;
  m->train = (TrainConfig){.present = true, .steps = 7, .batch = 2, .micro_batch = 1, .warmup = 7, .seed = 3,
                           .lr = 0.1, .min_lr = 0.1, .beta1 = 0.5, .eps = 1e-3, .grad_clip = 2.5,
                           .schedule = TRAIN_SCHED_CONSTANT, .precision = TRAIN_PREC_BF16, .data = "x y\n"};
  Func *f = ir_add_func(m, "f");
  Op *op = ir_op_new(f, OP_CONST, 0, NULL, 1);
  ir_set_attr_float(op, "value", 0.1);
  ir_set_attr_ints(op, "shape", 2, (int64_t[]){1, 2});
  /* ops carry only the attributes ir/ops.def (ATTR rows) declares; the module line takes any key, so the
   * remaining value forms print there */
  ir_module_set_attr(m, (Attr){.key = "note", .kind = ATTR_STR, .s = "a\"b\\c\n\x7f"});
  ir_module_set_attr(m, (Attr){.key = "n", .kind = ATTR_INT, .i = -7});
  ir_module_set_attr(m, (Attr){.key = "w", .kind = ATTR_FLOAT, .f = 3.0});
  ir_module_set_attr(m, (Attr){.key = "x", .kind = ATTR_FLOAT, .f = 1.0 / 3.0});
  ir_module_set_attr(m, (Attr){.key = "y", .kind = ATTR_FLOAT, .f = -INFINITY});
  Value *v = ir_emit(f, op);
  ir_set_return(f, 1, &v);
  char *s = ir_print_to_string(m);
  ck_assert_msg(strstr(s, "param @p : bf16[] init=uniform(100000.0) frozen\nparam @h : f16[3] init=ones nodecay\n"),
                "%s", s);
  ck_assert_msg(strstr(s, "\ntrain {steps=7, batch=2, micro_batch=1, warmup=7, seed=3, eval_every=0, checkpoint_every=0, "
                          "lr=0.1, min_lr=0.1, beta1=0.5, beta2=0.0, eps=0.001, weight_decay=0.0, momentum=0.0, "
                          "grad_clip=2.5, schedule=constant, optimizer=adamw, precision=bf16, data=\"x y\\x0A\"}\n\n"),
                "%s", s);
  ck_assert_int_eq(ir_param_bytes(m), 2 + 3 * 2);
  ck_assert_msg(strstr(s, "module @v {n=-7, note=\"a\\\"b\\\\c\\x0A\\x7F\", w=3.0, x=0.3333333333333333, "
                          "y=-inf}\n"), "%s", s);
  ck_assert_msg(strstr(s, "%0 = const {shape=[1,2], value=0.1} : f32[1,2]\n"), "%s", s);
  ck_assert_msg(strstr(s, "func @f() -> f32[1,2] {\n"), "%s", s);
  check_round_trip("print_values", s, strlen(s));
  free(s);
  ir_module_free(m);
}
END_TEST

/* ---- verifier ------------------------------------------------------------------------------ */

START_TEST(test_verify_accepts) {
  Module *m = build_module();
  MemDiag c;
  md_open(&c, 1000);
  ck_assert(ir_verify(m, &c.d));
  ck_assert_str_eq(md_text(&c), "");
  md_close(&c);
  ir_module_free(m);
}
END_TEST

START_TEST(test_verify_use_before_def) {
  Module *m = build_module();
  Func *f = ir_find_func(m, "blk");
  /* swap the two ops: add now uses layernorm's result before it is defined */
  Op *ln = f->first, *add = ln->next;
  ir_unlink(ln);
  ir_insert_after(add, ln);
  expect_verify_error(m, "in @blk: add operand 1 is used before its definition");
}
END_TEST

START_TEST(test_verify_foreign_value) {
  Module *m = build_module();
  Func *blk = ir_find_func(m, "blk"), *main_ = ir_find_func(m, "main");
  Op *add = find_op(blk, OP_ADD);
  add->in[0] = main_->args[0]; /* a value of another function */
  expect_verify_error(m, "in @blk: add operand 0 (%in) is used before its definition");
}
END_TEST

START_TEST(test_verify_duplicate_names) {
  Module *m = build_module();
  Func *f = ir_find_func(m, "blk");
  f->first->out[0]->name = "x";
  expect_verify_error(m, "in @blk: duplicate value name %x");
}
END_TEST

START_TEST(test_verify_duplicate_param) {
  Module *m = build_module();
  m->params[1]->name = "ln.weight";
  expect_verify_error(m, "duplicate parameter name @ln.weight");
}
END_TEST

START_TEST(test_verify_arity) {
  Module *m = build_module();
  Op *add = find_op(ir_find_func(m, "blk"), OP_ADD);
  add->nin = 1;
  expect_verify_error(m, "in @blk: add takes 2 operands, got 1");
}
END_TEST

START_TEST(test_verify_missing_attr) {
  Module *m = build_module();
  Op *ln = find_op(ir_find_func(m, "blk"), OP_LAYERNORM);
  ir_remove_attr(ln, "eps");
  expect_verify_error(m, "in @blk: layernorm requires attribute 'eps'");
}
END_TEST

START_TEST(test_verify_bad_eps) {
  Module *m = build_module();
  Op *ln = find_op(ir_find_func(m, "blk"), OP_LAYERNORM);
  ir_set_attr_float(ln, "eps", 0.0);
  expect_verify_error(m, "in @blk: layernorm: eps must be in (0, 1], got 0");
}
END_TEST

START_TEST(test_verify_shape_mismatch) {
  Module *m = build_module();
  Op *add = find_op(ir_find_func(m, "blk"), OP_ADD);
  add->out[0]->type = ir_type2(DT_F32, 2, 9);
  expect_verify_error(m, "in @blk: add result 0 has type f32[2,9], but the operands give f32[2,8]");
}
END_TEST

START_TEST(test_verify_call_signature) {
  Module *m = build_module();
  Func *f = ir_find_func(m, "main");
  Op *call = find_op(f, OP_CALL);
  call->in[1] = call->in[0]; /* f32[2,8] where @blk takes f32[8] */
  expect_verify_error(m, "in @main: call to @blk: argument 1 is f32[2,8], expected f32[8]");
}
END_TEST

START_TEST(test_verify_call_arity) {
  Module *m = build_module();
  Op *call = find_op(ir_find_func(m, "main"), OP_CALL);
  call->nin = 1;
  expect_verify_error(m, "in @main: call to @blk with 1 arguments, it takes 2");
}
END_TEST

START_TEST(test_verify_unknown_param) {
  Module *m = build_module();
  Op *p = find_op(ir_find_func(m, "main"), OP_PARAM);
  ir_set_attr_sym(p, "p", "nope");
  expect_verify_error(m, "in @main: unknown parameter @nope");
}
END_TEST

START_TEST(test_verify_unknown_callee) {
  Module *m = build_module();
  Op *call = find_op(ir_find_func(m, "main"), OP_CALL);
  ir_set_attr_sym(call, "callee", "blk2");
  expect_verify_error(m, "in @main: call to unknown function @blk2");
}
END_TEST

START_TEST(test_verify_bad_expr) {
  Module *m = build_module();
  Func *f = ir_find_func(m, "blk");
  Op *add = find_op(f, OP_ADD);
  Op *ew = ir_op_new(f, OP_EW, 2, add->in, 1);
  ir_set_attr_str(ew, "expr", "add($0, $2)");
  ir_infer(m, ew, (char[64]){0}, 64);
  ir_insert_after(add, ew);
  expect_verify_error(m, "in @blk: ew: bad expr: operand out of range (the op has 2) at offset 8 in \"add($0, $2)\"");
}
END_TEST

START_TEST(test_verify_wrong_return_type) {
  /* @blk now returns f32[8]: the call's written result type no longer matches its callee */
  Module *m = build_module();
  Func *f = ir_find_func(m, "blk");
  ir_set_return(f, 1, &f->args[1]);
  expect_verify_error(m, "in @main: call result 0 has type f32[2,8], but the operands give f32[8]");
}
END_TEST

START_TEST(test_verify_undefined_return) {
  Module *m = build_module();
  Func *f = ir_find_func(m, "blk");
  Value *stray = ir_new_value(f, "stray", ir_type1(DT_F32, 8));
  ir_set_return(f, 1, &stray);
  expect_verify_error(m, "in @blk: returned value 0 is not defined in the function");
}
END_TEST

START_TEST(test_verify_recursion_and_entry) {
  Module *m = build_module();
  Func *blk = ir_find_func(m, "blk");
  /* @blk calls @main which calls @blk */
  Op *call = ir_op_new(blk, OP_CALL, 1, &blk->args[0], 1);
  ir_set_attr_sym(call, "callee", "main");
  ir_emit(blk, call);
  m->entry = "nothere";
  m->params[1]->fmt = PF_COUNT;
  MemDiag c;
  md_open(&c, 1000);
  ck_assert(!ir_verify(m, &c.d));
  const char *t = md_text(&c);
  ck_assert_msg(strstr(t, "recursive call to @") != NULL, "%s", t);
  ck_assert_msg(strstr(t, "entry function @nothere does not exist") != NULL, "%s", t);
  ck_assert_msg(strstr(t, "parameter @w: invalid format") != NULL, "%s", t);
  md_close(&c);
  ir_module_free(m);
}
END_TEST

START_TEST(test_verify_param_format) {
  Module *m = build_module();
  m->params[1]->block = 32;
  expect_verify_error(m, "parameter @w: a dense parameter has no blocks or auxiliary arrays");
}
END_TEST

/* A quantised parameter is an [N,K] matrix (K a multiple of 32 for the block formats), and no
 * function returns a quantised weight. */
START_TEST(test_verify_quantised) {
  static const char *const cases[][2] = {
      {"module @m\nparam @p : q4_0[4,48]\n", "parameter @p: a q4_0 parameter is an [N,K] matrix with K a multiple of 32"},
      {"module @m\nparam @r : i8_row[4]\n", "parameter @r: a i8_row parameter is an [N,K] matrix"},
      {"module @m\nfunc @f(%w: q8_0[4,32]) -> q8_0[4,32] {\n  return %w\n}\n", "in @f: returned value 0 is a q8_0 weight"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    MemDiag c;
    md_open(&c, 1000);
    ck_assert_msg(parse_text(cases[i][0], &c) == NULL, "%s parsed", cases[i][0]);
    ck_assert_msg(strstr(md_text(&c), cases[i][1]), "%s", md_text(&c));
    md_close(&c);
  }
}
END_TEST

START_TEST(test_verify_train_record) {
  Module *m = build_module();
  m->train = (TrainConfig){.present = true, .steps = 10, .batch = 4, .micro_batch = 4, .lr = 1e-3, .eps = 1e-8};
  MemDiag c;
  md_open(&c, 1000);
  ck_assert_msg(ir_verify(m, &c.d), "%s", md_text(&c));
  md_close(&c);
  m->train.micro_batch = 3;
  expect_verify_error(m, "train: 'micro_batch' (3) must divide the training 'batch' (4)");
  m = build_module();
  m->train = (TrainConfig){.present = true, .steps = 10, .batch = 4, .micro_batch = 4, .lr = 1e-3, .eps = 1e-8};
  m->train.beta2 = 1.0;
  expect_verify_error(m, "train: 'beta2' must be in [0, 1), got 1");
}
END_TEST

/* Storage bytes follow each parameter's dtype (a shared weight is one parameter, counted once). */
START_TEST(test_param_storage_bytes) {
  Module *m = ir_module_new("b");
  ir_add_param(m, "a", ir_type2(DT_F32, 3, 5), INIT_ZEROS, 0);
  Param *h = ir_add_param(m, "h", ir_type2(DT_BF16, 3, 5), INIT_ZEROS, 0);
  ir_add_param(m, "g", ir_type1(DT_F16, 7), INIT_ONES, 0);
  ck_assert_int_eq(ir_param_storage_bytes(h), 30);
  ck_assert_int_eq(ir_param_count(m), 15 + 15 + 7);
  ck_assert_int_eq(ir_param_bytes(m), 60 + 30 + 14);
  ck_assert_str_eq(ir_param_format_name(PF_DENSE), "dense");
  ck_assert_int_eq(ir_param_format_by_name("dense"), PF_DENSE);
  ck_assert_int_eq(ir_param_format_by_name("q8_0"), -1);
  /* quantised: the values, at the next 64 bytes the scales (f16 per 32 weights, f32 per row) */
  ck_assert_int_eq(ir_param_storage_bytes(ir_add_param(m, "q8", ir_type2(DT_Q8_0, 64, 32), INIT_ZEROS, 0)),
                   2048 + 64 * 2);
  ck_assert_int_eq(ir_param_storage_bytes(ir_add_param(m, "q4", ir_type2(DT_Q4_0, 3, 64), INIT_ZEROS, 0)),
                   128 + 3 * 2 * 2);
  ck_assert_int_eq(ir_param_storage_bytes(ir_add_param(m, "i8", ir_type2(DT_I8_ROW, 2, 5), INIT_ZEROS, 0)), 64 + 8);
  ir_module_free(m);
}
END_TEST

/* ---- round trips -------------------------------------------------------------------------- */

START_TEST(test_round_trip_handwritten) {
  check_round_trip("built", built_text, strlen(built_text));
  static const char *const mods[] = {
      "module @a\n",
      "module @a {s=\"\", l=[], e=[-1,0,7]}\nentry @f\nfunc @f(%0: f32[]) -> f32[] {\n  return %0\n}\n",
      /* numbering normalises: the unnamed %7 prints as %0 */
      ("module @b\nfunc @g(%7: f32[3], %y: f32[3]) -> f32[3], f32[3] {\n %zz = mul(%7, %y) : f32[3]\n"
       " %1 = relu(%zz) : f32[3] ; comment\n return %1, %zz\n}\n"),
      /* a function returning nothing, and an op with no operands */
      "module @c\nparam @p : i8[2,2] init=zeros frozen\nfunc @h() -> () {\n  %0 = param {p=@p} : i8[2,2]\n  return\n}\n",
  };
  for (size_t i = 0; i < sizeof mods / sizeof *mods; i++) check_round_trip("handwritten", mods[i], strlen(mods[i]));

  /* the first print normalises: compare against the expected text once */
  MemDiag c;
  md_open(&c, 1000);
  Module *m = parse_text(mods[2], &c);
  ck_assert_msg(m != NULL, "%s", md_text(&c));
  char *s = ir_print_to_string(m);
  ck_assert_str_eq(s, "module @b\n\nfunc @g(%0: f32[3], %y: f32[3]) -> f32[3], f32[3] {\n"
                      "  %zz = mul(%0, %y) : f32[3]\n  %1 = relu(%zz) : f32[3]\n  return %1, %zz\n}\n");
  free(s);
  ir_module_free(m);
  md_close(&c);
}
END_TEST

START_TEST(test_round_trip_files) {
  DIR *dir = opendir("tests/ir");
  ck_assert_msg(dir != NULL, "run from the repository root");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dir))) {
    size_t l = strlen(e->d_name);
    if (l < 5 || strcmp(e->d_name + l - 4, ".mir") != 0) continue;
    char path[512];
    snprintf(path, sizeof path, "tests/ir/%s", e->d_name);
    size_t len;
    char *text = read_file(path, &len);
    ck_assert_ptr_nonnull(text);
    check_round_trip(path, text, len);
    free(text);
    n++;
  }
  closedir(dir);
  ck_assert_int_ge(n, 3);
}
END_TEST

START_TEST(test_parse_file_facts) {
  size_t len;
  char *text = read_file("tests/ir/misc.mir", &len);
  ck_assert_ptr_nonnull(text);
  MemDiag c;
  md_open(&c, 1000);
  Module *m = ir_parse("tests/ir/misc.mir", text, len, &c.d);
  ck_assert_msg(m != NULL, "%s", md_text(&c));
  Param *q = ir_find_param(m, "q.w");
  ck_assert(q && !q->trainable && !q->decay && q->fmt == PF_DENSE && q->type.dtype == DT_F32);
  ck_assert(q->init == INIT_NORMAL && q->init_arg == 1.0);
  ck_assert_int_eq(ir_find_param(m, "q.w2")->type.dtype, DT_BF16);
  const Param *qb = ir_find_param(m, "q.b");
  ck_assert(qb->type.dtype == DT_F16 && !qb->decay && qb->trainable && qb->init == INIT_ONES);
  const TrainConfig *t = &m->train;
  ck_assert(t->present && t->steps == 10 && t->batch == 4 && t->micro_batch == 2 && t->checkpoint_every == 5);
  ck_assert(t->lr == 1.0 && t->beta2 == 0.999 && t->eps == 1e-8 && t->momentum == 0.5);
  ck_assert(t->schedule == TRAIN_SCHED_LINEAR && t->optimizer == TRAIN_OPT_SGD && t->precision == TRAIN_PREC_FP16);
  ck_assert_str_eq(t->data, "d\t\"a\".txt");
  ck_assert_int_eq(t->line, 5);
  const Attr *k = ir_module_attr(m, "kind");
  ck_assert_str_eq(k->s, "enc\"oder\\ \tx");
  ck_assert(isinf(ir_module_attr(m, "big")->f));
  Func *f = ir_find_func(m, "main");
  ck_assert_int_eq(f->line, 15);
  ck_assert_int_eq(f->col, 1);
  Op *call = find_op(f, OP_CALL);
  ck_assert_int_eq(call->nout, 2);
  ck_assert_int_eq(call->line, 19);
  ck_assert_int_eq(call->col, 3);
  ck_assert(ir_verify(m, &c.d));
  ir_module_free(m);
  md_close(&c);
  free(text);
}
END_TEST

/* The module's vocab against its token embedding: missing, or not the table's rows, is rejected at
 * the embedding op's line:col, by the parser and by the verifier (a program built from it would
 * accept token ids the table does not have and embed them as zeros). */
START_TEST(test_vocab_contradicts_table) {
  static const char *const body =
      "entry @f\n"
      "param @e : f32[16,4] init=zeros\n"
      "func @f(%t: i32[1,4]) -> f32[1,4,4] {\n"
      "  %0 = param {p=@e} : f32[16,4]\n"
      "  %1 = embedding(%t, %0) : f32[1,4,4]\n"
      "  return %1\n"
      "}\n";
  static const struct {
    const char *module, *want;
  } cases[] = {
      {"module @t {dim=4}\n", "t.mir:6:3: error: the token ids are embedded with a 16-row table, but the module has no "
                               "integer 'vocab' attribute (it must be 16)"},
      {"module @t {vocab=\"16\"}\n", "t.mir:6:3: error: the token ids are embedded with a 16-row table, but the module "
                                     "has no integer 'vocab' attribute"},
      {"module @t {vocab=1000}\n",
       "t.mir:6:3: error: module attribute vocab=1000 contradicts the 16-row embedding table of the token ids"},
  };
  char text[1024];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    snprintf(text, sizeof text, "%s%s", cases[i].module, body);
    MemDiag c;
    md_open(&c, 1000);
    ck_assert_msg(parse_text(text, &c) == NULL, "case %zu parsed:\n%s", i, text);
    ck_assert_msg(strstr(md_text(&c), cases[i].want) != NULL, "case %zu: parser said:\n%s\nexpected: %s", i,
                  md_text(&c), cases[i].want);
    md_close(&c);
  }
  /* the verifier, on a good module whose attribute is then changed through the API */
  snprintf(text, sizeof text, "module @t {vocab=16}\n%s", body);
  MemDiag c;
  md_open(&c, 1000);
  Module *m = parse_text(text, &c);
  ck_assert_msg(m != NULL, "good text does not parse:\n%s", md_text(&c));
  ck_assert(ir_verify(m, &c.d));
  md_close(&c);
  ir_module_set_attr(m, (Attr){.key = "vocab", .kind = ATTR_INT, .i = 1000});
  expect_verify_error(m, "<ir>:6:3: error: module attribute vocab=1000 contradicts the 16-row embedding table");
}
END_TEST

/* ---- parse errors ------------------------------------------------------------------------- */

static const char *const hdr = "module @t\n";  /* line 1 of every malformed input below */

/* The train line's settings after steps, batch and micro_batch (all but min_lr and data). */
#define TRAIN_REST                                                                                             \
  " warmup=0, seed=0, eval_every=0, checkpoint_every=0, lr=1, beta1=0, beta2=0, eps=1, weight_decay=0,"        \
  " momentum=0, grad_clip=0, schedule=linear, optimizer=sgd, precision=fp32"

static const struct {
  const char *body;   /* appended to hdr */
  const char *want;   /* expected first error line (prefix) */
} bad_inputs[] = {
    {"param @p : f32[4 init=zeros\n", "t.mir:2:18: error: expected ',' or ']' in the type, got 'init'"},
    {"param @p : f33[4] init=zeros\n", "t.mir:2:12: error: unknown element type 'f33'"},
    {"param @p : f32[0]\n", "t.mir:2:16: error: dimension must be at least 1, got 0"},
    {"param @p : f32[4] init=gaussian(1.0)\n", "t.mir:2:24: error: expected an initialiser"},
    {"param @p : f32[4] frozn\n", "t.mir:2:19: error: unknown parameter fact 'frozn' (did you mean 'frozen'?)"},
    {"param @p : f32[4]\nparam @p : f32[4]\n", "t.mir:3:7: error: redefinition of parameter @p"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = addd(%x, %x) : f32[4]\n  return %0\n}\n",
     "t.mir:3:8: error: unknown op 'addd' (did you mean 'add'?)"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = add(%x, %y) : f32[4]\n  return %0\n}\n",
     "t.mir:3:16: error: use of undefined value %y"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = add(%x, %x) : f32[5]\n  return %0\n}\n",
     "t.mir:3:3: error: add result 0 is written as f32[5] but its operands give f32[4]"},
    /* a quantised weight is read only by linear and embedding (ir.h, DType) */
    {"func @f(%w: q8_0[4,32]) -> f32[4,32] {\n  %0 = neg(%w) : f32[4,32]\n  return %0\n}\n",
     "t.mir:3:3: error: neg: operand 0 is a q8_0 weight, which only linear and embedding read (as their weight)"},
    {"func @f(%x: f32[2,32], %w: q4_0[4,32]) -> f32[2,32] {\n  %0 = linear(%w, %x) : f32[2,32]\n  return %0\n}\n",
     "t.mir:3:3: error: linear: operand 0 is a q4_0 weight"},
    {"func @f(%x: f32[2,48], %w: q8_0[4,48]) -> f32[2,4] {\n  %0 = linear(%x, %w) : f32[2,4]\n  return %0\n}\n",
     "t.mir:3:3: error: linear: a q8_0 weight needs an input dimension that is a multiple of 32, not q8_0[4,48]"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = neg(%x, %x) : f32[4]\n  return %0\n}\n",
     "t.mir:3:3: error: neg takes 1 operand, got 2"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %x = neg(%x) : f32[4]\n  return %x\n}\n",
     "t.mir:3:3: error: redefinition of %x"},
    {"func @f(%x: f32[4]) -> f32[8] {\n  return %x\n}\n",
     "t.mir:3:10: error: returned value %x has type f32[4], but @f is declared to return f32[8]"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = call(%x) {callee=@gg} : f32[4]\n  return %0\n}\n",
     "t.mir:3:3: error: call to unknown function @gg"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = call(%x) {callee=@g} : f32[4]\n  return %0\n}\n"
     "func @g(%x: f32[4], %y: f32[4]) -> f32[4] {\n  return %x\n}\n",
     "t.mir:3:3: error: call to @g with 1 arguments, it takes 2"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = ew(%x) {expr=\"add($0)\"} : f32[4]\n  return %0\n}\n",
     "t.mir:3:3: error: ew: bad expr: expected ',' ('add' takes 2 operands) at offset 6 in \"add($0)\""},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = layernorm(%x, %x) : f32[4]\n  return %0\n}\n",
     "t.mir:3:3: error: layernorm requires attribute 'eps'"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = param {p=@nope} : f32[4]\n  return %0\n}\n",
     "t.mir:3:3: error: unknown parameter @nope"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = neg(%x) {s=\"abc} : f32[4]\n  return %0\n}\n",
     "t.mir:3:19: error: unterminated string"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = neg(%x) : f32[4]\n", "t.mir:4:1: error: expected '}' to close the function"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = neg(%x) : f32[4]\n}\n", "t.mir:4:1: error: function @f ends without a return"},
    {"entry @main\nfunc @mian() -> () {\n  return\n}\n", "t.mir:2:7: error: entry function @main is not defined (did you mean @mian?)"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = call(%x) {callee=@f} : f32[4]\n  return %0\n}\n",
     "t.mir:3:3: error: recursive call to @f"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = neg(%x) {n=99999999999999999999} : f32[4]\n  return %0\n}\n",
     "t.mir:3:19: error: integer literal out of range"},
    {"param @p : f32[4] shared=@q\n", "t.mir:2:19: error: 'shared=' was removed: to share a weight, bind the same "
                                       "parameter (write `param {p=@P}` for @P wherever it is used) and drop this parameter"},
    {"param @p : f32[4] quant=int8(group=32)\n", "t.mir:2:19: error: 'quant=' was removed: a parameter's storage is "
                                                 "written format=NAME (only 'dense', the default, is implemented yet)"},
    {"param @p : f32[4] sparse=csr(0.5)\n", "t.mir:2:19: error: 'sparse=' was removed"},
    {"param @p : f32[4] format=q8_0\n", "t.mir:2:26: error: format 'q8_0' is not implemented yet (only 'dense' is)"},
    {"param @p : f32[4] format=dense format=dense\n", "t.mir:2:32: error: duplicate parameter fact 'format'"},
    {"param @p : f32[4,8] prune=magnitude(1.5)\n", "t.mir:2:37: error: the sparsity of prune=magnitude is in (0, 1)"},
    {"param @p : f32[4,8] prune=nm(2)\n", "t.mir:2:31: error: expected ':' between N and M"},
    {"param @p : f32[4,8] prune=half(0.5)\n", "t.mir:2:27: error: expected a pruning: magnitude(S), global(S) or nm(N:M)"},
    {"param @p : f32[4,8] prune=nm(4:2)\n", "t.mir: error: the parsed module does not verify: <ir>:2:1: error: parameter @p: prune=nm(N:M) needs 1 <= N < M"},
    {"param @p : csr[4,8] init=zeros\n", "t.mir: error: the parsed module does not verify: <ir>:2:1: error: parameter @p: a csr parameter is an [N,K] matrix with K <= "
                                          "65536 and room for 1 to N*K nonzeros (nnz=0)"},
    {"param @p : csr[4,8] nnz=40 prune=magnitude(0.5)\n", "t.mir: error: the parsed module does not verify: <ir>:2:1: error: parameter @p: a csr parameter is an [N,K]"},
    {"param @p : f32[4,8] nnz=4\n", "t.mir: error: the parsed module does not verify: <ir>:2:1: error: parameter @p: nnz= is a fact of csr parameters"},
    {"param @p : csr[4,8] nnz=4 prune=global(0.5)\n", "t.mir: error: the parsed module does not verify: <ir>:2:1: error: parameter @p: prune=global leaves each "
                                                       "matrix's nonzero count open"},
    {"param @p : f32[4,8] select=norm(@q,0,1,1,8)\n", "t.mir: error: the parsed module does not verify: <ir>:2:1: error: parameter @p: select= names @q, which is not a "
                                                      "parameter"},
    {"param @p : f32[4,8] select=norm(@p,0,3,1,8)\n", "t.mir: error: the parsed module does not verify: <ir>:2:1: error: parameter @p: select= needs a group parameter"},
    {"param @p : f32[4,8] select=norm(@p,2,1,1,8)\n", "t.mir:2:36: error: the axis: 2 is out of range [0, 1]"},
    {"param @p : f32[4,8] select=first(@p,0,1,1,8)\n", "t.mir:2:28: error: expected a selection rule"},
    {"param @w : csr[4,8] nnz=4 prune=magnitude(0.875)\nfunc @f(%x: f32[2,8]) -> f32[2,4] {\n  %0 = param {p=@w} : "
     "csr[4,8]\n  %1 = linear(%x, %0) : f32[2,4]\n  return %1\n}\n",
     "t.mir:5:3: error: linear: a csr weight needs nnz= (its nonzero capacity)"},
    {"param @w : csr[4,8] nnz=4 prune=magnitude(0.875)\nfunc @f(%x: f32[2,8]) -> f32[2,4] {\n  %0 = param {p=@w} : "
     "csr[4,8]\n  %1 = neg(%0) : csr[4,8]\n  return %1\n}\n",
     "t.mir:5:3: error: neg: operand 0 is a csr weight, which only linear ops read"},
    {"train {steps=0}\n", "t.mir:2:14: error: 'steps' must be positive, got 0"},
    {"train {lr=-1}\n", "t.mir:2:11: error: 'lr' must be greater than 0, got -1"},
    {"train {lr=+inf}\n", "t.mir:2:11: error: 'lr' must be a finite number, got inf"},
    {"train {beta1=1.0}\n", "t.mir:2:14: error: 'beta1' must be in [0, 1), got 1"},
    {"train {schedule=cosin}\n", "t.mir:2:17: error: expected one of cosine, constant, linear for 'schedule', got 'cosin'"},
    {"train {stesp=1}\n", "t.mir:2:8: error: unknown training setting 'stesp' (did you mean 'steps'?)"},
    {"train {steps=1, steps=2}\n", "t.mir:2:17: error: duplicate training setting 'steps'"},
    {"train {steps=1.5}\n", "t.mir:2:14: error: expected an integer, got '1.5'"},
    {"train {data=x}\n", "t.mir:2:13: error: expected a string, got 'x'"},
    {"train {steps=5}\n", "t.mir:2:1: error: the 'train' line lacks 'batch' (every setting but data and prune_ is written)"},
    {"train {steps=5, batch=4, micro_batch=3," TRAIN_REST ", min_lr=0}\n",
     "t.mir:2:38: error: 'micro_batch' (3) must divide the training 'batch' (4)"},
    {"train {steps=5, batch=4, micro_batch=2," TRAIN_REST ", min_lr=2}\n",
     "t.mir:2:220: error: 'min_lr' (2) must not exceed 'lr' (1)"},
    {"train {steps=5, batch=4, micro_batch=2," TRAIN_REST ", min_lr=0}\ntrain {}\n", "t.mir:3:1: error: duplicate 'train' line"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = neg(%x) : f32[4] ? \n  return %0\n}\n",
     "t.mir:3:25: error: unexpected character '?'"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 %1 = neg(%x) : f32[4]\n  return %0\n}\n",
     "t.mir:3:6: error: expected '=' after the result names, got '%1'"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = dropout(%x) {p=1.5, stream=0} : f32[4]\n  return %0\n}\n",
     "t.mir:3:3: error: dropout: p must be in [0, 1), got 1.5"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = rmsnorm(%x, %x) {eps=-1} : f32[4]\n  return %0\n}\n",
     "t.mir:3:3: error: rmsnorm: eps must be in (0, 1], got -1"},
    {"func @f(%x: f32[4]) -> f32[4] {\n  %0 = neg(%x) {n=1} : f32[4]\n  return %0\n}\n",
     "t.mir:3:3: error: neg has no attribute 'n'"},
    {"func @f(%x: f32[2,3,18]) -> f32[2,3,18] {\n  %0 = rope(%x) {heads=2} : f32[2,3,18]\n  return %0\n}\n",
     "t.mir:3:3: error: rope: the head dimension 3 (C 6 / heads 2) is odd; rope rotates pairs of dims"},
    {"func @f(%x: f32[2,3,16]) -> f32[2,3,16] {\n  %0 = rope(%x) {heads=2} : f32[2,3,16]\n  return %0\n}\n",
     "t.mir:3:3: error: rope expects qkv [B,T,3C], got f32[2,3,16]"},
    /* Transformer-XL's ops: the shape rules name the operand that does not fit */
    {"func @f(%x: f32[2,3,1]) -> f32[2,4,1] {\n  %0 = xl_memory(%x) {memory=1} : f32[2,4,1]\n  return %0\n}\n",
     "t.mir:3:3: error: xl_memory: memory x C must be at least 2 (x is f32[2,3,1])"},
    {"func @f(%q: f32[2,7,12], %r: f32[7,4], %u: f32[2,2], %w: f32[2,3]) -> f32[2,3,4] {\n"
     "  %0 = xl_attention(%q, %r, %u, %w) {heads=2, memory=4} : f32[2,3,4]\n  return %0\n}\n",
     "t.mir:3:3: error: xl_attention: a relative bias f32[2,3] is not f32 [heads, C/heads] for qkv f32[2,7,12]"},
    {"func @f(%q: f32[2,7,12], %r: f32[6,4], %u: f32[2,2], %w: f32[2,2]) -> f32[2,3,4] {\n"
     "  %0 = xl_attention(%q, %r, %u, %w) {heads=2, memory=4} : f32[2,3,4]\n  return %0\n}\n",
     "t.mir:3:3: error: xl_attention: rk f32[6,4] is not f32 [M+T,C] for qkv f32[2,7,12]"},
    {"func @f(%q: f32[2,4,12], %r: f32[4,4], %u: f32[2,2], %w: f32[2,2]) -> f32[2,1,4] {\n"
     "  %0 = xl_attention(%q, %r, %u, %w) {heads=2, memory=4} : f32[2,1,4]\n  return %0\n}\n",
     "t.mir:3:3: error: xl_attention expects f32 qkv [B,M+T,3C] with T >= 1, got f32[2,4,12]"},
};

START_TEST(test_parse_errors) {
  for (size_t i = 0; i < sizeof bad_inputs / sizeof *bad_inputs; i++) {
    char text[1024];
    snprintf(text, sizeof text, "%s%s", hdr, bad_inputs[i].body);
    MemDiag c;
    md_open(&c, 1000);
    Module *m = parse_text(text, &c);
    const char *t = md_text(&c);
    ck_assert_msg(m == NULL, "input %zu parsed:\n%s", i, text);
    ck_assert_msg(strncmp(t, bad_inputs[i].want, strlen(bad_inputs[i].want)) == 0,
                  "input %zu:\n%s\ngave:\n%s\nexpected:\n%s", i, text, t, bad_inputs[i].want);
    md_close(&c);
  }
}
END_TEST

START_TEST(test_parse_error_caret_and_recovery) {
  const char *text =
      "module @t\n"
      "param @p : f32[4] init=nrmal(1.0)\n"
      "func @f(%x: f32[4]) -> f32[4] {\n"
      "  %0 = relux(%x) : f32[4]\n"
      "  %1 = neg(%0) : f32[4]\n"
      "  %2 = neg(%nope) : f32[4]\n"
      "  return %1\n"
      "}\n";
  MemDiag c;
  md_open(&c, 1000);
  Module *m = parse_text(text, &c);
  ck_assert_ptr_null(m);
  const char *t = md_text(&c);
  /* three independent errors, no cascade from %0 (whose op failed), carets under the columns */
  ck_assert_msg(strstr(t, "t.mir:2:24: error: expected an initialiser") != NULL, "%s", t);
  ck_assert_msg(strstr(t, "t.mir:4:8: error: unknown op 'relux' (did you mean 'relu'?)\n"
                          "  %0 = relux(%x) : f32[4]\n"
                          "       ^\n") != NULL, "%s", t);
  ck_assert_msg(strstr(t, "t.mir:6:12: error: use of undefined value %nope") != NULL, "%s", t);
  ck_assert_int_eq(c.d.nerrors, 3);
  md_close(&c);
}
END_TEST

/* ---- attributes (ir/ops.def (ATTR rows)) ------------------------------------------------------------ */

/* One bad attribute two ways: written in the text (the parser rejects it) and set through the API
 * on a module that parsed (the verifier rejects it). Both must give the same message at the op's
 * line:col, because both call ir_check_attrs. The op is line 3 of
 * "module @t / func @f(%x: f32[2,4,12]) -> RET { OP / return %0 }". */
static const struct {
  const char *ret;    /* @f's result type */
  const char *good;   /* the op, valid */
  const char *bad;    /* the op with the bad attribute */
  const char *key;    /* the API mutation: set .set under key (or remove key when .set.key is NULL) */
  Attr set;
  const char *want;   /* the message */
} attr_cases[] = {
    {"f32[2,12]", "%0 = pool(%x) {mode=\"mean\"} : f32[2,12]",
     "%0 = pool(%x) {mdoe=\"mean\", mode=\"mean\"} : f32[2,12]", "mdoe", {.key = "mdoe", .kind = ATTR_STR, .s = "mean"}, "pool has no attribute 'mdoe' (did you mean 'mode'?)"},
    {"f32[2,4,12]", "%0 = neg(%x) : f32[2,4,12]", "%0 = neg(%x) {n=1} : f32[2,4,12]", "n",
     {.key = "n", .kind = ATTR_INT, .i = 1}, "neg has no attribute 'n'"},
    {"f32[2,4,4]", "%0 = attention(%x) {causal=1, heads=2} : f32[2,4,4]",
     "%0 = attention(%x) {causal=1, heads=\"2\"} : f32[2,4,4]", "heads", {.key = "heads", .kind = ATTR_STR, .s = "2"},
     "attention attribute 'heads' must be an integer"},
    {"f32[2,4,12]", "%0 = dropout(%x) {p=0.1} : f32[2,4,12]", "%0 = dropout(%x) : f32[2,4,12]", "p", {.key = NULL},
     "dropout requires attribute 'p'"},
    {"f32[2,4,12]", "%0 = dropout(%x) {p=0.1} : f32[2,4,12]", "%0 = dropout(%x) {p=1.0} : f32[2,4,12]", "p",
     {.key = "p", .kind = ATTR_FLOAT, .f = 1.0}, "dropout: p must be in [0, 1), got 1"},
    {"f32[2,4,12]", "%0 = dropout(%x) {p=0.1, stream=1} : f32[2,4,12]",
     "%0 = dropout(%x) {p=0.1, stream=-1} : f32[2,4,12]", "stream", {.key = "stream", .kind = ATTR_INT, .i = -1},
     "dropout: stream must be at least 0, got -1"},
    {"f32[2,4,4]", "%0 = attention(%x) {causal=1, heads=2} : f32[2,4,4]",
     "%0 = attention(%x) {causal=2, heads=2} : f32[2,4,4]", "causal", {.key = "causal", .kind = ATTR_INT, .i = 2},
     "attention: causal must be 0 or 1, got 2"},
    {"bf16[2,4,12]", "%0 = cast(%x) {to=\"bf16\"} : bf16[2,4,12]", "%0 = cast(%x) {to=\"f64\"} : bf16[2,4,12]", "to",
     {.key = "to", .kind = ATTR_STR, .s = "f64"}, "cast: to must be \"f32\", \"bf16\" or \"f16\", got \"f64\""},
    {"f32[2,4,12]", "%0 = rope(%x) {heads=2} : f32[2,4,12]", "%0 = rope(%x) : f32[2,4,12]", "heads", {.key = NULL},
     "rope requires attribute 'heads'"},
    {"f32[2,4,12]", "%0 = rope(%x) {heads=2, theta=500.0} : f32[2,4,12]",
     "%0 = rope(%x) {heads=2, theta=0.0} : f32[2,4,12]", "theta", {.key = "theta", .kind = ATTR_FLOAT, .f = 0.0},
     "rope: theta must be positive, got 0"},
    {"f32[2,4,12]", "%0 = ew(%x) {expr=\"neg($0)\"} : f32[2,4,12]", "%0 = ew(%x) {expr=\"neg($1)\"} : f32[2,4,12]",
     "expr", {.key = "expr", .kind = ATTR_STR, .s = "neg($1)"}, "ew: bad expr: operand out of range (the op has 1)"},
};

/* The message of the first "error: " line of t, after prefix, copied into buf; NULL if none. */
static const char *first_message(const char *t, const char *prefix, char *buf, size_t n) {
  const char *e = strstr(t, "error: ");
  if (!e) return NULL;
  e += strlen("error: ");
  if (strncmp(e, prefix, strlen(prefix)) != 0) return NULL;
  e += strlen(prefix);
  size_t len = strcspn(e, "\n");
  snprintf(buf, n, "%.*s", (int)len, e);
  return buf;
}

START_TEST(test_attrs_parser_and_verifier_agree) {
  for (size_t i = 0; i < sizeof attr_cases / sizeof *attr_cases; i++) {
    char text[1024], want[512], m1[512], m2[512];
    /* the parser on the bad text */
    snprintf(text, sizeof text, "module @t\nfunc @f(%%x: f32[2,4,12]) -> %s {\n  %s\n  return %%0\n}\n",
             attr_cases[i].ret, attr_cases[i].bad);
    MemDiag c;
    md_open(&c, 1000);
    ck_assert_msg(parse_text(text, &c) == NULL, "case %zu parsed:\n%s", i, text);
    const char *t = md_text(&c);
    snprintf(want, sizeof want, "t.mir:3:3: error: %s", attr_cases[i].want);
    ck_assert_msg(strstr(t, want) != NULL, "case %zu: parser said:\n%s\nexpected: %s", i, t, want);
    ck_assert(first_message(t, "", m1, sizeof m1));
    md_close(&c);

    /* the verifier on the good text with the same attribute set through the API */
    snprintf(text, sizeof text, "module @t\nfunc @f(%%x: f32[2,4,12]) -> %s {\n  %s\n  return %%0\n}\n",
             attr_cases[i].ret, attr_cases[i].good);
    md_open(&c, 1000);
    Module *m = parse_text(text, &c);
    ck_assert_msg(m != NULL, "case %zu: good text does not parse:\n%s", i, md_text(&c));
    Op *op = ir_find_func(m, "f")->first;
    if (attr_cases[i].set.key)
      ir_set_attr(op, attr_cases[i].set);
    else
      ir_remove_attr(op, attr_cases[i].key);
    ck_assert_msg(!ir_verify(m, &c.d), "case %zu: the verifier accepted %s", i, attr_cases[i].bad);
    t = md_text(&c);
    snprintf(want, sizeof want, "<ir>:3:3: error: in @f: %s", attr_cases[i].want);
    ck_assert_msg(strstr(t, want) != NULL, "case %zu: verifier said:\n%s\nexpected: %s", i, t, want);
    ck_assert(first_message(t, "in @f: ", m2, sizeof m2));
    ck_assert_str_eq(m1, m2);
    ck_assert_int_eq(c.d.nerrors, 1); /* one problem, one message: the shape rule does not repeat it */
    md_close(&c);
    ir_module_free(m);
  }
}
END_TEST

/* Absent optional attributes read as the table's default; no call site names one. */
START_TEST(test_attrs_defaults_from_table) {
  const char *text = "module @t\n"
                     "func @f(%x: f32[2,4], %g: f32[4], %w: f32[3,4]) -> f32[2,4], f32[2,3], f32[2,4], f32[2,4] {\n"
                     "  %0 = norm_dx(%x, %g, %x) {eps=1} : f32[2,4]\n"
                     "  %1 = linear(%x, %w) : f32[2,3]\n"
                     "  %2 = dropout(%x) {p=0.5} : f32[2,4]\n"
                     "  %3 = call(%x) {callee=@g} : f32[2,4]\n"
                     "  return %0, %1, %2, %3\n"
                     "}\n"
                     "func @g(%a: f32[2,4]) -> f32[2,4] {\n"
                     "  return %a\n"
                     "}\n";
  MemDiag c;
  md_open(&c, 1000);
  Module *m = parse_text(text, &c);
  ck_assert_msg(m != NULL, "%s", md_text(&c));
  Func *f = ir_find_func(m, "f");
  Op *ndx = find_op(f, OP_NORM_DX), *lin = find_op(f, OP_LINEAR), *drop = find_op(f, OP_DROPOUT);
  Op *call = find_op(f, OP_CALL);
  const AttrSpec *rms = ir_attr_spec(OP_NORM_DX, "rms");
  ck_assert(rms && !rms->required && rms->kind == ATTR_INT);
  ck_assert(ir_attr_i(ndx, "rms") == (int64_t)rms->dflt);
  ck_assert(ir_attr_i(drop, "stream") == (int64_t)ir_attr_spec(OP_DROPOUT, "stream")->dflt);
  ck_assert(ir_attr_i(call, "stream") == (int64_t)ir_attr_spec(OP_CALL, "stream")->dflt);
  ck_assert_ptr_null(ir_attr_s(lin, "epi"));
  ck_assert(ir_attr_f(ndx, "eps") == 1.0); /* written as an integer: a FLOAT attribute converts it */
  ck_assert(ir_attr_f(drop, "p") == 0.5);
  ck_assert_str_eq(ir_attr_s(call, "callee"), "g");
  ir_set_attr_int(ndx, "rms", 1);
  ck_assert(ir_attr_i(ndx, "rms") == 1); /* a present value wins */
  ck_assert(ir_verify(m, &c.d));
  /* the table knows which op has which key; ANY_OP rows (pass annotations) match every op */
  ck_assert(ir_attr_spec(OP_ATTENTION, "heads")->required);
  ck_assert(ir_attr_spec(OP_ROPE, "theta")->dflt == 10000.0); /* rt_rope's theta when the op omits it */
  ck_assert_ptr_null(ir_attr_spec(OP_ADD, "eps"));
  ck_assert_ptr_nonnull(ir_attr_spec(OP_RELU, "arena"));
  md_close(&c);
  ir_module_free(m);
}
END_TEST

/* Reading a key the table does not declare for the op is an internal error, not a silent default. */
START_TEST(test_attrs_undeclared_read_dies) {
  Module *m = ir_module_new("t");
  Func *f = ir_add_func(m, "f");
  Value *x = ir_add_arg(f, "x", ir_type1(DT_F32, 4));
  Op *op = ir_op_new(f, OP_RELU, 1, &x, 1);
  (void)ir_attr_i(op, "heads"); /* relu has no 'heads': abort() */
  ir_module_free(m);
}
END_TEST

/* Every row of ops.def (ATTR rows) is well-formed: a real op, one row per (op, key), a rule that fits the
 * kind, and a default inside its own rule. */
START_TEST(test_attrs_table_rows) {
  ck_assert_int_ge(ir_attr_table_len, 20);
  for (int i = 0; i < ir_attr_table_len; i++) {
    const AttrSpec *s = &ir_attr_table[i];
    ck_assert_msg(s->op >= -1 && s->op < OP_COUNT, "row %d", i);
    for (int j = 0; j < i; j++)
      ck_assert_msg(!((ir_attr_table[j].op == s->op || ir_attr_table[j].op == -1 || s->op == -1) &&
                      strcmp(ir_attr_table[j].key, s->key) == 0),
                    "row %d repeats '%s'", i, s->key);
    bool number = s->kind == ATTR_INT || s->kind == ATTR_FLOAT;
    if (s->rule.kind == AR_RANGE) ck_assert_msg(number, "row %d (%s): a range on a non-number", i, s->key);
    if (s->rule.kind == AR_ONE_OF || s->rule.kind == AR_EXPR)
      ck_assert_msg(s->kind == ATTR_STR, "row %d (%s): a string rule on a non-string", i, s->key);
    if (!number || s->required) ck_assert_msg(s->dflt == 0, "row %d (%s): a default that is never read", i, s->key);
    if (number && !s->required && s->rule.kind == AR_RANGE) {
      const AttrRule *r = &s->rule;
      bool in = (r->lo_open ? s->dflt > r->lo : s->dflt >= r->lo) && (r->hi_open ? s->dflt < r->hi : s->dflt <= r->hi);
      ck_assert_msg(in, "row %d (%s): the default is outside the rule", i, s->key);
    }
  }
}
END_TEST

/* ---- expressions -------------------------------------------------------------------------- */

START_TEST(test_expr) {
  Module *m = ir_module_new("e");
  char err[256];
  Expr *e = ir_expr_parse(m, " add( mul($0, 2.5), neg($1) ) ", 2, err, sizeof err);
  ck_assert_msg(e != NULL, "%s", err);
  ck_assert_int_eq(ir_expr_count_ops(e), 3);
  ck_assert(fabs(ir_expr_eval(e, (double[]){2.0, 1.0}) - 4.0) < 1e-12);
  e = ir_expr_parse(m, "gelu_tanh(silu(sub($0, -1e-1)))", 1, err, sizeof err);
  ck_assert_msg(e != NULL, "%s", err);
  double x = 0.7, s = x + 0.1, si = s / (1 + exp(-s));
  double want = 0.5 * si * (1 + tanh(sqrt(2 / M_PI) * (si + 0.044715 * si * si * si)));
  ck_assert(fabs(ir_expr_eval(e, &x) - want) < 1e-12);

  static const char *const bad[] = {"", "$", "$2", "add($0)", "add($0,$1,$0)", "foo($0)", "softmax($0)",
                                    "neg($0", "neg($0))", "1.2.3", "$0 $1", "neg(x)"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    ck_assert_msg(ir_expr_parse(m, bad[i], 2, err, sizeof err) == NULL, "accepted '%s'", bad[i]);
  ck_assert_ptr_null(ir_expr_parse(m, "add($0, $2)", 2, err, sizeof err));
  ck_assert_str_eq(err, "operand out of range (the op has 2) at offset 8 in \"add($0, $2)\"");

  /* deep nesting is refused, not a stack overflow */
  char deep[4096] = "";
  for (int i = 0; i < 500; i++) strcat(deep, "neg(");
  strcat(deep, "$0");
  for (int i = 0; i < 500; i++) strcat(deep, ")");
  ck_assert_ptr_null(ir_expr_parse(m, deep, 1, err, sizeof err));
  ck_assert_msg(strstr(err, "nested too deeply") != NULL, "%s", err);
  ir_module_free(m);
}
END_TEST

START_TEST(test_ew_apply) {
  ck_assert(ir_ew_apply(OP_ADD, 2, 3) == 5);
  ck_assert(ir_ew_apply(OP_SUB, 2, 3) == -1);
  ck_assert(ir_ew_apply(OP_MUL, 2, 3) == 6);
  ck_assert(ir_ew_apply(OP_DIV, 3, 2) == 1.5);
  ck_assert(ir_ew_apply(OP_NEG, 2, 0) == -2);
  ck_assert(fabs(ir_ew_apply(OP_EXP, 1, 0) - M_E) < 1e-15);
  ck_assert(fabs(ir_ew_apply(OP_TANH, 0.5, 0) - tanh(0.5)) < 1e-15);
  ck_assert(ir_ew_apply(OP_SIGMOID, 0, 0) == 0.5);
  ck_assert(ir_ew_apply(OP_RELU, -1, 0) == 0 && ir_ew_apply(OP_RELU, 2, 0) == 2);
  ck_assert(fabs(ir_ew_apply(OP_GELU, 1.0, 0) - 0.8413447460685429) < 1e-12);   /* x*Phi(x) */
  ck_assert(fabs(ir_ew_apply(OP_GELU_TANH, 1.0, 0) - 0.8411919906082768) < 1e-12);
  ck_assert(fabs(ir_ew_apply(OP_SILU, 1.0, 0) - 0.7310585786300049) < 1e-12);
}
END_TEST

/* ---- robustness --------------------------------------------------------------------------- */

/* Parses text; a result must verify and round-trip. */
static void fuzz_one(const char *text, size_t len) {
  FILE *null = fopen("/dev/null", "w");
  ck_assert_ptr_nonnull(null);
  Diag d;
  diag_init(&d, null);
  Module *m = ir_parse("fuzz.mir", text, len, &d);
  if (m) {
    ck_assert(ir_verify(m, &d));
    char *p1 = ir_print_to_string(m);
    Module *m2 = ir_parse("fuzz2.mir", p1, strlen(p1), &d);
    ck_assert_ptr_nonnull(m2);
    char *p2 = ir_print_to_string(m2);
    ck_assert_str_eq(p1, p2);
    free(p1);
    free(p2);
    ir_module_free(m2);
    ir_module_free(m);
  }
  diag_free(&d);
  fclose(null);
}

START_TEST(test_fuzz_truncate_mutate) {
  size_t len;
  char *text = read_file("tests/ir/misc.mir", &len);
  ck_assert_ptr_nonnull(text);
  char *buf = malloc(len + 1);
  ck_assert_ptr_nonnull(buf);
  /* every truncation (exact-length buffers: ASan catches any read past the end) */
  for (size_t cut = 0; cut <= len; cut++) {
    char *t = malloc(cut ? cut : 1);
    memcpy(t, text, cut);
    fuzz_one(t, cut);
    free(t);
  }
  /* byte mutations at many positions */
  static const char subst[] = {0, '\n', '"', '\\', '%', '@', '{', '}', '(', ')', '[', ']', ',', ':', '=', ';',
                               '-', '0', '9', 'e', '.', 'x', (char)0xff, ' '};
  unsigned seed = 12345;
  for (size_t pos = 0; pos < len; pos++) {
    for (int k = 0; k < 3; k++) {
      memcpy(buf, text, len);
      seed = seed * 1103515245u + 12345u;
      buf[pos] = subst[(seed >> 16) % sizeof subst];
      fuzz_one(buf, len);
    }
    /* deletion of one byte */
    memcpy(buf, text, pos);
    memcpy(buf + pos, text + pos + 1, len - pos - 1);
    fuzz_one(buf, len - 1);
  }
  free(buf);
  free(text);
}
END_TEST

static Suite *ir_suite(void) {
  Suite *s = suite_create("ir");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_builder_and_print);
  tcase_add_test(tc, test_print_values);
  tcase_add_test(tc, test_verify_accepts);
  tcase_add_test(tc, test_verify_use_before_def);
  tcase_add_test(tc, test_verify_foreign_value);
  tcase_add_test(tc, test_verify_duplicate_names);
  tcase_add_test(tc, test_verify_duplicate_param);
  tcase_add_test(tc, test_verify_arity);
  tcase_add_test(tc, test_verify_missing_attr);
  tcase_add_test(tc, test_verify_bad_eps);
  tcase_add_test(tc, test_verify_shape_mismatch);
  tcase_add_test(tc, test_verify_call_signature);
  tcase_add_test(tc, test_verify_call_arity);
  tcase_add_test(tc, test_verify_unknown_param);
  tcase_add_test(tc, test_verify_unknown_callee);
  tcase_add_test(tc, test_verify_bad_expr);
  tcase_add_test(tc, test_verify_wrong_return_type);
  tcase_add_test(tc, test_verify_undefined_return);
  tcase_add_test(tc, test_verify_recursion_and_entry);
  tcase_add_test(tc, test_verify_param_format);
  tcase_add_test(tc, test_verify_train_record);
  tcase_add_test(tc, test_param_storage_bytes);
  tcase_add_test(tc, test_verify_quantised);
  tcase_add_test(tc, test_round_trip_handwritten);
  tcase_add_test(tc, test_round_trip_files);
  tcase_add_test(tc, test_parse_file_facts);
  tcase_add_test(tc, test_parse_errors);
  tcase_add_test(tc, test_vocab_contradicts_table);
  tcase_add_test(tc, test_parse_error_caret_and_recovery);
  tcase_add_test(tc, test_attrs_parser_and_verifier_agree);
  tcase_add_test(tc, test_attrs_defaults_from_table);
  tcase_add_test_raise_signal(tc, test_attrs_undeclared_read_dies, SIGABRT);
  tcase_add_test(tc, test_attrs_table_rows);
  tcase_add_test(tc, test_expr);
  tcase_add_test(tc, test_ew_apply);
  suite_add_tcase(s, tc);
  TCase *fz = tcase_create("fuzz");
  tcase_set_timeout(fz, 600);
  tcase_add_test(fz, test_fuzz_truncate_mutate);
  suite_add_tcase(s, fz);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(ir_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
