/* fuzz_tokenizer.c: libFuzzer target for the tokenizers of --tokenizer (runtime/io/tokenizer.c,
 * runtime/io/bpe.c, and the JSON cursor of runtime/io/json.c they read tokenizer.json with).
 *
 * Input: byte 0 picks the format (even: llama2.c tokenizer.bin, odd: Hugging Face tokenizer.json),
 * byte 1 the length k of the text to encode (the next k bytes, fewer when the input ends); the rest
 * is the file, written to a private temporary directory (in /dev/shm where there is one). Asserted: the
 * load either fails with a message naming the file, or gives a vocabulary of at least one token;
 * encoding the text either fails (llama2.c: a byte-fallback id outside the vocabulary) or gives ids
 * in the vocabulary; for byte-level BPE, decoding them gives the text back byte for byte. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "../../runtime/io/io.h" /* the tokenizers (internal) */

static char tmpdir[64], bin[128], json[128];

static void cleanup(void) {
  unlink(bin);
  unlink(json);
  rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  fuzz_tmpdir(tmpdir, sizeof tmpdir, "fuzz_tokenizer");
  snprintf(bin, sizeof bin, "%s/tokenizer.bin", tmpdir);
  snprintf(json, sizeof json, "%s/tokenizer.json", tmpdir);
  atexit(cleanup);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2 || size > 1 << 20) return 0;
  const char *path = data[0] & 1 ? json : bin;
  size_t k = data[1] < size - 2 ? data[1] : size - 2, n = size - 2 - k;
  const uint8_t *text = data + 2, *file = text + k;
  FILE *f = fopen(path, "wb");
  if (!f || (n && fwrite(file, 1, n, f) != n) || fclose(f)) abort();
  RtTokenizer t;
  RtError err;
  err.msg[0] = 0;
  if (rt_tok_load(&t, path, &err)) {
    CHECK(strstr(err.msg, path) != NULL);
    return 0;
  }
  CHECK(t.vocab >= 1);
  int32_t *ids = NULL;
  size_t count = 0;
  if (rt_tok_encode(&t, text, k, 1, &ids, &count, &err) == 0) {
    CHECK(count <= k + 2);
    char *back = malloc(k + 1);
    size_t m = 0;
    int fits = 1;
    for (size_t i = 0; i < count; i++) {
      CHECK(ids[i] >= 0 && ids[i] < t.vocab);
      const char *p;
      size_t pn;
      rt_tok_piece(&t, i ? ids[i - 1] : -1, ids[i], &p, &pn);
      if (m + pn > k) fits = 0;
      if (fits) memcpy(back + m, p, pn);
      m += pn;
    }
    if (t.kind != RT_TOK_LLAMA2C) CHECK(fits && m == k && (!k || memcmp(back, text, k) == 0));
    free(back);
    free(ids);
  } else {
    CHECK(t.kind == RT_TOK_LLAMA2C && !ids);
  }
  rt_tok_free(&t);
  return 0;
}
