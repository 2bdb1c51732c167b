#include "auth/token.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/ids.hpp"
#include "core/retention.hpp"

namespace dtsd::auth {

namespace {

using json = nlohmann::json;
constexpr std::string_view token_prefix = "dtsd1.";

std::string base64url(const std::uint8_t* data, std::size_t size) {
  std::string out(4 * ((size + 2) / 3), '\0');
  const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(size));
  out.resize(static_cast<std::size_t>(written));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (auto& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

std::optional<std::string> from_base64url(std::string_view text) {
  std::string padded(text);
  for (auto& c : padded) {
    if (c == '-') c = '+';
    else if (c == '_') c = '/';
    else if (c == '+' || c == '/' || c == '=') return std::nullopt;  // Not base64url.
  }
  const std::size_t pad = (4 - padded.size() % 4) % 4;
  if (pad == 3) return std::nullopt;
  padded.append(pad, '=');
  std::string out(3 * padded.size() / 4, '\0');
  const int decoded = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                      reinterpret_cast<const unsigned char*>(padded.data()),
                                      static_cast<int>(padded.size()));
  if (decoded < 0) return std::nullopt;
  out.resize(static_cast<std::size_t>(decoded) - pad);
  return out;
}

std::array<std::uint8_t, 32> mac(const signing_key& key, std::string_view signed_part) {
  std::array<std::uint8_t, 32> out{};
  unsigned size = 0;
  HMAC(EVP_sha256(), key.bytes().data(), static_cast<int>(key.bytes().size()),
       reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(), out.data(), &size);
  return out;
}

error unauthenticated(std::string message) { return {errc::unauthenticated, std::move(message)}; }

}  // namespace

std::string_view role_name(role r) {
  switch (r) {
    case role::reader: return "reader";
    case role::worker: return "worker";
    case role::contributor: return "contributor";
  }
  return "reader";
}

expected<role> parse_role(std::string_view name) {
  if (name == "reader") return role::reader;
  if (name == "worker") return role::worker;
  if (name == "contributor") return role::contributor;
  return error{errc::invalid_argument,
               "unknown role '" + std::string(name) + "': expected contributor, worker or reader"};
}

std::string_view role_needed(action what) {
  switch (what) {
    case action::read: return "Durable Task Data Reader (or Contributor)";
    case action::work: return "Durable Task Worker (or Contributor)";
    case action::write: return "Durable Task Data Contributor";
    case action::manage_hubs: return "Durable Task Data Contributor for every task hub ('*')";
  }
  return "Durable Task Data Contributor";
}

bool permits(role r, action what) {
  switch (what) {
    case action::read: return r == role::reader || r == role::contributor;
    case action::work: return r == role::worker || r == role::contributor;
    case action::write:
    case action::manage_hubs: return r == role::contributor;
  }
  return false;
}

bool grant::all_hubs() const { return std::find(hubs.begin(), hubs.end(), "*") != hubs.end(); }

bool grant::covers(std::string_view hub) const {
  return all_hubs() || std::find(hubs.begin(), hubs.end(), hub) != hubs.end();
}

signing_key signing_key::random() {
  signing_key key;
  if (RAND_bytes(key.bytes_.data(), static_cast<int>(key.bytes_.size())) != 1) std::abort();  // No entropy: nothing is safe.
  return key;
}

expected<signing_key> signing_key::load(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return error{errc::not_found, "no signing key at " + file.string()};
  std::string hex;
  in >> hex;
  signing_key key;
  if (hex.size() != 2 * size) {
    return error{errc::corrupt, "the signing key at " + file.string() + " is not 64 hex digits"};
  }
  for (std::size_t i = 0; i < size; ++i) {
    auto [end, failed] = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, key.bytes_[i], 16);
    if (failed != std::errc{} || end != hex.data() + 2 * i + 2) {
      return error{errc::corrupt, "the signing key at " + file.string() + " is not 64 hex digits"};
    }
  }
  return key;
}

