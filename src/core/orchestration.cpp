#include "orchestration.hpp"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "ids.hpp"
#include "overloaded.hpp"
#include "transitions.hpp"

namespace dtsd::core {
namespace detail {


error invalid(std::string message) { return {errc::invalid_argument, std::move(message)}; }

history_event make_event(std::int32_t event_id, std::int64_t now_ns, event_body body) {
  return history_event{event_id, now_ns, std::move(body)};
}

/// Appends to the inbox and records it in `change`.
void push_inbox(orchestration_state& state, instance_change& change, history_event event) {
  state.inbox.push_back(std::move(event));
  ++change.inbox_appended;
}

void push_history(orchestration_state& state, instance_change& change, history_event event) {
  state.history.push_back(std::move(event));
  ++change.history_appended;
}

/// Drops every inbox row (the instance reached a terminal status).
void clear_inbox(orchestration_state& state, instance_change& change) {
  state.inbox_first_sequence += state.inbox.size();
  state.inbox.clear();
  change.inbox_appended = 0;
}

expected<void> require_not_terminal(const orchestration_state& state, std::string_view what) {
  if (!is_terminal(state.record.status)) return {};
  return error{errc::failed_precondition,
               fmt::format("instance '{}' is {}: {} is no longer possible",
                           state.record.instance_id, to_string(state.record.status), what)};
}

expected<void> require_execution(const orchestration_state& state, std::string_view execution_id,
                                 std::string_view what) {
  if (execution_id.empty() || execution_id == state.record.execution_id) return {};
  return error{errc::failed_precondition,
               fmt::format("{} is for execution '{}' of instance '{}', whose current "
                           "execution is '{}'",
                           what, execution_id, state.record.instance_id,
                           state.record.execution_id)};
}

/// The id a completion-type event (result of a task, timer, sub-orchestration)
/// refers to, or nullopt for other events.
std::optional<std::int32_t> completed_task_id(const history_event& event) {
  return std::visit(
      overloaded{[](const events::task_completed& e) -> std::optional<std::int32_t> {
                   return e.task_scheduled_id;
                 },
                 [](const events::task_failed& e) -> std::optional<std::int32_t> {
                   return e.task_scheduled_id;
                 },
                 [](const events::sub_orchestration_completed& e) -> std::optional<std::int32_t> {
                   return e.task_scheduled_id;
                 },
                 [](const events::sub_orchestration_failed& e) -> std::optional<std::int32_t> {
                   return e.task_scheduled_id;
                 },
                 [](const events::timer_fired& e) -> std::optional<std::int32_t> {
                   return e.timer_id;
                 },
                 [](const auto&) -> std::optional<std::int32_t> { return std::nullopt; }},
      event.body);
}

/// The id a scheduling event (an activity, a timer, a sub-orchestration) carries,
/// or nullopt for other events.
std::optional<std::int32_t> scheduled_task_id(const history_event& event) {
  const bool schedules = std::holds_alternative<events::task_scheduled>(event.body) ||
                         std::holds_alternative<events::timer_created>(event.body) ||
                         std::holds_alternative<events::sub_orchestration_created>(event.body);
  if (!schedules) return std::nullopt;
  return event.event_id;
}

/// Whether task `task_id` waits for its result. An id may be scheduled again once
/// its earlier task has finished (SDKs retry a failed activity under the same id),
/// so each scheduling is matched with one result, in order.
bool is_outstanding(const orchestration_state& state, std::int32_t task_id) {
  std::size_t scheduled = 0;
  std::size_t answered = 0;
  for (const auto& event : state.history) {
    if (scheduled_task_id(event) == task_id) ++scheduled;
    if (completed_task_id(event) == task_id) ++answered;
  }
  for (const auto& event : state.inbox) {
    if (completed_task_id(event) == task_id) ++answered;
  }
  return scheduled > answered;
}

/// Ids of every task this execution scheduled that waits for its result.
std::set<std::int32_t> outstanding_task_ids(const orchestration_state& state) {
  std::map<std::int32_t, std::int64_t> balance;  // Schedulings minus results, per id.
  for (const auto& event : state.history) {
    if (auto id = scheduled_task_id(event)) ++balance[*id];
    if (auto id = completed_task_id(event)) --balance[*id];
  }
  for (const auto& event : state.inbox) {
    if (auto id = completed_task_id(event)) --balance[*id];
  }
  std::set<std::int32_t> ids;
  for (const auto& [id, open] : balance) {
    if (open > 0) ids.insert(id);
  }
  return ids;
}

/// Finds the history event with `event_id` whose body is a `Scheduled`.
template <class Scheduled>
const Scheduled* find_scheduled(const orchestration_state& state, std::int32_t event_id) {
  for (const auto& event : state.history) {
    if (event.event_id != event_id) continue;
    if (const auto* body = std::get_if<Scheduled>(&event.body)) return body;
  }
  return nullptr;
}

/// Adds a completion-type event to the inbox once: the task it answers must have been
/// scheduled by the current execution and not answered yet.
template <class Scheduled>
expected<transition> deliver_result(orchestration_state& state, std::int32_t task_id,
                                    history_event event, std::string_view what) {
  if (auto alive = require_not_terminal(state, what); !alive) return alive.error();
  if (find_scheduled<Scheduled>(state, task_id) == nullptr) {
    return invalid(fmt::format("{}: instance '{}' has no task with id {} waiting for it", what,
                               state.record.instance_id, task_id));
  }
  if (!is_outstanding(state, task_id)) {
    return error{errc::duplicate,
                 fmt::format("{}: task {} of instance '{}' already has its result", what, task_id,
                             state.record.instance_id)};
  }
  transition result;
  push_inbox(state, result.change, std::move(event));
  return result;
}

instance_message parent_notification(const orchestration_state& state, std::int64_t now_ns,
                                     event_body body) {
  const auto& parent = *state.record.parent;
  return instance_message{parent.instance.instance_id, parent.instance.execution_id,
                          make_event(-1, now_ns, std::move(body))};
}

/// Tells the parent (if any) that this sub-orchestration finished.
void notify_parent(const orchestration_state& state, std::int64_t now_ns, effects& out) {
  if (!state.record.parent) return;
  const auto task_id = state.record.parent->task_scheduled_id;
  if (state.record.status == runtime_status::completed) {
    out.messages.push_back(parent_notification(
        state, now_ns, events::sub_orchestration_completed{task_id, state.record.output}));
    return;
  }
  failure_details failure;
  if (state.record.failure) {
    failure = *state.record.failure;
  } else {
    failure.error_type = "OrchestrationTerminated";
    failure.error_message = fmt::format("sub-orchestration '{}' was {}", state.record.instance_id,
                                        to_string(state.record.status));
    if (state.record.output) failure.error_message += ": " + *state.record.output;
  }
  out.messages.push_back(parent_notification(
      state, now_ns, events::sub_orchestration_failed{task_id, std::move(failure)}));
}

// ---------------------------------------------------------------------------
// Validation of a completion's actions, all before anything changes.

struct action_checker {
  const orchestration_state& state;
  const payload_limits& limits;
  std::string_view new_execution_id;
  int completions = 0;

