// Entities: messages, locks and operation batches of durable entities.

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

bool is_empty_entity(const orchestration_state& state) {
  const auto& record = state.record;
  return !record.entity_state && record.entity_locked_by.empty() && record.entity_deferred.empty() &&
         state.inbox.empty() && !state.in_flight;
}

namespace {

/// Delivers one message to an entity: into the inbox (an operation the worker may
/// run now), into the record's waiting list, or applied at once (locks).
struct entity_delivery {
  orchestration_state& state;
  transition& result;
  std::int64_t now_ns;

  void defer(history_event event) {
    state.record.entity_deferred.push_back(std::move(event));
    result.change.record_changed = true;
  }

  /// Waits for its time: the instance gets a wakeup then.
  bool wait_for_time(const history_event& event, std::int64_t scheduled_ns) {
    if (scheduled_ns <= now_ns) return false;
    result.effects.timers.push_back(timer_entry{state.record.instance_id, state.record.execution_id, -1, scheduled_ns});
    defer(event);
    return true;
  }

  void operator()(history_event event) {
    auto& record = state.record;
    const bool locked = !record.entity_locked_by.empty();
    std::visit(
        overloaded{
            [&](const events::entity_operation_signaled& e) {
              if (wait_for_time(event, e.scheduled_time_ns)) return;
              if (locked) return defer(std::move(event));
              push_inbox(state, result.change, std::move(event));
            },
            [&](const events::entity_operation_called& e) {
              if (wait_for_time(event, e.scheduled_time_ns)) return;
              if (locked && e.parent_instance_id != record.entity_locked_by) return defer(std::move(event));
              push_inbox(state, result.change, std::move(event));
            },
            [&](const events::entity_lock_requested& e) {
              if (locked) return defer(std::move(event));
              record.entity_locked_by = e.parent_instance_id;
              record.entity_lock_id = e.critical_section_id;
              result.change.record_changed = true;
              const auto next = static_cast<std::size_t>(e.position) + 1;
              if (next < e.lock_set.size()) {
                auto forward = e;
                forward.position = static_cast<std::int32_t>(next);
                result.effects.messages.push_back(
                    instance_message{e.lock_set[next], {}, make_event(-1, now_ns, std::move(forward))});
              } else {
                result.effects.messages.push_back(instance_message{
                    e.parent_instance_id, {}, make_event(-1, now_ns, events::entity_lock_granted{e.critical_section_id})});
              }
            },
            [&](const events::entity_unlock_sent& e) {
              if (!locked || e.critical_section_id != record.entity_lock_id) return;  // Stale: nothing held.
              record.entity_locked_by.clear();
              record.entity_lock_id.clear();
              result.change.record_changed = true;
              redeliver();
            },
            [](const auto&) {},
        },
        event.body);
  }

  /// Everything waiting goes through delivery again, in order.
  void redeliver() {
    auto waiting = std::move(state.record.entity_deferred);
    state.record.entity_deferred.clear();
    result.change.record_changed = true;
    for (auto& event : waiting) (*this)(std::move(event));
  }
};

bool is_entity_message(const history_event& event) {
  return std::holds_alternative<events::entity_operation_signaled>(event.body) ||
         std::holds_alternative<events::entity_operation_called>(event.body) ||
         std::holds_alternative<events::entity_lock_requested>(event.body) ||
         std::holds_alternative<events::entity_unlock_sent>(event.body);
}

}  // namespace

expected<transition> apply_entity_message(std::optional<orchestration_state>& instance,
                                          const instance_message& message, std::int64_t now_ns) {
  const auto* event = std::get_if<history_event>(&message.body);
  if (event == nullptr || !is_entity_message(*event)) {
    return invalid(fmt::format("entity '{}' takes only operations and lock messages", message.target_instance_id));
  }
  const auto* signaled = std::get_if<events::entity_operation_signaled>(&event->body);
  const auto* called = std::get_if<events::entity_operation_called>(&event->body);
  if (signaled || called) {
    if (auto fits = check_name("entity operation name", signaled ? signaled->operation : called->operation); !fits) {
      return fits.error();
    }
  }
  transition result;
  if (!instance) {
    if (auto valid = validate_instance_id(message.target_instance_id); !valid || entity_name(message.target_instance_id).empty()) {
      return invalid(fmt::format("'{}' is not an entity id (@name@key)", message.target_instance_id));
    }
    instance.emplace();
    auto& record = instance->record;
    record.instance_id = message.target_instance_id;
    record.execution_id = derive_execution_id(record.instance_id, "entity");
    record.name = entity_name(record.instance_id);
    record.status = runtime_status::running;
    record.created_at_ns = now_ns;
    record.last_updated_at_ns = now_ns;
    result.change.record_changed = true;
  }
  entity_delivery{*instance, result, now_ns}(*event);
  return result;
}

expected<transition> apply_entity_wakeup(orchestration_state& state, std::int64_t now_ns) {
  transition result;
  entity_delivery{state, result, now_ns}.redeliver();
  return result;
}

