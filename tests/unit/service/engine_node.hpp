#pragma once
// A node in one thread for the service's tests: a router over partition engines
// (memory stores, inline instances) that serves the typed partition protocol
// (actors/protocol.hpp) the way the partition actors do, but queued and run to
// quiescence on the test's thread, so that the service's compositions (query
// merge, purge walks, restarts, entity cleaning) run deterministically against
// real engines. Worker sessions are not part of it: `work()` plays the workers.

#include <doctest/doctest.h>

#include <deque>
#include <functional>
#include <map>

#include "actors/protocol.hpp"
#include "service/router.hpp"
#include "../engine/sim_world.hpp"

namespace service_test {

using namespace dtsd;

class engine_node final : public service::router {
 public:
  explicit engine_node(std::uint32_t partition_count, std::string hub = "default")
      : hub_(std::move(hub)), world_(partition_count, 7) {
    for (std::uint32_t p = 0; p < partition_count; ++p) partitions_.push_back(std::make_unique<partition>(*this, p));
  }

  /// Runs every queued request, commit and message until nothing is left.
  void run() {
    for (std::size_t steps = 0; !queue_.empty(); ++steps) {
      REQUIRE(steps < 1'000'000);
      auto next = std::move(queue_.front());
      queue_.pop_front();
      next();
    }
  }

  /// Plays the workers: answers every orchestrator and activity item (the scripted
  /// programs of sim_world) until none is left.
  void work() {
    for (int rounds = 0; rounds < 1000; ++rounds) {
      bool any = false;
      for (auto& p : partitions_) {
        auto& engine = p->engine();
        engine.prepare(now_ns());
        while (auto item = engine.next_orchestrator_item(now_ns())) {
          any = true;
          engine.complete_orchestrator({item->instance_id, item->completion_token, sim::decide(*item), {}}, now_ns(),
                                       [](expected<std::uint64_t>) {});
        }
        while (auto item = engine.next_activity_item()) {
          any = true;
          engine.complete_activity(sim::run_activity(*item), now_ns(), [](expected<std::uint64_t>) {});
        }
        queue_.push_back([&p = *p] { p.pump(); });
      }
      run();
      if (!any) return;
    }
    FAIL("the workers never ran out of work");
  }

  std::int64_t now_ns() const { return world_.now; }
  void advance(std::int64_t by_ns) { world_.now += by_ns; }
  std::size_t requests_served() const { return served_; }

  // ---- service::router
  expected<void> create_task_hub(const std::string&, std::uint32_t) override {
    return error{errc::unimplemented, "engine_node has one hub"};
  }
  expected<void> delete_task_hub(const std::string&, bool) override {
    return error{errc::unimplemented, "engine_node has one hub"};
  }
  std::vector<std::string> task_hubs() override { return {hub_}; }
  expected<std::uint32_t> partition_count(const std::string& hub) override {
    if (hub != hub_) return error{errc::unknown_task_hub, "task hub '" + hub + "' does not exist"};
    return static_cast<std::uint32_t>(partitions_.size());
  }
  void start(const std::string& hub, core::start_request request, service::callback<service::started> done) override {
    auto id = request.instance_id;
    to_instance(hub, id, actors::requests::start{std::move(request), std::move(done)});
  }
  void get(const std::string& hub, const std::string& id, bool with_history,
           service::callback<std::optional<service::instance_view>> done) override {
    to_instance(hub, id, actors::requests::read{id, with_history, std::move(done)});
  }
  std::uint64_t wait(const std::string& hub, const std::string& id, bool until_completed,
                     service::callback<core::instance_record> done) override {
    to_instance(hub, id, actors::requests::await{id, until_completed, ++waits_, std::move(done)});
    return waits_;
  }
  void cancel_wait(const std::string& hub, const std::string& id, std::uint64_t handle) override {
    if (hub == hub_) send(core::partition_of(id, static_cast<std::uint32_t>(partitions_.size())),
                          actors::requests::forget_wait{id, handle});
  }
  void change(const std::string& hub, service::change request, service::callback<void> done) override {
    const auto id = service::target_of(request);
    to_instance(hub, id, actors::requests::apply{std::move(request), std::move(done)});
  }
  void purge_one(const std::string& hub, const std::string& id, bool children,
                 service::callback<service::purge_step> done) override {
    to_instance(hub, id, actors::requests::purge{id, children, std::move(done)});
  }
  void query_partition(const std::string& hub, std::uint32_t p, core::instance_query query,
                       service::callback<core::query_page> done) override {
    if (hub != hub_) return done(error{errc::unknown_task_hub, "no hub"});
    send(p, actors::requests::query{std::move(query), std::move(done)});
  }
  void list_partition(const std::string& hub, std::uint32_t p, core::list_query query,
                      service::callback<core::list_page> done) override {
    if (hub != hub_) return done(error{errc::unknown_task_hub, "no hub"});
    send(p, actors::requests::list{std::move(query), std::move(done)});
  }
  void retention_partition(const std::string& hub, std::uint32_t p, bool set, std::optional<core::retention_policy> policy,
                           service::callback<service::retention_view> done) override {
    if (hub != hub_) return done(error{errc::unknown_task_hub, "no hub"});
    send(p, actors::requests::retention{set, std::move(policy), std::move(done)});
  }
  void schedule_partition(const std::string& hub, std::uint32_t p, core::schedule_command command,
                          service::callback<std::vector<core::schedule>> done) override {
    if (hub != hub_) return done(error{errc::unknown_task_hub, "no hub"});
    send(p, actors::requests::schedule{std::move(command), std::move(done)});
  }
  expected<std::vector<service::partition_view>> partitions(const std::string&) override {
    return std::vector<service::partition_view>{};
  }
  expected<std::uint64_t> open_session(const std::string&, service::session_slots, std::shared_ptr<service::work_sink>,
                                       core::work_filters, std::string) override {
    return error{errc::unimplemented, "engine_node has no worker sessions: work() plays them"};
  }
  void workers(const std::string&, service::callback<std::vector<service::worker_view>> done) override {
    done(std::vector<service::worker_view>{});
  }
  void close_session(std::uint64_t) override {}
  void session_alive(std::uint64_t) override {}
  void complete_orchestrator(std::uint64_t, core::orchestrator_completion, service::callback<void> done) override {
    done(error{errc::unimplemented, "no sessions"});
  }
  void complete_activity(std::uint64_t, core::activity_result, service::callback<void> done) override {
    done(error{errc::unimplemented, "no sessions"});
  }
  void abandon(std::uint64_t, std::uint64_t) override {}
  void drain() override { run(); }

