#!/usr/bin/env bash
# deploy/cluster.sh on loopback ports: up 2 with an etcd of 3 members, status shows
# both nodes owning every partition, hello cities runs through one node with its
# worker at the other, down stops everything it started (by PID) and leaves
# nothing behind.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export DTSD_BUILD=${DTSD_BUILD:?run through meson test}
export DTSD_CLUSTER_DIR=$(mktemp -d /tmp/dtsd-cluster-sh-XXXXXX)
# Below the kernel's ephemeral ports (32768 and up), which outgoing connections
# of this or a parallel test may hold: etcd at 25000-31999 (a member takes two
# ports), the nodes at 10000-24902.
export DTSD_ETCD_PORT=$((25000 + RANDOM % 7000))
export DTSD_PORT_BASE=$((10000 + (RANDOM % 150) * 100))
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then  # What the nodes and etcd said, before it is removed.
    for log in "$DTSD_CLUSTER_DIR"/*.log; do echo "== $log (last 40 lines)"; tail -n 40 "$log"; done >&2
  fi
  "$root/deploy/cluster.sh" down --purge > /dev/null 2>&1 || true
  rm -rf "$DTSD_CLUSTER_DIR"
}
trap cleanup EXIT

"$root/deploy/cluster.sh" up 2 --loopback --etcd-members 3
pids=$(awk '{print $1}' "$DTSD_CLUSTER_DIR/pids")
status=""
for _ in $(seq 1 100); do
  status=$("$root/deploy/cluster.sh" status)
  owned=$(echo "$status" | awk '$1 == "default" && $3 ~ /^n[12]$/' | wc -l)
  [ "$owned" -eq 12 ] && break
  sleep 0.2
done
echo "$status"
[ "$owned" -eq 12 ] || { echo "FAIL: not every partition owned"; exit 1; }
echo "$status" | grep -q '^n1 ' || { echo "FAIL: node n1 missing"; exit 1; }
echo "$status" | grep -q '^n2 ' || { echo "FAIL: node n2 missing"; exit 1; }
[ "$(grep -c etcd-e "$DTSD_CLUSTER_DIR/pids")" -eq 3 ] || { echo "FAIL: not 3 etcd members"; exit 1; }
n1=$(awk '$1 == "n1" {print $3}' "$DTSD_CLUSTER_DIR/nodes")
n2=$(awk '$1 == "n2" {print $3}' "$DTSD_CLUSTER_DIR/nodes")
hello=$DTSD_BUILD/samples/hello_cities/hello_cities
"$hello" worker --address "$n1" > "$DTSD_CLUSTER_DIR/worker.log" 2>&1 &
worker=$!
stop_worker() { { kill -9 "$worker"; wait "$worker"; } 2> /dev/null || true; }
if ! "$hello" client --count 200 --address "$n2"; then
  stop_worker
  echo "FAIL: hello cities through n2 (worker at n1)"
  exit 1
fi
stop_worker
"$root/deploy/cluster.sh" down --purge
for pid in $pids; do
  if kill -0 "$pid" 2> /dev/null; then echo "FAIL: $pid still runs after down"; exit 1; fi
done
[ ! -e "$DTSD_CLUSTER_DIR" ] || { echo "FAIL: $DTSD_CLUSTER_DIR left behind"; exit 1; }
echo "cluster.sh: up, status, down OK"
