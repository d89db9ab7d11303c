/* main.c: the modelc driver. One verb per job (check, dump, stats, graph, passes, build), each
 * with --help; compiler-style flags (--passes, --print-after-all, ...). It loads a spec (YAML) or
 * an IR text file (.mir), runs the pass pipeline, and prints what was asked for.
 *
 * Exit status: 0 success, 1 user error (bad spec, IR, flags), 2 internal error.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/ir.h"
#include "../passes/memplan.h"
#include "../passes/pass.h"
#include "backend/backend.h"
#include "frontend/spec.h"
#include "import_gpt2.h"
#include "import_llama2c.h"
#include "weights.h"

extern char **environ;

#ifndef MODELC_VERSION
#define MODELC_VERSION "0.0.0"
#endif

enum { EXIT_USER = 1, EXIT_INTERNAL = 2 };

typedef struct Options {
  const char *input;
  const char *passes;        /* --passes=..., NULL when not given */
  const char *precision;     /* --precision=bf16|f32, NULL when not given */
  bool print_after_all, print_times, verify_each;
  const char *print_after, *print_before;
  const char *output;        /* -o */
  const char *emit;          /* --emit=exe|c|obj */
  const char *opt_level;     /* -O0..-O3 */
  const char *embed_weights; /* --embed-weights=FILE */
  const char *weights;       /* --weights=FILE: trained weights the passes read (lowrank) */
  const char *weights_out;   /* --weights-out=FILE: the weights after the passes (factorised) */
  Weights *win;              /* the --weights file once read (main), or NULL */
  char **names;              /* the module's parameter names before the passes (with --weights) */
  int nnames;
  bool no_native;            /* --no-native: no -march=native */
  bool mpi;                  /* --mpi: link the MPI part of the runtime (data-parallel train) */
  long batch;                /* --batch=N: compile for batch N instead of the spec's model.batch (0: keep) */
  const char *backend;       /* --backend=c|llvm (NULL: c) */
  const char *target, *mcpu; /* --target=TRIPLE, --mcpu=native|NAME (LLVM backend) */
  int run_argc;              /* modelc run: the program's command line after "--" */
  char **run_argv;
} Options;

static const char *const usage_main =
    "usage: modelc COMMAND [options] FILE\n"
    "\n"
    "modelc compiles a transformer described in YAML (docs/spec.md) into a typed tensor IR\n"
    "(docs/ir.md), optimises it with passes (docs/passes.md) and reports on it.\n"
    "\n"
    "commands:\n"
    "  check SPEC            parse and validate a spec; report every error\n"
    "  dump SPEC|FILE.mir    print the IR after the pass pipeline (stdout)\n"
    "  stats SPEC|FILE.mir   parameters, bytes, FLOPs per token and activation memory, per pass\n"
    "  graph SPEC|FILE.mir   Graphviz DOT of the model (stdout)\n"
    "  passes                list the available passes and their options\n"
    "  build SPEC -o PROG    compile to a standalone program (--backend=c|llvm, OpenBLAS runtime)\n"
    "  run SPEC -- CMD ARGS  compile in memory (LLVM JIT) and run a program command (info, forward, ...)\n"
    "  import IN -o OUT      a checkpoint -> OUT/model.yaml + OUT/model.safetensors: a Hugging Face GPT-2\n"
    "                        directory, or a llama2.c .bin file\n"
    "\n"
    "options:\n"
    "  --help, -h            help (also: modelc COMMAND --help)\n"
    "  --version             print the version\n"
    "\n"
    "Run 'modelc COMMAND --help' for the options of each command.\n";

static const char *const usage_pipeline =
    "  --passes=PIPELINE     passes to run, e.g. 'constfold,cse,fuse<max-ops=8>,dce'; default: the\n"
    "                        spec's passes: list, else the default pipeline (for .mir input: none)\n"
    "  --print-after-all     print the IR after every pass (stderr)\n"
    "  --print-after=NAME    print the IR after each run of pass NAME (stderr)\n"
    "  --print-before=NAME   print the IR before each run of pass NAME (stderr)\n"
    "  --print-pass-times    print each pass's wall time (stderr)\n"
    "  --verify-each         verify the IR after every pass (always on in debug builds)\n"
    "  --batch=N             compile for batch N instead of the spec's model.batch: the largest\n"
    "                        (micro-)batch a program runs; training memory is planned for it\n"
    "  --weights=W           trained weights (f32 safetensors) for passes that transform them at\n"
    "                        compile time (lowrank: SVD of each weight); needed by such passes\n"
    "  --weights-out=F       write the weights after the passes to F (the factors added, the\n"
    "                        replaced weights dropped, every other tensor copied); a build whose\n"
    "                        pipeline transforms weights needs it: the program then reads F\n"
    "  --precision=bf16      inference in bf16: weights stored in bf16, products in bf16 with f32\n"
    "                        accumulation (store<dtype=bf16>,compute<dtype=bf16> before the pipeline;\n"
    "                        --precision=f32, the default, adds nothing)\n";

