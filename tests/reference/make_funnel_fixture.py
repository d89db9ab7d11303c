#!/usr/bin/python3
"""make_funnel_fixture.py: the independent PyTorch reference for sequence compression.

The model of tests/reference/specs/funnel-mini.yaml, a small Funnel-Transformer encoder written here
from the paper (Dai et al. 2020, "Funnel-Transformer: Filtering out Sequential Redundancy for
Efficient Language Processing", sec. 2.2 and its pool_q_only option): after a pool, the next
block's attention takes its queries from the mean-pooled hidden states and its keys and values
from the unpooled ones,

    h' = LayerNorm(pool(h) + Attn(Q = pool(h), KV = h))

(the residual is the pooled input); pool is a mean over non-overlapping windows of `stride`
positions (avg_pool with kernel = stride). The decoder's up-sampling repeats every position of the
last hidden states 2^k times and adds the hidden states from before the first pool. Attention here
is the standard absolute-position kind (positions are a learned table before the first pool),
not the paper's relative attention; no separate [CLS]. Nothing here reads modelc's code or IR;
only the parameter names follow docs/spec.md.

  embedding  wte [V,H] + wpe [T,H], LayerNorm ln_emb
  block      post-LN: x = ln_1(x + attn(x)); x = ln_2(x + mlp(x)); attention c_attn H->3H (q|k|v),
             c_proj; mlp c_fc -> exact GELU -> c_proj
  layers     enc.0 (T=16) | pool 2 | p1 (pooled queries, 16 -> 8) | mid.0 (T=8) | pool 2 |
             p2 (8 -> 4) | upsample x4 + the stream before the first pool | dec (T=16) | lm_head
  loss       mean cross-entropy over B*T positions (token-level: every position's gradient flows
             back through the upsample, both pools and the pooled-query attentions)

funnel-cls (tests/reference/specs/funnel-cls.yaml) is the classifier form: wte + wpe, one full
block b1, pool 2, block p1, pool 2, block p2 (4 positions), a mean-pool classifier of 3 classes
straight on the pooled sequence (no upsample); loss: cross-entropy of B class targets. Its
fixture folder funnel-cls holds the same five files (targets int32 [B]).

Writes under tests/reference/fixtures/funnel-mini/:
  weights.safetensors  the parameters (float32)
  logits.npy           float32 [B,T,V] logits (computed in float64)
  loss.npy             the mean cross-entropy against targets.npy
  grads.safetensors    d loss / d parameter (float64 autograd, stored as float32)
  tokens.npy, targets.npy  the int32 [B,T] batch
  short.npy, logits_short.npy  an int32 [B,8] batch (8 < T, a multiple of the pools' 4) and its
                       logits (positions wpe[:8]; 8 -> 4 -> 2 positions; upsampled back to 8)
  odd.npy              an int32 [B,6] batch, which the program must refuse (6 is no multiple of 4)

Regenerate (Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_funnel_fixture.py
"""
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from make_fixtures import save_safetensors  # the file format only (this folder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "funnel-mini")
V, H, T, B, HEADS, HID, EPS, NSHORT = 64, 16, 16, 2, 2, 32, 1e-5, 8


