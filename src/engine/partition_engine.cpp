#include "engine/partition_engine.hpp"

#include <fmt/format.h>

#include "core/ids.hpp"
#include "core/overloaded.hpp"

namespace dtsd::engine {
namespace {

/// Messages to the own partition are applied at once, this many levels deep (a
/// recursive termination of a local tree, say); deeper ones take the outbox.
constexpr int local_route_depth_max = 16;

const core::orchestration_state& empty_state() {
  static const core::orchestration_state state;
  return state;
}

}  // namespace

partition_engine::partition_engine(std::unique_ptr<store::partition_store> store,
                                   engine_options options, execution_id_source new_execution_id,
                                   std::int64_t now_ns)
    : store_(std::move(store)),
      options_(options),
      new_execution_id_(std::move(new_execution_id)),
      // Tokens from before a restart must never match again: start above the clock.
      next_token_(static_cast<std::uint64_t>(now_ns) | 1) {}

expected<std::unique_ptr<partition_engine>> partition_engine::open(
    std::unique_ptr<store::partition_store> store, engine_options options,
    execution_id_source new_execution_id, std::int64_t now_ns) {
  std::unique_ptr<partition_engine> engine(
      new partition_engine(std::move(store), options, std::move(new_execution_id), now_ns));
  if (auto recovered = engine->recover(now_ns); !recovered) return recovered.error();
  return engine;
}

expected<void> partition_engine::recover(std::int64_t now_ns) {
  auto recovered = store_->recover();
  if (!recovered) return recovered.error();
  for (const auto& id : recovered->instances_with_inbox) {
    auto slot = slot_of(id);
    if (!slot) return slot.error();
    if (!(*slot)->state) continue;
    if (auto due = core::start_due_ns(*(*slot)->state, now_ns)) {
      wakeups_.push({*due, std::nullopt, id});
    }
    make_ready(id);
  }
  activity_queue_.assign(recovered->activities.begin(), recovered->activities.end());
  for (const auto& timer : recovered->timers) wakeups_.push({timer.fire_at_ns, timer, timer.instance_id});
  for (const auto& entry : recovered->outbox) outbox_.emplace(entry.sequence, entry);
  next_outbox_sequence_ = recovered->next_outbox_sequence;
  durable_outbox_end_ = next_outbox_sequence_;
  dedup_marks_ = recovered->dedup_marks;
  return {};
}

std::uint32_t partition_engine::partition_of(const std::string& instance_id) const {
  return core::partition_of(instance_id, identity().partition_count);
}

expected<partition_engine::instance_slot*> partition_engine::slot_of(
    const std::string& instance_id) {
  if (auto found = instances_.find(instance_id); found != instances_.end()) return &found->second;
  auto loaded = store_->load_instance(instance_id);
  if (!loaded) return loaded.error();
  instance_slot slot;
  slot.state = std::move(*loaded);
  if (slot.state) slot.durable_inbox_end = slot.state->inbox_first_sequence + slot.state->inbox.size();
  return &instances_.emplace(instance_id, std::move(slot)).first->second;
}

expected<partition_engine::instance_slot*> partition_engine::existing(
    const std::string& instance_id) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return valid.error();
  auto slot = slot_of(instance_id);
  if (!slot) return slot.error();
  if (!(*slot)->state) {
    return error{errc::not_found, fmt::format("no instance with id '{}'", instance_id)};
  }
  return *slot;
}

void partition_engine::log(std::int64_t now_ns, decltype(store::partition_event::body) body) {
  open_.batch.events.push_back({now_ns, std::move(body)});
}

void partition_engine::make_ready(const std::string& instance_id) {
  if (core::is_entity_id(instance_id)) {
    if (ready_entities_set_.insert(instance_id).second) ready_entities_.push_back(instance_id);
    return;
  }
  if (ready_set_.insert(instance_id).second) ready_.push_back(instance_id);
}

