/* fuzz_ir.c: libFuzzer target for the IR text parser: any bytes either give a module that
 * verifies and prints back to text that parses to the same text, or are rejected with
 * diagnostics. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../ir/ir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *sink = fopen("/dev/null", "w");
  Diag d;
  diag_init(&d, sink);
  Module *m = ir_parse("fuzz.mir", (const char *)data, size, &d);
  if (m) {
    if (!ir_verify(m, &d)) __builtin_trap();
    char *a = ir_print_to_string(m);
    Module *m2 = ir_parse("again.mir", a, strlen(a), &d);
    if (!m2) __builtin_trap(); /* printed text must parse */
    char *b = ir_print_to_string(m2);
    if (strcmp(a, b) != 0) __builtin_trap(); /* print(parse(print(m))) == print(m) */
    free(a);
    free(b);
    ir_module_free(m2);
    ir_module_free(m);
  } else if (d.nerrors == 0) {
    __builtin_trap();
  }
  diag_free(&d);
  fclose(sink);
  return 0;
}
