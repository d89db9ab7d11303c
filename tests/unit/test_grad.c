/* test_grad.c: the gradient rules of the element-wise ops (ir/grad.c) against central finite
 * differences, through a small test-only interpreter of the ops they emit (element-wise ops with
 * NumPy broadcasting, const, sum_to). For every binary and unary element-wise op, with and
 * without broadcasting (a bias [C] against [R,C]), the rule's gradient of L = sum(w * op(a, b))
 * for random w must match (L(a + h e_i) - L(a - h e_i)) / 2h for every element of every input.
 * The backward kernels (norms, attention, linear, embedding, cross-entropy) are checked the same
 * way in test_rt_backward.c, and whole models against PyTorch's autograd in test_train.c. */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../ir/ir.h"

/* values: dense double arrays indexed by Value.id */
typedef struct Env {
  double *v[256];
} Env;

static int64_t bidx(const Type *t, const Type *r, int64_t i) { /* index into broadcast operand t */
  int64_t idx = 0, rem = i, stride[IR_MAX_RANK];
  int64_t s = 1;
  for (int k = r->rank - 1; k >= 0; k--) stride[k] = s, s *= r->dim[k];
  int shift = r->rank - t->rank;
  for (int k = 0; k < r->rank; k++) {
    int64_t c = rem / stride[k];
    rem %= stride[k];
    int j = k - shift;
    if (j >= 0) idx = idx * t->dim[j] + (t->dim[j] == 1 ? 0 : c);
  }
  return idx;
}

static void run(const Func *f, Env *e) {
  for (const Op *op = f->first; op; op = op->next) {
    const Value *r = op->out[0];
    int64_t n = ir_type_numel(&r->type);
    double *o = calloc((size_t)n, sizeof *o);
    if (op->kind == OP_CONST) {
      for (int64_t i = 0; i < n; i++) o[i] = ir_attr_float(op, "value", 0);
    } else if (op->kind == OP_SUM_TO) {
      const Value *x = op->in[0];
      for (int64_t i = 0; i < ir_type_numel(&x->type); i++) o[bidx(&r->type, &x->type, i)] += e->v[x->id][i];
    } else {
      ck_assert_msg(ir_op_info[op->kind].flags & OPF_EW, "interpreter: %s", ir_op_name(op->kind));
      for (int64_t i = 0; i < n; i++) {
        double a = e->v[op->in[0]->id][bidx(&op->in[0]->type, &r->type, i)];
        double b = op->nin > 1 ? e->v[op->in[1]->id][bidx(&op->in[1]->type, &r->type, i)] : 0;
        o[i] = ir_ew_apply(op->kind, a, b);
      }
    }
    e->v[r->id] = o;
  }
}

/* L = sum(w * op(a, b)) */
static double loss(const Func *f, double *a, double *b, const double *w, int64_t n) {
  Env e;
  memset(&e, 0, sizeof e);
  e.v[f->args[0]->id] = a;
  if (f->narg > 1) e.v[f->args[1]->id] = b;
  run(f, &e);
  double l = 0;
  for (int64_t i = 0; i < n; i++) l += w[i] * e.v[f->ret[0]->id][i];
  for (const Op *op = f->first; op; op = op->next) free(e.v[op->out[0]->id]);
  return l;
}

static double frand(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return ((*s >> 8) & 0xffff) / 65536.0 * 2.0 - 1.0;
}

