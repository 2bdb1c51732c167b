// Every orchestration feature through the C++ SDK, against a real dtsd process and
// a real worker process (tests/integration/feature_worker.cpp).

#include <doctest/doctest.h>

#include <set>

#include "processes.hpp"
#include "sdk/worker.hpp"

using namespace dtsd;
using namespace integration;
using sdk::json;

namespace {

constexpr auto wait_limit = std::chrono::seconds(60);

/// One dtsd and one feature worker for all cases of this file.
struct environment {
  server_setup setup = fresh_server("features");
  process dtsd{binary("DTSD_BIN"), setup.args(), true};
  process worker{binary("FEATURE_WORKER_BIN"), {setup.address()}};
  std::unique_ptr<sdk::client> client = connect(setup.address());
  ~environment() { std::filesystem::remove_all(setup.data_dir); }
};

environment& env() {
  static environment shared;
  return shared;
}

std::string start(const std::string& name, const json& input = json(), sdk::start_options options = {}) {
  auto id = env().client->start(name, input, options);
  REQUIRE_MESSAGE(id, (id ? "" : id.error().message));
  return *id;
}

core::instance_record finish(const std::string& id) {
  auto done = env().client->wait_for_completion(id, wait_limit);
  REQUIRE_MESSAGE(done, (done ? "" : done.error().message));
  return *done;
}

core::instance_record wait_status(const std::string& id, core::runtime_status status) {
  for (int i = 0; i < 500; ++i) {
    auto record = env().client->get(id);
    REQUIRE(record);
    if (*record && (*record)->status == status) return **record;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("instance " << id << " never became " << core::to_string(status));
  return {};
}

}  // namespace

TEST_CASE("features: a durable timer delays the orchestration") {
  auto done = finish(start("Timer"));
  CHECK(sdk::output_of(done) == "woke");
  CHECK(done.completed_at_ns - done.created_at_ns >= 300'000'000);
}

TEST_CASE("features: an external event carries its data into the orchestration") {
  auto id = start("WaitEvent");
  wait_status(id, core::runtime_status::running);
  REQUIRE(env().client->raise_event(id, "Approval", json{{"approved", true}}));
  CHECK(sdk::output_of(finish(id)) == json{{"approved", true}});
}

TEST_CASE("features: sub-orchestrations fan out and fan in, with the parent recorded on each child") {
  auto id = start("Parent");
  auto done = finish(id);
  CHECK(sdk::output_of(done) == 12);  // 2 + 4 + 6
  auto child = env().client->get(id + ":0");
  REQUIRE(child);
  REQUIRE(child->has_value());
  REQUIRE((*child)->parent);
  CHECK((*child)->parent->instance.instance_id == id);
}

TEST_CASE("features: continue-as-new restarts the orchestration with fresh history") {
  auto id = start("Counter", 0);
  auto done = finish(id);
  CHECK(sdk::output_of(done) == 5);
  auto history = env().client->history(id);
  REQUIRE(history);
  auto starts = std::count_if(history->begin(), history->end(), [](const core::history_event& e) {
    return std::holds_alternative<core::events::execution_started>(e.body);
  });
  CHECK(starts == 1);  // Only the last execution's history is kept.
}

TEST_CASE("features: custom status is visible while the orchestration runs") {
  auto id = start("Status");
  for (int i = 0; i < 500; ++i) {
    auto record = env().client->get(id);
    REQUIRE(record);
    if (*record && (*record)->custom_status == core::payload("\"halfway\"")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto running = env().client->get(id);
  REQUIRE(running);
  CHECK((**running).custom_status == core::payload("\"halfway\""));
  REQUIRE(env().client->raise_event(id, "Go", json()));
  auto done = finish(id);
  CHECK(done.custom_status == core::payload("\"done\""));
}

TEST_CASE("features: an activity failure fails the orchestration with its details") {
  auto done = finish(start("Failing"));
  CHECK(done.status == core::runtime_status::failed);
  REQUIRE(done.failure);
  CHECK(done.failure->error_message.find("activity failed with boom") != std::string::npos);
}

TEST_CASE("features: a retry policy retries a failing activity on durable timers") {
  auto done = finish(start("Retrying"));
  CHECK(done.status == core::runtime_status::completed);
  CHECK(sdk::output_of(done) == "third time lucky");
}

TEST_CASE("features: terminate ends a waiting orchestration with the reason as output") {
  auto id = start("LongWait");
  wait_status(id, core::runtime_status::running);
  REQUIRE(env().client->terminate(id, "enough"));
  auto done = finish(id);
  CHECK(done.status == core::runtime_status::terminated);
  CHECK(sdk::output_of(done) == "enough");
}

TEST_CASE("features: a suspended orchestration holds its events until resumed") {
  auto id = start("WaitEvent");
  wait_status(id, core::runtime_status::running);
  REQUIRE(env().client->suspend(id, "maintenance"));
  CHECK(wait_status(id, core::runtime_status::suspended).status == core::runtime_status::suspended);
  REQUIRE(env().client->raise_event(id, "Approval", "while suspended"));
  // A positive signal first: the same event raised to a running twin is processed
  // to the end; the suspended one, raised to before it, still has not seen its own.
  auto twin = start("WaitEvent");
  wait_status(twin, core::runtime_status::running);
  REQUIRE(env().client->raise_event(twin, "Approval", "twin"));
  CHECK(sdk::output_of(finish(twin)) == "twin");
  auto still = env().client->get(id);
  REQUIRE(still);
  CHECK((**still).status == core::runtime_status::suspended);
  auto history = env().client->history(id);
  REQUIRE(history);
  for (const auto& event : *history) CHECK_FALSE(std::holds_alternative<core::events::event_raised>(event.body));
  REQUIRE(env().client->resume(id));
  CHECK(sdk::output_of(finish(id)) == "while suspended");
}

TEST_CASE("features: purge removes a finished instance and its history") {
  auto id = start("Echo", "x");
  finish(id);
  auto purged = env().client->purge(id);
  REQUIRE(purged);
  CHECK(*purged == 1);
  auto gone = env().client->get(id);
  REQUIRE(gone);
  CHECK_FALSE(gone->has_value());
  CHECK(env().client->history(id).error().code == errc::not_found);
}

TEST_CASE("features: query pages through every instance once") {
  std::set<std::string> started;
  for (int i = 0; i < 25; ++i) {
    sdk::start_options options;
    options.instance_id = "paged-" + std::to_string(i);
    started.insert(start("Echo", i, options));
  }
  for (const auto& id : started) finish(id);
  sdk::query_options query;
  query.instance_id_prefix = "paged-";
  query.page_size = 10;
  std::set<std::string> seen;
  int pages = 0;
  for (;; ++pages) {
    REQUIRE(pages < 20);
    auto page = env().client->query(query);
    REQUIRE(page);
    for (const auto& record : page->instances) CHECK(seen.insert(record.instance_id).second);
    if (page->continuation_token.empty()) break;
    query.continuation_token = page->continuation_token;
  }
  CHECK(seen == started);
  CHECK(pages >= 2);
}

TEST_CASE("features: tags round-trip and a finished id can be started again") {
  sdk::start_options options;
  options.instance_id = "tagged";
  options.tags = {{"team", "payments"}};
  auto first = finish(start("Echo", 1, options));
  CHECK(first.tags == core::tag_map{{"team", "payments"}});
  auto second = finish(start("Echo", 2, options));  // Default policy: a terminal instance is replaced.
  CHECK(second.execution_id != first.execution_id);
  CHECK(sdk::output_of(second) == 2);
}

TEST_CASE("features: a scheduled start waits for its time") {
  sdk::start_options options;
  options.start_at = std::chrono::system_clock::now() + std::chrono::milliseconds(600);
  auto id = start("Echo", "later", options);
  auto pending = env().client->get(id);
  REQUIRE(pending);
  CHECK((**pending).status == core::runtime_status::pending);
  auto done = finish(id);
  CHECK(done.completed_at_ns >= done.scheduled_start_ns);
  CHECK(sdk::output_of(done) == "later");
}

TEST_CASE("features: when_any answers with the first to finish, a timer beating a slow activity") {
  CHECK(sdk::output_of(finish(start("Race"))) == 1);
}

TEST_CASE("features: waiting for an event times out on a durable timer, or gets the event in time") {
  CHECK(sdk::output_of(finish(start("EventWithTimeout", 200))) == "TimeoutError");
  auto id = start("EventWithTimeout", 30000);
  wait_status(id, core::runtime_status::running);
  REQUIRE(env().client->raise_event(id, "Hello", "in time"));
  CHECK(sdk::output_of(finish(id)) == "in time");
}

TEST_CASE("features: when_all gathers every result in order") {
  CHECK(sdk::output_of(finish(start("FanAll"))) == json{2, 4, 6, 8, 10});
}

TEST_CASE("features: a recursive purge removes the sub-orchestrations in their partitions too") {
  auto id = start("Parent");
  finish(id);
  auto purged = env().client->purge(id, true);
  REQUIRE_MESSAGE(purged, (purged ? "" : purged.error().message));
  CHECK(*purged == 4);
  for (const auto& gone : {id, id + ":0", id + ":1", id + ":2"}) {
    auto record = env().client->get(gone);
    REQUIRE(record);
    CHECK_MESSAGE(!record->has_value(), gone);
  }
}

TEST_CASE("features: purge by filter removes only the finished instances that match") {
  for (int i = 0; i < 12; ++i) {
    sdk::start_options options;
    options.instance_id = "sweep-" + std::to_string(i);
    finish(start("Echo", i, options));
  }
  sdk::start_options waiting;
  waiting.instance_id = "sweep-running";
  auto running = start("LongWait", json(), waiting);
  wait_status(running, core::runtime_status::running);
  sdk::query_options filter;
  filter.instance_id_prefix = "sweep-";
  auto purged = env().client->purge_where(filter);
  REQUIRE(purged);
  CHECK(*purged == 12);
  auto left = env().client->query(filter);
  REQUIRE(left);
  REQUIRE(left->instances.size() == 1);
  CHECK(left->instances[0].instance_id == "sweep-running");
  filter.statuses = {core::runtime_status::running};
  auto refused = env().client->purge_where(filter);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::invalid_argument);
}

TEST_CASE("features: rewind resumes a failed orchestration from its last good point") {
  auto id = start("Rewindable");
  CHECK(finish(id).status == core::runtime_status::failed);
  auto echo = start("Echo", 1);
  finish(echo);
  auto not_failed = env().client->rewind(echo);
  REQUIRE_FALSE(not_failed);
  CHECK(not_failed.error().code == errc::failed_precondition);
  REQUIRE(env().client->rewind(id, "the activity is fixed"));
  auto done = finish(id);
  REQUIRE(done.status == core::runtime_status::completed);
  CHECK(sdk::output_of(done) == json::array({42, "second call works"}));
  auto history = env().client->history(id);
  REQUIRE(history);
  int scheduled = 0;
  for (const auto& event : *history) {
    CHECK_FALSE(std::holds_alternative<core::events::task_failed>(event.body));
    if (std::holds_alternative<core::events::task_scheduled>(event.body)) ++scheduled;
  }
  CHECK(scheduled == 2);  // Double kept, FailsOnce scheduled again.
  auto missing = env().client->rewind("no-such-instance");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == errc::not_found);
}

namespace {
std::optional<json> entity_state(const std::string& id) {
  auto entity = env().client->get_entity(id);
  REQUIRE_MESSAGE(entity, (entity ? "" : entity.error().message));
  if (!*entity) return std::nullopt;
  return json::parse(*(*entity)->entity_state);
}

json wait_entity_state(const std::string& id, const json& wanted) {
  for (int i = 0; i < 1000; ++i) {
    auto state = entity_state(id);
    if (state && *state == wanted) return *state;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("entity " << id << " never reached " << wanted.dump());
  return {};
}
}  // namespace

TEST_CASE("features: entities through the C++ SDK: signals, calls from an orchestration, failures, query, clean") {
  REQUIRE(env().client->signal_entity("@counter@f1", "add", 5));
  REQUIRE(env().client->signal_entity("@counter@f1", "add", 6));
  wait_entity_state("@counter@f1", 11);
  CHECK_FALSE(entity_state("@counter@never"));
  auto bad = env().client->signal_entity("not-an-entity", "add", 1);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == errc::invalid_argument);

