#pragma once
/// This node's links to the other nodes of its cluster (Scheduler.nodeLink in
/// schema/rpc.capnp): one Cap'n Proto connection per node address, made on first
/// use and made again after it breaks, on a kj loop thread of its own.
///
/// Sends are fire-and-forget: a message lost with a connection (or sent to a node
/// that no longer serves the partition) is sent again by its partition, which keeps
/// every outbox entry until the receiver's receipt comes back. The receiver applies
/// each (source partition, sequence) once.

#include <cstdint>
#include <memory>
#include <string>

#include "core/error.hpp"

namespace dtsd::rpc {

class node_links {
 public:
  /// `node_id` is this node's, named to the nodes it links to.
  static expected<std::unique_ptr<node_links>> start(std::string node_id);
  ~node_links();

  /// An outbox entry (as the store encodes it) for partition `partition` of `hub`,
  /// served by the node at `address`. Safe from any thread; does not wait.
  void deliver(const std::string& address, const std::string& hub, std::uint32_t partition, std::string entry);
  /// Partition `partition` of `hub` (at `address`): its messages to partition `from`
  /// are durable up to `sequence`.
  void receipt(const std::string& address, const std::string& hub, std::uint32_t partition, std::uint32_t from,
               std::uint64_t sequence);

  struct loop;

 private:
  explicit node_links(std::unique_ptr<loop> running);
  std::unique_ptr<loop> loop_;
};

}  // namespace dtsd::rpc
