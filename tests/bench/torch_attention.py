#!/usr/bin/python3
"""torch_attention.py: PyTorch's dense attention, the peer of tests/bench/sparse_attention.sh.

    torch_attention.py T C HEADS CAUSAL RUNS [bf16]

Batch 1, q, k, v [1, HEADS, T, C/HEADS] from one [T, 3C] tensor as our kernels read them; the
attention written as PyTorch 1.13 runs it (no fused scaled_dot_product_attention there): scores
q k^T / sqrt(hd), masked_fill of the causal mask, softmax, times v. Prints medians over RUNS calls
after 2 warm-ups, at torch's thread count (TORCH_THREADS, default 2): the forward (no_grad) and a
training step's attention (the forward with autograd, then backward of (out * dy).sum()), in ms,
and the peak resident memory. 'bf16': both under torch.autocast (CPU, bfloat16).
"""
import math
import os
import resource
import statistics
import sys
import time

import torch


def main():
    T, C, H, causal, runs = (int(a) for a in sys.argv[1:6])
    bf16 = len(sys.argv) > 6 and sys.argv[6] == "bf16"
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    g = torch.Generator().manual_seed(1)
    qkv = torch.rand(T, 3 * C, generator=g) * 2 - 1
    dy = torch.rand(1, H, T, C // H, generator=g) - 0.5
    mask = torch.ones(T, T, dtype=torch.bool).tril() if causal else None

    def attend(x):
        q, k, v = (t.view(1, T, H, C // H).transpose(1, 2) for t in x.split(C, dim=1))
        s = q @ k.transpose(-2, -1) / math.sqrt(C // H)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        return s.softmax(-1) @ v

    def fwd():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            attend(qkv)

    def train():
        x = qkv.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = attend(x)
        (out.float() * dy).sum().backward()

    for name, fn in (("fwd", fwd), ("train", train)):
        ts = []
        for i in range(runs + 2):
            t0 = time.perf_counter()
            fn()
            if i >= 2:
                ts.append(time.perf_counter() - t0)
        print(f"torch_{name}_ms={statistics.median(ts) * 1e3:.3f}", end=" ")
    print(f"T={T} bf16={int(bf16)} threads={torch.get_num_threads()} "
          f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