 private:
  /// One partition: what the partition actor lends to serve(), committing at once.
  class partition final : public actors::partition_context, public actors::peer_link {
   public:
    partition(engine_node& node, std::uint32_t index) : node_(node), index_(index) {}
    engine::partition_engine& engine() override { return *node_.world_.engines[index_]; }
    std::int64_t now_ns() const override { return node_.now_ns(); }
    void after_commit(std::uint64_t batch, std::function<void()> action) override {
      if (batch <= committed_) return node_.queue_.push_back(std::move(action));
      acks_.emplace(batch, std::move(action));
    }
    void add_waiter(const std::string& id, bool until_completed, std::uint64_t,
                    service::callback<core::instance_record> done) override {
      waiters_.emplace_back(id, until_completed, std::move(done));
      check_waiters();
    }
    void remove_waiter(const std::string& id, std::uint64_t) override {
      std::erase_if(waiters_, [&](const auto& w) { return std::get<0>(w) == id; });
    }
    const std::optional<dtsd::error>& write_refusal() const override { return refusal_; }
    void send(std::uint32_t to, actors::peer_message message) override {
      node_.queue_.push_back([&node = node_, to, message = std::move(message)]() mutable {
        auto& peer = *node.partitions_[to];
        actors::serve(peer, std::move(message));
        peer.pump();
      });
    }

    /// Commits what the engine holds and releases what the commit allows.
    void pump() {
      while (auto batch = engine().take_batch()) {
        REQUIRE(engine().store().commit(batch->second, now_ns()));
        committed_ = batch->first;
        auto released = engine().batch_committed(batch->first);
        while (!acks_.empty() && acks_.begin()->first <= committed_) {
          node_.queue_.push_back(std::move(acks_.begin()->second));
          acks_.erase(acks_.begin());
        }
        for (auto& entry : released.outbound) {
          const auto to = entry.destination_partition;
          send(to, actors::peer::delivery{std::move(entry)});
        }
        for (auto [source, sequence] : released.receipts) send(source, actors::peer::receipt{index_, sequence});
      }
      check_waiters();
    }

   private:
    void check_waiters() {
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        auto& [id, until_completed, done] = *it;
        auto record = engine().store().get_instance(id);
        if (record && *record &&
            (until_completed ? core::is_terminal((*record)->status)
                             : (*record)->status != core::runtime_status::pending)) {
          node_.queue_.push_back([done = std::move(done), r = **record] { done(r); });
          it = waiters_.erase(it);
        } else {
          ++it;
        }
      }
    }

    engine_node& node_;
    std::uint32_t index_;
    std::uint64_t committed_ = 0;
    std::multimap<std::uint64_t, std::function<void()>> acks_;
    std::vector<std::tuple<std::string, bool, service::callback<core::instance_record>>> waiters_;
    std::optional<dtsd::error> refusal_;
  };

  void send(std::uint32_t p, actors::partition_request request) {
    queue_.push_back([this, p, request = std::move(request)]() mutable {
      ++served_;
      actors::serve(*partitions_[p], std::move(request));
      partitions_[p]->pump();
    });
  }

  template <class Request>
  void to_instance(const std::string& hub, const std::string& id, Request request) {
    if (hub != hub_) return request.done(error{errc::unknown_task_hub, "task hub '" + hub + "' does not exist"});
    if (auto valid = core::validate_instance_id(id); !valid) return request.done(valid.error());
    send(core::partition_of(id, static_cast<std::uint32_t>(partitions_.size())), std::move(request));
  }

  std::string hub_;
  sim::world world_;
  std::vector<std::unique_ptr<partition>> partitions_;
  std::deque<std::function<void()>> queue_;
  std::uint64_t waits_ = 0;
  std::size_t served_ = 0;
};

}  // namespace service_test
