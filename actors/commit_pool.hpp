#pragma once
/// The threads that commit partition batches, shared by every partition of the
/// process. Each partition writes through a lane that holds at most one batch
/// (queued or being written), so a partition's batches are committed in order and
/// one at a time; while its lane waits for a free thread, the partition's next batch
/// keeps growing. An LMDB write transaction begins and ends inside one commit, on
/// one thread: a pool thread, or the caller's for write_here_if_idle.
///
/// At idle a batch finds a thread free and is written at once; under load, a few
/// threads for many partitions make batches larger and commits fewer, and the
/// process keeps a few writer threads instead of one per partition.
///
/// A commit that fails (a full disk, an I/O error) changes nothing on disk: the lane
/// keeps the batch, reports the failure and is *stalled* until its owner asks it to
/// `retry()`; no pool thread waits for it meanwhile. Only errc::io failures stall
/// (the store says so of the ones that may clear up: ENOSPC, EDQUOT, EIO); any
/// other, or one on a lane opened without a failure report, ends the process,
/// since only a restart from disk is safe then.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "service/clock.hpp"
#include "store/partition_store.hpp"

namespace dtsd::actors {

class commit_pool {
 public:
  class lane;

  /// Runs on the committing thread (see write_here_if_idle) when batch `number` could not be committed (the store
  /// holds nothing of it); the lane keeps the batch until `retry()`.
  using failure_report = std::function<void(std::uint64_t number, const dtsd::error& why)>;

  /// Starts `threads` writer threads (at least one).
  /// `clock` stamps the log records; it must outlive the pool.
  explicit commit_pool(std::size_t threads, const service::clock& clock = service::wall_clock());
  /// Joins the threads; every lane must be gone by then.
  ~commit_pool();
  commit_pool(const commit_pool&) = delete;
  commit_pool& operator=(const commit_pool&) = delete;

  /// A lane for `store`; `committed(number)` runs on the committing thread once batch
  /// `number` is durable, `failed` when it could not be. The store and the lane must
  /// outlive each other's use: destroying the lane waits until its batch is written,
  /// or drops it if the lane is stalled (none of it was acknowledged).
  std::unique_ptr<lane> open(store::partition_store& store, std::function<void(std::uint64_t)> committed,
                             failure_report failed = {});

  std::size_t thread_count() const { return threads_.size(); }

 private:
  using job = std::pair<std::uint64_t, store::write_batch>;
  void run();
  /// Writes `job` of `lane` on this thread and reports the outcome through the
  /// lane's callbacks (a failure that may clear stalls the lane).
  void commit(lane& lane, job job);

  const service::clock& clock_;
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable lane_idle_;
  std::deque<lane*> queued_;
  bool stopping_ = false;
  /// Pool threads waiting for work.
  std::size_t idle_threads_ = 0;
  /// A caller commits on its own thread (write_here_if_idle).
  bool committing_here_ = false;
  std::vector<std::thread> threads_;
};

class commit_pool::lane {
 public:
  ~lane();
  lane(const lane&) = delete;
  lane& operator=(const lane&) = delete;

  /// Queues batch `number`. The previous batch of this lane must have been
  /// reported committed.
  void write(std::uint64_t number, store::write_batch batch);
  /// As write(), but when the pool is idle (no batch queued or being written, no
  /// other caller committing) the batch is committed on the calling thread before
  /// this returns, and its callback runs there too. A quiet partition's commit
  /// then needs no wake-up of a pool thread, and the report reaches a partition
  /// that is already running: two thread wake-ups fewer per step of a lone
  /// orchestration. Under load the
  /// pool is busy and batches go to it as with write(). At most one caller's
  /// thread is held by a commit at a time.
  void write_here_if_idle(std::uint64_t number, store::write_batch batch);
  /// Queues the batch whose commit failed again; nothing if the lane is not stalled.
  void retry();

 private:
  friend class commit_pool;
  lane(commit_pool& pool, store::partition_store& store, std::function<void(std::uint64_t)> committed,
       failure_report failed)
      : pool_(pool), store_(store), committed_(std::move(committed)), failed_(std::move(failed)) {}

  commit_pool& pool_;
  store::partition_store& store_;
  std::function<void(std::uint64_t)> committed_;
  failure_report failed_;
  // Guarded by the pool's mutex.
  std::optional<std::pair<std::uint64_t, store::write_batch>> job_;
  /// The job's commit failed; it waits for retry() instead of a pool thread.
  bool stalled_ = false;
  /// Threads inside this lane's commit or its callback (the next batch can start
  /// on another thread while the previous one's thread is still leaving).
  int writing_ = 0;
};

}  // namespace dtsd::actors
