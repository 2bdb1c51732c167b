#pragma once
/// Actions due after a delay, run on one thread of their own: how the service
/// answers a long call by a deadline (a purge-where with a time budget) without a
/// thread per call.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace dtsd::service {

class deadlines {
 public:
  /// Actions waiting at once; past this, `after` refuses.
  static constexpr std::size_t pending_max = 4096;

  deadlines();
  /// Runs every action still waiting, at once, then stops the thread: whoever
  /// waits for an answer gets it before the service goes.
  ~deadlines();
  deadlines(const deadlines&) = delete;
  deadlines& operator=(const deadlines&) = delete;

  /// Runs `action` on the deadline thread once `delay` has passed (on the steady
  /// clock). False, and nothing scheduled, when pending_max actions wait already.
  bool after(std::chrono::nanoseconds delay, std::function<void()> action);

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable changed_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> due_;
  bool stopping_ = false;
  std::thread thread_;  ///< Declared last: starts once everything it uses is there.
};

}  // namespace dtsd::service
