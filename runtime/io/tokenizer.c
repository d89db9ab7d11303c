/* tokenizer.c: the tokenizers of --tokenizer FILE (docs/runtime.md, "Tokenizers"): loading and
 * format detection, the piece table and its hash, llama2.c's tokenizer.bin (scores and pieces,
 * run.c's encoding: BOS, a dummy-prefix space, codepoint lookup with <0xXX> byte fallback, then
 * merges of the best-scoring adjacent pair), and decoding for every format. GPT-2's byte-level BPE
 * (encoder.json + vocab.bpe, tokenizer.json) is in io/bpe.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io.h"

/* ---- the piece table ----------------------------------------------------------------------- */

static uint64_t fnv1a(const unsigned char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ s[i]) * 1099511628211ull;
  return h;
}

int rt_tok_alloc(RtTokenizer *t, int vocab, size_t store_bytes, RtError *err) {
  t->vocab = vocab;
  t->store = malloc(store_bytes ? store_bytes : 1);
  t->off = malloc(sizeof *t->off * (size_t)vocab);
  t->len = malloc(sizeof *t->len * (size_t)vocab);
  t->score = calloc((size_t)vocab, sizeof *t->score);
  t->hcap = 16;
  while (t->hcap < (size_t)vocab * 2)
    t->hcap *= 2;
  t->hash = malloc(sizeof *t->hash * t->hcap);
  if (!t->store || !t->off || !t->len || !t->score || !t->hash)
    return rt_fail(err, "out of memory loading a tokenizer");
  for (size_t i = 0; i < t->hcap; i++)
    t->hash[i] = -1;
  return 0;
}

int32_t rt_tok_lookup(const RtTokenizer *t, const void *s, size_t n) {
  size_t mask = t->hcap - 1;
  for (size_t h = (size_t)fnv1a(s, n) & mask;; h = (h + 1) & mask) {
    int32_t id = t->hash[h];
    if (id < 0)
      return -1;
    if (t->len[id] == n && !memcmp(t->store + t->off[id], s, n))
      return id;
  }
}

void rt_tok_index(RtTokenizer *t, int32_t id) {
  if (rt_tok_lookup(t, t->store + t->off[id], t->len[id]) >= 0)
    return; /* a duplicate: the first id wins */
  size_t mask = t->hcap - 1;
  size_t h = (size_t)fnv1a((const unsigned char *)t->store + t->off[id], t->len[id]) & mask;
  while (t->hash[h] >= 0)
    h = (h + 1) & mask;
  t->hash[h] = id;
}

void rt_tok_free(RtTokenizer *t) {
  free(t->store);
  free(t->off);
  free(t->len);
  free(t->score);
  free(t->hash);
  free(t->merge_key);
  free(t->merge_val);
  memset(t, 0, sizeof *t);
}

/* ---- llama2.c's tokenizer.bin -------------------------------------------------------------- */

