#include <doctest/doctest.h>

#include "codec/codec.hpp"

using namespace dtsd;
using namespace dtsd::core;
using namespace dtsd::store;

namespace {

failure_details nested_failure() {
  return {"OuterError", "outer", std::string("stack"),
          std::make_shared<failure_details>(failure_details{"InnerError", "inner", {}, {}, false}),
          true};
}

instance_record full_record() {
  instance_record r;
  r.instance_id = "order-1";
  r.execution_id = "0123456789abcdef0123456789abcdef";
  r.name = "HelloCities";
  r.version = "1.0";
  r.status = runtime_status::failed;
  r.input = "\"in\"";
  r.output = "";  // Empty, not null.
  r.custom_status = std::nullopt;
  r.created_at_ns = 1;
  r.last_updated_at_ns = 2;
  r.completed_at_ns = 3;
  r.scheduled_start_ns = 4;
  r.parent = parent_instance{7, "Parent", std::nullopt, {"p", "pe"}};
  r.tags = {{"team", "payments"}, {"env", "dev"}};
  r.failure = nested_failure();
  r.entity_state = "{\"count\":3}";
  r.entity_locked_by = "holder";
  r.entity_lock_id = "cs-1";
  r.entity_deferred = {history_event{-1, 5, events::entity_operation_signaled{"r1", "add", 9, "1", "@counter@a"}}};
  return r;
}

/// One history event of every kind the protocol has.
std::vector<history_event> every_event_kind() {
  namespace ev = events;
  std::vector<event_body> bodies = {
      ev::execution_started{"N", "v1", "\"i\"", {"id", "ex"}, parent_instance{1, "P", {}, {"p", "pe"}}, 5, {{"k", "v"}}},
      ev::execution_completed{runtime_status::failed, std::nullopt, nested_failure()},
      ev::execution_terminated{"\"why\"", true},
      ev::task_scheduled{"Act", std::nullopt, "1", {{"a", "b"}}},
      ev::task_completed{3, "\"r\""},
      ev::task_failed{3, nested_failure()},
      ev::sub_orchestration_created{"child", "Child", "2", std::nullopt},
      ev::sub_orchestration_completed{4, std::nullopt},
      ev::sub_orchestration_failed{4, nested_failure()},
      ev::timer_created{123456789},
      ev::timer_fired{123456789, 9},
      ev::orchestrator_started{},
      ev::orchestrator_completed{},
      ev::event_sent{"other", "Ping", "\"x\""},
      ev::event_raised{"Approval", ""},
      ev::generic_event{"data"},
      history_state{std::make_shared<instance_record>(full_record())},
      ev::continue_as_new{"\"again\""},
      ev::execution_suspended{"pause"},
      ev::execution_resumed{std::nullopt},
      ev::execution_rewound{"retry", "parent-ex"},
      ev::entity_operation_signaled{"req-1", "add", 77, "5", "@counter@a"},
      ev::entity_operation_called{"req-2", "get", 0, std::nullopt, "orch", "orch-ex", "@counter@a"},
      ev::entity_operation_completed{"req-2", "42"},
      ev::entity_operation_failed{"req-3", nested_failure()},
      ev::entity_lock_requested{"cs-1", {"@a@1", "@b@2"}, 1, "orch"},
      ev::entity_lock_granted{"cs-1"},
      ev::entity_unlock_sent{"cs-1", "orch", "@a@1"},
  };
  std::vector<history_event> events;
  std::int32_t id = 0;
  for (auto& body : bodies) events.push_back({id++, 1000 + id, std::move(body)});
  return events;
}

}  // namespace

TEST_CASE("codec: every history event kind round-trips exactly") {
  auto events = every_event_kind();
  CHECK(events.size() == std::variant_size_v<event_body>);
  for (const auto& event : events) {
    auto decoded = decode_history_event(encode(event));
    REQUIRE(decoded);
    CHECK_MESSAGE(*decoded == event, "event kind index " << event.body.index());
  }
}

