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
#include <optional>
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

  mutable std::shared_mutex mutex_;
  std::vector<row> rows_;  ///< By (created, id), tombstones among them.
  std::size_t tombstones_ = 0;
  string_pool strings_;
  std::array<core::list_status_counts, 2> counts_{};  ///< [entity][status].
};

}  // namespace dtsd::store
