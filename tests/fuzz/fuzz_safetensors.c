/* fuzz_safetensors.c: libFuzzer target for the safetensors and .npy readers (the runtime's, and the
 * compiler's for --weights, compiler/weights.c): any bytes are either accepted with every tensor
 * inside the buffer and consistent with its shape, or rejected with a message. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../../compiler/weights.h"

#include "../../runtime/modelc_rt.h"
#include "../../runtime/io/io.h" /* .npy, safetensors (internal) */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  RtSafetensors *st = NULL;
  RtError err;
  err.msg[0] = 0;
  if (rt_st_open_buffer(&st, data, size, "fuzz.safetensors", &err) == 0) {
    for (int i = 0; i < rt_st_count(st); i++) {
      const RtTensor *t = rt_st_tensor(st, i);
      size_t n = rt_dtype_size(t->dtype);
      for (int k = 0; k < t->ndim; k++) n *= (size_t)t->shape[k];
      if (n != t->nbytes) __builtin_trap();
      volatile uint8_t sum = 0; /* every byte readable (ASan checks) */
      for (size_t k = 0; k < t->nbytes; k++) sum ^= ((const uint8_t *)t->data)[k];
      (void)sum;
    }
    rt_st_close(st);
  } else if (!err.msg[0]) {
    __builtin_trap();
  }
  static FILE *null;
  if (!null) null = fopen("/dev/null", "w");
  Diag d;
  diag_init(&d, null);
  Weights w;
  if (weights_parse(data, size, "fuzz.safetensors", &w, &d)) {
    for (int i = 0; i < w.n; i++) {
      const WTensor *t = &w.t[i];
      if (t->end < t->begin || t->end > w.data_len) __builtin_trap();
      volatile uint8_t sum = 0;
      for (uint64_t k = t->begin; k < t->end; k++) sum ^= w.data[k];
      (void)sum;
    }
    weights_free(&w);
  } else if (d.nerrors == 0) {
    __builtin_trap();
  }
  diag_free(&d);
  RtNpy a;
  err.msg[0] = 0;
  if (rt_npy_parse(data, size, "fuzz.npy", &a, &err) == 0) {
    size_t n = rt_dtype_size(a.dtype);
    for (int k = 0; k < a.ndim; k++) n *= (size_t)a.shape[k];
    if (n != a.nbytes) __builtin_trap();
    rt_npy_free(&a);
  } else if (!err.msg[0]) {
    __builtin_trap();
  }
  return 0;
}
