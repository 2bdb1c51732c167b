#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/orchestration.hpp"

using namespace dtsd;
using namespace dtsd::core;

namespace {

bool same_state(const orchestration_state& a, const orchestration_state& b) {
  bool same_flight = a.in_flight.has_value() == b.in_flight.has_value() &&
                     (!a.in_flight || (a.in_flight->completion_token == b.in_flight->completion_token &&
                                       a.in_flight->new_event_count == b.in_flight->new_event_count));
  return a.record == b.record && a.history == b.history && a.inbox == b.inbox &&
         a.inbox_first_sequence == b.inbox_first_sequence && same_flight;
}

orchestrator_action schedule(std::int32_t id, std::string name, std::string input) {
  return {id, actions::schedule_task{std::move(name), std::nullopt, std::move(input), {}}};
}
orchestrator_action complete_with(std::int32_t id, runtime_status status, payload result) {
  actions::complete_orchestration done;
  done.status = status;
  done.result = std::move(result);
  return {id, done};
}

template <class T>
std::size_t count_kind(const std::vector<history_event>& events) {
  return std::count_if(events.begin(), events.end(),
                       [](const history_event& e) { return std::holds_alternative<T>(e.body); });
}

/// Drives one instance through the state machine as a partition would.
struct harness {
  std::optional<orchestration_state> instance;
  payload_limits limits;
  std::int64_t now = 1'000'000;
  std::uint64_t next_token = 1;

  start_request request(std::string id = "order-1", payload input = std::string("\"in\"")) {
    start_request r;
    r.instance_id = std::move(id);
    r.execution_id = "exec-" + std::to_string(next_token++);
    r.name = "HelloCities";
    r.input = std::move(input);
    r.replaceable_statuses = terminal_statuses();
    return r;
  }
  transition start(const start_request& r) {
    auto t = apply_start(instance, r, now, limits);
    REQUIRE_MESSAGE(t, (t ? "" : t.error().message));
    return *t;
  }
  orchestrator_work_item dispatch_now() {
    REQUIRE(is_ready(*instance, now));
    auto item = dispatch(*instance, next_token++);
    REQUIRE(item);
    return *item;
  }
  transition complete(const orchestrator_work_item& item, std::vector<orchestrator_action> acts,
                      payload custom_status = std::nullopt) {
    now += 1000;
    auto t = apply_completion(*instance, {item.instance_id, item.completion_token, std::move(acts),
                                          std::move(custom_status)},
                              "exec-new-" + std::to_string(next_token++), now, limits);
    REQUIRE_MESSAGE(t, (t ? "" : t.error().message));
    return *t;
  }
  transition activity_done(std::int32_t task_id, std::string output) {
    now += 1000;
    auto t = apply_activity_result(*instance,
                                   {instance->record.instance_id, instance->record.execution_id,
                                    task_id, 0, payload(std::move(output))},
                                   now, limits);
    REQUIRE_MESSAGE(t, (t ? "" : t.error().message));
    return *t;
  }
};

}  // namespace

TEST_CASE("orchestration: a start creates a pending instance whose first work item holds ExecutionStarted") {
  harness h;
  auto t = h.start(h.request());
  REQUIRE(h.instance);
  CHECK(h.instance->record.status == runtime_status::pending);
  CHECK(h.instance->record.created_at_ns == h.now);
  CHECK(t.change.record_changed);
  CHECK(t.change.inbox_appended == 1);
  CHECK(is_ready(*h.instance, h.now));
  auto item = h.dispatch_now();
  CHECK(item.past_events.empty());
  REQUIRE(item.new_events.size() == 1);
  const auto& started = std::get<events::execution_started>(item.new_events[0].body);
  CHECK(started.name == "HelloCities");
  CHECK(started.input == payload("\"in\""));
  CHECK(started.instance.execution_id == h.instance->record.execution_id);
  CHECK_FALSE(is_ready(*h.instance, h.now));
}

TEST_CASE("orchestration: a duplicate start of a running id is already_exists and changes nothing") {
  harness h;
  h.start(h.request());
  auto before = *h.instance;
  auto again = h.request();
  auto t = apply_start(h.instance, again, h.now + 5, h.limits);
  REQUIRE_FALSE(t);
  CHECK(t.error().code == errc::already_exists);
  CHECK(t.error().message.find("order-1") != std::string::npos);
  CHECK(t.error().message.find("Pending") != std::string::npos);
  CHECK(same_state(*h.instance, before));
}

TEST_CASE("orchestration: a start replaces an instance whose status the reuse policy lists") {
  harness h;
  h.start(h.request());
  auto item = h.dispatch_now();
  h.complete(item, {complete_with(0, runtime_status::completed, "\"done\"")});
  auto old_sequence = h.instance->inbox_first_sequence;

  auto replacing = h.request();
  auto t = h.start(replacing);
  CHECK(t.change.history_reset);
  CHECK(h.instance->record.status == runtime_status::pending);
  CHECK(h.instance->record.execution_id == replacing.execution_id);
  CHECK(h.instance->history.empty());
  CHECK(h.instance->inbox_first_sequence >= old_sequence);

  // A running instance is replaced only when the policy says so.
  auto strict = h.request();
  strict.replaceable_statuses = {runtime_status::completed};
  CHECK(apply_start(h.instance, strict, h.now, h.limits).error().code == errc::already_exists);
  strict.replaceable_statuses = {runtime_status::pending, runtime_status::terminated};
  CHECK(apply_start(h.instance, strict, h.now, h.limits));
}

