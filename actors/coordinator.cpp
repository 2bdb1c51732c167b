// The coordinator of a hub: worker sessions, leases and push dispatch. Partitions
// say when they may have work; the coordinator asks them for as much as the
// sessions have free slots, leases each item to the session with the most free
// slots and pushes it. A session that closes, or a lease that expires, gives its
// items back to their partitions, which dispatch them again.

#include <spdlog/spdlog.h>

#include <map>
#include <set>

#include "actors/internal.hpp"

namespace dtsd::actors {
namespace {

constexpr std::uint32_t take_count_max = 256;  ///< Items asked of one partition at once.
constexpr std::int64_t tick_ms = 1000;

struct lease {
  std::uint64_t session = 0;
  std::uint32_t partition = 0;
  std::int64_t deadline_ns = 0;
  work_kind kind = work_kind::orchestrator;
  std::string instance_id;                         // Orchestrator and entity items.
  std::optional<core::activity_request> activity;  // Activity items.
};

/// What a session's filters say of one kind of work.
const core::kind_filter& filter_of(const core::work_filters& filters, work_kind kind) {
  switch (kind) {
    case work_kind::orchestrator: return filters.orchestrations;
    case work_kind::activity: return filters.activities;
    case work_kind::entity: return filters.entities;
  }
  return filters.orchestrations;
}

core::filter_kind filter_kind_of(work_kind kind) {
  switch (kind) {
    case work_kind::orchestrator: return core::filter_kind::orchestration;
    case work_kind::activity: return core::filter_kind::activity;
    case work_kind::entity: return core::filter_kind::entity;
  }
  return core::filter_kind::orchestration;
}

/// A session whose lease expired is suspect: it gets no new work until it proves
/// alive (it answers something). One that stays suspect this long is closed.
constexpr std::int64_t suspect_periods_max = 1;  ///< In lease periods.

struct session_state {
  session_info info;
  per_kind out{};
  std::int64_t last_push_ns = 0;
  /// Since when its leases expire unanswered (0: it is not suspect).
  std::int64_t suspect_since_ns = 0;
  bool suspect() const { return suspect_since_ns != 0; }
  std::int64_t free(work_kind kind) const {
    return std::int64_t{info.slots[kind_index(kind)]} - out[kind_index(kind)];
  }
  bool accepts(work_kind kind, const std::string& name, const core::payload& version) const {
    return core::accepts(filter_of(info.filters, kind), name, version, filter_kind_of(kind));
  }
};

/// The name and version the filters look at.
std::pair<const std::string&, const core::payload&> routing_key(const core::orchestrator_work_item& item) {
  return {item.name, item.version};
}
std::pair<const std::string&, const core::payload&> routing_key(const engine::activity_work_item& item) {
  return {item.request.name, item.request.version};
}

constexpr std::array<work_kind, work_kind_count> all_kinds = {work_kind::orchestrator, work_kind::activity,
                                                              work_kind::entity};

struct coordinator_state {
  caf::event_based_actor* self = nullptr;
  std::int64_t lease_ns = 0;
  std::int64_t keep_alive_ns = 0;
  std::vector<caf::actor> partitions;
  std::map<std::uint64_t, session_state> sessions;
  std::map<std::uint64_t, lease> leases;  // By completion token.
  std::map<std::uint32_t, work_kinds> with_work;
  /// Partitions keeping items of a kind that no session with room accepted.
  std::array<std::set<std::uint32_t>, work_kind_count> parked;
  per_kind asked{};  ///< Items asked of partitions and not yet handed over.

  /// What the sessions with room for `kind` accept, together.
  core::kind_filter acceptable(work_kind kind) const {
    // The common case first, without building anything: a session with room that
    // takes everything of this kind.
    for (const auto& [id, s] : sessions) {
      if (s.free(kind) > 0 && !s.suspect() && !filter_of(s.info.filters, kind)) return std::nullopt;
    }
    core::kind_filter accept = std::vector<core::name_filter>{};
    for (const auto& [id, s] : sessions) {
      if (s.free(kind) > 0 && !s.suspect()) core::widen(accept, filter_of(s.info.filters, kind));
    }
    return accept;
  }

  /// Sessions changed: partitions with parked items of `kind` are asked again (a
  /// take that accepts them makes them ready).
  void retry_parked(work_kind kind) {
    auto& waiting = parked[kind_index(kind)];
    for (auto partition : waiting) with_work[partition].has[kind_index(kind)] = true;
    waiting.clear();
  }

