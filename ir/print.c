/* print.c: the IR printer, writing the text form described in docs/ir.md.
 *
 * The text form is how every stage of the compiler is dumped (--print-after=...), saved, edited
 * and fed back in through ir_parse(), so the printer is deterministic and lossless for everything
 * the parser reads: print(parse(print(m))) == print(m). Doubles print in the shortest form that
 * reads back to the same bits and always carry '.' or 'e', so float attributes stay floats.
 * The printer never fails on malformed IR (it is what you look at when debugging a pass); values
 * it cannot number print as %?ID.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* Writes d into buf: "%.6g".."%.17g", the first that reads back as d, with ".0" appended when the
 * text would otherwise look like an integer. inf and nan print as inf, -inf, nan. */
static void fmt_double(double d, char *buf, size_t n) {
  if (isnan(d)) {
    snprintf(buf, n, "nan");
    return;
  }
  if (isinf(d)) {
    snprintf(buf, n, d < 0 ? "-inf" : "inf");
    return;
  }
  for (int prec = 6; prec <= 17; prec++) {
    snprintf(buf, n, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) break;
  }
  if (!strpbrk(buf, ".eE")) {
    size_t k = strlen(buf);
    if (k + 2 < n) memcpy(buf + k, ".0", 3);
  }
}

static void print_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(out, "\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f)
      fprintf(out, "\\x%02X", *p);
    else
      fputc(*p, out);
  }
  fputc('"', out);
}

static void print_type(FILE *out, const Type *t) {
  fprintf(out, "%s[", ir_dtype_name(t->dtype));
  for (int i = 0; i < t->rank && i < IR_MAX_RANK; i++) fprintf(out, i ? ",%lld" : "%lld", (long long)t->dim[i]);
  fputc(']', out);
}

static void print_attr_value(FILE *out, const Attr *a) {
  char buf[64];
  switch (a->kind) {
  case ATTR_INT: fprintf(out, "%lld", (long long)a->i); break;
  case ATTR_FLOAT:
    fmt_double(a->f, buf, sizeof buf);
    fputs(buf, out);
    break;
  case ATTR_STR: print_string(out, a->s); break;
  case ATTR_SYM: fprintf(out, "@%s", a->s ? a->s : ""); break;
  case ATTR_INTS:
    fputc('[', out);
    for (int i = 0; i < a->n; i++) fprintf(out, i ? ",%lld" : "%lld", (long long)a->ints[i]);
    fputc(']', out);
    break;
  }
}

/* " {k=v, k=v}" or nothing. */
static void print_attrs(FILE *out, int n, const Attr *attrs) {
  if (n <= 0) return;
  fputs(" {", out);
  for (int i = 0; i < n; i++) {
    fprintf(out, "%s%s=", i ? ", " : "", attrs[i].key);
    print_attr_value(out, &attrs[i]);
  }
  fputc('}', out);
}

/* Printed numbers of unnamed values, indexed by Value.id (-1: not numbered). */
typedef struct Numbering {
  int *num;
  int n;
} Numbering;

static void number_value(Numbering *nb, const Value *v, int *next) {
  if (!v || v->name || v->id < 0 || v->id >= nb->n) return;
  if (nb->num[v->id] < 0) nb->num[v->id] = (*next)++;
}

static void print_value(FILE *out, const Numbering *nb, const Value *v) {
  if (!v) {
    fputs("%<null>", out);
    return;
  }
  if (v->name) {
    fprintf(out, "%%%s", v->name);
    return;
  }
  if (v->id >= 0 && v->id < nb->n && nb->num[v->id] >= 0)
    fprintf(out, "%%%d", nb->num[v->id]);
  else
    fprintf(out, "%%?%d", v->id);
}

static void print_op(FILE *out, const Numbering *nb, const Op *op) {
  fputs("  ", out);
  for (int i = 0; i < op->nout; i++) {
    if (i) fputs(", ", out);
    print_value(out, nb, op->out[i]);
  }
  fprintf(out, " = %s", ir_op_name(op->kind));
  if (op->nin > 0) {
    fputc('(', out);
    for (int i = 0; i < op->nin; i++) {
      if (i) fputs(", ", out);
      print_value(out, nb, op->in[i]);
    }
    fputc(')', out);
  }
  print_attrs(out, op->nattr, op->attr);
  fputs(" :", out);
  for (int i = 0; i < op->nout; i++) {
    fputs(i ? ", " : " ", out);
    if (op->out[i]) print_type(out, &op->out[i]->type);
  }
  fputc('\n', out);
}

