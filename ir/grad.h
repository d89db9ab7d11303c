/* grad.h: the gradient rules of ir/grad.c, named in ops.def's GRAD column (private to ir/). */
#ifndef MODELC_GRAD_H
#define MODELC_GRAD_H

#include "ir.h"

#define GRAD_RULE(name) bool name(GradCtx *g, const Op *op, char *err, size_t n)
GRAD_RULE(grad_none);
GRAD_RULE(grad_add);
GRAD_RULE(grad_sub);
GRAD_RULE(grad_mul);
GRAD_RULE(grad_div);
GRAD_RULE(grad_neg);
GRAD_RULE(grad_exp);
GRAD_RULE(grad_tanh);
GRAD_RULE(grad_sigmoid);
GRAD_RULE(grad_act);
GRAD_RULE(grad_norm);
GRAD_RULE(grad_linear);
GRAD_RULE(grad_attention);
GRAD_RULE(grad_rope);
GRAD_RULE(grad_linformer);
GRAD_RULE(grad_seq_pool);
GRAD_RULE(grad_upsample);
GRAD_RULE(grad_attn_pool);
GRAD_RULE(grad_xl_memory);
GRAD_RULE(grad_xl_attention);
GRAD_RULE(grad_moe);
GRAD_RULE(grad_embedding);
GRAD_RULE(grad_pool);
GRAD_RULE(grad_reshape);
GRAD_RULE(grad_dropout);
GRAD_RULE(grad_xent);

#endif
