// The coordinator of a hub: worker sessions, leases and push dispatch. Partitions
// say when they may have work; the coordinator asks them for as much as the
// sessions have free slots, leases each item to the session with the most free
// slots and pushes it. A session that closes, or a lease that expires, gives its
// items back to their partitions, which dispatch them again.

#include <spdlog/spdlog.h>

#include <map>

#include "actors/internal.hpp"

namespace dtsd::actors {
namespace {

constexpr std::uint32_t take_count_max = 256;  ///< Items asked of one partition at once.
constexpr std::int64_t tick_ms = 1000;

struct lease {
  std::uint64_t session = 0;
  std::uint32_t partition = 0;
  std::int64_t deadline_ns = 0;
  std::string instance_id;                        // Orchestrator items.
  std::optional<core::activity_request> activity;  // Activity items.
};

struct session_state {
  session_info info;
  std::uint32_t orchestrators_out = 0;
  std::uint32_t activities_out = 0;
  std::int64_t last_push_ns = 0;
};

struct coordinator_state {
  caf::event_based_actor* self = nullptr;
  std::int64_t lease_ns = 0;
  std::int64_t keep_alive_ns = 0;
  std::vector<caf::actor> partitions;
  std::map<std::uint64_t, session_state> sessions;
  std::map<std::uint64_t, lease> leases;  // By completion token.
  std::map<std::uint32_t, work_kinds> with_work;
  std::uint32_t orchestrators_asked = 0;
  std::uint32_t activities_asked = 0;

  std::int64_t free_orchestrator_slots() const {
    std::int64_t free = 0;
    for (const auto& [id, s] : sessions) free += s.info.orchestrator_slots - s.orchestrators_out;
    return free - orchestrators_asked;
  }
  std::int64_t free_activity_slots() const {
    std::int64_t free = 0;
    for (const auto& [id, s] : sessions) free += s.info.activity_slots - s.activities_out;
    return free - activities_asked;
  }

  /// Asks partitions that have work for as much of it as the sessions can take. A
  /// partition whose kinds of work no session has room for stays in mind.
  void pump() {
    for (auto it = with_work.begin(); it != with_work.end();) {
      auto free_orchestrators = std::clamp<std::int64_t>(free_orchestrator_slots(), 0, take_count_max);
      auto free_activities = std::clamp<std::int64_t>(free_activity_slots(), 0, take_count_max);
      if (free_orchestrators == 0 && free_activities == 0) return;
      const auto partition = it->first;
      const auto kinds = it->second;
      auto orchestrators = kinds.orchestrators ? free_orchestrators : 0;
      auto activities = kinds.activities ? free_activities : 0;
      if (orchestrators == 0 && activities == 0) {
        ++it;
        continue;
      }
      it = with_work.erase(it);
      orchestrators_asked += static_cast<std::uint32_t>(orchestrators);
      activities_asked += static_cast<std::uint32_t>(activities);
      self->send(partitions[partition], take_atom::value, static_cast<std::uint32_t>(orchestrators),
                 static_cast<std::uint32_t>(activities));
    }
  }

  void note_work(std::uint32_t partition, work_kinds kinds) {
    if (!kinds.any()) return;
    auto& known = with_work[partition];
    known.orchestrators = known.orchestrators || kinds.orchestrators;
    known.activities = known.activities || kinds.activities;
  }

  /// The session with the most free slots of a kind, if any has one.
  session_state* pick(bool orchestrator) {
    session_state* best = nullptr;
    std::int64_t best_free = 0;
    for (auto& [id, s] : sessions) {
      std::int64_t free = orchestrator ? std::int64_t{s.info.orchestrator_slots} - s.orchestrators_out
                                       : std::int64_t{s.info.activity_slots} - s.activities_out;
      if (free > best_free) {
        best = &s;
        best_free = free;
      }
    }
    return best;
  }

  void give_back(std::uint32_t partition, std::uint64_t token, const lease& held) {
    note_work(partition, {!held.activity, held.activity.has_value()});
    if (held.activity) {
      auto request = *held.activity;
      self->send(partitions[partition], run_atom::value,
                 std::make_shared<std::function<void(partition_context&)>>(
                     [request, token](partition_context& ctx) {
                       (void)ctx.engine().abandon_activity(request, token);
                     }));
    } else {
      auto id = held.instance_id;
      self->send(partitions[partition], run_atom::value,
                 std::make_shared<std::function<void(partition_context&)>>(
                     [id, token](partition_context& ctx) {
                       (void)ctx.engine().abandon_orchestrator(id, token);
                     }));
    }
  }