static void print_command_help(const char *cmd) {
  if (strcmp(cmd, "check") == 0)
    printf("usage: modelc check SPEC\n\nParse and validate SPEC (YAML, docs/spec.md) and lower it to IR.\n"
           "Reports every error as FILE:LINE:COL: error: MESSAGE; exit status 1 if any.\n");
  else if (strcmp(cmd, "dump") == 0)
    printf("usage: modelc dump [options] SPEC|FILE.mir\n\nPrint the IR text (docs/ir.md) after the pass "
           "pipeline to stdout. The output can be fed back as FILE.mir.\n\noptions:\n%s",
           usage_pipeline);
  else if (strcmp(cmd, "stats") == 0)
    printf("usage: modelc stats [options] SPEC|FILE.mir\n\nPrint a table of parameters, parameter bytes, "
           "forward FLOPs per token and planned\nactivation bytes for the input and after each pass.\n\n"
           "options:\n%s",
           usage_pipeline);
  else if (strcmp(cmd, "graph") == 0)
    printf("usage: modelc graph [options] SPEC|FILE.mir\n\nPrint the model as a Graphviz DOT graph "
           "(after the pipeline) to stdout:\n  modelc graph examples/gpt-tiny.yaml | dot -Tsvg > gpt.svg\n\n"
           "options:\n%s",
           usage_pipeline);
  else if (strcmp(cmd, "passes") == 0)
    printf("usage: modelc passes\n\nList every registered pass with its description and options.\n");
  else if (strcmp(cmd, "build") == 0)
    printf("usage: modelc build [options] SPEC|FILE.mir -o PROG\n\n"
           "Compile the model to a standalone program (PROG info|init|forward|generate|eval|bench;\n"
           "see docs/runtime.md). The memplan pass is appended to the pipeline if it is not last.\n\n"
           "options:\n"
           "  -o FILE               output file (required)\n"
           "  --backend=c|llvm      the C backend (default: generated C compiled by $CC) or the LLVM\n"
           "                        backend (LLVM C API; no C compiler for the model code)\n"
           "  --emit=exe|c|obj|llvm|bc  what to write (default exe): an executable, the generated C file\n"
           "                        (C backend), an object file, textual LLVM IR or bitcode (LLVM backend)\n"
           "  -O0|-O1|-O2|-O3       optimisation level (default -O2): $CC's, or LLVM's default<On> pipeline\n"
           "  --target=TRIPLE       LLVM backend: the target (default this machine); with --emit=obj|llvm|bc\n"
           "  --mcpu=native|NAME    LLVM backend: the CPU (default native on this machine, generic otherwise)\n"
           "  --embed-weights=W     bake the safetensors file W into the program (no --weights needed)\n"
           "  --no-native           do not compile for this CPU (-march=native is the default)\n"
           "  --mpi                 link with MPI: 'mpirun -np N PROG train ...' trains data-parallel\n"
           "                        over N processes (docs/training.md); needs --emit=exe\n"
           "environment: CC (default cc) compiles and links; MODELC_RUNTIME_INCLUDE and\n"
           "MODELC_RUNTIME_LIB override where modelc_rt.h and libmodelc_rt.a are found.\n%s",
           usage_pipeline);
  else if (strcmp(cmd, "import") == 0)
    printf("usage: modelc import IN -o OUT\n\n"
           "Convert an existing checkpoint into OUT/model.yaml, a spec (docs/spec.md), and\n"
           "OUT/model.safetensors, the weights under our names and layouts; OUT is created if needed.\n"
           "IN is either\n"
           "  a Hugging Face GPT-2 checkpoint directory (config.json and model.safetensors, the names with\n"
           "  or without 'transformer.', Conv1D weights [in, out] transposed to nn.Linear's [out, in]), or\n"
           "  a llama2.c .bin file (version 0, the legacy fp32 layout, shared or unshared classifier, or\n"
           "  version 1 fp32).\n"
           "Unknown config keys, bad headers, missing or unexpected tensors, shapes other than the config's\n"
           "and dtypes other than F32 are errors; nothing is written then. Then:\n"
           "  modelc build OUT/model.yaml -o prog && ./prog forward --weights OUT/model.safetensors ...\n"
           "docs/cli.md, \"modelc import\", has the key and tensor mapping.\n");
  else if (strcmp(cmd, "run") == 0)
    printf("usage: modelc run [options] SPEC|FILE.mir -- COMMAND [ARGS]\n\n"
           "Compile the model in memory with the LLVM backend and ORC JIT and run one of the program's\n"
           "commands (info, init, forward, generate, eval, bench, train, grad; see docs/runtime.md) as\n"
           "the built program would, with no files written:\n"
           "  modelc run examples/gpt-tiny.yaml -- forward --weights w.safetensors --tokens t.npy --out y.npy\n"
           "The exit status is the command's.\n\n"
           "options:\n"
           "  -O0|-O1|-O2|-O3       LLVM optimisation level (default -O2)\n"
           "  --mcpu=native|NAME    the CPU to compile for (default native)\n"
           "  --embed-weights=W     bake the safetensors file W into the program\n%s",
           usage_pipeline);
}

/* Parses argv after the command. Returns false (after printing why) on a bad flag. */
static bool parse_args(const char *cmd, int argc, char **argv, Options *o, bool *help) {
  memset(o, 0, sizeof *o);
#ifndef NDEBUG
  o->verify_each = true;
#endif
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0 && strcmp(cmd, "run") == 0) {
      o->run_argc = argc - i - 1;
      o->run_argv = argv + i + 1;
      break;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      *help = true;
      return true;
    } else if (strncmp(a, "--passes=", 9) == 0) {
      o->passes = a + 9;
    } else if (strcmp(a, "--passes") == 0 && i + 1 < argc) {
      o->passes = argv[++i];
    } else if (strcmp(a, "--print-after-all") == 0) {
      o->print_after_all = true;
    } else if (strncmp(a, "--print-after=", 14) == 0 && a[14]) {
      o->print_after = a + 14;
    } else if (strncmp(a, "--print-before=", 15) == 0 && a[15]) {
      o->print_before = a + 15;
    } else if (strcmp(a, "--print-pass-times") == 0) {
      o->print_times = true;
    } else if (strcmp(a, "--verify-each") == 0) {
      o->verify_each = true;
    } else if ((strcmp(a, "-o") == 0 || strcmp(a, "--embed-weights") == 0 || strcmp(a, "--passes") == 0 ||
                strcmp(a, "--weights") == 0 || strcmp(a, "--weights-out") == 0) &&
               i + 1 >= argc) {
      fprintf(stderr, "modelc: error: option '%s' needs a value (see 'modelc %s --help')\n", a, cmd);
      return false;
    } else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
      o->output = argv[++i];
    } else if (strncmp(a, "--emit=", 7) == 0) {
      o->emit = a + 7;
    } else if (strcmp(a, "-O0") == 0 || strcmp(a, "-O1") == 0 || strcmp(a, "-O2") == 0 || strcmp(a, "-O3") == 0) {
      o->opt_level = a;
    } else if (strncmp(a, "--embed-weights=", 16) == 0 && a[16]) {
      o->embed_weights = a + 16;
    } else if (strcmp(a, "--embed-weights") == 0 && i + 1 < argc) {
      o->embed_weights = argv[++i];
    } else if (strncmp(a, "--weights=", 10) == 0 && a[10]) {
      o->weights = a + 10;
    } else if (strcmp(a, "--weights") == 0 && i + 1 < argc) {
      o->weights = argv[++i];
    } else if (strncmp(a, "--weights-out=", 14) == 0 && a[14]) {
      o->weights_out = a + 14;
    } else if (strcmp(a, "--weights-out") == 0 && i + 1 < argc) {
      o->weights_out = argv[++i];
    } else if (strncmp(a, "--backend=", 10) == 0) {
      o->backend = a + 10;
    } else if (strncmp(a, "--target=", 9) == 0) {
      o->target = a + 9;
    } else if (strncmp(a, "--mcpu=", 7) == 0 && a[7]) {
      o->mcpu = a + 7;
    } else if (strcmp(a, "--no-native") == 0) {
      o->no_native = true;
    } else if (strcmp(a, "--mpi") == 0 && (strcmp(cmd, "build") == 0 || strcmp(cmd, "run") == 0)) {
      o->mpi = true;
    } else if (strncmp(a, "--precision=", 12) == 0) {
      o->precision = a + 12;
      if (strcmp(o->precision, "bf16") != 0 && strcmp(o->precision, "f32") != 0) {
        fprintf(stderr, "modelc: error: --precision must be bf16 or f32, not '%s'\n", o->precision);
        return false;
      }
    } else if (strncmp(a, "--batch=", 8) == 0 || (strcmp(a, "--batch") == 0 && i + 1 < argc)) {
      const char *v = a[7] == '=' ? a + 8 : argv[++i];
      char *end;
      long b = strtol(v, &end, 10);
      if (end == v || *end || b < 1 || b > 1L << 20) {
        fprintf(stderr, "modelc: error: --batch needs a whole number from 1 to %ld, not '%s'\n", 1L << 20, v);
        return false;
      }
      o->batch = b;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "modelc: error: unknown option '%s' for 'modelc %s' (see 'modelc %s --help')\n", a, cmd,
              cmd);
      return false;
    } else if (o->input) {
      fprintf(stderr, "modelc: error: more than one input file ('%s' and '%s')\n", o->input, a);
      return false;
    } else {
      o->input = a;
    }
  }
  return true;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Loads the input (spec or .mir) and builds the pipeline to run. */
