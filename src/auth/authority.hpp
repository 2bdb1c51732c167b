#pragma once
/// An auth directory (`--auth-dir`, by default `<data-dir>/auth`) holds the signing
/// key (`signing.key`) and the registry of issued tokens (`tokens.json`: their
/// grants and whether they are revoked, never the tokens themselves). `dtsctl
/// token` edits the registry; a running dtsd notices a change within a second.

#include <atomic>
#include <chrono>
#include <map>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "auth/token.hpp"

namespace dtsd::auth {

struct listed_token {
  auth::grant grant;
  bool revoked = false;
};

/// The registry file of an auth directory. Each change is written to a new file
/// that replaces the old one, under a lock file, so that it is never half written.
class registry {
 public:
  explicit registry(std::filesystem::path dir) : dir_(std::move(dir)) {}
  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path key_file() const { return dir_ / "signing.key"; }
  std::filesystem::path file() const { return dir_ / "tokens.json"; }

  /// Every token issued, oldest first (none when the file does not exist yet).
  expected<std::vector<listed_token>> list() const;
  /// Records a new grant and answers its token, signed with the directory's key
  /// (created on first use).
  expected<std::string> create(grant what);
  /// Marks a token revoked: errc::not_found when no token has that id.
  expected<void> revoke(const std::string& id);

 private:
  template <class Change>
  expected<void> edit(Change change);
  std::filesystem::path dir_;
};

/// What one token may hold and do at once, against abuse by a client that has a
/// valid token (every node counts its own).
struct token_limits {
  std::size_t streams_max = 1000;      ///< Work streams and waits open at once.
  double calls_per_second = 1000;      ///< Changes (start, raise, purge...); bursts of one second's worth.
};

/// What a server checks every call against: the key, and the revoked ids (reloaded
/// when the registry changes; a background thread looks once a second).
class authority {
 public:
  static expected<std::unique_ptr<authority>> open(const std::filesystem::path& dir, token_limits limits = {});
  ~authority();

  /// The grant of a credential: "Bearer <token>" (an HTTP or gRPC header's value)
  /// or the token alone. errc::unauthenticated when it is missing, malformed,
  /// forged, expired or revoked, saying which.
  expected<grant> authenticate(std::string_view credential) const;
  /// A node link's token: a node token (node_token) only.
  expected<grant> authenticate_node(std::string_view credential) const;
  /// errc::permission_denied naming the role needed, or the hubs the token is for.
  static expected<void> authorize(const grant& who, action what, std::string_view hub);
  /// For a grant checked earlier (a native session): not expired or revoked since.
  expected<void> still_valid(const grant& who) const;
  /// The token a cluster node presents to the others (they share the key): every
  /// hub, no expiry, not in the registry (rotate the key to end it).
  std::string node_token(const std::string& node_id) const;
  /// Both at once.
  expected<grant> check(std::string_view credential, action what, std::string_view hub) const;
  /// How many tokens the registry had when last read (for the start-up message).
  std::size_t known_tokens() const;

  /// The audit log (`audit.log` in the auth directory, JSON Lines): every change
  /// made (start, raise, terminate, purge, hub management...) with the token that
  /// made it, and every call refused, with why. `who` is null when the call had no
  /// valid token; `refused` is null when it was let through. Reads are not logged.
  void audit(std::string_view api, std::string_view operation, std::string_view hub, std::string_view instance,
             const grant* who, const error* refused) const;
  std::filesystem::path audit_file() const { return registry_.dir() / "audit.log"; }

  /// Runs `tick` on the watcher's thread after each reading of the registry (about
  /// once a second), so that a server can end what revoked or expired tokens hold;
  /// null stops it (and waits for a tick under way).
  void on_reload(std::function<void()> tick) const;

  /// A work stream or wait of `who`, counted until the handle goes;
  /// errc::resource_exhausted at its limit, naming it.
  expected<std::shared_ptr<void>> hold_stream(const grant& who) const;
  /// One change by `who`; errc::resource_exhausted past its rate.
  expected<void> take_call(const grant& who) const;

 private:
  authority(signing_key key, std::filesystem::path dir, token_limits limits)
      : key_(key), registry_(std::move(dir)), limits_(limits) {}
  void reload();
  void watch();

  const signing_key key_;
  registry registry_;
  mutable std::mutex mutex_;
  std::set<std::string> revoked_;
  std::size_t known_ = 0;
  std::atomic<bool> stopping_{false};
  const token_limits limits_;
  struct usage {
    std::size_t streams = 0;
    double calls_left = -1;  ///< The bucket (negative: full, never used).
    std::chrono::steady_clock::time_point refilled{};
  };
  mutable std::mutex usage_mutex_;
  mutable std::map<std::string, usage> usage_;
  mutable std::mutex tick_mutex_;
  mutable std::function<void()> tick_;  ///< Under tick_mutex_.
  mutable std::mutex audit_mutex_;
  std::FILE* audit_ = nullptr;
  mutable std::int64_t anonymous_second_ = 0;   ///< Under audit_mutex_.
  mutable std::uint64_t anonymous_lines_ = 0;
  mutable std::uint64_t anonymous_dropped_ = 0;
  std::thread watcher_;
};

}  // namespace dtsd::auth
