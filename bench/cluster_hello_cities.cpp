// Hello cities over a dtsd cluster of 1, 2, 4... nodes on this machine: an etcd on
// loopback, N nodes sharing a data directory, each CPU-capped at the same share
// (cgroups, when this process may write them) with a worker (the C++ SDK's over the
// native API, or the official JS SDK's over gRPC) and a client of its own. Prints
// one JSON line per cluster size: throughput, per-node throughput, scaling
// efficiency against one node, latency percentiles, and the share of starts that
// the called node forwarded to another.
//
//   build/release/bench/cluster_hello_cities --nodes 1,2,4 --count 4000 --cpu-percent 40
//       [--routing any|owner] [--worker-kind cpp|js]

#include <fmt/format.h>

#include <set>
#include <sstream>

#include "cluster/etcd_client.hpp"
#include "cluster/membership.hpp"
#include "core/ids.hpp"
#include "support.hpp"

using namespace dtsd;
using namespace dtsd::bench;

namespace {

/// A cgroup capping one node at `percent` of a core (v2, or v1's cpu controller);
/// none when cgroups cannot be written here.
struct cpu_cap {
  std::filesystem::path dir;
  bool apply(const std::string& name, pid_t pid, int percent) {
    const bool v2 = std::filesystem::exists("/sys/fs/cgroup/cgroup.controllers");
    dir = v2 ? std::filesystem::path("/sys/fs/cgroup") / name : std::filesystem::path("/sys/fs/cgroup/cpu") / name;
    std::error_code failed;
    std::filesystem::create_directories(dir, failed);
    if (failed) return false;
    auto put = [&](const char* file, const std::string& value) {
      std::ofstream out(dir / file);
      out << value;
      return bool(out.flush());
    };
    const auto quota = std::to_string(percent * 1000);
    const bool capped = v2 ? put("cpu.max", quota + " 100000")
                           : put("cpu.cfs_period_us", "100000") && put("cpu.cfs_quota_us", quota);
    return capped && put("cgroup.procs", std::to_string(pid));
  }
  ~cpu_cap() {
    std::error_code ignored;
    if (!dir.empty()) std::filesystem::remove(dir, ignored);
  }
};

struct node_run {
  std::string id;
  std::string address;
  std::string grpc_address;
  pid_t server = -1;
  pid_t worker = -1;
  cpu_cap cap;
};

std::vector<int> parse_sizes(const std::string& text) {
  std::vector<int> sizes;
  std::stringstream items(text);
  for (std::string item; std::getline(items, item, ',');) sizes.push_back(std::stoi(item));
  return sizes;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hello cities over a dtsd cluster of several sizes"};
  std::string sizes_text = "1,2,4";
  int count = 4000;
  int cpu_percent = 40;
  std::uint32_t partitions = 12;
  std::string data_root = "bench-data/cluster_hello_cities";
  auto self_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  std::string dtsd_path = (self_dir / "../src/server/dtsd").string();
  std::string worker_path = (self_dir / "../samples/hello_cities/hello_cities").string();
  int timeout_s = 1800;
  std::string routing = "any";
  std::string worker_kind = "cpp";
  std::string node_path = "node";
  std::string js_worker = (self_dir / "../../../tests/compat/worker.mjs").lexically_normal().string();
  app.add_option("--nodes", sizes_text, "Cluster sizes to run, comma-separated")->capture_default_str();
  app.add_option("--routing", routing,
                 "any: each node's client starts random ids (most are forwarded) and each node's worker gets "
                 "every node's work (relayed); owner: each client starts ids its node owns and each worker takes "
                 "its node's work only (--this-node-only), as a cluster-aware app does")
      ->check(CLI::IsMember({"any", "owner"}))
      ->capture_default_str();
  app.add_option("--worker-kind", worker_kind,
                 "cpp (C++ SDK, native API) | js (official JS SDK over gRPC: it takes every node's work, relayed, "
                 "whatever --routing says)")
      ->check(CLI::IsMember({"cpp", "js"}))
      ->capture_default_str();
  app.add_option("--node", node_path, "Node.js for the js worker")->capture_default_str();
  app.add_option("--js-worker", js_worker, "The JS worker script (needs tests/compat/node_modules: npm ci)")
      ->capture_default_str();
  app.add_option("--count", count, "Orchestrations per run")->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--cpu-percent", cpu_percent, "Each node's CPU cap, percent of one core (0: none)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--partitions", partitions)->check(CLI::Range(1u, 1024u))->capture_default_str();
  app.add_option("--data-dir", data_root, "Emptied first, removed afterwards")->capture_default_str();
  app.add_option("--dtsd", dtsd_path)->capture_default_str();
  app.add_option("--worker", worker_path)->capture_default_str();
  app.add_option("--timeout-s", timeout_s, "Stop everything and fail after this long (0: never)")
      ->check(CLI::Range(0, 86400))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  stop_children_on_exit_signals(timeout_s);

  double one_node_rate = 0;
  bool all_correct = true;
  for (int size : parse_sizes(sizes_text)) {
    if (size < 1 || size > 16) {
      std::fprintf(stderr, "cluster_hello_cities: a cluster size is 1..16\n");
      return 2;
    }
    std::filesystem::remove_all(data_root);
    std::filesystem::create_directories(data_root);
    const auto etcd_port = free_port(), peer_port = free_port();
    const auto etcd_endpoint = "127.0.0.1:" + std::to_string(etcd_port);
    const auto peer_url = "http://127.0.0.1:" + std::to_string(peer_port);
    const pid_t etcd = launch("etcd", {"--name", "bench", "--data-dir", data_root + "/etcd", "--listen-client-urls",
                                       "http://" + etcd_endpoint, "--advertise-client-urls", "http://" + etcd_endpoint,
                                       "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                                       "--initial-cluster", "bench=" + peer_url, "--log-level", "error"});
    auto client = cluster::etcd_client::connect({{etcd_endpoint}, std::chrono::milliseconds(2000)});
    if (!client) return 1;
    bool etcd_up = false;
    for (int i = 0; i < 100 && !etcd_up; ++i) {
      etcd_up = bool((*client)->list("/probe/"));
      if (!etcd_up) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (!etcd_up) {
      std::fprintf(stderr, "cluster_hello_cities: etcd did not start (deploy/install-deps.sh installs it)\n");
      stop(etcd);
      return 1;
    }

    std::vector<std::unique_ptr<node_run>> nodes;
    bool capped = cpu_percent > 0;
    for (int i = 0; i < size; ++i) {
      auto node = std::make_unique<node_run>();
      node->id = "n" + std::to_string(i + 1);
      node->address = "127.0.0.1:" + std::to_string(free_port());
      node->grpc_address = "127.0.0.1:" + std::to_string(free_port());
      node->server = launch(dtsd_path, {"--cluster", "etcd://" + etcd_endpoint, "--node-id", node->id, "--listen",
                                        node->address, "--grpc-listen", node->grpc_address, "--dashboard-listen", "off",
                                        "--data-dir", data_root + "/data", "--partitions", std::to_string(partitions),
                                        "--log-level", "warn"});
      if (cpu_percent > 0) capped = node->cap.apply("dtsd-bench-" + node->id, node->server, cpu_percent) && capped;
      nodes.push_back(std::move(node));
    }
    // Every partition owned, by every node.
    bool balanced = false;
    for (int i = 0; i < 300 && !balanced; ++i) {
      auto view = cluster::read_cluster(**client);
      if (view) {
        std::set<std::string> owners;
        std::size_t claimed = 0;
        for (const auto& [partition, held] : view->claims) {
          if (partition.hub == "default") ++claimed, owners.insert(held.owner);
        }
        balanced = claimed == partitions && owners.size() == std::min<std::size_t>(size, partitions);
      }
      if (!balanced) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    auto view = cluster::read_cluster(**client);
    if (!balanced || !view) {
      std::fprintf(stderr, "cluster_hello_cities: the %d nodes did not take every partition\n", size);
      for (auto& node : nodes) stop(node->server);
      stop(etcd);
      return 1;
    }
    for (auto& node : nodes) {
      std::vector<std::string> worker_args{"worker",         "--address", node->address, "--activities", "256",
                                          "--orchestrators", "1024",      "--threads",   "4"};
      if (routing == "owner") worker_args.push_back("--this-node-only");
      node->worker = worker_kind == "js" ? launch(node_path, {js_worker, node->grpc_address})
                                         : launch(worker_path, worker_args);
    }
    // Workers connected, relays opened (a JS worker takes a moment to start).
    std::this_thread::sleep_for(std::chrono::seconds(worker_kind == "js" ? 3 : 1));

    // Each node's client starts its share, with ids the bench knows (for the
    // forwarded share), and waits for them.
    std::fprintf(stderr, "cluster_hello_cities: %d node(s), %d orchestrations\n", size, count);
    const std::int64_t started_at_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    std::vector<std::vector<double>> latencies(static_cast<std::size_t>(size));
    std::vector<std::int64_t> last_completed(static_cast<std::size_t>(size), 0);
    std::vector<int> correct(static_cast<std::size_t>(size), 0), forwarded(static_cast<std::size_t>(size), 0);
    // Owner routing: ids handed to the node that owns each one's partition.
    std::vector<std::vector<std::string>> owned_ids(static_cast<std::size_t>(size));
    if (routing == "owner") {
      std::map<std::string, std::size_t> index_of;
      for (std::size_t n = 0; n < nodes.size(); ++n) index_of[nodes[n]->id] = n;
      for (int k = 0; k < count; ++k) {
        auto id = fmt::format("hc-{}-{}", size, k);
        const auto& owner = view->claims.at({"default", core::partition_of(id, partitions)}).owner;
        owned_ids[index_of.at(owner)].push_back(std::move(id));
      }
    }
    std::vector<std::thread> runners;
    for (int n = 0; n < size; ++n) {
      runners.emplace_back([&, n] {
        const auto& own = owned_ids[static_cast<std::size_t>(n)];
        const int share =
            routing == "owner" ? static_cast<int>(own.size()) : count / size + (n < count % size ? 1 : 0);
        if (share == 0) return;
        // A client is bound to the thread that made it.
        auto client_of_node = connect(nodes[static_cast<std::size_t>(n)]->address, "cluster_hello_cities");
        auto& c = *client_of_node;
        // Started at once (pipelined over the connection), as the single-node bench does.
        std::vector<std::string> ids;
        for (int attempt = 0; attempt < 100 && ids.empty(); ++attempt) {
          auto started = c.start_many("HelloCities", std::vector<json>(static_cast<std::size_t>(share), json()), own);
          if (started) {
            ids = std::move(*started);
          } else if (started.error().code != errc::unavailable) {
            std::fprintf(stderr, "cluster_hello_cities: %s\n", started.error().message.c_str());
            return;
          } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));  // A partition still opening.
          }
        }
        for (const auto& id : ids) {
          const auto owner = view->claims.find({"default", core::partition_of(id, partitions)});
          if (owner != view->claims.end() && owner->second.owner != nodes[static_cast<std::size_t>(n)]->id) {
            ++forwarded[static_cast<std::size_t>(n)];
          }
        }
        for (const auto& id : ids) {
          auto done = c.wait_for_completion(id, std::chrono::minutes(30));
          if (!done) continue;
          if (done->status == core::runtime_status::completed && sdk::output_of(*done) == expected_output()) {
            ++correct[static_cast<std::size_t>(n)];
          }
          latencies[static_cast<std::size_t>(n)].push_back(
              static_cast<double>(done->completed_at_ns - done->created_at_ns) / 1e6);
          last_completed[static_cast<std::size_t>(n)] =
              std::max(last_completed[static_cast<std::size_t>(n)], done->completed_at_ns);
        }
      });
    }
    for (auto& runner : runners) runner.join();
    std::vector<double> all_latencies;
    int all_correct_count = 0, all_forwarded = 0;
    std::int64_t end_ns = 0;
    for (int n = 0; n < size; ++n) {
      all_latencies.insert(all_latencies.end(), latencies[static_cast<std::size_t>(n)].begin(),
                           latencies[static_cast<std::size_t>(n)].end());
      all_correct_count += correct[static_cast<std::size_t>(n)];
      all_forwarded += forwarded[static_cast<std::size_t>(n)];
      end_ns = std::max(end_ns, last_completed[static_cast<std::size_t>(n)]);
    }
    double dtsd_cpu = 0, worker_cpu = 0;
    for (auto& node : nodes) dtsd_cpu += cpu_seconds(node->server), worker_cpu += cpu_seconds(node->worker);
    const double wall_s = static_cast<double>(end_ns - started_at_ns) / 1e9;
    const double rate = count / wall_s;
    if (size == 1) one_node_rate = rate;
    for (auto& node : nodes) stop(node->worker);
    for (auto& node : nodes) stop(node->server);
    nodes.clear();
    client->reset();
    stop(etcd);
    std::filesystem::remove_all(data_root);
    all_correct = all_correct && all_correct_count == count;
    std::printf(
        "{\"bench\":\"cluster_hello_cities\",\"worker_kind\":\"%s\",\"routing\":\"%s\",\"nodes\":%d,"
        "\"cpu_percent_per_node\":%d,"
        "\"cpu_capped\":%s,"
        "\"n\":%d,\"correct\":%d,\"partitions\":%u,\"wall_s\":%.3f,\"orchestrations_per_s\":%.0f,"
        "\"per_node_per_s\":%.0f,\"scaling_efficiency\":%s,\"p50_ms\":%.1f,\"p99_ms\":%.1f,"
        "\"forwarded_share\":%.2f,\"dtsd_cpu_s\":%.2f,\"worker_cpu_s\":%.2f}\n",
        worker_kind.c_str(), routing.c_str(), size, cpu_percent, capped ? "true" : "false", count, all_correct_count, partitions, wall_s, rate, rate / size,
        one_node_rate > 0 ? fmt::format("{:.2f}", rate / (size * one_node_rate)).c_str() : "null",
        percentile(all_latencies, 0.5), percentile(all_latencies, 0.99),
        static_cast<double>(all_forwarded) / count, dtsd_cpu, worker_cpu);
    std::fflush(stdout);
  }
  return all_correct ? 0 : 1;
}
