// The service's compositions against real partition engines (engine_node.hpp):
// query pages merged across partitions, purges of one, many and by filter with
// their recursion, terminations of many, restarts, signals; and the decisions
// behind them (query_merge, judge_entity) on their own.

#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "service/query_merge.hpp"
#include "service/service.hpp"
#include "engine_node.hpp"

using namespace dtsd;
using service_test::engine_node;

namespace {

/// A service over an engine_node of `partitions`, and a way to call it and run
/// the node until the answer is there.
struct fixture {
  explicit fixture(std::uint32_t partitions = 4) {
    auto made = std::make_unique<engine_node>(partitions);
    node = made.get();
    service = std::make_unique<service::task_service>(std::move(made), service::service_options{}, clock);
  }

  template <class T>
  expected<T> call(std::function<void(service::callback<T>)> start) {
    std::optional<expected<T>> answer;
    start([&](expected<T> result) {
      REQUIRE_FALSE(answer.has_value());  // Exactly once.
      answer.emplace(std::move(result));
    });
    node->run();
    REQUIRE(answer.has_value());
    return std::move(*answer);
  }

  void start(const std::string& id, const std::string& name) {
    core::start_request request;
    request.instance_id = id;
    request.name = name;
    REQUIRE(call<service::started>([&](auto done) { service->start("default", request, done); }));
    node->advance(1000);  // Distinct creation times.
  }

  core::runtime_status status(const std::string& id) {
    auto found = call<std::optional<service::instance_view>>([&](auto done) { service->get("default", id, false, done); });
    REQUIRE(found);
    REQUIRE(found->has_value());
    return (*found)->record.status;
  }

  bool exists(const std::string& id) {
    auto found = call<std::optional<service::instance_view>>([&](auto done) { service->get("default", id, false, done); });
    REQUIRE(found);
    return found->has_value();
  }

  std::vector<std::string> all_ids(std::size_t page_size, std::size_t scan_budget) {
    std::vector<std::string> ids;
    core::instance_query query;
    query.page_size = page_size;
    query.scan_count_max = scan_budget;
    for (int pages = 0; pages < 1000; ++pages) {
      auto page = call<core::query_page>([&](auto done) { service->query("default", query, done); });
      REQUIRE(page);
      for (const auto& r : page->instances) ids.push_back(r.instance_id);
      if (page->continuation_token.empty()) return ids;
      query.continuation_token = page->continuation_token;
    }
    FAIL("the query never ended");
    return ids;
  }

  service::manual_clock clock;
  engine_node* node = nullptr;
  std::unique_ptr<service::task_service> service;
};

core::instance_record record(std::string id, std::int64_t created) {
  core::instance_record r;
  r.instance_id = std::move(id);
  r.created_at_ns = created;
  return r;
}

}  // namespace

TEST_CASE("query_merge: pages of partitions merge in (created, id) order, never past a partition's horizon") {
  service::query_merge merge(3);
  // Partition A looked only up to (20, a2) and has more; B is done.
  merge.add({{record("a1", 10), record("a2", 20)}, service::token_at(20, "a2")});
  merge.add({{record("b1", 15), record("b2", 25), record("b3", 30)}, ""});
  auto page = merge.finish();
  REQUIRE(page);
  std::vector<std::string> ids;
  for (const auto& r : page->instances) ids.push_back(r.instance_id);
  // b2 and b3 lie past A's horizon: A may have rows before them, so they wait.
  CHECK(ids == std::vector<std::string>{"a1", "b1", "a2"});
  CHECK(page->continuation_token == "20.a2");

  service::query_merge full(2);
  full.add({{record("x", 1), record("y", 2)}, ""});
  full.add({{record("z", 3)}, ""});
  auto cut = full.finish();
  REQUIRE(cut);
  CHECK(cut->instances.size() == 2);
  CHECK(cut->continuation_token == "2.y");  // More than a page: the token is its last item.

  service::query_merge empty(5);
  empty.add({{}, service::token_at(40, "q")});  // Scan budget spent before any match.
  empty.add({{}, ""});
  auto none = empty.finish();
  REQUIRE(none);
  CHECK(none->instances.empty());
  CHECK(none->continuation_token == "40.q");

  service::query_merge failed(5);
  failed.add({{record("x", 1)}, ""});
  failed.fail({errc::io, "disk"});
  CHECK(failed.finish().error().code == errc::io);
  CHECK_FALSE(service::token_position("garbage"));
  CHECK(service::token_position("12.a.b") == std::make_pair(std::int64_t{12}, std::string("a.b")));
}

