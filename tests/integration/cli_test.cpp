// dtsctl and dtsd's configuration, as a user runs them.

#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "processes.hpp"
#include "core/schedule.hpp"
#include "sdk/worker.hpp"

using namespace dtsd;
using namespace integration;
using sdk::json;
namespace fs = std::filesystem;

namespace {

command_result dtsctl(const server_setup& setup, std::vector<std::string> args) {
  args.insert(args.begin(), {"--address", setup.address()});
  return run_command(binary("DTSCTL_BIN"), std::move(args));
}

}  // namespace

TEST_CASE("cli: dtsctl manages task hubs and instances, with --json for scripts and clear exit codes") {
  auto setup = fresh_server("cli");
  process dtsd(binary("DTSD_BIN"), setup.args(), true);

  auto hubs = dtsctl(setup, {"--json", "taskhub", "list"});
  CHECK(hubs.exit_code == 0);
  CHECK(json::parse(hubs.out) == json{"default"});
  CHECK(dtsctl(setup, {"taskhub", "create", "staging", "--partitions", "2"}).exit_code == 0);
  CHECK(json::parse(dtsctl(setup, {"--json", "taskhub", "list"}).out) == json{"default", "staging"});
  auto status = dtsctl(setup, {"--json", "taskhub", "status", "staging"});
  REQUIRE(status.exit_code == 0);
  const auto idle = R"({"writable":true,"failedCommits":0,"commits":0,"committedChanges":0,"commitMsMean":0.0,
                         "commitMsMax":0.0,"ready":{"orchestrators":0,"activities":0,"entities":0},
                         "oldestReadyWaitMs":0.0,"unacknowledgedMessages":0,"liveInstances":0})";
  auto expected_status = json::array({json::parse(idle), json::parse(idle)});
  expected_status[0]["partition"] = 0;
  expected_status[1]["partition"] = 1;
  CHECK(json::parse(status.out) == expected_status);
  CHECK(dtsctl(setup, {"taskhub", "status"}).out.find("writable") != std::string::npos);  // --task-hub's
  CHECK(dtsctl(setup, {"taskhub", "status", "nope"}).exit_code == 1);

  auto started = dtsctl(setup, {"--json", "instance", "start", "Anything", "--id", "cli-1", "--input", "{\"n\":1}"});
  CHECK(started.exit_code == 0);
  // No worker runs it: its partition has committed the start and holds it ready.
  auto busy = json::parse(dtsctl(setup, {"--json", "taskhub", "status"}).out);
  std::uint64_t commits = 0, ready = 0;
  for (const auto& p : busy) {
    commits += p["commits"].get<std::uint64_t>();
    ready += p["ready"]["orchestrators"].get<std::uint64_t>();
  }
  CHECK(commits >= 1);
  CHECK(ready == 1);
  CHECK(json::parse(started.out)["instanceId"] == "cli-1");
  auto shown = dtsctl(setup, {"--json", "instance", "show", "cli-1"});
  REQUIRE(shown.exit_code == 0);
  auto record = json::parse(shown.out);
  CHECK(record["runtimeStatus"] == "Pending");
  CHECK(record["input"] == json{{"n", 1}});
  auto listed = dtsctl(setup, {"--json", "instance", "list", "--status", "pending"});
  CHECK(json::parse(listed.out)["instances"].size() == 1);
  auto table = dtsctl(setup, {"instance", "list"});
  CHECK(table.out.find("cli-1") != std::string::npos);
  CHECK(dtsctl(setup, {"instance", "terminate", "cli-1", "--reason", "done"}).exit_code == 0);
  CHECK(json::parse(dtsctl(setup, {"--json", "instance", "show", "cli-1"}).out)["runtimeStatus"] == "Terminated");
  auto purged = dtsctl(setup, {"--json", "instance", "purge", "cli-1"});
  CHECK(purged.exit_code == 0);
  CHECK(json::parse(purged.out)["purged"] == 1);

  // Entities: with no worker running, a signal waits in the entity's queue.
  CHECK(dtsctl(setup, {"entity", "signal", "@counter@c1", "add", "--input", "5"}).exit_code == 0);
  auto entities = json::parse(dtsctl(setup, {"--json", "entity", "list", "--id-prefix", "@counter@"}).out);
  REQUIRE(entities["entities"].size() == 1);
  CHECK(entities["entities"][0]["entityId"] == "@counter@c1");
  CHECK(entities["entities"][0]["state"].is_null());
  CHECK(dtsctl(setup, {"entity", "show", "@counter@c1"}).exit_code == 1);  // No state yet.
  CHECK(dtsctl(setup, {"entity", "signal", "not-an-entity", "add"}).exit_code == 1);
  auto cleaned = dtsctl(setup, {"--json", "entity", "clean"});
  CHECK(cleaned.exit_code == 0);
  CHECK(json::parse(cleaned.out)["removed"] == 0);  // Its operation still waits: not empty.
  CHECK(json::parse(dtsctl(setup, {"--json", "instance", "list"}).out)["instances"].empty());

  // Refusals exit 1 and say why on stderr; a wrong command line exits 2.
  CHECK(dtsctl(setup, {"instance", "show", "missing"}).exit_code == 1);
  CHECK(dtsctl(setup, {"--task-hub", "nope", "instance", "list"}).exit_code == 1);
  CHECK(dtsctl(setup, {"instance", "start", "X", "--input", "{not json"}).exit_code == 2);
  CHECK(dtsctl(setup, {"instance", "list", "--status", "sleepy"}).exit_code == 2);
  CHECK(dtsctl(setup, {"instance", "frobnicate"}).exit_code != 0);
  CHECK(run_command(binary("DTSCTL_BIN"), {"--address", "127.0.0.1:1", "taskhub", "list"}).exit_code == 1);
  std::filesystem::remove_all(setup.data_dir);
}

