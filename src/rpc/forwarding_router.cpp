#include "rpc/forwarding_router.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <thread>

#include "core/ids.hpp"

namespace dtsd::rpc {

namespace {

using steady = std::chrono::steady_clock;
/// A call refused because its partition is moving is tried again this often, for
/// at most this long: a planned move takes tens of milliseconds, a take-over after
/// a node died its lease (clients then get UNAVAILABLE and retry themselves).
constexpr auto move_retry_every = std::chrono::milliseconds(50);
constexpr auto move_retry_for = std::chrono::seconds(2);

/// Runs closures later, on a thread of its own; at the end, what is still waiting
/// is given up (its `give_up` runs instead).
class delayed_calls {
 public:
  delayed_calls() : thread_([this] { run(); }) {}
  ~delayed_calls() {
    std::multimap<steady::time_point, entry> left;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      left.swap(queue_);
    }
    wake_.notify_all();
    thread_.join();
    for (auto& [when, call] : left) call.give_up();
  }
  /// False (nothing queued) once stopping.
  bool after(steady::duration delay, std::function<void()> run, std::function<void()> give_up) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return false;
      queue_.emplace(steady::now() + delay, entry{std::move(run), std::move(give_up)});
    }
    wake_.notify_all();
    return true;
  }

 private:
  struct entry {
    std::function<void()> run, give_up;
  };
  void run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (queue_.empty()) {
        wake_.wait(lock);
        continue;
      }
      const auto first = queue_.begin()->first;
      if (steady::now() < first) {
        wake_.wait_until(lock, first);
        continue;
      }
      auto due = std::move(queue_.begin()->second);
      queue_.erase(queue_.begin());
      lock.unlock();
      due.run();
      lock.lock();
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::multimap<steady::time_point, entry> queue_;
  std::thread thread_;
};

class forwarding_router_impl final : public forwarding_router {
 public:
  forwarding_router_impl(service::router& local, service::partition_host& host, node_links& links,
                         owner_lookup owner, nodes_lookup other_nodes)
      : local_(local), host_(host), links_(links), owner_(std::move(owner)), other_nodes_(std::move(other_nodes)) {}

  // ---- hubs: every node knows every hub (cluster/node.hpp)
  expected<void> create_task_hub(const std::string& hub, std::uint32_t count) override {
    return local_.create_task_hub(hub, count);
  }
  expected<void> delete_task_hub(const std::string& hub, bool force) override {
    return local_.delete_task_hub(hub, force);
  }
  std::vector<std::string> task_hubs() override { return local_.task_hubs(); }
  expected<std::uint32_t> partition_count(const std::string& hub) override { return local_.partition_count(hub); }

  // ---- one instance: here, or at the node serving it. A call refused because
  // its partition is moving (not served where it went, applied nowhere) is tried
  // again shortly, where the partition is then; a link failure is not (the call
  // may have been applied at the other end).
  void start(const std::string& hub, core::start_request request, service::callback<service::started> done) override {
    while_moving<service::started>(
        [this, hub, request](service::callback<service::started> answer) {
          if (auto where = elsewhere(hub, request.instance_id)) return links_.start(*where, hub, request, std::move(answer));
          local_.start(hub, request, std::move(answer));
        },
        std::move(done));
  }

  void get(const std::string& hub, const std::string& id, bool with_history,
           service::callback<std::optional<service::instance_view>> done) override {
    while_moving<std::optional<service::instance_view>>(
        [this, hub, id, with_history](service::callback<std::optional<service::instance_view>> answer) {
          if (auto where = elsewhere(hub, id)) return links_.read(*where, hub, id, with_history, std::move(answer));
          local_.get(hub, id, with_history, std::move(answer));
        },
        std::move(done));
  }

