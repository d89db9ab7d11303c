#!/usr/bin/python3
"""torch_model.py: the PyTorch side of the benchmark (tests/bench/run.sh drives it).

Builds the model of a modelc spec as an ordinary nn.Module (GPT-2 style decoders: embedding,
learned positions, pre-LN residual blocks of causal attention and MLP, final norm, tied or untied
LM head), loads modelc's safetensors by hand, and offers:

  check  SPEC W TOKENS.npy OURS.npy [ORT.bin]  compare logits: ours (and ORT's) vs PyTorch's
  export SPEC W OUT.onnx                       torch.onnx.export of the [B, T] forward
  bench  SPEC W --runs N [--autocast bf16] [--quantize int8] [--decode N]
                                               forward tokens/s (B x T, no_grad) and decode
                                               tokens/s (batch 1, KV cache) as 'key: value' lines;
                                               --autocast bf16: both under torch.autocast (CPU,
                                               bfloat16); --quantize int8: the block nn.Linear
                                               layers through torch.ao.quantization.quantize_dynamic
                                               (qint8 weights, activations quantised per call; the
                                               tied head, an F.linear, stays f32); --decode N: N
                                               decode steps per sequence (default T - 1); WARMUPS
                                               (3) untimed forward calls and decode sequences before
                                               the timed ones
  train  SPEC W --runs N [--autocast bf16]    one training step at B x T: forward, cross-entropy,
                                               backward, torch.optim.AdamW step (lr 1e-4; betas,
                                               eps, weight decay from the spec's train: section;
                                               decay on tensors of >= 2 dims, as modelc's init
                                               marks linear and embedding weights); medians
                                               after WARMUPS (3) untimed steps; --autocast bf16:
                                               forward under torch.autocast (CPU, bfloat16), as
                                               PyTorch does mixed precision
  bytes  SPEC W                                bytes read per decoded token (decode bound)

Needs only Debian's python3-torch, python3-numpy and python3-yaml (no onnx, no safetensors).
The parsing follows tests/reference/make_fixtures.py; the module here is written for speed and
for torch.onnx.export (no lambdas, no float64).
"""
import json
import math
import resource
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

WARMUPS = 3   # untimed calls before each timed series: >= 3 for every engine (run.sh)


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"]).copy())
    return out


def act_fn(name):
    if name == "gelu_tanh":
        return lambda t: F.gelu(t, approximate="tanh")
    if name == "gelu":
        return F.gelu
    if name == "relu":
        return F.relu
    raise SystemExit("torch_model.py: activation '%s' is not modelled here" % name)


