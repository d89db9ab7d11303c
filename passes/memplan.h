/* memplan.h: queries on the static activation plan made by the memplan pass (passes/memplan.c).
 *
 * memplan gives every intermediate tensor of a function a byte offset in that function's frame,
 * recorded on its defining op as `arena=[OFFSET,...]` (one per result). A callee's frame is
 * placed after its caller's frame, so a program's arena is the entry's frame plus the largest
 * arena among the functions it calls.
 */
#ifndef MODELC_MEMPLAN_H
#define MODELC_MEMPLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "../ir/ir.h"

/* Byte alignment of every placed tensor. */
#define MEMPLAN_ALIGN 64

/* True if v has a planned place in its function's frame; *offset receives it. Parameter loads,
 * function arguments and returned values have none (they live in the weights, the caller's
 * buffers, or the caller's result buffer). */
bool memplan_offset(const Value *v, int64_t *offset);
/* Bytes of f's own frame (0 if nothing is placed); -1 if f has not been planned. */
int64_t memplan_frame_bytes(const Func *f);
/* f's frame plus the largest arena of the functions it calls; -1 if any is unplanned. */
int64_t memplan_arena_bytes(const Module *m, const Func *f);
/* Checks the plan: every value that needs a place has one, within the frame, aligned, and no two
 * values whose lifetimes overlap share a byte. Reports problems to d. */
bool memplan_check(const Module *m, Diag *d);

#endif
