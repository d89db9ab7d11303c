/* emit_c.c: the C backend. Writes one readable C file for a lowered, memory-planned module:
 * one C function per IR function, feature sizes as constants, every element-wise group as one
 * loop nest, runtime kernel calls for the rest, a comment naming the IR op behind each statement,
 * and every intermediate tensor at its planned offset in one arena. The file ends with the model
 * descriptor (RtModel) and a main() handing it to the runtime's command line (rt_main).
 *
 * Generated functions take (s, A, W, st, rng, args..., results...): s the step (runtime batch nb,
 * length nt, first position t0, state slots, scratch), A this function's frame in the arena, W the
 * weight buffer, st the first state slot this call owns, rng its random stream. See backend.h for
 * dynamic shapes.
 */
#include <stdlib.h>
#include <string.h>

#include "../../passes/memplan.h"
#include "backend.h"
#include "kernels.h"

typedef struct Em {
  FILE *o;
  BackendPlan *p;
  Diag *d;
  const Func *f;
  FuncInfo *fi;
  bool ok;
  FILE *pre;     /* file-scope definitions (loop functions) needed by the function being emitted */
  int nloops;    /* loop functions emitted so far */
  int st_local;  /* running state-slot offset within the function being emitted */
  int sin_count; /* sinusoid tables emitted so far */
} Em;

/* ---- names and sizes ---- */

static bool is_half(const Value *v) { return v->type.dtype == DT_BF16 || v->type.dtype == DT_F16; }

/* The C element type of v's storage (a quantised weight, ir.h, is bytes to the kernels that read it). */
static const char *ctype(const Value *v) {
  return backend_is_int(v) ? "int32_t" : is_half(v) ? "uint16_t" : ir_dtype_packed(v->type.dtype) ? "uint8_t" : "float";
}


/* Which result of the function being emitted returns v first (-1: none); from the plan, O(1). */
static int ret_index(const Em *e, const Value *v) { return e->fi->ret[v->id]; }

/* The C expression naming v's storage. */
static const char *vname(const Em *e, const Value *v, char *buf) {
  if (!v->def)
    snprintf(buf, 32, "a%d", v->index);
  else
    snprintf(buf, 32, "v%d", v->id);
  (void)e;
  return buf;
}

/* Runtime extent of axis i of v. */
static void extent(const Em *e, const Value *v, int i, char *buf) {
  AxisRole r = e->fi->vals[v->id].role[i];
  if (r == AX_BATCH)
    snprintf(buf, 32, "nb");
  else if (r == AX_TIME && backend_time_div(e->p, e->fi, v, i) > 1)
    snprintf(buf, 32, "(nt / %lld)", (long long)backend_time_div(e->p, e->fi, v, i)); /* a pooled sequence */
  else if (r == AX_TIME)
    snprintf(buf, 32, "nt");
  else
    snprintf(buf, 32, "%lld", (long long)v->type.dim[i]);
}

/* Runtime element count of v, optionally of its leading axes only (all but the last `skip`). */
static void numel(const Em *e, const Value *v, int skip, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "((size_t)1");
  for (int i = 0; i + skip < v->type.rank && k < n; i++) {
    char ex[32];
    extent(e, v, i, ex);
    k += (size_t)snprintf(buf + k, n - k, " * %s", ex);
  }
  if (k < n) snprintf(buf + k, n - k, ")");
}

/* A C float literal for v: "0.5f", "1e-05f", "2.0f", "INFINITY", "(-INFINITY)", "NAN". */
static const char *flit(double v, char *buf) {
  if (v != v) return strcpy(buf, "NAN");
  if (v > 3.4e38) return strcpy(buf, "INFINITY");
  if (v < -3.4e38) return strcpy(buf, "(-INFINITY)");
  snprintf(buf, 40, "%.9g", v);
  if (!strpbrk(buf, ".e")) strcat(buf, ".0");
  strcat(buf, "f");
  return buf;
}

/* The C name of an IR function: f_ and its name with every character outside [A-Za-z0-9_]
 * replaced by '_' (@h.bwd -> f_h_bwd), plus _N if an earlier function maps to the same name. */
static void sanitize(const char *name, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "f_");
  for (const char *c = name; *c && k + 1 < n; c++)
    buf[k++] = ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')) ? *c : '_';
  buf[k] = 0;
}

static const char *cname(const Module *m, const Func *f, char *buf, size_t n) {
  sanitize(f->name, buf, n);
  for (int i = 0; i < m->nfunc && m->funcs[i] != f; i++) {
    char other[256];
    sanitize(m->funcs[i]->name, other, sizeof other);
    if (strcmp(other, buf) == 0) {
      for (int j = 0; j < m->nfunc; j++)
        if (m->funcs[j] == f) snprintf(buf + strlen(buf), n - strlen(buf), "_%d", j);
      break;
    }
  }
  return buf;
}

/* ---- comments ---- */

static void comment_op(Em *e, const Op *op) {
  char b[32], tb[96];
  fprintf(e->o, "  /* ");
  for (int i = 0; i < op->nout; i++) fprintf(e->o, "%s%%%s", i ? ", " : "", vname(e, op->out[i], b));
  fprintf(e->o, " = %s(", ir_op_name(op->kind));
  for (int i = 0; i < op->nin; i++) fprintf(e->o, "%s%%%s", i ? ", " : "", vname(e, op->in[i], b));
  fprintf(e->o, ")");
  for (int i = 0; i < op->nattr; i++) {
    const Attr *a = &op->attr[i];
    fprintf(e->o, "%s%s=", i ? ", " : " {", a->key);
    switch (a->kind) {
    case ATTR_INT: fprintf(e->o, "%lld", (long long)a->i); break;
    case ATTR_FLOAT: fprintf(e->o, "%g", a->f); break;
    case ATTR_SYM: fprintf(e->o, "@%s", a->s); break;
    case ATTR_STR:
      fputc('"', e->o);
      for (const char *s = a->s; *s; s++)
        if (!(s[0] == '*' && s[1] == '/') && (unsigned char)*s >= 32 && *s != '\\') fputc(*s, e->o);
      fputc('"', e->o);
      break;
    case ATTR_INTS:
      fputc('[', e->o);
      for (int k = 0; k < a->n; k++) fprintf(e->o, "%s%lld", k ? "," : "", (long long)a->ints[k]);
      fputc(']', e->o);
      break;
    }
    if (i == op->nattr - 1) fputc('}', e->o);
  }
  for (int i = 0; i < op->nout; i++) fprintf(e->o, "%s%s", i ? ", " : " : ", ir_type_str(&op->out[i]->type, tb, sizeof tb));
  fprintf(e->o, " */\n");
}

