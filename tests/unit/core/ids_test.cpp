#include <doctest/doctest.h>

#include <string>

#include "core/ids.hpp"

using namespace dtsd;
using namespace dtsd::core;

TEST_CASE("ids: printable ids of 1..100 characters are valid orchestration ids") {
  CHECK(validate_orchestration_id("a"));
  CHECK(validate_orchestration_id("order-42:sub/3 with spaces~"));
  CHECK(validate_orchestration_id(std::string(100, 'x')));
}

TEST_CASE("ids: an empty, over-long or non-printable id is rejected with a clear error") {
  auto empty = validate_orchestration_id("");
  REQUIRE_FALSE(empty);
  CHECK(empty.error().code == errc::invalid_argument);
  CHECK(empty.error().message.find("empty") != std::string::npos);

  auto too_long = validate_orchestration_id(std::string(101, 'x'));
  REQUIRE_FALSE(too_long);
  CHECK(too_long.error().message.find("101") != std::string::npos);
  CHECK(too_long.error().message.find("100") != std::string::npos);

  auto control = validate_orchestration_id(std::string("ab\ncd"));
  REQUIRE_FALSE(control);
  CHECK(control.error().message.find("0x0a") != std::string::npos);
  CHECK(control.error().message.find("position 2") != std::string::npos);

  CHECK_FALSE(validate_orchestration_id(std::string("caf\xc3\xa9")));
  CHECK_FALSE(validate_orchestration_id(std::string("a\0b", 3)));
}

TEST_CASE("ids: a leading @ is reserved for entities") {
  auto reserved = validate_orchestration_id("@counter@k1");
  REQUIRE_FALSE(reserved);
  CHECK(reserved.error().message.find("reserved for entities") != std::string::npos);
  CHECK(validate_instance_id("@counter@k1"));
  CHECK(validate_instance_id("@counter@"));
  CHECK_FALSE(validate_instance_id("@counter"));
  CHECK_FALSE(validate_instance_id("@@key"));
  CHECK(is_entity_id("@a@b"));
  CHECK_FALSE(is_entity_id("a@b"));
}

TEST_CASE("ids: task hub names are safe directory names") {
  CHECK(validate_task_hub_name("default"));
  CHECK(validate_task_hub_name("prod-eu_2"));
  CHECK_FALSE(validate_task_hub_name(""));
  CHECK_FALSE(validate_task_hub_name("-lead"));
  CHECK_FALSE(validate_task_hub_name("../etc"));
  CHECK_FALSE(validate_task_hub_name("a/b"));
  CHECK_FALSE(validate_task_hub_name("has space"));
  CHECK_FALSE(validate_task_hub_name(std::string(65, 'a')));
  auto bad = validate_task_hub_name("a.b");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("'a.b'") != std::string::npos);
}

TEST_CASE("ids: partition_of is xxh64 with seed 0 modulo the count, fixed forever") {
  // Golden values: the first three are xxHash's published XXH64 test vectors. They
  // are part of the on-disk format; if this test fails, existing data is orphaned.
  CHECK(partition_of("", 1u << 31) == 0xef46db3751d8e999ull % (1u << 31));
  CHECK(partition_of("a", 1000) == 0xd24ec4f1a98c6e5bull % 1000);
  CHECK(partition_of("abc", 12) == 9);
  CHECK(partition_of("hello-cities-0", 12) == 6);
  CHECK(partition_of("hello-cities-0", 16) == 10);
  CHECK(partition_of("order-42", 16) == 14);
  CHECK(partition_of("@counter@k1", 12) == 0);
  CHECK(partition_of("anything", 1) == 0);
}

TEST_CASE("ids: partition_of spreads ids evenly over partitions") {
  constexpr std::uint32_t partitions = 12;
  constexpr int ids = 12000;
  int counts[partitions] = {};
  for (int i = 0; i < ids; ++i) ++counts[partition_of("instance-" + std::to_string(i), partitions)];
  for (auto count : counts) {
    CHECK(count > ids / partitions * 8 / 10);
    CHECK(count < ids / partitions * 12 / 10);
  }
}

TEST_CASE("ids: derived execution ids are 32 hex digits, stable, and differ by salt") {
  auto a = derive_execution_id("0123456789abcdef0123456789abcdef", "sub:3");
  CHECK(a.size() == 32);
  CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(a == derive_execution_id("0123456789abcdef0123456789abcdef", "sub:3"));
  CHECK(a != derive_execution_id("0123456789abcdef0123456789abcdef", "sub:4"));
  CHECK(a != derive_execution_id("0123456789abcdef0123456789abcdee", "sub:3"));
}
