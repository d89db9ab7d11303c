#!/usr/bin/python3
"""make_hfgpt2_fixture.py: a Hugging Face GPT-2 checkpoint, written in HF's exact layout, and its logits.

The independent reference for `modelc import DIR` (compiler/import_gpt2.c). Nothing here reads
modelc's code: the model below is GPT-2 as Hugging Face's `GPT2LMHeadModel` computes it (Radford et
al. 2019; transformers' modeling_gpt2.py), with HF's `Conv1D`: a weight stored [in, out] and
y = x @ W + b (the transpose of nn.Linear's [out, in]). The checkpoint is what
`GPT2LMHeadModel.save_pretrained(safe_serialization=True)` writes: config.json and model.safetensors
with the names

  transformer.wte.weight [V, C]           transformer.wpe.weight [P, C]
  transformer.h.N.ln_1.{weight,bias} [C]  transformer.h.N.attn.c_attn.{weight [C, 3C], bias [3C]}
  transformer.h.N.attn.c_proj.{weight [C, C], bias [C]}
  transformer.h.N.ln_2.{weight,bias} [C]  transformer.h.N.mlp.c_fc.{weight [C, 4C], bias [4C]}
  transformer.h.N.mlp.c_proj.{weight [4C, C], bias [C]}
  transformer.ln_f.{weight,bias} [C]
  transformer.h.N.attn.bias [1, 1, P, P] (the causal mask buffer, BOOL) and attn.masked_bias []
  (older transformers' -1e4 scalar): buffers, not parameters; lm_head.weight is tied to wte and
  not stored.

  block:  x = x + c_proj(attn(ln_1(x)));  x = x + mlp.c_proj(gelu_new(mlp.c_fc(ln_2(x))))
  attn:   q|k|v = split(c_attn(x), C), heads of C/H columns each, softmax(q k^T / sqrt(C/H)) causal
  head:   logits = ln_f(x) @ wte^T

Writes tests/reference/fixtures/hfgpt2-tiny/:
  config.json, model.safetensors   the checkpoint (with the transformer. prefix and the buffers)
  noprefix/config.json, noprefix/model.safetensors  the same weights as GPT2Model's state_dict names
                                   (no prefix, no buffers) plus a stored lm_head.weight equal to wte,
                                   and a config with n_inner given and no n_ctx: the same model
  tokens.npy, logits.npy           int32 [2, P] and float32 [2, P, V] (the forward in float64)
  short.npy, logits_short.npy      int32 [1, 7] and its logits: a call shorter than the context
and tests/reference/fixtures/hfgpt2-errors/ (a smaller model, 1 layer) for the error tests:
  config.json, ok.safetensors      a valid checkpoint
  missing.safetensors              without h.0.mlp.c_fc.bias
  shape.safetensors                h.0.attn.c_attn.weight stored [3C, C] (nn.Linear's layout)
  f16.safetensors                  h.0.ln_1.weight in F16
  untied.safetensors               ok plus an lm_head.weight of its own (not wte)
  extra.safetensors                ok plus transformer.h.1.ln_1.weight (a layer the config lacks)

Regenerate (Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_hfgpt2_fixture.py
"""
import json
import math
import os
import struct

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "reference", "fixtures")


def save_safetensors(path, tensors):
    """tensors: list of (name, numpy array); dtype from the array (F32, F16, BOOL)."""
    codes = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.bool_): "BOOL"}
    header, blobs, off = {}, [], 0
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def config(V, P, C, L, H):
    """GPT2Config's to_json_string() for these sizes (the keys of gpt2's own config.json)."""
    return {
        "_name_or_path": "hfgpt2-tiny", "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1, "bos_token_id": V - 1,
        "embd_pdrop": 0.1, "eos_token_id": V - 1, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2", "n_ctx": P, "n_embd": C, "n_head": H, "n_inner": None, "n_layer": L,
        "n_positions": P, "reorder_and_upcast_attn": False, "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
        "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
        "summary_type": "cls_index", "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "torch_dtype": "float32", "transformers_version": "4.26.0", "use_cache": True, "vocab_size": V,
    }


def make_weights(V, P, C, L, gen):
    """HF names without the prefix -> float32 tensors; Conv1D weights [in, out]. Wider than GPT-2's
    0.02 init and with non-trivial norms and biases, so that every term shows in the logits."""
    def n(*shape, s=0.3):
        return (torch.randn(*shape, generator=gen) * s).float()
    w = {"wte.weight": n(V, C), "wpe.weight": n(P, C, s=0.1)}
    for i in range(L):
        p = "h.%d." % i
        w[p + "ln_1.weight"] = 1 + n(C, s=0.1)
        w[p + "ln_1.bias"] = n(C, s=0.1)
        w[p + "attn.c_attn.weight"] = n(C, 3 * C, s=0.2)
        w[p + "attn.c_attn.bias"] = n(3 * C, s=0.1)
        w[p + "attn.c_proj.weight"] = n(C, C, s=0.2)
        w[p + "attn.c_proj.bias"] = n(C, s=0.1)
        w[p + "ln_2.weight"] = 1 + n(C, s=0.1)
        w[p + "ln_2.bias"] = n(C, s=0.1)
        w[p + "mlp.c_fc.weight"] = n(C, 4 * C, s=0.2)
        w[p + "mlp.c_fc.bias"] = n(4 * C, s=0.1)
        w[p + "mlp.c_proj.weight"] = n(4 * C, C, s=0.1)
        w[p + "mlp.c_proj.bias"] = n(C, s=0.1)
    w["ln_f.weight"] = 1 + n(C, s=0.1)
    w["ln_f.bias"] = n(C, s=0.1)
    return w


