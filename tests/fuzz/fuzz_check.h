/* fuzz_check.h: the assertion of the fuzz targets: a failed property is named on stderr (fd 2,
 * where the sanitizers write too) and traps, so libFuzzer reports it and keeps the input. */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <unistd.h>

#define CHECK(c)                                                                                                     \
  do {                                                                                                               \
    if (!(c)) {                                                                                                      \
      static const char msg_[] = __FILE__ ": check failed: " #c "\n";                                                \
      (void)!write(2, msg_, sizeof msg_ - 1);                                                                        \
      __builtin_trap();                                                                                              \
    }                                                                                                                \
  } while (0)

#endif
