/* main.c: the command line of every generated program (rt_main): the table of verbs (info, init,
 * export, forward, generate, eval, bench, train, grad), the program's help, and dispatch to the verb's
 * function (prog.h), between the distribution layer's start and end (prog/dist.h: MPI, when the
 * program was built with --mpi and launched by mpirun). Everything a user can get wrong is
 * reported as one clear line and exit status 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "prog.h"

static const char *prog_name(const char *argv0) {
  const char *s = strrchr(argv0, '/');
  return s ? s + 1 : argv0;
}

/* The verbs: name, function, and the line of the program's help. */
static const struct {
  const char *name;
  int (*run)(const char *prog, int argc, char **argv, const RtModel *m);
  const char *summary;
} verbs[] = {
    {"info", rt_verb_info, "model facts: parameters, bytes, FLOPs, planned memory, compile options"},
    {"init", rt_verb_init, "initialise weights and write them as safetensors"},
    {"export", rt_verb_export, "load weights and write them in their storage form (quantised: values + scales)"},
    {"forward", rt_verb_forward, "run token ids (.npy) through the model, write the outputs (.npy)"},
    {"generate", rt_verb_generate, "continue a text prompt (KV cache, greedy or sampled)"},
    {"eval", rt_verb_eval, "next-token loss and bits per byte over a text file"},
    {"bench", rt_verb_bench, "forward and decode speed"},
    {"train", rt_verb_train, "train on a byte file (AdamW/SGD, checkpoints, CSV log, SVG loss curve)"},
    {"grad", rt_verb_grad, "one training step's loss and parameter gradients (.safetensors)"},
    {"importance", rt_verb_importance, "attention head importance (Michel et al.) for prune<kind=heads>"},
};
enum { NVERBS = (int)(sizeof verbs / sizeof verbs[0]) };

static int run_verb(const char *prog, int argc, char **argv, const RtModel *m) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    FILE *o = argc < 2 ? stderr : stdout;
    fprintf(o, "usage: %s COMMAND [options]\n\n%s: a standalone program for the model \"%s\", compiled by modelc.\n\n"
               "commands:\n", prog, prog, m->name);
    for (int i = 0; i < NVERBS; i++) fprintf(o, "  %-11s%s\n", verbs[i].name, verbs[i].summary);
    fprintf(o, "\nRun '%s COMMAND --help' for each command's options.\n", prog);
    return argc < 2 ? EXIT_USER : EXIT_OK;
  }
  const char *v = argv[1];
  RtError err;
  if (rt_gemm_init(&err)) { /* MODELC_GEMM names an implementation this build or CPU lacks */
    return rt_prog_error(prog, &err);
  }
  /* several processes (mpirun): train splits each batch over them; any other verb would run N
   * times over the same files */
  const RtDist *d = rt_dist();
  if (d->size() > 1 && strcmp(v, "train") != 0) {
    if (d->rank() == 0)
      fprintf(stderr, "%s: error: '%s' runs in one process; of the commands only 'train' runs over MPI (launched "
                      "as %d processes)\n", prog, v, d->size());
    return EXIT_USER;
  }
  for (int i = 0; i < NVERBS; i++)
    if (!strcmp(v, verbs[i].name)) return verbs[i].run(prog, argc, argv, m);
  fprintf(stderr, "%s: error: unknown command '%s' (commands: ", prog, v);
  for (int i = 0; i < NVERBS; i++) fprintf(stderr, "%s%s", i ? ", " : "", verbs[i].name);
  fprintf(stderr, "; see '%s --help')\n", prog);
  return EXIT_USER;
}

int rt_main(int argc, char **argv, const RtModel *m) {
  const char *prog = prog_name(argc > 0 ? argv[0] : "model");
  const RtDist *d = rt_dist();
  RtError err;
  if (d->init(&argc, &argv, &err)) { /* launched as several processes without MPI: the first says why */
    const char *r = getenv("OMPI_COMM_WORLD_RANK") ? getenv("OMPI_COMM_WORLD_RANK") : getenv("PMI_RANK");
    if (!r || !strcmp(r, "0")) fprintf(stderr, "%s: error: %s\n", prog, err.msg);
    return EXIT_USER;
  }
  int rc = run_verb(prog, argc, argv, m);
  d->finalize();
  return rc;
}
