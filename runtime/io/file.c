/* file.c: whole files in and out: rt_read_file (a file into one malloc'd buffer),
 * rt_write_file_atomic (temporary file, fsync, rename, fsync of the directory), which the
 * safetensors and .npy writers, checkpoints and reports use so that a crash never leaves a
 * half-written file, and rt_same_file (device and inode), which the verbs use to refuse an output
 * that would destroy one of their inputs. */
#include "io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int rt_same_file(const char *a, const char *b) {
  struct stat sa, sb;
  return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* 1 if name is base + ".tmp." + six characters of mkstemp's alphabet: a temporary file this code
 * made for base (and left behind when the process was killed). */
static int is_our_tmp(const char *name, const char *base, size_t blen) {
  if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp.", 5) != 0) return 0;
  const char *x = name + blen + 5;
  for (int i = 0; i < 6; i++)
    if (!((x[i] >= 'a' && x[i] <= 'z') || (x[i] >= 'A' && x[i] <= 'Z') || (x[i] >= '0' && x[i] <= '9'))) return 0;
  return x[6] == '\0';
}

/* Removes the leftovers "path.tmp.XXXXXX" of earlier writes of path that were killed before their
 * rename (best effort: regular files only, nothing else in the directory is touched). */
static void remove_stale_tmps(const char *path) {
  char *dir = strdup(path);
  if (!dir) return;
  char *slash = strrchr(dir, '/');
  const char *base = slash ? slash + 1 : path, *d = ".";
  if (slash) {
    if (slash == dir) slash[1] = '\0';
    else *slash = '\0';
    d = dir;
  }
  size_t blen = strlen(base);
  DIR *dp = blen ? opendir(d) : NULL;
  if (dp) {
    for (struct dirent *e; (e = readdir(dp));) {
      if (!is_our_tmp(e->d_name, base, blen)) continue;
      struct stat st;
      if (fstatat(dirfd(dp), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
        (void)unlinkat(dirfd(dp), e->d_name, 0);
    }
    closedir(dp);
  }
  free(dir);
}

/* The process's umask (read by setting it and putting it back). */
static mode_t current_umask(void) {
  mode_t u = umask(022);
  umask(u);
  return u;
}

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
  remove_stale_tmps(path);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    rt_fail(err, "%s: cannot create temporary file: %s", path, strerror(errno));
    free(tmp);
    return -1;
  }
  const char *what = NULL;
  /* mkstemp makes the file 0600; the result gets the mode any new file gets: 0666 less the umask */
  if (fchmod(fd, 0666 & ~current_umask()) != 0) what = "chmod";
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

/* The whole file into a malloc'd buffer (io/io.h), bounded: a regular file is read at its size, up to
 * RT_READ_MAX_BYTES; anything else (a device, a FIFO) until end of file, refused once it passes
 * RT_READ_MAX_STREAM_BYTES, so `--data /dev/zero` is an error, not a read until memory runs out. */
int rt_read_file(const char *path, unsigned char **out, size_t *n_out, RtError *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return rt_fail(err, "%s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0) {
    int e = errno;
    fclose(f);
    return rt_fail(err, "%s: cannot stat: %s", path, strerror(e));
  }
  if (S_ISDIR(sb.st_mode)) {
    fclose(f);
    return rt_fail(err, "%s: is a directory, not a file", path);
  }
  int reg = S_ISREG(sb.st_mode);
  uint64_t limit = reg ? RT_READ_MAX_BYTES : RT_READ_MAX_STREAM_BYTES;
  if (reg && (uint64_t)sb.st_size > limit) {
    fclose(f);
    return rt_fail(err, "%s: file is %llu bytes; the limit is %llu GiB", path, (unsigned long long)sb.st_size,
                   (unsigned long long)(limit >> 30));
  }
  size_t cap = reg ? (size_t)sb.st_size + 1 : (size_t)1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  int over = 0;
  for (size_t k; buf && (k = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += k;
    if ((uint64_t)n > limit) {
      over = 1;
      break;
    }
    if (n == cap) {
      size_t nc = (uint64_t)cap * 2 > limit + 1 ? (size_t)limit + 1 : cap * 2;
      unsigned char *nb = realloc(buf, nc);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap = nc;
    }
  }
  int rerr = ferror(f) ? errno : 0;
  fclose(f);
  if (over) {
    free(buf);
    return rt_fail(err, "%s: longer than %llu MiB, the limit for a file that is not a regular file", path,
                   (unsigned long long)(limit >> 20));
  }
  if (!buf) return rt_fail(err, "%s: out of memory", path);
  if (rerr) {
    free(buf);
    return rt_fail(err, "%s: cannot read: %s", path, strerror(rerr));
  }
  *out = buf;
  *n_out = n;
  return 0;
}
