#!/usr/bin/env bash
# flatnet's main job, from a fresh machine: install what it needs, build, bring up the two-node
# example cluster, list its pods, prove the Kubernetes network model in it (every pod to every
# pod over TCP and UDP, every node to every pod, no NAT), draw it, and tear it down.
# The picture is left in two-node.svg. The build directory is build/ unless FLATNET_BUILD_DIR
# says otherwise.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: must run as root: flatnet creates network namespaces." >&2
  echo "Run: sudo $0 $*" >&2
  exit 1
fi

cd "$(dirname "$0")/.."
build_dir=${FLATNET_BUILD_DIR:-build}

scripts/setup.sh
cmake -S . -B "$build_dir" >/dev/null
cmake --build "$build_dir" -j"$(nproc)" --target flatnet >/dev/null

flatnet="$build_dir/bin/flatnet"
run() {
  echo
  echo "\$ flatnet $*"
  "$flatnet" "$@"
}

# Whatever happens below, the cluster goes away again.
cleanup() { "$flatnet" down two-node >/dev/null 2>&1 || true; }
trap cleanup EXIT

run up -f examples/two-node.yaml
run get nodes -o wide
run get pods -o wide
run check
run graph -o two-node.svg
run down two-node
trap - EXIT
