#include "service/deadlines.hpp"

#include <vector>

namespace dtsd::service {

deadlines::deadlines() : thread_([this] { run(); }) {}

deadlines::~deadlines() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

bool deadlines::after(std::chrono::nanoseconds delay, std::function<void()> action) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || due_.size() >= pending_max) return false;
    due_.emplace(std::chrono::steady_clock::now() + delay, std::move(action));
  }
  changed_.notify_all();
  return true;
}

void deadlines::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (stopping_) break;
    if (due_.empty()) {
      changed_.wait(lock);
      continue;
    }
    const auto first = due_.begin()->first;
    if (changed_.wait_until(lock, first) != std::cv_status::timeout && std::chrono::steady_clock::now() < first) {
      continue;  // Woken early: something new, or stopping.
    }
    std::vector<std::function<void()>> ready;
    const auto now = std::chrono::steady_clock::now();
    while (!due_.empty() && due_.begin()->first <= now) {
      ready.push_back(std::move(due_.begin()->second));
      due_.erase(due_.begin());
    }
    lock.unlock();
    for (auto& action : ready) action();  // Without the lock: an action may schedule another.
    lock.lock();
  }
  auto left = std::move(due_);
  due_.clear();
  lock.unlock();
  for (auto& [when, action] : left) action();
}

}  // namespace dtsd::service
