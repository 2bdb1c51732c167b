#pragma once
/// The partition engine: everything one partition decides, single-threaded and
/// deterministic, with no actor, socket, clock or thread of its own. The partition
/// actor wraps it (and writes its batches on a thread of its own); the simulation
/// test drives it directly.
///
/// Inputs are applied to the in-memory state at once and collected into the open
/// batch. Nothing an input causes leaves the engine before that batch is durable:
/// client acknowledgements (each input returns the number of the batch to wait
/// for), messages to other partitions, activity work, and orchestrator work, which
/// carries only inbox events already on disk.
///
/// The state of each instance lives with the instance (see instance.hpp): the
/// engine sends it operations and records what they did into the batch the input
/// belongs to. Inputs are therefore answered through callbacks; with an
/// `inline_host` (tests, simulation, replay) every callback runs before the call
/// returns, and the synchronous overloads below may be used. A batch is closed to
/// new inputs first and sealed once every operation it holds has answered.
///
/// Messages between instances, in this partition or another, go through the outbox
/// (written in the sender's batch, delivered once it is durable) and are
/// deduplicated by the receiver with a high-water mark per source partition; the
/// transport between two partitions must deliver in order (resending everything
/// unacknowledged, in order, after a reconnect), which a connection or a CAF mailbox
/// does.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/error.hpp"
#include "core/limits.hpp"
#include "core/orchestration.hpp"
#include "core/retention.hpp"
#include "core/schedule.hpp"
#include "core/work_filter.hpp"
#include "engine/instance.hpp"
#include "engine/waiting.hpp"
#include "store/partition_store.hpp"

namespace dtsd::engine {

/// Draws execution ids for top-level starts (random in production, seeded in tests).
using execution_id_source = std::function<std::string()>;

/// How an input is answered.
template <class T>
using reply = std::function<void(expected<T>)>;

struct engine_options {
  core::payload_limits limits;
  /// Bounds one call of fire_due_timers; the rest fire on the next call.
  std::size_t timers_per_tick_max = 10000;
  /// Past this many live instances, idle ones are evicted (they reload from the
  /// store, which holds all of their state, when next touched).
  std::size_t instance_cache_count_max = 100000;
  /// Orchestrator (and, apart, entity) work items prepared ahead of the workers.
  std::size_t prepared_max = 1024;
  /// The retention of a hub that has no policy of its own (dtsd --retention-default).
  core::retention_policy default_retention{};
  /// Retention purges under way at most (not yet durable); each purge_expired
  /// call tops them up to this.
  std::size_t retention_purges_max = 64;
};

struct started {
  std::string instance_id;
  std::string execution_id;
  std::uint64_t batch = 0;  ///< Acknowledge the start once this batch is durable.
};

/// What a committed batch releases.
struct released {
  std::uint64_t batch = 0;
  /// Messages to deliver to other partitions, in sequence order. They stay in the
  /// outbox (and come back from `unacknowledged_outbox`) until acknowledged.
  std::vector<store::outbox_entry> outbound;
  /// (source partition, sequence): tell each source its messages up to here are in.
  std::map<std::uint32_t, std::uint64_t> receipts;
  /// The instance records this batch wrote, as written (for waiters).
  std::vector<core::instance_record> records;
  /// Instances this batch purged.
  std::vector<std::string> purged;
};

class partition_engine {
 public:
  /// Recovers the engine from its store: instances with pending events, queued
  /// activities, timers, the unacknowledged outbox and the dedup marks. Without a
  /// host, instances live in an inline_host.
  static expected<std::unique_ptr<partition_engine>> open(
      std::unique_ptr<store::partition_store> store, engine_options options,
      execution_id_source new_execution_id, std::int64_t now_ns,
      std::unique_ptr<instance_host> host = nullptr);

