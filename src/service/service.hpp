#pragma once
/// The service: every operation of dtsd's APIs, once, for every transport (the
/// native Cap'n Proto API, the gRPC endpoint of the official SDKs, the REST API of
/// the dashboard) and over any router (one node's actors now, a cluster later).
/// Plain C++ in core model types: no CAF, no engine or store type, no transport.
///
/// Simple calls go straight to the router; what spans instances or partitions is
/// composed here: query pages merged across partitions, purges of many and their
/// recursion, terminations of many, restarts, entity cleaning, statistics. Every
/// callback runs exactly once, on some router thread; it must not block.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/limits.hpp"
#include "service/clock.hpp"
#include "service/deadlines.hpp"
#include "service/router.hpp"
#include "service/types.hpp"

namespace dtsd::service {

/// A signal to an entity, as a client sends it.
struct entity_signal {
  std::string entity_id;  ///< @name@key
  std::string operation;
  core::payload input;
  std::int64_t scheduled_ns = 0;  ///< 0: now.
  std::string request_id;         ///< Empty: one is made up.
};

/// A random 32-hex id (for an instance started without one, a restart under a new id).
std::string new_instance_id();

struct service_options {
  core::payload_limits limits;
};

class task_service {
 public:
  /// Instance ids a batch call (purge or terminate of many) takes at once.
  static constexpr std::size_t batch_ids_max = 500;
  /// Pages of one partition a purge-where reads before purging what it found.
  static constexpr std::size_t purge_scan_pages_max = 10000;
  /// Entities one clean_entity_storage call looks at.
  static constexpr std::size_t clean_page_size = 100;

  task_service(std::unique_ptr<router> routes, service_options options, const clock& time = wall_clock());
  ~task_service();
  task_service(const task_service&) = delete;
  task_service& operator=(const task_service&) = delete;

  // ---- hubs
  expected<void> create_task_hub(const std::string& hub, std::uint32_t partition_count);
  expected<void> delete_task_hub(const std::string& hub, bool force);
  std::vector<std::string> task_hubs();
  /// The hub's partitions, sessions and totals (backlog, leases, commits).
  void statistics(const std::string& hub, callback<hub_statistics> done);
  expected<std::vector<partition_view>> partitions(const std::string& hub);
  void workers(const std::string& hub, callback<std::vector<worker_view>> done);

  // ---- instances
  void start(const std::string& hub, core::start_request request, callback<started> done);
  void get(const std::string& hub, const std::string& instance_id, bool with_history,
           callback<std::optional<instance_view>> done);
  std::uint64_t wait(const std::string& hub, const std::string& instance_id, bool until_completed,
                     callback<core::instance_record> done);
  void cancel_wait(const std::string& hub, const std::string& instance_id, std::uint64_t handle);
  void raise_event(const std::string& hub, const std::string& instance_id, const std::string& name,
                   core::payload input, callback<void> done);
  void terminate(const std::string& hub, const std::string& instance_id, core::terminate_request request,
                 callback<void> done);
  void suspend(const std::string& hub, const std::string& instance_id, core::payload reason, callback<void> done);
  /// Deletes an entity with its state once durable; refused while it is locked or
  /// operations wait for it.
  void delete_entity(const std::string& hub, const std::string& entity_id, callback<void> done);
  void resume(const std::string& hub, const std::string& instance_id, core::payload reason, callback<void> done);
  /// A failed orchestration resumes from its last good point (core::apply_rewind).
  void rewind(const std::string& hub, const std::string& instance_id, core::payload reason, callback<void> done);
  /// Delivers a message from a client to its instance; answers once it is durable.
  void deliver(const std::string& hub, core::instance_message message, callback<void> done);
  void signal_entity(const std::string& hub, entity_signal signal, callback<void> done);
  /// Starts a finished orchestration again with its name, version, input and tags:
  /// under its own id (it must be terminal) or a new random one (the original is
  /// untouched). Answers the id it runs under.
  void restart(const std::string& hub, const std::string& instance_id, bool new_id, callback<std::string> done);
  /// Terminates each instance (at most batch_ids_max); answers the ids that could
  /// not be terminated (missing, already ended, ...), which is not an error.
  void terminate_many(const std::string& hub, std::vector<std::string> ids, core::payload reason,
                      callback<std::vector<std::string>> done);
  void query(const std::string& hub, core::instance_query query, callback<core::query_page> done);
  /// Rows [start, start + count) of a list of the hub in its order, with the counts
  /// of every match: each partition answers its top start + count rows from memory.
  void list(const std::string& hub, core::list_query query, std::size_t start, std::size_t count,
            callback<core::list_page> done);

