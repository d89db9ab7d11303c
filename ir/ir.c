/* ir.c: the IR core: the op table built from ops.def, the module arena, builders, attribute
 * storage, use lists, per-op shape rules and FLOP counts, and whole-module analyses (parameter
 * count and bytes, FLOPs, liveness peak). Printer, parser, verifier, expressions and the attribute
 * table (ops.def (ATTR rows): declarations, checker, typed accessors in attrs.c) live in their own files.
 */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Shape rules and FLOP counts (named in ops.def).                                             */

typedef bool (*ShapeFn)(const Module *, const Op *, Type *, char *, size_t);
typedef int64_t (*FlopsFn)(const Module *, const Op *);

static char *tstr(const Type *t, char *buf) { return ir_type_str(t, buf, 96); }

static bool fail(char *err, size_t n, const char *fmt, const char *a, const char *b) {
  snprintf(err, n, fmt, a ? a : "", b ? b : "");
  return false;
}

static bool need_float(const Op *op, char *err, size_t n) {
  DType t = op->in[0]->type.dtype;
  if (t == DT_I32 || t == DT_I64 || t == DT_I8 || ir_dtype_packed(t))
    return fail(err, n, "%s expects a floating-point operand%s", ir_op_name(op->kind), NULL);
  return true;
}

/* The type of element type dt and the op's {shape=[..]} attribute (ir_infer has checked that the
 * op's attributes follow ir/ops.def (ATTR rows), so the shape rules read them without checking kinds). */
static bool shape_attr(const Op *op, DType dt, Type *out, char *err, size_t n) {
  int nd;
  const int64_t *d = ir_attr_ints(op, "shape", &nd);
  if (nd > IR_MAX_RANK) return fail(err, n, "shape has too many dimensions%s%s", NULL, NULL);
  out->dtype = dt;
  out->rank = nd;
  int64_t total = 1;
  for (int i = 0; i < nd; i++) {
    if (d[i] < 1) return fail(err, n, "shape dimensions must be positive%s%s", NULL, NULL);
    if (total > INT64_MAX / d[i]) return fail(err, n, "shape is too large%s%s", NULL, NULL);
    total *= d[i];
    out->dim[i] = d[i];
  }
  return true;
}

static bool shape_param(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  const char *name = ir_attr_s(op, "p");
  const Param *p = ir_find_param(m, name);
  if (!p) return fail(err, n, "unknown parameter @%s%s", name, NULL);
  *out = p->type;
  return true;
}

static bool shape_const(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  return shape_attr(op, DT_F32, out, err, n);
}

static bool shape_sinusoid(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  int nd;
  ir_attr_ints(op, "shape", &nd);
  if (nd != 2) return fail(err, n, "sinusoid shape must be [T,C]%s%s", NULL, NULL);
  const int64_t *d = ir_attr_ints(op, "shape", &nd);
  if (ir_attr_s(op, "layout") && d[1] % 2 != 0) return fail(err, n, "sinusoid: layout halves needs an even C%s%s", NULL, NULL);
  return shape_attr(op, DT_F32, out, err, n);
}

/* NumPy broadcasting of a and b into out. */
static bool broadcast(const Type *a, const Type *b, Type *out) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  out->dtype = a->dtype;
  out->rank = r;
  for (int i = 0; i < r; i++) {
    int ia = a->rank - r + i, ib = b->rank - r + i;
    int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
    if (da != db && da != 1 && db != 1) return false;
    out->dim[i] = da > db ? da : db;
  }
  return true;
}

static bool shape_binary(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *a = &op->in[0]->type, *b = &op->in[1]->type;
  if (a->dtype != b->dtype) return fail(err, n, "operand types differ: %s vs %s", tstr(a, b1), tstr(b, b2));
  if (!broadcast(a, b, out)) return fail(err, n, "shapes do not broadcast: %s vs %s", tstr(a, b1), tstr(b, b2));
  return true;
}

static bool shape_unary(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  if (!need_float(op, err, n)) return false;
  *out = op->in[0]->type;
  return true;
}

static bool shape_ew(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  *out = op->in[0]->type;
  for (int i = 1; i < op->nin; i++) {
    char b1[96], b2[96];
    Type t;
    if (op->in[i]->type.dtype != out->dtype)
      return fail(err, n, "operand types differ: %s vs %s", tstr(out, b1), tstr(&op->in[i]->type, b2));
    if (!broadcast(out, &op->in[i]->type, &t))
      return fail(err, n, "shapes do not broadcast: %s vs %s", tstr(out, b1), tstr(&op->in[i]->type, b2));
    *out = t;
  }
  return true;
}

static bool shape_norm(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *x = &op->in[0]->type;
  if (!need_float(op, err, n)) return false;
  if (x->rank < 1) return fail(err, n, "%s of a scalar%s", ir_op_name(op->kind), NULL);
  for (int i = 1; i < op->nin; i++) {
    const Type *g = &op->in[i]->type;
    if (g->rank != 1 || g->dim[0] != x->dim[x->rank - 1] || g->dtype != x->dtype)
      return fail(err, n, "norm parameter %s does not match the last dimension of %s", tstr(g, b1), tstr(x, b2));
  }
  *out = *x;
  return true;
}

static bool shape_linear(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *x = &op->in[0]->type, *w = &op->in[1]->type;
  if (!need_float(op, err, n)) return false;
  if (x->rank < 1 || w->rank != 2 || w->dim[1] != x->dim[x->rank - 1])
    return fail(err, n, "linear: weight %s is not [out, in] for input %s", tstr(w, b1), tstr(x, b2));
  /* the same dtype, or an f32 input times a bf16 weight (the compute pass: products in bf16, the
   * input rounded to bf16, f32 accumulation and result) */
  if (w->dtype != x->dtype && !(x->dtype == DT_F32 && (w->dtype == DT_BF16 || ir_dtype_packed(w->dtype))))
    return fail(err, n, "linear: weight %s and input %s: the same dtype, or f32 input and a bf16, quantised or csr weight",
                tstr(w, b1), tstr(x, b2));
  if (ir_quant_block(w->dtype) && w->dim[1] % ir_quant_block(w->dtype) != 0)
    return fail(err, n, "linear: a %s weight needs an input dimension that is a multiple of 32, not %s",
                ir_dtype_name(w->dtype), tstr(w, b1));
  if ((w->dtype == DT_CSR) != (ir_attr(op, "nnz") != NULL))
    return fail(err, n, "linear: %s%s", w->dtype == DT_CSR ? "a csr weight needs nnz= (its nonzero capacity)" :
                "nnz= is for a csr weight", NULL);
  if (w->dtype == DT_CSR && ir_attr_i(op, "nnz") > ir_type_numel(w))
    return fail(err, n, "linear: nnz= exceeds the elements of the csr weight %s%s", tstr(w, b1), NULL);
  *out = *x;
  out->dim[x->rank - 1] = w->dim[0];
  for (int i = 2; i < op->nin; i++) {
    Type t;
    if (op->in[i]->type.dtype != x->dtype || !broadcast(out, &op->in[i]->type, &t) || !ir_type_eq(&t, out))
      return fail(err, n, "linear: epilogue operand %s does not broadcast to %s", tstr(&op->in[i]->type, b1),
                  tstr(out, b2));
  }
  if (!ir_attr_s(op, "epi") && op->nin > 2)
    return fail(err, n, "linear: extra operands need an 'epi' expression%s%s", NULL, NULL);
  return true;
}

static bool shape_matmul(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *a = &op->in[0]->type, *b = &op->in[1]->type;
  if (!need_float(op, err, n)) return false;
  /* the same dtype, or an f32 a times a bf16 matrix b (precision<bf16>: a linear layer's input
   * gradient dy W from the bf16 working weight, a rounded to bf16, f32 accumulation and result) */
  bool types = a->dtype == b->dtype || (a->dtype == DT_F32 && b->dtype == DT_BF16 && b->rank == 2);
  bool ok = a->rank >= 2 && b->rank >= 2 && types && a->dim[a->rank - 1] == b->dim[b->rank - 2] &&
            (b->rank == 2 || b->rank == a->rank);
  for (int i = 0; ok && b->rank > 2 && i < a->rank - 2; i++) ok = a->dim[i] == b->dim[i];
  if (!ok) return fail(err, n, "matmul: shapes %s and %s do not multiply", tstr(a, b1), tstr(b, b2));
  *out = *a;
  out->dim[a->rank - 1] = b->dim[b->rank - 1];
  return true;
}

/* The block-sparse pattern attributes of an attention or attention_dx op (ops.def; the
 * sparse-attention pass, docs/passes.md) agree with each other: each pattern has its sizes and
 * no others, and a ring cache (attention only) is local, causal and holds the window and the
 * global tokens. */
static bool sparse_attrs_ok(const Op *op, char *err, size_t n) {
  const char *kind = ir_attr_s(op, "sparse");
  static const char *const sizes[] = {"tile", "window", "stride", "summary", "global", "cache"};
  if (!kind) {
    for (int i = 0; i < 6; i++)
      if (ir_attr(op, sizes[i])) {
        snprintf(err, n, "%s: '%s' is a block-sparse pattern's size, and the op has no sparse= pattern",
                 ir_op_name(op->kind), sizes[i]);
        return false;
      }
    return true;
  }
  bool local = strcmp(kind, "local") == 0, fixed = strcmp(kind, "fixed") == 0;
  const char *need = local ? "window" : "stride", *not1 = local ? "stride" : "window";
  if (!ir_attr(op, need)) {
    snprintf(err, n, "%s: sparse=%s needs %s=", ir_op_name(op->kind), kind, need);
    return false;
  }
  if (ir_attr(op, not1) || (!fixed && ir_attr(op, "summary"))) {
    snprintf(err, n, "%s: sparse=%s takes no %s=", ir_op_name(op->kind), kind, ir_attr(op, not1) ? not1 : "summary");
    return false;
  }
  if (fixed && ir_attr_i(op, "summary") > ir_attr_i(op, "stride")) {
    snprintf(err, n, "%s: sparse=fixed: summary %lld is above the stride %lld", ir_op_name(op->kind),
             (long long)ir_attr_i(op, "summary"), (long long)ir_attr_i(op, "stride"));
    return false;
  }
  if (ir_attr(op, "cache")) {
    int64_t need_c = ir_attr_i(op, "window") + ir_attr_i(op, "global");
    if (!local || !ir_attr_i(op, "causal")) {
      snprintf(err, n, "%s: a ring cache (cache=) is for causal sparse=local attention", ir_op_name(op->kind));
      return false;
    }
    if (ir_attr_i(op, "cache") < need_c) {
      snprintf(err, n, "%s: cache=%lld holds fewer positions than the window and the global tokens (%lld)",
               ir_op_name(op->kind), (long long)ir_attr_i(op, "cache"), (long long)need_c);
      return false;
    }
  }
  return true;
}

