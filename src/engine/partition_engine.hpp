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
/// Messages to instances of the same partition are applied in the same batch.
/// Messages to other partitions go through the outbox and are deduplicated by the
/// receiver with a high-water mark per source partition; the transport between two
/// partitions must deliver in order (resending everything unacknowledged, in order,
/// after a reconnect), which a connection or a CAF mailbox does.

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
#include <vector>

#include "core/error.hpp"
#include "core/limits.hpp"
#include "core/orchestration.hpp"
#include "store/partition_store.hpp"

namespace dtsd::engine {

/// Draws execution ids for top-level starts (random in production, seeded in tests).
using execution_id_source = std::function<std::string()>;

struct engine_options {
  core::payload_limits limits;
  /// Bounds one call of fire_due_timers; the rest fire on the next call.
  std::size_t timers_per_tick_max = 10000;
  /// Past this many cached instances, idle ones are evicted (they reload from the
  /// store, which holds all of their state, when next touched).
  std::size_t instance_cache_count_max = 100000;
};

/// An activity handed to a worker under a lease token.
struct activity_work_item {
  core::activity_request request;
  std::uint64_t completion_token = 0;
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
  /// activities, timers, the unacknowledged outbox and the dedup marks.
  static expected<std::unique_ptr<partition_engine>> open(
      std::unique_ptr<store::partition_store> store, engine_options options,
      execution_id_source new_execution_id, std::int64_t now_ns);

  const store::partition_identity& identity() const { return store_->identity(); }
  store::partition_store& store() { return *store_; }

  // -- Inputs. Each returns the batch that makes it durable, or an error and no change.

  /// An empty execution id in `request` is drawn from the execution id source.
  expected<started> start(core::start_request request, std::int64_t now_ns);
  expected<std::uint64_t> raise_event(const std::string& instance_id, const std::string& name,
                                      const core::payload& input, std::int64_t now_ns);
  expected<std::uint64_t> terminate(const std::string& instance_id,
                                    const core::terminate_request& request, std::int64_t now_ns);
  /// A message from a client straight to an instance (entity signals, lock releases).
  expected<std::uint64_t> deliver(const core::instance_message& message, std::int64_t now_ns);
  /// Rewinds a failed orchestration (see core::apply_rewind).
  expected<std::uint64_t> rewind(const std::string& instance_id, const core::payload& reason,
                                 std::int64_t now_ns);
  expected<std::uint64_t> suspend(const std::string& instance_id, const core::payload& reason,
                                  std::int64_t now_ns);
  expected<std::uint64_t> resume(const std::string& instance_id, const core::payload& reason,
                                 std::int64_t now_ns);
  expected<std::uint64_t> purge(const std::string& instance_id, std::int64_t now_ns);
  expected<std::uint64_t> complete_orchestrator(const core::orchestrator_completion& completion,
                                                std::int64_t now_ns);
  expected<void> abandon_orchestrator(const std::string& instance_id, std::uint64_t token);
  expected<std::uint64_t> complete_activity(const core::activity_result& result,
                                            std::int64_t now_ns);
  expected<void> abandon_activity(const core::activity_request& request, std::uint64_t token);
  /// Fires every timer due at `now_ns` (at most timers_per_tick_max).
  void fire_due_timers(std::int64_t now_ns);
  /// A message from another partition's outbox.
  expected<std::uint64_t> receive(const store::outbox_entry& entry, std::int64_t now_ns);
  /// The destination applied our messages up to `sequence`; they leave the outbox.
  void outbound_acknowledged(std::uint32_t destination, std::uint64_t sequence);

  // -- The commit cycle.

  bool has_open_batch() const;
  /// Closes the open batch for writing. Batches must be committed in this order.
  std::optional<std::pair<std::uint64_t, store::write_batch>> take_batch();
  /// The batch is durable; returns what it releases and makes its work available.
  released batch_committed(std::uint64_t batch);
  /// The number the next input will be acknowledged with.
  std::uint64_t open_batch_number() const { return next_batch_; }

  // -- Work, only what is durable.

