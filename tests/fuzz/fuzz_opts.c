/* fuzz_opts.c: libFuzzer target for the generated program's command line (runtime/prog/options.c):
 * rt_parse_opts on argv vectors made from the input, with each verb's list of options, then
 * rt_check_outputs on the files a train command would read and write.
 *
 * Input: the first byte picks the verb (its option list as the verb passes it, or every option);
 * the rest, split on NUL or newline, is up to MAX_ARGS arguments after "PROG VERB". Asserted:
 * - the parser either fails, having printed one "PROG VERB: error: ..." line, or succeeds with
 *   every value inside its option's declared range, and with nothing set by an option the verb
 *   does not accept; string values point into argv;
 * - rt_check_outputs refuses (printing "is the same file as") exactly when an output names the same
 *   file as an input it may not be, or as an earlier output. Its paths are names inside a private
 *   temporary directory (holding a file, a hard link to it, a symbolic link and a directory), and
 *   it only stats them: nothing is written anywhere.
 * stderr (where the errors go) is a memory stream, rewound for each input. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "../../runtime/prog/prog.h" /* rt_parse_opts, rt_check_outputs (internal) */

#define MAX_ARGS 16
#define TERA 1000000000000LL

/* The option lists the verbs pass (runtime/prog/{infer,generate,bench,train}.c), and all options. */
static const char *const verbs[][2] = {
    {"info", ""},
    {"init", "--seed --out"},
    {"forward", "--weights --tokens --out --threads"},
    {"eval", "--weights --data --threads --tokenizer"},
    {"generate", "--weights --prompt -n --temperature --top-k --top-p --seed --no-cache --logits-out --threads "
                 "--tokenizer"},
    {"bench", "--weights --runs --threads --seed -n"},
    {"grad", "--weights --tokens --targets --out --threads"},
    {"train", "--data --weights --out --steps --stop-at --batch --micro-batch --lr --seed --eval-every "
              "--checkpoint --checkpoint-every --resume --log --threads --tokens --targets --min-lr "
              "--weight-decay --grad-clip --beta1 --beta2 --momentum --warmup --schedule --optimizer --loss-scale "
              "--loss-scale-window --tokenizer"},
    {"all", "--weights --tokens --targets --out --data --prompt --logits-out --checkpoint --resume --log --seed "
            "--threads -n --top-k --runs --temperature --top-p --no-cache --steps --stop-at --batch --micro-batch "
            "--eval-every --checkpoint-every --lr --min-lr --weight-decay --grad-clip --beta1 --beta2 --momentum "
            "--warmup --schedule --optimizer --loss-scale --loss-scale-window --tokenizer"},
};
#define NVERBS (int)(sizeof verbs / sizeof *verbs)

static char tmpdir[64];
static char errbuf[1 << 16];
static FILE *errs;
static const char *const entries[] = {"a", "b", "hard", "sym", "dir"};

static void cleanup(void) {
  char p[128];
  for (int i = 0; i < 5; i++) {
    snprintf(p, sizeof p, "%s/%s", tmpdir, entries[i]);
    i == 4 ? rmdir(p) : unlink(p);
  }
  rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  setenv("MODELC_SPIN_US", "0", 1); /* --threads starts pool workers: let them sleep */
  snprintf(tmpdir, sizeof tmpdir, "/tmp/fuzz_opts.XXXXXX");
  if (!mkdtemp(tmpdir)) abort();
  char a[128], b[128];
  snprintf(a, sizeof a, "%s/a", tmpdir);
  FILE *f = fopen(a, "w");
  if (!f) abort();
  fclose(f);
  snprintf(b, sizeof b, "%s/b", tmpdir);
  if ((f = fopen(b, "w"))) fclose(f);
  snprintf(b, sizeof b, "%s/hard", tmpdir);
  if (link(a, b)) abort(); /* "hard" is "a" */
  snprintf(b, sizeof b, "%s/sym", tmpdir);
  if (symlink("b", b)) abort(); /* "sym" is "b" */
  snprintf(b, sizeof b, "%s/dir", tmpdir);
  if (mkdir(b, 0700)) abort();
  atexit(cleanup);
  errs = fmemopen(errbuf, sizeof errbuf, "w");
  if (!errs) abort();
  stderr = errs; /* the sanitizers and libFuzzer write to their own handles of fd 2 */
  return 0;
}

