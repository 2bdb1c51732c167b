#pragma once
/// What a partition keeps in memory of each of its instances so that a list of a
/// hub with a million instances answers in milliseconds whatever its filter and
/// sort: a summary per instance (times, status, interned name, version and tags) in
/// (created, id) order, and counts per status. It follows the store: built from the
/// instances table at open and changed only by commits that became durable, so a
/// list never shows what a crash could take back.
///
/// Memory: about 100 bytes per instance plus its id (names, versions and tag sets
/// are shared). Thread safety: `apply` takes a writer lock; `list` a reader lock.

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/list.hpp"
#include "core/model.hpp"

namespace dtsd::store {

/// An instance as the catalog keeps it, before its strings are interned.
struct catalog_entry {
  std::string instance_id;
  std::string name;
  std::string version;
  std::string tags;  ///< core::tags_text.
  core::runtime_status status = core::runtime_status::pending;
  bool child = false;  ///< A sub-orchestration.
  std::int64_t created_at_ns = 0;
  std::int64_t last_updated_at_ns = 0;
  std::int64_t start_at_ns = 0;
  std::int64_t completed_at_ns = 0;
};

catalog_entry catalog_entry_of(const core::instance_record& record);

/// One instance changed by a commit: the row it had (by its created time) goes,
/// the new one (if any) comes.
struct catalog_change {
  std::string instance_id;
  std::optional<std::int64_t> removed_created_at_ns;
  std::optional<catalog_entry> added;
};

class instance_catalog {
 public:
  void apply(std::vector<catalog_change> changes);
  /// Instances the catalog does not hold yet, in any order (a store opening).
  void load(std::vector<catalog_entry> entries);
  core::list_page list(const core::list_query& query) const;

  /// Instances listed (entities included).
  std::size_t size() const;

  /// Instances of each status, orchestrations or entities, as listed.
  core::list_status_counts counts(bool entities) const;

  /// Orchestrations (not entities) that ended with `status` at or before
  /// `ended_by_ns`, the longest ended first, at most `count_max`, skipping those
  /// `skip` names (with their status, for retention's counts).
  template <class Skip>
  std::vector<std::string> ended_by(core::runtime_status status, std::int64_t ended_by_ns, std::size_t count_max,
                                    Skip skip) const {
    std::shared_lock lock(mutex_);
    std::vector<std::string> out;
    const auto& index = ended_[static_cast<std::size_t>(status)];
    for (auto it = index.begin(); it != index.end() && it->first <= ended_by_ns && out.size() < count_max; ++it) {
      if (!skip(it->second)) out.push_back(it->second);
    }
    return out;
  }
  /// Orchestrations (not entities) that ended with `status` after `after_ns` and at
  /// or before `by_ns`, counted up to `count_max`.
  std::size_t ended_between(core::runtime_status status, std::int64_t after_ns, std::int64_t by_ns,
                            std::size_t count_max) const {
    std::shared_lock lock(mutex_);
    const auto& index = ended_[static_cast<std::size_t>(status)];
    std::size_t count = 0;
    if (after_ns == std::numeric_limits<std::int64_t>::max()) return 0;
    for (auto it = index.lower_bound({after_ns + 1, std::string()});
         it != index.end() && it->first <= by_ns && count < count_max; ++it) {
      ++count;
    }
    return count;
  }
  /// When the orchestration that ended longest ago (any terminal status) ended.
  std::optional<std::int64_t> oldest_ended_ns() const;

 private:
  /// Interned strings, counted, with their lower-case form for case-insensitive filters.
  class string_pool {
   public:
    string_pool();
    std::uint32_t acquire(const std::string& text);
    void release(std::uint32_t id);
    const std::string& text(std::uint32_t id) const { return texts_[id]; }
    const std::string& lowered(std::uint32_t id) const { return lowered_[id]; }
    std::size_t slots() const { return texts_.size(); }

   private:
    std::vector<std::string> texts_, lowered_;
    std::vector<std::uint32_t> references_;
    std::vector<std::uint32_t> free_;
    std::unordered_map<std::string, std::uint32_t> ids_;
  };

  struct row {
    std::int64_t created_at_ns = 0;
    std::int64_t last_updated_at_ns = 0;
    std::int64_t start_at_ns = 0;
    std::int64_t completed_at_ns = 0;
    std::uint32_t name = 0, version = 0, tags = 0;
    core::runtime_status status = core::runtime_status::pending;
    bool entity = false;
    bool child = false;
    bool live = false;  ///< False: a tombstone, kept (with its key) until the rows are compacted.
    std::string instance_id;
  };

  void remove(std::int64_t created_at_ns, const std::string& instance_id);
  void add(catalog_entry entry);
  std::vector<row>::iterator position(std::int64_t created_at_ns, const std::string& instance_id);
  void count(const row& r, int by);
  void compact_if_worth_it();
  core::list_key key_of(const row& r) const;
  core::list_row list_row_of(const row& r) const;

  /// (ended at, id) of the orchestrations in each terminal status: retention's
  /// index by completion time, in memory like the rest (built at open).
  void index_ended(const row& r, bool add);

  mutable std::shared_mutex mutex_;
  std::array<std::set<std::pair<std::int64_t, std::string>>, core::runtime_status_count> ended_;
  std::vector<row> rows_;  ///< By (created, id), tombstones among them.
  std::size_t tombstones_ = 0;
  string_pool strings_;
  std::array<core::list_status_counts, 2> counts_{};  ///< [entity][status].
};

}  // namespace dtsd::store
