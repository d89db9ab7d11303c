/* test_rt_safetensors.c: the safetensors reader against corrupt images (each must fail with a
 * message naming the file and, where there is one, the tensor; none may crash, which the ASan
 * build checks), and a write/read round trip through the atomic writer, including metadata,
 * escaped names, a scalar, half-precision conversion and a tensor left misaligned by packing. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdio.h>
#include <unistd.h>

/* An image: 8-byte length, header JSON (as given), then `dlen` data bytes (values i & 0xff). */
static unsigned char *image(const char *json, size_t dlen, size_t *size) {
  size_t h = strlen(json);
  unsigned char *b = malloc(8 + h + dlen + 1);
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)(((uint64_t)h >> (8 * i)) & 0xff);
  memcpy(b + 8, json, h);
  for (size_t i = 0; i < dlen; i++)
    b[8 + h + i] = (unsigned char)i;
  *size = 8 + h + dlen;
  return b;
}

/* Opens the image and expects failure with `want` in the message. */
static void expect_bad(const char *json, size_t dlen, const char *want) {
  size_t size;
  unsigned char *b = image(json, dlen, &size);
  RtSafetensors *st = (RtSafetensors *)1;
  RtError err = {{0}};
  int rc = rt_st_open_buffer(&st, b, size, "w.safetensors", &err);
  ck_assert_msg(rc == -1, "accepted: %s", json);
  ck_assert(st == NULL);
  ck_assert_msg(strstr(err.msg, want) != NULL, "for %s\n  got:  %s\n  want: %s", json, err.msg, want);
  ck_assert_msg(strncmp(err.msg, "w.safetensors: ", 15) == 0, "message does not name the file: %s", err.msg);
  free(b);
}

#define T34 "\"dtype\":\"F32\",\"shape\":[3,4]"

START_TEST(corrupt_headers) {
  /* JSON syntax */
  expect_bad("{\"a\" {" T34 ",\"data_offsets\":[0,48]}}", 48, "expected ':'");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[0,48]},}", 48, "expected a string key");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[0,]}}", 48, "expected an integer, found ']'");
  expect_bad("{\"a:{" T34 ",\"data_offsets\":[0,48]}}", 48, "expected ':'");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[0,48]}", 48, "expected ',' or '}'");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[0,48]}}x", 48, "unexpected 'x' after the header object");
  expect_bad("{\"a\\q\":{" T34 ",\"data_offsets\":[0,48]}}", 48, "bad escape");
  expect_bad("{\"a\\ud800\":{" T34 ",\"data_offsets\":[0,48]}}", 48, "unpaired surrogate");
  expect_bad("[1,2]", 0, "header does not start with '{'");
  /* dtypes, shapes, numbers */
  expect_bad("{\"a\":{\"dtype\":\"F33\",\"shape\":[3,4],\"data_offsets\":[0,48]}}", 48,
             "tensor 'a': unknown dtype 'F33'");
  expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3,-4],\"data_offsets\":[0,48]}}", 48, "non-negative");
  expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3,4.0],\"data_offsets\":[0,48]}}", 48, "expected an integer");
  expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
             "more than 8 elements");
  expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, "overflows");
  expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4,
             "integer too large");
  expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[03],\"data_offsets\":[0,12]}}", 12, "leading zero");
  /* keys */
  expect_bad("{\"a\":{" T34 "}}", 48, "tensor 'a': missing 'data_offsets'");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[0,48],\"extra\":1}}", 48, "tensor 'a': unknown key 'extra'");
  expect_bad("{\"a\":{" T34 ",\"dtype\":\"F32\",\"data_offsets\":[0,48]}}", 48, "duplicate key 'dtype'");
  expect_bad("{\"__metadata__\":{\"k\":1},\"a\":{" T34 ",\"data_offsets\":[0,48]}}", 48, "must be a string");
  expect_bad("{\"\":{" T34 ",\"data_offsets\":[0,48]}}", 48, "empty tensor name");
  /* sizes and offsets */
  expect_bad("{\"h.0.attn.c_attn.weight\":{" T34 ",\"data_offsets\":[0,100]}}", 100,
             "w.safetensors: tensor 'h.0.attn.c_attn.weight': data_offsets [0, 100] do not match shape [3,4] of F32 "
             "(48 bytes)");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[0,48]}}", 40,
             "tensor 'a': data_offsets [0, 48] exceed the data section");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[48,0]}}", 48, "are reversed");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[0,48,96]}}", 48, "data_offsets has more than 2 elements");
  expect_bad("{\"a\":{" T34
             ",\"data_offsets\":[0,48]},\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[32,48]}}",
             48, "tensor 'b': data_offsets [32, 48] overlap tensor 'a' [0, 48]");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[16,64]}}", 64, "leave bytes [0, 16) of the data section unused");
  expect_bad("{\"a\":{" T34 ",\"data_offsets\":[0,48]}}", 50, "2 trailing bytes");
  expect_bad("{\"a\":{" T34
             ",\"data_offsets\":[0,48]},\"a\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[48,50]}}",
             50, "tensor 'a': duplicate name");
  expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate '__metadata__'");
}
END_TEST

