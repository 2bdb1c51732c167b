#pragma once
/// Live instances: one orchestration or entity each, with its whole state (cached
/// history, inbox, the work item in flight). The partition engine never touches an
/// instance's state itself: it sends the instance's host operations, which are
/// data (`instance_op`), and gets back what each did (`instance_outcome`), in the
/// order sent for one instance. In dtsd each live instance is an actor pinned to
/// its partition's actor (actors/); the tests, the simulation and log replay use
/// `inline_host`, which answers each operation at once.
///
/// An instance never writes storage: what an input changed goes back to the
/// partition as the rows to write in the batch the input belongs to. Every change
/// of state is one logged input applied by `perform`, the same way live and on
/// replay.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/error.hpp"
#include "core/limits.hpp"
#include "core/orchestration.hpp"
#include "store/partition_store.hpp"

namespace dtsd::engine {

/// An input as the partition's log keeps it.
using logged_input = decltype(store::partition_event::body);

class live_instance {
 public:
  using loader = std::function<expected<std::optional<core::orchestration_state>>(const std::string&)>;

  /// Makes `id` live from what `load` finds (the store, which holds all of its
  /// durable state). A failed load leaves `load_error` set and the state empty.
  live_instance(std::string id, const loader& load);

  const std::string& id() const { return id_; }

  std::optional<core::orchestration_state> state;
  std::optional<error> load_error;
  /// Inbox rows below this sequence are on disk and may be given to a worker.
  std::uint64_t durable_inbox_end = 0;

  /// Folds `change` into what batch `batch` writes for this instance and returns
  /// those rows (every change of the batch so far, as the state is now).
  store::instance_write note(std::uint64_t batch, const core::instance_change& change);

  /// No work item out and none to give: nothing is lost if it stops being live.
  bool idle() const;

 private:
  std::string id_;
  std::uint64_t change_batch_ = 0;
  core::instance_change change_;
};

/// What a partition asks of one live instance.
namespace instance_ops {

/// Apply an input of batch `batch`. An orchestrator completion is logged with what
/// the instance knew of the work item (events consumed, when it was given, the
/// next execution id): the instance fills those in.
struct apply {
  logged_input input;
  std::uint64_t batch = 0;
  std::int64_t now_ns = 0;
};
/// Replay: the work item a worker held when the completion in the log came in.
struct restore {
  core::in_flight_work_item work;
};
/// The work item under `token` comes back unanswered.
struct give_back {
  std::uint64_t token = 0;
};
/// The next work item, under `token`, of what is on disk; `durable_inbox_end` is
/// the partition's latest word on what that is.
struct next_work {
  std::optional<std::uint64_t> durable_inbox_end;
  std::uint64_t token = 0;
  std::int64_t now_ns = 0;
};
/// The instance's record, as applied.
struct read {};
/// Every sub-orchestration its current execution created.
struct children {};

}  // namespace instance_ops

using instance_op = std::variant<instance_ops::apply, instance_ops::restore, instance_ops::give_back,
                                 instance_ops::next_work, instance_ops::read, instance_ops::children>;

/// What an input the instance accepted changed.
struct applied_input {
  /// What the batch writes for the instance (every change of the batch so far).
  store::instance_write write;
  core::effects effects;
  bool has_state = false;
  /// A pending instance with a scheduled start: when it becomes ready.
  std::optional<std::int64_t> start_due_ns;
};

/// What an operation did. Only what the operation fills is engaged: an outcome
/// is made for every operation, so it stays cheap to make and move.
struct instance_outcome {
  /// Why it was refused or failed; nothing changed then.
  std::optional<error> refused;
  /// The instance could not be read from the store (then `refused` says why).
  bool load_failed = false;
  /// No work item out and none to give, after the operation.
  bool idle = true;

  /// apply: the input as the log keeps it (given back refused or not).
  std::optional<logged_input> logged;
  /// apply, accepted.
  std::optional<applied_input> applied;
  std::optional<core::orchestrator_work_item> item;  ///< next_work
  std::optional<core::instance_record> record;       ///< read (none: no such instance)
  std::vector<std::string> sub_orchestrations;       ///< children
};

/// Runs `op` on `instance`: the one place an instance's state changes.
instance_outcome perform(live_instance& instance, instance_op& op, const core::payload_limits& limits);

/// Where live instances are, and how an operation reaches one.
class instance_host {
 public:
  /// How the host hands an outcome back: the operation's number and what it did.
  using answer = std::function<void(std::uint64_t number, instance_outcome outcome)>;

  virtual ~instance_host() = default;

  /// What the partition gives its host before the first operation.
  void attach(live_instance::loader load, core::payload_limits limits, answer answered) {
    load_ = std::move(load);
    limits_ = limits;
    answer_ = std::move(answered);
  }

  /// Runs operation `number` on live instance `id` (made live first if it is not)
  /// and answers it, now or later, on the partition's thread. Operations on one
  /// instance run and answer in the order given.
  virtual void run(const std::string& id, std::uint64_t number, instance_op op) = 0;
  /// Ends live instance `id`; the caller knows no operation is outstanding on it.
  virtual void evict(const std::string& id) = 0;

 protected:
  live_instance::loader load_;
  core::payload_limits limits_;
  answer answer_;
};

/// Live instances kept in one thread's memory (the inline host; tests' hosts).
class local_instances {
 public:
  /// Runs `op` on `id`, made live from `load` if it is not; one whose load failed is
  /// not kept (the next operation tries the store again).
  instance_outcome perform(const std::string& id, instance_op& op, const live_instance::loader& load,
                           const core::payload_limits& limits);
  void erase(const std::string& id) { live_.erase(id); }

 private:
  std::unordered_map<std::string, std::unique_ptr<live_instance>> live_;
};

/// Runs every operation at once on the calling thread and answers it before returning.
class inline_host final : public instance_host {
 public:
  void run(const std::string& id, std::uint64_t number, instance_op op) override {
    answer_(number, live_.perform(id, op, load_, limits_));
  }
  void evict(const std::string& id) override { live_.erase(id); }

 private:
  local_instances live_;
};

}  // namespace dtsd::engine
