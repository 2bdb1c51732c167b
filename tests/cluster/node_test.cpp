// dtsd nodes of one cluster, as real processes: an etcd the test starts, two dtsd
// nodes on loopback sharing one data directory (as nodes on one machine do), and
// the C++ SDK as client and worker. Every process is stopped by PID.

#include <atomic>
#include <thread>

#include "fixture.hpp"

using namespace cluster_test;


TEST_CASE("cluster: two nodes split a hub's partitions; a node killed -9 hands them over with nothing lost") {
  cluster_setup cluster;
  const int port_a = free_port(), port_b = free_port();
  auto a = std::make_unique<process>(binary("DTSD_BIN"), cluster.node_args("a", port_a), true);
  process b(binary("DTSD_BIN"), cluster.node_args("b", port_b), true);
  // Every partition owned, by both nodes between them (rendezvous hashing: with
  // 4 partitions and 2 nodes, each gets some for these names).
  REQUIRE(eventually([&] { return cluster.owners().size() == partitions; }, 20s));
  REQUIRE(eventually([&] { return cluster.owned_by("a") > 0 && cluster.owned_by("b") > 0; }, 20s));

  auto client_a = connect("127.0.0.1:" + std::to_string(port_a));
  auto client_b = connect("127.0.0.1:" + std::to_string(port_b));

  // Any node takes any call: a start at a for a partition b serves is forwarded
  // there, and both nodes read the same record.
  constexpr int count = 40;
  const auto owners = cluster.owners();
  std::map<std::string, std::string> started_at;  // id -> the node serving it
  for (int i = 0; i < count; ++i) {
    const auto id = "city-" + std::to_string(i);
    sdk::start_options options;
    options.instance_id = id;
    expected<std::string> started = dtsd::error{errc::io, "not tried"};
    REQUIRE(eventually(
        [&] {
          started = client_a->start("HelloCities", sdk::json(), options);
          return started || started.error().code != errc::unavailable;  // Unavailable: still opening.
        },
        10s));
    REQUIRE_MESSAGE(started, started.error().message);
    started_at[id] = owners.at(core::partition_of(id, partitions));
  }
  std::set<std::string> nodes_used;
  for (const auto& [id, node] : started_at) {
    nodes_used.insert(node);
    auto at_a = client_a->get(id);
    auto at_b = client_b->get(id);
    REQUIRE(at_a);
    REQUIRE(at_b);
    REQUIRE(*at_a);
    REQUIRE(*at_b);
    CHECK((*at_a)->instance_id == (*at_b)->instance_id);
    CHECK((*at_a)->created_at_ns == (*at_b)->created_at_ns);
  }
  CHECK(nodes_used.size() == 2);  // Some were forwarded to b.

  // A hub created at one node exists at every node; creating it again anywhere is refused.
  auto admin_a = sdk::client::connect("127.0.0.1:" + std::to_string(port_a), "");
  auto admin_b = sdk::client::connect("127.0.0.1:" + std::to_string(port_b), "");
  REQUIRE(admin_a);
  REQUIRE(admin_b);
  REQUIRE((*admin_a)->create_task_hub("second", 4));
  auto again_here = (*admin_a)->create_task_hub("second", 4);
  REQUIRE_FALSE(again_here);
  CHECK(again_here.error().code == errc::already_exists);
  auto again_there = (*admin_b)->create_task_hub("second", 8);
  REQUIRE_FALSE(again_there);
  CHECK(again_there.error().code == errc::already_exists);
  REQUIRE(eventually(
      [&] {
        auto hubs = (*admin_b)->task_hubs();
        return hubs && std::count(hubs->begin(), hubs->end(), "second") == 1;
      },
      10s));

  // a dies with its partitions: b takes them over once a's lease runs out, and
  // every start a acknowledged is there.
  const auto killed_at = std::chrono::steady_clock::now();
  a->kill_now();
  a.reset();
  REQUIRE(eventually([&] { return cluster.owned_by("b") == partitions; }, 20s));
  std::chrono::milliseconds first_read{-1};
  for (const auto& [id, node] : started_at) {
    auto record = read_anywhere({client_b.get()}, id, 20s);
    REQUIRE_MESSAGE(record, id << " (acknowledged by node " << node << ") is gone");
    CHECK(record->name == "HelloCities");
    if (node == "a" && first_read.count() < 0) {
      first_read = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed_at);
    }
  }
  MESSAGE("the survivor answered for the dead node's first instance " << first_read.count()
                                                                      << " ms after the kill (lease 2 s)");

  // The survivor runs everything to the end, the dead node's work included.
  process worker(binary("HELLO_BIN"), {"worker", "--address", "127.0.0.1:" + std::to_string(port_b)});
  for (const auto& [id, node] : started_at) {
    auto done = client_b->wait_for_completion(id, 60s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    CHECK(done->status == core::runtime_status::completed);
    CHECK(sdk::output_of(*done) == hello_output());
  }
}