START_TEST(corrupt_lengths) {
  RtSafetensors *st;
  RtError err;
  unsigned char b[16] = {5, 0, 0, 0};
  ck_assert_int_eq(rt_st_open_buffer(&st, b, 5, "w.safetensors", &err), -1); /* truncated */
  ck_assert_msg(strstr(err.msg, "too short") != NULL, "%s", err.msg);
  ck_assert_int_eq(rt_st_open_buffer(&st, b, 12, "w.safetensors", &err), -1); /* header beyond file */
  ck_assert_msg(strstr(err.msg, "header length 5 exceeds the file size (12 bytes)") != NULL, "%s", err.msg);
  unsigned char huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
  ck_assert_int_eq(rt_st_open_buffer(&st, huge, 10, "w.safetensors", &err), -1);
  ck_assert_msg(strstr(err.msg, "exceeds the file size") != NULL, "%s", err.msg);
  /* over the 100 MB limit, with a file that big (sparse in memory: calloc) */
  size_t big = (100u << 20) + 64;
  unsigned char *m = calloc(1, big + 8);
  uint64_t h = big;
  for (int i = 0; i < 8; i++)
    m[i] = (unsigned char)(h >> (8 * i));
  m[8] = '{';
  ck_assert_int_eq(rt_st_open_buffer(&st, m, big + 8, "w.safetensors", &err), -1);
  ck_assert_msg(strstr(err.msg, "100 MB limit") != NULL, "%s", err.msg);
  free(m);
  ck_assert_int_eq(rt_st_open(&st, "tests/does-not-exist.safetensors", &err), -1);
  ck_assert_msg(strstr(err.msg, "tests/does-not-exist.safetensors: cannot open") != NULL, "%s", err.msg);
}
END_TEST

START_TEST(accepts_valid_variants) {
  /* whitespace and padding, escapes, empty object, zero-size tensors, scalar, metadata anywhere */
  const char *ok[] = {
      "{}",
      "{ }   ",
      "{\n \"a\" : {\"shape\":[],\"data_offsets\":[0,4],\"dtype\":\"I32\"} ,\"__metadata__\":{\"format\":\"pt\"}}  ",
      ("{\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[0,0]},\"a\":{\"dtype\":\"I32\",\"shape\":[1],"
       "\"data_offsets\":[0,4]}}"),
      "{\"\\u00e9\\\"\\/\\n\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
  };
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    size_t size;
    unsigned char *b = image(ok[i], i < 2 ? 0 : 4, &size);
    RtSafetensors *st;
    RtError err = {{0}};
    ck_assert_msg(rt_st_open_buffer(&st, b, size, "ok.safetensors", &err) == 0, "%s: %s", ok[i], err.msg);
    if (i == 2) {
      ck_assert_str_eq(rt_st_metadata(st, "format"), "pt");
      const RtTensor *t = rt_st_find(st, "a");
      ck_assert(t && t->ndim == 0 && t->nbytes == 4 && t->dtype == RT_DT_I32);
    }
    if (i == 4)
      ck_assert(rt_st_find(st, "\xc3\xa9\"/\n") != NULL);
    rt_st_close(st);
    free(b);
  }
}
END_TEST