static int32_t rd_i32(const unsigned char *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* "<0xHH>" (two hex digits, either case): 0 with the byte in *b. */
static int byte_piece(const char *s, size_t n, unsigned char *b) {
  unsigned v;
  if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>' || rt_hex_digits(s + 3, 2, &v))
    return -1;
  *b = (unsigned char)v;
  return 0;
}

static int load_llama2c(RtTokenizer *t, const char *path, RtError *err) {
  unsigned char *buf = NULL;
  size_t n = 0;
  if (rt_read_file(path, &buf, &n, err))
    return -1;
  int rc = -1;
  if (n < 4) {
    rt_fail(err, "%s: not a llama2.c tokenizer.bin: %zu bytes, too short for its header (int32 max_token_length)", path,
            n);
    goto out;
  }
  int32_t maxlen = rd_i32(buf);
  if (maxlen <= 0 || (size_t)maxlen > n) {
    rt_fail(err, "%s: not a llama2.c tokenizer.bin: max_token_length is %ld", path, (long)maxlen);
    goto out;
  }
  /* first pass: count and check the records (float32 score, int32 len, len bytes) */
  int count = 0;
  size_t p = 4, store = 0;
  while (p < n) {
    if (n - p < 8) {
      rt_fail(err, "%s: token %d is truncated at byte %zu (its score and length need 8 bytes, %zu left)", path, count,
              p, n - p);
      goto out;
    }
    int32_t len = rd_i32(buf + p + 4);
    if (len < 0 || len > maxlen || (size_t)len > n - p - 8) {
      rt_fail(err, "%s: token %d at byte %zu has length %ld (max_token_length %ld, %zu bytes left)", path, count, p,
              (long)len, (long)maxlen, n - p - 8);
      goto out;
    }
    if (count == RT_TOK_MAX_VOCAB) {
      rt_fail(err, "%s: more than %d tokens", path, RT_TOK_MAX_VOCAB);
      goto out;
    }
    p += 8 + (size_t)len;
    store += (size_t)len;
    count++;
  }
  if (count < 3) {
    rt_fail(err, "%s: %d token%s: a llama2.c tokenizer has at least <unk>, BOS (1) and EOS (2)", path, count,
            count == 1 ? "" : "s");
    goto out;
  }
  if (rt_tok_alloc(t, count, store, err))
    goto out;
  t->kind = RT_TOK_LLAMA2C;
  t->max_len = maxlen;
  t->bos = 1;
  t->eos = 2;
  p = 4;
  store = 0;
  for (int i = 0; i < count; i++) {
    memcpy(&t->score[i], buf + p, 4);
    t->len[i] = (uint32_t)rd_i32(buf + p + 4);
    t->off[i] = store;
    memcpy(t->store + store, buf + p + 8, t->len[i]);
    store += t->len[i];
    p += 8 + t->len[i];
    rt_tok_index(t, i);
  }
  rc = 0;
out:
  free(buf);
  return rc;
}

/* Merge candidates: a max-heap on (score, then the leftmost position), stale entries skipped. */
typedef struct Cand {
  float score;
  int32_t left, right; /* node indices (original positions) */
  uint32_t vl, vr;     /* the nodes' versions when pushed */
  int32_t id;          /* the merged piece */
} Cand;

static int cand_before(const Cand *a, const Cand *b) {
  return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(Cand *h, size_t *n, Cand c) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t up = (i - 1) / 2;
    if (!cand_before(&c, &h[up]))
      break;
    h[i] = h[up];
    i = up;
  }
  h[i] = c;
}

static Cand heap_pop(Cand *h, size_t *n) {
  Cand top = h[0], last = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, best = i;
    const Cand *bc = &last;
    if (l < *n && cand_before(&h[l], bc))
      best = l, bc = &h[l];
    if (r < *n && cand_before(&h[r], bc))
      best = r;
    if (best == i)
      break;
    h[i] = h[best];
    i = best;
  }
  if (*n)
    h[i] = last;
  return top;
}

/* The merged piece of ids a and b, if the vocabulary has it and run.c would take it (a score above
 * its initial best, -1e10): pushed as a candidate. */
static void push_pair(const RtTokenizer *t, Cand *h, size_t *nh, char *tmp, const int32_t *tok, const uint32_t *ver,
                      int32_t l, int32_t r) {
  size_t la = t->len[tok[l]], lb = t->len[tok[r]];
  if (la + lb > (size_t)t->max_len)
    return;
  memcpy(tmp, t->store + t->off[tok[l]], la);
  memcpy(tmp + la, t->store + t->off[tok[r]], lb);
  int32_t id = rt_tok_lookup(t, tmp, la + lb);
  if (id < 0 || !(t->score[id] > -1e10f))
    return;
  heap_push(h, nh, (Cand){t->score[id], l, r, ver[l], ver[r], id});
}

/* run.c's encode, the same result in O(n log n): every merge takes the adjacent pair whose merged
 * piece scores highest, the leftmost on ties (run.c scans left to right keeping a strictly
 * better score), until no adjacent pair is a piece. */