/* The keys k in [0, x) query q's pattern allows, global tokens aside (x <= q + 1 when causal,
 * so the causal limit is the caller's): the same masks as runtime/kernels/attention_sparse.c,
 * counted in closed form. */
static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t span(int64_t lo, int64_t hi) { return imax(0, hi - lo + 1); } /* |[lo, hi]| */
static int64_t keys_allowed(const char *kind, int64_t w, int64_t l, int64_t c, int64_t q, int64_t x) {
  if (kind[0] == 'l') return span(imax(0, q - w + 1), imin(x - 1, q + w - 1));
  if (kind[0] == 's') {
    int64_t band = span(imax(0, q - l + 1), imin(x - 1, q + l - 1));
    /* k = q - j l and k = q + j l, j >= 1, inside [0, x) */
    int64_t below = x > 0 ? imax(0, q / l - imax(1, q - x + 1 > 0 ? (q - x + 1 + l - 1) / l : 1) + 1) : 0;
    int64_t above = x - 1 >= q + l ? (x - 1 - q) / l : 0;
    return band + below + above;
  }
  int64_t b0 = q / l * l, own = span(b0, imin(x - 1, b0 + l - 1));
  int64_t cols = x / l * c + imax(0, x % l - (l - c));             /* summary columns in [0, x) */
  int64_t mine = imax(0, imin(x, b0 + l) - b0 - (l - c));          /* of them, in q's own block */
  return own + cols - (x > b0 ? mine : 0);
}

/* Query-key pairs an attention op computes at length T (all positions 0-based): every pair
 * (causal: every k <= q), or its pattern's allowed ones, O(T) by keys_allowed. */
static int64_t attention_pairs(const Op *op, int64_t T) {
  bool causal = ir_attr_i(op, "causal") != 0;
  const char *kind = ir_attr_s(op, "sparse");
  if (!kind) return causal ? T * (T + 1) / 2 : T * T;
  int64_t w = ir_attr_i(op, "window"), l = ir_attr_i(op, "stride"), c = ir_attr_i(op, "summary");
  int64_t g = ir_attr_i(op, "global"), pairs = 0;
  for (int64_t q = 0; q < T; q++) {
    if (!causal && q < g) { /* a global query sees every key */
      pairs += T;
      continue;
    }
    int64_t x = causal ? q + 1 : T, gx = imin(g, x); /* the keys [0, x); the global ones [0, gx) */
    pairs += keys_allowed(kind, w, l, c, q, x) + gx - keys_allowed(kind, w, l, c, q, gx);
  }
  return pairs;
}

/* The head split of an attention-family op's qkv [B,T,(H+2G)hd]: heads H, kv_heads G (G divides H),
 * hd; false with the message when the width does not split. */
static bool qkv_split(const Op *op, int64_t *hd, char *err, size_t n) {
  char b1[96];
  const Type *x = &op->in[0]->type;
  const char *name = ir_op_name(op->kind);
  int64_t h = ir_attr_i(op, "heads"), g = ir_kv_heads(op);
  if (ir_attr(op, "kv_heads") && h % g != 0) {
    snprintf(err, n, "%s: kv_heads %lld does not divide heads %lld", name, (long long)g, (long long)h);
    return false;
  }
  if (g == h && (x->rank != 3 || x->dim[2] % 3 != 0)) {
    snprintf(err, n, "%s expects qkv [B,T,3C], got %s", name, tstr(x, b1));
    return false;
  }
  if (g == h && (x->dim[2] / 3) % h != 0) {
    snprintf(err, n, "%s: heads do not divide the width of %s", name, tstr(x, b1));
    return false;
  }
  if (x->rank != 3 || x->dim[2] % (h + 2 * g) != 0) {
    snprintf(err, n, "%s expects qkv [B,T,(heads + 2 kv_heads) hd] = [B,T,%lld hd], got %s", name,
             (long long)(h + 2 * g), tstr(x, b1));
    return false;
  }
  *hd = x->dim[2] / (h + 2 * g);
  return true;
}

int64_t ir_kv_heads(const Op *op) {
  int64_t g = ir_attr_i(op, "kv_heads");
  return g > 0 ? g : ir_attr_i(op, "heads");
}

static bool shape_attention(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  int64_t hd;
  if (!need_float(op, err, n)) return false;
  if (!qkv_split(op, &hd, err, n)) return false;
  if (!sparse_attrs_ok(op, err, n)) return false;
  if (ir_attr(op, "sparse") && ir_kv_heads(op) != ir_attr_i(op, "heads")) {
    snprintf(err, n, "%s: grouped-query attention (kv_heads) with a block-sparse pattern is not implemented",
             ir_op_name(op->kind));
    return false;
  }
  *out = op->in[0]->type;
  out->dim[2] = ir_attr_i(op, "heads") * hd;
  return true;
}

/* linformer: qkv [B,T,3C] as attention's, E and F f32 [K,T] (the projections along the sequence,
 * K >= 1 rows over the compiled length T) -> [B,T,C]. */
static bool shape_linformer(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *x = &op->in[0]->type;
  int64_t h = ir_attr_i(op, "heads");
  if (x->dtype != DT_F32 || x->rank != 3 || x->dim[2] % 3 != 0)
    return fail(err, n, "linformer expects f32 qkv [B,T,3C], got %s%s", tstr(x, b1), NULL);
  if (h < 1 || (x->dim[2] / 3) % h != 0) return fail(err, n, "linformer: heads do not divide the width of %s%s", tstr(x, b1), NULL);
  *out = *x;
  out->dim[2] = x->dim[2] / 3;
  for (int i = 1; i <= 2; i++) {
    const Type *e = &op->in[i]->type;
    if (e->dtype != DT_F32 || e->rank != 2 || e->dim[1] != x->dim[1]) {
      snprintf(err, n, "linformer: %s %s is not an f32 [K,T] projection over the %lld positions of qkv %s",
               i == 1 ? "E" : "F", tstr(e, b1), (long long)x->dim[1], tstr(x, b2));
      return false;
    }
  }
  if (op->in[1]->type.dim[0] != op->in[2]->type.dim[0])
    return fail(err, n, "linformer: E %s and F %s project to different lengths", tstr(&op->in[1]->type, b1),
                tstr(&op->in[2]->type, b2));
  return true;
}

/* moe: x [B,T,C] f32, router [E,C], w1 [E,H,C], b1 [E,H], w2 [E,C,H], b2 [E,C] (E experts, each a
 * C -> H -> C MLP; top_k <= E) -> y (x's type), the load-balancing loss f32[] and the load f32[E+2]
 * (the loss again, the dropped (token, choice) pairs, the pairs each expert ran: for reports). */
static bool shape_moe(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *x = &op->in[0]->type, *r = &op->in[1]->type, *w1 = &op->in[2]->type;
  if (x->dtype != DT_F32 || x->rank < 2) return fail(err, n, "moe expects f32 x [..,C], got %s%s", tstr(x, b1), NULL);
  int64_t c = x->dim[x->rank - 1];
  if (r->dtype != DT_F32 || r->rank != 2 || r->dim[1] != c)
    return fail(err, n, "moe: the router %s is not an f32 [E,C] weight over the width of x %s", tstr(r, b1), tstr(x, b2));
  int64_t e = r->dim[0];
  if (w1->dtype != DT_F32 || w1->rank != 3 || w1->dim[0] != e || w1->dim[2] != c)
    return fail(err, n, "moe: w1 %s is not f32 [E,H,C] for the router %s", tstr(w1, b1), tstr(r, b2));
  int64_t h = w1->dim[1];
  const int64_t want[3][3] = {{e, h, 0}, {e, c, h}, {e, c, 0}};
  const int rank[3] = {2, 3, 2};
  const char *what[3] = {"b1 is not f32 [E,H]", "w2 is not f32 [E,C,H]", "b2 is not f32 [E,C]"};
  for (int i = 0; i < 3; i++) {
    const Type *t = &op->in[3 + i]->type;
    bool ok = t->dtype == DT_F32 && t->rank == rank[i];
    for (int k = 0; ok && k < rank[i]; k++) ok = t->dim[k] == want[i][k];
    if (!ok) {
      snprintf(err, n, "moe: %s (E %lld, H %lld, C %lld), got %s", what[i], (long long)e, (long long)h, (long long)c,
               tstr(t, b1));
      return false;
    }
  }
  if (ir_attr_i(op, "top_k") > e)
    return fail(err, n, "moe: top_k is larger than the %s experts of the router %s", "E", tstr(r, b1));
  out[0] = *x;
  out[1] = ir_type(DT_F32, 0, NULL);
  out[2] = ir_type1(DT_F32, e + 2);
  return true;
}

/* moe_dx: moe's operands, dy (y's type) and daux f32[] -> the gradients of the six operands. */
static bool shape_moe_dx(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  Type y[3];
  if (!shape_moe(m, op, y, err, n)) return false;
  if (!ir_type_eq(&y[0], &op->in[6]->type))
    return fail(err, n, "moe_dx: dy %s is not the moe output %s", tstr(&op->in[6]->type, b1), tstr(&y[0], b2));
  if (!ir_type_eq(&y[1], &op->in[7]->type))
    return fail(err, n, "moe_dx: daux %s is not f32[]%s", tstr(&op->in[7]->type, b1), NULL);
  for (int i = 0; i < 6; i++) out[i] = op->in[i]->type;
  return true;
}

