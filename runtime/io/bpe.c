/* bpe.c: GPT-2's byte-level BPE (stub while being written). */
#include "io.h"

int rt_bpe_load_gpt2(RtTokenizer *t, const char *encoder_json, const char *vocab_bpe, RtError *err) {
  (void)t, (void)vocab_bpe;
  return rt_fail(err, "%s: GPT-2 tokenizers are not implemented yet", encoder_json);
}
int rt_bpe_load_hf(RtTokenizer *t, const char *tokenizer_json, RtError *err) {
  (void)t;
  return rt_fail(err, "%s: tokenizer.json is not implemented yet", tokenizer_json);
}
int rt_bpe_encode(const RtTokenizer *t, const unsigned char *s, size_t n, int32_t *out, size_t *count, RtError *err) {
  (void)t, (void)s, (void)n, (void)out, (void)count;
  return rt_fail(err, "not implemented");
}
