/* test_frontend.c: the spec-language frontend (compiler/frontend): every example parses, lowers
 * and verifies; parameter names, shapes and counts are exact (GPT-2 small is 124,439,808); and
 * every malformed spec in tests/specs/bad/ gives its expected errors. Each bad file states what it
 * expects in comment lines of the form
 *     # expect: LINE:COL: MESSAGE TEXT
 *     # note: LINE:COL: MESSAGE TEXT
 * and the test checks that "FILE:LINE:COL: error: " (or "note: ") is printed with MESSAGE TEXT on
 * that line. A bad file has at least one expect line; note lines are optional.
 * Diagnostics are captured in memory (text_test.h).
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../compiler/frontend/spec.h"
#include "text_test.h"

/* ---- helpers ---- */

static Spec *parse_str(MemDiag *c, const char *text) {
  md_open(c, 100);
  Spec *s = fe_parse_spec_text("t.yaml", text, strlen(text), &c->d);
  fflush(c->f);
  return s;
}

static Spec *parse_file(MemDiag *c, const char *path) {
  md_open(c, 100);
  Spec *s = fe_parse_spec_file(path, &c->d);
  fflush(c->f);
  return s;
}

/* True if out has a line starting "file:line:col: KIND: " that contains msg. */
static bool has_diag(const char *out, const char *kind, const char *file, int line, int col, const char *msg) {
  char head[512];
  snprintf(head, sizeof head, "%s:%d:%d: %s: ", file, line, col, kind);
  for (const char *p = out; p && *p;) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n >= strlen(head) && !strncmp(p, head, strlen(head))) {
      char *ln = strndup(p, n);
      bool ok = strstr(ln, msg) != NULL;
      free(ln);
      if (ok) return true;
    }
    p = e ? e + 1 : NULL;
  }
  return false;
}

static bool has_error(const char *out, const char *file, int line, int col, const char *msg) {
  return has_diag(out, "error", file, line, col, msg);
}

static Module *lower_ok(const char *path, Spec **sp) {
  MemDiag c;
  Spec *s = parse_file(&c, path);
  ck_assert_msg(s != NULL, "%s did not parse:\n%s", path, md_text(&c));
  Module *m = fe_lower(s, &c.d);
  fflush(c.f);
  ck_assert_msg(m != NULL, "%s did not lower:\n%s", path, md_text(&c));
  ck_assert_msg(ir_verify(m, &c.d), "%s: IR does not verify", path);
  fflush(c.f);
  ck_assert_int_eq(c.d.nerrors, 0);
  md_close(&c);
  if (sp) *sp = s;
  else fe_spec_free(s);
  return m;
}

static void check_param(const Module *m, const char *name, int rank, int64_t d0, int64_t d1, InitKind init,
                        bool decay) {
  const Param *p = ir_find_param(m, name);
  ck_assert_msg(p != NULL, "missing parameter %s", name);
  ck_assert_int_eq(p->type.rank, rank);
  ck_assert_int_eq(p->type.dtype, DT_F32);
  ck_assert_int_eq(p->type.dim[0], d0);
  if (rank == 2) ck_assert_int_eq(p->type.dim[1], d1);
  ck_assert_int_eq(p->init, init);
  ck_assert_int_eq(p->decay, decay);
  ck_assert(p->trainable);
}

/* ---- the malformed-spec catalogue ---- */

#define MAX_BAD 256
static char *bad_files[MAX_BAD];
static int nbad;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void scan_bad(void) {
  DIR *dir = opendir("tests/specs/bad");
  if (!dir) return;
  struct dirent *e;
  while ((e = readdir(dir)) && nbad < MAX_BAD) {
    size_t n = strlen(e->d_name);
    if (n > 5 && !strcmp(e->d_name + n - 5, ".yaml")) {
      char path[512];
      snprintf(path, sizeof path, "tests/specs/bad/%s", e->d_name);
      bad_files[nbad++] = strdup(path);
    }
  }
  closedir(dir);
  qsort(bad_files, (size_t)nbad, sizeof *bad_files, cmp_str);
}

