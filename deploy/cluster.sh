#!/usr/bin/env bash
# A dtsd cluster on one machine, for tests, demos and benchmarks: one etcd and N
# dtsd nodes sharing a data directory. As root, each node runs in a network
# namespace of its own (ip netns, a veth pair, a bridge) with its own address and
# may be CPU-capped (cgroups); otherwise every node listens on loopback ports.
# Everything started is recorded by PID in the state directory and stopped by PID.
#
#   deploy/cluster.sh up N [--cpu PERCENT] [--loopback] [--etcd-members 1|3]
#                                                          # start etcd and N nodes
#   deploy/cluster.sh status                               # nodes, owners, epochs
#   deploy/cluster.sh down [--purge]                       # stop all, remove namespaces
#                                                          # (--purge: and the data)
#
# Environment: DTSD_CLUSTER_DIR (state and data; default /tmp/dtsd-cluster),
# DTSD_BUILD (default build/release), DTSD_ETCD_PORT (default 2379; its peer port
# is the next one), DTSD_PORT_BASE (loopback: node i listens on base+100*i+0..2,
# default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."

state=${DTSD_CLUSTER_DIR:-/tmp/dtsd-cluster}
build=${DTSD_BUILD:-build/release}
dtsd=$build/src/server/dtsd
dtsctl=$build/src/cli/dtsctl
etcd_port=${DTSD_ETCD_PORT:-2379}
port_base=${DTSD_PORT_BASE:-8080}
bridge=dtsdbr0
subnet=10.77.0
host_ip=$subnet.1
etcd_host_ip=$subnet.2  # etcd's own address on the bridge: a node can be cut from etcd alone

usage() {
  echo "usage: $0 up N [--cpu PERCENT] [--loopback] [--etcd-members 1|3] | status | down [--purge]" >&2
  exit 2
}

# The cgroup directory of node $1 (v2 or v1's cpu controller), or nothing.
cgroup_of() {
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    echo "/sys/fs/cgroup/dtsd-$1"
  elif [ -d /sys/fs/cgroup/cpu ]; then
    echo "/sys/fs/cgroup/cpu/dtsd-$1"
  fi
}

# Caps process $2 of node $1 at $3 percent of one core.
cap_cpu() {
  local dir
  dir=$(cgroup_of "$1")
  if [ -z "$dir" ] || ! mkdir -p "$dir" 2> /dev/null; then
    echo "   (no writable cgroup: node $1 is not CPU-capped)"
    return
  fi
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    echo "$(($3 * 1000)) 100000" > "$dir/cpu.max"
  else
    echo 100000 > "$dir/cpu.cfs_period_us"
    echo $(($3 * 1000)) > "$dir/cpu.cfs_quota_us"
  fi
  echo "$2" > "$dir/cgroup.procs"
  echo "$dir" >> "$state/cgroups"
}

wait_for() {  # $1: what, $2: command; at most 30 s. With $3 (its PID) and $4 (its log): fails
               # at once if it exits, and shows the end of its log either way.
  for _ in $(seq 1 150); do
    if eval "$2" > /dev/null 2>&1; then return 0; fi
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2> /dev/null; then
      echo "cluster.sh: $1 exited before it was up; the end of $4:" >&2
      tail -n 20 "$4" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "cluster.sh: $1 did not come up in 30 s; see $state/*.log" >&2
  if [ -n "${4:-}" ]; then tail -n 20 "$4" >&2; fi
  return 1
}