TEST_CASE("orchestration: a reuse policy that replaces running instances but not terminated ones is refused") {
  harness h;
  h.start(h.request());
  const auto before = *h.instance;
  for (auto running : {runtime_status::pending, runtime_status::running, runtime_status::suspended}) {
    auto policy = h.request();
    policy.replaceable_statuses = {running, runtime_status::completed, runtime_status::failed};
    auto refused = apply_start(h.instance, policy, h.now, h.limits);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == errc::invalid_argument);
    CHECK(refused.error().message.find("Terminated") != std::string::npos);
    CHECK(same_state(*h.instance, before));
    // Refused for a new id too: the policy itself is wrong.
    std::optional<orchestration_state> none;
    policy.instance_id = "fresh";
    CHECK_FALSE(apply_start(none, policy, h.now, h.limits));
    CHECK_FALSE(none);
  }
  // Terminal statuses alone stay fine, with or without Terminated.
  auto terminal_only = h.request("other");
  terminal_only.replaceable_statuses = {runtime_status::completed};
  std::optional<orchestration_state> other;
  CHECK(apply_start(other, terminal_only, h.now, h.limits));
}

TEST_CASE("orchestration: a retry may schedule a failed task's id again; an id still outstanding is refused") {
  harness h;
  h.start(h.request());
  h.complete(h.dispatch_now(), {schedule(1, "Flaky", "1")});
  // While task 1 waits for its result, its id cannot name another task.
  REQUIRE(apply_raise_event(*h.instance, "poke", std::nullopt, h.now, h.limits));
  auto item = h.dispatch_now();
  const auto before = *h.instance;
  auto clash = apply_completion(*h.instance, {item.instance_id, item.completion_token, {schedule(1, "Other", "2")}, {}},
                                "x", h.now, h.limits);
  REQUIRE_FALSE(clash);
  CHECK(clash.error().code == errc::invalid_argument);
  CHECK(clash.error().message.find("still waiting") != std::string::npos);
  CHECK(same_state(*h.instance, before));
  h.complete(item, {});

  // Task 1 fails; the SDK waits on a retry timer (id 2), then schedules id 1 again.
  failure_details boom{"Error", "boom", std::nullopt, nullptr, false};
  REQUIRE(apply_activity_result(*h.instance, {"order-1", h.instance->record.execution_id, 1, 0, boom}, h.now,
                                h.limits));
  h.complete(h.dispatch_now(), {{2, actions::create_timer{h.now + 10}}});
  REQUIRE(apply_timer_fired(*h.instance, {"order-1", h.instance->record.execution_id, 2, h.now + 10}, h.now + 10));
  h.complete(h.dispatch_now(), {schedule(1, "Flaky", "1")});
  CHECK(count_kind<events::task_scheduled>(h.instance->history) == 2);

  // The retry's result is applied once, like any result.
  h.activity_done(1, "\"ok\"");
  CHECK(apply_activity_result(*h.instance, {"order-1", h.instance->record.execution_id, 1, 0, payload("\"again\"")},
                              h.now, h.limits)
            .error()
            .code == errc::duplicate);
  item = h.dispatch_now();
  CHECK(std::get<events::task_completed>(item.new_events.back().body).result == payload("\"ok\""));

  // Two actions of one response may not share an id.
  const auto at = *h.instance;
  auto twice = apply_completion(*h.instance,
                                {item.instance_id, item.completion_token, {schedule(5, "A", "1"), schedule(5, "B", "2")}, {}},
                                "x", h.now, h.limits);
  REQUIRE_FALSE(twice);
  CHECK(twice.error().message.find("twice in one response") != std::string::npos);
  CHECK(same_state(*h.instance, at));
  h.complete(item, {complete_with(3, runtime_status::completed, "\"done\"")});
  CHECK(h.instance->record.status == runtime_status::completed);
}

TEST_CASE("orchestration: the id of a completeOrchestration action carries no meaning, -1 included") {
  harness h;
  h.start(h.request());
  actions::complete_orchestration failed;
  failed.status = runtime_status::failed;
  failed.failure = failure_details{"VersionMismatch", "the worker runs version 2", std::nullopt, nullptr, false};
  h.complete(h.dispatch_now(), {{-1, failed}});
  CHECK(h.instance->record.status == runtime_status::failed);
  REQUIRE(h.instance->record.failure);
  CHECK(h.instance->record.failure->error_type == "VersionMismatch");

  // Other actions still need an id of zero or more.
  harness other;
  other.start(other.request());
  auto item = other.dispatch_now();
  auto refused = apply_completion(*other.instance, {item.instance_id, item.completion_token, {schedule(-1, "A", "1")}, {}},
                                  "x", other.now, other.limits);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("negative") != std::string::npos);
}

TEST_CASE("orchestration: an invalid start is rejected and creates nothing") {
  harness h;
  auto oversize = h.request("big", std::string(h.limits.orchestration_input_bytes_max + 1, 'x'));
  auto t = apply_start(h.instance, oversize, h.now, h.limits);
  REQUIRE_FALSE(t);
  CHECK(t.error().code == errc::invalid_argument);
  CHECK(t.error().message.find("orchestration input is 1048577 bytes") != std::string::npos);
  CHECK_FALSE(h.instance);

  CHECK_FALSE(apply_start(h.instance, h.request(std::string(101, 'i')), h.now, h.limits));
  CHECK_FALSE(apply_start(h.instance, h.request("@entity@key"), h.now, h.limits));
  auto nameless = h.request();
  nameless.name.clear();
  CHECK_FALSE(apply_start(h.instance, nameless, h.now, h.limits));
  CHECK_FALSE(h.instance);
}

