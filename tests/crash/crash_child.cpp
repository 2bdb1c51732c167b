// Commits crash-workload batches forever, printing "committed N" after each commit
// returns. The crash test kills it with SIGKILL at random moments.

#include <unistd.h>

#include <cstdio>

#include "core/orchestration.hpp"
#include "crash_workload.hpp"

using namespace dtsd;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: crash_child DATA_DIR\n");
    return 2;
  }
  auto engine = store::open_lmdb({argv[1], store::durability::fsync});
  if (!engine) {
    std::fprintf(stderr, "crash_child: %s\n", engine.error().message.c_str());
    return 2;
  }
  auto opened = store::partition_store::open(std::move(*engine), crash_workload::identity);
  if (!opened) {
    std::fprintf(stderr, "crash_child: %s\n", opened.error().message.c_str());
    return 2;
  }
  auto& partition = **opened;
  auto recovered = partition.recover();
  if (!recovered) return 2;
  core::payload_limits limits;
  for (std::uint64_t batch = recovered->next_log_sequence;; ++batch) {
    store::write_batch writes;
    const auto now = static_cast<std::int64_t>(batch);
    for (int i = 0; i < crash_workload::instances_in(batch); ++i) {
      core::start_request request;
      request.instance_id = crash_workload::instance_id(batch, i);
      request.execution_id = "e";
      request.name = "Crash";
      request.input = crash_workload::input_of(batch);
      std::optional<core::orchestration_state> slot;
      auto started = core::apply_start(slot, request, now, limits);
      if (!started) return 3;
      writes.instances.push_back(
          store::make_instance_write(request.instance_id, &*slot, started->change));
    }
    const auto first = crash_workload::instance_id(batch, 0);
    writes.activities_added.push_back({first, "e", 0, "Act", {}, "x", {}});
    writes.timers_added.push_back({first, "e", 1, now});
    writes.events.push_back({now, store::logged::opaque{crash_workload::log_text(batch)}});
    auto committed = partition.commit(writes, now);
    if (!committed || committed->log_sequence != batch) {
      std::fprintf(stderr, "crash_child: commit of batch %llu failed\n",
                   static_cast<unsigned long long>(batch));
      return 4;
    }
    // One write(2) per line: a line is either fully in the pipe or not at all.
    auto line = fmt::format("committed {}\n", batch);
    if (write(STDOUT_FILENO, line.data(), line.size()) < 0) return 5;
  }
}