up() {
  local count=$1 cpu=0 loopback=0 members=1
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --cpu) cpu=${2:?--cpu needs a percent}; shift 2 ;;
      --loopback) loopback=1; shift ;;
      --etcd-members) members=${2:?--etcd-members needs 1 or 3}; shift 2 ;;
      *) usage ;;
    esac
  done
  [ "$members" = 1 ] || [ "$members" = 3 ] || { echo "cluster.sh: --etcd-members is 1 or 3" >&2; exit 2; }
  [[ "$count" =~ ^[1-9][0-9]?$ ]] || { echo "cluster.sh: N must be 1..99" >&2; exit 2; }
  if [ -f "$state/pids" ]; then
    echo "cluster.sh: a cluster is up already ($state); run '$0 down' first" >&2
    exit 1
  fi
  [ -x "$dtsd" ] || { echo "cluster.sh: no $dtsd; build first (meson setup $build && ninja -C $build)" >&2; exit 1; }
  command -v etcd > /dev/null || { echo "cluster.sh: etcd is missing; run deploy/install-deps.sh" >&2; exit 1; }
  if [ "$loopback" -eq 0 ] && { [ "$(id -u)" -ne 0 ] || ! command -v ip > /dev/null; }; then
    echo "== not root (or no 'ip'): every node on loopback ports"
    loopback=1
  fi
  mkdir -p "$state/data"
  : > "$state/pids"
  : > "$state/cgroups"
  : > "$state/nodes"

  local etcd_ip=127.0.0.1
  if [ "$loopback" -eq 0 ]; then
    etcd_ip=$etcd_host_ip
    ip link add "$bridge" type bridge
    ip addr add "$host_ip/24" dev "$bridge"
    ip addr add "$etcd_host_ip/24" dev "$bridge"
    ip link set "$bridge" up
    echo "namespaces" > "$state/mode"
  else
    echo "loopback" > "$state/mode"
  fi
  # Member m listens for clients on etcd_port + 2m and for its peers on the next port.
  local etcd_url="" initial="" m
  for m in $(seq 0 $((members - 1))); do
    initial+="${initial:+,}e$m=http://$etcd_ip:$((etcd_port + 2 * m + 1))"
    etcd_url+="${etcd_url:+,}$etcd_ip:$((etcd_port + 2 * m))"
  done
  etcd_url=etcd://$etcd_url
  for m in $(seq 0 $((members - 1))); do
    local client=http://$etcd_ip:$((etcd_port + 2 * m)) peer=http://$etcd_ip:$((etcd_port + 2 * m + 1))
    echo "== etcd member e$m on ${client#http://}"
    etcd --name "e$m" --data-dir "$state/etcd-data-e$m" --listen-client-urls "$client" \
      --advertise-client-urls "$client" --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial" > "$state/etcd-e$m.log" 2>&1 &
    echo "$! etcd-e$m" >> "$state/pids"
  done
  wait_for "etcd" "$dtsctl cluster status --cluster $etcd_url"
  echo "$etcd_url" > "$state/etcd.url"

  for i in $(seq 1 "$count"); do
    local node=n$i address ns=()
    if [ "$loopback" -eq 0 ]; then
      address=$subnet.$((10 + i))
      ip netns add "dtsd-$node"
      ip link add "veth-$node" type veth peer name eth0 netns "dtsd-$node"
      ip link set "veth-$node" master "$bridge" up
      ip netns exec "dtsd-$node" ip addr add "$address/24" dev eth0
      ip netns exec "dtsd-$node" ip link set eth0 up
      ip netns exec "dtsd-$node" ip link set lo up
      ns=(ip netns exec "dtsd-$node")
      local native=$address:8081 grpc=$address:8080 dashboard=$address:8082
      # The bridge is private to this machine (its namespaces): serving it open is
      # what a demo wants; dtsd refuses any non-loopback address without saying so.
      local open_flag=--insecure-no-auth
    else
      local open_flag=
      local native=127.0.0.1:$((port_base + 1 + 100 * i)) grpc=127.0.0.1:$((port_base + 100 * i))
      local dashboard=127.0.0.1:$((port_base + 2 + 100 * i))
    fi
    echo "== node $node: gRPC $grpc, native $native, dashboard $dashboard"
    "${ns[@]}" "$dtsd" --cluster "$etcd_url" --node-id "$node" --advertise "$native" \
      --listen "$native" --grpc-listen "$grpc" --dashboard-listen "$dashboard" $open_flag \
      --data-dir "$state/data" > "$state/$node.log" 2>&1 &
    local pid=$!
    echo "$pid $node" >> "$state/pids"
    echo "$node $grpc $native $dashboard" >> "$state/nodes"
    if [ "$cpu" -gt 0 ]; then cap_cpu "$node" "$pid" "$cpu"; fi
    wait_for "node $node" "grep -q 'dtsd ready' $state/$node.log" "$pid" "$state/$node.log"
  done
  echo "== up: $count nodes (state in $state; '$0 down' stops them)"
  "$dtsctl" cluster status --cluster "$etcd_url" | head -n $((count + 1))
}

status() {
  [ -f "$state/etcd.url" ] || { echo "cluster.sh: no cluster is up ($state)" >&2; exit 1; }
  cat "$state/nodes"
  "$dtsctl" cluster status --cluster "$(cat "$state/etcd.url")"
}

down() {
  if [ -f "$state/pids" ]; then
    # Nodes first (SIGTERM: each hands its partitions over and exits), etcd last.
    tac "$state/pids" | while read -r pid what; do
      if kill -0 "$pid" 2> /dev/null; then
        kill -TERM "$pid" 2> /dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2> /dev/null || true
        echo "== stopped $what ($pid)"
      fi
    done
  fi
  if [ -f "$state/cgroups" ]; then
    while read -r dir; do rmdir "$dir" 2> /dev/null || true; done < "$state/cgroups"
  fi
  if [ "$(cat "$state/mode" 2> /dev/null)" = namespaces ]; then
    while read -r node _; do ip netns del "dtsd-$node" 2> /dev/null || true; done < "$state/nodes"
    ip link del "$bridge" 2> /dev/null || true
  fi
  if [ "${1:-}" = --purge ]; then
    rm -rf "$state"
  else
    rm -f "$state/pids" "$state/nodes" "$state/cgroups" "$state/mode" "$state/etcd.url"
    echo "== the data stays in $state ('$0 down --purge' removes it)"
  fi
}

case "${1:-}" in
  up) [ $# -ge 2 ] || usage; shift; up "$@" ;;
  status) status ;;
  down) shift; down "$@" ;;
  *) usage ;;
esac