TEST_CASE("judge_entity: empty entities go, locks of ended or missing orchestrations are released") {
  core::instance_record empty;
  empty.instance_id = "@counter@a";
  CHECK(service::judge_entity(empty, true, true).remove);
  CHECK_FALSE(service::judge_entity(empty, false, true).remove);
  auto with_state = empty;
  with_state.entity_state = "1";
  CHECK_FALSE(service::judge_entity(with_state, true, true).remove);
  auto locked = empty;
  locked.entity_locked_by = "orch-1";
  CHECK_FALSE(service::judge_entity(locked, true, true).remove);
  CHECK(service::judge_entity(locked, true, true).check_lock);
  CHECK_FALSE(service::judge_entity(locked, true, false).check_lock);
  core::instance_record holder;
  holder.status = core::runtime_status::running;
  CHECK_FALSE(service::lock_orphaned(holder));
  holder.status = core::runtime_status::completed;
  CHECK(service::lock_orphaned(holder));
  CHECK(service::lock_orphaned(std::nullopt));
}

TEST_CASE("service: a query pages through every partition in order, whatever the page size and scan budget") {
  fixture f(4);
  std::vector<std::string> started;
  for (int i = 0; i < 40; ++i) {
    started.push_back(fmt::format("q-{:02}", i));
    f.start(started.back(), "HelloCities");
  }
  for (std::size_t page : {1u, 7u, 100u}) {
    for (std::size_t budget : {1u, 3u, 10000u}) {
      CAPTURE(page);
      CAPTURE(budget);
      CHECK(f.all_ids(page, budget) == started);  // Created in this order: no row skipped or repeated.
    }
  }
  auto unknown = f.call<core::query_page>([&](auto done) { f.service->query("nope", {}, done); });
  CHECK(unknown.error().code == errc::unknown_task_hub);
}

TEST_CASE("service: a recursive purge follows sub-orchestrations into other partitions") {
  fixture f(4);
  f.start("fan", "FanOut");
  f.start("fan2", "FanOut");
  f.node->work();
  REQUIRE(f.status("fan") == core::runtime_status::completed);
  std::set<std::uint32_t> child_partitions;
  for (int k = 0; k < 3; ++k) {
    const auto child = fmt::format("fan:child-{}", k);
    REQUIRE(f.status(child) == core::runtime_status::completed);
    child_partitions.insert(core::partition_of(child, 4));
  }
  CHECK(child_partitions.size() > 1);  // The walk crosses partitions.

  auto purged = f.call<std::size_t>([&](auto done) { f.service->purge("default", "fan", true, done); });
  REQUIRE(purged);
  CHECK(*purged == 4);
  CHECK_FALSE(f.exists("fan"));
  for (int k = 0; k < 3; ++k) CHECK_FALSE(f.exists(fmt::format("fan:child-{}", k)));

  // Without recursion only the parent goes.
  auto alone = f.call<std::size_t>([&](auto done) { f.service->purge("default", "fan2", false, done); });
  CHECK(*alone == 1);
  CHECK(f.exists("fan2:child-0"));

  auto missing = f.call<std::size_t>([&](auto done) { f.service->purge("default", "nobody", false, done); });
  CHECK(missing.error().code == errc::not_found);
  auto unknown = f.call<std::size_t>([&](auto done) { f.service->purge("nope", "fan2:child-0", false, done); });
  CHECK(unknown.error().code == errc::unknown_task_hub);
}

