// bench/soak: hello cities at a steady rate for a long time, to find stalls.
//
// Starts dtsd (fsync) and a hello_cities worker as separate processes (the C++ SDK
// worker over the native API, or with --worker-kind js the official JS SDK worker
// over gRPC), then starts orchestrations at --rate per second (in batches every
// 100 ms) for --seconds. Another thread waits for each in start order. Every
// --window-seconds it samples dtsd's RSS, CPU and data-dir size; at the end it
// prints one JSON line with a row per window: the orchestrations started in that
// window, their latency percentiles (server created -> completed times) and max,
// and the samples. Progress goes to stderr.
//
//   build/release/bench/soak [--rate 300] [--seconds 600] [--window-seconds 30] [--partitions 12]
//       [--worker-kind cpp|js] [--durability fsync] [--dtsd PATH] [--worker PATH] [--data-dir DIR]

#include <CLI/CLI.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "support.hpp"

using namespace dtsd;
using namespace dtsd::bench;

namespace {

std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct finished {
  std::int64_t created_ns = 0;
  double latency_ms = 0;
  bool correct = false;
};

struct sample {
  double at_s = 0;
  double rss_mib = 0;
  double anon_mib = 0;  ///< Of the RSS: the heap (the rest is mostly LMDB's file pages, which the kernel can drop).
  double data_mib = 0;
  double cpu_s = 0;
};

/// Ids started and not yet waited for, in start order.
class id_queue {
 public:
  void push(std::vector<std::string> ids) {
    {
      std::lock_guard lock(mutex_);
      for (auto& id : ids) ids_.push_back(std::move(id));
    }
    changed_.notify_one();
  }
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    changed_.notify_one();
  }
  /// The next id, or nothing once closed and empty.
  std::optional<std::string> pop() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return closed_ || !ids_.empty(); });
    if (ids_.empty()) return std::nullopt;
    auto id = std::move(ids_.front());
    ids_.pop_front();
    return id;
  }
  std::size_t size() {
    std::lock_guard lock(mutex_);
    return ids_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::string> ids_;
  bool closed_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"soak benchmark: hello cities at a steady rate"};
  double rate = 300;
  int seconds = 600;
  int window_seconds = 30;
  hello_cities_setup setup("bench-data/soak");
  setup.add_options(app);
  app.add_option("--rate", rate, "Orchestrations started per second")->check(CLI::Range(1.0, 100000.0))->capture_default_str();
  app.add_option("--seconds", seconds, "How long to start them")->check(CLI::Range(1, 86400))->capture_default_str();
  app.add_option("--window-seconds", window_seconds)->check(CLI::Range(1, 3600))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  stop_children_on_exit_signals();

  auto processes = setup.start_server();
  const auto& address = processes.address;
  const auto server = processes.server;
  // A client lives on the thread that made it (its event loop is that thread's).
  auto sampler = connect(address, "soak");
  setup.start_worker(processes);

  id_queue queue;
  std::atomic<std::size_t> started{0};
  std::atomic<std::size_t> start_failures{0};
  std::mutex results_mutex;
  std::vector<finished> results;
  std::size_t wait_failures = 0;

  const auto begin = std::chrono::steady_clock::now();
  const auto begin_ns = wall_ns();
  const auto end = begin + std::chrono::seconds(seconds);
  std::thread starting([&] {
    auto starter = connect(address, "soak");
    // Every 100 ms, as many as the rate owes by now: steady on average, and a slow
    // start call is caught up on the next tick instead of lowering the rate.
    for (auto tick = begin; tick < end; tick += std::chrono::milliseconds(100)) {
      std::this_thread::sleep_until(tick);
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
      const auto owed = static_cast<std::size_t>(std::min(elapsed, static_cast<double>(seconds)) * rate);
      if (owed <= started) continue;
      const auto count = owed - started;
      auto ids = starter->start_many("HelloCities", std::vector<json>(count, json()));
      if (!ids) {
        ++start_failures;
        std::fprintf(stderr, "soak bench: start failed: %s\n", ids.error().message.c_str());
        started += count;  // Not owed again: the rate stays the rate.
        continue;
      }
      started += count;
      queue.push(std::move(*ids));
    }
    queue.close();
  });
  std::thread waiting([&] {
    auto waiter = connect(address, "soak");
    while (auto id = queue.pop()) {
      auto done = waiter->wait_for_completion(*id, std::chrono::minutes(10));
      std::lock_guard lock(results_mutex);
      if (!done) {
        ++wait_failures;
        std::fprintf(stderr, "soak bench: %s: %s\n", id->c_str(), done.error().message.c_str());
        continue;
      }
      results.push_back({done->created_at_ns, static_cast<double>(done->completed_at_ns - done->created_at_ns) / 1e6,
                         done->status == core::runtime_status::completed && sdk::output_of(*done) == expected_output()});
    }
  });

  std::vector<sample> samples;
  for (int window = 1;; ++window) {
    auto at = begin + std::chrono::seconds(window * window_seconds);
    if (at > end) break;
    std::this_thread::sleep_until(at);
    sample s{static_cast<double>(window * window_seconds), rss_mib(server), status_mib(server, "RssAnon:"),
             disk_usage_mib(setup.data_dir), cpu_seconds(server)};
    samples.push_back(s);
    std::size_t done = 0;
    {
      std::lock_guard lock(results_mutex);
      done = results.size();
    }
    std::fprintf(stderr,
                 "soak bench: %4.0f s: started %zu, done %zu, dtsd rss %.0f MiB (heap %.0f), data %.0f MiB, cpu %.1f s\n",
                 s.at_s, started.load(), done, s.rss_mib, s.anon_mib, s.data_mib, s.cpu_s);
  }
  starting.join();
  waiting.join();
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  const double final_cpu = cpu_seconds(server);
  const double peak_rss = peak_rss_mib(server);
  sampler.reset();
  setup.stop_all(processes);

  // Each orchestration counts in the window it was created in.
  const auto window_ns = static_cast<std::int64_t>(window_seconds) * 1'000'000'000;
  std::vector<std::vector<double>> by_window(samples.size() + 1);
  std::size_t correct = 0;
  std::vector<double> all;
  for (const auto& r : results) {
    correct += r.correct ? 1 : 0;
    all.push_back(r.latency_ms);
    auto index = static_cast<std::size_t>(std::max<std::int64_t>(0, r.created_ns - begin_ns) / window_ns);
    by_window[std::min(index, by_window.size() - 1)].push_back(r.latency_ms);
  }
  json windows = json::array();
  double previous_cpu = 0;
  for (std::size_t w = 0; w < samples.size(); ++w) {
    const auto& latencies = by_window[w];
    windows.push_back({{"end_s", samples[w].at_s},
                       {"started", latencies.size()},
                       {"p50_ms", std::round(percentile(latencies, 0.5) * 10) / 10},
                       {"p99_ms", std::round(percentile(latencies, 0.99) * 10) / 10},
                       {"max_ms", std::round(percentile(latencies, 1.0) * 10) / 10},
                       {"dtsd_rss_mib", std::round(samples[w].rss_mib)},
                       {"dtsd_heap_mib", std::round(samples[w].anon_mib)},
                       {"data_mib", std::round(samples[w].data_mib)},
                       {"dtsd_cpu_share", std::round((samples[w].cpu_s - previous_cpu) / window_seconds * 100) / 100}});
    previous_cpu = samples[w].cpu_s;
  }
  json out = {{"bench", "soak"},
              {"worker", setup.worker_kind},
              {"durability", setup.durability},
              {"partitions", setup.partitions},
              {"rate", rate},
              {"seconds", seconds},
              {"started", started.load()},
              {"completed_correctly", correct},
              {"start_failures", start_failures.load()},
              {"wait_failures", wait_failures},
              {"run_s", std::round(run_s * 10) / 10},
              {"p50_ms", std::round(percentile(all, 0.5) * 10) / 10},
              {"p99_ms", std::round(percentile(all, 0.99) * 10) / 10},
              {"max_ms", std::round(percentile(all, 1.0) * 10) / 10},
              {"dtsd_cpu_s", std::round(final_cpu * 10) / 10},
              {"dtsd_peak_rss_mib", std::round(peak_rss)},
              {"windows", windows}};
  std::printf("%s\n", out.dump().c_str());
  return correct == started.load() ? 0 : 1;
}