  std::optional<core::orchestrator_work_item> next_orchestrator_item(std::int64_t now_ns);
  std::optional<activity_work_item> next_activity_item();
  /// Whether next_orchestrator_item may find something (the ready list can hold
  /// instances that turn out not to be ready).
  bool may_have_orchestrator_work() const { return !ready_.empty(); }
  /// The next entity batch (entities wait in a ready list of their own, since only
  /// workers that run entities take them).
  std::optional<core::orchestrator_work_item> next_entity_item(std::int64_t now_ns);
  bool may_have_entity_work() const { return !ready_entities_.empty(); }
  bool has_activity_work() const { return !activity_queue_.empty(); }
  /// The earliest time a timer or a scheduled start is due, if any.
  std::optional<std::int64_t> next_wakeup_ns() const;
  std::vector<store::outbox_entry> unacknowledged_outbox() const;

  /// Applies one logged input again, as it was applied live (the lease and the
  /// events a worker was given come from the log). Replaying a partition's log into
  /// an engine over an empty store rebuilds the same instances.
  expected<void> replay(const store::partition_event& event);

  // -- Reads of the in-memory state (what is applied, durable or about to be).

  expected<std::optional<core::instance_record>> get_instance(const std::string& instance_id);
  /// Ids of every sub-orchestration the instance's current execution created.
  std::vector<std::string> sub_orchestrations_of(const std::string& instance_id);
  std::size_t cached_instance_count() const { return instances_.size(); }

 private:
  struct instance_slot {
    std::optional<core::orchestration_state> state;
    /// Inbox rows below this sequence are on disk and may be given to a worker.
    std::uint64_t durable_inbox_end = 0;
  };

  struct open_batch {
    store::write_batch batch;
    std::map<std::string, core::instance_change> changes;
    std::vector<core::activity_request> activities;
    std::vector<store::outbox_entry> outbound;
    std::map<std::uint32_t, std::uint64_t> receipts;
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

  partition_engine(std::unique_ptr<store::partition_store> store, engine_options options,
                   execution_id_source new_execution_id, std::int64_t now_ns);

  expected<void> recover(std::int64_t now_ns);
  expected<instance_slot*> slot_of(const std::string& instance_id);
  expected<instance_slot*> existing(const std::string& instance_id);
  /// Records a successful transition: the row change, the log entry and the effects.
  void record(const std::string& instance_id, instance_slot& slot, core::transition transition,
              std::int64_t now_ns, int depth);
  void route(core::instance_message message, std::int64_t now_ns, int depth);
  void apply_local(const core::instance_message& message, std::int64_t now_ns, int depth);
  using logged_input = decltype(store::partition_event::body);
  void log(std::int64_t now_ns, logged_input body);
  /// Applies `apply` to an existing instance and, if it succeeds, logs `input` and
  /// records the transition.
  template <class Apply>
  expected<std::uint64_t> change_existing(const std::string& instance_id, std::int64_t now_ns,
                                          Apply apply, logged_input input);
  void fire_timer(const core::timer_entry& timer, std::int64_t now_ns);
  /// Drops idle instances from the cache when it is over its limit.
  void evict_idle();
  void make_ready(const std::string& instance_id);
  std::uint32_t partition_of(const std::string& instance_id) const;

  std::unique_ptr<store::partition_store> store_;
  engine_options options_;
  execution_id_source new_execution_id_;

  std::unordered_map<std::string, instance_slot> instances_;
  open_batch open_;
  std::deque<sealed_batch> sealed_;
  std::uint64_t next_batch_ = 1;

  std::deque<std::string> ready_;
  std::set<std::string> ready_set_;
  std::deque<std::string> ready_entities_;
  std::set<std::string> ready_entities_set_;
  std::optional<core::orchestrator_work_item> next_ready(std::deque<std::string>& ready, std::set<std::string>& ready_set,
                                                         std::int64_t now_ns);
  std::deque<core::activity_request> activity_queue_;
  std::map<std::tuple<std::string, std::string, std::int32_t>, std::uint64_t> activity_leases_;
  std::priority_queue<wakeup, std::vector<wakeup>, std::greater<>> wakeups_;
  std::map<std::uint64_t, store::outbox_entry> outbox_;
  std::uint64_t next_outbox_sequence_ = 1;
  std::uint64_t durable_outbox_end_ = 1;  ///< Outbox entries below this are on disk.
  std::map<std::uint32_t, std::uint64_t> dedup_marks_;
  std::uint64_t next_token_ = 1;
};

}  // namespace dtsd::engine
