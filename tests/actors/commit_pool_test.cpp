// The shared commit pool: each lane's batches are committed one at a time and in
// order while other lanes' batches run on the other threads, a lane being
// destroyed waits for the batch it holds, and a failed commit keeps its batch for
// a retry without holding a thread.

#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "actors/commit_pool.hpp"
#include "store/kv.hpp"

using namespace dtsd;

namespace {

std::unique_ptr<store::partition_store> memory_store(std::uint32_t index, std::uint32_t count) {
  auto made = store::partition_store::open(store::open_memory(), {"pool", index, count});
  REQUIRE(made);
  return std::move(*made);
}

/// A batch that moves the dedup mark of source partition 0 to `mark`: what the
/// store holds afterwards shows which batches were committed, and in what order.
store::write_batch marking(std::uint64_t mark) {
  store::write_batch batch;
  batch.dedup_marks[0] = mark;
  return batch;
}

std::uint64_t stored_mark(store::partition_store& store) {
  auto recovered = store.recover();
  REQUIRE(recovered);
  auto found = recovered->dedup_marks.find(0);
  return found == recovered->dedup_marks.end() ? 0 : found->second;
}

/// A memory store whose writes fail while `failing` is set, as a full disk does:
/// nothing of the failed transaction is kept.
class failing_engine final : public store::kv_engine {
 public:
  explicit failing_engine(std::shared_ptr<std::atomic<bool>> failing)
      : inner_(store::open_memory()), failing_(std::move(failing)) {}
  expected<void> write(const std::function<void(store::kv_writer&)>& body) override {
    if (*failing_) return error{errc::io, "LMDB txn_commit failed: No space left on device"};
    return inner_->write(body);
  }
  expected<void> read(const std::function<void(store::kv_reader&)>& body) override { return inner_->read(body); }

