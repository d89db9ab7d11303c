/* text.c: the byte-level tokenizer (vocabulary 256, id == byte value) that generate, eval and
 * train use on text. */
#include "io.h"

size_t rt_byte_encode(int32_t *ids, const void *text, size_t n) {
  const unsigned char *s = text;
  for (size_t i = 0; i < n; i++)
    ids[i] = s[i];
  return n;
}

int rt_byte_decode(char *text, const int32_t *ids, size_t n, RtError *err) {
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= RT_BYTE_VOCAB)
      return rt_fail(err, "byte tokenizer: id %ld at position %zu is outside [0, 256)", (long)ids[i], i);
    text[i] = (char)(unsigned char)ids[i];
  }
  return 0;
}
