/* fuzz_tokens.c: libFuzzer target for what the verbs read as tokens and training data: the token
 * file reader (rt_prog_read_tokens, runtime/prog/model.c: forward, grad and train --tokens), the
 * whole-file reader train --data uses (rt_read_file, runtime/io/file.c) and the byte tokenizer
 * (runtime/io/text.c).
 *
 * Input: bytes 0-2 give a fake model's compiled batch (1..16), context (1..256) and vocabulary
 * (1..512: below and above the 256 bytes); the rest is the file, written to a private temporary
 * directory (in /dev/shm where there is one; the only place this target writes). Asserted: the
 * token reader either fails with a message naming the file, or returns B x T ids within the
 * compiled shape and the vocabulary, equal to the array's values; rt_read_file returns the file's
 * bytes; rt_byte_decode of the ids succeeds exactly when every id is a byte, and rt_byte_encode of
 * the text gives the ids back. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "../../runtime/prog/prog.h" /* rt_prog_read_tokens (internal) */

static char tmpdir[64], path[128];

static void cleanup(void) {
  unlink(path);
  rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  fuzz_tmpdir(tmpdir, sizeof tmpdir, "fuzz_tokens");
  snprintf(path, sizeof path, "%s/t.npy", tmpdir);
  atexit(cleanup);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3 || size > 1 << 20) return 0;
  RtModel m;
  memset(&m, 0, sizeof m);
  m.name = "fuzz";
  m.batch = 1 + data[0] % 16;
  m.context = 1 + data[1];
  m.vocab = 1 + data[2] * 2;
  const uint8_t *file = data + 3;
  size_t n = size - 3;
  FILE *f = fopen(path, "wb");
  if (!f || (n && fwrite(file, 1, n, f) != n) || fclose(f)) abort();

  RtError err;
  err.msg[0] = 0;
  unsigned char *bytes = NULL;
  size_t got = 0;
  CHECK(rt_read_file(path, &bytes, &got, &err) == 0);
  CHECK(got == n && (!n || memcmp(bytes, file, n) == 0));
  free(bytes);

  int32_t *ids = NULL;
  int B = 0, T = 0;
  if (rt_prog_read_tokens(&m, path, &ids, &B, &T, &err)) {
    CHECK(!ids && strncmp(err.msg, path, strlen(path)) == 0);
    return 0;
  }
  CHECK(ids && B >= 1 && B <= m.batch && T >= 1 && T <= m.context);
  RtNpy a;
  CHECK(rt_npy_parse(file, n, "t.npy", &a, &err) == 0);
  CHECK(a.ndim == 2 && a.shape[0] == B && a.shape[1] == T);
  size_t count = (size_t)B * (size_t)T;
  int bytes_only = 1;
  for (size_t i = 0; i < count; i++) {
    int64_t v = a.dtype == RT_DT_I32 ? ((const int32_t *)a.data)[i] : ((const int64_t *)a.data)[i];
    CHECK(v == ids[i] && ids[i] >= 0 && ids[i] < m.vocab);
    if (ids[i] >= RT_BYTE_VOCAB) bytes_only = 0;
  }
  rt_npy_free(&a);
  char *text = malloc(count);
  int32_t *back = malloc(count * sizeof *back);
  if (!text || !back) abort();
  err.msg[0] = 0;
  int rc = rt_byte_decode(text, ids, count, &err);
  CHECK(rc == 0 ? bytes_only : !bytes_only && strstr(err.msg, "outside [0, 256)"));
  if (rc == 0) {
    CHECK(rt_byte_encode(back, text, count) == count && memcmp(back, ids, count * sizeof *back) == 0);
  }
  free(text);
  free(back);
  free(ids);
  return 0;
}
