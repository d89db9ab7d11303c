/* import_llama2c.h: `modelc import MODEL.bin -o DIR` for llama2.c checkpoints (import_llama2c.c).
 *
 * Reads a llama2.c `.bin` (the legacy version-0 fp32 layout, or the version-1 fp32 file with its
 * "ak42" header; version 2, Q8_0, is refused as not implemented) and writes DIR/model.yaml (a
 * spec: rope positions, grouped-query attention, RMSNorm, SwiGLU, no biases; docs/spec.md) and
 * DIR/model.safetensors (the spec's parameter names and layouts). Every problem (a header value
 * out of range, a file size that disagrees with the header) is reported through Diag naming the
 * file; nothing is written then. */
#ifndef MODELC_IMPORT_LLAMA2C_H
#define MODELC_IMPORT_LLAMA2C_H

#include <stdbool.h>

#include "../ir/diag.h"

bool import_llama2c(const char *file, const char *dir, Diag *d);

#endif