  std::uint64_t wait(const std::string& hub, const std::string& id, bool until_completed,
                     service::callback<core::instance_record> done) override {
    const auto handle = next_wait_++;
    // The entry goes once answered; a cancelled wait is never answered.
    auto answer = [this, handle, done = std::move(done)](expected<core::instance_record> record) {
      {
        std::lock_guard lock(mutex_);
        waits_.erase(handle);
      }
      done(std::move(record));
    };
    // The answer may come at once (a refusal), before the inner handle is known.
    auto where = elsewhere(hub, id);
    {
      std::lock_guard lock(mutex_);
      waits_[handle] = {where.has_value(), 0};
    }
    const auto inner = where ? links_.await(*where, hub, id, until_completed, std::move(answer))
                             : local_.wait(hub, id, until_completed, std::move(answer));
    std::lock_guard lock(mutex_);
    if (auto found = waits_.find(handle); found != waits_.end()) found->second.inner = inner;
    return handle;
  }

  void cancel_wait(const std::string& hub, const std::string& id, std::uint64_t handle) override {
    forwarded_wait found{};
    {
      std::lock_guard lock(mutex_);
      auto it = waits_.find(handle);
      if (it == waits_.end()) return;
      found = it->second;
      waits_.erase(it);
    }
    if (found.remote) {
      links_.cancel_await(found.inner);
    } else {
      local_.cancel_wait(hub, id, found.inner);
    }
  }

  void change(const std::string& hub, service::change request, service::callback<void> done) override {
    while_moving<void>(
        [this, hub, request](service::callback<void> answer) {
          if (auto where = elsewhere(hub, service::target_of(request))) {
            return links_.apply(*where, hub, request, std::move(answer));
          }
          local_.change(hub, request, std::move(answer));
        },
        std::move(done));
  }

  void purge_one(const std::string& hub, const std::string& id, bool children,
                 service::callback<service::purge_step> done) override {
    while_moving<service::purge_step>(
        [this, hub, id, children](service::callback<service::purge_step> answer) {
          if (auto where = elsewhere(hub, id)) return links_.purge(*where, hub, id, children, std::move(answer));
          local_.purge_one(hub, id, children, std::move(answer));
        },
        std::move(done));
  }

  // ---- one partition
  void query_partition(const std::string& hub, std::uint32_t partition, core::instance_query query,
                       service::callback<core::query_page> done) override {
    while_moving<core::query_page>(
        [this, hub, partition, query](service::callback<core::query_page> answer) {
          if (auto where = elsewhere(hub, partition)) return links_.query(*where, hub, partition, query, std::move(answer));
          local_.query_partition(hub, partition, query, std::move(answer));
        },
        std::move(done));
  }
  void list_partition(const std::string& hub, std::uint32_t partition, core::list_query query,
                      service::callback<core::list_page> done) override {
    while_moving<core::list_page>(
        [this, hub, partition, query](service::callback<core::list_page> answer) {
          if (auto where = elsewhere(hub, partition)) return links_.list(*where, hub, partition, query, std::move(answer));
          local_.list_partition(hub, partition, query, std::move(answer));
        },
        std::move(done));
  }
  void retention_partition(const std::string& hub, std::uint32_t partition, bool set,
                           std::optional<core::retention_policy> policy,
                           service::callback<service::retention_view> done) override {
    while_moving<service::retention_view>(
        [this, hub, partition, set, policy](service::callback<service::retention_view> answer) {
          if (auto where = elsewhere(hub, partition)) {
            return links_.retention(*where, hub, partition, set, policy, std::move(answer));
          }
          local_.retention_partition(hub, partition, set, policy, std::move(answer));
        },
        std::move(done));
  }
  void schedule_partition(const std::string& hub, std::uint32_t partition, core::schedule_command command,
                          service::callback<std::vector<core::schedule>> done) override {
    while_moving<std::vector<core::schedule>>(
        [this, hub, partition, command](service::callback<std::vector<core::schedule>> answer) {
          if (auto where = elsewhere(hub, partition)) {
            return links_.schedule(*where, hub, partition, command, std::move(answer));
          }
          local_.schedule_partition(hub, partition, command, std::move(answer));
        },
        std::move(done));
  }
  expected<std::vector<service::partition_view>> partitions(const std::string& hub) override {
    return local_.partitions(hub);
  }