TEST_CASE("cli: dtsd reads a TOML --config file and DTS_TASK_HUB_NAMES, and refuses bad settings") {
  auto setup = fresh_server("config");
  std::filesystem::create_directories(setup.data_dir);
  auto config = setup.data_dir / "dtsd.toml";
  {
    std::ofstream toml(config);
    toml << "listen = \"" << setup.address() << "\"\n"
         << "data-dir = \"" << (setup.data_dir / "data").string() << "\"\n"
         << "task-hubs = \"alpha,beta\"\n"
         << "grpc-listen = \"127.0.0.1:0\"\n"
         << "dashboard-listen = \"127.0.0.1:0\"\n"
         << "partitions = 3\n";
  }
  {
    process dtsd(binary("DTSD_BIN"), {"--config", config.string()}, true);
    auto hubs = dtsctl(setup, {"--json", "taskhub", "list"});
    CHECK(json::parse(hubs.out) == json{"alpha", "beta"});
    CHECK(std::filesystem::is_directory(setup.data_dir / "data" / "alpha" / "p2"));
    CHECK_FALSE(std::filesystem::exists(setup.data_dir / "data" / "alpha" / "p3"));
    CHECK(dtsd.terminate(std::chrono::seconds(20)) == 0);
  }
  // The environment names the hubs when no flag or file does.
  {
    int port = free_port();
    std::string address = "127.0.0.1:" + std::to_string(port);
    server_setup other = setup;
    other.port = port;
    std::string hubs_env = "DTS_TASK_HUB_NAMES=dev,prod";
    putenv(hubs_env.data());
    process dtsd(binary("DTSD_BIN"), {"--data-dir", (setup.data_dir / "env").string(), "--listen", address,
                                                "--grpc-listen", "127.0.0.1:0", "--dashboard-listen", "127.0.0.1:0"}, true);
    unsetenv("DTS_TASK_HUB_NAMES");
    CHECK(json::parse(dtsctl(other, {"--json", "taskhub", "list"}).out) == json{"dev", "prod"});
  }
  // Bad settings: a clear message and a non-zero exit, before anything starts.
  auto bad_hub = run_command(binary("DTSD_BIN"), {"--task-hubs", "a/b", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"});
  CHECK(bad_hub.exit_code == 2);
  auto bad_durability = run_command(binary("DTSD_BIN"), {"--durability", "sometimes"});
  CHECK(bad_durability.exit_code != 0);
  std::filesystem::remove_all(setup.data_dir);
}

TEST_CASE("cli: dtsctl worker list shows each connected session, its slots and the work it takes") {
  auto setup = fresh_server("cli-workers");
  // Removed at the end, after the processes below are gone (they are declared later).
  std::shared_ptr<void> remove_data(nullptr, [&](void*) { std::filesystem::remove_all(setup.data_dir); });
  process dtsd(binary("DTSD_BIN"), setup.args(), true);
  auto empty = dtsctl(setup, {"--json", "worker", "list"});
  REQUIRE(empty.exit_code == 0);
  CHECK(json::parse(empty.out) == json::array());

  sdk::worker_options options{setup.address(), "default", 7, 3};
  options.versioning = {"2", sdk::version_match::strict, sdk::version_failure::reject};
  options.filter_work_items = true;
  options.name = "billing-v2";
  sdk::worker worker(options);
  worker.add_orchestrator("Invoice", [](sdk::orchestration_context&, json) -> sdk::task<json> { co_return 1; });
  worker.add_activity("Charge", [](const sdk::activity_context&, const json&) { return json(1); });
  std::thread running([&] { worker.run(); });

  json listed;
  for (int i = 0; i < 200; ++i) {
    listed = json::parse(dtsctl(setup, {"--json", "worker", "list"}).out);
    if (!listed.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  worker.stop();
  running.join();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["worker"] == "billing-v2");
  CHECK(listed[0]["slots"]["orchestrators"] == 7);
  CHECK(listed[0]["slots"]["activities"] == 3);
  CHECK(listed[0]["filters"]["orchestrations"] == json::parse(R"([{"name":"Invoice","versions":["2"]}])"));
  CHECK(listed[0]["filters"]["activities"] == json::parse(R"([{"name":"Charge","versions":["2"]}])"));
  CHECK(listed[0]["filters"]["entities"] == json::array());
}

TEST_CASE("cli: retention: a hub's own policy purges ended orchestrations after their time, and survives kill -9") {
  auto setup = fresh_server("retention");
  auto dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args({"--retention-default", "forever"}), true);
  auto shown = dtsctl(setup, {"--json", "retention", "show"});
  REQUIRE(shown.exit_code == 0);
  CHECK(json::parse(shown.out) == json::parse(R"({"retentionPolicies":[{"keepForever":true}],"source":"dtsdDefault",
                                                   "taskHub":"default"})"));
  // Five that end Terminated (no worker runs them), one left pending.
  for (int i = 0; i < 6; ++i) {
    const auto id = "kept-" + std::to_string(i);
    REQUIRE(dtsctl(setup, {"instance", "start", "Anything", "--id", id}).exit_code == 0);
    if (i < 5) REQUIRE(dtsctl(setup, {"instance", "terminate", id}).exit_code == 0);
  }
  // 6 s: time enough, even under ASan, to count all six before the first is due.
  auto set = dtsctl(setup, {"--json", "retention", "set", "--terminated", "6s", "--completed", "forever"});
  REQUIRE(set.exit_code == 0);
  CHECK(json::parse(set.out)["source"] == "taskHub");
  auto count_left = [&] {
    auto listed = dtsctl(setup, {"--json", "instance", "list", "--id-prefix", "kept-", "--all"});
    REQUIRE(listed.exit_code == 0);
    return json::parse(listed.out)["instances"].size();
  };
  CHECK(count_left() == 6);  // Ended less than 6 s ago.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(25);
  while (count_left() != 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  CHECK(count_left() == 1);  // The pending one stays.
  CHECK(json::parse(dtsctl(setup, {"--json", "instance", "show", "kept-5"}).out)["runtimeStatus"] == "Pending");

  // The policy is durable: after kill -9 the hub still has it.
  dtsd->kill_now();
  dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args({"--retention-default", "forever"}), true);
  auto after = json::parse(dtsctl(setup, {"--json", "retention", "show"}).out);
  CHECK(after["source"] == "taskHub");
  CHECK(after["retentionPolicies"] == json::parse(R"([{"orchestrationState":"Completed","keepForever":true},
                                                      {"orchestrationState":"Terminated","retentionPeriodInSeconds":6}])"));
  // Bad input changes nothing; delete brings dtsd's default back.
  auto bad = dtsctl(setup, {"retention", "set", "--failed", "soon"});
  CHECK(bad.exit_code == 2);
  CHECK(json::parse(dtsctl(setup, {"--json", "retention", "show"}).out) == after);
  auto dropped = dtsctl(setup, {"--json", "retention", "delete"});
  REQUIRE(dropped.exit_code == 0);
  CHECK(json::parse(dropped.out)["source"] == "dtsdDefault");
  // A bad default stops dtsd at start, naming the flag.
  auto refused = run_command(binary("DTSD_BIN"), setup.args({"--retention-default", "a while"}));
  CHECK(refused.exit_code != 0);
  dtsd.reset();
  std::filesystem::remove_all(setup.data_dir);
}

TEST_CASE("cli: dtsctl compact gives a purged hub's pages back while dtsd is stopped, and refuses while it runs") {
  auto setup = fresh_server("compact");
  // A short log: the inputs it records would otherwise stay on disk after the purge.
  const std::vector<std::string> flags{"--retention-default", "forever", "--log-retention", "100"};
  auto dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args(flags), true);
  auto client = connect(setup.address());
  // 2,000 instances of 8 KiB inputs (no worker runs them), then ended and purged.
  const std::string bulky(8192, 'x');
  auto started = client->start_many("Anything", std::vector<json>(2000, json(bulky)));
  REQUIRE(started);
  for (const auto& id : *started) REQUIRE(client->terminate(id, json("done")));
  sdk::query_options ended;
  ended.statuses = {core::runtime_status::terminated};
  auto purged = client->purge_where(ended);
  REQUIRE(purged);
  CHECK(*purged == 2000);
  const auto data = fs::path(setup.data_dir);
  auto file_bytes = [&] {
    std::uintmax_t total = 0;
    for (const auto& entry : fs::recursive_directory_iterator(data)) {
      if (entry.path().filename() == "data.mdb") total += entry.file_size();
    }
    return total;
  };
  const auto before = file_bytes();
  CHECK(before > 16u * 1024 * 1024);  // The inputs' pages are free, not given back.
  auto busy = run_command(binary("DTSCTL_BIN"), {"compact", "--data-dir", data.string()});
  CHECK(busy.exit_code == 1);  // dtsd has the stores open.
  CHECK(file_bytes() == before);
  client.reset();
  REQUIRE(dtsd->terminate(std::chrono::seconds(20)) == 0);
  auto compacted = run_command(binary("DTSCTL_BIN"), {"--json", "compact", "--data-dir", data.string()});
  REQUIRE(compacted.exit_code == 0);
  auto report = json::parse(compacted.out);
  CHECK(report["partitions"].size() == 4);
  CHECK(report["bytesBefore"].get<std::uintmax_t>() == before);
  CHECK(file_bytes() < before / 8);
  // dtsd opens the compacted stores: the hub is empty and takes new work.
  dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args(flags), true);
  client = connect(setup.address());
  sdk::query_options everything;
  auto page = client->query(everything);
  REQUIRE(page);
  CHECK(page->instances.empty());
  CHECK(client->start("Anything", json(1)));
  // The same at start: a bulky hub purged, then dtsd started with --compact-at-start.
  auto again = client->start_many("Anything", std::vector<json>(2000, json(bulky)));
  REQUIRE(again);
  for (const auto& id : *again) REQUIRE(client->terminate(id, json("done")));
  REQUIRE(client->purge_where(ended));
  const auto grown = file_bytes();
  CHECK(grown > 16u * 1024 * 1024);
  client.reset();
  REQUIRE(dtsd->terminate(std::chrono::seconds(20)) == 0);
  auto compacting = flags;
  compacting.push_back("--compact-at-start");
  dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args(compacting), true);
  CHECK(file_bytes() < grown / 8);
  client = connect(setup.address());
  auto kept = client->query(everything);
  REQUIRE(kept);
  CHECK(kept->instances.size() == 1);  // The one started before the second batch, still pending.
  client.reset();
  dtsd.reset();
  fs::remove_all(data);
}

