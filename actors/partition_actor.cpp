// The partition actor: owns one partition engine and a lane of the commit pool.
// While a pool thread commits batch k (an LMDB transaction begins and ends on that
// thread), the actor keeps applying inputs into batch k+1: group commit, pipelined.
// A quiet partition whose pool is idle commits on its own thread instead (see
// pump()): nothing waits to be pipelined, and no thread must be woken.
// What a batch releases (acks, outbox messages, receipts, work, waiters) goes out
// only when the pool reports it durable.

#include <spdlog/spdlog.h>

#include <atomic>
#include <map>
#include <unordered_map>

#include "actors/internal.hpp"

namespace dtsd::actors {
namespace {

/// How often a partition ends the instance actors that stayed idle (and all on
/// disk) for a whole period; they are made live again from the store when needed.
constexpr auto instance_sweep_period = std::chrono::seconds(30);
/// How often a partition purges what its retention policy says is due: a bounded
/// trickle of ordinary purges that ride in the batches of foreground work, with
/// room for up to --retention-purges-max under way while the partition is quiet.
/// While it is busy (work waits for a worker, or it committed foreground changes
/// since the last look: a worker that leases all it can leaves nothing waiting
/// while it works), it purges what became due since the last look (a steady load's
/// ended orchestrations, purged as they come, so the store stays at its size) plus
/// retention_backlog_busy: a backlog (a million due at once after a policy change)
/// waits for a quieter moment, purged at 8 a second per partition meanwhile.
constexpr auto retention_period = std::chrono::milliseconds(250);
/// The largest batch (in instances changed) a partition commits on its own thread.
constexpr std::size_t commit_here_changes_max = 2;
constexpr std::size_t retention_backlog_busy = 2;
/// When a partition of this process last saw foreground work (retention's
/// signal), on the steady clock.
std::atomic<std::int64_t> foreground_seen_ns{0};
/// How often a cluster node's partition sends again what other nodes have not acknowledged.
constexpr auto remote_resend_period = std::chrono::seconds(1);
/// A partition whose commit failed tries the same batch again after this, doubling
/// up to the maximum, until it succeeds.
constexpr auto commit_retry_first = std::chrono::milliseconds(100);
constexpr auto commit_retry_max = std::chrono::seconds(2);

/// One live orchestration or entity, pinned to its partition: performs the
/// partition's operations on the instance's state, in the order sent, and sends
/// each outcome back. It never writes storage; linked to its partition, it ends
/// with it.
struct instance_state {
  std::shared_ptr<engine::live_instance> live;
};

caf::behavior instance_actor(caf::stateful_actor<instance_state>* self, caf::actor partition,
                             std::shared_ptr<engine::live_instance> live, core::payload_limits limits) {
  self->state.live = std::move(live);
  return {
      [=](run_atom, const instance_call_ptr& call) {
        call->outcome = engine::perform(*self->state.live, call->op, limits);
        self->send(partition, done_atom::value, call);
      },
      [=](close_atom) { self->quit(); },
  };
}

/// The partition's live instances, each an actor of its own.
class actor_host final : public engine::instance_host {
 public:
  explicit actor_host(caf::event_based_actor* partition) : partition_(partition) {}

  void run(const std::string& id, std::uint64_t number, engine::instance_op op) override {
    auto found = live_.find(id);
    if (found == live_.end()) {
      auto made = std::make_shared<engine::live_instance>(id, load_);
      if (made->load_error) {  // Not made live: the next operation tries the store again.
        return answer_(number, engine::perform(*made, op, limits_));
      }
      auto actor = partition_->spawn<caf::linked>(instance_actor, caf::actor_cast<caf::actor>(partition_),
                                                  std::move(made), limits_);
      found = live_.emplace(id, std::move(actor)).first;
    }
    partition_->send(found->second, run_atom::value, std::make_shared<instance_call>(number, std::move(op)));
  }

  void evict(const std::string& id) override {
    auto found = live_.find(id);
    if (found == live_.end()) return;
    partition_->send(found->second, close_atom::value);  // After every operation sent before.
    live_.erase(found);
  }

