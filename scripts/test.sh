#!/usr/bin/env bash
# Installs what flatnet needs, builds it with warnings as errors, and runs every test: the unit,
# netns and e2e ctest labels. Extra arguments go to ctest (for example: -L unit, -R Traffic).
# The build directory is build/ unless FLATNET_BUILD_DIR says otherwise.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: must run as root: the netns and e2e tests create network namespaces." >&2
  echo "Run: sudo $0 $*" >&2
  exit 1
fi

cd "$(dirname "$0")/.."
build_dir=${FLATNET_BUILD_DIR:-build}
jobs=$(nproc)

scripts/setup.sh
cmake -S . -B "$build_dir" -DFLATNET_WERROR=ON
cmake --build "$build_dir" -j"$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j"$jobs" "$@"