  expected<void> operator()(const actions::schedule_task& a) {
    if (a.name.empty()) return invalid("scheduleTask action has an empty activity name");
    if (auto fits = check_name("activity name", a.name); !fits) return fits;
    if (auto fits = check_tags("scheduleTask tags", a.tags); !fits) return fits;
    return check_payload("activity input", a.input, limits.activity_input_bytes_max);
  }
  expected<void> operator()(const actions::create_sub_orchestration& a) {
    if (auto valid = validate_orchestration_id(a.instance_id); !valid) {
      return invalid("createSubOrchestration action: " + valid.error().message);
    }
    if (a.name.empty()) return invalid("createSubOrchestration action has an empty name");
    if (auto fits = check_name("sub-orchestration name", a.name); !fits) return fits;
    if (auto fits = check_tags("createSubOrchestration tags", a.tags); !fits) return fits;
    return check_payload("orchestration input", a.input, limits.orchestration_input_bytes_max);
  }
  expected<void> operator()(const actions::create_timer&) { return {}; }
  expected<void> operator()(const actions::send_event& a) {
    if (auto valid = validate_instance_id(a.instance.instance_id); !valid) {
      return invalid("sendEvent action: " + valid.error().message);
    }
    if (a.name.empty()) return invalid("sendEvent action has an empty event name");
    if (auto fits = check_name("event name", a.name); !fits) return fits;
    return check_payload("event data", a.data, limits.event_data_bytes_max);
  }
  expected<void> operator()(const actions::complete_orchestration& a) {
    if (++completions > 1) return invalid("a completion has more than one completeOrchestration");
    switch (a.status) {
      case runtime_status::completed:
      case runtime_status::failed:
      case runtime_status::terminated:
        return check_payload("orchestration output", a.result,
                             limits.orchestration_output_bytes_max);
      case runtime_status::continued_as_new:
        if (new_execution_id.empty()) return invalid("continue-as-new needs a new execution id");
        for (const auto& event : a.carryover_events) {
          if (const auto* raised = std::get_if<events::event_raised>(&event.body)) {
            auto fits = check_payload("event data", raised->input, limits.event_data_bytes_max);
            if (!fits) return fits;
          }
        }
        return check_payload("orchestration input", a.result,
                             limits.orchestration_input_bytes_max);
      default:
        return invalid(fmt::format("completeOrchestration action with status {} is not allowed",
                                   to_string(a.status)));
    }
  }
  expected<void> operator()(const actions::terminate_orchestration& a) {
    if (auto valid = validate_orchestration_id(a.instance_id); !valid) {
      return invalid("terminateOrchestration action: " + valid.error().message);
    }
    return check_payload("orchestration output", a.reason, limits.orchestration_output_bytes_max);
  }
  expected<void> operator()(const actions::send_entity_message& a) {
    auto target = std::visit(
        overloaded{[](const events::entity_lock_requested& e) {
                     return e.lock_set.empty() ? std::string{} : e.lock_set.front();
                   },
                   [](const auto& e) { return e.target_instance_id; }},
        a.message);
    if (auto valid = validate_instance_id(target); !valid || !is_entity_id(target)) {
      return invalid(fmt::format("sendEntityMessage action targets '{}', which is not an "
                                 "entity id (@name@key)",
                                 target));
    }
    return {};
  }
};

expected<void> validate_completion(const orchestration_state& state,
                                   const orchestrator_completion& completion,
                                   std::string_view new_execution_id,
                                   const payload_limits& limits) {
  if (auto fits = check_payload("custom status", completion.custom_status,
                                limits.custom_status_bytes_max);
      !fits) {
    return fits;
  }
  // An id may not name a task still waiting for its result, nor two actions of one
  // response. A finished task's id may be scheduled again: SDKs retry a failed
  // activity or sub-orchestration under the id of the failed attempt.
  const auto outstanding = outstanding_task_ids(state);
  std::set<std::int32_t> in_response;
  action_checker checker{state, limits, new_execution_id};
  for (const auto& action : completion.actions) {
    // The id of a completeOrchestration carries no meaning (the JS SDK sends -1).
    if (!std::holds_alternative<actions::complete_orchestration>(action.body)) {
      if (action.id < 0) return invalid(fmt::format("action id {} is negative", action.id));
      if (!in_response.insert(action.id).second) {
        return invalid(fmt::format("action id {} is used twice in one response for instance '{}'", action.id,
                                   state.record.instance_id));
      }
      if (outstanding.count(action.id)) {
        return invalid(fmt::format("action id {} names a task of instance '{}' that is still waiting for "
                                   "its result",
                                   action.id, state.record.instance_id));
      }
    }
    if (auto valid = std::visit(checker, action.body); !valid) return valid;
  }
  return {};
}

// ---------------------------------------------------------------------------
// Carrying out a completion's actions.

struct action_applier {
  orchestration_state& state;
  transition& result;
  std::int32_t id;
  std::int64_t now_ns;