TEST_CASE("cluster: a joining node takes its share, a drained one gives it up, a leaving one hands its partitions back at once") {
  cluster_setup cluster;
  const int port_a = free_port(), port_b = free_port();
  process a(binary("DTSD_BIN"), cluster.node_args("a", port_a), true);
  REQUIRE(eventually([&] { return cluster.owned_by("a") == partitions; }, 20s));
  auto client_a = connect("127.0.0.1:" + std::to_string(port_a));
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    sdk::start_options options;
    options.instance_id = "early-" + std::to_string(i);
    std::string id;
    REQUIRE(eventually(
        [&] {
          auto started = client_a->start("HelloCities", sdk::json(), options);
          if (started) id = *started;
          return bool(started);
        },
        10s));
    ids.push_back(id);
  }

  auto b = std::make_unique<process>(binary("DTSD_BIN"), cluster.node_args("b", port_b), true);
  REQUIRE(eventually([&] { return cluster.owned_by("b") > 0 && cluster.owners().size() == partitions; }, 20s));
  auto client_b = connect("127.0.0.1:" + std::to_string(port_b));
  for (const auto& id : ids) {
    CHECK_MESSAGE(read_anywhere({client_a.get(), client_b.get()}, id, 10s), id << " is not served after the join");
  }

  // While partitions move back and forth (drain, undrain), a client keeps starting
  // and reading instances through each node: no call fails (a call that meets a
  // partition moving is tried again where it went).
  std::atomic<bool> moving_done{false};
  std::atomic<int> calls{0}, failed{0};
  std::string first_failure;
  auto keep_calling = [&](int port, const std::string& prefix) {
    return std::thread([&, port, prefix] {
      auto c = connect("127.0.0.1:" + std::to_string(port));  // (bound to this thread)
      for (int i = 0; !moving_done; ++i) {
        sdk::start_options options;
        options.instance_id = prefix + std::to_string(i);
        auto started = c->start("HelloCities", sdk::json(), options);
        auto read = c->get(options.instance_id);
        calls += 2;
        if (!started || !read || !*read) {
          if (failed++ == 0) first_failure = !started ? started.error().message : !read ? read.error().message : "gone";
        }
      }
    });
  };
  auto through_a = keep_calling(port_a, "moving-a-"), through_b = keep_calling(port_b, "moving-b-");
  // A drain moves b's partitions to a while b stays up and answers through a.
  auto drained = run_command(binary("DTSCTL_BIN"), {"cluster", "drain", "b", "--cluster", cluster.url()}, 30s);
  REQUIRE_MESSAGE(drained.exit_code == 0, drained.out);
  REQUIRE(eventually([&] { return cluster.owned_by("a") == partitions; }, 20s));
  for (const auto& id : ids) CHECK_MESSAGE(read_anywhere({client_b.get()}, id, 10s), id << " is not served through b");
  auto undrained = run_command(binary("DTSCTL_BIN"), {"cluster", "undrain", "b", "--cluster", cluster.url()}, 30s);
  REQUIRE(undrained.exit_code == 0);
  REQUIRE(eventually([&] { return cluster.owned_by("b") > 0 && cluster.owners().size() == partitions; }, 20s));
  std::this_thread::sleep_for(300ms);
  moving_done = true;
  through_a.join();
  through_b.join();
  MESSAGE(calls.load() << " calls through both nodes while partitions moved twice; " << failed.load() << " failed");
  CHECK_MESSAGE(failed == 0, first_failure);
  CHECK(calls > 20);
  auto nobody = run_command(binary("DTSCTL_BIN"), {"cluster", "drain", "zz", "--cluster", cluster.url()}, 30s);
  CHECK(nobody.exit_code == 1);  // No such live node: refused, nothing written.

  // A planned leave: b commits, closes and releases; a claims them without
  // waiting for b's lease to run out.
  const auto leaving = std::chrono::steady_clock::now();
  CHECK(b->terminate(30s) == 0);
  REQUIRE(eventually([&] { return cluster.owned_by("a") == partitions; }, 20s));
  const auto moved = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - leaving);
  MESSAGE("a owned every partition again " << moved.count() << " ms after b was asked to leave");
  CHECK(moved < 2000ms);  // Less than the lease: b gave them up; a did not wait for its TTL.
  for (const auto& id : ids) CHECK_MESSAGE(read_anywhere({client_a.get()}, id, 10s), id << " is lost");
}

