// The cluster's etcd client and membership against a real etcd (Debian's
// etcd-server), started by the test on loopback ports and stopped by PID.

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "../support/etcd.hpp"
#include "cluster/etcd_client.hpp"
#include "cluster/membership.hpp"

using namespace dtsd;
using namespace dtsd::cluster;
using namespace std::chrono_literals;
using test_support::local_etcd;

namespace {

/// Waits (at most `limit`) until `done()`.
template <class Done>
bool eventually(Done done, std::chrono::milliseconds limit = 10s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return done();
}

}  // namespace

TEST_CASE("etcd: --cluster addresses parse, and a bad one is named") {
  auto parsed = parse_etcd_url("etcd://127.0.0.1:2379,10.0.0.2:2379");
  REQUIRE(parsed);
  CHECK(parsed->endpoints == std::vector<std::string>{"127.0.0.1:2379", "10.0.0.2:2379"});
  auto bad = parse_etcd_url("etcd://127.0.0.1");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("127.0.0.1") != std::string::npos);
  CHECK(prefix_end("/dtsd/") == "/dtsd0");
}

TEST_CASE("etcd: create refuses a key that exists, a lease takes its keys with it, a fenced delete needs the revision") {
  local_etcd etcd;
  auto client = etcd.client();
  auto lease = client->grant(2s);
  REQUIRE(lease);
  auto first = client->create("/t/claim", "a", *lease);
  REQUIRE(first);
  CHECK(first->created);
  auto second = client->create("/t/claim", "b", 0);
  REQUIRE(second);
  CHECK_FALSE(second->created);
  REQUIRE(second->existing);
  CHECK(second->existing->value == "a");
  CHECK(second->existing->create_revision == first->revision);
  auto stale = client->erase_if("/t/claim", first->revision - 1);
  REQUIRE(stale);
  CHECK_FALSE(*stale);
  REQUIRE(client->revoke(*lease));
  auto gone = client->get("/t/claim");
  REQUIRE(gone);
  CHECK_FALSE(gone->has_value());
}

TEST_CASE("etcd: a kept lease outlives its TTL; an unkept one expires and its key goes") {
  local_etcd etcd;
  auto client = etcd.client();
  const auto granted_at = std::chrono::steady_clock::now();
  auto kept = client->grant(2s);
  auto unkept = client->grant(2s);
  REQUIRE(kept);
  REQUIRE(unkept);
  REQUIRE(client->put("/t/kept", "x", *kept));
  REQUIRE(client->put("/t/unkept", "y", *unkept));
  lease_keeper keeper(*client, *kept, 2s, granted_at);
  const auto first_deadline = keeper.held_until();
  std::this_thread::sleep_for(3500ms);
  CHECK(keeper.held_until() > first_deadline);
  CHECK(keeper.held_until() > std::chrono::steady_clock::now());
  CHECK_FALSE(keeper.lost());
  CHECK((*client->get("/t/kept")).has_value());
  CHECK_FALSE((*client->get("/t/unkept")).has_value());
  REQUIRE(client->revoke(*kept));
  CHECK(eventually([&] { return keeper.lost(); }));
}

TEST_CASE("etcd: a prefix watch sees every put and delete after its revision, in order") {
  local_etcd etcd;
  auto client = etcd.client();
  auto listed = client->list("/w/");
  REQUIRE(listed);
  std::mutex mutex;
  std::vector<std::string> seen;
  prefix_watch watch(
      *client, "/w/", listed->second,
      [&](const std::vector<watch_event>& events, std::int64_t) {
        std::lock_guard lock(mutex);
        for (const auto& e : events) seen.push_back((e.deleted ? "-" : "+") + e.kv.key);
      },
      [&] { return client->list("/w/")->second; });
  REQUIRE(client->put("/w/a", "1"));
  REQUIRE(client->put("/x/outside", "1"));
  REQUIRE(client->put("/w/b", "2"));
  REQUIRE(client->erase_if("/w/a", *client->put("/w/a", "3")));
  CHECK(eventually([&] {
    std::lock_guard lock(mutex);
    return seen.size() == 4;
  }));
  std::lock_guard lock(mutex);
  CHECK(seen == std::vector<std::string>{"+/w/a", "+/w/b", "+/w/a", "-/w/a"});
}

