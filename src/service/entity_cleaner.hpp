#pragma once
/// Cleans every task hub's entity storage in the background, now and then, as
/// DTS's CleanEntityStorage does when a client asks: entities with no state, lock
/// or waiting messages that stayed so for a whole period are removed, and locks
/// held by orchestrations that ended are released. A thread of its own, asleep
/// between passes; it stops when destroyed.

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "service/service.hpp"

namespace dtsd::service {

class entity_cleaner {
 public:
  /// A pass every `period` (which is also how long an entity must have stayed
  /// empty to go); the first after one period.
  entity_cleaner(task_service& service, std::chrono::seconds period);
  ~entity_cleaner();
  entity_cleaner(const entity_cleaner&) = delete;
  entity_cleaner& operator=(const entity_cleaner&) = delete;

  /// One pass over every hub, every page; what it did.
  entity_clean_result clean_all();

 private:
  void run();
  bool stopping();

  task_service& service_;
  std::chrono::seconds period_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace dtsd::service