void partition_engine::record(const std::string& instance_id, instance_slot& slot,
                              core::transition transition, std::int64_t now_ns, int depth) {
  core::merge(open_.changes[instance_id], transition.change,
              slot.state ? *slot.state : empty_state());
  auto& effects = transition.effects;
  for (auto& activity : effects.activities) {
    open_.batch.activities_added.push_back(activity);
    open_.activities.push_back(std::move(activity));
  }
  for (auto& timer : effects.timers) {
    open_.batch.timers_added.push_back(timer);
    wakeups_.push({timer.fire_at_ns, timer, timer.instance_id});
  }
  if (slot.state) {
    if (auto due = core::start_due_ns(*slot.state, now_ns)) {
      wakeups_.push({*due, std::nullopt, instance_id});
    }
    make_ready(instance_id);
  }
  for (auto& message : effects.messages) route(std::move(message), now_ns, depth + 1);
}

void partition_engine::route(core::instance_message message, std::int64_t now_ns, int depth) {
  const auto destination = partition_of(message.target_instance_id);
  if (destination == identity().partition_index && depth <= local_route_depth_max) {
    apply_local(message, now_ns, depth);
    return;
  }
  store::outbox_entry entry{next_outbox_sequence_++, identity().partition_index, destination,
                            std::move(message)};
  open_.batch.outbox_added.push_back(entry);
  open_.outbound.push_back(entry);
  outbox_.emplace(entry.sequence, std::move(entry));
}

void partition_engine::apply_local(const core::instance_message& message, std::int64_t now_ns,
                                   int depth) {
  auto slot = slot_of(message.target_instance_id);
  if (!slot) return;  // The store failed; the sender's resend or a retry brings it back.
  auto applied = core::apply_message((*slot)->state, message, now_ns, options_.limits);
  if (applied) {
    record(message.target_instance_id, **slot, std::move(*applied), now_ns, depth);
    return;
  }
  // A start that failed reports back to its parent; other refusals (a result for an
  // execution that moved on, a duplicate) are dropped as the state machine decided.
  if (const auto* start = std::get_if<core::start_request>(&message.body)) {
    if (auto failed = core::start_failed_message(*start, applied.error(), now_ns)) {
      route(std::move(*failed), now_ns, depth + 1);
    }
  }
}

// ---------------------------------------------------------------------------
// Inputs

expected<started> partition_engine::start(core::start_request request, std::int64_t now_ns) {
  if (auto valid = core::validate_orchestration_id(request.instance_id); !valid) {
    return valid.error();
  }
  if (partition_of(request.instance_id) != identity().partition_index) {
    return error{errc::invalid_argument,
                 fmt::format("instance '{}' belongs to partition {}, not {}", request.instance_id,
                             partition_of(request.instance_id), identity().partition_index)};
  }
  if (request.execution_id.empty()) request.execution_id = new_execution_id_();
  auto slot = slot_of(request.instance_id);
  if (!slot) return slot.error();
  auto applied = core::apply_start((*slot)->state, request, now_ns, options_.limits);
  if (!applied) return applied.error();
  log(now_ns, request);
  record(request.instance_id, **slot, std::move(*applied), now_ns, 0);
  return started{request.instance_id, request.execution_id, next_batch_};
}

template <class Apply>
expected<std::uint64_t> partition_engine::change_existing(const std::string& instance_id,
                                                         std::int64_t now_ns, Apply apply,
                                                         logged_input input) {
  auto slot = existing(instance_id);
  if (!slot) return slot.error();
  auto applied = apply(*(*slot)->state);
  if (!applied) return applied.error();
  log(now_ns, std::move(input));
  record(instance_id, **slot, std::move(*applied), now_ns, 0);
  return next_batch_;
}

expected<std::uint64_t> partition_engine::raise_event(const std::string& instance_id,
                                                      const std::string& name,
                                                      const core::payload& input,
                                                      std::int64_t now_ns) {
  return change_existing(
      instance_id, now_ns,
      [&](core::orchestration_state& state) {
        return core::apply_raise_event(state, name, input, now_ns, options_.limits);
      },
      store::logged::event_raised{instance_id, name, input});
}