  const std::string& instance_id() const { return state.record.instance_id; }
  const std::string& execution_id() const { return state.record.execution_id; }
  void record(event_body body) { push_history(state, result.change, make_event(id, now_ns, std::move(body))); }

  void operator()(const actions::schedule_task& a) {
    record(events::task_scheduled{a.name, a.version, a.input, a.tags});
    result.effects.activities.push_back(
        activity_request{instance_id(), execution_id(), id, a.name, a.version, a.input, a.tags});
  }
  void operator()(const actions::create_sub_orchestration& a) {
    record(events::sub_orchestration_created{a.instance_id, a.name, a.version, a.input, a.tags});
    start_request child;
    child.instance_id = a.instance_id;
    child.execution_id = derive_execution_id(execution_id(), fmt::format("sub:{}", id));
    child.name = a.name;
    child.version = a.version;
    child.input = a.input;
    child.tags = a.tags;
    child.parent = parent_instance{id, state.record.name, state.record.version,
                                   {instance_id(), execution_id()}};
    child.replaceable_statuses = terminal_statuses();
    result.effects.messages.push_back(instance_message{a.instance_id, {}, std::move(child)});
  }
  void operator()(const actions::create_timer& a) {
    record(events::timer_created{a.fire_at_ns});
    result.effects.timers.push_back(timer_entry{instance_id(), execution_id(), id, a.fire_at_ns});
  }
  void operator()(const actions::send_event& a) {
    record(events::event_sent{a.instance.instance_id, a.name, a.data});
    result.effects.messages.push_back(
        instance_message{a.instance.instance_id, a.instance.execution_id,
                         make_event(-1, now_ns, events::event_raised{a.name, a.data})});
  }
  void operator()(const actions::terminate_orchestration& a) {
    result.effects.messages.push_back(
        instance_message{a.instance_id, {}, terminate_request{a.reason, a.recurse}});
  }
  void operator()(const actions::send_entity_message& a) {
    std::visit(
        [&](const auto& message) {
          record(message);
          std::string target;
          if constexpr (std::is_same_v<std::decay_t<decltype(message)>,
                                       events::entity_lock_requested>) {
            target = message.lock_set.front();
          } else {
            target = message.target_instance_id;
          }
          result.effects.messages.push_back(
              instance_message{std::move(target), {}, make_event(id, now_ns, message)});
        },
        a.message);
  }
  void operator()(const actions::complete_orchestration&) {}  // Applied last, see below.
};

/// An execution that ends inside a critical section (it failed, or was terminated)
/// releases the entity locks it still holds, as if it had left the section.
void release_entity_locks(const orchestration_state& state, std::int64_t now_ns, effects& out) {
  std::map<std::string, std::set<std::string>> open;  // Critical section -> entities not yet unlocked.
  for (const auto& event : state.history) {
    if (const auto* lock = std::get_if<events::entity_lock_requested>(&event.body)) {
      open[lock->critical_section_id].insert(lock->lock_set.begin(), lock->lock_set.end());
    } else if (const auto* unlock = std::get_if<events::entity_unlock_sent>(&event.body)) {
      if (auto found = open.find(unlock->critical_section_id); found != open.end()) {
        found->second.erase(unlock->target_instance_id);
      }
    }
  }
  for (const auto& [section, entities] : open) {
    for (const auto& entity : entities) {
      out.messages.push_back(instance_message{
          entity, {}, make_event(-1, now_ns, events::entity_unlock_sent{section, state.record.instance_id, entity})});
    }
  }
}

/// A completion's tags replace the instance's, but for dtsd's own ("dtsd.*": a
/// scheduled run's schedule and slot), which stay unless the new tags name them.
void replace_tags(tag_map& tags, const tag_map& with) {
  if (with.empty()) return;
  tag_map kept;
  for (const auto& [key, value] : tags) {
    if (key.rfind("dtsd.", 0) == 0) kept.emplace(key, value);
  }
  tags = with;
  tags.insert(kept.begin(), kept.end());  // Does not overwrite what `with` sets.
}

void finish_execution(orchestration_state& state, transition& result, std::int32_t id,
                      const actions::complete_orchestration& a, std::int64_t now_ns) {
  release_entity_locks(state, now_ns, result.effects);
  push_history(state, result.change,
               make_event(id, now_ns, events::execution_completed{a.status, a.result, a.failure}));
  state.record.status = a.status;
  state.record.output = a.result;
  state.record.failure = a.failure;
  replace_tags(state.record.tags, a.tags);
  state.record.completed_at_ns = now_ns;
  clear_inbox(state, result.change);
  notify_parent(state, now_ns, result.effects);
}

void continue_as_new(orchestration_state& state, transition& result,
                     const actions::complete_orchestration& a, std::string_view new_execution_id,
                     std::int64_t now_ns) {
  // The old execution's timers and activities would only be dropped on arrival.
  result.effects.activities.clear();
  result.effects.timers.clear();

  auto& record = state.record;
  record.execution_id = std::string(new_execution_id);
  if (a.new_version) record.version = a.new_version;
  replace_tags(record.tags, a.tags);
  record.input = a.result;
  record.output.reset();
  record.failure.reset();
  record.status = runtime_status::running;

  std::vector<history_event> next_inbox;
  events::execution_started started{record.name, record.version, record.input,
                                    {record.instance_id, record.execution_id},
                                    record.parent, 0, record.tags};
  next_inbox.push_back(make_event(-1, now_ns, std::move(started)));
  next_inbox.insert(next_inbox.end(), a.carryover_events.begin(), a.carryover_events.end());
  next_inbox.insert(next_inbox.end(), state.inbox.begin(), state.inbox.end());

  state.history.clear();
  result.change.history_reset = true;
  result.change.history_appended = 0;
  clear_inbox(state, result.change);
  for (auto& event : next_inbox) push_inbox(state, result.change, std::move(event));
}

}  // namespace detail

using namespace detail;

// ---------------------------------------------------------------------------

void merge(instance_change& into, const instance_change& next, const orchestration_state& after) {
  if (next.purged) {
    into = next;
    return;
  }
  if (into.purged) {
    // Purged and created again in one batch: every row is rewritten.
    into = next;
    into.record_changed = true;
    into.history_reset = true;
    into.history_appended = after.history.size();
    into.inbox_appended = after.inbox.size();
    return;
  }
  into.record_changed = into.record_changed || next.record_changed;
  if (next.history_reset) {
    into.history_reset = true;
    into.history_appended = next.history_appended;
  } else {
    into.history_appended =
        std::min(into.history_appended + next.history_appended, after.history.size());
  }
  into.inbox_appended = std::min(into.inbox_appended + next.inbox_appended, after.inbox.size());
}

bool is_ready(const orchestration_state& state, std::int64_t now_ns) {
  const auto status = state.record.status;
  if (is_terminal(status) || status == runtime_status::suspended) return false;
  if (state.in_flight || state.inbox.empty()) return false;
  return !start_due_ns(state, now_ns);
}

std::optional<std::int64_t> start_due_ns(const orchestration_state& state, std::int64_t now_ns) {
  if (state.record.status != runtime_status::pending) return std::nullopt;
  if (state.record.scheduled_start_ns <= now_ns) return std::nullopt;
  return state.record.scheduled_start_ns;
}

namespace {

std::vector<std::string> sub_orchestrations(const orchestration_state& state, bool open_only) {
  std::vector<std::string> ids;
  for (const auto& event : state.history) {
    const auto* created = std::get_if<events::sub_orchestration_created>(&event.body);
    if (created == nullptr) continue;
    if (open_only && !is_outstanding(state, event.event_id)) continue;
    ids.push_back(created->instance_id);
  }
  return ids;
}

}  // namespace

std::vector<std::string> open_sub_orchestrations(const orchestration_state& state) {
  return sub_orchestrations(state, true);
}

std::vector<std::string> all_sub_orchestrations(const orchestration_state& state) {
  return sub_orchestrations(state, false);
}

expected<void> validate_reuse_policy(const std::vector<runtime_status>& replaceable) {
  auto allows = [&](runtime_status status) {
    return std::find(replaceable.begin(), replaceable.end(), status) != replaceable.end();
  };
  const bool running_replaceable =
      allows(runtime_status::pending) || allows(runtime_status::running) || allows(runtime_status::suspended);
  // Replacing a running instance terminates it first, so the policy must allow
  // replacing a terminated one too (DTS refuses the same policies).
  if (running_replaceable && !allows(runtime_status::terminated)) {
    return invalid(
        "invalid reusable statuses: cannot exclude 'Terminated' while also allowing reuse of running instances");
  }
  return {};
}

expected<transition> apply_start(std::optional<orchestration_state>& instance,
                                 const start_request& request, std::int64_t now_ns,
                                 const payload_limits& limits) {
  if (auto valid = validate_orchestration_id(request.instance_id); !valid) return valid.error();
  if (request.name.empty()) return invalid("orchestration name must not be empty");
  if (auto fits = check_name("orchestration name", request.name); !fits) return fits.error();
  if (auto fits = check_tags("orchestration tags", request.tags); !fits) return fits.error();
  if (request.execution_id.empty()) return invalid("start request has no execution id");
  if (auto fits = check_payload("orchestration input", request.input,
                                limits.orchestration_input_bytes_max);
      !fits) {
    return fits.error();
  }
  if (auto policy = validate_reuse_policy(request.replaceable_statuses); !policy) return policy.error();
  transition result;
  std::uint64_t first_sequence = 0;
  if (instance) {
    const auto status = instance->record.status;
    const auto& allowed = request.replaceable_statuses;
    if (std::find(allowed.begin(), allowed.end(), status) == allowed.end()) {
      return error{errc::already_exists,
                   fmt::format("an orchestration with id '{}' already exists and is {}; the id "
                               "reuse policy does not allow replacing it",
                               request.instance_id, to_string(status))};
    }
    if (instance->record.execution_id == request.execution_id) {
      // Results, timers and children of the old run would reach the new one.
      return invalid(fmt::format("execution id '{}' is the current execution of instance '{}'",
                                 request.execution_id, request.instance_id));
    }
    result.change.history_reset = true;
    first_sequence = instance->inbox_first_sequence + instance->inbox.size();
  }

  orchestration_state state;
  auto& record = state.record;
  record.instance_id = request.instance_id;
  record.execution_id = request.execution_id;
  record.name = request.name;
  record.version = request.version;
  record.status = runtime_status::pending;
  record.input = request.input;
  record.created_at_ns = now_ns;
  record.last_updated_at_ns = now_ns;
  record.scheduled_start_ns = request.scheduled_start_ns;
  record.parent = request.parent;
  record.tags = request.tags;
  state.inbox_first_sequence = first_sequence;
  events::execution_started started{request.name,
                                    request.version,
                                    request.input,
                                    {request.instance_id, request.execution_id},
                                    request.parent,
                                    request.scheduled_start_ns,
                                    request.tags};
  push_inbox(state, result.change, make_event(-1, now_ns, std::move(started)));
  result.change.record_changed = true;
  instance = std::move(state);
  return result;
}

std::optional<instance_message> start_failed_message(const start_request& request,
                                                     const error& failure, std::int64_t now_ns) {
  if (!request.parent) return std::nullopt;
  failure_details details{"SubOrchestrationStartFailed", failure.message, {}, {}, true};
  return instance_message{
      request.parent->instance.instance_id, request.parent->instance.execution_id,
      make_event(-1, now_ns,
                 events::sub_orchestration_failed{request.parent->task_scheduled_id, details})};
}

expected<orchestrator_work_item> dispatch(orchestration_state& state,
                                          std::uint64_t completion_token,
                                          std::size_t new_event_count_max,
                                          std::int64_t started_at_ns) {
  const auto count = std::min(state.inbox.size(), new_event_count_max);
  if (state.in_flight || count == 0 || is_terminal(state.record.status) ||
      state.record.status == runtime_status::suspended) {
    return error{errc::failed_precondition,
                 fmt::format("instance '{}' has no work to dispatch", state.record.instance_id)};
  }
  if (is_entity_id(state.record.instance_id)) {
    state.in_flight = in_flight_work_item{completion_token, count, 0};
    return orchestrator_work_item{state.record.instance_id,
                                  state.record.execution_id,
                                  {},
                                  std::vector<history_event>(state.inbox.begin(), state.inbox.begin() + static_cast<long>(count)),
                                  completion_token,
                                  true,
                                  state.record.entity_state,
                                  entity_name(state.record.instance_id),
                                  std::nullopt};
  }
  state.in_flight = in_flight_work_item{completion_token, count, started_at_ns};
  std::vector<history_event> new_events;
  new_events.reserve(count + 1);
  if (started_at_ns != 0) new_events.push_back(make_event(-1, started_at_ns, events::orchestrator_started{}));
  new_events.insert(new_events.end(), state.inbox.begin(), state.inbox.begin() + static_cast<long>(count));
  return orchestrator_work_item{state.record.instance_id, state.record.execution_id, state.history,
                                std::move(new_events), completion_token, false, {}, state.record.name,
                                state.record.version};
}

expected<void> abandon(orchestration_state& state, std::uint64_t completion_token) {
  if (!state.in_flight || state.in_flight->completion_token != completion_token) {
    return error{errc::stale_token,
                 fmt::format("completion token {} does not match a work item of instance '{}'",
                             completion_token, state.record.instance_id)};
  }
  state.in_flight.reset();
  return {};
}

expected<transition> apply_completion(orchestration_state& state,
                                      const orchestrator_completion& completion,
                                      std::string_view new_execution_id, std::int64_t now_ns,
                                      const payload_limits& limits) {
  if (!state.in_flight || state.in_flight->completion_token != completion.completion_token) {
    return error{errc::stale_token,
                 fmt::format("completion token {} does not match the current work item of "
                             "instance '{}'",
                             completion.completion_token, state.record.instance_id)};
  }
  if (is_entity_id(state.record.instance_id)) return apply_entity_completion(state, completion, now_ns, limits);
  if (completion.entity) {
    return invalid(fmt::format("'{}' is an orchestration: an entity batch result does not apply",
                               state.record.instance_id));
  }
  if (auto valid = validate_completion(state, completion, new_execution_id, limits); !valid) {
    return valid.error();
  }

  transition result;
  const auto consumed = std::min(state.in_flight->new_event_count, state.inbox.size());
  const auto started_at = state.in_flight->started_at_ns != 0 ? state.in_flight->started_at_ns : now_ns;
  state.in_flight.reset();
  push_history(state, result.change, make_event(-1, started_at, events::orchestrator_started{}));
  for (std::size_t i = 0; i < consumed; ++i) {
    push_history(state, result.change, std::move(state.inbox[i]));
  }
  state.inbox.erase(state.inbox.begin(), state.inbox.begin() + static_cast<long>(consumed));
  state.inbox_first_sequence += consumed;
  result.change.inbox_appended = 0;

  auto& record = state.record;
  if (record.status == runtime_status::pending) record.status = runtime_status::running;
  record.custom_status = completion.custom_status;
  record.last_updated_at_ns = now_ns;
  result.change.record_changed = true;

  const actions::complete_orchestration* completion_action = nullptr;
  std::int32_t completion_id = -1;
  for (const auto& action : completion.actions) {
    if (const auto* done = std::get_if<actions::complete_orchestration>(&action.body)) {
      completion_action = done;
      completion_id = action.id;
    }
    std::visit(action_applier{state, result, action.id, now_ns}, action.body);
  }
  if (completion_action != nullptr) {
    if (completion_action->status == runtime_status::continued_as_new) {
      continue_as_new(state, result, *completion_action, new_execution_id, now_ns);
    } else {
      finish_execution(state, result, completion_id, *completion_action, now_ns);
    }
  }
  return result;
}

expected<transition> apply_activity_result(orchestration_state& state,
                                           const activity_result& result, std::int64_t now_ns,
                                           const payload_limits& limits) {
  constexpr std::string_view what = "activity result";
  if (auto current = require_execution(state, result.execution_id, what); !current) {
    return current.error();
  }
  event_body body;
  if (const auto* output = std::get_if<payload>(&result.outcome)) {
    if (auto fits = check_payload("activity output", *output, limits.activity_output_bytes_max);
        !fits) {
      return fits.error();
    }
    body = events::task_completed{result.task_id, *output};
  } else {
    body = events::task_failed{result.task_id, std::get<failure_details>(result.outcome)};
  }
  return deliver_result<events::task_scheduled>(state, result.task_id,
                                                make_event(-1, now_ns, std::move(body)), what);
}

expected<transition> apply_timer_fired(orchestration_state& state, const timer_entry& timer,
                                       std::int64_t now_ns) {
  constexpr std::string_view what = "timer";
  if (is_entity_id(state.record.instance_id)) return apply_entity_wakeup(state, now_ns);
  if (auto current = require_execution(state, timer.execution_id, what); !current) {
    return current.error();
  }
  return deliver_result<events::timer_created>(
      state, timer.timer_id,
      make_event(-1, now_ns, events::timer_fired{timer.fire_at_ns, timer.timer_id}), what);
}

expected<transition> apply_raise_event(orchestration_state& state, std::string_view name,
                                       const payload& input, std::int64_t now_ns,
                                       const payload_limits& limits) {
  if (auto alive = require_not_terminal(state, "raising an event"); !alive) return alive.error();
  if (name.empty()) return invalid("event name must not be empty");
  if (auto fits = check_name("event name", name); !fits) return fits.error();
  if (auto fits = check_payload("event data", input, limits.event_data_bytes_max); !fits) {
    return fits.error();
  }
  transition result;
  push_inbox(state, result.change,
             make_event(-1, now_ns, events::event_raised{std::string(name), input}));
  return result;
}

namespace {

expected<transition> accept_entity_answer(orchestration_state& state, const history_event& event) {
  if (auto alive = require_not_terminal(state, "an entity answer"); !alive) return alive.error();
  transition result;
  push_inbox(state, result.change, event);
  return result;
}

expected<transition> apply_event_message(orchestration_state& state, const instance_message& message,
                                         const history_event& event, std::int64_t now_ns,
                                         const payload_limits& limits) {
  if (auto current = require_execution(state, message.target_execution_id, "message");
      !current) {
    return current.error();
  }
  return std::visit(
      overloaded{
          [&](const events::event_raised& e) {
            return apply_raise_event(state, e.name, e.input, now_ns, limits);
          },
          [&](const events::sub_orchestration_completed& e) {
            if (auto fits = check_payload("orchestration output", e.result,
                                          limits.orchestration_output_bytes_max);
                !fits) {
              return expected<transition>(fits.error());
            }
            return deliver_result<events::sub_orchestration_created>(
                state, e.task_scheduled_id, event, "sub-orchestration result");
          },
          [&](const events::sub_orchestration_failed& e) {
            return deliver_result<events::sub_orchestration_created>(
                state, e.task_scheduled_id, event, "sub-orchestration result");
          },
          // Answers from entities: the worker matches them by request or critical section id.
          [&](const events::entity_operation_completed&) { return accept_entity_answer(state, event); },
          [&](const events::entity_operation_failed&) { return accept_entity_answer(state, event); },
          [&](const events::entity_lock_granted&) { return accept_entity_answer(state, event); },
          [&](const events::execution_rewound& e) {
            return apply_rewind(state, e.reason, e.parent_execution_id,
                                derive_execution_id(state.record.execution_id, "rewind"), now_ns, limits);
          },
          [&](const auto&) -> expected<transition> {
            return invalid(fmt::format("a message to instance '{}' carries an event kind an "
                                       "orchestration does not accept",
                                       state.record.instance_id));
          }},
      event.body);
}

}  // namespace

expected<transition> apply_message(std::optional<orchestration_state>& instance,
                                   const instance_message& message, std::int64_t now_ns,
                                   const payload_limits& limits) {
  if (is_entity_id(message.target_instance_id)) return apply_entity_message(instance, message, now_ns);
  if (const auto* start = std::get_if<start_request>(&message.body)) {
    return apply_start(instance, *start, now_ns, limits);
  }
  if (!instance) {
    if (auto recreated = recreate_rewound_child(message)) return apply_start(instance, *recreated, now_ns, limits);
    return error{errc::not_found,
                 fmt::format("no instance with id '{}'", message.target_instance_id)};
  }
  if (const auto* terminate = std::get_if<terminate_request>(&message.body)) {
    return apply_terminate(*instance, *terminate, now_ns, limits);
  }
  return apply_event_message(*instance, message, std::get<history_event>(message.body), now_ns,
                             limits);
}

expected<transition> apply_terminate(orchestration_state& state, const terminate_request& request,
                                     std::int64_t now_ns, const payload_limits& limits) {
  if (auto alive = require_not_terminal(state, "terminating it"); !alive) return alive.error();
  if (auto fits = check_payload("orchestration output", request.reason,
                                limits.orchestration_output_bytes_max);
      !fits) {
    return fits.error();
  }
  transition result;
  if (request.recurse) {
    for (auto& child : open_sub_orchestrations(state)) {
      result.effects.messages.push_back(instance_message{std::move(child), {}, request});
    }
  }
  push_history(state, result.change,
               make_event(-1, now_ns, events::execution_terminated{request.reason, request.recurse}));
  push_history(state, result.change,
               make_event(-1, now_ns, events::execution_completed{runtime_status::terminated,
                                                                 request.reason, std::nullopt}));
  auto& record = state.record;
  record.status = runtime_status::terminated;
  record.output = request.reason;
  record.completed_at_ns = now_ns;
  record.last_updated_at_ns = now_ns;
  result.change.record_changed = true;
  state.in_flight.reset();
  clear_inbox(state, result.change);
  release_entity_locks(state, now_ns, result.effects);
  notify_parent(state, now_ns, result.effects);
  return result;
}

expected<transition> apply_suspend(orchestration_state& state, const payload& reason,
                                   std::int64_t now_ns) {
  const auto status = state.record.status;
  if (status != runtime_status::running && status != runtime_status::pending) {
    return error{errc::failed_precondition,
                 fmt::format("instance '{}' is {}: only a running or pending orchestration can "
                             "be suspended",
                             state.record.instance_id, to_string(status))};
  }
  transition result;
  // The event goes through the inbox so the worker sees it in order with the rest.
  push_inbox(state, result.change, make_event(-1, now_ns, events::execution_suspended{reason}));
  state.record.status = runtime_status::suspended;
  state.record.last_updated_at_ns = now_ns;
  result.change.record_changed = true;
  return result;
}

expected<transition> apply_resume(orchestration_state& state, const payload& reason,
                                  std::int64_t now_ns) {
  if (state.record.status != runtime_status::suspended) {
    return error{errc::failed_precondition,
                 fmt::format("instance '{}' is {}: only a suspended orchestration can be resumed",
                             state.record.instance_id, to_string(state.record.status))};
  }
  transition result;
  push_inbox(state, result.change, make_event(-1, now_ns, events::execution_resumed{reason}));
  state.record.status = state.history.empty() ? runtime_status::pending : runtime_status::running;
  state.record.last_updated_at_ns = now_ns;
  result.change.record_changed = true;
  return result;
}

expected<transition> apply_entity_delete(std::optional<orchestration_state>& instance) {
  if (!instance) return error{errc::not_found, "no such entity"};
  const auto& record = instance->record;
  if (!is_entity_id(record.instance_id)) {
    return error{errc::invalid_argument, fmt::format("'{}' is not an entity", record.instance_id)};
  }
  if (!record.entity_locked_by.empty()) {
    return error{errc::failed_precondition, fmt::format("entity '{}' is locked by orchestration '{}'",
                                                        record.instance_id, record.entity_locked_by)};
  }
  if (!record.entity_deferred.empty() || !instance->inbox.empty() || instance->in_flight) {
    return error{errc::failed_precondition,
                 fmt::format("entity '{}' has operations waiting or running", record.instance_id)};
  }
  transition result;
  result.change.purged = true;
  instance.reset();
  return result;
}

expected<transition> apply_purge(std::optional<orchestration_state>& instance) {
  if (!instance) return error{errc::not_found, "no such instance"};
  if (is_entity_id(instance->record.instance_id)) {
    if (!is_empty_entity(*instance)) {
      return error{errc::failed_precondition,
                   fmt::format("entity '{}' still has state, a lock or queued operations",
                               instance->record.instance_id)};
    }
  } else if (!is_terminal(instance->record.status)) {
    return error{errc::failed_precondition,
                 fmt::format("instance '{}' is {}: only a completed, failed or terminated "
                             "instance can be purged",
                             instance->record.instance_id, to_string(instance->record.status))};
  }
  transition result;
  result.change.purged = true;
  instance.reset();
  return result;
}

}  // namespace dtsd::core