/* linformer_dx: (qkv, E, F, dy) as linformer's operands and its result's gradient -> d qkv (qkv's
 * type), d E, d F (their types). */
static bool shape_linformer_dx(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  Type y;
  if (!shape_linformer(m, op, &y, err, n)) return false;
  if (!ir_type_eq(&y, &op->in[3]->type))
    return fail(err, n, "linformer_dx: dy %s is not the linformer output %s", tstr(&op->in[3]->type, b1), tstr(&y, b2));
  out[0] = op->in[0]->type;
  out[1] = op->in[1]->type;
  out[2] = op->in[2]->type;
  return true;
}

/* Sequence compression (Funnel-Transformer). seq_pool and upsample: x [B,T,C] float, stride >= 2
 * (ops.def) dividing T for seq_pool -> [B,T/stride,C] / [B,T*stride,C]. */
static bool shape_seq_pool(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96];
  const Type *x = &op->in[0]->type;
  int64_t s = ir_attr_i(op, "stride");
  if (!need_float(op, err, n)) return false;
  if (x->rank != 3) return fail(err, n, "seq_pool expects [B,T,C], got %s%s", tstr(x, b1), NULL);
  if (x->dim[1] % s != 0) {
    snprintf(err, n, "seq_pool: stride %lld does not divide the %lld positions of %s", (long long)s,
             (long long)x->dim[1], tstr(x, b1));
    return false;
  }
  *out = *x;
  out->dim[1] = x->dim[1] / s;
  return true;
}

static bool shape_upsample(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96];
  const Type *x = &op->in[0]->type;
  int64_t s = ir_attr_i(op, "stride");
  if (!need_float(op, err, n)) return false;
  if (x->rank != 3) return fail(err, n, "upsample expects [B,T,C], got %s%s", tstr(x, b1), NULL);
  if (x->dim[1] > INT32_MAX / s) return fail(err, n, "upsample: %s times the stride is too long%s", tstr(x, b1), NULL);
  *out = *x;
  out->dim[1] = x->dim[1] * s;
  return true;
}

/* attention_pool: f32 qkv [B,T,3C] (heads divide C, stride divides T) -> [B,T/stride,C]. */
static bool shape_attn_pool(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96];
  const Type *x = &op->in[0]->type;
  int64_t h = ir_attr_i(op, "heads"), s = ir_attr_i(op, "stride");
  if (x->dtype != DT_F32 || x->rank != 3 || x->dim[2] % 3 != 0)
    return fail(err, n, "attention_pool expects f32 qkv [B,T,3C], got %s%s", tstr(x, b1), NULL);
  if (h < 1 || (x->dim[2] / 3) % h != 0)
    return fail(err, n, "attention_pool: heads do not divide the width of %s%s", tstr(x, b1), NULL);
  if (x->dim[1] % s != 0) {
    snprintf(err, n, "attention_pool: stride %lld does not divide the %lld positions of %s", (long long)s,
             (long long)x->dim[1], tstr(x, b1));
    return false;
  }
  *out = *x;
  out->dim[1] = x->dim[1] / s;
  out->dim[2] = x->dim[2] / 3;
  return true;
}

static bool shape_attn_pool_dx(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  Type y;
  if (!shape_attn_pool(m, op, &y, err, n)) return false;
  if (!ir_type_eq(&y, &op->in[1]->type))
    return fail(err, n, "attention_pool_dx: dy %s is not the attention_pool output %s", tstr(&op->in[1]->type, b1),
                tstr(&y, b2));
  *out = op->in[0]->type;
  return true;
}

/* xl_memory: x f32 [B,T,C] -> [B,M+T,C]; the memory's state keeps two tags in its slots, so M*C >= 2 */
static bool shape_xl_memory(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96];
  const Type *x = &op->in[0]->type;
  int64_t mem = ir_attr_i(op, "memory");
  if (x->dtype != DT_F32 || x->rank != 3) return fail(err, n, "xl_memory expects f32 x [B,T,C], got %s%s", tstr(x, b1), NULL);
  if (mem * x->dim[2] < 2) return fail(err, n, "xl_memory: memory x C must be at least 2 (x is %s)%s", tstr(x, b1), NULL);
  *out = *x;
  out->dim[1] = x->dim[1] + mem;
  return true;
}

/* xl_memory_dx: d cat [B,M+T,C] -> [B,T,C] */
static bool shape_xl_memory_dx(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96];
  const Type *x = &op->in[0]->type;
  int64_t mem = ir_attr_i(op, "memory");
  if (x->dtype != DT_F32 || x->rank != 3 || x->dim[1] <= mem)
    return fail(err, n, "xl_memory_dx expects f32 [B,M+T,C] with T >= 1, got %s%s", tstr(x, b1), NULL);
  *out = *x;
  out->dim[1] = x->dim[1] - mem;
  return true;
}

/* xl_attention: qkv f32 [B,M+T,3C], rk f32 [M+T,C], r_w_bias and r_r_bias f32 [H,C/H] -> [B,T,C] */
static bool shape_xl_attn(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *x = &op->in[0]->type;
  int64_t h = ir_attr_i(op, "heads"), mem = ir_attr_i(op, "memory");
  if (x->dtype != DT_F32 || x->rank != 3 || x->dim[2] % 3 != 0 || x->dim[1] <= mem)
    return fail(err, n, "xl_attention expects f32 qkv [B,M+T,3C] with T >= 1, got %s%s", tstr(x, b1), NULL);
  int64_t c = x->dim[2] / 3;
  if (h < 1 || c % h != 0) return fail(err, n, "xl_attention: heads do not divide the width of %s%s", tstr(x, b1), NULL);
  const Type *rk = &op->in[1]->type;
  if (rk->dtype != DT_F32 || rk->rank != 2 || rk->dim[0] != x->dim[1] || rk->dim[1] != c)
    return fail(err, n, "xl_attention: rk %s is not f32 [M+T,C] for qkv %s", tstr(rk, b1), tstr(x, b2));
  for (int i = 2; i <= 3; i++) {
    const Type *b = &op->in[i]->type;
    if (b->dtype != DT_F32 || b->rank != 2 || b->dim[0] != h || b->dim[1] != c / h)
      return fail(err, n, "xl_attention: a relative bias %s is not f32 [heads, C/heads] for qkv %s", tstr(b, b1),
                  tstr(x, b2));
  }
  *out = *x;
  out->dim[1] = x->dim[1] - mem;
  out->dim[2] = c;
  return true;
}

/* xl_attention_dx: the forward's operands and dy [B,T,C] -> their four types */
static bool shape_xl_attn_dx(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  Type y;
  if (!shape_xl_attn(m, op, &y, err, n)) return false;
  if (!ir_type_eq(&y, &op->in[4]->type))
    return fail(err, n, "xl_attention_dx: dy %s is not the xl_attention output %s", tstr(&op->in[4]->type, b1), tstr(&y, b2));
  for (int i = 0; i < 4; i++) out[i] = op->in[i]->type;
  return true;
}

/* rope: qkv [B,T,(H+2G)hd] (3C when G = H) -> the same type; the head dimension hd is even (dims
 * are rotated in pairs 2i, 2i+1). */
static bool shape_rope(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  int64_t hd;
  if (!need_float(op, err, n)) return false;
  if (!qkv_split(op, &hd, err, n)) return false;
  if (hd % 2 != 0) {
    snprintf(err, n, "rope: the head dimension %lld (C %lld / heads %lld) is odd; rope rotates pairs of dims",
             (long long)hd, (long long)(hd * ir_attr_i(op, "heads")), (long long)ir_attr_i(op, "heads"));
    return false;
  }
  *out = op->in[0]->type;
  return true;
}

static bool shape_embedding(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *ids = &op->in[0]->type, *tab = &op->in[1]->type;
  if ((ids->dtype != DT_I32 && ids->dtype != DT_I64) || ids->rank < 1 || ids->rank >= IR_MAX_RANK || tab->rank != 2 ||
      tab->dtype == DT_I32 || tab->dtype == DT_I64 || tab->dtype == DT_CSR)
    return fail(err, n, "embedding expects integer ids and a [V,C] table, got %s and %s", tstr(ids, b1), tstr(tab, b2));
  if (ir_quant_block(tab->dtype) && tab->dim[1] % ir_quant_block(tab->dtype) != 0)
    return fail(err, n, "embedding: a %s table needs rows whose length is a multiple of 32, not %s",
                ir_dtype_name(tab->dtype), tstr(tab, b2));
  *out = *ids;
  out->dtype = ir_dtype_quantised(tab->dtype) ? DT_F32 : tab->dtype; /* quantised rows are dequantised */
  out->dim[out->rank++] = tab->dim[1];
  return true;
}

static bool shape_pool(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96];
  const Type *x = &op->in[0]->type;
  if (!need_float(op, err, n)) return false;
  if (x->rank != 3) return fail(err, n, "pool expects [B,T,C], got %s%s", tstr(x, b1), NULL);
  *out = ir_type2(x->dtype, x->dim[0], x->dim[2]);
  return true;
}

static bool shape_reshape(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  if (!shape_attr(op, op->in[0]->type.dtype, out, err, n)) return false;
  if (ir_type_numel(out) != ir_type_numel(&op->in[0]->type))
    return fail(err, n, "reshape from %s to %s changes the element count", tstr(&op->in[0]->type, b1), tstr(out, b2));
  return true;
}