  const store::partition_identity& identity() const { return store_->identity(); }
  store::partition_store& store() { return *store_; }
  /// Moves live instances to `host`; only before any instance is live (right after
  /// open, as a partition actor takes the engine over).
  void set_host(std::unique_ptr<instance_host> host);

  // -- Inputs. Each answers with the batch that makes it durable, or an error and no change.

  /// An empty execution id in `request` is drawn from the execution id source.
  void start(core::start_request request, std::int64_t now_ns, reply<started> done);
  void raise_event(const std::string& instance_id, const std::string& name, const core::payload& input,
                   std::int64_t now_ns, reply<std::uint64_t> done);
  void terminate(const std::string& instance_id, const core::terminate_request& request, std::int64_t now_ns,
                 reply<std::uint64_t> done);
  /// A message from a client straight to an instance (entity signals, lock releases).
  void deliver(const core::instance_message& message, std::int64_t now_ns, reply<std::uint64_t> done);
  /// Rewinds a failed orchestration (see core::apply_rewind).
  void rewind(const std::string& instance_id, const core::payload& reason, std::int64_t now_ns,
              reply<std::uint64_t> done);
  void suspend(const std::string& instance_id, const core::payload& reason, std::int64_t now_ns,
               reply<std::uint64_t> done);
  void resume(const std::string& instance_id, const core::payload& reason, std::int64_t now_ns,
              reply<std::uint64_t> done);
  void purge(const std::string& instance_id, std::int64_t now_ns, reply<std::uint64_t> done);
  /// Deletes an entity with its state (core::apply_entity_delete says when it may).
  void delete_entity(const std::string& entity_id, std::int64_t now_ns, reply<std::uint64_t> done);
  void complete_orchestrator(const core::orchestrator_completion& completion, std::int64_t now_ns,
                             reply<std::uint64_t> done);
  void abandon_orchestrator(const std::string& instance_id, std::uint64_t token, reply<void> done);
  void complete_activity(const core::activity_result& result, std::int64_t now_ns, reply<std::uint64_t> done);
  expected<void> abandon_activity(const core::activity_request& request, std::uint64_t token);
  /// Fires every timer due at `now_ns` (at most timers_per_tick_max), and every
  /// schedule slot (see fire_due_schedules).
  void fire_due_timers(std::int64_t now_ns);
  /// A message from a partition's outbox (this one's included).
  void receive(const store::outbox_entry& entry, std::int64_t now_ns, reply<std::uint64_t> done);
  /// The destination applied our messages up to `sequence`; they leave the outbox.
  void outbound_acknowledged(std::uint32_t destination, std::uint64_t sequence);

  // -- The same, answered before they return: only with an inline_host.

  expected<started> start(core::start_request request, std::int64_t now_ns);
  expected<std::uint64_t> raise_event(const std::string& instance_id, const std::string& name,
                                      const core::payload& input, std::int64_t now_ns);
  expected<std::uint64_t> terminate(const std::string& instance_id, const core::terminate_request& request,
                                    std::int64_t now_ns);
  expected<std::uint64_t> suspend(const std::string& instance_id, const core::payload& reason, std::int64_t now_ns);
  expected<std::uint64_t> resume(const std::string& instance_id, const core::payload& reason, std::int64_t now_ns);
  expected<std::uint64_t> rewind(const std::string& instance_id, const core::payload& reason, std::int64_t now_ns);
  expected<std::uint64_t> deliver(const core::instance_message& message, std::int64_t now_ns);
  expected<std::uint64_t> purge(const std::string& instance_id, std::int64_t now_ns);
  expected<std::uint64_t> delete_entity(const std::string& entity_id, std::int64_t now_ns);
  expected<std::uint64_t> complete_orchestrator(const core::orchestrator_completion& completion,
                                                std::int64_t now_ns);
  expected<void> abandon_orchestrator(const std::string& instance_id, std::uint64_t token);
  expected<std::uint64_t> complete_activity(const core::activity_result& result, std::int64_t now_ns);
  expected<std::uint64_t> receive(const store::outbox_entry& entry, std::int64_t now_ns);
  std::optional<core::orchestrator_work_item> next_orchestrator_item(std::int64_t now_ns);
  expected<std::optional<core::instance_record>> get_instance(const std::string& instance_id);

