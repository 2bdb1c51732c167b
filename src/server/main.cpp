// dtsd: the scheduler server. Flags, environment variables and an optional TOML
// file (--config) configure it; SIGTERM or SIGINT drains (every partition commits
// what it holds) and exits 0.

#include <arpa/inet.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <map>
#include <sstream>
#include <thread>

#include "auth/authority.hpp"
#include "auth/tls_files.hpp"
#include "core/retention.hpp"
#include "actors/scheduler.hpp"
#include "cluster/etcd_client.hpp"
#include "cluster/membership.hpp"
#include "cluster/node.hpp"
#include "export/jobs.hpp"
#include "service/entity_cleaner.hpp"
#include "service/service.hpp"
#include "core/ids.hpp"
#include "dashboard/http_server.hpp"
#include "dashboard/rest_api.hpp"
#include "grpc/grpc_server.hpp"
#include "codec/codec.hpp"
#include "rpc/capnp_server.hpp"
#include "rpc/forwarding_router.hpp"
#include "rpc/node_links.hpp"
#include "store/kv.hpp"

using namespace dtsd;

namespace {

struct options {
  std::string data_dir = "./dtsd-data";
  std::string task_hubs = "default";
  std::uint32_t partitions = 12;
  std::string durability = "fsync";
  std::string listen = "127.0.0.1:8081";
  std::string grpc_listen = "localhost:8080";
  std::string dashboard_listen = "localhost:8082";
  std::uint32_t grpc_default_concurrency = 1000;
  std::int64_t lease_seconds = 300;
  std::int64_t keep_alive_seconds = 30;
  int threads = 0;
  std::size_t commit_threads = 2;
  std::size_t payload_limit_bytes = core::payload_bytes_default;
  std::string log_level = "info";
  std::uint64_t log_retention = 10000;
  /// The retention of hubs without a policy of their own: for every terminal
  /// status, and per status ("": as the default).
  std::string retention_default = "30d";
  std::map<core::runtime_status, std::string> retention_by_status;
  std::size_t retention_purges_max = 64;
  std::string entity_clean_period = "5m";
  std::string export_dir;  ///< Empty: DATA_DIR/exports.
  bool compact_at_start = false;
  std::string cluster;
  std::string node_id;
  std::string advertise;
  std::int64_t node_lease_seconds = 3;
  bool auth = false;
  std::string auth_dir;
  bool insecure_no_auth = false;
  auth::tls_files tls;
  std::string tls_peer_ca;
  auth::token_limits limits;
};

/// Whether a listen address ("host:port") takes connections from this machine only:
/// "localhost", ::1, or an IPv4 literal in 127.0.0.0/8 (a name is not resolved:
/// any other name counts as reaching beyond).
bool loopback_only(const std::string& address) {
  const auto colon = address.rfind(':');
  auto host = colon == std::string::npos ? address : address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost" || host == "::1") return true;
  in_addr v4{};
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

std::vector<std::string> split_hubs(const std::string& list) {
  std::vector<std::string> hubs;
  std::stringstream items(list);
  for (std::string hub; std::getline(items, hub, ',');) {
    hub.erase(0, hub.find_first_not_of(" \t"));
    hub.erase(hub.find_last_not_of(" \t") + 1);
    if (!hub.empty()) hubs.push_back(hub);
  }
  return hubs;
}

int fail(const std::string& message) {
  std::fprintf(stderr, "dtsd: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  CLI::App app{"dtsd - a self-hosted Durable Task Scheduler"};
  app.set_config("--config", "", "TOML file with any of these options (flags win)");
  app.add_option("--data-dir", opts.data_dir, "Where partitions keep their data")->envname("DTSD_DATA_DIR")->capture_default_str();
  app.add_option("--task-hubs", opts.task_hubs, "Comma-separated task hubs to open")->envname("DTS_TASK_HUB_NAMES")->capture_default_str();
  app.add_option("--partitions", opts.partitions, "Partitions of a new task hub")->check(CLI::Range(1u, core::partition_count_max))->capture_default_str();
  app.add_option("--durability", opts.durability, "fsync | nosync | memory")->check(CLI::IsMember({"fsync", "nosync", "memory"}))->capture_default_str();
  app.add_option("--listen", opts.listen, "Address of the native Cap'n Proto API")->envname("DTSD_LISTEN")->capture_default_str();
  app.add_option("--grpc-listen", opts.grpc_listen, "Address of the Durable Task gRPC API (official SDKs)")->envname("DTSD_GRPC_LISTEN")->capture_default_str();
  app.add_option("--dashboard-listen", opts.dashboard_listen, "Address of the dashboard and its REST API ('off': none)")->envname("DTSD_DASHBOARD_LISTEN")->capture_default_str();
  app.add_option("--grpc-default-concurrency", opts.grpc_default_concurrency, "Work items of each kind pushed to a gRPC worker that sets no limit")->check(CLI::Range(1u, 100000u))->capture_default_str();
  app.add_option("--lease-seconds", opts.lease_seconds, "How long a worker may hold a work item")->check(CLI::Range(1, 86400))->capture_default_str();
  app.add_option("--keep-alive-seconds", opts.keep_alive_seconds, "Keep-alive interval for idle workers")->check(CLI::Range(1, 3600))->capture_default_str();
  app.add_option("--threads", opts.threads, "Actor scheduler threads (0: one per core)")->check(CLI::Range(0, 256))->capture_default_str();
  app.add_option("--commit-threads", opts.commit_threads, "Threads committing partition batches, shared by all partitions")->check(CLI::Range(std::size_t{1}, std::size_t{64}))->capture_default_str();
  app.add_option("--payload-limit-bytes", opts.payload_limit_bytes, "Largest input, output, event or status")->check(CLI::Range(std::size_t{1}, std::size_t{64} << 20))->capture_default_str();
  app.add_option("--log-retention", opts.log_retention, "Partition log records kept for replay and inspection (0: all)")->capture_default_str();
  app.add_option("--retention-default", opts.retention_default, "How long ended orchestrations are kept before they are purged, for hubs without a policy of their own (dtsctl retention set): 30d, 12h, 0s, or forever")->envname("DTSD_RETENTION_DEFAULT")->capture_default_str();
  for (auto status : core::retained_statuses) {
    auto name = std::string(core::to_string(status));
    std::string lower;
    for (char c : name) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    app.add_option("--retention-" + lower, opts.retention_by_status[status],
                   "The same for orchestrations that ended " + name + " (default: --retention-default)");
  }
  app.add_flag("--compact-at-start", opts.compact_at_start, "Rewrite the data directory's stores without their free pages before serving (as dtsctl compact)");
  app.add_option("--export-dir", opts.export_dir,
                 "Where export jobs (REST /v1/taskhubs/exports) write their files (default: DATA_DIR/exports)")
      ->envname("DTSD_EXPORT_DIR");
  app.add_option("--entity-clean-period", opts.entity_clean_period,
                 "How often empty entities (no state, lock or waiting messages for this long) are removed and locks of "
                 "ended orchestrations released, in every hub (0s: never)")
      ->envname("DTSD_ENTITY_CLEAN_PERIOD")
      ->capture_default_str();
  app.add_option("--retention-purges-max", opts.retention_purges_max, "Retention purges each partition has under way at once (they ride in its ordinary commits)")->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--log-level", opts.log_level, "trace | debug | info | warn | error")->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))->capture_default_str();
  app.add_option("--cluster", opts.cluster, "Join a cluster coordinated by etcd: etcd://host:port[,host:port...]")->envname("DTSD_CLUSTER");
  app.add_option("--node-id", opts.node_id, "This node's id in the cluster (unique)")->envname("DTSD_NODE_ID");
  app.add_option("--advertise", opts.advertise, "Where other nodes and clients reach this node (default: the native API's address)")->envname("DTSD_ADVERTISE");
  app.add_option("--node-lease-seconds", opts.node_lease_seconds, "TTL of the node's etcd lease: a dead node's partitions move after it")->check(CLI::Range(2, 60))->capture_default_str();
  app.add_flag("--auth", opts.auth, "Require a token on every gRPC, native and REST call (dtsctl token create); see README, Security")->envname("DTSD_AUTH");
  app.add_option("--auth-dir", opts.auth_dir, "Signing key and token registry (default: DATA-DIR/auth)")->envname("DTSD_AUTH_DIR");
  app.add_option("--tls-cert", opts.tls.cert, "PEM certificate (chain): the gRPC endpoint, the native API and the dashboard serve TLS")->envname("DTSD_TLS_CERT");
  app.add_option("--tls-key", opts.tls.key, "PEM private key of --tls-cert")->envname("DTSD_TLS_KEY");
  app.add_option("--tls-client-ca", opts.tls.client_ca, "PEM CA: clients must present a certificate it signed (mTLS)")->envname("DTSD_TLS_CLIENT_CA");
  app.add_option("--tls-peer-ca", opts.tls_peer_ca, "PEM CA that signed the other nodes' --tls-cert (cluster; default: --tls-client-ca, else the system's)")->envname("DTSD_TLS_PEER_CA");
  app.add_option("--token-streams-max", opts.limits.streams_max, "With --auth: work streams and waits one token may hold at once")->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))->capture_default_str();
  app.add_option("--token-calls-per-second", opts.limits.calls_per_second, "With --auth: changes (start, raise, purge...) one token may make a second")->check(CLI::Range(1.0, 1e7))->capture_default_str();
  app.add_flag("--insecure-no-auth", opts.insecure_no_auth, "Serve an address other than loopback without tokens (anyone who reaches it may do anything)");
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(opts.log_level));
  // Safe by default: open on loopback as the DTS emulator is; past it, tokens.
  {
    const bool dashboard_local = opts.dashboard_listen == "off" || loopback_only(opts.dashboard_listen);
    const bool open_beyond = !loopback_only(opts.grpc_listen) || !loopback_only(opts.listen) || !dashboard_local;
    if (open_beyond && !opts.auth && !opts.insecure_no_auth) {
      return fail(fmt::format(
          "refusing to serve beyond this machine without tokens (--grpc-listen {}, --listen {}, --dashboard-listen {}). "
          "Create a token with 'dtsctl token create --role contributor --task-hub \'*\' --data-dir {}' and start "
          "with --auth, or give --insecure-no-auth to serve everyone",
          opts.grpc_listen, opts.listen, opts.dashboard_listen, opts.data_dir));
    }
    if (opts.auth && (!loopback_only(opts.grpc_listen) || !loopback_only(opts.listen)) && !opts.tls.enabled()) {
      spdlog::warn("--auth without --tls-cert: tokens cross the network in clear text on --grpc-listen {} and "
                   "--listen {}; anyone who can read the traffic can use them", opts.grpc_listen, opts.listen);
    }
    if (open_beyond && opts.insecure_no_auth) {
      spdlog::warn("--insecure-no-auth: dtsd serves beyond loopback with no tokens; anyone who reaches it may start, "
                   "read, change and purge every task hub's instances");
    }
  }
  if (auto usable = auth::check(opts.tls); !usable) return fail(usable.error().message);
  std::unique_ptr<auth::authority> authority;
  if (opts.auth) {
    const auto dir = opts.auth_dir.empty() ? std::filesystem::path(opts.data_dir) / "auth" : std::filesystem::path(opts.auth_dir);
    auto opened = auth::authority::open(dir, opts.limits);
    if (!opened) return fail(opened.error().message);
    authority = std::move(*opened);
    if (authority->known_tokens() == 0) {
      spdlog::warn("--auth: no token issued yet; create one with: dtsctl token create --role contributor "
                   "--task-hub '*' --auth-dir {}", dir.string());
    }
  }
  auto hubs = split_hubs(opts.task_hubs);
  if (hubs.empty()) return fail("--task-hubs names no task hub");
  for (const auto& hub : hubs) {
    if (auto valid = core::validate_task_hub_name(hub); !valid) return fail(valid.error().message);
  }

