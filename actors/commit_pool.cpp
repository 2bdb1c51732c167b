#include "actors/commit_pool.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <utility>

namespace dtsd::actors {
commit_pool::commit_pool(std::size_t threads, const service::clock& clock) : clock_(clock) {
  for (std::size_t i = 0; i < std::max<std::size_t>(1, threads); ++i) threads_.emplace_back([this] { run(); });
}

commit_pool::~commit_pool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  for (auto& thread : threads_) thread.join();
}

std::unique_ptr<commit_pool::lane> commit_pool::open(store::partition_store& store,
                                                     std::function<void(std::uint64_t)> committed,
                                                     failure_report failed) {
  return std::unique_ptr<lane>(new lane(*this, store, std::move(committed), std::move(failed)));
}

void commit_pool::run() {
  for (;;) {
    lane* next = nullptr;
    job job;
    {
      std::unique_lock lock(mutex_);
      ++idle_threads_;
      work_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
      --idle_threads_;
      if (queued_.empty()) return;  // Stopping, and every lane is written out.
      next = queued_.front();
      queued_.pop_front();
      job = std::move(*next->job_);
      next->job_.reset();
      ++next->writing_;
    }
    commit(*next, std::move(job));
    {
      std::lock_guard lock(mutex_);
      --next->writing_;
    }
    lane_idle_.notify_all();
  }
}

void commit_pool::commit(lane& next, job job) {
  auto committed = [&] {
    try {
      return next.store_.commit(job.second, clock_.now_ns());
    } catch (const std::exception& failed) {
      // Not a store failure (out of memory, a record it could not encode): whether
      // on a pool thread or a partition's, memory and disk may disagree from here.
      spdlog::critical("partition {} of hub '{}': commit threw: {}; exiting", next.store_.identity().partition_index,
                       next.store_.identity().task_hub, failed.what());
      std::_Exit(70);
    }
  }();
  // Retried: an I/O error (it may clear), and a store fenced by a newer owner
  // (nothing was written; the partition stops once its node sees the move).
  const bool retried = !committed && (committed.error().code == errc::io ||
                                      committed.error().code == errc::failed_precondition);
  if (!committed && (!retried || !next.failed_)) {
    // A failure retrying cannot clear (LMDB's fatal state, a transaction it
    // refuses): memory and disk disagree from here on; only a restart from disk
    // is safe.
    spdlog::critical("partition {} of hub '{}': commit failed: {}; exiting", next.store_.identity().partition_index,
                     next.store_.identity().task_hub, committed.error().message);
    std::_Exit(70);
  }
  if (!committed) {
    // Nothing of the batch reached the disk (the store's counters move only on
    // success): keep it for a retry, and let the owner decide when.
    const auto number = job.first;
    {
      std::lock_guard lock(mutex_);
      next.job_ = std::move(job);
      next.stalled_ = true;
    }
    next.failed_(number, committed.error());
  } else {
    next.committed_(job.first);
  }
}

commit_pool::lane::~lane() {
  std::unique_lock lock(pool_.mutex_);
  pool_.lane_idle_.wait(lock, [this] { return (!job_ || stalled_) && writing_ == 0; });
  if (job_) {
    spdlog::warn("partition {} of hub '{}': batch {} was never committed and is dropped (none of it was acknowledged)",
                 store_.identity().partition_index, store_.identity().task_hub, job_->first);
  }
}

void commit_pool::lane::retry() {
  {
    std::lock_guard lock(pool_.mutex_);
    if (!job_ || !stalled_) return;
    stalled_ = false;
    pool_.queued_.push_back(this);
  }
  pool_.work_.notify_one();
}

void commit_pool::lane::write_here_if_idle(std::uint64_t number, store::write_batch batch) {
  {
    std::lock_guard lock(pool_.mutex_);
    // Idle: every pool thread waits for work and no other caller commits on its
    // own thread (at most one caller's thread is held by a commit at a time).
    if (!pool_.queued_.empty() || pool_.idle_threads_ != pool_.threads_.size() || pool_.committing_here_) {
      job_.emplace(number, std::move(batch));
      pool_.queued_.push_back(this);
      pool_.work_.notify_one();
      return;
    }
    pool_.committing_here_ = true;
    ++writing_;
  }
  pool_.commit(*this, {number, std::move(batch)});
  {
    std::lock_guard lock(pool_.mutex_);
    pool_.committing_here_ = false;
    --writing_;
  }
  pool_.lane_idle_.notify_all();
}

void commit_pool::lane::write(std::uint64_t number, store::write_batch batch) {
  {
    std::lock_guard lock(pool_.mutex_);
    job_.emplace(number, std::move(batch));
    pool_.queued_.push_back(this);
  }
  pool_.work_.notify_one();
}

}  // namespace dtsd::actors
