/* import_llama2c.c: a llama2.c checkpoint -> DIR/model.yaml + DIR/model.safetensors.
 *
 * The format (llama2.c's run.c reads it; export.py writes it). All values little-endian.
 *   version 0 (legacy): 7 int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 *     seq_len (vocab_size < 0: the classifier is not shared with the embedding), then float32:
 *       token_embedding [V, C]; rms_att [L, C]; wq [L, H hd, C]; wk [L, G hd, C]; wv [L, G hd, C];
 *       wo [L, C, H hd]; rms_ffn [L, C]; w1 [L, F, C]; w2 [L, C, F]; w3 [L, F, C]; rms_final [C];
 *       freq_cis_real, freq_cis_imag [seq_len, hd/2] each (RoPE tables: skipped, we compute them);
 *       wcls [V, C] when unshared.
 *   version 1: uint32 magic 0x616b3432 ("ak42"), int32 version 1, the same 7 int32 (vocab_size
 *     positive), uint8 shared_classifier, zero padding to byte 256; then float32 token_embedding,
 *     rms_att [L, C], rms_ffn [L, C], rms_final [C], wq, wk, wv, wo, w1, w2, w3 (each [L, ...] as
 *     above), and wcls [V, C] when not shared. No RoPE tables.
 *   version 2 (Q8_0 groups): refused, not implemented.
 * Every matrix is stored [out, in] (PyTorch's nn.Linear layout), which is ours (docs/spec.md).
 * The mapping to our names: token_embedding -> wte.weight; per layer l: rms_att -> layers.l.ln_1,
 * wq|wk|wv stacked by rows -> layers.l.attn.c_attn.weight [(H + 2G) hd, C], wo -> attn.c_proj,
 * rms_ffn -> ln_2, w1 -> mlp.c_fc, w3 -> mlp.c_gate, w2 -> mlp.c_proj; rms_final -> norm.weight;
 * wcls -> lm_head.weight (tied: none). llama2.c rotates pairs (2i, 2i+1) of each head, which is
 * our rope's layout, so q and k rows are copied as they are (docs/spec.md, "rope").
 * The checkpoint is read whole into memory; the outputs are written to temporary files and
 * renamed, so a failure leaves no half-written file. */
#include "import_llama2c.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define L2C_MAGIC 0x616b3432u
#define L2C_MAX_DIM (1 << 20) /* any header size above this is refused as corrupt */

typedef struct L2cConfig {
  int32_t dim, hidden, layers, heads, kv_heads, vocab, seq;
  bool shared;
  int version;
} L2cConfig;

/* One output tensor: rank 1 or 2, its data the concatenation of up to three runs of floats. */
typedef struct L2cTensor {
  char name[64];
  int rank;
  int64_t dim[2];
  const float *part[3];
  int64_t nfloats[3];
} L2cTensor;

static bool l2c_read_file(const char *path, unsigned char **buf, size_t *len, Diag *d) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    diag_error(d, path, 0, 0, "cannot open the checkpoint: %s", strerror(errno));
    return false;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    diag_error(d, path, 0, 0, "not a regular file (a llama2.c checkpoint is one .bin file)");
    fclose(f);
    return false;
  }
  *len = (size_t)st.st_size;
  *buf = malloc(*len ? *len : 1);
  bool ok = *buf && fread(*buf, 1, *len, f) == *len;
  fclose(f);
  if (!ok) {
    diag_error(d, path, 0, 0, "cannot read the checkpoint (%zu bytes)", *len);
    free(*buf);
    *buf = NULL;
  }
  return ok;
}

static int32_t l2c_i32(const unsigned char *p) {
  uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  int32_t v;
  memcpy(&v, &u, sizeof v);
  return v;
}

