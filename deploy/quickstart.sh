#!/usr/bin/env bash
# Quickstart: installs what is missing, builds, starts dtsd with the default task
# hub and durable storage (./dtsd-data), runs the hello-cities sample (a C++ worker
# and client), prints the result and how to connect, and leaves dtsd running.
#   ./deploy/quickstart.sh               # dtsd keeps running in the background
#   ./deploy/quickstart.sh --foreground  # dtsd runs until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."

foreground=0
case "${1:-}" in
  --foreground) foreground=1 ;;
  "") ;;
  *) echo "usage: $0 [--foreground]" >&2; exit 2 ;;
esac

data_dir=./dtsd-data
address=127.0.0.1:8081
grpc_address=${DTSD_GRPC_LISTEN:-localhost:8080}
dashboard_address=${DTSD_DASHBOARD_LISTEN:-localhost:8082}
build=build/release
pid_file="$data_dir/dtsd.pid"
log_file="$data_dir/dtsd.log"

echo "== installing dependencies (if missing)"
./deploy/install-deps.sh
echo "== building ($build)"
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=debugoptimized -Dwerror=true > /dev/null
fi
ninja -C "$build" src/server/dtsd src/cli/dtsctl samples/hello_cities/hello_cities

mkdir -p "$data_dir"
if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2> /dev/null; then
  echo "== dtsd is already running (pid $(cat "$pid_file"))"
else
  echo "== starting dtsd (data in $data_dir, log in $log_file)"
  nohup "$build/src/server/dtsd" --data-dir "$data_dir" --listen "$address" --grpc-listen "$grpc_address" \
    --dashboard-listen "$dashboard_address" > "$log_file" 2>&1 &
  echo $! > "$pid_file"
  for _ in $(seq 1 150); do
    grep -q "dtsd ready" "$log_file" 2> /dev/null && break
    if ! kill -0 "$(cat "$pid_file")" 2> /dev/null; then
      echo "dtsd did not start:" >&2
      cat "$log_file" >&2
      exit 1
    fi
    sleep 0.2
  done
  grep -q "dtsd ready" "$log_file" || { echo "dtsd did not become ready in 30 s; see $log_file" >&2; exit 1; }
fi

echo "== running hello cities"
"$build/samples/hello_cities/hello_cities" worker --address "$address" > "$data_dir/worker.log" 2>&1 &
worker_pid=$!
trap 'kill $worker_pid 2> /dev/null || true' EXIT
"$build/samples/hello_cities/hello_cities" client --address "$address"
kill "$worker_pid" 2> /dev/null || true
wait "$worker_pid" 2> /dev/null || true
trap - EXIT

cat <<INFO

dtsd is running (pid $(cat "$pid_file")), task hub 'default'.
  gRPC API:         $grpc_address, for the official Durable Task SDKs; connection string
                    Endpoint=http://$grpc_address;Authentication=None;TaskHub=default
  native API:       $address (Cap'n Proto; the C++ SDK and dtsctl)
  dashboard:        http://$dashboard_address/  (orchestrations, timelines, histories, actions)
  REST API:         http://$dashboard_address/v1/taskhubs/ (DTS's REST API; header x-taskhub)
  metrics:          http://$dashboard_address/metrics (Prometheus)
  list instances:   $build/src/cli/dtsctl instance list
  start one:        $build/src/cli/dtsctl instance start HelloCities
                    (with a worker running: $build/samples/hello_cities/hello_cities worker)
  C++ SDK:          dtsd::sdk::client::connect("$address") / dtsd::sdk::worker (src/sdk)
  stop dtsd:        kill $(cat "$pid_file")     (SIGTERM drains and exits cleanly)
INFO

if [ "$foreground" -eq 1 ]; then
  dtsd_pid=$(cat "$pid_file")
  trap 'kill -TERM $dtsd_pid 2> /dev/null; wait $dtsd_pid 2> /dev/null; exit 0' INT TERM
  echo "(foreground: Ctrl-C stops dtsd)"
  while kill -0 "$dtsd_pid" 2> /dev/null; do sleep 1; done
fi
