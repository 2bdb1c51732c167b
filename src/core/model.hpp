#pragma once
/// The Durable Task model in plain C++: history events, orchestrator actions,
/// instance records, work items and the messages between instances. Mirrors
/// schema/model.capnp (the storage format) and the official protocol; src/store
/// translates between the two. Times are nanoseconds since the Unix epoch.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace dtsd::core {

/// A nullable payload (the protocol's google.protobuf.StringValue): null is not "".
using payload = std::optional<std::string>;
/// Tags are a sorted map so equal tag sets compare equal.
using tag_map = std::map<std::string, std::string>;

/// Values equal to the protocol's OrchestrationStatus enum.
enum class runtime_status : std::uint8_t {
  running = 0,
  completed = 1,
  continued_as_new = 2,
  failed = 3,
  canceled = 4,
  terminated = 5,
  pending = 6,
  suspended = 7,
};
inline constexpr std::uint8_t runtime_status_count = 8;

bool is_terminal(runtime_status status);
std::string_view to_string(runtime_status status);

struct failure_details {
  std::string error_type;
  std::string error_message;
  payload stack_trace;
  std::shared_ptr<const failure_details> inner_failure;
  bool non_retriable = false;

  friend bool operator==(const failure_details& a, const failure_details& b);
};

struct orchestration_instance {
  std::string instance_id;
  std::string execution_id;
  friend bool operator==(const orchestration_instance&, const orchestration_instance&) = default;
};

struct parent_instance {
  std::int32_t task_scheduled_id = -1;
  std::string name;
  payload version;
  orchestration_instance instance;
  friend bool operator==(const parent_instance&, const parent_instance&) = default;
};

/// History event bodies, one struct per protocol event kind.
namespace events {

struct execution_started {
  std::string name;
  payload version;
  payload input;
  orchestration_instance instance;
  std::optional<parent_instance> parent;
  std::int64_t scheduled_start_ns = 0;
  tag_map tags;
  friend bool operator==(const execution_started&, const execution_started&) = default;
};
struct execution_completed {
  runtime_status status = runtime_status::completed;
  payload result;
  std::optional<failure_details> failure;
  friend bool operator==(const execution_completed&, const execution_completed&) = default;
};
struct execution_terminated {
  payload input;
  bool recurse = false;
  friend bool operator==(const execution_terminated&, const execution_terminated&) = default;
};
struct task_scheduled {
  std::string name;
  payload version;
  payload input;
  tag_map tags;
  friend bool operator==(const task_scheduled&, const task_scheduled&) = default;
};
struct task_completed {
  std::int32_t task_scheduled_id = -1;
  payload result;
  friend bool operator==(const task_completed&, const task_completed&) = default;
};
struct task_failed {
  std::int32_t task_scheduled_id = -1;
  failure_details failure;
  friend bool operator==(const task_failed&, const task_failed&) = default;
};
struct sub_orchestration_created {
  std::string instance_id;
  std::string name;
  payload version;
  payload input;
  tag_map tags = {};
  friend bool operator==(const sub_orchestration_created&,
                         const sub_orchestration_created&) = default;
};
struct sub_orchestration_completed {
  std::int32_t task_scheduled_id = -1;
  payload result;
  friend bool operator==(const sub_orchestration_completed&,
                         const sub_orchestration_completed&) = default;
};
struct sub_orchestration_failed {
  std::int32_t task_scheduled_id = -1;
  failure_details failure;
  friend bool operator==(const sub_orchestration_failed&,
                         const sub_orchestration_failed&) = default;
};
struct timer_created {
  std::int64_t fire_at_ns = 0;
  friend bool operator==(const timer_created&, const timer_created&) = default;
};
struct timer_fired {
  std::int64_t fire_at_ns = 0;
  std::int32_t timer_id = -1;
  friend bool operator==(const timer_fired&, const timer_fired&) = default;
};
struct orchestrator_started {
  friend bool operator==(const orchestrator_started&, const orchestrator_started&) = default;
};
struct orchestrator_completed {
  friend bool operator==(const orchestrator_completed&,
                         const orchestrator_completed&) = default;
};
struct event_sent {
  std::string instance_id;
  std::string name;
  payload input;
  friend bool operator==(const event_sent&, const event_sent&) = default;
};
struct event_raised {
  std::string name;
  payload input;
  friend bool operator==(const event_raised&, const event_raised&) = default;
};
struct generic_event {
  payload data;
  friend bool operator==(const generic_event&, const generic_event&) = default;
};
struct continue_as_new {
  payload input;
  friend bool operator==(const continue_as_new&, const continue_as_new&) = default;
};
struct execution_suspended {
  payload input;
  friend bool operator==(const execution_suspended&, const execution_suspended&) = default;
};
struct execution_resumed {
  payload input;
  friend bool operator==(const execution_resumed&, const execution_resumed&) = default;
};
struct execution_rewound {
  payload reason;
  /// Set on a rewind sent by a parent that was rewound: the parent's new execution.
  std::string parent_execution_id;
  /// Also on a parent's rewind: how the child was created (the parent's
  /// SubOrchestrationInstanceCreated), so that a child purged since its failure is
  /// created again. The parent is the rewound parent's new execution.
  std::string name = {};
  payload version = std::nullopt;
  payload input = std::nullopt;
  std::optional<parent_instance> parent = std::nullopt;
  tag_map tags = {};
  friend bool operator==(const execution_rewound&, const execution_rewound&) = default;
};
struct entity_operation_signaled {
  std::string request_id;
  std::string operation;
  std::int64_t scheduled_time_ns = 0;
  payload input;
  std::string target_instance_id;
  friend bool operator==(const entity_operation_signaled&,
                         const entity_operation_signaled&) = default;
};
struct entity_operation_called {
  std::string request_id;
  std::string operation;
  std::int64_t scheduled_time_ns = 0;
  payload input;
  std::string parent_instance_id;
  std::string parent_execution_id;
  std::string target_instance_id;
  friend bool operator==(const entity_operation_called&,
                         const entity_operation_called&) = default;
};
struct entity_operation_completed {
  std::string request_id;
  payload output;
  friend bool operator==(const entity_operation_completed&,
                         const entity_operation_completed&) = default;
};
struct entity_operation_failed {
  std::string request_id;
  failure_details failure;
  friend bool operator==(const entity_operation_failed&,
                         const entity_operation_failed&) = default;
};
struct entity_lock_requested {
  std::string critical_section_id;
  std::vector<std::string> lock_set;
  std::int32_t position = 0;
  std::string parent_instance_id;
  friend bool operator==(const entity_lock_requested&, const entity_lock_requested&) = default;
};
struct entity_lock_granted {
  std::string critical_section_id;
  friend bool operator==(const entity_lock_granted&, const entity_lock_granted&) = default;
};
struct entity_unlock_sent {
  std::string critical_section_id;
  std::string parent_instance_id;
  std::string target_instance_id;
  friend bool operator==(const entity_unlock_sent&, const entity_unlock_sent&) = default;
};

}  // namespace events