TEST_CASE("cli: a cron schedule of every second starts every slot's run exactly once through kill -9 of dtsd") {
  auto setup = fresh_server("schedule");
  // Removed at the end, pass or fail, after dtsd (declared later) is gone.
  std::shared_ptr<void> remove_data(nullptr, [&](void*) { std::filesystem::remove_all(setup.data_dir); });
  auto dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args(), true);
  // No worker: every run stays Pending, so "AllowAll" starts one per slot and the
  // runs are exactly the slots that fired.
  auto created = dtsctl(setup, {"--json", "schedule", "create", "tick", "--orchestration", "Tick", "--cron",
                                "* * * * * *", "--time-zone", "Europe/Berlin", "--overlap", "allow-all", "--catch-up",
                                "all", "--input", "{\"n\":1}"});
  REQUIRE(created.exit_code == 0);
  auto made = json::parse(created.out);
  CHECK(made["status"] == "Active");
  CHECK(made["cron"] == "* * * * * *");
  CHECK(made["overlapPolicy"] == "AllowAll");
  // Refusals, each changing nothing.
  CHECK(dtsctl(setup, {"schedule", "create", "tick", "--orchestration", "Tick", "--every", "1s"}).exit_code == 1);
  CHECK(dtsctl(setup, {"schedule", "create", "bad", "--orchestration", "X", "--cron", "61 * * * *"}).exit_code == 2);
  CHECK(dtsctl(setup, {"schedule", "create", "bad", "--orchestration", "X", "--every", "1s", "--cron", "* * * * *"})
            .exit_code == 2);
  CHECK(dtsctl(setup, {"schedule", "show", "nope"}).exit_code == 1);
  CHECK(json::parse(dtsctl(setup, {"--json", "schedule", "list"}).out).size() == 1);

  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  dtsd->kill_now();  // Slots pass while it is down: caught up when it is back.
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args(), true);
  std::this_thread::sleep_for(std::chrono::milliseconds(2300));
  dtsd->kill_now();
  dtsd = std::make_unique<process>(binary("DTSD_BIN"), setup.args(), true);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto paused = dtsctl(setup, {"--json", "schedule", "pause", "tick", "--note", "test over"});
  REQUIRE(paused.exit_code == 0);
  auto state = json::parse(paused.out)["state"];
  CHECK(state["paused"] == true);

  auto listed = dtsctl(setup, {"--json", "instance", "list", "--id-prefix", "tick-", "--all"});
  REQUIRE(listed.exit_code == 0);
  std::set<std::int64_t> slots;
  const auto rows = json::parse(listed.out)["instances"];
  for (const auto& row : rows) {
    const auto id = row["instanceId"].get<std::string>();  // tick-20261201T214514Z
    REQUIRE(id.size() == 21);
    const auto text = id.substr(5, 4) + "-" + id.substr(9, 2) + "-" + id.substr(11, 2) + "T" + id.substr(14, 2) + ":" +
                      id.substr(16, 2) + ":" + id.substr(18, 2) + "Z";
    auto slot = core::parse_time(text);
    REQUIRE(slot);
    slots.insert(*slot / 1'000'000'000);
    CHECK(row["runtimeStatus"] == "Pending");  // Started once, never replaced.
  }
  REQUIRE_MESSAGE(slots.size() >= 6, listed.out);
  // None lost: every second from the first slot to the last has its run.
  CHECK(static_cast<std::int64_t>(slots.size()) == *slots.rbegin() - *slots.begin() + 1);
  // None doubled: the schedule started as many runs as there are.
  CHECK(state["runs"] == slots.size());
  CHECK(state["missed"] == 0);
  CHECK(state["lastInstanceId"].get<std::string>().substr(0, 5) == "tick-");

  // Paused: no more runs; resumed: runs again, from the next slot.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK(json::parse(dtsctl(setup, {"--json", "instance", "list", "--id-prefix", "tick-", "--all"}).out)["instances"]
            .size() == slots.size());
  auto triggered = dtsctl(setup, {"schedule", "trigger", "tick"});
  CHECK(triggered.exit_code == 0);
  CHECK(triggered.out.find("started tick-") != std::string::npos);
  CHECK(dtsctl(setup, {"schedule", "delete", "tick"}).exit_code == 0);
  CHECK(json::parse(dtsctl(setup, {"--json", "schedule", "list"}).out).empty());
}

