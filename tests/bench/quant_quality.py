#!/usr/bin/python3
"""quant_quality.py: what each quantisation scheme costs a trained model (docs/benchmarks.md,
"Quantisation: quality"). Run by tests/bench/quant_quality.sh, which trains the models.

    quant_quality.py MODELC SPEC WEIGHTS DATA NAME OUTDIR

For the byte-level model SPEC with trained f32 WEIGHTS it builds the inference program in f32 and
with quantize<scheme=S> for S in int8, q8_0, q4_0 (the block weights; the default), and q8_0 and
q4_0 with head=true, embeddings=true (the tied table too), every one fed the same f32 weights (the
quantised programs quantise them at load). On the held-out tail of DATA (the last 10%, as
`PROG train` holds it out):
  - bits per byte: `PROG eval --data HELDOUT` (every window of the compiled context);
  - mean KL divergence KL(p_f32 || p_scheme) of the next-byte distributions and the top-1
    agreement (argmax equal), over the first 65,536 held-out bytes in windows of the context
    (`PROG forward` logits, softmax in float64 here);
  - greedy agreement: 16 prompts (32 held-out bytes at evenly spaced offsets), 128 bytes generated
    greedily (`PROG generate --temperature 0`) by each program; the length of the common prefix with
    the f32 program's continuation, mean and median.
Prints a Markdown table and writes OUTDIR/NAME.md.
"""
import os
import subprocess
import sys

import numpy as np

PIPE = "constfold,cse,fuse,dce,memplan"
SCHEMES = [("f32", ""), ("int8", "quantize<scheme=int8>,"), ("q8_0", "quantize<scheme=q8_0>,"),
           ("q4_0", "quantize<scheme=q4_0>,"),
           ("q8_0 +head", "quantize<scheme=q8_0;head=true;embeddings=true>,"),
           ("q4_0 +head", "quantize<scheme=q4_0;head=true;embeddings=true>,")]


def sh(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, **kw).stdout


def model_dims(spec):
    import yaml
    m = yaml.safe_load(open(spec))["model"]
    return m["batch"], m["context"]


def main():
    modelc, spec, weights, data, name, out = sys.argv[1:7]
    os.makedirs(out, exist_ok=True)
    B, T = model_dims(spec)
    raw = open(data, "rb").read()
    held = raw[len(raw) - len(raw) // 10:]
    hp = os.path.join(out, name + "-heldout.txt")
    open(hp, "wb").write(held)
    progs = {}
    for label, q in SCHEMES:
        p = os.path.join(out, "%s-%s" % (name, label.replace(" +", "-")))
        sh([modelc, "build", "--passes=" + q + PIPE, spec, "-o", p])
        progs[label] = p
    # logits over the first 65,536 held-out bytes, windows of T, chunks of B windows
    n = min(len(held) - 1, 65536) // T * T
    ids = np.frombuffer(held[:n], dtype=np.uint8).astype(np.int32).reshape(-1, T)
    probs_ref, kl, top1, cnt = None, {}, {}, 0
    logp = {label: [] for label in progs}
    for c in range(0, ids.shape[0], B):
        tp = os.path.join(out, "tok.npy")
        np.save(tp, ids[c:c + B])
        for label, p in progs.items():
            lp = os.path.join(out, "logits.npy")
            sh([p, "forward", "--weights", weights, "--tokens", tp, "--out", lp, "--threads", "2"])
            lg = np.load(lp).astype(np.float64)
            lg -= lg.max(axis=-1, keepdims=True)
            lg -= np.log(np.exp(lg).sum(axis=-1, keepdims=True))
            logp[label].append(lg.reshape(-1, lg.shape[-1]))
    ref = np.concatenate(logp["f32"])
    pref = np.exp(ref)
    for label in progs:
        lq = np.concatenate(logp[label])
        kl[label] = float((pref * (ref - lq)).sum(axis=1).mean())
        top1[label] = float((lq.argmax(axis=1) == ref.argmax(axis=1)).mean())
    # bits per byte over the whole held-out tail
    bpb = {}
    for label, p in progs.items():
        o = sh([p, "eval", "--weights", weights, "--data", hp, "--threads", "2"]).decode()
        bpb[label] = float([l for l in o.splitlines() if l.startswith("bits per byte")][0].split(":")[1])
    # greedy continuations
    prompts = [held[k * (len(held) - 64) // 16:][:32] for k in range(16)]
    gen = {label: [] for label in progs}
    for pr in prompts:
        text = pr.decode("latin-1")
        for label, p in progs.items():
            g = sh([p, "generate", "--weights", weights, "--prompt", text, "-n", "128", "--temperature", "0",
                    "--threads", "2"])
            gen[label].append(g[len(pr):] if g.startswith(pr) else g)
    agree = {}
    for label in progs:
        lens = []
        for a, b in zip(gen["f32"], gen[label]):
            k = 0
            while k < min(len(a), len(b)) and a[k] == b[k]:
                k += 1
            lens.append(k)
        agree[label] = (float(np.mean(lens)), float(np.median(lens)))
    rows = ["| %s | scheme | bits per byte | vs f32 | mean KL (nats) | top-1 agreement | greedy agreement, bytes of 128 (mean / median) |" % name,
            "|---|---|---:|---:|---:|---:|---:|"]
    for label, _ in SCHEMES:
        rows.append("| %s | %s | %.4f | %+.2f%% | %.2e | %.2f%% | %.0f / %.0f |" % (
            name, label, bpb[label], 100 * (bpb[label] / bpb["f32"] - 1), kl[label], 100 * top1[label],
            agree[label][0], agree[label][1]))
    text = "\n".join(rows) + "\n"
    print(text)
    open(os.path.join(out, name + ".md"), "w").write(text)


if __name__ == "__main__":
    main()
