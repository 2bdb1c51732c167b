// A cluster's nodes under network faults and etcd failures, as real processes on
// loopback. A node is cut off by giving it a proxy's address instead of the real
// one (tests/support/tcp_proxy.hpp): cut, the proxy passes nothing either way and
// closes nothing, as a firewall that drops packets does; this needs no root, so
// these tests run on every machine. The C++ SDK's feature worker does the work.

#include "../support/tcp_proxy.hpp"
#include "fixture.hpp"

using namespace cluster_test;
using test_support::tcp_proxy;

namespace {

using steady = std::chrono::steady_clock;

long long ms_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

/// An instance id (prefix + number) whose partition `owner` owns.
std::string id_owned_by(const std::map<std::uint32_t, std::string>& owners, const std::string& owner,
                        const std::string& prefix) {
  for (int i = 0;; ++i) {
    auto id = prefix + std::to_string(i);
    if (owners.at(core::partition_of(id, partitions)) == owner) return id;
  }
}

/// One orchestration of the mixed workload, and what it must end with.
struct planned_run {
  std::string id, name;
  sdk::json input, output;
  bool raise = false;  ///< Waits for the event "Approval" (raised with its output).
};

/// 2,000 orchestrations: hello cities (activities in sequence), fan-out over
/// activities, sub-orchestrations across partitions, timers, external events and
/// entities, interleaved.
std::vector<planned_run> mixed_workload() {
  std::vector<planned_run> runs;
  const auto failure = std::string("the counter refuses");
  for (int i = 0; i < 2000; ++i) {
    const auto n = std::to_string(i);
    switch (i % 10) {
      case 0: case 1: case 2: case 3:
        runs.push_back({"cities-" + n, "Cities", nullptr, hello_output()});
        break;
      case 4: case 5:
        runs.push_back({"fan-" + n, "FanAll", nullptr, sdk::json{2, 4, 6, 8, 10}});
        break;
      case 6:
        runs.push_back({"parent-" + n, "Parent", nullptr, 12});
        break;
      case 7:
        runs.push_back({"timer-" + n, "Timer", nullptr, "woke"});
        break;
      case 8:
        runs.push_back({"event-" + n, "WaitEvent", nullptr, sdk::json{{"n", i}}, true});
        break;
      default:
        runs.push_back({"entity-" + n, "EntityCaller", "k" + n,
                        sdk::json{{"after", 7}, {"failure", failure}, {"final", 7}}});
    }
  }
  return runs;
}

}  // namespace