static int encode_llama2c(const RtTokenizer *t, const unsigned char *s, size_t n, int add_bos, int32_t *out,
                          size_t *count, RtError *err) {
  size_t cap = n + 2, k = 0;
  int32_t *tok = malloc(sizeof *tok * cap), *next = malloc(sizeof *next * cap), *prev = malloc(sizeof *prev * cap);
  uint32_t *ver = calloc(cap, sizeof *ver);
  Cand *h = malloc(sizeof *h * (cap * 3 + 1));
  char *tmp = malloc((size_t)t->max_len * 2 + 8);
  int rc = 0;
  if (!tok || !next || !prev || !ver || !h || !tmp) {
    rc = rt_fail(err, "out of memory encoding %zu bytes", n);
    goto out;
  }
  size_t m = 0;
  if (add_bos)
    tok[m++] = t->bos; /* a node like any other: run.c's merges scan it too */
  if (n) {             /* the dummy prefix: the piece " " (its byte fallback when the vocabulary has none) */
    int32_t sp = rt_tok_lookup(t, " ", 1);
    tok[m++] = sp >= 0 ? sp : ' ' + 3;
  }
  for (size_t i = 0; i < n;) {
    /* one UTF-8 codepoint: a byte and the continuation bytes after it, at most 4 bytes in all */
    size_t j = i + 1;
    while (j < n && (s[j] & 0xC0) == 0x80 && j - i < 4)
      j++;
    int32_t id = rt_tok_lookup(t, s + i, j - i);
    if (id >= 0) {
      tok[m++] = id;
    } else {
      for (size_t b = i; b < j; b++)
        tok[m++] = (int32_t)s[b] + 3;
    }
    i = j;
  }
  for (size_t i = 0; i < m; i++) {
    if (tok[i] >= t->vocab) {
      rc = rt_fail(err, "tokenizer: byte fallback id %ld is outside the vocabulary of %d", (long)tok[i], t->vocab);
      goto out;
    }
    next[i] = i + 1 < m ? (int32_t)(i + 1) : -1;
    prev[i] = (int32_t)i - 1;
  }
  size_t nh = 0;
  for (size_t i = 0; i + 1 < m; i++)
    push_pair(t, h, &nh, tmp, tok, ver, (int32_t)i, (int32_t)i + 1);
  while (nh) {
    Cand c = heap_pop(h, &nh);
    if (ver[c.left] != c.vl || ver[c.right] != c.vr || next[c.left] != c.right)
      continue; /* stale */
    int32_t l = c.left, r = c.right;
    tok[l] = c.id;
    ver[l]++;
    ver[r] = UINT32_MAX; /* removed */
    next[l] = next[r];
    if (next[r] >= 0)
      prev[next[r]] = l;
    if (prev[l] >= 0)
      push_pair(t, h, &nh, tmp, tok, ver, prev[l], l);
    if (next[l] >= 0)
      push_pair(t, h, &nh, tmp, tok, ver, l, next[l]);
  }
  for (int32_t i = m ? 0 : -1; i >= 0; i = next[i])
    out[k++] = tok[i];
  *count = k;
out:
  free(tok);
  free(next);
  free(prev);
  free(ver);
  free(h);
  free(tmp);
  return rc;
}

/* ---- loading: the format by the file ------------------------------------------------------- */

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* dir + "/" + name, or the sibling name of path's last component (dir 0). */
static char *join(const char *base, const char *name, int sibling) {
  size_t n = strlen(base);
  if (sibling) {
    const char *slash = strrchr(base, '/');
    n = slash ? (size_t)(slash - base) : 0;
    if (!slash)
      base = ".";
    if (!slash)
      n = 1;
  }
  char *p = malloc(n + strlen(name) + 2);
  if (p)
    sprintf(p, "%.*s/%s", (int)n, base, name);
  return p;
}

