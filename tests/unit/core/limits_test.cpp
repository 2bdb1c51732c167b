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