  std::int64_t free_slots(work_kind kind) const {
    std::int64_t free = 0;
    for (const auto& [id, s] : sessions) {
      if (!s.suspect()) free += s.free(kind);
    }
    return free - asked[kind_index(kind)];
  }

  /// Asks partitions that have work for as much of it as the sessions can take. A
  /// partition whose kinds of work no session has room for stays in mind.
  void pump() {
    for (auto it = with_work.begin(); it != with_work.end();) {
      per_kind free{};
      bool any_free = false;
      for (auto kind : all_kinds) {
        free[kind_index(kind)] = static_cast<std::uint32_t>(std::clamp<std::int64_t>(free_slots(kind), 0, take_count_max));
        any_free = any_free || free[kind_index(kind)] > 0;
      }
      if (!any_free) return;
      const auto partition = it->first;
      const auto kinds = it->second;
      per_kind wanted{};
      bool any_wanted = false;
      for (auto kind : all_kinds) {
        wanted[kind_index(kind)] = kinds.has[kind_index(kind)] ? free[kind_index(kind)] : 0;
        any_wanted = any_wanted || wanted[kind_index(kind)] > 0;
      }
      if (!any_wanted) {
        ++it;
        continue;
      }
      it = with_work.erase(it);
      take_request take{wanted, {}};
      for (auto kind : all_kinds) {
        asked[kind_index(kind)] += wanted[kind_index(kind)];
        if (wanted[kind_index(kind)] > 0) take.accept[kind_index(kind)] = acceptable(kind);
      }
      self->send(partitions[partition], take_atom::value, std::move(take));
    }
  }

  void note_work(std::uint32_t partition, work_kinds kinds) {
    if (!kinds.any()) return;
    auto& known = with_work[partition];
    for (auto kind : all_kinds) known.has[kind_index(kind)] = known.has[kind_index(kind)] || kinds.has[kind_index(kind)];
  }

  /// The session with the most free slots of a kind that accepts the item, if any.
  session_state* pick(work_kind kind, const std::string& name, const core::payload& version) {
    session_state* best = nullptr;
    std::int64_t best_free = 0;
    for (auto& [id, s] : sessions) {
      if (s.free(kind) > best_free && !s.suspect() && s.accepts(kind, name, version)) {
        best = &s;
        best_free = s.free(kind);
      }
    }
    return best;
  }

