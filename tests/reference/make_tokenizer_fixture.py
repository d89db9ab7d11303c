#!/usr/bin/env python3
"""make_tokenizer_fixture.py: a llama2.c tokenizer.bin and the ids llama2.c's run.c gives for a set of
real strings, written by an implementation independent of the runtime's (io/tokenizer.c).

The vocabulary (512 pieces, the size of llama2.c's tok512) is learned here by plain BPE on the
fortunes corpus (the first 200 kB of `cat /usr/share/games/fortunes/*`, words kept with their
leading space as sentencepiece does):
  0 <unk>, 1 "\\n<s>\\n" (BOS), 2 "\\n</s>\\n" (EOS)  -- as llama2.c's tokenizer.py exports them
  3..258 <0x00>..<0xFF>                              -- the byte-fallback pieces
  259.. the corpus's 80 most frequent characters (one codepoint each), then merges
The scores: 0 for the special and byte pieces, -1e6 for characters, -rank for the merge of rank
rank (the first learned merge scores highest), as sentencepiece's BPE models do.

Encoding is run.c's algorithm, word for word in its O(n^2) form (BOS, the dummy prefix " ",
codepoints with byte fallback id = byte + 3, then repeatedly the best-scoring adjacent pair, the
leftmost on ties, until none); decoding strips the space after BOS and turns <0xXX> into the byte.

Writes tests/reference/fixtures/tokenizer/llama2c/{tokenizer.bin, cases.txt}: cases.txt has one
line per string, `HEX<TAB>ID ID ...` (the string's UTF-8 bytes in hex, then its ids with BOS).
Run: python3 tests/reference/make_tokenizer_fixture.py (needs the fortunes package's corpus).
"""
import collections
import glob
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "tokenizer", "llama2c")
VOCAB = 512
NCHARS = 80


def corpus():
    text = ""
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if path.endswith(".dat") or path.endswith(".u8") or os.path.isdir(path):
            continue
        with open(path, "rb") as f:
            text += f.read().decode("utf-8", "replace")
        if len(text) > 200_000:
            break
    return text[:200_000]


def learn(text):
    chars = [c for c, _ in collections.Counter(text).most_common(NCHARS)]
    if " " not in chars:
        chars[-1] = " "
    pieces = ["<unk>", "\n<s>\n", "\n</s>\n"] + ["<0x%02X>" % b for b in range(256)]
    scores = [0.0] * len(pieces)
    for c in chars:
        pieces.append(c)
        scores.append(-1e6)
    have = set(pieces)
    # words with their leading space; characters outside the table stay alone (never merged)
    words = collections.Counter(re.findall(r" ?[^ \n]+", text))
    seqs = {w: list(w) for w in words}
    rank = 0
    while len(pieces) < VOCAB:
        pairs = collections.Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                if a in have and b in have:
                    pairs[a + "\x00" + b] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        a, b = best.split("\x00")
        merged = a + b
        if merged in have:  # the same string by another split: count it once
            for w in seqs:
                seqs[w] = merge_all(seqs[w], a, b)
            continue
        pieces.append(merged)
        scores.append(-float(rank))
        have.add(merged)
        rank += 1
        for w in seqs:
            seqs[w] = merge_all(seqs[w], a, b)
    return pieces, scores


def merge_all(s, a, b):
    out, i = [], 0
    while i < len(s):
        if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(s[i])
            i += 1
    return out


def write_bin(path, pieces, scores):
    raw = [p.encode("utf-8") for p in pieces]
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(r) for r in raw)))
        for r, s in zip(raw, scores):
            f.write(struct.pack("<fi", s, len(r)))
            f.write(r)


def read_bin(path):
    """What run.c's build_tokenizer reads (scores rounded to float32 as it stores them)."""
    with open(path, "rb") as f:
        data = f.read()
    (maxlen,) = struct.unpack_from("<i", data, 0)
    p, vocab, scores = 4, [], []
    while p < len(data):
        s, n = struct.unpack_from("<fi", data, p)
        vocab.append(data[p + 8 : p + 8 + n])
        scores.append(s)
        p += 8 + n
    return maxlen, vocab, scores


def encode(vocab, scores, text, bos=True):
    """run.c's encode(), its O(n^2) form."""
    lookup = {}
    for i, v in enumerate(vocab):
        lookup.setdefault(v, i)
    tokens = []
    if bos:
        tokens.append(1)
    if text:
        tokens.append(lookup.get(b" ", ord(" ") + 3))
    raw = text.encode("utf-8") if isinstance(text, str) else text
    buf = b""
    for i, c in enumerate(raw):
        if c & 0xC0 != 0x80:
            buf = b""
        buf += bytes([c])
        if i + 1 < len(raw) and raw[i + 1] & 0xC0 == 0x80 and len(buf) < 4:
            continue
        if buf in lookup:
            tokens.append(lookup[buf])
        else:
            tokens.extend(b + 3 for b in buf)
        buf = b""
    while True:
        best_score, best_id, best_idx = -1e10, -1, -1
        for i in range(len(tokens) - 1):
            j = lookup.get(vocab[tokens[i]] + vocab[tokens[i + 1]], -1)
            if j != -1 and scores[j] > best_score:
                best_score, best_id, best_idx = scores[j], j, i
        if best_idx == -1:
            break
        tokens[best_idx : best_idx + 2] = [best_id]
    return tokens


def decode(vocab, tokens):
    out = b""
    for prev, tok in zip([None] + tokens[:-1], tokens):
        if tok == 1:
            continue
        piece = vocab[tok]
        if prev == 1 and piece.startswith(b" "):
            piece = piece[1:]
        if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
            piece = bytes([int(piece[3:5], 16)])
        out += piece
    return out


def cases(text):
    lines = [l for l in text.split("\n") if len(l) > 20]
    picked = lines[5:25:2]
    paragraph = "\n".join(lines[100:130])  # ~1.5 kB: many merges, long-range ties
    return [
        "",
        " ",
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "  two leading spaces and trailing ones   ",
        "tabs\tand\nnewlines\n\n",
        "don't won't it's we're they'll I'd",
        "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
        "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
        "emoji \U0001f600\U0001f680!",
        "aaaaaaaaaaaaaaaaaaaaaaaa",
        "1234567890 3.14159",
    ] + picked + [paragraph]


def main():
    os.makedirs(OUT, exist_ok=True)
    text = corpus()
    pieces, scores = learn(text)
    binpath = os.path.join(OUT, "tokenizer.bin")
    write_bin(binpath, pieces, scores)
    _, vocab, sc = read_bin(binpath)
    assert len(vocab) == VOCAB, len(vocab)
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        for s in cases(text):
            ids = encode(vocab, sc, s)
            assert decode(vocab, ids) == s.encode("utf-8"), s
            f.write(s.encode("utf-8").hex() + "\t" + " ".join(map(str, ids)) + "\n")
    print("wrote", binpath, "and cases.txt:", len(vocab), "pieces")


if __name__ == "__main__":
    main()