START_TEST(test_bad_catalogue_size) { ck_assert_msg(nbad >= 30, "only %d bad specs", nbad); }
END_TEST

START_TEST(test_bad_spec) {
  const char *path = bad_files[_i];
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  char line[1024];
  int nexpect = 0;
  MemDiag c;
  Spec *s = parse_file(&c, path);
  fflush(c.f);
  ck_assert_msg(s == NULL, "%s parsed without error", path);
  while (fgets(line, sizeof line, f)) {
    int l, col, off = 0;
    if (sscanf(line, "# expect: %d:%d: %n", &l, &col, &off) == 2 && off > 0) {
      char *msg = line + off;
      msg[strcspn(msg, "\r\n")] = 0;
      ck_assert_msg(has_error(md_text(&c), path, l, col, msg), "%s: expected %d:%d: error: %s\ngot:\n%s", path, l, col, msg,
                    md_text(&c));
      nexpect++;
    } else if (sscanf(line, "# note: %d:%d: %n", &l, &col, &off) == 2 && off > 0) {
      char *msg = line + off;
      msg[strcspn(msg, "\r\n")] = 0;
      ck_assert_msg(has_diag(md_text(&c), "note", path, l, col, msg), "%s: expected %d:%d: note: %s\ngot:\n%s", path, l,
                    col, msg, md_text(&c));
    }
  }
  fclose(f);
  ck_assert_msg(nexpect > 0, "%s has no '# expect:' line", path);
  ck_assert_int_ge(c.d.nerrors, nexpect);
  md_close(&c);
}
END_TEST

/* ---- examples ---- */

START_TEST(test_gpt2_small_count) {
  Module *m = lower_ok("examples/gpt2-small.yaml", NULL);
  ck_assert_int_eq(ir_param_count(m), 124439808);
  ck_assert_int_eq(m->nparam, 2 + 12 * 12 + 2);
  check_param(m, "wte.weight", 2, 50257, 768, INIT_NORMAL, true);
  check_param(m, "h.11.mlp.c_proj.weight", 2, 768, 3072, INIT_NORMAL, true);
  ck_assert_ptr_null(ir_find_param(m, "lm_head.weight"));
  ir_module_free(m);
}
END_TEST