/* The header: the version, the config, and where the floats start. */
static bool l2c_header(const char *path, const unsigned char *b, size_t len, L2cConfig *c, size_t *data, Diag *d) {
  if (len < 28) {
    diag_error(d, path, 0, 0, "%zu bytes is too short for a llama2.c header (28 bytes of 7 int32)", len);
    return false;
  }
  const unsigned char *h = b;
  if ((uint32_t)l2c_i32(b) == L2C_MAGIC) {
    c->version = len >= 8 ? l2c_i32(b + 4) : -1;
    if (c->version == 2 || c->version == 3) {
      diag_error(d, path, 0, 0, "a version-%d llama2.c checkpoint (%s groups) is not implemented: export it as "
                                "version 0 or 1 (fp32)", c->version, c->version == 2 ? "Q8_0" : "Q4");
      return false;
    }
    if (c->version != 1 || len < 256) {
      diag_error(d, path, 0, 0, "'ak42' header of version %d: only versions 0 (no magic) and 1 are known%s",
                 c->version, c->version == 1 ? ", and its header is 256 bytes" : "");
      return false;
    }
    h = b + 8;
    c->shared = b[36] != 0;
    *data = 256;
  } else {
    c->version = 0;
    *data = 28;
  }
  int32_t v[7];
  for (int i = 0; i < 7; i++) v[i] = l2c_i32(h + 4 * i);
  c->dim = v[0], c->hidden = v[1], c->layers = v[2], c->heads = v[3], c->kv_heads = v[4], c->vocab = v[5], c->seq = v[6];
  if (c->version == 0) {
    c->shared = c->vocab > 0;
    if (c->vocab < 0 && c->vocab > INT32_MIN) c->vocab = -c->vocab;
  }
  static const char *const names[] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  int32_t got[7] = {c->dim, c->hidden, c->layers, c->heads, c->kv_heads, c->vocab, c->seq};
  for (int i = 0; i < 7; i++)
    if (got[i] < 1 || got[i] > L2C_MAX_DIM) {
      diag_error(d, path, 0, 0, "header: %s = %d is out of range (1..%d)%s", names[i], (int)v[i], L2C_MAX_DIM,
                 c->version ? "" : ": not a llama2.c version-0 checkpoint?");
      return false;
    }
  if (c->dim % c->heads != 0 || c->heads % c->kv_heads != 0 || (c->dim / c->heads) % 2 != 0) {
    diag_error(d, path, 0, 0, "header: dim %d, n_heads %d, n_kv_heads %d: n_heads must divide dim into even head "
                              "dimensions and n_kv_heads must divide n_heads",
               c->dim, c->heads, c->kv_heads);
    return false;
  }
  return true;
}

static bool l2c_write_safetensors(const char *path, const L2cTensor *t, int n, Diag *d) {
  size_t cap = 256 + (size_t)n * 160, hl = 0;
  char *h = malloc(cap);
  if (!h) die("out of memory");
  uint64_t off = 0;
  hl += (size_t)snprintf(h + hl, cap - hl, "{");
  for (int i = 0; i < n; i++) {
    uint64_t nb = 4 * (uint64_t)(t[i].nfloats[0] + t[i].nfloats[1] + t[i].nfloats[2]);
    hl += (size_t)snprintf(h + hl, cap - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld", i ? "," : "", t[i].name,
                           (long long)t[i].dim[0]);
    if (t[i].rank == 2) hl += (size_t)snprintf(h + hl, cap - hl, ",%lld", (long long)t[i].dim[1]);
    hl += (size_t)snprintf(h + hl, cap - hl, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                           (unsigned long long)(off + nb));
    off += nb;
  }
  hl += (size_t)snprintf(h + hl, cap - hl, "}");
  while (hl % 8) h[hl++] = ' ';
  char tmp[4200]; /* path (below 4096) + ".tmp" */
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  bool ok = f != NULL;
  unsigned char len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hl >> (8 * i));
  ok = ok && fwrite(len8, 1, 8, f) == 8 && fwrite(h, 1, hl, f) == hl;
  for (int i = 0; ok && i < n; i++)
    for (int k = 0; ok && k < 3; k++)
      if (t[i].nfloats[k]) ok = fwrite(t[i].part[k], 4, (size_t)t[i].nfloats[k], f) == (size_t)t[i].nfloats[k];
  if (f && (fflush(f) != 0 || fclose(f) != 0)) ok = false;
  free(h);
  if (!ok || rename(tmp, path) != 0) {
    diag_error(d, path, 0, 0, "cannot write the weights: %s", strerror(errno));
    remove(tmp);
    return false;
  }
  return true;
}

