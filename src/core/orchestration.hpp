#pragma once
/// The orchestration state machine, server side. Every change to an orchestration
/// goes through one of the `apply_*` functions below: given the instance's state and
/// an input (past tense: a start was requested, a work item completed, a timer
/// fired, ...) they update the state and return what changed in the stored rows and
/// the effects for the partition to carry out.
///
/// Rules that hold for every function here:
/// - Pure: no clock, no randomness, no I/O; time and new execution ids are inputs.
/// - All-or-nothing: when a function returns an error the state is unchanged.

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "error.hpp"
#include "limits.hpp"
#include "model.hpp"

namespace dtsd::core {

/// The orchestrator work item currently leased to a worker (memory only: after a
/// restart everything in flight is dispatched again with a new token).
struct in_flight_work_item {
  std::uint64_t completion_token = 0;
  std::size_t new_event_count = 0;  ///< Inbox rows the worker was given.
  /// The time of the OrchestratorStarted event the work item began with (the
  /// orchestrator's "current time"); the same event goes into the history.
  std::int64_t started_at_ns = 0;
};

struct orchestration_state {
  instance_record record;
  std::vector<history_event> history;  ///< Events the orchestrator has processed.
  std::vector<history_event> inbox;    ///< New events it has not seen yet.
  std::uint64_t inbox_first_sequence = 0;  ///< Storage key of inbox[0].
  std::optional<in_flight_work_item> in_flight;
};

/// Which stored rows of one instance an apply changed. History and inbox rows only
/// ever change at the ends: history grows at the back (or is reset), the inbox loses
/// rows at the front (every row below `inbox_first_sequence` is gone) and gains rows
/// at the back. A history reset also rewrites the whole inbox.
struct instance_change {
  bool record_changed = false;
  bool history_reset = false;       ///< Delete every stored history row first.
  std::size_t history_appended = 0;  ///< The last N history rows are new.
  std::size_t inbox_appended = 0;    ///< The last N inbox rows are new.
  bool purged = false;               ///< Delete every row of the instance.
};

/// Folds `next` into `into`; `after` is the state once both were applied.
void merge(instance_change& into, const instance_change& next, const orchestration_state& after);

struct effects {
  std::vector<activity_request> activities;  ///< To the activity queue.
  std::vector<timer_entry> timers;           ///< To the timer table.
  std::vector<instance_message> messages;    ///< To other instances (outbox).
};

struct transition {
  instance_change change;
  dtsd::core::effects effects;
};

/// True when an orchestrator work item can be dispatched now.
bool is_ready(const orchestration_state& state, std::int64_t now_ns);

/// When a pending instance with a scheduled start becomes ready, if it is waiting.
std::optional<std::int64_t> start_due_ns(const orchestration_state& state, std::int64_t now_ns);

/// Ids of sub-orchestrations this execution created and has not seen finish.
std::vector<std::string> open_sub_orchestrations(const orchestration_state& state);

/// Ids of every sub-orchestration this execution created.
std::vector<std::string> all_sub_orchestrations(const orchestration_state& state);

/// An id-reuse policy (the statuses an existing instance may have to be replaced)
/// that allows replacing a running instance must also allow a terminated one.
expected<void> validate_reuse_policy(const std::vector<runtime_status>& replaceable);

/// A start was requested. `instance` is empty when no instance has this id; it is
/// filled (or replaced, as the request's reuse policy allows).
expected<transition> apply_start(std::optional<orchestration_state>& instance,
                                 const start_request& request, std::int64_t now_ns,
                                 const payload_limits& limits);

/// The message a failed start of a sub-orchestration sends to its parent.
std::optional<instance_message> start_failed_message(const start_request& request,
                                                     const error& failure, std::int64_t now_ns);

/// A work item was dispatched under `completion_token`: the worker gets the history
/// and the first `new_event_count_max` inbox events (the ones already durable).
/// With `started_at_ns`, the new events begin with an OrchestratorStarted event of
/// that time, as the protocol's workers expect (it is their current time).
/// Fails when the instance is not ready or no inbox event may be given.
expected<orchestrator_work_item> dispatch(orchestration_state& state,
                                          std::uint64_t completion_token,
                                          std::size_t new_event_count_max = SIZE_MAX,
                                          std::int64_t started_at_ns = 0);

/// The worker gave the work item back unprocessed; the instance becomes ready again.
expected<void> abandon(orchestration_state& state, std::uint64_t completion_token);

/// The worker completed the work item with actions. `new_execution_id` is used when
/// the orchestration continues as new.
expected<transition> apply_completion(orchestration_state& state,
                                      const orchestrator_completion& completion,
                                      std::string_view new_execution_id, std::int64_t now_ns,
                                      const payload_limits& limits);

/// An activity finished. Applied once per task id; a repeat is `duplicate`.
expected<transition> apply_activity_result(orchestration_state& state,
                                           const activity_result& result, std::int64_t now_ns,
                                           const payload_limits& limits);

expected<transition> apply_timer_fired(orchestration_state& state, const timer_entry& timer,
                                       std::int64_t now_ns);

expected<transition> apply_raise_event(orchestration_state& state, std::string_view name,
                                       const payload& input, std::int64_t now_ns,
                                       const payload_limits& limits);

/// A message from another instance arrived: a start, an event or a termination.
expected<transition> apply_message(std::optional<orchestration_state>& instance,
                                   const instance_message& message, std::int64_t now_ns,
                                   const payload_limits& limits);

expected<transition> apply_terminate(orchestration_state& state, const terminate_request& request,
                                     std::int64_t now_ns, const payload_limits& limits);

expected<transition> apply_suspend(orchestration_state& state, const payload& reason,
                                   std::int64_t now_ns);

expected<transition> apply_resume(orchestration_state& state, const payload& reason,
                                  std::int64_t now_ns);

/// Deletes a terminal instance. `instance` is emptied.
expected<transition> apply_purge(std::optional<orchestration_state>& instance);
/// Deletes an entity with its state: refused while an orchestration holds its lock
/// or operations wait for it (or run), which would be lost.
expected<transition> apply_entity_delete(std::optional<orchestration_state>& instance);

// ---------------------------------------------------------------------------
// Entities: instance ids "@name@key". They share the instance state, the inbox and
// the dispatch path with orchestrations (one batch in flight, leases, tokens); the
// record keeps their state, their lock and the messages waiting for either.

/// An entity whose state is null and which holds nothing: CleanEntityStorage may
/// remove it.
bool is_empty_entity(const orchestration_state& state);

/// A message for an entity (an operation signaled or called, a lock requested or
/// released); the first one creates it. Operations wait in the record while the
/// entity is locked by another orchestration or until their scheduled time; lock
/// requests wait for the lock. A granted lock moves on to the next entity of the
/// lock set, or (at the last) tells the orchestration.
expected<transition> apply_entity_message(std::optional<orchestration_state>& instance,
                                          const instance_message& message, std::int64_t now_ns);

/// A worker finished an entity batch: callers get their answers, the state and the
/// actions (signals, orchestration starts) apply, the operations leave the inbox.
expected<transition> apply_entity_completion(orchestration_state& state, const orchestrator_completion& completion,
                                             std::int64_t now_ns, const payload_limits& limits);

/// A scheduled operation's time came: waiting messages are delivered again.
expected<transition> apply_entity_wakeup(orchestration_state& state, std::int64_t now_ns);

/// Rewinds a failed orchestration to its last good point: the history loses the
/// failures (failed tasks with their scheduling, failed sub-orchestrations, the
/// completion) and every task or timer that never finished, so the orchestrator's
/// replay schedules them again; the instance runs on as `new_execution_id` with an
/// ExecutionRewound event as its next work. Failed sub-orchestrations are rewound
/// too (they report to the new execution). With `parent_execution_id`, the parent
/// that created this instance now runs under that execution.
expected<transition> apply_rewind(orchestration_state& state, const payload& reason,
                                  std::string_view parent_execution_id,
                                  std::string_view new_execution_id, std::int64_t now_ns,
                                  const payload_limits& limits);

}  // namespace dtsd::core
