// bench/store_bench: commit throughput and latency of one partition store.
//
// One "event" is what a partition writes when an activity result arrives for an
// orchestration: the input is logged, a history row is appended to the instance
// and its instance row (record + counts) is rewritten. A batch of N events touches
// N different instances of 5,000, as a loaded partition does. For each batch size
// the benchmark commits batches back to back for a fixed time and prints one JSON
// line with events/s, commits/s and commit latency percentiles.
//
// Instances live like hello-cities orchestrations: after --lifetime-events events
// (default 15) an instance completes and a new one takes its place, so the store
// keeps growing by new instances, as a server does. --lifetime-events 0 never
// completes them: every history then grows for the whole run.
//
//   build/bench/store_bench [--durability fsync|nosync|memory] [--seconds S]
//                           [--dir PATH] [--payload-bytes B] [--batches 1,10,100,1000]
//                           [--lifetime-events N]

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
  std::uint32_t lifetime_events = 15;  ///< 0: instances never complete.
};

[[noreturn]] void usage(const char* problem) {
  std::fprintf(stderr,
               "store_bench: %s\nusage: store_bench [--durability fsync|nosync|memory] "
               "[--seconds S] [--dir PATH] [--payload-bytes B] [--batches 1,10,100,1000] "
               "[--lifetime-events N]\n",
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
    } else if (flag == "--lifetime-events") {
      parsed.lifetime_events = static_cast<std::uint32_t>(std::stoul(value));
      if (parsed.lifetime_events == 1) usage("lifetime-events must be 0 or at least 2");
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

/// A fresh running instance for slot `serial`.
instance_model new_instance(std::uint64_t serial, std::int64_t now) {
  instance_model instance;
  auto& record = instance.record;
  record.instance_id = fmt::format("hello-cities-{:08}", serial);
  record.execution_id = fmt::format("{:032x}", serial);
  record.name = "HelloCities";
  record.status = core::runtime_status::running;
  record.input = "null";
  record.created_at_ns = now;
  record.last_updated_at_ns = now;
  return instance;
}

struct workload {
  std::vector<instance_model> instances;
  std::size_t cursor = 0;
  std::uint64_t next_serial = 0;
  std::uint32_t lifetime_events = 0;
  std::size_t completed = 0;
};

workload seed_instances(store::partition_store& partition, std::uint32_t lifetime_events) {
  workload load;
  load.lifetime_events = lifetime_events;
  store::write_batch batch;
  for (std::size_t i = 0; i < instance_count; ++i) {
    load.instances.push_back(new_instance(load.next_serial++, 1));
    store::instance_write write;
    write.instance_id = load.instances.back().record.instance_id;
    write.row = {load.instances.back().record, 0, 0, 0, {}};
    batch.instances.push_back(std::move(write));
  }
  if (!partition.commit(batch, 1)) usage("seeding the store failed");
  return load;
}

/// The next event of one instance: its activity result, or its completion when its
/// lifetime is up (after which a new instance takes the slot).
void add_event(workload& load, store::write_batch& batch, const std::string& payload,
               std::int64_t now) {
  auto& instance = load.instances[load.cursor];
  load.cursor = (load.cursor + 1) % load.instances.size();
  if (instance.history_count == 0) instance.record.created_at_ns = now;
  const auto task_id = static_cast<std::int32_t>(instance.history_count);
  const bool last = load.lifetime_events != 0 && instance.history_count + 1 >= load.lifetime_events;
  store::instance_write write;
  write.instance_id = instance.record.instance_id;
  write.history_first_index = instance.history_count;
  instance.record.last_updated_at_ns = now;
  if (last) {
    instance.record.status = core::runtime_status::completed;
    instance.record.output = payload;
    instance.record.completed_at_ns = now;
    write.history_rows.push_back(
        {task_id, now, core::events::execution_completed{core::runtime_status::completed, payload, {}}});
    core::actions::complete_orchestration done;
    done.result = payload;
    batch.events.push_back(
        {now, store::logged::orchestrator_completed{
                  {instance.record.instance_id, 0, {{task_id, std::move(done)}}, {}}, {}, 1}});
  } else {
    write.history_rows.push_back({-1, now, core::events::task_completed{task_id, payload}});
    batch.events.push_back({now, core::activity_result{instance.record.instance_id,
                                                      instance.record.execution_id, task_id, 0,
                                                      core::payload(payload)}});
  }
  ++instance.history_count;
  write.row = {instance.record, instance.history_count, 0, 0, {}};
  batch.instances.push_back(std::move(write));
  if (last) {
    ++load.completed;
    instance = new_instance(load.next_serial++, now);
    instance.history_count = 0;
  }
}

store::write_batch make_batch(workload& load, std::size_t events, const std::string& payload,
                              std::int64_t now) {
  store::write_batch batch;
  batch.events.reserve(events);
  batch.instances.reserve(events);
  for (std::size_t e = 0; e < events; ++e) add_event(load, batch, payload, now);
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
    auto load = seed_instances(*partition, opts.lifetime_events);
    std::vector<double> latencies_ms;
    std::size_t commits = 0;
    const auto start = bench_clock::now();
    const auto stop = start + std::chrono::duration<double>(opts.seconds);
    std::int64_t now = 2;
    while (bench_clock::now() < stop) {
      auto batch = make_batch(load, batch_events, payload, now++);
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
        "\"commits_per_s\":{:.0f},\"commit_p50_ms\":{:.3f},\"commit_p99_ms\":{:.3f},"
        "\"instances_completed\":{}}}",
        batch_events, commits, wall_s, events / wall_s, static_cast<double>(commits) / wall_s,
        percentile_ms(latencies_ms, 0.50), percentile_ms(latencies_ms, 0.99), load.completed));
    std::fprintf(stderr, "store_bench: batch %zu done: %zu commits in %.1f s\n", batch_events, commits,
                 wall_s);
    partition.reset();
    if (opts.mode != store::durability::memory) fs::remove_all(opts.directory);
  }
  std::printf("{\"bench\":\"store\",\"durability\":\"%s\",\"payload_bytes\":%zu,"
              "\"lifetime_events\":%u,\"instances\":%zu,\"results\":[%s]}\n",
              mode_name(opts.mode), opts.payload_bytes, opts.lifetime_events, instance_count,
              fmt::format("{}", fmt::join(results, ",")).c_str());
  return 0;
}
