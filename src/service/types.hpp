#pragma once
/// What the service speaks: requests, answers and views in core model types, with
/// no engine, store, CAF or transport type in sight. Every transport (native Cap'n
/// Proto, gRPC, REST) and every router (the actors of one node, later a cluster)
/// meet here.

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/error.hpp"
#include "core/model.hpp"
#include "core/list.hpp"
#include "core/query.hpp"
#include "core/retention.hpp"
#include "core/schedule.hpp"
#include "core/work_filter.hpp"

namespace dtsd::service {

/// An answer, called exactly once, possibly on another thread; it must not block.
template <class T>
using callback = std::function<void(expected<T>)>;

struct instance_view {
  core::instance_record record;
  std::vector<core::history_event> history;  ///< Filled when asked for.
};

/// A started orchestration (the start is durable when this is answered).
struct started {
  std::string instance_id;
  std::string execution_id;
};

using work_item = std::variant<core::orchestrator_work_item, core::activity_work_item>;

/// How many items of each kind a worker session takes at once.
struct session_slots {
  std::uint32_t orchestrators = 0;
  std::uint32_t activities = 0;
  std::uint32_t entities = 0;  ///< Entity batches (0: the worker runs no entities).
};

/// A connected worker session, as `dtsctl worker list` and the dashboard show it.
struct worker_view {
  std::uint64_t session = 0;
  std::string worker;  ///< What the worker calls itself (gRPC: its workerid header).
  session_slots slots;
  session_slots in_use;  ///< Items leased to it now, per kind.
  core::work_filters filters;
  bool suspect = false;  ///< A lease of it expired unanswered: it gets no new work.
};

/// Upper bounds of the histogram buckets of commit times (seconds) and of batch
/// sizes (instance changes per committed batch); a last bucket takes the rest.
inline constexpr std::array<double, 11> commit_seconds_bounds{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
                                                              0.05,   0.1,   0.25,  0.5,   1.0};
inline constexpr std::array<double, 10> batch_changes_bounds{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};

/// One partition of a hub, as `dtsctl taskhub status` and `/metrics` show it. Read
/// without asking the partition (a stalled one still answers).
/// A hub's retention policy as a partition keeps it.
struct retention_view {
  core::retention_policy policy;  ///< In force.
  bool own = false;               ///< The hub's own; false: dtsd's default (--retention-default).
};

struct partition_view {
  std::uint32_t index = 0;
  /// Empty while it writes; otherwise why its commits fail (a full disk...): it
  /// refuses new writes with errc::resource_exhausted and retries by itself.
  std::string stalled;
  std::int64_t stalled_since_ns = 0;
  std::uint64_t failed_commits = 0;  ///< Since dtsd started.
  std::uint64_t commits = 0;         ///< Batches made durable since dtsd started.
  std::uint64_t committed_changes = 0;  ///< Instance changes in those batches.
  std::int64_t commit_ns_total = 0;  ///< Time from handing a batch over to its durability.
  std::int64_t commit_ns_max = 0;
  /// Work ready to hand out (orchestrator items, activities, entity batches), as of
  /// its last step.
  std::uint64_t ready_orchestrators = 0;
  std::uint64_t ready_activities = 0;
  std::uint64_t ready_entities = 0;
  std::uint64_t live_instances = 0;  ///< Instances held in memory.
  /// When the longest wait for a worker began, per kind (orchestrators, activities,
  /// entities); 0 when nothing of that kind waits.
  std::array<std::int64_t, 3> waiting_since_ns{};
  /// How long the longest wait of any kind had lasted when the view was taken (0: none waits).
  std::int64_t oldest_wait_ns = 0;
  /// Messages it sent to instances (its own or other partitions') that their
  /// partition has not acknowledged yet: what a slow or unreachable receiver holds up.
  std::uint64_t unacknowledged_messages = 0;
  /// Orchestrations started, and ended per status, by its commits since dtsd started.
  std::uint64_t orchestrations_started = 0;
  std::array<std::uint64_t, core::runtime_status_count> orchestrations_ended{};
  std::uint64_t disk_bytes = 0;      ///< What its data takes on disk, as of its last commit (0 in memory).
  /// Orchestrations its retention policy purged since dtsd started, per status.
  std::array<std::uint64_t, core::runtime_status_count> retention_purged{};
  /// When the orchestration it keeps that ended longest ago ended (0: it keeps none).
  std::int64_t oldest_ended_ns = 0;
  /// Orchestrations of the partition per status (core::runtime_status), as of its
  /// last commit; kept by its store, never counted by a scan.
  std::array<std::uint64_t, core::runtime_status_count> orchestrations_by_status{};
  /// Commits per bucket of commit_seconds_bounds (not cumulative; one more for the rest).
  std::array<std::uint64_t, commit_seconds_bounds.size() + 1> commit_seconds_buckets{};
  /// Commits per bucket of batch_changes_bounds (not cumulative; one more for the rest).
  std::array<std::uint64_t, batch_changes_bounds.size() + 1> batch_changes_buckets{};
};

/// The bucket of `bounds` that `value` falls in (bounds.size() for above them all).
template <std::size_t N>
std::size_t bucket_of(const std::array<double, N>& bounds, double value) {
  std::size_t i = 0;
  while (i < N && value > bounds[i]) ++i;
  return i;
}

/// A hub at a glance: its sessions, leases and partitions together.
struct hub_statistics {
  std::vector<worker_view> workers;
  std::vector<partition_view> partitions;
  session_slots slots;    ///< Of every session together.
  session_slots in_use;   ///< Leases held now, per kind.
  std::uint64_t leases = 0;
  session_slots backlog;  ///< Ready work of every partition together.
  std::uint64_t commits = 0;
  double commit_ms_mean = 0;
  std::int64_t commit_ns_max = 0;
  double batch_changes_mean = 0;  ///< Instance changes per committed batch.
};

/// Where a worker session's work goes. Called from actor threads; must not block.
class work_sink {
 public:
  virtual ~work_sink() = default;
  virtual void push(std::vector<work_item> items) = 0;
  virtual void keep_alive() = 0;
  /// dtsd closed the session (its worker stopped answering): the transport ends
  /// the worker's stream with `why`; the worker may connect again.
  virtual void end(const std::string& why) { (void)why; }
};

struct entity_clean_request {
  bool remove_empty = false;            ///< Entities with no state, lock or waiting messages.
  bool release_orphaned_locks = false;  ///< Locks whose orchestration has ended or is gone.
  std::string continuation_token;
  /// Only entities unchanged for this long are removed (0: any).
  std::int64_t idle_ns = 0;
};
struct entity_clean_result {
  std::size_t removed = 0;
  std::size_t released = 0;
  std::string continuation_token;  ///< Empty when every entity was looked at.
};

/// A purge: how many instances went, and whether it went to the end (a purge
/// answered at its deadline goes on after the answer).
struct purge_result {
  std::size_t purged = 0;
  bool complete = true;
};

/// The changes a client asks of one instance, as data: what a partition applies
/// and what would cross to another node.
namespace changes {
struct raise_event {
  std::string instance_id;
  std::string name;
  core::payload input;
};
struct terminate {
  std::string instance_id;
  core::terminate_request request;
};
struct suspend {
  std::string instance_id;
  core::payload reason;
};
struct resume {
  std::string instance_id;
  core::payload reason;
};
struct rewind {
  std::string instance_id;
  core::payload reason;
};
/// A message from a client to its instance (entity operations signaled, lock releases).
struct deliver {
  core::instance_message message;
};
/// An entity deleted with its state.
struct delete_entity {
  std::string instance_id;
};
}  // namespace changes
using change = std::variant<changes::raise_event, changes::terminate, changes::suspend, changes::resume,
                            changes::rewind, changes::deliver, changes::delete_entity>;
/// The instance a change is for.
const std::string& target_of(const change& request);

/// One step of a purge walk: whether the instance went, and (when asked) the
/// sub-orchestrations it had created, to purge next.
struct purge_step {
  bool purged = false;
  std::vector<std::string> children;
};

}  // namespace dtsd::service