static void check_op(OpKind k, bool bias) {
  const int R = 3, C = 4;
  Module *m = ir_module_new("g");
  Func *f = ir_add_func(m, "f");
  Type full = ir_type2(DT_F32, R, C), small = ir_type1(DT_F32, C);
  bool binary = ir_op_info[k].min_in == 2;
  Value *a = ir_add_arg(f, "a", full);
  Value *b = binary ? ir_add_arg(f, "b", bias ? small : full) : NULL;
  Value *in[2] = {a, b};
  Value *y = ir_emit(f, ir_op_new(f, k, binary ? 2 : 1, in, 1));
  ir_set_return(f, 1, &y);
  /* backward function: args = f's args and dy; gradients by the rule */
  Func *g = ir_add_func(m, "g");
  Value *val[64] = {0}, *adj[64] = {0};
  bool needs[64];
  for (int i = 0; i < 64; i++) needs[i] = true;
  val[a->id] = ir_add_arg(g, "a", a->type);
  if (b) val[b->id] = ir_add_arg(g, "b", b->type);
  Value *dy = ir_add_arg(g, "dy", y->type);
  /* the rule may read the forward result: recompute it in g */
  Value *gin[2] = {val[a->id], b ? val[b->id] : NULL};
  val[y->id] = ir_emit(g, ir_op_new(g, k, binary ? 2 : 1, gin, 1));
  adj[y->id] = dy;
  GradCtx ctx = {g, val, adj, needs};
  char err[128];
  ck_assert_msg(ir_op_grad(k)(&ctx, y->def, err, sizeof err), "%s: %s", ir_op_name(k), err);
  Value *rets[2] = {adj[a->id], b ? adj[b->id] : NULL};
  ck_assert_ptr_nonnull(rets[0]);
  ir_set_return(g, b ? 2 : 1, rets);

  unsigned seed = 7u + (unsigned)k;
  int64_t na = R * C, nb = b ? ir_type_numel(&b->type) : 0;
  double A[12], B[12], W[12];
  for (int i = 0; i < na; i++) A[i] = frand(&seed) * 1.5 + (k == OP_DIV ? 0 : 0), W[i] = frand(&seed);
  for (int i = 0; i < nb; i++) B[i] = frand(&seed) + (k == OP_DIV ? 2.5 : 0); /* keep divisors away from 0 */
  if (k == OP_RELU || k == OP_RELU_D)
    for (int i = 0; i < na; i++)
      if (fabs(A[i]) < 0.05) A[i] = 0.3; /* keep clear of the kink */
  Env e;
  memset(&e, 0, sizeof e);
  e.v[g->args[0]->id] = A;
  if (b) e.v[g->args[1]->id] = B;
  e.v[dy->id] = W;
  run(g, &e);
  const double h = 1e-6;
  for (int which = 0; which < (b ? 2 : 1); which++) {
    double *X = which ? B : A;
    int64_t nx = which ? nb : na;
    const double *grad = e.v[g->ret[which]->id];
    for (int64_t i = 0; i < nx; i++) {
      double keep = X[i];
      X[i] = keep + h;
      double lp = loss(f, A, B, W, na);
      X[i] = keep - h;
      double lm = loss(f, A, B, W, na);
      X[i] = keep;
      double fd = (lp - lm) / (2 * h);
      ck_assert_msg(fabs(fd - grad[i]) <= 1e-6 * (1 + fabs(fd)), "%s%s: d/d%s[%lld] rule %.9g, finite difference %.9g",
                    ir_op_name(k), bias ? " (broadcast)" : "", which ? "b" : "a", (long long)i, grad[i], fd);
    }
  }
  for (const Op *op = g->first; op; op = op->next) free(e.v[op->out[0]->id]);
  ir_module_free(m);
}

START_TEST(test_binary_rules) {
  OpKind ks[] = {OP_ADD, OP_SUB, OP_MUL, OP_DIV};
  for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
    check_op(ks[i], false);
    check_op(ks[i], true);
  }
}
END_TEST

START_TEST(test_unary_rules) {
  OpKind ks[] = {OP_NEG, OP_EXP, OP_TANH, OP_SIGMOID, OP_RELU, OP_GELU, OP_GELU_TANH, OP_SILU};
  for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) check_op(ks[i], false);
}
END_TEST

/* The derivative ops themselves against finite differences of the activations. */
START_TEST(test_derivative_ops) {
  struct {
    OpKind f, d;
  } pairs[] = {{OP_GELU, OP_GELU_D}, {OP_GELU_TANH, OP_GELU_TANH_D}, {OP_SILU, OP_SILU_D}, {OP_RELU, OP_RELU_D}};
  for (size_t p = 0; p < sizeof pairs / sizeof *pairs; p++)
    for (double x = -6.05; x <= 6; x += 0.1) {
      double h = 1e-6, fd = (ir_ew_apply(pairs[p].f, x + h, 0) - ir_ew_apply(pairs[p].f, x - h, 0)) / (2 * h);
      ck_assert_msg(fabs(fd - ir_ew_apply(pairs[p].d, x, 0)) < 1e-7, "%s at %g", ir_op_name(pairs[p].d), x);
    }
}
END_TEST

/* Ops without a gradient rule say so (the autodiff pass reports them by name). */
START_TEST(test_rule_table) {
  ck_assert_ptr_nonnull(ir_op_grad(OP_LINEAR));
  ck_assert_ptr_nonnull(ir_op_grad(OP_ATTENTION));
  ck_assert_ptr_nonnull(ir_op_grad(OP_LAYERNORM));
  ck_assert_ptr_null(ir_op_grad(OP_SOFTMAX));
  ck_assert_ptr_null(ir_op_grad(OP_EW));
}
END_TEST

int main(void) {
  Suite *s = suite_create("grad");
  TCase *tc = tcase_create("grad");
  tcase_add_test(tc, test_binary_rules);
  tcase_add_test(tc, test_unary_rules);
  tcase_add_test(tc, test_derivative_ops);
  tcase_add_test(tc, test_rule_table);
  suite_add_tcase(s, tc);
  return check_run(s);
}