TEST_CASE("orchestration: hello cities runs five activities in sequence to completion") {
  harness h;
  h.start(h.request());
  const std::vector<std::string> cities = {"Tokyo", "Seattle", "London", "Paris", "Cairo"};
  std::string output = "[";
  for (std::int32_t i = 0; i < 5; ++i) {
    auto item = h.dispatch_now();
    auto t = h.complete(item, {schedule(i, "SayHello", "\"" + cities[i] + "\"")});
    REQUIRE(t.effects.activities.size() == 1);
    CHECK(t.effects.activities[0].task_id == i);
    CHECK(t.effects.activities[0].input == payload("\"" + cities[i] + "\""));
    CHECK(h.instance->record.status == runtime_status::running);
    CHECK_FALSE(is_ready(*h.instance, h.now));
    h.activity_done(i, "\"Hello, " + cities[i] + "!\"");
    output += (i ? "," : "") + std::string("\"Hello, ") + cities[i] + "!\"";
  }
  output += "]";
  auto item = h.dispatch_now();
  auto t = h.complete(item, {complete_with(5, runtime_status::completed, output)});
  CHECK(h.instance->record.status == runtime_status::completed);
  CHECK(h.instance->record.output == payload(output));
  CHECK(h.instance->record.completed_at_ns == h.now);
  CHECK(t.effects.messages.empty());  // No parent to notify.

  const auto& history = h.instance->history;
  CHECK(count_kind<events::task_scheduled>(history) == 5);
  CHECK(count_kind<events::task_completed>(history) == 5);
  CHECK(count_kind<events::execution_started>(history) == 1);
  CHECK(count_kind<events::execution_completed>(history) == 1);
  CHECK(count_kind<events::orchestrator_completed>(history) == 0);  // As DTS: not stored.
  CHECK(std::holds_alternative<events::execution_completed>(history.back().body));
  CHECK(h.instance->inbox.empty());
}

TEST_CASE("orchestration: a stale completion token is rejected and changes nothing") {
  harness h;
  h.start(h.request());
  auto item = h.dispatch_now();
  auto before = *h.instance;
  auto stale = apply_completion(*h.instance, {item.instance_id, item.completion_token + 99, {}, {}},
                                "x", h.now, h.limits);
  REQUIRE_FALSE(stale);
  CHECK(stale.error().code == errc::stale_token);
  CHECK(same_state(*h.instance, before));

  // After the right completion, the same token is stale too (no double completion).
  h.complete(item, {schedule(0, "SayHello", "1")});
  auto after = *h.instance;
  auto twice = apply_completion(*h.instance, {item.instance_id, item.completion_token, {}, {}}, "x",
                                h.now, h.limits);
  CHECK(twice.error().code == errc::stale_token);
  CHECK(same_state(*h.instance, after));
}

TEST_CASE("orchestration: an activity result is applied once; a repeat or an unknown task changes nothing") {
  harness h;
  h.start(h.request());
  h.complete(h.dispatch_now(), {schedule(0, "SayHello", "1")});
  h.activity_done(0, "\"one\"");
  auto before = *h.instance;
  auto repeat = apply_activity_result(
      *h.instance, {"order-1", h.instance->record.execution_id, 0, 0, payload("\"one\"")}, h.now,
      h.limits);
  REQUIRE_FALSE(repeat);
  CHECK(repeat.error().code == errc::duplicate);
  auto unknown = apply_activity_result(
      *h.instance, {"order-1", h.instance->record.execution_id, 7, 0, payload("1")}, h.now, h.limits);
  CHECK(unknown.error().code == errc::invalid_argument);
  auto old_execution =
      apply_activity_result(*h.instance, {"order-1", "other-exec", 0, 0, payload("1")}, h.now, h.limits);
  CHECK(old_execution.error().code == errc::failed_precondition);
  auto oversize = apply_activity_result(
      *h.instance,
      {"order-1", h.instance->record.execution_id, 0, 0,
       payload(std::string(h.limits.activity_output_bytes_max + 1, 'x'))},
      h.now, h.limits);
  CHECK(oversize.error().message.find("activity output") != std::string::npos);
  CHECK(same_state(*h.instance, before));

  // Once the result is in the history it is still a duplicate.
  h.complete(h.dispatch_now(), {});
  auto in_history = apply_activity_result(
      *h.instance, {"order-1", h.instance->record.execution_id, 0, 0, payload("1")}, h.now, h.limits);
  CHECK(in_history.error().code == errc::duplicate);
}

TEST_CASE("orchestration: a failed activity is recorded with its failure details") {
  harness h;
  h.start(h.request());
  h.complete(h.dispatch_now(), {schedule(0, "Flaky", "1")});
  failure_details failure{"IOException", "disk on fire", std::string("at x()"),
                          std::make_shared<failure_details>(failure_details{"Inner", "cause", {}, {}, false}),
                          true};
  auto t = apply_activity_result(*h.instance,
                                 {"order-1", h.instance->record.execution_id, 0, 0, failure},
                                 h.now, h.limits);
  REQUIRE(t);
  const auto& failed = std::get<events::task_failed>(h.instance->inbox.back().body);
  CHECK(failed.failure == failure);
  CHECK(failed.failure.inner_failure->error_message == "cause");
}

