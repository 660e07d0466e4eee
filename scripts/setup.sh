#!/usr/bin/env bash
# Installs every Debian 12 package that building, running and testing flatnet need.
# Idempotent and non-interactive: when everything is already installed it only checks and
# returns (no apt-get update, no network).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: must run as root (it installs Debian packages): sudo $0" >&2
  exit 1
fi

packages=(
  # toolchain
  build-essential g++ cmake pkg-config clang-format git
  # libraries flatnet links
  libnl-3-dev libnl-route-3-dev libpcap-dev libboost-program-options-dev
  googletest libgtest-dev libgmock-dev nlohmann-json3-dev libyaml-cpp-dev
  # flatnet-proxy: chain-name hashes (kube-proxy's SHA-256) and conntrack cleanup over netlink
  libssl-dev libnetfilter-conntrack-dev
  # what flatnet drives at run time, and the tools CI uses to snapshot the host
  iproute2 iptables nftables procps kmod graphviz
  # peers that tests and benchmarks compare against
  containernetworking-plugins tshark iperf3 haproxy
)

missing=()
for p in "${packages[@]}"; do
  # dpkg-query reports "install ok installed" only for a fully configured package.
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup.sh: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer it up front so the install never prompts.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
# iperf3 asks whether to start a daemon at boot: no.
echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup.sh: done"
