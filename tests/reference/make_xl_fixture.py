#!/usr/bin/python3
"""make_xl_fixture.py: the independent PyTorch reference for Transformer-XL segment recurrence.

The model of tests/reference/specs/xl-tiny.yaml (memory M = 5) and xl-tiny-m9.yaml (M = 9, more
than the segment) written here from the paper (Dai et al. 2019, "Transformer-XL", section 3.3 and
appendix B) in the reference code's own layout (kimiyoung/transformer-xl, pytorch/mem_transformer.py:
sequence-first tensors, its PositionalEmbedding, _rel_shift, dec_attn_mask and _update_mems).
Nothing here reads modelc's code or IR; only the parameter names follow docs/spec.md.

  embedding  wte [V,C] (no scaling, no position table)
  layer      post-LN (the reference's default, pre_lnorm False): x = ln_1(x + attn(x, mem));
             x = ln_2(x + mlp(x)); mlp c_fc -> ReLU -> c_proj
  attention  cat = [mem; x] (mem: this layer's input over the previous M positions, detached);
             q, k, v = split(c_attn(cat)), q of the last qlen rows; r = pos_emb(klen-1 .. 0)
             (inv_freq = 1/10000^(arange(0,C,2)/C), [sin | cos]); rk = r_net(r) (no bias);
             AC = (q + r_w_bias) k^T, BD = _rel_shift((q + r_r_bias) rk^T), score = (AC + BD)/sqrt(hd),
             masked by triu(ones(qlen, klen), 1 + mlen), softmax over keys, c_proj of P v
  memory     after each segment: cat([mem, x])[-M:].detach() per layer (empty before the first)
  head       lm_head Linear C->V without bias

Two consecutive segments of T = 7 tokens (tokens [B, 14]): the logits of both, the loss (mean
cross-entropy over all 28 targets) and every gradient, with the memory detached (a constant:
the gradient of segment 2 does not reach segment 1's computation). A third, shorter segment in
tokens_long [B, 17] (segments 7, 7, 3) gives logits_long.

Writes under tests/reference/fixtures/xl-tiny/, for CFG in m5, m9:
  weights_CFG.safetensors, logits_CFG.npy [B,14,V], loss_CFG.npy, grads_CFG.safetensors,
  logits_long_CFG.npy [B,17,V]; and tokens.npy, targets.npy [B,14], tokens_long.npy [B,17].

Regenerate (Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_xl_fixture.py
"""
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from make_fixtures import save_safetensors  # the file format only (this folder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "xl-tiny")
V, C, T, B, L, HEADS, HID, EPS = 48, 12, 7, 2, 2, 2, 24, 1e-5
D = C // HEADS


def pos_emb(klen):
    """The reference's PositionalEmbedding of pos_seq = klen-1, ..., 0: [klen, C]."""
    pos_seq = torch.arange(klen - 1, -1, -1.0, dtype=torch.float64)
    inv_freq = 1 / (10000 ** (torch.arange(0.0, C, 2.0, dtype=torch.float64) / C))
    sinusoid = torch.outer(pos_seq, inv_freq)
    return torch.cat([sinusoid.sin(), sinusoid.cos()], dim=-1)


def rel_shift(x):
    """The reference's _rel_shift of x [qlen, klen, B, H]: row i shifted left by qlen-1-i."""
    zero_pad = torch.zeros((x.size(0), 1, *x.size()[2:]), dtype=x.dtype)
    x_padded = torch.cat([zero_pad, x], dim=1).view(x.size(1) + 1, x.size(0), *x.size()[2:])
    return x_padded[1:].view_as(x)


class RelAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.r_net = nn.Linear(C, C, bias=False)
        self.r_w_bias = nn.Parameter(torch.zeros(HEADS, D))
        self.r_r_bias = nn.Parameter(torch.zeros(HEADS, D))

    def forward(self, h, mem):
        """h [qlen, B, C] (sequence first, as the reference), mem [mlen, B, C] -> [qlen, B, C]."""
        qlen, bsz, mlen = h.size(0), h.size(1), mem.size(0)
        cat = torch.cat([mem, h], 0)
        klen = cat.size(0)
        w_heads = self.c_attn(cat)
        q, k, v = torch.chunk(w_heads, 3, dim=-1)
        q = q[-qlen:].view(qlen, bsz, HEADS, D)
        k, v = k.view(klen, bsz, HEADS, D), v.view(klen, bsz, HEADS, D)
        rk = self.r_net(pos_emb(klen)).view(klen, HEADS, D)
        ac = torch.einsum("ibnd,jbnd->ijbn", q + self.r_w_bias, k)
        bd = rel_shift(torch.einsum("ibnd,jnd->ijbn", q + self.r_r_bias, rk))
        score = (ac + bd) / math.sqrt(D)
        mask = torch.triu(torch.ones(qlen, klen), diagonal=1 + mlen).bool()[:, :, None, None]
        score = score.masked_fill(mask, float("-inf"))
        prob = torch.softmax(score, dim=1)
        vec = torch.einsum("ijbn,jbnd->ibnd", prob, v).reshape(qlen, bsz, C)
        return self.c_proj(vec)


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.ln_1 = RelAttention(), nn.LayerNorm(C, eps=EPS)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(C, HID), "c_proj": nn.Linear(HID, C)})
        self.ln_2 = nn.LayerNorm(C, eps=EPS)

    def forward(self, x, mem):
        x = self.ln_1(x + self.attn(x, mem))
        return self.ln_2(x + self.mlp["c_proj"](F.relu(self.mlp["c_fc"](x))))


