#!/usr/bin/python3
"""summarise.py OUT MODEL...: the Markdown report of tests/bench/run.sh from the files it wrote in OUT.

Every figure is the median over rounds of what one process reported (itself a median of its timed
runs). Ratios are ours / the fastest peer; targets are those of the performance issue. The bf16
section sets ours built with --precision=bf16 (forward, decode) and with train: precision: bf16
(training step) beside PyTorch under torch.autocast(cpu, bfloat16), with the targets of issue 10.
"""
import glob
import os
import re
import statistics
import sys

ENGINES = ["ours", "ours16", "torch", "torch16", "ort"]
NAMES = {"ours": "modelc (generated)", "torch": "PyTorch 1.13 eager", "ort": "ONNX Runtime",
         "ours16": "modelc bf16 (--precision=bf16)", "torch16": "PyTorch 1.13 autocast bf16"}
FORWARD_TARGET = {"small": 1.15, "gpt-tiny": 1.3}
DECODE_TARGET = 2.5
TRAIN_TARGET = 1.4      # training step: ours >= 1.4x faster than PyTorch eager
BF16_FORWARD_TARGET = 1.5   # issue 10: ours bf16 forward >= 1.5x PyTorch autocast bf16
BF16_TRAIN_TARGET = 1.3     # issue 10: PyTorch autocast train step / ours bf16 step >= 1.3x
BF16_SELF_TARGET = 3.0      # issue 10: ours bf16 forward >= 3x ours f32


def kv(path):
    d = {}
    for line in open(path):
        if ":" in line:
            k, v = line.split(":", 1)
            d[k.strip()] = v.strip()
    return d


def med(vals):
    return statistics.median(vals) if vals else float("nan")


def raw(out, m, e):
    """What each round's process of engine e on model m reported."""
    return [kv(p) for p in sorted(glob.glob(os.path.join(out, "raw", "r*.%s.%s" % (m, e))))]


def floats(rs, key):
    return [float(r[key]) for r in rs if key in r]


def med_range(v, fmt):
    """'median (min – max)' of v in format fmt, or '-' when nothing was measured."""
    return (fmt + " (" + fmt + " – " + fmt + ")") % (med(v), min(v), max(v)) if v else "-"


def target_row(m, what, ratio, target):
    met = "-" if target is None or ratio != ratio else ("yes" if ratio >= target else "**no**")
    print("| %s | %s | %.2fx | %s | %s |" % (m, what, ratio, ">= %.1fx" % target if target else "-", met))