 private:
  std::unique_ptr<store::kv_engine> inner_;
  std::shared_ptr<std::atomic<bool>> failing_;
};

/// A memory store whose writes wait while `held` is set (a slow disk), and that
/// tells which thread entered a write.
class held_engine final : public store::kv_engine {
 public:
  struct gate {
    std::atomic<bool> held{false};
    std::mutex mutex;
    std::condition_variable entered;
    std::vector<std::thread::id> writers;  ///< Guarded by `mutex`.
  };
  explicit held_engine(std::shared_ptr<gate> gate) : inner_(store::open_memory()), gate_(std::move(gate)) {}
  expected<void> write(const std::function<void(store::kv_writer&)>& body) override {
    {
      std::lock_guard lock(gate_->mutex);
      gate_->writers.push_back(std::this_thread::get_id());
    }
    gate_->entered.notify_all();
    for (int i = 0; i < 3000 && gate_->held; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return inner_->write(body);
  }
  expected<void> read(const std::function<void(store::kv_reader&)>& body) override { return inner_->read(body); }

 private:
  std::unique_ptr<store::kv_engine> inner_;
  std::shared_ptr<gate> gate_;
};

}  // namespace

TEST_CASE("every lane's batches commit in order, each after the one before, across lanes") {
  constexpr std::uint32_t lanes = 5;
  constexpr std::uint64_t batches = 200;
  actors::commit_pool pool(2);
  CHECK(pool.thread_count() == 2);
  std::vector<std::unique_ptr<store::partition_store>> stores;
  for (std::uint32_t i = 0; i < lanes; ++i) stores.push_back(memory_store(i, lanes));

  std::mutex mutex;
  std::condition_variable all_done;
  std::vector<std::vector<std::uint64_t>> reported(lanes);
  std::vector<std::uint64_t> mark_when_reported(lanes * (batches + 1), 0);
  std::vector<std::unique_ptr<actors::commit_pool::lane>> written(lanes);
  std::uint32_t finished = 0;
  for (std::uint32_t i = 0; i < lanes; ++i) {
    written[i] = pool.open(*stores[i], [&, i](std::uint64_t number) {
      // Durable before it is reported: the store already holds this batch's mark.
      mark_when_reported[i * (batches + 1) + number] = stored_mark(*stores[i]);
      std::lock_guard lock(mutex);
      reported[i].push_back(number);
      if (number < batches) {
        written[i]->write(number + 1, marking(number + 1));  // As a partition does: the next after the report.
      } else if (++finished == lanes) {
        all_done.notify_all();
      }
    });
  }
  for (std::uint32_t i = 0; i < lanes; ++i) written[i]->write(1, marking(1));
  {
    std::unique_lock lock(mutex);
    REQUIRE(all_done.wait_for(lock, std::chrono::seconds(30), [&] { return finished == lanes; }));
  }
  for (std::uint32_t i = 0; i < lanes; ++i) {
    REQUIRE(reported[i].size() == batches);
    for (std::uint64_t n = 1; n <= batches; ++n) {
      CHECK(reported[i][n - 1] == n);
      CHECK(mark_when_reported[i * (batches + 1) + n] == n);
    }
    CHECK(stored_mark(*stores[i]) == batches);
  }
  written.clear();
}

TEST_CASE("destroying a lane waits until the batch it holds is committed") {
  actors::commit_pool pool(1);
  auto first = memory_store(0, 2);
  auto second = memory_store(1, 2);
  std::atomic<int> reports{0};
  auto a = pool.open(*first, [&](std::uint64_t) { ++reports; });
  auto b = pool.open(*second, [&](std::uint64_t) { ++reports; });
  a->write(1, marking(7));
  b->write(1, marking(9));  // Queued behind a's on the single thread.
  b.reset();                // Must not return before b's batch is in its store.
  CHECK(stored_mark(*second) == 9);
  a.reset();
  CHECK(stored_mark(*first) == 7);
  CHECK(reports == 2);
}

TEST_CASE("a failed commit keeps its batch for a retry, commits it once the store writes again, and holds no thread") {
  actors::commit_pool pool(1);
  auto failing = std::make_shared<std::atomic<bool>>(false);
  auto made = store::partition_store::open(std::make_unique<failing_engine>(failing), {"pool", 0, 2});
  REQUIRE(made);
  auto& broken = **made;
  auto healthy = memory_store(1, 2);

  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::uint64_t> committed, failures, healthy_committed;
  std::string why;
  auto wait_until = [&](auto condition) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(30), condition);
  };
  auto lane = pool.open(
      broken,
      [&](std::uint64_t number) {
        std::lock_guard lock(mutex);
        committed.push_back(number);
        changed.notify_all();
      },
      [&](std::uint64_t number, const error& failure) {
        std::lock_guard lock(mutex);
        failures.push_back(number);
        why = failure.message;
        changed.notify_all();
      });
  auto other = pool.open(*healthy, [&](std::uint64_t number) {
    std::lock_guard lock(mutex);
    healthy_committed.push_back(number);
    changed.notify_all();
  });

  lane->write(1, marking(1));
  REQUIRE(wait_until([&] { return committed.size() == 1; }));
  *failing = true;
  lane->write(2, marking(2));
  REQUIRE(wait_until([&] { return failures.size() == 1; }));
  CHECK(failures.front() == 2);
  CHECK(why.find("No space left") != std::string::npos);
  CHECK(stored_mark(broken) == 1);  // Nothing of batch 2.

  // The one pool thread is free for other lanes while this one is stalled.
  other->write(1, marking(5));
  REQUIRE(wait_until([&] { return healthy_committed.size() == 1; }));
  CHECK(stored_mark(*healthy) == 5);

  lane->retry();  // Still failing: reported again, still not committed.
  REQUIRE(wait_until([&] { return failures.size() == 2; }));
  CHECK(failures.back() == 2);
  *failing = false;
  lane->retry();
  REQUIRE(wait_until([&] { return committed.size() == 2; }));
  CHECK(committed.back() == 2);
  CHECK(stored_mark(broken) == 2);
  lane->retry();  // Not stalled: nothing happens.
  lane->write(3, marking(3));
  REQUIRE(wait_until([&] { return committed.size() == 3; }));
  CHECK(stored_mark(broken) == 3);
  lane.reset();
  other.reset();
}

