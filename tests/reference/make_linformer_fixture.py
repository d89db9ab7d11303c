#!/usr/bin/python3
"""make_linformer_fixture.py: the independent PyTorch reference for the linformer pass.

The model of tests/reference/specs/linformer-tiny.yaml with Linformer attention, written here from
the paper (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity", eq. 7): for each
head, the keys and values (n x d) are projected along the sequence by E, F (k x n) and

    head = softmax(Q (E K)^T / sqrt(d)) (F V)

with no mask (bidirectional). A shorter input of n < T positions uses the first n columns of E
and F (fairseq's Linformer slices its Linear(max_seq_len, k) the same way). Nothing here reads
modelc's code or IR; only the parameter names follow docs/spec.md and docs/passes.md ("linformer").

  embedding  wte [V,H] + wpe [T,H], LayerNorm ln_emb
  layer      post-LN: x = ln_1(x + attn(x)); x = ln_2(x + mlp(x)); attention c_attn H->3H (q|k|v),
             Linformer heads as above, c_proj; mlp c_fc -> exact GELU -> c_proj
  head       lm_head Linear H->V without bias at every position; loss: mean cross-entropy over B*T

Sharing of the projections (the pass's share= option):
  none   E = layer.N.attn.lin_e.weight, F = layer.N.attn.lin_f.weight per layer
  kv     one projection per layer, layer.N.attn.lin_e.weight, used as E and as F
  layer  one projection for every layer, layer.0.attn.lin_e.weight, used as E and as F
A shared projection is one nn.Parameter used several times, so autograd sums its gradient.

Writes under tests/reference/fixtures/linformer-tiny/, for CFG in none, kv, layer:
  weights_CFG.safetensors  the parameters (float32)
  logits_CFG.npy           float32 [B,T,V] logits (computed in float64)
  loss_CFG.npy             the mean cross-entropy against targets.npy
  grads_CFG.safetensors    d loss / d parameter (float64 autograd, stored as float32)
  tokens.npy, targets.npy  the int32 [B,T] batch (all configurations)
  short.npy, logits_short.npy  an int32 [B,11] batch (n < T) and its logits with weights_none

Regenerate (Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_linformer_fixture.py
"""
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from make_fixtures import save_safetensors  # the file format only (this folder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "linformer-tiny")
V, H, T, B, L, HEADS, HID, K, EPS, NSHORT = 64, 16, 16, 2, 2, 2, 32, 4, 1e-5, 11


class LinformerAttention(nn.Module):
    """Multi-head self-attention with keys and values projected along the sequence by E and F."""
    def __init__(self, E, F_):
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(H, 3 * H), nn.Linear(H, H)
        self.E, self.F = E, F_

    def forward(self, x):
        b, n, _ = x.shape
        d = H // HEADS
        q, k, v = self.c_attn(x).split(H, dim=2)
        q, k, v = [t.view(b, n, HEADS, d).transpose(1, 2) for t in (q, k, v)]  # (b, heads, n, d)
        e, f = self.E[:, :n], self.F[:, :n]                                       # (k, n)
        kp = torch.matmul(e, k)                                                    # (b, heads, k, d)
        vp = torch.matmul(f, v)
        p = torch.softmax(q @ kp.transpose(-2, -1) / math.sqrt(d), dim=-1)         # (b, heads, n, k)
        return self.c_proj((p @ vp).transpose(1, 2).reshape(b, n, H))


class Layer(nn.Module):
    """Post-LN: attention, then the MLP (c_fc -> exact GELU -> c_proj), each with a residual and a norm."""
    def __init__(self, E, F_):
        super().__init__()
        self.attn, self.ln_1 = LinformerAttention(E, F_), nn.LayerNorm(H, eps=EPS)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(H, HID), "c_proj": nn.Linear(HID, H)})
        self.ln_2 = nn.LayerNorm(H, eps=EPS)

    def forward(self, x):
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp["c_proj"](F.gelu(self.mlp["c_fc"](x))))


def build(share, gen):
    """The model as (forward function, [(name, tensor)]), float64 arithmetic on float32 values."""
    def rnd(*shape, std=0.3, mean=0.0):
        return nn.Parameter(torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean)

    wte, wpe = rnd(V, H), rnd(T, H)
    ln_emb = nn.LayerNorm(H, eps=EPS).double()
    named = [("wte.weight", wte), ("wpe.weight", wpe)]
    layers, proj = [], {}
    for i in range(L):
        if share == "none":
            E, F_ = rnd(K, T, std=0.5), rnd(K, T, std=0.5)
            named += [(f"layer.{i}.attn.lin_e.weight", E), (f"layer.{i}.attn.lin_f.weight", F_)]
        elif share == "kv" or i == 0:
            E = F_ = rnd(K, T, std=0.5)
            named.append((f"layer.{i}.attn.lin_e.weight", E))
        else:  # share == "layer": layer 0's
            E = F_ = named[[n for n, _ in named].index("layer.0.attn.lin_e.weight")][1]
        layer = Layer(E, F_).double()
        layers.append(layer)
        for name, mod in [("attn.c_attn", layer.attn.c_attn), ("attn.c_proj", layer.attn.c_proj),
                          ("ln_1", layer.ln_1), ("mlp.c_fc", layer.mlp["c_fc"]), ("mlp.c_proj", layer.mlp["c_proj"]),
                          ("ln_2", layer.ln_2)]:
            norm = isinstance(mod, nn.LayerNorm)
            mod.weight = rnd(*mod.weight.shape, mean=1.0 if norm else 0.0)
            mod.bias = rnd(*mod.bias.shape)
            named += [(f"layer.{i}.{name}.weight", mod.weight), (f"layer.{i}.{name}.bias", mod.bias)]
    ln_emb.weight, ln_emb.bias = rnd(H, mean=1.0), rnd(H)
    lm_head = rnd(V, H)
    named += [("ln_emb.weight", ln_emb.weight), ("ln_emb.bias", ln_emb.bias), ("lm_head.weight", lm_head)]
    for _, p in named:  # the weights hold float32 values, as our program's
        p.data = p.data.float().double()

    def forward(tokens):
        n = tokens.shape[1]
        x = ln_emb(F.embedding(tokens, wte) + wpe[:n])
        for layer in layers:
            x = layer(x)
        return F.linear(x, lm_head)
    return forward, named


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(13)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    short = torch.randint(0, V, (B, NSHORT), generator=gen)
    np.save(os.path.join(OUT, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "targets.npy"), targets.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "short.npy"), short.numpy().astype(np.int32))
    for share in ("none", "kv", "layer"):
        forward, named = build(share, gen)
        logits = forward(tokens)
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        loss.backward()
        save_safetensors(os.path.join(OUT, f"weights_{share}.safetensors"), named)
        save_safetensors(os.path.join(OUT, f"grads_{share}.safetensors"), [(n, p.grad) for n, p in named])
        np.save(os.path.join(OUT, f"logits_{share}.npy"), logits.detach().numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"loss_{share}.npy"), np.array([loss.item()], dtype=np.float32))
        if share == "none":
            with torch.no_grad():
                np.save(os.path.join(OUT, "logits_short.npy"), forward(short).numpy().astype(np.float32))
        print(f"linformer-tiny share={share}: {len(named)} tensors, {sum(p.numel() for _, p in named)} parameters, "
              f"loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
