// The in-memory engine: ordered maps behind a reader-writer lock. A write keeps an
// undo list so a body that throws leaves the maps as they were.

#include <array>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "store/kv.hpp"

namespace dtsd::store {
namespace {

using ordered_map = std::map<std::string, std::string, std::less<>>;
using tables = std::array<ordered_map, table_count>;

/// Reads and (inside a write) writes the maps. Reads see the writer's own changes
/// because there is only one copy of the data.
class memory_access final : public kv_writer {
 public:
  explicit memory_access(tables& data) : data_(data) {}

  std::optional<std::string_view> get(table t, std::string_view key) override {
    auto& rows = data_[static_cast<std::size_t>(t)];
    auto found = rows.find(key);
    if (found == rows.end()) return std::nullopt;
    return std::string_view(found->second);
  }

  void scan(table t, std::string_view from, std::string_view to,
            const row_visitor& visit) override {
    auto& rows = data_[static_cast<std::size_t>(t)];
    for (auto it = rows.lower_bound(from); it != rows.end(); ++it) {
      if (!to.empty() && std::string_view(it->first) >= to) break;
      if (!visit(it->first, it->second)) break;
    }
  }

  std::optional<std::string> last_key(table t) override {
    auto& rows = data_[static_cast<std::size_t>(t)];
    if (rows.empty()) return std::nullopt;
    return rows.rbegin()->first;
  }

  void put(table t, std::string_view key, std::string_view value) override {
    auto& rows = data_[static_cast<std::size_t>(t)];
    auto found = rows.find(key);
    if (found == rows.end()) {
      undo_.push_back({t, std::string(key), std::nullopt});
      rows.emplace(std::string(key), std::string(value));
    } else {
      undo_.push_back({t, found->first, std::move(found->second)});
      found->second.assign(value);
    }
  }

  void erase(table t, std::string_view key) override {
    auto& rows = data_[static_cast<std::size_t>(t)];
    auto found = rows.find(key);
    if (found == rows.end()) return;
    undo_.push_back({t, found->first, std::move(found->second)});
    rows.erase(found);
  }

  void erase_range(table t, std::string_view from, std::string_view to) override {
    auto& rows = data_[static_cast<std::size_t>(t)];
    auto it = rows.lower_bound(from);
    while (it != rows.end() && (to.empty() || std::string_view(it->first) < to)) {
      undo_.push_back({t, it->first, std::move(it->second)});
      it = rows.erase(it);
    }
  }

  void roll_back() {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
      auto& rows = data_[static_cast<std::size_t>(it->t)];
      if (it->previous) {
        rows.insert_or_assign(it->key, std::move(*it->previous));
      } else {
        rows.erase(it->key);
      }
    }
    undo_.clear();
  }

 private:
  struct undo_entry {
    table t;
    std::string key;
    std::optional<std::string> previous;
  };
  tables& data_;
  std::vector<undo_entry> undo_;
};

class memory_engine final : public kv_engine {
 public:
  expected<void> write(const std::function<void(kv_writer&)>& body) override {
    std::unique_lock lock(mutex_);
    memory_access writer(data_);
    try {
      body(writer);
    } catch (...) {
      writer.roll_back();
      throw;
    }
    return {};
  }

  expected<void> read(const std::function<void(kv_reader&)>& body) override {
    std::shared_lock lock(mutex_);
    memory_access reader(data_);
    body(reader);
    return {};
  }

 private:
  std::shared_mutex mutex_;
  tables data_;
};

}  // namespace

std::unique_ptr<kv_engine> open_memory() { return std::make_unique<memory_engine>(); }

}  // namespace dtsd::store
