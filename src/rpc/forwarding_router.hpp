#pragma once
/// A cluster node's router: a call for an instance or partition this node serves
/// goes to its own router (actors/scheduler.hpp); one for a partition another node
/// serves is forwarded to that node over the node link (rpc/node_links.hpp), which
/// serves it with its own partitions only. So any node answers any client; queries,
/// lists and purges that span partitions, composed by the service above, reach
/// every partition wherever it is served.
///
/// Worker sessions, and what they complete, stay on the node they connected to (a
/// worker gets the work of that node's partitions).

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

std::unique_ptr<service::router> make_forwarding_router(service::router& local, service::partition_host& host,
                                                        node_links& links, owner_lookup owner);

}  // namespace dtsd::rpc
