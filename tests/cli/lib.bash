# lib.bash: helpers for the CLI tests (sourced). Each test script gets the modelc binary as $1 and
# runs from the repository root. A failed expectation prints what differed and exits 1.
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

finish() {
  if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed" >&2; exit 1; fi
  echo "all checks passed"
}
