#!/usr/bin/python3
"""make_fixtures.py: the independent PyTorch reference for modelc's generated programs.

It reads an example spec (examples/*.yaml) with PyYAML, builds the same model with PyTorch's own
modules and ops (nn.Embedding, F.linear, F.layer_norm, F.softmax, ...), fills it with seeded random
weights and writes fixtures that the CTest reference tests compare against, so CI needs no PyTorch:

  tests/reference/fixtures/NAME/weights.safetensors  every parameter, named as docs/spec.md says
  tests/reference/fixtures/NAME/tokens.npy           int32 [B, T] input ids
  tests/reference/fixtures/NAME/logits.npy           float32 logits [B, T, V] (or [B, classes])
  tests/reference/fixtures/NAME/generate.npy         decoders: int32 greedy continuation ids
  tests/reference/fixtures/NAME/prompt.txt           decoders: the prompt bytes
  tests/reference/fixtures/NAME/targets.npy          int32 targets ([B,T] next tokens, or [B] classes)
  tests/reference/fixtures/NAME/loss.npy             float32 mean cross-entropy of logits vs targets
  tests/reference/fixtures/NAME/grads.safetensors    d loss / d parameter for every parameter (float64
                                                     autograd, stored as float32)
  tests/reference/fixtures/NAME/adamw_losses.npy     losses of 10 torch.optim.AdamW steps on that batch
                                                     (float32 model; hyper-parameters in TRAIN below)

Reference logits are computed in float64 from the float32 weights, so they are the exact answer
to ~1e-12 and the comparison measures only our float32 rounding.

Regenerate (needs Debian's python3-torch, python3-numpy, python3-yaml):
    /usr/bin/python3 tests/reference/make_fixtures.py
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures")
# (fixture name, spec): the examples, and test specs covering the remaining layer kinds
MODELS = [("gpt-tiny", "examples/gpt-tiny.yaml"), ("bert-tiny", "examples/bert-tiny.yaml"),
          ("llama-tiny", "tests/reference/specs/llama-tiny.yaml"), ("enc-mean", "tests/reference/specs/enc-mean.yaml")]
GEN_TOKENS = 64
PROMPT = b"The quick brown fox "


# ---- safetensors and npy, written by hand (no extra Python packages on Debian) -------------------
def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors:
        a = np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- the model, layer by layer as docs/spec.md defines it ----------------------------------------
class Ctx:
    def __init__(self, spec, dtype=torch.float64):
        m = spec["model"]
        self.dtype = dtype
        self.vocab, self.context, self.batch, self.dim = m["vocab"], m["context"], m["batch"], m["dim"]
        self.params = {}   # name -> tensor (float64 for the forward; saved as float32)
        self.order = []
        self.embedding = None
        self.gen = torch.Generator().manual_seed(1234)

    def param(self, name, shape, kind):
        g = self.gen
        if kind == "weight":   # linear / embedding: normal(0, 0.02) as modelc's init, but wider
            t = torch.randn(shape, generator=g) * 0.08
        elif kind == "gain":   # norm gains near one, so a wrong gain shows
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:                  # biases: non-zero, so a missing bias shows
            t = 0.02 * torch.randn(shape, generator=g)
        t = t.float()
        assert name not in self.params, name
        self.params[name] = t.to(self.dtype)
        self.order.append((name, t))
        return self.params[name]


def norm_name(layer, key, counter):
    counter[0] += 1
    return layer.get("name", "ln_%d" % counter[0])


def build(layers, ctx, prefix, norms=None):
    """Returns a list of functions x -> x (tokens -> x for the embedding) for a layer list. Norms
    are numbered ln_1, ln_2, ... across a repeat block or the top level, residuals included."""
    fns = []
    norms = norms if norms is not None else [0]
    for item in layers:
        if isinstance(item, str):
            item = {item: {}}
        if "repeat" in item:
            name = item.get("name", "h")
            blocks = [build(item["block"], ctx, "%s%s.%d." % (prefix, name, i)) for i in range(item["repeat"])]
            for b in blocks:
                fns.append(lambda x, b=b: run(b, x))
            continue
        (key, opts), = item.items()
        opts = opts or {}
        C = ctx.dim
        if key == "embedding":
            n = prefix + opts.get("name", "wte")
            ctx.embedding = n + ".weight"
            w = ctx.param(n + ".weight", (ctx.vocab, C), "weight")
            fns.append(lambda ids, w=w: F.embedding(ids, w))
        elif key == "positions":
            if opts.get("kind", "learned") == "learned":
                w = ctx.param(prefix + opts.get("name", "wpe") + ".weight", (ctx.context, C), "weight")
                fns.append(lambda x, w=w: x + w[: x.shape[1]])
            else:
                pos = torch.arange(ctx.context, dtype=torch.float64)[:, None]
                i = torch.arange(0, C, 2, dtype=torch.float64)
                ang = pos / torch.pow(10000.0, i / C)
                pe = torch.zeros(ctx.context, C, dtype=torch.float64)
                pe[:, 0::2], pe[:, 1::2] = torch.sin(ang), torch.cos(ang[:, : C // 2])
                pe = pe.to(ctx.dtype)
                fns.append(lambda x, pe=pe: x + pe[: x.shape[1]])
        elif key in ("layernorm", "rmsnorm"):
            n = prefix + norm_name(opts, key, norms)
            eps = float(opts.get("eps", 1e-5 if key == "layernorm" else 1e-6))
            g = ctx.param(n + ".weight", (C,), "gain")
            if key == "layernorm":
                b = ctx.param(n + ".bias", (C,), "bias") if opts.get("bias", True) else None
                fns.append(lambda x, g=g, b=b, eps=eps: F.layer_norm(x, (C,), g, b, eps))
            else:
                fns.append(lambda x, g=g, eps=eps: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * g)
        elif key == "attention":
            n = prefix + opts.get("name", "attn")
            bias, H, causal = opts.get("bias", True), opts["heads"], opts.get("causal", True)
            wa = ctx.param(n + ".c_attn.weight", (3 * C, C), "weight")
            ba = ctx.param(n + ".c_attn.bias", (3 * C,), "bias") if bias else None
            wp = ctx.param(n + ".c_proj.weight", (C, C), "weight")
            bp = ctx.param(n + ".c_proj.bias", (C,), "bias") if bias else None

            def attn(x, wa=wa, ba=ba, wp=wp, bp=bp, H=H, causal=causal):
                B, T, _ = x.shape
                q, k, v = F.linear(x, wa, ba).split(C, dim=2)
                q, k, v = [t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v)]
                att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
                if causal:
                    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
                    att = att.masked_fill(~mask, float("-inf"))
                y = F.softmax(att, dim=-1) @ v
                return F.linear(y.transpose(1, 2).reshape(B, T, C), wp, bp)
            fns.append(attn)
        elif key == "mlp":
            n = prefix + opts.get("name", "mlp")
            Hd, act, bias = opts["hidden"], opts.get("activation", "gelu"), opts.get("bias", True)
            wf = ctx.param(n + ".c_fc.weight", (Hd, C), "weight")
            bf = ctx.param(n + ".c_fc.bias", (Hd,), "bias") if bias else None
            if act == "swiglu":
                wg = ctx.param(n + ".c_gate.weight", (Hd, C), "weight")
                bg = ctx.param(n + ".c_gate.bias", (Hd,), "bias") if bias else None
            wp = ctx.param(n + ".c_proj.weight", (C, Hd), "weight")
            bp = ctx.param(n + ".c_proj.bias", (C,), "bias") if bias else None
            if act == "swiglu":
                fns.append(lambda x, wf=wf, bf=bf, wg=wg, bg=bg, wp=wp, bp=bp:
                           F.linear(F.silu(F.linear(x, wf, bf)) * F.linear(x, wg, bg), wp, bp))
            else:
                a = {"gelu": lambda t: F.gelu(t), "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
                     "relu": F.relu}[act]
                fns.append(lambda x, wf=wf, bf=bf, wp=wp, bp=bp, a=a: F.linear(a(F.linear(x, wf, bf)), wp, bp))
        elif key == "residual":
            inner = build(opts if isinstance(opts, list) else opts["body"], ctx, prefix, norms)
            fns.append(lambda x, inner=inner: x + run(inner, x))
        elif key == "dropout":
            pass   # inference: identity
        elif key == "lm_head":
            if opts.get("tied", True):
                fns.append(lambda x: F.linear(x, ctx.params[ctx.embedding]))
            else:
                w = ctx.param(prefix + opts.get("name", "lm_head") + ".weight", (ctx.vocab, C), "weight")
                fns.append(lambda x, w=w: F.linear(x, w))
        elif key == "classifier":
            n = prefix + opts.get("name", "classifier")
            w = ctx.param(n + ".weight", (opts["classes"], C), "weight")
            b = ctx.param(n + ".bias", (opts["classes"],), "bias")
            pool = opts.get("pool", "first")
            fns.append(lambda x, w=w, b=b, pool=pool: F.linear(x[:, 0] if pool == "first" else x.mean(1), w, b))
        else:
            raise SystemExit("make_fixtures.py: layer '%s' is not modelled here" % key)
    return fns


# The optimiser run the training tests repeat: AdamW with decoupled weight decay on 2-D weights
# only (biases and norm gains exempt, as nanoGPT), constant learning rate, no clipping.
TRAIN = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "steps": 10}


def cross_entropy(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def training_fixtures(spec, d, tokens, targets):
    ctx = Ctx(spec, torch.float64)
    model = build(spec["layers"], ctx, "")
    for t in ctx.params.values():
        t.requires_grad_(True)
    loss = cross_entropy(run(model, tokens), targets)
    loss.backward()
    save_safetensors(os.path.join(d, "grads.safetensors"), [(n, ctx.params[n].grad) for n, _ in ctx.order])
    np.save(os.path.join(d, "loss.npy"), np.array([loss.item()], dtype=np.float32))
    ctx32 = Ctx(spec, torch.float32)
    model32 = build(spec["layers"], ctx32, "")
    decay = [ctx32.params[n] for n, t in ctx32.order if t.dim() >= 2]
    other = [ctx32.params[n] for n, t in ctx32.order if t.dim() < 2]
    for t in decay + other:
        t.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": TRAIN["weight_decay"]},
                             {"params": other, "weight_decay": 0.0}],
                            lr=TRAIN["lr"], betas=(TRAIN["beta1"], TRAIN["beta2"]), eps=TRAIN["eps"])
    losses = []
    for _ in range(TRAIN["steps"]):
        opt.zero_grad()
        step_loss = cross_entropy(run(model32, tokens), targets)
        step_loss.backward()
        opt.step()
        losses.append(step_loss.item())
    np.save(os.path.join(d, "adamw_losses.npy"), np.array(losses, dtype=np.float32))
    return loss.item(), losses


def run(fns, x):
    for f in fns:
        x = f(x)
    return x


def main():
    torch.set_num_threads(2)
    for name, path in MODELS:
        spec = yaml.safe_load(open(os.path.join(ROOT, path)))
        ctx = Ctx(spec)
        model = build(spec["layers"], ctx, "")
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        save_safetensors(os.path.join(d, "weights.safetensors"), ctx.order)
        g = torch.Generator().manual_seed(99)
        B, T = ctx.batch, ctx.context
        tokens = torch.randint(0, ctx.vocab, (B, T), generator=g, dtype=torch.int64)
        with torch.no_grad():
            logits = run(model, tokens)
        np.save(os.path.join(d, "tokens.npy"), tokens.numpy().astype(np.int32))
        np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))
        if logits.dim() == 3:
            targets = torch.randint(0, ctx.vocab, (B, T), generator=g, dtype=torch.int64)
        else:
            targets = torch.randint(0, logits.shape[-1], (B,), generator=g, dtype=torch.int64)
        np.save(os.path.join(d, "targets.npy"), targets.numpy().astype(np.int32))
        loss0, losses = training_fixtures(spec, d, tokens, targets)
        print("%s: loss %.6f, AdamW losses %s" % (name, loss0, " ".join("%.4f" % v for v in losses)))
        print("%s: %d parameters, logits %s" % (name, sum(t.numel() for _, t in ctx.order), tuple(logits.shape)))
        decoder = any("lm_head" in it for it in spec["layers"]) and spec.get("model", {}).get("kind") != "encoder"
        if decoder and len(PROMPT) + GEN_TOKENS <= T:
            ids = list(PROMPT)
            margin = float("inf")
            with torch.no_grad():
                for _ in range(GEN_TOKENS):
                    lg = run(model, torch.tensor([ids]))[0, -1]
                    top = torch.topk(lg, 2).values
                    margin = min(margin, float(top[0] - top[1]))
                    ids.append(int(torch.argmax(lg)))
            # Greedy decoding is only comparable when no step is a near-tie.
            assert margin > 1e-4, "greedy margin %g too small for a float32 comparison" % margin
            np.save(os.path.join(d, "generate.npy"), np.array(ids[len(PROMPT):], dtype=np.int32))
            open(os.path.join(d, "prompt.txt"), "wb").write(PROMPT)
            print("%s: greedy %d tokens, smallest top-2 margin %.3g" % (name, GEN_TOKENS, margin))


if __name__ == "__main__":
    sys.exit(main())
