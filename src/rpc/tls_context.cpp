#include "rpc/tls_context.hpp"

#include <kj/debug.h>

#include <fstream>
#include <sstream>

namespace dtsd::rpc {

namespace {

/// A PEM file's text, or a kj::Exception naming the file.
kj::String read_pem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) KJ_FAIL_REQUIRE(kj::str("cannot read the ", what, " file '", path.c_str(), "'"));
  std::ostringstream text;
  text << in.rdbuf();
  return kj::heapString(text.str().c_str());
}

}  // namespace

std::string without_scheme(const std::string& address, bool& tls_requested) {
  constexpr std::string_view scheme = "tls://";
  tls_requested = address.rfind(scheme, 0) == 0;
  return tls_requested ? address.substr(scheme.size()) : address;
}

std::string host_of(const std::string& address) {
  if (!address.empty() && address.front() == '[') {
    auto close = address.find(']');
    return close == std::string::npos ? address : address.substr(1, close - 1);
  }
  auto colon = address.rfind(':');
  if (colon == std::string::npos || address.find(':') != colon) return address;  // No port, or a bare IPv6.
  return address.substr(0, colon);
}

kj::Own<kj::TlsContext> client_tls_context(const client_tls& tls) {
  kj::TlsContext::Options options;
  kj::Maybe<kj::TlsCertificate> trusted;
  if (!tls.ca.empty()) {
    trusted = kj::TlsCertificate(read_pem(tls.ca, "CA"));
    options.useSystemTrustStore = false;
    KJ_IF_MAYBE(ca, trusted) { options.trustedCertificates = kj::arrayPtr(ca, 1); }
  }
  kj::Maybe<kj::TlsKeypair> mine;
  if (!tls.cert.empty() || !tls.key.empty()) {
    KJ_REQUIRE(!tls.cert.empty() && !tls.key.empty(), "a client certificate needs both its certificate and its key");
    mine = kj::TlsKeypair{kj::TlsPrivateKey(read_pem(tls.key, "client key")),
                          kj::TlsCertificate(read_pem(tls.cert, "client certificate"))};
    KJ_IF_MAYBE(pair, mine) { options.defaultKeypair = *pair; }
  }
  // The context takes its own references to the certificates and the key.
  return kj::heap<kj::TlsContext>(kj::mv(options));
}

kj::Own<kj::TlsContext> server_tls_context(const std::string& cert_file, const std::string& key_file,
                                           const std::string& client_ca_file, kj::Timer& timer) {
  kj::TlsKeypair keypair{kj::TlsPrivateKey(read_pem(key_file, "--tls-key")),
                         kj::TlsCertificate(read_pem(cert_file, "--tls-cert"))};
  kj::TlsContext::Options options;
  options.defaultKeypair = keypair;
  options.timer = timer;
  options.acceptTimeout = 10 * kj::SECONDS;
  kj::Maybe<kj::TlsCertificate> client_ca;
  if (!client_ca_file.empty()) {
    client_ca = kj::TlsCertificate(read_pem(client_ca_file, "--tls-client-ca"));
    KJ_IF_MAYBE(ca, client_ca) { options.trustedCertificates = kj::arrayPtr(ca, 1); }
    options.useSystemTrustStore = false;
    options.verifyClients = true;
  }
  return kj::heap<kj::TlsContext>(kj::mv(options));
}

kj::Promise<kj::Own<kj::AsyncIoStream>> connect(kj::Network& network, const std::string& address,
                                                 const client_tls& tls, kj::Own<kj::TlsContext>& context) {
  bool tls_requested = false;
  auto plain = without_scheme(address, tls_requested);
  auto connected = network.parseAddress(kj::StringPtr(plain.c_str()), 8081)
                       .then([](kj::Own<kj::NetworkAddress> resolved) {
                         auto connecting = resolved->connect();
                         return connecting.attach(kj::mv(resolved));
                       });
  if (!tls_requested && !tls.enabled()) return connected;
  context = client_tls_context(tls);
  const auto host = tls.server_name.empty() ? host_of(plain) : tls.server_name;
  // kj-tls checks the certificate's DNS names: an IP address matches none of them.
  const bool ip_literal = host.find_first_not_of("0123456789.") == std::string::npos || host.find(':') != std::string::npos;
  auto name = kj::heapString(host);
  return connected
      .then([&secure = *context, name = kj::mv(name)](kj::Own<kj::AsyncIoStream> stream) mutable {
        return secure.wrapClient(kj::mv(stream), name).attach(kj::mv(name));
      })
      .catch_([address, host, ip_literal](kj::Exception&& failure) -> kj::Own<kj::AsyncIoStream> {
        std::string hint;
        std::string why = failure.getDescription().cStr();
        if (why.find("hostname mismatch") != std::string::npos && ip_literal) {
          hint = "; the native API's TLS checks the certificate's DNS names, not IP addresses: connect by a name the "
                 "certificate carries (localhost:8081) or give the TLS server name (--tls-server-name)";
        } else if (why.find("local issuer") != std::string::npos || why.find("self-signed") != std::string::npos) {
          hint = "; give the CA that signed dtsd's certificate (--tls-ca)";
        } else if (why.find("wrong version") != std::string::npos || why.find("packet length") != std::string::npos ||
                   why.find("disconnected") != std::string::npos) {
          hint = "; does dtsd's native API serve TLS (--tls-cert)?";
        }
        kj::throwFatalException(kj::Exception(failure.getType(), __FILE__, __LINE__,
                                              kj::str("TLS handshake with ", address.c_str(), " (", host.c_str(),
                                                      ") failed: ", why.c_str(), hint.c_str())));
      });
}

}  // namespace dtsd::rpc