/* ---- element-wise expressions ---- */

/* Writes the C expression of an OPF_EW op applied to argument expressions a, b. */
static void ew_c(FILE *o, OpKind k, const char *a, const char *b) {
  switch (k) {
  case OP_ADD: fprintf(o, "(%s + %s)", a, b); break;
  case OP_SUB: fprintf(o, "(%s - %s)", a, b); break;
  case OP_MUL: fprintf(o, "(%s * %s)", a, b); break;
  case OP_DIV: fprintf(o, "(%s / %s)", a, b); break;
  case OP_NEG: fprintf(o, "(-%s)", a); break;
  case OP_EXP: fprintf(o, "expf(%s)", a); break;
  case OP_TANH: fprintf(o, "tanhf(%s)", a); break;
  case OP_SIGMOID: fprintf(o, "rt_sigmoidf(%s)", a); break;
  case OP_RELU: fprintf(o, "rt_reluf(%s)", a); break;
  case OP_GELU: fprintf(o, "rt_geluf(%s)", a); break;
  case OP_GELU_TANH: fprintf(o, "rt_gelu_tanhf(%s)", a); break;
  case OP_SILU: fprintf(o, "rt_siluf(%s)", a); break;
  case OP_GELU_D: fprintf(o, "rt_gelu_df(%s)", a); break;
  case OP_GELU_TANH_D: fprintf(o, "rt_gelu_tanh_df(%s)", a); break;
  case OP_RELU_D: fprintf(o, "rt_relu_df(%s)", a); break;
  case OP_SILU_D: fprintf(o, "rt_silu_df(%s)", a); break;
  default: die("not an element-wise op: %s", ir_op_name(k));
  }
}

/* Writes an expression tree; operand $i reads args[i]. */
static void expr_c(FILE *o, const Expr *x, char *const *args) {
  if (x->kind == EX_ARG) {
    fputs(args[x->arg], o);
  } else if (x->kind == EX_CONST) {
    char fb[48];
    fputs(flit(x->c, fb), o);
  } else {
    char *buf[2] = {NULL, NULL};
    size_t len[2];
    for (int i = 0; i < x->nkid; i++) {
      FILE *m = open_memstream(&buf[i], &len[i]);
      if (!m) die("out of memory");
      expr_c(m, x->kid[i], args);
      fclose(m);
    }
    ew_c(o, x->op, buf[0], x->nkid > 1 ? buf[1] : "");
    free(buf[0]);
    free(buf[1]);
  }
}

/* The index expression of operand v inside a loop nest over result r (coordinates i0..), in
 * Horner form over v's own runtime extents: ((i0 * nt + i1) * 128 + i2). Broadcast axes
 * (extent 1) contribute nothing. */
static void operand_index(const Em *e, const Value *v, const Value *r, char *buf, size_t n) {
  int shift = r->type.rank - v->type.rank;
  buf[0] = 0;
  for (int j = 0; j < v->type.rank; j++) {
    char ex[32], coord[48], tmp[512];
    extent(e, v, j, ex);
    AxisRole vr = e->fi->vals[v->id].role[j], rr = e->fi->vals[r->id].role[j + shift];
    if (v->type.dim[j] == 1)
      snprintf(coord, sizeof coord, "0");
    else if (vr == AX_STATIC && rr == AX_TIME)
      snprintf(coord, sizeof coord, "(t0 + i%d)", j + shift); /* a position table: absolute position */
    else
      snprintf(coord, sizeof coord, "i%d", j + shift);
    if (!buf[0] && strcmp(coord, "0") == 0) continue; /* leading broadcast axes */
    if (!buf[0])
      snprintf(tmp, sizeof tmp, "(size_t)%s", coord);
    else if (strcmp(coord, "0") == 0)
      snprintf(tmp, sizeof tmp, "(%s) * %s", buf, ex);
    else
      snprintf(tmp, sizeof tmp, "(%s) * %s + %s", buf, ex, coord);
    snprintf(buf, n, "%s", tmp);
  }
  if (!buf[0]) snprintf(buf, n, "0");
}

/* True if the C expression text uses the loop coordinate i<k> (not i<k>N). */
static bool uses_coord(const char *text, int k) {
  char name[16];
  int n = snprintf(name, sizeof name, "i%d", k);
  for (const char *p = strstr(text, name); p; p = strstr(p + 1, name))
    if ((p == text || !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= '0' && p[-1] <= '9'))) &&
        !(p[n] >= '0' && p[n] <= '9'))
      return true;
  return false;
}

/* One element-wise loop nest computing out = expr(operands) over the result value r, written as a
 * file-scope function over a range of rows (all axes but the last) so the runtime's pool can
 * split it: a context struct carrying the pointers and the step's sizes, the row function
 * (to e->pre), and the context's initialisation (to e->o). Returns the loop's number; the caller
 * passes mc_loopN and &cN to rt_parallel_for or rt_linear. */
