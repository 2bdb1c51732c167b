#include "actors/dispatcher.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace dtsd::actors {
namespace {

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

/// The name and version the filters look at.
std::pair<const std::string&, const core::payload&> routing_key(const core::orchestrator_work_item& item) {
  return {item.name, item.version};
}
std::pair<const std::string&, const core::payload&> routing_key(const core::activity_work_item& item) {
  return {item.request.name, item.request.version};
}

}  // namespace

work_kinds available_work(engine::partition_engine& engine) {
  work_kinds kinds;
  kinds.has[kind_index(work_kind::orchestrator)] = engine.may_have_orchestrator_work();
  kinds.has[kind_index(work_kind::activity)] = engine.has_activity_work();
  kinds.has[kind_index(work_kind::entity)] = engine.may_have_entity_work();
  return kinds;
}

work_kinds parked_work(engine::partition_engine& engine) {
  work_kinds kinds;
  kinds.has[kind_index(work_kind::orchestrator)] = engine.has_parked_orchestrators();
  kinds.has[kind_index(work_kind::activity)] = engine.has_parked_activities();
  kinds.has[kind_index(work_kind::entity)] = engine.has_parked_entities();
  return kinds;
}

work_batch take_work(engine::partition_engine& engine, std::uint32_t index, const take_request& take,
                     std::int64_t now_ns) {
  const auto& wanted = take.wanted;
  work_batch work{index, wanted, {}, {}, {}, {}, {}};
  auto accept = [&](work_kind kind) -> const core::kind_filter& { return take.accept[kind_index(kind)]; };
  if (wanted[kind_index(work_kind::activity)] > 0) {
    work.activities = engine.take_activities(wanted[kind_index(work_kind::activity)], accept(work_kind::activity));
  }
  if (wanted[kind_index(work_kind::orchestrator)] > 0) {
    work.orchestrators =
        engine.take_work(false, wanted[kind_index(work_kind::orchestrator)], now_ns, accept(work_kind::orchestrator));
  }
  if (wanted[kind_index(work_kind::entity)] > 0) {
    work.entities = engine.take_work(true, wanted[kind_index(work_kind::entity)], now_ns, accept(work_kind::entity));
  }
  work.parked = parked_work(engine);
  work.left = available_work(engine);
  return work;
}

void give_back_work(engine::partition_engine& engine, std::uint64_t token, const lease& held) {
  if (held.activity) {
    (void)engine.abandon_activity(*held.activity, token);
  } else {
    engine.abandon_orchestrator(held.instance_id, token, [](expected<void>) {});
  }
}

std::optional<std::pair<work_item, lease>> next_for_freed_slot(engine::partition_engine& engine, std::uint32_t index,
                                                               work_kind kind, const core::work_filters& filters,
                                                               std::int64_t now_ns) {
  if (filter_of(filters, kind)) return std::nullopt;
  take_request take;
  take.wanted[kind_index(kind)] = 1;  // Any item: a take that accepts everything parks nothing.
  auto work = take_work(engine, index, take, now_ns);
  lease held{0, index, 0, kind, {}, std::nullopt};
  if (!work.activities.empty()) {
    auto& item = work.activities.front();
    held.instance_id = item.request.instance_id;
    held.activity = item.request;
    return std::make_pair(work_item(std::move(item)), std::move(held));
  }
  auto& items = kind == work_kind::entity ? work.entities : work.orchestrators;
  if (items.empty()) return std::nullopt;
  held.instance_id = items.front().instance_id;
  return std::make_pair(work_item(std::move(items.front())), std::move(held));
}

