#!/usr/bin/python3
"""make_llama_fixture.py: the independent PyTorch reference for rope and grouped-query attention.

A tiny Llama-shaped model (tests/reference/specs/gqa-tiny.yaml), written here after Meta's
reference llama/model.py and llama2.c's model.py, not from modelc's code:

  h = wte[tokens]
  per layer:  h = h + attn(rmsnorm(h));  h = h + ffn(rmsnorm(h))
  attn:       q = x Wq^T (H heads), k = x Wk^T, v = x Wv^T (G KV heads each), q and k rotated by
              RoPE as complex numbers: the pair (2i, 2i+1) of a head is x[2i] + j x[2i+1], times
              exp(j pos theta^(-2i/hd)); each KV head repeated H/G times (head h reads KV head
              h // (H/G)); causal softmax(q k^T / sqrt(hd)) v; then Wo.
  ffn:        w2(silu(w1 x) * w3 x)   (SwiGLU)
  rmsnorm:    x / sqrt(mean(x^2) + eps) * g,  eps 1e-5
  logits = rmsnorm(h) wte^T (tied head); loss: mean cross-entropy of next tokens.

Only the parameter names follow docs/spec.md: c_attn packs Wq, Wk, Wv by rows ([(H+2G)hd, C]);
mlp.c_fc is w1, mlp.c_gate is w3, mlp.c_proj is w2; ln_1, ln_2 the two norms of a layer, norm the
final one.

Writes under tests/reference/fixtures/gqa-tiny/ (float64 autograd, stored as float32):
  weights.safetensors, logits.npy [B,T,V], loss.npy, grads.safetensors, tokens.npy, targets.npy

Regenerate (Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_llama_fixture.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from make_fixtures import save_safetensors  # the file format only (this folder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "gqa-tiny")
V, T, B, C, L, H, G, HID, EPS, THETA = 64, 16, 2, 32, 2, 4, 2, 48, 1e-5, 10000.0
HD = C // H


def rmsnorm(x, g):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * g


def rotate(x):
    """x (B,T,heads,hd): Meta's apply_rotary_emb, pairs (2i, 2i+1) as complex numbers."""
    freqs = 1.0 / (THETA ** (torch.arange(0, HD, 2, dtype=torch.float64) / HD))
    ang = torch.outer(torch.arange(x.shape[1], dtype=torch.float64), freqs)  # (T, hd/2)
    rot = torch.polar(torch.ones_like(ang), ang)
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], HD // 2, 2).contiguous())
    return torch.view_as_real(xc * rot[None, :, None, :]).flatten(3)


def attention(x, wq, wk, wv, wo):
    b, t, _ = x.shape
    q = (x @ wq.T).view(b, t, H, HD)
    k = (x @ wk.T).view(b, t, G, HD)
    v = (x @ wv.T).view(b, t, G, HD)
    q, k = rotate(q), rotate(k)
    k = k.repeat_interleave(H // G, dim=2)  # head h reads KV head h // (H/G)
    v = v.repeat_interleave(H // G, dim=2)
    q, k, v = (a.transpose(1, 2) for a in (q, k, v))
    s = q @ k.transpose(-1, -2) / HD ** 0.5
    s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
    y = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(b, t, C)
    return y @ wo.T


def main():
    gen = torch.Generator().manual_seed(15)

    def rnd(*shape, std=0.3, mean=0.0):
        return (mean + std * torch.randn(*shape, generator=gen, dtype=torch.float64)).requires_grad_()

    P = {"wte.weight": rnd(V, C, std=0.5)}
    for l in range(L):
        p = f"layers.{l}."
        P[p + "ln_1.weight"] = rnd(C, std=0.1, mean=1.0)
        P[p + "attn.wq"] = rnd(H * HD, C)
        P[p + "attn.wk"] = rnd(G * HD, C)
        P[p + "attn.wv"] = rnd(G * HD, C)
        P[p + "attn.c_proj.weight"] = rnd(C, C)
        P[p + "ln_2.weight"] = rnd(C, std=0.1, mean=1.0)
        P[p + "mlp.c_fc.weight"] = rnd(HID, C)    # w1
        P[p + "mlp.c_gate.weight"] = rnd(HID, C)  # w3
        P[p + "mlp.c_proj.weight"] = rnd(C, HID)  # w2
    P["norm.weight"] = rnd(C, std=0.1, mean=1.0)

    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    h = P["wte.weight"][tokens]
    for l in range(L):
        p = f"layers.{l}."
        h = h + attention(rmsnorm(h, P[p + "ln_1.weight"]), P[p + "attn.wq"], P[p + "attn.wk"], P[p + "attn.wv"],
                          P[p + "attn.c_proj.weight"])
        x = rmsnorm(h, P[p + "ln_2.weight"])
        h = h + (F.silu(x @ P[p + "mlp.c_fc.weight"].T) * (x @ P[p + "mlp.c_gate.weight"].T)) @ P[p + "mlp.c_proj.weight"].T
    logits = rmsnorm(h, P["norm.weight"]) @ P["wte.weight"].T
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    loss.backward()

    def ours(get):
        """Our names and layouts: q, k, v rows packed into c_attn."""
        out = [("wte.weight", get("wte.weight"))]
        for l in range(L):
            p = f"layers.{l}."
            out.append((p + "ln_1.weight", get(p + "ln_1.weight")))
            out.append((p + "attn.c_attn.weight", torch.cat([get(p + "attn.wq"), get(p + "attn.wk"), get(p + "attn.wv")])))
            for n in ("attn.c_proj.weight", "ln_2.weight", "mlp.c_fc.weight", "mlp.c_gate.weight", "mlp.c_proj.weight"):
                out.append((p + n, get(p + n)))
        out.append(("norm.weight", get("norm.weight")))
        return out

    os.makedirs(OUT, exist_ok=True)
    save_safetensors(os.path.join(OUT, "weights.safetensors"), ours(lambda n: P[n]))
    save_safetensors(os.path.join(OUT, "grads.safetensors"), ours(lambda n: P[n].grad))
    np.save(os.path.join(OUT, "logits.npy"), logits.detach().numpy().astype(np.float32))
    np.save(os.path.join(OUT, "loss.npy"), np.array([loss.item()], dtype=np.float32))
    np.save(os.path.join(OUT, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "targets.npy"), targets.numpy().astype(np.int32))
    print(f"gqa-tiny: loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