 private:
  caf::event_based_actor* partition_;
  std::unordered_map<std::string, caf::actor> live_;
};

struct waiter {
  bool until_completed;
  std::uint64_t handle;
  callback<core::instance_record> done;
};

bool satisfies(const core::instance_record& record, bool until_completed) {
  if (until_completed) return core::is_terminal(record.status);
  return record.status != core::runtime_status::pending;
}

class partition_state : public partition_context, public peer_link {
 public:
  caf::event_based_actor* self = nullptr;
  const service::clock* clock = nullptr;
  std::shared_ptr<engine::partition_engine> engine_;
  std::unique_ptr<commit_pool::lane> writer;  ///< Declared after the engine: goes first.
  bool writing = false;
  /// The process has more than one actor thread: a quiet partition may commit on its own.
  bool commit_here = false;
  std::uint64_t committed_up_to = 0;
  std::multimap<std::uint64_t, std::function<void()>> acks;
  std::unordered_map<std::string, std::vector<waiter>> waiters;
  std::vector<caf::actor> peers;  ///< Null where a partition is not served by this node.
  const remote_peer* remote = nullptr;  ///< A cluster node's link to the other nodes.
  caf::actor coordinator;
  std::uint32_t index = 0;
  std::optional<std::int64_t> wake_at_ns;
  work_kinds announced;  ///< What the coordinator believes this partition has.
  bool draining = false;
  std::vector<std::function<void()>> drained;
  /// While its commits fail: the refusal given to new writes (see on_stalled).
  std::optional<dtsd::error> stall;
  std::chrono::milliseconds retry_delay = commit_retry_first;
  std::shared_ptr<partition_health> health;
  /// The hub's worker sessions, as the coordinator announced them: where a slot
  /// freed here can push the next item directly.
  std::map<std::uint64_t, session_info> sessions;
  /// How often the slots of items pushed from here were used again in a row.
  freed_slots slots;
  /// Freed slots not yet reported to the coordinator, and what they pushed.
  std::vector<slot_handover> handovers;
  std::map<std::uint64_t, std::vector<work_item>> pushes;
  /// The batch being written: when it was handed over, and how many instance changes it holds.
  std::int64_t write_started_ns = 0;
  std::size_t write_changes = 0;
  /// Committed changes and retention purges when retention last looked (busy or not).
  std::uint64_t changes_seen = 0, purged_seen = 0;

  const std::optional<dtsd::error>& write_refusal() const override { return stall; }

  engine::partition_engine& engine() override { return *engine_; }
  std::int64_t now_ns() const override { return clock->now_ns(); }

  void slot_freed(std::uint64_t session, work_kind kind, std::uint64_t token) override {
    auto card = sessions.find(session);
    const bool hands_out = !stall && !draining && card != sessions.end();
    auto freed = slots.freed(*engine_, index, session, kind, token, hands_out ? &card->second.filters : nullptr,
                             now_ns());
    if (freed.push) pushes[session].push_back(std::move(*freed.push));
    handovers.push_back(std::move(freed.handover));
  }

  /// Tells the coordinator, then pushes what freed slots took: in this order, the
  /// handover reaches the coordinator before anything the worker does with a
  /// pushed item (an abandon goes straight to the coordinator).
  void flush_handovers() {
    if (handovers.empty()) return;
    self->send(coordinator, handover_atom::value, std::move(handovers));
    handovers.clear();
    for (auto& [session, items] : pushes) {
      if (auto card = sessions.find(session); card != sessions.end()) card->second.sink->push(std::move(items));
    }
    pushes.clear();
  }

  void answer_refused(std::uint64_t token) override { slots.forget(token); }

  /// The in-process link: a typed message to the peer's actor.
  void send(std::uint32_t partition, peer_message message) override {
    // A peer served by another node gets it over the node link; one served by none
    // (moving) gets it when the outbox is sent again (resend_unacknowledged).
    if (partition < peers.size() && peers[partition]) {
      self->send(peers[partition], std::move(message));
    } else if (remote) {
      (*remote)(engine_->identity().task_hub, partition, message);
    }
  }