expected<std::uint64_t> partition_engine::terminate(const std::string& instance_id,
                                                    const core::terminate_request& request,
                                                    std::int64_t now_ns) {
  return change_existing(
      instance_id, now_ns,
      [&](core::orchestration_state& state) {
        return core::apply_terminate(state, request, now_ns, options_.limits);
      },
      store::logged::terminated{instance_id, request});
}

expected<std::uint64_t> partition_engine::suspend(const std::string& instance_id,
                                                  const core::payload& reason,
                                                  std::int64_t now_ns) {
  return change_existing(
      instance_id, now_ns,
      [&](core::orchestration_state& state) { return core::apply_suspend(state, reason, now_ns); },
      store::logged::suspended{instance_id, reason});
}

expected<std::uint64_t> partition_engine::deliver(const core::instance_message& message, std::int64_t now_ns) {
  auto slot = slot_of(message.target_instance_id);
  if (!slot) return slot.error();
  auto applied = core::apply_message((*slot)->state, message, now_ns, options_.limits);
  if (!applied) return applied.error();
  log(now_ns, store::logged::delivered{message});
  record(message.target_instance_id, **slot, std::move(*applied), now_ns, 0);
  return next_batch_;
}

expected<std::uint64_t> partition_engine::rewind(const std::string& instance_id,
                                                 const core::payload& reason, std::int64_t now_ns) {
  return change_existing(
      instance_id, now_ns,
      [&](core::orchestration_state& state) {
        return core::apply_rewind(state, reason, {},
                                  core::derive_execution_id(state.record.execution_id, "rewind"), now_ns,
                                  options_.limits);
      },
      store::logged::rewound{instance_id, reason});
}

expected<std::uint64_t> partition_engine::resume(const std::string& instance_id,
                                                 const core::payload& reason,
                                                 std::int64_t now_ns) {
  return change_existing(
      instance_id, now_ns,
      [&](core::orchestration_state& state) { return core::apply_resume(state, reason, now_ns); },
      store::logged::resumed{instance_id, reason});
}

expected<std::uint64_t> partition_engine::purge(const std::string& instance_id,
                                                std::int64_t now_ns) {
  auto slot = existing(instance_id);
  if (!slot) return slot.error();
  auto applied = core::apply_purge((*slot)->state);
  if (!applied) return applied.error();
  log(now_ns, store::logged::purged{instance_id});
  record(instance_id, **slot, std::move(*applied), now_ns, 0);
  return next_batch_;
}

expected<std::uint64_t> partition_engine::complete_orchestrator(
    const core::orchestrator_completion& completion, std::int64_t now_ns) {
  auto slot = existing(completion.instance_id);
  if (!slot) return slot.error();
  auto& state = *(*slot)->state;
  const auto consumed = state.in_flight ? state.in_flight->new_event_count : 0;
  const auto started_at = state.in_flight ? state.in_flight->started_at_ns : 0;
  auto next_execution = core::derive_execution_id(state.record.execution_id, "continue-as-new");
  auto applied =
      core::apply_completion(state, completion, next_execution, now_ns, options_.limits);
  if (!applied) return applied.error();
  log(now_ns, store::logged::orchestrator_completed{completion, std::move(next_execution),
                                                    static_cast<std::uint32_t>(consumed), started_at});
  record(completion.instance_id, **slot, std::move(*applied), now_ns, 0);
  return next_batch_;
}

expected<void> partition_engine::abandon_orchestrator(const std::string& instance_id,
                                                      std::uint64_t token) {
  auto slot = existing(instance_id);
  if (!slot) return slot.error();
  if (auto abandoned = core::abandon(*(*slot)->state, token); !abandoned) return abandoned;
  make_ready(instance_id);
  return {};
}

