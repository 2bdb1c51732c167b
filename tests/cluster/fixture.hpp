#pragma once
// What the cluster tests share: an etcd and a data directory for the nodes, each
// node's arguments, who owns which partition, and waits bounded in time.

#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <set>

#include "../integration/processes.hpp"
#include "../support/etcd.hpp"
#include "cluster/membership.hpp"
#include "core/ids.hpp"

namespace cluster_test {

using namespace dtsd;
using namespace integration;
using namespace std::chrono_literals;


constexpr std::uint32_t partitions = 4;

/// Waits (at most `limit`) until `done()`.
template <class Done>
inline bool eventually(Done done, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return done();
}

/// One node's command line, beyond the defaults.
struct node_spec {
  std::string id{};
  int port = 0;            ///< Its native API (and what it advertises, unless `advertise` is set).
  int dashboard_port = 0;  ///< 0: no dashboard.
  std::string etcd{};      ///< --cluster; empty: every member of the test's etcd.
  std::string advertise{}; ///< Where the other nodes reach it (a proxy, to cut it off).
  int lease_seconds = 2;
  std::uint32_t partition_count = partitions;  ///< Of the hub `default`.
  std::vector<std::string> extra{};  ///< More flags (TLS, --auth).
};

struct cluster_setup {
  test_support::local_etcd etcd;
  std::unique_ptr<cluster::etcd_client> client = etcd.client();
  std::filesystem::path data_dir =
      std::filesystem::temp_directory_path() / ("dtsd-cluster-" + std::to_string(getpid()));
  explicit cluster_setup(int etcd_members = 1) : etcd(etcd_members) { std::filesystem::remove_all(data_dir); }
  ~cluster_setup() { std::filesystem::remove_all(data_dir); }

  std::string url() const { return "etcd://" + etcd.endpoint; }

  std::vector<std::string> node_args(const node_spec& spec) const {
    const auto address = "127.0.0.1:" + std::to_string(spec.port);
    const auto dashboard =
        spec.dashboard_port ? "127.0.0.1:" + std::to_string(spec.dashboard_port) : std::string("off");
    std::vector<std::string> args{"--cluster", spec.etcd.empty() ? url() : "etcd://" + spec.etcd, "--node-id", spec.id,
            "--advertise", spec.advertise.empty() ? address : spec.advertise, "--listen", address,
            "--grpc-listen", "127.0.0.1:0", "--dashboard-listen", dashboard, "--data-dir", data_dir.string(),
            "--partitions", std::to_string(spec.partition_count), "--node-lease-seconds", std::to_string(spec.lease_seconds),
            "--log-level", std::getenv("DTSD_TEST_LOG_LEVEL") ? std::getenv("DTSD_TEST_LOG_LEVEL") : "warn"};
    args.insert(args.end(), spec.extra.begin(), spec.extra.end());
    return args;
  }
  /// A node's arguments; it listens (native API) on `port`, and serves the
  /// dashboard on `dashboard_port` if one is given.
  std::vector<std::string> node_args(const std::string& id, int port, int dashboard_port = 0) const {
    return node_args(node_spec{.id = id, .port = port, .dashboard_port = dashboard_port});
  }

