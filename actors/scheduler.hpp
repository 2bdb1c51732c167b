#pragma once
/// The scheduler as the transports see it (native Cap'n Proto RPC now, gRPC later):
/// plain C++ with callbacks, so no transport translation unit includes CAF. The
/// implementation routes every call to the hub's partition and coordinator actors.
///
/// Callbacks run on an actor thread and must not block: a transport hands the
/// result over to its own thread.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/error.hpp"
#include "core/limits.hpp"
#include "core/model.hpp"
#include "core/work_filter.hpp"
#include "engine/partition_engine.hpp"
#include "store/kv.hpp"
#include "store/partition_store.hpp"

namespace dtsd::actors {

template <class T>
using callback = std::function<void(expected<T>)>;

struct instance_view {
  core::instance_record record;
  std::vector<core::history_event> history;  ///< Filled when asked for.
};

using work_item = std::variant<core::orchestrator_work_item, engine::activity_work_item>;

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
};

/// One partition of a hub, as `dtsctl taskhub status` shows it.
struct partition_view {
  std::uint32_t index = 0;
  /// Empty while it writes; otherwise why its commits fail (a full disk...): it
  /// refuses new writes with errc::resource_exhausted and retries by itself.
  std::string stalled;
  std::int64_t stalled_since_ns = 0;
  std::uint64_t failed_commits = 0;  ///< Since dtsd started.
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
};
struct entity_clean_result {
  std::size_t removed = 0;
  std::size_t released = 0;
  std::string continuation_token;  ///< Empty when every entity was looked at.
};

struct scheduler_config {
  std::string data_dir = "./dtsd-data";
  store::durability durability = store::durability::fsync;
  std::uint32_t partition_count = 12;
  core::payload_limits limits;
  std::int64_t lease_ms = 5 * 60 * 1000;
  std::int64_t keep_alive_ms = 30 * 1000;
  /// Log records each partition keeps (0: all); see partition_store::set_log_retention.
  std::uint64_t log_retention_records = 10000;
  /// Threads committing the batches of every partition (see commit_pool).
  std::size_t commit_threads = 2;
};

class scheduler {
 public:
  virtual ~scheduler() = default;

  virtual expected<void> create_task_hub(const std::string& hub, std::uint32_t partition_count) = 0;
  /// Deletes a hub and all its data. One that holds instances goes only with
  /// `force`. New calls on it are refused at once; what its partitions hold is
  /// committed first, and calls they had not answered are answered (UNAVAILABLE).
  virtual expected<void> delete_task_hub(const std::string& hub, bool force) = 0;
  virtual std::vector<std::string> task_hubs() = 0;

  virtual void start(const std::string& hub, core::start_request request,
                     callback<engine::started> done) = 0;
  virtual void get(const std::string& hub, const std::string& instance_id, bool with_history,
                   callback<std::optional<instance_view>> done) = 0;
  /// Answers once the instance started (or, with `until_completed`, reached a
  /// terminal status) and that state is durable. No time limit. Returns a handle
  /// for cancel_wait.
  virtual std::uint64_t wait(const std::string& hub, const std::string& instance_id, bool until_completed,
                             callback<core::instance_record> done) = 0;
  /// The caller gave up (its client went away): the wait is forgotten and its
  /// callback never runs. A wait already answered is not affected.
  virtual void cancel_wait(const std::string& hub, const std::string& instance_id, std::uint64_t handle) = 0;
  virtual void raise_event(const std::string& hub, const std::string& instance_id,
                           const std::string& name, core::payload input, callback<void> done) = 0;
  virtual void terminate(const std::string& hub, const std::string& instance_id,
                         core::terminate_request request, callback<void> done) = 0;
  virtual void suspend(const std::string& hub, const std::string& instance_id,
                       core::payload reason, callback<void> done) = 0;
  virtual void resume(const std::string& hub, const std::string& instance_id, core::payload reason,
                      callback<void> done) = 0;
  /// Delivers a message from a client to its instance (entity operations signaled,
  /// lock releases); answers once it is durable.
  virtual void deliver(const std::string& hub, core::instance_message message, callback<void> done) = 0;
  /// Looks at one page of entities: removes the empty ones and releases locks held
  /// by orchestrations that ended; the answer's token goes on to the next page.
  virtual void clean_entity_storage(const std::string& hub, entity_clean_request request,
                                    callback<entity_clean_result> done) = 0;
  /// A failed orchestration resumes from its last good point (core::apply_rewind).
  virtual void rewind(const std::string& hub, const std::string& instance_id, core::payload reason,
                      callback<void> done) = 0;
  /// Purges one terminal instance (with `recursive`, also the terminal
  /// sub-orchestrations it created, in any partition); answers how many were purged.
  virtual void purge(const std::string& hub, const std::string& instance_id, bool recursive,
                     callback<std::size_t> done) = 0;
  /// Purges every terminal instance the filter matches (its statuses must all be
  /// terminal; none means all terminal ones); answers how many were purged.
  virtual void purge_where(const std::string& hub, store::instance_query filter, bool recursive,
                           callback<std::size_t> done,
                           std::shared_ptr<std::atomic<std::size_t>> progress = nullptr) = 0;
  virtual void query(const std::string& hub, store::instance_query query,
                     callback<store::query_page> done) = 0;

  /// Opens a worker session; returns its id. Work goes to it only when `filters`
  /// accept it (core/work_filter.hpp); `worker` names it in listings.
  virtual expected<std::uint64_t> open_session(const std::string& hub, session_slots slots,
                                               std::shared_ptr<work_sink> sink, core::work_filters filters = {},
                                               std::string worker = {}) = 0;
  /// The hub's connected worker sessions.
  virtual void workers(const std::string& hub, callback<std::vector<worker_view>> done) = 0;
  /// The hub's partitions and whether each can write; answered without asking them.
  virtual expected<std::vector<partition_view>> partitions(const std::string& hub) = 0;
  /// Everything the session still holds is given back for re-dispatch.
  virtual void close_session(std::uint64_t session) = 0;
  /// The session's worker answered a keep-alive: it is alive (see the coordinator's
  /// suspect sessions).
  virtual void session_alive(std::uint64_t session) = 0;
  virtual void complete_orchestrator(std::uint64_t session, core::orchestrator_completion completion,
                                     callback<void> done) = 0;
  virtual void complete_activity(std::uint64_t session, core::activity_result result,
                                 callback<void> done) = 0;
  virtual void abandon_orchestrator(std::uint64_t session, const std::string& instance_id,
                                    std::uint64_t token) = 0;
  virtual void abandon_activity(std::uint64_t session, core::activity_request request,
                                std::uint64_t token) = 0;

  /// Stops taking work and waits until every partition has committed what it holds.
  virtual void drain() = 0;
};

/// Builds the actor system and the scheduler over it; `hubs` are opened (created
/// if new) at once.
expected<std::unique_ptr<scheduler>> make_scheduler(const scheduler_config& config,
                                                    const std::vector<std::string>& hubs,
                                                    int scheduler_threads);

}  // namespace dtsd::actors
