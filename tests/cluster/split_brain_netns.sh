#!/usr/bin/env bash
# Split brain with a real firewall rule: deploy/cluster.sh up 2 in network
# namespaces, then node n1 is cut from etcd only (a blackhole route to etcd's
# address in n1's namespace; its peer n2 and the clients still reach it). n1 must
# stop serving before its lease can end, n2 must claim n1's partitions only after
# that, every orchestration of a run going on meanwhile must end correctly, and
# once the route is gone n1 must join again and own partitions.
#
# Needs root and network namespaces; elsewhere it is skipped (exit 77) and the
# loopback variant in tests/cluster/fault_test.cpp (a proxy cut) covers the same.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export DTSD_BUILD=${DTSD_BUILD:?run through meson test}
dtsctl=$DTSD_BUILD/src/cli/dtsctl
hello=$DTSD_BUILD/samples/hello_cities/hello_cities

if [ "$(id -u)" -ne 0 ] || ! command -v ip > /dev/null; then
  echo "SKIP: needs root and 'ip' for network namespaces (the loopback variant runs in cluster_faults)"
  exit 77
fi
probe=dtsd-probe-$$
if ! ip netns add "$probe" 2> /dev/null; then
  echo "SKIP: network namespaces cannot be made here (the loopback variant runs in cluster_faults)"
  exit 77
fi
ip netns del "$probe"
if ip link show dtsdbr0 > /dev/null 2>&1; then
  echo "SKIP: a namespaced cluster (bridge dtsdbr0) is up already; 'deploy/cluster.sh down' first"
  exit 77
fi

export DTSD_CLUSTER_DIR=$(mktemp -d /tmp/dtsd-split-brain-XXXXXX)
export DTSD_ETCD_PORT=2379
client_pid=""
cleanup() {
  [ -n "$client_pid" ] && kill -9 "$client_pid" 2> /dev/null || true
  if [ -n "${worker_pid:-}" ]; then { kill -9 "$worker_pid"; wait "$worker_pid"; } 2> /dev/null || true; fi
  ip netns exec dtsd-n1 ip route del blackhole 10.77.0.2/32 2> /dev/null || true
  "$root/deploy/cluster.sh" down --purge > /dev/null 2>&1 || true
  rm -rf "$DTSD_CLUSTER_DIR"
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
etcd=etcd://10.77.0.2:2379
n1=10.77.0.11:8081
n2=10.77.0.12:8081
lease_ms=3000  # cluster.sh's nodes keep dtsd's default node lease

"$root/deploy/cluster.sh" up 2 > "$DTSD_CLUSTER_DIR/up.log"
# Every partition owned, some by each node.
owners() { "$dtsctl" --json cluster status --cluster "$etcd" | grep -o '"owner":"n[12]"' | sort | uniq -c; }
for _ in $(seq 1 150); do
  o=$(owners || true)
  if echo "$o" | grep -q n1 && echo "$o" | grep -q n2 && [ "$(echo "$o" | awk '{s+=$1} END {print s}')" = 12 ]; then break; fi
  sleep 0.2
done
echo "owners before the cut:"; owners

# A run going on across the cut: a worker and a client at n2 (n1's partitions are
# reached through n2, which forwards and relays).
"$hello" worker --address "$n2" > "$DTSD_CLUSTER_DIR/worker.log" 2>&1 &
worker_pid=$!
"$hello" client --count 1000 --address "$n2" > "$DTSD_CLUSTER_DIR/client.log" 2>&1 &
client_pid=$!

# An instance that n1 serves, to read at n1 itself.
probe_id=""
for i in $(seq 0 500); do
  if "$dtsctl" --json cluster where "probe-$i" --cluster "$etcd" | grep -q '"owner":"n1"'; then
    probe_id="probe-$i"
    break
  fi
done
[ -n "$probe_id" ] || { echo "FAIL: no id of n1's partitions found"; exit 1; }
"$dtsctl" --address "$n1" instance start HelloCities --id "$probe_id" > /dev/null
epoch_before=$("$dtsctl" --json cluster where "$probe_id" --cluster "$etcd" | grep -o '"epoch":[0-9]*' | cut -d: -f2)

# The cut: n1 loses its route to etcd, and only that.
ip netns exec dtsd-n1 ip route add blackhole 10.77.0.2/32
cut_at=$(now_ms)
last_n1=0
taken=0
while [ $(($(now_ms) - cut_at)) -lt 20000 ]; do
  if "$dtsctl" --address "$n1" instance show "$probe_id" > /dev/null 2>&1; then last_n1=$(now_ms); fi
  if "$dtsctl" --json cluster where "$probe_id" --cluster "$etcd" 2> /dev/null | grep -q '"owner":"n2"'; then
    taken=$(now_ms)
    break
  fi
  sleep 0.05
done
[ "$taken" -gt 0 ] || { echo "FAIL: n2 did not take n1's partition within 20 s of the cut"; exit 1; }
echo "n1 answered last $((last_n1 - cut_at)) ms after it was cut from etcd; n2 owned its partition" \
  "$((taken - cut_at)) ms after (lease $lease_ms ms)"
[ "$last_n1" -lt "$taken" ] || { echo "FAIL: n1 answered after n2 took its partition"; exit 1; }
[ "$last_n1" -lt $((cut_at + lease_ms)) ] || { echo "FAIL: n1 answered past its lease"; exit 1; }
if "$dtsctl" --address "$n1" instance show "$probe_id" > /dev/null 2>&1; then
  echo "FAIL: n1, cut off, still serves $probe_id"
  exit 1
fi
epoch_after=$("$dtsctl" --json cluster where "$probe_id" --cluster "$etcd" | grep -o '"epoch":[0-9]*' | cut -d: -f2)
[ "$epoch_after" -gt "$epoch_before" ] || { echo "FAIL: the epoch did not grow ($epoch_before -> $epoch_after)"; exit 1; }

# Healed: n1 joins again and owns partitions; the run ends with every output right.
ip netns exec dtsd-n1 ip route del blackhole 10.77.0.2/32
for _ in $(seq 1 150); do
  owners | grep -q n1 && break
  sleep 0.2
done
owners | grep -q n1 || { echo "FAIL: n1 owns nothing after the heal"; exit 1; }
echo "owners after the heal:"; owners
# (Bounded here, so that a slow build fails with a message and cleans up, rather
# than being killed by meson's timeout with the namespaces left behind.)
for _ in $(seq 1 1200); do
  kill -0 "$client_pid" 2> /dev/null || break
  sleep 0.1
done
if kill -0 "$client_pid" 2> /dev/null; then
  echo "FAIL: the hello-cities run did not end within 120 s of the heal:"; tail -5 "$DTSD_CLUSTER_DIR/client.log"
  exit 1
fi
if ! wait "$client_pid"; then
  client_pid=""
  echo "FAIL: the hello-cities run across the cut failed:"; tail -5 "$DTSD_CLUSTER_DIR/client.log"
  exit 1
fi
client_pid=""
tail -1 "$DTSD_CLUSTER_DIR/client.log"
echo "split brain (network namespaces): OK"
