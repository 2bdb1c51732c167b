// bench/retention: what purging a million expired orchestrations costs the work
// that runs meanwhile.
//
// Writes --ended orchestrations that completed 60 days ago straight into the stores
// of a data directory (bench/preload.hpp), then runs hello cities (--count, the C++
// SDK worker over the native API, fsync) twice on it:
//   1. "kept": dtsd with --retention-default forever: nothing is purged;
//   2. "purging": dtsd with --retention-default 30d (DTS's default): every
//      preloaded orchestration is due, and the partitions purge them while hello
//      cities runs.
// Then it waits (at most --purge-timeout-s) until the purge is done. Prints one JSON
// line per run (throughput, dtsd CPU per orchestration, purges during the run) and
// a summary (the throughput lost, the purge rate, the data dir before, after, and
// after `dtsctl compact`).
//
//   build/release/bench/retention [--ended 1000000] [--count 20000] [--partitions 12]
//       [--retention-purges-max 64] [--purge-timeout-s 1800] [--data-dir DIR]

#include <CLI/CLI.hpp>


#include "preload.hpp"
#include "support.hpp"

using namespace dtsd;
using namespace dtsd::bench;

namespace {

constexpr std::int64_t day_ns = 86'400'000'000'000;

std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Purges so far, summed over statuses, from dtsd's /metrics (-1: no answer).
long long purged_so_far(const std::string& dashboard) {
  std::string body;
  if (http_call(dashboard, "GET", "/metrics", {}, &body) != 200) return -1;
  return static_cast<long long>(metric_sum(body, "dtsd_retention_purged_total"));
}

struct run_result {
  double throughput = 0;
  double dtsd_cpu_ms = 0;
  long long purged_during = 0;
  double wall_s = 0;
};

run_result run_hello(hello_cities_setup& setup, int count, const char* label, bool leave_running,
                     hello_cities_setup::running& processes) {
  processes = setup.start_server(true);
  auto client = connect(processes.address, "retention");
  setup.start_worker(processes);
  const auto purged_before = purged_so_far(processes.dashboard_address);
  const auto cpu_before = cpu_seconds(processes.server);
  std::fprintf(stderr, "retention bench (%s): %d hello cities\n", label, count);
  const auto started_ns = wall_ns();
  auto started = client->start_many("HelloCities", std::vector<json>(static_cast<std::size_t>(count), json()));
  if (!started) {
    std::fprintf(stderr, "retention bench: start failed: %s\n", started.error().message.c_str());
    std::exit(1);
  }
  std::int64_t last_completed = 0;
  int correct = 0;
  for (const auto& id : *started) {
    auto done = client->wait_for_completion(id, std::chrono::minutes(30));
    if (!done) continue;
    correct += done->status == core::runtime_status::completed && sdk::output_of(*done) == expected_output();
    last_completed = std::max(last_completed, done->completed_at_ns);
  }
  run_result result;
  result.wall_s = static_cast<double>(last_completed - started_ns) / 1e9;
  result.throughput = count / result.wall_s;
  result.dtsd_cpu_ms = (cpu_seconds(processes.server) - cpu_before) * 1000.0 / count;
  result.purged_during = purged_so_far(processes.dashboard_address) - purged_before;
  std::printf("%s\n", json{{"bench", "retention"},
                           {"run", label},
                           {"orchestrations", count},
                           {"correct", correct},
                           {"wall_s", std::round(result.wall_s * 100) / 100},
                           {"orchestrations_per_s", std::round(result.throughput)},
                           {"dtsd_cpu_ms_per_orchestration", std::round(result.dtsd_cpu_ms * 100) / 100},
                           {"purged_during_run", result.purged_during}}
                          .dump()
                          .c_str());
  std::fflush(stdout);
  client.reset();
  if (!leave_running) setup.stop_all(processes, true);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"retention: hello cities while a million expired orchestrations are purged"};
  std::size_t ended = 1'000'000;
  int count = 20000;
  int purge_timeout_s = 1800;
  std::string purges_max = "64";
  hello_cities_setup setup("bench-data/retention");
  setup.add_options(app);
  app.add_option("--ended", ended, "Completed orchestrations preloaded, 60 days old")
      ->check(CLI::Range(std::size_t{1}, std::size_t{10'000'000}))
      ->capture_default_str();
  app.add_option("--count", count, "Hello cities per run")->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--retention-purges-max", purges_max, "dtsd's flag, for the purging run")->capture_default_str();
  app.add_option("--purge-timeout-s", purge_timeout_s)->check(CLI::Range(1, 86400))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  stop_children_on_exit_signals(purge_timeout_s + 3600);

