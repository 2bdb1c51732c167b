#pragma once
/// The C++ client of dtsd over the native Cap'n Proto API. Synchronous; use one
/// client from one thread (it runs its own event loop on that thread).

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/model.hpp"
#include "core/retention.hpp"
#include "core/schedule.hpp"
#include "core/work_filter.hpp"
#include "rpc/client_tls.hpp"

namespace dtsd::sdk {

using json = nlohmann::json;

/// How to reach a dtsd whose native API serves TLS (--tls-cert): a CA, a client
/// certificate for mTLS, the server's name. An address "tls://host:port" asks for
/// TLS with the system's trust store.
using tls_options = rpc::client_tls;

struct start_options {
  std::string instance_id;  ///< Empty: a random one.
  /// The orchestration's version: stored with the instance, given to the worker in
  /// ExecutionStarted and used by workers' version checks and work item filters.
  core::payload version;
  core::tag_map tags;
  std::optional<std::chrono::system_clock::time_point> start_at;
  /// Statuses an existing instance with this id may have to be replaced; empty:
  /// any terminal status.
  std::vector<core::runtime_status> replaceable_statuses;
};

struct query_options {
  std::vector<core::runtime_status> statuses;
  std::optional<std::chrono::system_clock::time_point> created_from;
  std::optional<std::chrono::system_clock::time_point> created_to;
  std::string name_prefix;
  std::string instance_id_prefix;
  std::optional<std::string> version;  ///< Only this version ("": instances without one).
  std::uint32_t page_size = 100;
  std::string continuation_token;
  bool entities = false;  ///< Entities (@name@key) instead of orchestrations.
};

/// What clean_entity_storage did over every page.
struct entity_clean_summary {
  std::size_t removed = 0;
  std::size_t released = 0;
};

/// A hub's retention policy (core/retention.hpp).
struct retention_info {
  core::retention_policy policy;
  bool own = false;  ///< The hub's own; false: dtsd's default (--retention-default).
};

/// A worker session connected to the hub (native or gRPC).
struct worker_info {
  std::uint64_t session = 0;
  std::string worker;  ///< What the worker calls itself, if anything.
  std::uint32_t orchestrator_slots = 0, activity_slots = 0, entity_slots = 0;
  std::uint32_t orchestrators_in_use = 0, activities_in_use = 0, entities_in_use = 0;
  core::work_filters filters;  ///< What it takes (core/work_filter.hpp).
};

/// A partition of a hub and whether it can write.
struct partition_info {
  std::uint32_t index = 0;
  /// Empty while it writes; otherwise why its commits fail (it refuses new writes
  /// with errc::resource_exhausted meanwhile, and resumes by itself).
  std::string stalled;
  std::int64_t stalled_since_ns = 0;
  std::uint64_t failed_commits = 0;  ///< Since dtsd started.
  std::uint64_t commits = 0;            ///< Batches made durable since dtsd started.
  std::uint64_t committed_changes = 0;  ///< Instance changes in those batches.
  std::int64_t commit_ns_total = 0;
  std::int64_t commit_ns_max = 0;
  /// Work waiting for a worker, by kind.
  std::uint64_t ready_orchestrators = 0, ready_activities = 0, ready_entities = 0;
  std::uint64_t live_instances = 0;  ///< Instances held in memory.
  /// How long the longest-waiting ready work item has waited for a worker (0: none waits).
  std::int64_t oldest_ready_wait_ns = 0;
  /// Messages sent to instances that their partition has not acknowledged yet.
  std::uint64_t unacknowledged_messages = 0;
};

struct query_result {
  std::vector<core::instance_record> instances;
  std::string continuation_token;
};

/// The instance's output parsed as JSON (null when it has none).
json output_of(const core::instance_record& record);

class client {
 public:
  /// Connects to `address` ("127.0.0.1:8081"); calls go to `task_hub`, which must
  /// exist. An empty `task_hub` is for task hub management only. `token`: for a
  /// dtsd run with --auth (dtsctl token create); calls then act with its role.
  /// `tls`: for a dtsd whose native API serves TLS.
  static expected<std::unique_ptr<client>> connect(const std::string& address = "127.0.0.1:8081",
                                                   const std::string& task_hub = "default",
                                                   const std::string& token = "", const tls_options& tls = {});
  virtual ~client() = default;