freed_slots::outcome freed_slots::freed(engine::partition_engine& engine, std::uint32_t index, std::uint64_t session,
                                        work_kind kind, std::uint64_t token, const core::work_filters* filters,
                                        std::int64_t now_ns) {
  outcome out{slot_handover{session, token, std::nullopt}, std::nullopt};
  std::uint32_t reused = 0;
  if (auto found = reuses_.find(token); found != reuses_.end()) {
    reused = found->second;
    reuses_.erase(found);
  }
  if (filters == nullptr || reused >= slot_reuses_max) return out;
  auto next = next_for_freed_slot(engine, index, kind, *filters, now_ns);
  if (!next) return out;
  const auto next_token = std::visit([](const auto& item) { return item.completion_token; }, next->first);
  reuses_[next_token] = reused + 1;
  out.handover.next = slot_handover::next_item{next_token, std::move(next->second)};
  out.push = std::move(next->first);
  return out;
}

bool dispatcher::session_state::accepts(work_kind kind, const std::string& name, const core::payload& version) const {
  return core::accepts(filter_of(spec.filters, kind), name, version, filter_kind_of(kind));
}

core::kind_filter dispatcher::acceptable(work_kind kind) const {
  // The common case first, without building anything: a session with room that
  // takes everything of this kind.
  for (const auto& [id, s] : sessions_) {
    if (s.free(kind) > 0 && !s.suspect() && !filter_of(s.spec.filters, kind)) return std::nullopt;
  }
  core::kind_filter accept = std::vector<core::name_filter>{};
  for (const auto& [id, s] : sessions_) {
    if (s.free(kind) > 0 && !s.suspect()) core::widen(accept, filter_of(s.spec.filters, kind));
  }
  return accept;
}

void dispatcher::retry_parked(work_kind kind) {
  // Partitions with parked items of `kind` are asked again (a take that accepts
  // them makes them ready).
  auto& waiting = parked_[kind_index(kind)];
  for (auto partition : waiting) with_work_[partition].has[kind_index(kind)] = true;
  waiting.clear();
}

std::int64_t dispatcher::free_slots(work_kind kind) const {
  std::int64_t free = 0;
  for (const auto& [id, s] : sessions_) {
    if (!s.suspect()) free += s.free(kind);
  }
  return free - asked_[kind_index(kind)];
}

void dispatcher::pump() {
  // A partition whose kinds of work no session has room for stays in mind.
  for (auto it = with_work_.begin(); it != with_work_.end();) {
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
    it = with_work_.erase(it);
    take_request take{wanted, {}};
    for (auto kind : all_kinds) {
      asked_[kind_index(kind)] += wanted[kind_index(kind)];
      asked_of_[partition][kind_index(kind)] += wanted[kind_index(kind)];
      if (wanted[kind_index(kind)] > 0) take.accept[kind_index(kind)] = acceptable(kind);
    }
    port_.take(partition, std::move(take));
  }
}

void dispatcher::partition_gone(std::uint32_t partition) {
  if (auto of = asked_of_.find(partition); of != asked_of_.end()) {
    for (auto kind : all_kinds) {
      const auto k = kind_index(kind);
      asked_[k] -= std::min(asked_[k], of->second[k]);
    }
    asked_of_.erase(of);
  }
  with_work_.erase(partition);
  for (auto& parked : parked_) parked.erase(partition);
  gone_.insert(partition);
}

void dispatcher::partition_back(std::uint32_t partition) { gone_.erase(partition); }

void dispatcher::note_work(std::uint32_t partition, work_kinds kinds) {
  if (!kinds.any() || gone_.count(partition)) return;
  auto& known = with_work_[partition];
  for (auto kind : all_kinds) known.has[kind_index(kind)] = known.has[kind_index(kind)] || kinds.has[kind_index(kind)];
}

dispatcher::session_state* dispatcher::pick(work_kind kind, const std::string& name, const core::payload& version) {
  // The session with the most free slots of a kind that accepts the item, if any.
  session_state* best = nullptr;
  std::int64_t best_free = 0;
  for (auto& [id, s] : sessions_) {
    if (s.free(kind) > best_free && !s.suspect() && s.accepts(kind, name, version)) {
      best = &s;
      best_free = s.free(kind);
    }
  }
  return best;
}

void dispatcher::give_back(std::uint32_t partition, std::uint64_t token, const lease& held) {
  work_kinds kinds;
  kinds.has[kind_index(held.kind)] = true;
  note_work(partition, kinds);
  port_.give_back(partition, token, held);
}

