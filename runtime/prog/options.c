/* options.c: the command-line options of every verb of the generated program, parsed in one place.
 *
 * One table (rt_parse_opts below) names each option once: its spelling, its kind (a flag, a
 * string, an integer or a real in a range, an unsigned 64-bit seed, one of a few words), the field
 * of RtOpts it fills and the one it marks as given, and the hint of its error message. A verb
 * passes the space-separated list of the options it accepts (next to its --help text, which
 * documents them); anything else is an unknown option. GNU style: --key value or --key=value;
 * --help or -h anywhere asks for the verb's help. Every error is one line through rt_usage_error:
 * "PROG VERB: error: bad --steps '0' (>= 1) (see 'PROG VERB --help')". rt_check_outputs is here too:
 * every verb that writes files refuses, with one such line, an output that is one of its inputs. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"

int rt_prog_error(const char *prog, const RtError *e) {
  fprintf(stderr, "%s: error: %s\n", prog, e->msg[0] ? e->msg : "out of memory");
  return EXIT_USER;
}

int rt_usage_error(const char *prog, const char *verb, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s %s: error: ", prog, verb);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see '%s %s --help')\n", prog, verb);
  return 1;
}

int rt_check_outputs(const char *prog, const char *verb, const RtPathArg *outs, int nout, const RtPathArg *ins,
                     int nin) {
  for (int i = 0; i < nout; i++) {
    const RtPathArg *a = &outs[i];
    if (!a->path || !strcmp(a->path, "-")) continue;
    for (int k = 0; k < nin; k++)
      if ((!a->may_be || strcmp(a->may_be, ins[k].what)) && rt_same_file(a->path, ins[k].path))
        return rt_usage_error(prog, verb, "%s '%s' is the same file as the input %s '%s': writing it would destroy "
                                          "the input; %s", a->what, a->path, ins[k].what, ins[k].path, a->hint);
    for (int k = 0; k < i; k++)
      if (outs[k].path && (!strcmp(a->path, outs[k].path) || rt_same_file(a->path, outs[k].path)))
        return rt_usage_error(prog, verb, "%s '%s' is the same file as %s '%s': one output would overwrite the "
                                          "other; %s", a->what, a->path, outs[k].what, outs[k].path, a->hint);
  }
  return 0;
}

int rt_parse_real(const char *s, double lo, double hi, int lo_open, int hi_open, double *out) {
  char *end;
  errno = 0;
  double d = strtod(s, &end);
  if (errno || end == s || *end || (lo_open ? !(d > lo) : !(d >= lo)) || (hi_open ? !(d < hi) : !(d <= hi)))
    return -1;
  *out = d;
  return 0;
}

int rt_parse_int(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

int rt_parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end) return -1;
  *out = (uint64_t)v;
  return 0;
}

/* True if word is one of the space-separated words of list; *index (if non-NULL) gets its
 * position. */
static int in_list(const char *list, const char *word, int *index) {
  size_t n = strlen(word);
  int k = 0;
  for (const char *p = list; p && *p; k++) {
    while (*p == ' ') p++;
    const char *e = p;
    while (*e && *e != ' ') e++;
    if ((size_t)(e - p) == n && n && strncmp(p, word, n) == 0) {
      if (index) *index = k;
      return 1;
    }
    p = e;
  }
  return 0;
}

typedef enum ArgKind {
  ARG_FLAG,   /* no value; *(int *)dst = 1 */
  ARG_STRING, /* *(const char **)dst = the value */
  ARG_INT,    /* *(long long *)dst, in [imin, imax] */
  ARG_U64,    /* *(uint64_t *)dst: decimal digits only */
  ARG_REAL,   /* *(double *)dst, in [rmin, rmax] (lo_open / hi_open exclude an end) */
  ARG_CHOICE  /* *(int *)dst = the value's index in `choices` (space-separated words) */
} ArgKind;

/* One option of the table. */
typedef struct OptDef {
  const char *name; /* "--weights", "-n" */
  ArgKind kind;
  void *dst;
  int *given; /* set to 1 when the option appears, or NULL */
  long long imin, imax;
  double rmin, rmax;
  int lo_open, hi_open;
  const char *hint;    /* the error's "bad NAME 'VALUE' (hint)", or NULL for no parenthesis */
  const char *choices; /* ARG_CHOICE */
} OptDef;

