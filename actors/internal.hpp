#pragma once
/// What the actors of one hub say to each other. Included only by actors/*.cpp:
/// CAF headers are heavy, so they stay out of every other translation unit.

#include <caf/all.hpp>

#include <array>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "actors/commit_pool.hpp"
#include "actors/dispatcher.hpp"
#include "actors/protocol.hpp"
#include "actors/scheduler.hpp"
#include "engine/partition_engine.hpp"

namespace dtsd::actors {

using run_atom = caf::atom_constant<caf::atom("run")>;
using committed_atom = caf::atom_constant<caf::atom("committed")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using take_atom = caf::atom_constant<caf::atom("take")>;
using work_atom = caf::atom_constant<caf::atom("work")>;
using ready_atom = caf::atom_constant<caf::atom("ready")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using abandon_atom = caf::atom_constant<caf::atom("abandon")>;
using open_atom = caf::atom_constant<caf::atom("open")>;
using close_atom = caf::atom_constant<caf::atom("close")>;
using wire_atom = caf::atom_constant<caf::atom("wire")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
using workers_atom = caf::atom_constant<caf::atom("workers")>;
using alive_atom = caf::atom_constant<caf::atom("alive")>;
using end_atom = caf::atom_constant<caf::atom("end")>;
using stall_atom = caf::atom_constant<caf::atom("stall")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using handover_atom = caf::atom_constant<caf::atom("handover")>;
using gone_atom = caf::atom_constant<caf::atom("gone")>;
using resend_atom = caf::atom_constant<caf::atom("resend")>;
using expire_atom = caf::atom_constant<caf::atom("expire")>;

/// How a partition is doing, set by its actor and read by the router's status
/// calls without a message (so a stalled hub still answers them).
struct partition_health {
  std::mutex mutex;
  std::optional<std::string> stalled;  ///< Why its commits fail, while they do.
  std::int64_t since_ns = 0;           ///< When they started failing.
  std::uint64_t failed_commits = 0;    ///< Since the process started.
  std::uint64_t commits = 0;
  std::uint64_t committed_changes = 0;
  std::int64_t commit_ns_total = 0;
  std::int64_t commit_ns_max = 0;
  std::uint64_t ready_orchestrators = 0;
  std::uint64_t ready_activities = 0;
  std::uint64_t ready_entities = 0;
  std::uint64_t live_instances = 0;
  std::uint64_t unacknowledged_messages = 0;
  decltype(service::partition_view::waiting_since_ns) waiting_since_ns{};
  store::lifecycle_counts lifecycle;
  decltype(service::partition_view::commit_seconds_buckets) commit_seconds_buckets{};
  decltype(service::partition_view::batch_changes_buckets) batch_changes_buckets{};
  decltype(service::partition_view::orchestrations_by_status) orchestrations_by_status{};
  std::uint64_t disk_bytes = 0;
  decltype(service::partition_view::retention_purged) retention_purged{};
  std::int64_t oldest_ended_ns = 0;
};

/// An operation for a live instance (see engine/instance.hpp), sent to its actor
/// and back with the outcome filled in.
struct instance_call {
  instance_call(std::uint64_t n, engine::instance_op o) : number(n), op(std::move(o)) {}
  std::uint64_t number;
  engine::instance_op op;
  engine::instance_outcome outcome;
};
using instance_call_ptr = std::shared_ptr<instance_call>;

struct session_info {
  std::uint64_t id = 0;
  per_kind slots{};
  std::shared_ptr<service::work_sink> sink;
  core::work_filters filters;
  std::string worker;  ///< What the worker calls itself, if anything.
};

/// Answers a workers_atom: the hub's sessions as they are now.
using workers_reply = std::shared_ptr<callback<std::vector<worker_view>>>;

/// Set once a draining partition has committed everything it holds.
using drain_signal = std::shared_ptr<std::promise<void>>;

/// Spawns the actor of one partition; it owns `engine` and commits through a lane
/// of `commits`, which must outlive it.
caf::actor spawn_partition(caf::actor_system& system, std::unique_ptr<engine::partition_engine> engine,
                           commit_pool& commits, std::shared_ptr<partition_health> health,
                           const service::clock& clock, const remote_peer* remote = nullptr);

/// Spawns the coordinator of a hub: worker sessions, leases, push dispatch.
caf::actor spawn_coordinator(caf::actor_system& system, std::int64_t lease_ms, std::int64_t keep_alive_ms,
                             const service::clock& clock);

}  // namespace dtsd::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::partition_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::peer_message)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::give_back)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<dtsd::actors::slot_handover>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::instance_call_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<dtsd::engine::live_instance>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::work_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::work_kinds)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::per_kind)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::take_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::workers_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::drain_signal)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::commit_pool*)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<dtsd::actors::partition_health>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::actors::session_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<caf::actor>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::core::orchestrator_work_item)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dtsd::core::activity_request)
