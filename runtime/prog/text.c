/* text.c: the text generate, eval and train read: bytes (ids 0..255), or the ids of --tokenizer
 * (io/tokenizer.c), whose vocabulary must be the model's. */
#include <stdio.h>
#include <stdlib.h>

#include "prog.h"

int rt_prog_tokenizer(const char *prog, const char *verb, const RtModel *m, const char *path, RtTokenizer *t) {
  RtError err;
  if (rt_tok_load(t, path, &err)) {
    fprintf(stderr, "%s %s: error: %s\n", prog, verb, err.msg);
    return EXIT_USER;
  }
  if (t->vocab != m->vocab) {
    int rc = rt_usage_error(prog, verb, "--tokenizer %s (%s) has a vocabulary of %d tokens but the model's is %lld",
                            path, rt_tok_kind_name(t), t->vocab, (long long)m->vocab);
    rt_tok_free(t);
    return rc;
  }
  return 0;
}

int rt_prog_text_ids(const RtTokenizer *t, const void *text, size_t n, int32_t **ids, size_t *count, RtError *err) {
  if (t)
    return rt_tok_encode(t, text, n, 1, ids, count, err);
  *ids = malloc(sizeof **ids * (n ? n : 1));
  if (!*ids)
    return rt_fail(err, "out of memory reading %zu bytes of text", n);
  *count = rt_byte_encode(*ids, text, n);
  return 0;
}
