#!/usr/bin/env bash
# fortunes-corpus.sh OUT: a real English text corpus for byte-level training: every fortune file
# of Debian's `fortunes` package (about 2.5 MB of quotations, jokes and literature), concatenated
# in name order. scripts/setup.sh installs the package.
set -euo pipefail
out=${1:?usage: $0 OUT.txt}
dir=/usr/share/games/fortunes
[ -d "$dir" ] || { echo "fortunes-corpus: $dir is missing (apt-get install fortunes)" >&2; exit 1; }
: > "$out"
for f in "$dir"/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] && cat "$f" >> "$out"
done
echo "fortunes-corpus: $(wc -c < "$out") bytes in $out" >&2
