/* generate.c: the generate verb: continue a text prompt with the KV cache (or without,
 * recomputing the sequence; always without for a model that has no cache, e.g. bidirectional
 * attention), greedy or sampled (prog/sample.c), sliding the window past the compiled context,
 * optionally saving every step's logits; non-finite logits stop it with an error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prog.h"

/* The number of non-finite values among the V logits, and the first one's index in *first. */
static int count_nonfinite(const float *l, int V, int *first) {
  int n = 0;
  for (int i = 0; i < V; i++)
    if (!isfinite(l[i]) && n++ == 0) *first = i;
  return n;
}

int rt_verb_generate(const char *prog, int argc, char **argv, const RtModel *m) {
  RtOpts o;
  int help = 0;
  if (rt_parse_opts(prog, "generate", argc, argv,
                 "--weights --prompt -n --temperature --top-k --top-p --seed --no-cache --logits-out --threads "
                 "--prompt-tokens --tokens-out --tokenizer", &o,
                 &help))
    return EXIT_USER;
  if (help) {
    printf("usage: %s generate [--weights W] --prompt TEXT [-n N] [--temperature X] [--top-k K]\n"
           "       [--top-p P] [--seed S] [--no-cache] [--logits-out L.npy] [--threads N]\n"
           "       [--prompt-tokens ID,ID,...] [--tokens-out T.npy] [--tokenizer FILE]\n\n"
           "Continue TEXT by N tokens (default 64), streaming them to stdout. Uses the KV cache unless\n"
           "--no-cache or the model has none (then every step recomputes the whole sequence).\n"
           "--temperature 0 is greedy. Non-finite logits (NaN or Inf) stop it with an error.\n"
           "Defaults: temperature 1, top-k off, top-p 1 (off), seed 1337. Past the compiled context\n"
           "(%lld tokens) %s. --logits-out writes each\n"
           "step's logits [N,V]. --prompt-tokens starts from token ids instead of TEXT's bytes (e.g. 1,\n"
           "a llama2.c model's BOS); --tokens-out writes the ids made, int32 [N].\n"
           "Without --tokenizer the tokens are bytes and only the continuation is printed. --tokenizer\n"
           "FILE (llama2.c tokenizer.bin; GPT-2 encoder.json with vocab.bpe beside it, or a directory\n"
           "holding them; a Hugging Face tokenizer.json) encodes TEXT, prints it, then the continuation,\n"
           "as llama2.c does; llama2.c: BOS first, --prompt '' starts from BOS alone, generation stops\n"
           "at BOS (id 1); GPT-2: --prompt '' starts from <|endoftext|>, which stops generation.\n",
           prog, (long long)m->context,
           m->decode_unbounded ? "decoding goes on with the ring KV caches (local attention, no position table),\n"
                                 "in constant memory (with --no-cache the window slides: its last half is re-encoded)"
                               : "the window slides: its last half is re-encoded");
    return EXIT_OK;
  }
  if (!rt_is_lm(m)) return rt_usage_error(prog, "generate", "this model has no language-model head");
  if (o.prompt && o.prompt_tokens) return rt_usage_error(prog, "generate", "give --prompt or --prompt-tokens, not both");
  if (!o.prompt && !o.prompt_tokens) return rt_usage_error(prog, "generate", "--prompt TEXT is required");
  if (o.prompt_tokens && o.tokenizer)
    return rt_usage_error(prog, "generate", "--prompt-tokens gives ids: --tokenizer encodes a --prompt TEXT");
  if (m->time_multiple > 1)
    return rt_usage_error(prog, "generate", "the model pools its sequence (its lengths are multiples of the pooling "
                                            "strides), so it cannot run the growing windows of generation");
  RtTokenizer tk, *tz = NULL;
  if (o.tokenizer) {
    if (rt_prog_tokenizer(prog, "generate", m, o.tokenizer, &tk)) return EXIT_USER;
    tz = &tk;
  }
  /* the id generation starts from with an empty prompt, and the one that stops it */
  int32_t start = tz ? (tz->kind == RT_TOK_LLAMA2C ? tz->bos : tz->eos) : -1;
  if (!o.prompt_tokens && !o.prompt[0] && start < 0) {
    if (tz) rt_tok_free(tz);
    return rt_usage_error(prog, "generate", "--prompt TEXT is required (non-empty%s)",
                          tz ? ": this tokenizer has no <|endoftext|> to start from" : " without --tokenizer");
  }
  const RtPathArg outs[] = {{"--logits-out", o.logits_out, "name another --logits-out", NULL},
                            {"--tokens-out", o.tokens_out, "name another --tokens-out", NULL}};
  const RtPathArg ins[] = {{"--weights", o.weights, NULL, NULL}};
  if (rt_check_outputs(prog, "generate", outs, 2, ins, 1) ||
      (!tz && !o.prompt_tokens && m->vocab < RT_BYTE_VOCAB &&
       rt_usage_error(prog, "generate",
                      "the byte tokenizer needs a vocabulary of at least 256 (or give --tokenizer)"))) {
    if (tz) rt_tok_free(tz);
    return EXIT_USER;
  }
  RtError err;
  err.msg[0] = 0; /* set by what fails; a failed malloc here leaves it empty */
  RtRun r;
  int rc = EXIT_OK;
  size_t plen = o.prompt ? strlen(o.prompt) : 0;
  int32_t *pids = NULL; /* --tokenizer: the prompt's ids */
  size_t npids = 0;
  int ctx = (int)m->context;
  /* a model without state (bidirectional attention: every position sees the later ones) has no
   * KV cache, so each step recomputes the window, exactly as --no-cache */
  int cache = !o.no_cache && m->nstate > 0;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)ctx);
  float *logits = rt_xalloc((size_t)ctx * (size_t)m->vocab * sizeof(float));
  float *probs = rt_xalloc((size_t)m->vocab * sizeof(float));
  int32_t *idx = rt_xalloc((size_t)m->vocab * sizeof(int32_t));
  float *lsave = o.logits_out ? rt_xalloc((size_t)(o.n ? o.n : 1) * (size_t)m->vocab * sizeof(float)) : NULL;
  int32_t *tsave = o.tokens_out ? malloc((size_t)(o.n ? o.n : 1) * sizeof(int32_t)) : NULL;
  int len = 0;
  if (o.prompt_tokens) { /* "1,2,3": ids in [0, vocab), at most the context less one */
    const char *p = o.prompt_tokens;
    while (ids && *p) {
      char *end;
      long long v = strtoll(p, &end, 10);
      if (end == p || v < 0 || v >= m->vocab || (*end && *end != ',') || len >= (ctx > 1 ? ctx - 1 : 1)) {
        free(ids), free(logits), free(probs), free(idx), free(lsave), free(tsave);
        return rt_usage_error(prog, "generate",
                              len >= (ctx > 1 ? ctx - 1 : 1) && end != p
                                  ? "--prompt-tokens: more ids than the context leaves room for"
                                  : "--prompt-tokens takes token ids below the vocabulary, separated by commas");
      }
      ids[len++] = (int32_t)v;
      p = *end ? end + 1 : end;
    }
    if (len == 0) {
      free(ids), free(logits), free(probs), free(idx), free(lsave), free(tsave);
      return rt_usage_error(prog, "generate", "--prompt-tokens needs at least one token id");
    }
  } else if (tz && (plen ? rt_tok_encode(tz, o.prompt, plen, 1, &pids, &npids, &err)
                         : !(pids = malloc(sizeof *pids)) ? rt_fail(&err, "out of memory") : (pids[npids++] = start, 0))) {
    fprintf(stderr, "%s: error: %s\n", prog, err.msg);
    free(ids), free(logits), free(probs), free(idx), free(lsave), free(tsave);
    rt_tok_free(tz);
    return EXIT_USER;
  }
  if (rt_run_init(&r, m, &err) || rt_run_load_weights(&r, o.weights, &err) || (cache && rt_run_kv(&r, 1, &err)) || !ids || !logits ||
      !probs || !idx || (o.logits_out && !lsave) || (o.tokens_out && !tsave)) {
    rc = rt_prog_error(prog, &err);
    goto done;
  }
  rt_run_weights_readonly(&r);
  /* keep the end of a prompt longer than the context, leaving room to generate (a context of 1
   * keeps the last byte: the window then slides at every step) */
  size_t room = ctx > 1 ? (size_t)ctx - 1 : 1;
  if (o.prompt_tokens) {
    /* the ids were read above */
  } else if (tz) {
    /* the prompt as llama2.c prints it: every piece after the one before it, BOS and the empty
     * prompt's <|endoftext|> not shown */
    for (size_t i = 0; i < npids; i++) {
      const char *piece;
      size_t pn;
      if (pids[i] == start && (i == 0 || start == tz->bos)) continue;
      rt_tok_piece(tz, i ? pids[i - 1] : -1, pids[i], &piece, &pn);
      fwrite(piece, 1, pn, stdout);
    }
    size_t skip = 0;
    if (npids > room) {
      skip = npids - room;
      fprintf(stderr, "%s: note: prompt truncated to its last %zu token%s\n", prog, room, room == 1 ? "" : "s");
    }
    len = (int)(npids - skip);
    memcpy(ids, pids + skip, (size_t)len * sizeof(int32_t));
  } else {
    if (plen > room) {
      fprintf(stderr, "%s: note: prompt truncated to its last %zu byte%s\n", prog, room, room == 1 ? "" : "s");
      o.prompt += plen - room;
      plen = room;
    }
    len = (int)rt_byte_encode(ids, o.prompt, plen);
  }
  RtSampleParams sp = {(float)o.temperature, (int)o.top_k, (float)o.top_p};
  RtRng g;
  rt_rng_seed(&g, o.seed);
  /* prefill */
  RtStep s = {1, len, 0, cache ? r.state : NULL, r.scratch, 0, 0.0f, NULL};
  m->forward(&s, r.arena, r.W, ids, logits);
  const float *last = logits + (size_t)(len - 1) * (size_t)m->vocab;
  long made = 0, pos = len; /* pos: the next token's position (decode_unbounded) */
  for (; made < o.n; made++) {
    if (lsave) memcpy(lsave + (size_t)made * (size_t)m->vocab, last, (size_t)m->vocab * sizeof(float));
    int first = 0, bad = count_nonfinite(last, (int)m->vocab, &first);
    if (bad) {
      fflush(stdout);
      fprintf(stderr,
              "%s: error: generate: the logits are not finite at step %ld (%d of %lld are NaN or Inf, the "
              "first at token %d: %g): the weights or the model have diverged\n",
              prog, made + 1, bad, (long long)m->vocab, first, (double)last[first]);
      rc = EXIT_USER;
      goto done;
    }
    int tok = rt_sample(last, (int)m->vocab, &sp, &g, probs, idx);
    if (tsave) tsave[made] = tok;
    if (tz && tok == start) { /* llama2.c: BOS delimits sequences; GPT-2: <|endoftext|> */
      made++;
      break;
    }
    if (tz) {
      const char *piece;
      size_t pn;
      rt_tok_piece(tz, ids[len - 1], tok, &piece, &pn);
      fwrite(piece, 1, pn, stdout);
    } else if (tok < RT_BYTE_VOCAB) {
      putchar(tok);
    } else {
      printf("<%d>", tok);
    }
    fflush(stdout);
    if (made + 1 == o.n) {
      made++;
      break;
    }
    if (cache && m->decode_unbounded) {
      /* ring caches and no position table: the next position is simply t0 = pos, past the
       * context as well; ids keeps the last ctx tokens (only the new one is read) */
      if (len >= ctx) {
        memmove(ids, ids + 1, (size_t)(ctx - 1) * sizeof(int32_t));
        len = ctx - 1;
      }
      ids[len++] = tok;
      RtStep step = {1, 1, (int)(pos++), r.state, r.scratch, 0, 0.0f, NULL};
      m->forward(&step, r.arena, r.W, ids + len - 1, logits);
      last = logits;
      continue;
    }
    if (len >= ctx) {
      /* the window is full: keep its last half and re-encode it from position 0 (a sliding
       * window in steps of ctx/2, so the cache is rebuilt once every ctx/2 tokens) */
      int keep = ctx / 2;
      memmove(ids, ids + len - keep, (size_t)keep * sizeof(int32_t));
      len = keep;
      ids[len++] = tok;
      RtStep pre = {1, len, 0, cache ? r.state : NULL, r.scratch, 0, 0.0f, NULL};
      m->forward(&pre, r.arena, r.W, ids, logits);
      last = logits + (size_t)(len - 1) * (size_t)m->vocab;
      continue;
    }
    ids[len++] = tok;
    if (!cache) {
      RtStep full = {1, len, 0, NULL, r.scratch, 0, 0.0f, NULL};
      m->forward(&full, r.arena, r.W, ids, logits);
      last = logits + (size_t)(len - 1) * (size_t)m->vocab;
    } else {
      RtStep step = {1, 1, len - 1, r.state, r.scratch, 0, 0.0f, NULL};
      m->forward(&step, r.arena, r.W, ids + len - 1, logits);
      last = logits;
    }
  }
  if (lsave) {
    int64_t shape[2] = {made, m->vocab};
    if (rt_npy_write(o.logits_out, RT_DT_F32, 2, shape, lsave, &err)) {
      rc = rt_prog_error(prog, &err);
    }
  }
  if (tsave) {
    int64_t shape[1] = {made};
    if (rt_npy_write(o.tokens_out, RT_DT_I32, 1, shape, tsave, &err)) {
      rc = rt_prog_error(prog, &err);
    }
  }
done:
  if (tz) rt_tok_free(tz);
  free(pids);
  free(ids);
  free(logits);
  free(probs);
  free(idx);
  free(lsave);
  free(tsave);
  rt_run_free(&r);
  return rc;
}