static bool shape_call(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const char *callee = ir_attr_s(op, "callee");
  const Func *f = ir_find_func(m, callee);
  if (!f) return fail(err, n, "call to unknown function @%s%s", callee, NULL);
  if (f->narg != op->nin) {
    snprintf(err, n, "call to @%s with %d arguments, it takes %d", f->name, op->nin, f->narg);
    return false;
  }
  if (f->nret != op->nout) {
    snprintf(err, n, "call to @%s with %d results, it returns %d", f->name, op->nout, f->nret);
    return false;
  }
  for (int i = 0; i < f->narg; i++)
    if (!ir_type_eq(&f->args[i]->type, &op->in[i]->type)) {
      snprintf(err, n, "call to @%s: argument %d is %s, expected %s", f->name, i, tstr(&op->in[i]->type, b1),
               tstr(&f->args[i]->type, b2));
      return false;
    }
  for (int i = 0; i < f->nret; i++) out[i] = f->ret[i]->type;
  return true;
}

/* ---- training ops ---- */

static bool is_int_type(const Type *t) { return t->dtype == DT_I32 || t->dtype == DT_I64 || t->dtype == DT_I8; }

static bool shape_xent(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *l = &op->in[0]->type, *t = &op->in[1]->type;
  bool ok = l->rank >= 1 && !is_int_type(l) && is_int_type(t) && t->rank == l->rank - 1;
  for (int i = 0; ok && i < t->rank; i++) ok = t->dim[i] == l->dim[i];
  if (!ok) return fail(err, n, "cross_entropy expects logits [..,V] and integer targets [..], got %s and %s", tstr(l, b1), tstr(t, b2));
  *out = ir_type(l->dtype, 0, NULL);
  return true;
}

static bool shape_xent_grad(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  Type loss;
  if (!shape_xent(m, op, &loss, err, n)) return false;
  if (op->in[2]->type.rank != 0) return fail(err, n, "cross_entropy_grad: the loss gradient must be a scalar%s%s", NULL, NULL);
  *out = op->in[0]->type;
  return true;
}

/* linear_xent: h [..,C] f32, w [V,C] (f32, or bf16: precision<bf16>'s products in bf16), targets
 * int [..] over h's rows, dloss f32[] -> the results d h (h's type), d w (f32 [V,C]) and the mean
 * loss f32[]: what linear(h, w) -> cross_entropy / cross_entropy_grad -> matmul, linear_dw
 * compute, without the logits. */
static bool shape_linear_xent(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *h = &op->in[0]->type, *w = &op->in[1]->type, *t = &op->in[2]->type;
  bool ok = h->dtype == DT_F32 && (w->dtype == DT_F32 || w->dtype == DT_BF16) && h->rank >= 1 && w->rank == 2 && w->dim[1] == h->dim[h->rank - 1];
  if (!ok) return fail(err, n, "linear_xent expects f32 h [..,C] and f32 or bf16 w [V,C], got %s and %s", tstr(h, b1), tstr(w, b2));
  ok = is_int_type(t) && t->rank == h->rank - 1;
  for (int i = 0; ok && i < t->rank; i++) ok = t->dim[i] == h->dim[i];
  if (!ok) return fail(err, n, "linear_xent: the targets %s are not integers over the rows of %s", tstr(t, b1), tstr(h, b2));
  if (op->in[3]->type.rank != 0 || op->in[3]->type.dtype != DT_F32)
    return fail(err, n, "linear_xent: the loss gradient must be an f32 scalar%s%s", NULL, NULL);
  out[0] = *h;
  out[1] = *w;
  out[1].dtype = DT_F32;
  out[2] = ir_type(DT_F32, 0, NULL);
  return true;
}

/* distill_loss: student and teacher logits of one type [..,V] (f32) and integer targets over their
 * rows -> three f32 scalars (the loss, its KL part, its CE part); distill_grad adds dloss f32[] and
 * gives d z_s (z_s's type). */
static bool shape_distill(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *s = &op->in[0]->type, *t = &op->in[1]->type;
  if (s->dtype != DT_F32 || !ir_type_eq(s, t))
    return fail(err, n, "distill_loss/distill_grad expect f32 student and teacher logits of one type, got %s and %s", tstr(s, b1), tstr(t, b2));
  Type loss;
  Op tmp = *op; /* the targets against the student's logits, as cross_entropy checks them */
  Value *in2[2] = {op->in[0], op->in[2]};
  tmp.in = in2;
  tmp.nin = 2;
  if (!shape_xent(m, &tmp, &loss, err, n)) return false;
  for (int i = 0; i < 3; i++) out[i] = ir_type(DT_F32, 0, NULL);
  return true;
}

static bool shape_distill_grad(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  Type loss[3];
  if (!shape_distill(m, op, loss, err, n)) return false;
  if (op->in[3]->type.rank != 0 || op->in[3]->type.dtype != DT_F32)
    return fail(err, n, "distill_grad: the loss gradient must be an f32 scalar%s%s", NULL, NULL);
  *out = op->in[0]->type;
  return true;
}

/* sum_to: the inverse of broadcasting: x reduced to {shape}, which must broadcast to x. */
static bool shape_sum_to(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  if (!shape_attr(op, op->in[0]->type.dtype, out, err, n)) return false;
  Type t;
  if (!broadcast(out, &op->in[0]->type, &t) || !ir_type_eq(&t, &op->in[0]->type))
    return fail(err, n, "sum_to: %s does not broadcast to %s", tstr(out, b1), tstr(&op->in[0]->type, b2));
  return true;
}

static bool shape_linear_dw(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *dy = &op->in[0]->type, *x = &op->in[1]->type;
  bool ok = dy->rank >= 1 && dy->rank == x->rank && dy->dtype == x->dtype && !is_int_type(dy);
  for (int i = 0; ok && i + 1 < dy->rank; i++) ok = dy->dim[i] == x->dim[i];
  if (!ok) return fail(err, n, "linear_dw: %s and %s are not [..,N] and [..,K] over the same rows", tstr(dy, b1), tstr(x, b2));
  *out = ir_type2(dy->dtype, dy->dim[dy->rank - 1], x->dim[x->rank - 1]);
  return true;
}

static bool shape_norm_dx(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *x = &op->in[0]->type, *g = &op->in[1]->type, *dy = &op->in[2]->type;
  if (x->rank < 1 || !ir_type_eq(x, dy) || g->rank != 1 || g->dim[0] != x->dim[x->rank - 1])
    return fail(err, n, "norm_dx: x %s, gain and dy %s do not match", tstr(x, b1), tstr(dy, b2));
  *out = *x;
  return true;
}

static bool shape_norm_dg(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *x = &op->in[0]->type, *dy = &op->in[1]->type;
  if (x->rank < 1 || !ir_type_eq(x, dy)) return fail(err, n, "norm_dg: x %s and dy %s differ", tstr(x, b1), tstr(dy, b2));
  *out = ir_type1(x->dtype, x->dim[x->rank - 1]);
  return true;
}

static bool shape_embed_dw(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  const Type *ids = &op->in[0]->type, *dy = &op->in[1]->type;
  int64_t vocab = ir_attr_i(op, "vocab");
  bool ok = is_int_type(ids) && dy->rank == ids->rank + 1;
  for (int i = 0; ok && i < ids->rank; i++) ok = ids->dim[i] == dy->dim[i];
  if (!ok) return fail(err, n, "embedding_dw: ids %s and dy %s do not match", tstr(ids, b1), tstr(dy, b2));
  *out = ir_type2(dy->dtype, vocab, dy->dim[dy->rank - 1]);
  return true;
}

static bool shape_attn_dx(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  Type y;
  if (!shape_attention(m, op, &y, err, n)) return false;
  if (!ir_type_eq(&y, &op->in[1]->type))
    return fail(err, n, "attention_dx: dy %s is not the attention output %s", tstr(&op->in[1]->type, b1), tstr(&y, b2));
  *out = op->in[0]->type;
  return true;
}

static bool shape_pool_dx(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  char b1[96], b2[96];
  if (!shape_attr(op, op->in[0]->type.dtype, out, err, n)) return false;
  const Type *dy = &op->in[0]->type;
  if (out->rank != 3 || dy->rank != 2 || dy->dim[0] != out->dim[0] || dy->dim[1] != out->dim[2])
    return fail(err, n, "pool_dx: dy %s does not pool %s", tstr(dy, b1), tstr(out, b2));
  return true;
}

/* cast: between f32 and the 16-bit float types only (mixed precision stores activations in 16 bits);
 * ops.def (ATTR rows) limits `to` to f32, bf16 and f16. */
static bool shape_cast(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  if (!need_float(op, err, n)) return false;
  const char *to = ir_attr_s(op, "to");
  int t = ir_dtype_by_name(to);
  DType from = op->in[0]->type.dtype;
  IR_ASSERT(t == DT_F32 || t == DT_BF16 || t == DT_F16);
  if ((from == DT_F32) == (t == DT_F32))
    return fail(err, n, "cast: converts f32 to bf16/f16 or back, not %s to %s", ir_dtype_name(from), to);
  *out = op->in[0]->type;
  out->dtype = (DType)t;
  return true;
}

static bool shape_loss_scale(const Module *m, const Op *op, Type *out, char *err, size_t n) {
  *out = (Type){.dtype = DT_F32, .rank = 0};
  return true;
}

static int64_t out_numel(const Op *op) { return ir_type_numel(&op->out[0]->type); }
static int64_t flops_zero(const Module *m, const Op *op) { return 0; }
static int64_t flops_ew(const Module *m, const Op *op) { return out_numel(op); }
/* Every operation of a fused expression is one NAME( ... ) call: count the '('. */
static int64_t count_calls(const char *s) {
  int64_t k = 0;
  for (; s && *s; s++) k += *s == '(';
  return k;
}
static int64_t flops_ew_expr(const Module *m, const Op *op) {
  return out_numel(op) * count_calls(ir_attr_s(op, "expr"));
}
/* layernorm: mean, centre, variance, normalise, scale, shift ~ 8 per element; rmsnorm ~ 5. */
static int64_t flops_norm(const Module *m, const Op *op) {
  return out_numel(op) * (op->kind == OP_LAYERNORM ? 8 : 5);
}
static int64_t flops_linear(const Module *m, const Op *op) {
  const Type *w = &op->in[1]->type;
  int64_t rows = ir_type_numel(&op->in[0]->type) / w->dim[1];
  int64_t macs = w->dtype == DT_CSR && ir_attr(op, "nnz") ? ir_attr_i(op, "nnz") : w->dim[0] * w->dim[1];
  return 2 * rows * macs + out_numel(op) * count_calls(ir_attr_s(op, "epi")); /* csr: the stored nonzeros */
}
static int64_t flops_matmul(const Module *m, const Op *op) {
  const Type *a = &op->in[0]->type;
  return 2 * out_numel(op) * a->dim[a->rank - 1];
}
/* Q.K^T and P.V: 2*T*T*hd each per head, plus ~5 per score for the softmax; a causal mask only
 * computes the T(T+1)/2 pairs on or below the diagonal. */