TEST_CASE("codec: null and empty payloads stay different") {
  history_event null_input{-1, 0, events::event_raised{"e", std::nullopt}};
  history_event empty_input{-1, 0, events::event_raised{"e", std::string()}};
  auto a = decode_history_event(encode(null_input));
  auto b = decode_history_event(encode(empty_input));
  REQUIRE(a);
  REQUIRE(b);
  CHECK_FALSE(std::get<events::event_raised>(a->body).input.has_value());
  REQUIRE(std::get<events::event_raised>(b->body).input.has_value());
  CHECK(std::get<events::event_raised>(b->body).input->empty());
}

TEST_CASE("codec: stored instances, timers and activities round-trip") {
  stored_instance row{full_record(), 12, 40, 3, {5, 9, 12}};
  CHECK(*decode_stored_instance(encode(row)) == row);
  auto header = decode_stored_instance_header(encode(row));
  REQUIRE(header);
  CHECK(header->status == runtime_status::failed);
  CHECK(header->created_at_ns == 1);
  CHECK(header->inbox_first_sequence == 40);
  CHECK(header->history_segments == std::vector<std::uint64_t>{5, 9, 12});
  history_chunk chunk{7, every_event_kind()};
  CHECK(*decode_history_chunk(encode(chunk)) == chunk);
  timer_entry timer{"order-1", "ex", 4, -5};
  CHECK(*decode_timer_entry(encode(timer)) == timer);
  activity_request activity{"order-1", "ex", 2, "SayHello", "2", "\"Tokyo\"", {{"t", "1"}}};
  CHECK(*decode_activity_request(encode(activity)) == activity);
}

TEST_CASE("codec: a log record with every partition event kind and every action kind round-trips") {
  std::vector<orchestrator_action> actions = {
      {0, actions::schedule_task{"A", "1", "\"x\"", {{"k", "v"}}}},
      {1, actions::create_sub_orchestration{"child", "Child", std::nullopt, "1"}},
      {2, actions::create_timer{99}},
      {3, actions::send_event{{"other", "oe"}, "Ping", std::nullopt}},
      {4, actions::complete_orchestration{runtime_status::continued_as_new, "\"next\"", "details", "2.0",
                                          every_event_kind(), nested_failure()}},
      {5, actions::terminate_orchestration{"x", "\"r\"", true}},
      {6, actions::send_entity_message{events::entity_operation_signaled{"r", "add", 1, "1", "@c@k"}}},
      {7, actions::send_entity_message{events::entity_operation_called{"r", "get", 1, {}, "p", "pe", "@c@k"}}},
      {8, actions::send_entity_message{events::entity_lock_requested{"cs", {"@c@k"}, 0, "p"}}},
      {9, actions::send_entity_message{events::entity_unlock_sent{"cs", "p", "@c@k"}}},
  };
  start_request start{"child", "ex", "Child", "1", "\"in\"", {{"a", "b"}}, 10,
                      parent_instance{1, "P", "v", {"p", "pe"}}, terminal_statuses()};
  log_record record{42, 123, {}};
  record.events.push_back({1, start});
  record.events.push_back({2, logged::orchestrator_completed{{"order-1", 77, actions, "\"50%\""}, "new-ex", 3}});
  record.events.push_back({3, activity_result{"order-1", "ex", 3, 88, payload("\"ok\"")}});
  record.events.push_back({4, activity_result{"order-1", "ex", 4, 89, payload()}});
  record.events.push_back({5, activity_result{"order-1", "ex", 5, 90, nested_failure()}});
  record.events.push_back({6, timer_entry{"order-1", "ex", 2, 99}});
  record.events.push_back({7, outbox_entry{5, 1, 2, {"child", "", start}}});
  record.events.push_back(
      {8, outbox_entry{6, 1, 2, {"p", "pe", history_event{-1, 8, events::sub_orchestration_completed{1, "1"}}}}});
  record.events.push_back({9, outbox_entry{7, 1, 3, {"c", "", terminate_request{"\"stop\"", true}}}});
  record.events.push_back({10, logged::event_raised{"order-1", "Approval", "true"}});
  record.events.push_back({11, logged::terminated{"order-1", {std::nullopt, false}}});
  record.events.push_back({12, logged::suspended{"order-1", "pause"}});
  record.events.push_back({13, logged::resumed{"order-1", std::nullopt}});
  record.events.push_back({14, logged::purged{"order-1"}});
  record.events.push_back({14, logged::entity_deleted{"@counter@k1"}});
  record.events.push_back({15, logged::opaque{std::string("\0\1\2", 3)}});
  record.events.push_back({16, logged::rewound{"order-1", "\"fixed the bug\""}});
  record.events.push_back({17, logged::orchestrator_completed{{"order-1", 78, {}, std::nullopt}, "", 2, 12345}});
  record.events.push_back(
      {18, outbox_entry{8, 1, 4, {"child", "", history_event{-1, 18, events::execution_rewound{"why", "parent-ex"}}}}});
  entity_batch_result batch;
  batch.results = {payload("1"), payload(), nested_failure()};
  batch.actions = {entity_actions::signal{"@other@k", "add", "2", 77},
                   entity_actions::start_orchestration{"job-1", "Job", "v2", std::nullopt, 0}};
  batch.state = "5";
  orchestrator_completion entity_completion{"@counter@a", 79, {}, std::nullopt, batch};
  record.events.push_back({19, logged::orchestrator_completed{entity_completion, "", 3, 0}});
  entity_batch_result failed_batch;
  failed_batch.failure = nested_failure();
  record.events.push_back({20, logged::orchestrator_completed{{"@counter@b", 80, {}, std::nullopt, failed_batch}, "", 1, 0}});
  record.events.push_back(
      {21, logged::delivered{{"@counter@a", "", history_event{-1, 21, events::entity_unlock_sent{"cs", "p", "@counter@a"}}}}});
  auto decoded = decode_log_record(encode(record));
  REQUIRE(decoded);
  REQUIRE(decoded->events.size() == record.events.size());
  for (std::size_t i = 0; i < record.events.size(); ++i) {
    CHECK_MESSAGE(decoded->events[i] == record.events[i], "partition event " << i);
  }
  CHECK(*decoded == record);
}