  const auto ended_at = wall_ns() - 60 * day_ns;
  try {
    preload_stores(setup.data_dir, "default", setup.partitions, ended, [ended_at](std::size_t i) {
      core::instance_record r;
      r.instance_id = fmt::format("ended-{:07}", i);
      r.execution_id = fmt::format("{:032x}", i);
      r.name = "HelloCities";
      r.status = core::runtime_status::completed;
      r.created_at_ns = ended_at + static_cast<std::int64_t>(i) * 1000;
      r.last_updated_at_ns = r.completed_at_ns = r.created_at_ns + 50'000'000;
      r.output = R"(["Hello, Tokyo!","Hello, Seattle!","Hello, London!","Hello, Paris!","Hello, Cairo!"])";
      return r;
    }, "retention bench");
  } catch (const std::exception& failed) {
    std::fprintf(stderr, "retention bench: could not write the stores: %s\n", failed.what());
    return 1;
  }
  const double disk_before = disk_usage_mib(setup.data_dir);

  hello_cities_setup::running processes;
  const auto given = setup.dtsd_extra;  // --dtsd-arg, for both runs.
  setup.dtsd_extra = given;
  setup.dtsd_extra.insert(setup.dtsd_extra.end(), {"--retention-default", "forever"});
  const auto kept = run_hello(setup, count, "kept", false, processes);
  setup.dtsd_extra = given;
  setup.dtsd_extra.insert(setup.dtsd_extra.end(), {"--retention-default", "30d", "--retention-purges-max", purges_max});
  const auto purge_started_ns = wall_ns();
  const auto purging = run_hello(setup, count, "purging", true, processes);
  // The purge goes on after the run: wait for the rest.
  long long purged = purged_so_far(processes.dashboard_address);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(purge_timeout_s);
  while (purged < static_cast<long long>(ended) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    purged = purged_so_far(processes.dashboard_address);
    std::fprintf(stderr, "retention bench: %lld of %zu purged\n", purged, ended);
  }
  const double purge_s = static_cast<double>(wall_ns() - purge_started_ns) / 1e9;
  const double dtsd_cpu_s = cpu_seconds(processes.server);
  setup.stop_all(processes, true);
  const double disk_after = disk_usage_mib(setup.data_dir);
  // The freed pages go back to the file system only when the stores are compacted.
  const auto compact = "'" + setup.dtsctl_path + "' compact --data-dir '" + setup.data_dir + "' > /dev/null";
  const bool compacted = std::system(compact.c_str()) == 0;
  const double disk_compacted = disk_usage_mib(setup.data_dir);
  std::printf("%s\n", json{{"bench", "retention"},
                           {"ended_preloaded", ended},
                           {"purged", purged},
                           {"purge_s", std::round(purge_s * 10) / 10},
                           {"purged_per_s", std::round(static_cast<double>(purged) / purge_s)},
                           {"dtsd_cpu_s_purging_run", std::round(dtsd_cpu_s * 10) / 10},
                           {"throughput_kept", std::round(kept.throughput)},
                           {"throughput_purging", std::round(purging.throughput)},
                           {"throughput_loss_percent",
                            std::round((1.0 - purging.throughput / kept.throughput) * 1000) / 10},
                           {"data_dir_mib_before", std::round(disk_before)},
                           {"data_dir_mib_after", std::round(disk_after)},
                           {"data_dir_mib_compacted", compacted ? json(std::round(disk_compacted)) : json(nullptr)}}
                          .dump()
                          .c_str());
  std::filesystem::remove_all(setup.data_dir);
  return purged >= static_cast<long long>(ended) ? 0 : 3;
}
