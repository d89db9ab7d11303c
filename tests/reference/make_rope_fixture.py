#!/usr/bin/python3
"""make_rope_fixture.py: an independent PyTorch reference for the IR op `rope` (rotary positions).

It writes a small model in the IR text form and what PyTorch computes for it:

  tests/reference/fixtures/rope-tiny/model.mir           tokens i32[B,T] -> embedding -> linear to 3C
                                                          (with bias) -> rope {heads, theta} -> f32[B,T,3C]
  tests/reference/fixtures/rope-tiny/weights.safetensors the embedding table, the linear weight and bias
  tests/reference/fixtures/rope-tiny/tokens.npy          int32 [B, T] input ids
  tests/reference/fixtures/rope-tiny/out.npy             float32 [B, T, 3C] the expected output

The rotation is written the way Meta's LLaMA reference (`precompute_freqs_cis`,
`apply_rotary_emb`) writes it, as complex multiplication: the pairs (2i, 2i+1) of each head of
q and k are the complex numbers x[2i] + j x[2i+1], multiplied by exp(j pos theta^(-2i/hd)). None
of modelc's code or formulas is used. The output is computed in float64 from the float32 weights,
so it is exact to ~1e-15 and the test measures only our float32 rounding.

Regenerate (needs Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_rope_fixture.py
"""
import os

import numpy as np
import torch

from make_fixtures import save_safetensors  # the hand-written safetensors writer (this folder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "rope-tiny")
# Odd T and a theta other than the default, so a wrong position, pair layout or theta shows.
B, T, C, H, V, THETA = 2, 33, 24, 3, 32, 100.0


# ---- Meta's formulation (llama/model.py), in float64 -------------------------------------------
def precompute_freqs_cis(dim, end, theta):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: (dim // 2)] / dim))
    t = torch.arange(end, dtype=torch.float64)
    freqs = torch.outer(t, freqs)
    return torch.polar(torch.ones_like(freqs), freqs)  # complex128 [end, dim/2]


def apply_rotary_emb(xq, xk, freqs_cis):
    # xq, xk: [B, T, H, hd]
    xq_ = torch.view_as_complex(xq.reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.reshape(*xk.shape[:-1], -1, 2))
    fc = freqs_cis.view(1, xq_.shape[1], 1, xq_.shape[-1])
    return torch.view_as_real(xq_ * fc).flatten(3), torch.view_as_real(xk_ * fc).flatten(3)


MIR = """; model.mir: written by tests/reference/make_rope_fixture.py (do not edit; regenerate).
; embedding -> linear to 3C (q, k, v) with bias -> rope: the reference test of the rope op.
module @rope-tiny {{batch={B}, context={T}, dim={C}, kind="encoder", vocab={V}}}
entry @forward

param @wte.weight : f32[{V},{C}] init=normal(0.5)
param @qkv.weight : f32[{C3},{C}] init=normal(0.5)
param @qkv.bias : f32[{C3}] init=zeros nodecay

func @forward(%tokens: i32[{B},{T}]) -> f32[{B},{T},{C3}] {{
  %wte = param {{p=@wte.weight}} : f32[{V},{C}]
  %x = embedding(%tokens, %wte) : f32[{B},{T},{C}]
  %w = param {{p=@qkv.weight}} : f32[{C3},{C}]
  %b = param {{p=@qkv.bias}} : f32[{C3}]
  %qkv = linear(%x, %w, %b) {{epi="add($0, $1)"}} : f32[{B},{T},{C3}]
  %r = rope(%qkv) {{heads={H}, theta={THETA}}} : f32[{B},{T},{C3}]
  return %r
}}
"""


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(4321)
    wte = torch.randn((V, C), generator=g)
    w = torch.randn((3 * C, C), generator=g) * 0.3
    b = torch.randn((3 * C,), generator=g) * 0.1
    tokens = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)

    x = torch.nn.functional.embedding(tokens, wte.double())
    qkv = torch.nn.functional.linear(x, w.double(), b.double())
    q, k, v = qkv.split(C, dim=-1)
    hd = C // H
    q, k = apply_rotary_emb(q.reshape(B, T, H, hd), k.reshape(B, T, H, hd), precompute_freqs_cis(hd, T, THETA))
    out = torch.cat([q.reshape(B, T, C), k.reshape(B, T, C), v], dim=-1)

    with open(os.path.join(OUT, "model.mir"), "w") as f:
        f.write(MIR.format(B=B, T=T, C=C, C3=3 * C, H=H, V=V, THETA=THETA))
    save_safetensors(os.path.join(OUT, "weights.safetensors"), [("wte.weight", wte), ("qkv.weight", w), ("qkv.bias", b)])
    np.save(os.path.join(OUT, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "out.npy"), out.numpy().astype(np.float32))
    print(f"wrote {OUT}: out {tuple(out.shape)}, max |out| {out.abs().max().item():.3f}")


if __name__ == "__main__":
    main()