static int64_t flops_attention(const Module *m, const Op *op) {
  const Type *x = &op->in[0]->type;
  int64_t h = ir_attr_i(op, "heads");
  int64_t b = x->dim[0], t = x->dim[1], c = x->dim[2] / (h + 2 * ir_kv_heads(op)) * h; /* the query width */
  return b * attention_pairs(op, t) * (4 * c + 5 * h);
}
/* linformer per batch row: K' = E K and V' = F V (2 K T C each), Q K'^T and P V' (2 T K C each),
 * ~5 per score for the softmax: O(T K), not O(T^2). */
static int64_t flops_linformer(const Module *m, const Op *op) {
  const Type *x = &op->in[0]->type;
  int64_t b = x->dim[0], t = x->dim[1], c = x->dim[2] / 3, h = ir_attr_i(op, "heads"), k = op->in[1]->type.dim[0];
  return b * t * k * (8 * c + 5 * h);
}
/* the forward's K', V' and P recomputed (6 T K C), then dV', dP, dQ, dK', dK, dV, dE, dF (2 T K C
 * each) and dS (~5 per score): ~2.75x the forward */
static int64_t flops_linformer_dx(const Module *m, const Op *op) {
  const Type *x = &op->in[0]->type;
  int64_t b = x->dim[0], t = x->dim[1], c = x->dim[2] / 3, h = ir_attr_i(op, "heads"), k = op->in[1]->type.dim[0];
  return b * t * k * (22 * c + 10 * h);
}
/* seq_pool: one add per input element (the scale folds into the last); upsample: one multiply per
 * output element */
static int64_t flops_seq_pool(const Module *m, const Op *op) { return ir_type_numel(&op->in[0]->type); }
static int64_t flops_upsample(const Module *m, const Op *op) { return out_numel(op); }
/* attention_pool per batch row: the T queries pooled (T C adds), then Q K^T and P V over T/stride
 * queries and T keys (2 (T/stride) T hd each per head) and ~5 per score for the softmax */
static int64_t flops_attn_pool(const Module *m, const Op *op) {
  const Type *x = &op->in[0]->type;
  int64_t b = x->dim[0], t = x->dim[1], c = x->dim[2] / 3, h = ir_attr_i(op, "heads");
  int64_t tq = t / ir_attr_i(op, "stride");
  return b * (tq * t * (4 * c + 5 * h) + t * c);
}
/* the scores and P recomputed, dV, dP, dQ, dK (as attention_dx): ~2.5x the forward */
static int64_t flops_attn_pool_dx(const Module *m, const Op *op) { return 5 * flops_attn_pool(m, op) / 2; }
/* xl_attention per batch row and head: (Q+u) K^T and (Q+w) Rk^T over T x (M+T) (2 hd each per
 * pair), P V (2 hd), ~5 per score for the softmax; causal within the segment is not discounted
 * (the kernels compute the full rectangle of the two score products) */
static int64_t flops_xl_attn(const Module *m, const Op *op) {
  const Type *x = &op->in[0]->type;
  int64_t b = x->dim[0], l = x->dim[1], t = l - ir_attr_i(op, "memory"), c = x->dim[2] / 3, h = ir_attr_i(op, "heads");
  return b * t * l * (6 * c + 5 * h);
}
/* the forward's two score products recomputed (4 T L C), then dP, dQ's two, dK, dV, dRk (2 T L C
 * each) and dS (~5 per score) */
static int64_t flops_xl_attn_dx(const Module *m, const Op *op) {
  const Type *x = &op->in[0]->type;
  int64_t b = x->dim[0], l = x->dim[1], t = l - ir_attr_i(op, "memory"), c = x->dim[2] / 3, h = ir_attr_i(op, "heads");
  return b * t * l * (16 * c + 10 * h);
}
/* moe, counted on the tokens actually routed so that FLOPs per token stay constant as E grows at
 * fixed top_k: the router 2 C E and its softmax 5 E per token, then the N K routed (token, choice)
 * pairs, at most E times the capacity ceil(factor N / E) (min N): 4 C H (the two GEMMs) + H (the
 * activation) + 2 C (biases) + 2 C (gate and scatter) each. Drops that depend on the router's
 * values are not known at compile time: the count assumes none beyond the capacity bound. */
static int64_t moe_routed(const Op *op, int64_t tokens, int64_t e) {
  int64_t k = ir_attr_i(op, "top_k");
  double capf = ceil(ir_attr_f(op, "capacity_factor") * (double)tokens / (double)e);
  int64_t cap = capf > (double)tokens ? tokens : (int64_t)capf;
  return tokens * k < e * cap ? tokens * k : e * cap;
}
static int64_t flops_moe(const Module *m, const Op *op) {
  const Type *x = &op->in[0]->type;
  int64_t c = x->dim[x->rank - 1], tokens = ir_type_numel(x) / c;
  int64_t e = op->in[1]->type.dim[0], h = op->in[2]->type.dim[1];
  return tokens * e * (2 * c + 5) + moe_routed(op, tokens, e) * (4 * c * h + h + 4 * c);
}
/* moe_dx: the forward recomputed, then per routed pair d gate, d w2, d h, d w1, d x (2 C H each
 * but d gate's 2 C) and the router's softmax backward and its two GEMMs (4 C E per token). */
static int64_t flops_moe_dx(const Module *m, const Op *op) {
  const Type *x = &op->in[0]->type;
  int64_t c = x->dim[x->rank - 1], tokens = ir_type_numel(x) / c;
  int64_t e = op->in[1]->type.dim[0], h = op->in[2]->type.dim[1];
  return flops_moe(m, op) + tokens * e * (4 * c + 5) + moe_routed(op, tokens, e) * (8 * c * h + 2 * h + 4 * c);
}
/* rope: each of the C/2 pairs of q and of k per token is rotated with 4 multiplies and 2 adds;
 * the sin/cos of each (position, pair index) are shared by the heads and not counted. */
static int64_t flops_rope(const Module *m, const Op *op) { return 2 * out_numel(op); }
static int64_t flops_softmax(const Module *m, const Op *op) { return 5 * out_numel(op); }
static int64_t flops_pool(const Module *m, const Op *op) {
  const char *mode = ir_attr_s(op, "mode");
  return mode && strcmp(mode, "mean") == 0 ? ir_type_numel(&op->in[0]->type) : 0;
}
/* log-softmax and the gradient: ~5 per logit */
static int64_t flops_xent(const Module *m, const Op *op) { return 5 * ir_type_numel(&op->in[0]->type); }
/* two softmaxes at T, the KL terms, and the hard-label softmax: about 5 per logit each */
static int64_t flops_distill(const Module *m, const Op *op) { return 15 * ir_type_numel(&op->in[0]->type); }
static int64_t flops_sum_to(const Module *m, const Op *op) { return ir_type_numel(&op->in[0]->type); }
static int64_t flops_linear_dw(const Module *m, const Op *op) {
  return 2 * ir_type_numel(&op->in[0]->type) * op->in[1]->type.dim[op->in[1]->type.rank - 1];
}
/* the ops it replaces: linear (2 rows V C), cross_entropy and its gradient (5 per logit each),
 * matmul and linear_dw (2 rows V C each) */
static int64_t flops_linear_xent(const Module *m, const Op *op) {
  const Type *w = &op->in[1]->type;
  int64_t rows = ir_type_numel(&op->in[0]->type) / w->dim[1];
  return 6 * rows * w->dim[0] * w->dim[1] + 10 * rows * w->dim[0];
}
/* recompute scores and P (forward), then dV = P^T dY, dP = dY V^T, dS, dQ = dS K, dK = dS^T Q: ~2.5x */
static int64_t flops_attn_dx(const Module *m, const Op *op) { return 5 * flops_attention(m, op) / 2; }
static int64_t flops_call(const Module *m, const Op *op) {
  const Func *f = ir_find_func(m, ir_attr_s(op, "callee"));
  return f ? ir_func_flops(m, f) : 0;
}

#include "grad.h"

static const struct {
  ShapeFn shape;
  FlopsFn flops;
  GradFn grad;
} op_rules[OP_COUNT] = {
#define OP(e, name, mi, ma, no, fl, sh, fo, gr) [e] = {sh, fo, gr},
#include "ops.def"
#undef OP
};

const OpInfo ir_op_info[OP_COUNT] = {
#define OP(e, name, mi, ma, no, fl, sh, fo, gr) [e] = {name, mi, ma, no, fl},
#include "ops.def"
#undef OP
};

const char *ir_op_name(OpKind k) { return k < OP_COUNT ? ir_op_info[k].name : "?"; }

int ir_op_by_name(const char *name) {
  for (int k = 0; k < OP_COUNT; k++)
    if (strcmp(ir_op_info[k].name, name) == 0) return k;
  return -1;
}

static const char *const dtype_names[DT_COUNT] = {"f32", "f16", "bf16", "i8",   "i32",
                                                  "i64", "i8_row", "q8_0", "q4_0", "csr"};
static const size_t dtype_bits[DT_COUNT] = {32, 16, 16, 8, 32, 64, 8, 8, 4, 32};

