/* test_rt_npy.c: .npy round trips for each supported dtype (including a scalar and a 1-D shape),
 * a header laid out exactly as NumPy writes it, and corrupt images, each rejected with a message
 * naming the file. */
#include "rt_test_util.h"

#include <check.h>

#include "check_run.h"
#include <stdio.h>
#include <unistd.h>

/* A version-1.0 image with the given dict (padded to 64 as NumPy does) and dlen data bytes. */
static unsigned char *npy_image(const char *dict, int major, size_t dlen, size_t *size) {
  size_t pre = major == 1 ? 10 : 12, k = strlen(dict);
  size_t total = (pre + k + 1 + 63) / 64 * 64, hlen = total - pre;
  unsigned char *b = calloc(1, total + dlen + 1);
  memcpy(b, "\x93NUMPY", 6);
  b[6] = (unsigned char)major;
  b[7] = 0;
  b[8] = (unsigned char)(hlen & 0xff);
  b[9] = (unsigned char)(hlen >> 8);
  memcpy(b + pre, dict, k);
  memset(b + pre + k, ' ', hlen - k - 1);
  b[total - 1] = '\n';
  for (size_t i = 0; i < dlen; i++)
    b[total + i] = (unsigned char)i;
  *size = total + dlen;
  return b;
}

static void expect_bad(const char *dict, size_t dlen, const char *want) {
  size_t size;
  unsigned char *b = npy_image(dict, 1, dlen, &size);
  RtNpy a;
  RtError err = {{0}};
  ck_assert_msg(rt_npy_parse(b, size, "x.npy", &a, &err) == -1, "accepted %s", dict);
  ck_assert_msg(strstr(err.msg, want) != NULL && strncmp(err.msg, "x.npy: ", 7) == 0, "for %s\n got %s\n want %s", dict,
                err.msg, want);
  ck_assert(a.data == NULL);
  free(b);
}

START_TEST(numpy_layout) {
  size_t size;
  unsigned char *b = npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1, 24, &size);
  ck_assert_uint_eq((size - 24) % 64, 0);
  RtNpy a;
  RtError err = {{0}};
  ck_assert_msg(rt_npy_parse(b, size, "x.npy", &a, &err) == 0, "%s", err.msg);
  ck_assert_int_eq(a.dtype, RT_DT_F32);
  ck_assert_int_eq(a.ndim, 2);
  ck_assert(a.shape[0] == 2 && a.shape[1] == 3 && a.nbytes == 24);
  ck_assert(((unsigned char *)a.data)[5] == 5);
  rt_npy_free(&a);
  free(b);
  /* 1-D with trailing comma, scalar, version 2.0, key order and double quotes */
  b = npy_image("{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }", 1, 40, &size);
  ck_assert_int_eq(rt_npy_parse(b, size, "x.npy", &a, &err), 0);
  ck_assert(a.ndim == 1 && a.shape[0] == 5 && a.dtype == RT_DT_I64);
  rt_npy_free(&a);
  free(b);
  b = npy_image("{\"shape\": (), \"fortran_order\": False, \"descr\": \"<i4\"}", 2, 4, &size);
  b[8] = (unsigned char)((size - 4 - 12) & 0xff), b[9] = 0, b[10] = 0, b[11] = 0;
  ck_assert_msg(rt_npy_parse(b, size, "x.npy", &a, &err) == 0, "%s", err.msg);
  ck_assert(a.ndim == 0 && a.nbytes == 4 && a.dtype == RT_DT_I32);
  rt_npy_free(&a);
  free(b);
}
END_TEST

