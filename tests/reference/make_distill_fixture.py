#!/usr/bin/python3
"""make_distill_fixture.py: the independent PyTorch reference for knowledge distillation.

A teacher (tests/reference/specs/distill-ref-teacher.yaml: 2 pre-LN causal GPT-2 layers, width 16, an
untied head) and a smaller student (distill-ref.yaml: 1 layer, width 8, a tied head) over the same
vocabulary (32) and context (8). The student's loss, written here from Hinton et al. 2015
("Distilling the Knowledge in a Neural Network") as DistilBERT trains with it:

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, targets)

with T = 2, alpha = 0.7, the KL summed over the vocabulary of each position and both parts averaged
over the B*T positions (F.kl_div(..., reduction="batchmean") over the flattened positions, and
F.cross_entropy's mean). The teacher is frozen: its logits are computed without gradient, and only
the student's parameters get one. Nothing here reads modelc's code or IR; only the parameter names
follow docs/spec.md.

  embedding  wte [V,C] + wpe [T,C]
  layer      pre-LN: x += c_proj(attn(ln_1(x))); x += mlp(ln_2(x)); attention c_attn C->3C (q|k|v),
             causal, scale 1/sqrt(head dim); mlp c_fc -> GELU (tanh) -> c_proj
  head       ln_f, then lm_head (teacher: lm_head.weight [V,C]; student: wte tied)

Writes under tests/reference/fixtures/distill-ref/:
  weights.safetensors          the student's parameters (float32)
  teacher.safetensors          the teacher's, under its own names (as the teacher's program writes them)
  tokens.npy, targets.npy      the int32 [B,T] batch
  logits.npy                   the student's float32 [B,T,V] logits
  teacher_logits.npy           the teacher's
  loss.npy                     float32 [3]: the loss, the KL part, the CE part
  grads.safetensors            d loss / d student parameter (float64 autograd, stored as float32)

Regenerate (Debian's python3-torch, python3-numpy):
    /usr/bin/python3 tests/reference/make_distill_fixture.py
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from make_fixtures import save_safetensors  # the file format only (this folder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "reference", "fixtures", "distill-ref")
V, T, B, EPS = 32, 8, 2, 1e-5
TEMP, ALPHA = 2.0, 0.7


def gpt(C, L, heads, hidden, tied, gen):
    """A pre-LN GPT-2 as (forward, [(name, parameter)]), float64 arithmetic on float32 values."""
    named = []

    def p(name, *shape, std=0.3, mean=0.0):
        t = (torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean).float().double()
        t.requires_grad_(True)
        named.append((name, t))
        return t

    wte, wpe = p("wte.weight", V, C), p("wpe.weight", T, C)
    layers = []
    for i in range(L):
        n = f"h.{i}."
        layers.append({
            "ln_1": (p(n + "ln_1.weight", C, mean=1.0), p(n + "ln_1.bias", C)),
            "attn": (p(n + "attn.c_attn.weight", 3 * C, C), p(n + "attn.c_attn.bias", 3 * C),
                     p(n + "attn.c_proj.weight", C, C), p(n + "attn.c_proj.bias", C)),
            "ln_2": (p(n + "ln_2.weight", C, mean=1.0), p(n + "ln_2.bias", C)),
            "mlp": (p(n + "mlp.c_fc.weight", hidden, C), p(n + "mlp.c_fc.bias", hidden),
                    p(n + "mlp.c_proj.weight", C, hidden), p(n + "mlp.c_proj.bias", C)),
        })
    ln_f = (p("ln_f.weight", C, mean=1.0), p("ln_f.bias", C))
    head = wte if tied else p("lm_head.weight", V, C)

    def attention(x, wa, ba, wp, bp):
        b, n, _ = x.shape
        d = C // heads
        q, k, v = F.linear(x, wa, ba).split(C, dim=2)
        q, k, v = [t.view(b, n, heads, d).transpose(1, 2) for t in (q, k, v)]
        s = q @ k.transpose(-2, -1) / math.sqrt(d)
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        return F.linear((torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(b, n, C), wp, bp)

    def forward(tokens):
        x = F.embedding(tokens, wte) + wpe[: tokens.shape[1]]
        for ly in layers:
            x = x + attention(F.layer_norm(x, (C,), *ly["ln_1"], eps=EPS), *ly["attn"])
            h = F.layer_norm(x, (C,), *ly["ln_2"], eps=EPS)
            wf, bf, wp, bp = ly["mlp"]
            x = x + F.linear(F.gelu(F.linear(h, wf, bf), approximate="tanh"), wp, bp)
        return F.linear(F.layer_norm(x, (C,), *ln_f, eps=EPS), head)

    return forward, named


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(14)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    teacher, tnamed = gpt(16, 2, 2, 32, False, gen)
    student, snamed = gpt(8, 1, 2, 16, True, gen)
    with torch.no_grad():
        zt = teacher(tokens)
    zs = student(tokens)
    zs2, zt2 = zs.reshape(-1, V), zt.reshape(-1, V)
    kl = F.kl_div(F.log_softmax(zs2 / TEMP, dim=-1), F.log_softmax(zt2 / TEMP, dim=-1), reduction="batchmean",
                  log_target=True)
    ce = F.cross_entropy(zs2, targets.reshape(-1))
    loss = ALPHA * TEMP * TEMP * kl + (1 - ALPHA) * ce
    loss.backward()
    save_safetensors(os.path.join(OUT, "weights.safetensors"), snamed)
    save_safetensors(os.path.join(OUT, "teacher.safetensors"), tnamed)
    save_safetensors(os.path.join(OUT, "grads.safetensors"), [(n, t.grad) for n, t in snamed])
    np.save(os.path.join(OUT, "tokens.npy"), tokens.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "targets.npy"), targets.numpy().astype(np.int32))
    np.save(os.path.join(OUT, "logits.npy"), zs.detach().numpy().astype(np.float32))
    np.save(os.path.join(OUT, "teacher_logits.npy"), zt.numpy().astype(np.float32))
    np.save(os.path.join(OUT, "loss.npy"), np.array([loss.item(), kl.item(), ce.item()], dtype=np.float32))
    print(f"distill-ref: student {sum(t.numel() for _, t in snamed)} parameters, teacher "
          f"{sum(t.numel() for _, t in tnamed)}; loss {loss.item():.6f} (kl {kl.item():.6f}, ce {ce.item():.6f})")


if __name__ == "__main__":
    main()