START_TEST(test_gpt_tiny_params) {
  Spec *s;
  Module *m = lower_ok("examples/gpt-tiny.yaml", &s);
  ck_assert_str_eq(m->name, "gpt-tiny");
  ck_assert_int_eq(m->nparam, 52);
  /* Creation order is spec order (the safetensors order). */
  static const char *const order[] = {"wte.weight",
                                      "wpe.weight",
                                      "h.0.ln_1.weight",
                                      "h.0.ln_1.bias",
                                      "h.0.attn.c_attn.weight",
                                      "h.0.attn.c_attn.bias",
                                      "h.0.attn.c_proj.weight",
                                      "h.0.attn.c_proj.bias",
                                      "h.0.ln_2.weight",
                                      "h.0.ln_2.bias",
                                      "h.0.mlp.c_fc.weight",
                                      "h.0.mlp.c_fc.bias",
                                      "h.0.mlp.c_proj.weight",
                                      "h.0.mlp.c_proj.bias",
                                      "h.1.ln_1.weight"};
  for (int i = 0; i < (int)(sizeof order / sizeof *order); i++) ck_assert_str_eq(m->params[i]->name, order[i]);
  ck_assert_str_eq(m->params[50]->name, "ln_f.weight");
  ck_assert_str_eq(m->params[51]->name, "ln_f.bias");
  check_param(m, "wte.weight", 2, 256, 128, INIT_NORMAL, true);
  check_param(m, "wpe.weight", 2, 128, 128, INIT_NORMAL, true);
  check_param(m, "h.3.ln_1.weight", 1, 128, 0, INIT_ONES, false);
  check_param(m, "h.3.ln_1.bias", 1, 128, 0, INIT_ZEROS, false);
  check_param(m, "h.2.attn.c_attn.weight", 2, 384, 128, INIT_NORMAL, true);
  check_param(m, "h.2.attn.c_attn.bias", 1, 384, 0, INIT_ZEROS, false);
  check_param(m, "h.1.attn.c_proj.weight", 2, 128, 128, INIT_NORMAL, true);
  check_param(m, "h.0.mlp.c_fc.weight", 2, 512, 128, INIT_NORMAL, true);
  check_param(m, "h.0.mlp.c_fc.bias", 1, 512, 0, INIT_ZEROS, false);
  check_param(m, "h.0.mlp.c_proj.weight", 2, 128, 512, INIT_NORMAL, true);
  check_param(m, "ln_f.bias", 1, 128, 0, INIT_ZEROS, false);
  ck_assert_double_eq_tol(ir_find_param(m, "wte.weight")->init_arg, 0.02, 1e-12);
  /* 256*128 + 128*128 + 4*(2*128 + 384*128+384 + 128*128+128 + 2*128 + 512*128+512 + 128*512+128) + 2*128 */
  ck_assert_int_eq(ir_param_count(m), 32768 + 16384 + 4 * 198272 + 256);

  /* Module attributes, entry function, block function. */
  ck_assert_int_eq(ir_module_attr(m, "batch")->i, 4);
  ck_assert_int_eq(ir_module_attr(m, "context")->i, 128);
  ck_assert_int_eq(ir_module_attr(m, "vocab")->i, 256);
  ck_assert_int_eq(ir_module_attr(m, "dim")->i, 128);
  ck_assert_str_eq(ir_module_attr(m, "kind")->s, "decoder");
  ck_assert_ptr_null(ir_module_attr(m, "classes"));
  ck_assert_str_eq(m->entry, "forward");
  Func *f = ir_find_func(m, "forward");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(f->narg, 1);
  ck_assert_int_eq(f->args[0]->type.dtype, DT_I32);
  ck_assert_int_eq(f->nret, 1);
  char buf[64];
  ck_assert_str_eq(ir_type_str(&f->ret[0]->type, buf, sizeof buf), "f32[4,128,256]");
  Func *h = ir_find_func(m, "h");
  ck_assert_ptr_nonnull(h);
  ck_assert_int_eq(h->narg, 13);
  ck_assert_str_eq(h->args[0]->name, "x");
  ck_assert_str_eq(h->args[1]->name, "ln_1.weight");
  ck_assert_str_eq(h->args[3]->name, "attn.c_attn.weight");
  ck_assert_str_eq(ir_type_str(&h->ret[0]->type, buf, sizeof buf), "f32[4,128,128]");
  int calls = 0, attn = 0, drop = 0;
  for (Op *op = f->first; op; op = op->next) calls += op->kind == OP_CALL;
  for (Op *op = h->first; op; op = op->next) {
    if (op->kind == OP_ATTENTION) {
      attn++;
      ck_assert_int_eq(ir_attr_int(op, "heads", 0), 4);
      ck_assert_int_eq(ir_attr_int(op, "causal", 0), 1);
    }
    drop += op->kind == OP_DROPOUT;
  }
  ck_assert_int_eq(calls, 4);
  ck_assert_int_eq(attn, 1);
  ck_assert_int_eq(drop, 2);

  /* passes: and train: */
  const Pipeline *p = fe_spec_passes(s);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(p->n, 7);
  ck_assert_str_eq(p->e[0].pass->name, "autodiff");
  ck_assert_str_eq(p->e[1].pass->name, "xent_fuse");
  ck_assert_str_eq(p->e[4].pass->name, "fuse");
  ck_assert_str_eq(p->e[6].pass->name, "memplan");
  ck_assert_int_eq(p->e[4].line, 30);
  const SpecTrain *t = fe_spec_train(s);
  ck_assert(t->present);
  ck_assert_int_eq(t->steps, 1000);
  ck_assert_int_eq(t->micro_batch, 4);
  ck_assert_double_eq_tol(t->lr, 1e-3, 1e-15);
  ck_assert_double_eq_tol(t->min_lr, 1e-4, 1e-15);
  ck_assert_int_eq(t->schedule, SPEC_SCHED_COSINE);
  ck_assert_str_eq(t->data, "data/tinyshakespeare.txt");
  ck_assert_double_eq_tol(t->eps, 1e-8, 1e-20);   /* default */
  fe_spec_free(s);
  ir_module_free(m);
}
END_TEST

