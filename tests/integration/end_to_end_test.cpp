// dtsd, hello_cities workers and an SDK client as real processes on 127.0.0.1.

#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <random>

#include "processes.hpp"
#include "rpc.capnp.h"
#include "sdk/connection.hpp"
#include "sdk/errors.hpp"

using namespace dtsd;
using namespace integration;
using sdk::json;

namespace {

constexpr auto completion_wait = std::chrono::seconds(120);

/// Starts `ids` as HelloCities, retrying across server restarts: a start that finds
/// the instance there was acknowledged before its ack was lost.
void start_all(const std::string& address, const std::vector<std::string>& ids, std::size_t from,
               std::unique_ptr<sdk::client>& client) {
  for (std::size_t i = from; i < ids.size(); ++i) {
    for (int attempt = 0;; ++attempt) {
      REQUIRE(attempt < 400);
      sdk::start_options options;
      options.instance_id = ids[i];
      options.replaceable_statuses = {core::runtime_status::failed};  // Never replace a live one.
      auto started = client->start("HelloCities", json(), options);
      if (started || started.error().code == errc::already_exists) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
      client = connect(address);
    }
  }
}

void check_all_complete(const std::string& address, const std::vector<std::string>& ids) {
  auto client = connect(address);
  for (const auto& id : ids) {
    auto done = client->wait_for_completion(id, completion_wait);
    REQUIRE_MESSAGE(done, id << ": " << (done ? "" : done.error().message));
    CHECK_MESSAGE(done->status == core::runtime_status::completed, id);
    CHECK_MESSAGE(sdk::output_of(*done) == hello_output(), id << " output " << done->output.value_or("null"));
    auto history = client->history(id);
    REQUIRE(history);
    check_history(id, *history);
  }
}

}  // namespace

TEST_CASE("end to end: hello cities through dtsd, a worker and a client, and a clean SIGTERM") {
  auto setup = fresh_server("hello");
  auto dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args(), true);
  process worker(binary("HELLO_BIN"), {"worker", "--address", setup.address()});
  auto client = connect(setup.address());
  auto id = client->start("HelloCities", json());
  REQUIRE(id);
  auto done = client->wait_for_completion(*id, completion_wait);
  REQUIRE(done);
  CHECK(sdk::output_of(*done) == hello_output());
  CHECK(done->execution_id.size() == 32);
  client.reset();
  worker.kill_now();
  CHECK(dtsd->terminate(std::chrono::seconds(20)) == 0);
  std::filesystem::remove_all(setup.data_dir);
}

TEST_CASE("end to end: 500 orchestrations survive dtsd being killed with SIGKILL at random moments") {
  auto setup = fresh_server("kill");
  std::vector<std::string> ids;
  for (int i = 0; i < 500; ++i) ids.push_back("kill-" + std::to_string(i));
  // The kill schedule comes from a seed, printed, and taken from DTSD_KILL_SEED to replay one.
  const char* given = std::getenv("DTSD_KILL_SEED");
  const auto seed = given ? static_cast<std::uint32_t>(std::strtoul(given, nullptr, 10)) : std::random_device{}();
  MESSAGE("SIGKILL schedule seed " << seed << " (replay: DTSD_KILL_SEED=" << seed << ")");
  std::mt19937 random(seed);
  auto dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args(), true);
  process worker(binary("HELLO_BIN"), {"worker", "--address", setup.address()});
  auto client = connect(setup.address());
  start_all(setup.address(), ids, 0, client);
  constexpr int rounds = 4;
  for (int round = 0; round < rounds; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + random() % 300));
    dtsd->kill_now();  // SIGKILL: nothing gets to flush or drain.
    dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args(), true);
  }
  client.reset();
  check_all_complete(setup.address(), ids);
  std::filesystem::remove_all(setup.data_dir);
}

TEST_CASE("end to end: a worker killed mid-run leaves its work to another worker, each result applied once") {
  auto setup = fresh_server("worker-kill");
  process dtsd(binary("DTSD_BIN"), setup.args(), true);
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) ids.push_back("wk-" + std::to_string(i));
  {
    process doomed(binary("HELLO_BIN"), {"worker", "--address", setup.address()});
    auto client = connect(setup.address());
    start_all(setup.address(), ids, 0, client);
    // It dies holding work: wait until its session holds leased items, and some
    // orchestrations are not finished yet.
    bool holding = false;
    for (int i = 0; i < 1000 && !holding; ++i) {
      auto workers = client->workers();
      REQUIRE(workers);
      holding = !workers->empty() && workers->front().orchestrators_in_use + workers->front().activities_in_use > 0;
      if (!holding) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    REQUIRE_MESSAGE(holding, "the worker never held work");
    sdk::query_options completed;
    completed.statuses = {core::runtime_status::completed};
    completed.page_size = 1000;
    auto done_before = client->query(completed);
    REQUIRE(done_before);
    REQUIRE(done_before->instances.size() < ids.size());
  }  // SIGKILL, holding work.
  process rescuer(binary("HELLO_BIN"), {"worker", "--address", setup.address()});
  check_all_complete(setup.address(), ids);
  std::filesystem::remove_all(setup.data_dir);
}

