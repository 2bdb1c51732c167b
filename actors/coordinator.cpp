// The coordinator of a hub: the actor around its dispatcher (actors/dispatcher.hpp),
// which holds the worker sessions and leases and decides who gets which item. The
// actor feeds it the messages of partitions, the scheduler and the clock, and
// carries out what it asks: takes and give-backs as messages to partitions, pushes
// and keep-alives through the sessions' sinks.

#include <spdlog/spdlog.h>

#include <map>

#include "actors/internal.hpp"

namespace dtsd::actors {
namespace {

constexpr std::int64_t tick_ms = 1000;

/// The dispatcher's requests, as messages and sink calls.
class actor_port final : public dispatch_port {
 public:
  explicit actor_port(caf::event_based_actor* self) : self_(self) {}

  // A partition not served here (a cluster moved it) gets nothing: its new owner
  // recovers its items as they are durably.
  void take(std::uint32_t partition, take_request take) override {
    if (auto* to = served(partition)) self_->send(*to, take_atom::value, std::move(take));
  }
  void give_back(std::uint32_t partition, std::uint64_t token, const lease& held) override {
    if (auto* to = served(partition)) self_->send(*to, actors::give_back{token, held});
  }
  void push(std::uint64_t session, std::vector<work_item> items) override {
    if (auto found = sinks.find(session); found != sinks.end()) found->second.sink->push(std::move(items));
  }
  void keep_alive(std::uint64_t session) override {
    if (auto found = sinks.find(session); found != sinks.end()) found->second.sink->keep_alive();
  }
  void end(std::uint64_t session, const std::string& why) override {
    auto found = sinks.find(session);
    if (found == sinks.end()) return;
    auto sink = std::move(found->second.sink);
    sinks.erase(found);
    forget(session);
    sink->end(why);
  }

  /// The partitions learn of a session, so that a slot freed there can push to it.
  void introduce(const session_info& info) {
    for (auto& partition : partitions) {
      if (partition) self_->send(partition, open_atom::value, info);
    }
  }
  void forget(std::uint64_t session) {
    for (auto& partition : partitions) {
      if (partition) self_->send(partition, close_atom::value, session);
    }
  }

  std::vector<caf::actor> partitions;  ///< Null where a partition is not served here.
  std::map<std::uint64_t, session_info> sinks;  ///< The open sessions.

 private:
  const caf::actor* served(std::uint32_t partition) const {
    return partition < partitions.size() && partitions[partition] ? &partitions[partition] : nullptr;
  }

  caf::event_based_actor* self_;
};

struct coordinator_state {
  std::unique_ptr<actor_port> port;
  std::unique_ptr<dispatcher> dispatch;
};

caf::behavior coordinator_actor(caf::stateful_actor<coordinator_state>* self, std::int64_t lease_ms,
                                std::int64_t keep_alive_ms, const service::clock* clock) {
  self->state.port = std::make_unique<actor_port>(self);
  self->state.dispatch =
      std::make_unique<dispatcher>(*self->state.port, lease_ms * 1'000'000, keep_alive_ms * 1'000'000);
  self->delayed_send(self, std::chrono::milliseconds(tick_ms), tick_atom::value);
  auto& port = *self->state.port;
  auto& dispatch = *self->state.dispatch;
  return {
      // The partitions served here (again, after one came or went): a partition
      // new here learns of the sessions.
      [=, &port, &dispatch](wire_atom, const std::vector<caf::actor>& partitions) {
        port.partitions = partitions;
        for (std::uint32_t p = 0; p < partitions.size(); ++p) {
          if (partitions[p]) dispatch.partition_back(p);
        }
        for (const auto& [id, info] : port.sinks) port.introduce(info);
        dispatch.pump();
      },
      [=, &dispatch](gone_atom, std::uint32_t partition) {
        dispatch.partition_gone(partition);
        dispatch.pump();
      },
      [=, &port, &dispatch](open_atom, const session_info& info) {
        port.sinks[info.id] = info;
        port.introduce(info);
        dispatch.open({info.id, info.slots, info.filters, info.worker}, clock->now_ns());
        dispatch.pump();
      },
      [=, &dispatch](workers_atom, const workers_reply& reply) { (*reply)(dispatch.workers()); },
      [=, &port, &dispatch](close_atom, std::uint64_t session) {
        dispatch.close(session);
        if (port.sinks.erase(session) != 0) port.forget(session);
        dispatch.pump();
      },
      [=, &dispatch](ready_atom, std::uint32_t partition, const work_kinds& kinds) {
        dispatch.note_work(partition, kinds);
        dispatch.pump();
      },
      [=, &dispatch](work_atom, const work_batch& work) {
        dispatch.on_work(work, clock->now_ns());
        dispatch.pump();
      },
      // Slots freed at a partition: used again there, or free here.
      [=, &dispatch](handover_atom, const std::vector<slot_handover>& handovers) {
        dispatch.handover(handovers, clock->now_ns());
        dispatch.pump();
      },
      // A worker's answer, applied or finally refused: its slot is free, and the
      // session that sent it is alive (even if the lease had expired meanwhile).
      [=, &dispatch](done_atom, std::uint64_t token, std::uint64_t session) {
        dispatch.done(token, session);
        dispatch.pump();
      },
      // The hub is going away: every session is told, then the coordinator ends.
      [=, &port, &dispatch](end_atom, const std::string& why) {
        for (auto session : dispatch.clear()) port.end(session, why);
        self->quit();
      },
      [=, &dispatch](alive_atom, std::uint64_t session) {
        dispatch.alive(session);
        dispatch.pump();
      },
      // A worker gave an item back unprocessed: it is dispatched again at once.
      [=, &dispatch](abandon_atom, std::uint64_t session, std::uint64_t token) {
        dispatch.abandon(session, token);
        dispatch.pump();
      },
      [=, &dispatch](tick_atom) {
        dispatch.tick(clock->now_ns());
        dispatch.pump();
        self->delayed_send(self, std::chrono::milliseconds(tick_ms), tick_atom::value);
      },
  };
}

}  // namespace

caf::actor spawn_coordinator(caf::actor_system& system, std::int64_t lease_ms, std::int64_t keep_alive_ms,
                             const service::clock& clock) {
  return system.spawn(coordinator_actor, lease_ms, keep_alive_ms, &clock);
}

}  // namespace dtsd::actors
