#pragma once
/// One Cap'n Proto connection to dtsd's native API, in plain TCP or TLS (kj-tls).
/// It owns this thread's kj event loop, as capnp::EzRpcClient would, and is used
/// by the client, the worker, dtsctl and the benches alike.

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <memory>
#include <string>

#include "rpc/tls_context.hpp"
#include "sdk/client.hpp"

namespace dtsd::sdk {

/// This thread's kj event loop, shared by every connection made on the thread (as
/// EzRpcClient shares it) and ended with the last of them.
struct thread_io {
  kj::AsyncIoContext io = kj::setupAsyncIo();
};

/// A connected two-party RPC client. Throws kj::Exception when the address cannot
/// be resolved, the connection is refused or the TLS handshake fails.
class connection {
 public:
  connection(const std::string& address, const tls_options& tls);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  kj::WaitScope& wait_scope() { return io_->io.waitScope; }
  kj::Timer& timer() { return io_->io.provider->getTimer(); }
  template <class Interface>
  typename Interface::Client main() {
    return bootstrap().castAs<Interface>();
  }

 private:
  capnp::Capability::Client bootstrap();

  std::shared_ptr<thread_io> io_;
  kj::Own<kj::TlsContext> tls_;
  kj::Own<kj::AsyncIoStream> stream_;
  kj::Own<capnp::TwoPartyVatNetwork> network_;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc_system_;
};

}  // namespace dtsd::sdk