START_TEST(test_bert_tiny) {
  Spec *s;
  Module *m = lower_ok("examples/bert-tiny.yaml", &s);
  ck_assert_str_eq(ir_module_attr(m, "kind")->s, "encoder");
  ck_assert_int_eq(ir_module_attr(m, "classes")->i, 2);
  ck_assert_int_eq(s->model.kind, SPEC_ENCODER);
  check_param(m, "ln_emb.weight", 1, 128, 0, INIT_ONES, false);
  check_param(m, "layer.1.ln_2.bias", 1, 128, 0, INIT_ZEROS, false);
  check_param(m, "classifier.weight", 2, 2, 128, INIT_NORMAL, true);
  check_param(m, "classifier.bias", 1, 2, 0, INIT_ZEROS, false);
  Func *f = ir_find_func(m, "forward");
  char buf[64];
  ck_assert_str_eq(ir_type_str(&f->ret[0]->type, buf, sizeof buf), "f32[4,2]");
  const SpecTrain *t = fe_spec_train(s);
  ck_assert_int_eq(t->schedule, SPEC_SCHED_LINEAR);
  ck_assert_int_eq(t->batch, 4);   /* defaults to model.batch */
  fe_spec_free(s);
  ir_module_free(m);
}
END_TEST

/* The less common constructs: rmsnorm, swiglu, sinusoidal positions, untied head, pass options. */
START_TEST(test_variants) {
  const char *text = "model: {name: llama-ish, vocab: 100, context: 16, dim: 32}\n"
                     "layers:\n"
                     "  - embedding: {name: tok}\n"
                     "  - positions: {kind: sinusoidal}\n"
                     "  - repeat: 2\n"
                     "    name: blk\n"
                     "    block:\n"
                     "      - residual: [rmsnorm: {}, attention: {heads: 2, bias: false}]\n"
                     "      - residual: [rmsnorm: {}, mlp: {hidden: 64, activation: swiglu, bias: false}]\n"
                     "  - rmsnorm: {name: norm}\n"
                     "  - lm_head: {tied: false}\n"
                     "passes:\n"
                     "  - fuse: {max-ops: 8}\n"
                     "  - 'cse,dce'\n";
  MemDiag c;
  Spec *s = parse_str(&c, text);
  ck_assert_msg(s != NULL, "%s", md_text(&c));
  Module *m = fe_lower(s, &c.d);
  ck_assert_ptr_nonnull(m);
  ck_assert(ir_verify(m, &c.d));
  check_param(m, "tok.weight", 2, 100, 32, INIT_NORMAL, true);
  ck_assert_ptr_null(ir_find_param(m, "wpe.weight"));
  check_param(m, "blk.0.ln_1.weight", 1, 32, 0, INIT_ONES, false);
  ck_assert_ptr_null(ir_find_param(m, "blk.0.ln_1.bias"));
  check_param(m, "blk.1.ln_2.weight", 1, 32, 0, INIT_ONES, false);
  check_param(m, "blk.0.mlp.c_gate.weight", 2, 64, 32, INIT_NORMAL, true);
  ck_assert_ptr_null(ir_find_param(m, "blk.0.attn.c_attn.bias"));
  check_param(m, "lm_head.weight", 2, 100, 32, INIT_NORMAL, true);
  check_param(m, "norm.weight", 1, 32, 0, INIT_ONES, false);
  /* 100*32 + 2*(32 + 96*32 + 32*32 + 32 + 3*64*32) + 32 + 100*32 */
  ck_assert_int_eq(ir_param_count(m), 3200 + 2 * (32 + 3072 + 1024 + 32 + 6144) + 32 + 3200);
  const Pipeline *p = fe_spec_passes(s);
  ck_assert_int_eq(p->n, 3);
  ck_assert_int_eq(pass_opt_int(&p->e[0].opts, "max-ops"), 8);
  ck_assert_str_eq(p->e[2].pass->name, "dce");
  ck_assert_str_eq(ir_module_attr(m, "kind")->s, "decoder");
  int sins = 0;
  for (Op *op = ir_find_func(m, "forward")->first; op; op = op->next) sins += op->kind == OP_SINUSOID;
  ck_assert_int_eq(sins, 1);
  ir_module_free(m);
  fe_spec_free(s);
  md_close(&c);
}
END_TEST

