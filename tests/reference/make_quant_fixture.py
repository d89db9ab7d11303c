#!/usr/bin/python3
"""make_quant_fixture.py: the independent reference for quantised inference (the quantize pass).

For tests/reference/specs/quant-tiny.yaml (make_fixtures.py's model, layer by layer, with its
seeded weights) it writes, under tests/reference/fixtures/quant-tiny/:

  weights.safetensors, tokens.npy, logits.npy   the f32 model, as make_fixtures.py would
  SCHEME.safetensors                            every parameter as `PROG export` must write it: the
                                                quantised ones as NAME (I8 [N,K] or U8 [N,K/2]) and
                                                NAME.scale (F32 [N] or F16 [N,K/32]), the others F32
  logits_SCHEME.npy                             the logits of the quantised model

for SCHEME in int8, q8_0, q4_0 (the block linear weights quantised: quantize's default) and
q4_0-all (head=true, embeddings=true: the tied table too, its embedding rows dequantised).

What quantised inference means here is written from docs/passes.md ("quantize"), in NumPy float32
arithmetic where the rule is float32 (the scales, the rounding), not from modelc's C code:
  weights: int8 per row d = amax/127, q = rint(w * (127/amax)); q8_0 per block of 32 d =
    f16(amax/127), q = rint(w / d); q4_0 per block d = f16(m / -8) (m the signed value of largest
    magnitude), q = clip(floor(w / d + 8.5), 0, 15), nibbles j | j+16 << 4; all clipped to range;
  activations (every linear input, as float32): per row (int8) or per block of 32, amax,
    d = amax/127, q = rint(x * (127/amax));
  the product: exact integer sums, scaled by the float32 product of the two scales (per row, or
    per block and summed), in float64; everything else (norms, softmax, residuals) in float64.

Regenerate (Debian's python3-torch, python3-numpy, python3-yaml):
    /usr/bin/python3 tests/reference/make_quant_fixture.py
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import yaml

import make_fixtures as mf  # the model, layer by layer (this folder)

SPEC = "tests/reference/specs/quant-tiny.yaml"
SCHEMES = ["int8", "q8_0", "q4_0", "q4_0-all"]
F32 = np.float32


def quantize(w, scheme):
    """w float32 [N,K] -> (values, scales, dequantised float64 [N,K])."""
    w = w.astype(F32)
    N, K = w.shape
    if scheme == "int8":
        amax = np.abs(w).max(axis=1).astype(F32)
        with np.errstate(divide="ignore"):
            inv = np.where(amax > 0, F32(127) / amax, F32(0)).astype(F32)
        q = np.clip(np.rint((w * inv[:, None]).astype(F32)), -127, 127).astype(np.int8)
        d = (amax / F32(127)).astype(F32)
        return q, d, q.astype(np.float64) * d.astype(np.float64)[:, None]
    b = w.reshape(N, K // 32, 32)
    if scheme == "q8_0":
        amax = np.abs(b).max(axis=2).astype(F32)
        d = (amax / F32(127)).astype(F32).astype(np.float16)
        df = d.astype(F32)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(df[..., None] > 0, np.rint((b / df[..., None]).astype(F32)), 0)
        q = np.clip(q, -127, 127).astype(np.int8)
        deq = q.astype(np.float64) * df.astype(np.float64)[..., None]
        return q.reshape(N, K), d.reshape(N, K // 32), deq.reshape(N, K)
    # q4_0
    idx = np.abs(b).argmax(axis=2)
    m = np.take_along_axis(b, idx[..., None], axis=2)[..., 0].astype(F32)
    d = (m / F32(-8)).astype(F32).astype(np.float16)
    df = d.astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(df != 0, F32(1) / df, F32(0)).astype(F32)
    q = np.clip(np.floor((b * inv[..., None]).astype(F32) + F32(8.5)), 0, 15).astype(np.uint8)
    packed = (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)
    deq = (q.astype(np.float64) - 8) * df.astype(np.float64)[..., None]
    return packed.reshape(N, K // 2), d.reshape(N, K // 32), deq.reshape(N, K)


def quantize_act(x, block):
    """x float32 [R,K] -> (q int64 [R,K], d float32 [R, K/block]) with block = K for per row."""
    R, K = x.shape
    b = x.reshape(R, K // block, block)
    amax = np.abs(b).max(axis=2).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, F32(127) / amax, F32(0)).astype(F32)
    q = np.rint((b * inv[..., None]).astype(F32)).astype(np.int64)
    return q.reshape(R, K), (amax / F32(127)).astype(F32)


class QuantF:
    """Stands in for torch.nn.functional inside make_fixtures: linear and embedding of the
    quantised weights (by tensor identity) follow the rules above; everything else is torch's."""

    def __init__(self, qweights, scheme):
        self.q = qweights  # id(tensor) -> (int values [N,K], weight scales, dequantised, block)
        self.scheme = scheme

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def embedding(self, ids, w):
        if id(w) in self.q:
            return torch.nn.functional.embedding(ids, torch.from_numpy(self.q[id(w)][2]))
        return torch.nn.functional.embedding(ids, w)

    def linear(self, x, w, b=None):
        if id(w) not in self.q:
            return torch.nn.functional.linear(x, w, b)
        qw, dw, _, block = self.q[id(w)]
        lead, K = x.shape[:-1], x.shape[-1]
        xa = x.detach().numpy().reshape(-1, K).astype(F32)
        qx, dx = quantize_act(xa, block)
        nb = K // block
        N = qw.shape[0]
        y = np.zeros((xa.shape[0], N))
        for j in range(nb):
            isum = qx[:, j * block:(j + 1) * block] @ qw[:, j * block:(j + 1) * block].T  # exact int64
            scale = (dx[:, j][:, None] * dw[:, j][None, :]).astype(F32)  # the float32 product of the scales
            y += scale.astype(np.float64) * isum
        y = torch.from_numpy(y.reshape(*lead, N))
        return y + b if b is not None else y


