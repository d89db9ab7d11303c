#!/usr/bin/env bash
# make_gpt2_tokenizer_fixture.sh: the ids GPT-2's byte-level BPE gives a set of real strings,
# computed by an implementation independent of the runtime's (io/bpe.c): the npm package
# gpt-3-encoder's own encode() under node (installed by scripts/gpt2-tokenizer.sh). Writes
# tests/reference/fixtures/tokenizer/gpt2/cases.txt, one line a string: its UTF-8 bytes in hex, a
# tab, its ids. The strings: fortunes lines (the fortunes package's corpus), contractions, runs of
# spaces, tabs and newlines, numbers, punctuation, accented, Greek, Cyrillic, CJK text and emoji.
# CI compares against the committed file: it needs neither node nor the network for that.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENC=$(scripts/gpt2-tokenizer.sh | sed -n 1p)
OUT=tests/reference/fixtures/tokenizer/gpt2
mkdir -p "$OUT"
PKG=$(dirname "$ENC") node - > "$OUT/cases.txt" <<'JS'
const fs = require('fs');
const path = require('path');
const { encode, decode } = require(process.env.PKG);
const dir = '/usr/share/games/fortunes';
let corpus = '';
for (const f of fs.readdirSync(dir).sort()) {
  const p = path.join(dir, f);
  if (f.endsWith('.dat') || f.endsWith('.u8') || !fs.statSync(p).isFile()) continue;
  corpus += fs.readFileSync(p, 'utf8');
  if (corpus.length > 200000) break;
}
const lines = corpus.split('\n').filter((l) => l.length > 20);
const cases = [
  '', ' ', '  ', '\n', 'Hello, world!', 'Hello world', ' Hello', 'hello   world', 'a\n\nb', 'x \n y',
  'trailing spaces   ', '   leading spaces', 'tabs\tand\t\ttabs', 'line one\nline two\r\nline three\n\n\n',
  "don't won't it's we're they've I'm you'll he'd", "DON'T IT'S", "'s 't 're", "rock 'n' roll",
  'The year 2024 had 365 days; pi is 3.14159, e = 2.71828...', '12345678901234567890', 'x²+y³ ½ ¼',
  'café naïve résumé Zürich façade', 'Ελληνικά κείμενα', 'Русский текст, да.', '日本語のテキストです。',
  '中文文本', '한국어 텍스트', 'emoji 😀🚀 and ❤️', '$$$ !!! ??? ...', 'foo@bar.com https://example.org/a?b=c',
  '<|endoftext|>', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'supercalifragilisticexpialidocious',
  lines.slice(100, 130).join('\n'),
].concat(lines.slice(5, 45, 2));
for (const s of cases) {
  const ids = encode(s);
  if (decode(ids) !== s) throw new Error('gpt-3-encoder does not round-trip ' + JSON.stringify(s));
  process.stdout.write(Buffer.from(s, 'utf8').toString('hex') + '\t' + ids.join(' ') + '\n');
}
JS
echo "wrote $OUT/cases.txt: $(wc -l < "$OUT/cases.txt") strings" >&2