  // -- The commit cycle.

  bool has_open_batch() const;
  /// No batch holds anything and no operation is outstanding.
  bool quiescent() const;
  /// Closes the open batch to new inputs and, once everything it holds has
  /// answered, seals it for writing (until then: nothing). Batches must be
  /// committed in this order.
  std::optional<std::pair<std::uint64_t, store::write_batch>> take_batch();
  /// The batch is durable; returns what it releases and makes its work available.
  released batch_committed(std::uint64_t batch);
  /// The number the next input will be acknowledged with.
  std::uint64_t open_batch_number() const { return next_batch_; }

  // -- Work, only what is durable.

  /// Asks instances with work, and with everything it needs on disk, for their
  /// next work item, so that the item is waiting when a worker has room: called
  /// after each input (the partition actor) and by take_work. At most
  /// `prepared_max` of each kind wait or are being asked for.
  void prepare(std::int64_t now_ns);
  /// Up to `count_max` prepared orchestrator work items (entity batches with
  /// `entities`) that `accept` accepts. Prepared items it does not accept are
  /// parked: given back to their instances and kept aside (by name) until a take
  /// whose filter accepts them, which makes them ready again. With the default
  /// filter (everything) nothing is ever parked.
  std::vector<core::orchestrator_work_item> take_work(bool entities, std::size_t count_max, std::int64_t now_ns,
                                                      const core::kind_filter& accept = std::nullopt);
  /// Up to `count_max` queued activities `accept` accepts; the ones it skips are
  /// parked the same way and queued again by a take that accepts them.
  std::vector<core::activity_work_item> take_activities(std::size_t count_max,
                                                  const core::kind_filter& accept = std::nullopt);
  std::optional<core::activity_work_item> next_activity_item();
  /// Whether work of a kind waits parked for a session that accepts it.
  bool has_parked_orchestrators() const { return !parked_.empty(); }
  bool has_parked_entities() const { return !parked_entities_.empty(); }
  bool has_parked_activities() const { return !parked_activities_.empty(); }
  /// Whether take_work has something to give.
  bool may_have_orchestrator_work() const { return !prepared_.empty(); }
  bool may_have_entity_work() const { return !prepared_entities_.empty(); }
  bool has_activity_work() const { return !activity_queue_.empty(); }
  /// Work waiting for a worker, by kind (ready, prepared or parked; not leased).
  struct backlog_counts {
    std::size_t orchestrators = 0;
    std::size_t activities = 0;
    std::size_t entities = 0;
    /// When the longest wait of each kind began (none: nothing waits).
    std::optional<std::int64_t> orchestrators_since_ns, activities_since_ns, entities_since_ns;
    /// Messages sent to instances (here or in other partitions) not yet acknowledged.
    std::size_t unacknowledged = 0;
  };
  backlog_counts backlog() const;
  /// The earliest time a timer or a scheduled start is due, if any.
  std::optional<std::int64_t> next_wakeup_ns() const;
  std::vector<store::outbox_entry> unacknowledged_outbox() const;

  /// Applies one logged input again, as it was applied live (the lease and the
  /// events a worker was given come from the log). Replaying a partition's log into
  /// an engine over an empty store rebuilds the same instances. Inline host only.
  expected<void> replay(const store::partition_event& event);

  // -- Reads of the live state (what is applied, durable or about to be).

  void get_instance(const std::string& instance_id, reply<std::optional<core::instance_record>> done);
  /// Ids of every sub-orchestration the instance's current execution created.
  void sub_orchestrations_of(const std::string& instance_id, std::function<void(std::vector<std::string>)> done);
  std::size_t cached_instance_count() const { return live_.size(); }
  /// Ends every live instance that could go (idle, all on disk, nothing
  /// outstanding) and was not operated on since the previous call. A partition
  /// calls this periodically: instances idle for a whole period are evicted.
  void evict_untouched();