TEST_CASE("orchestration: events that arrive while a work item is in flight wait for the next one") {
  harness h;
  h.start(h.request());
  auto first = h.dispatch_now();
  auto raised = apply_raise_event(*h.instance, "Approval", std::string("true"), h.now, h.limits);
  REQUIRE(raised);
  CHECK(raised->change.inbox_appended == 1);
  CHECK_FALSE(is_ready(*h.instance, h.now));
  h.complete(first, {});
  REQUIRE(h.instance->inbox.size() == 1);
  auto second = h.dispatch_now();
  REQUIRE(second.new_events.size() == 1);
  CHECK(std::get<events::event_raised>(second.new_events[0].body).name == "Approval");
  CHECK(second.past_events.size() == 2);  // OrchestratorStarted, ExecutionStarted.
}

TEST_CASE("orchestration: a durable timer is created as an effect and fires once") {
  harness h;
  h.start(h.request());
  const std::int64_t fire_at = h.now + 5'000'000;
  auto t = h.complete(h.dispatch_now(), {{0, actions::create_timer{fire_at}}});
  REQUIRE(t.effects.timers.size() == 1);
  auto timer = t.effects.timers[0];
  CHECK(timer.fire_at_ns == fire_at);
  CHECK(timer.execution_id == h.instance->record.execution_id);
  auto fired = apply_timer_fired(*h.instance, timer, fire_at);
  REQUIRE(fired);
  CHECK(is_ready(*h.instance, fire_at));
  CHECK(apply_timer_fired(*h.instance, timer, fire_at).error().code == errc::duplicate);
  auto item = h.dispatch_now();
  CHECK(std::get<events::timer_fired>(item.new_events[0].body).timer_id == 0);
}

TEST_CASE("orchestration: a sub-orchestration is started by message and reports back to its parent") {
  harness parent;
  parent.start(parent.request("parent"));
  auto t = parent.complete(parent.dispatch_now(),
                           {{3, actions::create_sub_orchestration{"parent:child", "Child", {}, "7"}}});
  REQUIRE(t.effects.messages.size() == 1);
  auto message = t.effects.messages[0];
  CHECK(message.target_instance_id == "parent:child");
  auto request = std::get<start_request>(message.body);
  REQUIRE(request.parent);
  CHECK(request.parent->task_scheduled_id == 3);
  CHECK(request.parent->instance.instance_id == "parent");

  CHECK(request.execution_id.size() == 32);  // Derived: replaying the log gives the same id.
  harness child;
  auto started = apply_message(child.instance, {message.target_instance_id, {}, request}, child.now,
                               child.limits);
  REQUIRE(started);
  auto item = child.dispatch_now();
  CHECK(std::get<events::execution_started>(item.new_events[0].body).parent->name == "HelloCities");
  auto done = child.complete(item, {complete_with(0, runtime_status::completed, "\"child out\"")});
  REQUIRE(done.effects.messages.size() == 1);
  const auto& report = done.effects.messages[0];
  CHECK(report.target_instance_id == "parent");
  CHECK(report.target_execution_id == parent.instance->record.execution_id);

  auto delivered = apply_message(parent.instance, report, parent.now, parent.limits);
  REQUIRE(delivered);
  const auto& result = std::get<events::sub_orchestration_completed>(parent.instance->inbox.back().body);
  CHECK(result.task_scheduled_id == 3);
  CHECK(result.result == payload("\"child out\""));
  CHECK(apply_message(parent.instance, report, parent.now, parent.limits).error().code ==
        errc::duplicate);
}

TEST_CASE("orchestration: a failed sub-orchestration start is reported to the parent as a failure") {
  harness h;
  auto request = h.request("child");
  request.parent = parent_instance{4, "Parent", {}, {"parent", "pexec"}};
  auto message = start_failed_message(request, {errc::already_exists, "exists"}, h.now);
  REQUIRE(message);
  CHECK(message->target_instance_id == "parent");
  CHECK(message->target_execution_id == "pexec");
  auto failed = std::get<events::sub_orchestration_failed>(std::get<history_event>(message->body).body);
  CHECK(failed.task_scheduled_id == 4);
  CHECK(failed.failure.error_message == "exists");
  request.parent.reset();
  CHECK_FALSE(start_failed_message(request, {errc::already_exists, "exists"}, h.now));
}

TEST_CASE("orchestration: continue-as-new starts a fresh execution with carried-over events") {
  harness h;
  h.start(h.request());
  h.complete(h.dispatch_now(), {schedule(0, "A", "1")});
  auto old_execution = h.instance->record.execution_id;
  h.activity_done(0, "2");
  auto item = h.dispatch_now();
  // An event arrives while the work item is in flight; it must survive too.
  REQUIRE(apply_raise_event(*h.instance, "late", std::string("3"), h.now, h.limits));

  actions::complete_orchestration again;
  again.status = runtime_status::continued_as_new;
  again.result = "\"next input\"";
  again.new_version = "2.0";
  again.carryover_events.push_back({-1, h.now, events::event_raised{"carried", std::string("4")}});
  auto t = h.complete(item, {{1, again}});
  CHECK(t.change.history_reset);
  CHECK(h.instance->history.empty());
  CHECK(h.instance->record.execution_id != old_execution);
  CHECK(h.instance->record.input == payload("\"next input\""));
  CHECK(h.instance->record.version == payload("2.0"));
  CHECK(h.instance->record.status == runtime_status::running);
  REQUIRE(h.instance->inbox.size() == 3);
  CHECK(std::get<events::execution_started>(h.instance->inbox[0].body).instance.execution_id ==
        h.instance->record.execution_id);
  CHECK(std::get<events::event_raised>(h.instance->inbox[1].body).name == "carried");
  CHECK(std::get<events::event_raised>(h.instance->inbox[2].body).name == "late");
  CHECK(t.change.inbox_appended == 3);

  // Results for the old execution no longer apply.
  auto stale = apply_activity_result(*h.instance, {"order-1", old_execution, 0, 0, payload("1")},
                                     h.now, h.limits);
  CHECK(stale.error().code == errc::failed_precondition);
}

