#pragma once
/// When each piece of work began to wait for a worker, so that the oldest wait of
/// a partition is known at once (the `/metrics` "oldest pending" age) without
/// walking its queues. A key is added once (its first wait counts) and removed when
/// the work is handed out or dropped.

#include <cstdint>
#include <map>
#include <optional>

namespace dtsd::engine {

template <class Key>
class waiting_since {
 public:
  void add(const Key& key, std::int64_t since_ns) {
    if (since_.emplace(key, since_ns).second) ++times_[since_ns];
  }

  void remove(const Key& key) {
    auto found = since_.find(key);
    if (found == since_.end()) return;
    auto time = times_.find(found->second);
    if (--time->second == 0) times_.erase(time);
    since_.erase(found);
  }

  /// When the longest wait began; none when nothing waits.
  std::optional<std::int64_t> oldest_ns() const {
    if (times_.empty()) return std::nullopt;
    return times_.begin()->first;
  }

  std::size_t size() const { return since_.size(); }

 private:
  std::map<Key, std::int64_t> since_;
  std::map<std::int64_t, std::size_t> times_;  ///< Waits begun at each time.
};

}  // namespace dtsd::engine