/* A factorised embedding (ALBERT): embedding: {dim: E} makes the [vocab, E] table and the
 * emb_proj linear [dim, E] + bias, lowered as embedding -> linear -> add (docs/spec.md). */
START_TEST(test_factorised_embedding) {
  const char *text = "model: {name: alb, vocab: 50, context: 8, dim: 24}\n"
                     "layers:\n"
                     "  - embedding: {dim: 6}\n"
                     "  - repeat: 2\n"
                     "    block: [residual: [attention: {heads: 2}]]\n"
                     "  - lm_head: {tied: false}\n";
  MemDiag c;
  Spec *s = parse_str(&c, text);
  ck_assert_msg(s != NULL, "%s", md_text(&c));
  Module *m = fe_lower(s, &c.d);
  ck_assert_ptr_nonnull(m);
  ck_assert(ir_verify(m, &c.d));
  check_param(m, "wte.weight", 2, 50, 6, INIT_NORMAL, true);
  check_param(m, "emb_proj.weight", 2, 24, 6, INIT_NORMAL, true);
  check_param(m, "emb_proj.bias", 1, 24, 0, INIT_ZEROS, false);
  ck_assert_int_eq(m->params[1]->index, 1); /* right after the table, in spec order */
  ck_assert_str_eq(m->params[1]->name, "emb_proj.weight");
  /* the table's rows are [1,8,6]; the projection makes them [1,8,24] */
  const Op *op = ir_find_func(m, "forward")->first;
  while (op && op->kind != OP_EMBEDDING) op = op->next;
  ck_assert_ptr_nonnull(op);
  ck_assert_int_eq(op->out[0]->type.dim[2], 6);
  while (op && op->kind != OP_LINEAR) op = op->next;
  ck_assert_ptr_nonnull(op);
  ck_assert_int_eq(op->out[0]->type.dim[2], 24);
  /* 50*6 + (24*6 + 24) + 2 * (72*24 + 72 + 24*24 + 24) + 50*24 */
  ck_assert_int_eq(ir_param_count(m), 300 + 168 + 2 * (1728 + 72 + 576 + 24) + 1200);
  ir_module_free(m);
  fe_spec_free(s);
  md_close(&c);
}
END_TEST

START_TEST(test_no_passes_no_train) {
  MemDiag c;
  Spec *s = parse_str(&c, "model: {vocab: 10, context: 4, dim: 8}\nlayers: [embedding, lm_head]\n");
  ck_assert_msg(s != NULL, "%s", md_text(&c));
  ck_assert_ptr_null(fe_spec_passes(s));
  ck_assert(!fe_spec_train(s)->present);
  ck_assert_int_eq(fe_spec_train(s)->steps, 1000);
  ck_assert_str_eq(s->model.name, "model");
  ck_assert_int_eq(s->model.batch, 1);
  Module *m = fe_lower(s, &c.d);
  ck_assert_ptr_nonnull(m);
  ck_assert_int_eq(ir_param_count(m), 80);
  ir_module_free(m);
  fe_spec_free(s);
  md_close(&c);
}
END_TEST

/* ---- hostile and degenerate input ---- */

START_TEST(test_deep_nesting) {
  size_t n = 100000;
  char *text = malloc(n + 1);
  memset(text, '[', n);
  text[n] = 0;
  MemDiag c;
  Spec *s = parse_str(&c, text);
  ck_assert_ptr_null(s);
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 1, 65, "nesting is too deep"), "%s", md_text(&c));
  md_close(&c);
  /* Deep block-style nesting too. */
  size_t cap = 200 * 300, at = 0;
  char *t2 = malloc(cap);
  for (int i = 0; i < 200; i++) at += (size_t)snprintf(t2 + at, cap - at, "%*sk%d:\n", i, "", i);
  s = parse_str(&c, t2);
  ck_assert_ptr_null(s);
  ck_assert_msg(strstr(md_text(&c), "nesting is too deep"), "%s", md_text(&c));
  md_close(&c);
  free(t2);
  free(text);
}
END_TEST