START_TEST(corrupt) {
  expect_bad("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24, "fortran_order True");
  expect_bad("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24, "unsupported .npy dtype '>f4'");
  expect_bad("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 48, "unsupported .npy dtype '<f8'");
  expect_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20, "data is 20 bytes, expected 24");
  expect_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28, "data is 28 bytes, expected 24");
  expect_bad("{'descr': '<f4', 'shape': (2, 3), }", 24, "missing key 'fortran_order'");
  expect_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24, "unknown key 'x'");
  expect_bad("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8, "duplicate key 'descr'");
  expect_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", 24, "non-negative integers");
  expect_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", 24, "expected ',' or ')'");
  expect_bad("{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }", 24, "must be a tuple");
  expect_bad("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }", 24, "must be True or False");
  expect_bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x", 24, "unexpected text");

  RtNpy a;
  RtError err;
  size_t size;
  unsigned char *b = npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1, 24, &size);
  b[0] = 'X';
  ck_assert_int_eq(rt_npy_parse(b, size, "x.npy", &a, &err), -1);
  ck_assert_msg(strstr(err.msg, "bad magic"), "%s", err.msg);
  b[0] = 0x93, b[6] = 4;
  ck_assert_int_eq(rt_npy_parse(b, size, "x.npy", &a, &err), -1);
  ck_assert_msg(strstr(err.msg, "unsupported .npy version 4.0"), "%s", err.msg);
  b[6] = 1, b[9] = 0x7f; /* header length beyond the file */
  ck_assert_int_eq(rt_npy_parse(b, size, "x.npy", &a, &err), -1);
  ck_assert_msg(strstr(err.msg, "exceeds the file size"), "%s", err.msg);
  b[9] = 0, b[8] = 50; /* header does not end in a newline */
  ck_assert_int_eq(rt_npy_parse(b, size, "x.npy", &a, &err), -1);
  ck_assert_msg(strstr(err.msg, "newline"), "%s", err.msg);
  ck_assert_int_eq(rt_npy_parse(b, 7, "x.npy", &a, &err), -1); /* truncated */
  free(b);
  ck_assert_int_eq(rt_npy_read("tests/missing.npy", &a, &err), -1);
  ck_assert_msg(strstr(err.msg, "tests/missing.npy: cannot open"), "%s", err.msg);
}
END_TEST

START_TEST(round_trip) {
  char dir[] = "/tmp/rt_npy_XXXXXX";
  ck_assert(mkdtemp(dir) != NULL);
  char path[64];
  snprintf(path, sizeof path, "%s/a.npy", dir);
  float f[2 * 3 * 5];
  int32_t i4[7] = {0, 1, -1, 255, 256, INT32_MAX, INT32_MIN};
  int64_t i8 = -1234567890123LL;
  fill_uniform(f, 30, -3, 3, 5);
  struct {
    RtDType dt;
    int ndim;
    int64_t shape[3];
    const void *data;
    size_t nbytes;
  } cases[] = {{RT_DT_F32, 3, {2, 3, 5}, f, sizeof f},
               {RT_DT_I32, 1, {7}, i4, sizeof i4},
               {RT_DT_I64, 0, {0}, &i8, sizeof i8},
               {RT_DT_F32, 2, {0, 4}, f, 0}};
  RtError err = {{0}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    ck_assert_msg(rt_npy_write(path, cases[c].dt, cases[c].ndim, cases[c].shape, cases[c].data, &err) == 0, "%s",
                  err.msg);
    RtNpy a;
    ck_assert_msg(rt_npy_read(path, &a, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(a.dtype, cases[c].dt);
    ck_assert_int_eq(a.ndim, cases[c].ndim);
    for (int d = 0; d < a.ndim; d++)
      ck_assert(a.shape[d] == cases[c].shape[d]);
    ck_assert_uint_eq(a.nbytes, cases[c].nbytes);
    ck_assert(a.nbytes == 0 || memcmp(a.data, cases[c].data, a.nbytes) == 0);
    ck_assert_uint_eq((uintptr_t)a.data % 64, 0);
    rt_npy_free(&a);
  }
  /* what we write is what NumPy writes: 1-D shapes keep their trailing comma, data at 64 */
  rt_npy_write(path, RT_DT_I32, 1, cases[1].shape, i4, &err);
  FILE *fp = fopen(path, "rb");
  char head[128];
  ck_assert(fread(head, 1, 128, fp) == 128);
  fclose(fp);
  ck_assert(memcmp(head + 10, "{'descr': '<i4', 'fortran_order': False, 'shape': (7,), }", 54) == 0);
  ck_assert(head[8] == 118 && head[9] == 0 && head[127] == '\n'); /* 10 + 118 = 128 */
  ck_assert_int_eq(rt_npy_write(path, RT_DT_BF16, 1, cases[1].shape, i4, &err), -1);
  unlink(path);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rt_npy");
  TCase *tc = tcase_create("npy");
  tcase_add_test(tc, numpy_layout);
  tcase_add_test(tc, corrupt);
  tcase_add_test(tc, round_trip);
  suite_add_tcase(s, tc);
  return check_run(s);
}
