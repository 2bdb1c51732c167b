// engine::perform: what one operation does to one live instance, without a partition.
#include <doctest/doctest.h>

#include "core/limits.hpp"
#include "engine/instance.hpp"

using namespace dtsd;

namespace {

constexpr std::int64_t now = 1'700'000'000'000'000'000;

/// A live instance with nothing in the store (or a store that cannot be read).
engine::live_instance fresh(const std::string& id, bool readable = true) {
  return engine::live_instance(id, [readable](const std::string&) -> expected<std::optional<core::orchestration_state>> {
    if (!readable) return error{errc::io, "disk on fire"};
    return std::optional<core::orchestration_state>{};
  });
}

engine::instance_outcome run(engine::live_instance& instance, engine::instance_op op) {
  return engine::perform(instance, op, core::payload_limits{});
}

core::start_request start_of(const std::string& id) {
  core::start_request r;
  r.instance_id = id;
  r.name = "Hello";
  r.execution_id = std::string(32, 'a');
  return r;
}

}  // namespace

TEST_CASE("instance: a start applies, is given back as logged, and writes the instance in its batch") {
  auto instance = fresh("one");
  auto out = run(instance, engine::instance_ops::apply{start_of("one"), 7, now});
  REQUIRE_FALSE(out.refused);
  REQUIRE(out.applied);
  CHECK(out.applied->has_state);
  CHECK(out.applied->write.row.record.instance_id == "one");
  REQUIRE(out.logged);
  CHECK(std::get<core::start_request>(*out.logged).name == "Hello");
  CHECK_FALSE(out.idle);  // Its ExecutionStarted waits for a worker.
  REQUIRE(instance.state);
  CHECK(instance.state->record.status == core::runtime_status::pending);
}

TEST_CASE("instance: an input for an instance that does not exist is refused and changes nothing") {
  auto instance = fresh("ghost");
  auto out = run(instance, engine::instance_ops::apply{store::logged::event_raised{"ghost", "go", std::nullopt}, 1, now});
  REQUIRE(out.refused);
  CHECK(out.refused->code == errc::not_found);
  CHECK_FALSE(out.applied);
  CHECK_FALSE(out.load_failed);
  REQUIRE(out.logged);  // Given back refused or not.
  CHECK_FALSE(instance.state);
}

TEST_CASE("instance: a store that cannot be read refuses every operation that needs the state") {
  auto instance = fresh("broken", false);
  auto applied = run(instance, engine::instance_ops::apply{start_of("broken"), 1, now});
  REQUIRE(applied.refused);
  CHECK(applied.load_failed);
  CHECK(applied.refused->code == errc::io);
  auto read = run(instance, engine::instance_ops::read{});
  CHECK(read.load_failed);
  CHECK_FALSE(read.record);
}

TEST_CASE("instance: the next work item holds only inbox rows the partition says are durable") {
  auto instance = fresh("two");
  REQUIRE(run(instance, engine::instance_ops::apply{start_of("two"), 1, now}).applied);
  // Nothing of the inbox is on disk yet: no item.
  auto none = run(instance, engine::instance_ops::next_work{0, 11, now});
  CHECK_FALSE(none.item);
  auto item = run(instance, engine::instance_ops::next_work{instance.state->inbox_first_sequence + 1, 12, now});
  REQUIRE(item.item);
  CHECK(item.item->completion_token == 12);
  CHECK_FALSE(item.idle);  // Out with a worker.
  // Given back under another token: refused; under its own: the instance is ready again.
  auto stale = run(instance, engine::instance_ops::give_back{99});
  REQUIRE(stale.refused);
  CHECK(stale.refused->code == errc::stale_token);
  CHECK_FALSE(run(instance, engine::instance_ops::give_back{12}).refused);
  CHECK_FALSE(instance.state->in_flight);
}

TEST_CASE("instance: a read gives the record as applied; an instance never started has none") {
  auto instance = fresh("three");
  CHECK_FALSE(run(instance, engine::instance_ops::read{}).record);
  REQUIRE(run(instance, engine::instance_ops::apply{start_of("three"), 1, now}).applied);
  auto read = run(instance, engine::instance_ops::read{});
  REQUIRE(read.record);
  CHECK(read.record->name == "Hello");
  CHECK(run(instance, engine::instance_ops::children{}).sub_orchestrations.empty());
}
