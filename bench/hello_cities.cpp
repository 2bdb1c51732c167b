// bench/hello_cities: DTS's own benchmark against dtsd.
//
// Starts dtsd (fsync durability) and a hello_cities worker as separate processes
// (the C++ SDK worker over the native API, or with --worker-kind js the official
// Durable Task JS SDK over gRPC: tests/compat/worker.mjs), starts N orchestrations at once (each calls 5 activities in
// sequence), waits for all, checks every output, and prints one JSON line:
// throughput, latency percentiles (from the server's created/completed times),
// dtsd CPU seconds and peak RSS. Then an idle-latency run: one orchestration at a
// time.
//
//   build/release/bench/hello_cities [--count 5000] [--partitions 12] [--durability fsync]
//       [--latency-count 200] [--worker-kind cpp|js] [--dtsd PATH] [--worker PATH] [--data-dir DIR]
//       [--worker-activities 256] [--worker-orchestrators 1024] [--worker-threads 4]
//       [--poll-dashboard] [--secure]
//
// --secure: dtsd runs with --auth and TLS (a test CA made with openssl): the
// client and the worker present a contributor token, and the JS worker's gRPC
// channel is TLS (the native API has no TLS yet). Compare with the same command
// without it for the cost of both.
//
// dtsd's and the worker's CPU per orchestration are printed apart
// (dtsd_cpu_ms_per_orchestration, worker_cpu_ms_per_orchestration): the figure to
// compare between runs, robust to a noisy machine. Interrupted (SIGINT, SIGTERM)
// or past --timeout-s, the bench stops dtsd and the worker it started.
//
// --poll-dashboard: a client polls the dashboard's list (first page, newest
// first) and /metrics every second meanwhile, as a dashboard left open does.
//
// The C++ worker takes 256 activities and 1,024 orchestrator items at once and runs
// them on 4 threads: with fewer slots the run measures the worker's round trips,
// not the server (16 slots: about half the throughput).

#include <CLI/CLI.hpp>

#include "support.hpp"

using namespace dtsd;
using namespace dtsd::bench;

int main(int argc, char** argv) {
  CLI::App app{"hello cities benchmark"};
  int count = 5000;
  int latency_count = 200;
  hello_cities_setup setup("bench-data/hello_cities");
  setup.add_options(app);
  app.add_option("--count", count)->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--latency-count", latency_count)->check(CLI::Range(0, 100000))->capture_default_str();
  bool poll_dashboard = false;
  app.add_flag("--poll-dashboard", poll_dashboard, "Poll the dashboard's list and metrics every second meanwhile");
  int timeout_s = 1800;
  app.add_option("--timeout-s", timeout_s, "Stop everything and fail after this long (0: never)")
      ->check(CLI::Range(0, 86400))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  stop_children_on_exit_signals(timeout_s);

  auto processes = setup.start_server();
  auto client = connect(processes.address, "hello_cities", setup.token);
  setup.start_worker(processes);
  const auto server = processes.server;
  const auto worker = processes.worker;

  std::optional<dashboard_poller> poller;
  if (poll_dashboard) poller.emplace(processes.dashboard_address);
  std::fprintf(stderr, "hello_cities bench: starting %d orchestrations\n", count);
  const auto started_at = std::chrono::steady_clock::now();
  const std::int64_t started_at_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto started = client->start_many("HelloCities", std::vector<json>(static_cast<std::size_t>(count), json()));
  if (!started) {
    std::fprintf(stderr, "hello_cities bench: start failed: %s\n", started.error().message.c_str());
    return 1;
  }
  const auto& ids = *started;
  std::vector<double> latencies_ms;
  int correct = 0;
  std::int64_t first_created = INT64_MAX, last_completed = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto done = client->wait_for_completion(ids[i], std::chrono::minutes(30));
    if (!done) {
      std::fprintf(stderr, "hello_cities bench: %s: %s\n", ids[i].c_str(), done.error().message.c_str());
      continue;
    }
    if (done->status == core::runtime_status::completed && sdk::output_of(*done) == expected_output()) ++correct;
    latencies_ms.push_back(static_cast<double>(done->completed_at_ns - done->created_at_ns) / 1e6);
    first_created = std::min(first_created, done->created_at_ns);
    last_completed = std::max(last_completed, done->completed_at_ns);
    if ((i + 1) % 1000 == 0) std::fprintf(stderr, "hello_cities bench: %zu done\n", i + 1);
  }
  // From the first start request to the last completion (the server's clock is this
  // machine's): the client's loop of waits, which ends later, is not the server's time.
  const double wall_s = static_cast<double>(last_completed - started_at_ns) / 1e9;
  const double client_wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at).count();
  const double server_s = static_cast<double>(last_completed - first_created) / 1e9;
  const double cpu_s = cpu_seconds(server);
  const double worker_cpu_s = cpu_seconds(worker);
  const double rss_mib = peak_rss_mib(server);
  const long long switches = context_switches(server);
  const long long worker_switches = context_switches(worker);
  std::string metrics;
  http_call(processes.dashboard_address, "GET", "/metrics", "", &metrics);
  const double commits = metric_sum(metrics, "dtsd_partition_commits_total");

  std::vector<double> idle_ms;
  for (int i = 0; i < latency_count; ++i) {
    auto id = client->start("HelloCities", json());
    if (!id) break;
    auto done = client->wait_for_completion(*id, std::chrono::minutes(1));
    if (!done) break;
    idle_ms.push_back(static_cast<double>(done->completed_at_ns - done->created_at_ns) / 1e6);
  }
  const int polls = poller ? poller->polls() : 0;
  const int polls_failed = poller ? poller->failed() : 0;
  poller.reset();
  client.reset();
  setup.stop_all(processes);

  std::printf(
      "{\"bench\":\"hello_cities\",\"worker\":\"%s\",\"secure\":%s,\"durability\":\"%s\",\"n\":%d,\"correct\":%d,\"partitions\":%u,\"wall_s\":%.3f,\"client_wall_s\":%.3f,"
      "\"server_span_s\":%.3f,\"orchestrations_per_s\":%.0f,\"activities_per_s\":%.0f,\"p50_ms\":%.1f,"
      "\"p95_ms\":%.1f,\"p99_ms\":%.1f,\"dtsd_cpu_s\":%.2f,\"worker_cpu_s\":%.2f,\"dtsd_peak_rss_mib\":%.0f,\"idle_n\":%zu,"
      "\"idle_p50_ms\":%.2f,\"idle_p99_ms\":%.2f,\"dashboard_polls\":%d,\"dashboard_polls_failed\":%d,"
      "\"dtsd_cpu_ms_per_orchestration\":%.3f,\"worker_cpu_ms_per_orchestration\":%.3f,"
      "\"commits_per_orchestration\":%.2f,\"dtsd_context_switches_per_orchestration\":%.1f,"
      "\"worker_context_switches_per_orchestration\":%.1f}\n",
      setup.worker_kind.c_str(), setup.secure ? "true" : "false", setup.durability.c_str(), count, correct, setup.partitions, wall_s, client_wall_s, server_s, count / wall_s, 5.0 * count / wall_s, percentile(latencies_ms, 0.5),
      percentile(latencies_ms, 0.95), percentile(latencies_ms, 0.99), cpu_s, worker_cpu_s, rss_mib, idle_ms.size(),
      percentile(idle_ms, 0.5), percentile(idle_ms, 0.99), polls, polls_failed, 1000 * cpu_s / count,
      1000 * worker_cpu_s / count, commits / count, static_cast<double>(switches) / count,
      static_cast<double>(worker_switches) / count);
  return correct == count ? 0 : 1;
}