namespace {

expected<void> validate_entity_batch(const orchestration_state& state, const entity_batch_result& batch,
                                     std::size_t operations, const payload_limits& limits) {
  if (!batch.failure && batch.results.size() > operations) {
    return invalid(fmt::format("entity '{}': {} results for a batch of {} operations", state.record.instance_id,
                               batch.results.size(), operations));
  }
  for (const auto& result : batch.results) {
    if (const auto* value = std::get_if<payload>(&result)) {
      if (auto fits = check_payload("entity operation result", *value, limits.activity_output_bytes_max); !fits) {
        return fits;
      }
    }
  }
  for (const auto& action : batch.actions) {
    auto checked = std::visit(
        overloaded{[&](const entity_actions::signal& a) -> expected<void> {
                     if (!is_entity_id(a.instance_id) || entity_name(a.instance_id).empty()) {
                       return invalid(fmt::format("entity signal action targets '{}', which is not an entity id",
                                                  a.instance_id));
                     }
                     return check_payload("entity signal input", a.input, limits.event_data_bytes_max);
                   },
                   [&](const entity_actions::start_orchestration& a) -> expected<void> {
                     if (!a.instance_id.empty()) {
                       if (auto valid = validate_orchestration_id(a.instance_id); !valid) return valid.error();
                     }
                     if (a.name.empty()) return invalid("entity start action has no orchestration name");
                     return check_payload("orchestration input", a.input, limits.orchestration_input_bytes_max);
                   }},
        action);
    if (!checked) return checked;
  }
  return {};
}

}  // namespace

expected<transition> apply_entity_completion(orchestration_state& state, const orchestrator_completion& completion,
                                             std::int64_t now_ns, const payload_limits& limits) {
  if (!completion.entity) {
    return invalid(fmt::format("'{}' is an entity: its work item needs an entity batch result",
                               state.record.instance_id));
  }
  const auto given = std::min(state.in_flight->new_event_count, state.inbox.size());
  if (auto valid = validate_entity_batch(state, *completion.entity, given, limits); !valid) return valid.error();
  // A state over the limit fails the whole batch: the state stays as it was, the
  // callers learn why, and nothing else of the batch applies.
  entity_batch_result refused;
  if (!completion.entity->failure) {
    if (auto fits = check_payload("entity state", completion.entity->state, limits.entity_state_bytes_max); !fits) {
      refused.failure = failure_details{"EntityStateTooLarge", fits.error().message, {}, {}, true};
    }
  }
  const auto& batch = refused.failure ? refused : *completion.entity;

  transition result;
  auto& record = state.record;
  const auto consumed = batch.failure ? given : batch.results.size();
  for (std::size_t i = 0; i < consumed; ++i) {
    const auto* called = std::get_if<events::entity_operation_called>(&state.inbox[i].body);
    if (called == nullptr || called->parent_instance_id.empty()) continue;  // Signals get no answer.
    const failure_details* failed =
        batch.failure ? &*batch.failure : std::get_if<failure_details>(&batch.results[i]);
    event_body answer = failed ? event_body(events::entity_operation_failed{called->request_id, *failed})
                               : event_body(events::entity_operation_completed{
                                     called->request_id, std::get<payload>(batch.results[i])});
    result.effects.messages.push_back(instance_message{called->parent_instance_id, called->parent_execution_id,
                                                       make_event(-1, now_ns, std::move(answer))});
  }
  if (!batch.failure) record.entity_state = batch.state;
  for (std::size_t i = 0; i < batch.actions.size(); ++i) {
    const auto salt = fmt::format("{}:{}", completion.completion_token, i);
    std::visit(overloaded{[&](const entity_actions::signal& a) {
                            events::entity_operation_signaled signal{derive_execution_id(record.instance_id, "signal:" + salt),
                                                                     a.operation, a.scheduled_ns, a.input, a.instance_id};
                            result.effects.messages.push_back(
                                instance_message{a.instance_id, {}, make_event(-1, now_ns, std::move(signal))});
                          },
                          [&](const entity_actions::start_orchestration& a) {
                            start_request start;
                            start.instance_id = a.instance_id.empty()
                                                    ? derive_execution_id(record.instance_id, "start:" + salt)
                                                    : a.instance_id;
                            start.execution_id = derive_execution_id(start.instance_id, "start:" + salt);
                            start.name = a.name;
                            start.version = a.version;
                            start.input = a.input;
                            start.scheduled_start_ns = a.scheduled_ns;
                            start.replaceable_statuses = terminal_statuses();
                            result.effects.messages.push_back(instance_message{start.instance_id, {}, std::move(start)});
                          }},
               batch.actions[i]);
  }
  state.inbox.erase(state.inbox.begin(), state.inbox.begin() + static_cast<long>(consumed));
  state.inbox_first_sequence += consumed;
  result.change.inbox_appended = 0;
  state.in_flight.reset();
  record.last_updated_at_ns = now_ns;
  result.change.record_changed = true;
  return result;
}

}  // namespace dtsd::core
