/* weights.h: the driver's safetensors reader and writer, for passes that transform trained weights
 * at compile time (lowrank): `modelc build --weights W.safetensors --weights-out F.safetensors`.
 *
 * The reader validates the whole header (the 8-byte length, the JSON, every tensor's dtype, shape
 * and data offsets: inside the file, sized for the shape, not overlapping) and reports a bad file
 * as "FILE: error: ..." through Diag; it never trusts a length it has not checked. The compiler
 * handles f32 tensors only: weights_attach refuses a parameter whose tensor is missing, of another
 * dtype or another shape, naming it. The writer writes the header and the tensors to a temporary
 * file next to the output, flushes it and renames it over the output, so a failure never leaves a
 * half-written file; it copies every tensor of the input unchanged except the parameters the
 * passes removed (and their optimiser state, opt.m.NAME, opt.v.NAME, opt.mom.NAME), then appends
 * the parameters the passes added (with Param.data). The runtime's own reader (runtime/io) is the
 * program's: the compiler does not link the runtime's internals (DESIGN.md, layering).
 */
#ifndef MODELC_WEIGHTS_H
#define MODELC_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../ir/ir.h"

#define WEIGHTS_MAX_RANK 8

typedef struct WTensor {
  char *name;                   /* malloc'd */
  char dtype[8];                /* "F32", "BF16", ... as in the header */
  int rank;
  int64_t dim[WEIGHTS_MAX_RANK];
  uint64_t begin, end;          /* byte offsets in the data section */
} WTensor;

typedef struct Weights {
  const char *path;             /* as given */
  int n;
  WTensor *t;                   /* malloc'd, in the header's order */
  const unsigned char *data;    /* the data section (in owned, or the caller's buffer) */
  uint64_t data_len;
  char *meta;                   /* the __metadata__ object's JSON text ("{...}"), or NULL */
  unsigned char *owned;         /* the file's bytes when weights_read read them (malloc'd), else NULL */
} Weights;

/* Reads and validates path (weights_parse on its bytes). False (reported) on any problem. */
bool weights_read(const char *path, Weights *w, Diag *d);
/* Validates the safetensors bytes buf[0..size) (named path in messages); w->data points into buf,
 * which must outlive w. The fuzz target tests/fuzz/fuzz_safetensors.c drives it. */
bool weights_parse(const unsigned char *buf, size_t size, const char *path, Weights *w, Diag *d);
void weights_free(Weights *w);
/* Attaches every f32 parameter's values (Param.data, copied into the module's arena). Errors name
 * the file and the parameter. */
bool weights_attach(Module *m, const Weights *w, Diag *d);
/* Writes path from in and m as above; removed lists the names of parameters the passes removed. */
bool weights_write(const char *path, const Module *m, const Weights *in, char *const *removed, int nremoved,
                   Diag *d);

#endif
