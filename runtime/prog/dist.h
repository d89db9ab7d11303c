/* dist.h: how a generated program runs as one of several processes (data-parallel training over
 * MPI, docs/training.md "Data-parallel training"). The trainer calls the transport through one
 * table (RtDist); the table it gets is the single process's (prog/dist.c) unless the program was
 * linked with the MPI part of the runtime (modelc build --mpi: prog/dist_mpi.c, the only file
 * that includes mpi.h, in libmodelc_rt_mpi.a), whose table then takes over. So a program built
 * without --mpi does not link libmpi, and the trainer knows no MPI type.
 *
 * Every collective is blocking and over all processes, in the order every process calls them
 * (the trainer's control flow is the same on every rank: every decision that selects a
 * collective comes from data every rank holds). Point-to-point transfers are posted into one of
 * RT_DIST_GROUPS request groups and completed by waiting for the whole group. Counts are floats
 * (or doubles) and fit an int (the trainer checks the model's size once). */
#ifndef MODELC_RT_DIST_H
#define MODELC_RT_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "../core/core.h"

enum { RT_DIST_GROUPS = 3 };

typedef struct RtDist {
  const char *name; /* "one process", "MPI" */
  /* Starts the transport when the program was launched by an MPI launcher (argc/argv for
   * MPI_Init_thread); 0, or -1 with a message (the single table: -1 when a launcher started
   * several processes, which a program without MPI cannot serve). */
  int (*init)(int *argc, char ***argv, RtError *err);
  void (*finalize)(void);
  int (*rank)(void);
  int (*size)(void);
  /* Ends every process at once with this exit status (a rank that cannot go on while the
   * others wait in a collective). */
  void (*abort)(int status);
  /* In-place all-gather: rank r's part is buf[displs[r] .. displs[r] + counts[r]). */
  void (*allgatherv_f32)(float *buf, const int *counts, const int *displs);
  void (*allgatherv_f64)(double *buf, const int *counts, const int *displs);
  /* Every rank's part (rank r's counts[r] elements) gathered into root's full buffer at displs[r]
   * (full is read on root only). */
  void (*gatherv_f32)(const float *part, float *full, const int *counts, const int *displs, int root);
  /* Logical AND, and the minimum, of one int over all ranks. */
  int (*all_and)(int v);
  int (*all_min)(int v);
  /* n bytes of buf from rank root to every rank. */
  void (*bcast)(void *buf, size_t n, int root);
  /* Posts a send (send 1) or a receive of n floats to/from rank peer with a tag into group g;
   * wait(g) completes every request of the group. */
  void (*post)(int g, int send, float *buf, int n, int peer, int tag);
  void (*wait)(int g);
} RtDist;

/* The table in force: the MPI one when linked in (weak reference to rt_dist_mpi), else the
 * single process's. */
const RtDist *rt_dist(void);

/* The processes the environment says a launcher started (Open MPI's OMPI_COMM_WORLD_SIZE,
 * MPICH's PMI_SIZE), 0 when not launched by one. */
int rt_dist_launched(void);

/* stderr of a rank other than 0 while the trainer sets up (the same argument errors would print
 * once per rank): rt_dist_quiet_begin sends it to a temporary file, rt_dist_quiet_end puts it
 * back and returns up to n-1 bytes of what was written there in buf (NUL-terminated). */
void rt_dist_quiet_begin(void);
void rt_dist_quiet_end(char *buf, size_t n);

#endif