START_TEST(test_empty_and_non_mapping) {
  MemDiag c;
  ck_assert_ptr_null(parse_str(&c, ""));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 1, 1, "empty spec"), "%s", md_text(&c));
  md_close(&c);
  ck_assert_ptr_null(parse_str(&c, "# only a comment\n"));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 1, 1, "empty spec"), "%s", md_text(&c));
  md_close(&c);
  ck_assert_ptr_null(parse_str(&c, "- a\n- b\n"));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 1, 1, "top level of a spec must be a mapping"), "%s", md_text(&c));
  md_close(&c);
  ck_assert_ptr_null(parse_str(&c, "hello\n"));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 1, 1, "top level of a spec must be a mapping"), "%s", md_text(&c));
  md_close(&c);
}
END_TEST

START_TEST(test_missing_file) {
  MemDiag c;
  ck_assert_ptr_null(parse_file(&c, "tests/specs/no-such-file.yaml"));
  ck_assert_msg(strstr(md_text(&c), "tests/specs/no-such-file.yaml: error: cannot open file "
                              "'tests/specs/no-such-file.yaml': No such file or directory"),
                "%s", md_text(&c));
  md_close(&c);
  ck_assert_ptr_null(parse_file(&c, "tests/specs"));   /* a directory */
  ck_assert_msg(strstr(md_text(&c), "tests/specs: error: cannot read file"), "%s", md_text(&c));
  md_close(&c);
}
END_TEST

/* One run reports every error, each with a caret line. */
START_TEST(test_all_errors_reported) {
  const char *text = "model: {vocab: 0, context: 8, dim: 10}\n"
                     "layers:\n"
                     "  - embedding: {}\n"
                     "  - attention: {heads: 3}\n"
                     "  - mlp: {hidden: -1, activation: gelo}\n"
                     "  - lm_head: {tied: maybe}\n";
  MemDiag c;
  ck_assert_ptr_null(parse_str(&c, text));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 1, 16, "'vocab' must be positive, got 0"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 4, 24, "'heads' (3) must divide model.dim (10)"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 5, 19, "'hidden' must be positive, got -1"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 5, 35, "unknown activation 'gelo'; did you mean 'gelu'?"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 6, 21, "expected true or false for 'tied'"), "%s", md_text(&c));
  ck_assert_int_eq(c.d.nerrors, 5);
  ck_assert_msg(strstr(md_text(&c), "  - lm_head: {tied: maybe}\n                    ^"), "%s", md_text(&c));
  md_close(&c);
}
END_TEST