  void after_commit(std::uint64_t batch, std::function<void()> action) override {
    if (batch <= committed_up_to) {
      action();
    } else {
      acks.emplace(batch, std::move(action));
    }
  }

  void add_waiter(const std::string& instance_id, bool until_completed, std::uint64_t handle,
                  callback<core::instance_record> done) override {
    // Only durable state answers a waiter: the store, not the instance's memory.
    auto durable = engine_->store().get_instance(instance_id);
    if (!durable) return done(durable.error());
    if (*durable && satisfies(**durable, until_completed)) return done(**durable);
    if (*durable) {
      waiters[instance_id].push_back({until_completed, handle, std::move(done)});
      return;
    }
    // Not on disk: wait only if the instance exists, about to be committed.
    engine_->get_instance(instance_id, [this, instance_id, until_completed, handle,
                                        done = std::move(done)](expected<std::optional<core::instance_record>> live) {
      if (!live) return done(live.error());
      if (!*live) return done(error{errc::not_found, fmt::format("no instance with id '{}'", instance_id)});
      // Its batch may have committed while the instance answered.
      auto now_durable = engine_->store().get_instance(instance_id);
      if (now_durable && *now_durable && satisfies(**now_durable, until_completed)) return done(**now_durable);
      waiters[instance_id].push_back({until_completed, handle, std::move(done)});
    });
  }

  void remove_waiter(const std::string& instance_id, std::uint64_t handle) override {
    auto found = waiters.find(instance_id);
    if (found == waiters.end()) return;
    std::erase_if(found->second, [handle](const waiter& w) { return w.handle == handle; });
    if (found->second.empty()) waiters.erase(found);
  }

  void notify_waiters(const engine::released& released) {
    for (const auto& record : released.records) {
      auto found = waiters.find(record.instance_id);
      if (found == waiters.end()) continue;
      auto& list = found->second;
      for (auto it = list.begin(); it != list.end();) {
        if (satisfies(record, it->until_completed)) {
          it->done(record);
          it = list.erase(it);
        } else {
          ++it;
        }
      }
      if (list.empty()) waiters.erase(found);
    }
    for (const auto& id : released.purged) {
      auto found = waiters.find(id);
      if (found == waiters.end()) continue;
      for (auto& w : found->second) w.done(error{errc::not_found, fmt::format("instance '{}' was purged", id)});
      waiters.erase(found);
    }
  }

  work_kinds available() const { return available_work(*engine_); }

  /// Tells the coordinator about any kind of work it does not know this partition has.
  void announce() {
    if (!coordinator || draining || stall) return;
    auto kinds = available();
    bool news = false;
    for (std::size_t k = 0; k < work_kind_count; ++k) {
      news = news || (kinds.has[k] && !announced.has[k]);
      announced.has[k] = announced.has[k] || kinds.has[k];
    }
    if (!news) return;
    self->send(coordinator, ready_atom::value, index, announced);
  }

  /// After every message: start the next commit if the writer is idle, and keep a
  /// wake-up scheduled for the next timer.
  void pump() {
    std::optional<std::pair<std::uint64_t, store::write_batch>> to_write;
    if (!writing && writer) {
      if (auto batch = engine_->take_batch()) {
        writing = true;
        write_started_ns = now_ns();
        write_changes = batch->second.instances.size();
        // A quiet partition (a batch of one or two instances' changes) commits on
        // its own thread when the pool is idle, unless it would hold the process's
        // only actor thread: below, once what goes out has gone. A busy one (a
        // large batch: under load, or one hot partition) hands it to the pool now
        // and goes on building its next batch meanwhile.
        if (commit_here && write_changes <= commit_here_changes_max) {
          to_write = std::move(batch);
        } else {
          writer->write(batch->first, std::move(batch->second));
        }
      } else if (draining && engine_->quiescent()) {
        for (auto& done : drained) done();
        drained.clear();
      }
    } else if (draining && stall && !drained.empty()) {
      // It cannot commit what it holds: stopping must not wait for the disk. None
      // of the uncommitted changes was acknowledged to anyone.
      spdlog::warn("partition {} of hub '{}' stops with changes it could not commit (none was acknowledged)", index,
                   engine_->identity().task_hub);
      for (auto& done : drained) done();
      drained.clear();
    }
    flush_handovers();
    if (!draining) engine_->prepare(now_ns());
    announce();
    publish_backlog();
    if (auto due = engine_->next_wakeup_ns(); due && (!wake_at_ns || *due < *wake_at_ns)) {
      wake_at_ns = due;
      auto delay = std::max<std::int64_t>(0, *due - now_ns());
      self->delayed_send(self, std::chrono::nanoseconds(delay), tick_atom::value);
    }
    // Last, so that what went out above does not wait for the disk.
    if (to_write) writer->write_here_if_idle(to_write->first, std::move(to_write->second));
  }

