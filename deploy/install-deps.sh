#!/usr/bin/env bash
# Installs every Debian package dtsd needs to build and test. Idempotent: packages
# already present are skipped, so a machine that has them runs no apt-get at all.
set -euo pipefail

packages=(
  build-essential g++ meson ninja-build pkg-config ccache
  libcaf-dev libcapnp-dev capnproto liblmdb-dev libboost-dev doctest-dev
  libxxhash-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev
  protobuf-compiler protobuf-compiler-grpc libgrpc++-dev libprotobuf-dev
  libjemalloc-dev libssl-dev
  libhowardhinnant-date-dev tzdata zlib1g-dev
  chromium
  etcd-server etcd-client
)
# libhowardhinnant-date-dev, tzdata: cron schedules keep their time zone (IANA names).
# zlib1g-dev: dtsctl export writes gzip.
# libssl-dev: OpenSSL signs and checks tokens (HMAC-SHA256) and will serve TLS.
# chromium: the dashboard's browser tests drive it with playwright-core (npm).
# etcd-server: a cluster's partitions are owned through etcd; the cluster tests
# start their own on loopback (etcd-client gives operators etcdctl).
# The compat suite (tests/compat) runs the official Durable Task JavaScript SDK:
# Node.js and npm come from Debian unless the machine already has them (say, from
# NodeSource, whose nodejs package conflicts with Debian's npm).
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