static int allowed(const char *list, const char *opt) {
  size_t n = strlen(opt);
  for (const char *p = strstr(list, opt); p; p = strstr(p + 1, opt))
    if ((p == list || p[-1] == ' ') && (p[n] == ' ' || !p[n])) return 1;
  return 0;
}

static int in_argv(const char *s, char **argv, int argc) {
  for (int i = 2; i < argc; i++)
    if (s >= argv[i] && s <= argv[i] + strlen(argv[i])) return 1;
  return 0;
}

#define IN(x, lo, hi) ((x) >= (lo) && (x) <= (hi))

/* Every value the parser set lies in its option's declared range; an option the verb does not
 * accept set nothing. */
static void check_values(const RtOpts *o, const char *list, char **argv, int argc) {
  const char *const strs[] = {o->weights, o->tokens, o->targets, o->out, o->data,
                              o->prompt, o->logits_out, o->checkpoint, o->resume, o->log, o->tokenizer};
  const char *const names[] = {"--weights", "--tokens", "--targets", "--out", "--data",
                               "--prompt", "--logits-out", "--checkpoint", "--resume", "--log", "--tokenizer"};
  for (int i = 0; i < 11; i++) {
    CHECK(!strs[i] || in_argv(strs[i], argv, argc));
    CHECK(!strs[i] || allowed(list, names[i]));
  }
  CHECK(IN(o->threads, 0, 1024) && (o->threads == 0 || allowed(list, "--threads")));
  CHECK(IN(o->n, 0, 1000000000LL) && (o->have_n ? allowed(list, "-n") : o->n == 64));
  CHECK(o->have_seed ? allowed(list, "--seed") : o->seed == 1337);
  CHECK(IN(o->top_k, 0, 1LL << 30) && (!o->top_k || allowed(list, "--top-k")));
  CHECK(IN(o->runs, 1, 1000) && (o->runs == 7 || allowed(list, "--runs")));
  CHECK(IN(o->temperature, 0, 1e6) && (o->temperature == 1.0 || allowed(list, "--temperature")));
  CHECK(o->top_p > 0 && o->top_p <= 1 && (o->top_p == 1.0 || allowed(list, "--top-p")));
  CHECK(!o->no_cache || allowed(list, "--no-cache"));
  CHECK(o->have_steps ? IN(o->steps, 1, TERA) && allowed(list, "--steps") : o->steps == 0);
  CHECK(IN(o->stop_at, 0, TERA) && (!o->stop_at || allowed(list, "--stop-at")));
  CHECK(o->have_batch ? IN(o->batch, 1, 1LL << 30) && allowed(list, "--batch") : o->batch == 0);
  CHECK(o->have_micro ? IN(o->micro, 1, 1LL << 30) && allowed(list, "--micro-batch") : o->micro == 0);
  CHECK(o->have_eval ? IN(o->eval_every, 0, TERA) && allowed(list, "--eval-every") : o->eval_every == 0);
  CHECK(o->have_ckpt_every ? IN(o->ckpt_every, 0, TERA) && allowed(list, "--checkpoint-every") : !o->ckpt_every);
  CHECK(o->have_warmup ? IN(o->warmup, 0, TERA) && allowed(list, "--warmup") : o->warmup == 0);
  CHECK(o->have_lr ? o->lr > 0 && o->lr < 1e6 && allowed(list, "--lr") : o->lr == 0);
  CHECK(o->have_min_lr ? IN(o->min_lr, 0, 1e6) && allowed(list, "--min-lr") : o->min_lr == 0);
  CHECK(o->have_wd ? IN(o->weight_decay, 0, 1e6) && allowed(list, "--weight-decay") : o->weight_decay == 0);
  CHECK(o->have_clip ? IN(o->grad_clip, 0, 1e12) && allowed(list, "--grad-clip") : o->grad_clip == 0);
  CHECK(o->have_beta1 ? o->beta1 >= 0 && o->beta1 < 1 && allowed(list, "--beta1") : o->beta1 == 0);
  CHECK(o->have_beta2 ? o->beta2 >= 0 && o->beta2 < 1 && allowed(list, "--beta2") : o->beta2 == 0);
  CHECK(o->have_momentum ? o->momentum >= 0 && o->momentum < 1 && allowed(list, "--momentum") : o->momentum == 0);
  CHECK(o->have_schedule ? IN(o->schedule, 0, 2) && allowed(list, "--schedule") : o->schedule == 0);
  CHECK(o->have_opt ? IN(o->optimizer, 0, 1) && allowed(list, "--optimizer") : o->optimizer == 0);
  CHECK(o->have_loss_scale ? IN(o->loss_scale, 1, 1e30) && allowed(list, "--loss-scale") : o->loss_scale == 0);
  CHECK(o->have_scale_window ? IN(o->scale_window, 1, TERA) && allowed(list, "--loss-scale-window")
                             : o->scale_window == 0);
}