const char *ir_dtype_name(DType t) { return t < DT_COUNT ? dtype_names[t] : "?"; }
int ir_dtype_by_name(const char *name) {
  for (int i = 0; i < DT_COUNT; i++)
    if (strcmp(dtype_names[i], name) == 0) return i;
  return -1;
}
size_t ir_dtype_bits(DType t) { return t < DT_COUNT ? dtype_bits[t] : 0; }
bool ir_dtype_quantised(DType t) { return t == DT_I8_ROW || t == DT_Q8_0 || t == DT_Q4_0; }
int ir_quant_block(DType t) { return t == DT_Q8_0 || t == DT_Q4_0 ? 32 : 0; }
bool ir_dtype_packed(DType t) { return ir_dtype_quantised(t) || t == DT_CSR; }

static const char *const prune_names[PRUNE_COUNT] = {"none", "magnitude", "global", "nm"};
const char *ir_prune_name(PruneKind k) { return (unsigned)k < PRUNE_COUNT ? prune_names[k] : "?"; }
static const char *const select_names[SEL_COUNT] = {"none", "norm", "importance"};
const char *ir_select_name(SelectRule r) { return (unsigned)r < SEL_COUNT ? select_names[r] : "?"; }

static const char *const init_names[INIT_COUNT] = {"zeros", "ones", "normal", "uniform", "sinusoid"};
const char *ir_init_name(InitKind k) { return k < INIT_COUNT ? init_names[k] : "?"; }

/* ------------------------------------------------------------------------------------------ */
/* Types.                                                                                       */

Type ir_type(DType dt, int rank, const int64_t *dims) {
  Type t;
  memset(&t, 0, sizeof t);
  IR_ASSERT(rank >= 0 && rank <= IR_MAX_RANK);
  t.dtype = dt;
  t.rank = rank;
  for (int i = 0; i < rank; i++) t.dim[i] = dims[i];
  return t;
}
Type ir_type1(DType dt, int64_t d0) { return ir_type(dt, 1, (int64_t[]){d0}); }
Type ir_type2(DType dt, int64_t d0, int64_t d1) { return ir_type(dt, 2, (int64_t[]){d0, d1}); }
Type ir_type3(DType dt, int64_t d0, int64_t d1, int64_t d2) { return ir_type(dt, 3, (int64_t[]){d0, d1, d2}); }

bool ir_type_eq(const Type *a, const Type *b) {
  if (a->dtype != b->dtype || a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dim[i] != b->dim[i]) return false;
  return true;
}

int64_t ir_type_numel(const Type *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->dim[i];
  return n;
}

int64_t ir_type_bytes(const Type *t) { return ir_type_numel(t) * (int64_t)ir_dtype_bits(t->dtype) / 8; }

char *ir_type_str(const Type *t, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "%s[", ir_dtype_name(t->dtype));
  for (int i = 0; i < t->rank && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)t->dim[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Arena and module.                                                                            */

struct ArenaChunk {
  ArenaChunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
};

void *ir_alloc(Module *m, size_t n) {
  n = (n + 15) & ~(size_t)15;
  ArenaChunk *c = m->arena;
  if (!c || c->cap - c->used < n) {
    size_t cap = n > 65536 ? n : 65536;
    c = malloc(sizeof *c + cap);
    if (!c) die("out of memory");
    c->next = m->arena;
    c->used = 0;
    c->cap = cap;
    m->arena = c;
  }
  void *p = c->data + c->used;
  c->used += n;
  memset(p, 0, n);
  return p;
}

char *ir_strdup(Module *m, const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s);
  char *p = ir_alloc(m, n + 1);
  memcpy(p, s, n + 1);
  return p;
}

/* Grows an arena array of elements of size sz from *cap to at least need. */
static void *grow(Module *m, void *arr, int *cap, int need, size_t sz) {
  if (need <= *cap) return arr;
  int nc = *cap ? *cap * 2 : 8;
  while (nc < need) nc *= 2;
  void *p = ir_alloc(m, (size_t)nc * sz);
  if (arr) memcpy(p, arr, (size_t)*cap * sz);
  *cap = nc;
  return p;
}

Module *ir_module_new(const char *name) {
  Module *m = calloc(1, sizeof *m);
  if (!m) die("out of memory");
  m->name = ir_strdup(m, name ? name : "model");
  return m;
}

void ir_module_free(Module *m) {
  if (!m) return;
  ArenaChunk *c = m->arena;
  while (c) {
    ArenaChunk *n = c->next;
    free(c);
    c = n;
  }
  free(m);
}

/* Inserts or replaces a in the key-sorted attribute array (*attrs, *n). */
static void attr_put(Module *m, Attr **attrs, int *n, Attr a) {
  int i = 0;
  while (i < *n && strcmp((*attrs)[i].key, a.key) < 0) i++;
  a.key = ir_strdup(m, a.key);
  if (a.kind == ATTR_STR || a.kind == ATTR_SYM) a.s = ir_strdup(m, a.s);
  if (a.kind == ATTR_INTS) {
    int64_t *v = ir_alloc(m, sizeof(int64_t) * (size_t)(a.n > 0 ? a.n : 1));
    if (a.n) memcpy(v, a.ints, sizeof(int64_t) * (size_t)a.n);
    a.ints = v;
  }
  if (i < *n && strcmp((*attrs)[i].key, a.key) == 0) {
    (*attrs)[i] = a;
    return;
  }
  Attr *na = ir_alloc(m, sizeof(Attr) * (size_t)(*n + 1));
  if (i) memcpy(na, *attrs, sizeof(Attr) * (size_t)i);
  na[i] = a;
  if (*n - i) memcpy(na + i + 1, *attrs + i, sizeof(Attr) * (size_t)(*n - i));
  *attrs = na;
  (*n)++;
}

static const Attr *attr_get(const Attr *attrs, int n, const char *key) {
  for (int i = 0; i < n; i++)
    if (strcmp(attrs[i].key, key) == 0) return &attrs[i];
  return NULL;
}

Func *ir_train_func(const Module *m) {
  const Attr *a = ir_module_attr(m, "train");
  return a && a->kind == ATTR_SYM ? ir_find_func(m, a->s) : NULL;
}

void ir_module_set_attr(Module *m, Attr a) { attr_put(m, &m->attr, &m->nattr, a); }
const Attr *ir_module_attr(const Module *m, const char *key) { return attr_get(m->attr, m->nattr, key); }

/* ------------------------------------------------------------------------------------------ */
/* Parameters and functions.                                                                   */

/* FNV-1a over the name. */
static uint64_t sym_hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* The slot holding name, or the empty slot where it would go. */
static IrSymSlot *sym_slot(const IrSymIndex *x, const char *name) {
  size_t mask = (size_t)x->cap - 1, i = (size_t)sym_hash(name) & mask;
  while (x->slot[i].name && strcmp(x->slot[i].name, name) != 0) i = (i + 1) & mask;
  return &x->slot[i];
}

static void *sym_get(const IrSymIndex *x, const char *name) {
  return name && x->cap ? sym_slot(x, name)->item : NULL;
}

/* Adds name -> item (name is not in the index); grows to keep the table at most half full. */
static void sym_put(Module *m, IrSymIndex *x, const char *name, void *item) {
  if (2 * (x->used + 1) > x->cap) {
    IrSymIndex y = {x->cap ? x->cap * 2 : 64, 0, NULL};
    y.slot = ir_alloc(m, sizeof(IrSymSlot) * (size_t)y.cap);  /* zeroed */
    for (int i = 0; i < x->cap; i++)
      if (x->slot[i].item) {
        *sym_slot(&y, x->slot[i].name) = x->slot[i];
        y.used++;
      }
    *x = y;
  }
  IrSymSlot *s = sym_slot(x, name);
  if (!s->name) x->used++;  /* else a tombstone of the same name is reused */
  s->name = name;
  s->item = item;
}

Param *ir_add_param(Module *m, const char *name, Type t, InitKind init, double init_arg) {
  if (ir_find_param(m, name)) return NULL;
  m->params = grow(m, m->params, &m->capparam, m->nparam + 1, sizeof(Param *));
  Param *p = ir_alloc(m, sizeof *p);
  p->name = ir_strdup(m, name);
  p->type = t;
  p->init = init;
  p->init_arg = init_arg;
  p->trainable = true;
  p->decay = true;
  p->index = m->nparam;
  m->params[m->nparam++] = p;
  if (p->name) sym_put(m, &m->param_index, p->name, p);
  return p;
}

static const char *const format_names[PF_COUNT] = {"dense"};
const char *ir_param_format_name(ParamFormat f) { return (unsigned)f < PF_COUNT ? format_names[f] : "?"; }

int ir_param_format_by_name(const char *name) {
  for (int i = 0; name && i < PF_COUNT; i++)
    if (strcmp(format_names[i], name) == 0) return i;
  return -1;
}

int64_t ir_csr_cols_offset(int64_t cap) { return (4 * cap + 63) / 64 * 64; }
int64_t ir_csr_rowptr_offset(int64_t cap) { return (ir_csr_cols_offset(cap) + 2 * cap + 63) / 64 * 64; }
int64_t ir_csr_bytes(int64_t N, int64_t cap) { return ir_csr_rowptr_offset(cap) + 4 * (N + 1); }

int ir_param_full_shape(const Param *p, int64_t *dims) {
  for (int i = 0; i < p->type.rank; i++) dims[i] = p->type.dim[i];
  if (p->select != SEL_NONE && p->select_axis >= 0 && p->select_axis < p->type.rank)
    dims[p->select_axis] = (int64_t)p->select_parts * p->select_unit * p->select_of;
  return p->type.rank;
}

