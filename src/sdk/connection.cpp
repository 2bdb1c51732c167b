#include "sdk/connection.hpp"

namespace dtsd::sdk {

namespace {

std::shared_ptr<thread_io> this_thread_io() {
  thread_local std::weak_ptr<thread_io> current;
  auto held = current.lock();
  if (!held) {
    held = std::make_shared<thread_io>();
    current = held;
  }
  return held;
}

}  // namespace

connection::connection(const std::string& address, const tls_options& tls) : io_(this_thread_io()) {
  stream_ = rpc::connect(io_->io.provider->getNetwork(), address, tls, tls_).wait(io_->io.waitScope);
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 64 * 1024 * 1024;  // As the server's: a large history fits.
  network_ = kj::heap<capnp::TwoPartyVatNetwork>(*stream_, capnp::rpc::twoparty::Side::CLIENT, options);
  rpc_system_ = kj::heap(capnp::makeRpcClient(*network_));
}

connection::~connection() = default;

capnp::Capability::Client connection::bootstrap() {
  capnp::word scratch[4] = {};
  capnp::MallocMessageBuilder message(scratch);
  auto server = message.getRoot<capnp::rpc::twoparty::VatId>();
  server.setSide(capnp::rpc::twoparty::Side::SERVER);
  return rpc_system_->bootstrap(server);
}

}  // namespace dtsd::sdk
