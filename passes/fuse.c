/* fuse.c: element-wise fusion, recorded in the IR so the backend emits one loop per fused group.
 *
 * Element-wise ops are memory bound: add, gelu_tanh and a residual add over a [B,T,C] activation
 * cost three reads and writes of the whole tensor unfused, one fused. Two rules, to a fixpoint:
 *
 * (a) chains: an OPF_EW or `ew` op E whose operand is produced by another OPF_EW or `ew` op P,
 *     where every use of P's result is in E and P's result type equals E's, becomes one
 *     `ew {expr="..."}` op. Its operands are P's operands followed by E's other operands, without
 *     duplicates, and its expression substitutes P's expression for P's result in E's:
 *         %3 = add(%1, %2) ; %4 = gelu_tanh(%3)   ->   %4 = ew(%1, %2) {expr="gelu_tanh(add($0,$1))"}
 * (b) epilogues: an OPF_EW or `ew` op E whose operand is produced by a `linear` L, under the same
 *     conditions, folds into L: L keeps x and w, gains E's other operands after its own extra ones,
 *     and its `epi` expression (with $0 the matrix product, $1.. the extra operands) becomes E's
 *     expression over L's. So linear + bias add + gelu_tanh + residual add becomes
 *         linear(%x, %w, %b, %r) {epi="add($2,gelu_tanh(add($0,$1)))"}
 *     and the GEMM kernel applies the epilogue while the output tile is still in cache.
 *
 * The merged op is placed at E's position (all its operands dominate E) and takes over E's result
 * value, so E's users and name are untouched; P or L, now unused, is removed. Requiring equal
 * result types means fusion never changes how many times a value is computed per element (a
 * producer of a smaller, broadcast shape would be recomputed per output element), while operands
 * that broadcast into the result (a bias [N] against [B,T,N]) are fine inside an expression.
 *
 * Options: max-ops (int, 16) bounds the element-wise operations of one fused expression (a
 * producer used twice by E is counted twice, as it is computed twice); epilogue (bool, true)
 * enables rule (b).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pass.h"

/* An expression tree over Values, built while deciding a fusion. */
typedef enum NodeKind { N_VAL, N_CONST, N_PROD, N_OP } NodeKind;
typedef struct Node {
  NodeKind kind;
  Value *v;           /* N_VAL */
  double c;           /* N_CONST */
  OpKind op;          /* N_OP */
  int nkid;
  struct Node *kid[2];
} Node;

/* Nodes live in blocks freed at the end of the pass (they never enter the IR). */
typedef struct Pool {
  Node **blocks;
  int nblocks, used;  /* used: nodes taken from the last block */
} Pool;
#define POOL_BLOCK 256

static Node *node(Pool *p, NodeKind k) {
  if (!p->nblocks || p->used == POOL_BLOCK) {
    Node **nb = realloc(p->blocks, sizeof *nb * (size_t)(p->nblocks + 1));
    if (!nb) die("out of memory");
    p->blocks = nb;
    p->blocks[p->nblocks] = calloc(POOL_BLOCK, sizeof(Node));
    if (!p->blocks[p->nblocks]) die("out of memory");
    p->nblocks++;
    p->used = 0;
  }
  Node *n = &p->blocks[p->nblocks - 1][p->used++];
  memset(n, 0, sizeof *n);
  n->kind = k;
  return n;
}

static void pool_free(Pool *p) {
  for (int i = 0; i < p->nblocks; i++) free(p->blocks[i]);
  free(p->blocks);
}

/* Converts a parsed expression to a Node tree: $i is args[i] (NULL: the linear product). */
static Node *from_expr(Pool *p, const Expr *e, Value *const *args) {
  switch (e->kind) {
  case EX_ARG: {
    if (!args[e->arg]) return node(p, N_PROD);
    Node *n = node(p, N_VAL);
    n->v = args[e->arg];
    return n;
  }
  case EX_CONST: {
    Node *n = node(p, N_CONST);
    n->c = e->c;
    return n;
  }
  case EX_OP: {
    Node *n = node(p, N_OP);
    n->op = e->op;
    n->nkid = e->nkid;
    for (int i = 0; i < e->nkid; i++) n->kid[i] = from_expr(p, e->kid[i], args);
    return n;
  }
  }
  return NULL;
}

static bool is_ew(const Op *op) { return (ir_op_info[op->kind].flags & OPF_EW) || op->kind == OP_EW; }

/* The expression an element-wise op computes, over its operand Values; NULL if unparsable. */
static Node *ew_tree(Module *m, Pool *p, const Op *op) {
  if (op->kind == OP_EW) {
    const char *s = ir_attr_s(op, "expr");
    char err[256];
    Expr *e = s ? ir_expr_parse(m, s, op->nin, err, sizeof err) : NULL;
    return e ? from_expr(p, e, op->in) : NULL;
  }
  Node *n = node(p, N_OP);
  n->op = op->kind;
  n->nkid = op->nin;
  for (int i = 0; i < op->nin; i++) {
    n->kid[i] = node(p, N_VAL);
    n->kid[i]->v = op->in[i];
  }
  return n;
}

