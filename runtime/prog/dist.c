/* dist.c: the single process's distribution table (prog/dist.h), the choice of table, and the
 * helpers every table shares. A program built without --mpi that a launcher started as several
 * processes refuses to run: each copy would train alone and write the same files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist.h"

/* Defined by prog/dist_mpi.c when the program links libmodelc_rt_mpi.a (modelc build --mpi, which
 * forces it in); a weak reference pulls nothing in and is NULL otherwise. */
extern const RtDist rt_dist_mpi __attribute__((weak));

static int env_int(const char *name) {
  const char *s = getenv(name);
  return s && *s ? atoi(s) : 0;
}

int rt_dist_launched(void) {
  int n = env_int("OMPI_COMM_WORLD_SIZE");
  return n ? n : env_int("PMI_SIZE");
}

static int one_init(int *argc, char ***argv, RtError *err) {
  int n = rt_dist_launched();
  if (n > 1)
    return rt_fail(err, "launched as one of %d processes, but this program was built without MPI: each copy would "
                        "train alone and write the same files; rebuild it with 'modelc build --mpi' (or run one "
                        "process)", n);
  return 0;
}
static void one_finalize(void) {}
static int one_rank(void) { return 0; }
static int one_size(void) { return 1; }
static void one_abort(int status) { exit(status); }
static void one_allgatherv_f32(float *buf, const int *counts, const int *displs) {}
static void one_allgatherv_f64(double *buf, const int *counts, const int *displs) {}
static void one_gatherv_f32(const float *part, float *full, const int *counts, const int *displs, int root) {
  memcpy(full + displs[0], part, (size_t)counts[0] * sizeof *full);
}
static int one_and(int v) { return v; }
static int one_min(int v) { return v; }
static void one_bcast(void *buf, size_t n, int root) {}
static void one_post(int g, int send, float *buf, int n, int peer, int tag) {}
static void one_wait(int g) {}

static const RtDist one = {"one process", one_init, one_finalize, one_rank, one_size, one_abort,
                           one_allgatherv_f32, one_allgatherv_f64, one_gatherv_f32, one_and, one_min, one_bcast,
                           one_post, one_wait};

const RtDist *rt_dist(void) { return &rt_dist_mpi ? &rt_dist_mpi : &one; }

/* ---- a rank's stderr while setting up ---- */

static int saved_fd = -1;
static FILE *quiet_file;

void rt_dist_quiet_begin(void) {
  fflush(stderr);
  quiet_file = tmpfile();
  if (!quiet_file) return; /* then the rank prints as rank 0 does: duplicated, not lost */
  saved_fd = dup(STDERR_FILENO);
  if (saved_fd < 0 || dup2(fileno(quiet_file), STDERR_FILENO) < 0) {
    if (saved_fd >= 0) close(saved_fd);
    saved_fd = -1;
    fclose(quiet_file);
    quiet_file = NULL;
  }
}

void rt_dist_quiet_end(char *buf, size_t n) {
  if (n) buf[0] = 0;
  if (!quiet_file) return;
  fflush(stderr);
  dup2(saved_fd, STDERR_FILENO);
  close(saved_fd);
  saved_fd = -1;
  if (n) {
    rewind(quiet_file);
    size_t got = fread(buf, 1, n - 1, quiet_file);
    buf[got] = 0;
  }
  fclose(quiet_file);
  quiet_file = NULL;
}