struct instance_record;

/// HistoryStateEvent carries a whole instance record; boxed to break the cycle.
struct history_state {
  std::shared_ptr<const instance_record> state;
  friend bool operator==(const history_state& a, const history_state& b);
};

using event_body = std::variant<
    events::execution_started, events::execution_completed, events::execution_terminated,
    events::task_scheduled, events::task_completed, events::task_failed,
    events::sub_orchestration_created, events::sub_orchestration_completed,
    events::sub_orchestration_failed, events::timer_created, events::timer_fired,
    events::orchestrator_started, events::orchestrator_completed, events::event_sent,
    events::event_raised, events::generic_event, history_state, events::continue_as_new,
    events::execution_suspended, events::execution_resumed, events::execution_rewound,
    events::entity_operation_signaled, events::entity_operation_called,
    events::entity_operation_completed, events::entity_operation_failed,
    events::entity_lock_requested, events::entity_lock_granted, events::entity_unlock_sent>;

struct history_event {
  std::int32_t event_id = -1;
  std::int64_t timestamp_ns = 0;
  event_body body;
  friend bool operator==(const history_event&, const history_event&) = default;
};

/// Orchestrator actions, one struct per protocol action kind.
namespace actions {

struct schedule_task {
  std::string name;
  payload version;
  payload input;
  tag_map tags;
  friend bool operator==(const schedule_task&, const schedule_task&) = default;
};
struct create_sub_orchestration {
  std::string instance_id;
  std::string name;
  payload version;
  payload input;
  tag_map tags = {};
  friend bool operator==(const create_sub_orchestration&,
                         const create_sub_orchestration&) = default;
};
struct create_timer {
  std::int64_t fire_at_ns = 0;
  friend bool operator==(const create_timer&, const create_timer&) = default;
};
struct send_event {
  orchestration_instance instance;
  std::string name;
  payload data;
  friend bool operator==(const send_event&, const send_event&) = default;
};
struct complete_orchestration {
  runtime_status status = runtime_status::completed;
  payload result;
  payload details;
  payload new_version;
  std::vector<history_event> carryover_events;
  std::optional<failure_details> failure;
  /// Non-empty: the instance's tags from now on (also those of a new execution).
  tag_map tags = {};
  friend bool operator==(const complete_orchestration&,
                         const complete_orchestration&) = default;
};
struct terminate_orchestration {
  std::string instance_id;
  payload reason;
  bool recurse = false;
  friend bool operator==(const terminate_orchestration&,
                         const terminate_orchestration&) = default;
};
struct send_entity_message {
  std::variant<events::entity_operation_signaled, events::entity_operation_called,
               events::entity_lock_requested, events::entity_unlock_sent>
      message;
  friend bool operator==(const send_entity_message&, const send_entity_message&) = default;
};

}  // namespace actions

struct orchestrator_action {
  std::int32_t id = -1;
  std::variant<actions::schedule_task, actions::create_sub_orchestration, actions::create_timer,
               actions::send_event, actions::complete_orchestration,
               actions::terminate_orchestration, actions::send_entity_message>
      body;
  friend bool operator==(const orchestrator_action&, const orchestrator_action&) = default;
};