def tensor_bytes(a):
    return np.ascontiguousarray(a).tobytes()


def save(path, items):
    """items: (name, numpy array) in order; dtypes F32, F16, I8, U8."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int8): "I8",
             np.dtype(np.uint8): "U8"}
    header, blobs, off = {}, [], 0
    for name, a in items:
        raw = tensor_bytes(a)
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def main():
    torch.set_num_threads(2)
    spec = yaml.safe_load(open(os.path.join(mf.ROOT, SPEC)))
    ctx = mf.Ctx(spec)
    model = mf.build(spec["layers"], ctx, "")
    d = os.path.join(mf.OUT, "quant-tiny")
    os.makedirs(d, exist_ok=True)
    mf.save_safetensors(os.path.join(d, "weights.safetensors"), ctx.order)
    g = torch.Generator().manual_seed(99)
    tokens = torch.randint(0, ctx.vocab, (ctx.batch, ctx.context), generator=g, dtype=torch.int64)
    np.save(os.path.join(d, "tokens.npy"), tokens.numpy().astype(np.int32))
    with torch.no_grad():
        ref = mf.run(model, tokens)
    np.save(os.path.join(d, "logits.npy"), ref.numpy().astype(np.float32))
    for scheme in SCHEMES:
        base = scheme.split("-")[0]
        every = scheme.endswith("-all")
        qweights, items = {}, []
        for name, t in ctx.order:
            w = t.numpy().astype(F32)
            # quantize's default: the linear weights of the blocks (h.*, 2-D); -all adds the tied table
            if w.ndim == 2 and (name.startswith("h.") or (every and name == ctx.embedding)):
                vals, scales, deq = quantize(w, base)
                block = w.shape[1] if base == "int8" else 32
                ints = vals.astype(np.int64)
                if base == "q4_0":  # unpack the nibbles to q - 8
                    v = vals.reshape(w.shape[0], -1, 16)
                    ints = np.concatenate([v & 15, v >> 4], axis=2).reshape(w.shape).astype(np.int64) - 8
                qweights[id(ctx.params[name])] = (ints, np.asarray(scales, dtype=F32).reshape(w.shape[0], -1),
                                                  deq, block)
                items += [(name, vals), (name + ".scale", scales)]
            else:
                items.append((name, w))
        save(os.path.join(d, scheme + ".safetensors"), items)
        mf.F = QuantF(qweights, base)
        with torch.no_grad():
            logits = mf.run(model, tokens)
        mf.F = torch.nn.functional
        np.save(os.path.join(d, "logits_%s.npy" % scheme), logits.numpy().astype(np.float32))
        diff = (logits - ref).abs().max().item() / ref.abs().max().item()
        print("quant-tiny %s: %d quantised tensors, max |quantised - f32| / max |f32| = %.3g" %
              (scheme, len(qweights), diff))


if __name__ == "__main__":
    sys.exit(main())