template <class Item>
void dispatcher::place(work_kind kind, std::uint32_t partition, std::vector<Item>& items, std::int64_t now_ns,
                       std::map<std::uint64_t, std::vector<work_item>>& pushes) {
  for (auto& item : items) {
    lease held{0, partition, now_ns + lease_ns_, kind, {}, std::nullopt};
    if constexpr (std::is_same_v<Item, core::activity_work_item>) {
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
    held.session = session->spec.id;
    hold(*session, item.completion_token, std::move(held));
    pushes[session->spec.id].push_back(std::move(item));
  }
}

void dispatcher::on_work(work_batch work, std::int64_t now_ns) {
  if (gone_.count(work.partition)) return;  // Taken before it left: its next owner has them.
  // Only what is still counted as asked of it (a partition gone and served again
  // may answer a take that was forgotten).
  if (auto of = asked_of_.find(work.partition); of != asked_of_.end()) {
    bool left = false;
    for (auto kind : all_kinds) {
      const auto k = kind_index(kind);
      const auto answered = std::min({asked_[k], of->second[k], work.asked[k]});
      asked_[k] -= answered;
      of->second[k] -= answered;
      left = left || of->second[k] > 0;
    }
    if (!left) asked_of_.erase(of);
  }
  std::map<std::uint64_t, std::vector<work_item>> pushes;
  place(work_kind::orchestrator, work.partition, work.orchestrators, now_ns, pushes);
  place(work_kind::activity, work.partition, work.activities, now_ns, pushes);
  place(work_kind::entity, work.partition, work.entities, now_ns, pushes);
  for (auto kind : all_kinds) {
    if (work.parked.has[kind_index(kind)]) {
      parked_[kind_index(kind)].insert(work.partition);
    } else {
      parked_[kind_index(kind)].erase(work.partition);
    }
  }
  for (auto& [id, items] : pushes) {
    sessions_.at(id).last_push_ns = now_ns;
    port_.push(id, std::move(items));
  }
  note_work(work.partition, work.left);
}

void dispatcher::open(session_spec session, std::int64_t now_ns) {
  const auto id = session.id;
  sessions_[id] = session_state{std::move(session), {}, now_ns, 0};
  for (auto kind : all_kinds) retry_parked(kind);
}

void dispatcher::alive(std::uint64_t session) {
  auto found = sessions_.find(session);
  if (found == sessions_.end() || !found->second.suspect()) return;
  found->second.suspect_since_ns = 0;
  spdlog::info("worker session {} answers again; it takes work again", session);
  for (auto kind : all_kinds) retry_parked(kind);
}

bool dispatcher::suspect(std::uint64_t session) const {
  auto found = sessions_.find(session);
  return found != sessions_.end() && found->second.suspect();
}

void dispatcher::done(std::uint64_t token, std::uint64_t session) {
  alive(session);  // Even if the lease had expired meanwhile.
  release(token, false);
}

void dispatcher::handover(const std::vector<slot_handover>& handovers, std::int64_t now_ns) {
  for (const auto& h : handovers) {
    done(h.done_token, h.session);
    if (!h.next) continue;
    auto held = h.next->held;
    auto session = sessions_.find(h.session);
    if (session == sessions_.end()) {
      // It went while the item was on its way: nobody answers it, so it goes back
      // at once. A session that is still open has the item already: it keeps it
      // even past its slots (a late answer to an expired lease freed a slot here
      // that the coordinator had given away), or the item would run twice.
      give_back(held.partition, h.next->token, held);
      continue;
    }
    held.session = h.session;
    held.deadline_ns = now_ns + lease_ns_;
    session->second.last_push_ns = now_ns;
    hold(session->second, h.next->token, std::move(held));
  }
}

void dispatcher::hold(session_state& session, std::uint64_t token, lease held) {
  // A token is never given twice by one engine; a partition that restarted may
  // give one again, and then the old item it named is gone: its lease goes too.
  if (leases_.count(token) != 0) release(token, false);
  ++session.out[kind_index(held.kind)];
  leases_.emplace(token, std::move(held));
}

void dispatcher::abandon(std::uint64_t session, std::uint64_t token) {
  alive(session);  // Even for a lease that expired meanwhile.
  auto found = leases_.find(token);
  if (found == leases_.end() || found->second.session != session) return;
  release(token, true);
}

void dispatcher::release(std::uint64_t token, bool give_back_to_partition) {
  auto found = leases_.find(token);
  if (found == leases_.end()) return;
  auto held = std::move(found->second);
  leases_.erase(found);
  if (auto session = sessions_.find(held.session); session != sessions_.end()) {
    const bool was_full = session->second.free(held.kind) <= 0;
    auto& out = session->second.out[kind_index(held.kind)];
    out -= std::min<std::uint32_t>(out, 1);
    // Its filters join the accepted set again.
    if (was_full && session->second.free(held.kind) > 0) retry_parked(held.kind);
  }
  if (give_back_to_partition) give_back(held.partition, token, held);
}

void dispatcher::close(std::uint64_t session) {
  std::vector<std::uint64_t> held;
  for (const auto& [token, l] : leases_) {
    if (l.session == session) held.push_back(token);
  }
  for (auto token : held) release(token, true);
  if (sessions_.erase(session) == 0) return;
  spdlog::info("worker session {} closed; {} item(s) go back for re-dispatch", session, held.size());
}

std::vector<worker_view> dispatcher::workers() const {
  std::vector<worker_view> views;
  for (const auto& [id, s] : sessions_) {
    auto& view = views.emplace_back();
    view.session = id;
    view.worker = s.spec.worker;
    view.slots = {s.spec.slots[0], s.spec.slots[1], s.spec.slots[2]};
    view.in_use = {s.out[0], s.out[1], s.out[2]};
    view.filters = s.spec.filters;
    view.suspect = s.suspect();
  }
  return views;
}

std::vector<std::uint64_t> dispatcher::clear() {
  std::vector<std::uint64_t> ids;
  for (const auto& [id, s] : sessions_) ids.push_back(id);
  sessions_.clear();
  leases_.clear();
  return ids;
}

void dispatcher::tick(std::int64_t now_ns) {
  // A safety net for parked work: sessions may have changed in ways retry_parked
  // does not see (a reply crossing a slot freed meanwhile).
  for (auto kind : all_kinds) retry_parked(kind);
  std::vector<std::uint64_t> expired;
  for (const auto& [token, l] : leases_) {
    if (l.deadline_ns <= now_ns) expired.push_back(token);
  }
  std::set<std::uint64_t> missing;
  for (auto token : expired) missing.insert(leases_.at(token).session);
  for (auto session : missing) {
    auto found = sessions_.find(session);
    if (found == sessions_.end()) continue;
    if (!found->second.suspect()) {
      found->second.suspect_since_ns = now_ns;
      spdlog::warn("worker session {} let a lease expire: it gets no new work until it answers", session);
    }
  }
  // The expired items go to other sessions: the one that held them is suspect.
  for (auto token : expired) {
    spdlog::warn("lease {} expired; its item is dispatched again", token);
    release(token, true);
  }
  std::vector<std::uint64_t> hung;
  for (const auto& [id, s] : sessions_) {
    if (s.suspect() && now_ns - s.suspect_since_ns >= suspect_periods_max * lease_ns_) hung.push_back(id);
  }
  for (auto session : hung) {
    spdlog::warn("worker session {} answered nothing for a lease period after a lease expired: closed", session);
    close(session);
    port_.end(session, "dtsd closed this worker session: it let its leases expire and answered nothing for a lease "
                       "period; connect again");
  }
  for (auto& [id, s] : sessions_) {
    if (now_ns - s.last_push_ns >= keep_alive_ns_) {
      s.last_push_ns = now_ns;
      port_.keep_alive(id);
    }
  }
}

}  // namespace dtsd::actors
