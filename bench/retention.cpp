// bench/retention: what purging a million expired orchestrations costs the work
// that runs meanwhile.
//
// Writes --ended orchestrations that completed 60 days ago straight into the stores
// of a data directory (bench/preload.hpp), starts one dtsd on it (fsync) with a C++
// SDK worker over the native API, and runs hello cities (--count at once) in
// --pairs pairs of rounds, each pair one round of each kind:
//   - "kept": the hub's retention is `forever`: nothing is purged;
//   - "purging": the hub's retention is 30 days (DTS's default): every preloaded
//     orchestration is due, and the partitions purge them while the round runs.
// The policy is set through the native API just before a round and set back to
// `forever` just after a purging one. The order alternates (kept first, then
// purging first, ...) so that a drift of the machine or of the stores' size does not
// fall on one kind; the rounds of a pair run back to back in one process, so the
// noise between them is far smaller than between two dtsd processes. Each round
// prints a JSON line; the summary has the loss of each pair and their median.
// Then the policy stays at 30 days and the bench waits (at most --purge-timeout-s)
// until the rest is purged, and prints the purge rate and the data dir before,
// after, and after `dtsctl compact`.
//
//   build/release/bench/retention [--ended 1000000] [--count 10000] [--pairs 4]
//       [--partitions 12] [--retention-purges-max 64] [--purge-timeout-s 1800] [--data-dir DIR]

#include <CLI/CLI.hpp>

#include <mutex>

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

struct round_result {
  double throughput = 0;
  double dtsd_cpu_ms = 0;
  long long purged_during = 0;
};

