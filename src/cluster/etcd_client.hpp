#pragma once
/// A small etcd v3 client over gRPC (schema/etcd.proto): what a dtsd cluster needs
/// to register nodes and own partitions. Calls block for at most `call_timeout`
/// and answer errc::io (naming etcd and the call) when etcd cannot be reached in
/// time; a lease is
/// kept alive on one stream by `lease_keeper`, and a prefix is followed by
/// `prefix_watch`, each on a thread of its own.
///
/// Every call is safe from any thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"

namespace dtsd::cluster {

/// Where etcd is: "etcd://host:port[,host:port...]" or a bare "host:port[,...]".
struct etcd_options {
  std::vector<std::string> endpoints;
  std::chrono::milliseconds call_timeout{2000};
};

/// Parses the --cluster value; the error names what is wrong.
expected<etcd_options> parse_etcd_url(const std::string& url);

struct key_value {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t lease = 0;
};

/// A key created only if it did not exist.
struct create_result {
  bool created = false;
  std::int64_t revision = 0;          ///< The store's revision after the call (created: the key's own).
  std::optional<key_value> existing;  ///< When not created: who holds it.
};

class etcd_client {
 public:
  static expected<std::unique_ptr<etcd_client>> connect(const etcd_options& options);
  ~etcd_client();

  /// A lease of `ttl` (etcd rounds up to its minimum of 2 s); its id.
  expected<std::int64_t> grant(std::chrono::seconds ttl);
  expected<void> revoke(std::int64_t lease);

  /// The store's revision after the put.
  expected<std::int64_t> put(const std::string& key, const std::string& value, std::int64_t lease = 0);
  expected<std::optional<key_value>> get(const std::string& key);
  /// Every key under `prefix`, in key order, and the revision they were read at.
  expected<std::pair<std::vector<key_value>, std::int64_t>> list(const std::string& prefix);
  /// Creates `key` (under `lease`) unless it exists, in one transaction.
  expected<create_result> create(const std::string& key, const std::string& value, std::int64_t lease);
  /// Deletes `key` only while its last change is `mod_revision` (so that a holder
  /// releases only what is still its own). True when it went.
  expected<bool> erase_if(const std::string& key, std::int64_t mod_revision);

  const etcd_options& options() const { return options_; }

 private:
  friend class lease_keeper;
  friend class prefix_watch;
  struct stubs;
  explicit etcd_client(etcd_options options, std::unique_ptr<stubs> s);

  etcd_options options_;
  std::unique_ptr<stubs> stubs_;
};

/// Keeps a lease alive on one stream, renewing at a third of its TTL, and knows
/// until when it surely holds: `held_until()` is a steady-clock time computed from
/// when each renewal was *sent* (never from when it was answered), so a holder
/// that stops acting by then acts only while etcd still holds the lease.
class lease_keeper {
 public:
  /// `granted_at`: when the grant was asked for (etcd's TTL runs from no earlier).
  lease_keeper(etcd_client& client, std::int64_t lease, std::chrono::seconds ttl,
               std::chrono::steady_clock::time_point granted_at);
  ~lease_keeper();  ///< Stops renewing (does not revoke).

  std::chrono::steady_clock::time_point held_until() const;
  /// etcd said the lease is gone (expired or revoked): it never comes back.
  bool lost() const { return lost_.load(); }
  std::int64_t lease() const { return lease_; }

 private:
  void run();

  etcd_client& client_;
  const std::int64_t lease_;
  const std::chrono::seconds ttl_;
  std::atomic<std::int64_t> held_until_ns_;
  std::atomic<bool> lost_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  std::shared_ptr<void> context_;  ///< The current stream's grpc::ClientContext, to cancel it.
  std::thread thread_;  ///< Last: starts once the rest is there.
};

/// One change under a watched prefix.
struct watch_event {
  bool deleted = false;
  key_value kv;  ///< For a delete: the key and the revision of the delete.
};

/// Follows every change under a prefix from a revision on, calling `on_events` on
/// its own thread in revision order; after a broken stream it resumes from the
/// next revision, so nothing is missed or repeated. When etcd compacted the
/// history it needs, `on_reset` is called: the caller lists the prefix again and
/// the watch goes on from that list's revision.
class prefix_watch {
 public:
  using events_callback = std::function<void(const std::vector<watch_event>&, std::int64_t revision)>;
  using reset_callback = std::function<std::int64_t()>;  ///< Lists again; returns the revision it read at.

  prefix_watch(etcd_client& client, std::string prefix, std::int64_t after_revision, events_callback on_events,
               reset_callback on_reset);
  ~prefix_watch();

 private:
  void run();

  etcd_client& client_;
  const std::string prefix_;
  std::int64_t next_revision_;
  events_callback on_events_;
  reset_callback on_reset_;
  std::mutex mutex_;
  bool stopping_ = false;
  std::shared_ptr<void> context_;  ///< The current stream's grpc::ClientContext, to cancel it.
  std::thread thread_;
};

/// The end of the range of every key that starts with `prefix`.
std::string prefix_end(const std::string& prefix);

}  // namespace dtsd::cluster
