#!/usr/bin/python3
"""torch_llama.py: PyTorch eager's side of tests/bench/llama_decode.sh (issue 15, point 5): a Llama
of llama2.c's checkpoint format, written independently of modelc from the format description, with
a KV cache, on the same .bin file `modelc import` reads.

  write OUT.bin --dim C --hidden F --layers L --heads H --kv-heads G --vocab V --seq T [--seed S]
        random weights in llama2.c's legacy version-0 layout (run.c's order: a header of 7 int32
        dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (positive: shared
        classifier), seq_len; then float32 token embedding [V,C], rms_att [L,C], wq [L,C,C],
        wk [L,G*hd,C], wv [L,G*hd,C], wo [L,C,C], rms_ffn [L,C], w1 [L,F,C], w2 [L,C,F],
        w3 [L,F,C], rms_final [C], freq_cis_real and _imag [T,hd/2] at theta 10000). Matrices
        N(0, 0.02^2) as llama2.c's model.py initialises them, norms 1 + N(0, 0.1^2).
  greedy BIN N LOGITS.npy [--autocast bf16]
        from BOS (token 1) alone, the argmax N times with the KV cache: prints 'tokens: a,b,...'
        and writes the logits [N,V] to LOGITS.npy (the check that our program computes the same
        thing before anything is timed)
  bench BIN --threads N --tokens K --runs R [--autocast bf16]
        decode as `PROG bench` times it: a 1-token prefill at position 0, then K tokens at
        positions 1..K one at a time with the KV cache (fixed random ids: the work does not depend
        on them), seconds per token averaged over the K, after 3 untimed warm-up sequences; the
        median of R sequences. Prints 'key: value' lines (decode_tokens_per_s, ...).

The model: x = emb[id]; per layer h = rmsnorm(x) (eps 1e-5, weight g), q = h Wq^T, k = h Wk^T,
v = h Wv^T, q and k rotated in pairs (2i, 2i+1) of each head by the file's freq_cis row of the
position, k and v written to the cache row, query head h attending over rows 0..t of KV head
h // (H/G) (scaled by 1/sqrt(hd), softmax), x += attn Wo^T, h = rmsnorm(x), x += (silu(h W1^T) *
h W3^T) W2^T; logits = rmsnorm(x) Wcls^T (Wcls = emb when shared). All float32 (or the matmuls
in bfloat16 under torch.autocast). OMP_WAIT_POLICY=PASSIVE is the caller's (llama_decode.sh).
"""
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

BOS, EPS, WARMUPS = 1, 1e-5, 3