  /// What the status calls read: the work waiting, per kind.
  void publish_backlog() {
    const auto counts = engine_->backlog();
    std::lock_guard lock(health->mutex);
    health->ready_orchestrators = counts.orchestrators;
    health->ready_activities = counts.activities;
    health->ready_entities = counts.entities;
    health->waiting_since_ns = {counts.orchestrators_since_ns.value_or(0), counts.activities_since_ns.value_or(0),
                                counts.entities_since_ns.value_or(0)};
    health->live_instances = engine_->cached_instance_count();
    health->unacknowledged_messages = counts.unacknowledged;
  }

  /// A commit failed and the lane keeps the batch: refuse new writes from clients
  /// and workers (they get `stall`), hand out no work, keep serving reads and
  /// applying what is already under way, and retry with a growing delay. Logged
  /// once per stall, not per attempt. `fenced`: a newer owner fenced the store (in
  /// a cluster: this node lost the partition, and stops serving it as soon as it
  /// sees that); nothing of the batch was written, and nothing will be.
  void on_stalled(std::uint64_t batch, bool fenced, const std::string& why) {
    const auto now = now_ns();
    if (!stall && fenced) {
      spdlog::warn("partition {} of hub '{}': batch {} is refused: {}; none of it was acknowledged", index,
                   engine_->identity().task_hub, batch, why);
      stall = dtsd::error{errc::unavailable,
                          fmt::format("partition {} of task hub '{}' is moving to another node: try again shortly",
                                      index, engine_->identity().task_hub)};
      retry_delay = commit_retry_first;
      announced = {};
    } else if (!stall) {
      spdlog::error("partition {} of hub '{}' cannot commit batch {}: {}; it refuses new writes and retries until it "
                    "can",
                    index, engine_->identity().task_hub, batch, why);
      stall = dtsd::error{errc::resource_exhausted,
                          fmt::format("partition {} of task hub '{}' cannot write to its storage ({}); new writes are "
                                      "refused until it can: try again later",
                                      index, engine_->identity().task_hub, why)};
      retry_delay = commit_retry_first;
      announced = {};
    } else {
      retry_delay = std::min<std::chrono::milliseconds>(retry_delay * 2, commit_retry_max);
    }
    {
      std::lock_guard lock(health->mutex);
      if (!health->stalled) health->since_ns = now;
      health->stalled = why;
      ++health->failed_commits;
    }
    self->delayed_send(self, retry_delay, retry_atom::value);
  }

  void on_committed(std::uint64_t batch) {
    const auto now = now_ns();
    std::int64_t since = 0;
    {
      std::lock_guard lock(health->mutex);
      since = health->since_ns;
      if (stall) health->stalled.reset();
      const auto took = std::max<std::int64_t>(0, now - write_started_ns);
      ++health->commits;
      health->committed_changes += write_changes;
      health->commit_ns_total += took;
      health->commit_ns_max = std::max(health->commit_ns_max, took);
      // The next commit starts after this: the store's counts are still.
      health->orchestrations_by_status = engine_->store().counts();
      health->lifecycle = engine_->store().lifecycle();
      health->disk_bytes = engine_->store().disk_bytes();
      ++health->commit_seconds_buckets[service::bucket_of(service::commit_seconds_bounds,
                                                          static_cast<double>(took) / 1e9)];
      ++health->batch_changes_buckets[service::bucket_of(service::batch_changes_bounds,
                                                         static_cast<double>(write_changes))];
    }
    if (stall) {
      spdlog::warn("partition {} of hub '{}' writes again after {:.1f} s", index, engine_->identity().task_hub,
                   static_cast<double>(now - since) / 1e9);
      stall.reset();
    }
    writing = false;
    committed_up_to = batch;
    auto released = engine_->batch_committed(batch);
    {
      std::lock_guard lock(health->mutex);
      health->retention_purged = engine_->retention_purged();  // Counted as the purges became durable.
      health->oldest_ended_ns = engine_->store().catalog().oldest_ended_ns().value_or(0);
    }
    while (!acks.empty() && acks.begin()->first <= batch) {
      auto action = std::move(acks.begin()->second);
      acks.erase(acks.begin());
      action();
    }
    for (auto& entry : released.outbound) {
      const auto destination = entry.destination_partition;
      send(destination, peer::delivery{std::move(entry)});
    }
    for (auto [source, sequence] : released.receipts) send(source, peer::receipt{index, sequence});
    notify_waiters(released);
    announce();
  }

