/* sh.h: run a shell command from a Check test (the end-to-end tests drive modelc and the programs
 * it builds): printf-style, returns the exit status (-1 if it did not exit normally). */
#ifndef MODELC_TEST_SH_H
#define MODELC_TEST_SH_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static int sh(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#endif
