#pragma once
/// A dtsd node of a cluster: keeps the partitions it serves (service::partition_host)
/// equal to the partitions it owns in etcd (membership).
///
/// - Every hub recorded in etcd is known here; new hubs are recorded there first.
/// - A partition this node owns is opened, fenced with its epoch, as soon as the
///   claim is seen; one it no longer owns surely (its lease is not surely held, or
///   another node's claim is seen) is stopped at once, without committing more.
/// - A planned move (a node joined, or this one leaves) commits what the partition
///   holds and closes it before the claim is given up.
///
/// Calls that reach this host for partitions it does not serve are refused
/// (UNAVAILABLE) naming the node that serves them; rpc::forwarding_router sends
/// them there before they get here.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "cluster/membership.hpp"
#include "service/partition_host.hpp"

namespace dtsd::cluster {

class node {
 public:
  /// Starts following `member` for `host`; both outlive the node. `hubs` are
  /// recorded in the cluster (with `partition_count` when new) before it returns.
  static expected<std::unique_ptr<node>> start(membership& member, service::partition_host& host,
                                               const std::vector<std::string>& hubs, std::uint32_t partition_count);
  ~node();  ///< Stops following; serves what it serves until the host goes.

  /// A planned leave: every partition is committed, closed and released.
  void leave();

  /// Brings the served partitions in line with ownership now (the node's thread
  /// does it on every change and a few times a second).
  void reconcile();
  /// Runs after each reconcile of the node's thread (what depends on the cluster's
  /// shape: relayed worker sessions). Set before the thread needs it; kept until
  /// the node goes.
  void on_reconciled(std::function<void()> after);

 private:
  node(membership& member, service::partition_host& host);
  void run();
  std::string describe(const std::string& hub, std::uint32_t index) const;

  membership& member_;
  service::partition_host& host_;
  std::mutex serving_;  ///< One change of what is served at a time.
  /// Claims this node is giving up (hub, partition, epoch), and since when: not
  /// opened again, unless the claim is still this node's a while later (giving it
  /// up failed, and the partition would be served by no one).
  std::map<std::tuple<std::string, std::uint32_t, std::int64_t>, std::chrono::steady_clock::time_point> released_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool dirty_ = true;
  std::function<void()> after_;
  std::thread thread_;
};

}  // namespace dtsd::cluster
