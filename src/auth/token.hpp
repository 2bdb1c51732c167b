#pragma once
/// Credentials as DTS has them, self-hosted: bearer tokens that dtsd issues and
/// verifies itself, each with one of DTS's three roles, the task hubs it is for,
/// an expiry and an id that can be revoked.
///
/// A token is `dtsd1.<payload>.<signature>`: the payload (base64url JSON: id, role,
/// hubs, issued and expiry times) signed with HMAC-SHA256 under a 256-bit key that
/// dtsd keeps in its auth directory. Verifying one is a hash and a lookup in the
/// in-memory set of revoked ids: microseconds, no storage read.

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"

namespace dtsd::auth {

/// DTS's roles: Durable Task Data Reader, Durable Task Worker, Durable Task Data
/// Contributor.
enum class role : std::uint8_t { reader, worker, contributor };

/// What a call does, as the roles see it.
enum class action : std::uint8_t {
  read,         ///< Instances, histories, queries, workers, statistics.
  work,         ///< Open a work stream; complete or abandon work items.
  write,        ///< Start, raise, terminate, suspend, resume, purge, signal...
  manage_hubs,  ///< Create or delete a task hub: a contributor for every hub.
};

std::string_view role_name(role r);  ///< "reader", "worker", "contributor"
expected<role> parse_role(std::string_view name);
/// DTS's name of the least role that may do `what` ("Durable Task Data Reader"...).
std::string_view role_needed(action what);
bool permits(role r, action what);

/// What a token grants.
struct grant {
  std::string id;                 ///< Unique; what `revoke` names.
  auth::role role = role::reader;
  std::vector<std::string> hubs;  ///< The task hubs it is for; "*" is every hub.
  std::int64_t issued_at_s = 0;   ///< Unix seconds.
  std::int64_t expires_at_s = 0;  ///< Unix seconds; 0: never.
  std::string note;               ///< Whom it is for (shown by `token list`).
  /// A cluster node's token (authority::node_token): good for node links only,
  /// refused by the client-facing APIs; never made by the registry.
  bool node = false;

  bool covers(std::string_view hub) const;
  bool all_hubs() const;
};

/// The key tokens are signed with.
class signing_key {
 public:
  static constexpr std::size_t size = 32;
  /// The key in `file`, created (random, mode 0600, its directory 0700) if missing.
  static expected<signing_key> load_or_create(const std::filesystem::path& file);
  static expected<signing_key> load(const std::filesystem::path& file);
  static signing_key random();
  const std::array<std::uint8_t, size>& bytes() const { return bytes_; }

 private:
  std::array<std::uint8_t, size> bytes_{};
};

/// A new random token id ("t" and 20 hex digits).
std::string new_token_id();
/// The token for `what`, signed with `key`.
std::string issue(const signing_key& key, const grant& what);
/// The grant of `token` when its signature is `key`'s and it has not expired at
/// `now_s`; else errc::unauthenticated saying which. Revocation is the caller's.
expected<grant> verify(const signing_key& key, std::string_view token, std::int64_t now_s);

/// Parses "30d", "12h", "45m", "90s" or "never" (0) into seconds.
expected<std::int64_t> parse_duration_s(std::string_view text);

}  // namespace dtsd::auth