/* The model's name: the file's base name without its extension, in [A-Za-z0-9_.-]. */
static void l2c_name(const char *file, char *out, size_t n) {
  const char *b = strrchr(file, '/');
  b = b ? b + 1 : file;
  size_t k = 0;
  for (; *b && *b != '.' && k + 1 < n; b++)
    out[k++] = (char)((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') || (*b >= '0' && *b <= '9') || *b == '_' ||
                              *b == '-'
                          ? *b
                          : '_');
  if (k == 0) out[k++] = 'm';
  out[k] = 0;
}

static bool l2c_write_spec(const char *path, const char *file, const L2cConfig *c, Diag *d) {
  char name[128], tmp[4200];
  l2c_name(file, name, sizeof name);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) {
    diag_error(d, path, 0, 0, "cannot write the spec: %s", strerror(errno));
    return false;
  }
  fprintf(f,
          "# %s: imported by 'modelc import' from the llama2.c checkpoint %s (version %d, fp32).\n"
          "# Llama: rotary positions, %s attention, RMSNorm, SwiGLU, no biases; weights in model.safetensors.\n"
          "model:\n  name: %s\n  vocab: %d\n  context: %d\n  batch: 1\n  dim: %d\n"
          "layers:\n"
          "  - embedding: {}\n"
          "  - positions: {kind: rope, theta: 10000}\n"
          "  - repeat: %d\n    name: layers\n    block:\n"
          "      - residual:\n"
          "          - rmsnorm: {eps: 1.0e-5}\n"
          "          - attention: {heads: %d, kv_heads: %d, causal: true, bias: false}\n"
          "      - residual:\n"
          "          - rmsnorm: {eps: 1.0e-5}\n"
          "          - mlp: {hidden: %d, activation: swiglu, bias: false}\n"
          "  - rmsnorm: {name: norm, eps: 1.0e-5}\n"
          "  - lm_head: {tied: %s}\n",
          name, file, c->version,
          c->kv_heads == c->heads ? "multi-head" : c->kv_heads == 1 ? "multi-query" : "grouped-query", name, c->vocab,
          c->seq, c->dim, c->layers, c->heads, c->kv_heads, c->hidden, c->shared ? "true" : "false");
  bool ok = !ferror(f);
  if (fclose(f) != 0) ok = false;
  if (!ok || rename(tmp, path) != 0) {
    diag_error(d, path, 0, 0, "cannot write the spec: %s", strerror(errno));
    remove(tmp);
    return false;
  }
  return true;
}