expected<signing_key> signing_key::load_or_create(const std::filesystem::path& file) {
  if (std::filesystem::exists(file)) return load(file);
  std::error_code failed;
  std::filesystem::create_directories(file.parent_path(), failed);
  if (failed) return error{errc::io, "cannot create " + file.parent_path().string() + ": " + failed.message()};
  ::chmod(file.parent_path().c_str(), 0700);
  auto key = random();
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  for (auto byte : key.bytes_) {
    hex += digits[byte >> 4];
    hex += digits[byte & 15];
  }
  hex += '\n';
  // Written whole to a file of its own, then linked into place: link() fails if the
  // key exists, so of two processes creating it at once one wins and the other
  // reads the winner's complete key; a crash leaves no half-written key behind.
  const auto draft = file.string() + ".new-" + std::to_string(::getpid()) + "-" + new_token_id();
  const int fd = ::open(draft.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return error{errc::io, "cannot create " + draft + ": " + std::strerror(errno)};
  const bool written = ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written) {
    ::unlink(draft.c_str());
    return error{errc::io, "cannot write " + draft};
  }
  const int linked = ::link(draft.c_str(), file.c_str());
  const int link_errno = errno;
  ::unlink(draft.c_str());
  if (linked != 0) {
    if (link_errno == EEXIST) return load(file);
    return error{errc::io, "cannot create " + file.string() + ": " + std::strerror(link_errno)};
  }
  return key;
}

std::string new_token_id() {
  std::array<std::uint8_t, 10> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) std::abort();
  static constexpr char digits[] = "0123456789abcdef";
  std::string id = "t";
  for (auto byte : bytes) {
    id += digits[byte >> 4];
    id += digits[byte & 15];
  }
  return id;
}

std::string issue(const signing_key& key, const grant& what) {
  json payload = {{"id", what.id},   {"role", role_name(what.role)}, {"hubs", what.hubs},
                  {"iat", what.issued_at_s}, {"exp", what.expires_at_s}};
  if (what.node) payload["node"] = true;
  const auto text = payload.dump();
  std::string token(token_prefix);
  token += base64url(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
  const auto signature = mac(key, token);
  token += '.';
  token += base64url(signature.data(), signature.size());
  return token;
}

expected<grant> verify(const signing_key& key, std::string_view token, std::int64_t now_s) {
  if (token.rfind(token_prefix, 0) != 0) return unauthenticated("the credential is not a dtsd token");
  const auto dot = token.rfind('.');
  if (dot <= token_prefix.size()) return unauthenticated("the token is malformed");
  // Compared as text: the one encoding of the right MAC, so that a signature whose
  // unused low bits differ (the same bytes once decoded) is refused too.
  const auto signature = token.substr(dot + 1);
  const auto expected_mac = mac(key, token.substr(0, dot));
  const auto expected_text = base64url(expected_mac.data(), expected_mac.size());
  if (signature.size() != expected_text.size() ||
      CRYPTO_memcmp(signature.data(), expected_text.data(), expected_text.size()) != 0) {
    return unauthenticated("the token's signature is not valid (forged, or signed with another key)");
  }
  const auto text = from_base64url(token.substr(token_prefix.size(), dot - token_prefix.size()));
  if (!text) return unauthenticated("the token is malformed");
  auto payload = json::parse(*text, nullptr, false);
  if (payload.is_discarded() || !payload.is_object()) return unauthenticated("the token is malformed");
  grant out;
  try {
    out.id = payload.at("id").get<std::string>();
    auto parsed_role = parse_role(payload.at("role").get<std::string>());
    if (!parsed_role) return unauthenticated("the token names an unknown role");
    out.role = *parsed_role;
    out.hubs = payload.at("hubs").get<std::vector<std::string>>();
    out.issued_at_s = payload.at("iat").get<std::int64_t>();
    out.expires_at_s = payload.at("exp").get<std::int64_t>();
    out.node = payload.value("node", false);
  } catch (const json::exception&) {
    return unauthenticated("the token is malformed");
  }
  if (out.expires_at_s != 0 && now_s >= out.expires_at_s) {
    return unauthenticated("token " + out.id + " has expired");
  }
  return out;
}

expected<std::int64_t> parse_duration_s(std::string_view text) {
  if (text == "never") return std::int64_t{0};
  auto seconds = core::parse_duration(text);
  if (!seconds || *seconds == 0) {
    return error{errc::invalid_argument,
                 "'" + std::string(text) + "' is not a duration: expected a count and d, h, m or s (30d, 12h), or never"};
  }
  return seconds;
}

}  // namespace dtsd::auth