TEST_CASE("end to end: bad input is a clear error and changes nothing") {
  auto setup = fresh_server("bad");
  process dtsd(binary("DTSD_BIN"), setup.args(), true);
  auto client = connect(setup.address());

  sdk::start_options too_long;
  too_long.instance_id = std::string(101, 'x');
  auto rejected = client->start("HelloCities", json(), too_long);
  REQUIRE_FALSE(rejected);
  CHECK(rejected.error().code == errc::invalid_argument);
  CHECK(rejected.error().message.find("101 characters") != std::string::npos);

  sdk::start_options big;
  big.instance_id = "big";
  auto oversize = client->start("HelloCities", json(std::string(1024 * 1024 + 1, 'x')), big);
  REQUIRE_FALSE(oversize);
  CHECK(oversize.error().code == errc::invalid_argument);
  CHECK(oversize.error().message.find("orchestration input") != std::string::npos);
  auto nothing = client->get("big");
  REQUIRE(nothing);
  CHECK_FALSE(nothing->has_value());

  sdk::start_options once;
  once.instance_id = "once";
  REQUIRE(client->start("HelloCities", json(), once));
  auto twice = client->start("HelloCities", json(), once);
  REQUIRE_FALSE(twice);
  CHECK(twice.error().code == errc::already_exists);

  CHECK(client->raise_event("missing", "e", json()).error().code == errc::not_found);
  CHECK(client->purge("once").error().code == errc::failed_precondition);  // Still pending.
  auto unknown_hub = sdk::client::connect(setup.address(), "nope");
  REQUIRE_FALSE(unknown_hub);
  CHECK(unknown_hub.error().message == "task hub 'nope' does not exist");
  std::filesystem::remove_all(setup.data_dir);
}

// ---------------------------------------------------------------------------
// The wire itself: out-of-order calls and malformed input.

namespace {

/// A sink that takes pushes and keeps nothing.
class ignoring_sink final : public schema::WorkSink::Server {
 public:
  kj::Promise<void> push(PushContext) override { return kj::READY_NOW; }
  kj::Promise<void> keepAlive(KeepAliveContext) override { return kj::READY_NOW; }
};

}  // namespace

TEST_CASE("end to end: out-of-order completions and malformed RPC input are refused without a crash") {
  auto setup = fresh_server("wire");
  process dtsd(binary("DTSD_BIN"), setup.args(), true);
  sdk::connection rpc(setup.address(), {});
  auto& wait_scope = rpc.wait_scope();
  auto scheduler = rpc.main<schema::Scheduler>();

  auto open = scheduler.openWorkerSessionRequest();
  open.setTaskHub("default");
  open.setOrchestratorConcurrency(1);
  open.setActivityConcurrency(1);
  open.setSink(kj::heap<ignoring_sink>());
  auto session = open.send().wait(wait_scope).getSession();

  auto refused = [&](auto&& promise) -> dtsd::error {
    try {
      promise.wait(wait_scope);
    } catch (const kj::Exception& failure) {
      return sdk::error_of(failure);
    }
    FAIL("the call was accepted");
    return {};
  };

  // A completion for a work item that was never dispatched.
  auto client = connect(setup.address());
  sdk::start_options options;
  options.instance_id = "wire-1";
  REQUIRE(client->start("HelloCities", json(), options));
  auto completion = session.completeOrchestratorRequest();
  auto body = completion.initCompletion();
  body.setInstanceId("wire-1");
  body.setCompletionToken(12345);
  auto stale = refused(completion.send());
  CHECK(stale.code == errc::stale_token);

  // The same for an activity that was never leased, and an unknown instance.
  auto activity = session.completeActivityRequest();
  auto result = activity.initCompletion();
  result.setInstanceId("wire-1");
  result.setTaskId(0);
  result.setCompletionToken(99);
  result.setResult("\"x\"");
  CHECK(refused(activity.send()).code == errc::stale_token);

  // Both again in one completeMany call: the call succeeds and names each refusal.
  auto many = session.completeManyRequest();
  auto many_orchestrator = many.initOrchestrators(1)[0];
  many_orchestrator.setInstanceId("wire-1");
  many_orchestrator.setCompletionToken(12345);
  auto many_activity = many.initActivities(1)[0];
  many_activity.setInstanceId("wire-1");
  many_activity.setTaskId(0);
  many_activity.setCompletionToken(99);
  many_activity.setResult("\"x\"");
  auto answer = many.send().wait(wait_scope);  // Owns what getRefusals() reads.
  auto refusals = answer.getRefusals();
  REQUIRE(refusals.size() == 2);
  for (auto refusal : refusals) {
    CHECK(std::string(refusal.getInstanceId().cStr()) == "wire-1");
    CHECK(sdk::error_of_text(refusal.getError().cStr()).code == errc::stale_token);
  }
  CHECK(session.completeManyRequest().send().wait(wait_scope).getRefusals().size() == 0);

  // A status value outside the schema's enum.
  auto start = scheduler.startInstanceRequest();
  start.setTaskHub("default");
  auto request = start.initRequest();
  request.setInstanceId("wire-2");
  request.setName("HelloCities");
  request.initReplaceableStatuses(1).set(0, static_cast<schema::OrchestrationStatus>(99));
  auto malformed = refused(start.send());
  CHECK(malformed.message.find("unknown status") != std::string::npos);

  // Garbage on a fresh connection is dropped; the server keeps serving.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(setup.port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  std::string garbage(4096, '\xff');
  CHECK(write(fd, garbage.data(), garbage.size()) > 0);
  close(fd);

  // Nothing changed: wire-1 is still pending with no history, wire-2 does not exist.
  auto still = client->get("wire-1");
  REQUIRE(still);
  REQUIRE(still->has_value());
  CHECK((**still).status == core::runtime_status::pending);
  auto history = client->history("wire-1");
  REQUIRE(history);
  CHECK(history->empty());
  auto absent = client->get("wire-2");
  REQUIRE(absent);
  CHECK_FALSE(absent->has_value());
  std::filesystem::remove_all(setup.data_dir);
}
