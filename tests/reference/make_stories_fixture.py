#!/usr/bin/python3
"""make_stories_fixture.py: greedy decoding of llama2.c's stories260K in PyTorch, the reference of
tests/unit/test_import_llama2c.c (issue 15, fidelity on a real model).

Independent of modelc: it reads the checkpoint from the llama2.c format description (run.c's
legacy version-0 layout: a header of 7 int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads,
vocab_size (negative: an unshared classifier follows), seq_len; then float32 token embedding
[V,C], rms_att [L,C], wq [L,C,C], wk [L,KV,C], wv [L,KV,C], wo [L,C,C], rms_ffn [L,C],
w1 [L,F,C], w2 [L,C,F], w3 [L,F,C], rms_final [C], freq_cis_real and _imag [seq, hd/2], and wcls
when unshared), and runs the Llama forward of llama2.c's model.py in float64 over the whole
sequence at every step (no cache): RMSNorm (eps 1e-5), RoPE on q and k with the file's own
freq_cis tables (pairs (2i, 2i+1) of each head), grouped-query attention (query head h reads KV
head h // (H/G)), SwiGLU, the classifier. From BOS (token 1) alone it takes the argmax N times.

Writes tests/reference/fixtures/stories260K/tokens.npy (int32 [N], the greedy ids) and
logits.npy (float32 [N,V], the logits each id was chosen from). The checkpoint itself is not
committed (MIT licence, 1 MB; ../shared/models/stories260K.bin).

Regenerate:  /usr/bin/python3 tests/reference/make_stories_fixture.py [PATH/stories260K.bin]
"""
import os
import struct
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "stories260K")
DEFAULT = os.path.join(os.path.dirname(ROOT), "shared", "models", "stories260K.bin")
N, BOS, EPS = 64, 1, 1e-5


def load(path):
    raw = open(path, "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    w = torch.from_numpy(np.frombuffer(raw, dtype="<f4", offset=28).astype(np.float64))
    hd, kv = dim // heads, dim // heads * kv_heads
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        t = w[pos:pos + n].reshape(*shape)
        pos += n
        return t

    P = {"emb": take(vocab, dim), "rms_att": take(layers, dim), "wq": take(layers, dim, dim),
         "wk": take(layers, kv, dim), "wv": take(layers, kv, dim), "wo": take(layers, dim, dim),
         "rms_ffn": take(layers, dim), "w1": take(layers, hidden, dim), "w2": take(layers, dim, hidden),
         "w3": take(layers, hidden, dim), "rms_final": take(dim),
         "cos": take(seq, hd // 2), "sin": take(seq, hd // 2)}
    P["wcls"] = P["emb"] if shared else take(vocab, dim)
    assert pos == w.numel(), "the file size does not match its header"
    cfg = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, seq=seq)
    return cfg, P


def rmsnorm(x, g):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS) * g


def rope(x, cos, sin):
    """x (T, heads, hd): each pair (x[2i], x[2i+1]) rotated by the position's angle i."""
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)


def forward(cfg, P, ids):
    T, C, H, G = len(ids), cfg["dim"], cfg["heads"], cfg["kv_heads"]
    hd = C // H
    cos, sin = P["cos"][:T], P["sin"][:T]
    x = P["emb"][torch.tensor(ids)]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for l in range(cfg["layers"]):
        h = rmsnorm(x, P["rms_att"][l])
        q = rope((h @ P["wq"][l].T).view(T, H, hd), cos, sin)
        k = rope((h @ P["wk"][l].T).view(T, G, hd), cos, sin)
        v = (h @ P["wv"][l].T).view(T, G, hd)
        out = []
        for hh in range(H):
            g = hh // (H // G)
            s = (q[:, hh] @ k[:, g].T) / hd ** 0.5
            out.append(torch.softmax(s.masked_fill(mask, float("-inf")), -1) @ v[:, g])
        x = x + torch.cat(out, -1) @ P["wo"][l].T
        h = rmsnorm(x, P["rms_ffn"][l])
        x = x + (torch.nn.functional.silu(h @ P["w1"][l].T) * (h @ P["w3"][l].T)) @ P["w2"][l].T
    return rmsnorm(x, P["rms_final"]) @ P["wcls"].T


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    cfg, P = load(path)
    ids, toks, logits = [BOS], [], []
    with torch.no_grad():
        for _ in range(N):
            last = forward(cfg, P, ids)[-1]
            t = int(torch.argmax(last))
            toks.append(t)
            logits.append(last.numpy().astype(np.float32))
            ids.append(t)
    os.makedirs(OUT, exist_ok=True)
    np.save(os.path.join(OUT, "tokens.npy"), np.array(toks, dtype=np.int32))
    np.save(os.path.join(OUT, "logits.npy"), np.stack(logits))
    print(cfg, toks)


if __name__ == "__main__":
    main()
