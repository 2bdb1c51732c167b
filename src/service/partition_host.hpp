#pragma once
/// Which partitions of its hubs a node serves: in a cluster, partitions come and go
/// as their ownership moves between nodes (cluster/node.hpp decides); a single node
/// serves every partition of every hub and never uses this.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"

namespace dtsd::service {

class partition_host {
 public:
  virtual ~partition_host() = default;

  /// Knows the hub (its worker sessions can open) without serving any of its
  /// partitions yet. Nothing happens if it is known already.
  virtual expected<void> add_hub(const std::string& hub, std::uint32_t partition_count) = 0;
  /// Opens partition `index` of the hub from the data directory, fenced with
  /// `epoch` (its store refuses it when a newer owner fenced it), and serves it.
  virtual expected<void> serve_partition(const std::string& hub, std::uint32_t index, std::int64_t epoch) = 0;
  /// Stops serving the partitions (hub, index) and closes their stores; every one
  /// refuses new calls before the first is waited for. `planned`: what they hold is
  /// committed first (a handover); otherwise they stop at once (their ownership is
  /// lost, and whatever they had not committed is the next owner's to redo).
  virtual void stop_partitions(const std::vector<std::pair<std::string, std::uint32_t>>& which, bool planned) = 0;
  /// Whether the partition is served here now.
  virtual bool serves(const std::string& hub, std::uint32_t index) = 0;
  /// The partitions served now, with their epochs.
  virtual std::map<std::pair<std::string, std::uint32_t>, std::int64_t> served() = 0;
  /// What a call that reaches a partition not served here is told (who serves it).
  virtual void describe_owner(std::function<std::string(const std::string& hub, std::uint32_t index)> describe) = 0;
  /// A message from a partition on another node (schema/rpc.capnp NodeLink): an
  /// outbox entry as the store encodes it, or a receipt. Dropped when the partition
  /// is not served here (its sender sends it again until a receipt comes back).
  virtual void accept_delivery(const std::string& hub, std::uint32_t index, std::string entry) = 0;
  virtual void accept_receipt(const std::string& hub, std::uint32_t index, std::uint32_t from,
                              std::uint64_t sequence) = 0;
  /// Where a new hub is recorded for the whole cluster before it opens here;
  /// answers its partition count, or errc::already_exists when the cluster has it.
  virtual void register_hubs_with(
      std::function<expected<std::uint32_t>(const std::string& hub, std::uint32_t partition_count)> registrar) = 0;
};

}  // namespace dtsd::service