  auto id = start("EntityCaller", "f2");
  auto done = finish(id);
  REQUIRE(done.status == core::runtime_status::completed);
  auto out = sdk::output_of(done);
  CHECK(out["after"] == 7);
  CHECK(out["failure"].get<std::string>().find("refuses") != std::string::npos);
  CHECK(out["final"] == 7);  // The failed operation changed nothing.
  wait_entity_state("@counter@f2-side", 7);

  // A signal scheduled for later waits for its time.
  const auto later = std::chrono::system_clock::now() + std::chrono::milliseconds(800);
  REQUIRE(env().client->signal_entity("@counter@f1", "add", 100, later));
  CHECK(entity_state("@counter@f1") == json(11));
  wait_entity_state("@counter@f1", 111);
  CHECK(std::chrono::system_clock::now() >= later);

  sdk::query_options query;
  query.entities = true;
  query.instance_id_prefix = "@counter@f";
  auto page = env().client->query(query);
  REQUIRE(page);
  std::set<std::string> ids;
  for (const auto& record : page->instances) ids.insert(record.instance_id);
  CHECK(ids == std::set<std::string>{"@counter@f1", "@counter@f2", "@counter@f2-side"});
  sdk::query_options orchestrations;
  orchestrations.instance_id_prefix = "@";
  CHECK(env().client->query(orchestrations)->instances.empty());  // Entities are not orchestrations.

