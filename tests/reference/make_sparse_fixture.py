#!/usr/bin/python3
"""make_sparse_fixture.py: the independent PyTorch reference for block-sparse attention.

The model of tests/reference/specs/sparse-tiny.yaml (pre-LN GPT: wte + wpe, 2 layers of
x += attn(ln_1(x)); x += mlp(ln_2(x)), ln_f, an untied lm_head; exact GELU) written with torch
ops, its attention a dense softmax over an explicit [T, T] boolean mask built here from the
element definitions of Child et al. 2019's reference code (openai/sparse_attention,
attention.py, get_attn_mask) and BigBird's global tokens; nothing here reads modelc's code:

  local(w)        0 <= q - k < w
  strided(l)      0 <= q - k and ((q - k) < l or (q - k) % l == 0)     (the paper's two heads merged)
  fixed(l, c)     k <= q and (k // l == q // l or k % l >= l - c)
  global(G)       k < G (and k <= q): every query sees the first G positions

For each pattern it writes, under tests/reference/fixtures/sparse-tiny/:
  logits_CFG.npy          float32 [B,T,V] (float64 arithmetic on the float32 weights)
  loss_CFG.npy            the mean cross-entropy against targets.npy
  grads_CFG.safetensors   d loss / d every parameter (float64 autograd, stored as float32)
and once: weights.safetensors (our parameter names), tokens.npy, targets.npy (int32 [B,T]).

CFG and the pass that builds it (tests/unit/test_program_sparse.c):
  local-w5       sparse-attention<pattern=local;window=5;tile=4>
  strided-l4     sparse-attention<pattern=strided;stride=4;tile=4>
  fixed-l6-c2    sparse-attention<pattern=fixed;block=6;summary=2;tile=4>
  local-w3-g2    sparse-attention<pattern=local;window=3;global=2;tile=4>
and on sparse-tiny-bidir.yaml (the same model and weights, bidirectional attention: the k <= q
condition dropped, and a global query sees every key):
  bidir-local-w3-g2     sparse-attention<pattern=local;window=3;global=2;tile=4>
  bidir-strided-l4-g1   sparse-attention<pattern=strided;stride=4;global=1;tile=4>
  bidir-fixed-l6-c2     sparse-attention<pattern=fixed;block=6;summary=2;tile=4>

Regenerate (Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_sparse_fixture.py
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from make_fixtures import save_safetensors  # the file format only (this folder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "sparse-tiny")
V, T, B, C, L, HEADS, HID, EPS = 64, 19, 2, 16, 2, 2, 32, 1e-5


def mask(kind, a=0, c=0, g=0, causal=True):
    """[T, T] bool: query q (row) may attend to key k (column)."""
    q = torch.arange(T).view(T, 1)
    k = torch.arange(T).view(1, T)
    d = q - k
    ad = d.abs()
    if kind == "local":
        m = ad < a
    elif kind == "strided":
        m = (ad < a) | (torch.remainder(ad, a) == 0)
    elif kind == "fixed":
        m = ((torch.div(k, a, rounding_mode="floor") == torch.div(q, a, rounding_mode="floor"))
             | (torch.remainder(k, a) >= a - c))
    else:
        raise ValueError(kind)
    m = m | (k < g)
    if causal:
        return m & (d >= 0)
    return m | (q < g)  # bidirectionally a global query sees every key


CONFIGS = {
    "local-w5": mask("local", 5),
    "strided-l4": mask("strided", 4),
    "fixed-l6-c2": mask("fixed", 6, 2),
    "local-w3-g2": mask("local", 3, g=2),
    # tests/reference/specs/sparse-tiny-bidir.yaml (causal: false): the bidirectional forms
    "bidir-local-w3-g2": mask("local", 3, g=2, causal=False),
    "bidir-strided-l4-g1": mask("strided", 4, g=1, causal=False),
    "bidir-fixed-l6-c2": mask("fixed", 6, 2, causal=False),
}


def params(gen):
    def rnd(*shape, std=0.3, mean=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean).float().double()

    named = [("wte.weight", rnd(V, C)), ("wpe.weight", rnd(T, C))]
    for i in range(L):
        p = f"h.{i}."
        named += [(p + "ln_1.weight", rnd(C, mean=1.0)), (p + "ln_1.bias", rnd(C, std=0.1)),
                  (p + "attn.c_attn.weight", rnd(3 * C, C)), (p + "attn.c_attn.bias", rnd(3 * C, std=0.1)),
                  (p + "attn.c_proj.weight", rnd(C, C)), (p + "attn.c_proj.bias", rnd(C, std=0.1)),
                  (p + "ln_2.weight", rnd(C, mean=1.0)), (p + "ln_2.bias", rnd(C, std=0.1)),
                  (p + "mlp.c_fc.weight", rnd(HID, C)), (p + "mlp.c_fc.bias", rnd(HID, std=0.1)),
                  (p + "mlp.c_proj.weight", rnd(C, HID)), (p + "mlp.c_proj.bias", rnd(C, std=0.1))]
    named += [("ln_f.weight", rnd(C, mean=1.0)), ("ln_f.bias", rnd(C, std=0.1)), ("lm_head.weight", rnd(V, C))]
    return [(n, t.requires_grad_()) for n, t in named]


def forward(w, tokens, allowed):
    x = F.embedding(tokens, w["wte.weight"]) + w["wpe.weight"]
    hd = C // HEADS
    for i in range(L):
        p = f"h.{i}."
        h = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], EPS)
        q, k, v = F.linear(h, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]).split(C, dim=2)
        q, k, v = [t.view(B, T, HEADS, hd).transpose(1, 2) for t in (q, k, v)]
        s = (q @ k.transpose(-2, -1) / math.sqrt(hd)).masked_fill(~allowed, float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(a, w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"])
        h = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], EPS)
        x = x + F.linear(F.gelu(F.linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"])),
                         w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], EPS)
    return F.linear(x, w["lm_head.weight"])


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(13)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    named = params(gen)
    w = dict(named)
    np.save(os.path.join(OUT, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "targets.npy"), targets.numpy().astype(np.int32))
    save_safetensors(os.path.join(OUT, "weights.safetensors"), named)
    for cfg, allowed in CONFIGS.items():
        for _, t in named:
            t.grad = None
        logits = forward(w, tokens, allowed)
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        loss.backward()
        save_safetensors(os.path.join(OUT, f"grads_{cfg}.safetensors"), [(n, t.grad) for n, t in named])
        np.save(os.path.join(OUT, f"logits_{cfg}.npy"), logits.detach().numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"loss_{cfg}.npy"), np.array([loss.item()], dtype=np.float32))
        print(f"sparse-tiny {cfg}: {int(allowed.sum())} of {T * T} pairs, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
