/* fuzz_spec.c: libFuzzer target for the spec frontend: any bytes either parse and lower to a
 * module that verifies, or are rejected with diagnostics; never a crash, hang or leak. */
#include <stdint.h>
#include <stdio.h>

#include "../../compiler/frontend/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *sink = fopen("/dev/null", "w");
  Diag d;
  diag_init(&d, sink);
  Spec *s = fe_parse_spec_text("fuzz.yaml", (const char *)data, size, &d);
  if (s) {
    Module *m = fe_lower(s, &d);
    if (m && !ir_verify(m, &d)) __builtin_trap(); /* a checked spec must lower to valid IR */
    ir_module_free(m);
    fe_spec_free(s);
  } else if (d.nerrors == 0) {
    __builtin_trap(); /* rejected without saying why */
  }
  diag_free(&d);
  fclose(sink);
  return 0;
}