/* The epilogue of a linear op ($0 the product as N_PROD); the bare product if it has none. */
static Node *epi_tree(Module *m, Pool *p, const Op *op) {
  const char *s = ir_attr_s(op, "epi");
  if (!s) return node(p, N_PROD);
  Value *args[64];
  int nargs = op->nin - 1;
  if (nargs > 64) return NULL;
  args[0] = NULL;
  for (int i = 1; i < nargs; i++) args[i] = op->in[i + 1];
  char err[256];
  Expr *e = ir_expr_parse(m, s, nargs, err, sizeof err);
  return e ? from_expr(p, e, args) : NULL;
}

/* t with every N_VAL of v replaced by sub (shared, not copied: the tree becomes a DAG that prints
 * as a tree). */
static Node *subst(Pool *p, Node *t, const Value *v, Node *sub) {
  if (t->kind == N_VAL && t->v == v) return sub;
  if (t->kind != N_OP) return t;
  Node *n = node(p, N_OP);
  *n = *t;
  for (int i = 0; i < t->nkid; i++) n->kid[i] = subst(p, t->kid[i], v, sub);
  return n;
}

static int count_ops(const Node *t) {
  if (t->kind != N_OP) return 0;
  int n = 1;
  for (int i = 0; i < t->nkid; i++) n += count_ops(t->kid[i]);
  return n;
}

static bool mentions(const Node *t, const Value *v) {
  if (t->kind == N_VAL) return t->v == v;
  for (int i = 0; t->kind == N_OP && i < t->nkid; i++)
    if (mentions(t->kid[i], v)) return true;
  return false;
}

/* A growable text buffer for printing expressions. */
typedef struct Buf {
  char *s;
  size_t len, cap;
} Buf;

static void buf_put(Buf *b, const char *s) {
  size_t n = strlen(s);
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 128;
    while (cap < b->len + n + 1) cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) die("out of memory");
    b->s = ns;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n + 1);
  b->len += n;
}

/* Prints t with operand numbering: N_PROD is $0 when base is 1; a Value is $(base + its index in
 * ops). */
static void print_tree(Buf *b, const Node *t, Value *const *ops, int nops, int base) {
  char tmp[48];
  switch (t->kind) {
  case N_PROD: buf_put(b, "$0"); return;
  case N_VAL:
    for (int i = 0; i < nops; i++)
      if (ops[i] == t->v) {
        snprintf(tmp, sizeof tmp, "$%d", base + i);
        buf_put(b, tmp);
        return;
      }
    die("fuse: expression operand missing from the operand list");
  case N_CONST:
    for (int prec = 1; prec <= 17; prec++) {   /* shortest text that reads back exactly */
      snprintf(tmp, sizeof tmp, "%.*g", prec, t->c);
      if (strtod(tmp, NULL) == t->c) break;
    }
    buf_put(b, tmp);
    return;
  case N_OP:
    buf_put(b, ir_op_name(t->op));
    buf_put(b, "(");
    for (int i = 0; i < t->nkid; i++) {
      if (i) buf_put(b, ",");
      print_tree(b, t->kid[i], ops, nops, base);
    }
    buf_put(b, ")");
    return;
  }
}

/* Appends v to list (of capacity cap) unless present. False if full. */
static bool add_unique(Value **list, int *n, int cap, Value *v) {
  for (int i = 0; i < *n; i++)
    if (list[i] == v) return true;
  if (*n == cap) return false;
  list[(*n)++] = v;
  return true;
}

#define FUSE_MAX_OPERANDS 64

typedef struct Fuser {
  Module *m;
  Func *f;
  Pool pool;
  int max_ops;
  bool epilogue;
} Fuser;

/* Removes op from its function, releasing its operand uses. */
static void retire(Op *op) {
  for (int i = 0; i < op->nin; i++) op->in[i]->nuses--;
  ir_unlink(op);
}

/* Puts the new op nw in place of e (taking over e's result value) and removes e and producer p. */
static void install(Op *nw, Op *e, Op *p) {
  Value *res = e->out[0];
  nw->out[0] = res;
  res->def = nw;
  res->index = 0;
  ir_insert_before(e, nw);
  for (int i = 0; i < nw->nin; i++) nw->in[i]->nuses++;
  retire(e);
  retire(p);
}

/* Every use of v is in op (so op may absorb v's producer). */
static bool only_used_by(const Value *v, const Op *op) {
  int k = 0;
  for (int i = 0; i < op->nin; i++) k += op->in[i] == v;
  return k > 0 && k == v->nuses;
}