TEST_CASE("codec: bytes at an unaligned address decode the same") {
  history_event event{3, 4, events::task_completed{1, "\"r\""}};
  auto bytes = encode(event);
  std::string shifted = "x" + bytes;
  auto decoded = decode_history_event(std::string_view(shifted).substr(1));
  REQUIRE(decoded);
  CHECK(*decoded == event);
}

TEST_CASE("codec: damaged bytes are reported as corrupt, never thrown") {
  CHECK(decode_history_event("").error().code == errc::corrupt);
  CHECK(decode_history_event("abc").error().code == errc::corrupt);
  std::string garbage(64, '\xff');
  auto decoded = decode_stored_instance(garbage);
  REQUIRE_FALSE(decoded);
  CHECK(decoded.error().code == errc::corrupt);
  auto truncated = encode(log_record{1, 2, {{1, logged::opaque{std::string(100, 'x')}}}});
  truncated.resize(truncated.size() - 16);
  CHECK(decode_log_record(truncated).error().code == errc::corrupt);
}

TEST_CASE("codec: merging history chunks copies every event in order; a gap is corrupt") {
  auto all = every_event_kind();
  history_chunk first{0, {all.begin(), all.begin() + 10}};
  history_chunk second{10, {all.begin() + 10, all.begin() + 20}};
  history_chunk appended{20, {all.begin() + 20, all.end()}};
  auto a = encode(first);
  auto b = encode(second);
  auto merged = merge_history_chunks({a, b}, appended);
  REQUIRE(merged);
  auto decoded = decode_history_chunk(*merged);
  REQUIRE(decoded);
  CHECK(decoded->first_index == 0);
  CHECK(decoded->events == all);
  auto gap = merge_history_chunks({a}, appended);
  REQUIRE_FALSE(gap);
  CHECK(gap.error().code == errc::corrupt);
}