  // Signals are taken by sigwait below; every thread started from here inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);  // Not a stop: the TLS files are read again.
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  actors::scheduler_config config;
  config.data_dir = opts.data_dir;
  config.durability = opts.durability == "memory"   ? store::durability::memory
                      : opts.durability == "nosync" ? store::durability::nosync
                                                    : store::durability::fsync;
  config.partition_count = opts.partitions;
  config.lease_ms = opts.lease_seconds * 1000;
  config.keep_alive_ms = opts.keep_alive_seconds * 1000;
  config.log_retention_records = opts.log_retention;
  {
    auto rule_of = [](const std::string& flag, const std::string& text) -> expected<core::retention_rule> {
      if (text == "forever") return core::retention_rule{true, 0};
      auto seconds = core::parse_duration(text);
      if (!seconds) return error{errc::invalid_argument, flag + ": " + seconds.error().message + ", or forever"};
      return core::retention_rule{false, *seconds};
    };
    auto fallback = rule_of("--retention-default", opts.retention_default);
    if (!fallback) return fail(fallback.error().message);
    config.default_retention.fallback = *fallback;
    for (const auto& [status, text] : opts.retention_by_status) {
      if (text.empty()) continue;
      auto rule = rule_of("--retention-" + std::string(core::to_string(status)), text);
      if (!rule) return fail(rule.error().message);
      config.default_retention.by_status[status] = *rule;
    }
    config.retention_purges_max = opts.retention_purges_max;
    if (auto period = core::parse_duration(opts.entity_clean_period); !period) {
      return fail("--entity-clean-period: " + period.error().message);
    }
    spdlog::info("retention of task hubs without a policy of their own: {}", core::describe(config.default_retention));
  }
  config.commit_threads = opts.commit_threads;
  auto& limits = config.limits;
  limits.orchestration_input_bytes_max = limits.orchestration_output_bytes_max = opts.payload_limit_bytes;
  limits.activity_input_bytes_max = limits.activity_output_bytes_max = opts.payload_limit_bytes;
  limits.event_data_bytes_max = limits.custom_status_bytes_max = opts.payload_limit_bytes;
  limits.entity_state_bytes_max = opts.payload_limit_bytes;
  const int threads = opts.threads > 0 ? opts.threads : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));

  if (opts.compact_at_start && config.durability != store::durability::memory) {
    // Before any store is open here. A partition another process has open (a node
    // of the cluster on this machine) is left as it is.
    auto found = store::partition_directories(opts.data_dir);
    if (!found) return fail(found.error().message);
    std::uint64_t before = 0, after = 0;
    for (std::size_t i = 0; i < found->size(); ++i) {
      auto done = store::compact_lmdb((*found)[i]);
      if (!done && done.error().code == errc::failed_precondition) {
        spdlog::warn("--compact-at-start: {}; left as it is", done.error().message);
        continue;
      }
      if (!done) return fail("--compact-at-start: " + done.error().message);
      before += done->bytes_before;
      after += done->bytes_after;
      spdlog::info("--compact-at-start: [{}/{}] {}: {:.1f} MiB -> {:.1f} MiB", i + 1, found->size(), (*found)[i],
                   static_cast<double>(done->bytes_before) / 1048576.0, static_cast<double>(done->bytes_after) / 1048576.0);
    }
    spdlog::info("--compact-at-start: {} partitions, {:.1f} MiB -> {:.1f} MiB", found->size(),
                 static_cast<double>(before) / 1048576.0, static_cast<double>(after) / 1048576.0);
  }

  // A cluster node: registered in etcd, serving the partitions it comes to own.
  std::unique_ptr<cluster::etcd_client> etcd;
  std::unique_ptr<cluster::membership> member;
  // What the routing threads read of `member`: set once it has joined.
  std::atomic<cluster::membership*> joined_member{nullptr};
  std::unique_ptr<cluster::node> cluster_node;
  std::unique_ptr<rpc::node_links> links;
  std::unique_ptr<service::router> router;
  std::unique_ptr<service::router> local_router;  ///< A cluster node's own partitions (router forwards).
  rpc::forwarding_router* forwarding = nullptr;
  service::partition_host* host = nullptr;
  if (!opts.cluster.empty()) {
    if (opts.node_id.empty()) return fail("--cluster needs --node-id (a name unique in the cluster)");
    if (config.durability == store::durability::memory) {
      return fail("--durability memory cannot be used in a cluster: a partition moves to another node through its data");
    }
    auto endpoints = cluster::parse_etcd_url(opts.cluster);
    if (!endpoints) return fail("--cluster: " + endpoints.error().message);
    auto connected = cluster::etcd_client::connect(*endpoints);
    if (!connected) return fail(connected.error().message);
    etcd = std::move(*connected);
    // With TLS, a node reaches the others' native API through it and shows its own
    // certificate (which --tls-client-ca, if set, must have signed).
    rpc::client_tls peer_tls;
    if (opts.tls.enabled()) {
      peer_tls = {opts.tls_peer_ca.empty() ? opts.tls.client_ca : opts.tls_peer_ca, opts.tls.cert, opts.tls.key, {}};
    }
    auto linked = rpc::node_links::start(opts.node_id, authority ? authority->node_token(opts.node_id) : std::string(),
                                         peer_tls);
    if (!linked) return fail(linked.error().message);
    links = std::move(*linked);
    // A partition's message for a partition another node owns goes over its link.
    config.remote = [&links, &joined_member](const std::string& hub, std::uint32_t partition,
                                             const actors::peer_message& message) {
      auto* member = joined_member.load();
      auto address = member ? member->owner_elsewhere({hub, partition}) : std::nullopt;
      if (!address) return;  // Unclaimed (moving), or claimed here and opening: sent again later.
      if (const auto* delivery = std::get_if<actors::peer::delivery>(&message)) {
        links->deliver(*address, hub, partition, store::encode(delivery->entry));
      } else if (const auto* receipt = std::get_if<actors::peer::receipt>(&message)) {
        links->receipt(*address, hub, partition, receipt->from, receipt->sequence);
      }
    };
    auto made = actors::make_node_scheduler(config, threads);
    local_router = std::move(made.router);
    host = made.host;
    auto forwarder = rpc::make_forwarding_router(
        *local_router, *host, *links,
        [&joined_member](const std::string& hub, std::uint32_t partition) {
          auto* member = joined_member.load();
          return member ? member->owner_elsewhere({hub, partition}) : std::nullopt;
        },
        [&joined_member] {
          std::vector<std::string> others;
          auto* member = joined_member.load();
          if (!member) return others;
          for (const auto& [id, address] : member->nodes()) {
            if (id != member->node_id()) others.push_back(address);
          }
          return others;
        });
    forwarding = forwarder.get();
    router = std::move(forwarder);
  } else {
    auto made = actors::make_scheduler(config, hubs, threads);
    if (!made) return fail(made.error().message);
    router = std::move(*made);
  }
  auto scheduler = std::make_unique<service::task_service>(std::move(router), service::service_options{config.limits});
  auto server = rpc::capnp_server::start(*scheduler, opts.listen, host, local_router.get(), authority.get(), opts.tls);
  if (!server) return fail(server.error().message);
  if (etcd) {
    // Joined once the native API listens: other nodes reach this one there.
    cluster::member_options member_options;
    member_options.node_id = opts.node_id;
    member_options.advertise = opts.advertise;
    if (member_options.advertise.empty()) {
      const auto host_part = opts.listen.substr(0, opts.listen.rfind(':'));
      if (host_part == "0.0.0.0" || host_part == "[::]" || host_part == "::") {
        return fail("--advertise is needed when --listen binds every address: say where other nodes reach this one");
      }
      member_options.advertise = host_part + ":" + std::to_string((*server)->port());
    }
    member_options.lease_ttl = std::chrono::seconds(opts.node_lease_seconds);
    auto joined = cluster::membership::join(*etcd, member_options);
    if (!joined) return fail(joined.error().message);
    member = std::move(*joined);
    joined_member = member.get();
  }
  grpc_api::grpc_options grpc_options;
  grpc_options.address = opts.grpc_listen;
  grpc_options.partition_count = opts.partitions;
  grpc_options.default_concurrency = opts.grpc_default_concurrency;
  grpc_options.authority = authority.get();
  grpc_options.tls = opts.tls;
  auto grpc = grpc_api::grpc_server::start(*scheduler, grpc_options);
  if (!grpc) return fail(grpc.error().message);
  std::unique_ptr<dashboard::http_server> http;
  // Unfinished export jobs resume before the REST API can take a new one.
  auto export_jobs = std::make_shared<history_export::jobs>(
      *scheduler, opts.export_dir.empty() ? std::filesystem::path(opts.data_dir) / "exports"
                                          : std::filesystem::path(opts.export_dir));
  export_jobs->resume_all();
  // However main ends, the jobs' threads stop before the service goes (a queued
  // REST call may keep the object itself a little longer).
  struct jobs_stopper {
    std::shared_ptr<history_export::jobs> jobs;
    ~jobs_stopper() { jobs->stop_all(); }
  } stop_jobs_at_exit{export_jobs};
  dashboard::rest_options rest_options;
  rest_options.authority = authority.get();
  rest_options.export_jobs = export_jobs;
  dashboard::rest_endpoint rest(*scheduler, rest_options);
  if (opts.dashboard_listen != "off") {
    dashboard::http_options http_options;
    http_options.address = opts.dashboard_listen;
    // A request carries at most one payload at its limit, with room for the rest.
    http_options.body_bytes_max = opts.payload_limit_bytes + (1u << 20);
    http_options.tls = opts.tls;
    auto started = dashboard::http_server::start(http_options, rest.handler());
    if (!started) return fail(started.error().message);
    http = std::move(*started);
  }

  // Last, so that nothing fails after its thread runs (it calls the router).
  if (member) {
    auto started = cluster::node::start(*member, *host, hubs, opts.partitions);
    if (!started) return fail(started.error().message);
    cluster_node = std::move(*started);
    cluster_node->on_reconciled([forwarding] { forwarding->maintain_sessions(); });
  }
  std::unique_ptr<service::entity_cleaner> cleaner;
  if (const auto period = *core::parse_duration(opts.entity_clean_period); period != 0) {
    cleaner = std::make_unique<service::entity_cleaner>(*scheduler, std::chrono::seconds(period));
  }
  const auto dashboard_port = http ? std::to_string(http->port()) : std::string("off");
  const auto cluster_text = member ? fmt::format(", cluster node '{}'", opts.node_id) : std::string();
  std::printf("dtsd ready: gRPC API on port %u, native API on port %u, dashboard on port %s, task hubs %s, data %s, "
              "durability %s%s\n",
              (*grpc)->port(), (*server)->port(), dashboard_port.c_str(),
              opts.task_hubs.c_str(), config.durability == store::durability::memory ? "(memory)" : opts.data_dir.c_str(),
              opts.durability.c_str(), cluster_text.c_str());
  std::fflush(stdout);

  int signal_number = 0;
  for (;;) {
    sigwait(&stop_signals, &signal_number);
    if (signal_number != SIGHUP) break;
    // gRPC watches its files by itself; the dashboard and the native API read them now.
    if (opts.tls.enabled()) {
      auto report = [](const char* listener, const expected<void>& reloaded) {
        if (!reloaded) {
          spdlog::error("SIGHUP: the {}'s TLS files were not reloaded (it keeps the previous ones): {}", listener,
                        reloaded.error().message);
        } else {
          spdlog::info("SIGHUP: the {}'s TLS files were read again", listener);
        }
      };
      if (http) report("dashboard", http->reload_tls());
      report("native API", (*server)->reload_tls());
    }
  }
  spdlog::info("signal {}: draining", signal_number);
  cleaner.reset();  // Its pass, if one runs, ends at its next page.
  export_jobs->stop_all();  // Each stops between two pages and resumes at the next start.
  if (http) http->stop();
  rest.close();  // No list scan calls the service after this.
  (*grpc)->stop();
  if (cluster_node) {
    // A planned leave: each partition commits what it holds and is handed over
    // (the native API, which carries the node link, still answers meanwhile).
    cluster_node->leave();
    cluster_node.reset();
  }
  (*server)->stop();
  // No answer comes back over the links from here on (their callbacks reach the
  // router, which goes next).
  if (links) links->stop();
  scheduler->drain();
  scheduler.reset();
  local_router.reset();
  links.reset();
  joined_member = nullptr;
  member.reset();
  etcd.reset();
  spdlog::info("stopped cleanly");
  return 0;
}
