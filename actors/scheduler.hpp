#pragma once
/// One node's router (service/router.hpp) over the actor system: a registry of
/// task hubs, each a set of partition actors and a coordinator, that sends every
/// call as a typed message (actors/protocol.hpp) to the partition that owns its
/// instance, or to the hub's coordinator. No transport includes CAF: they call the
/// service, which calls this.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/protocol.hpp"
#include "core/limits.hpp"
#include "service/clock.hpp"
#include "service/partition_host.hpp"
#include "service/router.hpp"
#include "store/kv.hpp"

namespace dtsd::actors {

using service::callback;
using service::work_item;

struct scheduler_config {
  std::string data_dir = "./dtsd-data";
  store::durability durability = store::durability::fsync;
  std::uint32_t partition_count = 12;
  core::payload_limits limits;
  std::int64_t lease_ms = 5 * 60 * 1000;
  std::int64_t keep_alive_ms = 30 * 1000;
  /// Log records each partition keeps (0: all); see partition_store::set_log_retention.
  std::uint64_t log_retention_records = 10000;
  /// Threads committing the batches of every partition (see commit_pool).
  std::size_t commit_threads = 2;
  /// Where partitions and coordinators read the time; must outlive the router.
  const service::clock* clock = &service::wall_clock();
  /// A cluster node's: how a partition's message reaches a partition another node serves.
  remote_peer remote;
  /// The retention of hubs without a policy of their own (core/retention.hpp).
  core::retention_policy default_retention;
  /// Retention purges each partition has under way at most (engine_options).
  std::size_t retention_purges_max = 64;
};

/// Builds the actor system and the router over it; `hubs` are opened (created if
/// new) at once.
expected<std::unique_ptr<service::router>> make_scheduler(const scheduler_config& config,
                                                          const std::vector<std::string>& hubs,
                                                          int scheduler_threads);

/// A cluster node's router: its hubs are added and their partitions served as the
/// cluster decides, through `host` (the router's own, living as long as it). Calls
/// for a partition not served here are refused with errc::unavailable naming who
/// serves it.
struct node_scheduler {
  std::unique_ptr<service::router> router;
  service::partition_host* host = nullptr;
};
node_scheduler make_node_scheduler(const scheduler_config& config, int scheduler_threads);

}  // namespace dtsd::actors
