#!/usr/bin/env bash
# setup.sh: installs the Debian 12 packages modelc needs that are missing (and only those), then
# configures and builds into the given folder.  Usage: scripts/setup.sh BUILD_DIR [cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Build tools and libraries; clang and its sanitizer runtime build the ASan+UBSan configuration;
# libdnnl-dev is oneDNN for the runtime's GEMM layer (optional to CMake: -DMODELC_DNNL=OFF); libopenblas-dev
# also provides LAPACK (dgesdd: the lowrank pass's SVD), so no LAPACK package of its own;
# libopenmpi-dev and openmpi-bin (mpirun) are Open MPI, for `modelc build --mpi` (data-parallel training).
PKGS=(build-essential cmake pkg-config libyaml-dev check libsubunit-dev libopenblas-dev libdnnl-dev
      llvm-14-dev clang libclang-rt-14-dev fortunes libopenmpi-dev openmpi-bin)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing missing packages: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

build=${1:-build}
shift || true
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug "$@" >/dev/null
cmake --build "$build" -j"$(nproc)" >&2