  /// Who owns each partition of `default` (empty for one not claimed).
  std::map<std::uint32_t, std::string> owners() {
    std::map<std::uint32_t, std::string> out;
    auto view = cluster::read_cluster(*client);
    REQUIRE(view);
    for (const auto& [partition, held] : view->claims) {
      if (partition.hub == "default") out[partition.index] = held.owner;
    }
    return out;
  }
  /// Each partition's claim of `default` (owner and epoch), as etcd holds it now.
  std::map<std::uint32_t, cluster::claim> claims() {
    std::map<std::uint32_t, cluster::claim> out;
    auto view = cluster::read_cluster(*client);
    REQUIRE(view);
    for (const auto& [partition, held] : view->claims) {
      if (partition.hub == "default") out[partition.index] = held;
    }
    return out;
  }
  /// Both nodes own some of the partitions, and every one of `count` is owned.
  bool split_between(const std::string& a, const std::string& b, std::uint32_t count = partitions) {
    return owned_by(a) > 0 && owned_by(b) > 0 && owners().size() == count;
  }
  std::size_t owned_by(const std::string& node) {
    std::size_t count = 0;
    for (const auto& [index, owner] : owners()) count += owner == node;
    return count;
  }
};

/// Nodes a and b of `cluster` on loopback, started and sharing the hub's partitions.
struct two_nodes {
  int port_a = free_port(), port_b = free_port();
  std::string address_a = "127.0.0.1:" + std::to_string(port_a), address_b = "127.0.0.1:" + std::to_string(port_b);
  process a, b;
  explicit two_nodes(cluster_setup& cluster)
      : a(binary("DTSD_BIN"), cluster.node_args("a", port_a), true),
        b(binary("DTSD_BIN"), cluster.node_args("b", port_b), true) {
    REQUIRE(eventually([&] { return cluster.split_between("a", "b"); }, 20s));
  }
};

/// The instance's record, read at whichever node serves it; waits (bounded) while
/// its partition moves.
inline std::optional<core::instance_record> read_anywhere(const std::vector<sdk::client*>& nodes, const std::string& id,
                                                   std::chrono::milliseconds limit) {
  std::optional<core::instance_record> found;
  eventually(
      [&] {
        for (auto* node : nodes) {
          auto got = node->get(id);
          if (got && *got) {
            found = **got;
            return true;
          }
        }
        return false;
      },
      limit);
  return found;
}

/// Sends an HTTP request to 127.0.0.1:`port` and returns the response's body;
/// none when it cannot (safe on any thread: no test macros).
inline std::optional<std::string> try_http_request(int port, const std::string& method, const std::string& path,
                                                   const std::string& body = {}) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const auto request = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                       "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
    char buffer[4096];
    for (ssize_t got; (got = read(fd, buffer, sizeof buffer)) > 0;) {
      response.append(buffer, static_cast<std::size_t>(got));
    }
  }
  close(fd);
  const auto at = response.find("\r\n\r\n");
  if (at == std::string::npos) return std::nullopt;
  return response.substr(at + 4);
}
inline std::string http_request(int port, const std::string& method, const std::string& path,
                                const std::string& body = {}) {
  auto answered = try_http_request(port, method, path, body);
  REQUIRE_MESSAGE(answered, method << " " << path << " at port " << port << " got no HTTP answer");
  return *answered;
}
inline std::string http_post(int port, const std::string& path, const std::string& body) {
  return http_request(port, "POST", path, body);
}

/// Each of a node's partition counters `name` in its /metrics (hub `default`);
/// empty when it does not answer (safe on any thread: no test macros).
inline std::map<std::uint32_t, double> partition_metric(int dashboard_port, const std::string& name) {
  std::map<std::uint32_t, double> out;
  const auto text = try_http_request(dashboard_port, "GET", "/metrics");
  if (!text) return out;
  const auto prefix = name + "{task_hub=\"default\",partition=\"";
  for (std::size_t at = 0; (at = text->find(prefix, at)) != std::string::npos;) {
    at += prefix.size();
    const auto end = text->find("} ", at);
    if (end == std::string::npos) break;
    const auto index = static_cast<std::uint32_t>(std::strtoul(text->c_str() + at, nullptr, 10));
    out[index] = std::strtod(text->c_str() + end + 2, nullptr);
    at = end;
  }
  return out;
}

