// The shared commit pool: each lane's batches are committed one at a time and in
// order while other lanes' batches run on the other threads, and a lane being
// destroyed waits for the batch it holds.

#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
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
