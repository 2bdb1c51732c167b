#include <doctest/doctest.h>

#include "core/limits.hpp"

using namespace dtsd;
using namespace dtsd::core;

TEST_CASE("limits: a payload at the limit passes and one byte more is rejected naming field, size and limit") {
  CHECK(check_payload("activity input", std::string(1024, 'x'), 1024));
  auto over = check_payload("activity input", std::string(1025, 'x'), 1024);
  REQUIRE_FALSE(over);
  CHECK(over.error().code == errc::invalid_argument);
  CHECK(over.error().message == "activity input is 1025 bytes, over the limit of 1024 bytes");
}

TEST_CASE("limits: a null payload always passes and the default limit is 1 MiB") {
  CHECK(check_payload("event data", std::nullopt, 0));
  payload_limits limits;
  CHECK(limits.orchestration_input_bytes_max == 1024 * 1024);
  CHECK(limits.entity_state_bytes_max == 1024 * 1024);
}

TEST_CASE("limits: names and tags are bounded, and the refusal names the field") {
  CHECK(check_name("activity name", std::string(name_length_max, 'a')));
  auto long_name = check_name("activity name", std::string(name_length_max + 1, 'a'));
  REQUIRE_FALSE(long_name);
  CHECK(long_name.error().code == errc::invalid_argument);
  CHECK(long_name.error().message.find("activity name is 257 characters long") != std::string::npos);
  tag_map tags;
  for (std::size_t i = 0; i < tag_count_max; ++i) tags["k" + std::to_string(i)] = "v";
  CHECK(check_tags("tags", tags));
  tags["one-more"] = "v";
  CHECK_FALSE(check_tags("tags", tags));
  CHECK_FALSE(check_tags("tags", {{"k", std::string(tag_value_length_max + 1, 'v')}}));
  CHECK_FALSE(check_tags("tags", {{std::string(tag_key_length_max + 1, 'k'), "v"}}));
  CHECK_FALSE(check_tags("tags", {{"", "v"}}));
}

TEST_CASE("limits: an oversize answer becomes a failure that names the field, size and limit") {
  payload_limits limits;
  limits.activity_output_bytes_max = 10;
  limits.custom_status_bytes_max = 10;
  activity_result result{"i", "e", 3, 1, payload(std::string(11, 'x'))};
  auto why = fail_oversize(result, limits);
  REQUIRE(why);
  CHECK(why->message == "activity output is 11 bytes, over the limit of 10 bytes");
  const auto& failure = std::get<failure_details>(result.outcome);
  CHECK(failure.error_type == payload_too_large_type);
  CHECK(failure.error_message == why->message);
  activity_result fine{"i", "e", 3, 1, payload(std::string(10, 'x'))};
  CHECK_FALSE(fail_oversize(fine, limits));

  orchestrator_completion completion{"i", 1, {{0, actions::schedule_task{"A", std::nullopt, payload("1"), {}}}},
                                     payload(std::string(11, 's'))};
  why = fail_oversize(completion, limits);
  REQUIRE(why);
  CHECK(why->message.find("custom status is 11 bytes") != std::string::npos);
  REQUIRE(completion.actions.size() == 1);
  const auto& done = std::get<actions::complete_orchestration>(completion.actions[0].body);
  CHECK(done.status == runtime_status::failed);
  CHECK(done.failure->error_type == payload_too_large_type);
  CHECK_FALSE(completion.custom_status);

  orchestrator_completion long_name{"i", 1, {{0, actions::schedule_task{std::string(300, 'n'), std::nullopt, {}, {}}}}, {}};
  why = fail_oversize(long_name, limits);
  REQUIRE(why);
  CHECK(why->message.find("activity name is 300 characters long") != std::string::npos);
}