  void give_back(std::uint32_t partition, std::uint64_t token, const lease& held) {
    work_kinds kinds;
    kinds.has[kind_index(held.kind)] = true;
    note_work(partition, kinds);
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
                       ctx.engine().abandon_orchestrator(id, token, [](expected<void>) {});
                     }));
    }
  }

  /// Leases each item to a session with room for its kind and queues its push.
  template <class Item>
  void place(work_kind kind, std::uint32_t partition, std::vector<Item>& items, std::int64_t now,
             std::map<std::uint64_t, std::vector<work_item>>& pushes) {
    for (auto& item : items) {
      lease held{0, partition, now + lease_ns, kind, {}, std::nullopt};
      if constexpr (std::is_same_v<Item, engine::activity_work_item>) {
        held.instance_id = item.request.instance_id;
        held.activity = item.request;
      } else {
        held.instance_id = item.instance_id;
      }
      const auto [name, version] = routing_key(item);
      auto* session = pick(kind, name, version);
      if (session == nullptr) {
        give_back(partition, item.completion_token, held);
        continue;
      }
      held.session = session->info.id;
      ++session->out[kind_index(kind)];
      leases.emplace(item.completion_token, std::move(held));
      pushes[session->info.id].push_back(std::move(item));
    }
  }

  void on_work(work_batch work) {
    for (auto kind : all_kinds) asked[kind_index(kind)] -= std::min(asked[kind_index(kind)], work.asked[kind_index(kind)]);
    const auto now = wall_clock_ns();
    std::map<std::uint64_t, std::vector<work_item>> pushes;
    place(work_kind::orchestrator, work.partition, work.orchestrators, now, pushes);
    place(work_kind::activity, work.partition, work.activities, now, pushes);
    place(work_kind::entity, work.partition, work.entities, now, pushes);
    for (auto kind : all_kinds) {
      if (work.parked.has[kind_index(kind)]) {
        parked[kind_index(kind)].insert(work.partition);
      } else {
        parked[kind_index(kind)].erase(work.partition);
      }
    }
    for (auto& [id, items] : pushes) {
      auto& session = sessions.at(id);
      session.last_push_ns = now;
      session.info.sink->push(std::move(items));
    }
    note_work(work.partition, work.left);
  }

  /// The session answered something: it is alive, and takes work again.
  void proved_alive(std::uint64_t session) {
    auto found = sessions.find(session);
    if (found == sessions.end() || !found->second.suspect()) return;
    found->second.suspect_since_ns = 0;
    spdlog::info("worker session {} answers again; it takes work again", session);
    for (auto kind : all_kinds) retry_parked(kind);
  }

  void release(std::uint64_t token, bool give_back_to_partition) {
    auto found = leases.find(token);
    if (found == leases.end()) return;
    auto held = std::move(found->second);
    leases.erase(found);
    if (auto session = sessions.find(held.session); session != sessions.end()) {
      const bool was_full = session->second.free(held.kind) <= 0;
      auto& out = session->second.out[kind_index(held.kind)];
      out -= std::min<std::uint32_t>(out, 1);
      // Its filters join the accepted set again.
      if (was_full && session->second.free(held.kind) > 0) retry_parked(held.kind);
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

  std::vector<worker_view> workers() const {
    std::vector<worker_view> views;
    for (const auto& [id, s] : sessions) {
      auto& view = views.emplace_back();
      view.session = id;
      view.worker = s.info.worker;
      view.slots = {s.info.slots[0], s.info.slots[1], s.info.slots[2]};
      view.in_use = {s.out[0], s.out[1], s.out[2]};
      view.filters = s.info.filters;
    }
    return views;
  }

  void tick() {
    const auto now = wall_clock_ns();
    // A safety net for parked work: sessions may have changed in ways retry_parked
    // does not see (a reply crossing a slot freed meanwhile).
    for (auto kind : all_kinds) retry_parked(kind);
    std::vector<std::uint64_t> expired;
    for (const auto& [token, l] : leases) {
      if (l.deadline_ns <= now) expired.push_back(token);
    }
    std::set<std::uint64_t> missing;
    for (auto token : expired) missing.insert(leases.at(token).session);
    for (auto session : missing) {
      auto& s = sessions.at(session);
      if (!s.suspect()) {
        s.suspect_since_ns = now;
        spdlog::warn("worker session {} let a lease expire: it gets no new work until it answers", session);
      }
    }
    // The expired items go to other sessions: the one that held them is suspect.
    for (auto token : expired) {
      spdlog::warn("lease {} expired; its item is dispatched again", token);
      release(token, true);
    }
    std::vector<std::uint64_t> hung;
    for (const auto& [id, s] : sessions) {
      if (s.suspect() && now - s.suspect_since_ns >= suspect_periods_max * lease_ns) hung.push_back(id);
    }
    for (auto session : hung) {
      auto sink = sessions.at(session).info.sink;
      spdlog::warn("worker session {} answered nothing for a lease period after a lease expired: closed", session);
      close(session);
      sink->end("dtsd closed this worker session: it let its leases expire and answered nothing for a lease "
                "period; connect again");
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
        self->state.sessions[info.id] = session_state{info, {}, wall_clock_ns()};
        for (auto kind : all_kinds) self->state.retry_parked(kind);
        self->state.pump();
      },
      [=](workers_atom, const workers_reply& reply) { (*reply)(self->state.workers()); },
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
      // A worker's answer, applied or finally refused: its slot is free, and the
      // session that sent it is alive (even if the lease had expired meanwhile).
      [=](done_atom, std::uint64_t token, std::uint64_t session) {
        self->state.proved_alive(session);
        self->state.release(token, false);
        self->state.pump();
      },
      // The hub is going away: every session is told, then the coordinator ends.
      [=](end_atom, const std::string& why) {
        for (auto& [id, s] : self->state.sessions) s.info.sink->end(why);
        self->state.sessions.clear();
        self->state.leases.clear();
        self->quit();
      },
      [=](alive_atom, std::uint64_t session) {
        self->state.proved_alive(session);
        self->state.pump();
      },
      // A worker gave an item back unprocessed: it is dispatched again at once.
      [=](abandon_atom, std::uint64_t session, std::uint64_t token) {
        self->state.proved_alive(session);  // Even for a lease that expired meanwhile.
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