TEST_CASE("service: purge-where takes every terminal match of every partition and leaves the rest") {
  fixture f(3);
  for (int i = 0; i < 25; ++i) f.start(fmt::format("done-{}", i), "HelloCities");
  f.node->work();
  for (int i = 0; i < 5; ++i) f.start(fmt::format("waiting-{}", i), "Sleepy");  // Timers not due: still running.
  f.node->work();
  CHECK(f.status("waiting-0") == core::runtime_status::running);

  core::instance_query running;
  running.statuses = {core::runtime_status::running};
  auto refused = f.call<service::purge_result>(
      [&](auto done) { f.service->purge_where("default", running, false, std::nullopt, done); });
  CHECK(refused.error().code == errc::invalid_argument);

  auto purged = f.call<service::purge_result>(
      [&](auto done) { f.service->purge_where("default", {}, false, std::nullopt, done); });
  REQUIRE(purged);
  CHECK(purged->purged == 25);
  CHECK(purged->complete);
  CHECK(f.all_ids(100, 10000).size() == 5);

  auto unknown = f.call<service::purge_result>(
      [&](auto done) { f.service->purge_where("nope", {}, false, std::nullopt, done); });
  CHECK(unknown.error().code == errc::unknown_task_hub);
}

TEST_CASE("service: purge and terminate of many, one answer each") {
  fixture f(4);
  for (int i = 0; i < 4; ++i) f.start(fmt::format("hello-{}", i), "HelloCities");
  f.node->work();
  f.start("sleepy", "Sleepy");
  f.node->work();

  auto purged = f.call<std::size_t>([&](auto done) {
    f.service->purge_many("default", {"hello-0", "missing", "hello-1", "sleepy"}, false, done);
  });
  // A missing instance purges nothing; a running one is refused, which stops the batch.
  REQUIRE_FALSE(purged);
  CHECK(purged.error().code == errc::failed_precondition);
  CHECK_FALSE(f.exists("hello-0"));
  CHECK_FALSE(f.exists("hello-1"));
  auto rest = f.call<std::size_t>([&](auto done) { f.service->purge_many("default", {"hello-2", "x", "hello-3"}, false, done); });
  CHECK(*rest == 2);

  auto unterminated = f.call<std::vector<std::string>>([&](auto done) {
    f.service->terminate_many("default", {"sleepy", "missing"}, core::payload("\"bye\""), done);
  });
  REQUIRE(unterminated);
  CHECK(*unterminated == std::vector<std::string>{"missing"});
  CHECK(f.status("sleepy") == core::runtime_status::terminated);
  auto too_many = f.call<std::vector<std::string>>([&](auto done) {
    f.service->terminate_many("default", std::vector<std::string>(501, "x"), std::nullopt, done);
  });
  CHECK(too_many.error().code == errc::invalid_argument);
}

TEST_CASE("service: restart under the same id only once ended, under a new id at any time") {
  fixture f(2);
  f.start("sleepy", "Sleepy");
  f.node->work();
  auto running = f.call<std::string>([&](auto done) { f.service->restart("default", "sleepy", false, done); });
  CHECK(running.error().code == errc::failed_precondition);
  auto fresh = f.call<std::string>([&](auto done) { f.service->restart("default", "sleepy", true, done); });
  REQUIRE(fresh);
  CHECK(*fresh != "sleepy");
  CHECK(fresh->size() == 32);
  CHECK(f.status(*fresh) == core::runtime_status::pending);

  f.start("hello", "HelloCities");
  f.node->work();
  REQUIRE(f.status("hello") == core::runtime_status::completed);
  auto again = f.call<std::string>([&](auto done) { f.service->restart("default", "hello", false, done); });
  REQUIRE(again);
  CHECK(*again == "hello");
  f.node->work();
  CHECK(f.status("hello") == core::runtime_status::completed);

  auto missing = f.call<std::string>([&](auto done) { f.service->restart("default", "nobody", false, done); });
  CHECK(missing.error().code == errc::not_found);
}

TEST_CASE("service: a signal names an entity and an operation, or nothing is sent") {
  fixture f(2);
  const auto before = f.node->requests_served();
  auto not_entity = f.call<void>(
      [&](auto done) { f.service->signal_entity("default", {"plain-id", "add", std::nullopt, 0, {}}, done); });
  CHECK(not_entity.error().code == errc::invalid_argument);
  auto no_operation = f.call<void>(
      [&](auto done) { f.service->signal_entity("default", {"@counter@a", "", std::nullopt, 0, {}}, done); });
  CHECK(no_operation.error().code == errc::invalid_argument);
  CHECK(f.node->requests_served() == before);
  auto sent = f.call<void>(
      [&](auto done) { f.service->signal_entity("default", {"@counter@a", "add", core::payload("1"), 0, {}}, done); });
  CHECK(sent);
  CHECK(f.exists("@counter@a"));
}