TEST_CASE("cli: dtsctl export writes each orchestration once with its history, resumes after kill -9, and purges") {
  auto setup = fresh_server("export");
  std::shared_ptr<void> remove_data(nullptr, [&](void*) { std::filesystem::remove_all(setup.data_dir); });
  process dtsd(binary("DTSD_BIN"), setup.args({"--retention-default", "forever"}), true);
  auto client = connect(setup.address());
  constexpr int count = 600;
  std::vector<json> inputs;
  std::vector<std::string> ids;
  for (int i = 0; i < count; ++i) {
    inputs.push_back(json{{"n", i}});
    ids.push_back("exp-" + std::to_string(i));
  }
  REQUIRE(client->start_many("Archived", inputs, ids));
  for (const auto& id : ids) REQUIRE(client->terminate(id, json("archived")));
  sdk::start_options running;
  running.instance_id = "exp-running";
  REQUIRE(client->start("Archived", json(nullptr), running));  // Not ended: not exported.
  const auto file = (setup.data_dir.parent_path() / ("dtsd-export-" + std::to_string(getpid()) + ".jsonl.gz")).string();
  std::filesystem::remove(file);
  std::filesystem::remove(file + ".progress");
  std::vector<std::string> args = {"--address", setup.address(), "export", "--to", file, "--status", "Terminated",
                                   "--completed-from", "2020-01-01T00:00:00Z", "--page-size", "5", "--purge"};
  {
    // Killed part way: some pages are on disk, and purged.
    process first(binary("DTSCTL_BIN"), args);
    std::uint64_t done_so_far = 0;
    for (int i = 0; i < 500 && done_so_far < 50; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      std::ifstream in(file + ".progress");
      auto progress = json::parse(in, nullptr, false);
      if (!progress.is_discarded()) done_so_far = progress.value("exported", std::uint64_t{0});
    }
    first.kill_now();
    REQUIRE_MESSAGE(done_so_far >= 50, "the export made no progress to interrupt");
    REQUIRE(done_so_far < static_cast<std::uint64_t>(count));
  }
  // Other options are refused while that export is unfinished.
  auto other = run_command(binary("DTSCTL_BIN"), {"--address", setup.address(), "export", "--to", file});
  CHECK(other.exit_code == 2);
  auto resumed = run_command(binary("DTSCTL_BIN"), [&] {
    auto a = args;
    a.insert(a.begin() + 2, "--json");
    return a;
  }());
  REQUIRE(resumed.exit_code == 0);
  auto summary = json::parse(resumed.out);
  CHECK(summary["exported"] == count);
  CHECK(summary["purged"] == count);

  // Every terminated one exactly once, with its input and its history; the running one not.
  auto text = run_command("/bin/sh", {"-c", "gzip -dc '" + file + "'"});
  REQUIRE(text.exit_code == 0);
  std::set<std::string> seen;
  std::istringstream lines(text.out);
  std::string line;
  std::size_t lines_read = 0;
  while (std::getline(lines, line)) {
    ++lines_read;
    auto row = json::parse(line);
    seen.insert(row["instanceId"].get<std::string>());
    CHECK(row["orchestrationStatus"] == "ORCHESTRATION_STATUS_TERMINATED");
    CHECK(json::parse(row["input"].get<std::string>()).contains("n"));
    REQUIRE(row["history"].is_array());
    CHECK(row["history"].size() >= 2);
  }
  CHECK(lines_read == static_cast<std::size_t>(count));
  CHECK(seen.size() == static_cast<std::size_t>(count));
  CHECK_FALSE(seen.count("exp-running"));
  // Purged once on disk: only the running one is left.
  auto left = client->query({});
  REQUIRE(left);
  REQUIRE(left->instances.size() == 1);
  CHECK(left->instances[0].instance_id == "exp-running");
  // Done: running it again writes nothing more.
  auto again = run_command(binary("DTSCTL_BIN"), args);
  CHECK(again.exit_code == 0);
  CHECK(again.out.find("exported 600 orchestrations") != std::string::npos);
  std::filesystem::remove(file);
  std::filesystem::remove(file + ".progress");
}

