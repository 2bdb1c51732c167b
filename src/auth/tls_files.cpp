#include "auth/tls_files.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

namespace dtsd::auth {

namespace {

std::string openssl_reason() {
  const auto code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "not PEM";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

error bad(const std::string& flag, const std::string& path, const std::string& why) {
  return {errc::invalid_argument, flag + " " + path + ": " + why};
}

using bio_ptr = std::unique_ptr<BIO, decltype(&BIO_free)>;

bio_ptr open_file(const std::string& path) { return {BIO_new_file(path.c_str(), "r"), &BIO_free}; }

}  // namespace

expected<void> check(const tls_files& files) {
  if (files.cert.empty() != files.key.empty()) {
    return error{errc::invalid_argument, "--tls-cert and --tls-key go together: give both, or neither"};
  }
  if (!files.enabled()) {
    if (!files.client_ca.empty()) return error{errc::invalid_argument, "--tls-client-ca needs --tls-cert and --tls-key"};
    return {};
  }
  auto cert_file = open_file(files.cert);
  if (!cert_file) return bad("--tls-cert", files.cert, "cannot be read");
  std::unique_ptr<X509, decltype(&X509_free)> cert(PEM_read_bio_X509(cert_file.get(), nullptr, nullptr, nullptr),
                                                   &X509_free);
  if (!cert) return bad("--tls-cert", files.cert, "no PEM certificate in it (" + openssl_reason() + ")");
  auto key_file = open_file(files.key);
  if (!key_file) return bad("--tls-key", files.key, "cannot be read");
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(key_file.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  if (!key) return bad("--tls-key", files.key, "no unencrypted PEM private key in it (" + openssl_reason() + ")");
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return bad("--tls-key", files.key, "is not the key of the certificate in " + files.cert);
  }
  if (!files.client_ca.empty()) {
    auto ca_file = open_file(files.client_ca);
    if (!ca_file) return bad("--tls-client-ca", files.client_ca, "cannot be read");
    std::unique_ptr<X509, decltype(&X509_free)> ca(PEM_read_bio_X509(ca_file.get(), nullptr, nullptr, nullptr),
                                                   &X509_free);
    if (!ca) return bad("--tls-client-ca", files.client_ca, "no PEM certificate in it (" + openssl_reason() + ")");
  }
  return {};
}

}  // namespace dtsd::auth
