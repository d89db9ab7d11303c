/* fuzz_check.h: the assertion of the fuzz targets: a failed property is named on stderr (fd 2,
 * where the sanitizers write too) and traps, so libFuzzer reports it and keeps the input. */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK(c)                                                                                                     \
  do {                                                                                                               \
    if (!(c)) {                                                                                                      \
      static const char msg_[] = __FILE__ ": check failed: " #c "\n";                                                \
      (void)!write(2, msg_, sizeof msg_ - 1);                                                                        \
      __builtin_trap();                                                                                              \
    }                                                                                                                \
  } while (0)

/* Makes a private temporary directory NAME.XXXXXX into dir (cap bytes): in /dev/shm where there is
 * one (rewriting a file in place on ext4 starts its writeback at close), else /tmp. */
static inline void fuzz_tmpdir(char *dir, size_t cap, const char *name) {
  struct stat sb;
  int shm = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0;
  snprintf(dir, cap, "%s/%s.XXXXXX", shm ? "/dev/shm" : "/tmp", name);
  if (!mkdtemp(dir)) abort();
}

#endif