TEST_CASE("cluster: rendezvous hashing spreads partitions and moves only the lost node's") {
  const std::vector<std::string> three{"n1", "n2", "n3"}, two{"n1", "n2"};
  std::map<std::string, int> owned;
  int moved = 0;
  for (std::uint32_t p = 0; p < 300; ++p) {
    const auto before = rendezvous_owner(three, {"default", p});
    ++owned[before];
    const auto after = rendezvous_owner(two, {"default", p});
    if (before != "n3") moved += before != after;
  }
  CHECK(moved == 0);  // Only n3's partitions move.
  for (const auto& [node, count] : owned) CHECK_MESSAGE(count > 60, node << " owns " << count);
  CHECK(rendezvous_owner({}, {"default", 0}).empty());
}

TEST_CASE("cluster: two nodes share a hub's partitions; each claim has one owner and a new owner a higher epoch") {
  local_etcd etcd;
  auto client = etcd.client();
  auto a = membership::join(*client, {"node-a", "127.0.0.1:1", 2s, "/c1/", 100ms});
  REQUIRE_MESSAGE(a, (a ? "" : a.error().message));
  (*a)->serve_hub("default", 12);
  // Alone, it owns them all.
  CHECK(eventually([&] {
    int owned = 0;
    for (std::uint32_t p = 0; p < 12; ++p) owned += (*a)->epoch_of({"default", p}).has_value();
    return owned == 12;
  }));
  const auto alone = (*a)->claims();

  auto b = membership::join(*client, {"node-b", "127.0.0.1:2", 2s, "/c1/", 100ms});
  REQUIRE(b);
  (*b)->serve_hub("default", 12);
  // Together: each partition owned by the node rendezvous names, by exactly one.
  auto settled = [&] {
    for (std::uint32_t p = 0; p < 12; ++p) {
      const auto wanted = rendezvous_owner({"node-a", "node-b"}, {"default", p});
      const bool by_a = (*a)->epoch_of({"default", p}).has_value(), by_b = (*b)->epoch_of({"default", p}).has_value();
      if (by_a == by_b || (wanted == "node-a") != by_a) return false;
    }
    return true;
  };
  CHECK(eventually(settled));
  for (const auto& [partition, held] : (*b)->claims()) {
    if (held.owner == "node-b") CHECK(held.epoch > alone.at(partition).epoch);
  }
  // The same id again is refused while node-b lives.
  auto twin = membership::join(*client, {"node-b", "127.0.0.1:3", 2s, "/c1/", 100ms});
  REQUIRE_FALSE(twin);
  CHECK(twin.error().code == errc::already_exists);
  CHECK(twin.error().message.find("127.0.0.1:2") != std::string::npos);

  // node-b leaves: node-a owns everything again.
  (*b)->leave();
  b->reset();
  CHECK(eventually([&] {
    for (std::uint32_t p = 0; p < 12; ++p) {
      if (!(*a)->epoch_of({"default", p})) return false;
    }
    return true;
  }));
}

TEST_CASE("cluster: a node that stops renewing (killed) loses its claims after its TTL and the others take them") {
  local_etcd etcd;
  auto client = etcd.client();
  auto a = membership::join(*client, {"node-a", "127.0.0.1:1", 2s, "/c2/", 100ms});
  REQUIRE(a);
  // A node that dies without a word: its key and claims live only on a lease nobody renews.
  auto lease = client->grant(2s);
  REQUIRE(lease);
  REQUIRE(client->create("/c2/nodes/node-dead", "127.0.0.1:9", *lease));
  std::vector<std::uint32_t> dead_owned;
  for (std::uint32_t p = 0; p < 8; ++p) {
    if (rendezvous_owner({"node-a", "node-dead"}, {"default", p}) == "node-dead") {
      REQUIRE(client->create("/c2/partitions/default/" + std::to_string(p), "node-dead", *lease));
      dead_owned.push_back(p);
    }
  }
  REQUIRE_FALSE(dead_owned.empty());
  const auto killed_at = std::chrono::steady_clock::now();
  (*a)->serve_hub("default", 8);
  std::this_thread::sleep_for(500ms);
  for (auto p : dead_owned) CHECK_FALSE((*a)->epoch_of({"default", p}));  // Not before the TTL.
  CHECK(eventually([&] {
    for (auto p : dead_owned) {
      if (!(*a)->epoch_of({"default", p})) return false;
    }
    return true;
  }));
  const auto took = std::chrono::steady_clock::now() - killed_at;
  CHECK(took >= 1900ms);
  CHECK(took < 6s);
}