/* --precision=bf16: store<dtype=bf16>,compute<dtype=bf16> ahead of the pipeline (an inference
 * program; a pipeline that trains is refused with what to do instead). */
static bool prepend_bf16(Pipeline *pipe, Diag *d) {
  for (int i = 0; i < pipe->n; i++)
    if (strcmp(pipe->e[i].pass->name, "autodiff") == 0) {
      diag_error(d, NULL, 0, 0, "--precision=bf16 builds an inference program, and this pipeline trains "
                                "(autodiff): for bf16 training write 'train: {precision: bf16}' in the spec, or "
                                "give --passes without autodiff");
      return false;
    }
  Pipeline head;
  pass_pipeline_init(&head);
  if (!pass_parse_pipeline(&head, "store<dtype=bf16>,compute<dtype=bf16>", "--precision=bf16", 1, 1, d)) {
    pass_pipeline_free(&head);
    return false;
  }
  for (int i = 0; i < pipe->n; i++) {
    PipelineEntry *e = pass_pipeline_append(&head, pipe->e[i].pass->name, pipe->e[i].file, pipe->e[i].line,
                                            pipe->e[i].col, d);
    if (!e) {
      pass_pipeline_free(&head);
      return false;
    }
    *e = pipe->e[i];
  }
  pass_pipeline_free(pipe);
  *pipe = head;
  return true;
}

static Module *load(const Options *o, Pipeline *pipe, Diag *d) {
  Module *m = NULL;
  const Pipeline *spec_passes = NULL;
  Spec *spec = NULL;
  bool mir = ends_with(o->input, ".mir");
  if (mir) {
    size_t len = 0;
    char *text = fe_read_file(o->input, "IR", FE_MIR_MAX_BYTES, FE_MIR_MAX_STREAM_BYTES, &len, d);
    if (!text) return NULL;
    m = ir_parse(o->input, text, len, d);
    free(text);
    if (m && !ir_verify(m, d)) {
      ir_module_free(m);
      m = NULL;
    }
  } else {
    spec = fe_parse_spec_file(o->input, d);
    if (!spec) return NULL;
    if (o->batch) spec->model.batch = o->batch; /* the compiled (micro-)batch */
    m = fe_lower(spec, d);
    spec_passes = fe_spec_passes(spec);
  }
  if (!m) {
    fe_spec_free(spec);
    return NULL;
  }
  bool ok = true;
  if (o->passes) {
    diag_add_source(d, "--passes", o->passes, strlen(o->passes)); /* errors in it get a caret */
    ok = pass_parse_pipeline(pipe, o->passes, "--passes", 1, 1, d);
  }
  else if (spec_passes)
    for (int i = 0; i < spec_passes->n; i++) {
      if (pipe->n == pipe->cap) {
        pipe->cap = pipe->cap ? pipe->cap * 2 : 8;
        pipe->e = realloc(pipe->e, sizeof *pipe->e * (size_t)pipe->cap);
        if (!pipe->e) die("out of memory");
      }
      pipe->e[pipe->n] = spec_passes->e[i];
      pipe->e[pipe->n++].file = o->input; /* the spec's own copy of the name dies with the spec */
    }
  else if (!mir)
    ok = pass_parse_pipeline(pipe, pass_default_pipeline(), "<default pipeline>", 1, 1, d);
  fe_spec_free(spec);
  if (ok && o->precision && strcmp(o->precision, "bf16") == 0) ok = prepend_bf16(pipe, d);
  if (!ok) {
    ir_module_free(m);
    return NULL;
  }
  return m;
}

/* 1 if both paths exist and are the same file (device and inode): another name or a hard link
 * of an input is still the input. */