def build(gen):
    def rnd(*shape, std=0.3, mean=0.0):
        return nn.Parameter(torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean)

    wte = rnd(V, C)
    named = [("wte.weight", wte)]
    layers = []
    for i in range(L):
        layer = Layer().double()
        a = layer.attn
        a.c_attn.weight, a.c_attn.bias = rnd(3 * C, C), rnd(3 * C)
        a.r_net.weight, a.r_w_bias, a.r_r_bias = rnd(C, C, std=0.5), rnd(HEADS, D), rnd(HEADS, D)
        a.c_proj.weight, a.c_proj.bias = rnd(C, C), rnd(C)
        layer.ln_1.weight, layer.ln_1.bias = rnd(C, mean=1.0), rnd(C)
        layer.mlp["c_fc"].weight, layer.mlp["c_fc"].bias = rnd(HID, C), rnd(HID)
        layer.mlp["c_proj"].weight, layer.mlp["c_proj"].bias = rnd(C, HID), rnd(C)
        layer.ln_2.weight, layer.ln_2.bias = rnd(C, mean=1.0), rnd(C)
        p = f"layer.{i}."
        named += [(p + "attn.c_attn.weight", a.c_attn.weight), (p + "attn.c_attn.bias", a.c_attn.bias),
                  (p + "attn.r_net.weight", a.r_net.weight), (p + "attn.r_w_bias", a.r_w_bias),
                  (p + "attn.r_r_bias", a.r_r_bias), (p + "attn.c_proj.weight", a.c_proj.weight),
                  (p + "attn.c_proj.bias", a.c_proj.bias), (p + "ln_1.weight", layer.ln_1.weight),
                  (p + "ln_1.bias", layer.ln_1.bias), (p + "mlp.c_fc.weight", layer.mlp["c_fc"].weight),
                  (p + "mlp.c_fc.bias", layer.mlp["c_fc"].bias), (p + "mlp.c_proj.weight", layer.mlp["c_proj"].weight),
                  (p + "mlp.c_proj.bias", layer.mlp["c_proj"].bias), (p + "ln_2.weight", layer.ln_2.weight),
                  (p + "ln_2.bias", layer.ln_2.bias)]
        layers.append(layer)
    lm_head = rnd(V, C)
    named.append(("lm_head.weight", lm_head))
    for _, p in named:  # the weights hold float32 values, as our program's
        p.data = p.data.float().double()
    return wte, layers, lm_head, named


def run(model, tokens, M):
    """Logits [B, n, V] of tokens [B, n] as consecutive segments of T with the memory carried."""
    wte, layers, lm_head, _ = model
    mems = [torch.zeros(0, tokens.shape[0], C, dtype=torch.float64) for _ in layers]
    out = []
    for s in range(0, tokens.shape[1], T):
        x = F.embedding(tokens[:, s:s + T], wte).transpose(0, 1)  # [qlen, B, C]
        hids = []
        for layer, mem in zip(layers, mems):
            hids.append(x)
            x = layer(x, mem)
        # _update_mems: the last M of [mem; layer input], detached (the paper's stop-gradient)
        mems = [torch.cat([mem, h], 0)[-M:].detach() for mem, h in zip(mems, hids)]
        out.append(F.linear(x, lm_head).transpose(0, 1))
    return torch.cat(out, 1)


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(29)
    tokens = torch.randint(0, V, (B, 2 * T), generator=gen)
    targets = torch.randint(0, V, (B, 2 * T), generator=gen)
    tokens_long = torch.randint(0, V, (B, 2 * T + 3), generator=gen)
    np.save(os.path.join(OUT, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "targets.npy"), targets.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "tokens_long.npy"), tokens_long.numpy().astype(np.int32))
    for M in (5, 9):
        model = build(gen)
        named = model[3]
        logits = run(model, tokens, M)
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        loss.backward()
        cfg = f"_m{M}"
        save_safetensors(os.path.join(OUT, f"weights{cfg}.safetensors"), named)
        save_safetensors(os.path.join(OUT, f"grads{cfg}.safetensors"), [(n, p.grad) for n, p in named])
        np.save(os.path.join(OUT, f"logits{cfg}.npy"), logits.detach().numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"loss{cfg}.npy"), np.array([loss.item()], dtype=np.float32))
        with torch.no_grad():
            np.save(os.path.join(OUT, f"logits_long{cfg}.npy"), run(model, tokens_long, M).numpy().astype(np.float32))
            # the memory matters: segment 2 without it differs (a test that it is read at all)
            alone = run(model, tokens[:, T:], M)
            diff = (alone - logits[:, T:]).abs().max().item()
        print(f"xl-tiny M={M}: {len(named)} tensors, {sum(p.numel() for _, p in named)} parameters, "
              f"loss {loss.item():.6f}, segment 2 without memory differs by {diff:.3g}")


if __name__ == "__main__":
    main()