TEST_CASE("cluster: a second process with a live node's id is refused, and dtsctl shows the cluster") {
  cluster_setup cluster;
  const int port_a = free_port();
  process a(binary("DTSD_BIN"), cluster.node_args("a", port_a), true);
  auto twin = run_command(binary("DTSD_BIN"), cluster.node_args("a", free_port()), 30s);
  CHECK(twin.exit_code == 2);

  REQUIRE(eventually([&] { return cluster.owned_by("a") == partitions; }, 20s));
  auto status = run_command(binary("DTSCTL_BIN"), {"--json", "cluster", "status", "--cluster", cluster.url()}, 30s);
  REQUIRE(status.exit_code == 0);
  auto shown = sdk::json::parse(status.out);
  REQUIRE(shown["nodes"].size() == 1);
  CHECK(shown["nodes"][0]["nodeId"] == "a");
  CHECK(shown["nodes"][0]["address"] == "127.0.0.1:" + std::to_string(port_a));
  CHECK(shown["nodes"][0]["partitionsOwned"] == partitions);
  REQUIRE(shown["partitions"].size() == partitions);
  CHECK(shown["nodes"][0]["reachable"] == true);
  for (const auto& row : shown["partitions"]) {
    CHECK(row["owner"] == "a");
    CHECK(row["epoch"].get<std::int64_t>() > 0);
    REQUIRE(row["lag"].is_object());
    CHECK(row["lag"]["ready"] == 0);
  }

  // Lag: orchestrations that no worker takes wait, and the owner says so.
  auto client = sdk::client::connect("127.0.0.1:" + std::to_string(port_a));
  REQUIRE(client);
  std::map<std::uint32_t, int> waiting;
  for (int i = 0; i < 5; ++i) {
    sdk::start_options options;
    options.instance_id = "lag-" + std::to_string(i);
    auto id = (*client)->start("Nobody", sdk::json(i), options);
    REQUIRE(id);
    ++waiting[core::partition_of(*id, partitions)];
  }
  std::this_thread::sleep_for(300ms);
  status = run_command(binary("DTSCTL_BIN"), {"--json", "cluster", "status", "--cluster", cluster.url()}, 30s);
  REQUIRE(status.exit_code == 0);
  shown = sdk::json::parse(status.out);
  for (const auto& row : shown["partitions"]) {
    const auto p = row["partition"].get<std::uint32_t>();
    INFO("partition " << p);
    CHECK(row["lag"]["ready"] == waiting[p]);
    if (waiting[p] > 0) CHECK(row["lag"]["oldestReadyWaitMs"].get<double>() >= 250.0);
    if (waiting[p] == 0) CHECK(row["lag"]["oldestReadyWaitMs"].get<double>() == 0.0);
  }
  auto table = run_command(binary("DTSCTL_BIN"), {"cluster", "status", "--cluster", cluster.url()}, 30s);
  CHECK(table.exit_code == 0);
  CHECK(table.out.find("OLDEST-WAIT") != std::string::npos);

  // A node that does not answer (paused) is shown as such, and the command ends.
  REQUIRE(kill(a.pid(), SIGSTOP) == 0);
  status = run_command(binary("DTSCTL_BIN"), {"--json", "cluster", "status", "--cluster", cluster.url()}, 30s);
  REQUIRE(kill(a.pid(), SIGCONT) == 0);
  REQUIRE(status.exit_code == 0);
  shown = sdk::json::parse(status.out);
  for (const auto& node : shown["nodes"]) {  // Empty if its lease ran out meanwhile.
    CHECK(node["reachable"] == false);
    CHECK(node["error"].get<std::string>().find("no answer") != std::string::npos);
  }
  for (const auto& row : shown["partitions"]) CHECK(row["lag"].is_null());

  auto bad = run_command(binary("DTSCTL_BIN"), {"cluster", "status", "--cluster", "etcd://nowhere"}, 30s);
  CHECK(bad.exit_code != 0);
}

