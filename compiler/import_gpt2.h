/* import_gpt2.h: `modelc import DIR -o OUT` for a Hugging Face GPT-2 checkpoint directory.
 *
 * DIR holds config.json (GPT2Config's JSON) and model.safetensors (GPT2LMHeadModel's or GPT2Model's
 * state_dict: names with or without the "transformer." prefix, HF's Conv1D weights stored
 * [in, out]). import_gpt2 checks the config (every key is either used, known not to change the
 * architecture, or an error naming it) and every tensor (present, F32, the shape the config
 * implies), then writes OUT/model.yaml (a spec: docs/spec.md) and OUT/model.safetensors (our names,
 * our layouts: each Conv1D weight transposed to nn.Linear's [out, in]). Nothing is written unless
 * everything checks; each file is written to a temporary name and renamed. docs/cli.md, "modelc
 * import", has the key mapping.
 */
#ifndef MODELC_IMPORT_GPT2_H
#define MODELC_IMPORT_GPT2_H

#include "../ir/diag.h"

/* 0 on success; 1 on a user error (reported through d, naming the file and the key or tensor). */
int import_gpt2(const char *dir, const char *out_dir, Diag *d);

#endif