TEST_CASE("destroying a stalled lane drops its batch instead of waiting for the disk") {
  actors::commit_pool pool(1);
  auto failing = std::make_shared<std::atomic<bool>>(false);
  auto made = store::partition_store::open(std::make_unique<failing_engine>(failing), {"pool", 0, 1});
  REQUIRE(made);
  *failing = true;
  std::atomic<int> failures{0};
  auto lane = pool.open(**made, [](std::uint64_t) {}, [&](std::uint64_t, const error&) { ++failures; });
  lane->write(1, marking(1));
  for (int i = 0; i < 3000 && failures == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(failures == 1);
  lane.reset();  // Returns: the stalled batch is dropped.
  *failing = false;
  CHECK(stored_mark(**made) == 0);
}

TEST_CASE("an idle pool lets the caller commit on its own thread; a busy one, or a second caller, queues") {
  actors::commit_pool pool(1);
  auto gate = std::make_shared<held_engine::gate>();
  auto made = store::partition_store::open(std::make_unique<held_engine>(gate), {"pool", 0, 2});
  REQUIRE(made);
  auto& slow = **made;
  const auto opening_writes = gate->writers.size();  // Opening the store writes too.
  auto quick = memory_store(1, 2);
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::pair<std::uint64_t, std::thread::id>> slow_reports, quick_reports;
  auto report_to = [&](auto& list) {
    return [&](std::uint64_t number) {
      std::lock_guard lock(mutex);
      list.emplace_back(number, std::this_thread::get_id());
      changed.notify_all();
    };
  };
  auto wait_until = [&](auto condition) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(30), condition);
  };
  /// Waits until the slow lane's commit number `n` (1-based) entered its write; its thread.
  auto entered = [&](std::size_t n) {
    std::unique_lock lock(gate->mutex);
    REQUIRE(gate->entered.wait_for(lock, std::chrono::seconds(30),
                                   [&] { return gate->writers.size() >= opening_writes + n; }));
    return gate->writers[opening_writes + n - 1];
  };
  auto slow_lane = pool.open(slow, report_to(slow_reports));
  auto quick_lane = pool.open(*quick, report_to(quick_reports));
  const auto caller = std::this_thread::get_id();

  // Idle (once the pool's thread waits for work): committed and reported here,
  // before the call returns.
  std::uint64_t number = 0;
  bool here = false;
  for (int i = 0; i < 300 && !here; ++i) {
    quick_lane->write_here_if_idle(number + 1, marking(number + 1));
    ++number;
    REQUIRE(wait_until([&] { return quick_reports.size() == number; }));
    here = quick_reports.back().second == caller;
    if (!here) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(here);
  CHECK(stored_mark(*quick) == number);

  // Busy: the pool's one thread is in the slow lane's commit; the quick lane's
  // batch is queued, and the call returns without waiting for it.
  gate->held = true;
  slow_lane->write(1, marking(1));
  CHECK(entered(1) != caller);
  quick_lane->write_here_if_idle(number + 1, marking(number + 1));
  ++number;
  CHECK(stored_mark(*quick) == number - 1);
  gate->held = false;
  REQUIRE(wait_until([&] { return quick_reports.size() == number && slow_reports.size() == 1; }));
  CHECK(quick_reports.back().second != caller);
  CHECK(slow_reports.back().second != caller);
  CHECK(stored_mark(*quick) == number);

  // A caller committing on its own thread holds it alone: a second caller meanwhile queues.
  std::thread first;
  struct release {
    std::shared_ptr<held_engine::gate> gate;
    std::thread& thread;
    ~release() {
      gate->held = false;
      if (thread.joinable()) thread.join();
    }
  } released{gate, first};
  std::uint64_t slow_number = 1;
  bool held_here = false;
  for (int i = 0; i < 300 && !held_here; ++i) {
    gate->held = true;
    ++slow_number;
    first = std::thread([&, batch = slow_number] { slow_lane->write_here_if_idle(batch, marking(batch)); });
    held_here = entered(slow_number) == first.get_id();
    if (held_here) break;
    // The pool was not idle yet and took it: try again.
    gate->held = false;
    first.join();
    REQUIRE(wait_until([&] { return slow_reports.size() == slow_number; }));
  }
  REQUIRE(held_here);
  quick_lane->write_here_if_idle(number + 1, marking(number + 1));
  ++number;
  REQUIRE(wait_until([&] { return quick_reports.size() == number; }));  // Committed by the pool meanwhile.
  CHECK(quick_reports.back().second != caller);
  CHECK(stored_mark(slow) == slow_number - 1);  // The held commit has not ended.
  const auto first_id = first.get_id();
  gate->held = false;
  first.join();
  {
    std::lock_guard lock(mutex);
    REQUIRE(slow_reports.size() == slow_number);
    CHECK(slow_reports.back().second == first_id);  // Reported on the thread that committed it.
  }
  CHECK(stored_mark(slow) == slow_number);
  slow_lane.reset();
  quick_lane.reset();
}
