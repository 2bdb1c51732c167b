#include "sdk/orchestration.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "core/ids.hpp"
#include "core/overloaded.hpp"

namespace dtsd::sdk {

orchestration_context::orchestration_context(std::string instance_id, std::string name)
    : instance_id_(std::move(instance_id)), name_(std::move(name)) {}

std::chrono::system_clock::time_point orchestration_context::current_time() const {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(current_time_ns_)));
}

std::string orchestration_context::new_guid() {
  auto hex = core::derive_execution_id(instance_id_, fmt::format("guid:{}:{}", current_time_ns_, guid_counter_++));
  return fmt::format("{}-{}-{}-{}-{}", hex.substr(0, 8), hex.substr(8, 4), hex.substr(12, 4), hex.substr(16, 4),
                     hex.substr(20, 12));
}

durable orchestration_context::schedule(core::orchestrator_action action) {
  action.id = next_id_++;
  auto slot = std::make_shared<durable_slot>();
  calls_.emplace(action.id, scheduled_call{std::move(action), slot, false});
  return durable(slot);
}

durable orchestration_context::call_activity(const std::string& name, const json& input) {
  return schedule({0, core::actions::schedule_task{name, std::nullopt, input.dump(), {}}});
}

durable orchestration_context::call_sub_orchestrator(const std::string& name, const json& input,
                                                     std::string instance_id, std::optional<std::string> version) {
  if (instance_id.empty()) instance_id = fmt::format("{}:{}", instance_id_, next_id_);
  if (!version && !version_.empty()) version = version_;
  return schedule({0, core::actions::create_sub_orchestration{std::move(instance_id), name, std::move(version),
                                                              input.dump()}});
}

durable orchestration_context::call_entity(const std::string& entity_id, const std::string& operation,
                                           const json& input) {
  core::events::entity_operation_called called{new_guid(), operation,     0,        input.dump(),
                                               instance_id_, execution_id_, entity_id};
  return schedule({0, core::actions::send_entity_message{std::move(called)}});
}

void orchestration_context::signal_entity(const std::string& entity_id, const std::string& operation,
                                          const json& input) {
  core::events::entity_operation_signaled signaled{new_guid(), operation, 0, input.dump(), entity_id};
  auto sent = schedule({0, core::actions::send_entity_message{std::move(signaled)}});
  answer(*sent.slot(), json(), std::nullopt);  // Nothing comes back.
}

durable orchestration_context::lock_entities(std::vector<std::string> entity_ids) {
  std::sort(entity_ids.begin(), entity_ids.end());
  entity_ids.erase(std::unique(entity_ids.begin(), entity_ids.end()), entity_ids.end());
  if (!section_id_.empty()) throw std::logic_error("lock_entities: this orchestration already holds entity locks");
  if (entity_ids.empty()) throw std::invalid_argument("lock_entities: no entity named");
  section_id_ = new_guid();
  section_entities_ = entity_ids;
  core::events::entity_lock_requested request{section_id_, std::move(entity_ids), 0, instance_id_};
  return schedule({0, core::actions::send_entity_message{std::move(request)}});
}

void orchestration_context::unlock_entities() {
  for (const auto& entity : section_entities_) {
    auto sent = schedule({0, core::actions::send_entity_message{core::events::entity_unlock_sent{section_id_, instance_id_, entity}}});
    answer(*sent.slot(), json(), std::nullopt);
  }
  section_id_.clear();
  section_entities_.clear();
}

durable orchestration_context::create_timer(std::chrono::milliseconds delay) {
  return schedule({0, core::actions::create_timer{current_time_ns_ + delay.count() * 1'000'000}});
}

durable orchestration_context::create_timer_at(std::chrono::system_clock::time_point fire_at) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(fire_at.time_since_epoch()).count();
  return schedule({0, core::actions::create_timer{ns}});
}

void orchestration_context::answer(durable_slot& slot, std::optional<json> value,
                                   std::optional<core::failure_details> failure) {
  if (slot.done) return;
  slot.done = true;
  slot.order = ++answered_count_;
  slot.value = std::move(value);
  slot.failure = std::move(failure);
  for (auto& listener : std::exchange(slot.listeners, {})) listener();
  if (auto waiter = std::exchange(slot.waiter, {})) waiter.resume();
}

