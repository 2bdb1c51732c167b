// dtsd, hello_cities workers and an SDK client as real processes on 127.0.0.1.

#include <doctest/doctest.h>

#include <random>

#include "processes.hpp"

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
  std::mt19937 random(std::random_device{}());
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
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }  // SIGKILL, mid-run.
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
