#pragma once
/// Lists of a hub's instances as a dashboard asks for them: any filter (substrings,
/// time windows, statuses), any sort, one page, the count of every match and the
/// matches per status. Each partition answers its top rows from the summaries it
/// keeps in memory (store/catalog.hpp); the service merges the partitions' rows by
/// the same order (`list_before`), so the rows and the counts of a whole hub come
/// from one pass over memory, never from a scan of the stores.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "error.hpp"
#include "model.hpp"

namespace dtsd::core {

enum class list_column : std::uint8_t {
  instance_id,
  name,
  version,
  created_at,
  last_updated_at,
  start_at,
  completed_at,
  status,
  tags,
  entity_key,  ///< Entities: the key part of "@name@key".
};

struct list_sort {
  list_column column = list_column::created_at;
  bool descending = true;
};

/// [from, to): either end open when absent.
struct time_window {
  std::optional<std::int64_t> from_ns;
  std::optional<std::int64_t> to_ns;
  bool any() const { return from_ns || to_ns; }
  bool holds(std::int64_t ns) const { return (!from_ns || ns >= *from_ns) && (!to_ns || ns < *to_ns); }
};

/// Rows a partition is ever asked for at once (start index + page size).
inline constexpr std::size_t list_rows_max = 100000;

struct list_query {
  bool entities = false;  ///< Entities (@name@key) instead of orchestrations.
  std::vector<runtime_status> statuses;  ///< Empty: any. Never narrows `by_status`.
  /// Case-insensitive substrings (empty: any). The tag part matches "key=value".
  std::string id_part, name_part, version_part, tag_part;
  /// Case-insensitive: the name is exactly this / starts with this (empty: any).
  std::string name_exact, name_prefix;
  std::string key_part;  ///< Entities: a substring of the key.
  time_window created, last_updated, started, completed;
  bool top_level_only = false;  ///< Leave out sub-orchestrations.
  std::vector<list_sort> sort;  ///< Empty: newest first.
  std::size_t rows = 100;       ///< Rows wanted from the top of the order (1..list_rows_max).

  /// True when only statuses narrow it: its counts are the kept per-status counters.
  bool counted_by_status() const;
};

/// What a list sorts one instance by, borrowed from wherever the instance is kept.
struct list_key {
  std::string_view instance_id, name, version, tags;
  runtime_status status = runtime_status::pending;
  std::int64_t created_at_ns = 0, last_updated_at_ns = 0, start_at_ns = 0, completed_at_ns = 0;
};

/// What a list shows of one instance, and what it sorts by.
struct list_row {
  std::string instance_id;
  std::string name;
  std::string version;
  std::string tags;  ///< "key=value" pairs joined by ", ", in key order.
  runtime_status status = runtime_status::pending;
  std::int64_t created_at_ns = 0;
  std::int64_t last_updated_at_ns = 0;
  std::int64_t start_at_ns = 0;
  std::int64_t completed_at_ns = 0;
  list_key key() const {
    return {instance_id, name, version, tags, status, created_at_ns, last_updated_at_ns, start_at_ns, completed_at_ns};
  }
  friend bool operator==(const list_row&, const list_row&) = default;
};

using list_status_counts = std::array<std::uint64_t, runtime_status_count>;

struct list_page {
  std::vector<list_row> rows;  ///< The top `rows` of the order.
  std::uint64_t total = 0;     ///< Every match, statuses included.
  /// Every match of the filter without its statuses, per status (DTS's trivia).
  list_status_counts by_status{};
};

/// Checks a query; the error names the field.
expected<void> validate(const list_query& query);

/// The order of a list: the sort columns, then the instance id in the first
/// column's direction (a total order, so pages never repeat or skip a row).
bool list_before(const list_key& a, const list_key& b, const std::vector<list_sort>& sort);

/// Three-way comparison of two rows by one column.
int list_compare(const list_key& a, const list_key& b, list_column column);

/// The key of an entity id "@name@key" (empty for any other id).
std::string_view entity_key_of(std::string_view id);
/// The name of an entity id "@name@key" (the whole id for any other).
std::string_view entity_name_of(std::string_view id);

/// Tags as a list shows them and sorts by them.
std::string tags_text(const tag_map& tags);

/// Lower-case ASCII.
std::string lower_ascii(std::string_view text);
/// Does `text` hold `lowered_part` (already lower case), ignoring ASCII case?
bool contains_ignoring_case(std::string_view text, std::string_view lowered_part);

/// Merges the pages of a hub's partitions: the counts summed, the rows ordered,
/// the page [start, start + count) kept.
list_page merge_list_pages(std::vector<list_page> pages, const std::vector<list_sort>& sort, std::size_t start,
                           std::size_t count);

}  // namespace dtsd::core