/// The hub's policy: every ended orchestration kept forever, or for 30 days.
void set_policy(sdk::client& client, bool purging) {
  core::retention_policy policy;
  policy.fallback = purging ? core::retention_rule{false, 30 * 86'400} : core::retention_rule{true, 0};
  auto set = client.set_retention(policy);
  if (!set) {
    std::fprintf(stderr, "retention bench: set_retention failed: %s\n", set.error().message.c_str());
    std::exit(1);
  }
}

/// One round: `count` hello cities at once on the running dtsd, under the policy of
/// `purging`.
round_result run_round(sdk::client& client, const hello_cities_setup::running& processes, int count, int pair,
                       bool purging) {
  const char* label = purging ? "purging" : "kept";
  set_policy(client, purging);
  const auto purged_before = purged_so_far(processes.dashboard_address);
  const auto cpu_before = cpu_seconds(processes.server);
  std::fprintf(stderr, "retention bench: pair %d, %s: %d hello cities\n", pair, label, count);
  // The purges are sampled every 100 ms, so that those of the round are told from
  // those made while the client collects its answers after the last completion.
  std::mutex samples_mutex;
  std::vector<std::pair<std::int64_t, long long>> samples;  // (wall ns, purged so far)
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    while (sampling) {
      const auto at = wall_ns();
      const auto purged = purged_so_far(processes.dashboard_address);
      {
        std::lock_guard lock(samples_mutex);
        samples.emplace_back(at, purged);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  const auto started_ns = wall_ns();
  auto started = client.start_many("HelloCities", std::vector<json>(static_cast<std::size_t>(count), json()));
  if (!started) {
    std::fprintf(stderr, "retention bench: start failed: %s\n", started.error().message.c_str());
    sampling = false;
    sampler.join();
    std::exit(1);
  }
  std::int64_t last_completed = 0;
  int correct = 0;
  for (const auto& id : *started) {
    auto done = client.wait_for_completion(id, std::chrono::minutes(30));
    if (!done) continue;
    correct += done->status == core::runtime_status::completed && sdk::output_of(*done) == expected_output();
    last_completed = std::max(last_completed, done->completed_at_ns);
  }
  round_result result;
  result.dtsd_cpu_ms = (cpu_seconds(processes.server) - cpu_before) * 1000.0 / count;
  sampling = false;
  sampler.join();
  if (purging) set_policy(client, false);  // No purging between the rounds.
  // The last sample taken before the last completion.
  for (const auto& [at, purged] : samples) {
    if (at <= last_completed && purged >= 0 && purged_before >= 0) result.purged_during = purged - purged_before;
  }
  if (correct != count) {
    std::fprintf(stderr, "retention bench: only %d of %d hello cities completed correctly\n", correct, count);
    std::exit(1);
  }
  const double wall_s = static_cast<double>(last_completed - started_ns) / 1e9;
  result.throughput = count / wall_s;
  std::printf("%s\n", json{{"bench", "retention"},
                           {"pair", pair},
                           {"round", label},
                           {"orchestrations", count},
                           {"correct", correct},
                           {"wall_s", std::round(wall_s * 100) / 100},
                           {"orchestrations_per_s", std::round(result.throughput)},
                           {"dtsd_cpu_ms_per_orchestration", std::round(result.dtsd_cpu_ms * 100) / 100},
                           {"purged_until_last_completion", result.purged_during}}
                          .dump()
                          .c_str());
  std::fflush(stdout);
  return result;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const auto n = values.size();
  return n == 0 ? 0 : n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double round1(double value) { return std::round(value * 10) / 10; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"retention: hello cities while a million expired orchestrations are purged"};
  std::size_t ended = 1'000'000;
  int count = 10000;
  int pairs = 4;
  int purge_timeout_s = 1800;
  std::string purges_max = "64";
  hello_cities_setup setup("bench-data/retention");
  setup.add_options(app);
  app.add_option("--ended", ended, "Completed orchestrations preloaded, 60 days old")
      ->check(CLI::Range(std::size_t{1}, std::size_t{10'000'000}))
      ->capture_default_str();
  app.add_option("--count", count, "Hello cities per round")->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--pairs", pairs, "Pairs of rounds (kept, purging)")->check(CLI::Range(1, 100))->capture_default_str();
  app.add_option("--retention-purges-max", purges_max, "dtsd's flag")->capture_default_str();
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

  // dtsd's default keeps everything; the rounds set the hub's own policy.
  setup.dtsd_extra.insert(setup.dtsd_extra.end(),
                          {"--retention-default", "forever", "--retention-purges-max", purges_max});
  auto processes = setup.start_server(true);
  auto client = connect(processes.address, "retention");
  setup.start_worker(processes);
  set_policy(*client, false);

  std::vector<double> kept, purging, losses, kept_cpu, purging_cpu;
  long long purged_in_rounds = 0;
  for (int pair = 1; pair <= pairs; ++pair) {
    round_result of[2];  // [0] kept, [1] purging
    const bool purging_first = pair % 2 == 0;
    for (const bool purge : {purging_first, !purging_first}) of[purge] = run_round(*client, processes, count, pair, purge);
    kept.push_back(of[0].throughput);
    purging.push_back(of[1].throughput);
    kept_cpu.push_back(of[0].dtsd_cpu_ms);
    purging_cpu.push_back(of[1].dtsd_cpu_ms);
    losses.push_back((1.0 - of[1].throughput / of[0].throughput) * 100);
    purged_in_rounds += of[1].purged_during;
  }

  // The rest of the backlog, with nothing else to do.
  set_policy(*client, true);
  const auto purge_started_ns = wall_ns();
  const long long purged_start = purged_so_far(processes.dashboard_address);
  long long purged = purged_start;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(purge_timeout_s);
  while (purged < static_cast<long long>(ended) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    purged = purged_so_far(processes.dashboard_address);
    std::fprintf(stderr, "retention bench: %lld of %zu purged\n", purged, ended);
  }
  const double purge_s = static_cast<double>(wall_ns() - purge_started_ns) / 1e9;
  client.reset();
  setup.stop_all(processes, true);
  const double disk_after = disk_usage_mib(setup.data_dir);
  // The freed pages go back to the file system only when the stores are compacted.
  const auto compact = "'" + setup.dtsctl_path + "' compact --data-dir '" + setup.data_dir + "' > /dev/null";
  const bool compacted = std::system(compact.c_str()) == 0;
  const double disk_compacted = disk_usage_mib(setup.data_dir);
  auto rounded = [](std::vector<double> values, double scale) {
    for (auto& v : values) v = std::round(v * scale) / scale;
    return values;
  };
  std::printf("%s\n",
              json{{"bench", "retention"},
                   {"ended_preloaded", ended},
                   {"orchestrations_per_round", count},
                   {"throughput_kept", rounded(kept, 1)},
                   {"throughput_purging", rounded(purging, 1)},
                   {"throughput_loss_percent_per_pair", rounded(losses, 10)},
                   {"throughput_loss_percent_median", round1(median(losses))},
                   {"dtsd_cpu_ms_per_orchestration_kept_median", std::round(median(kept_cpu) * 100) / 100},
                   {"dtsd_cpu_ms_per_orchestration_purging_median", std::round(median(purging_cpu) * 100) / 100},
                   {"purged_in_purging_rounds_until_last_completion", purged_in_rounds},
                   {"purged", purged},
                   {"rest_purged_s", round1(purge_s)},
                   {"rest_purged_per_s", std::round(static_cast<double>(purged - purged_start) / purge_s)},
                   {"data_dir_mib_before", std::round(disk_before)},
                   {"data_dir_mib_after", std::round(disk_after)},
                   {"data_dir_mib_compacted", compacted ? json(std::round(disk_compacted)) : json(nullptr)}}
                  .dump()
                  .c_str());
  std::filesystem::remove_all(setup.data_dir);
  return purged >= static_cast<long long>(ended) ? 0 : 3;
}