void ir_print_func(FILE *out, const Module *m, const Func *f) {
  Numbering nb = {NULL, f->nvalues > 0 ? f->nvalues : 0};
  nb.num = malloc(sizeof(int) * (size_t)(nb.n + 1));
  if (!nb.num) die("out of memory");
  for (int i = 0; i < nb.n; i++) nb.num[i] = -1;
  int next = 0;
  for (int i = 0; i < f->narg; i++) number_value(&nb, f->args[i], &next);
  for (const Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nout; i++) number_value(&nb, op->out[i], &next);

  fprintf(out, "func @%s(", f->name ? f->name : "");
  for (int i = 0; i < f->narg; i++) {
    if (i) fputs(", ", out);
    print_value(out, &nb, f->args[i]);
    fputs(": ", out);
    if (f->args[i]) print_type(out, &f->args[i]->type);
  }
  fputs(") -> ", out);
  if (f->nret == 0) fputs("()", out);
  for (int i = 0; i < f->nret; i++) {
    if (i) fputs(", ", out);
    if (f->ret[i]) print_type(out, &f->ret[i]->type);
  }
  fputs(" {\n", out);
  for (const Op *op = f->first; op; op = op->next) print_op(out, &nb, op);
  fputs("  return", out);
  for (int i = 0; i < f->nret; i++) {
    fputs(i ? ", " : " ", out);
    print_value(out, &nb, f->ret[i]);
  }
  fputs("\n}\n", out);
  free(nb.num);
}

static void print_param(FILE *out, const Param *p) {
  char buf[64];
  fprintf(out, "param @%s : ", p->name ? p->name : "");
  print_type(out, &p->type);
  fprintf(out, " init=%s", ir_init_name(p->init));
  if (p->init == INIT_NORMAL || p->init == INIT_UNIFORM) {
    fmt_double(p->init_arg, buf, sizeof buf);
    fprintf(out, "(%s)", buf);
  }
  if (!p->trainable) fputs(" frozen", out);
  if (!p->decay) fputs(" nodecay", out);
  if (p->nnz) fprintf(out, " nnz=%lld", (long long)p->nnz);
  if (p->prune == PRUNE_NM) fprintf(out, " prune=nm(%d:%d)", p->prune_n, p->prune_m);
  else if (p->prune != PRUNE_NONE) {
    fmt_double(p->sparsity, buf, sizeof buf);
    fprintf(out, " prune=%s(%s)", ir_prune_name(p->prune), buf);
  }
  if (p->select != SEL_NONE)
    fprintf(out, " select=%s(@%s,%d,%d,%d,%d)", ir_select_name(p->select), p->select_group ? p->select_group : "",
            p->select_axis, p->select_parts, p->select_unit, p->select_of);
  if (p->lowrank && p->lowrank_energy >= 0) {
    fmt_double(p->lowrank_energy, buf, sizeof buf);
    fprintf(out, " lowrank=svd(%d,%s)", p->lowrank, buf);
  } else if (p->lowrank) {
    fprintf(out, " lowrank=svd(%d)", p->lowrank);
  }
  if (p->fmt != PF_DENSE) { /* dense is the default and not printed; its arrays follow from the format */
    fprintf(out, " format=%s", ir_param_format_name(p->fmt));
    if (p->block) fprintf(out, "(block=%d)", p->block);
  }
  fputc('\n', out);
}

/* train {steps=1000, ..., data="file"}: every field of the record in table order (data only when
 * set), enums as bare words. */
static void print_train(FILE *out, const TrainConfig *t) {
  fputs("train {", out);
  for (int i = 0; i < ir_train_nfields; i++) {
    const TrainField *f = &ir_train_fields[i];
    const char *at = (const char *)t + f->offset;
    char buf[64];
    if (!ir_train_field_present(t, f)) continue; /* an optional group that is not set */
    switch (f->kind) {
    case TF_INT: fprintf(out, "%s%s=%lld", i ? ", " : "", f->key, (long long)*(const int64_t *)at); break;
    case TF_REAL:
      fmt_double(*(const double *)at, buf, sizeof buf);
      fprintf(out, "%s%s=%s", i ? ", " : "", f->key, buf);
      break;
    case TF_ENUM: {
      int e = *(const int *)at;
      fprintf(out, "%s%s=%s", i ? ", " : "", f->key, e >= 0 && e < f->nwords ? f->words[e] : "?");
      break;
    }
    case TF_STR: {
      const char *str = *(const char *const *)at;
      if (!str) break;
      fprintf(out, "%s%s=", i ? ", " : "", f->key);
      print_string(out, str);
      break;
    }
    }
  }
  fputs("}\n", out);
}

void ir_print_module(FILE *out, const Module *m) {
  fprintf(out, "module @%s", m->name ? m->name : "model");
  print_attrs(out, m->nattr, m->attr);
  fputc('\n', out);
  if (m->entry) fprintf(out, "entry @%s\n", m->entry);
  if (m->train.present) print_train(out, &m->train);
  if (m->nparam > 0) {
    fputc('\n', out);
    for (int i = 0; i < m->nparam; i++) print_param(out, m->params[i]);
  }
  for (int i = 0; i < m->nfunc; i++) {
    fputc('\n', out);
    ir_print_func(out, m, m->funcs[i]);
  }
}

char *ir_print_to_string(const Module *m) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) die("open_memstream failed");
  ir_print_module(f, m);
  if (fclose(f) != 0) die("open_memstream failed");
  return buf;
}