static bool same_file(const char *a, const char *b) {
  struct stat sa, sb;
  return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static bool run_passes(Module *m, const Options *o, const Pipeline *pipe, Diag *d,
                       void (*after)(void *, const Module *, const PipelineEntry *), void *ctx) {
  PassRunConfig cfg = {
      .verify_each = o->verify_each,
      .print_after_all = o->print_after_all,
      .print_after = o->print_after,
      .print_before = o->print_before,
      .print_times = o->print_times,
      .dump = stderr,
      .after_pass = after,
      .ctx = ctx,
  };
  if (o->print_after && !pass_find(o->print_after))
    diag_warning(d, NULL, 0, 0, "--print-after=%s names no registered pass", o->print_after);
  if (o->print_before && !pass_find(o->print_before))
    diag_warning(d, NULL, 0, 0, "--print-before=%s names no registered pass", o->print_before);
  if (!pass_run_pipeline(m, pipe, &cfg, d)) return false;
  if (!o->weights_out || !o->win) return true;
  /* --weights-out: the parameters the passes removed leave the file, the ones they added join it */
  char **removed = malloc(sizeof *removed * (size_t)(o->nnames + 1));
  if (!removed) die("out of memory");
  int nr = 0;
  for (int i = 0; i < o->nnames; i++)
    if (!ir_find_param(m, o->names[i])) removed[nr++] = o->names[i];
  bool ok = weights_write(o->weights_out, m, o->win, removed, nr, d);
  free(removed);
  return ok;
}

static bool pipeline_has(const Pipeline *p, const char *name) {
  for (int i = 0; i < p->n; i++)
    if (strcmp(p->e[i].pass->name, name) == 0) return true;
  return false;
}

/* --weights and --weights-out: the checks between them and the pipeline, then the weights read
 * and attached to the module's parameters (Param.data) for the passes that transform them. */
static bool weights_setup(Module *m, Options *o, const Pipeline *pipe, const char *cmd, Diag *d) {
  bool transforms = pipeline_has(pipe, "lowrank"), prog = !strcmp(cmd, "build") || !strcmp(cmd, "run");
  if (o->weights_out && !o->weights) {
    diag_error(d, NULL, 0, 0, "--weights-out=%s needs --weights=W.safetensors (the weights the passes transform)",
               o->weights_out);
    return false;
  }
  if (!o->weights) {
    if (transforms && prog)
      diag_error(d, NULL, 0, 0, "lowrank needs the trained weights: --weights W.safetensors (and --weights-out "
                                "F.safetensors for the factorised weights the program reads)");
    return !(transforms && prog);
  }
  if (transforms && prog && !o->weights_out) {
    diag_error(d, NULL, 0, 0, "lowrank replaces weights by their factors, so the program reads new weights: give "
                              "--weights-out F.safetensors (then PROG ... --weights F.safetensors)");
    return false;
  }
  if (transforms && o->embed_weights) {
    diag_error(d, NULL, 0, 0, "--embed-weights bakes a file as it is, and lowrank transforms the weights: write them "
                              "with --weights-out and give the program --weights");
    return false;
  }
  const char *outs[3][2] = {{"--weights-out", o->weights_out}, {"-o", o->output}, {NULL, NULL}};
  for (int i = 0; outs[i][0]; i++)
    if (outs[i][1] && (same_file(outs[i][1], o->weights) || !strcmp(outs[i][1], o->weights))) {
      diag_error(d, outs[i][1], 0, 0, "%s is the same file as --weights '%s': writing it would destroy the input; "
                 "name another output", outs[i][0], o->weights);
      return false;
    }
  if (o->weights_out && (same_file(o->weights_out, o->input) || same_file(o->weights_out, o->output) ||
                         (o->output && !strcmp(o->weights_out, o->output)))) {
    diag_error(d, o->weights_out, 0, 0, "--weights-out is the same file as the %s: name another file",
               same_file(o->weights_out, o->input) ? "input" : "program (-o)");
    return false;
  }
  o->win = calloc(1, sizeof *o->win);
  if (!o->win) die("out of memory");
  if (!weights_read(o->weights, o->win, d) || !weights_attach(m, o->win, d)) return false;
  o->names = malloc(sizeof *o->names * (size_t)(m->nparam + 1));
  if (!o->names) die("out of memory");
  for (int i = 0; i < m->nparam; i++) o->names[i] = strdup(m->params[i]->name);
  o->nnames = m->nparam;
  return true;
}

/* ---- stats ---- */

static int64_t tokens_per_call(const Module *m) {
  const Attr *b = ir_module_attr(m, "batch"), *t = ir_module_attr(m, "context");
  int64_t n = 1;
  if (b && b->kind == ATTR_INT && b->i > 0) n *= b->i;
  if (t && t->kind == ATTR_INT && t->i > 0) n *= t->i;
  return n;
}

static const Func *entry_func(const Module *m) {
  if (m->entry) return ir_find_func(m, m->entry);
  return m->nfunc ? m->funcs[m->nfunc - 1] : NULL;
}

static void fmt_count(char *buf, size_t n, int64_t v) {
  char raw[32];
  snprintf(raw, sizeof raw, "%lld", (long long)v);
  size_t len = strlen(raw), k = 0;
  for (size_t i = 0; i < len && k + 2 < n; i++) {
    if (i && (len - i) % 3 == 0 && raw[i - 1] != '-') buf[k++] = ',';
    buf[k++] = raw[i];
  }
  buf[k] = 0;
}

/* What the prune pass left (after the table of `modelc stats`): per kind the weights, their
 * nonzeros and storage, and why that storage (the measured break-even); the structured slices. */
static void stats_pruning(const Module *m) {
  int64_t n[PRUNE_COUNT] = {0}, ncsr[PRUNE_COUNT] = {0}, elems[PRUNE_COUNT] = {0}, kept[PRUNE_COUNT] = {0};
  double sp[PRUNE_COUNT] = {0}, be_lo = 1, be_hi = 0;
  int nsel = 0;
  for (int i = 0; i < m->nparam; i++) {
    const Param *p = m->params[i];
    nsel += p->select != SEL_NONE;
    if (p->prune == PRUNE_NONE) continue;
    int64_t e = ir_type_numel(&p->type);
    double s = p->prune == PRUNE_NM ? 1.0 - (double)p->prune_n / p->prune_m : p->sparsity;
    double be = pass_prune_breakeven(p->type.dim[0], p->type.dim[1]);
    be_lo = be < be_lo ? be : be_lo;
    be_hi = be > be_hi ? be : be_hi;
    n[p->prune]++;
    ncsr[p->prune] += p->type.dtype == DT_CSR;
    elems[p->prune] += e;
    kept[p->prune] += e - (int64_t)floor(s * (double)e + 0.5);
    sp[p->prune] = s;
  }
  for (int k = PRUNE_MAGNITUDE; k < PRUNE_COUNT; k++) {
    if (!n[k]) continue;
    char a[32], b[32];
    fmt_count(a, sizeof a, kept[k]);
    fmt_count(b, sizeof b, elems[k]);
    printf("pruning: %lld weights %s %.0f%%: %s of %s weights kept; storage: %lld csr, %lld dense masked\n",
           (long long)n[k], k == PRUNE_NM ? "n:m" : ir_prune_name((PruneKind)k), 100 * sp[k], a, b, (long long)ncsr[k],
           (long long)(n[k] - ncsr[k]));
  }
  if (n[PRUNE_MAGNITUDE] + n[PRUNE_GLOBAL] + n[PRUNE_NM]) {
    char be[64];
    if (be_hi > be_lo)
      snprintf(be, sizeof be, "%.0f%% to %.0f%% by matrix size", 100 * be_lo, 100 * be_hi);
    else
      snprintf(be, sizeof be, "%.0f%% for these matrices", 100 * be_lo);
    printf("pruning: csr (the sparse kernel) where the sparsity reaches the decode break-even measured here (%s, "
           "docs/benchmarks.md), unless the program trains or scope=global; dense masked f32 otherwise\n", be);
  }
  if (nsel) printf("pruning: %d weights shrunk (structured); their full-size tensors load by the group's score\n", nsel);
}

/* What the lowrank pass left (after the table of `modelc stats`), from the factors' lowrank= facts:
 * how many weights, their ranks and retained energies (each matrix's line is the pass's note). */
static void stats_lowrank(const Module *m) {
  int n = 0, rlo = 0, rhi = 0;
  double elo = 2, ehi = -1;
  int64_t elems = 0;
  for (int i = 0; i < m->nparam; i++) {
    const Param *p = m->params[i];
    if (!p->lowrank) continue;
    n++;
    elems += ir_type_numel(&p->type);
    rlo = !rlo || p->lowrank < rlo ? p->lowrank : rlo;
    rhi = p->lowrank > rhi ? p->lowrank : rhi;
    if (p->lowrank_energy >= 0) {
      elo = p->lowrank_energy < elo ? p->lowrank_energy : elo;
      ehi = p->lowrank_energy > ehi ? p->lowrank_energy : ehi;
    }
  }
  if (!n) return;
  char e[64] = "not known (shapes only: no --weights)", c[32];
  if (ehi >= 0) snprintf(e, sizeof e, "%.4f to %.4f", elo, ehi);
  fmt_count(c, sizeof c, elems);
  printf("lowrank: %d weights factorised by SVD into %d factors of %s parameters; rank %d to %d, retained energy %s\n",
         n / 2, n, c, rlo, rhi, e);
}

static void stats_row(void *ctx, const Module *m, const PipelineEntry *e) {
  char name[96], params[32], bytes[32], flops[32], act[32], arena[32] = "-";
  if (e)
    pass_pipeline_str(&(Pipeline){.n = 1, .cap = 1, .e = (PipelineEntry *)e}, name, sizeof name);
  else
    snprintf(name, sizeof name, "(input)");
  const Func *f = entry_func(m);
  fmt_count(params, sizeof params, ir_param_count(m));
  fmt_count(bytes, sizeof bytes, ir_param_bytes(m));
  fmt_count(flops, sizeof flops, f ? ir_func_flops(m, f) / tokens_per_call(m) : 0);
  fmt_count(act, sizeof act, f ? ir_func_peak_bytes(m, f) : 0);
  int64_t planned = f ? memplan_arena_bytes(m, f) : -1;
  if (planned >= 0) fmt_count(arena, sizeof arena, planned);
  printf("%-24s %16s %16s %16s %16s %16s\n", name, params, bytes, flops, act, arena);
  (void)ctx;
}

/* ---- graph ---- */

static void dot_escape(FILE *out, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', out);
    fputc(*s, out);
  }
}