/* Rule (a): fuses the element-wise producer of e's operand pv into e. Returns the new op or NULL. */
static Op *fuse_chain(Fuser *fu, Op *e, Node *et, Op *pop) {
  Value *pv = pop->out[0];
  Node *pt = ew_tree(fu->m, &fu->pool, pop);
  if (!pt) return NULL;
  Node *t = subst(&fu->pool, et, pv, pt);
  if (count_ops(t) > fu->max_ops) return NULL;
  Value *ops[FUSE_MAX_OPERANDS];
  int n = 0;
  for (int i = 0; i < pop->nin; i++)
    if (mentions(t, pop->in[i]) && !add_unique(ops, &n, FUSE_MAX_OPERANDS, pop->in[i])) return NULL;
  for (int i = 0; i < e->nin; i++)
    if (mentions(t, e->in[i]) && !add_unique(ops, &n, FUSE_MAX_OPERANDS, e->in[i])) return NULL;
  if (n == 0) return NULL;   /* an expression of constants only: constfold's job */
  Buf b = {0};
  print_tree(&b, t, ops, n, 0);
  Op *nw = ir_op_new(fu->f, OP_EW, n, ops, 1);
  ir_set_attr_str(nw, "expr", b.s);
  free(b.s);
  char err[256];
  if (!ir_infer(fu->m, nw, err, sizeof err) || !ir_type_eq(&nw->out[0]->type, &e->out[0]->type)) return NULL;
  install(nw, e, pop);
  return nw;
}

/* Rule (b): folds e into the linear op lop that produces one of its operands. */
static Op *fuse_epilogue(Fuser *fu, Op *e, Node *et, Op *lop) {
  Value *lv = lop->out[0];
  Node *lt = epi_tree(fu->m, &fu->pool, lop);
  if (!lt) return NULL;
  Node *t = subst(&fu->pool, et, lv, lt);
  if (count_ops(t) > fu->max_ops) return NULL;
  Value *extra[FUSE_MAX_OPERANDS];
  int n = 0;
  for (int i = 2; i < lop->nin; i++)
    if (mentions(t, lop->in[i]) && !add_unique(extra, &n, FUSE_MAX_OPERANDS, lop->in[i])) return NULL;
  for (int i = 0; i < e->nin; i++)
    if (mentions(t, e->in[i]) && !add_unique(extra, &n, FUSE_MAX_OPERANDS, e->in[i])) return NULL;
  Value *ops[FUSE_MAX_OPERANDS + 2];
  ops[0] = lop->in[0];
  ops[1] = lop->in[1];
  memcpy(ops + 2, extra, sizeof(Value *) * (size_t)n);
  Buf b = {0};
  print_tree(&b, t, extra, n, 1);
  Op *nw = ir_op_new(fu->f, OP_LINEAR, n + 2, ops, 1);
  /* keep the linear's other attributes (anything but the epilogue we rewrite) */
  for (int i = 0; i < lop->nattr; i++)
    if (strcmp(lop->attr[i].key, "epi") != 0) ir_set_attr(nw, lop->attr[i]);
  ir_set_attr_str(nw, "epi", b.s);
  free(b.s);
  char err[256];
  if (!ir_infer(fu->m, nw, err, sizeof err) || !ir_type_eq(&nw->out[0]->type, &e->out[0]->type)) return NULL;
  install(nw, e, lop);
  return nw;
}

/* Tries one fusion into e; returns the op now standing at e's position, or NULL if none applied. */
static Op *fuse_once(Fuser *fu, Op *e) {
  if (!is_ew(e) || e->nout != 1) return NULL;
  Node *et = ew_tree(fu->m, &fu->pool, e);
  if (!et) return NULL;
  const Type *rt = &e->out[0]->type;
  /* rule (a) first, so an epilogue takes the whole element-wise group */
  for (int i = 0; i < e->nin; i++) {
    Op *p = e->in[i]->def;
    if (p && p != e && is_ew(p) && p->nout == 1 && ir_type_eq(&p->out[0]->type, rt) &&
        only_used_by(p->out[0], e)) {
      Op *nw = fuse_chain(fu, e, et, p);
      if (nw) return nw;
    }
  }
  if (!fu->epilogue) return NULL;
  for (int i = 0; i < e->nin; i++) {
    Op *p = e->in[i]->def;
    if (p && p->kind == OP_LINEAR && p->nout == 1 && ir_type_eq(&p->out[0]->type, rt) &&
        only_used_by(p->out[0], e)) {
      Op *nw = fuse_epilogue(fu, e, et, p);
      if (nw) return nw;
    }
  }
  return NULL;
}

static int fuse_func(Fuser *fu, Func *f) {
  int fused = 0, round;
  fu->f = f;
  do {
    round = 0;
    ir_count_uses(f);
    for (Op *op = f->first; op; op = op->next) {
      Op *nw;
      while ((nw = fuse_once(fu, op))) {
        op = nw;
        round++;
      }
    }
    fused += round;
  } while (round);
  return fused;
}

bool pass_fuse(Module *m, const PassOptions *o, Diag *d) {
  Fuser fu = {.m = m};
  (void)d;
  fu.max_ops = (int)pass_opt_int(o, "max-ops"); /* 1 .. 1000000 (registry.c) */
  fu.epilogue = pass_opt_bool(o, "epilogue");
  for (int i = 0; i < m->nfunc; i++) fuse_func(&fu, m->funcs[i]);
  pool_free(&fu.pool);
  return true;
}
