#pragma once
/// What lies under the service: a registry of task hubs and a way to reach each
/// partition of a hub and the hub's worker sessions. One node implements it with
/// actors (actors/scheduler.hpp); a cluster will implement it across nodes. Every
/// call names one instance (and so one partition), one partition, or one session:
/// operations that span partitions (queries, purges of many, recursion, restarts)
/// are composed above, in the service, once for every router.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "service/types.hpp"

namespace dtsd::service {

class router {
 public:
  virtual ~router() = default;

  // ---- hubs
  virtual expected<void> create_task_hub(const std::string& hub, std::uint32_t partition_count) = 0;
  /// Deletes a hub and all its data. One that holds instances goes only with
  /// `force`. New calls on it are refused at once; what its partitions hold is
  /// committed first, and calls they had not answered are answered.
  virtual expected<void> delete_task_hub(const std::string& hub, bool force) = 0;
  virtual std::vector<std::string> task_hubs() = 0;
  /// errc::unknown_task_hub when there is no such hub.
  virtual expected<std::uint32_t> partition_count(const std::string& hub) = 0;

  // ---- one instance
  virtual void start(const std::string& hub, core::start_request request, callback<started> done) = 0;
  /// Durable state only.
  virtual void get(const std::string& hub, const std::string& instance_id, bool with_history,
                   callback<std::optional<instance_view>> done) = 0;
  /// Answers once the instance started (or, with `until_completed`, ended) durably.
  /// No time limit; returns a handle for cancel_wait.
  virtual std::uint64_t wait(const std::string& hub, const std::string& instance_id, bool until_completed,
                             callback<core::instance_record> done) = 0;
  /// The waiter gave up: its callback never runs.
  virtual void cancel_wait(const std::string& hub, const std::string& instance_id, std::uint64_t handle) = 0;
  /// Applies a change; answers once it is durable.
  virtual void change(const std::string& hub, change request, callback<void> done) = 0;
  /// Purges one terminal instance once durable; with `children`, answers the
  /// sub-orchestrations it created too.
  virtual void purge_one(const std::string& hub, const std::string& instance_id, bool children,
                         callback<purge_step> done) = 0;

  // ---- one partition
  virtual void query_partition(const std::string& hub, std::uint32_t partition, core::instance_query query,
                               callback<core::query_page> done) = 0;
  /// The partition's top `query.rows` rows of a list and its counts (from memory).
  virtual void list_partition(const std::string& hub, std::uint32_t partition, core::list_query query,
                              callback<core::list_page> done) = 0;
  /// The hub's retention policy as `partition` keeps it; with `set`, it becomes
  /// `policy` there first (none: dtsd's default), answered once durable.
  virtual void retention_partition(const std::string& hub, std::uint32_t partition, bool set,
                                   std::optional<core::retention_policy> policy,
                                   callback<retention_view> done) = 0;
  /// A command for the schedules `partition` keeps (core/schedule.hpp): the
  /// schedules it concerns, as they are after it, once durable.
  virtual void schedule_partition(const std::string& hub, std::uint32_t partition, core::schedule_command command,
                                  callback<std::vector<core::schedule>> done) = 0;
  /// The hub's partitions and whether each can write; answered without asking them.
  virtual expected<std::vector<partition_view>> partitions(const std::string& hub) = 0;

  // ---- worker sessions
  /// Opens a worker session; returns its id. Work goes to it only when `filters`
  /// accept it; `worker` names it in listings.
  virtual expected<std::uint64_t> open_session(const std::string& hub, session_slots slots,
                                               std::shared_ptr<work_sink> sink, core::work_filters filters,
                                               std::string worker) = 0;
  virtual void workers(const std::string& hub, callback<std::vector<worker_view>> done) = 0;
  /// Everything the session still holds is given back for re-dispatch.
  virtual void close_session(std::uint64_t session) = 0;
  /// The session's worker answered a keep-alive.
  virtual void session_alive(std::uint64_t session) = 0;
  virtual void complete_orchestrator(std::uint64_t session, core::orchestrator_completion completion,
                                     callback<void> done) = 0;
  virtual void complete_activity(std::uint64_t session, core::activity_result result, callback<void> done) = 0;
  /// The worker gives the item under `token` back unprocessed.
  virtual void abandon(std::uint64_t session, std::uint64_t token) = 0;

  /// Stops taking work and waits until every partition has committed what it holds.
  virtual void drain() = 0;
};

}  // namespace dtsd::service
