#pragma once
/// The typed partition protocol: every message a partition takes, as data.
///
/// - requests (from the router, on behalf of clients and workers): each carries
///   what to do and where the answer goes. In this process the answer is a
///   callback; across nodes it becomes a correlation id on the link;
/// - peer messages (partition to partition): outbox entries and their receipts;
/// - dispatch messages (coordinator and partitions): offers, takes, give-backs
///   (actors/dispatcher.hpp).
///
/// `serve` carries out a request on a partition's engine; the actors only route
/// messages to it. No CAF here: the simulation and a remote link use the same.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "actors/dispatcher.hpp"
#include "engine/partition_engine.hpp"
#include "service/types.hpp"

namespace dtsd::actors {

namespace requests {
struct start {
  core::start_request request;
  callback<service::started> done;
};
/// Durable state only: record (and history) from one read of the store.
struct read {
  std::string instance_id;
  bool with_history = false;
  callback<std::optional<service::instance_view>> done;
};
/// Answered once the instance started (or ended) durably; `handle` names it.
struct await {
  std::string instance_id;
  bool until_completed = false;
  std::uint64_t handle = 0;
  callback<core::instance_record> done;
};
struct forget_wait {
  std::string instance_id;
  std::uint64_t handle = 0;
};
struct apply {
  service::change change;
  callback<void> done;
};
/// A worker's answer; once it is durable, the slot it held is freed at the
/// partition (partition_context::slot_freed).
struct complete_orchestrator {
  core::orchestrator_completion completion;
  callback<void> done;
  std::uint64_t session = 0;
};
struct complete_activity {
  core::activity_result result;
  callback<void> done;
  std::uint64_t session = 0;
};
struct purge {
  std::string instance_id;
  bool children = false;  ///< Answer the sub-orchestrations it created too.
  callback<service::purge_step> done;
};
struct query {
  core::instance_query query;
  callback<core::query_page> done;
};
struct list {
  core::list_query query;
  callback<core::list_page> done;
};
/// The hub's retention policy at the partition; with `set`, made `policy` first
/// (none: dtsd's default again) and answered once that is durable.
struct retention {
  bool set = false;
  std::optional<core::retention_policy> policy;
  callback<service::retention_view> done;
};
/// A command for the partition's schedules (core/schedule.hpp), answered with the
/// schedules it concerns once what it changed is durable.
struct schedule {
  core::schedule_command command;
  callback<std::vector<core::schedule>> done;
};
}  // namespace requests

using partition_request =
    std::variant<requests::start, requests::read, requests::await, requests::forget_wait, requests::apply,
                 requests::complete_orchestrator, requests::complete_activity, requests::purge, requests::query,
                 requests::list, requests::retention, requests::schedule>;

/// Partition to partition.
namespace peer {
/// A message from another partition's outbox (deduplicated by source and sequence).
struct delivery {
  store::outbox_entry entry;
};
/// The receiver has made durable `source`'s messages up to `sequence` (from `from`).
struct receipt {
  std::uint32_t from = 0;
  std::uint64_t sequence = 0;
};
}  // namespace peer
using peer_message = std::variant<peer::delivery, peer::receipt>;

/// Coordinator to partition: an item leased under `token` comes back unprocessed.
struct give_back {
  std::uint64_t token = 0;
  lease held;
};

/// How a partition reaches the other partitions of its hub. In this process the
/// link is a message to the peer's actor; across nodes (the cluster) a Cap'n Proto
/// connection that may drop, after which `resend_unacknowledged` runs again.
class peer_link {
 public:
  virtual ~peer_link() = default;
  virtual void send(std::uint32_t partition, peer_message message) = 0;
};

/// Where a partition's messages go when the partition they are for is served by
/// another node (a cluster; rpc/node_links.hpp); a single node has none.
using remote_peer = std::function<void(const std::string& hub, std::uint32_t partition, const peer_message& message)>;

/// Sends every message of the outbox that `to` (or, with nothing, any partition)
/// has not acknowledged: after a start, and after a link to a peer comes back.
/// The one place where unacknowledged messages are sent again.
void resend_unacknowledged(engine::partition_engine& engine, peer_link& link,
                           std::optional<std::uint32_t> to = std::nullopt);
/// The same for every partition `to` accepts.
void resend_unacknowledged(engine::partition_engine& engine, peer_link& link,
                           const std::function<bool(std::uint32_t)>& to);

/// What a partition lends to `serve`.
class partition_context {
 public:
  virtual ~partition_context() = default;
  virtual engine::partition_engine& engine() = 0;
  virtual std::int64_t now_ns() const = 0;
  /// Runs `action` once batch `batch` is durable.
  virtual void after_commit(std::uint64_t batch, std::function<void()> action) = 0;
  /// Answers `done` once the instance started (or ended) durably; `handle` names
  /// the wait for remove_waiter.
  virtual void add_waiter(const std::string& instance_id, bool until_completed, std::uint64_t handle,
                          callback<core::instance_record> done) = 0;
  virtual void remove_waiter(const std::string& instance_id, std::uint64_t handle) = 0;
  /// Why the partition refuses new writes now (it cannot commit), or nothing.
  virtual const std::optional<dtsd::error>& write_refusal() const = 0;
  /// A worker's answer for `token` is durable: the session's slot of `kind` is
  /// free here, to use again or to hand back to the coordinator (slot_handover).
  /// A partition without sessions (a test's) ignores it.
  virtual void slot_freed(std::uint64_t session, work_kind kind, std::uint64_t token) {
    (void)session, (void)kind, (void)token;
  }
  /// A worker's answer for `token` was refused for good (its slot is freed at the
  /// coordinator): whatever the partition kept about the token goes.
  virtual void answer_refused(std::uint64_t token) { (void)token; }
};

/// Carries out `request` on the partition: reads answer at once from the store,
/// changes once the batch holding them is durable.
void serve(partition_context& partition, partition_request request);
/// A peer's message: a delivery is applied (and deduplicated), a receipt trims the outbox.
void serve(partition_context& partition, peer_message message);

}  // namespace dtsd::actors
