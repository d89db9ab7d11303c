/* fuzz_checkpoint.c: libFuzzer target for the checks of a training checkpoint's metadata
 * (rt_ckpt_read_meta in runtime/prog/checkpoint.c, what --resume runs before it reads a tensor).
 *
 * Input: byte 0 picks this run's optimiser (bit 0), whether the rest is a safetensors file (bit 1;
 * its __metadata__ is checked, as rt_load_checkpoint does) or metadata lines, and byte 1 this run's
 * --tokens rows (0: none). Metadata lines are "key=value", split on newline (a later key wins
 * nothing: the first is the one looked up). The run's model is "gpt-tiny". Asserted: the check
 * either fails with a message starting with the file's name, or succeeds only when the model and
 * optimiser match, with every field in its documented range (docs/runtime.md, "Checkpoints"):
 * step, steps, loss_scale_good at most 2^62 - 1, skipped_steps at most step, rng_inc odd,
 * loss_scale in [1e-30, 1e30], elapsed_s in [0, 1e15), and the --tokens cursor in [0, rows) of a
 * checkpoint with this run's rows (0 without rows). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "../../runtime/prog/train.h" /* rt_ckpt_read_meta (internal) */

#define MAX_KEYS 32
#define CK_MAX ((int64_t)(INT64_MAX / 2))

typedef struct Meta {
  int n;
  char *key[MAX_KEYS], *val[MAX_KEYS];
} Meta;

static const char *get_lines(const void *src, const char *key) {
  const Meta *m = src;
  for (int i = 0; i < m->n; i++)
    if (!strcmp(m->key[i], key)) return m->val[i];
  return NULL;
}

static const char *get_st(const void *src, const char *key) { return rt_st_metadata(src, key); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2 || size > 1 << 16) return 0;
  RtOptimizer opt = data[0] & 1 ? RT_OPT_SGD : RT_OPT_ADAMW;
  int64_t rows = data[1];
  const uint8_t *p = data + 2;
  size_t n = size - 2;
  Meta lines = {0};
  RtSafetensors *st = NULL;
  RtCkptMetaGet get = get_lines;
  const void *src = &lines;
  RtError err;
  err.msg[0] = 0;
  if (data[0] & 2) {
    if (rt_st_open_buffer(&st, p, n, "fuzz.safetensors", &err)) return 0;
    get = get_st;
    src = st;
  } else {
    for (size_t i = 0; i < n && lines.n < MAX_KEYS;) { /* each key and value its own allocation (ASan) */
      size_t j = i, eq = SIZE_MAX;
      while (j < n && p[j] != '\n') {
        if (p[j] == '=' && eq == SIZE_MAX) eq = j;
        j++;
      }
      if (eq != SIZE_MAX && !memchr(p + i, 0, j - i)) {
        lines.key[lines.n] = strndup((const char *)p + i, eq - i);
        lines.val[lines.n] = strndup((const char *)p + eq + 1, j - eq - 1);
        if (!lines.key[lines.n] || !lines.val[lines.n]) abort();
        lines.n++;
      }
      i = j + 1;
    }
  }
  RtCkptMeta m;
  int rc = rt_ckpt_read_meta("fuzz.ck", get, src, "gpt-tiny", opt, rows, &m, &err);
  if (rc) {
    CHECK(rc == -1 && strncmp(err.msg, "fuzz.ck: ", 9) == 0);
  } else {
    const char *model = get(src, "model"), *o = get(src, "optimizer");
    CHECK(get(src, "modelc_checkpoint") && model && !strcmp(model, "gpt-tiny"));
    CHECK(o && !strcmp(o, opt == RT_OPT_SGD ? "sgd" : "adamw"));
    CHECK(m.step >= 0 && m.step <= CK_MAX && m.steps >= 0 && m.steps <= CK_MAX);
    CHECK(m.rng_inc & 1);
    CHECK(m.loss_scale >= 1e-30 && m.loss_scale <= 1e30 && (m.have_loss_scale || m.loss_scale == 1.0));
    CHECK(m.ls_good >= 0 && m.ls_good <= CK_MAX && m.ls_skipped >= 0 && m.ls_skipped <= m.step);
    CHECK(m.elapsed >= 0 && m.elapsed < 1e15);
    const char *fr = get(src, "tokens_rows");
    CHECK(m.fix_next >= 0 && (fr ? rows > 0 && m.fix_next < rows && strtoll(fr, NULL, 10) == rows : m.fix_next == 0));
  }
  for (int i = 0; i < lines.n; i++) free(lines.key[i]), free(lines.val[i]);
  if (st) rt_st_close(st);
  return 0;
}
