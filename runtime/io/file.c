/* file.c: whole files in and out: rt_read_file (a file into one malloc'd buffer) and
 * rt_write_file_atomic (temporary file, fsync, rename, fsync of the directory), which the
 * safetensors and .npy writers, checkpoints and reports use so that a crash never leaves a
 * half-written file. */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int rt_write_file_atomic(const char *path, const RtChunk *chunks, int n, RtError *err) {
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 16);
  if (!tmp)
    return rt_fail(err, "%s: out of memory", path);
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp.XXXXXX", 12);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    rt_fail(err, "%s: cannot create temporary file: %s", path, strerror(errno));
    free(tmp);
    return -1;
  }
  const char *what = NULL;
  for (int i = 0; i < n && !what; i++)
    if (chunks[i].len && write_all(fd, chunks[i].data, chunks[i].len) != 0)
      what = "write";
  if (!what && fsync(fd) != 0)
    what = "fsync";
  int saved = errno;
  if (close(fd) != 0 && !what) {
    what = "close";
    saved = errno;
  }
  if (!what && rename(tmp, path) != 0) {
    what = "rename";
    saved = errno;
  }
  if (what) {
    unlink(tmp);
    free(tmp);
    return rt_fail(err, "%s: %s failed: %s", path, what, strerror(saved));
  }
  free(tmp);
  /* Make the rename itself durable: fsync the containing directory (best effort). */
  char *dir = strdup(path);
  if (dir) {
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash) {
      if (slash == dir)
        slash[1] = '\0';
      else
        *slash = '\0';
      d = dir;
    }
    int dfd = open(d, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
    free(dir);
  }
  return 0;
}

/* The whole file into a malloc'd buffer (io/io.h). */
int rt_read_file(const char *path, unsigned char **out, size_t *n_out, RtError *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return rt_fail(err, "%s: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  for (size_t k; buf && (k = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += k;
    if (n == cap) {
      unsigned char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  int bad = ferror(f) || !buf;
  fclose(f);
  if (bad) {
    free(buf);
    return rt_fail(err, "%s: cannot read", path);
  }
  *out = buf;
  *n_out = n;
  return 0;
}