bool import_llama2c(const char *file, const char *dir, Diag *d) {
  unsigned char *buf;
  size_t len, data;
  if (!l2c_read_file(file, &buf, &len, d)) return false;
  L2cConfig c;
  if (!l2c_header(file, buf, len, &c, &data, d)) {
    free(buf);
    return false;
  }
  const int64_t C = c.dim, F = c.hidden, L = c.layers, V = c.vocab, hd = C / c.heads, KV = hd * c.kv_heads;
  /* every count is below 2^20, so these products fit in int64 */
  const int64_t n_emb = V * C, n_norm = L * C, n_q = L * C * C, n_kv = L * KV * C, n_ffn = L * F * C;
  const int64_t n_rope = c.version == 0 ? (int64_t)c.seq * hd : 0; /* freq_cis_real + _imag */
  const int64_t n_cls = c.shared ? 0 : V * C;
  const int64_t total = n_emb + 2 * n_norm + 2 * n_q + 2 * n_kv + 3 * n_ffn + C + n_rope + n_cls;
  if ((uint64_t)(len - data) != 4 * (uint64_t)total) {
    diag_error(d, file, 0, 0,
               "the header (version %d: dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, "
               "seq_len %d, %s classifier) describes %lld bytes of weights after its %zu, but the file holds %zu",
               c.version, c.dim, c.hidden, c.layers, c.heads, c.kv_heads, c.vocab, c.seq,
               c.shared ? "shared" : "unshared", 4 * (long long)total, data, len - data);
    free(buf);
    return false;
  }
  const float *w = (const float *)(buf + data); /* 28 and 256 are multiples of 4; malloc aligns buf */
  const float *emb, *att, *ffn, *fin, *wq, *wk, *wv, *wo, *w1, *w2, *w3, *cls;
  const float *p = w;
  emb = p, p += n_emb;
  if (c.version == 0) {
    att = p, p += n_norm;
    wq = p, p += n_q;
    wk = p, p += n_kv;
    wv = p, p += n_kv;
    wo = p, p += n_q;
    ffn = p, p += n_norm;
    w1 = p, p += n_ffn;
    w2 = p, p += n_ffn;
    w3 = p, p += n_ffn;
    fin = p, p += C;
    p += n_rope;
  } else {
    att = p, p += n_norm;
    ffn = p, p += n_norm;
    fin = p, p += C;
    wq = p, p += n_q;
    wk = p, p += n_kv;
    wv = p, p += n_kv;
    wo = p, p += n_q;
    w1 = p, p += n_ffn;
    w2 = p, p += n_ffn;
    w3 = p, p += n_ffn;
  }
  cls = p;

  int nt = 0, cap = (int)(7 * L + 3);
  L2cTensor *t = calloc((size_t)cap, sizeof *t);
  if (!t) die("out of memory");
#define T1(nm, r, d0, d1, ptr, nf)                                                                                    \
  do {                                                                                                               \
    L2cTensor *x = &t[nt++];                                                                                         \
    snprintf(x->name, sizeof x->name, "%s", nm);                                                                    \
    x->rank = r, x->dim[0] = d0, x->dim[1] = d1, x->part[0] = ptr, x->nfloats[0] = nf;                               \
  } while (0)
  T1("wte.weight", 2, V, C, emb, n_emb);
  for (int64_t l = 0; l < L; l++) {
    char nm[64];
    snprintf(nm, sizeof nm, "layers.%lld.ln_1.weight", (long long)l);
    T1(nm, 1, C, 0, att + l * C, C);
    snprintf(nm, sizeof nm, "layers.%lld.attn.c_attn.weight", (long long)l);
    T1(nm, 2, C + 2 * KV, C, wq + l * C * C, C * C);
    t[nt - 1].part[1] = wk + l * KV * C, t[nt - 1].nfloats[1] = KV * C;
    t[nt - 1].part[2] = wv + l * KV * C, t[nt - 1].nfloats[2] = KV * C;
    snprintf(nm, sizeof nm, "layers.%lld.attn.c_proj.weight", (long long)l);
    T1(nm, 2, C, C, wo + l * C * C, C * C);
    snprintf(nm, sizeof nm, "layers.%lld.ln_2.weight", (long long)l);
    T1(nm, 1, C, 0, ffn + l * C, C);
    snprintf(nm, sizeof nm, "layers.%lld.mlp.c_fc.weight", (long long)l);
    T1(nm, 2, F, C, w1 + l * F * C, F * C);
    snprintf(nm, sizeof nm, "layers.%lld.mlp.c_gate.weight", (long long)l);
    T1(nm, 2, F, C, w3 + l * F * C, F * C);
    snprintf(nm, sizeof nm, "layers.%lld.mlp.c_proj.weight", (long long)l);
    T1(nm, 2, C, F, w2 + l * F * C, F * C);
  }
  T1("norm.weight", 1, C, 0, fin, C);
  if (!c.shared) T1("lm_head.weight", 2, V, C, cls, n_cls);
#undef T1

  char path[4096];
  bool ok = true;
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    diag_error(d, dir, 0, 0, "cannot create the output folder: %s", strerror(errno));
    ok = false;
  }
  if (ok) {
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ok = l2c_write_safetensors(path, t, nt, d);
  }
  if (ok) {
    snprintf(path, sizeof path, "%s/model.yaml", dir);
    ok = l2c_write_spec(path, file, &c, d);
  }
  free(t);
  free(buf);
  return ok;
}
