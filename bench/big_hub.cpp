// bench/big_hub: the dashboard's list on a hub of a million orchestrations.
//
// Writes --instances orchestrations (default 1,000,000; names, statuses, tags,
// sub-orchestrations and creation times spread as in a busy hub) straight into the
// partition stores of a data directory, starts dtsd on it, and times every list
// the dashboard's UI can ask for (each filter, each sort, a deep page) and
// /metrics, each --repeat times, over HTTP as the browser does. Prints one JSON
// line per query and a summary line: how long dtsd took to be ready on the hub,
// its memory, and whether every first page came back within 100 ms.
//
//   build/release/bench/big_hub [--instances N] [--partitions P] [--data-dir DIR]
//                               [--reuse] [--repeat R]
//
// --reuse keeps a data directory filled by an earlier run with the same counts.

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "preload.hpp"
#include "support.hpp"
#include "core/ids.hpp"
#include "store/partition_store.hpp"

using namespace dtsd;
namespace fs = std::filesystem;
using bench_clock = std::chrono::steady_clock;

namespace {

constexpr const char* hub = "default";
constexpr std::int64_t base_ns = 1'767'225'600'000'000'000;  // 2026-01-01T00:00:00Z
constexpr std::int64_t spacing_ns = 1'000'000;               // One created every millisecond.
const char* const names[] = {"HelloCities", "Checkout", "Billing", "NightlyReport", "SyncInventory"};

double seconds_since(bench_clock::time_point start) {
  return std::chrono::duration<double>(bench_clock::now() - start).count();
}

core::instance_record record_of(std::size_t i) {
  core::instance_record r;
  r.instance_id = fmt::format("order-{:07}", i);
  r.execution_id = fmt::format("exec-{:07}", i);
  r.name = names[i % 5];
  if (i % 3 == 0) r.version = "1.2";
  r.input = R"({"city":"Tokyo"})";
  r.created_at_ns = base_ns + static_cast<std::int64_t>(i) * spacing_ns;
  r.last_updated_at_ns = r.created_at_ns + 250'000'000 + static_cast<std::int64_t>(i % 97) * 1'000'000;
  // 80 % completed, 8 % running, 5 % failed, 4 % pending, 2 % terminated, 1 % suspended.
  const auto bucket = i % 100;
  r.status = bucket < 80   ? core::runtime_status::completed
             : bucket < 88 ? core::runtime_status::running
             : bucket < 93 ? core::runtime_status::failed
             : bucket < 97 ? core::runtime_status::pending
             : bucket < 99 ? core::runtime_status::terminated
                           : core::runtime_status::suspended;
  if (core::is_terminal(r.status)) {
    r.completed_at_ns = r.last_updated_at_ns;
    r.output = R"("Hello, Tokyo!")";
  }
  r.tags = {{"tenant", fmt::format("t{}", i % 100)}};
  if (i % 20 == 7) {  // 5 %: sub-orchestrations of the one before.
    core::parent_instance parent;
    parent.name = names[(i - 1) % 5];
    parent.instance.instance_id = fmt::format("order-{:07}", i - 1);
    parent.instance.execution_id = fmt::format("exec-{:07}", i - 1);
    r.parent = parent;
  }
  return r;
}

struct query_case {
  const char* name;
  std::string body;
  const char* path = "/api/v1/taskhubs/orchestrations/query";
};

std::vector<query_case> cases(std::size_t instances) {
  const auto middle = base_ns + static_cast<std::int64_t>(instances / 2) * spacing_ns;
  auto at = [](std::int64_t ns) {
    const auto seconds = ns / 1'000'000'000;
    std::time_t t = seconds;
    std::tm utc{};
    gmtime_r(&t, &utc);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return std::string(text);
  };
  const std::string page = R"("pagination":{"startIndex":0,"count":25})";
  const std::string newest = R"("sort":[{"column":"CREATED_AT","direction":"DESCENDING_SORT"}])";
  auto list = [&](std::string filter, std::string sort = {}) {
    return fmt::format(R"({{"filter":{{{}}},{},{}}})", filter, page, sort.empty() ? newest : sort);
  };
  const auto status = [](const char* s) { return fmt::format(R"("orchestrationStatus":{{"status":["ORCHESTRATION_STATUS_{}"]}})", s); };
  return {
      {"first page, newest first", list("")},
      {"status Failed", list(status("FAILED"))},
      {"statuses Running and Pending",
       list(R"("orchestrationStatus":{"status":["ORCHESTRATION_STATUS_RUNNING","ORCHESTRATION_STATUS_PENDING"]})")},
      {"instance id contains", list(R"("orchestrationId":{"value":"0424"})")},
      {"instance id matching one", list(R"("orchestrationId":{"value":"order-0123456"})")},
      {"name contains", list(R"("name":{"value":"checkout"})")},
      {"tag contains", list(R"("tags":{"value":"tenant=t42"})")},
      {"created in one hour", list(fmt::format(R"("createdAt":{{"start":"{}","end":"{}"}})", at(middle), at(middle + 3'600'000'000'000)))},
      {"sub-orchestrations hidden", list(R"("excludeSubOrchestrations":true)")},
      {"name, status and tag", list(fmt::format(R"("name":{{"value":"billing"}},{},"tags":{{"value":"t7"}})", status("COMPLETED")))},
      {"sorted by name", list("", R"("sort":[{"column":"NAME","direction":"ASCENDING_SORT"}])")},
      {"sorted by last update", list("", R"("sort":[{"column":"LAST_UPDATED_AT","direction":"DESCENDING_SORT"}])")},
      {"sorted by status, failed only", list(status("FAILED"), R"("sort":[{"column":"ORCHESTRATION_STATUS","direction":"ASCENDING_SORT"}])")},
      {"page 400 (rows 10,000-10,025)",
       fmt::format(R"({{"pagination":{{"startIndex":10000,"count":25}},{}}})", newest)},
      {"entities (none)", R"({"pagination":{"startIndex":0,"count":25}})", "/api/v1/taskhubs/entities/query"},
  };
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"big_hub: the dashboard's lists on a hub of a million orchestrations"};
  std::size_t instances = 1'000'000;
  std::uint32_t partitions = 12;
  std::string data_dir = "bench-data/big_hub";
  bool reuse = false;
  int repeat = 5;
  auto self_dir = fs::read_symlink("/proc/self/exe").parent_path();
  std::string dtsd_path = (self_dir / "../src/server/dtsd").string();
  app.add_option("--instances", instances)->check(CLI::Range(std::size_t{1}, std::size_t{10'000'000}))->capture_default_str();
  app.add_option("--partitions", partitions)->check(CLI::Range(1u, 1024u))->capture_default_str();
  app.add_option("--data-dir", data_dir)->capture_default_str();
  app.add_flag("--reuse", reuse, "Keep the data dir of an earlier run with the same counts");
  app.add_option("--repeat", repeat)->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--dtsd", dtsd_path)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  bench::stop_children_on_exit_signals(3600);