def mean_pool(x, stride):
    """[b, n, H] -> [b, n/stride, H]: the mean of each window of `stride` positions."""
    return F.avg_pool1d(x.transpose(1, 2), stride, stride=stride).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head bidirectional attention of queries from `xq` over keys and values from `xkv`."""
    def __init__(self):
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(H, 3 * H), nn.Linear(H, H)

    def forward(self, xq, xkv):
        d = H // HEADS
        wq, wk, wv = self.c_attn.weight.split(H, dim=0)
        bq, bk, bv = self.c_attn.bias.split(H, dim=0)
        q, k, v = F.linear(xq, wq, bq), F.linear(xkv, wk, bk), F.linear(xkv, wv, bv)
        heads = lambda t: t.view(t.shape[0], t.shape[1], HEADS, d).transpose(1, 2)
        p = torch.softmax(heads(q) @ heads(k).transpose(-2, -1) / math.sqrt(d), dim=-1)
        o = (p @ heads(v)).transpose(1, 2)
        return self.c_proj(o.reshape(o.shape[0], o.shape[1], H))


class Block(nn.Module):
    """Post-LN block; with `stride`, the Funnel block after a pool (pooled queries and residual)."""
    def __init__(self, stride=1):
        super().__init__()
        self.stride = stride
        self.attn, self.ln_1 = Attention(), nn.LayerNorm(H, eps=EPS)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(H, HID), "c_proj": nn.Linear(HID, H)})
        self.ln_2 = nn.LayerNorm(H, eps=EPS)

    def forward(self, x):
        q = mean_pool(x, self.stride) if self.stride > 1 else x
        x = self.ln_1(q + self.attn(q, x))
        return self.ln_2(x + self.mlp["c_proj"](F.gelu(self.mlp["c_fc"](x))))


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(14)

    def rnd(*shape, std=0.3, mean=0.0):
        return nn.Parameter(torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean)

    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    short = torch.randint(0, V, (B, NSHORT), generator=gen)
    wte, wpe = rnd(V, H), rnd(T, H)
    ln_emb = nn.LayerNorm(H, eps=EPS).double()
    ln_emb.weight, ln_emb.bias = rnd(H, mean=1.0), rnd(H)
    named = [("wte.weight", wte), ("wpe.weight", wpe), ("ln_emb.weight", ln_emb.weight), ("ln_emb.bias", ln_emb.bias)]
    blocks = {}
    # (name, stride, parameter prefix of each sub-layer): repeat blocks name ln_1/ln_2 inside the
    # block; top-level layers carry their own names (funnel-mini.yaml)
    plan = [("enc", 1, ["enc.0.attn", "enc.0.ln_1", "enc.0.mlp", "enc.0.ln_2"]),
            ("p1", 2, ["p1_attn", "p1_ln_1", "p1_mlp", "p1_ln_2"]),
            ("mid", 1, ["mid.0.attn", "mid.0.ln_1", "mid.0.mlp", "mid.0.ln_2"]),
            ("p2", 2, ["p2_attn", "p2_ln_1", "p2_mlp", "p2_ln_2"]),
            ("dec", 1, ["dec_attn", "dec_ln_1", "dec_mlp", "dec_ln_2"])]
    for key, stride, (pa, pl1, pm, pl2) in plan:
        blk = Block(stride).double()
        blocks[key] = blk
        for name, mod in [(pa + ".c_attn", blk.attn.c_attn), (pa + ".c_proj", blk.attn.c_proj), (pl1, blk.ln_1),
                          (pm + ".c_fc", blk.mlp["c_fc"]), (pm + ".c_proj", blk.mlp["c_proj"]), (pl2, blk.ln_2)]:
            norm = isinstance(mod, nn.LayerNorm)
            mod.weight = rnd(*mod.weight.shape, mean=1.0 if norm else 0.0)
            mod.bias = rnd(*mod.bias.shape)
            named += [(name + ".weight", mod.weight), (name + ".bias", mod.bias)]
    lm_head = rnd(V, H)
    named.append(("lm_head.weight", lm_head))
    for _, p in named:  # the weights hold float32 values, as our program's
        p.data = p.data.float().double()

    def forward(tokens):
        n = tokens.shape[1]
        x = ln_emb(F.embedding(tokens, wte) + wpe[:n])
        x = blocks["enc"](x)
        before = x                                          # the stream before the first pool
        x = blocks["mid"](blocks["p1"](x))                  # 16 -> 8 positions
        x = blocks["p2"](x)                                 # 8 -> 4
        x = torch.repeat_interleave(x, 4, dim=1) + before   # the decoder's input: back to 16
        return F.linear(blocks["dec"](x), lm_head)

    logits = forward(tokens)
    with torch.no_grad():  # a call of 8 positions (a multiple of the strides' product 4)
        np.save(os.path.join(OUT, "short.npy"), short.numpy().astype(np.int32))
        np.save(os.path.join(OUT, "odd.npy"), short[:, :6].numpy().astype(np.int32))  # refused: 6 % 4 != 0
        np.save(os.path.join(OUT, "logits_short.npy"), forward(short).numpy().astype(np.float32))
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    loss.backward()

    np.save(os.path.join(OUT, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "targets.npy"), targets.numpy().astype(np.int32))
    save_safetensors(os.path.join(OUT, "weights.safetensors"), named)
    save_safetensors(os.path.join(OUT, "grads.safetensors"), [(n, p.grad) for n, p in named])
    np.save(os.path.join(OUT, "logits.npy"), logits.detach().numpy().astype(np.float32))
    np.save(os.path.join(OUT, "loss.npy"), np.array([loss.item()], dtype=np.float32))
    print(f"funnel-mini: {len(named)} tensors, {sum(p.numel() for _, p in named)} parameters, loss {loss.item():.6f}")


def classifier():
    """funnel-cls: two pools straight into a mean-pool classifier (no upsample): 16 -> 8 -> 4."""
    out = os.path.join(ROOT, "tests", "reference", "fixtures", "funnel-cls")
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(15)

    def rnd(*shape, std=0.3, mean=0.0):
        return nn.Parameter(torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean)

    classes = 3
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, classes, (B,), generator=gen)
    wte, wpe = rnd(V, H), rnd(T, H)
    named = [("wte.weight", wte), ("wpe.weight", wpe)]
    blocks = []
    for key, stride in (("b1", 1), ("p1", 2), ("p2", 2)):
        blk = Block(stride).double()
        blocks.append(blk)
        for name, mod in [(key + "_attn.c_attn", blk.attn.c_attn), (key + "_attn.c_proj", blk.attn.c_proj),
                          (key + "_ln_1", blk.ln_1), (key + "_mlp.c_fc", blk.mlp["c_fc"]),
                          (key + "_mlp.c_proj", blk.mlp["c_proj"]), (key + "_ln_2", blk.ln_2)]:
            norm = isinstance(mod, nn.LayerNorm)
            mod.weight = rnd(*mod.weight.shape, mean=1.0 if norm else 0.0)
            mod.bias = rnd(*mod.bias.shape)
            named += [(name + ".weight", mod.weight), (name + ".bias", mod.bias)]
    cw, cb = rnd(classes, H), rnd(classes)
    named += [("classifier.weight", cw), ("classifier.bias", cb)]
    for _, p in named:
        p.data = p.data.float().double()
    x = F.embedding(tokens, wte) + wpe
    for blk in blocks:
        x = blk(x)
    logits = F.linear(x.mean(dim=1), cw, cb)  # the classifier's mean over the 4 pooled positions
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    np.save(os.path.join(out, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(out, "targets.npy"), targets.numpy().astype(np.int32))
    save_safetensors(os.path.join(out, "weights.safetensors"), named)
    save_safetensors(os.path.join(out, "grads.safetensors"), [(n, p.grad) for n, p in named])
    np.save(os.path.join(out, "logits.npy"), logits.detach().numpy().astype(np.float32))
    np.save(os.path.join(out, "loss.npy"), np.array([loss.item()], dtype=np.float32))
    print(f"funnel-cls: {len(named)} tensors, {sum(p.numel() for _, p in named)} parameters, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
    classifier()