def main(out, models):
    machine = kv(os.path.join(out, "machine"))
    rounds = sorted({int(re.match(r"r(\d+)\.", os.path.basename(p)).group(1))
                     for p in glob.glob(os.path.join(out, "raw", "r*.sgemm"))})
    sg = [kv(os.path.join(out, "raw", "r%d.sgemm" % r)) for r in rounds]
    sgemm = med([float(s["sgemm_gflops_median"]) for s in sg])
    sgemm_best = max(float(s["sgemm_gflops_best"]) for s in sg)
    mem = {k: med([float(s["mem_%s_gbs" % k]) for s in sg]) for k in ("read", "copy", "triad")}
    bw_kind = max(mem, key=mem.get)   # the bound uses the best sustained bandwidth measured
    probe = {k: med([float(s[k]) for s in sg if k in s]) for k in sg[0] if k.startswith("decode_linears_ms_")}
    probe_bytes = (6 * (1152 + 384 + 1536 + 1536) * 384 + 4096 * 384) * 4   # small's decode weights

    print("# modelc benchmark results\n")
    for k in ("date", "command", "wall_time", "nproc", "cpu", "cpu_flags", "gemm", "torch", "node"):
        print("- %s: %s" % (k, machine.get(k, "?")))
    print("- ONNX Runtime: onnxruntime-node %s" % kv(os.path.join(out, "raw", "r1.%s.ort" % models[0])).get("ort_version", "?"))
    print("- OpenBLAS: %s" % sg[0].get("openblas_config", "?"))
    print("- rounds: %d (medians over rounds; each process reports the median of its own timed runs)" % len(rounds))
    print()
    print("## Reference figures (same run, 2 threads)\n")
    print("| | median over rounds | range over rounds |")
    print("|---|---|---|")
    vals = [float(s["sgemm_gflops_median"]) for s in sg]
    print("| OpenBLAS sgemm %s^3, GFLOP/s | %.1f | %.1f – %.1f (best single call %.1f) |" % (
        sg[0]["sgemm_n"], sgemm, min(vals), max(vals), sgemm_best))
    for k in ("read", "copy", "triad"):
        vals = [float(s["mem_%s_gbs" % k]) for s in sg]
        print("| memory bandwidth, %s, GB/s | %.1f | %.1f – %.1f |" % (k, mem[k], min(vals), max(vals)))
    for k in sorted(probe):
        vals = [float(s[k]) for s in sg if k in s]
        what = k[len("decode_linears_ms_"):]
        print("| small's decode linears (%.2f MB) per step, %s, ms (= GB/s) | %.3f (%.1f GB/s) | %.3f – %.3f |" % (
            probe_bytes / 1e6, what.replace("sgemm_m1", "cblas_sgemm M=1").replace("sgemv", "cblas_sgemv")
            .replace("_", ", ").replace("1t", "1 thread").replace("2t", "2 threads"),
            probe[k], probe_bytes / probe[k] / 1e6, min(vals), max(vals)))
    print()

    print("## Correctness (benchmark weights, max|x - torch| / max|torch| over all logits)\n")
    print("| model | logits shape | ours vs PyTorch | ORT vs PyTorch | result |")
    print("|---|---|---|---|---|")
    for m in models:
        c = kv(os.path.join(out, m + ".check"))
        print("| %s | %s | %s | %s | %s |" % (m, c["check_logits_shape"], c["check_ours_vs_torch"],
                                             c.get("check_ort_vs_torch", "-"), c["check"]))
    print()

    res, info = {}, {}
    for m in models:
        i = open(os.path.join(out, m + ".info")).read()
        info[m] = {"flops": int(re.search(r"forward FLOPs:\s+(\d+)", i).group(1)),
                   "params": int(re.search(r"parameters:\s+(\d+)", i).group(1))}
        for e in ENGINES:
            rs = raw(out, m, e)
            g = lambda key: floats(rs, key)
            res[m, e] = {"fwd": med(g("forward_tokens_per_s")), "fwd_all": g("forward_tokens_per_s"),
                         "dec": med(g("decode_tokens_per_s")), "dec_all": g("decode_tokens_per_s"),
                         "rss": med(g("peak_rss_kib")), "n": len(rs)}
        for e in ("ours", "ourstrain16", "ttrain", "ttrain16"):
            res[m, e + ":train"] = floats(raw(out, m, e), "train_step_seconds")

    print("## Measured (medians over rounds)\n")
    print("Forward: batch x full context per call, logits for every position. Decode: batch 1, KV cache,")
    print("tokens 1..T-1 after a 1-token prefill. GFLOP/s = FLOPs/token from `PROG info` x tokens/s;")
    print("%% of sgemm = that / the OpenBLAS sgemm median above (%.1f GFLOP/s; an f32 figure, so the" % sgemm)
    print("bf16 rows can pass 100%).\n")
    print("| model | engine | forward tokens/s (range) | forward GFLOP/s | % of sgemm | decode tokens/s (range) | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for m in models:
        for e in ENGINES:
            r = res[m, e]
            gf = info[m]["flops"] * r["fwd"] / 1e9
            dec = "%.1f (%.0f – %.0f)" % (r["dec"], min(r["dec_all"]), max(r["dec_all"])) if r["dec_all"] else "-"
            print("| %s | %s | %.0f (%.0f – %.0f) | %.1f | %.0f%% | %s | %.0f |" % (
                m, NAMES[e], r["fwd"], min(r["fwd_all"]), max(r["fwd_all"]), gf, 100 * gf / sgemm, dec, r["rss"] / 1024))
    print()

    print("## Ratios and targets\n")
    print("| model | figure | ours | fastest peer | ratio | target | met |")
    print("|---|---|---|---|---|---|---|")
    for m in models:
        peer = max(("torch", "ort"), key=lambda e: res[m, e]["fwd"])
        ratio = res[m, "ours"]["fwd"] / res[m, peer]["fwd"]
        t = FORWARD_TARGET.get(m)
        print("| %s | forward tokens/s | %.0f | %.0f (%s) | %.2fx | %s | %s |" % (
            m, res[m, "ours"]["fwd"], res[m, peer]["fwd"], NAMES[peer], ratio,
            ">= %.2fx" % t if t else "-", ("yes" if ratio >= t else "**no**") if t else "-"))
        ratio = res[m, "ours"]["dec"] / res[m, "torch"]["dec"]
        print("| %s | decode tokens/s | %.1f | %.1f (%s) | %.2fx | >= %.1fx | %s |" % (
            m, res[m, "ours"]["dec"], res[m, "torch"]["dec"], NAMES["torch"], ratio, DECODE_TARGET,
            "yes" if ratio >= DECODE_TARGET else "**no**"))
        low = min(("torch", "ort"), key=lambda e: res[m, e]["rss"])
        print("| %s | peak RSS MiB (lower is better) | %.0f | %.0f (%s) | %.2fx | - | - |" % (
            m, res[m, "ours"]["rss"] / 1024, res[m, low]["rss"] / 1024, NAMES[low], res[m, "ours"]["rss"] / res[m, low]["rss"]))
    print()

    print("## Training step (forward + cross-entropy + backward + AdamW, full compiled batch x context)\n")
    print("Ours: `PROG bench` (train, then `rt_adamw` over every stored parameter); PyTorch 1.13 eager:")
    print("`torch_model.py train` (`loss.backward()`, `torch.optim.AdamW.step()`, `zero_grad(set_to_none=True)`).")
    print("Seconds per step: medians over rounds (range). Peak RSS: ours is the bench process after its")
    print("training steps (it also ran forward and decode), PyTorch's a process that only trains.\n")
    print("| model | B x T | ours s/step (range) | ours tokens/s | PyTorch s/step (range) | PyTorch tokens/s | speed-up | target | met | peak RSS MiB ours / PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in models:
        o, t = raw(out, m, "ours"), raw(out, m, "ttrain")
        os_, ts_ = floats(o, "train_step_seconds"), floats(t, "train_step_seconds")
        if not os_ or not ts_:
            continue
        B, T = int(o[0]["train_batch"]), int(o[0]["train_context"])
        sp = med(ts_) / med(os_)
        print("| %s | %d x %d | %.4f (%.4f – %.4f) | %.0f | %.4f (%.4f – %.4f) | %.0f | %.2fx | >= %.1fx | %s | %.0f / %.0f |" % (
            m, B, T, med(os_), min(os_), max(os_), B * T / med(os_), med(ts_), min(ts_), max(ts_), B * T / med(ts_),
            sp, TRAIN_TARGET, "yes" if sp >= TRAIN_TARGET else "**no**",
            med([float(r["train_peak_rss_kib"]) for r in o]) / 1024, med([float(r["peak_rss_kib"]) for r in t]) / 1024))
    print()

    print("## bf16 (issue 10, point 5: bf16 weights and products against PyTorch's autocast)\n")
    print("Ours bf16: forward and decode of the program built with `--precision=bf16` (inference passes),")
    print("training step of the program built with `precision: bf16` in the spec's train: section.")
    print("PyTorch: `torch_model.py bench|train --autocast bf16` (torch.autocast(\"cpu\", bfloat16)).")
    print("Medians over rounds (range); the same rounds as the tables above.\n")
    rows = [("ours f32", "ours", "ours"), ("ours bf16", "ours16", "ourstrain16"),
            ("PyTorch f32", "torch", "ttrain"), ("PyTorch autocast bf16", "torch16", "ttrain16")]
    print("| model | engine | forward tokens/s (range) | decode tokens/s (range) | training step s (range) |")
    print("|---|---|---|---|---|")
    for m in models:
        for name, inf, tr in rows:
            print("| %s | %s | %s | %s | %s |" % (m, name, med_range(res[m, inf]["fwd_all"], "%.0f"),
                                                 med_range(res[m, inf]["dec_all"], "%.1f"),
                                                 med_range(res[m, tr + ":train"], "%.4f")))
    print()
    print("| model | ratio | value | target | met |")
    print("|---|---|---|---|---|")
    for m in models:
        f16, t16 = res[m, "ours16"]["fwd"], res[m, "torch16"]["fwd"]
        s16, ts16 = med(res[m, "ourstrain16:train"]), med(res[m, "ttrain16:train"])
        target_row(m, "forward: ours bf16 / PyTorch autocast bf16", f16 / t16, BF16_FORWARD_TARGET)
        target_row(m, "training step: PyTorch autocast bf16 s / ours bf16 s", ts16 / s16, BF16_TRAIN_TARGET)
        target_row(m, "forward: ours bf16 / ours f32", f16 / res[m, "ours"]["fwd"], BF16_SELF_TARGET)
        target_row(m, "decode: ours bf16 / PyTorch autocast bf16", res[m, "ours16"]["dec"] / res[m, "torch16"]["dec"], None)
        target_row(m, "training step: ours f32 s / ours bf16 s", med(res[m, "ours:train"]) / s16, None)
    print()

    mbs = sorted({int(re.match(r"r\d+\.mb(\d+)\.csv", os.path.basename(p)).group(1))
                  for p in glob.glob(os.path.join(out, "raw", "r*.mb*.csv"))})
    if mbs:
        print("## Micro-batches (gpt-tiny, `PROG train --steps 20 --eval-every 0 --batch 4 --micro-batch M`)\n")
        print("Seconds per optimiser step = (elapsed_s at step 20 - at step 5) / 15 from the training CSV")
        print("(steady state, without start-up); peak RSS of the whole process (`/usr/bin/time -f %M`).")
        print("Medians over rounds (range).\n")
        print("| micro-batch M | train calls per step | s/step (range) | tokens/s | peak RSS MiB (range) |")
        print("|---|---|---|---|---|")
        for mb in mbs:
            sps, rss = [], []
            for p in sorted(glob.glob(os.path.join(out, "raw", "r*.mb%d.csv" % mb))):
                rows = [l.strip().split(",") for l in open(p) if l[:1].isdigit()]
                el = {int(r[0]): float(r[6]) for r in rows}
                if 20 in el and 5 in el:
                    sps.append((el[20] - el[5]) / 15)
                tf = p[:-4] + ".time"
                if os.path.exists(tf):
                    rss.append(float(kv(tf)["peak_rss_kib"]) / 1024)
            if sps:
                print("| %d | %d | %.4f (%.4f – %.4f) | %.0f | %.1f (%.1f – %.1f) |" % (
                    mb, 4 // mb, med(sps), min(sps), max(sps), 4 * 128 / med(sps), med(rss), min(rss), max(rss)))
        print()

    print("## Decode memory-bandwidth bound (batch 1)\n")
    print("Bytes per decoded token: every weight once (the tied embedding is read whole by the LM head,")
    print("one row of wpe) plus the KV cache averaged over positions 1..T-1 (`torch_model.py bytes`).")
    print("Ideal tokens/s = the best sustained bandwidth measured above (%s, %.1f GB/s) / bytes per token." % (bw_kind, mem[bw_kind]))
    print("(small's 49 MB of weights may partly stay in the L3 cache between steps; the bound is for DRAM.)\n")
    print("| model | MB per token | ideal tokens/s | ours tokens/s | ours / ideal | ours effective GB/s | PyTorch / ideal |")
    print("|---|---|---|---|---|---|---|")
    for m in models:
        b = int(kv(os.path.join(out, m + ".bytes"))["decode_bytes_per_token"])
        ideal = mem[bw_kind] * 1e9 / b
        o, t = res[m, "ours"]["dec"], res[m, "torch"]["dec"]
        print("| %s | %.2f | %.0f | %.1f | %.0f%% | %.1f | %.0f%% |" % (
            m, b / 1e6, ideal, o, 100 * o / ideal, o * b / 1e9, 100 * t / ideal))
    print()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