  const auto stamp = fs::path(data_dir) / "big_hub.filled";
  const auto wanted = fmt::format("{} {}", instances, partitions);
  std::string found;
  if (std::ifstream in(stamp); in) std::getline(in, found);
  double fill_s = 0;
  if (!reuse || found != wanted) {
    const auto start = bench_clock::now();
    try {
      bench::preload_stores(data_dir, hub, partitions, instances, record_of, "big_hub");
    } catch (const std::exception& failed) {
      std::fprintf(stderr, "big_hub: could not write the stores: %s\n", failed.what());
      return 1;
    }
    fill_s = seconds_since(start);
    std::ofstream(stamp) << wanted << "\n";
  }

  const auto dashboard = "127.0.0.1:" + std::to_string(bench::free_port());
  const auto started = bench_clock::now();
  const auto server = bench::launch(dtsd_path, {"--data-dir", data_dir, "--listen", "127.0.0.1:0", "--grpc-listen",
                                                "127.0.0.1:0", "--dashboard-listen", dashboard, "--partitions",
                                                std::to_string(partitions), "--log-level", "warn",
                                                // Its instances ended in January 2026: kept, not purged meanwhile.
                                                "--retention-default", "forever"});
  bool ready = false;
  for (int i = 0; i < 1200 && !ready; ++i) {  // At most two minutes.
    std::string body;
    ready = bench::http_call(dashboard, "GET", "/api/v1/taskhubs/ping", {}, &body) == 200;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double ready_s = seconds_since(started);
  if (!ready) {
    std::fprintf(stderr, "big_hub: dtsd did not answer within two minutes\n");
    bench::stop(server);
    return 1;
  }
  std::fprintf(stderr, "big_hub: dtsd ready on %zu instances after %.1f s\n", instances, ready_s);

  bool all_fast = true;
  double slowest_ms = 0;
  for (const auto& c : cases(instances)) {
    std::vector<double> times_ms;
    std::string body;
    int status = 0;
    for (int r = 0; r < repeat; ++r) {
      const auto start = bench_clock::now();
      status = bench::http_call(dashboard, "POST", c.path, c.body, &body);
      times_ms.push_back(seconds_since(start) * 1000);
    }
    auto answer = bench::json::parse(body, nullptr, false);
    const auto total = answer.is_object() ? answer.value("totalCount", std::int64_t{-1}) : -1;
    const auto rows_key = std::string(c.path).find("entities") != std::string::npos ? "entities" : "orchestrations";
    const auto rows = answer.is_object() && answer.contains(rows_key) ? answer[rows_key].size() : 0;
    const auto p50 = bench::percentile(times_ms, 0.5), worst = *std::max_element(times_ms.begin(), times_ms.end());
    all_fast = all_fast && status == 200 && worst < 100;
    slowest_ms = std::max(slowest_ms, worst);
    std::printf("%s\n", bench::json{{"bench", "big_hub"},
                                    {"query", c.name},
                                    {"status", status},
                                    {"total", total},
                                    {"rows", rows},
                                    {"p50_ms", std::round(p50 * 10) / 10},
                                    {"max_ms", std::round(worst * 10) / 10}}
                                .dump()
                                .c_str());
    std::fflush(stdout);
  }
  std::vector<double> metrics_ms;
  for (int r = 0; r < repeat; ++r) {
    const auto start = bench_clock::now();
    bench::http_call(dashboard, "GET", "/metrics");
    metrics_ms.push_back(seconds_since(start) * 1000);
  }
  const auto rss = bench::rss_mib(server);
  const auto anonymous = bench::status_mib(server, "RssAnon:");  // Without the stores' mapped pages.
  bench::stop(server);
  std::printf("%s\n", bench::json{{"bench", "big_hub"},
                                  {"instances", instances},
                                  {"partitions", partitions},
                                  {"fill_s", std::round(fill_s * 10) / 10},
                                  {"dtsd_ready_s", std::round(ready_s * 10) / 10},
                                  {"dtsd_rss_mib", std::round(rss)},
                                  {"dtsd_rss_anon_mib", std::round(anonymous)},
                                  {"metrics_p50_ms", std::round(bench::percentile(metrics_ms, 0.5) * 10) / 10},
                                  {"slowest_list_ms", std::round(slowest_ms * 10) / 10},
                                  {"every_list_under_100ms", all_fast}}
                              .dump()
                              .c_str());
  return all_fast ? 0 : 3;
}