TEST_CASE("cli: dtsctl export --follow --purge archives orchestrations as they end, until SIGTERM") {
  auto setup = fresh_server("export-follow");
  std::shared_ptr<void> remove_data(nullptr, [&](void*) { std::filesystem::remove_all(setup.data_dir); });
  process dtsd(binary("DTSD_BIN"), setup.args(), true);
  auto client = connect(setup.address());
  const auto file = (setup.data_dir.parent_path() / ("dtsd-follow-" + std::to_string(getpid()) + ".jsonl")).string();
  std::filesystem::remove(file);
  std::filesystem::remove(file + ".progress");
  CHECK(run_command(binary("DTSCTL_BIN"), {"--address", setup.address(), "export", "--to", file, "--follow", "1"})
            .exit_code == 2);  // --follow without --purge
  process follower(binary("DTSCTL_BIN"), {"--address", setup.address(), "export", "--to", file, "--status",
                                          "Terminated", "--purge", "--follow", "1"});
  auto exported = [&] {
    std::ifstream in(file + ".progress");
    auto progress = json::parse(in, nullptr, false);
    return progress.is_discarded() ? std::uint64_t{0} : progress.value("exported", std::uint64_t{0});
  };
  auto wave = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      sdk::start_options options;
      options.instance_id = "follow-" + std::to_string(i);
      REQUIRE(client->start("Archived", json(i), options));
      REQUIRE(client->terminate(options.instance_id, json("done")));
    }
  };
  auto wait_for = [&](std::uint64_t count) {
    for (int i = 0; i < 300 && exported() < count; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return exported();
  };
  wave(0, 20);
  CHECK(wait_for(20) == 20);
  wave(20, 35);
  CHECK(wait_for(35) == 35);
  CHECK(follower.terminate(std::chrono::seconds(10)) == 0);
  std::ifstream in(file);
  std::set<std::string> seen;
  std::string line;
  std::size_t lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    seen.insert(json::parse(line)["instanceId"].get<std::string>());
  }
  CHECK(lines == 35);
  CHECK(seen.size() == 35);
  auto left = client->query({});
  REQUIRE(left);
  CHECK(left->instances.empty());  // Archived and purged.
  std::filesystem::remove(file);
  std::filesystem::remove(file + ".progress");
}

