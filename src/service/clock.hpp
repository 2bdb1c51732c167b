#pragma once
/// Where everything above the engine reads the time (the engine and core are
/// given it): partitions, coordinators and the service take a clock, so that the
/// simulation and the tests can run leases, timers and session loss on a fake one.

#include <atomic>
#include <cstdint>

namespace dtsd::service {

class clock {
 public:
  virtual ~clock() = default;
  /// Nanoseconds since the Unix epoch.
  virtual std::int64_t now_ns() const = 0;
};

/// The system's wall clock; lives for the whole process.
const clock& wall_clock();

/// A clock that moves only when told to (tests, the simulation). Thread-safe.
class manual_clock final : public clock {
 public:
  explicit manual_clock(std::int64_t start_ns = 1'700'000'000'000'000'000) : now_(start_ns) {}
  std::int64_t now_ns() const override { return now_.load(std::memory_order_acquire); }
  void advance(std::int64_t by_ns) { now_.fetch_add(by_ns, std::memory_order_acq_rel); }
  void set(std::int64_t to_ns) { now_.store(to_ns, std::memory_order_release); }

 private:
  std::atomic<std::int64_t> now_;
};

}  // namespace dtsd::service
