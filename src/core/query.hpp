#pragma once
/// Queries over a hub's instances, as every layer sees them: a transport builds
/// one, the service merges the pages of the partitions, a partition's store
/// answers it from its indexes.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/model.hpp"

namespace dtsd::core {

struct instance_query {
  std::vector<runtime_status> statuses;  ///< Empty: any status.
  std::optional<std::int64_t> created_from_ns;  ///< Inclusive.
  std::optional<std::int64_t> created_to_ns;    ///< Inclusive.
  std::string name_prefix;
  std::string instance_id_prefix;
  /// Only instances of this version ("" matches an instance without one).
  std::optional<std::string> version;
  tag_map tags;  ///< Every tag must be present with this value.
  std::size_t page_size = 100;
  std::string continuation_token;  ///< From the previous page; empty for the first.
  bool fetch_payloads = true;      ///< False drops input, output and custom status.
  bool entities = false;           ///< Entities (@name@key) instead of orchestrations.
  /// Bounds the work of one call: past this many index rows the page ends early
  /// (maybe empty) with a token to go on from.
  std::size_t scan_count_max = 10000;
};
inline constexpr std::size_t query_page_size_max = 1000;

/// Results are ordered by (created time, instance id) in every partition, so pages
/// of several partitions merge by the same order and share one token format.
struct query_page {
  std::vector<instance_record> instances;
  std::string continuation_token;  ///< Empty when there is nothing more.
};

/// An activity handed to a worker under a lease token.
struct activity_work_item {
  activity_request request;
  std::uint64_t completion_token = 0;
};

}  // namespace dtsd::core
