// Tokens on the native API and dtsctl (dtsd --auth), as a user runs them: what
// each role may do, on its hubs only; refusals change nothing; revocation ends a
// session that is already open.

#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "processes.hpp"
#include "sdk/worker.hpp"

using namespace dtsd;
using namespace integration;
using sdk::json;

namespace {

/// A new token from the data directory's registry (dtsctl token create --json).
json make_token(const server_setup& setup, const std::string& role, const std::string& hub,
                const std::string& expires = "1h") {
  auto made = run_command(binary("DTSCTL_BIN"), {"--json", "token", "create", "--role", role, "--task-hub", hub,
                                                 "--expires", expires, "--data-dir", setup.data_dir.string()});
  REQUIRE_MESSAGE(made.exit_code == 0, made.out);
  return json::parse(made.out);
}

std::unique_ptr<sdk::client> connect_as(const server_setup& setup, const std::string& token,
                                        const std::string& hub = "default") {
  auto made = sdk::client::connect(setup.address(), hub, token);
  REQUIRE_MESSAGE(made, made.error().message);
  return std::move(*made);
}

}  // namespace

TEST_CASE("auth: the native API and dtsctl take a token; each role does what it may, on its hubs only") {
  auto setup = fresh_server("auth");
  const auto contributor = make_token(setup, "contributor", "default")["token"].get<std::string>();
  const auto reader = make_token(setup, "reader", "default");
  const auto worker_token = make_token(setup, "worker", "default")["token"].get<std::string>();
  const auto other_hub = make_token(setup, "contributor", "other")["token"].get<std::string>();
  const auto admin = make_token(setup, "contributor", "*")["token"].get<std::string>();
  process dtsd(binary("DTSD_BIN"), setup.args({"--auth"}), true);

  // No token, or a forged one: nothing at all, with a message that says why.
  auto anonymous = sdk::client::connect(setup.address(), "default");
  REQUIRE_FALSE(anonymous);
  CHECK(anonymous.error().code == errc::unauthenticated);
  CHECK(anonymous.error().message.find("requires a token") != std::string::npos);
  auto forged_token = reader["token"].get<std::string>();
  forged_token[forged_token.size() - 2] = forged_token[forged_token.size() - 2] == 'x' ? 'y' : 'x';
  auto forged = sdk::client::connect(setup.address(), "default", forged_token);
  REQUIRE_FALSE(forged);
  CHECK(forged.error().code == errc::unauthenticated);

  auto writer = connect_as(setup, contributor);
  sdk::start_options options;
  options.instance_id = "native-1";
  REQUIRE(writer->start("Hello", json("world"), options));
  auto before = writer->get("native-1");
  REQUIRE(before);
  REQUIRE(*before);

  // A reader reads, and is refused every change, naming the role it needs.
  auto looker = connect_as(setup, reader["token"].get<std::string>());
  auto seen = looker->get("native-1");
  REQUIRE(seen);
  CHECK(*seen);
  options.instance_id = "native-2";
  auto refused_start = looker->start("Hello", json(), options);
  REQUIRE_FALSE(refused_start);
  CHECK(refused_start.error().code == errc::permission_denied);
  CHECK(refused_start.error().message.find("Durable Task Data Contributor") != std::string::npos);
  CHECK(looker->terminate("native-1", json("no")).error().code == errc::permission_denied);
  CHECK(looker->raise_event("native-1", "go", json(1)).error().code == errc::permission_denied);
  CHECK(looker->purge("native-1").error().code == errc::permission_denied);
  // The retention policy: a reader reads it, a contributor sets it.
  CHECK(looker->retention());
  CHECK(looker->set_retention(core::retention_policy{}).error().code == errc::permission_denied);
  CHECK_FALSE(looker->retention().value().own);
  auto own = writer->set_retention(core::retention_policy{core::retention_rule{false, 86400}, {}});
  REQUIRE(own);
  CHECK(own->own);
  auto after = writer->get("native-1");
  REQUIRE(after);
  REQUIRE(*after);
  CHECK((*after)->status == (*before)->status);
  CHECK((*after)->last_updated_at_ns == (*before)->last_updated_at_ns);
  CHECK_FALSE(writer->get("native-2").value().has_value());

  // A worker token works (the orchestration completes) and reads nothing.
  auto as_worker = connect_as(setup, worker_token);
  CHECK(as_worker->get("native-1").error().code == errc::permission_denied);
  sdk::worker_options serving{setup.address(), "default", 4, 4};
  serving.token = worker_token;
  sdk::worker worker(serving);
  worker.add_orchestrator("Hello", [](sdk::orchestration_context&, json input) -> sdk::task<json> {
    co_return json("hello " + input.get<std::string>());
  });
  std::thread running([&] { worker.run(); });
  auto done = writer->wait_for_completion("native-1", std::chrono::seconds(30));
  worker.stop();
  running.join();
  REQUIRE_MESSAGE(done, done.error().message);
  CHECK(done->status == core::runtime_status::completed);
  CHECK(done->output.value_or("") == "\"hello world\"");

  // Another hub's token sees no hub here; hubs are made by a token for every hub.
  auto elsewhere = sdk::client::connect(setup.address(), "default", other_hub);
  REQUIRE_FALSE(elsewhere);
  CHECK(elsewhere.error().code == errc::unknown_task_hub);
  auto manager = connect_as(setup, contributor, "");
  CHECK(manager->create_task_hub("made", 2).error().code == errc::permission_denied);
  auto root = connect_as(setup, admin, "");
  CHECK(root->create_task_hub("made", 2));
  CHECK(manager->task_hubs().value() == std::vector<std::string>{"default"});

  // dtsctl: --token (or DTSD_TOKEN); without it, a clear refusal.
  auto shown = run_command(binary("DTSCTL_BIN"), {"--address", setup.address(), "--token", reader["token"].get<std::string>(),
                                                  "--json", "instance", "show", "native-1"});
  CHECK_MESSAGE(shown.exit_code == 0, shown.out);
  auto no_token = run_command("/bin/sh", {"-c", binary("DTSCTL_BIN") + " --address " + setup.address() +
                                                    " instance show native-1 2>&1"});
  CHECK(no_token.exit_code == 1);
  CHECK(no_token.out.find("requires a token") != std::string::npos);
  auto listed = run_command(binary("DTSCTL_BIN"), {"--json", "token", "list", "--data-dir", setup.data_dir.string()});
  REQUIRE(listed.exit_code == 0);
  CHECK(json::parse(listed.out).size() == 5);
  CHECK(listed.out.find(contributor) == std::string::npos);  // Never the tokens themselves.

  // A worker whose token is revoked takes no more work to its end: the next
  // answer it gives is refused and its session closed (the item waits for another).
  {
    const auto doomed = make_token(setup, "worker", "default");
    sdk::worker_options serving_again{setup.address(), "default", 4, 4};
    serving_again.token = doomed["token"].get<std::string>();
    sdk::worker revoked_worker(serving_again);
    revoked_worker.add_orchestrator("Hello", [](sdk::orchestration_context&, json input) -> sdk::task<json> {
      co_return json("hello " + input.get<std::string>());
    });
    std::thread serving_thread([&] { revoked_worker.run(); });
    options.instance_id = "before-revoke";
    REQUIRE(writer->start("Hello", json("a"), options));
    CHECK(writer->wait_for_completion("before-revoke", std::chrono::seconds(30)));
    auto revoke = run_command(binary("DTSCTL_BIN"),
                              {"token", "revoke", doomed["id"].get<std::string>(), "--data-dir", setup.data_dir.string()});
    REQUIRE(revoke.exit_code == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // The server reads the registry again.
    options.instance_id = "after-revoke";
    REQUIRE(writer->start("Hello", json("b"), options));
    auto waited = writer->wait_for_completion("after-revoke", std::chrono::seconds(3));
    CHECK_FALSE(waited);  // Not completed by the revoked worker.
    revoked_worker.stop();
    serving_thread.join();
  }

  // Revoked: the session that is open already is refused within seconds.
  auto revoked = run_command(binary("DTSCTL_BIN"), {"token", "revoke", reader["id"].get<std::string>(), "--data-dir", setup.data_dir.string()});
  REQUIRE(revoked.exit_code == 0);
  bool refused = false;
  for (int i = 0; i < 50 && !refused; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto read = looker->get("native-1");
    refused = !read && read.error().code == errc::unauthenticated;
  }
  CHECK(refused);
  auto bad_revoke = run_command(binary("DTSCTL_BIN"), {"token", "revoke", "t-none", "--data-dir", setup.data_dir.string()});
  CHECK(bad_revoke.exit_code == 1);
  auto bad_role = run_command(binary("DTSCTL_BIN"), {"token", "create", "--role", "owner", "--task-hub", "default",
                                                     "--data-dir", setup.data_dir.string()});
  CHECK(bad_role.exit_code == 1);

  // The audit log: who changed what, and every refusal with why.
  std::ifstream audit_file(setup.data_dir / "auth" / "audit.log");
  REQUIRE(audit_file);
  std::vector<json> audit;
  for (std::string line; std::getline(audit_file, line);) audit.push_back(json::parse(line));
  auto logged = [&](const std::string& operation, const std::string& result, const std::string& instance) {
    for (const auto& entry : audit) {
      if (entry["api"] == "native" && entry["operation"] == operation && entry["result"] == result &&
          entry.value("instanceId", "") == instance) {
        return entry;
      }
    }
    return json();
  };
  const auto started = logged("startInstance", "done", "");
  REQUIRE(started.is_object());
  CHECK(started["role"] == "contributor");
  CHECK(started["token"].is_string());
  const auto refused_terminate = logged("terminate", "refused", "native-1");
  REQUIRE(refused_terminate.is_object());
  CHECK(refused_terminate["token"] == reader["id"]);
  CHECK(refused_terminate["reason"].get<std::string>().find("reader role") != std::string::npos);
  const auto anonymous_refusal = logged("listTaskHubs", "refused", "");
  REQUIRE(anonymous_refusal.is_object());
  CHECK(anonymous_refusal["token"].is_null());
  CHECK(logged("createTaskHub", "done", "").is_object());
  CHECK_FALSE(logged("getInstance", "done", "native-1").is_object());  // Reads are not logged.
  std::filesystem::remove_all(setup.data_dir);
}

TEST_CASE("auth: limits per token: changes a second, and work streams and waits held at once") {
  auto setup = fresh_server("auth-limits");
  const auto contributor = make_token(setup, "contributor", "default")["token"].get<std::string>();
  const auto other = make_token(setup, "contributor", "default")["token"].get<std::string>();
  process dtsd(binary("DTSD_BIN"),
               setup.args({"--auth", "--token-calls-per-second", "5", "--token-streams-max", "2"}), true);

  // A burst of changes: a second's worth goes through, then RESOURCE_EXHAUSTED
  // naming the limit, until the bucket fills again.
  auto client = connect_as(setup, contributor);
  int done = 0, refused = 0;
  std::string why;
  for (int i = 0; i < 12; ++i) {
    sdk::start_options options;
    options.instance_id = "burst-" + std::to_string(i);
    auto started = client->start("Pending", json(), options);
    if (started) {
      ++done;
    } else if (started.error().code == errc::resource_exhausted) {
      ++refused;
      why = started.error().message;
    }
  }
  CHECK(done >= 5);
  CHECK(refused > 0);
  CHECK(done + refused == 12);
  CHECK(why.find("--token-calls-per-second") != std::string::npos);
  int made = 0;  // A refused start made nothing.
  for (int i = 0; i < 12; ++i) made += client->get("burst-" + std::to_string(i)).value().has_value();
  CHECK(made == done);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  sdk::start_options later;
  later.instance_id = "after-the-burst";
  CHECK(client->start("Pending", json(), later));
  // Another token has its own bucket.
  auto second = connect_as(setup, other);
  later.instance_id = "other-token";
  CHECK(second->start("Pending", json(), later));

  // Two waits held (they time out client-side after 3 s); a third is refused at
  // once; once they end, waiting works again.
  std::atomic<int> waiting{0};
  auto wait_a_while = [&] {
    auto own = sdk::client::connect(setup.address(), "default", contributor);  // (No REQUIRE off the main thread.)
    ++waiting;
    CHECK(own);
    if (!own) return;
    auto waited = (*own)->wait_for_completion("burst-0", std::chrono::seconds(3));
    CHECK_FALSE(waited);  // Nothing runs it: the wait ends by its timeout.
  };
  std::thread first(wait_a_while), other_wait(wait_a_while);
  while (waiting < 2) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto third = client->wait_for_completion("burst-0", std::chrono::seconds(1));
  REQUIRE_FALSE(third);
  CHECK(third.error().code == errc::resource_exhausted);
  CHECK(third.error().message.find("--token-streams-max") != std::string::npos);
  first.join();
  other_wait.join();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto fourth = client->wait_for_completion("burst-0", std::chrono::milliseconds(300));
  REQUIRE_FALSE(fourth);
  CHECK(fourth.error().code != errc::resource_exhausted);  // Timed out: the slots came back.
  std::filesystem::remove_all(setup.data_dir);
}