class Attention(nn.Module):
    def __init__(self, C, H, T, bias):
        super().__init__()
        self.C, self.H = C, H
        self.c_attn = nn.Linear(C, 3 * C, bias=bias)
        self.c_proj = nn.Linear(C, C, bias=bias)
        self.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)).view(1, 1, T, T),
                             persistent=False)

    def forward(self, x, cache=None):
        """x (B, T, C). cache: None (whole sequence) or a [k, v] list updated in place (decoding)."""
        B, T, C = x.shape
        H, hd = self.H, C // self.H
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, H, hd).transpose(1, 2)
        k = k.view(B, T, H, hd).transpose(1, 2)
        v = v.view(B, T, H, hd).transpose(1, 2)
        if cache is not None:
            if cache[0] is not None:   # past k/v concatenation
                k = torch.cat([cache[0], k], dim=2)
                v = torch.cat([cache[1], v], dim=2)
            cache[0], cache[1] = k, v
        S = k.shape[2]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        if T > 1:   # a single new token sees the whole cache: no mask needed
            att = att.masked_fill(~self.mask[:, :, S - T:S, :S], float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, C, hidden, act, bias):
        super().__init__()
        self.c_fc = nn.Linear(C, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, C, bias=bias)
        self.act = act_fn(act)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    """The spec's block: residual(norm, attention[, dropout]), residual(norm, mlp[, dropout])."""

    def __init__(self, block, C, T):
        super().__init__()
        kinds = []
        for item in block:
            (key, opts), = (item.items() if isinstance(item, dict) else [(item, {})])
            assert key == "residual", "torch_model.py: only residual blocks are modelled (%s)" % key
            inner = opts if isinstance(opts, list) else opts["body"]
            inner = [(list(i.items())[0] if isinstance(i, dict) else (i, {})) for i in inner]
            inner = [(k, o or {}) for k, o in inner if k != "dropout"]
            assert len(inner) == 2 and inner[0][0] == "layernorm", inner
            kinds.append((inner[0][1], inner[1]))
        assert [k for _, (k, _) in kinds] == ["attention", "mlp"], kinds
        (ln1, (_, ao)), (ln2, (_, mo)) = kinds
        self.ln_1 = nn.LayerNorm(C, eps=float(ln1.get("eps", 1e-5)))
        self.attn = Attention(C, ao["heads"], T, ao.get("bias", True))
        assert ao.get("causal", True)
        self.ln_2 = nn.LayerNorm(C, eps=float(ln2.get("eps", 1e-5)))
        self.mlp = MLP(C, mo["hidden"], mo.get("activation", "gelu"), mo.get("bias", True))

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, spec):
        super().__init__()
        m = spec["model"]
        self.V, self.T, self.B, self.C = m["vocab"], m["context"], m["batch"], m["dim"]
        layers = [(list(i.items())[0] if isinstance(i, dict) else (i, {})) for i in spec["layers"]]
        keys = [k for k, _ in layers]
        assert keys[:3] == ["embedding", "positions", "repeat"] and keys[3] == "layernorm" and keys[4] == "lm_head", keys
        assert (layers[1][1] or {}).get("kind", "learned") == "learned"
        rep = spec["layers"][2]
        self.rep_name = rep.get("name", "h")
        self.wte = nn.Embedding(self.V, self.C)
        self.wpe = nn.Embedding(self.T, self.C)
        self.h = nn.ModuleList([Block(rep["block"], self.C, self.T) for _ in range(rep["repeat"])])
        self.ln_f = nn.LayerNorm(self.C, eps=float((layers[3][1] or {}).get("eps", 1e-5)))
        self.tied = (layers[4][1] or {}).get("tied", True)
        if not self.tied:
            self.lm_head = nn.Linear(self.C, self.V, bias=False)

    def load(self, path):
        w = load_safetensors(path)
        sd = {}
        for k, v in w.items():
            if k.startswith(self.rep_name + "."):
                k = "h." + k[len(self.rep_name) + 1:]
            sd[k] = v
        missing, unexpected = self.load_state_dict(sd, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
        return w

    def forward(self, ids, t0: int = 0, caches=None):
        T = ids.shape[1]
        x = self.wte(ids) + self.wpe.weight[t0:t0 + T]
        for i, blk in enumerate(self.h):
            x = blk(x, None if caches is None else caches[i])
        x = self.ln_f(x)
        return F.linear(x, self.wte.weight if self.tied else self.lm_head.weight)


def make(spec_path, weights):
    torch.set_num_threads(2)
    spec = yaml.safe_load(open(spec_path))
    model = GPT(spec)
    model.load(weights)
    model.eval()
    return model


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def cmd_check(spec, w, tokens, ours, ort=None):
    model = make(spec, w)
    ids = torch.from_numpy(np.load(tokens).astype(np.int64))
    with torch.no_grad():
        ref = model(ids).numpy()
    got = np.load(ours).reshape(ref.shape)
    e = rel_err(got, ref)
    print("check_logits_shape: %s" % (list(ref.shape),))
    print("check_logits_max_abs: %.6g" % float(np.max(np.abs(ref))))
    print("check_ours_vs_torch: %.3g" % e)
    ok = e < 1e-4
    if ort:
        eo = rel_err(np.fromfile(ort, dtype="<f4").reshape(ref.shape), ref)
        print("check_ort_vs_torch: %.3g" % eo)
        ok = ok and eo < 1e-4
    print("check: %s" % ("ok" if ok else "FAILED"))
    return 0 if ok else 1


class Forward(nn.Module):
    """forward(ids) only, so that the exported graph has the one input 'tokens'."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(ids)


def cmd_export(spec, w, out):
    model = make(spec, w)
    ids = torch.zeros((model.B, model.T), dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(Forward(model), (ids,), out, input_names=["tokens"], output_names=["logits"],
                          opset_version=13, do_constant_folding=True)
    return 0


def cmd_bench(spec, w, runs, autocast=None, quantize=None, decode=None):
    if autocast == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return cmd_bench(spec, w, runs, None, quantize, decode)
    model = make(spec, w)
    if quantize == "int8":
        print("quantized_engine: %s" % torch.backends.quantized.engine)
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.V, (model.B, model.T), generator=g, dtype=torch.int64)
    times = []
    with torch.no_grad():
        for _ in range(WARMUPS):
            model(ids)
        for _ in range(runs):
            t = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - t)
    fwd = statistics.median(times)
    print("forward_seconds: %.6f" % fwd)
    print("forward_tokens_per_s: %.1f" % (model.B * model.T / fwd))
    # decode: as the generated program's bench: prefill token 0, then tokens 1..T-1 one at a
    # time at batch 1, each step attending over the cache (past k/v concatenation); WARMUPS
    # untimed sequences first, as the program's bench.
    seq = ids[:1]
    steps = min(model.T - 1, decode) if decode else model.T - 1
    times = []
    with torch.no_grad():
        for k in range(-WARMUPS, runs):
            caches = [[None, None] for _ in model.h]
            model(seq[:, :1], 0, caches)
            t = time.perf_counter()
            for p in range(1, steps + 1):
                model(seq[:, p:p + 1], p, caches)
            if k >= 0:
                times.append((time.perf_counter() - t) / steps)
    dec = statistics.median(times)
    print("decode_tokens: %d" % steps)
    print("decode_seconds_per_token: %.6f" % dec)
    print("decode_tokens_per_s: %.1f" % (1.0 / dec))
    print("peak_rss_kib: %d" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return 0


def cmd_train(spec_path, w, runs, autocast=None):
    model = make(spec_path, w)
    model.train()
    tr = yaml.safe_load(open(spec_path)).get("train") or {}
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(tr.get("weight_decay", 0.0))},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(float(tr.get("beta1", 0.9)), float(tr.get("beta2", 0.999))),
                            eps=float(tr.get("eps", 1e-8)))
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, model.V, (model.B, model.T), generator=g, dtype=torch.int64)
    tgt = torch.randint(0, model.V, (model.B, model.T), generator=g, dtype=torch.int64)

    def step():
        opt.zero_grad(set_to_none=True)
        if autocast == "bf16":   # PyTorch's CPU mixed precision: matmuls in bfloat16
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(ids)
            loss = F.cross_entropy(logits.float().view(-1, model.V), tgt.view(-1))
        else:
            logits = model(ids)
            loss = F.cross_entropy(logits.view(-1, model.V), tgt.view(-1))
        loss.backward()
        opt.step()
        return float(loss)

    for _ in range(WARMUPS):   # the first also allocates AdamW's state
        step()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    ts = statistics.median(times)
    print("train_batch: %d" % model.B)
    print("train_context: %d" % model.T)
    print("train_loss: %.4f" % loss)
    print("train_step_seconds: %.6f" % ts)
    print("train_tokens_per_s: %.1f" % (model.B * model.T / ts))
    print("peak_rss_kib: %d" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return 0


def cmd_bytes(spec, w):
    """Bytes one decode step must read from memory at batch 1: every weight (the tied embedding is
    read whole by the LM head), one row of wpe, and the KV cache averaged over positions 1..T-1."""
    model = make(spec, w)
    C, T, L = model.C, model.T, len(model.h)
    total = 0
    for name, p in model.named_parameters():
        total += (C if name == "wpe.weight" else p.numel()) * 4
    kv = 2 * L * C * 4 * statistics.mean(range(2, T + 1))   # step p reads p+1 cached rows
    print("decode_weight_bytes_per_token: %d" % total)
    print("decode_kv_bytes_per_token_avg: %d" % kv)
    print("decode_bytes_per_token: %d" % (total + kv))
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "check":
        return cmd_check(*args)
    if cmd == "export":
        return cmd_export(*args)
    if cmd == "bench":
        runs = int(args[args.index("--runs") + 1]) if "--runs" in args else 5
        autocast = args[args.index("--autocast") + 1] if "--autocast" in args else None
        quantize = args[args.index("--quantize") + 1] if "--quantize" in args else None
        decode = int(args[args.index("--decode") + 1]) if "--decode" in args else None
        return cmd_bench(args[0], args[1], runs, autocast, quantize, decode)
    if cmd == "train":
        runs = int(args[args.index("--runs") + 1]) if "--runs" in args else 5
        autocast = args[args.index("--autocast") + 1] if "--autocast" in args else None
        return cmd_train(args[0], args[1], runs, autocast)
    if cmd == "bytes":
        return cmd_bytes(*args)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
