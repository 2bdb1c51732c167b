#pragma once
/// A client's TLS settings for the native API (no kj or OpenSSL headers: the SDK's
/// public headers include it).

#include <string>

namespace dtsd::rpc {

/// How a client reaches a native API that serves TLS. TLS is used when any field is
/// set or the address starts with "tls://".
struct client_tls {
  std::string ca;    ///< PEM CA certificates to trust; empty: the system's trust store.
  std::string cert;  ///< PEM client certificate, for a dtsd run with --tls-client-ca (mTLS).
  std::string key;   ///< PEM private key of `cert`.
  /// The name the server's certificate must carry; empty: the address's host.
  std::string server_name;
  bool enabled() const { return !ca.empty() || !cert.empty() || !server_name.empty(); }
};

}  // namespace dtsd::rpc