TEST_CASE("cluster: messages between partitions of different nodes arrive once (sub-orchestrations across nodes)") {
  cluster_setup cluster;
  const int port_a = free_port(), port_b = free_port(), dashboard_a = free_port();
  process a(binary("DTSD_BIN"), cluster.node_args("a", port_a, dashboard_a), true);
  process b(binary("DTSD_BIN"), cluster.node_args("b", port_b), true);
  REQUIRE(eventually([&] { return cluster.split_between("a", "b"); }, 20s));
  const auto address_a = "127.0.0.1:" + std::to_string(port_a), address_b = "127.0.0.1:" + std::to_string(port_b);
  // One worker, connected to a: it gets b's work too, through the session a opens
  // at b on its behalf, and its answers go back there.
  process worker_a(binary("FEATURE_WORKER_BIN"), {address_a});
  auto client_a = connect(address_a);
  auto client_b = connect(address_b);
  const std::vector<sdk::client*> nodes{client_a.get(), client_b.get()};

  // Parents whose children (id:0, id:1, id:2) are partly on the other node; every
  // call goes through node a, which forwards what b serves.
  const auto owners = cluster.owners();
  std::vector<std::string> parents;
  int crossing = 0;
  for (int i = 0; i < 16; ++i) {
    const auto id = "parent-" + std::to_string(i);
    const auto& home = owners.at(core::partition_of(id, partitions));
    for (int k = 0; k < 3; ++k) crossing += owners.at(core::partition_of(id + ":" + std::to_string(k), partitions)) != home;
    sdk::start_options options;
    options.instance_id = id;
    auto started = on_owner({client_a.get()}, [&](sdk::client& c) { return c.start("Parent", sdk::json(), options); }, 10s);
    REQUIRE_MESSAGE(started, started.error().message);
    parents.push_back(id);
  }
  REQUIRE(crossing > 0);
  MESSAGE(crossing << " of 48 children live on the other node than their parent");

  for (const auto& id : parents) {
    auto done = client_a->wait_for_completion(id, 60s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    CHECK(done->status == core::runtime_status::completed);
    CHECK(sdk::output_of(*done) == 12);  // 2 + 4 + 6: each child's answer counted once
    for (int k = 0; k < 3; ++k) {
      const auto child_id = id + ":" + std::to_string(k);
      auto child = client_a->get(child_id);
      REQUIRE_MESSAGE(child, child_id << ": " << child.error().message);
      REQUIRE_MESSAGE(*child, child_id);
      CHECK((**child).status == core::runtime_status::completed);
      REQUIRE((**child).parent);
      CHECK((**child).parent->instance.instance_id == id);
      // Its history: started once, completed once.
      auto history = client_a->history(child_id);
      REQUIRE(history);
      int starts = 0, completions = 0;
      for (const auto& event : *history) {
        starts += std::holds_alternative<core::events::execution_started>(event.body);
        completions += std::holds_alternative<core::events::execution_completed>(event.body);
      }
      CHECK(starts == 1);
      CHECK(completions == 1);
    }
  }

  // Changes are forwarded too: an event raised at a for an instance b serves.
  std::string on_b = "waiter-0";
  for (int i = 0; owners.at(core::partition_of(on_b, partitions)) != "b"; ++i) on_b = "waiter-" + std::to_string(i);
  sdk::start_options options;
  options.instance_id = on_b;
  REQUIRE(client_a->start("WaitEvent", sdk::json(), options));
  REQUIRE(client_a->wait_for_start(on_b, 10s));
  REQUIRE(client_a->raise_event(on_b, "Approval", sdk::json{{"approved", true}}));
  auto approved = client_a->wait_for_completion(on_b, 30s);
  REQUIRE_MESSAGE(approved, approved.error().message);
  CHECK(sdk::output_of(*approved) == sdk::json{{"approved", true}});
  // A query through a pages over both nodes' partitions.
  sdk::query_options everything;
  everything.instance_id_prefix = "parent-";
  everything.page_size = 1000;
  auto page = client_a->query(everything);
  REQUIRE(page);
  CHECK(page->instances.size() == 16 * 4);  // Parents and their children.
  // The dashboard of a lists every partition's instances, b's included.
  auto listed = sdk::json::parse(http_post(dashboard_a, "/v1/taskhubs/orchestrations/query",
                                           R"({"filter": {"orchestrationId": "parent-"}, "pagination": {"count": 200}})"));
  CHECK_MESSAGE(listed["totalCount"] == 16 * 4, listed.dump());
  CHECK(listed["orchestrations"].size() == 16 * 4);
  // A purge at a removes the children where they live.
  auto purged = client_a->purge(parents[0], true);
  REQUIRE_MESSAGE(purged, purged.error().message);
  CHECK(*purged == 4);
  for (int k = 0; k < 3; ++k) {
    auto gone = client_b->get(parents[0] + ":" + std::to_string(k));
    REQUIRE(gone);
    CHECK_FALSE(gone->has_value());
  }
}

TEST_CASE("cluster: a node killed -9 while sub-orchestrations cross nodes: every parent completes, each child once") {
  cluster_setup cluster;
  const int port_a = free_port(), port_b = free_port();
  auto a = std::make_unique<process>(binary("DTSD_BIN"), cluster.node_args("a", port_a), true);
  process b(binary("DTSD_BIN"), cluster.node_args("b", port_b), true);
  REQUIRE(eventually([&] { return cluster.split_between("a", "b"); }, 20s));
  const auto address_a = "127.0.0.1:" + std::to_string(port_a), address_b = "127.0.0.1:" + std::to_string(port_b);
  auto worker_a = std::make_unique<process>(binary("FEATURE_WORKER_BIN"), std::vector<std::string>{address_a});
  process worker_b(binary("FEATURE_WORKER_BIN"), {address_b});
  auto client_a = connect(address_a);
  auto client_b = connect(address_b);

  const auto parents = start_parents({client_a.get(), client_b.get()}, "p-", 60);
  const auto first_owners = cluster.owners();
  // Mid-run: a and its worker die; b takes a's partitions over and, with them,
  // their outboxes: what a had not delivered is sent again, and applied once.
  a->kill_now();
  worker_a->kill_now();
  a.reset();
  REQUIRE(eventually([&] { return cluster.owned_by("b") == partitions; }, 20s));
  for (const auto& id : parents) {
    auto done = on_owner({client_b.get()}, [&](sdk::client& c) { return c.wait_for_completion(id, 60s); }, 20s);
    if (!done) {
      // What it waits for, to tell a lost message from lost work.
      for (const auto& name : {id, id + ":0", id + ":1", id + ":2"}) {
        auto record = client_b->get(name);
        const auto index = core::partition_of(name, partitions);
        MESSAGE(name << " (partition " << index << ", first owned by " << first_owners.at(index) << "): "
                     << (record && *record ? std::string(core::to_string((*record)->status)) : std::string("(none)")));
        if (auto history = client_b->history(name)) {
          for (const auto& event : *history) MESSAGE("  event " << event.event_id << " kind " << event.body.index());
        }
      }
    }
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    check_parent(*client_b, id, *done);
  }
}

TEST_CASE("cluster: an owner paused past its lease is taken over; resumed, it joins again under new epochs and "
          "nothing runs twice") {
  cluster_setup cluster;
  two_nodes nodes(cluster);
  auto& a = nodes.a;
  const auto &address_a = nodes.address_a, &address_b = nodes.address_b;
  process worker(binary("FEATURE_WORKER_BIN"), {address_b});
  auto client_b = connect(address_b);
  const auto parents = start_parents({client_b.get()}, "paused-", 30);
  std::int64_t newest_epoch = 0;
  for (const auto& [index, held] : cluster.claims()) newest_epoch = std::max(newest_epoch, held.epoch);
  // a stops mid-run, holding partitions, with commits and messages in flight.
  REQUIRE(kill(a.pid(), SIGSTOP) == 0);
  REQUIRE(eventually([&] { return cluster.owned_by("b") == partitions; }, 20s));
  // Resumed, a finds its lease gone: what it had not committed is refused by the
  // new epochs; it joins again under a new lease and takes its share back from b
  // in a planned move, under epochs newer than any before.
  REQUIRE(kill(a.pid(), SIGCONT) == 0);
  REQUIRE(eventually([&] { return cluster.owned_by("a") > 0 && cluster.owners().size() == partitions; }, 30s));
  for (const auto& [index, held] : cluster.claims()) {
    if (held.owner == "a") CHECK(held.epoch > newest_epoch);
  }
  auto client_a = connect(address_a);
  for (const auto& id : parents) {
    auto done = on_owner({client_b.get(), client_a.get()},
                         [&](sdk::client& c) { return c.wait_for_completion(id, 60s); }, 20s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    check_parent(*client_b, id, *done);  // Each child's answer counted once.
  }
}

TEST_CASE("cluster: a worker that takes its node's work only (--this-node-only) gets no other node's work") {
  cluster_setup cluster;
  two_nodes nodes(cluster);
  const auto &address_a = nodes.address_a, &address_b = nodes.address_b;
  process worker_a(binary("HELLO_BIN"), {"worker", "--address", address_a, "--this-node-only"});
  auto client_a = connect(address_a);
  const auto owners = cluster.owners();
  std::map<std::string, std::string> home;  // id -> its owner
  for (int i = 0; home.size() < 12; ++i) {
    const auto id = "local-" + std::to_string(i);
    home[id] = owners.at(core::partition_of(id, partitions));
    sdk::start_options options;
    options.instance_id = id;
    auto started = on_owner({client_a.get()}, [&](sdk::client& c) { return c.start("HelloCities", sdk::json(), options); }, 10s);
    REQUIRE_MESSAGE(started, started.error().message);
  }
  // a's own instances run; b's wait: no session was relayed to b for this worker.
  for (const auto& [id, owner] : home) {
    if (owner != "a") continue;
    auto done = client_a->wait_for_completion(id, 30s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    CHECK(sdk::output_of(*done) == hello_output());
  }
  std::this_thread::sleep_for(500ms);
  for (const auto& [id, owner] : home) {
    if (owner != "b") continue;
    auto record = client_a->get(id);  // (forwarded to b)
    REQUIRE(record);
    REQUIRE(*record);
    CHECK_MESSAGE((**record).status == core::runtime_status::pending, id);
  }
  // b's own worker runs them.
  process worker_b(binary("HELLO_BIN"), {"worker", "--address", address_b, "--this-node-only"});
  for (const auto& [id, owner] : home) {
    auto done = client_a->wait_for_completion(id, 30s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    CHECK(sdk::output_of(*done) == hello_output());
  }
}

TEST_CASE("cluster: with --auth and TLS, nodes link through TLS with node tokens; forwarded calls and relayed work run") {
  cluster_setup cluster;
  // A test CA and one certificate for both nodes (DNS localhost: the native API's
  // TLS checks names), made with openssl; a contributor token made with dtsctl.
  const auto secrets = cluster.data_dir / "secrets";
  std::filesystem::create_directories(secrets);
  const auto at = [&](const char* name) { return (secrets / name).string(); };
  const auto made = std::system(("(cd '" + secrets.string() +
                                 "' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca"
                                 " && openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj /CN=node"
                                 " && printf 'subjectAltName=DNS:localhost\\n' > ext"
                                 " && openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out node.pem"
                                 " -days 2 -extfile ext) > /dev/null 2>&1")
                                    .c_str());
  REQUIRE(made == 0);
  auto token = run_command(binary("DTSCTL_BIN"), {"--json", "token", "create", "--role", "contributor", "--task-hub", "*",
                                                  "--data-dir", cluster.data_dir.string()});
  REQUIRE(token.exit_code == 0);
  const auto contributor = sdk::json::parse(token.out).at("token").get<std::string>();
  const std::vector<std::string> secure{"--auth", "--tls-cert", at("node.pem"), "--tls-key", at("node.key"),
                                        "--tls-client-ca", at("ca.pem")};
  const int port_a = free_port(), port_b = free_port();
  const auto address_a = "localhost:" + std::to_string(port_a);
  process a(binary("DTSD_BIN"), cluster.node_args({.id = "a", .port = port_a, .advertise = address_a, .extra = secure}), true);
  process b(binary("DTSD_BIN"),
            cluster.node_args({.id = "b", .port = port_b, .advertise = "localhost:" + std::to_string(port_b), .extra = secure}),
            true);
  REQUIRE(eventually([&] { return cluster.split_between("a", "b"); }, 20s));

  sdk::tls_options tls{at("ca.pem"), at("node.pem"), at("node.key"), {}};
  std::unique_ptr<sdk::client> client_a;
  REQUIRE(eventually(
      [&] {
        auto made_client = sdk::client::connect(address_a, "default", contributor, tls);
        if (made_client) client_a = std::move(*made_client);
        return made_client.has_value();
      },
      10s));
  // Without the client certificate the native API takes no call, with the token or not.
  auto no_certificate = sdk::client::connect(address_a, "default", contributor, sdk::tls_options{at("ca.pem"), {}, {}, {}});
  REQUIRE_FALSE(no_certificate);

  // One worker at a, a token of its own: b's work reaches it through a's link to b.
  auto worker_token = run_command(binary("DTSCTL_BIN"), {"--json", "token", "create", "--role", "worker", "--task-hub",
                                                         "default", "--data-dir", cluster.data_dir.string()});
  REQUIRE(worker_token.exit_code == 0);
  // (The sample worker has no client certificate option: the environment gives
  // the CA, and the node's certificate serves as the worker's.)
  process worker(binary("HELLO_BIN"), {"worker", "--address", address_a}, false,
                 {"DTSD_TOKEN=" + sdk::json::parse(worker_token.out).at("token").get<std::string>(),
                  "DTSD_TLS_CA=" + at("ca.pem"), "DTSD_TLS_CLIENT_CERT=" + at("node.pem"),
                  "DTSD_TLS_CLIENT_KEY=" + at("node.key")});
  const auto owners = cluster.owners();
  std::map<std::string, std::string> home;
  for (int i = 0; home.size() < 12; ++i) {
    const auto id = "secure-" + std::to_string(i);
    home[id] = owners.at(core::partition_of(id, partitions));
    sdk::start_options options;
    options.instance_id = id;
    auto started = on_owner({client_a.get()}, [&](sdk::client& c) { return c.start("HelloCities", sdk::json(), options); }, 10s);
    REQUIRE_MESSAGE(started, started.error().message);
  }
  int on_b = 0;
  for (const auto& [id, owner] : home) {
    on_b += owner == "b";
    auto done = client_a->wait_for_completion(id, 30s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    CHECK(sdk::output_of(*done) == hello_output());
  }
  CHECK(on_b > 0);  // Some went over the TLS link to b and back.
}