  /// The host's answer to operation `number` (see instance_host::run).
  void answered(std::uint64_t number, instance_outcome outcome);

  // -- Retention (core/retention.hpp): ended orchestrations are purged once their time is up.

  /// The policy in force here: the hub's own, or engine_options' default.
  const core::retention_policy& retention() const { return own_retention_ ? *own_retention_ : options_.default_retention; }
  bool retention_is_own() const { return own_retention_.has_value(); }
  /// Makes `policy` the hub's own at this partition (nothing: back to the default);
  /// in force at once, durable with the returned batch.
  std::uint64_t set_retention(std::optional<core::retention_policy> policy);
  /// Purges ended orchestrations whose time is up, the longest ended first, as
  /// ordinary purges in the open batch, up to `count_max` (at most
  /// retention_purges_max) under way, not yet durable. Called periodically by the
  /// partition, which gives less room while it is busy.
  void purge_expired(std::int64_t now_ns, std::size_t count_max);
  std::size_t retention_purges_max() const { return options_.retention_purges_max; }
  /// How many ended orchestrations became due under the policy in force since the
  /// previous call (at most `count_max`; 0 on the first call): what a steady load
  /// makes due, which a busy partition purges as it comes while a backlog only
  /// trickles.
  std::size_t newly_due(std::int64_t now_ns, std::size_t count_max);
  /// Retention purges started and not yet durable.
  std::size_t retention_purges_under_way() const { return retention_purging_.size(); }
  /// Orchestrations purged by retention since the engine opened, by status.
  const store::status_counts& retention_purged() const { return retention_purged_; }

  // -- Schedules (core/schedule.hpp): kept here when schedule_address(id) is.

  /// Applies a client's command; answers the schedules it concerns as they are
  /// after it (list: all of them) and the batch that makes the change durable (0:
  /// nothing changed). A run a command starts (trigger) or a slot that comes due
  /// is sent as a start message through the outbox in the same batch that records
  /// it, so a slot starts its run exactly once.
  expected<std::pair<std::uint64_t, std::vector<core::schedule>>> schedule(const core::schedule_command& command,
                                                                           std::int64_t now_ns);
  /// Starts the runs of every slot due at `now_ns`, as each schedule's catch-up and
  /// overlap policies say.
  void fire_due_schedules(std::int64_t now_ns);
  std::size_t schedule_count() const { return schedules_.size(); }

 private:
  /// What the engine knows of a live instance without asking it.
  struct live_info {
    std::size_t outstanding = 0;  ///< Operations sent, not yet answered.
    std::uint64_t last_batch = 0;  ///< The last batch that writes it.
    bool idle = true;             ///< As of its last answer.
    bool touched = true;          ///< Operated on since the last evict_untouched.
    /// Inbox rows below this are on disk, as of the last batch that wrote it and
    /// committed; handed to the instance with its next work item.
    std::optional<std::uint64_t> durable_inbox_end;
    std::uint64_t reset_batch = 0;  ///< The last batch that purged it or started its inbox over.
  };

  struct open_batch {
    std::uint64_t number = 0;
    store::write_batch batch;
    std::map<std::string, store::instance_write> writes;  ///< Each instance's latest rows.
    std::vector<core::activity_request> activities;
    /// Messages to instances; they get their outbox sequence when the batch is
    /// sealed, so sequences follow commit order (a receiver drops anything at or
    /// below the last sequence it applied from a partition).
    std::vector<core::instance_message> messages;
    std::map<std::uint32_t, std::uint64_t> receipts;
    /// Scheduled runs whose end this batch reports to their schedule.
    std::set<std::string> runs_reported;
    std::size_t outstanding = 0;  ///< Operations of this batch not yet answered.
    bool empty() const { return batch.empty() && writes.empty() && messages.empty() && receipts.empty(); }
  };

