#!/usr/bin/python3
"""make_bf16_fixture.py: the independent PyTorch reference for bf16 inference (--precision=bf16).

For each fixture model of make_fixtures.py that has an LM head (the same spec, the same seeded
weights, the same tokens), it computes what bf16 inference means:

  - every parameter rounded to bfloat16 (torch's .to(torch.bfloat16): round to nearest even), as
    store<dtype=bf16> stores them;
  - the input of every linear layer rounded to bfloat16, the products of the rounded values summed
    exactly (float64 here), as compute<dtype=bf16> asks of the GEMM (which sums in f32);
  - everything else (embedding rows, norms, softmax, attention, residual sums) in float64.

and writes tests/reference/fixtures/NAME/logits_bf16.npy (float32); head-tiny, a model of this
script's own, gets its weights.safetensors and tokens.npy here too.

For head-tiny it also writes what bf16 *training* means (train: precision: bf16, the precision
pass): targets.npy, grads.safetensors and loss.npy (no rounding: make_fixtures.py's meaning), grads_bf16.safetensors and loss_bf16.npy, the float64 gradients of the mean
cross-entropy with every parameter rounded to bf16 (the working weights), the head's three products
reading bf16-rounded operands, y = bf16(x) bf16(W)^T, dx = bf16(dy) bf16(W), dW = bf16(dy)^T bf16(x)
(Linear16 below), and the LayerNorm's backward reading its input as stored in bf16 (LayerNorm16:
the precision pass keeps that activation in 16 bits for the backward); nothing else rounded.
head-tiny has no chain of products, so the program matches this to f32 accumulation accuracy.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
import yaml

import make_fixtures as mf  # the model, layer by layer (this folder)

MODELS = [("gpt-tiny", "examples/gpt-tiny.yaml"), ("llama-tiny", "tests/reference/specs/llama-tiny.yaml"),
          ("head-tiny", "tests/reference/specs/head-tiny.yaml")]


def bf16(t):
    return t.to(torch.bfloat16).to(t.dtype)


class Linear16(torch.autograd.Function):
    """F.linear with its forward and backward products on bf16-rounded operands, summed exactly."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        y = bf16(x) @ bf16(w).t()
        return y + b if b is not None else y

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dyr = bf16(dy)
        dx = dyr @ bf16(w)
        dw = dyr.reshape(-1, dy.shape[-1]).t() @ bf16(x).reshape(-1, x.shape[-1])
        db = dy.reshape(-1, dy.shape[-1]).sum(0) if ctx.has_bias else None
        return dx, dw, db


class LayerNorm16(torch.autograd.Function):
    """F.layer_norm whose backward reads its input rounded to bf16 (the stored activation)."""

    @staticmethod
    def forward(ctx, x, shape, g, b, eps):
        ctx.save_for_backward(bf16(x), g, b)
        ctx.shape, ctx.eps = shape, eps
        return F.layer_norm.__wrapped_ln__(x, shape, g, b, eps)

    @staticmethod
    def backward(ctx, dy):
        xs, g, b = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in (xs, g, b)]
            y = F.layer_norm.__wrapped_ln__(leaves[0], ctx.shape, leaves[1], leaves[2], ctx.eps)
            dx, dg, db = torch.autograd.grad(y, leaves, dy)
        return dx, None, dg, db, None


def gradients(spec, tokens, targets, rounded):
    """The loss and (name, gradient) pairs, float64, with the bf16 rules or without."""
    ctx = mf.Ctx(spec)
    model = mf.build(spec["layers"], ctx, "")
    if rounded:
        with torch.no_grad():
            for t in ctx.params.values():
                t.copy_(bf16(t))
    for t in ctx.params.values():
        t.requires_grad_(True)
    loss = mf.cross_entropy(mf.run(model, tokens), targets)
    loss.backward()
    return loss.item(), [(n, ctx.params[n].grad) for n, _ in ctx.order]


def training_bf16(name, path):
    """targets.npy, grads_bf16.safetensors and loss_bf16.npy of a model (see the top), and its
    grads.safetensors and loss.npy without any rounding (make_fixtures.py's meaning)."""
    spec = yaml.safe_load(open(os.path.join(mf.ROOT, path)))
    d = os.path.join(mf.OUT, name)
    saved_linear, saved_ln = F.linear, F.layer_norm
    ln16 = lambda x, shape, g=None, b=None, eps=1e-5: LayerNorm16.apply(x, shape, g, b, eps)
    ln16.__wrapped_ln__ = saved_ln
    tokens = torch.from_numpy(np.load(os.path.join(d, "tokens.npy")).astype(np.int64))
    g = torch.Generator().manual_seed(100)
    targets = torch.randint(0, spec["model"]["vocab"], tokens.shape, generator=g)
    np.save(os.path.join(d, "targets.npy"), targets.numpy().astype(np.int32))
    loss, grads = gradients(spec, tokens, targets, False)
    mf.save_safetensors(os.path.join(d, "grads.safetensors"), grads)
    np.save(os.path.join(d, "loss.npy"), np.array([loss], dtype=np.float32))
    F.linear = lambda x, w, b=None: Linear16.apply(x, w, b)
    F.layer_norm = ln16
    try:
        loss16, grads = gradients(spec, tokens, targets, True)
        mf.save_safetensors(os.path.join(d, "grads_bf16.safetensors"), grads)
        np.save(os.path.join(d, "loss_bf16.npy"), np.array([loss16], dtype=np.float32))
        print("%s: loss %.7f, %.7f with bf16 training products" % (name, loss, loss16))
    finally:
        F.linear, F.layer_norm = saved_linear, saved_ln


def main():
    torch.set_num_threads(2)
    exact_linear = F.linear
    F.linear = lambda x, w, b=None: exact_linear(bf16(x), w, b)  # weights are rounded once below
    for name, path in MODELS:
        spec = yaml.safe_load(open(os.path.join(mf.ROOT, path)))
        ctx = mf.Ctx(spec)
        model = mf.build(spec["layers"], ctx, "")
        with torch.no_grad():
            for t in ctx.params.values():
                t.copy_(bf16(t))
        d = os.path.join(mf.OUT, name)
        if not os.path.exists(os.path.join(d, "tokens.npy")):  # a model of its own: weights and tokens too
            os.makedirs(d, exist_ok=True)
            mf.save_safetensors(os.path.join(d, "weights.safetensors"), ctx.order)
            g = torch.Generator().manual_seed(99)
            np.save(os.path.join(d, "tokens.npy"),
                    torch.randint(0, ctx.vocab, (ctx.batch, ctx.context), generator=g).numpy().astype(np.int32))
        tokens = torch.from_numpy(np.load(os.path.join(d, "tokens.npy")).astype(np.int64))
        with torch.no_grad():
            logits = mf.run(model, tokens)
        np.save(os.path.join(d, "logits_bf16.npy"), logits.numpy().astype(np.float32))
        print("%s: bf16 logits %s" % (name, tuple(logits.shape)))
    training_bf16("head-tiny", "tests/reference/specs/head-tiny.yaml")


if __name__ == "__main__":
    main()
