#pragma once
/// A native API connection that presents a token (dtsd --auth).

#include <string>

#include "rpc.capnp.h"

namespace dtsd::sdk {

/// The scheduler acting for `token` (pipelined: no round trip of its own; a refused
/// token fails the first call). Without a token, the server's own.
schema::Scheduler::Client authenticated(schema::Scheduler::Client server, const std::string& token);

}  // namespace dtsd::sdk