static int emit_loop(Em *e, const Value *r, const char *outp, int nops, const Value *const *ops,
                     const char *const *opnames, const Expr *x) {
  int id = e->nloops++, rank = r->type.rank;
  FILE *o = e->pre;
  /* distinct pointer names: the output first */
  const char *names[66];
  bool isout[66], isint[66];
  int nn = 0;
  names[nn] = outp, isout[nn] = true, isint[nn++] = backend_is_int(r);
  for (int k = 0; k < nops; k++) {
    bool dup = false;
    for (int j = 0; j < nn; j++) dup |= strcmp(names[j], opnames[k]) == 0;
    if (!dup)
      names[nn] = opnames[k], isout[nn] = false, isint[nn++] = backend_is_int(ops[k]);
  }
  fprintf(o, "typedef struct {\n");
  for (int j = 0; j < nn; j++)
    fprintf(o, "  %s%s *%s;\n", isout[j] ? "" : "const ", isint[j] ? "int32_t" : "float", names[j]);
  fprintf(o, "  int nb, nt, t0;\n} mc_ctx%d;\n\n", id);
  fprintf(o, "static void mc_loop%d(void *ctx, int lo, int hi) {\n  const mc_ctx%d *c = ctx;\n", id, id);
  for (int j = 0; j < nn; j++)
    fprintf(o, "  %s%s *%s = c->%s;\n", isout[j] ? "" : "const ", isint[j] ? "int32_t" : "float", names[j], names[j]);
  fprintf(o, "  const int nb = c->nb, nt = c->nt, t0 = c->t0;\n  (void)nb;\n  (void)nt;\n  (void)t0;\n");
  char **args = calloc((size_t)nops + 1, sizeof *args);
  /* the result, and every operand of the same shape and axis roles, is indexed by row */
  bool coords = rank < 2;
  char ri[512];
  if (rank >= 2) {
    char ex[32];
    extent(e, r, rank - 1, ex);
    snprintf(ri, sizeof ri, "(size_t)r * %s + i%d", ex, rank - 1);
  } else {
    operand_index(e, r, r, ri, sizeof ri);
  }
  for (int k = 0; k < nops; k++) {
    char idx[512];
    const ValueInfo *vk = &e->fi->vals[ops[k]->id], *vr = &e->fi->vals[r->id];
    if (ops[k] == r || (ir_type_eq(&ops[k]->type, &r->type) && memcmp(vk->role, vr->role, sizeof vk->role) == 0))
      snprintf(idx, sizeof idx, "%s", ri);
    else {
      operand_index(e, ops[k], r, idx, sizeof idx);
      coords = true;
    }
    size_t len = strlen(opnames[k]) + strlen(idx) + 8;
    args[k] = malloc(len);
    snprintf(args[k], len, "%s[%s]", opnames[k], idx);
  }
  fprintf(o, "  for (int r = lo; r < hi; r++) {\n");
  bool used[IR_MAX_RANK] = {false};
  int lowest = rank;
  for (int i = 0; coords && i + 1 < rank; i++)
    for (int k = 0; k < nops; k++)
      if (uses_coord(args[k], i)) {
        used[i] = true;
        if (i < lowest) lowest = i;
      }
  if (rank >= 2 && lowest < rank - 1) { /* the row's coordinates some operand is indexed by */
    fprintf(o, "    int rr = r;\n");
    for (int i = rank - 2; i >= 1 && i >= lowest; i--) {
      char ex[32];
      extent(e, r, i, ex);
      if (used[i]) fprintf(o, "    const int i%d = rr %% %s;\n", i, ex);
      if (i > lowest) fprintf(o, "    rr /= %s;\n", ex);
    }
    if (used[0]) fprintf(o, "    const int i0 = rr;\n");
  } else if (rank < 2) {
    fprintf(o, "    (void)r;\n");
  }
  char ind[8] = "    ";
  if (rank >= 1) {
    char ex[32];
    extent(e, r, rank - 1, ex);
    fprintf(o, "    for (int i%d = 0; i%d < %s; i%d++)\n", rank - 1, rank - 1, ex, rank - 1);
    strcpy(ind, "      ");
  }
  fprintf(o, "%s%s[%s] = ", ind, outp, ri);
  expr_c(o, x, args);
  fprintf(o, ";\n  }\n}\n\n");
  for (int k = 0; k < nops; k++) free(args[k]);
  free(args);
  /* the context in the calling function */
  fprintf(e->o, "  mc_ctx%d c%d = {", id, id);
  for (int j = 0; j < nn; j++) fprintf(e->o, "%s, ", names[j]);
  fprintf(e->o, "nb, nt, t0};\n");
  return id;
}

/* Rows of r (all axes but the last) and a grain of about 4096 elements per chunk. */
static void rows_and_grain(const Em *e, const Value *r, char *rows, size_t n, int *grain) {
  numel(e, r, 1, rows, n);
  int64_t inner = r->type.rank ? r->type.dim[r->type.rank - 1] : 1;
  *grain = inner >= 4096 ? 1 : (int)(4096 / inner);
}

/* The index into sum_to's result r for the loop over its input x: r's axes align with x's last
 * axes; reduced axes (extent 1) index 0. */
static void sum_index(const Em *e, const Value *x, const Value *r, char *buf, size_t n) {
  int shift = x->type.rank - r->type.rank;
  buf[0] = 0;
  for (int j = 0; j < r->type.rank; j++) {
    char ex[32], c[16], tmp[512];
    extent(e, r, j, ex);
    if (r->type.dim[j] == 1)
      snprintf(c, sizeof c, "0");
    else
      snprintf(c, sizeof c, "i%d", j + shift);
    if (!buf[0])
      snprintf(tmp, sizeof tmp, "(size_t)%s", c);
    else
      snprintf(tmp, sizeof tmp, "(%s) * %s + %s", buf, ex, c);
    snprintf(buf, n, "%s", tmp);
  }
  if (!buf[0]) snprintf(buf, n, "0");
}

/* ---- ops ---- */

/* Declares the output pointer of op's result k: the caller's result buffer or its arena place. */
static const char *out_ptr_k(Em *e, const Op *op, int k, char *buf) {
  const Value *v = op->out[k];
  int ri = ret_index(e, v);
  char b[32];
  if (ri >= 0) {
    fprintf(e->o, "  %s *%s = r%d;\n", ctype(v), vname(e, v, b), ri);
  } else {
    int64_t off = 0;
    if (!memplan_offset(v, &off)) die("value without a planned place");
    fprintf(e->o, "  %s *%s = (%s *)(A + %lld);\n", ctype(v), vname(e, v, b), ctype(v), (long long)off);
  }
  return vname(e, v, buf);
}

static const char *out_ptr(Em *e, const Op *op, char *buf) { return out_ptr_k(e, op, 0, buf); }

static void unsupported(Em *e, const Op *op, const char *why) {
  diag_error(e->d, e->p->m->file, op->line, op->col, "C backend: in @%s: %s: %s", e->f->name, ir_op_name(op->kind),
             why);
  e->ok = false;
}

/* ---- kernel calls from the kernel table (kernels.def) ---- */