namespace {
// Built outside the coroutine: GCC 12 miscompiles this aggregate inside one.
core::failure_details timeout_failure(const std::string& name, std::chrono::milliseconds timeout) {
  core::failure_details failure;
  failure.error_type = "TimeoutError";
  failure.error_message = fmt::format("no '{}' event within {} ms", name, timeout.count());
  return failure;
}

json parse_event_data(const core::payload& value) {
  if (!value) return json();
  auto parsed = json::parse(*value, nullptr, false);
  return parsed.is_discarded() ? json(*value) : parsed;
}
}  // namespace

durable orchestration_context::wait_for_external_event(const std::string& name) {
  auto slot = std::make_shared<durable_slot>();
  auto& waiting = unclaimed_events_[name];
  if (!waiting.empty()) {
    const auto& raised = std::get<core::events::event_raised>(waiting.front().body);
    answer(*slot, parse_event_data(raised.input), std::nullopt);
    waiting.erase(waiting.begin());
  } else {
    event_waiters_[name].push_back(slot);
  }
  return durable(slot);
}

task<json> orchestration_context::wait_for_external_event(std::string name, std::chrono::milliseconds timeout) {
  auto event = wait_for_external_event(name);
  // No braced list here: GCC 12 cannot keep an initializer_list in a coroutine frame.
  std::vector<durable> race;
  race.push_back(event);
  race.push_back(create_timer(timeout));
  auto first = co_await when_any(race);
  if (first.get<int>() == 1) {
    auto& waiters = event_waiters_[name];
    waiters.erase(std::remove(waiters.begin(), waiters.end(), event.slot()), waiters.end());
    throw task_failed(timeout_failure(name, timeout));
  }
  co_return co_await event;
}

durable orchestration_context::when_any(const std::vector<durable>& calls) {
  auto any = std::make_shared<durable_slot>();
  int first = -1;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const auto& slot = *calls[i].slot();
    if (slot.done && (first < 0 || slot.order < calls[static_cast<std::size_t>(first)].slot()->order)) {
      first = static_cast<int>(i);
    }
  }
  if (first >= 0) {
    answer(*any, json(first), std::nullopt);
    return durable(any);
  }
  for (std::size_t i = 0; i < calls.size(); ++i) {
    calls[i].slot()->listeners.push_back([this, any, index = static_cast<int>(i)] {
      answer(*any, json(index), std::nullopt);
    });
  }
  return durable(any);
}

task<json> orchestration_context::when_all(std::vector<durable> calls) {
  json results = json::array();
  for (auto& call : calls) results.push_back(co_await call);
  co_return results;
}

void orchestration_context::continue_as_new(const json& input, bool keep_unprocessed_events) {
  continue_input_ = input;
  keep_events_ = keep_unprocessed_events;
}

task<json> orchestration_context::call_activity_with_retry(std::string name, json input, retry_policy policy) {
  auto interval = policy.first_interval;
  for (int attempt = 1;; ++attempt) {
    try {
      co_return co_await call_activity(name, input);
    } catch (const task_failed& failure) {
      if (attempt >= policy.max_attempts || failure.details().non_retriable) throw;
    }
    co_await create_timer(interval);
    interval = std::min(policy.max_interval,
                        std::chrono::milliseconds(static_cast<std::int64_t>(static_cast<double>(interval.count()) * policy.backoff)));
  }
}

// ---------------------------------------------------------------------------
// Replay

namespace {

json parse_payload(const core::payload& value) {
  if (!value) return json();
  auto parsed = json::parse(*value, nullptr, false);
  return parsed.is_discarded() ? json(*value) : parsed;
}

const char* action_kind(const core::orchestrator_action& action) {
  return std::visit(overloaded{[](const core::actions::schedule_task&) { return "an activity"; },
                               [](const core::actions::create_sub_orchestration&) { return "a sub-orchestration"; },
                               [](const core::actions::create_timer&) { return "a timer"; },
                               [](const core::actions::send_entity_message&) { return "an entity message"; },
                               [](const auto&) { return "another action"; }},
                    action.body);
}

}  // namespace

