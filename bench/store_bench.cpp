// bench/store_bench: commit throughput and latency of one partition store.
//
// One "event" is what a partition writes when an activity result arrives for an
// orchestration: the input is logged, a history row is appended to the instance
// and its instance row (record + counts) is rewritten. A batch of N events touches
// N different instances, as a loaded partition does. For each batch size the
// benchmark commits batches back to back for a fixed time and prints one JSON
// line with events/s, commits/s and commit latency percentiles.
//
//   build/bench/store_bench [--durability fsync|nosync|memory] [--seconds S]
//                           [--dir PATH] [--payload-bytes B] [--batches 1,10,100,1000]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "store/partition_store.hpp"

using namespace dtsd;
namespace fs = std::filesystem;
using bench_clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t instance_count = 5000;

struct options {
  store::durability mode = store::durability::fsync;
  double seconds = 3.0;
  std::string directory = "bench-data/store";
  std::size_t payload_bytes = 16;  // About "Hello, Tokyo!" as JSON.
  std::vector<std::size_t> batch_sizes = {1, 10, 100, 1000};
};

[[noreturn]] void usage(const char* problem) {
  std::fprintf(stderr,
               "store_bench: %s\nusage: store_bench [--durability fsync|nosync|memory] "
               "[--seconds S] [--dir PATH] [--payload-bytes B] [--batches 1,10,100,1000]\n",
               problem);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options parsed;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + flag).c_str());
    std::string value = argv[++i];
    if (flag == "--durability") {
      if (value == "fsync") parsed.mode = store::durability::fsync;
      else if (value == "nosync") parsed.mode = store::durability::nosync;
      else if (value == "memory") parsed.mode = store::durability::memory;
      else usage("durability must be fsync, nosync or memory");
    } else if (flag == "--seconds") {
      parsed.seconds = std::stod(value);
      if (parsed.seconds <= 0 || parsed.seconds > 600) usage("seconds must be in (0, 600]");
    } else if (flag == "--dir") {
      parsed.directory = value;
    } else if (flag == "--payload-bytes") {
      parsed.payload_bytes = std::stoul(value);
    } else if (flag == "--batches") {
      parsed.batch_sizes.clear();
      std::stringstream list(value);
      for (std::string item; std::getline(list, item, ',');) {
        auto size = std::stoul(item);
        if (size == 0 || size > instance_count) usage("batch sizes must be in 1..5000");
        parsed.batch_sizes.push_back(size);
      }
    } else {
      usage(("unknown flag " + flag).c_str());
    }
  }
  return parsed;
}

const char* mode_name(store::durability mode) {
  switch (mode) {
    case store::durability::fsync: return "fsync";
    case store::durability::nosync: return "nosync";
    case store::durability::memory: return "memory";
  }
  return "?";
}

std::unique_ptr<store::partition_store> open_store(const options& opts) {
  std::unique_ptr<store::kv_engine> engine;
  if (opts.mode == store::durability::memory) {
    engine = store::open_memory();
  } else {
    fs::remove_all(opts.directory);
    auto opened = store::open_lmdb({opts.directory, opts.mode});
    if (!opened) usage(opened.error().message.c_str());
    engine = std::move(*opened);
  }
  auto made = store::partition_store::open(std::move(engine), {"bench", 0, 1});
  if (!made) usage(made.error().message.c_str());
  return std::move(*made);
}

/// Per-instance state the benchmark keeps to build realistic rows.
struct instance_model {
  core::instance_record record;
  std::uint32_t history_count = 0;
};

std::vector<instance_model> seed_instances(store::partition_store& partition) {
  std::vector<instance_model> instances(instance_count);
  store::write_batch batch;
  for (std::size_t i = 0; i < instance_count; ++i) {
    auto& record = instances[i].record;
    record.instance_id = fmt::format("hello-cities-{:06}", i);
    record.execution_id = fmt::format("{:032x}", i);
    record.name = "HelloCities";
    record.status = core::runtime_status::running;
    record.input = "null";
    record.created_at_ns = static_cast<std::int64_t>(i + 1);
    store::instance_write write;
    write.instance_id = record.instance_id;
    write.row = {record, 0, 0, 0};
    batch.instances.push_back(std::move(write));
  }
  if (!partition.commit(batch, 1)) usage("seeding the store failed");
  return instances;
}

