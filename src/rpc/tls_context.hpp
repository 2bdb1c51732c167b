#pragma once
/// kj-tls contexts for the native Cap'n Proto API: the server's (dtsd --tls-cert,
/// --tls-key, --tls-client-ca) and a client's (the SDK, dtsctl, node links).
/// Both load PEM files and throw kj::Exception naming a file they cannot use.

#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <string>

#include "rpc/client_tls.hpp"

namespace dtsd::rpc {

/// "tls://host:port" -> "host:port" (and sets `tls_requested`); other addresses unchanged.
std::string without_scheme(const std::string& address, bool& tls_requested);

/// The host of "host:port", "[v6]:port" or "host" (for a certificate's name check).
std::string host_of(const std::string& address);

kj::Own<kj::TlsContext> client_tls_context(const client_tls& tls);

/// The server's context: `cert_file`/`key_file` are its keypair; a non-empty
/// `client_ca_file` asks every client for a certificate that CA signed. A
/// handshake that does not finish within 10 s on `timer` is dropped.
kj::Own<kj::TlsContext> server_tls_context(const std::string& cert_file, const std::string& key_file,
                                           const std::string& client_ca_file, kj::Timer& timer);

/// Connects to `address` ("host:port", "tls://host:port"; the port defaults to
/// 8081), through TLS when asked. Throws kj::Exception when it cannot.
kj::Promise<kj::Own<kj::AsyncIoStream>> connect(kj::Network& network, const std::string& address,
                                                 const client_tls& tls, kj::Own<kj::TlsContext>& context);

}  // namespace dtsd::rpc
