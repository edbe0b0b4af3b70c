#!/usr/bin/env bash
# Build and run the Aeron peer benchmark (benches/aeron-peer).
#
# rusteron builds Aeron's vendored C sources with cmake >= 3.30; Debian 12's
# is 3.25, so a cmake from PyPI is installed into a venv under target/ on
# first use (the first build takes about 5 minutes). Arguments go to the
# benchmark (--quick, --n, --size, --reps, --rate, --sides, --idle, --threads, --no-auth,
# --help); --build-only only builds. Cargo runs at most 2 jobs (the machine
# is shared).
#
#   benches/aeron-peer/run.sh                 # the full run (about 4 minutes here)
#   benches/aeron-peer/run.sh --quick         # a smoke run (under a minute)
#   benches/aeron-peer/run.sh --build-only    # only build
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/cmake-venv"

cmake_ok() {
  command -v cmake >/dev/null 2>&1 || return 1
  local v
  v="$(cmake --version | sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
  read -r major minor <<<"$v"
  [ "${major:-0}" -gt 3 ] || { [ "${major:-0}" -eq 3 ] && [ "${minor:-0}" -ge 30 ]; }
}

if ! cmake_ok; then
  if [ ! -x "$venv/bin/cmake" ]; then
    echo "== installing cmake >= 3.30 from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'cmake>=3.30'
  fi
  export PATH="$venv/bin:$PATH"
fi
for lib in uuid bsd; do
  if ! compgen -G "/usr/lib/*/lib$lib.a" >/dev/null && ! compgen -G "/usr/lib/lib$lib.a" >/dev/null; then
    echo "missing lib$lib: sudo apt-get install uuid-dev libbsd-dev" >&2
    exit 1
  fi
done

build_only=false
args=()
for a in "$@"; do
  if [ "$a" = "--build-only" ]; then build_only=true; else args+=("$a"); fi
done

cd "$here"
CMAKE_BUILD_PARALLEL_LEVEL=2 cargo build --release -j 2
$build_only && exit 0
exec "$here/target/release/jasper-aeron-peer" "${args[@]}"
