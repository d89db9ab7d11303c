/* infer.c: the inference verbs of generated programs: info (model facts, embedded weights
 * checked), init (weights as the spec says, written as safetensors), export (the weights loaded and
 * written in their storage form), forward (token ids in, outputs out, both .npy) and eval
 * (next-token loss and bits per byte over a text file). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"

/* "weight formats:   f32 123456, q8_0 789012 (bytes; ...)": each parameter's storage bytes (values and
 * scales, unpadded) summed by dense dtype and by quantised format. Returns 1 when some are quantised. */
static int print_formats(const RtModel *m, FILE *o) {
  static const RtDType dense[] = {RT_DT_F32, RT_DT_BF16, RT_DT_F16, RT_DT_F64};
  static const char *dense_name[] = {"f32", "bf16", "f16", "f64"};
  enum { ND = (int)(sizeof dense / sizeof dense[0]) };
  int64_t bytes[ND + RT_FMT_COUNT] = {0};
  int quantised = 0;
  for (int i = 0; i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    int k = ND + (int)p->format;
    for (int d = 0; p->format == RT_FMT_DENSE && d < ND; d++)
      if (p->dtype == dense[d]) k = d;
    int64_t b = p->nbytes;
    for (int a = 0; a < p->naux; a++) b += p->aux[a].nbytes;
    bytes[k] += b;
    quantised |= rt_format_has_scales(p->format);
  }
  fprintf(o, "weight formats:   ");
  int first = 1;
  for (int k = 0; k < ND + RT_FMT_COUNT; k++) {
    if (!bytes[k]) continue;
    fprintf(o, "%s%s %lld", first ? "" : ", ", k < ND ? dense_name[k] : rt_format_name((RtFormat)(k - ND)),
            (long long)bytes[k]);
    first = 0;
  }
  fprintf(o, "%s(bytes%s)\n", first ? "" : " ", quantised ? "; quantised: values + scales" : "");
  return quantised;
}

static void print_info(const RtModel *m, FILE *o) {
  fprintf(o, "model:            %s (%s)\n", m->name, m->kind);
  fprintf(o, "compiled shapes:  batch %lld, context %lld, vocab %lld, output %s[%lld]\n", (long long)m->batch,
          (long long)m->context, (long long)m->vocab, m->out_per_token ? "per token " : "per sequence ",
          (long long)m->out_dim);
  fprintf(o, "parameters:       %lld\n", (long long)m->param_count);
  fprintf(o, "parameter bytes:  %lld\n", (long long)m->param_bytes);
  fprintf(o, "weight bytes:     %lld in memory (parameters at their storage dtype, 64-byte aligned)\n",
          (long long)m->weight_bytes);
  int quantised = print_formats(m, o);
  fprintf(o, "export bytes:     %lld (the data of a safetensors export: values + scales, no padding)\n",
          (long long)rt_model_export_bytes(m));
  int64_t nmask = 0, ncsr = 0, nsel = 0, kept = 0, all = 0;
  for (int i = 0; i < m->nparams; i++) {
    const RtParamInfo *p = &m->params[i];
    if (!p->prune) continue;
    nmask += rt_param_masked(p);
    nsel += p->prune->select != RT_SEL_NONE;
    if (p->format == RT_FMT_CSR) ncsr++, kept += p->prune->nnz, all += rt_param_numel(p);
  }
  if (nmask + ncsr + nsel)
    fprintf(o, "pruning:          %lld masked dense, %lld csr (room for %lld of %lld weights, sparse kernel: %s), %lld "
               "shrunk (structured)\n", (long long)nmask, (long long)ncsr, (long long)kept, (long long)all,
            rt_sparse_isa(), (long long)nsel);
  fprintf(o, "forward FLOPs:    %lld per token\n", (long long)m->flops_per_token);
  fprintf(o, "arena bytes:      %lld (planned activations)\n", (long long)m->arena_bytes);
  fprintf(o, "scratch bytes:    %zu forward (the kernels' working memory at %d thread%s)\n",
          rt_model_scratch_floats(m, 0) * sizeof(float), rt_threads(), rt_threads() == 1 ? "" : "s");
  if (m->train)
    fprintf(o, "                  %zu training\n", rt_model_scratch_floats(m, 1) * sizeof(float));
  if (m->train)
    fprintf(o, "training:         %lld FLOPs per token (forward, recompute, backward), train arena %lld bytes\n",
            (long long)m->train_flops_per_token, (long long)m->train_arena_bytes);
  if (m->train)
    fprintf(o, "precision:        %s\n", m->train_precision == RT_PREC_BF16   ? "bf16 (activations stored in bfloat16)"
                                      : m->train_precision == RT_PREC_FP16 ? "fp16 (activations stored in binary16, "
                                                                              "dynamic loss scaling)"
                                                                            : "fp32");
  else
    fprintf(o, "training:         not compiled in (add the autodiff pass)\n");
  if (m->teacher_prefix) { /* distillation: the teacher's frozen parameters, counted above */
    int64_t np = 0, ne = 0;
    for (int i = 0; i < m->nparams; i++)
      if (rt_param_is_teacher(m, &m->params[i])) np++, ne += rt_param_numel(&m->params[i]);
    fprintf(o, "teacher:          %lld parameters in %lld tensors (%s*, frozen; train --teacher-weights), loss in %d "
               "parts\n", (long long)ne, (long long)np, m->teacher_prefix, m->loss_parts);
  }
  if (m->nstate > 0)
    fprintf(o, "state bytes:      %lld at batch 1 (%d slots: %s%s)\n", (long long)(rt_model_state_floats(m, 1) * 4),
            m->nstate, m->memory ? "the segment memory" : "the KV caches",
            m->decode_unbounded ? "; rings: decoding goes past the context in this memory" : "");
  else
    fprintf(o, "state bytes:      0 (no KV cache%s)\n",
            rt_is_lm(m) ? ": generate recomputes the whole window at every step" : "");
  if (m->memory)
    fprintf(o, "segment memory:   %d positions per layer (Transformer-XL): longer texts run as segments of %lld\n",
            m->memory, (long long)m->context);
  fprintf(o, "compile options:  %s\n", m->compile_options);
  char cpu[256];
  rt_cpu_describe(cpu, sizeof cpu);
  fprintf(o, "cpu features:     %s\n", cpu);
  char gemm[256];
  rt_gemm_describe(gemm, sizeof gemm);
  fprintf(o, "gemm:             %s\n", gemm);
  if (quantised) fprintf(o, "quantised linear: %s\n", rt_quant_isa());
}