TEST_CASE("orchestration: terminate ends the instance, voids the work item in flight and reaches children") {
  harness h;
  h.start(h.request());
  h.complete(h.dispatch_now(),
             {{0, actions::create_sub_orchestration{"kid-a", "Child", {}, {}}},
              {1, actions::create_sub_orchestration{"kid-b", "Child", {}, {}}}});
  REQUIRE(apply_message(h.instance,
                        {"order-1", {}, history_event{-1, h.now, events::sub_orchestration_completed{1, "\"b\""}}},
                        h.now, h.limits));
  auto item = h.dispatch_now();
  REQUIRE(apply_raise_event(*h.instance, "e", std::nullopt, h.now, h.limits));

  auto t = apply_terminate(*h.instance, {std::string("\"stop\""), true}, h.now, h.limits);
  REQUIRE(t);
  CHECK(h.instance->record.status == runtime_status::terminated);
  CHECK(h.instance->record.output == payload("\"stop\""));
  CHECK(h.instance->inbox.empty());
  // kid-b already finished, so only kid-a is told to stop.
  REQUIRE(t->effects.messages.size() == 1);
  CHECK(t->effects.messages[0].target_instance_id == "kid-a");
  CHECK(std::holds_alternative<terminate_request>(t->effects.messages[0].body));
  CHECK(std::holds_alternative<events::execution_completed>(h.instance->history.back().body));

  auto late = apply_completion(*h.instance, {item.instance_id, item.completion_token, {}, {}}, "x",
                               h.now, h.limits);
  CHECK(late.error().code == errc::stale_token);
  CHECK(apply_terminate(*h.instance, {}, h.now, h.limits).error().code == errc::failed_precondition);
  CHECK(apply_raise_event(*h.instance, "e", std::nullopt, h.now, h.limits).error().code ==
        errc::failed_precondition);
}

TEST_CASE("orchestration: a terminated sub-orchestration reports a failure to its parent") {
  harness h;
  auto request = h.request("child");
  request.parent = parent_instance{2, "Parent", {}, {"parent", "pexec"}};
  h.start(request);
  auto t = apply_terminate(*h.instance, {std::string("bye"), false}, h.now, h.limits);
  REQUIRE(t);
  REQUIRE(t->effects.messages.size() == 1);
  const auto& body = std::get<history_event>(t->effects.messages[0].body).body;
  CHECK(std::get<events::sub_orchestration_failed>(body).task_scheduled_id == 2);
}

TEST_CASE("orchestration: a suspended instance holds its events until it is resumed") {
  harness h;
  h.start(h.request());
  h.complete(h.dispatch_now(), {});
  auto suspended = apply_suspend(*h.instance, std::string("maintenance"), h.now);
  REQUIRE(suspended);
  CHECK(h.instance->record.status == runtime_status::suspended);
  REQUIRE(apply_raise_event(*h.instance, "e", std::nullopt, h.now, h.limits));
  CHECK_FALSE(is_ready(*h.instance, h.now));
  CHECK(apply_suspend(*h.instance, {}, h.now).error().code == errc::failed_precondition);

  REQUIRE(apply_resume(*h.instance, {}, h.now));
  CHECK(h.instance->record.status == runtime_status::running);
  auto item = h.dispatch_now();
  REQUIRE(item.new_events.size() == 3);
  CHECK(std::holds_alternative<events::execution_suspended>(item.new_events[0].body));
  CHECK(std::holds_alternative<events::event_raised>(item.new_events[1].body));
  CHECK(std::holds_alternative<events::execution_resumed>(item.new_events[2].body));
  CHECK(apply_resume(*h.instance, {}, h.now).error().code == errc::failed_precondition);
}

TEST_CASE("orchestration: purge removes only a terminal instance") {
  harness h;
  h.start(h.request());
  auto running = apply_purge(h.instance);
  REQUIRE_FALSE(running);
  CHECK(running.error().code == errc::failed_precondition);
  CHECK(h.instance);
  REQUIRE(apply_terminate(*h.instance, {}, h.now, h.limits));
  auto t = apply_purge(h.instance);
  REQUIRE(t);
  CHECK(t->change.purged);
  CHECK_FALSE(h.instance);
  CHECK(apply_purge(h.instance).error().code == errc::not_found);
}

TEST_CASE("orchestration: a scheduled start waits for its time") {
  harness h;
  auto request = h.request();
  request.scheduled_start_ns = h.now + 60'000'000'000;
  h.start(request);
  CHECK_FALSE(is_ready(*h.instance, h.now));
  CHECK(start_due_ns(*h.instance, h.now) == request.scheduled_start_ns);
  CHECK(is_ready(*h.instance, request.scheduled_start_ns));
  CHECK_FALSE(start_due_ns(*h.instance, request.scheduled_start_ns));
}