def cmd_write(out, dim, hidden, layers, heads, kv_heads, vocab, seq, seed):
    hd = dim // heads
    kv = kv_heads * hd
    g = np.random.default_rng(seed)

    def mat(*shape):
        return (0.02 * g.standard_normal(shape)).astype("<f4")

    def norm(*shape):
        return (1.0 + 0.1 * g.standard_normal(shape)).astype("<f4")

    freqs = 1.0 / (10000.0 ** (np.arange(0, hd, 2)[: hd // 2].astype(np.float64) / hd))
    ang = np.outer(np.arange(seq, dtype=np.float64), freqs)
    parts = [mat(vocab, dim), norm(layers, dim), mat(layers, dim, dim), mat(layers, kv, dim),
             mat(layers, kv, dim), mat(layers, dim, dim), norm(layers, dim), mat(layers, hidden, dim),
             mat(layers, dim, hidden), mat(layers, hidden, dim), norm(dim),
             np.cos(ang).astype("<f4"), np.sin(ang).astype("<f4")]
    with open(out, "wb") as f:
        f.write(struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab, seq))
        for p in parts:
            f.write(p.tobytes())


class Llama(torch.nn.Module):
    def __init__(self, path):
        super().__init__()
        raw = open(path, "rb").read()
        C, Fh, L, H, G, V, T = struct.unpack("<7i", raw[:28])
        shared = V > 0
        V = abs(V)
        self.C, self.L, self.H, self.G, self.V, self.T, self.hd = C, L, H, G, V, T, C // H
        w = torch.from_numpy(np.frombuffer(raw, dtype="<f4", offset=28).copy())
        pos = 0

        def take(*shape):
            nonlocal pos
            n = math.prod(shape)
            t = w[pos:pos + n].view(*shape)
            pos += n
            return t

        kv = G * self.hd
        self.emb = take(V, C)
        rms_att, wq, wk, wv = take(L, C), take(L, C, C), take(L, kv, C), take(L, kv, C)
        wo, rms_ffn = take(L, C, C), take(L, C)
        w1, w2, w3 = take(L, Fh, C), take(L, C, Fh), take(L, Fh, C)
        self.rms_final = take(C)
        self.cos, self.sin = take(T, self.hd // 2), take(T, self.hd // 2)
        self.wcls = self.emb if shared else take(V, C)
        assert pos == w.numel(), f"{path}: the file size does not match its header"
        self.layers = [dict(rms_att=rms_att[l], wq=wq[l], wk=wk[l], wv=wv[l], wo=wo[l], rms_ffn=rms_ffn[l],
                            w1=w1[l], w2=w2[l], w3=w3[l]) for l in range(L)]
        self.kcache = torch.zeros(L, G, T, self.hd)
        self.vcache = torch.zeros(L, G, T, self.hd)

    @staticmethod
    def rmsnorm(x, g):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + EPS) * g

    def rope(self, x, t):
        """x (heads, hd) at position t: each pair (x[2i], x[2i+1]) rotated by angle i of row t."""
        a, b = x[:, 0::2], x[:, 1::2]
        c, s = self.cos[t], self.sin[t]
        return torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)

    def step(self, tok, t):
        """The logits [V] of token tok at position t, attending over the cache rows 0..t."""
        H, G, hd = self.H, self.G, self.hd
        x = self.emb[tok]
        for l, p in enumerate(self.layers):
            h = self.rmsnorm(x, p["rms_att"])
            q = self.rope(F.linear(h, p["wq"]).view(H, hd), t)
            k = self.rope(F.linear(h, p["wk"]).view(G, hd), t)
            v = F.linear(h, p["wv"]).view(G, hd)
            self.kcache[l, :, t] = k
            self.vcache[l, :, t] = v
            K, Vc = self.kcache[l, :, : t + 1], self.vcache[l, :, : t + 1]  # (G, t+1, hd)
            # the H/G query heads of each KV head together: (G, H/G, hd) @ (G, hd, t+1)
            s = torch.matmul(q.view(G, H // G, hd), K.transpose(1, 2)) / math.sqrt(hd)
            a = torch.matmul(torch.softmax(s, -1), Vc)
            x = x + F.linear(a.reshape(H * hd), p["wo"])
            h = self.rmsnorm(x, p["rms_ffn"])
            x = x + F.linear(F.silu(F.linear(h, p["w1"])) * F.linear(h, p["w3"]), p["w2"])
        return F.linear(self.rmsnorm(x, self.rms_final), self.wcls)


def autocast_ctx(autocast):
    if autocast == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def cmd_greedy(path, n, out, autocast):
    m = Llama(path)
    toks, logits, tok = [], [], BOS
    with torch.no_grad(), autocast_ctx(autocast):
        for t in range(n):
            last = m.step(tok, t).float()
            tok = int(torch.argmax(last))
            toks.append(tok)
            logits.append(last.numpy())
    np.save(out, np.stack(logits).astype(np.float32))
    print("tokens: " + ",".join(map(str, toks)))


def cmd_bench(path, threads, k, runs, autocast):
    torch.set_num_threads(threads)
    m = Llama(path)
    assert 0 < k < m.T, f"--tokens must be in 1..{m.T - 1}"
    ids = torch.randint(0, m.V, (k + 1,), generator=torch.Generator().manual_seed(7)).tolist()
    times = []
    with torch.no_grad(), autocast_ctx(autocast):
        for r in range(-WARMUPS, runs):  # r < 0: warm-up sequences
            m.step(ids[0], 0)
            t0 = time.perf_counter()
            for t in range(1, k + 1):
                m.step(ids[t], t)
            if r >= 0:
                times.append((time.perf_counter() - t0) / k)
    sec = float(np.median(times))
    print(f"threads: {torch.get_num_threads()}\nautocast: {autocast or 'off'}\nwarmups: {WARMUPS}\n"
          f"decode_tokens: {k}\ndecode_seconds_per_token: {sec:.6f}\ndecode_tokens_per_s: {1.0 / sec:.1f}\n"
          f"decode_spread: {min(times) / sec:.3f}..{max(times) / sec:.3f}")


def opt(args, name, default=None, conv=str):
    return conv(args[args.index(name) + 1]) if name in args else default


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, path, args = argv[1], argv[2], argv[3:]
    if cmd == "write":
        cmd_write(path, opt(args, "--dim", conv=int), opt(args, "--hidden", conv=int), opt(args, "--layers", conv=int),
                  opt(args, "--heads", conv=int), opt(args, "--kv-heads", conv=int), opt(args, "--vocab", conv=int),
                  opt(args, "--seq", conv=int), opt(args, "--seed", 1, int))
    elif cmd == "greedy":
        cmd_greedy(path, int(args[0]), args[1], opt(args, "--autocast"))
    elif cmd == "bench":
        cmd_bench(path, opt(args, "--threads", 2, int), opt(args, "--tokens", conv=int), opt(args, "--runs", 7, int),
                  opt(args, "--autocast"))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
