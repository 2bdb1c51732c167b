#pragma once
/// The PEM files of a TLS listener (--tls-cert, --tls-key, --tls-client-ca),
/// checked before anything listens, so that a wrong path or a key that does not
/// belong to the certificate stops dtsd with a clear error instead of failing
/// each handshake later.

#include <string>

#include "core/error.hpp"

namespace dtsd::auth {

struct tls_files {
  std::string cert;       ///< PEM certificate chain, the server's first.
  std::string key;        ///< PEM private key of that certificate.
  std::string client_ca;  ///< PEM CA certificates that sign client certificates (mTLS); empty: none asked.
  bool enabled() const { return !cert.empty(); }
};

/// errc::invalid_argument naming the file and what is wrong with it.
expected<void> check(const tls_files& files);

}  // namespace dtsd::auth