static int same(const char *a, const char *b) {
  struct stat sa, sb;
  return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* A path of the temporary directory for an argument (its '/' made '_'), or "-" as it is. */
static char *in_tmp(const char *s) {
  if (!s) return NULL;
  if (!strcmp(s, "-")) return strdup(s);
  size_t n = strlen(tmpdir) + strlen(s) + 2;
  char *p = malloc(n);
  if (!p) abort();
  snprintf(p, n, "%s/%s", tmpdir, s);
  for (char *c = p + strlen(tmpdir) + 1; *c; c++)
    if (*c == '/') *c = '_';
  return p;
}

/* rt_check_outputs on train's files (as rt_verb_train names them), against its definition. */
static void check_outputs(const RtOpts *o) {
  char *op[3] = {in_tmp(o->out), in_tmp(o->checkpoint), in_tmp(o->log)};
  char *ip[5] = {in_tmp(o->data), in_tmp(o->weights), in_tmp(o->resume), in_tmp(o->tokens), in_tmp(o->targets)};
  const RtPathArg outs[] = {{"--out", op[0], "name another --out", NULL},
                            {"--checkpoint", op[1], "name another --checkpoint", "--resume"},
                            {"--log", op[2], "name another with --log FILE", NULL}};
  const RtPathArg ins[] = {{"--data", ip[0], NULL, NULL},
                           {"--weights", ip[1], NULL, NULL},
                           {"--resume", ip[2], NULL, NULL},
                           {"--tokens", ip[3], NULL, NULL},
                           {"--targets", ip[4], NULL, NULL}};
  int clash = 0;
  for (int i = 0; i < 3; i++) {
    const char *p = outs[i].path;
    if (!p || !strcmp(p, "-")) continue;
    for (int k = 0; k < 5; k++)
      if (same(p, ins[k].path) && !(outs[i].may_be && !strcmp(outs[i].may_be, ins[k].what))) clash = 1;
    for (int k = 0; k < i; k++)
      if (outs[k].path && (!strcmp(p, outs[k].path) || same(p, outs[k].path))) clash = 1;
  }
  rewind(errs);
  memset(errbuf, 0, 256);
  int rc = rt_check_outputs("prog", "train", outs, 3, ins, 5);
  fflush(errs);
  CHECK(rc == clash);
  CHECK(!rc || (strstr(errbuf, "prog train: error: ") == errbuf && strstr(errbuf, "is the same file as")));
  for (int i = 0; i < 3; i++) free(op[i]);
  for (int i = 0; i < 5; i++) free(ip[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 4096) return 0;
  int v = data[0] % NVERBS;
  char *argv[MAX_ARGS + 3] = {"prog", (char *)verbs[v][0]};
  int argc = 2;
  for (size_t i = 1; i <= size && argc < MAX_ARGS + 2;) { /* each argument its own allocation (ASan) */
    size_t j = i;
    while (j < size && data[j] != 0 && data[j] != '\n') j++;
    if (j == size && i == size) break;
    char *a = malloc(j - i + 1);
    if (!a) abort();
    memcpy(a, data + i, j - i);
    a[j - i] = 0;
    argv[argc++] = a;
    i = j + 1;
  }
  argv[argc] = NULL;
  RtOpts o;
  int help = 0;
  rewind(errs);
  memset(errbuf, 0, 256);
  int rc = rt_parse_opts("prog", verbs[v][0], argc, argv, verbs[v][1], &o, &help);
  fflush(errs);
  CHECK(rc == 0 || rc == EXIT_USER);
  if (rc) {
    char head[64];
    snprintf(head, sizeof head, "prog %s: error: ", verbs[v][0]);
    CHECK(strncmp(errbuf, head, strlen(head)) == 0 && strchr(errbuf, '\n'));
  } else if (!help) {
    check_values(&o, verbs[v][1], argv, argc);
    check_outputs(&o);
  }
  for (int i = 2; i < argc; i++) free(argv[i]);
  return 0;
}
