#include <doctest/doctest.h>

#include "sdk/orchestration.hpp"

using namespace dtsd;
using sdk::json;

namespace {

sdk::task<json> two_steps(sdk::orchestration_context& ctx, json) {
  auto a = co_await ctx.call_activity("A", 1);
  auto b = co_await ctx.call_activity("B", a);
  co_return b;
}

sdk::task<json> changed_code(sdk::orchestration_context& ctx, json) {
  // Was call_activity("A"): now the first call is a timer.
  co_await ctx.create_timer(std::chrono::seconds(1));
  co_return nullptr;
}

core::history_event event(std::int32_t id, core::event_body body, std::int64_t time = 1000) {
  return {id, time, std::move(body)};
}

core::orchestrator_work_item item(std::vector<core::history_event> past, std::vector<core::history_event> fresh) {
  return {"order-1", "ex", std::move(past), std::move(fresh), 7};
}

core::history_event started() {
  return event(-1, core::events::execution_started{"TwoSteps", {}, "null", {"order-1", "ex"}, {}, 0, {}});
}

}  // namespace

TEST_CASE("sdk: a first run schedules the first activity and nothing else") {
  auto completion = sdk::run_orchestrator(two_steps, item({}, {started()}));
  CHECK(completion.completion_token == 7);
  REQUIRE(completion.actions.size() == 1);
  const auto& task = std::get<core::actions::schedule_task>(completion.actions[0].body);
  CHECK(task.name == "A");
  CHECK(task.input == core::payload("1"));
  CHECK(completion.actions[0].id == 0);
}

TEST_CASE("sdk: a replay answers from history and only new calls become actions") {
  std::vector<core::history_event> past = {event(-1, core::events::orchestrator_started{}), started(),
                                           event(0, core::events::task_scheduled{"A", {}, "1", {}})};
  auto completion = sdk::run_orchestrator(
      two_steps, item(past, {event(-1, core::events::task_completed{0, "41"})}));
  REQUIRE(completion.actions.size() == 1);
  const auto& task = std::get<core::actions::schedule_task>(completion.actions[0].body);
  CHECK(task.name == "B");
  CHECK(task.input == core::payload("41"));
  CHECK(completion.actions[0].id == 1);
}

TEST_CASE("sdk: the finished orchestration completes with its result") {
  std::vector<core::history_event> past = {
      event(-1, core::events::orchestrator_started{}), started(), event(0, core::events::task_scheduled{"A", {}, "1", {}}),
      event(-1, core::events::task_completed{0, "41"}), event(1, core::events::task_scheduled{"B", {}, "41", {}})};
  auto completion =
      sdk::run_orchestrator(two_steps, item(past, {event(-1, core::events::task_completed{1, "\"done\""})}));
  REQUIRE(completion.actions.size() == 1);
  const auto& done = std::get<core::actions::complete_orchestration>(completion.actions[0].body);
  CHECK(done.status == core::runtime_status::completed);
  CHECK(done.result == core::payload("\"done\""));
}

TEST_CASE("sdk: code that no longer matches its history fails with NonDeterminismError") {
  std::vector<core::history_event> past = {event(-1, core::events::orchestrator_started{}), started(),
                                           event(0, core::events::task_scheduled{"A", {}, "1", {}})};
  auto completion = sdk::run_orchestrator(changed_code, item(past, {event(-1, core::events::task_completed{0, "1"})}));
  REQUIRE(completion.actions.size() == 1);
  const auto& failed = std::get<core::actions::complete_orchestration>(completion.actions[0].body);
  CHECK(failed.status == core::runtime_status::failed);
  REQUIRE(failed.failure);
  CHECK(failed.failure->error_type == "NonDeterminismError");
  CHECK(failed.failure->error_message.find("call 0 is an activity in the history but a timer in the code") !=
        std::string::npos);
}

TEST_CASE("sdk: a failed activity fails the orchestration with the activity's details") {
  std::vector<core::history_event> past = {event(-1, core::events::orchestrator_started{}), started(),
                                           event(0, core::events::task_scheduled{"A", {}, "1", {}})};
  core::failure_details failure{"IOError", "disk full", std::nullopt, nullptr, false};
  auto completion = sdk::run_orchestrator(two_steps, item(past, {event(-1, core::events::task_failed{0, failure})}));
  const auto& failed = std::get<core::actions::complete_orchestration>(completion.actions.back().body);
  CHECK(failed.status == core::runtime_status::failed);
  REQUIRE(failed.failure);
  CHECK(*failed.failure == failure);
}