int rt_verb_info(const char *prog, int argc, char **argv, const RtModel *m) {
  RtOpts o;
  int help = 0;
  if (rt_parse_opts(prog, "info", argc, argv, "", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s info\n\nPrint the model's name, parameters, bytes, FLOPs per token, planned arena and\n"
           "compile options. With embedded weights, also checks them.\n", prog);
    return EXIT_OK;
  }
  print_info(m, stdout);
  if (m->embedded_weights) {
    RtRun r;
    RtError err;
    if (rt_run_init(&r, m, &err) || rt_run_load_weights(&r, NULL, &err)) {
      fprintf(stderr, "%s: error: %s\n", prog, err.msg);
      rt_run_free(&r);
      return EXIT_USER;
    }
    printf("weights:          embedded (%lld bytes), checked\n", (long long)(m->embedded_end - m->embedded_weights));
    rt_run_free(&r);
  } else {
    printf("weights:          not embedded (pass --weights FILE)\n");
  }
  return EXIT_OK;
}

int rt_verb_init(const char *prog, int argc, char **argv, const RtModel *m) {
  RtOpts o;
  int help = 0;
  if (rt_parse_opts(prog, "init", argc, argv, "--seed --out", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s init [--seed N] --out W.safetensors\n\nInitialise the parameters as the spec says "
           "(normal(0, 0.02) for linear and embedding\nweights, zeros for biases, ones for norm gains) with a "
           "seeded generator (default seed 1337),\nand write them as safetensors (a quantised parameter quantised from "
           "its f32 draw,\nwritten as NAME and NAME.scale: see '%s export --help').\n", prog, prog);
    return EXIT_OK;
  }
  if (!o.out) return rt_usage_error(prog, "init", "--out FILE is required");
  RtRun r;
  RtError err;
  int rc = rt_run_init(&r, m, &err) || rt_prog_init_weights(m, r.W, o.seed, &err) ||
           rt_prog_write_weights(m, r.W, o.out, NULL, 0, &err);
  rt_run_free(&r);
  if (rc) {
    return rt_prog_error(prog, &err);
  }
  return EXIT_OK;
}