/* Converts val into d's field; -1 after printing the error. */
static int set_opt(const char *prog, const char *verb, const OptDef *d, const char *val) {
  int bad = 0;
  switch (d->kind) {
  case ARG_FLAG: *(int *)d->dst = 1; break;
  case ARG_STRING: *(const char **)d->dst = val; break;
  case ARG_INT: bad = rt_parse_int(val, d->imin, d->imax, (long long *)d->dst); break;
  case ARG_U64: bad = rt_parse_u64(val, (uint64_t *)d->dst); break;
  case ARG_REAL: bad = rt_parse_real(val, d->rmin, d->rmax, d->lo_open, d->hi_open, (double *)d->dst); break;
  case ARG_CHOICE: bad = !in_list(d->choices, val, (int *)d->dst); break;
  }
  if (bad) {
    if (d->hint) rt_usage_error(prog, verb, "bad %s '%s' (%s)", d->name, val, d->hint);
    else rt_usage_error(prog, verb, "bad %s '%s'", d->name, val);
    return -1;
  }
  if (d->given) *d->given = 1;
  return 0;
}

/* Reads argv[2..] against the table (n rows), accepting only the options in `allowed`. */
static int parse_table(const char *prog, const char *verb, int argc, char **argv, const char *allowed,
                       const OptDef *table, int n, int *help) {
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      *help = 1;
      return 0;
    }
    char key[64];
    const char *eq = strchr(a, '='), *val = NULL;
    if (strncmp(a, "--", 2) == 0 && eq) {
      snprintf(key, sizeof key, "%.*s", (int)(eq - a), a);
      val = eq + 1;
    } else {
      snprintf(key, sizeof key, "%s", a);
    }
    const OptDef *d = NULL;
    for (int k = 0; k < n && !d; k++)
      if (!strcmp(table[k].name, key)) d = &table[k];
    if (key[0] != '-' || !d || !in_list(allowed, key, NULL))
      return rt_usage_error(prog, verb, key[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
    if (d->kind == ARG_FLAG) {
      if (val) return rt_usage_error(prog, verb, "option '%s' takes no value", key);
    } else if (!val) {
      if (i + 1 >= argc) return rt_usage_error(prog, verb, "option '%s' needs a value", key);
      val = argv[++i];
    }
    if (set_opt(prog, verb, d, val)) return EXIT_USER;
  }
  return 0;
}

_Static_assert(RT_SCHED_COSINE == 0 && RT_SCHED_CONSTANT == 1 && RT_SCHED_LINEAR == 2,
               "--schedule's words are in RtSchedule's order");
_Static_assert(RT_OPT_ADAMW == 0 && RT_OPT_SGD == 1, "--optimizer's words are in RtOptimizer's order");

