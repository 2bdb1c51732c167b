#pragma once
/// The helpers that the state transitions of orchestrations (orchestration.cpp),
/// entities (entity.cpp) and rewinds (rewind.cpp) share. Internal to core.

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "orchestration.hpp"

namespace dtsd::core::detail {

error invalid(std::string message);
history_event make_event(std::int32_t event_id, std::int64_t now_ns, event_body body);
/// Appends to the instance's inbox, and to what the change writes.
void push_inbox(orchestration_state& state, instance_change& change, history_event event);
void push_history(orchestration_state& state, instance_change& change, history_event event);
void clear_inbox(orchestration_state& state, instance_change& change);
expected<void> require_not_terminal(const orchestration_state& state, std::string_view what);
expected<void> require_execution(const orchestration_state& state, std::string_view execution_id,
                                 std::string_view what);
std::optional<std::int32_t> completed_task_id(const history_event& event);
std::optional<std::int32_t> scheduled_task_id(const history_event& event);
bool is_outstanding(const orchestration_state& state, std::int32_t task_id);
std::set<std::int32_t> outstanding_task_ids(const orchestration_state& state);
instance_message parent_notification(const orchestration_state& state, std::int64_t now_ns, event_body body);
void notify_parent(const orchestration_state& state, std::int64_t now_ns, effects& out);
void release_entity_locks(const orchestration_state& state, std::int64_t now_ns, effects& out);
/// A rewound parent's failed child that was purged since: its start, as its parent
/// first made it (nothing when the message is no such rewind).
std::optional<start_request> recreate_rewound_child(const instance_message& message);

}  // namespace dtsd::core::detail