/// What GetInstance and QueryInstances report about one instance.
struct instance_record {
  std::string instance_id;
  std::string execution_id;
  std::string name;
  payload version;
  runtime_status status = runtime_status::pending;
  payload input;
  payload output;
  payload custom_status;
  std::int64_t created_at_ns = 0;
  std::int64_t last_updated_at_ns = 0;
  std::int64_t completed_at_ns = 0;   ///< 0 while not terminal.
  std::int64_t scheduled_start_ns = 0;  ///< 0 means "start now".
  std::optional<parent_instance> parent;
  tag_map tags;
  std::optional<failure_details> failure;
  // Entities (instance ids "@name@key") only:
  payload entity_state;                  ///< Null: the entity has no state.
  std::string entity_locked_by;          ///< The orchestration holding its lock, or empty.
  std::string entity_lock_id;            ///< That lock's critical section id.
  std::vector<history_event> entity_deferred;  ///< Messages waiting for the lock, or for their time.
  friend bool operator==(const instance_record&, const instance_record&) = default;
};

/// Start (or replace) an orchestration.
struct start_request {
  std::string instance_id;
  std::string execution_id;  ///< Chosen by the caller (core has no randomness).
  std::string name;
  payload version;
  payload input;
  tag_map tags;
  std::int64_t scheduled_start_ns = 0;
  std::optional<parent_instance> parent;
  /// An existing instance in one of these statuses is replaced; otherwise the start
  /// fails with already_exists. The protocol's default is "terminal statuses".
  std::vector<runtime_status> replaceable_statuses;
  friend bool operator==(const start_request&, const start_request&) = default;
};

/// The default reuse policy: any terminal instance may be replaced.
std::vector<runtime_status> terminal_statuses();

struct terminate_request {
  payload reason;
  bool recurse = false;
  friend bool operator==(const terminate_request&, const terminate_request&) = default;
};

/// A message from one instance to another, possibly in another partition.
struct instance_message {
  std::string target_instance_id;
  /// When set, the message is for this execution only; a newer execution drops it.
  std::string target_execution_id;
  std::variant<start_request, history_event, terminate_request> body;
  friend bool operator==(const instance_message&, const instance_message&) = default;
};

/// An orchestrator work item, or an entity batch: entities ride the same dispatch
/// path (one item in flight per instance, leases, tokens). For an entity the new
/// events are the operations (signaled and called events), there is no history,
/// and `entity_state` is its current state.
struct orchestrator_work_item {
  std::string instance_id;
  std::string execution_id;
  std::vector<history_event> past_events;
  std::vector<history_event> new_events;
  std::uint64_t completion_token = 0;
  bool entity = false;
  payload entity_state = std::nullopt;
  /// The orchestration's name and version (an entity's name), for routing by the
  /// sessions' work item filters; not sent to workers (they read the history).
  std::string name = {};
  payload version = std::nullopt;
};

namespace entity_actions {
struct signal {
  std::string instance_id;
  std::string operation;
  payload input;
  std::int64_t scheduled_ns = 0;  ///< 0: now.
  friend bool operator==(const signal&, const signal&) = default;
};
struct start_orchestration {
  std::string instance_id;
  std::string name;
  payload version;
  payload input;
  std::int64_t scheduled_ns = 0;
  friend bool operator==(const start_orchestration&, const start_orchestration&) = default;
};
}  // namespace entity_actions
using entity_action = std::variant<entity_actions::signal, entity_actions::start_orchestration>;

/// What a worker made of an entity batch.
struct entity_batch_result {
  /// One per operation it ran, in order (a result, or the operation's failure);
  /// operations past the last result stay queued.
  std::vector<std::variant<payload, failure_details>> results;
  std::vector<entity_action> actions;
  payload state;
  /// The whole batch failed: the state stays, every operation fails with this.
  std::optional<failure_details> failure;
  friend bool operator==(const entity_batch_result&, const entity_batch_result&) = default;
};

struct orchestrator_completion {
  std::string instance_id;
  std::uint64_t completion_token = 0;
  std::vector<orchestrator_action> actions;
  payload custom_status;
  std::optional<entity_batch_result> entity = std::nullopt;  ///< Set for an entity batch.
  friend bool operator==(const orchestrator_completion&,
                         const orchestrator_completion&) = default;
};

/// An activity to run: queued in the partition until a worker completes it.
struct activity_request {
  std::string instance_id;
  std::string execution_id;
  std::int32_t task_id = -1;
  std::string name;
  payload version;
  payload input;
  tag_map tags;
  friend bool operator==(const activity_request&, const activity_request&) = default;
};

struct activity_result {
  std::string instance_id;
  std::string execution_id;
  std::int32_t task_id = -1;
  std::uint64_t completion_token = 0;
  std::variant<payload, failure_details> outcome;  ///< Result, or failure.
  friend bool operator==(const activity_result&, const activity_result&) = default;
};

struct timer_entry {
  std::string instance_id;
  std::string execution_id;
  std::int32_t timer_id = -1;
  std::int64_t fire_at_ns = 0;
  friend bool operator==(const timer_entry&, const timer_entry&) = default;
};

}  // namespace dtsd::core