/* The C text of argument a (parameter code pc) of op's call; o names the result, epi the fused
 * epilogue's loop id (-1: none). */
static void c_arg(Em *e, const Op *op, const KArg *a, char pc, const char *o, int epi, char *buf, size_t n) {
  char t[160];
  const char *cast = pc == 'i' ? "(int)" : "";
  switch (a->kind) {
  case KA_OUT:
    if (a->i > 0)
      vname(e, op->out[a->i], t);
    snprintf(buf, n, "%s", a->i > 0 ? t : o);
    return;
  case KA_IN: vname(e, op->in[a->i], t); snprintf(buf, n, "%s", t); return;
  case KA_IN_OPT:
    if (a->i < op->nin)
      vname(e, op->in[a->i], t);
    else
      snprintf(t, sizeof t, "NULL");
    snprintf(buf, n, "%s", t);
    return;
  case KA_NULL: snprintf(buf, n, "NULL"); return;
  case KA_ROWS:
  case KA_NUMEL: numel(e, kt_value(op, a->i), a->kind == KA_ROWS ? 1 : 0, t, sizeof t); snprintf(buf, n, "%s%s", cast, t); return;
  case KA_BYTES: {
    const Value *v = kt_value(op, a->i);
    numel(e, v, 0, t, sizeof t);
    snprintf(buf, n, "%s * sizeof(%s)", t, ctype(v));
    return;
  }
  case KA_DIM:
  case KA_CONST:
  case KA_ATTR_W:
  case KA_ATTR_OR_DIM:
  case KA_QWIDTH:
  case KA_KVWIDTH:
  case KA_KVHEADS:
  case KA_ATTR_I: snprintf(buf, n, "%lld", (long long)kt_static_arg(op, a)); return;
  case KA_ATTR_F: flit(ir_attr_f(op, a->key), buf); return;
  case KA_NB: snprintf(buf, n, "nb"); return;
  case KA_NT: { /* the step's length, or its pooled share (seq_pool) */
    const Value *tv = backend_nt_value(e->fi, op);
    if (tv) extent(e, tv, 1, t);
    snprintf(buf, n, "%s", tv ? t : "nt");
    return;
  }
  case KA_T0: snprintf(buf, n, "t0"); return;
  case KA_SCRATCH: snprintf(buf, n, "s->scratch"); return;
  case KA_STATE: snprintf(buf, n, "(float *)s->state[st + %d]", e->st_local + a->i); return;
  case KA_RNG: snprintf(buf, n, "rt_mix(rng, %lld)", 2 * (long long)ir_attr_i(op, "stream") + 1); return;
  case KA_LOAD: vname(e, op->in[a->i], t); snprintf(buf, n, "%s[0]", t); return;
  case KA_EPI_FN:
    if (epi >= 0)
      snprintf(buf, n, "mc_loop%d", epi);
    else
      snprintf(buf, n, "NULL");
    return;
  case KA_EPI_CTX:
    if (epi >= 0)
      snprintf(buf, n, "&c%d", epi);
    else
      snprintf(buf, n, "NULL");
    return;
  case KA_BIAS:
    if (kt_bias_only(op))
      vname(e, op->in[a->i], t);
    else
      snprintf(t, sizeof t, "NULL");
    snprintf(buf, n, "%s", t);
    return;
  case KA_END: break;
  }
  die("bad kernel argument kind %d", (int)a->kind);
}

/* One call of row's kernel (indent: the statement's leading spaces). */
static void c_call(Em *e, const Op *op, const KLower *row, const char *o, int epi, const char *indent) {
  const KernelInfo *k = &kt_kernels[row->kernel];
  fprintf(e->o, "%s", indent);
  if (k->sig[0] == 'f')
    fprintf(e->o, "%s[0] = ", o);
  else if (k->sig[0] != 'v')
    fprintf(e->o, "(void)");
  fprintf(e->o, "%s(", k->name);
  int j = 0;
  for (const KArg *a = row->args; a->kind != KA_END; a++, j++) {
    IR_ASSERT(j < k->nparam);
    char buf[512];
    c_arg(e, op, a, k->sig[1 + j], o, epi, buf, sizeof buf);
    fprintf(e->o, "%s%s", j ? ", " : "", buf);
  }
  IR_ASSERT(j == k->nparam);
  fprintf(e->o, ");\n");
}

/* The fused epilogue of an op whose kernel takes one (linear's epi: $0 the product, $1.. the
 * operands after the weight) as a row loop; its id, or -1 when there is none or it is the bias. */
static int c_epilogue(Em *e, const Op *op, const char *o) {
  const char *epi = ir_attr_s(op, "epi");
  if (!epi || kt_bias_only(op)) return -1;
  char err[160];
  Expr *ex = ir_expr_parse((Module *)e->p->m, epi, op->nin - 1, err, sizeof err);
  if (!ex) die("bad epilogue: %s", err);
  const Value *ops[64];
  char names[64][32];
  const char *pn[64];
  IR_ASSERT(op->nin - 1 <= 64);
  ops[0] = op->out[0];
  snprintf(names[0], 32, "%s", o);
  for (int i = 2; i < op->nin; i++) {
    ops[i - 1] = op->in[i];
    vname(e, op->in[i], names[i - 1]);
  }
  for (int i = 0; i < op->nin - 1; i++) pn[i] = names[i];
  return emit_loop(e, op->out[0], o, op->nin - 1, ops, pn, ex);
}

/* Lowers op through its kernel-table rows; false if it has none. */
static bool c_kernel_op(Em *e, const Op *op) {
  const KLower *rows[2];
  const char *why = NULL;
  int n = kt_select(op, rows, &why);
  if (n == 0) return false;
  if (n < 0) {
    unsupported(e, op, why);
    return true;
  }
  char o[32], ok[32];
  out_ptr(e, op, o);
  for (int k = 1; k < op->nout; k++) out_ptr_k(e, op, k, ok);
  bool takes_epi = false;
  for (const KArg *a = rows[0]->args; a->kind != KA_END; a++) takes_epi |= a->kind == KA_EPI_FN;
  int epi = takes_epi ? c_epilogue(e, op, o) : -1;
  if (n == 1) {
    c_call(e, op, rows[0], o, epi, "  ");
  } else {
    fprintf(e->o, "  if (%s)\n", rows[0]->cond.when == KW_STATE ? "s->state" : "s->seed");
    c_call(e, op, rows[0], o, epi, "    ");
    fprintf(e->o, "  else\n");
    c_call(e, op, rows[1], o, epi, "    ");
  }
  e->st_local += kt_nstate(op);
  return true;
}