/* moe: every key checked at its value's line:col; the parameters' names and shapes (docs/spec.md). */
START_TEST(test_moe) {
  const char *text = "model: {vocab: 32, context: 8, dim: 16}\n"
                     "layers:\n"
                     "  - embedding: {}\n"
                     "  - moe: {experts: 4, top_k: 5, hidden: 8}\n"
                     "  - moe: {experts: 0, hidden: -2, activation: swiglu}\n"
                     "  - moe: {experts: 2, hidden: 8, capacity_factor: 0, aux_loss: -1, topk: 1}\n"
                     "  - moe: {top_k: 1}\n"
                     "  - lm_head: {}\n";
  MemDiag c;
  ck_assert_ptr_null(parse_str(&c, text));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 4, 30, "moe 'top_k' (5) must be in [1, experts] (experts 4)"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 5, 20, "'experts' must be positive, got 0"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 5, 31, "'hidden' must be positive, got -2"), "%s", md_text(&c));
  ck_assert_msg(strstr(md_text(&c), "t.yaml:5:47: error: unknown moe activation 'swiglu'"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 6, 51, "moe 'capacity_factor' must be in (0, 1e6], got 0"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 6, 64, "moe 'aux_loss' must be in [0, 1e6], got -1"), "%s", md_text(&c));
  ck_assert_msg(strstr(md_text(&c), "t.yaml:6:68: error: unknown key 'topk' in moe"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 7, 5, "missing required key 'experts' in moe"), "%s", md_text(&c));
  ck_assert_msg(has_error(md_text(&c), "t.yaml", 7, 5, "missing required key 'hidden' in moe"), "%s", md_text(&c));
  md_close(&c);
  const char *ok = "model: {vocab: 32, context: 8, dim: 16}\n"
                   "layers:\n"
                   "  - embedding: {}\n"
                   "  - residual: [layernorm: {}, moe: {experts: 3, top_k: 2, hidden: 8, activation: relu}]\n"
                   "  - lm_head: {}\n";
  Spec *s = parse_str(&c, ok);
  ck_assert_ptr_nonnull(s);
  const SpecLayer *l = &s->layers[1].body[1];
  ck_assert(l->kind == SPEC_L_MOE && l->experts == 3 && l->top_k == 2 && l->capacity_factor == 1.25 &&
            l->aux_loss == 0.01 && l->activation == SPEC_ACT_RELU);
  Module *m = fe_lower(s, &c.d);
  ck_assert_ptr_nonnull(m);
  check_param(m, "moe.router.weight", 2, 3, 16, INIT_NORMAL, true);
  check_param(m, "moe.b1", 2, 3, 8, INIT_ZEROS, false);
  check_param(m, "moe.b2", 2, 3, 16, INIT_ZEROS, false);
  const Param *w1 = ir_find_param(m, "moe.w1"), *w2 = ir_find_param(m, "moe.w2");
  ck_assert(w1 && w1->type.rank == 3 && w1->type.dim[0] == 3 && w1->type.dim[1] == 8 && w1->type.dim[2] == 16);
  ck_assert(w2 && w2->type.rank == 3 && w2->type.dim[0] == 3 && w2->type.dim[1] == 16 && w2->type.dim[2] == 8);
  ck_assert(w1->decay && !ir_find_param(m, "moe.b1")->decay);
  ir_module_free(m);
  fe_spec_free(s);
  md_close(&c);
}
END_TEST

/* Garbage never crashes: every prefix of an example either parses or reports an error. */
START_TEST(test_prefixes) {
  FILE *f = fopen("examples/gpt-tiny.yaml", "rb");
  ck_assert_ptr_nonnull(f);
  char text[8192];
  size_t n = fread(text, 1, sizeof text, f);
  fclose(f);
  for (size_t len = 0; len <= n; len += 7) {
    MemDiag c;
    md_open(&c, 100);
    Spec *s = fe_parse_spec_text("p.yaml", text, len, &c.d);
    if (s) {
      Module *m = fe_lower(s, &c.d);
      ck_assert_ptr_nonnull(m);
      ir_module_free(m);
      fe_spec_free(s);
    } else {
      fflush(c.f);
      ck_assert_int_gt(c.d.nerrors, 0);
    }
    md_close(&c);
  }
}
END_TEST

static Suite *frontend_suite(void) {
  Suite *s = suite_create("frontend");
  TCase *tc = tcase_create("examples");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_gpt2_small_count);
  tcase_add_test(tc, test_gpt_tiny_params);
  tcase_add_test(tc, test_bert_tiny);
  tcase_add_test(tc, test_variants);
  tcase_add_test(tc, test_factorised_embedding);
  tcase_add_test(tc, test_no_passes_no_train);
  suite_add_tcase(s, tc);
  TCase *te = tcase_create("errors");
  tcase_set_timeout(te, 120);
  tcase_add_test(te, test_deep_nesting);
  tcase_add_test(te, test_moe);
  tcase_add_test(te, test_empty_and_non_mapping);
  tcase_add_test(te, test_missing_file);
  tcase_add_test(te, test_all_errors_reported);
  tcase_add_test(te, test_prefixes);
  tcase_add_test(te, test_bad_catalogue_size);
  if (nbad > 0) tcase_add_loop_test(te, test_bad_spec, 0, nbad);
  suite_add_tcase(s, te);
  return s;
}

int main(void) {
  scan_bad();
  SRunner *sr = srunner_create(frontend_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  for (int i = 0; i < nbad; i++) free(bad_files[i]);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