  struct sealed_batch {
    std::uint64_t number = 0;
    std::vector<core::instance_record> records;
    std::vector<std::string> purged;
    std::vector<std::pair<std::string, std::uint64_t>> inbox_ends;
    std::vector<core::activity_request> activities;
    std::vector<store::outbox_entry> outbound;
    std::map<std::uint32_t, std::uint64_t> receipts;
  };

  struct wakeup {
    std::int64_t due_ns;
    std::optional<core::timer_entry> timer;  ///< Empty: a scheduled start.
    std::string instance_id;
    bool operator>(const wakeup& other) const { return due_ns > other.due_ns; }
  };

  /// An operation sent to an instance and not answered yet: what the partition
  /// does with the answer stays here, keyed by the operation's number.
  struct pending_operation {
    std::string instance_id;
    std::uint64_t batch = 0;
    std::function<void(instance_outcome&)> then;
  };

  partition_engine(std::unique_ptr<store::partition_store> store, engine_options options,
                   execution_id_source new_execution_id, std::int64_t now_ns,
                   std::unique_ptr<instance_host> host);

  expected<void> recover(std::int64_t now_ns);
  open_batch& batch(std::uint64_t number);
  /// Sends `op` to instance `id`, then runs `then` on its outcome; `batch` (0:
  /// none) is held open until it answers.
  void operate(const std::string& id, std::uint64_t batch, instance_op op,
               std::function<void(instance_outcome&)> then);
  /// Has the instance apply `input` and, if it accepts it, logs it and records
  /// what it did; answers the batch.
  void change(const std::string& instance_id, std::int64_t now_ns, logged_input input, reply<std::uint64_t> done);
  /// Records an input the instance accepted: the rows, the effects.
  void record(const std::string& instance_id, std::uint64_t batch, applied_input& done);
  void route(std::uint64_t batch, core::instance_message message);
  void log(std::uint64_t batch, std::int64_t now_ns, logged_input body);
  /// Every input takes its place in the log when it is sent to its instance (so an
  /// instance's inputs are logged in the order it applies them); the place is
  /// filled when the instance accepts it, or dropped at seal.
  std::size_t reserve_log(std::uint64_t batch, std::int64_t now_ns);
  void fill_log(std::uint64_t batch, std::size_t slot, logged_input body);
  void fire_timer(const core::timer_entry& timer, std::int64_t now_ns);
  /// Ends idle live instances when there are more than the limit.
  void evict_idle();
  bool evictable(const live_info& info) const;
  /// Ends the live instance at `it`; returns the next.
  std::unordered_map<std::string, live_info>::iterator evict(std::unordered_map<std::string, live_info>::iterator it);
  void make_ready(const std::string& instance_id);
  /// Instances parked by name: (id, version) pairs waiting for an accepting take.
  using parked_instances = std::map<std::string, std::map<std::string, core::payload>>;
  /// Gives a prepared item back to its instance and parks the instance.
  void park(core::orchestrator_work_item item, parked_instances& parked);
  /// Makes ready every parked instance `accept` accepts.
  void unpark(parked_instances& parked, const core::kind_filter& accept, bool entities);
  std::uint32_t partition_of(const std::string& instance_id) const;
  /// Schedules: the batch writes `s` as it is now, and its due time is indexed again.
  void schedule_changed(const core::schedule& s);
  /// Starts the run of `slot` (the overlap policy first, unless `forced`; a
  /// `triggered` run by hand has an id of its own).
  void run_slot(core::schedule& s, std::int64_t slot_ns, bool forced, bool triggered = false);
  /// A run of a schedule here ended (or could not start).
  void schedule_run_ended(const std::string& schedule_id, const core::instance_message& report);

