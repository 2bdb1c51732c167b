// Rewind: a failed orchestration resumes from its last good point, and its failed
// children with it (see core::apply_rewind).

#include "orchestration.hpp"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "ids.hpp"
#include "overloaded.hpp"
#include "transitions.hpp"

namespace dtsd::core {
using namespace detail;

namespace detail {

/// A rewound parent rewinds its failed children; one purged since then is started
/// again as its parent first created it, reporting to the parent's new execution.
std::optional<start_request> recreate_rewound_child(const instance_message& message) {
  const auto* event = std::get_if<history_event>(&message.body);
  if (event == nullptr) return std::nullopt;
  const auto* rewound = std::get_if<events::execution_rewound>(&event->body);
  if (rewound == nullptr || rewound->name.empty() || !rewound->parent) return std::nullopt;
  start_request child;
  child.instance_id = message.target_instance_id;
  child.execution_id = derive_execution_id(rewound->parent->instance.execution_id,
                                           fmt::format("sub:{}", rewound->parent->task_scheduled_id));
  child.name = rewound->name;
  child.version = rewound->version;
  child.input = rewound->input;
  child.tags = rewound->tags;
  child.parent = rewound->parent;
  child.replaceable_statuses = terminal_statuses();
  return child;
}

}  // namespace detail

expected<transition> apply_rewind(orchestration_state& state, const payload& reason,
                                  std::string_view parent_execution_id,
                                  std::string_view new_execution_id, std::int64_t now_ns,
                                  const payload_limits& limits) {
  auto& record = state.record;
  if (record.status != runtime_status::failed) {
    return error{errc::failed_precondition,
                 fmt::format("instance '{}' is {}: only a failed orchestration can be rewound",
                             record.instance_id, to_string(record.status))};
  }
  if (auto fits = check_payload("rewind reason", reason, limits.event_data_bytes_max); !fits) {
    return fits.error();
  }
  // What finished well stays; what failed or never finished goes.
  std::set<std::int32_t> finished;
  std::set<std::int32_t> failed_children;
  for (const auto& event : state.history) {
    std::visit(overloaded{[&](const events::task_completed& e) { finished.insert(e.task_scheduled_id); },
                          [&](const events::timer_fired& e) { finished.insert(e.timer_id); },
                          [&](const events::sub_orchestration_completed& e) {
                            finished.insert(e.task_scheduled_id);
                          },
                          [&](const events::sub_orchestration_failed& e) {
                            failed_children.insert(e.task_scheduled_id);
                          },
                          [](const auto&) {}},
               event.body);
  }
  transition result;
  std::vector<history_event> kept;
  for (auto& event : state.history) {
    const bool drop = std::visit(
        overloaded{[&](const events::task_scheduled&) { return !finished.count(event.event_id); },
                   [&](const events::timer_created&) { return !finished.count(event.event_id); },
                   [](const events::task_failed&) { return true; },
                   [](const events::sub_orchestration_failed&) { return true; },
                   [](const events::execution_completed&) { return true; },
                   [&](const events::sub_orchestration_created& e) {
                     if (failed_children.count(event.event_id)) {
                       events::execution_rewound rewind{reason, std::string(new_execution_id)};
                       rewind.name = e.name;
                       rewind.version = e.version;
                       rewind.input = e.input;
                       rewind.tags = e.tags;
                       rewind.parent = parent_instance{event.event_id, record.name, record.version,
                                                       {record.instance_id, std::string(new_execution_id)}};
                       result.effects.messages.push_back(
                           instance_message{e.instance_id, {}, make_event(-1, now_ns, std::move(rewind))});
                     }
                     return false;
                   },
                   [](const auto&) { return false; }},
        event.body);
    if (drop) continue;
    if (auto* started = std::get_if<events::execution_started>(&event.body)) {
      started->instance.execution_id = std::string(new_execution_id);
      if (started->parent && !parent_execution_id.empty()) {
        started->parent->instance.execution_id = std::string(parent_execution_id);
      }
    }
    kept.push_back(std::move(event));
  }
  state.history = std::move(kept);
  result.change.history_reset = true;
  result.change.history_appended = state.history.size();

  record.execution_id = std::string(new_execution_id);
  if (record.parent && !parent_execution_id.empty()) {
    record.parent->instance.execution_id = std::string(parent_execution_id);
  }
  record.status = runtime_status::running;
  record.output.reset();
  record.failure.reset();
  record.completed_at_ns = 0;
  record.last_updated_at_ns = now_ns;
  result.change.record_changed = true;
  clear_inbox(state, result.change);
  push_inbox(state, result.change,
             make_event(-1, now_ns, events::execution_rewound{reason, std::string(parent_execution_id)}));
  return result;
}

}  // namespace dtsd::core