TEST_CASE("orchestration: a completion with bad actions is rejected whole and changes nothing") {
  harness h;
  h.start(h.request());
  auto item = h.dispatch_now();
  auto before = *h.instance;
  auto reject = [&](std::vector<orchestrator_action> acts, payload custom = std::nullopt) {
    auto t = apply_completion(*h.instance, {item.instance_id, item.completion_token, std::move(acts), custom},
                              "new", h.now, h.limits);
    REQUIRE_FALSE(t);
    CHECK(t.error().code == errc::invalid_argument);
    CHECK(same_state(*h.instance, before));
    return t.error().message;
  };
  CHECK(reject({schedule(0, "A", "1"), schedule(0, "B", "1")}).find("used twice") != std::string::npos);
  CHECK(reject({complete_with(0, runtime_status::completed, {}),
                complete_with(1, runtime_status::failed, {})})
            .find("more than one") != std::string::npos);
  CHECK(reject({complete_with(0, runtime_status::running, {})}).find("not allowed") != std::string::npos);
  CHECK(reject({{0, actions::create_sub_orchestration{"", "Child", {}, {}}}}).find("empty") !=
        std::string::npos);
  CHECK(reject({schedule(0, "", "1")}).find("empty activity name") != std::string::npos);
  CHECK(reject({schedule(0, "A", std::string(h.limits.activity_input_bytes_max + 1, 'x'))})
            .find("activity input") != std::string::npos);
  CHECK(reject({}, std::string(h.limits.custom_status_bytes_max + 1, 'x')).find("custom status") !=
        std::string::npos);
  CHECK(reject({{0, actions::send_event{{"", ""}, "e", {}}}}).find("sendEvent") != std::string::npos);
  CHECK(reject({{0, actions::send_entity_message{events::entity_operation_signaled{"r", "add", 0, {}, "plain"}}}})
            .find("not an entity id") != std::string::npos);
  CHECK(reject({schedule(-1, "A", "1")}).find("negative") != std::string::npos);

  // The work item is still valid after the rejections.
  h.complete(item, {schedule(0, "A", "1")}, std::string("\"50%\""));
  CHECK(h.instance->record.custom_status == payload("\"50%\""));
}

TEST_CASE("orchestration: a dispatch gives only as many new events as allowed") {
  harness h;
  h.start(h.request());
  REQUIRE(apply_raise_event(*h.instance, "e", std::nullopt, h.now, h.limits));
  CHECK(dispatch(*h.instance, 7, 0).error().code == errc::failed_precondition);
  auto item = dispatch(*h.instance, 8, 1);
  REQUIRE(item);
  CHECK(item->new_events.size() == 1);
  h.complete(*item, {});
  CHECK(h.instance->inbox.size() == 1);  // The event that was not yet given waits.
  CHECK(is_ready(*h.instance, h.now));
}

TEST_CASE("orchestration: the OrchestratorStarted time the worker was given is the one the history keeps") {
  harness h;
  h.start(h.request());
  const auto dispatched_at = h.now + 1000;
  auto item = dispatch(*h.instance, 9, SIZE_MAX, dispatched_at);
  REQUIRE(item);
  REQUIRE(item->new_events.size() == 2);
  CHECK(std::holds_alternative<events::orchestrator_started>(item->new_events[0].body));
  CHECK(item->new_events[0].timestamp_ns == dispatched_at);
  h.now += 5000;  // The worker answers later; replay must still see the dispatch time.
  h.complete(*item, {});
  REQUIRE_FALSE(h.instance->history.empty());
  CHECK(std::holds_alternative<events::orchestrator_started>(h.instance->history[0].body));
  CHECK(h.instance->history[0].timestamp_ns == dispatched_at);
}

TEST_CASE("orchestration: abandon makes the work item available again; a wrong token changes nothing") {
  harness h;
  h.start(h.request());
  auto item = h.dispatch_now();
  CHECK(abandon(*h.instance, item.completion_token + 1).error().code == errc::stale_token);
  CHECK_FALSE(is_ready(*h.instance, h.now));
  REQUIRE(abandon(*h.instance, item.completion_token));
  auto again = h.dispatch_now();
  CHECK(again.new_events.size() == 1);
  CHECK(again.completion_token != item.completion_token);
}

TEST_CASE("orchestration: merged changes describe the rows of several applies in one batch") {
  harness h;
  auto first = h.start(h.request()).change;
  auto item = h.dispatch_now();
  auto second = h.complete(item, {schedule(0, "A", "1")}).change;
  merge(first, second, *h.instance);
  auto third = h.activity_done(0, "2").change;
  merge(first, third, *h.instance);
  CHECK(first.record_changed);
  CHECK(first.history_appended == h.instance->history.size());
  CHECK(first.inbox_appended == 1);  // Only the activity result is left, and it is new.

  // Purged and started again in the same batch: every row is rewritten.
  REQUIRE(apply_terminate(*h.instance, {}, h.now, h.limits));
  auto purged = apply_purge(h.instance);
  REQUIRE(purged);
  instance_change combined;
  merge(combined, purged->change, orchestration_state{});
  auto restarted = h.start(h.request()).change;
  merge(combined, restarted, *h.instance);
  CHECK_FALSE(combined.purged);
  CHECK(combined.history_reset);
  CHECK(combined.inbox_appended == h.instance->inbox.size());
}

TEST_CASE("orchestration: only open sub-orchestrations are listed as open") {
  harness h;
  h.start(h.request());
  h.complete(h.dispatch_now(), {{0, actions::create_sub_orchestration{"a", "C", {}, {}}},
                                {1, actions::create_sub_orchestration{"b", "C", {}, {}}}});
  REQUIRE(apply_message(h.instance,
                        {"order-1", {}, history_event{-1, h.now, events::sub_orchestration_failed{0, {}}}},
                        h.now, h.limits));
  CHECK(open_sub_orchestrations(*h.instance) == std::vector<std::string>{"b"});
  CHECK(all_sub_orchestrations(*h.instance) == std::vector<std::string>{"a", "b"});
}

