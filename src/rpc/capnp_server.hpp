#pragma once
/// The native Cap'n Proto RPC server (schema/rpc.capnp). It runs the kj event loop
/// on a thread of its own; calls go to the scheduler, whose answers come back from
/// actor threads through cross-thread fulfillers. Work is pushed to worker sessions
/// from actor threads through the loop's executor.

#include <cstdint>
#include <memory>
#include <string>

#include "service/partition_host.hpp"
#include "service/router.hpp"
#include "service/service.hpp"
#include "auth/tls_files.hpp"
#include "core/error.hpp"

namespace dtsd::auth {
class authority;
}

namespace dtsd::rpc {

class capnp_server {
 public:
  /// Starts listening on `address` ("127.0.0.1:8081"; port 0 picks one) and
  /// returns once it does. A cluster node gives `peers` and `local` (its router
  /// that never forwards): the node link other nodes use (Scheduler.nodeLink) hands
  /// partition messages to `peers` and forwarded calls to `local`. With `tls`
  /// enabled every connection is TLS (and, with a client CA, must present a
  /// certificate it signed).
  static expected<std::unique_ptr<capnp_server>> start(service::task_service& scheduler,
                                                       const std::string& address,
                                                       service::partition_host* peers = nullptr,
                                                       service::router* local = nullptr,
                                                       const auth::authority* authority = nullptr,
                                                       const auth::tls_files& tls = {});
  virtual ~capnp_server() = default;
  virtual std::uint16_t port() const = 0;
  /// Stops accepting calls and ends the loop thread.
  virtual void stop() = 0;
  /// Reads the TLS files again (SIGHUP); connections made from then on use them.
  /// A file that no longer works leaves the previous ones in use.
  virtual expected<void> reload_tls() = 0;
};

}  // namespace dtsd::rpc