class replay {
 public:
  replay(orchestration_context& ctx) : ctx_(ctx) {}

  /// Matches a scheduling event of the history with the call the code made.
  void scheduled(const core::history_event& event, const char* kind, const std::string& name) {
    auto found = ctx_.calls_.find(event.event_id);
    if (found == ctx_.calls_.end()) {
      ctx_.nondeterminism_ = fmt::format("the history schedules {} '{}' as call {}, which the code no longer makes",
                                         kind, name, event.event_id);
      return;
    }
    if (std::string(action_kind(found->second.action)) != kind) {
      ctx_.nondeterminism_ = fmt::format("call {} is {} in the history but {} in the code", event.event_id, kind,
                                         action_kind(found->second.action));
      return;
    }
    found->second.in_history = true;
  }

  void answer(std::int32_t id, std::optional<json> value, std::optional<core::failure_details> failure) {
    auto found = ctx_.calls_.find(id);
    if (found == ctx_.calls_.end()) return;
    auto slot = found->second.slot;  // Keep it alive while the code runs on.
    ctx_.answer(*slot, std::move(value), std::move(failure));
  }

  /// An entity's answer names the call by its request id.
  void entity_answer(const std::string& request_id, std::optional<json> value,
                     std::optional<core::failure_details> failure) {
    for (auto& [id, call] : ctx_.calls_) {
      const auto* message = std::get_if<core::actions::send_entity_message>(&call.action.body);
      if (message == nullptr) continue;
      const auto* called = std::get_if<core::events::entity_operation_called>(&message->message);
      if (called != nullptr && called->request_id == request_id) return answer(id, std::move(value), std::move(failure));
    }
  }

  void lock_granted(const std::string& section) {
    for (auto& [id, call] : ctx_.calls_) {
      const auto* message = std::get_if<core::actions::send_entity_message>(&call.action.body);
      if (message == nullptr) continue;
      const auto* request = std::get_if<core::events::entity_lock_requested>(&message->message);
      if (request != nullptr && request->critical_section_id == section) return answer(id, json(section), std::nullopt);
    }
  }

  void event_raised(const core::history_event& event) {
    const auto& raised = std::get<core::events::event_raised>(event.body);
    auto& waiters = ctx_.event_waiters_[raised.name];
    if (waiters.empty()) {
      ctx_.unclaimed_events_[raised.name].push_back(event);
      return;
    }
    auto slot = waiters.front();
    waiters.erase(waiters.begin());
    ctx_.answer(*slot, parse_payload(raised.input), std::nullopt);
  }

  void apply(const core::history_event& event) {
    namespace ev = core::events;
    std::visit(overloaded{
                   [&](const ev::orchestrator_started&) { ctx_.current_time_ns_ = event.timestamp_ns; },
                   [&](const ev::task_scheduled& e) { scheduled(event, "an activity", e.name); },
                   [&](const ev::sub_orchestration_created& e) { scheduled(event, "a sub-orchestration", e.name); },
                   [&](const ev::timer_created&) { scheduled(event, "a timer", "timer"); },
                   [&](const ev::task_completed& e) { answer(e.task_scheduled_id, parse_payload(e.result), std::nullopt); },
                   [&](const ev::task_failed& e) { answer(e.task_scheduled_id, std::nullopt, e.failure); },
                   [&](const ev::sub_orchestration_completed& e) {
                     answer(e.task_scheduled_id, parse_payload(e.result), std::nullopt);
                   },
                   [&](const ev::sub_orchestration_failed& e) { answer(e.task_scheduled_id, std::nullopt, e.failure); },
                   [&](const ev::timer_fired& e) { answer(e.timer_id, json(), std::nullopt); },
                   [&](const ev::event_raised&) { event_raised(event); },
                   [&](const ev::entity_operation_called& e) { scheduled(event, "an entity message", e.operation); },
                   [&](const ev::entity_operation_signaled& e) { scheduled(event, "an entity message", e.operation); },
                   [&](const ev::entity_operation_completed& e) {
                     entity_answer(e.request_id, parse_payload(e.output), std::nullopt);
                   },
                   [&](const ev::entity_operation_failed& e) { entity_answer(e.request_id, std::nullopt, e.failure); },
                   [&](const ev::entity_lock_requested&) { scheduled(event, "an entity message", "lock"); },
                   [&](const ev::entity_unlock_sent&) { scheduled(event, "an entity message", "unlock"); },
                   [&](const ev::entity_lock_granted& e) { lock_granted(e.critical_section_id); },
                   [&](const auto&) {},
               },
               event.body);
  }