  void on_take(const take_request& take) {
    // Its answers could not be committed (stalled), or it is being handed over
    // (draining: answers would reach its next owner as stale): nothing now.
    if (stall || draining) {
      announced = {};
      work_batch none{index, take.wanted, {}, {}, {}, {}, {}};
      // What it keeps parked stays known, or a session that accepts it later
      // would not ask this partition for it.
      none.parked = parked_work(*engine_);
      self->send(coordinator, work_atom::value, std::move(none));
      return;
    }
    auto work = take_work(*engine_, index, take, now_ns());
    // The coordinator keeps what is left in mind; new kinds are announced later.
    announced = work.left;
    self->send(coordinator, work_atom::value, std::move(work));
  }
};

caf::behavior partition_actor(caf::stateful_actor<partition_state>* self,
                              std::shared_ptr<engine::partition_engine> owned, commit_pool* commits,
                              std::shared_ptr<partition_health> health, const service::clock* clock,
                              const remote_peer* remote) {
  auto& state = self->state;
  state.self = self;
  state.clock = clock;
  state.remote = remote && *remote ? remote : nullptr;
  state.health = std::move(health);
  // The engine arrives through a shared_ptr because spawn arguments must be copyable.
  state.engine_ = std::move(owned);
  state.engine_->set_host(std::make_unique<actor_host>(self));
  {
    std::lock_guard lock(state.health->mutex);
    state.health->orchestrations_by_status = state.engine_->store().counts();
    state.health->disk_bytes = state.engine_->store().disk_bytes();
    state.health->oldest_ended_ns = state.engine_->store().catalog().oldest_ended_ns().value_or(0);
  }
  auto owner = caf::actor_cast<caf::actor>(self);
  state.writer = commits->open(
      state.engine_->store(), [owner](std::uint64_t batch) { caf::anon_send(owner, committed_atom::value, batch); },
      [owner](std::uint64_t batch, const dtsd::error& why) {
        caf::anon_send(owner, stall_atom::value, batch, why.code == errc::failed_precondition, why.message);
      });
  state.commit_here = self->home_system().scheduler().num_workers() > 1;
  state.index = state.engine_->identity().partition_index;
  self->delayed_send(self, instance_sweep_period, sweep_atom::value);
  self->delayed_send(self, retention_period, expire_atom::value);
  if (state.remote) self->delayed_send(self, remote_resend_period, resend_atom::value);
  return {
      [=](partition_request& request) {
        serve(self->state, std::move(request));
        self->state.pump();
      },
      [=](peer_message& message) {
        serve(self->state, std::move(message));
        self->state.pump();
      },
      // An instance actor performed an operation: the partition's part follows.
      [=](done_atom, const instance_call_ptr& call) {
        self->state.engine_->answered(call->number, std::move(call->outcome));
        self->state.pump();
      },
      [=](const give_back& returned) {
        self->state.slots.forget(returned.token);
        give_back_work(*self->state.engine_, returned.token, returned.held);
        self->state.pump();
      },
      // The coordinator's sessions: a slot freed here may push to them directly.
      [=](open_atom, const session_info& session) { self->state.sessions[session.id] = session; },
      [=](close_atom, std::uint64_t session) { self->state.sessions.erase(session); },
      [=](committed_atom, std::uint64_t batch) {
        self->state.on_committed(batch);
        self->state.pump();
      },
      [=](stall_atom, std::uint64_t batch, bool fenced, const std::string& why) {
        self->state.on_stalled(batch, fenced, why);
        self->state.pump();
      },
      [=](retry_atom) {
        if (self->state.stall) self->state.writer->retry();
      },
      [=](tick_atom) {
        auto& s = self->state;
        s.wake_at_ns.reset();
        s.engine_->fire_due_timers(s.now_ns());
        s.announce();
        s.pump();
      },
      [=](take_atom, const take_request& take) {
        self->state.on_take(take);
        self->state.pump();
      },
      [=](drain_atom, const drain_signal& signal) {
        auto& s = self->state;
        s.draining = true;
        s.drained.push_back([signal] { signal->set_value(); });
        s.pump();
      },
      // A cluster node: what partitions on other nodes have not acknowledged goes
      // again (a link broke, or the partition moved meanwhile).
      [=](resend_atom) {
        auto& s = self->state;
        resend_unacknowledged(*s.engine_, s,
                              [&s](std::uint32_t to) { return to >= s.peers.size() || !s.peers[to]; });
        self->delayed_send(self, remote_resend_period, resend_atom::value);
      },
      [=](sweep_atom) {
        self->state.engine_->evict_untouched();
        self->delayed_send(self, instance_sweep_period, sweep_atom::value);
      },
      [=](expire_atom) {
        auto& s = self->state;
        const auto waiting = s.engine_->backlog();
        std::uint64_t changes = 0;
        {
          std::lock_guard lock(s.health->mutex);
          changes = s.health->committed_changes;
        }
        std::uint64_t purged = 0;
        for (auto count : s.engine_->retention_purged()) purged += count;
        // Each purge is one committed change: what is left is foreground work.
        const auto committed = changes - std::exchange(s.changes_seen, changes);
        const auto purges = purged - std::exchange(s.purged_seen, purged);
        const bool working = waiting.orchestrators + waiting.activities + waiting.entities != 0 || committed > purges;
        // The partitions share the machine's cores: one that has finished its part
        // of a burst still holds back while any other works.
        // Measured on the steady clock: the partitions of one process may run on
        // different (test) clocks.
        const auto steady = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now().time_since_epoch())
                                .count();
        if (working) foreground_seen_ns.store(steady, std::memory_order_relaxed);
        const bool busy =
            working || steady - foreground_seen_ns.load(std::memory_order_relaxed) <
                           2 * std::chrono::duration_cast<std::chrono::nanoseconds>(retention_period).count();
        const auto now = s.now_ns();
        const auto quiet_room = s.engine_->retention_purges_max();
        const auto fresh = s.engine_->newly_due(now, quiet_room);
        // Room counts purges under way: those of the last look not yet durable
        // keep their place, and this look's share is still started.
        const auto room =
            busy ? std::min(quiet_room, s.engine_->retention_purges_under_way() + retention_backlog_busy + fresh)
                 : quiet_room;
        if (!s.stall && !s.draining) s.engine_->purge_expired(now, room);
        self->delayed_send(self, retention_period, expire_atom::value);
        s.pump();
      },
      [=](wire_atom, const std::vector<caf::actor>& peers, const caf::actor& coordinator) {
        auto& s = self->state;
        s.peers = peers;
        s.coordinator = coordinator;
        // After a restart: resend what the other partitions never acknowledged.
        resend_unacknowledged(*s.engine_, s);
        s.announce();
        s.pump();
      },
  };
}

}  // namespace

caf::actor spawn_partition(caf::actor_system& system, std::unique_ptr<engine::partition_engine> engine,
                           commit_pool& commits, std::shared_ptr<partition_health> health,
                           const service::clock& clock, const remote_peer* remote) {
  return system.spawn(partition_actor, std::shared_ptr<engine::partition_engine>(std::move(engine)), &commits,
                      std::move(health), &clock, remote);
}

}  // namespace dtsd::actors