  // ---- worker sessions: here, and relayed from every other node
  expected<std::uint64_t> open_session(const std::string& hub, service::session_slots slots,
                                       std::shared_ptr<service::work_sink> sink, core::work_filters filters,
                                       std::string worker) override {
    auto id = local_.open_session(hub, slots, sink, filters, worker);
    if (!id) return id;
    {
      std::lock_guard lock(mutex_);
      sessions_[*id] = session_card{hub, slots, std::move(filters), std::move(worker), std::move(sink), {}};
    }
    maintain(*id);
    return id;
  }
  void workers(const std::string& hub, service::callback<std::vector<service::worker_view>> done) override {
    local_.workers(hub, std::move(done));
  }
  void close_session(std::uint64_t session) override {
    std::map<std::string, std::uint64_t> relayed;
    {
      std::lock_guard lock(mutex_);
      if (auto found = sessions_.find(session); found != sessions_.end()) {
        relayed = std::move(found->second.relayed);
        sessions_.erase(found);
      }
    }
    for (const auto& [address, handle] : relayed) links_.close_session(handle);
    local_.close_session(session);
  }
  void session_alive(std::uint64_t session) override { local_.session_alive(session); }
  void complete_orchestrator(std::uint64_t session, core::orchestrator_completion completion,
                             service::callback<void> done) override {
    if (auto handle = relayed_for(session, completion.instance_id)) {
      return links_.complete_orchestrator(*handle, completion, std::move(done));
    }
    local_.complete_orchestrator(session, std::move(completion), std::move(done));
  }
  void complete_activity(std::uint64_t session, core::activity_result result, service::callback<void> done) override {
    if (auto handle = relayed_for(session, result.instance_id)) {
      return links_.complete_activity(*handle, result, std::move(done));
    }
    local_.complete_activity(session, std::move(result), std::move(done));
  }
  // Tokens are unique across partitions: whichever session holds it gives it back.
  void abandon(std::uint64_t session, std::uint64_t token) override {
    std::vector<std::uint64_t> relayed;
    {
      std::lock_guard lock(mutex_);
      if (auto found = sessions_.find(session); found != sessions_.end()) {
        for (const auto& [address, handle] : found->second.relayed) relayed.push_back(handle);
      }
    }
    for (auto handle : relayed) links_.abandon(handle, token);
    local_.abandon(session, token);
  }