 private:
  orchestration_context& ctx_;
};

core::orchestrator_completion run_orchestrator(const orchestrator_fn& orchestrator,
                                               const core::orchestrator_work_item& item) {
  core::orchestrator_completion completion{item.instance_id, item.completion_token, {}, {}};
  const core::events::execution_started* started = nullptr;
  for (const auto* events : {&item.past_events, &item.new_events}) {
    for (const auto& event : *events) {
      if (const auto* e = std::get_if<core::events::execution_started>(&event.body)) started = e;
    }
  }
  auto fail = [&](std::string type, std::string message) {
    core::actions::complete_orchestration done;
    done.status = core::runtime_status::failed;
    done.failure = core::failure_details{std::move(type), std::move(message), std::nullopt, nullptr, true};
    completion.actions = {{0, std::move(done)}};
    return completion;
  };
  if (started == nullptr) return fail("ProtocolError", "the work item holds no ExecutionStarted event");

  orchestration_context ctx(item.instance_id, started->name);
  ctx.execution_id_ = item.execution_id;
  ctx.version_ = started->version.value_or(std::string());
  replay driver(ctx);
  std::optional<task<json>> body;
  try {
    body.emplace(orchestrator(ctx, parse_payload(started->input)));
    // The first OrchestratorStarted sets the time the code sees before it runs.
    for (const auto& event : item.past_events) {
      if (std::holds_alternative<core::events::orchestrator_started>(event.body)) {
        ctx.current_time_ns_ = event.timestamp_ns;
        break;
      }
    }
    if (ctx.current_time_ns_ == 0 && !item.new_events.empty()) ctx.current_time_ns_ = item.new_events.front().timestamp_ns;
    body->start();
    for (const auto& event : item.past_events) driver.apply(event);
    ctx.replaying_ = false;
    for (const auto& event : item.new_events) driver.apply(event);
  } catch (const std::exception& failure) {
    return fail("OrchestratorError", failure.what());
  }
  if (ctx.nondeterminism_) return fail("NonDeterminismError", *ctx.nondeterminism_);

  for (auto& [id, call] : ctx.calls_) {
    if (!call.in_history) completion.actions.push_back(call.action);
  }
  completion.custom_status = ctx.custom_status_;
  const auto next_id = ctx.next_id_;
  if (ctx.continue_input_) {
    core::actions::complete_orchestration again;
    again.status = core::runtime_status::continued_as_new;
    again.result = ctx.continue_input_->dump();
    if (ctx.keep_events_) {
      for (auto& [name, events] : ctx.unclaimed_events_) {
        again.carryover_events.insert(again.carryover_events.end(), events.begin(), events.end());
      }
    }
    completion.actions = {{next_id, std::move(again)}};
  } else if (body->done()) {
    core::actions::complete_orchestration done;
    if (auto failure = body->failure()) {
      done.status = core::runtime_status::failed;
      try {
        std::rethrow_exception(failure);
      } catch (const task_failed& failed) {
        done.failure = failed.details();
      } catch (const std::exception& other) {
        done.failure = core::failure_details{"OrchestratorError", other.what(), std::nullopt, nullptr, false};
      }
    } else {
      done.status = core::runtime_status::completed;
      done.result = body->result().dump();
    }
    completion.actions.push_back({next_id, std::move(done)});
  }
  return completion;
}

}  // namespace dtsd::sdk
