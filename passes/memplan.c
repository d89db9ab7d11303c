/* memplan.c: static memory planning of activations (the `memplan` pass).
 *
 * Every intermediate tensor of a function gets a fixed byte offset in one arena, so generated
 * programs allocate nothing while they run. The lifetime of a value runs from its defining op to
 * its last use; two values may share bytes only if their lifetimes are disjoint. Placement is the
 * greedy-by-size heuristic (as TensorFlow Lite's and ggml's allocators do): values are placed
 * largest first, each at the lowest aligned offset that does not collide with an already placed
 * value whose lifetime overlaps. The result is recorded in the IR as `arena=[OFFSET]` on each
 * defining op, which the backends read and `memplan_check` verifies.
 *
 * What is not placed: function arguments (the caller owns them), `param` loads (they point into
 * the weights) and values a function returns (written straight into the caller's buffer for the
 * call's result). Shapes are the compiled maxima, so the plan holds for any smaller batch or
 * sequence length.
 */
#include <stdlib.h>
#include <string.h>

#include "memplan.h"
#include "pass.h"

typedef struct Slot {
  Value *v;
  int start, end;  /* op indices: defined at start, last used at end (inclusive) */
  int64_t size;    /* bytes, rounded up to MEMPLAN_ALIGN */
  int64_t offset;  /* -1 until placed */
} Slot;

static int64_t align_up(int64_t n) { return (n + MEMPLAN_ALIGN - 1) / MEMPLAN_ALIGN * MEMPLAN_ALIGN; }

/* returned[v->id]: f returns v. malloc'd; one array per function walk, not a scan of f's results
 * per value (a training function returns one gradient per parameter). */
static bool *returned_marks(const Func *f) {
  bool *r = calloc((size_t)f->nvalues + 1, sizeof *r);
  if (!r) die("out of memory");
  for (int i = 0; i < f->nret; i++) r[f->ret[i]->id] = true;
  return r;
}

/* A value needs a place in the frame unless it aliases weights or belongs to the caller. */
static bool needs_place(const bool *returned, const Value *v) {
  return v->def && v->def->kind != OP_PARAM && !returned[v->id];
}

/* Collects the slots of f with their lifetimes. Returns the count; *out is malloc'd. */
static int collect(const Func *f, Slot **out) {
  int nops = 0, nslots = 0;
  for (const Op *op = f->first; op; op = op->next) {
    nops++;
    nslots += op->nout;
  }
  int *last = malloc(sizeof(int) * (size_t)(f->nvalues + 1));
  Slot *s = malloc(sizeof(Slot) * (size_t)(nslots + 1));
  if (!last || !s) die("out of memory");
  for (int i = 0; i < f->nvalues; i++) last[i] = -1;
  bool *returned = returned_marks(f);
  int idx = 0;
  for (const Op *op = f->first; op; op = op->next, idx++)
    for (int i = 0; i < op->nin; i++) last[op->in[i]->id] = idx;
  int n = 0;
  idx = 0;
  for (const Op *op = f->first; op; op = op->next, idx++)
    for (int i = 0; i < op->nout; i++) {
      Value *v = op->out[i];
      if (!needs_place(returned, v)) continue;
      /* A result nobody reads still gets written: it lives for its defining op only. */
      int end = last[v->id] < idx ? idx : last[v->id];
      s[n++] = (Slot){v, idx, end, align_up(ir_type_bytes(&v->type)), -1};
    }
  free(last);
  free(returned);
  *out = s;
  return n;
}

static int by_size_desc(const void *a, const void *b) {
  const Slot *x = a, *y = b;
  if (x->size != y->size) return x->size < y->size ? 1 : -1;
  return x->start - y->start; /* deterministic */
}

static bool overlap_time(const Slot *a, const Slot *b) { return a->start <= b->end && b->start <= a->end; }

typedef struct Range {
  int64_t lo, hi;
} Range;

