# lib.bash: helpers for the CLI tests (sourced). Each test script gets the modelc binary as $1 and
# runs from the repository root. A failed expectation prints what differed and exits 1. The
# scripts run with pipefail: never end a pipe with `grep -q` on a long output (grep exits at the
# first match, the writer dies of SIGPIPE, and the pipe fails at random).
MODELC=${1:?usage: $0 MODELC}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# expect_status N CMD...: runs CMD, stdout to $TMP/out, stderr to $TMP/err; checks the exit status.
expect_status() {
  local want=$1; shift
  set +e
  "$@" >"$TMP/out" 2>"$TMP/err"
  local got=$?
  set -e
  if [ "$got" != "$want" ]; then
    fail "'$*' exited $got, expected $want"; sed 's/^/  stderr: /' "$TMP/err" | head -20 >&2
  fi
}

# expect_in FILE TEXT: FILE contains the fixed string TEXT.
expect_in() {
  grep -qF -- "$2" "$1" || { fail "$1 lacks '$2'"; head -30 "$1" | sed 's/^/  | /' >&2; }
}

# mknpy FILE DESCR SHAPE BYTES...: writes a .npy (version 1.0) with the given dtype descr ('<i4'),
# shape text ('1, 3') and raw little-endian data given as printf escapes.
mknpy() {
  local file=$1 descr=$2 shape=$3 data=$4
  local dict="{'descr': '$descr', 'fortran_order': False, 'shape': ($shape), }"
  local len=$(( (10 + ${#dict} + 1 + 63) / 64 * 64 - 10 ))
  local pad=$(( len - ${#dict} - 1 ))
  { printf '\x93NUMPY\x01\x00'; printf "\\x$(printf %02x $((len & 255)))\\x$(printf %02x $((len >> 8)))";
    printf '%s' "$dict"; printf '%*s' "$pad" ''; printf '\n'; printf "$data"; } > "$file"
}

finish() {
  if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed" >&2; exit 1; fi
  echo "all checks passed"
}
