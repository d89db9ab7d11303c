#!/usr/bin/python3
"""make_moe_fixture.py: the independent PyTorch reference for the moe layer.

The models of tests/reference/specs/moe-tiny-k1.yaml and moe-tiny-k2.yaml, written here from the
papers: Switch Transformer (Fedus et al. 2021) for top_k = 1, Shazeer et al. 2017 ("Outrageously
Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer") for top_k = 2, with the
conventions docs/spec.md ("moe") states. Nothing here reads modelc's code or IR; only the
parameter names follow docs/spec.md.

  router     logits = x Wr^T (Wr [E,C], no bias), p = softmax over the E experts
  choice     the top_k experts of p per token; gate = p of the choice (top_k 1), or the top_k
             probabilities divided by their sum (top_k > 1)
  capacity   cap = min(N, ceil(capacity_factor * N / E)) (token, choice) pairs per expert, N = B*T;
             pairs are taken by choice rank, then token order; a pair beyond its expert's
             capacity is dropped (contributes 0; the token passes through the residual)
  experts    y_e = W2_e act(W1_e x + b1_e) + b2_e (W1 [E,H,C], b1 [E,H], W2 [E,C,H], b2 [E,C]),
             run on each expert's gathered rows, scattered back (index_add) weighted by the gate
  aux        A * E * sum_i f_i P_i, f_i = the fraction of tokens whose first choice is i (no
             gradient), P_i = the mean of p[:, i] over the N tokens; every layer's aux is added to
             the mean cross-entropy

  model      wte [V,C] + wpe [T,C]; 2 pre-LN blocks x += attn(ln_1(x)), x += moe(ln_2(x)) (causal
             GPT-2 attention, c_attn C->3C (q|k|v), 2 heads, c_proj); ln_f; lm_head C->V (no bias)

Writes under tests/reference/fixtures/moe-tiny/, for CFG in k1 (gelu, capacity_factor 0.5: 2
pairs per expert) and k2 (silu, capacity_factor 1.5: 6 pairs per expert):
  weights_CFG.safetensors  the parameters (float32)
  logits_CFG.npy           float32 [B,T,V] logits (computed in float64)
  loss_CFG.npy             the mean cross-entropy plus both layers' aux losses
  load_CFG.npy             float32 [L, E+2]: per layer its aux loss, the dropped pairs, the pairs
                           each expert ran (what PROG grad reports)
  grads_CFG.safetensors    d loss / d parameter (float64 autograd, stored as float32)
  tokens.npy, targets.npy  the int32 [B,T] batch (both configurations)

Regenerate (Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_moe_fixture.py
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from make_fixtures import save_safetensors  # the file format only (this folder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "moe-tiny")
V, C, T, B, L, HEADS, E, HID, EPS, A = 64, 16, 8, 2, 2, 2, 4, 24, 1e-5, 0.1
CONFIGS = {"k1": (1, 0.5, F.gelu), "k2": (2, 1.5, F.silu)}


def moe(x, p, top_k, factor, act):
    """One mixture-of-experts layer on x [N,C]: (y [N,C], aux loss, its load report)."""
    n = x.shape[0]
    prob = torch.softmax(x @ p["router.weight"].t(), dim=-1)             # [N,E]
    top_p, top_i = torch.topk(prob, top_k, dim=-1)                      # by rank
    gates = top_p if top_k == 1 else top_p / top_p.sum(dim=-1, keepdim=True)
    cap = min(n, math.ceil(factor * n / E))
    fill, kept = [0] * E, {e: [] for e in range(E)}                    # expert -> [(token, rank)]
    dropped = 0
    for r in range(top_k):                                              # rank first, then tokens
        for t in range(n):
            e = int(top_i[t, r])
            if fill[e] < cap:
                fill[e] += 1
                kept[e].append((t, r))
            else:
                dropped += 1
    y = torch.zeros_like(x)
    for e in range(E):
        if not kept[e]:
            continue
        tok = torch.tensor([t for t, _ in kept[e]])
        rank = torch.tensor([r for _, r in kept[e]])
        h = act(x[tok] @ p["w1"][e].t() + p["b1"][e])
        ye = h @ p["w2"][e].t() + p["b2"][e]
        y = y.index_add(0, tok, ye * gates[tok, rank].unsqueeze(1))
    f = torch.bincount(top_i[:, 0], minlength=E).to(x.dtype) / n       # no gradient
    aux = A * E * torch.sum(f * prob.mean(dim=0))
    return y, aux, [float(aux), dropped] + fill


def build(gen, top_k, factor, act):
    def rnd(*shape, std=0.3, mean=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean).float().double().requires_grad_()

    named = [("wte.weight", rnd(V, C)), ("wpe.weight", rnd(T, C))]
    for i in range(L):
        pre = f"h.{i}."
        named += [(pre + "ln_1.weight", rnd(C, mean=1.0)), (pre + "ln_1.bias", rnd(C)),
                  (pre + "attn.c_attn.weight", rnd(3 * C, C)), (pre + "attn.c_attn.bias", rnd(3 * C)),
                  (pre + "attn.c_proj.weight", rnd(C, C)), (pre + "attn.c_proj.bias", rnd(C)),
                  (pre + "ln_2.weight", rnd(C, mean=1.0)), (pre + "ln_2.bias", rnd(C)),
                  (pre + "moe.router.weight", rnd(E, C, std=1.0)), (pre + "moe.w1", rnd(E, HID, C)),
                  (pre + "moe.b1", rnd(E, HID)), (pre + "moe.w2", rnd(E, C, HID)), (pre + "moe.b2", rnd(E, C))]
    named += [("ln_f.weight", rnd(C, mean=1.0)), ("ln_f.bias", rnd(C)), ("lm_head.weight", rnd(V, C))]
    w = dict(named)

    def attention(x, pre):
        b, t, _ = x.shape
        d = C // HEADS
        q, k, v = F.linear(x, w[pre + "attn.c_attn.weight"], w[pre + "attn.c_attn.bias"]).split(C, dim=2)
        q, k, v = [z.view(b, t, HEADS, d).transpose(1, 2) for z in (q, k, v)]
        s = q @ k.transpose(-2, -1) / math.sqrt(d)
        s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(b, t, C)
        return F.linear(o, w[pre + "attn.c_proj.weight"], w[pre + "attn.c_proj.bias"])

    def forward(tokens):
        b, t = tokens.shape
        x = F.embedding(tokens, w["wte.weight"]) + w["wpe.weight"][:t]
        aux_total, drops = 0.0, []
        for i in range(L):
            pre = f"h.{i}."
            x = x + attention(F.layer_norm(x, (C,), w[pre + "ln_1.weight"], w[pre + "ln_1.bias"], EPS), pre)
            hn = F.layer_norm(x, (C,), w[pre + "ln_2.weight"], w[pre + "ln_2.bias"], EPS)
            p = {k: w[pre + "moe." + k] for k in ("router.weight", "w1", "b1", "w2", "b2")}
            y, aux, load = moe(hn.reshape(b * t, C), p, top_k, factor, act)
            x = x + y.reshape(b, t, C)
            aux_total = aux_total + aux
            drops.append(load)
        x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], EPS)
        return F.linear(x, w["lm_head.weight"]), aux_total, drops
    return forward, named


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(14)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    np.save(os.path.join(OUT, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "targets.npy"), targets.numpy().astype(np.int32))
    for cfg, (top_k, factor, act) in CONFIGS.items():
        forward, named = build(gen, top_k, factor, act)
        logits, aux, drops = forward(tokens)
        ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        loss = ce + aux
        loss.backward()
        save_safetensors(os.path.join(OUT, f"weights_{cfg}.safetensors"), named)
        save_safetensors(os.path.join(OUT, f"grads_{cfg}.safetensors"), [(n, p.grad) for n, p in named])
        np.save(os.path.join(OUT, f"logits_{cfg}.npy"), logits.detach().numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"loss_{cfg}.npy"), np.array([loss.item()], dtype=np.float32))
        np.save(os.path.join(OUT, f"load_{cfg}.npy"), np.array(drops, dtype=np.float32))
        print(f"moe-tiny {cfg}: top_k {top_k}, capacity_factor {factor}: loss {loss.item():.6f} "
              f"(cross-entropy {ce.item():.6f}, aux {float(aux):.6f}), dropped pairs per layer "
              f"{[int(d[1]) for d in drops]}, pairs per expert {[d[2:] for d in drops]}")


if __name__ == "__main__":
    main()
