#pragma once
/// Work item filters: what a worker session says it can run (the protocol's
/// GetWorkItemsRequest.workItemFilters). Routing is strict, as in DTS: an item
/// goes only to a session whose filter accepts it; one that no connected session
/// accepts waits (it is never given to a worker that would run it with the wrong
/// code). A session without filters takes everything.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "error.hpp"
#include "model.hpp"

namespace dtsd::core {

/// One name a worker runs, with the versions it runs (none listed: any version).
struct name_filter {
  std::string name;
  std::vector<std::string> versions;
  friend bool operator==(const name_filter&, const name_filter&) = default;
};

/// What a session takes of one kind of work. Empty optional: everything of that
/// kind; an empty list: none of it.
using kind_filter = std::optional<std::vector<name_filter>>;

/// Filters per kind of work. A worker that sends filters names what it runs of
/// each kind; one that sends none (or an empty set) runs everything.
struct work_filters {
  kind_filter orchestrations;
  kind_filter activities;
  kind_filter entities;  ///< Entity names; their versions are ignored.
  /// In a cluster: only work of partitions the node the worker connected to serves
  /// (no session is relayed to the other nodes for it). Not sent between nodes.
  bool this_node_only = false;
  /// True when every kind accepts everything.
  bool accepts_everything() const { return !orchestrations && !activities && !entities; }
  friend bool operator==(const work_filters&, const work_filters&) = default;
};

/// The kinds of work a filter applies to; each matches a little differently.
enum class filter_kind { orchestration, activity, entity };

/// Whether `filter` accepts work named `name` at `version`.
/// - Orchestrations: a listed version must match exactly (none: "" matches).
/// - Activities: the same, except that an activity scheduled without a version
///   runs on any worker that has its name (SDKs version activities only on
///   request, while a strict worker lists its own version for every name).
/// - Entities: names compare without regard to case (SDKs lower-case them in
///   entity ids); versions do not apply.
bool accepts(const kind_filter& filter, std::string_view name, const payload& version,
             filter_kind kind = filter_kind::orchestration);

/// Folds `more` into `into`: the result accepts what either accepts.
void widen(kind_filter& into, const kind_filter& more);

/// A bound on what a worker may send: names per kind, versions per name.
inline constexpr std::size_t filter_names_max = 10000;
inline constexpr std::size_t filter_versions_max = 100;

/// Refuses filters over the bounds above, or with an empty name.
expected<void> validate(const work_filters& filters);

/// "name@v1|v2, other" for logs and `dtsctl worker list`; "*" for everything.
std::string describe(const kind_filter& filter);

}  // namespace dtsd::core
