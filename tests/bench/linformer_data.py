#!/usr/bin/python3
"""linformer_data.py: the labelled rows of tests/bench/linformer.sh, and their scoring.

    linformer_data.py CORPUS OUT T NTRAIN NTEST ROWS
        T-byte windows of the corpus labelled by the half of the corpus they come from (0: the first
        half, 1: the second; the fortune files are concatenated in name order, so the halves are
        different topics), half and half: NTRAIN rows from the first 90% of each half
        (OUT/train_x.I.npy int32 [ROWS,T] and train_y.I.npy int32 [ROWS], chunks of ROWS rows:
        `PROG train --tokens` takes at most the compiled batch), NTEST rows from the last 10% of
        each half (OUT/test_x.I.npy in chunks of ROWS rows, test_y.npy): the test text is never
        trained on. Seeded: the same rows every run.
    linformer_data.py --score OUT NAME NCHUNKS
        prints the mean cross-entropy and the accuracy of OUT/NAME.logits.I.npy against test_y.npy.
"""
import sys

import numpy as np


def make(corpus, out, t, ntrain, ntest, chunk):
    data = np.frombuffer(open(corpus, "rb").read(), dtype=np.uint8)
    half = len(data) // 2
    rng = np.random.RandomState(1)

    def rows(part, n):
        """n windows, half from each half of the corpus: its first 90% (part 0) or last 10% (1)"""
        y = (np.arange(n) % 2).astype(np.int32)
        rng.shuffle(y)
        lo = np.where(y == 0, 0, half) + (half * 9 // 10 if part else 0)
        span = (half * 9 // 10 if part == 0 else half - half * 9 // 10) - t
        starts = lo + rng.randint(0, span, size=n)
        return np.stack([data[s:s + t] for s in starts]).astype(np.int32), y

    x, y = rows(0, ntrain)
    for i in range(0, ntrain, chunk):
        np.save(f"{out}/train_x.{i // chunk}.npy", np.ascontiguousarray(x[i:i + chunk]))
        np.save(f"{out}/train_y.{i // chunk}.npy", y[i:i + chunk])
    x, y = rows(1, ntest)
    np.save(f"{out}/test_y.npy", y)
    for i in range(0, ntest, chunk):
        np.save(f"{out}/test_x.{i // chunk}.npy", np.ascontiguousarray(x[i:i + chunk]))


def score(out, name, nchunks):
    y = np.load(f"{out}/test_y.npy")
    z = np.concatenate([np.load(f"{out}/{name}.logits.{i}.npy") for i in range(nchunks)]).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(len(y)), y].mean()
    acc = (z.argmax(axis=1) == y).mean()
    print(f"{loss:.4f} {acc:.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "--score":
        score(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        make(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
