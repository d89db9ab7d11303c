/* cse.c: common subexpression elimination.
 *
 * Within each function, two OPF_PURE ops compute the same thing when they have the same kind, the
 * same operands (either order for OPF_COMMUTE ops), equal attributes (ir_attr_eq: floats compared
 * bitwise) and the same result types. The later one is deleted and its results replaced by the
 * earlier one's. This also merges repeated `param {p=@w}` loads, as tied weights (an embedding
 * table reused as the LM head) produce, and repeated constants. Random ops (dropout) and calls are
 * never pure, so they are never merged: two dropouts draw different masks. A cast is not merged
 * with an equal one before a call: converting again is cheaper than keeping the converted tensor
 * alive across a block (precision<bf16> converts each weight right before each block call that
 * reads it, so only one block's bf16 copies exist at a time).
 *
 * Ops are visited in order with a hash table of the ops kept so far; operands are first rewritten
 * through a replacement map (value id -> surviving value), so chains of duplicates collapse in a
 * single linear sweep.
 */
#include <stdlib.h>
#include <string.h>

#include "pass.h"

static uint64_t mix(uint64_t h, uint64_t x) {
  h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

static uint64_t hash_str(uint64_t h, const char *s) {
  for (; *s; s++) h = mix(h, (unsigned char)*s);
  return h;
}

static uint64_t hash_op(const Op *op) {
  uint64_t h = mix(0, (uint64_t)op->kind);
  h = mix(h, (uint64_t)op->nin);
  if ((ir_op_info[op->kind].flags & OPF_COMMUTE) && op->nin == 2) {
    /* order-independent */
    h = mix(h, (uint64_t)op->in[0]->id + (uint64_t)op->in[1]->id);
    h = mix(h, (uint64_t)op->in[0]->id * (uint64_t)op->in[1]->id);
  } else {
    for (int i = 0; i < op->nin; i++) h = mix(h, (uint64_t)op->in[i]->id);
  }
  for (int i = 0; i < op->nattr; i++) {
    const Attr *a = &op->attr[i];
    h = hash_str(h, a->key);
    switch (a->kind) {
    case ATTR_INT: h = mix(h, (uint64_t)a->i); break;
    case ATTR_FLOAT: {
      uint64_t bits;
      memcpy(&bits, &a->f, sizeof bits);
      h = mix(h, bits);
      break;
    }
    case ATTR_STR:
    case ATTR_SYM: h = hash_str(h, a->s); break;
    case ATTR_INTS:
      for (int k = 0; k < a->n; k++) h = mix(h, (uint64_t)a->ints[k]);
      break;
    }
  }
  return h;
}

static bool same_op(const Op *a, const Op *b) {
  if (a->kind != b->kind || a->nin != b->nin || a->nout != b->nout || a->nattr != b->nattr) return false;
  bool same_in = true;
  for (int i = 0; i < a->nin; i++) same_in &= a->in[i] == b->in[i];
  if (!same_in && (ir_op_info[a->kind].flags & OPF_COMMUTE) && a->nin == 2)
    same_in = a->in[0] == b->in[1] && a->in[1] == b->in[0];
  if (!same_in) return false;
  for (int i = 0; i < a->nattr; i++)   /* attributes are kept sorted by key */
    if (!ir_attr_eq(&a->attr[i], &b->attr[i])) return false;
  for (int i = 0; i < a->nout; i++)
    if (!ir_type_eq(&a->out[i]->type, &b->out[i]->type)) return false;
  return true;
}

static int cse_func(Func *f) {
  int nops = 0;
  for (Op *op = f->first; op; op = op->next) nops++;
  size_t cap = 16;
  while (cap < 2 * (size_t)nops) cap *= 2;
  Op **table = calloc(cap, sizeof *table);
  uint64_t *hashes = calloc(cap, sizeof *hashes);
  int *epochs = calloc(cap, sizeof *epochs); /* casts: the calls passed before the op kept in the slot */
  int calls = 0; /* calls passed so far: casts merge only within the same stretch between calls */
  Value **repl = calloc((size_t)f->nvalues + 1, sizeof *repl);  /* by Value.id */
  if (!table || !hashes || !repl || !epochs) die("out of memory");

  int merged = 0;
  for (Op *op = f->first, *next; op; op = next) {
    next = op->next;
    for (int i = 0; i < op->nin; i++)
      if (op->in[i]->id < f->nvalues && repl[op->in[i]->id]) op->in[i] = repl[op->in[i]->id];
    if (op->kind == OP_CALL) calls++;
    if (!(ir_op_info[op->kind].flags & OPF_PURE) || (ir_op_info[op->kind].flags & OPF_RANDOM)) continue;
    uint64_t h = hash_op(op);
    if (op->kind == OP_CAST) h = mix(h, (uint64_t)calls + 1);
    size_t slot = (size_t)h & (cap - 1);
    Op *same = NULL;
    for (; table[slot]; slot = (slot + 1) & (cap - 1))
      if (hashes[slot] == h && same_op(table[slot], op) && (op->kind != OP_CAST || epochs[slot] == calls)) {
        same = table[slot];
        break;
      }
    if (!same) {
      table[slot] = op;
      hashes[slot] = h;
      epochs[slot] = calls;
      continue;
    }
    for (int i = 0; i < op->nout; i++) {
      IR_ASSERT(op->out[i]->id < f->nvalues);
      repl[op->out[i]->id] = same->out[i];
    }
    ir_unlink(op);
    merged++;
  }
  for (int i = 0; i < f->nret; i++)
    if (f->ret[i]->id < f->nvalues && repl[f->ret[i]->id]) f->ret[i] = repl[f->ret[i]->id];
  free(table);
  free(hashes);
  free(epochs);
  free(repl);
  return merged;
}

bool pass_cse(Module *m, const PassOptions *o, Diag *d) {
  for (int i = 0; i < m->nfunc; i++) cse_func(m->funcs[i]);
  return true;
}