TEST_CASE("orchestration: rewind drops the failures and the unfinished, and runs on as a new execution") {
  harness h;
  h.start(h.request());
  auto first = h.dispatch_now();
  h.complete(first, {schedule(0, "A", "1"), schedule(1, "B", "2"), schedule(2, "C", "3")});
  REQUIRE(apply_activity_result(*h.instance, {"order-1", h.instance->record.execution_id, 0, 0, payload("\"a\"")}, h.now, h.limits));
  REQUIRE(apply_activity_result(*h.instance, {"order-1", h.instance->record.execution_id, 1, 0, failure_details{"E", "boom", {}, {}, false}}, h.now, h.limits));
  auto second = h.dispatch_now();
  core::actions::complete_orchestration failed;
  failed.status = runtime_status::failed;
  failed.failure = failure_details{"E", "boom", {}, {}, false};
  h.complete(second, {orchestrator_action{3, failed}});
  REQUIRE(h.instance->record.status == runtime_status::failed);
  const auto old_execution = h.instance->record.execution_id;

  CHECK(apply_rewind(*h.instance, payload("fixed"), {}, "rewound-ex", h.now, h.limits));
  const auto& state = *h.instance;
  CHECK(state.record.status == runtime_status::running);
  CHECK(state.record.execution_id == "rewound-ex");
  CHECK_FALSE(state.record.failure);
  std::set<std::int32_t> scheduled;
  for (const auto& event : state.history) {
    CHECK_FALSE(std::holds_alternative<events::task_failed>(event.body));
    CHECK_FALSE(std::holds_alternative<events::execution_completed>(event.body));
    if (std::holds_alternative<events::task_scheduled>(event.body)) scheduled.insert(event.event_id);
    if (const auto* started = std::get_if<events::execution_started>(&event.body)) {
      CHECK(started->instance.execution_id == "rewound-ex");
    }
  }
  CHECK(scheduled == std::set<std::int32_t>{0});  // A finished; B failed; C never finished.
  REQUIRE(state.inbox.size() == 1);
  CHECK(std::holds_alternative<events::execution_rewound>(state.inbox[0].body));
  CHECK(is_ready(state, h.now));
  CHECK(old_execution != "rewound-ex");

  // Only a failed orchestration can be rewound.
  auto again = apply_rewind(*h.instance, std::nullopt, {}, "x", h.now, h.limits);
  REQUIRE_FALSE(again);
  CHECK(again.error().code == errc::failed_precondition);
}

TEST_CASE("orchestration: a rewound parent whose failed child was purged creates the child again") {
  harness parent;
  parent.start(parent.request("parent"));
  actions::create_sub_orchestration create{"parent:child", "Child", payload("v1"), payload("7"), {{"team", "a"}}};
  auto created = parent.complete(parent.dispatch_now(), {{3, create}});
  const auto first_start = std::get<start_request>(created.effects.messages.at(0).body);
  failure_details boom{"E", "child failed", std::nullopt, nullptr, false};
  REQUIRE(apply_message(parent.instance,
                        {"parent", parent.instance->record.execution_id,
                         history_event{-1, parent.now, events::sub_orchestration_failed{3, boom}}},
                        parent.now, parent.limits));
  actions::complete_orchestration failed;
  failed.status = runtime_status::failed;
  failed.failure = boom;
  parent.complete(parent.dispatch_now(), {{4, failed}});
  REQUIRE(parent.instance->record.status == runtime_status::failed);

  // The rewind keeps SubOrchestrationInstanceCreated and sends the child a rewind
  // that says how to create it.
  auto rewound = apply_rewind(*parent.instance, payload("fixed"), {}, "parent-ex2", parent.now, parent.limits);
  REQUIRE(rewound);
  REQUIRE(rewound->effects.messages.size() == 1);
  const auto& message = rewound->effects.messages[0];
  CHECK(message.target_instance_id == "parent:child");
  CHECK(count_kind<events::sub_orchestration_created>(parent.instance->history) == 1);

  // The child was purged: the rewind message starts it again, reporting to the
  // parent's new execution, as the parent first created it.
  harness child;
  auto started = apply_message(child.instance, message, child.now, child.limits);
  REQUIRE_MESSAGE(started, (started ? "" : started.error().message));
  REQUIRE(child.instance);
  const auto& record = child.instance->record;
  CHECK(record.name == "Child");
  CHECK(record.version == payload("v1"));
  CHECK(record.input == payload("7"));
  CHECK(record.tags == tag_map{{"team", "a"}});
  REQUIRE(record.parent);
  CHECK(record.parent->task_scheduled_id == 3);
  CHECK(record.parent->instance.execution_id == "parent-ex2");
  CHECK(record.execution_id != first_start.execution_id);

  auto done = child.complete(child.dispatch_now(), {complete_with(0, runtime_status::completed, "\"ok\"")});
  REQUIRE(done.effects.messages.size() == 1);
  CHECK(done.effects.messages[0].target_execution_id == "parent-ex2");
  REQUIRE(apply_message(parent.instance, done.effects.messages[0], parent.now, parent.limits));

  // A rewind message without creation details still finds nobody.
  std::optional<orchestration_state> nobody;
  auto plain = apply_message(nobody, {"gone", {}, history_event{-1, 1, events::execution_rewound{payload("r"), "p"}}},
                             1, parent.limits);
  REQUIRE_FALSE(plain);
  CHECK(plain.error().code == errc::not_found);
}