int rt_parse_opts(const char *prog, const char *verb, int argc, char **argv, const char *allowed, RtOpts *o,
                  int *help) {
  memset(o, 0, sizeof *o);
  o->seed = 1337;
  o->n = 64;
  o->temperature = 1.0;
  o->top_p = 1.0;
  o->runs = 7;
  const long long TERA = 1000000000000LL;
#define OPT(nm, k, d, g) .name = nm, .kind = k, .dst = d, .given = g
  const OptDef table[] = {
      /* files */
      {OPT("--weights", ARG_STRING, &o->weights, NULL)},
      {OPT("--tokens", ARG_STRING, &o->tokens, NULL)},
      {OPT("--targets", ARG_STRING, &o->targets, NULL)},
      {OPT("--out", ARG_STRING, &o->out, NULL)},
      {OPT("--data", ARG_STRING, &o->data, NULL)},
      {OPT("--prompt", ARG_STRING, &o->prompt, NULL)},
      {OPT("--tokenizer", ARG_STRING, &o->tokenizer, NULL)},
      {OPT("--logits-out", ARG_STRING, &o->logits_out, NULL)},
      {OPT("--prompt-tokens", ARG_STRING, &o->prompt_tokens, NULL)},
      {OPT("--tokens-out", ARG_STRING, &o->tokens_out, NULL)},
      {OPT("--checkpoint", ARG_STRING, &o->checkpoint, NULL)},
      {OPT("--resume", ARG_STRING, &o->resume, NULL)},
      {OPT("--log", ARG_STRING, &o->log, NULL)},
      {OPT("--teacher-weights", ARG_STRING, &o->teacher_weights, NULL)},
      /* every verb that runs the model */
      {OPT("--seed", ARG_U64, &o->seed, &o->have_seed)},
      {OPT("--threads", ARG_INT, &o->threads, NULL), .imin = 1, .imax = 1024},
      /* generate, bench */
      {OPT("-n", ARG_INT, &o->n, &o->have_n), .imin = 0, .imax = 1000000000LL},
      {OPT("--top-k", ARG_INT, &o->top_k, NULL), .imin = 0, .imax = 1LL << 30},
      {OPT("--runs", ARG_INT, &o->runs, NULL), .imin = 1, .imax = 1000, .hint = "1..1000"},
      {OPT("--temperature", ARG_REAL, &o->temperature, NULL), .rmin = 0, .rmax = 1e6, .hint = ">= 0"},
      {OPT("--top-p", ARG_REAL, &o->top_p, NULL), .rmin = 0, .rmax = 1, .lo_open = 1, .hint = "0 < p <= 1"},
      {OPT("--no-cache", ARG_FLAG, &o->no_cache, NULL)},
      {OPT("--no-memory", ARG_FLAG, &o->no_memory, NULL)},
      /* train */
      {OPT("--steps", ARG_INT, &o->steps, &o->have_steps), .imin = 1, .imax = TERA, .hint = ">= 1"},
      {OPT("--stop-at", ARG_INT, &o->stop_at, NULL), .imin = 1, .imax = TERA, .hint = ">= 1"},
      {OPT("--batch", ARG_INT, &o->batch, &o->have_batch), .imin = 1, .imax = 1LL << 30, .hint = ">= 1"},
      {OPT("--micro-batch", ARG_INT, &o->micro, &o->have_micro), .imin = 1, .imax = 1LL << 30, .hint = ">= 1"},
      {OPT("--eval-every", ARG_INT, &o->eval_every, &o->have_eval), .imin = 0, .imax = TERA, .hint = ">= 0"},
      {OPT("--checkpoint-every", ARG_INT, &o->ckpt_every, &o->have_ckpt_every), .imin = 0, .imax = TERA,
       .hint = ">= 0"},
      {OPT("--lr", ARG_REAL, &o->lr, &o->have_lr), .rmin = 0, .rmax = 1e6, .lo_open = 1, .hi_open = 1,
       .hint = "> 0"},
      {OPT("--min-lr", ARG_REAL, &o->min_lr, &o->have_min_lr), .rmin = 0, .rmax = 1e6, .hint = ">= 0"},
      {OPT("--weight-decay", ARG_REAL, &o->weight_decay, &o->have_wd), .rmin = 0, .rmax = 1e6, .hint = ">= 0"},
      {OPT("--grad-clip", ARG_REAL, &o->grad_clip, &o->have_clip), .rmin = 0, .rmax = 1e12,
       .hint = ">= 0; 0 turns clipping off"},
      {OPT("--beta1", ARG_REAL, &o->beta1, &o->have_beta1), .rmin = 0, .rmax = 1, .hi_open = 1,
       .hint = "in [0, 1)"},
      {OPT("--beta2", ARG_REAL, &o->beta2, &o->have_beta2), .rmin = 0, .rmax = 1, .hi_open = 1,
       .hint = "in [0, 1)"},
      {OPT("--momentum", ARG_REAL, &o->momentum, &o->have_momentum), .rmin = 0, .rmax = 1, .hi_open = 1,
       .hint = "in [0, 1)"},
      {OPT("--warmup", ARG_INT, &o->warmup, &o->have_warmup), .imin = 0, .imax = TERA, .hint = ">= 0"},
      {OPT("--schedule", ARG_CHOICE, &o->schedule, &o->have_schedule), .choices = "cosine constant linear",
       .hint = "cosine, constant or linear"},
      {OPT("--optimizer", ARG_CHOICE, &o->optimizer, &o->have_opt), .choices = "adamw sgd", .hint = "adamw or sgd"},
      {OPT("--loss-scale", ARG_REAL, &o->loss_scale, &o->have_loss_scale), .rmin = 1, .rmax = 1e30,
       .hint = "in [1, 1e30]"},
      {OPT("--shard-optimizer", ARG_FLAG, &o->shard_optimizer, NULL)},
      {OPT("--loss-scale-window", ARG_INT, &o->scale_window, &o->have_scale_window), .imin = 1, .imax = TERA,
       .hint = ">= 1"},
  };
#undef OPT
  if (parse_table(prog, verb, argc, argv, allowed, table, (int)(sizeof table / sizeof *table), help))
    return EXIT_USER;
  if (*help) return 0;
  /* Every command: the pool (and single-threaded OpenBLAS) before any scratch is sized, since
   * the attention scratch holds one slice per thread. 0: MODELC_THREADS or the online CPUs. */
  rt_set_threads((int)o->threads);
  return 0;
}