  virtual expected<std::string> start(const std::string& orchestrator, const json& input,
                                      const start_options& options = {}) = 0;
  /// Starts `inputs.size()` instances at once (pipelined over the connection) and
  /// returns their ids in order once every start is durable. The first failure, if
  /// any, is returned instead; starts before it may have happened. `ids`: the
  /// instance ids to use, one per input (empty: random ones).
  virtual expected<std::vector<std::string>> start_many(const std::string& orchestrator,
                                                        const std::vector<json>& inputs,
                                                        const std::vector<std::string>& ids = {}) = 0;
  virtual expected<std::optional<core::instance_record>> get(const std::string& instance_id) = 0;
  virtual expected<std::vector<core::history_event>> history(const std::string& instance_id) = 0;
  /// The histories of many instances, asked for all at once (pipelined); nothing
  /// for an id with no instance.
  virtual expected<std::vector<std::optional<std::vector<core::history_event>>>> histories(
      const std::vector<std::string>& instance_ids) = 0;
  virtual expected<core::instance_record> wait_for_start(const std::string& instance_id,
                                                         std::chrono::milliseconds timeout) = 0;
  virtual expected<core::instance_record> wait_for_completion(const std::string& instance_id,
                                                              std::chrono::milliseconds timeout) = 0;
  virtual expected<void> raise_event(const std::string& instance_id, const std::string& name,
                                     const json& data) = 0;
  virtual expected<void> terminate(const std::string& instance_id, const json& reason, bool recurse = false) = 0;
  virtual expected<void> suspend(const std::string& instance_id, const std::string& reason = {}) = 0;
  virtual expected<void> resume(const std::string& instance_id, const std::string& reason = {}) = 0;
  /// A failed orchestration resumes from its last good point: failed tasks (and
  /// any that never finished) run again; failed sub-orchestrations are rewound too.
  virtual expected<void> rewind(const std::string& instance_id, const std::string& reason = {}) = 0;
  /// Starts a finished orchestration again with its name, version, input and tags:
  /// under its own id, or (with `new_id`) a new random one; returns the id.
  virtual expected<std::string> restart(const std::string& instance_id, bool new_id = false) = 0;
  /// Purges a finished instance (with `recursive`, its finished sub-orchestrations
  /// too); returns how many instances were purged.
  virtual expected<std::size_t> purge(const std::string& instance_id, bool recursive = false) = 0;
  /// Purges every finished instance that `filter` matches (statuses must be
  /// terminal; none: all terminal ones). Paging fields are ignored.
  virtual expected<std::size_t> purge_where(const query_options& filter, bool recursive = false) = 0;
  virtual expected<query_result> query(const query_options& options) = 0;

  /// Sends an operation to an entity ("@name@key"), now or at `at`; no answer.
  virtual expected<void> signal_entity(const std::string& entity_id, const std::string& operation,
                                       const json& input = json(),
                                       std::optional<std::chrono::system_clock::time_point> at = std::nullopt) = 0;
  /// The entity's record (its state is `entity_state`), or nothing while it has no state.
  virtual expected<std::optional<core::instance_record>> get_entity(const std::string& entity_id) = 0;
  /// Removes entities with no state, lock or waiting messages, and/or releases locks
  /// held by orchestrations that ended; over every page.
  virtual expected<entity_clean_summary> clean_entity_storage(bool remove_empty, bool release_orphaned_locks) = 0;
  /// The hub's retention policy (how long ended orchestrations are kept before
  /// they are purged), and whether it is the hub's own or dtsd's default.
  virtual expected<retention_info> retention() = 0;
  /// Makes `policy` the hub's own (nothing: dtsd's default again); answers once
  /// every partition has it.
  virtual expected<retention_info> set_retention(const std::optional<core::retention_policy>& policy) = 0;
  /// A command for the hub's schedules (core/schedule.hpp); the schedules it
  /// concerns as they are after it (list: all of them), once durable.
  virtual expected<std::vector<core::schedule>> schedule(const core::schedule_command& command) = 0;
  /// The same, for each command.
  expected<core::schedule> create_schedule(const core::schedule_spec& spec) {
    return one_schedule({core::schedule_command::verb::create, spec.id, spec, {}});
  }
  expected<core::schedule> update_schedule(const core::schedule_spec& spec) {
    return one_schedule({core::schedule_command::verb::update, spec.id, spec, {}});
  }
  expected<core::schedule> get_schedule(const std::string& id) {
    return one_schedule({core::schedule_command::verb::get, id, {}, {}});
  }
  expected<core::schedule> pause_schedule(const std::string& id, const std::string& note = {}) {
    return one_schedule({core::schedule_command::verb::pause, id, {}, note});
  }
  expected<core::schedule> resume_schedule(const std::string& id) {
    return one_schedule({core::schedule_command::verb::resume, id, {}, {}});
  }
  /// Starts a run now (whatever the overlap policy); its id is the answer's state.last_instance_id.
  expected<core::schedule> trigger_schedule(const std::string& id) {
    return one_schedule({core::schedule_command::verb::trigger, id, {}, {}});
  }
  expected<core::schedule> delete_schedule(const std::string& id) {
    return one_schedule({core::schedule_command::verb::remove, id, {}, {}});
  }
  expected<std::vector<core::schedule>> list_schedules() { return schedule({core::schedule_command::verb::list, {}, {}, {}}); }
  /// The worker sessions connected to the hub, with the work they take.
  virtual expected<std::vector<worker_info>> workers() = 0;
  /// The partitions of hub `name` and whether each can write.
  virtual expected<std::vector<partition_info>> partitions(const std::string& name) = 0;
  virtual expected<std::vector<std::string>> task_hubs() = 0;
  virtual expected<void> create_task_hub(const std::string& name, std::uint32_t partitions = 0) = 0;
  /// Deletes a hub and its data; one that still holds instances only with `force`.
  virtual expected<void> delete_task_hub(const std::string& name, bool force = false) = 0;

 private:
  expected<core::schedule> one_schedule(const core::schedule_command& command) {
    auto answered = schedule(command);
    if (!answered) return answered.error();
    if (answered->size() != 1) return error{errc::corrupt, "dtsd answered a schedule command with no schedule"};
    return std::move(answered->front());
  }
};

}  // namespace dtsd::sdk
