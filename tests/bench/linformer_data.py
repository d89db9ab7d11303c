#!/usr/bin/python3
"""linformer_data.py: the labelled rows of tests/bench/linformer.sh, and their scoring.

    linformer_data.py CORPUS OUT T NTRAIN NTEST ROWS
        T-byte windows of the corpus, each kept (label 1) or reversed (label 0) at random, half and
        half: NTRAIN rows from the first 90% (OUT/train_x.I.npy int32 [ROWS,T] and train_y.I.npy
        int32 [ROWS], chunks of ROWS rows: `PROG train --tokens` takes at most the compiled batch),
        NTEST rows from the last 10% (OUT/test_x.I.npy in chunks of ROWS rows, test_y.npy). Seeded:
        the same rows every run.
    linformer_data.py --score OUT NAME NCHUNKS
        prints the mean cross-entropy and the accuracy of OUT/NAME.logits.I.npy against test_y.npy.
"""
import sys

import numpy as np


def make(corpus, out, t, ntrain, ntest, chunk):
    data = np.frombuffer(open(corpus, "rb").read(), dtype=np.uint8)
    cut = len(data) * 9 // 10
    rng = np.random.RandomState(1)

    def rows(lo, hi, n):
        starts = rng.randint(lo, hi - t, size=n)
        x = np.stack([data[s:s + t] for s in starts]).astype(np.int32)
        y = (np.arange(n) % 2).astype(np.int32)
        rng.shuffle(y)
        x[y == 0] = x[y == 0][:, ::-1]
        return x, y

    x, y = rows(0, cut, ntrain)
    for i in range(0, ntrain, chunk):
        np.save(f"{out}/train_x.{i // chunk}.npy", np.ascontiguousarray(x[i:i + chunk]))
        np.save(f"{out}/train_y.{i // chunk}.npy", y[i:i + chunk])
    x, y = rows(cut, len(data), ntest)
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