static int by_lo(const void *a, const void *b) {
  const Range *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void plan_func(Func *f) {
  Slot *s;
  int n = collect(f, &s);
  qsort(s, (size_t)n, sizeof *s, by_size_desc);
  Range *busy = malloc(sizeof(Range) * (size_t)(n + 1));
  if (!busy) die("out of memory");
  for (int i = 0; i < n; i++) {
    int nb = 0;
    for (int j = 0; j < i; j++)
      if (overlap_time(&s[i], &s[j])) busy[nb++] = (Range){s[j].offset, s[j].offset + s[j].size};
    qsort(busy, (size_t)nb, sizeof *busy, by_lo);
    int64_t off = 0; /* lowest gap that fits */
    for (int j = 0; j < nb; j++) {
      if (busy[j].lo - off >= s[i].size) break;
      if (busy[j].hi > off) off = busy[j].hi;
    }
    s[i].offset = off;
  }
  free(busy);
  /* Record the plan on the defining ops (one offset per result; -1 for unplaced results). */
  for (Op *op = f->first; op; op = op->next) ir_remove_attr(op, "arena");
  int64_t *at = malloc(sizeof *at * (size_t)(f->nvalues + 1));  /* placed offset by value id, -1 */
  if (!at) die("out of memory");
  for (int i = 0; i <= f->nvalues; i++) at[i] = -1;
  for (int i = 0; i < n; i++) at[s[i].v->id] = s[i].offset;
  for (int i = 0; i < n; i++) {
    Op *op = s[i].v->def;
    if (ir_attr(op, "arena")) continue;
    int64_t offs[64];
    IR_ASSERT(op->nout <= 64);
    for (int k = 0; k < op->nout; k++) offs[k] = at[op->out[k]->id];
    ir_set_attr_ints(op, "arena", op->nout, offs);
  }
  free(at);
  free(s);
}

bool pass_memplan(Module *m, const PassOptions *o, Diag *d) {
  (void)o;
  (void)d;
  for (int i = 0; i < m->nfunc; i++) plan_func(m->funcs[i]);
  return true;
}

bool memplan_offset(const Value *v, int64_t *offset) {
  if (!v->def) return false;
  int n;
  const int64_t *offs = ir_attr_ints(v->def, "arena", &n);
  if (v->index >= n || offs[v->index] < 0) return false;
  *offset = offs[v->index];
  return true;
}

int64_t memplan_frame_bytes(const Func *f) {
  int64_t top = 0;
  bool any_needed = false, any_planned = false;
  bool *returned = returned_marks(f);
  for (const Op *op = f->first; op; op = op->next)
    for (int i = 0; i < op->nout; i++) {
      const Value *v = op->out[i];
      int64_t off;
      if (!needs_place(returned, v)) continue;
      any_needed = true;
      if (!memplan_offset(v, &off)) continue;
      any_planned = true;
      int64_t end = off + align_up(ir_type_bytes(&v->type));
      if (end > top) top = end;
    }
  free(returned);
  if (any_needed && !any_planned) return -1;
  return top;
}

static int64_t arena_rec(const Module *m, const Func *f, int depth) {
  if (depth > m->nfunc) return -1; /* a call cycle: the verifier rejects those */
  int64_t own = memplan_frame_bytes(f), callee = 0;
  if (own < 0) return -1;
  for (const Op *op = f->first; op; op = op->next) {
    if (op->kind != OP_CALL) continue;
    const Func *g = ir_find_func(m, ir_attr_s(op, "callee"));
    if (!g) continue;
    int64_t a = arena_rec(m, g, depth + 1);
    if (a < 0) return -1;
    if (a > callee) callee = a;
  }
  return own + callee;
}

int64_t memplan_arena_bytes(const Module *m, const Func *f) { return arena_rec(m, f, 0); }

bool memplan_check(const Module *m, Diag *d) {
  bool ok = true;
  for (int fi = 0; fi < m->nfunc; fi++) {
    const Func *f = m->funcs[fi];
    Slot *s;
    int n = collect(f, &s);
    int64_t frame = memplan_frame_bytes(f);
    for (int i = 0; i < n; i++) {
      if (!memplan_offset(s[i].v, &s[i].offset)) {
        diag_error(d, NULL, s[i].v->def->line, s[i].v->def->col, "in @%s: %s result has no arena offset", f->name,
                   ir_op_name(s[i].v->def->kind));
        ok = false;
        continue;
      }
      if (s[i].offset % MEMPLAN_ALIGN != 0 || s[i].offset + s[i].size > frame) {
        diag_error(d, NULL, 0, 0, "in @%s: %s result at offset %lld is misaligned or outside the frame", f->name,
                   ir_op_name(s[i].v->def->kind), (long long)s[i].offset);
        ok = false;
      }
    }
    for (int i = 0; i < n && ok; i++)
      for (int j = i + 1; j < n; j++)
        if (overlap_time(&s[i], &s[j]) && s[i].offset < s[j].offset + s[j].size &&
            s[j].offset < s[i].offset + s[i].size) {
          diag_error(d, NULL, 0, 0, "in @%s: live tensors overlap in the arena: %s result (ops %d..%d) and %s result "
                                    "(ops %d..%d)",
                     f->name, ir_op_name(s[i].v->def->kind), s[i].start, s[i].end, ir_op_name(s[j].v->def->kind),
                     s[j].start, s[j].end);
          ok = false;
        }
    free(s);
  }
  return ok;
}
