#!/usr/bin/python3
"""make_share_fixture.py: the independent PyTorch reference for cross-layer parameter sharing.

The model of tests/reference/specs/share-tiny.yaml is written here with torch.nn modules, as ALBERT
shares its layers: one module object used by several layers is one set of parameters, and
autograd sums its gradient over the layers that use it. Nothing here reads modelc's code or the
spec's layer list (only the names of parameters follow docs/spec.md).

  embedding  wte [V,E], then emb_proj (Linear E->H), + wpe [T,H], LayerNorm ln_emb
  layer      post-LN: x = ln_1(x + attn(x)); x = ln_2(x + mlp(x)); causal multi-head attention
             (c_attn H->3H, q|k|v, softmax(q k^T / sqrt(d)), c_proj), mlp c_fc -> exact GELU -> c_proj
  head       lm_head Linear H->V without bias; loss: mean cross-entropy over B*T next tokens

For each sharing configuration it writes, under tests/reference/fixtures/share-tiny/:

  weights[_CFG].safetensors  the configuration's parameters, one copy of each shared set, named by
                             the first layer of its group (layer.0.attn.c_attn.weight ...)
  logits[_CFG].npy           float32 [B,T,V] logits (computed in float64)
  loss[_CFG].npy             the mean cross-entropy against targets.npy
  grads[_CFG].safetensors    d loss / d parameter (float64 autograd, stored as float32): for a
                             shared parameter the sum over the layers that use it
  tokens.npy, targets.npy    the int32 [B,T] batch (all configurations)

CFG: "" for share<mode=all> (the spec's pipeline), "_attention-g2" for
share<mode=attention;group=2> (attention + its ln_1 shared within layers {0,1} and {2,3}) and
"_ffn-g3" for share<mode=ffn;group=3> (the MLP + its ln_2 shared within {0,1,2}; layer 3 alone).

Regenerate (Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_share_fixture.py
"""
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from make_fixtures import save_safetensors  # the file format only (this folder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "share-tiny")
V, E, H, T, B, L, HEADS, HID, EPS = 64, 8, 16, 8, 2, 4, 2, 32, 1e-5
# name -> (what is shared, group size; 0: all layers one group)
CONFIGS = {"": ("all", 0), "_attention-g2": ("attention", 2), "_ffn-g3": ("ffn", 3)}


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(H, 3 * H), nn.Linear(H, H)

    def forward(self, x):
        q, k, v = self.c_attn(x).split(H, dim=2)
        q, k, v = [t.view(B, T, HEADS, H // HEADS).transpose(1, 2) for t in (q, k, v)]
        s = q @ k.transpose(-2, -1) / math.sqrt(H // HEADS)
        s = s.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
        return self.c_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(H, HID), nn.Linear(HID, H)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Layer(nn.Module):
    """One layer made of a (possibly shared) attention half and a (possibly shared) FFN half."""
    def __init__(self, attn_half, ffn_half):
        super().__init__()
        self.attn_half, self.ffn_half = attn_half, ffn_half   # (Attention, LayerNorm), (MLP, LayerNorm)

    def forward(self, x):
        attn, ln_1 = self.attn_half
        x = ln_1(x + attn(x))
        mlp, ln_2 = self.ffn_half
        return ln_2(x + mlp(x))


def owner(i, shared, group):
    """The layer whose parameters layer i uses for a half that is shared (itself otherwise)."""
    if not shared:
        return i
    g = group if group else L
    return i // g * g


def build(what, group, gen):
    """The model as (forward function, [(name, tensor)] in module order), float64."""
    def rnd(*shape, std=0.3, mean=0.0):
        return nn.Parameter(torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean)

    def fill(mod):
        for p in mod.parameters():
            p.data = rnd(*p.shape, std=0.3, mean=1.0 if isinstance(mod, nn.LayerNorm) and p.dim() == 1
                         and p is mod.weight else 0.0).data
        return mod

    wte, wpe = rnd(V, E), rnd(T, H)
    emb_proj, ln_emb, lm_head = fill(nn.Linear(E, H).double()), fill(nn.LayerNorm(H, eps=EPS).double()), None
    attn_halves, ffn_halves, named = {}, {}, [("wte.weight", wte), ("emb_proj.weight", emb_proj.weight),
                                              ("emb_proj.bias", emb_proj.bias), ("wpe.weight", wpe),
                                              ("ln_emb.weight", ln_emb.weight), ("ln_emb.bias", ln_emb.bias)]
    layers = []
    for i in range(L):
        a, f = owner(i, what in ("all", "attention"), group), owner(i, what in ("all", "ffn"), group)
        if a not in attn_halves:
            attn_halves[a] = (fill(Attention().double()), fill(nn.LayerNorm(H, eps=EPS).double()))
        if f not in ffn_halves:
            ffn_halves[f] = (fill(MLP().double()), fill(nn.LayerNorm(H, eps=EPS).double()))
        # parameters in our module's order: a layer's own (first-use) parameters in block order
        if a == i:
            at, l1 = attn_halves[a]
            named += [(f"layer.{i}.attn.c_attn.weight", at.c_attn.weight), (f"layer.{i}.attn.c_attn.bias", at.c_attn.bias),
                      (f"layer.{i}.attn.c_proj.weight", at.c_proj.weight), (f"layer.{i}.attn.c_proj.bias", at.c_proj.bias),
                      (f"layer.{i}.ln_1.weight", l1.weight), (f"layer.{i}.ln_1.bias", l1.bias)]
        if f == i:
            ml, l2 = ffn_halves[f]
            named += [(f"layer.{i}.mlp.c_fc.weight", ml.c_fc.weight), (f"layer.{i}.mlp.c_fc.bias", ml.c_fc.bias),
                      (f"layer.{i}.mlp.c_proj.weight", ml.c_proj.weight), (f"layer.{i}.mlp.c_proj.bias", ml.c_proj.bias),
                      (f"layer.{i}.ln_2.weight", l2.weight), (f"layer.{i}.ln_2.bias", l2.bias)]
        layers.append(Layer(attn_halves[a], ffn_halves[f]))
    lm_head = rnd(V, H)
    named.append(("lm_head.weight", lm_head))
    # the weights hold float32 values (as our program's), the arithmetic is float64
    for _, p in named:
        p.data = p.data.float().double()

    def forward(tokens):
        x = ln_emb(emb_proj(F.embedding(tokens, wte)) + wpe)
        for layer in layers:
            x = layer(x)
        return F.linear(x, lm_head)
    return forward, named


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(12)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    np.save(os.path.join(OUT, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "targets.npy"), targets.numpy().astype(np.int32))
    for cfg, (what, group) in CONFIGS.items():
        forward, named = build(what, group, gen)
        logits = forward(tokens)
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        loss.backward()
        save_safetensors(os.path.join(OUT, f"weights{cfg}.safetensors"), named)
        save_safetensors(os.path.join(OUT, f"grads{cfg}.safetensors"), [(n, p.grad) for n, p in named])
        np.save(os.path.join(OUT, f"logits{cfg}.npy"), logits.detach().numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"loss{cfg}.npy"), np.array([loss.item()], dtype=np.float32))
        print(f"share-tiny{cfg or ' (all)'}: {len(named)} tensors, "
              f"{sum(p.numel() for _, p in named)} parameters, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