  std::unique_ptr<store::partition_store> store_;
  engine_options options_;
  execution_id_source new_execution_id_;
  std::unique_ptr<instance_host> host_;
  std::unordered_map<std::uint64_t, pending_operation> pending_;
  std::uint64_t next_operation_ = 1;

  std::unordered_map<std::string, live_info> live_;
  /// Instances recovery found work for, not made live yet.
  std::unordered_set<std::string> recovered_;
  std::map<std::uint64_t, open_batch> unsealed_;  ///< At most two: the closing one and the open one.
  std::deque<sealed_batch> sealed_;
  std::uint64_t next_batch_ = 1;
  std::uint64_t committed_ = 0;

  std::deque<std::string> ready_;
  std::set<std::string> ready_set_;
  std::deque<std::string> ready_entities_;
  std::set<std::string> ready_entities_set_;
  std::deque<core::orchestrator_work_item> prepared_;
  std::deque<core::orchestrator_work_item> prepared_entities_;
  std::size_t preparing_ = 0;
  std::size_t preparing_entities_ = 0;
  std::deque<core::activity_request> activity_queue_;
  /// Since when each ready instance, entity and queued activity waits for a worker.
  waiting_since<std::string> waiting_orchestrators_, waiting_entities_;
  waiting_since<std::tuple<std::string, std::string, std::int32_t>> waiting_activities_;
  std::int64_t clock_ns_ = 0;  ///< The latest time the partition was given (a step old at most).
  void saw_time(std::int64_t now_ns) { clock_ns_ = std::max(clock_ns_, now_ns); }
  void activity_waits(const core::activity_request& request) {
    waiting_activities_.add({request.instance_id, request.execution_id, request.task_id}, clock_ns_);
  }
  parked_instances parked_;
  parked_instances parked_entities_;
  /// Activities no taking session accepted, by name.
  std::map<std::string, std::deque<core::activity_request>> parked_activities_;
  std::map<std::tuple<std::string, std::string, std::int32_t>, std::uint64_t> activity_leases_;
  /// Leases whose answer is with its instance: not given back or answered again meanwhile.
  std::set<std::tuple<std::string, std::string, std::int32_t>> completing_activities_;
  std::priority_queue<wakeup, std::vector<wakeup>, std::greater<>> wakeups_;
  std::map<std::uint64_t, store::outbox_entry> outbox_;
  std::uint64_t next_outbox_sequence_ = 1;
  std::uint64_t durable_outbox_end_ = 1;  ///< Outbox entries below this are on disk.
  std::map<std::uint32_t, std::uint64_t> dedup_marks_;
  /// Destination partition -> the sequence of the last message made for it (kept
  /// from the outbox's unacknowledged messages at recovery): each message names it.
  std::map<std::uint32_t, std::uint64_t> last_sent_to_;
  static std::uint64_t first_token(std::uint32_t partition_index, std::int64_t now_ns);
  std::uint64_t next_token_ = 1;
  std::optional<core::retention_policy> own_retention_;
  /// Purges retention sent and not yet durable: the status each instance ended in
  /// and the batch that writes the purge (0: not known yet).
  struct retention_purge {
    core::runtime_status status;
    std::uint64_t batch = 0;
  };
  std::unordered_map<std::string, retention_purge> retention_purging_;
  /// When newly_due last looked.
  std::optional<std::int64_t> due_checked_ns_;
  std::map<std::string, core::schedule> schedules_;
  /// (next slot, id) of each schedule that is neither paused nor ended.
  std::set<std::pair<std::int64_t, std::string>> schedules_due_;
  std::map<std::string, std::int64_t> schedule_due_of_;
  /// Ended instances purged without being made live, by the batch that purges
  /// them. Until it commits the store still has them: an instance made live
  /// meanwhile is purged again through itself first (see operate).
  std::unordered_map<std::string, std::uint64_t> quiet_purges_;
  store::status_counts retention_purged_{};
};

}  // namespace dtsd::engine
