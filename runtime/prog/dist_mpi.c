/* dist_mpi.c: the distribution table over MPI (prog/dist.h), the only file of the runtime that
 * includes mpi.h. It is compiled into libmodelc_rt_mpi.a, which `modelc build --mpi` links (with
 * -u rt_dist_mpi, so that the table is pulled in) ahead of libmodelc_rt.a and libmpi.
 *
 * MPI starts only when a launcher started the program (rt_dist_launched); run on its own, an
 * MPI program is one process and never touches MPI. Only the main thread calls MPI (the thread
 * pool computes): MPI_THREAD_FUNNELED. A rank's stdout goes to /dev/null unless it is rank 0:
 * rank 0 writes the outputs meant for programs, the others would repeat them. MPI's errors abort
 * every process (MPI_ERRORS_ARE_FATAL, the default): a rank that dies ends the run. */
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "dist.h"

static int started, me, nranks = 1;

/* The request groups: grown by post (before a step's first one, never in steady state, as each
 * step posts the same requests). */
static struct {
  MPI_Request *q;
  int n, cap;
} groups[RT_DIST_GROUPS];

static int mpi_init(int *argc, char ***argv, RtError *err) {
  if (rt_dist_launched() <= 0) return 0;
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    return rt_fail(err, "MPI_Init_thread failed");
  started = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  if (me != 0) {
    fflush(stdout);
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      close(fd);
    }
  }
  return 0;
}

static void mpi_finalize(void) {
  if (!started) return;
  for (int g = 0; g < RT_DIST_GROUPS; g++) free(groups[g].q);
  MPI_Finalize();
  started = 0;
}

static int mpi_rank(void) { return me; }
static int mpi_size(void) { return nranks; }

static void mpi_abort(int status) {
  fflush(stdout);
  fflush(stderr);
  if (started) MPI_Abort(MPI_COMM_WORLD, status);
  exit(status);
}

static void mpi_allgatherv_f32(float *buf, const int *counts, const int *displs) {
  MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
}

static void mpi_allgatherv_f64(double *buf, const int *counts, const int *displs) {
  MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_DOUBLE, MPI_COMM_WORLD);
}

static void mpi_gatherv_f32(const float *part, float *full, const int *counts, const int *displs, int root) {
  MPI_Gatherv(part, counts[me], MPI_FLOAT, full, counts, displs, MPI_FLOAT, root, MPI_COMM_WORLD);
}

static int mpi_and(int v) {
  int out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return out;
}

static int mpi_min(int v) {
  int out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return out;
}

static void mpi_bcast(void *buf, size_t n, int root) { MPI_Bcast(buf, (int)n, MPI_BYTE, root, MPI_COMM_WORLD); }

static void mpi_post(int g, int send, float *buf, int n, int peer, int tag) {
  if (groups[g].n == groups[g].cap) {
    int cap = groups[g].cap ? 2 * groups[g].cap : 16;
    MPI_Request *q = realloc(groups[g].q, (size_t)cap * sizeof *q);
    if (!q) {
      fprintf(stderr, "error: out of memory for MPI requests\n");
      mpi_abort(2);
    }
    groups[g].q = q, groups[g].cap = cap;
  }
  MPI_Request *q = &groups[g].q[groups[g].n++];
  if (send) MPI_Isend(buf, n, MPI_FLOAT, peer, tag, MPI_COMM_WORLD, q);
  else MPI_Irecv(buf, n, MPI_FLOAT, peer, tag, MPI_COMM_WORLD, q);
}

static void mpi_wait(int g) {
  MPI_Waitall(groups[g].n, groups[g].q, MPI_STATUSES_IGNORE);
  groups[g].n = 0;
}

const RtDist rt_dist_mpi = {"MPI", mpi_init, mpi_finalize, mpi_rank, mpi_size, mpi_abort,
                            mpi_allgatherv_f32, mpi_allgatherv_f64, mpi_gatherv_f32, mpi_and, mpi_min, mpi_bcast,
                            mpi_post, mpi_wait};