TEST_CASE("cluster faults: an owner cut from etcd stops before its lease ends, the successor takes over after it, "
          "and healed, the owner joins again") {
  cluster_setup cluster;
  tcp_proxy to_etcd(std::stoi(cluster.etcd.members[0].endpoint.substr(10)));
  const int port_a = free_port(), port_b = free_port();
  node_spec spec_a{.id = "a", .port = port_a};
  spec_a.etcd = to_etcd.address();  // a reaches etcd only through the proxy
  process a(binary("DTSD_BIN"), cluster.node_args(spec_a), true);
  process b(binary("DTSD_BIN"), cluster.node_args("b", port_b), true);
  REQUIRE(eventually([&] { return cluster.split_between("a", "b"); }, 20s));
  const auto address_a = "127.0.0.1:" + std::to_string(port_a), address_b = "127.0.0.1:" + std::to_string(port_b);
  process worker(binary("FEATURE_WORKER_BIN"), {address_b});  // a's work reaches it through b
  auto client_a = connect(address_a);
  auto client_b = connect(address_b);
  const std::vector<sdk::client*> nodes{client_a.get(), client_b.get()};

  // An instance a serves, read at a directly while a is cut off.
  const auto owners = cluster.owners();
  const auto probe = id_owned_by(owners, "a", "probe-");
  const auto probe_partition = core::partition_of(probe, partitions);
  sdk::start_options options;
  options.instance_id = probe;
  REQUIRE(on_owner({client_a.get()}, [&](sdk::client& c) { return c.start("WaitEvent", sdk::json(), options); }, 10s));
  const auto epoch_before = cluster.claims().at(probe_partition).epoch;
  const auto parents = start_parents(nodes, "cut-", 30);

  // a loses etcd (and only etcd): it stops serving before its lease can have run
  // out; b claims a's partitions once etcd has let the lease go, and not before.
  constexpr auto lease = 2s;
  to_etcd.cut();
  const auto cut_at = steady::now();

  std::optional<steady::time_point> last_at_a, taken_at;
  while (!taken_at && steady::now() < cut_at + 20s) {
    auto at_a = client_a->get(probe);
    if (at_a && *at_a) last_at_a = steady::now();
    auto held = cluster.claims();
    if (held.count(probe_partition) && held.at(probe_partition).owner == "b") taken_at = steady::now();
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE_MESSAGE(taken_at, "b did not take a's partition over within 20 s of the cut");
  REQUIRE(last_at_a);
  MESSAGE("a answered last " << ms_between(cut_at, *last_at_a) << " ms after it was cut from etcd; b owned its "
                             << "partition " << ms_between(cut_at, *taken_at) << " ms after (lease 2000 ms)");
  CHECK(*last_at_a < cut_at + lease);  // Before its lease can have ended in etcd ...
  CHECK(*last_at_a < *taken_at);       // ... so before the new epoch existed.
  CHECK(*taken_at > cut_at + lease / 2);  // b waited for the lease (renewed every third of it).
  CHECK(cluster.claims().at(probe_partition).epoch > epoch_before);
  REQUIRE(eventually([&] { return cluster.owned_by("b") == partitions; }, 20s));
  auto refused = client_a->get(probe);  // a, still cut off, serves nothing and says so
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::unavailable);

  // Healed: a finds its lease gone, joins again under a new one, and takes its
  // share back in a planned move; every parent ends with each child counted once.
  to_etcd.heal();
  REQUIRE(eventually([&] { return cluster.split_between("a", "b"); }, 30s));
  for (const auto& [index, held] : cluster.claims()) {
    if (held.owner == "a") CHECK(held.epoch > epoch_before);
  }
  for (const auto& id : parents) {
    auto done = on_owner(nodes, [&](sdk::client& c) { return c.wait_for_completion(id, 60s); }, 20s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    check_parent(*client_b, id, *done);
  }
  REQUIRE(client_b->raise_event(probe, "Approval", sdk::json(true)));
  auto probed = on_owner(nodes, [&](sdk::client& c) { return c.wait_for_completion(probe, 30s); }, 20s);
  REQUIRE_MESSAGE(probed, probed.error().message);
  CHECK(sdk::output_of(*probed) == true);
}

TEST_CASE("cluster faults: nodes cut from each other (not from etcd) keep their partitions; messages between them "
          "wait and arrive once after healing") {
  cluster_setup cluster;
  const int port_a = free_port(), port_b = free_port();
  tcp_proxy into_a(port_a), into_b(port_b);  // What each node advertises to the other.
  node_spec spec_a{.id = "a", .port = port_a}, spec_b{.id = "b", .port = port_b};
  spec_a.advertise = into_a.address();
  spec_b.advertise = into_b.address();
  process a(binary("DTSD_BIN"), cluster.node_args(spec_a), true);
  process b(binary("DTSD_BIN"), cluster.node_args(spec_b), true);
  REQUIRE(eventually([&] { return cluster.split_between("a", "b"); }, 20s));
  const auto address_a = "127.0.0.1:" + std::to_string(port_a), address_b = "127.0.0.1:" + std::to_string(port_b);
  process worker_a(binary("FEATURE_WORKER_BIN"), {address_a});
  process worker_b(binary("FEATURE_WORKER_BIN"), {address_b});
  auto client_a = connect(address_a);
  auto client_b = connect(address_b);
  const auto before = cluster.claims();

  // The nodes cut from each other, then parents started at their own node, each
  // with children on both nodes: children on the other node are started, and
  // answer, only through the link.
  into_a.cut();
  into_b.cut();
  const auto owners = cluster.owners();
  std::vector<std::pair<std::string, sdk::client*>> parents;  // id, and the node that serves it
  for (int i = 0; parents.size() < 12; ++i) {
    const auto id = "apart-" + std::to_string(i);
    const auto& home = owners.at(core::partition_of(id, partitions));
    bool crosses = false;
    for (int k = 0; k < 3; ++k) crosses |= owners.at(core::partition_of(id + ":" + std::to_string(k), partitions)) != home;
    if (!crosses) continue;
    auto* node = home == "a" ? client_a.get() : client_b.get();
    sdk::start_options options;
    options.instance_id = id;
    auto started = node->start("Parent", sdk::json(), options);
    REQUIRE_MESSAGE(started, started.error().message);
    parents.emplace_back(id, node);
  }
  std::this_thread::sleep_for(4s);  // Twice the lease: no node may be thought dead for this.
  // Nothing moved (each node still renews with etcd), and no parent could finish:
  // each waits for a child on the other side.
  const auto during = cluster.claims();
  CHECK(during.size() == partitions);
  for (const auto& [index, held] : before) {
    CHECK(during.at(index).owner == held.owner);
    CHECK(during.at(index).epoch == held.epoch);
  }
  int finished = 0;
  for (const auto& [id, node] : parents) {
    auto record = node->get(id);
    REQUIRE_MESSAGE(record, id << ": " << record.error().message);
    REQUIRE(*record);
    finished += (**record).status == core::runtime_status::completed;
  }
  CHECK(finished == 0);
  // The held-up messages are the lag each side reports; `cluster status` asks the
  // nodes at their advertised (cut) addresses, says they do not answer, and ends.
  auto unacknowledged = [&] {
    std::uint64_t total = 0;
    for (auto [node, name] : {std::pair{client_a.get(), "a"}, std::pair{client_b.get(), "b"}}) {
      auto views = node->partitions("default");
      if (!views) return std::uint64_t{0};
      for (const auto& view : *views) {
        if (owners.at(view.index) == name) total += view.unacknowledged_messages;
      }
    }
    return total;
  };
  CHECK(unacknowledged() > 0);
  auto status = run_command(binary("DTSCTL_BIN"), {"--json", "cluster", "status", "--cluster", cluster.url()}, 30s);
  REQUIRE(status.exit_code == 0);
  auto shown = sdk::json::parse(status.out);
  CHECK(shown["nodes"].size() == 2);
  for (const auto& node : shown["nodes"]) CHECK(node["reachable"] == false);

  // Healed: what waited is delivered (sent again until receipted, applied once).
  into_a.heal();
  into_b.heal();
  for (const auto& [id, node] : parents) {
    auto done = node->wait_for_completion(id, 60s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    check_parent(*node, id, *done);
    for (int k = 0; k < 3; ++k) {
      const auto child = id + ":" + std::to_string(k);
      auto history = client_a->history(child);  // (forwarded when b serves it)
      REQUIRE_MESSAGE(history, child << ": " << history.error().message);
      int starts = 0;
      for (const auto& event : *history) starts += std::holds_alternative<core::events::execution_started>(event.body);
      CHECK_MESSAGE(starts == 1, child);
    }
  }
  const auto after = cluster.claims();
  for (const auto& [index, held] : before) CHECK(after.at(index).epoch == held.epoch);
  CHECK(eventually([&] { return unacknowledged() == 0; }, 10s));
  status = run_command(binary("DTSCTL_BIN"), {"--json", "cluster", "status", "--cluster", cluster.url()}, 30s);
  REQUIRE(status.exit_code == 0);
  shown = sdk::json::parse(status.out);
  for (const auto& node : shown["nodes"]) CHECK(node["reachable"] == true);
}

TEST_CASE("cluster faults: etcd of three members: its leader killed moves no partition; quorum lost, every node "
          "stops serving within its lease; quorum back, they serve again") {
  cluster_setup cluster(3);
  const int port_a = free_port(), port_b = free_port();
  process a(binary("DTSD_BIN"), cluster.node_args("a", port_a), true);
  process b(binary("DTSD_BIN"), cluster.node_args("b", port_b), true);
  REQUIRE(eventually([&] { return cluster.split_between("a", "b"); }, 30s));
  const auto address_a = "127.0.0.1:" + std::to_string(port_a), address_b = "127.0.0.1:" + std::to_string(port_b);
  process worker(binary("FEATURE_WORKER_BIN"), {address_a});
  auto client_a = connect(address_a);
  auto client_b = connect(address_b);
  const std::vector<sdk::client*> nodes{client_a.get(), client_b.get()};
  const auto owners = cluster.owners();
  const std::map<std::string, std::string> probes{{"a", id_owned_by(owners, "a", "probe-")},
                                                  {"b", id_owned_by(owners, "b", "probe-")}};
  for (const auto& [node, id] : probes) {
    sdk::start_options options;
    options.instance_id = id;
    REQUIRE(on_owner(nodes, [&](sdk::client& c) { return c.start("WaitEvent", sdk::json(), options); }, 10s));
  }
  auto first = start_parents(nodes, "leader-", 10);

  // The leader dies: etcd elects another and keeps every lease; no claim changes.
  const auto before = cluster.claims();
  const auto leader = cluster.etcd.leader();
  REQUIRE(leader);
  cluster.etcd.stop(*leader);
  REQUIRE(eventually([&] { return cluster.etcd.leader().has_value(); }, 20s));
  std::this_thread::sleep_for(4s);  // Twice the nodes' lease.
  const auto after = cluster.claims();
  REQUIRE(after.size() == partitions);
  for (const auto& [index, held] : before) {
    CHECK_MESSAGE(after.at(index).owner == held.owner, "partition " << index);
    CHECK_MESSAGE(after.at(index).epoch == held.epoch, "partition " << index);
  }
  for (const auto& id : first) {
    auto done = on_owner(nodes, [&](sdk::client& c) { return c.wait_for_completion(id, 60s); }, 20s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    check_parent(*client_a, id, *done);
  }
  cluster.etcd.start(*leader);  // Back as a follower.
  REQUIRE(eventually([&] { return cluster.etcd.leader().has_value(); }, 20s));
  std::this_thread::sleep_for(1s);

  // Two of three gone: no quorum, no renewal. Each node stops serving its own
  // partitions before its lease could have ended.
  // (The leader among them: a leader left alone would go on renewing leases until
  // it notices it lost its quorum, an election timeout later, and the leases it
  // renewed would rightly be held that much longer.)
  const auto lead = cluster.etcd.leader();
  REQUIRE(lead);
  const std::vector<std::size_t> stopped{*lead, (*lead + 1) % 3};
  for (auto i : stopped) cluster.etcd.stop(i);
  const auto lost_at = steady::now();
  std::map<std::string, steady::time_point> last_ok;
  std::map<std::string, sdk::client*> at{{"a", client_a.get()}, {"b", client_b.get()}};
  while (steady::now() < lost_at + 5s) {
    for (const auto& [node, id] : probes) {
      auto got = at.at(node)->get(id);
      if (got && *got) last_ok[node] = steady::now();
    }
    std::this_thread::sleep_for(20ms);
  }
  for (const auto& [node, id] : probes) {
    auto refused = at.at(node)->get(id);
    REQUIRE_FALSE_MESSAGE(refused, node << " still serves " << id << " without etcd");
    CHECK(refused.error().code == errc::unavailable);
    const auto last = last_ok.count(node) ? ms_between(lost_at, last_ok.at(node)) : -1;
    MESSAGE("node " << node << " answered last " << last << " ms after etcd lost its quorum (lease 2000 ms)");
    CHECK(last < 2000);
  }

  // Quorum back: the nodes serve again (their leases kept, or joined anew) and
  // the work goes on.
  for (auto i : stopped) cluster.etcd.start(i);
  REQUIRE(eventually([&] { return cluster.etcd.leader().has_value(); }, 30s));
  for (const auto& [node, id] : probes) {
    auto read = read_anywhere({at.at(node)}, id, 30s);
    CHECK_MESSAGE(read, node << " does not serve " << id << " again");
  }
  auto second = start_parents(nodes, "quorum-", 10);
  for (const auto& id : second) {
    auto done = on_owner(nodes, [&](sdk::client& c) { return c.wait_for_completion(id, 60s); }, 30s);
    REQUIRE_MESSAGE(done, id << ": " << done.error().message);
    check_parent(*client_a, id, *done);
  }
}

TEST_CASE("cluster faults: 2,000 orchestrations of every kind while an owner is killed -9: each ends with its exact "
          "output and a well-formed history; the new owner commits within 5 s") {
  constexpr std::uint32_t count = 8;
  cluster_setup cluster;
  const int port_a = free_port(), port_b = free_port(), dashboard_b = free_port();
  auto a = std::make_unique<process>(
      binary("DTSD_BIN"), cluster.node_args(node_spec{.id = "a", .port = port_a, .partition_count = count}), true);
  process b(binary("DTSD_BIN"),
            cluster.node_args(node_spec{.id = "b", .port = port_b, .dashboard_port = dashboard_b, .partition_count = count}),
            true);
  REQUIRE(eventually([&] { return cluster.split_between("a", "b", count); }, 30s));
  const auto address_a = "127.0.0.1:" + std::to_string(port_a), address_b = "127.0.0.1:" + std::to_string(port_b);
  auto worker_a = std::make_unique<process>(binary("FEATURE_WORKER_BIN"), std::vector<std::string>{address_a});
  process worker_b(binary("FEATURE_WORKER_BIN"), {address_b});
  auto client_a = connect(address_a);
  auto client_b = connect(address_b);

  const auto runs = mixed_workload();
  auto start = [&](const std::vector<sdk::client*>& nodes, const planned_run& run) {
    sdk::start_options options;
    options.instance_id = run.id;
    auto started = on_owner(nodes, [&](sdk::client& c) { return c.start(run.name, run.input, options); }, 20s);
    // (already_exists: an earlier try reached the owner, and its answer was lost with the owner.)
    REQUIRE_MESSAGE((started || started.error().code == errc::already_exists),
                    run.id << ": " << started.error().message);
  };
  // Half started through both nodes; then a dies with its worker, mid-run.
  for (std::size_t i = 0; i < runs.size() / 2; ++i) start({client_a.get(), client_b.get()}, runs[i]);
  std::set<std::uint32_t> lost;
  for (const auto& [index, owner] : cluster.owners()) {
    if (owner == "a") lost.insert(index);
  }
  const auto killed_at = steady::now();
  a->kill_now();
  worker_a->kill_now();
  // Meanwhile: the first commit of each partition b takes over (its commit
  // counter there), while the other half is started through b.
  std::map<std::uint32_t, long long> first_commit_ms;
  std::jthread watch([&](std::stop_token stop) {
    while (!stop.stop_requested() && first_commit_ms.size() < lost.size() && steady::now() < killed_at + 60s) {
      for (const auto& [index, commits] : partition_metric(dashboard_b, "dtsd_partition_commits_total")) {
        if (lost.count(index) && commits > 0 && !first_commit_ms.count(index)) {
          first_commit_ms[index] = ms_between(killed_at, steady::now());
        }
      }
      std::this_thread::sleep_for(20ms);
    }
  });
  for (std::size_t i = runs.size() / 2; i < runs.size(); ++i) start({client_b.get()}, runs[i]);
  watch.join();
  std::string distribution;
  for (const auto& [index, ms] : first_commit_ms) distribution += " p" + std::to_string(index) + "=" + std::to_string(ms);
  MESSAGE("first commit of each partition taken over, ms after the kill (lease 2000 ms):" << distribution);
  CHECK(first_commit_ms.size() == lost.size());
  for (const auto& [index, ms] : first_commit_ms) CHECK_MESSAGE(ms < 5000, "partition " << index);

  // Every event raised; every run ends as planned.
  for (const auto& run : runs) {
    if (!run.raise) continue;
    REQUIRE(client_b->wait_for_start(run.id, 30s));
    auto raised = client_b->raise_event(run.id, "Approval", run.output);
    REQUIRE_MESSAGE(raised, run.id << ": " << raised.error().message);
  }
  for (const auto& run : runs) {
    auto done = client_b->wait_for_completion(run.id, 120s);
    REQUIRE_MESSAGE(done, run.id << ": " << done.error().message);
    CHECK_MESSAGE(done->status == core::runtime_status::completed, run.id);
    CHECK_MESSAGE(sdk::output_of(*done) == run.output, run.id);
    auto history = client_b->history(run.id);
    REQUIRE_MESSAGE(history, run.id << ": " << history.error().message);
    check_well_formed(run.id, *history);
  }
}