  REQUIRE(env().client->signal_entity("@counter@f2-side", "delete"));
  for (int i = 0; i < 1000 && entity_state("@counter@f2-side"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto cleaned = env().client->clean_entity_storage(true, true);
  REQUIRE(cleaned);
  CHECK(cleaned->removed == 1);
  CHECK(env().client->query(query)->instances.size() == 2);
}

TEST_CASE("features: critical sections over entities keep concurrent read-modify-write transfers exact") {
  REQUIRE(env().client->signal_entity("@counter@acct-a", "add", 1000));
  wait_entity_state("@counter@acct-a", 1000);
  std::vector<std::string> ids;
  int moved = 0;
  for (int i = 0; i < 8; ++i) {
    const bool forward = i % 2 == 0;
    json input = {{"from", forward ? "acct-a" : "acct-b"}, {"to", forward ? "acct-b" : "acct-a"}, {"amount", 10 + i}};
    moved += forward ? -(10 + i) : 10 + i;
    ids.push_back(start("LockedTransfer", input));
  }
  for (const auto& id : ids) CHECK(finish(id).status == core::runtime_status::completed);
  const auto a = entity_state("@counter@acct-a");
  const auto b = entity_state("@counter@acct-b");
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->get<int>() + b->get<int>() == 1000);
  CHECK(a->get<int>() == 1000 + moved);
  // The holder's release is a message to the entity, sent with its last step: it
  // arrives shortly after the orchestration completes (as in DTS).
  auto locked_by = [] {
    auto record = env().client->get_entity("@counter@acct-a");
    REQUIRE(record);
    REQUIRE(*record);
    return (*record)->entity_locked_by;
  };
  for (int i = 0; i < 500 && !locked_by().empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(locked_by().empty());
}

namespace {

/// A C++ worker in this process, on its own thread, for one hub.
struct in_process_worker {
  sdk::worker worker;
  std::thread thread;
  explicit in_process_worker(sdk::worker_options options, const std::function<void(sdk::worker&)>& register_all)
      : worker(std::move(options)) {
    register_all(worker);
    thread = std::thread([this] { worker.run(); });
  }
  ~in_process_worker() {
    worker.stop();
    thread.join();
  }
};

sdk::task<json> versioned(sdk::orchestration_context& ctx, json) {
  co_return json(ctx.instance_id() + " ran at " + ctx.version());
}

/// Its child runs at the parent's version unless told otherwise.
sdk::task<json> versioned_parent(sdk::orchestration_context& ctx, json) {
  co_return co_await ctx.call_sub_orchestrator("Versioned", json(), ctx.instance_id() + "-child");
}

}  // namespace

TEST_CASE("features: versions are stored and filterable; strict workers with filters get only their version") {
  REQUIRE(env().client->create_task_hub("versions"));
  auto connected = sdk::client::connect(env().setup.address(), "versions");
  REQUIRE(connected);
  auto& client = **connected;
  auto start_versioned = [&](const std::string& id, const std::string& version) {
    sdk::start_options options;
    options.instance_id = id;
    options.version = version;
    auto started = client.start("Versioned", json(), options);
    REQUIRE_MESSAGE(started, (started ? "" : started.error().message));
  };

  sdk::worker_options v2{env().setup.address(), "versions"};
  v2.versioning = {"2.0", sdk::version_match::strict, sdk::version_failure::reject};
  v2.filter_work_items = true;
  v2.name = "app-v2";
  in_process_worker worker_v2(v2, [](sdk::worker& w) {
    w.add_orchestrator("Versioned", versioned).add_orchestrator("VersionedParent", versioned_parent);
  });

  start_versioned("old", "1.0");
  start_versioned("new", "2.0");
  auto done = client.wait_for_completion("new", wait_limit);
  REQUIRE(done);
  CHECK(done->version == core::payload("2.0"));
  CHECK(sdk::output_of(*done) == "new ran at 2.0");
  sdk::start_options parent_options;
  parent_options.instance_id = "parent";
  parent_options.version = "2.0";
  REQUIRE(client.start("VersionedParent", json(), parent_options));
  auto parent = client.wait_for_completion("parent", wait_limit);
  REQUIRE(parent);
  CHECK(sdk::output_of(*parent) == "parent-child ran at 2.0");
  auto child = client.get("parent-child");
  REQUIRE(child);
  REQUIRE(*child);
  CHECK((*child)->version == core::payload("2.0"));
  // "old" was started first and no worker takes 1.0: it waits, untouched.
  auto old = client.get("old");
  REQUIRE(old);
  REQUIRE(*old);
  CHECK((*old)->status == core::runtime_status::pending);

  // The session shows what it takes.
  auto workers = client.workers();
  REQUIRE(workers);
  REQUIRE(workers->size() == 1);
  CHECK(workers->front().worker == "app-v2");
  REQUIRE(workers->front().filters.orchestrations);
  CHECK(*workers->front().filters.orchestrations ==
        std::vector<core::name_filter>{{"Versioned", {"2.0"}}, {"VersionedParent", {"2.0"}}});

  // Queries filter by version.
  sdk::query_options by_version;
  by_version.version = "1.0";
  auto found = client.query(by_version);
  REQUIRE(found);
  REQUIRE(found->instances.size() == 1);  // Not "new", "parent" or its child.
  CHECK(found->instances[0].instance_id == "old");

  // A worker without filters that fails mismatches: 1.0 is newer than nothing it
  // runs (current-or-older 0.9), so the orchestration fails with VersionMismatch.
  sdk::worker_options v09{env().setup.address(), "versions"};
  v09.versioning = {"0.9", sdk::version_match::current_or_older, sdk::version_failure::fail};
  in_process_worker worker_v09(v09, [](sdk::worker& w) { w.add_orchestrator("Versioned", versioned); });
  auto failed = client.wait_for_completion("old", wait_limit);
  REQUIRE(failed);
  CHECK(failed->status == core::runtime_status::failed);
  REQUIRE(failed->failure);
  CHECK(failed->failure->error_type == "VersionMismatch");
}

TEST_CASE("features: versions compare by their dotted numbers") {
  CHECK(sdk::compare_versions("1.0", "1.0") == 0);
  CHECK(sdk::compare_versions("1.2", "1.10") < 0);
  CHECK(sdk::compare_versions("2", "1.9.9") > 0);
  CHECK(sdk::compare_versions("1.0.0", "1") == 0);
  CHECK(sdk::compare_versions("", "0.1") < 0);
  CHECK(sdk::compare_versions("beta", "alpha") > 0);
}