def conv1d(x, w, b):
    """HF's Conv1D: weight [in, out], y = x @ W + b."""
    return x @ w + b


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def forward(w, tokens, L, H, eps):
    """GPT2LMHeadModel's logits for int tokens [B, T], in float64."""
    d = {k: v.double() for k, v in w.items()}
    B, T = tokens.shape
    x = d["wte.weight"][tokens] + d["wpe.weight"][:T]
    C = x.shape[-1]
    hd = C // H
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(L):
        p = "h.%d." % i
        a = layer_norm(x, d[p + "ln_1.weight"], d[p + "ln_1.bias"], eps)
        qkv = conv1d(a, d[p + "attn.c_attn.weight"], d[p + "attn.c_attn.bias"])
        q, k, v = qkv.split(C, dim=2)
        q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~mask, float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + conv1d(o, d[p + "attn.c_proj.weight"], d[p + "attn.c_proj.bias"])
        m = layer_norm(x, d[p + "ln_2.weight"], d[p + "ln_2.bias"], eps)
        m = gelu_new(conv1d(m, d[p + "mlp.c_fc.weight"], d[p + "mlp.c_fc.bias"]))
        x = x + conv1d(m, d[p + "mlp.c_proj.weight"], d[p + "mlp.c_proj.bias"])
    x = layer_norm(x, d["ln_f.weight"], d["ln_f.bias"], eps)
    return x @ d["wte.weight"].t()


def hf_tensors(w, L, P, prefix, buffers):
    """The checkpoint's tensors in save order: (name, numpy array)."""
    out = []
    for k, v in w.items():
        out.append((prefix + k, v.numpy()))
        if buffers and k.endswith("ln_1.bias"):
            p = k[: -len("ln_1.bias")]
            out.append((prefix + p + "attn.bias", np.tril(np.ones((P, P), dtype=np.bool_)).reshape(1, 1, P, P)))
            out.append((prefix + p + "attn.masked_bias", np.array(-1e4, dtype=np.float32)))
    return out


def write_config(path, cfg):
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    gen = torch.Generator().manual_seed(20261202)
    # the tiny model: V 64, context 16, width 32, 2 layers, 4 heads
    V, P, C, L, H, eps = 64, 16, 32, 2, 4, 1e-5
    out = os.path.join(FIX, "hfgpt2-tiny")
    os.makedirs(os.path.join(out, "noprefix"), exist_ok=True)
    w = make_weights(V, P, C, L, gen)
    cfg = config(V, P, C, L, H)
    write_config(os.path.join(out, "config.json"), cfg)
    save_safetensors(os.path.join(out, "model.safetensors"), hf_tensors(w, L, P, "transformer.", True))
    cfg2 = dict(cfg, n_inner=4 * C)
    del cfg2["n_ctx"]
    write_config(os.path.join(out, "noprefix", "config.json"), cfg2)
    t2 = hf_tensors(w, L, P, "", False) + [("lm_head.weight", w["wte.weight"].numpy())]
    save_safetensors(os.path.join(out, "noprefix", "model.safetensors"), t2)
    tokens = torch.randint(0, V, (2, P), generator=gen)
    short = torch.randint(0, V, (1, 7), generator=gen)
    np.save(os.path.join(out, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(out, "logits.npy"), forward(w, tokens, L, H, eps).numpy().astype(np.float32))
    np.save(os.path.join(out, "short.npy"), short.numpy().astype(np.int32))
    np.save(os.path.join(out, "logits_short.npy"), forward(w, short, L, H, eps).numpy().astype(np.float32))

    # the error cases: V 16, context 4, width 8, 1 layer, 2 heads
    V, P, C, L, H = 16, 4, 8, 1, 2
    out = os.path.join(FIX, "hfgpt2-errors")
    os.makedirs(out, exist_ok=True)
    w = make_weights(V, P, C, L, gen)
    write_config(os.path.join(out, "config.json"), config(V, P, C, L, H))
    ok = hf_tensors(w, L, P, "transformer.", True)
    save_safetensors(os.path.join(out, "ok.safetensors"), ok)
    save_safetensors(os.path.join(out, "missing.safetensors"),
                     [(k, a) for k, a in ok if k != "transformer.h.0.mlp.c_fc.bias"])
    save_safetensors(os.path.join(out, "shape.safetensors"),
                     [(k, a.T.copy() if k == "transformer.h.0.attn.c_attn.weight" else a) for k, a in ok])
    save_safetensors(os.path.join(out, "f16.safetensors"),
                     [(k, a.astype(np.float16) if k == "transformer.h.0.ln_1.weight" else a) for k, a in ok])
    save_safetensors(os.path.join(out, "untied.safetensors"), ok + [("lm_head.weight", make_weights(V, P, C, L, gen)["wte.weight"].numpy())])
    save_safetensors(os.path.join(out, "extra.safetensors"), ok + [("transformer.h.1.ln_1.weight", w["h.0.ln_1.weight"].numpy())])


if __name__ == "__main__":
    main()