expected<std::uint64_t> partition_engine::complete_activity(const core::activity_result& result,
                                                            std::int64_t now_ns) {
  const auto key = std::make_tuple(result.instance_id, result.execution_id, result.task_id);
  auto lease = activity_leases_.find(key);
  if (lease == activity_leases_.end() || lease->second != result.completion_token) {
    return error{errc::stale_token,
                 fmt::format("activity {} of instance '{}' is not leased under token {}",
                             result.task_id, result.instance_id, result.completion_token)};
  }
  auto slot = slot_of(result.instance_id);
  if (!slot) return slot.error();
  expected<core::transition> applied =
      (*slot)->state ? core::apply_activity_result(*(*slot)->state, result, now_ns, options_.limits)
                     : expected<core::transition>(error{errc::not_found, "instance is gone"});
  if (!applied && applied.error().code == errc::invalid_argument) {
    return applied.error();  // The worker's answer is bad; the lease stays, nothing changes.
  }
  activity_leases_.erase(lease);
  open_.batch.activities_removed.push_back({result.instance_id, result.execution_id, result.task_id});
  if (applied) {
    log(now_ns, result);
    record(result.instance_id, **slot, std::move(*applied), now_ns, 0);
  }
  // A result the instance no longer wants (it finished, moved to a new execution,
  // or already has it) still ends the activity.
  return next_batch_;
}

expected<void> partition_engine::abandon_activity(const core::activity_request& request,
                                                  std::uint64_t token) {
  const auto key = std::make_tuple(request.instance_id, request.execution_id, request.task_id);
  auto lease = activity_leases_.find(key);
  if (lease == activity_leases_.end() || lease->second != token) {
    return error{errc::stale_token,
                 fmt::format("activity {} of instance '{}' is not leased under token {}",
                             request.task_id, request.instance_id, token)};
  }
  activity_leases_.erase(lease);
  activity_queue_.push_front(request);
  return {};
}

void partition_engine::fire_due_timers(std::int64_t now_ns) {
  for (std::size_t fired = 0; fired < options_.timers_per_tick_max; ++fired) {
    if (wakeups_.empty() || wakeups_.top().due_ns > now_ns) return;
    auto due = wakeups_.top();
    wakeups_.pop();
    if (!due.timer) {
      make_ready(due.instance_id);
      continue;
    }
    fire_timer(*due.timer, now_ns);
  }
}

void partition_engine::fire_timer(const core::timer_entry& timer, std::int64_t now_ns) {
  open_.batch.timers_removed.push_back(timer);
  auto slot = slot_of(timer.instance_id);
  if (!slot || !(*slot)->state) return;
  auto applied = core::apply_timer_fired(*(*slot)->state, timer, now_ns);
  if (!applied) return;  // The execution moved on or the instance ended.
  log(now_ns, timer);
  record(timer.instance_id, **slot, std::move(*applied), now_ns, 0);
}

namespace {

template <class T>
expected<void> done(const expected<T>& result) {
  if (!result) return result.error();
  return {};
}
}  // namespace

expected<void> partition_engine::replay(const store::partition_event& event) {
  const auto now = event.timestamp_ns;
  return std::visit(
      overloaded{
          [&](const core::start_request& e) { return done(start(e, now)); },
          [&](const store::logged::orchestrator_completed& e) -> expected<void> {
            auto slot = existing(e.completion.instance_id);
            if (!slot) return slot.error();
            (*slot)->state->in_flight =
                core::in_flight_work_item{e.completion.completion_token, e.consumed_event_count, e.started_at_ns};
            return done(complete_orchestrator(e.completion, now));
          },
          [&](const core::activity_result& e) {
            activity_leases_[std::make_tuple(e.instance_id, e.execution_id, e.task_id)] =
                e.completion_token;
            return done(complete_activity(e, now));
          },
          [&](const core::timer_entry& e) -> expected<void> {
            fire_timer(e, now);
            return {};
          },
          [&](const store::outbox_entry& e) { return done(receive(e, now)); },
          [&](const store::logged::event_raised& e) {
            return done(raise_event(e.instance_id, e.name, e.input, now));
          },
          [&](const store::logged::terminated& e) {
            return done(terminate(e.instance_id, e.request, now));
          },
          [&](const store::logged::suspended& e) { return done(suspend(e.instance_id, e.reason, now)); },
          [&](const store::logged::rewound& e) { return done(rewind(e.instance_id, e.reason, now)); },
          [&](const store::logged::delivered& e) { return done(deliver(e.message, now)); },
          [&](const store::logged::resumed& e) { return done(resume(e.instance_id, e.reason, now)); },
          [&](const store::logged::purged& e) { return done(purge(e.instance_id, now)); },
          [&](const store::logged::opaque&) -> expected<void> { return {}; },
      },
      event.body);
}