static void emit_op(Em *e, const Op *op) {
  char o[32], a0[32], n0[160];
  const Value *r = op->out[0];
  comment_op(e, op);
  if (c_kernel_op(e, op)) return;
  switch (op->kind) {
  case OP_PARAM: {
    const Param *q = ir_find_param(e->p->m, ir_attr_s(op, "p"));
    int qi = q->index;
    fprintf(e->o, "  const %s *%s = (const %s *)(W + %lld); /* @%s */\n", ctype(r), vname(e, r, o), ctype(r),
            (long long)e->p->param_offset[qi], q->name);
    return;
  }
  case OP_CONST: {
    out_ptr(e, op, o);
    numel(e, r, 0, n0, sizeof n0);
    char fb[48];
    fprintf(e->o, "  for (size_t i = 0; i < %s; i++) %s[i] = %s;\n", n0, o, flit(ir_attr_f(op, "value"), fb));
    return;
  }
  case OP_SINUSOID: {
    int id = e->sin_count++;
    fprintf(e->o, "  static float sin%d[%lld];\n  static int sin%d_ready;\n", id, (long long)ir_type_numel(&r->type), id);
    fprintf(e->o, "  if (!sin%d_ready) {\n    %s(sin%d, %lld, %lld);\n    sin%d_ready = 1;\n  }\n", id,
            ir_attr_s(op, "layout") ? "rt_sinusoid_halves" : "rt_sinusoid", id, (long long)r->type.dim[0],
            (long long)r->type.dim[1], id);
    if (ret_index(e, r) >= 0) {
      out_ptr(e, op, o);
      fprintf(e->o, "  memcpy(%s, sin%d, sizeof sin%d);\n", o, id, id);
    } else {
      fprintf(e->o, "  const float *%s = sin%d;\n", vname(e, r, o), id);
    }
    return;
  }
  case OP_CALL: {
    const Func *g = ir_find_func(e->p->m, ir_attr_s(op, "callee"));
    FuncInfo *gi = backend_func(e->p, g);
    for (int i = 0; i < op->nout; i++) {
      const Value *v = op->out[i];
      int ri = ret_index(e, v);
      int64_t off = 0;
      if (ri >= 0)
        fprintf(e->o, "  float *%s = r%d;\n", vname(e, v, a0), ri);
      else if (memplan_offset(v, &off))
        fprintf(e->o, "  float *%s = (float *)(A + %lld);\n", vname(e, v, a0), (long long)off);
      else
        die("call result without a place");
    }
    char cn[256];
    /* the callee's random stream: the call's stream J (layer index), apart from dropout's 2K+1 */
    bool shared = false;
    int cst = backend_call_state(e->p, e->f, op, &shared);
    fprintf(e->o, "  %s(s, A + %lld, W, st + %d, rt_mix(rng, %lld)", cname(e->p->m, g, cn, sizeof cn),
            (long long)e->fi->frame, cst, 2 * (long long)ir_attr_i(op, "stream") + 2);
    for (int i = 0; i < op->nin; i++) fprintf(e->o, ", %s", vname(e, op->in[i], a0));
    for (int i = 0; i < op->nout; i++) fprintf(e->o, ", %s", vname(e, op->out[i], a0));
    fprintf(e->o, ");\n");
    if (!shared) e->st_local += gi->nstate;
    return;
  }
  case OP_LOSS_SCALE:
    out_ptr(e, op, o);
    fprintf(e->o, "  %s[0] = s->loss_scale;\n", o);
    return;
  case OP_SUM_TO: { /* zero the whole (compiled-size) result, then add every input element in */
    out_ptr(e, op, o);
    const Value *x = op->in[0];
    fprintf(e->o, "  memset(%s, 0, %lld * sizeof(float));\n", o, (long long)ir_type_numel(&r->type));
    fprintf(e->o, "  {\n");
    char ind[64] = "  ";
    for (int i = 0; i < x->type.rank; i++) {
      char ex[32];
      extent(e, x, i, ex);
      fprintf(e->o, "%s  for (int i%d = 0; i%d < %s; i%d++)\n", ind, i, i, ex, i);
      strcat(ind, "  ");
    }
    char xi[512], ri[512];
    operand_index(e, x, x, xi, sizeof xi);
    sum_index(e, x, r, ri, sizeof ri);
    fprintf(e->o, "%s  %s[%s] += %s[%s];\n  }\n", ind, o, ri, vname(e, x, a0), xi);
    return;
  }
  default: break;
  }
  /* element-wise: a single op or a fused group */
  const Expr *ex = backend_op_expr(e->p->m, op);
  if (!ex) {
    unsupported(e, op, "not supported by the C backend");
    return;
  }
  out_ptr(e, op, o);
  const char *pn[64];
  char names[64][32];
  IR_ASSERT(op->nin <= 64);
  for (int i = 0; i < op->nin; i++) pn[i] = vname(e, op->in[i], names[i]);
  int id = emit_loop(e, r, o, op->nin, (const Value *const *)op->in, pn, ex);
  char rows[160];
  int grain;
  rows_and_grain(e, r, rows, sizeof rows, &grain);
  fprintf(e->o, "  rt_parallel_for((int)%s, %d, mc_loop%d, &c%d);\n", rows, grain, id, id);
}

static void emit_signature(Em *e, const Func *f) {
  char tb[96];
  char cn[256];
  fprintf(e->o, "static void %s(const RtStep *s, char *A, const unsigned char *W, int st, uint64_t rng",
          cname(e->p->m, f, cn, sizeof cn));
  for (int i = 0; i < f->narg; i++)
    fprintf(e->o, ",\n    const %s *a%d /* %%%s : %s */", ctype(f->args[i]), i,
            f->args[i]->name ? f->args[i]->name : "arg", ir_type_str(&f->args[i]->type, tb, sizeof tb));
  for (int i = 0; i < f->nret; i++)
    fprintf(e->o, ",\n    %s *r%d /* result %d : %s */", ctype(f->ret[i]), i, i,
            ir_type_str(&f->ret[i]->type, tb, sizeof tb));
  fprintf(e->o, ")");
}