int rt_tok_load(RtTokenizer *t, const char *path, RtError *err) {
  memset(t, 0, sizeof *t);
  t->bos = t->eos = -1;
  char *a = NULL;
  int rc;
  if (is_dir(path)) {
    a = join(path, "tokenizer.json", 0);
    char *enc = join(path, "encoder.json", 0), *bpe = join(path, "vocab.bpe", 0), *bin = join(path, "tokenizer.bin", 0);
    if (!a || !enc || !bpe || !bin)
      rc = rt_fail(err, "out of memory");
    else if (exists(enc) && exists(bpe))
      rc = rt_bpe_load_gpt2(t, enc, bpe, err);
    else if (exists(a))
      rc = rt_bpe_load_hf(t, a, err);
    else if (exists(bin))
      rc = load_llama2c(t, bin, err);
    else
      rc = rt_fail(err,
                   "--tokenizer %s: the directory has none of encoder.json with vocab.bpe, tokenizer.json, "
                   "tokenizer.bin",
                   path);
    free(enc);
    free(bpe);
    free(bin);
  } else if (ends_with(path, "encoder.json") || ends_with(path, "vocab.bpe")) {
    int is_enc = ends_with(path, "encoder.json");
    a = join(path, is_enc ? "vocab.bpe" : "encoder.json", 1);
    if (!a)
      rc = rt_fail(err, "out of memory");
    else if (!exists(a))
      rc = rt_fail(err, "--tokenizer %s: a GPT-2 tokenizer needs %s beside it: %s is missing", path,
                   is_enc ? "vocab.bpe" : "encoder.json", a);
    else
      rc = is_enc ? rt_bpe_load_gpt2(t, path, a, err) : rt_bpe_load_gpt2(t, a, path, err);
  } else if (ends_with(path, ".json")) {
    rc = rt_bpe_load_hf(t, path, err);
  } else {
    rc = load_llama2c(t, path, err);
  }
  free(a);
  if (rc)
    rt_tok_free(t);
  return rc;
}

int rt_tok_encode(const RtTokenizer *t, const void *text, size_t n, int add_bos, int32_t **ids, size_t *count,
                  RtError *err) {
  /* run.c: at most one token per byte, plus BOS and the dummy prefix */
  int32_t *out = malloc(sizeof *out * (n + 2));
  *ids = NULL;
  *count = 0;
  if (!out)
    return rt_fail(err, "out of memory encoding %zu bytes", n);
  int rc = t->kind == RT_TOK_LLAMA2C ? encode_llama2c(t, text, n, add_bos, out, count, err)
                                     : rt_bpe_encode(t, text, n, out, count, err);
  if (rc) {
    free(out);
    return -1;
  }
  *ids = out;
  return 0;
}

/* The 256 one-byte strings <0xXX> pieces decode to. */
static const unsigned char *byte_strings(void) {
  static unsigned char bytes[256];
  static int done;
  if (!done) {
    for (int i = 0; i < 256; i++)
      bytes[i] = (unsigned char)i;
    done = 1;
  }
  return bytes;
}

void rt_tok_piece(const RtTokenizer *t, int32_t prev, int32_t id, const char **s, size_t *n) {
  if (id < 0 || id >= t->vocab) {
    *s = "";
    *n = 0;
    return;
  }
  const char *p = t->store + t->off[id];
  size_t len = t->len[id];
  if (t->kind == RT_TOK_LLAMA2C) {
    unsigned char b;
    if (prev == t->bos && len && p[0] == ' ')
      p++, len--; /* run.c: the dummy prefix after BOS */
    if (byte_piece(p, len, &b) == 0) {
      p = (const char *)byte_strings() + b;
      len = 1;
    }
  }
  *s = p;
  *n = len;
}

const char *rt_tok_kind_name(const RtTokenizer *t) {
  return t->kind == RT_TOK_LLAMA2C ? "llama2.c tokenizer.bin"
         : t->kind == RT_TOK_HF    ? "Hugging Face tokenizer.json (byte-level BPE)"
                                   : "GPT-2 encoder.json + vocab.bpe (byte-level BPE)";
}
