#pragma once
/// A dtsd node in a cluster: registered in etcd under a lease of its own, and the
/// owner of the partitions that rendezvous hashing gives it among the live nodes.
///
/// Keys (under `prefix`, default "/dtsd/"):
///   nodes/<node id>              -> the node's advertised address, under its lease
///   partitions/<hub>/<partition> -> the owning node's id, under the owner's lease
///   hubs/<hub>                   -> the hub's partition count (no lease: hubs stay)
///   drain/<node id>              -> present while the node is drained: it owns
///                                   nothing (its partitions are handed over), but
///                                   stays up and keeps routing
/// A partition is claimed with a create-if-absent transaction; the revision that
/// created the claim is the partition's **epoch**, higher for every new owner.
///
/// Why rendezvous hashing: every node computes the same owners from the same list
/// of live nodes, with no coordinator to elect, and when a node joins or leaves
/// only the partitions it gains or loses move (about 1/N of them).
///
/// Fencing: a node acts for a partition only while `epoch_of` answers, i.e. while
/// its claim stands in its view and its lease is surely held (a steady-clock
/// deadline from when the last renewal was sent, less a margin of a quarter of the
/// TTL, at most 500 ms). A node that cannot renew stops acting before etcd lets
/// another node claim.
///
/// A node whose lease is gone (paused, or cut from etcd past its TTL) joins again
/// under a new lease once etcd answers: claims made under the old lease count for
/// nothing (they are older than the new registration), and the partitions it is
/// given now are claimed afresh, with new epochs.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.hpp"

namespace dtsd::cluster {

struct member_options {
  std::string node_id;    ///< Unique in the cluster: [A-Za-z0-9_.-]{1,64}.
  std::string advertise;  ///< Where other nodes reach it (host:port).
  std::chrono::seconds lease_ttl{3};
  std::string prefix = "/dtsd/";
  /// How often ownership is looked at even without a change seen.
  std::chrono::milliseconds balance_interval{500};
};

struct partition_ref {
  std::string hub;
  std::uint32_t index = 0;
  friend auto operator<=>(const partition_ref&, const partition_ref&) = default;
};

struct claim {
  std::string owner;
  std::int64_t epoch = 0;  ///< The revision that created the claim.
};

/// The cluster as etcd holds it.
struct cluster_view {
  std::map<std::string, std::string> nodes;  ///< Live node ids and their addresses.
  std::set<std::string> drained;             ///< Nodes asked to own nothing.
  std::map<std::string, std::uint32_t> hubs;  ///< Hubs and their partition counts.
  std::map<partition_ref, claim> claims;
  std::int64_t revision = 0;  ///< etcd's revision it was read at.
};
expected<cluster_view> read_cluster(etcd_client& client, const std::string& prefix = "/dtsd/");
/// Drains a node (its partitions move to the others; it stays up) or ends that.
expected<void> set_drained(etcd_client& client, const std::string& node_id, bool drained,
                           const std::string& prefix = "/dtsd/");

/// The live node that should own a partition (empty when there is none).
std::string rendezvous_owner(const std::vector<std::string>& nodes, const partition_ref& partition);

class membership {
 public:
  /// Registers the node (refused when another live process holds the id) and starts
  /// keeping its lease, following the cluster and balancing.
  static expected<std::unique_ptr<membership>> join(etcd_client& client, member_options options);
  ~membership();  ///< Stops and revokes the lease: its claims go at once.

  /// The hubs whose partitions the cluster shares (every node says the same).
  void serve_hub(const std::string& hub, std::uint32_t partition_count);
  /// Records the hub in etcd for every node (unless it is there already) and serves
  /// it; answers the partition count the cluster has for it (the first one recorded).
  expected<std::uint32_t> register_hub(const std::string& hub, std::uint32_t partition_count);
  /// Records a new hub: errc::already_exists when the cluster has it already.
  expected<std::uint32_t> create_hub(const std::string& hub, std::uint32_t partition_count);
  /// The hubs served, with their partition counts.
  std::map<std::string, std::uint32_t> hubs() const;
  /// Called before this node gives a claim up in a planned move (a node joined, or
  /// leave()): the node stops serving the partition and commits what it holds first.
  void on_release(std::function<void(const partition_ref&)> releasing);

  /// The epoch under which this node may act for the partition now; none when it
  /// does not own it or cannot be sure its lease still holds.
  std::optional<std::int64_t> epoch_of(const partition_ref& partition) const;
  /// Until when this node may act for what it owns, unless its lease is renewed
  /// again before (a steady-clock time; the past when the lease is lost).
  std::chrono::steady_clock::time_point acts_until() const;
  /// The address of the node whose claim on the partition this node last saw, if
  /// that is another node (none: unclaimed, or this node's own).
  std::optional<std::string> owner_elsewhere(const partition_ref& partition) const;
  /// Every claim as this node last saw it.
  std::map<partition_ref, claim> claims() const;
  /// Live nodes and their addresses.
  std::map<std::string, std::string> nodes() const;
  const std::string& node_id() const { return options_.node_id; }
  /// Called after the claims or nodes changed (on the watch's thread, without the
  /// membership's lock held).
  void on_change(std::function<void()> changed);

  /// A planned leave: releases every claim (so others take over at once) and stops.
  void leave();

 private:
  membership(etcd_client& client, member_options options, std::int64_t lease, std::int64_t registered,
             std::chrono::steady_clock::time_point granted_at);
  bool surely_held() const;
  /// Registers the node again under a new lease after the last one was lost.
  void rejoin();
  void notify_changed();
  void notify_releasing(const partition_ref& partition);
  void apply(const std::vector<watch_event>& events);
  std::int64_t reload();
  void balance();
  void run();

  etcd_client& client_;
  const member_options options_;

  mutable std::mutex mutex_;
  /// The lease the node is registered under, the revision that registered it (a
  /// claim of this node's older than that was made under a lost lease), and its
  /// keeper; replaced together by a rejoin.
  std::int64_t lease_;
  std::int64_t registered_;
  std::shared_ptr<lease_keeper> keeper_;
  bool rejoin_refused_ = false;  ///< Logged once: the node id is taken by another process.
  std::condition_variable wake_;
  bool stopping_ = false;
  bool dirty_ = false;  ///< Something changed since the last balance.
  std::map<std::string, std::string> nodes_;
  std::map<partition_ref, claim> claims_;
  std::map<std::string, std::uint32_t> hubs_;
  std::set<std::string> drained_;
  /// Held while a callback runs and while one is set: once a setter returns, the
  /// callback it replaced runs no more.
  mutable std::mutex callback_mutex_;
  std::function<void()> changed_;
  std::function<void(const partition_ref&)> releasing_;

  std::unique_ptr<prefix_watch> watch_;
  std::thread thread_;
};

}  // namespace dtsd::cluster
