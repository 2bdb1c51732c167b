// Crash test of the LMDB partition store: a child process commits batches in a
// loop and is killed with SIGKILL at random moments, many times. After each kill
// the store is reopened and must hold every batch the child reported committed,
// no part of a batch without the rest, and pass the consistency check.
//
// Reproduce a run with DTSD_CRASH_SEED=<seed printed on failure>.

#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>

#include "../support/spawn.hpp"
#include "crash_workload.hpp"

using namespace dtsd;
namespace fs = std::filesystem;

namespace {

constexpr int rounds = 40;
constexpr int kill_delay_ms_min = 2;
constexpr int kill_delay_ms_max = 150;

std::string child_path() {
  if (const char* path = std::getenv("DTSD_CRASH_CHILD")) return path;
  return (fs::read_symlink("/proc/self/exe").parent_path() / "crash_child").string();
}

/// Starts the child, kills it after `delay`, and returns the batches it reported.
std::set<std::uint64_t> run_and_kill(const std::string& data_dir, std::chrono::milliseconds delay) {
  auto [pid, out] = test_support::spawn(child_path(), {data_dir});
  std::string output;
  char buffer[4096];
  const auto deadline = std::chrono::steady_clock::now() + delay;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd readable{out, POLLIN, 0};
    if (poll(&readable, 1, static_cast<int>(left.count())) <= 0) continue;
    auto got = read(out, buffer, sizeof buffer);
    if (got <= 0) break;  // The child ended by itself: a failure, checked below.
    output.append(buffer, static_cast<std::size_t>(got));
  }
  kill(pid, SIGKILL);
  for (ssize_t got; (got = read(out, buffer, sizeof buffer)) > 0;) {
    output.append(buffer, static_cast<std::size_t>(got));
  }
  close(out);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL),
                "the child stopped by itself with status " << status);

  std::set<std::uint64_t> acknowledged;
  std::istringstream lines(output);
  std::string word;
  std::uint64_t batch = 0;
  while (lines >> word >> batch) {
    if (word == "committed") acknowledged.insert(batch);
  }
  return acknowledged;
}

/// Reopens the store and checks it against the workload; returns the last batch.
std::uint64_t verify(const std::string& data_dir, const std::set<std::uint64_t>& acknowledged) {
  auto engine = store::open_lmdb({data_dir, store::durability::fsync});
  REQUIRE(engine);
  auto opened = store::partition_store::open(std::move(*engine), crash_workload::identity);
  REQUIRE(opened);
  auto& partition = **opened;
  auto consistent = partition.check_consistency();
  REQUIRE_MESSAGE(consistent, (consistent ? "" : consistent.error().message));

  auto log = partition.read_log(1, 1'000'000);
  REQUIRE(log);
  std::set<std::uint64_t> logged;
  std::size_t expected_instances = 0;
  for (const auto& record : *log) {
    logged.insert(record.sequence);
    REQUIRE(record.events.size() == 1);
    CHECK(std::get<store::logged::opaque>(record.events[0].body).data ==
          crash_workload::log_text(record.sequence));
    // Every part of a logged batch is present.
    for (int i = 0; i < crash_workload::instances_in(record.sequence); ++i) {
      auto found = partition.get_instance(crash_workload::instance_id(record.sequence, i));
      REQUIRE(found);
      REQUIRE_MESSAGE(found->has_value(), "batch " << record.sequence << " lost instance " << i);
      CHECK((*found)->input == core::payload(crash_workload::input_of(record.sequence)));
      ++expected_instances;
    }
  }
  for (auto batch : acknowledged) {
    CHECK_MESSAGE(logged.count(batch) == 1, "acknowledged batch " << batch << " was lost");
  }
  // Nothing of a batch that is not in the log exists.
  auto recovered = partition.recover();
  REQUIRE(recovered);
  CHECK(recovered->instance_count == expected_instances);
  CHECK(recovered->activities.size() == logged.size());
  CHECK(recovered->timers.size() == logged.size());
  return logged.empty() ? 0 : *logged.rbegin();
}

}  // namespace

TEST_CASE("crash: batches reported committed survive SIGKILL at random moments, whole or not at all") {
  std::uint64_t seed = std::random_device{}();
  if (const char* fixed = std::getenv("DTSD_CRASH_SEED")) seed = std::strtoull(fixed, nullptr, 10);
  INFO("DTSD_CRASH_SEED=" << seed);
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<int> delay_ms(kill_delay_ms_min, kill_delay_ms_max);

  const auto data_dir =
      (fs::temp_directory_path() / ("dtsd-crash-" + std::to_string(seed))).string();
  fs::remove_all(data_dir);
  std::set<std::uint64_t> acknowledged;
  std::uint64_t last_batch = 0;
  for (int round = 0; round < rounds; ++round) {
    auto reported = run_and_kill(data_dir, std::chrono::milliseconds(delay_ms(random)));
    acknowledged.insert(reported.begin(), reported.end());
    auto last = verify(data_dir, acknowledged);
    CHECK(last >= last_batch);  // Reopening never goes back.
    last_batch = last;
  }
  MESSAGE("crash test: " << rounds << " kills, " << acknowledged.size()
                         << " acknowledged batches, " << last_batch << " batches on disk");
  // The test means nothing if the child never got to commit.
  CHECK(acknowledged.size() >= static_cast<std::size_t>(rounds));
  fs::remove_all(data_dir);
}