static void graph_func(FILE *out, const Module *m, const Func *f, int idx) {
  char tb[96];
  fprintf(out, "  subgraph cluster_%d {\n    label=\"@", idx);
  dot_escape(out, f->name);
  fprintf(out, "\";\n    style=rounded;\n");
  for (int i = 0; i < f->narg; i++) {
    fprintf(out, "    f%d_v%d [shape=ellipse,label=\"%%", idx, f->args[i]->id);
    dot_escape(out, f->args[i]->name ? f->args[i]->name : "arg");
    fprintf(out, "\\n%s\"];\n", ir_type_str(&f->args[i]->type, tb, sizeof tb));
  }
  for (const Op *op = f->first; op; op = op->next) {
    const Value *v = op->out[0];
    if (op->kind == OP_PARAM) {
      fprintf(out, "    f%d_v%d [shape=note,fontsize=9,label=\"@", idx, v->id);
      dot_escape(out, ir_attr_s(op, "p"));
      fprintf(out, "\\n%s\"];\n", ir_type_str(&v->type, tb, sizeof tb));
      continue;
    }
    fprintf(out, "    f%d_v%d [shape=box,label=\"%s", idx, v->id, ir_op_name(op->kind));
    const char *callee = op->kind == OP_CALL ? ir_attr_s(op, "callee") : NULL;
    const char *expr = op->kind == OP_EW ? ir_attr_s(op, "expr") : op->kind == OP_LINEAR ? ir_attr_s(op, "epi") : NULL;
    if (callee) {
      fprintf(out, " @");
      dot_escape(out, callee);
    }
    if (expr) {
      fprintf(out, "\\n");
      dot_escape(out, expr);
    }
    fprintf(out, "\\n%s\"];\n", ir_type_str(&v->type, tb, sizeof tb));
    for (int i = 0; i < op->nin; i++) fprintf(out, "    f%d_v%d -> f%d_v%d;\n", idx, op->in[i]->id, idx, v->id);
  }
  fprintf(out, "    f%d_ret [shape=doublecircle,label=\"return\"];\n", idx);
  for (int i = 0; i < f->nret; i++) fprintf(out, "    f%d_v%d -> f%d_ret;\n", idx, f->ret[i]->id, idx);
  fprintf(out, "  }\n");
}

static void graph_module(FILE *out, const Module *m) {
  fprintf(out, "digraph \"");
  dot_escape(out, m->name);
  fprintf(out, "\" {\n  rankdir=TB;\n  node [fontname=\"Helvetica\",fontsize=10];\n");
  for (int i = 0; i < m->nfunc; i++) graph_func(out, m, m->funcs[i], i);
  /* calls: an edge from each call node to the callee's cluster */
  for (int i = 0; i < m->nfunc; i++)
    for (const Op *op = m->funcs[i]->first; op; op = op->next)
      if (op->kind == OP_CALL) {
        const Func *g = ir_find_func(m, ir_attr_s(op, "callee"));
        for (int j = 0; g && j < m->nfunc; j++)
          if (m->funcs[j] == g) {
            fprintf(out, "  f%d_v%d -> f%d_ret [style=dashed,color=gray,constraint=false];\n", i, op->out[0]->id, j);
            break;
          }
      }
  fprintf(out, "}\n");
}

/* ---- passes ---- */

static void list_passes(void) {
  int n = 0;
  const PassInfo *p = pass_registry(&n);
  static const char *const tn[] = {"int", "float", "bool", "string", "size"};
  printf("Passes (use --passes='a,b<key=value;flag>'; default pipeline: %s):\n\n", pass_default_pipeline());
  for (int i = 0; i < n; i++) {
    printf("  %-14s %s%s\n", p[i].name, p[i].desc, p[i].once ? " [once in a pipeline]" : "");
    for (int k = 0; k < p[i].nopts; k++) {
      const PassOptSpec *os = &p[i].opts[k];
      char range[96] = "";
      if (os->choices) snprintf(range, sizeof range, ", one of %s", os->choices);
      else if ((os->lo || os->hi) && os->hi == INT64_MAX) snprintf(range, sizeof range, ", at least %lld", (long long)os->lo);
      else if (os->lo || os->hi) snprintf(range, sizeof range, ", %lld to %lld", (long long)os->lo, (long long)os->hi);
      printf("  %14s   %s=<%s%s> (default %s): %s\n", "", os->key, tn[os->type], range, os->dflt, os->help);
    }
  }
}

