#pragma once
/// A cluster node's router: a call for an instance or partition this node serves
/// goes to its own router (actors/scheduler.hpp); one for a partition another node
/// serves is forwarded to that node over the node link (rpc/node_links.hpp), which
/// serves it with its own partitions only. So any node answers any client; queries,
/// lists and purges that span partitions, composed by the service above, reach
/// every partition wherever it is served.
///
/// A worker connected to this node gets the work of every node: this node opens a
/// session on its behalf at each other node (node_links::open_session), relays what
/// they push, and sends each answer to the node serving its instance.

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "rpc/node_links.hpp"
#include "service/partition_host.hpp"
#include "service/router.hpp"

namespace dtsd::rpc {

/// The address of the node serving a partition, when another node does.
using owner_lookup = std::function<std::optional<std::string>(const std::string& hub, std::uint32_t partition)>;

/// The addresses of the other live nodes.
using nodes_lookup = std::function<std::vector<std::string>()>;

class forwarding_router : public service::router {
 public:
  /// Opens the sessions a worker lacks at nodes that joined (or whose link broke
  /// and came back), and closes those at nodes gone. Called a few times a second.
  virtual void maintain_sessions() = 0;
};

std::unique_ptr<forwarding_router> make_forwarding_router(service::router& local, service::partition_host& host,
                                                          node_links& links, owner_lookup owner,
                                                          nodes_lookup other_nodes);

}  // namespace dtsd::rpc