static void emit_func_body(Em *e, const Func *f);

/* Emits f: its loop functions first, then the function, which uses them. */
static void emit_func(Em *e, const Func *f) {
  FILE *out = e->o;
  char *pre = NULL, *body = NULL;
  size_t npre = 0, nbody = 0;
  e->pre = open_memstream(&pre, &npre);
  e->o = open_memstream(&body, &nbody);
  if (!e->pre || !e->o) die("out of memory");
  emit_func_body(e, f);
  fclose(e->pre);
  fclose(e->o);
  fwrite(pre, 1, npre, out);
  fwrite(body, 1, nbody, out);
  free(pre);
  free(body);
  e->o = out;
  e->pre = NULL;
}

static void emit_func_body(Em *e, const Func *f) {
  e->f = f;
  e->fi = backend_func(e->p, f);
  e->st_local = 0;
  fprintf(e->o, "/* @%s: frame %lld bytes, %d state slot(s) */\n", f->name, (long long)e->fi->frame,
          e->fi->nstate);
  emit_signature(e, f);
  fprintf(e->o, " {\n  const int nb = s->nb, nt = s->nt, t0 = s->t0;\n");
  fprintf(e->o, "  (void)nb;\n  (void)nt;\n  (void)t0;\n  (void)A;\n  (void)W;\n  (void)st;\n  (void)rng;\n");
  for (int i = 0; i < f->narg; i++) { /* arguments the body does not read (e.g. after DCE in a .bwd) */
    bool used = false;
    for (const Op *op = f->first; op && !used; op = op->next)
      for (int k = 0; k < op->nin; k++) used |= op->in[k] == f->args[i];
    for (int k = 0; k < f->nret; k++) used |= f->ret[k] == f->args[i];
    if (!used) fprintf(e->o, "  (void)a%d;\n", i);
  }
  for (const Op *op = f->first; op; op = op->next) emit_op(e, op);
  /* Results not written in place: arguments, parameters, or a value returned twice. */
  char b[32], n0[160];
  for (int i = 0; i < f->nret; i++) {
    const Value *v = f->ret[i];
    if (v->def && v->def->kind != OP_PARAM && v->def->kind != OP_SINUSOID && ret_index(e, v) == i) continue;
    numel(e, v, 0, n0, sizeof n0);
    fprintf(e->o, "  memcpy(r%d, %s, %s * sizeof(*r%d));\n", i, vname(e, v, b), n0, i);
  }
  fprintf(e->o, "}\n\n");
}

static void emit_str(FILE *o, const char *s) {
  fputc('"', o);
  for (; s && *s; s++) {
    if (*s == '"' || *s == '\\')
      fprintf(o, "\\%c", *s);
    else if ((unsigned char)*s < 32 || (unsigned char)*s >= 127)
      fprintf(o, "\\%03o", (unsigned char)*s);
    else
      fputc(*s, o);
  }
  fputc('"', o);
}

static int64_t mattr(const Module *m, const char *k) {
  const Attr *a = ir_module_attr(m, k);
  return a && a->kind == ATTR_INT ? a->i : 0;
}

