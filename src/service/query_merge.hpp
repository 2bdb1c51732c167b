#pragma once
/// Merging the query pages of a hub's partitions into one page.
///
/// Every partition answers a page in (created time, instance id) order, and a
/// token for where it stopped. The merged page keeps that order and its token is
/// its last item. A partition that has more has looked only up to its own token:
/// nothing past the lowest such token (the horizon) may be returned yet, or the
/// next page, which starts after the merged page's last item, would skip that
/// partition's rows in between.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "core/query.hpp"

namespace dtsd::service {

/// The (created time, instance id) position a page token names, or nothing for
/// "no more" (or a token that is not one).
std::optional<std::pair<std::int64_t, std::string>> token_position(const std::string& token);
std::string token_at(std::int64_t created_ns, const std::string& instance_id);

/// Not thread-safe: the caller serializes add and fail.
class query_merge {
 public:
  explicit query_merge(std::size_t page_size) : page_size_(page_size) {}
  void add(core::query_page page);
  void fail(dtsd::error why);
  /// The merged page, or the first failure; call once, after every partition.
  expected<core::query_page> finish();

 private:
  std::size_t page_size_;
  std::vector<core::instance_record> records_;
  std::optional<std::pair<std::int64_t, std::string>> horizon_;
  std::optional<dtsd::error> failure_;
};

/// What entity cleaning decides for one entity.
struct entity_verdict {
  bool remove = false;      ///< No state, no lock, nothing waiting: it can go.
  bool check_lock = false;  ///< Locked: release it if its holder has ended or is gone.
};
entity_verdict judge_entity(const core::instance_record& entity, bool remove_empty, bool release_orphaned_locks);
/// Whether a lock held by an orchestration in this state (nothing: gone) is orphaned.
bool lock_orphaned(const std::optional<core::instance_record>& holder);

}  // namespace dtsd::service