  void maintain_sessions() override {
    std::vector<std::uint64_t> ids;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, card] : sessions_) ids.push_back(id);
    }
    for (auto id : ids) maintain(id);
  }

  void drain() override { local_.drain(); }

 private:
  /// Runs `attempt` (routing the call afresh each time) and answers `done`; while
  /// the answer is a refusal of a partition that is moving, tries again.
  template <class T, class Attempt>
  void while_moving(Attempt attempt, service::callback<T> done, steady::time_point until = steady::now() + move_retry_for) {
    auto retry = [this, attempt, done, until](expected<T> answer) {
      if (answer || answer.error().code != errc::unavailable || is_link_failure(answer.error()) ||
          steady::now() + move_retry_every > until) {
        return done(std::move(answer));
      }
      auto last = std::make_shared<expected<T>>(std::move(answer));
      const bool queued = retries_.after(
          move_retry_every, [this, attempt, done, until] { while_moving<T>(attempt, done, until); },
          [done, last] { done(std::move(*last)); });
      if (!queued) done(std::move(*last));
    };
    attempt(std::move(retry));
  }

  /// Where another node serves the partition, if one does (else the call is this
  /// node's: served here, or refused here with why).
  std::optional<std::string> elsewhere(const std::string& hub, std::uint32_t partition) {
    if (host_.serves(hub, partition)) return std::nullopt;
    return owner_(hub, partition);
  }
  std::optional<std::string> elsewhere(const std::string& hub, const std::string& instance_id) {
    if (!core::validate_instance_id(instance_id)) return std::nullopt;
    auto count = local_.partition_count(hub);
    if (!count) return std::nullopt;
    return elsewhere(hub, core::partition_of(instance_id, *count));
  }

  /// A session of this node's worker, and the sessions relayed for it, by node address.
  struct session_card {
    std::string hub;
    service::session_slots slots;
    core::work_filters filters;
    std::string worker;
    std::shared_ptr<service::work_sink> sink;
    std::map<std::string, std::uint64_t> relayed;
  };

  /// The relayed session an answer for `instance_id` goes through (its partition is
  /// served by another node), or none (served here, or refused here).
  std::optional<std::uint64_t> relayed_for(std::uint64_t session, const std::string& instance_id) {
    std::string hub;
    {
      std::lock_guard lock(mutex_);
      auto found = sessions_.find(session);
      if (found == sessions_.end()) return std::nullopt;
      hub = found->second.hub;
    }
    auto where = elsewhere(hub, instance_id);
    if (!where) return std::nullopt;
    std::lock_guard lock(mutex_);
    auto found = sessions_.find(session);
    if (found == sessions_.end()) return std::nullopt;
    auto relayed = found->second.relayed.find(*where);
    if (relayed == found->second.relayed.end()) return std::nullopt;
    return relayed->second;
  }

  /// Opens the session's relays at nodes that lack one (or whose relay fell), and
  /// closes those at nodes gone.
  void maintain(std::uint64_t id) {
    // One at a time (a worker's open and the node's periodic pass may meet), and
    // never under mutex_: the link's thread takes it to answer forwarded waits.
    std::lock_guard maintaining(maintain_mutex_);
    auto nodes = other_nodes_();
    session_card card;
    {
      std::lock_guard lock(mutex_);
      auto found = sessions_.find(id);
      if (found == sessions_.end()) return;
      card = found->second;
    }
    if (card.filters.this_node_only) nodes.clear();  // Its worker takes this node's work only.
    std::map<std::string, std::uint64_t> keep;
    std::vector<std::uint64_t> drop;
    for (const auto& [address, handle] : card.relayed) {
      if (std::find(nodes.begin(), nodes.end(), address) != nodes.end() && links_.session_stands(handle)) {
        keep[address] = handle;
      } else {
        drop.push_back(handle);
      }
    }
    for (const auto& address : nodes) {
      if (!keep.count(address)) {
        keep[address] = links_.open_session(address, card.hub, card.slots, card.filters, card.worker, card.sink);
      }
    }
    for (auto handle : drop) links_.close_session(handle);
    bool closed_meanwhile = false;
    {
      std::lock_guard lock(mutex_);
      if (auto found = sessions_.find(id); found != sessions_.end()) {
        found->second.relayed = keep;
      } else {
        closed_meanwhile = true;
      }
    }
    if (closed_meanwhile) {
      for (const auto& [address, handle] : keep) links_.close_session(handle);
    }
  }

  struct forwarded_wait {
    bool remote = false;
    std::uint64_t inner = 0;  ///< The local router's handle, or the link's.
  };

  service::router& local_;
  service::partition_host& host_;
  node_links& links_;
  owner_lookup owner_;
  nodes_lookup other_nodes_;
  std::mutex mutex_;
  std::mutex maintain_mutex_;  ///< Taken before mutex_, never by the link's thread.
  std::map<std::uint64_t, session_card> sessions_;
  std::map<std::uint64_t, forwarded_wait> waits_;
  std::atomic<std::uint64_t> next_wait_{1};
  delayed_calls retries_;  ///< Last: goes first, giving up what waits before the rest goes.
};

}  // namespace

std::unique_ptr<forwarding_router> make_forwarding_router(service::router& local, service::partition_host& host,
                                                          node_links& links, owner_lookup owner,
                                                          nodes_lookup other_nodes) {
  return std::make_unique<forwarding_router_impl>(local, host, links, std::move(owner), std::move(other_nodes));
}

}  // namespace dtsd::rpc