store::write_batch make_batch(std::vector<instance_model>& instances, std::size_t& cursor,
                              std::size_t events, const std::string& payload, std::int64_t now) {
  store::write_batch batch;
  batch.events.reserve(events);
  batch.instances.reserve(events);
  for (std::size_t e = 0; e < events; ++e) {
    auto& instance = instances[cursor];
    cursor = (cursor + 1) % instances.size();
    const auto task_id = static_cast<std::int32_t>(instance.history_count);
    core::activity_result result{instance.record.instance_id, instance.record.execution_id,
                                 task_id, 0, core::payload(payload)};
    batch.events.push_back({now, result});
    instance.record.last_updated_at_ns = now;
    store::instance_write write;
    write.instance_id = instance.record.instance_id;
    write.history_first_index = instance.history_count;
    write.history_rows.push_back({-1, now, core::events::task_completed{task_id, payload}});
    ++instance.history_count;
    write.row = {instance.record, instance.history_count, 0, 0};
    batch.instances.push_back(std::move(write));
  }
  return batch;
}

double percentile_ms(std::vector<double>& latencies_ms, double fraction) {
  if (latencies_ms.empty()) return 0;
  auto index = static_cast<std::size_t>(fraction * static_cast<double>(latencies_ms.size() - 1));
  std::nth_element(latencies_ms.begin(), latencies_ms.begin() + static_cast<long>(index),
                   latencies_ms.end());
  return latencies_ms[index];
}

}  // namespace

int main(int argc, char** argv) {
  const auto opts = parse(argc, argv);
  const std::string payload = "\"" + std::string(opts.payload_bytes > 2 ? opts.payload_bytes - 2 : 0, 'x') + "\"";
  std::vector<std::string> results;
  for (auto batch_events : opts.batch_sizes) {
    auto partition = open_store(opts);
    auto instances = seed_instances(*partition);
    std::size_t cursor = 0;
    std::vector<double> latencies_ms;
    std::size_t commits = 0;
    const auto start = bench_clock::now();
    const auto stop = start + std::chrono::duration<double>(opts.seconds);
    std::int64_t now = 2;
    while (bench_clock::now() < stop) {
      auto batch = make_batch(instances, cursor, batch_events, payload, now++);
      const auto before = bench_clock::now();
      auto committed = partition->commit(batch, now);
      const auto after = bench_clock::now();
      if (!committed) {
        std::fprintf(stderr, "store_bench: commit failed: %s\n", committed.error().message.c_str());
        return 1;
      }
      latencies_ms.push_back(std::chrono::duration<double, std::milli>(after - before).count());
      ++commits;
    }
    const double wall_s = std::chrono::duration<double>(bench_clock::now() - start).count();
    auto consistent = partition->check_consistency();
    if (!consistent) {
      std::fprintf(stderr, "store_bench: store inconsistent: %s\n", consistent.error().message.c_str());
      return 1;
    }
    const double events = static_cast<double>(commits * batch_events);
    results.push_back(fmt::format(
        "{{\"batch_events\":{},\"commits\":{},\"wall_s\":{:.3f},\"events_per_s\":{:.0f},"
        "\"commits_per_s\":{:.0f},\"commit_p50_ms\":{:.3f},\"commit_p99_ms\":{:.3f}}}",
        batch_events, commits, wall_s, events / wall_s, static_cast<double>(commits) / wall_s,
        percentile_ms(latencies_ms, 0.50), percentile_ms(latencies_ms, 0.99)));
    std::fprintf(stderr, "store_bench: batch %zu done: %zu commits in %.1f s\n", batch_events, commits,
                 wall_s);
    partition.reset();
    if (opts.mode != store::durability::memory) fs::remove_all(opts.directory);
  }
  std::printf("{\"bench\":\"store\",\"durability\":\"%s\",\"payload_bytes\":%zu,\"results\":[%s]}\n",
              mode_name(opts.mode), opts.payload_bytes, fmt::format("{}", fmt::join(results, ",")).c_str());
  return 0;
}