bool emitc_module(const Module *m, const EmitOptions *opt, FILE *out, Diag *d) {
  BackendPlan p;
  if (!backend_plan(&p, m, d)) {
    backend_plan_free(&p);
    return false;
  }
  const Func *ent = p.entry;
  Em e = {out, &p, d, NULL, NULL, true, NULL, 0, 0, 0};
  const Attr *kind = ir_module_attr(m, "kind");
  fprintf(out, "/* %s: generated by modelc from the model \"%s\". Do not edit: regenerate with modelc build.\n",
          m->name, m->name);
  fprintf(out, " *\n * Every statement is preceded by the IR op it implements (docs/ir.md). Tensors live in one arena at\n"
               " * offsets chosen by the memplan pass; nb, nt are the runtime batch and length (<= %lld, %lld),\n"
               " * t0 the position of the first token (KV-cache decoding). */\n",
          (long long)ent->args[0]->type.dim[0], (long long)ent->args[0]->type.dim[1]);
  /* No contraction of a*b+c into fma: the LLVM backend emits separate operations, and the two
   * backends agree bit for bit whichever C compiler builds this file (gcc contracts only in its GNU
   * modes, clang by default; modelc also passes -ffp-contract=off). */
  fprintf(out, "#ifdef __clang__\n#pragma STDC FP_CONTRACT OFF\n#endif\n\n");
  fprintf(out, "#include <math.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <string.h>\n\n"
               "#include \"modelc_rt.h\"\n\n");
  /* The fused loops are written to vectorise; gcc's -O2 only vectorises "very cheap" loops (about
   * 1.5x slower forward on gpt-tiny), so an optimising gcc build of this file asks for its full
   * vectoriser. clang vectorises at -O2 already. */
  fprintf(out, "#if defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE__)\n"
               "#pragma GCC optimize(\"tree-vectorize\", \"vect-cost-model=dynamic\")\n#endif\n\n");
  /* prototypes, then bodies */
  for (int i = 0; i < m->nfunc; i++) {
    if (!backend_func(&p, m->funcs[i])->analysed) continue;
    emit_signature(&e, m->funcs[i]);
    fprintf(out, ";\n");
  }
  fprintf(out, "\n");
  for (int i = 0; i < m->nfunc; i++)
    if (backend_func(&p, m->funcs[i])->analysed) emit_func(&e, m->funcs[i]);

  char cn[256];
  fprintf(out, "static void model_forward(const RtStep *s, char *arena, const void *W, const int32_t *tokens, "
               "float *out) {\n  %s(s, arena, (const unsigned char *)W, 0, s->seed, tokens, out);\n}\n\n",
          cname(m, ent, cn, sizeof cn));
  if (p.train) {
    const Func *tf = p.train;
    fprintf(out, "static void model_train(const RtStep *s, char *arena, const void *W, const int32_t *tokens,\n"
                 "                        const int32_t *targets, float *loss, float *G) {\n");
    int64_t nload = 0; /* the results after the loss and the gradients: the moe layers' load reports */
    for (int r = p.ngrads + p.loss_parts; r < tf->nret; r++) nload += ir_type_numel(&tf->ret[r]->type);
    if (nload) fprintf(out, "  float sink[%lld], *ml = s->moe_load ? s->moe_load : sink;\n", (long long)nload);
    fprintf(out, "  %s(s, arena, (const unsigned char *)W, 0, s->seed, tokens, targets, loss", cname(m, tf, cn, sizeof cn));
    int k = 1;
    for (int i = 0; i < m->nparam; i++) {
      const Param *q = m->params[i];
      if (!q->trainable) continue;
      if (k >= tf->nret || !ir_type_eq(&tf->ret[k]->type, &q->type) || q->type.dtype != DT_F32) {
        diag_error(d, m->file, tf->line, tf->col, "C backend: @%s does not return the f32 gradient of @%s as result %d",
                   tf->name, q->name, k);
        backend_plan_free(&p);
        return false;
      }
      fprintf(out, ",\n      G + %lld", (long long)(p.param_offset[i] / 4));
      k++;
    }
    if (k + p.loss_parts - 1 + p.nmoe != tf->nret) {
      diag_error(d, m->file, tf->line, tf->col, "C backend: @%s returns %d results for %d gradients", tf->name,
                 tf->nret, k - 1);
      backend_plan_free(&p);
      return false;
    }
    for (int j = 1; j < p.loss_parts; j++, k++) fprintf(out, ",\n      loss + %d", j); /* distillation: KL, CE */
    /* then the moe layers' load reports, into s->moe_load (or a local sink) */
    for (int64_t off = 0; k < tf->nret; k++) {
      const Type *lt = &tf->ret[k]->type;
      if (lt->dtype != DT_F32 || lt->rank != 1) {
        diag_error(d, m->file, tf->line, tf->col, "C backend: @%s result %d is not a moe load report f32[E+2]",
                   tf->name, k);
        backend_plan_free(&p);
        return false;
      }
      fprintf(out, ",\n      ml + %lld", (long long)off);
      off += lt->dim[0];
    }
    fprintf(out, ");\n}\n\n");
  }
  /* pruning facts (the prune pass; attention output projections for PROG importance) */
  int nprune = 0, *heads = kt_attention_heads(m);
  for (int i = 0; i < m->nparam; i++) nprune += kt_param_abi(m, m->params[i], 0, heads[i]).has_prune;
  if (nprune) {
    fprintf(out, "static const RtPruneInfo model_prune[] = {\n");
    for (int i = 0; i < m->nparam; i++) {
      KParamAbi a = kt_param_abi(m, m->params[i], 0, heads[i]);
      char fb[48];
      if (a.has_prune)
        fprintf(out, "    {%d, %s, %d, %d, %lld, %d, %d, %d, %d, %d, %d, %d}, /* %s */\n", a.prune_kind,
                flit(a.sparsity, fb), a.prune_n, a.prune_m, (long long)a.nnz, a.select, a.group, a.axis, a.parts, a.unit,
                a.of, a.heads, m->params[i]->name);
    }
    fprintf(out, "};\n\n");
  }
  /* parameters */
  fprintf(out, "static const RtParamInfo model_params[] = {\n");
  int iprune = 0;
  for (int i = 0; i < m->nparam; i++) {
    const Param *q = m->params[i];
    fprintf(out, "    {");
    emit_str(out, q->name);
    fprintf(out, ", %d, {", q->type.rank);
    for (int k = 0; k < q->type.rank; k++) fprintf(out, "%s%lld", k ? ", " : "", (long long)q->type.dim[k]);
    static const char *const inits[] = {"RT_INIT_ZEROS", "RT_INIT_ONES", "RT_INIT_NORMAL", "RT_INIT_UNIFORM",
                                        "RT_INIT_SINUSOID"};
    char fb[48];
    KParamAbi a = kt_param_abi(m, q, p.param_offset[i], heads[i]);
    fprintf(out, "}, %s, %s, %lld, %lld, %s, %s, %d, %d, %d, {", a.dtype, a.format, (long long)p.param_offset[i],
            (long long)a.nbytes, inits[q->init], flit(q->init_arg, fb), q->decay ? 1 : 0, q->trainable ? 1 : 0, a.naux);
    if (a.naux)
      fprintf(out, "{\"%s\", %s, %lld, %lld}", a.aux_role, a.aux_dtype, (long long)a.aux_offset,
              (long long)a.aux_nbytes);
    else
      fprintf(out, "{0}");
    if (a.has_prune)
      fprintf(out, "}, &model_prune[%d]},\n", iprune++);
    else
      fprintf(out, "}, NULL},\n");
  }
  if (m->nparam == 0)
    fprintf(out, "    {NULL, 0, {0}, RT_DT_F32, RT_FMT_DENSE, 0, 0, RT_INIT_ZEROS, 0.0f, 0, 0, 0, {{0}}, NULL},\n");
  free(heads);
  fprintf(out, "};\n\n");
  if (opt->embed_weights) {
    fprintf(out, "/* The weights, baked in at build time from ");
    for (const char *s = opt->embed_weights; *s; s++)
      if (!(s[0] == '*' && s[1] == '/')) fputc(*s, out);
    fprintf(out, " */\n__asm__(\".section .rodata\\n.balign 64\\n.globl modelc_weights_blob\\nmodelc_weights_blob:\\n"
                 ".incbin \\\"");
    for (const char *s = opt->embed_weights; *s; s++) {
      if (*s == '"' || *s == '\\') fputs("\\\\\\", out);
      fputc(*s, out);
    }
    fprintf(out, "\\\"\\n.globl modelc_weights_end\\nmodelc_weights_end:\\n.previous\\n\");\n"
                 "extern const unsigned char modelc_weights_blob[], modelc_weights_end[];\n\n");
  }
  /* persistent state slots (KV caches), then the scratch the kernels need */
  if (p.nmoe) { /* the experts of each moe layer's load report (RtModel.moe_experts) */
    fprintf(out, "static const int32_t model_moe_experts[] = {");
    for (int i = 0; i < p.nmoe; i++) fprintf(out, "%s%d", i ? ", " : "", (int)p.moe_experts[i]);
    fprintf(out, "};\n\n");
  }
  fprintf(out, "static const RtStateInfo model_state[] = {\n");
  for (int i = 0; i < p.nstate; i++) fprintf(out, "    {%lld},\n", (long long)p.state_rows[i]);
  if (p.nstate == 0) fprintf(out, "    {0},\n");
  fprintf(out, "};\n\n/* Floats of scratch the kernels need at the current rt_threads(): a forward, or (training)\n"
               " * any call a training step makes. */\nstatic size_t model_scratch_floats(int training) {\n"
               "  size_t n = 0, k;\n  (void)k;\n  (void)training;\n");
  for (int i = 0; i < p.nscratch; i++) {
    const BackendScratch *sc = &p.scratch[i];
    fprintf(out, "  k = %s%s(", sc->train_only ? "!training ? 0 : " : "", kt_kernels[sc->kernel].name);
    for (int j = 0; j < sc->nargs; j++) fprintf(out, "%s%lld", j ? ", " : "", (long long)sc->arg[j]);
    fprintf(out, ");\n  if (k > n) n = k;\n");
  }
  fprintf(out, "  return n;\n}\n\n");
  const Value *ret = ent->ret[0];
  bool per_token = ret->type.rank >= 2 && backend_func(&p, ent)->vals[ret->id].role[1] == AX_TIME;
  fprintf(out, "static const RtModel model = {\n    .name = ");
  emit_str(out, m->name);
  fprintf(out, ",\n    .kind = ");
  emit_str(out, kind && kind->kind == ATTR_STR ? kind->s : "decoder");
  fprintf(out, ",\n    .batch = %lld,\n    .context = %lld,\n    .vocab = %lld,\n", (long long)ent->args[0]->type.dim[0],
          (long long)ent->args[0]->type.dim[1], (long long)mattr(m, "vocab"));
  fprintf(out, "    .out_per_token = %d,\n    .out_dim = %lld,\n", per_token ? 1 : 0,
          (long long)ret->type.dim[ret->type.rank - 1]);
  fprintf(out, "    .nparams = %d,\n    .params = model_params,\n    .weight_bytes = %lld,\n", m->nparam,
          (long long)p.weight_bytes);
  fprintf(out, "    .param_count = %lld,\n    .param_bytes = %lld,\n", (long long)ir_param_count(m),
          (long long)ir_param_bytes(m));
  int64_t tokens = ent->args[0]->type.dim[0] * ent->args[0]->type.dim[1];
  fprintf(out, "    .flops_per_token = %lld,\n    .arena_bytes = %lld,\n", (long long)(ir_func_flops(m, ent) / tokens),
          (long long)p.arena_bytes);
  fprintf(out, "    .nstate = %d,\n    .state = model_state,\n    .scratch_floats = model_scratch_floats,\n", p.nstate);
  fprintf(out, "    .compile_options = ");
  emit_str(out, opt->compile_options ? opt->compile_options : "");
  fprintf(out, ",\n    .forward = model_forward,\n");
  if (opt->embed_weights)
    fprintf(out, "    .embedded_weights = modelc_weights_blob,\n    .embedded_end = modelc_weights_end,\n");
  if (p.train) {
    fprintf(out, "    .train = model_train,\n    .train_arena_bytes = %lld,\n    .train_flops_per_token = %lld,\n",
            (long long)p.train_arena_bytes, (long long)(ir_func_flops(m, p.train) / tokens));
  }
  fprintf(out, "    .loss_parts = %d,\n", p.train ? p.loss_parts : 1);
  if (m->train.distill_temperature > 0) fprintf(out, "    .teacher_prefix = \"%s\",\n", IR_TEACHER_PREFIX);
  const Attr *prec = ir_module_attr(m, "precision");
  if (p.train && prec && prec->kind == ATTR_STR)
    fprintf(out, "    .train_precision = %s,\n", !strcmp(prec->s, "bf16") ? "RT_PREC_BF16" : "RT_PREC_FP16");
  if (p.decode_unbounded) fprintf(out, "    .decode_unbounded = 1,\n");
  if (p.time_multiple > 1) fprintf(out, "    .time_multiple = %lld,\n", (long long)p.time_multiple);
  if (p.memory) fprintf(out, "    .memory = %lld,\n", (long long)p.memory);
  if (p.nmoe) fprintf(out, "    .nmoe = %d,\n    .moe_experts = model_moe_experts,\n", p.nmoe);
  if (m->train.present) {
    const TrainConfig *t = &m->train;
    char f1[48], f2[48], f3[48], f4[48], f5[48], f6[48], f7[48], f8[48];
    fprintf(out, "    .train_config = {.steps = %lld, .batch = %lld, .micro_batch = %lld, .warmup = %lld, .seed = %lld,\n"
                 "                     .eval_every = %lld, .checkpoint_every = %lld, .lr = %s, .min_lr = %s,\n"
                 "                     .beta1 = %s, .beta2 = %s, .eps = %s, .weight_decay = %s, .momentum = %s,\n"
                 "                     .grad_clip = %s, .schedule = %d, .optimizer = %d, .precision = %d, .data = ",
            (long long)t->steps, (long long)t->batch, (long long)t->micro_batch, (long long)t->warmup,
            (long long)t->seed, (long long)t->eval_every, (long long)t->checkpoint_every, flit(t->lr, f1),
            flit(t->min_lr, f2), flit(t->beta1, f3), flit(t->beta2, f4), flit(t->eps, f5), flit(t->weight_decay, f6),
            flit(t->momentum, f7), flit(t->grad_clip, f8), (int)t->schedule, (int)t->optimizer, (int)t->precision);
    if (t->data)
      emit_str(out, t->data);
    else
      fputs("NULL", out);
    char f9[48];
    fprintf(out, ",\n                     .prune_initial = %s, .prune_start = %lld, .prune_end = %lld, .prune_every = %lld},\n",
            flit(t->prune_initial, f9), (long long)t->prune_start, (long long)t->prune_end, (long long)t->prune_every);
  }
  fprintf(out, "};\n\nint main(int argc, char **argv) { return rt_main(argc, argv, &model); }\n");
  backend_plan_free(&p);
  return e.ok;
}