int64_t ir_param_storage_bytes(const Param *p) {
  int64_t n = 0;
  switch (p->fmt) {
  case PF_DENSE:
    n = ir_type_bytes(&p->type);
    if (p->type.dtype == DT_CSR && p->type.rank == 2)
      n = ir_csr_bytes(p->type.dim[0], p->nnz);
    else if (ir_dtype_quantised(p->type.dtype) && p->type.rank == 2) {
      /* the values, then at the next 64 bytes the scales (RtFormat, runtime/modelc_rt.h):
       * one f32 per row (i8_row) or one f16 per block of 32 (q8_0, q4_0) */
      int64_t nb = ir_quant_block(p->type.dtype);
      n = (n + 63) / 64 * 64 + (nb ? ir_type_numel(&p->type) / nb * 2 : p->type.dim[0] * 4);
    }
    break;
  case PF_COUNT: die("parameter @%s: invalid format", p->name);
  }
  for (int i = 0; i < p->naux && i < IR_MAX_PARAM_AUX; i++)
    n += (p->aux[i].numel * (int64_t)ir_dtype_bits(p->aux[i].dtype) + 7) / 8;
  return n;
}

Param *ir_find_param(const Module *m, const char *name) { return sym_get(&m->param_index, name); }

void ir_remove_params(Module *m, const bool *drop) {
  int k = 0;
  for (int i = 0; i < m->nparam; i++) {
    Param *p = m->params[i];
    if (drop[i]) {
      if (p->name && m->param_index.cap) {
        IrSymSlot *s = sym_slot(&m->param_index, p->name);
        if (s->item == p) s->item = NULL; /* tombstone, as ir_remove_func */
      }
      continue;
    }
    p->index = k;
    m->params[k++] = p;
  }
  m->nparam = k;
}

Func *ir_add_func(Module *m, const char *name) {
  if (ir_find_func(m, name)) return NULL;
  m->funcs = grow(m, m->funcs, &m->capfunc, m->nfunc + 1, sizeof(Func *));
  Func *f = ir_alloc(m, sizeof *f);
  f->name = ir_strdup(m, name);
  f->module = m;
  m->funcs[m->nfunc++] = f;
  if (f->name) sym_put(m, &m->func_index, f->name, f);
  return f;
}

Func *ir_find_func(const Module *m, const char *name) { return sym_get(&m->func_index, name); }

void ir_remove_func(Module *m, Func *f) {
  for (int i = 0; i < m->nfunc; i++)
    if (m->funcs[i] == f) {
      memmove(m->funcs + i, m->funcs + i + 1, sizeof(Func *) * (size_t)(m->nfunc - i - 1));
      m->nfunc--;
      if (f->name && m->func_index.cap) {
        IrSymSlot *s = sym_slot(&m->func_index, f->name);
        if (s->item == f) s->item = NULL;  /* tombstone: keeps later entries of the probe chain reachable */
      }
      return;
    }
}

Value *ir_new_value(Func *f, const char *name, Type t) {
  Value *v = ir_alloc(f->module, sizeof *v);
  v->id = f->nvalues++;
  v->name = ir_strdup(f->module, name);
  v->type = t;
  return v;
}

void ir_renumber_values(Module *m) {
  for (int i = 0; i < m->nfunc; i++) {
    Func *f = m->funcs[i];
    int n = 0;
    for (int k = 0; k < f->narg; k++) f->args[k]->id = n++;
    for (Op *op = f->first; op; op = op->next)
      for (int k = 0; k < op->nout; k++) op->out[k]->id = n++;
    f->nvalues = n;
  }
}

Value *ir_add_arg(Func *f, const char *name, Type t) {
  Value **na = ir_alloc(f->module, sizeof(Value *) * (size_t)(f->narg + 1));
  if (f->narg) memcpy(na, f->args, sizeof(Value *) * (size_t)f->narg);
  Value *v = ir_new_value(f, name, t);
  v->index = f->narg;
  na[f->narg++] = v;
  f->args = na;
  return v;
}

void ir_set_return(Func *f, int n, Value *const *vals) {
  f->ret = ir_alloc(f->module, sizeof(Value *) * (size_t)(n > 0 ? n : 1));
  for (int i = 0; i < n; i++) f->ret[i] = vals[i];
  f->nret = n;
}

/* ------------------------------------------------------------------------------------------ */
/* Ops.                                                                                         */

Op *ir_op_new(Func *f, OpKind k, int nin, Value *const *in, int nout) {
  IR_ASSERT(k < OP_COUNT && nin >= 0 && nout >= 0);
  Op *op = ir_alloc(f->module, sizeof *op);
  op->kind = k;
  op->module = f->module;
  ir_set_operands(op, nin, in);
  op->nout = nout;
  op->out = ir_alloc(f->module, sizeof(Value *) * (size_t)(nout > 0 ? nout : 1));
  for (int i = 0; i < nout; i++) {
    op->out[i] = ir_new_value(f, NULL, ir_type(DT_F32, 0, NULL));
    op->out[i]->def = op;
    op->out[i]->index = i;
  }
  return op;
}

void ir_set_operands(Op *op, int nin, Value *const *in) {
  Value **a = ir_alloc(op->module, sizeof(Value *) * (size_t)(nin > 0 ? nin : 1));
  for (int i = 0; i < nin; i++) a[i] = in[i];
  op->in = a;
  op->nin = nin;
}

Op *ir_clone_op(const Module *m, Func *dst, const Op *op, Value **map, char *err, size_t n) {
  Value *stack[16] = {0}, **in = op->nin <= 16 ? stack : malloc(sizeof *in * (size_t)op->nin);
  IR_ASSERT(in);
  for (int i = 0; i < op->nin; i++) {
    in[i] = map[op->in[i]->id];
    IR_ASSERT(in[i]);
  }
  Op *c = ir_op_new(dst, op->kind, op->nin, in, op->nout);
  if (in != stack) free(in);
  for (int i = 0; i < op->nattr; i++) ir_set_attr(c, op->attr[i]);
  if (!ir_infer(m, c, err, n)) return NULL;
  ir_append(dst, c);
  for (int i = 0; i < op->nout; i++) map[op->out[i]->id] = c->out[i];
  return c;
}

Func *ir_clone_func(Module *m, const Func *f, const char *name) {
  Func *g = ir_add_func(m, name);
  if (!g) return NULL;
  Value **map = calloc((size_t)f->nvalues + 1, sizeof *map);
  Value **ret = calloc((size_t)f->nret + 1, sizeof *ret);
  IR_ASSERT(map && ret);
  for (int i = 0; i < f->narg; i++) map[f->args[i]->id] = ir_add_arg(g, f->args[i]->name, f->args[i]->type);
  char err[256];
  for (const Op *op = f->first; op; op = op->next)
    if (!ir_clone_op(m, g, op, map, err, sizeof err)) die("cloning @%s: %s", f->name, err); /* same types: cannot fail */
  for (int i = 0; i < f->nret; i++) ret[i] = map[f->ret[i]->id];
  ir_set_return(g, f->nret, ret);
  g->line = f->line, g->col = f->col;
  free(map);
  free(ret);
  return g;
}

void ir_append(Func *f, Op *op) {
  IR_ASSERT(!op->func);
  op->func = f;
  op->prev = f->last;
  op->next = NULL;
  if (f->last)
    f->last->next = op;
  else
    f->first = op;
  f->last = op;
}

void ir_insert_before(Op *pos, Op *op) {
  IR_ASSERT(!op->func && pos->func);
  Func *f = pos->func;
  op->func = f;
  op->next = pos;
  op->prev = pos->prev;
  if (pos->prev)
    pos->prev->next = op;
  else
    f->first = op;
  pos->prev = op;
}

void ir_insert_after(Op *pos, Op *op) {
  IR_ASSERT(!op->func && pos->func);
  if (pos->next) {
    ir_insert_before(pos->next, op);
    return;
  }
  ir_append(pos->func, op);
}

void ir_unlink(Op *op) {
  Func *f = op->func;
  if (!f) return;
  if (op->prev)
    op->prev->next = op->next;
  else
    f->first = op->next;
  if (op->next)
    op->next->prev = op->prev;
  else
    f->last = op->prev;
  op->prev = op->next = NULL;
  op->func = NULL;
}

void ir_set_attr(Op *op, Attr a) { attr_put(op->module, &op->attr, &op->nattr, a); }

void ir_set_attr_int(Op *op, const char *key, int64_t v) {
  ir_set_attr(op, (Attr){.key = key, .kind = ATTR_INT, .i = v});
}
void ir_set_attr_float(Op *op, const char *key, double v) {
  ir_set_attr(op, (Attr){.key = key, .kind = ATTR_FLOAT, .f = v});
}
void ir_set_attr_str(Op *op, const char *key, const char *v) {
  ir_set_attr(op, (Attr){.key = key, .kind = ATTR_STR, .s = v});
}
void ir_set_attr_sym(Op *op, const char *key, const char *v) {
  ir_set_attr(op, (Attr){.key = key, .kind = ATTR_SYM, .s = v});
}
void ir_set_attr_ints(Op *op, const char *key, int n, const int64_t *v) {
  ir_set_attr(op, (Attr){.key = key, .kind = ATTR_INTS, .n = n, .ints = (int64_t *)v});
}

void ir_remove_attr(Op *op, const char *key) {
  for (int i = 0; i < op->nattr; i++)
    if (strcmp(op->attr[i].key, key) == 0) {
      memmove(op->attr + i, op->attr + i + 1, sizeof(Attr) * (size_t)(op->nattr - i - 1));
      op->nattr--;
      return;
    }
}

const Attr *ir_attr(const Op *op, const char *key) { return attr_get(op->attr, op->nattr, key); }

int64_t ir_attr_int(const Op *op, const char *key, int64_t dflt) {
  const Attr *a = ir_attr(op, key);
  return a && a->kind == ATTR_INT ? a->i : dflt;
}

double ir_attr_float(const Op *op, const char *key, double dflt) {
  const Attr *a = ir_attr(op, key);
  if (!a) return dflt;
  return a->kind == ATTR_FLOAT ? a->f : a->kind == ATTR_INT ? (double)a->i : dflt;
}

const char *ir_attr_str(const Op *op, const char *key) {
  const Attr *a = ir_attr(op, key);
  return a && (a->kind == ATTR_STR || a->kind == ATTR_SYM) ? a->s : NULL;
}