  void on_work(work_batch work) {
    orchestrators_asked -= std::min(orchestrators_asked, work.orchestrators_asked);
    activities_asked -= std::min(activities_asked, work.activities_asked);
    const auto now = wall_clock_ns();
    std::map<std::uint64_t, std::vector<work_item>> pushes;
    for (auto& item : work.orchestrators) {
      lease held{0, work.partition, now + lease_ns, item.instance_id, std::nullopt};
      auto* session = pick(true);
      if (session == nullptr) {
        give_back(work.partition, item.completion_token, held);
        continue;
      }
      held.session = session->info.id;
      ++session->orchestrators_out;
      leases.emplace(item.completion_token, std::move(held));
      pushes[session->info.id].push_back(std::move(item));
    }
    for (auto& item : work.activities) {
      lease held{0, work.partition, now + lease_ns, item.request.instance_id, item.request};
      auto* session = pick(false);
      if (session == nullptr) {
        give_back(work.partition, item.completion_token, held);
        continue;
      }
      held.session = session->info.id;
      ++session->activities_out;
      leases.emplace(item.completion_token, std::move(held));
      pushes[session->info.id].push_back(std::move(item));
    }
    for (auto& [id, items] : pushes) {
      auto& session = sessions.at(id);
      session.last_push_ns = now;
      session.info.sink->push(std::move(items));
    }
    note_work(work.partition, work.left);
  }

  void release(std::uint64_t token, bool give_back_to_partition) {
    auto found = leases.find(token);
    if (found == leases.end()) return;
    auto held = std::move(found->second);
    leases.erase(found);
    if (auto session = sessions.find(held.session); session != sessions.end()) {
      auto& out = held.activity ? session->second.activities_out : session->second.orchestrators_out;
      out -= std::min<std::uint32_t>(out, 1);
    }
    if (give_back_to_partition) give_back(held.partition, token, held);
  }

  void close(std::uint64_t session) {
    std::vector<std::uint64_t> held;
    for (const auto& [token, l] : leases) {
      if (l.session == session) held.push_back(token);
    }
    for (auto token : held) release(token, true);
    sessions.erase(session);
    spdlog::info("worker session {} closed; {} item(s) go back for re-dispatch", session, held.size());
  }

  void tick() {
    const auto now = wall_clock_ns();
    std::vector<std::uint64_t> expired;
    for (const auto& [token, l] : leases) {
      if (l.deadline_ns <= now) expired.push_back(token);
    }
    for (auto token : expired) {
      spdlog::warn("lease {} expired; its item is dispatched again", token);
      release(token, true);
    }
    for (auto& [id, s] : sessions) {
      if (now - s.last_push_ns >= keep_alive_ns) {
        s.last_push_ns = now;
        s.info.sink->keep_alive();
      }
    }
  }
};

caf::behavior coordinator_actor(caf::stateful_actor<coordinator_state>* self, std::int64_t lease_ms,
                                std::int64_t keep_alive_ms) {
  self->state.self = self;
  self->state.lease_ns = lease_ms * 1'000'000;
  self->state.keep_alive_ns = keep_alive_ms * 1'000'000;
  self->delayed_send(self, std::chrono::milliseconds(tick_ms), tick_atom::value);
  return {
      [=](wire_atom, const std::vector<caf::actor>& partitions) {
        self->state.partitions = partitions;
        self->state.pump();
      },
      [=](open_atom, const session_info& info) {
        self->state.sessions[info.id] = session_state{info, 0, 0, wall_clock_ns()};
        self->state.pump();
      },
      [=](close_atom, std::uint64_t session) {
        self->state.close(session);
        self->state.pump();
      },
      [=](ready_atom, std::uint32_t partition, const work_kinds& kinds) {
        self->state.note_work(partition, kinds);
        self->state.pump();
      },
      [=](work_atom, const work_batch& work) {
        self->state.on_work(work);
        self->state.pump();
      },
      [=](done_atom, std::uint64_t token) {
        self->state.release(token, false);
        self->state.pump();
      },
      // A worker gave an item back unprocessed: it is dispatched again at once.
      [=](abandon_atom, std::uint64_t session, std::uint64_t token) {
        auto found = self->state.leases.find(token);
        if (found == self->state.leases.end() || found->second.session != session) return;
        self->state.release(token, true);
        self->state.pump();
      },
      [=](tick_atom) {
        self->state.tick();
        self->state.pump();
        self->delayed_send(self, std::chrono::milliseconds(tick_ms), tick_atom::value);
      },
  };
}

}  // namespace

caf::actor spawn_coordinator(caf::actor_system& system, std::int64_t lease_ms,
                             std::int64_t keep_alive_ms) {
  return system.spawn(coordinator_actor, lease_ms, keep_alive_ms);
}

}  // namespace dtsd::actors