expected<std::uint64_t> partition_engine::receive(const store::outbox_entry& entry,
                                                  std::int64_t now_ns) {
  if (entry.destination_partition != identity().partition_index) {
    return error{errc::invalid_argument,
                 fmt::format("message {} from partition {} is for partition {}, not {}",
                             entry.sequence, entry.source_partition, entry.destination_partition,
                             identity().partition_index)};
  }
  auto& mark = dedup_marks_[entry.source_partition];
  auto& receipt = open_.receipts[entry.source_partition];
  if (entry.sequence <= mark) {
    receipt = std::max(receipt, mark);  // A resend: acknowledge again, apply nothing.
    return next_batch_;
  }
  mark = entry.sequence;
  receipt = entry.sequence;
  open_.batch.dedup_marks[entry.source_partition] = entry.sequence;
  log(now_ns, entry);
  apply_local(entry.message, now_ns, 0);
  return next_batch_;
}

void partition_engine::outbound_acknowledged(std::uint32_t destination, std::uint64_t sequence) {
  for (auto it = outbox_.begin(); it != outbox_.end() && it->first <= sequence;) {
    if (it->second.destination_partition == destination && it->first < durable_outbox_end_) {
      open_.batch.outbox_removed.push_back(it->first);
      it = outbox_.erase(it);
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------
// Commit cycle

bool partition_engine::has_open_batch() const {
  return !open_.batch.empty() || !open_.changes.empty() || !open_.receipts.empty();
}

std::optional<std::pair<std::uint64_t, store::write_batch>> partition_engine::take_batch() {
  if (!has_open_batch()) return std::nullopt;
  sealed_batch sealed;
  sealed.number = next_batch_++;
  for (const auto& [id, change] : open_.changes) {
    const auto& slot = instances_.at(id);
    const core::orchestration_state* state = slot.state ? &*slot.state : nullptr;
    open_.batch.instances.push_back(store::make_instance_write(id, state, change));
    sealed.inbox_ends.emplace_back(id, state ? state->inbox_first_sequence + state->inbox.size() : 0);
    if (open_.batch.instances.back().purged) {
      sealed.purged.push_back(id);
    } else {
      sealed.records.push_back(open_.batch.instances.back().row.record);
    }
  }
  sealed.activities = std::move(open_.activities);
  sealed.outbound = std::move(open_.outbound);
  sealed.receipts = std::move(open_.receipts);
  auto batch = std::move(open_.batch);
  open_ = open_batch{};
  sealed_.push_back(std::move(sealed));
  return std::make_pair(sealed_.back().number, std::move(batch));
}

released partition_engine::batch_committed(std::uint64_t batch) {
  assert(!sealed_.empty() && sealed_.front().number == batch);
  auto sealed = std::move(sealed_.front());
  sealed_.pop_front();
  for (const auto& [id, inbox_end] : sealed.inbox_ends) {
    auto found = instances_.find(id);
    if (found == instances_.end()) continue;
    found->second.durable_inbox_end = inbox_end;
    make_ready(id);
  }
  for (auto& activity : sealed.activities) activity_queue_.push_back(std::move(activity));
  if (!sealed.outbound.empty()) {
    durable_outbox_end_ = std::max(durable_outbox_end_, sealed.outbound.back().sequence + 1);
  }
  evict_idle();
  return released{sealed.number, std::move(sealed.outbound), std::move(sealed.receipts),
                  std::move(sealed.records), std::move(sealed.purged)};
}

void partition_engine::evict_idle() {
  const auto limit = options_.instance_cache_count_max;
  if (instances_.size() <= limit) return;
  // Evict down to 90% so eviction does not run on every commit.
  const auto target = limit - limit / 10;
  std::set<std::string_view> pinned;
  for (const auto& [id, change] : open_.changes) pinned.insert(id);
  for (const auto& sealed : sealed_) {
    for (const auto& [id, end] : sealed.inbox_ends) pinned.insert(id);
  }
  for (auto it = instances_.begin(); it != instances_.end() && instances_.size() > target;) {
    const auto& [id, slot] = *it;
    // Only state that is all on disk, with no work item out and none to give, may go.
    // (The ready list may still name it; a name with no cached instance is skipped.)
    const auto* state = slot.state ? &*slot.state : nullptr;
    bool has_work = state && !state->inbox.empty() && !core::is_terminal(state->record.status);
    bool idle = !pinned.count(id) && !has_work && (state == nullptr || !state->in_flight);
    if (!idle) {
      ++it;
      continue;
    }
    ready_set_.erase(id);
    ready_entities_set_.erase(id);
    it = instances_.erase(it);
  }
}

// ---------------------------------------------------------------------------
// Work

std::optional<core::orchestrator_work_item> partition_engine::next_orchestrator_item(
    std::int64_t now_ns) {
  return next_ready(ready_, ready_set_, now_ns);
}

std::optional<core::orchestrator_work_item> partition_engine::next_entity_item(std::int64_t now_ns) {
  return next_ready(ready_entities_, ready_entities_set_, now_ns);
}

std::optional<core::orchestrator_work_item> partition_engine::next_ready(std::deque<std::string>& ready,
                                                                         std::set<std::string>& ready_set,
                                                                         std::int64_t now_ns) {
  while (!ready.empty()) {
    auto id = std::move(ready.front());
    ready.pop_front();
    ready_set.erase(id);
    auto found = instances_.find(id);
    if (found == instances_.end() || !found->second.state) continue;
    auto& slot = found->second;
    auto& state = *slot.state;
    if (!core::is_ready(state, now_ns)) continue;
    const auto first = state.inbox_first_sequence;
    const auto durable = slot.durable_inbox_end > first
                             ? std::min<std::uint64_t>(slot.durable_inbox_end - first, state.inbox.size())
                             : 0;
    if (durable == 0) continue;  // Made ready again when its batch commits.
    auto item = core::dispatch(state, next_token_++, durable, now_ns);
    if (item) return std::move(*item);
  }
  return std::nullopt;
}

std::optional<activity_work_item> partition_engine::next_activity_item() {
  while (!activity_queue_.empty()) {
    auto request = std::move(activity_queue_.front());
    activity_queue_.pop_front();
    auto key = std::make_tuple(request.instance_id, request.execution_id, request.task_id);
    if (activity_leases_.count(key)) continue;  // Already out (queued twice on recovery).
    const auto token = next_token_++;
    activity_leases_.emplace(std::move(key), token);
    return activity_work_item{std::move(request), token};
  }
  return std::nullopt;
}

std::optional<std::int64_t> partition_engine::next_wakeup_ns() const {
  if (wakeups_.empty()) return std::nullopt;
  return wakeups_.top().due_ns;
}

std::vector<store::outbox_entry> partition_engine::unacknowledged_outbox() const {
  std::vector<store::outbox_entry> entries;
  for (const auto& [sequence, entry] : outbox_) {
    if (sequence < durable_outbox_end_) entries.push_back(entry);
  }
  return entries;
}

expected<std::optional<core::instance_record>> partition_engine::get_instance(
    const std::string& instance_id) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return valid.error();
  auto slot = slot_of(instance_id);
  if (!slot) return slot.error();
  if (!(*slot)->state) return std::optional<core::instance_record>();
  return std::optional<core::instance_record>((*slot)->state->record);
}

std::vector<std::string> partition_engine::sub_orchestrations_of(const std::string& instance_id) {
  auto slot = slot_of(instance_id);
  if (!slot || !(*slot)->state) return {};
  return core::all_sub_orchestrations(*(*slot)->state);
}

}  // namespace dtsd::engine