bool ir_attr_eq(const Attr *a, const Attr *b) {
  if (strcmp(a->key, b->key) != 0 || a->kind != b->kind) return false;
  switch (a->kind) {
  case ATTR_INT: return a->i == b->i;
  case ATTR_FLOAT: return memcmp(&a->f, &b->f, sizeof a->f) == 0; /* bitwise: NaN == NaN, 0 != -0 */
  case ATTR_STR:
  case ATTR_SYM: return strcmp(a->s, b->s) == 0;
  case ATTR_INTS: return a->n == b->n && (a->n == 0 || memcmp(a->ints, b->ints, sizeof(int64_t) * (size_t)a->n) == 0);
  }
  return false;
}

bool ir_infer(const Module *m, Op *op, char *err, size_t n) {
  const OpInfo *info = &ir_op_info[op->kind];
  if (op->nin < info->min_in || (info->max_in >= 0 && op->nin > info->max_in)) {
    if (info->min_in == info->max_in)
      snprintf(err, n, "%s takes %d operand%s, got %d", info->name, info->min_in, info->min_in == 1 ? "" : "s", op->nin);
    else if (info->max_in < 0)
      snprintf(err, n, "%s takes at least %d operands, got %d", info->name, info->min_in, op->nin);
    else
      snprintf(err, n, "%s takes %d to %d operands, got %d", info->name, info->min_in, info->max_in, op->nin);
    return false;
  }
  if (info->nout >= 0 && op->nout != info->nout) {
    snprintf(err, n, "%s has %d result%s, not %d", info->name, info->nout, info->nout == 1 ? "" : "s", op->nout);
    return false;
  }
  if (!ir_check_attrs(op, err, n)) return false;
  /* a quantised or csr weight is read only by the kernels that know its format (ir.h, DType) */
  for (int i = 0; i < op->nin; i++)
    if (ir_dtype_packed(op->in[i]->type.dtype) && op->kind != OP_CALL &&
        !(i == 1 && (op->kind == OP_LINEAR || (op->kind == OP_EMBEDDING && op->in[i]->type.dtype != DT_CSR)))) {
      snprintf(err, n, "%s: operand %d is a %s weight, which only %s read (as their weight)", info->name, i,
               ir_dtype_name(op->in[i]->type.dtype),
               op->in[i]->type.dtype == DT_CSR ? "linear ops" : "linear and embedding");
      return false;
    }
  Type tmp[16];
  Type *out = op->nout <= 16 ? tmp : ir_alloc((Module *)m, sizeof(Type) * (size_t)op->nout);
  memset(out, 0, sizeof(Type) * (size_t)(op->nout > 0 ? op->nout : 1));
  if (!op_rules[op->kind].shape(m, op, out, err, n)) return false;
  for (int i = 0; i < op->nout; i++) op->out[i]->type = out[i];
  return true;
}

Value *ir_emit(Func *f, Op *op) {
  char err[256];
  if (!ir_infer(f->module, op, err, sizeof err)) die("ir_emit(%s): %s", ir_op_name(op->kind), err);
  ir_append(f, op);
  return op->nout ? op->out[0] : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Uses.                                                                                        */

void ir_count_uses(Func *f) {
  for (int i = 0; i < f->narg; i++) f->args[i]->nuses = 0;
  for (Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nout; i++) op->out[i]->nuses = 0;
  for (Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nin; i++) op->in[i]->nuses++;
  for (int i = 0; i < f->nret; i++) f->ret[i]->nuses++;
}

int ir_replace_uses(Func *f, Value *from, Value *to) {
  int k = 0;
  for (Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nin; i++)
      if (op->in[i] == from) {
        op->in[i] = to;
        k++;
      }
  for (int i = 0; i < f->nret; i++)
    if (f->ret[i] == from) {
      f->ret[i] = to;
      k++;
    }
  return k;
}

/* ------------------------------------------------------------------------------------------ */
/* Analyses.                                                                                    */

int64_t ir_op_flops(const Module *m, const Op *op) { return op_rules[op->kind].flops(m, op); }

GradFn ir_op_grad(OpKind k) { return k < OP_COUNT ? op_rules[k].grad : NULL; }

int64_t ir_func_flops(const Module *m, const Func *f) {
  int64_t total = 0;
  for (const Op *op = f->first; op; op = op->next) total += ir_op_flops(m, op);
  return total;
}

int64_t ir_param_count(const Module *m) {
  int64_t n = 0;
  for (int i = 0; i < m->nparam; i++) n += ir_type_numel(&m->params[i]->type);
  return n;
}

int64_t ir_param_bytes(const Module *m) {
  int64_t n = 0;
  for (int i = 0; i < m->nparam; i++) n += ir_param_storage_bytes(m->params[i]);
  return n;
}

/* Bytes an op's result occupies in the activation arena: parameter loads alias the weights. */
static int64_t value_bytes(const Value *v) {
  if (v->def && v->def->kind == OP_PARAM) return 0;
  return ir_type_bytes(&v->type);
}

int64_t ir_func_peak_bytes(const Module *m, const Func *f) {
  /* Give each op an index and find every value's last use (returns live to the end). */
  int nops = 0;
  for (const Op *op = f->first; op; op = op->next) nops++;
  int *last = calloc((size_t)f->nvalues + 1, sizeof(int));
  if (!last) die("out of memory");
  for (int i = 0; i < f->nvalues; i++) last[i] = -1;
  int idx = 0;
  for (const Op *op = f->first; op; op = op->next, idx++)
    for (int i = 0; i < op->nin; i++) last[op->in[i]->id] = idx;
  for (int i = 0; i < f->nret; i++) last[f->ret[i]->id] = nops;

  int64_t live = 0, peak = 0;
  idx = 0;
  for (const Op *op = f->first; op; op = op->next, idx++) {
    int64_t outb = 0, transient = 0;
    for (int i = 0; i < op->nout; i++) outb += value_bytes(op->out[i]);
    if (op->kind == OP_CALL) {
      const Func *g = ir_find_func(m, ir_attr_s(op, "callee"));
      if (g && g != f) transient = ir_func_peak_bytes(m, g);
    }
    if (live + outb + transient > peak) peak = live + outb + transient;
    live += outb;
    for (int i = 0; i < op->nout; i++)
      if (last[op->out[i]->id] < 0) live -= value_bytes(op->out[i]); /* dead on arrival */
    for (int i = 0; i < op->nin; i++) {
      const Value *v = op->in[i];
      if (v->def && last[v->id] == idx) {
        bool dup = false; /* an operand used twice by this op is freed once */
        for (int j = 0; j < i; j++) dup |= op->in[j] == v;
        if (!dup) live -= value_bytes(v);
      }
    }
  }
  free(last);
  return peak;
}

/* ---- importing one module into another (a distillation teacher) ---- */

/* name with prefix, in m's arena. */
static const char *prefixed(Module *m, const char *prefix, const char *name) {
  size_t a = strlen(prefix), b = strlen(name);
  char *s = ir_alloc(m, a + b + 1);
  memcpy(s, prefix, a);
  memcpy(s + a, name, b + 1);
  return s;
}

bool ir_module_import(Module *dst, const Module *src, const char *prefix, const char *entry, char *err, size_t n) {
  const Func *se = src->entry ? ir_find_func(src, src->entry) : NULL;
  if (!se) {
    snprintf(err, n, "the imported module has no entry function");
    return false;
  }
  for (int i = 0; i < src->nparam; i++) {
    const Param *p = src->params[i];
    Param *q = ir_add_param(dst, prefixed(dst, prefix, p->name), p->type, p->init, p->init_arg);
    if (!q) {
      snprintf(err, n, "a parameter named '%s%s' already exists", prefix, p->name);
      return false;
    }
    q->decay = p->decay;
    q->trainable = false;
  }
  /* callees before callers: lowering adds a block's function after the function calling it */
  Func **made = calloc((size_t)src->nfunc + 1, sizeof *made);
  IR_ASSERT(made);
  bool ok = true;
  for (int k = src->nfunc - 1; k >= 0 && ok; k--) {
    const Func *f = src->funcs[k];
    const char *name = f == se ? ir_strdup(dst, entry) : prefixed(dst, prefix, f->name);
    Func *g = made[k] = ir_add_func(dst, name);
    if (!g) {
      snprintf(err, n, "a function named '%s' already exists", name);
      ok = false;
      break;
    }
    Value **map = calloc((size_t)f->nvalues + 1, sizeof *map);
    IR_ASSERT(map);
    for (int i = 0; i < f->narg; i++) map[f->args[i]->id] = ir_add_arg(g, f->args[i]->name, f->args[i]->type);
    for (const Op *op = f->first; op && ok; op = op->next) {
      Value *stack[64], **in = op->nin <= 64 ? stack : malloc(sizeof *in * (size_t)op->nin);
      IR_ASSERT(in);
      for (int i = 0; i < op->nin; i++) in[i] = map[op->in[i]->id];
      Op *c = ir_op_new(g, op->kind, op->nin, in, op->nout);
      if (in != stack) free(in);
      for (int i = 0; i < op->nattr; i++) {
        Attr a = op->attr[i];
        if (a.kind == ATTR_SYM && strcmp(a.key, "p") == 0) a.s = prefixed(dst, prefix, a.s);
        if (a.kind == ATTR_SYM && strcmp(a.key, "callee") == 0) a.s = prefixed(dst, prefix, a.s);
        ir_set_attr(c, a);
      }
      c->line = op->line, c->col = op->col;
      if (!ir_infer(dst, c, err, n)) {
        ok = false;
        break;
      }
      ir_append(g, c);
      for (int i = 0; i < op->nout; i++) map[op->out[i]->id] = c->out[i];
    }
    if (ok) {
      Value **ret = calloc((size_t)f->nret + 1, sizeof *ret);
      IR_ASSERT(ret);
      for (int i = 0; i < f->nret; i++) ret[i] = map[f->ret[i]->id];
      ir_set_return(g, f->nret, ret);
      free(ret);
    }
    free(map);
  }
  free(made);
  return ok;
}
