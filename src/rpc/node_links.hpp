#pragma once
/// This node's links to the other nodes of its cluster (Scheduler.nodeLink in
/// schema/rpc.capnp): one Cap'n Proto connection per node address, made on first
/// use and made again after it breaks, on a kj loop thread of its own.
///
/// Sends are fire-and-forget: a message lost with a connection (or sent to a node
/// that no longer serves the partition) is sent again by its partition, which keeps
/// every outbox entry until the receiver's receipt comes back. The receiver applies
/// each (source partition, sequence) once.

#include <cstdint>
#include <memory>
#include <string>

#include "core/error.hpp"
#include "rpc/client_tls.hpp"
#include "core/work_filter.hpp"
#include "core/list.hpp"
#include "core/query.hpp"
#include "service/types.hpp"

namespace dtsd::rpc {

/// Whether a forwarded call failed on the link itself (the other node is down, cut
/// off or stopping): UNAVAILABLE, but the call may or may not have been applied
/// there, unlike a refusal that the other node answered.
bool is_link_failure(const dtsd::error& failure);

class node_links {
 public:
  /// `node_id` is this node's, named to the nodes it links to; `token` is what it
  /// presents to them when they check tokens (--auth; empty otherwise); `tls`, how
  /// it reaches nodes whose native API serves TLS.
  static expected<std::unique_ptr<node_links>> start(std::string node_id, std::string token = {},
                                                     client_tls tls = {});
  ~node_links();
  /// Ends the link loop: calls in flight fail, later ones fail at once. Before what
  /// its callbacks reach (the router above) goes.
  void stop();

  /// An outbox entry (as the store encodes it) for partition `partition` of `hub`,
  /// served by the node at `address`. Safe from any thread; does not wait.
  void deliver(const std::string& address, const std::string& hub, std::uint32_t partition, std::string entry);
  /// Partition `partition` of `hub` (at `address`): its messages to partition `from`
  /// are durable up to `sequence`.
  void receipt(const std::string& address, const std::string& hub, std::uint32_t partition, std::uint32_t from,
               std::uint64_t sequence);

  // A client's call forwarded to the node at `address`, which serves its partition
  // (schema/rpc.capnp NodeLink). Answered on the link's thread; a broken link is
  // errc::io.
  void start(const std::string& address, const std::string& hub, const core::start_request& request,
             service::callback<service::started> done);
  void read(const std::string& address, const std::string& hub, const std::string& instance_id, bool with_history,
            service::callback<std::optional<service::instance_view>> done);
  /// Returns a handle for cancel_await.
  std::uint64_t await(const std::string& address, const std::string& hub, const std::string& instance_id,
                      bool until_completed, service::callback<core::instance_record> done);
  /// The waiter gave up: its callback never runs, and the serving node forgets the wait.
  void cancel_await(std::uint64_t handle);
  void apply(const std::string& address, const std::string& hub, const service::change& change,
             service::callback<void> done);
  void purge(const std::string& address, const std::string& hub, const std::string& instance_id, bool children,
             service::callback<service::purge_step> done);
  void query(const std::string& address, const std::string& hub, std::uint32_t partition,
             const core::instance_query& query, service::callback<core::query_page> done);
  void list(const std::string& address, const std::string& hub, std::uint32_t partition, const core::list_query& query,
            service::callback<core::list_page> done);
  void retention(const std::string& address, const std::string& hub, std::uint32_t partition, bool set,
                 const std::optional<core::retention_policy>& policy, service::callback<service::retention_view> done);
  void schedule(const std::string& address, const std::string& hub, std::uint32_t partition,
                const core::schedule_command& command, service::callback<std::vector<core::schedule>> done);

  // A worker of this node gets another node's work through a session this node
  // opens there on its behalf (NodeLink.openSession): what that node pushes goes to
  // `sink`; answers for its partitions go back through the session.

  /// Opens it; returns a handle for the calls below.
  std::uint64_t open_session(const std::string& address, const std::string& hub, service::session_slots slots,
                             const core::work_filters& filters, const std::string& worker,
                             std::shared_ptr<service::work_sink> sink);
  /// Whether the session still stands (its link has not broken, and the node did
  /// not end it); one that does not is closed and may be opened again.
  bool session_stands(std::uint64_t handle);
  void complete_orchestrator(std::uint64_t handle, const core::orchestrator_completion& completion,
                             service::callback<void> done);
  void complete_activity(std::uint64_t handle, const core::activity_result& result, service::callback<void> done);
  void abandon(std::uint64_t handle, std::uint64_t token);
  /// Drops the session: the node gives what it holds back for re-dispatch.
  void close_session(std::uint64_t handle);

  struct loop;

 private:
  explicit node_links(std::unique_ptr<loop> running);
  std::unique_ptr<loop> loop_;
};

}  // namespace dtsd::rpc