int rt_verb_export(const char *prog, int argc, char **argv, const RtModel *m) {
  RtOpts o;
  int help = 0;
  if (rt_parse_opts(prog, "export", argc, argv, "--weights --out", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s export [--weights IN.safetensors] --out OUT.safetensors\n\nLoad the weights (IN, or the "
           "embedded ones) as forward does, float tensors quantised\nat load for quantised parameters, and write "
           "every parameter in its storage form:\na dense one as NAME in its dtype, a quantised one as NAME (its "
           "values) and\nNAME.scale (its scales). The file's data section is the sum of the parameters'\nbytes "
           "(values + scales, no alignment padding), as '%s info' reports it\n(export bytes).\n", prog, prog);
    return EXIT_OK;
  }
  if (!o.out) return rt_usage_error(prog, "export", "--out FILE is required");
  const RtPathArg outs[] = {{"--out", o.out, "name another --out", NULL}};
  const RtPathArg ins[] = {{"--weights", o.weights, NULL, NULL}};
  if (rt_check_outputs(prog, "export", outs, 1, ins, 1)) return EXIT_USER;
  RtRun r;
  RtError err;
  int rc = rt_run_init(&r, m, &err) || rt_run_load_weights(&r, o.weights, &err) ||
           rt_prog_write_weights(m, r.W, o.out, NULL, 0, &err);
  rt_run_free(&r);
  if (rc) {
    return rt_prog_error(prog, &err);
  }
  return EXIT_OK;
}

int rt_verb_forward(const char *prog, int argc, char **argv, const RtModel *m) {
  RtOpts o;
  int help = 0;
  if (rt_parse_opts(prog, "forward", argc, argv, "--weights --tokens --out --threads", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s forward [--weights W.safetensors] --tokens T.npy --out OUT.npy [--threads N]\n\n"
           "Run the model on token ids T (int32 or int64 [B,T], B <= %lld, T <= %lld) and write\n"
           "float32 %s.\n", prog, (long long)m->batch, (long long)m->context,
           m->out_per_token ? "logits [B,T,V]" : "outputs [B,classes]");
    if (m->memory)
      printf("Segment memory (%d positions): T may exceed the context; each row is a text run as\n"
             "consecutive segments of the context, the memory carried from one to the next.\n", m->memory);
    return EXIT_OK;
  }
  if (!o.tokens) return rt_usage_error(prog, "forward", "--tokens FILE is required");
  if (!o.out) return rt_usage_error(prog, "forward", "--out FILE is required");
  const RtPathArg outs[] = {{"--out", o.out, "name another --out", NULL}};
  const RtPathArg ins[] = {{"--weights", o.weights, NULL, NULL}, {"--tokens", o.tokens, NULL, NULL}};
  if (rt_check_outputs(prog, "forward", outs, 1, ins, 2)) return EXIT_USER;
  RtError err;
  RtRun r;
  int32_t *ids = NULL;
  int B = 0, T = 0, rc = EXIT_OK;
  float *out = NULL;
  if (rt_run_init(&r, m, &err) || rt_run_load_weights(&r, o.weights, &err) || rt_prog_read_tokens(m, o.tokens, &ids, &B, &T, &err)) {
    rc = EXIT_USER;
  } else {
    rt_run_weights_readonly(&r);
    out = rt_xalloc(rt_out_floats(m, B, T) * sizeof(float));
    RtStep s = {B, T, 0, NULL, r.scratch, 0, 0.0f, NULL};
    RtSegState st = {0};
    if (!m->memory) m->forward(&s, r.arena, r.W, ids, out);
    else if (rt_seg_state_init(&st, m, B, &err) ||
             rt_seg_forward(m, r.arena, r.W, r.scratch, &st, ids, NULL, B, T, out, NULL, NULL, &err))
      rc = EXIT_USER; /* segment memory: consecutive segments of the context */
    rt_seg_state_free(&st);
    int64_t shape[3] = {B, m->out_per_token ? T : m->out_dim, m->out_dim};
    if (!rc && rt_npy_write(o.out, RT_DT_F32, m->out_per_token ? 3 : 2, shape, out, &err)) rc = EXIT_USER;
  }
  if (rc) rt_prog_error(prog, &err);
  free(out);
  free(ids);
  rt_run_free(&r);
  return rc;
}

int rt_verb_eval(const char *prog, int argc, char **argv, const RtModel *m) {
  RtOpts o;
  int help = 0;
  if (rt_parse_opts(prog, "eval", argc, argv, "--weights --data --threads --no-memory --tokenizer", &o, &help)) return EXIT_USER;
  if (help) {
    printf("usage: %s eval [--weights W] --data FILE [--tokenizer FILE]%s\n\nMean next-token cross-entropy (nats) and "
           "bits per byte over the bytes of FILE, in\nwindows of the compiled context. --tokenizer: over FILE's "
           "tokens (llama2.c: BOS first);\nbits per byte is then the total over FILE's bytes.\n", prog,
           m->memory ? " [--no-memory]" : "");
    if (m->memory)
      printf("Segment memory (%d positions): FILE is cut into one contiguous stream per batch row\n"
             "(the last (bytes-1) mod batch predictions are not scored), each read in consecutive\n"
             "segments of the context with the memory carried; --no-memory resets it at every\n"
             "segment (the same model without memory).\n", m->memory);
    return EXIT_OK;
  }
  if (o.no_memory && !m->memory) return rt_usage_error(prog, "eval", "--no-memory: this model keeps no segment memory");
  if (!rt_is_lm(m) || (!o.tokenizer && m->vocab < RT_BYTE_VOCAB))
    return rt_usage_error(prog, "eval", "eval needs a language model (byte-level, or give --tokenizer)");
  if (!o.data) return rt_usage_error(prog, "eval", "--data FILE is required");
  RtError err;
  RtTokenizer tk;
  if (o.tokenizer && rt_prog_tokenizer(prog, "eval", m, o.tokenizer, &tk)) return EXIT_USER;
  unsigned char *text = NULL;
  int32_t *buf = NULL;
  size_t n = 0, nbytes = 0;
  int bad = rt_read_file(o.data, &text, &nbytes, &err) ||
            rt_prog_text_ids(o.tokenizer ? &tk : NULL, text, nbytes, &buf, &n, &err);
  free(text);
  if (o.tokenizer) rt_tok_free(&tk);
  if (bad) {
    return rt_prog_error(prog, &err);
  }
  if (n < 2) {
    fprintf(stderr, "%s: error: %s: needs at least 2 %s\n", prog, o.data, o.tokenizer ? "tokens" : "bytes");
    free(buf);
    return EXIT_USER;
  }
  RtRun r;
  int rc = EXIT_OK;
  int B = (int)m->batch, T = (int)m->context;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
  int32_t *tgt = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
  float *logits = rt_xalloc((size_t)B * (size_t)T * (size_t)m->vocab * sizeof(float));
  if (rt_run_init(&r, m, &err) || rt_run_load_weights(&r, o.weights, &err) || !ids || !tgt || !logits) {
    rc = rt_prog_error(prog, &err);
  } else {
    rt_run_weights_readonly(&r);
    double total = 0;
    size_t count = 0, pos = 0;
    if (m->memory) { /* segment memory: streams read segment by segment (segments.c) */
      RtSegState st;
      if (rt_seg_state_init(&st, m, B, &err)) {
        rc = rt_prog_error(prog, &err);
      } else {
        total = rt_seg_stream_loss(m, r.arena, r.W, r.scratch, &st, buf, n, o.no_memory, &count, &err);
        total *= (double)count;
      }
      rt_seg_state_free(&st);
      pos = n; /* done */
    }
    while (pos + 1 < n) {
      int nb = 0, nt = T;
      /* a batch of windows of T inputs and their next bytes; the last window may be shorter */
      size_t left = n - 1 - pos;
      if (left < (size_t)T) nt = (int)left;
      if (m->time_multiple > 1) nt -= nt % m->time_multiple; /* a pooled sequence: whole groups only */
      if (nt == 0) break;
      for (; nb < B && pos + 1 < n && n - 1 - pos >= (size_t)nt; nb++) {
        for (int t = 0; t < nt; t++) {
          ids[nb * nt + t] = buf[pos + (size_t)t];
          tgt[nb * nt + t] = buf[pos + (size_t)t + 1];
        }
        pos += (size_t)nt;
      }
      RtStep s = {nb, nt, 0, NULL, r.scratch, 0, 0.0f, NULL};
      m->forward(&s, r.arena, r.W, ids, logits);
      for (int i = 0; i < nb * nt; i++, count++) total += rt_token_nll(logits + (size_t)i * (size_t)m->vocab, m->vocab, tgt[i]);
    }
    double loss = total / (double)count;
    if (!rc)
      printf("tokens:        %zu\nloss:          %.6f nats/token\nbits per byte: %.6f\n", count, loss,
             o.tokenizer ? total / log(2.0) / (double)nbytes : loss / log(2.0));
  }
  free(buf);
  free(ids);
  free(tgt);
  free(logits);
  rt_run_free(&r);
  return rc;
}