/// Every history a run may leave: started and completed once; each task, sub-
/// orchestration, timer and entity call answered exactly once.
inline void check_well_formed(const std::string& id, const std::vector<core::history_event>& history) {
  namespace ev = core::events;
  INFO("instance " << id);
  int starts = 0, ends = 0;
  std::map<std::int32_t, int> tasks, subs, timers;
  std::map<std::string, int> calls;
  for (const auto& event : history) {
    std::visit(
        [&](const auto& body) {
          using kind = std::decay_t<decltype(body)>;
          if constexpr (std::is_same_v<kind, ev::execution_started>) ++starts;
          if constexpr (std::is_same_v<kind, ev::execution_completed>) ++ends;
          if constexpr (std::is_same_v<kind, ev::task_scheduled>) tasks[event.event_id] += 0;
          if constexpr (std::is_same_v<kind, ev::task_completed> || std::is_same_v<kind, ev::task_failed>) {
            ++tasks[body.task_scheduled_id];
          }
          if constexpr (std::is_same_v<kind, ev::sub_orchestration_created>) subs[event.event_id] += 0;
          if constexpr (std::is_same_v<kind, ev::sub_orchestration_completed> ||
                        std::is_same_v<kind, ev::sub_orchestration_failed>) {
            ++subs[body.task_scheduled_id];
          }
          if constexpr (std::is_same_v<kind, ev::timer_created>) timers[event.event_id] += 0;
          if constexpr (std::is_same_v<kind, ev::timer_fired>) ++timers[body.timer_id];
          if constexpr (std::is_same_v<kind, ev::entity_operation_called>) calls[body.request_id] += 0;
          if constexpr (std::is_same_v<kind, ev::entity_operation_completed> ||
                        std::is_same_v<kind, ev::entity_operation_failed>) {
            ++calls[body.request_id];
          }
        },
        event.body);
  }
  CHECK(starts == 1);
  CHECK(ends == 1);
  for (const auto& [task, answers] : tasks) CHECK_MESSAGE(answers == 1, "task " << task);
  for (const auto& [sub, answers] : subs) CHECK_MESSAGE(answers == 1, "sub-orchestration " << sub);
  for (const auto& [timer, fired] : timers) CHECK_MESSAGE(fired == 1, "timer " << timer);
  for (const auto& [request, answers] : calls) CHECK_MESSAGE(answers == 1, "entity call " << request);
}

/// `call` at whichever node serves its instance: tried at each node in turn while
/// they answer UNAVAILABLE (served elsewhere, or moving), for at most `limit`.
template <class Call>
auto on_owner(const std::vector<sdk::client*>& nodes, Call call, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    for (auto* node : nodes) {
      auto answer = call(*node);
      if (answer || answer.error().code != errc::unavailable || std::chrono::steady_clock::now() > until) {
        return answer;
      }
    }
    std::this_thread::sleep_for(50ms);
  }
}

/// A "Parent" (feature_worker: three children, the sum of their doubled inputs)
/// that ended well: completed with 12, each child's completion in its history once.
inline void check_parent(sdk::client& client, const std::string& id, const core::instance_record& done) {
  CHECK_MESSAGE(done.status == core::runtime_status::completed, id);
  CHECK_MESSAGE(sdk::output_of(done) == 12, id);
  auto history = client.history(id);
  REQUIRE_MESSAGE(history, id << ": " << history.error().message);
  int completions = 0;
  for (const auto& event : *history) {
    completions += std::holds_alternative<core::events::sub_orchestration_completed>(event.body);
  }
  CHECK_MESSAGE(completions == 3, id);
}

/// Starts "Parent" instances `prefix`0.. at whichever node serves each.
inline std::vector<std::string> start_parents(const std::vector<sdk::client*>& nodes, const std::string& prefix,
                                              int count) {
  std::vector<std::string> ids;
  for (int i = 0; i < count; ++i) {
    sdk::start_options options;
    options.instance_id = prefix + std::to_string(i);
    auto started = on_owner(nodes, [&](sdk::client& c) { return c.start("Parent", sdk::json(), options); }, 10s);
    REQUIRE_MESSAGE(started, started.error().message);
    ids.push_back(*started);
  }
  return ids;
}

}  // namespace cluster_test