START_TEST(round_trip) {
  char dir[] = "/tmp/rt_st_XXXXXX";
  ck_assert(mkdtemp(dir) != NULL);
  char path[64];
  snprintf(path, sizeof path, "%s/w.safetensors", dir);
  float w[12], s = 3.5f;
  int32_t ids[5] = {1, -2, 3, 4, 5};
  int8_t q[3] = {-1, 2, -3};
  uint16_t bf[6];
  for (int i = 0; i < 12; i++)
    w[i] = (float)i * 0.25f - 1.0f;
  for (int i = 0; i < 6; i++)
    bf[i] = rt_f32_to_bf16(w[i]);
  RtTensor ts[] = {
      {"h.0.attn.c_attn.weight", RT_DT_F32, 2, {3, 4}, w, sizeof w},
      {"q\"uoted\\name", RT_DT_I8, 1, {3}, q, sizeof q}, /* leaves the next tensor misaligned */
      {"ids", RT_DT_I32, 1, {5}, ids, sizeof ids},
      {"bf", RT_DT_BF16, 2, {2, 3}, bf, sizeof bf},
      {"scale", RT_DT_F32, 0, {0}, &s, sizeof s},
  };
  const char *meta[] = {"format", "pt", "step", "42"};
  RtError err = {{0}};
  ck_assert_msg(rt_st_write(path, ts, 5, meta, 2, &err) == 0, "%s", err.msg);

  FILE *f = fopen(path, "rb");
  unsigned char hl[8];
  ck_assert(fread(hl, 1, 8, f) == 8);
  fclose(f);
  ck_assert_int_eq((8 + hl[0] + 256 * hl[1]) % 8, 0); /* padded header */

  RtSafetensors *st;
  ck_assert_msg(rt_st_open(&st, path, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(rt_st_count(st), 5);
  ck_assert_str_eq(rt_st_tensor(st, 1)->name, "q\"uoted\\name");
  ck_assert_str_eq(rt_st_metadata(st, "step"), "42");
  ck_assert(rt_st_metadata(st, "nope") == NULL);
  for (int i = 0; i < 5; i++) {
    const RtTensor *t = rt_st_find(st, ts[i].name);
    ck_assert(t != NULL);
    ck_assert_int_eq(t->dtype, ts[i].dtype);
    ck_assert_int_eq(t->ndim, ts[i].ndim);
    ck_assert_uint_eq(t->nbytes, ts[i].nbytes);
    ck_assert(memcmp(t->data, ts[i].data, t->nbytes) == 0);
    ck_assert_uint_eq((uintptr_t)t->data % rt_dtype_size(t->dtype), 0);
  }
  const RtTensor *t;
  int64_t shp[2] = {3, 4};
  ck_assert_int_eq(rt_st_require(st, "h.0.attn.c_attn.weight", RT_DT_F32, 2, shp, &t, &err), 0);
  ck_assert(t && ((const float *)t->data)[5] == w[5]);
  int64_t wrong[2] = {4, 3};
  ck_assert_int_eq(rt_st_require(st, "h.0.attn.c_attn.weight", RT_DT_F32, 2, wrong, &t, &err), -1);
  ck_assert_msg(strstr(err.msg, "w.safetensors: tensor 'h.0.attn.c_attn.weight' has shape [3,4], expected [4,3]"), "%s",
                err.msg);
  ck_assert_int_eq(rt_st_require(st, "ids", RT_DT_I64, -1, NULL, NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "tensor 'ids' has dtype I32, expected I64"), "%s", err.msg);
  ck_assert_int_eq(rt_st_require(st, "lm_head.weight", RT_DT_F32, -1, NULL, NULL, &err), -1);
  ck_assert_msg(strstr(err.msg, "tensor 'lm_head.weight' not found"), "%s", err.msg);
  float conv[6];
  ck_assert_int_eq(rt_tensor_to_f32(rt_st_find(st, "bf"), conv, &err), 0);
  for (int i = 0; i < 6; i++)
    ck_assert(conv[i] == w[i]); /* these values are exact in bf16 */
  ck_assert_int_eq(rt_tensor_to_f32(rt_st_find(st, "ids"), conv, &err), -1);
  rt_st_close(st);

  /* truncating the file by one byte is caught */
  ck_assert(truncate(path, 8 + hl[0] + 256 * hl[1] + sizeof w + sizeof q + sizeof ids + sizeof bf + sizeof s - 1) == 0);
  ck_assert_int_eq(rt_st_open(&st, path, &err), -1);
  ck_assert_msg(strstr(err.msg, "tensor 'scale': data_offsets") && strstr(err.msg, "exceed the data section"), "%s",
                err.msg);

  /* the writer refuses inconsistent tensors and duplicate names, leaving no temp files */
  RtTensor bad = {"x", RT_DT_F32, 1, {4}, w, 12};
  ck_assert_int_eq(rt_st_write(path, &bad, 1, NULL, 0, &err), -1);
  RtTensor dup[2] = {{"x", RT_DT_F32, 1, {1}, w, 4}, {"x", RT_DT_F32, 1, {1}, w, 4}};
  ck_assert_int_eq(rt_st_write(path, dup, 2, NULL, 0, &err), -1);
  ck_assert_msg(strstr(err.msg, "duplicate"), "%s", err.msg);
  unlink(path);
  ck_assert_int_eq(rmdir(dir), 0); /* empty: no temp file left behind */
}
END_TEST

/* Random byte flips, insertions of JSON punctuation and truncations of a valid image: every
 * outcome must be a clean accept or a clean error (the ASan+UBSan build checks "clean"). */
START_TEST(mutations_do_not_crash) {
  const char *json = "{\"__metadata__\":{\"format\":\"pt\"},\"wte.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],"
                     "\"data_offsets\":[0,48]},\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[48,52]}}";
  size_t size;
  unsigned char *orig = image(json, 52, &size);
  unsigned char *b = malloc(size);
  const char punct[] = "{}[]:,\"\\0123456789-.eu ";
  RtRng r;
  rt_rng_seed(&r, 77);
  int accepted = 0;
  for (int it = 0; it < 20000; it++) {
    memcpy(b, orig, size);
    int nflip = 1 + (int)(rt_rng_u32(&r) % 3);
    for (int k = 0; k < nflip; k++) {
      size_t at = rt_rng_u32(&r) % size;
      b[at] = (rt_rng_u32(&r) & 1) ? (unsigned char)punct[rt_rng_u32(&r) % (sizeof punct - 1)]
                                   : (unsigned char)rt_rng_u32(&r);
    }
    size_t len = (rt_rng_u32(&r) % 8 == 0) ? rt_rng_u32(&r) % size : size;
    RtSafetensors *st;
    RtError err;
    if (rt_st_open_buffer(&st, b, len, "m.safetensors", &err) == 0) {
      accepted++;
      for (int i = 0; i < rt_st_count(st); i++) {
        const RtTensor *t = rt_st_tensor(st, i);
        volatile unsigned char sink = 0;
        for (size_t j = 0; j < t->nbytes; j++)
          sink ^= ((const unsigned char *)t->data)[j];
        (void)sink;
        ck_assert(rt_st_find(st, t->name) != NULL);
      }
      rt_st_close(st);
    } else {
      ck_assert(strncmp(err.msg, "m.safetensors: ", 15) == 0);
    }
  }
  ck_assert_int_gt(accepted, 0); /* flips inside tensor data are harmless */
  free(b);
  free(orig);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_safetensors");
  TCase *tc = tcase_create("safetensors");
  tcase_add_test(tc, corrupt_headers);
  tcase_add_test(tc, corrupt_lengths);
  tcase_add_test(tc, accepts_valid_variants);
  tcase_add_test(tc, round_trip);
  tcase_add_test(tc, mutations_do_not_crash);
  suite_add_tcase(s, tc);
  return check_run(s);
}
