#!/usr/bin/python3
"""linformer_data.py: the labelled rows of tests/bench/linformer.sh, and their scoring.

    linformer_data.py CORPUS OUT T NTRAIN NTEST ROWS
        T-byte windows of two parts of the fortunes corpus CORPUS (scripts/fortunes-corpus.sh
        concatenates Debian's fortune files): the `computers` file (label 0) and the
        `songs-poems` file (label 1), located in CORPUS by their text (/usr/share/games/fortunes),
        half and half. NTRAIN rows from the first 90% of each part (OUT/train_x.I.npy int32
        [ROWS,T] and train_y.I.npy int32 [ROWS], chunks of ROWS rows: `PROG train --tokens` takes
        at most the compiled batch), NTEST rows from the last 10% of each part (OUT/test_x.I.npy in
        chunks of ROWS rows, test_y.npy): the test text is never trained on. Seeded: the same rows
        every run.
    linformer_data.py --score OUT NAME NCHUNKS
        prints the mean cross-entropy and the accuracy of OUT/NAME.logits.I.npy against test_y.npy.
"""
import sys

import numpy as np

PARTS = ("computers", "songs-poems")
FORTUNES = "/usr/share/games/fortunes"


def make(corpus, out, t, ntrain, ntest, chunk):
    text = open(corpus, "rb").read()
    data = np.frombuffer(text, dtype=np.uint8)
    spans = []
    for name in PARTS:
        part = open(f"{FORTUNES}/{name}", "rb").read()
        at = text.find(part)
        if at < 0:
            sys.exit(f"linformer_data.py: {FORTUNES}/{name} is not in {corpus}")
        spans.append((at, len(part)))
    rng = np.random.RandomState(1)

    def rows(test, n):
        """n windows, half from each part: its first 90% (training) or its last 10% (test)"""
        y = (np.arange(n) % 2).astype(np.int32)
        rng.shuffle(y)
        lo = np.array([s[0] + (s[1] * 9 // 10 if test else 0) for s in spans])[y]
        span = np.array([(s[1] - s[1] * 9 // 10 if test else s[1] * 9 // 10) - t for s in spans])[y]
        starts = lo + (rng.random_sample(n) * span).astype(np.int64)
        return np.stack([data[s:s + t] for s in starts]).astype(np.int32), y

    x, y = rows(False, ntrain)
    for i in range(0, ntrain, chunk):
        np.save(f"{out}/train_x.{i // chunk}.npy", np.ascontiguousarray(x[i:i + chunk]))
        np.save(f"{out}/train_y.{i // chunk}.npy", y[i:i + chunk])
    x, y = rows(True, ntest)
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
