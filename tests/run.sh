#!/usr/bin/env bash
# The one test command of dtsd (README, .ci/run): installs missing dependencies,
# builds twice (warnings as errors; then ASan+UBSan) and runs every test suite in
# both builds. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/install-deps.sh

passed=0
failed=0
failed_names=()  # printed again at the end, so a failure is named in the last lines

# Configures (once) and builds one build directory, then runs its suites.
run_build() {
  local dir=$1
  shift
  echo "== build $dir ($*)"
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@"
  fi
  local started=$SECONDS
  ninja -C "$dir"
  echo "== $dir built in $((SECONDS - started)) s; running tests"
  local log
  log=$(mktemp)
  local status=0
  meson test -C "$dir" --print-errorlogs --num-processes 1 2>&1 | tee "$log" || status=$?
  local ok fail
  ok=$(awk '/^Ok: +[0-9]+/ {s += $2} END {print s + 0}' "$log")
  fail=$(awk '/^(Fail|Timeout): +[0-9]+/ {s += $2} END {print s + 0}' "$log")
  while IFS= read -r name; do failed_names+=("$dir: $name"); done \
    < <(awk '/^ *[0-9]+\/[0-9]+ / && / (FAIL|TIMEOUT) / && !seen[$2]++ {print $2}' "$log")
  rm -f "$log"
  passed=$((passed + ${ok:-0}))
  failed=$((failed + ${fail:-0}))
  if [ "$status" -ne 0 ] && [ "${fail:-0}" -eq 0 ]; then failed=$((failed + 1)); failed_names+=("$dir: meson test exited $status"); fi
}

# The compat suite: the official Durable Task JS SDK (pinned in
# tests/compat/package-lock.json) as client and worker against a real dtsd.
run_compat() {
  local dtsd=$1
  echo "== compat suite against $dtsd"
  if [ ! -d tests/compat/node_modules ] || [ tests/compat/package-lock.json -nt tests/compat/node_modules ]; then
    (cd tests/compat && npm ci --no-audit --no-fund --loglevel=error) || { failed=$((failed + 1)); return; }
    touch tests/compat/node_modules
  fi
  local log status=0
  log=$(mktemp)
  DTSD_BIN="$dtsd" DTSCTL_BIN="${dtsd%/server/dtsd}/cli/dtsctl" timeout 900 node --test --test-concurrency=1 --test-reporter=spec tests/compat/ 2>&1 | tee "$log" || status=$?
  local ok fail
  ok=$(awk '$2 == "pass" && NF == 3 {print $3}' "$log")
  fail=$(awk '$2 == "fail" && NF == 3 {print $3}' "$log")
  while IFS= read -r name; do failed_names+=("compat ($dtsd): $name"); done \
    < <(grep -E '^ *✖ ' "$log" | grep -v 'failing tests:' | sed -E 's/^ *✖ //; s/ \([0-9.]+m?s\)$//' | sort -u)
  rm -f "$log"
  passed=$((passed + ${ok:-0}))
  failed=$((failed + ${fail:-0}))
  if [ "$status" -ne 0 ] && [ "${fail:-0}" -eq 0 ]; then failed=$((failed + 1)); failed_names+=("compat ($dtsd): node exited $status"); fi
}

run_build build/release --buildtype=debugoptimized
run_compat build/release/src/server/dtsd
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
run_build build/sanitize --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
run_compat build/sanitize/src/server/dtsd

# The README's first command, as a user runs it: it must print the hello-cities
# result. It reuses build/release and stops the dtsd it started, by PID.
echo "== quickstart"
quickstart_log=$(mktemp)
rm -rf ./dtsd-data
if ./deploy/quickstart.sh > "$quickstart_log" 2>&1 && grep -q '"Hello, Cairo!"' "$quickstart_log"; then
  passed=$((passed + 1))
  echo "quickstart OK"
else
  failed=$((failed + 1))
  failed_names+=("quickstart")
  echo "quickstart FAILED:"
  cat "$quickstart_log"
fi
if [ -f ./dtsd-data/dtsd.pid ]; then kill "$(cat ./dtsd-data/dtsd.pid)" 2> /dev/null || true; fi
sleep 1
rm -rf ./dtsd-data "$quickstart_log"

echo "tests: $passed passed, $failed failed"
for name in "${failed_names[@]}"; do echo "  failed: $name"; done
[ "$failed" -eq 0 ]