/* ---- build ---- */

#ifndef MODELC_RT_INCLUDE
#define MODELC_RT_INCLUDE "runtime"
#endif
#ifndef MODELC_RT_LIB
#define MODELC_RT_LIB "libmodelc_rt.a"
#endif
#ifndef MODELC_RT_MPI_LIB
#define MODELC_RT_MPI_LIB "" /* this modelc was configured without MPI */
#define MODELC_RT_MPI_LINK ""
#endif
#ifndef MODELC_RT_CFLAGS
#define MODELC_RT_CFLAGS "" /* e.g. sanitizer flags when the runtime was built with them */
#endif

/* Runs argv (searching PATH); returns its exit status, or -1 if it could not start. */
static int run_command(char *const *argv, bool quiet) {
  pid_t pid;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (quiet) posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* The LLVM backend's options from the command line. */
static LlvmOptions llvm_options(const Options *o) {
  LlvmOptions lo = {2, o->target && *o->target ? o->target : NULL, o->mcpu};
  if (o->opt_level) lo.opt_level = o->opt_level[2] - '0';
  if (!lo.cpu && o->no_native) lo.cpu = "generic";
  return lo;
}

/* Checks the backend, --emit and target flags of build and run. */
static bool check_backend_flags(const Options *o, bool run, Diag *d) {
  const char *backend = o->backend ? o->backend : run ? "llvm" : "c";
  const char *emit = o->emit ? o->emit : "exe";
  bool llvm = strcmp(backend, "llvm") == 0;
  if (!llvm && strcmp(backend, "c") != 0) {
    diag_error(d, NULL, 0, 0, "--backend=%s: expected c or llvm", backend);
  } else if (run && (!llvm || o->emit || o->output)) {
    diag_error(d, NULL, 0, 0, "'modelc run' compiles with the LLVM JIT and writes nothing: --backend=c, --emit and -o "
                              "are for 'modelc build'");
  } else if (!run && strcmp(emit, "exe") && strcmp(emit, "c") && strcmp(emit, "obj") && strcmp(emit, "llvm") &&
             strcmp(emit, "bc")) {
    diag_error(d, NULL, 0, 0, "--emit=%s: expected exe, c, obj, llvm or bc", emit);
  } else if (llvm && strcmp(emit, "c") == 0) {
    diag_error(d, NULL, 0, 0, "--emit=c is the C backend's output: use --backend=c, or --emit=llvm for LLVM IR");
  } else if (!llvm && (strcmp(emit, "llvm") == 0 || strcmp(emit, "bc") == 0)) {
    diag_error(d, NULL, 0, 0, "--emit=%s needs --backend=llvm", emit);
  } else if (!llvm && (o->target || o->mcpu)) {
    diag_error(d, NULL, 0, 0, "--target and --mcpu choose the LLVM backend's target: add --backend=llvm (the C "
                              "backend compiles for this CPU unless --no-native)");
  } else if (o->target && (run || strcmp(emit, "exe") == 0)) {
    diag_error(d, NULL, 0, 0, "--target=%s: %s runs on this machine; cross-compile with --emit=obj, llvm or bc",
               o->target, run ? "'modelc run'" : "an executable");
  } else if (o->mpi && run) {
    diag_error(d, NULL, 0, 0, "--mpi links a program with the MPI part of the runtime: build one with 'modelc build "
                              "--mpi' and start it with mpirun ('modelc run' runs in this one process)");
  } else if (o->mpi && strcmp(emit, "exe") != 0) {
    diag_error(d, NULL, 0, 0, "--mpi links the program with the MPI part of the runtime: it needs --emit=exe, not "
                              "--emit=%s", emit);
  } else if (o->mpi && !MODELC_RT_MPI_LIB[0]) {
    diag_error(d, NULL, 0, 0, "--mpi: this modelc was configured without MPI (install libopenmpi-dev, as "
                              "scripts/setup.sh does, and configure again)");
  } else if (llvm && !emitll_available()) {
    diag_error(d, NULL, 0, 0, "this modelc was built without LLVM (cmake -DMODELC_LLVM=OFF): --backend=llvm and "
                              "'modelc run' are unavailable");
  } else {
    return true;
  }
  return false;
}


static int build(Module *m, const Options *o, Pipeline *pipe, int argc, char **argv, Diag *d) {
  const char *emit = o->emit ? o->emit : "exe";
  bool llvm = o->backend && strcmp(o->backend, "llvm") == 0;
  if (!check_backend_flags(o, false, d)) return EXIT_USER;
  if (!o->output) {
    diag_error(d, NULL, 0, 0, "'modelc build' needs an output file: -o FILE");
    return EXIT_USER;
  }
  /* No output may destroy an input: refuse before anything is written. */
  struct stat so;
  if (stat(o->output, &so) == 0 && S_ISDIR(so.st_mode)) {
    diag_error(d, o->output, 0, 0, "is a directory: -o names the output file (-o %s/NAME)", o->output);
    return EXIT_USER;
  }
  const char *ins[2][2] = {{"the input", o->input}, {"--embed-weights", o->embed_weights}};
  for (int i = 0; i < 2; i++)
    if (same_file(o->output, ins[i][1])) {
      diag_error(d, o->output, 0, 0, "-o is the same file as %s '%s': writing it would destroy the input; name "
                 "another output with -o", ins[i][0], ins[i][1]);
      return EXIT_USER;
    }
  if (o->embed_weights) {
    /* stat first: opening a FIFO would block, and a device (/dev/zero) has no end to embed */
    struct stat sw;
    if (stat(o->embed_weights, &sw) != 0) {
      diag_error(d, o->embed_weights, 0, 0, "cannot open weights file: %s", strerror(errno));
      return EXIT_USER;
    }
    if (S_ISDIR(sw.st_mode) || !S_ISREG(sw.st_mode)) {
      diag_error(d, o->embed_weights, 0, 0, "%s: --embed-weights names a safetensors file",
                 S_ISDIR(sw.st_mode) ? "is a directory" : "is not a regular file");
      return EXIT_USER;
    }
    FILE *w = fopen(o->embed_weights, "rb");
    if (!w) {
      diag_error(d, o->embed_weights, 0, 0, "cannot open weights file: %s", strerror(errno));
      return EXIT_USER;
    }
    fclose(w);
    if (strchr(o->embed_weights, '\n')) {
      diag_error(d, NULL, 0, 0, "--embed-weights: a file name with a newline is not supported");
      return EXIT_USER;
    }
  }
  if (pipe->n == 0 || strcmp(pipe->e[pipe->n - 1].pass->name, "memplan") != 0)
    if (!pass_pipeline_append(pipe, "memplan", "<build>", 1, 1, d)) return EXIT_INTERNAL;
  if (!run_passes(m, o, pipe, d, NULL, NULL)) return EXIT_USER;
  ir_renumber_values(m); /* the same names in the program whether m came from a spec or its dump */

  /* The compile options recorded in the program. */
  char opts[1024];
  size_t k = (size_t)snprintf(opts, sizeof opts, "modelc %s", MODELC_VERSION);
  for (int i = 1; i < argc && k < sizeof opts; i++) k += (size_t)snprintf(opts + k, sizeof opts - k, " %s", argv[i]);
  char abs_weights[PATH_MAX];
  EmitOptions eo = {.compile_options = opts, .embed_weights = NULL};
  if (o->embed_weights) {
    if (!realpath(o->embed_weights, abs_weights)) {
      diag_error(d, o->embed_weights, 0, 0, "cannot resolve path: %s", strerror(errno));
      return EXIT_USER;
    }
    eo.embed_weights = abs_weights;
  }

  if (llvm && strcmp(emit, "exe") != 0) { /* the LLVM backend writes .ll, .bc or .o itself */
    LlvmOptions lo = llvm_options(o);
    LlvmOutput kind = strcmp(emit, "llvm") == 0 ? LLVM_OUT_IR : strcmp(emit, "bc") == 0 ? LLVM_OUT_BC : LLVM_OUT_OBJ;
    return emitll_write(m, &eo, &lo, kind, o->output, d);
  }

  char cpath[PATH_MAX]; /* the generated C file, or (LLVM backend) the object file to link */
  if (strcmp(emit, "c") == 0) {
    snprintf(cpath, sizeof cpath, "%s", o->output);
  } else {
    snprintf(cpath, sizeof cpath, "%s.XXXXXX.%s", o->output, llvm ? "o" : "c");
    int fd = mkstemps(cpath, 2);
    if (fd < 0) {
      diag_error(d, o->output, 0, 0, "cannot create a temporary file next to the output: %s", strerror(errno));
      return EXIT_USER;
    }
    close(fd);
  }
  if (llvm) {
    LlvmOptions lo = llvm_options(o);
    int rc = emitll_write(m, &eo, &lo, LLVM_OUT_OBJ, cpath, d);
    if (rc != 0) {
      remove(cpath);
      return rc;
    }
  } else {
    FILE *c = fopen(cpath, "w");
    if (!c) {
      diag_error(d, cpath, 0, 0, "cannot write: %s", strerror(errno));
      return EXIT_USER;
    }
    bool ok = emitc_module(m, &eo, c, d);
    if (fclose(c) != 0) ok = false;
    if (!ok || strcmp(emit, "c") == 0) {
      if (!ok) remove(cpath);
      return ok ? 0 : EXIT_USER;
    }
  }

  const char *cc = getenv("CC");
  if (!cc || !*cc) cc = "cc";
  const char *inc = getenv("MODELC_RUNTIME_INCLUDE");
  const char *lib = getenv("MODELC_RUNTIME_LIB");
  char incflag[PATH_MAX + 3];
  snprintf(incflag, sizeof incflag, "-I%s", inc && *inc ? inc : MODELC_RT_INCLUDE);
  char *args[48];
  char rtlink[sizeof MODELC_RT_LINK]; /* split into args below, so a copy */
  memcpy(rtlink, MODELC_RT_LINK, sizeof rtlink);
  char mpilink[sizeof MODELC_RT_MPI_LINK];
  memcpy(mpilink, MODELC_RT_MPI_LINK, sizeof mpilink);
  int n = 0;
  args[n++] = (char *)cc;
  if (!llvm) { /* the LLVM backend's object only needs linking */
    args[n++] = (char *)(o->opt_level ? o->opt_level : "-O2");
    args[n++] = "-std=c11";
    args[n++] = "-ffp-contract=off"; /* as the LLVM backend: the same results from either (emit_c.c) */
    if (!o->no_native) args[n++] = "-march=native";
    args[n++] = incflag;
  }
  if (MODELC_RT_CFLAGS[0]) args[n++] = MODELC_RT_CFLAGS;
  if (strcmp(emit, "obj") == 0) args[n++] = "-c";
  args[n++] = cpath;
  args[n++] = "-o";
  args[n++] = (char *)o->output;
  if (strcmp(emit, "exe") == 0) {
    if (o->mpi) { /* the MPI table (prog/dist_mpi.c) before the runtime, which refers to it weakly:
                   * -u pulls it in */
      args[n++] = "-Wl,-u,rt_dist_mpi";
      args[n++] = (char *)MODELC_RT_MPI_LIB;
    }
    args[n++] = (char *)(lib && *lib ? lib : MODELC_RT_LIB);
    /* the runtime's own libraries (OpenBLAS, oneDNN and libgomp when built with it, libm,
     * pthreads): one space-separated list from CMake (RT_LINK_FLAGS), the runtime target's */
    for (char *w = strtok(rtlink, " "); w && n < 40; w = strtok(NULL, " ")) args[n++] = w;
    for (char *w = o->mpi ? strtok(mpilink, " ") : NULL; w && n < 46; w = strtok(NULL, " ")) args[n++] = w;
  }
  args[n] = NULL;
  int rc = run_command(args, false);
  remove(cpath);
  if (rc != 0) {
    diag_error(d, NULL, 0, 0, "%s failed (exit status %d) %s the generated code", cc, rc, llvm ? "linking" : "compiling");
    return rc < 0 ? EXIT_USER : EXIT_INTERNAL;
  }
  if (o->embed_weights && strcmp(emit, "exe") == 0) {
    /* The program validates its embedded weights: a bad file fails the build, not the user later. */
    char prog[PATH_MAX];
    snprintf(prog, sizeof prog, "%s%s", strchr(o->output, '/') ? "" : "./", o->output);
    char *info[] = {prog, "info", NULL};
    if (run_command(info, true) != 0) {
      remove(o->output);
      diag_error(d, o->embed_weights, 0, 0, "the weights do not fit the model (see the message above)");
      return EXIT_USER;
    }
  }
  return 0;
}

/* modelc run: the program's command line, compiled in memory by the LLVM JIT. */
static int run(Module *m, const Options *o, Pipeline *pipe, int argc, char **argv, Diag *d) {
  if (!check_backend_flags(o, true, d)) return EXIT_USER;
  if (o->run_argc < 1) {
    diag_error(d, NULL, 0, 0, "'modelc run' needs the program's command after '--': modelc run SPEC -- info");
    return EXIT_USER;
  }
  if (pipe->n == 0 || strcmp(pipe->e[pipe->n - 1].pass->name, "memplan") != 0)
    if (!pass_pipeline_append(pipe, "memplan", "<run>", 1, 1, d)) return EXIT_INTERNAL;
  if (!run_passes(m, o, pipe, d, NULL, NULL)) return EXIT_USER;
  ir_renumber_values(m); /* the same names in the program whether m came from a spec or its dump */
  char opts[1024];
  size_t k = (size_t)snprintf(opts, sizeof opts, "modelc %s", MODELC_VERSION);
  for (int i = 1; i < argc - o->run_argc - 1 && k < sizeof opts; i++)
    k += (size_t)snprintf(opts + k, sizeof opts - k, " %s", argv[i]);
  EmitOptions eo = {.compile_options = opts, .embed_weights = o->embed_weights};
  LlvmOptions lo = llvm_options(o);
  /* the program sees argv[0] = the model file, then the command and its arguments */
  char **pargv = calloc((size_t)o->run_argc + 2, sizeof *pargv);
  if (!pargv) die("out of memory");
  pargv[0] = (char *)o->input;
  for (int i = 0; i < o->run_argc; i++) pargv[i + 1] = o->run_argv[i];
  int status = 0;
  int rc = emitll_run(m, &eo, &lo, o->run_argc + 1, pargv, &status, d);
  free(pargv);
  return rc ? rc : status;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_main, stderr);
    return EXIT_USER;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage_main, stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("modelc %s\n", MODELC_VERSION);
    return 0;
  }
  static const char *const cmds[] = {"check", "dump", "stats", "graph", "passes", "build", "run", "import"};
  bool known = false;
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) known |= strcmp(cmd, cmds[i]) == 0;
  if (!known) {
    const char *s = diag_suggest(cmd, cmds, (int)(sizeof cmds / sizeof *cmds));
    fprintf(stderr, "modelc: error: unknown command '%s'%s%s%s (see 'modelc --help')\n", cmd,
            s ? "; did you mean '" : "", s ? s : "", s ? "'?" : "");
    return EXIT_USER;
  }

  Options o;
  bool help = false;
  if (!parse_args(cmd, argc - 2, argv + 2, &o, &help)) return EXIT_USER;
  if (help) {
    print_command_help(cmd);
    return 0;
  }
  if (strcmp(cmd, "passes") == 0) {
    list_passes();
    return 0;
  }
  if (!o.input) {
    fprintf(stderr, "modelc: error: 'modelc %s' needs an input file (see 'modelc %s --help')\n", cmd, cmd);
    return EXIT_USER;
  }
  if (strcmp(cmd, "import") == 0) { /* a checkpoint in, a spec and its weights out */
    if (!o.output) {
      fprintf(stderr, "modelc: error: 'modelc import' needs -o OUT, the output directory\n");
      return EXIT_USER;
    }
    struct stat st;
    Diag d;
    diag_init(&d, stderr);
    int rc = EXIT_USER;
    if (stat(o.input, &st) != 0)
      diag_error(&d, o.input, 0, 0, "cannot open: %s", strerror(errno));
    else if (S_ISDIR(st.st_mode))
      rc = import_gpt2(o.input, o.output, &d) ? EXIT_USER : 0;
    else
      rc = import_llama2c(o.input, o.output, &d) ? 0 : EXIT_USER;
    diag_free(&d);
    return rc;
  }

  Diag d;
  diag_init(&d, stderr);
  Pipeline pipe;
  pass_pipeline_init(&pipe);
  int status = 0;
  Module *m = load(&o, &pipe, &d);
  if (!m) {
    status = EXIT_USER;
  } else if (!weights_setup(m, &o, &pipe, cmd, &d)) {
    status = EXIT_USER;
  } else if (strcmp(cmd, "check") == 0) {
    int64_t teacher = 0; /* a distillation teacher's frozen parameters (docs/training.md) */
    for (int i = 0; i < m->nparam; i++)
      if (strncmp(m->params[i]->name, IR_TEACHER_PREFIX, strlen(IR_TEACHER_PREFIX)) == 0)
        teacher += ir_type_numel(&m->params[i]->type);
    if (teacher)
      printf("%s: ok (%s, %lld parameters, and its teacher's %lld)\n", o.input, m->name,
             (long long)(ir_param_count(m) - teacher), (long long)teacher);
    else
      printf("%s: ok (%s, %lld parameters)\n", o.input, m->name, (long long)ir_param_count(m));
  } else if (strcmp(cmd, "stats") == 0) {
    printf("%s: %lld tokens per forward call (batch x context)\n", m->name, (long long)tokens_per_call(m));
    printf("%-24s %16s %16s %16s %16s %16s\n", "after pass", "parameters", "param bytes", "FLOPs/token",
           "live peak bytes", "arena bytes");
    stats_row(NULL, m, NULL);
    if (!run_passes(m, &o, &pipe, &d, stats_row, NULL)) {
      status = EXIT_USER;
    } else {
      const Attr *tr = ir_module_attr(m, "train");
      const Func *tf = tr && tr->kind == ATTR_SYM ? ir_find_func(m, tr->s) : NULL;
      if (tf) {
        char fl[32], ar[32] = "-", lp[32];
        fmt_count(fl, sizeof fl, ir_func_flops(m, tf) / tokens_per_call(m));
        fmt_count(lp, sizeof lp, ir_func_peak_bytes(m, tf));
        int64_t a = memplan_arena_bytes(m, tf);
        if (a >= 0) fmt_count(ar, sizeof ar, a);
        printf("%-24s %16s %16s %16s %16s %16s\n", "@train (after the pipeline)", "", "", fl, lp, ar);
      }
      stats_pruning(m);
      stats_lowrank(m);
    }
  } else if (strcmp(cmd, "build") == 0) {
    status = build(m, &o, &pipe, argc, argv, &d);
  } else if (strcmp(cmd, "run") == 0) {
    status = run(m, &o, &pipe, argc, argv, &d);
  } else {
    if (!run_passes(m, &o, &pipe, &d, NULL, NULL))
      status = EXIT_USER;
    else if (strcmp(cmd, "dump") == 0)
      ir_print_module(stdout, m);
    else
      graph_module(stdout, m);
  }
  ir_module_free(m);
  pass_pipeline_free(&pipe);
  diag_free(&d);
  if (o.win) weights_free(o.win);
  free(o.win);
  for (int i = 0; i < o.nnames; i++) free(o.names[i]);
  free(o.names);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "modelc: error: cannot write the output\n");
    status = EXIT_USER;
  }
  return status;
}