TEST_CASE("cli: dtsd removes entities left empty for a period by itself (--entity-clean-period)") {
  auto setup = fresh_server("entity-clean");
  std::shared_ptr<void> remove_data(nullptr, [&](void*) { std::filesystem::remove_all(setup.data_dir); });
  process dtsd(binary("DTSD_BIN"), setup.args({"--entity-clean-period", "2s"}), true);
  CHECK(run_command(binary("DTSD_BIN"), setup.args({"--entity-clean-period", "soon"})).exit_code != 0);
  sdk::worker_options options{setup.address(), "default", 4, 4};
  sdk::worker worker(options);
  worker.add_entity("box", [](sdk::entity_context& ctx, const std::string& operation, const json& input) {
    if (operation == "put") ctx.set_state(input);
    if (operation == "empty") ctx.delete_state();
    return json();
  });
  std::thread running([&] { worker.run(); });
  auto client = connect(setup.address());
  REQUIRE(client->signal_entity("@box@kept", "put", 1));
  REQUIRE(client->signal_entity("@box@emptied", "put", 2));
  REQUIRE(client->signal_entity("@box@emptied", "empty", json()));
  auto entities = [&] {
    sdk::query_options query;
    query.entities = true;
    query.instance_id_prefix = "@box@";
    std::set<std::string> ids;
    auto page = client->query(query);
    if (page) {
      for (const auto& record : page->instances) ids.insert(record.instance_id);
    }
    return ids;
  };
  for (int i = 0; i < 100 && entities().size() != 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(entities() == std::set<std::string>{"@box@emptied", "@box@kept"});
  // Within two periods of being emptied (it must stay empty for one first), it goes.
  for (int i = 0; i < 160 && entities().size() != 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(entities() == std::set<std::string>{"@box@kept"});
  worker.stop();
  running.join();
}
