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
script's own, gets its weights.safetensors and tokens.npy here too. The model code is
make_fixtures.py's own PyTorch model (nn.functional ops), with F.linear wrapped to round its
operands; none of modelc's code or formulas is used.

Regenerate (needs Debian's python3-torch, python3-numpy, python3-yaml):
    /usr/bin/python3 tests/reference/make_bf16_fixture.py
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


if __name__ == "__main__":
    main()