TEST_CASE("orchestration: an entity grants its lock in order and holds other callers' operations meanwhile") {
  const std::string id = "@counter@one";
  std::optional<orchestration_state> entity;
  auto send = [&](event_body body) {
    auto applied = apply_entity_message(entity, instance_message{id, {}, history_event{-1, 1, std::move(body)}}, 1);
    REQUIRE(applied);
    return std::move(*applied);
  };
  send(events::entity_operation_signaled{"s1", "add", 0, "1", id});
  REQUIRE(entity);
  CHECK(entity->record.name == "counter");
  CHECK(entity->inbox.size() == 1);

  auto locked = send(events::entity_lock_requested{"cs-1", {id, "@counter@two"}, 0, "orch-1"});
  CHECK(entity->record.entity_locked_by == "orch-1");
  REQUIRE(locked.effects.messages.size() == 1);  // Passed on to the next entity of the set.
  CHECK(locked.effects.messages[0].target_instance_id == "@counter@two");
  CHECK(std::get<events::entity_lock_requested>(std::get<history_event>(locked.effects.messages[0].body).body).position == 1);

  send(events::entity_operation_signaled{"s2", "add", 0, "2", id});                   // Waits.
  send(events::entity_operation_called{"c1", "get", 0, std::nullopt, "orch-2", "x", id});  // Waits.
  send(events::entity_operation_called{"c2", "get", 0, std::nullopt, "orch-1", "x", id});  // The holder: runs.
  send(events::entity_lock_requested{"cs-2", {id}, 0, "orch-2"});                     // Waits.
  CHECK(entity->inbox.size() == 2);
  CHECK(entity->record.entity_deferred.size() == 3);
  send(events::entity_unlock_sent{"cs-other", "orch-1", id});  // Not the held section: ignored.
  CHECK(entity->record.entity_locked_by == "orch-1");

  auto released = send(events::entity_unlock_sent{"cs-1", "orch-1", id});
  // The waiting messages go through again in order: two operations run, then orch-2 locks.
  CHECK(entity->inbox.size() == 4);
  CHECK(entity->record.entity_locked_by == "orch-2");
  CHECK(entity->record.entity_deferred.empty());
  REQUIRE(released.effects.messages.size() == 1);
  CHECK(released.effects.messages[0].target_instance_id == "orch-2");
  CHECK(std::holds_alternative<events::entity_lock_granted>(std::get<history_event>(released.effects.messages[0].body).body));
}

TEST_CASE("orchestration: a replacing start may not reuse the current execution id") {
  harness h;
  h.start(h.request());
  h.complete(h.dispatch_now(), {complete_with(0, runtime_status::completed, "\"done\"")});
  const auto before = *h.instance;
  auto again = h.request();
  again.execution_id = h.instance->record.execution_id;
  auto refused = apply_start(h.instance, again, h.now, h.limits);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::invalid_argument);
  CHECK(same_state(*h.instance, before));
}

TEST_CASE("orchestration: an entity with state is deleted whole, but not while locked or with operations waiting") {
  const std::string id = "@counter@gone";
  std::optional<orchestration_state> entity;
  auto send = [&](event_body body) {
    REQUIRE(apply_entity_message(entity, instance_message{id, {}, history_event{-1, 1, std::move(body)}}, 1));
  };
  send(events::entity_lock_requested{"cs-1", {id}, 0, "orch-1"});
  REQUIRE(entity);
  entity->record.entity_state = "41";
  const auto before = *entity;
  auto locked = apply_entity_delete(entity);
  REQUIRE_FALSE(locked);
  CHECK(locked.error().code == errc::failed_precondition);
  CHECK(locked.error().message.find("orch-1") != std::string::npos);
  CHECK(same_state(*entity, before));  // Refused: nothing changed.

  send(events::entity_unlock_sent{"cs-1", "orch-1", id});
  send(events::entity_operation_signaled{"s1", "add", 0, "1", id});
  auto waiting = apply_entity_delete(entity);
  REQUIRE_FALSE(waiting);
  CHECK(waiting.error().code == errc::failed_precondition);

  entity->inbox.clear();  // As once the operation ran.
  auto deleted = apply_entity_delete(entity);
  REQUIRE(deleted);
  CHECK(deleted->change.purged);
  CHECK_FALSE(entity);

  std::optional<orchestration_state> none;
  CHECK(apply_entity_delete(none).error().code == errc::not_found);
}

TEST_CASE("orchestration: a completion's tags replace the instance's, but dtsd's own (a scheduled run's) stay") {
  harness h;
  auto r = h.request("tick-20261201T210000Z");
  r.tags = {{"dtsd.schedule", "tick"}, {"dtsd.slot", "2026-12-01T21:00:00Z"}, {"team", "a"}};
  h.start(r);
  auto item = h.dispatch_now();
  actions::complete_orchestration done;
  done.status = runtime_status::completed;
  done.tags = {{"team", "b"}, {"result", "ok"}};
  h.complete(item, {{1, done}});
  CHECK(h.instance->record.status == runtime_status::completed);
  CHECK(h.instance->record.tags == tag_map{{"dtsd.schedule", "tick"}, {"dtsd.slot", "2026-12-01T21:00:00Z"},
                                           {"result", "ok"}, {"team", "b"}});
}