  // ---- purges
  /// Purges one terminal instance (with `recursive`, also the terminal
  /// sub-orchestrations it created, in any partition); answers how many went. A
  /// missing instance is errc::not_found.
  void purge(const std::string& hub, const std::string& instance_id, bool recursive, callback<std::size_t> done);
  /// Purges each of `ids` in turn (missing ones purge nothing); at most batch_ids_max.
  void purge_many(const std::string& hub, std::vector<std::string> ids, bool recursive,
                  callback<std::size_t> done);
  /// Purges every terminal instance the filter matches (its statuses must all be
  /// terminal; none means every terminal one). With `answer_within`, answers by
  /// then with what went so far (complete false) and goes on to the end. A scan
  /// that stops at purge_scan_pages_max pages of a partition also answers
  /// complete false (purging again takes the rest).
  void purge_where(const std::string& hub, core::instance_query filter, bool recursive,
                   std::optional<std::chrono::nanoseconds> answer_within, callback<purge_result> done);
  /// The hub's retention policy (core/retention.hpp), as every partition keeps it.
  /// With `set`, it becomes `policy` at every partition first (none: dtsd's
  /// default again), durably, in force at once. Partitions that disagree (a set
  /// that reached only some) answer errc::failed_precondition: set it again.
  void retention(const std::string& hub, bool set, std::optional<core::retention_policy> policy,
                 callback<retention_view> done);
  /// A command for the hub's schedules (core/schedule.hpp), carried out by the
  /// partition that keeps the schedule (list: every partition, merged by id).
  /// Answers the schedules it concerns as they are after it, once durable.
  void schedule(const std::string& hub, core::schedule_command command, callback<std::vector<core::schedule>> done);
  /// Looks at one page of entities: removes the empty ones and releases locks held
  /// by orchestrations that ended; the answer's token goes on to the next page.
  void clean_entity_storage(const std::string& hub, entity_clean_request request,
                            callback<entity_clean_result> done);

  // ---- worker sessions
  expected<std::uint64_t> open_session(const std::string& hub, session_slots slots, std::shared_ptr<work_sink> sink,
                                       core::work_filters filters = {}, std::string worker = {});
  void close_session(std::uint64_t session);
  void session_alive(std::uint64_t session);
  /// A worker's answer to an orchestrator (or entity) item. One whose payloads are
  /// over the limits is applied as a failure naming the field, and answered with
  /// errc::payload_too_large once that is durable.
  void complete_orchestrator(std::uint64_t session, core::orchestrator_completion completion, callback<void> done);
  void complete_activity(std::uint64_t session, core::activity_result result, callback<void> done);
  void abandon(std::uint64_t session, std::uint64_t token);

  /// Stops taking work and waits until every partition has committed what it holds.
  void drain();

  const clock& time() const { return clock_; }
  const core::payload_limits& limits() const { return options_.limits; }

 private:
  /// Purges `id` and, with `recursive`, the sub-orchestrations it created; only a
  /// `top` instance's own refusal fails the purge.
  void purge_walk(const std::string& hub, const std::string& id, bool recursive,
                  std::shared_ptr<class purge_tally> tally, bool top);
  class partition_scan;

  service_options options_;
  const clock& clock_;
  /// Declared after what its actors' callbacks use: destroyed first, so a callback
  /// that runs while it stops finds everything else still there.
  std::unique_ptr<router> router_;
  /// Destroyed before the router: answers every deadline still waiting while the
  /// partitions can still take what those answers lead to.
  deadlines deadlines_;
};

}  // namespace dtsd::service
