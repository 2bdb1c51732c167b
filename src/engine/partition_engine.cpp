#include "engine/partition_engine.hpp"

#include <fmt/format.h>

#include <cassert>

#include "core/ids.hpp"
#include "core/overloaded.hpp"

namespace dtsd::engine {
namespace {

/// Runs an input through its callback form on an inline host and returns the answer.
template <class T, class Call>
expected<T> answer_now(Call call) {
  std::optional<expected<T>> answer;
  call([&answer](expected<T> result) { answer.emplace(std::move(result)); });
  if (!answer) return error{errc::failed_precondition, "the answer is not in yet (is the host inline?)"};
  return std::move(*answer);
}

}  // namespace

std::uint64_t partition_engine::first_token(std::uint32_t partition_index, std::int64_t now_ns) {
  // Leases are held by token for the whole hub: the partition's index in the top
  // 10 bits keeps the partitions' tokens apart, and a start above the clock (in
  // microseconds, one token each at most) keeps those of a restarted partition
  // apart from the ones it gave before.
  static_assert(core::partition_count_max <= (1u << 10));
  constexpr std::uint64_t counter_bits = 54;
  const auto micros = static_cast<std::uint64_t>(now_ns) / 1000;
  return (std::uint64_t{partition_index} << counter_bits) | (micros & ((std::uint64_t{1} << counter_bits) - 1)) | 1;
}

partition_engine::partition_engine(std::unique_ptr<store::partition_store> store,
                                   engine_options options, execution_id_source new_execution_id,
                                   std::int64_t now_ns, std::unique_ptr<instance_host> host)
    : store_(std::move(store)),
      options_(options),
      new_execution_id_(std::move(new_execution_id)),
      host_(host ? std::move(host) : std::make_unique<inline_host>()),
      next_token_(first_token(store_->identity().partition_index, now_ns)) {
  set_host(std::move(host_));
}

void partition_engine::set_host(std::unique_ptr<instance_host> host) {
  assert(live_.empty());
  host_ = std::move(host);
  host_->attach([store = store_.get()](const std::string& id) { return store->load_instance(id); }, options_.limits,
                [this](std::uint64_t number, instance_outcome outcome) { answered(number, std::move(outcome)); });
}

expected<std::unique_ptr<partition_engine>> partition_engine::open(
    std::unique_ptr<store::partition_store> store, engine_options options,
    execution_id_source new_execution_id, std::int64_t now_ns, std::unique_ptr<instance_host> host) {
  std::unique_ptr<partition_engine> engine(
      new partition_engine(std::move(store), options, std::move(new_execution_id), now_ns, std::move(host)));
  if (auto recovered = engine->recover(now_ns); !recovered) return recovered.error();
  return engine;
}

expected<void> partition_engine::recover(std::int64_t now_ns) {
  auto recovered = store_->recover();
  if (!recovered) return recovered.error();
  saw_time(now_ns);
  for (const auto& id : recovered->instances_with_inbox) {
    // Read here only to know when a scheduled start is due; the instance is made
    // live when its work is taken.
    auto state = store_->load_instance(id);
    if (!state) return state.error();
    if (!*state) continue;
    if (auto due = core::start_due_ns(**state, now_ns)) wakeups_.push({*due, std::nullopt, id});
    recovered_.insert(id);
    make_ready(id);
  }
  activity_queue_.assign(recovered->activities.begin(), recovered->activities.end());
  for (const auto& activity : activity_queue_) activity_waits(activity);
  for (const auto& timer : recovered->timers) wakeups_.push({timer.fire_at_ns, timer, timer.instance_id});
  for (const auto& entry : recovered->outbox) {
    outbox_.emplace(entry.sequence, entry);
    auto& last = last_sent_to_[entry.destination_partition];
    last = std::max(last, entry.sequence);
  }
  next_outbox_sequence_ = recovered->next_outbox_sequence;
  durable_outbox_end_ = next_outbox_sequence_;
  dedup_marks_ = recovered->dedup_marks;
  if (!recovered->retention.empty()) {
    auto policy = core::retention_from_json(recovered->retention);
    if (!policy) {
      return error{errc::corrupt, fmt::format("partition {} of '{}': its retention policy cannot be read: {}",
                                              identity().partition_index, identity().task_hub, policy.error().message)};
    }
    own_retention_ = std::move(*policy);
  }
  for (const auto& [id, json] : recovered->schedules) {
    auto schedule = core::schedule_from_json(json);
    if (!schedule) {
      return error{errc::corrupt, fmt::format("partition {} of '{}': schedule '{}' cannot be read: {}",
                                              identity().partition_index, identity().task_hub, id,
                                              schedule.error().message)};
    }
    auto& kept = schedules_[id] = std::move(*schedule);
    if (!kept.state.paused && kept.state.next_slot_ns != 0) {
      schedules_due_.emplace(kept.state.next_slot_ns, id);
      schedule_due_of_[id] = kept.state.next_slot_ns;
    }
  }
  return {};
}

std::uint32_t partition_engine::partition_of(const std::string& instance_id) const {
  return core::partition_of(instance_id, identity().partition_count);
}

partition_engine::open_batch& partition_engine::batch(std::uint64_t number) {
  auto& open = unsealed_[number];
  open.number = number;
  return open;
}

void partition_engine::operate(const std::string& id, std::uint64_t batch_number, instance_op op,
                               std::function<void(instance_outcome&)> then) {
  if (!quiet_purges_.empty()) {
    if (auto quiet = quiet_purges_.find(id); quiet != quiet_purges_.end()) {
      // Purged without being live, and not durably yet: made live now from the
      // store, which still has it, it is purged through itself first, so that what
      // follows sees no instance (and a start replaces the old rows).
      quiet_purges_.erase(quiet);
      const auto into = batch_number != 0 ? batch_number : next_batch_;
      operate(id, into, instance_ops::apply{store::logged::purged{id}, into, clock_ns_},
              [this, id, into](instance_outcome& outcome) {
                if (!outcome.refused && outcome.applied) record(id, into, *outcome.applied);
              });
    }
  }
  auto& info = live_[id];
  ++info.outstanding;
  info.touched = true;
  if (batch_number != 0) ++batch(batch_number).outstanding;
  const auto number = next_operation_++;
  pending_.emplace(number, pending_operation{id, batch_number, std::move(then)});
  host_->run(id, number, std::move(op));
}

void partition_engine::answered(std::uint64_t number, instance_outcome outcome) {
  auto found = pending_.find(number);
  assert(found != pending_.end());
  if (found == pending_.end()) return;
  auto operation = std::move(found->second);
  pending_.erase(found);
  if (auto live = live_.find(operation.instance_id); live != live_.end()) {
    --live->second.outstanding;
    live->second.idle = outcome.idle;
  }
  operation.then(outcome);
  if (operation.batch != 0) --batch(operation.batch).outstanding;
}

void partition_engine::log(std::uint64_t batch_number, std::int64_t now_ns, logged_input body) {
  batch(batch_number).batch.events.push_back({now_ns, std::move(body)});
}

std::size_t partition_engine::reserve_log(std::uint64_t batch_number, std::int64_t now_ns) {
  saw_time(now_ns);
  auto& events = batch(batch_number).batch.events;
  events.push_back({now_ns, store::logged::opaque{}});
  return events.size() - 1;
}

void partition_engine::fill_log(std::uint64_t batch_number, std::size_t slot, logged_input body) {
  batch(batch_number).batch.events[slot].body = std::move(body);
}

namespace {

/// A log place whose input was refused: dropped when the batch is sealed.
bool unfilled(const store::partition_event& event) {
  const auto* placeholder = std::get_if<store::logged::opaque>(&event.body);
  return placeholder != nullptr && placeholder->data.empty();
}

}  // namespace

void partition_engine::make_ready(const std::string& instance_id) {
  if (core::is_entity_id(instance_id)) {
    if (ready_entities_set_.insert(instance_id).second) ready_entities_.push_back(instance_id);
    waiting_entities_.add(instance_id, clock_ns_);
    return;
  }
  if (ready_set_.insert(instance_id).second) ready_.push_back(instance_id);
  waiting_orchestrators_.add(instance_id, clock_ns_);
}

void partition_engine::record(const std::string& instance_id, std::uint64_t batch_number, applied_input& done) {
  auto& open = batch(batch_number);
  auto& info = live_[instance_id];
  if (done.write.purged || done.write.reset) {
    // Its inbox starts over: nothing of it is known durable until this batch
    // commits, and inbox ends of earlier batches no longer apply.
    info.reset_batch = batch_number;
    info.durable_inbox_end = 0;
  }
  open.writes[instance_id] = std::move(done.write);
  info.last_batch = std::max(info.last_batch, batch_number);
  auto& effects = done.effects;
  for (auto& activity : effects.activities) {
    open.batch.activities_added.push_back(activity);
    open.activities.push_back(std::move(activity));
  }
  for (auto& timer : effects.timers) {
    open.batch.timers_added.push_back(timer);
    wakeups_.push({timer.fire_at_ns, timer, timer.instance_id});
  }
  // Its next work item can be prepared once this batch commits (batch_committed);
  // a scheduled start waits for its time too.
  if (done.has_state && done.start_due_ns) wakeups_.push({*done.start_due_ns, std::nullopt, instance_id});
  for (auto& message : effects.messages) route(batch_number, std::move(message));
  const auto& row = open.writes[instance_id];
  if (!row.purged && core::is_terminal(row.row.record.status)) {
    // A run a schedule started ended: its schedule hears of it (once per batch; a
    // later report of the same end is ignored there).
    const auto& tags = row.row.record.tags;
    if (auto tag = tags.find(std::string(core::schedule_tag)); tag != tags.end() && open.runs_reported.insert(instance_id).second) {
      route(batch_number, core::run_ended_report(tag->second, instance_id, to_string(row.row.record.status), clock_ns_));
    }
  }
}

void partition_engine::route(std::uint64_t batch_number, core::instance_message message) {
  // Every message, to this partition too, is written to the outbox in the sender's
  // batch and applied by its receiver once that batch is durable: the receiver's
  // instance may already be taking inputs of a later batch.
  batch(batch_number).messages.push_back(std::move(message));
}

void partition_engine::change(const std::string& instance_id, std::int64_t now_ns, logged_input input,
                              reply<std::uint64_t> done) {
  const auto number = next_batch_;
  const auto slot = reserve_log(number, now_ns);
  operate(instance_id, number, instance_ops::apply{std::move(input), number, now_ns},
          [this, instance_id, number, slot, done = std::move(done)](instance_outcome& outcome) {
            if (outcome.refused) return done(std::move(*outcome.refused));
            fill_log(number, slot, std::move(*outcome.logged));
            record(instance_id, number, *outcome.applied);
            done(number);
          });
}

// ---------------------------------------------------------------------------
// Inputs

void partition_engine::start(core::start_request request, std::int64_t now_ns, reply<started> done) {
  if (auto valid = core::validate_orchestration_id(request.instance_id); !valid) return done(valid.error());
  if (partition_of(request.instance_id) != identity().partition_index) {
    return done(error{errc::invalid_argument,
                      fmt::format("instance '{}' belongs to partition {}, not {}", request.instance_id,
                                  partition_of(request.instance_id), identity().partition_index)});
  }
  if (request.execution_id.empty()) request.execution_id = new_execution_id_();
  const auto id = request.instance_id;
  const auto execution = request.execution_id;
  change(id, now_ns, std::move(request), [id, execution, done = std::move(done)](expected<std::uint64_t> batch) {
    if (!batch) return done(batch.error());
    done(started{id, execution, *batch});
  });
}

void partition_engine::raise_event(const std::string& instance_id, const std::string& name,
                                   const core::payload& input, std::int64_t now_ns, reply<std::uint64_t> done) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return done(valid.error());
  change(instance_id, now_ns, store::logged::event_raised{instance_id, name, input}, std::move(done));
}

void partition_engine::terminate(const std::string& instance_id, const core::terminate_request& request,
                                 std::int64_t now_ns, reply<std::uint64_t> done) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return done(valid.error());
  change(instance_id, now_ns, store::logged::terminated{instance_id, request}, std::move(done));
}

void partition_engine::suspend(const std::string& instance_id, const core::payload& reason, std::int64_t now_ns,
                               reply<std::uint64_t> done) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return done(valid.error());
  change(instance_id, now_ns, store::logged::suspended{instance_id, reason}, std::move(done));
}

void partition_engine::resume(const std::string& instance_id, const core::payload& reason, std::int64_t now_ns,
                              reply<std::uint64_t> done) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return done(valid.error());
  change(instance_id, now_ns, store::logged::resumed{instance_id, reason}, std::move(done));
}

void partition_engine::deliver(const core::instance_message& message, std::int64_t now_ns,
                               reply<std::uint64_t> done) {
  if (auto valid = core::validate_instance_id(message.target_instance_id); !valid) return done(valid.error());
  change(message.target_instance_id, now_ns, store::logged::delivered{message}, std::move(done));
}

void partition_engine::rewind(const std::string& instance_id, const core::payload& reason, std::int64_t now_ns,
                              reply<std::uint64_t> done) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return done(valid.error());
  change(instance_id, now_ns, store::logged::rewound{instance_id, reason}, std::move(done));
}

void partition_engine::purge(const std::string& instance_id, std::int64_t now_ns, reply<std::uint64_t> done) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return done(valid.error());
  change(instance_id, now_ns, store::logged::purged{instance_id}, std::move(done));
}

void partition_engine::delete_entity(const std::string& entity_id, std::int64_t now_ns, reply<std::uint64_t> done) {
  if (auto valid = core::validate_instance_id(entity_id); !valid) return done(valid.error());
  if (!core::is_entity_id(entity_id)) {
    return done(error{errc::invalid_argument, fmt::format("'{}' is not an entity id (@name@key)", entity_id)});
  }
  change(entity_id, now_ns, store::logged::entity_deleted{entity_id}, std::move(done));
}

void partition_engine::complete_orchestrator(const core::orchestrator_completion& completion, std::int64_t now_ns,
                                             reply<std::uint64_t> done) {
  if (auto valid = core::validate_instance_id(completion.instance_id); !valid) return done(valid.error());
  // What the log needs besides the completion is read on the instance.
  change(completion.instance_id, now_ns, store::logged::orchestrator_completed{completion, {}, 0, 0}, std::move(done));
}

void partition_engine::abandon_orchestrator(const std::string& instance_id, std::uint64_t token,
                                            reply<void> done) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return done(valid.error());
  operate(instance_id, 0, instance_ops::give_back{token},
          [this, instance_id, done = std::move(done)](instance_outcome& outcome) {
            if (outcome.refused) return done(std::move(*outcome.refused));
            make_ready(instance_id);
            done({});
          });
}

void partition_engine::complete_activity(const core::activity_result& result, std::int64_t now_ns,
                                         reply<std::uint64_t> done) {
  const auto key = std::make_tuple(result.instance_id, result.execution_id, result.task_id);
  auto stale = [task = result.task_id, id = result.instance_id, token = result.completion_token] {
    return error{errc::stale_token,
                 fmt::format("activity {} of instance '{}' is not leased under token {}", task, id, token)};
  };
  auto lease = activity_leases_.find(key);
  if (lease == activity_leases_.end() || lease->second != result.completion_token || completing_activities_.count(key)) {
    return done(stale());
  }
  // Until the instance answers, the lease can be neither given back nor answered
  // again: the instance may already hold the result.
  completing_activities_.insert(key);
  const auto number = next_batch_;
  const auto slot = reserve_log(number, now_ns);
  operate(result.instance_id, number, instance_ops::apply{result, number, now_ns},
          [this, key, number, slot, stale, done = std::move(done)](instance_outcome& outcome) {
            completing_activities_.erase(key);
            if (outcome.refused && (outcome.load_failed || outcome.refused->code == errc::invalid_argument)) {
              // The worker's answer is bad, or the instance could not be read: the
              // lease stays and nothing changes.
              return done(std::move(*outcome.refused));
            }
            const auto& answer = std::get<core::activity_result>(*outcome.logged);
            auto lease = activity_leases_.find(key);
            if (lease == activity_leases_.end() || lease->second != answer.completion_token) return done(stale());
            activity_leases_.erase(lease);
            batch(number).batch.activities_removed.push_back({answer.instance_id, answer.execution_id, answer.task_id});
            if (!outcome.refused) {
              const auto instance_id = answer.instance_id;
              fill_log(number, slot, std::move(*outcome.logged));
              record(instance_id, number, *outcome.applied);
            }
            // A result the instance no longer wants (it finished, moved to a new
            // execution, or already has it) still ends the activity.
            done(number);
          });
}

expected<void> partition_engine::abandon_activity(const core::activity_request& request, std::uint64_t token) {
  const auto key = std::make_tuple(request.instance_id, request.execution_id, request.task_id);
  auto lease = activity_leases_.find(key);
  if (lease == activity_leases_.end() || lease->second != token || completing_activities_.count(key)) {
    return error{errc::stale_token, fmt::format("activity {} of instance '{}' is not leased under token {}",
                                                request.task_id, request.instance_id, token)};
  }
  activity_leases_.erase(lease);
  activity_queue_.push_front(request);
  activity_waits(request);
  return {};
}

void partition_engine::fire_due_timers(std::int64_t now_ns) {
  saw_time(now_ns);
  fire_due_schedules(now_ns);
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
  const auto number = next_batch_;
  batch(number).batch.timers_removed.push_back(timer);
  const auto slot = reserve_log(number, now_ns);
  operate(timer.instance_id, number, instance_ops::apply{timer, number, now_ns},
          [this, id = timer.instance_id, number, slot](instance_outcome& outcome) {
            if (outcome.refused) return;  // The execution moved on or the instance ended.
            fill_log(number, slot, std::move(*outcome.logged));
            record(id, number, *outcome.applied);
          });
}

void partition_engine::receive(const store::outbox_entry& entry, std::int64_t now_ns, reply<std::uint64_t> done) {
  if (entry.destination_partition != identity().partition_index) {
    return done(error{errc::invalid_argument,
                      fmt::format("message {} from partition {} is for partition {}, not {}", entry.sequence,
                                  entry.source_partition, entry.destination_partition, identity().partition_index)});
  }
  const auto number = next_batch_;
  auto& open = batch(number);
  auto& mark = dedup_marks_[entry.source_partition];
  auto& receipt = open.receipts[entry.source_partition];
  if (entry.sequence <= mark) {
    receipt = std::max(receipt, mark);  // A resend: acknowledge again, apply nothing.
    return done(number);
  }
  if (entry.previous > mark) {
    // It overtook an earlier message of its source (lost on the way): applying it
    // would make that one look like a duplicate. Its source sends both again, in
    // order, until they are acknowledged.
    return done(number);
  }
  mark = entry.sequence;
  receipt = entry.sequence;
  open.batch.dedup_marks[entry.source_partition] = entry.sequence;
  // Logged as sent (every input takes its place in the log when it is sent to its
  // instance), so each source's messages stay in sequence order for the dedup mark.
  log(number, now_ns, entry);
  if (auto schedule_id = core::schedule_of_address(entry.message.target_instance_id)) {
    schedule_run_ended(std::string(*schedule_id), entry.message);
    return done(number);
  }
  operate(entry.message.target_instance_id, number, instance_ops::apply{entry, number, now_ns},
          [this, number, now_ns, done = std::move(done)](instance_outcome& outcome) {
            const auto& message = std::get<store::outbox_entry>(*outcome.logged).message;
            if (!outcome.refused) {
              record(message.target_instance_id, number, *outcome.applied);
            } else if (const auto* start = std::get_if<core::start_request>(&message.body)) {
              // A start that failed reports back to its parent; other refusals (a result
              // for an execution that moved on, a duplicate) are dropped as the state
              // machine decided.
              if (auto failed = core::start_failed_message(*start, *outcome.refused, now_ns)) {
                route(number, std::move(*failed));
              }
              if (auto tag = start->tags.find(std::string(core::schedule_tag)); tag != start->tags.end()) {
                // A scheduled run that could not start (its id was taken): its
                // schedule must not wait for it to end.
                route(number, core::run_ended_report(tag->second, start->instance_id, "StartFailed", now_ns));
              }
            }
            done(number);
          });
}

void partition_engine::outbound_acknowledged(std::uint32_t destination, std::uint64_t sequence) {
  for (auto it = outbox_.begin(); it != outbox_.end() && it->first <= sequence;) {
    if (it->second.destination_partition == destination && it->first < durable_outbox_end_) {
      batch(next_batch_).batch.outbox_removed.push_back(it->first);
      it = outbox_.erase(it);
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------
// Synchronous forms (inline host)

expected<started> partition_engine::start(core::start_request request, std::int64_t now_ns) {
  return answer_now<started>([&](reply<started> done) { start(std::move(request), now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::raise_event(const std::string& instance_id, const std::string& name,
                                                      const core::payload& input, std::int64_t now_ns) {
  return answer_now<std::uint64_t>(
      [&](reply<std::uint64_t> done) { raise_event(instance_id, name, input, now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::terminate(const std::string& instance_id,
                                                    const core::terminate_request& request, std::int64_t now_ns) {
  return answer_now<std::uint64_t>([&](reply<std::uint64_t> done) { terminate(instance_id, request, now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::suspend(const std::string& instance_id, const core::payload& reason,
                                                  std::int64_t now_ns) {
  return answer_now<std::uint64_t>([&](reply<std::uint64_t> done) { suspend(instance_id, reason, now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::resume(const std::string& instance_id, const core::payload& reason,
                                                 std::int64_t now_ns) {
  return answer_now<std::uint64_t>([&](reply<std::uint64_t> done) { resume(instance_id, reason, now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::rewind(const std::string& instance_id, const core::payload& reason,
                                                 std::int64_t now_ns) {
  return answer_now<std::uint64_t>([&](reply<std::uint64_t> done) { rewind(instance_id, reason, now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::deliver(const core::instance_message& message, std::int64_t now_ns) {
  return answer_now<std::uint64_t>([&](reply<std::uint64_t> done) { deliver(message, now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::purge(const std::string& instance_id, std::int64_t now_ns) {
  return answer_now<std::uint64_t>([&](reply<std::uint64_t> done) { purge(instance_id, now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::delete_entity(const std::string& entity_id, std::int64_t now_ns) {
  return answer_now<std::uint64_t>([&](reply<std::uint64_t> done) { delete_entity(entity_id, now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::complete_orchestrator(const core::orchestrator_completion& completion,
                                                                std::int64_t now_ns) {
  return answer_now<std::uint64_t>(
      [&](reply<std::uint64_t> done) { complete_orchestrator(completion, now_ns, std::move(done)); });
}

expected<void> partition_engine::abandon_orchestrator(const std::string& instance_id, std::uint64_t token) {
  return answer_now<void>([&](reply<void> done) { abandon_orchestrator(instance_id, token, std::move(done)); });
}

expected<std::uint64_t> partition_engine::complete_activity(const core::activity_result& result,
                                                            std::int64_t now_ns) {
  return answer_now<std::uint64_t>([&](reply<std::uint64_t> done) { complete_activity(result, now_ns, std::move(done)); });
}

expected<std::uint64_t> partition_engine::receive(const store::outbox_entry& entry, std::int64_t now_ns) {
  return answer_now<std::uint64_t>([&](reply<std::uint64_t> done) { receive(entry, now_ns, std::move(done)); });
}

std::optional<core::orchestrator_work_item> partition_engine::next_orchestrator_item(std::int64_t now_ns) {
  auto items = take_work(false, 1, now_ns);
  if (items.empty()) return std::nullopt;
  return std::move(items.front());
}

expected<std::optional<core::instance_record>> partition_engine::get_instance(const std::string& instance_id) {
  return answer_now<std::optional<core::instance_record>>(
      [&](reply<std::optional<core::instance_record>> done) { get_instance(instance_id, std::move(done)); });
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
            // The work item the worker had: its lease and the events it was given.
            const core::in_flight_work_item given{e.completion.completion_token, e.consumed_event_count,
                                                  e.started_at_ns};
            auto restored = answer_now<void>([&](reply<void> restored_done) {
              operate(e.completion.instance_id, 0, instance_ops::restore{given},
                      [restored_done](instance_outcome& outcome) {
                        if (outcome.refused) return restored_done(std::move(*outcome.refused));
                        restored_done({});
                      });
            });
            if (!restored) return restored;
            return done(complete_orchestrator(e.completion, now));
          },
          [&](const core::activity_result& e) {
            activity_leases_[std::make_tuple(e.instance_id, e.execution_id, e.task_id)] = e.completion_token;
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
          [&](const store::logged::terminated& e) { return done(terminate(e.instance_id, e.request, now)); },
          [&](const store::logged::suspended& e) { return done(suspend(e.instance_id, e.reason, now)); },
          [&](const store::logged::rewound& e) { return done(rewind(e.instance_id, e.reason, now)); },
          [&](const store::logged::delivered& e) { return done(deliver(e.message, now)); },
          [&](const store::logged::resumed& e) { return done(resume(e.instance_id, e.reason, now)); },
          [&](const store::logged::purged& e) { return done(purge(e.instance_id, now)); },
          [&](const store::logged::entity_deleted& e) { return done(delete_entity(e.instance_id, now)); },
          [&](const store::logged::opaque&) -> expected<void> { return {}; },
      },
      event.body);
}

// ---------------------------------------------------------------------------
// Commit cycle

bool partition_engine::has_open_batch() const {
  for (const auto& [number, open] : unsealed_) {
    if (!open.empty() || open.outstanding > 0) return true;
  }
  return false;
}

bool partition_engine::quiescent() const {
  if (has_open_batch()) return false;
  for (const auto& [id, info] : live_) {
    if (info.outstanding > 0) return false;
  }
  return true;
}

std::optional<std::pair<std::uint64_t, store::write_batch>> partition_engine::take_batch() {
  while (!unsealed_.empty()) {
    auto first = unsealed_.begin();
    if (first->first == next_batch_) {
      // Nothing is closing: close the open batch, if it holds anything.
      if (first->second.empty() && first->second.outstanding == 0) {
        unsealed_.erase(first);
        return std::nullopt;
      }
      ++next_batch_;
    }
    if (first->second.outstanding > 0) return std::nullopt;  // Taken again when the answers are in.
    auto open = std::move(first->second);
    unsealed_.erase(first);
    std::erase_if(open.batch.events, unfilled);
    if (open.empty()) continue;  // Everything it was given failed; acks on it resolve with the next commit.
    sealed_batch sealed;
    sealed.number = open.number;
    for (auto& [id, write] : open.writes) {
      sealed.inbox_ends.emplace_back(id, write.purged ? 0 : write.row.inbox_first_sequence + write.row.inbox_count);
      if (write.purged) {
        sealed.purged.push_back(id);
      } else {
        sealed.records.push_back(write.row.record);
      }
      open.batch.instances.push_back(std::move(write));
    }
    sealed.activities = std::move(open.activities);
    for (auto& message : open.messages) {
      const auto destination = partition_of(message.target_instance_id);
      store::outbox_entry entry{next_outbox_sequence_++, identity().partition_index, destination, std::move(message)};
      auto& last = last_sent_to_[destination];
      entry.previous = last;
      last = entry.sequence;
      open.batch.outbox_added.push_back(entry);
      sealed.outbound.push_back(entry);
      outbox_.emplace(entry.sequence, std::move(entry));
    }
    sealed.receipts = std::move(open.receipts);
    sealed_.push_back(std::move(sealed));
    return std::make_pair(sealed_.back().number, std::move(open.batch));
  }
  return std::nullopt;
}

released partition_engine::batch_committed(std::uint64_t batch_number) {
  assert(!sealed_.empty() && sealed_.front().number == batch_number);
  auto sealed = std::move(sealed_.front());
  sealed_.pop_front();
  committed_ = batch_number;
  for (const auto& [id, inbox_end] : sealed.inbox_ends) {
    auto found = live_.find(id);
    if (found == live_.end()) continue;
    if (found->second.reset_batch <= batch_number) {
      found->second.durable_inbox_end = inbox_end;  // The instance learns it with its next work item.
    }
    make_ready(id);
  }
  for (auto& activity : sealed.activities) {
    activity_waits(activity);
    activity_queue_.push_back(std::move(activity));
  }
  if (!sealed.outbound.empty()) {
    durable_outbox_end_ = std::max(durable_outbox_end_, sealed.outbound.back().sequence + 1);
  }
  // An instance that ended is rarely touched again (reads and waits go to the
  // store): it leaves memory once its end is durable instead of at the next sweep,
  // which under a steady load kept tens of thousands of ended instances live.
  for (const auto& record : sealed.records) {
    if (!core::is_terminal(record.status)) continue;
    if (auto found = live_.find(record.instance_id); found != live_.end() && evictable(found->second)) evict(found);
  }
  evict_idle();
  // Retention's purges of this batch are done: purged, or (a start in the same
  // batch made the instance again) not; either way no longer under way.
  if (!retention_purging_.empty()) {
    const std::unordered_set<std::string> gone(sealed.purged.begin(), sealed.purged.end());
    for (auto it = retention_purging_.begin(); it != retention_purging_.end();) {
      if (it->second.batch == 0 || it->second.batch > batch_number) {
        ++it;
        continue;
      }
      if (gone.count(it->first)) ++retention_purged_[static_cast<std::size_t>(it->second.status)];
      it = retention_purging_.erase(it);
    }
  }
  std::erase_if(quiet_purges_, [batch_number](const auto& quiet) { return quiet.second <= batch_number; });
  for (const auto& id : sealed.purged) {
    // Nothing of it is left to keep in memory.
    if (auto found = live_.find(id); found != live_.end() && evictable(found->second)) evict(found);
  }
  return released{sealed.number, std::move(sealed.outbound), std::move(sealed.receipts),
                  std::move(sealed.records), std::move(sealed.purged)};
}

std::uint64_t partition_engine::set_retention(std::optional<core::retention_policy> policy) {
  batch(next_batch_).batch.retention = policy ? core::to_json(*policy) : std::string();
  own_retention_ = std::move(policy);
  return next_batch_;
}

std::size_t partition_engine::newly_due(std::int64_t now_ns, std::size_t count_max) {
  const auto since = due_checked_ns_;
  // A clock that went back does not count a window twice.
  due_checked_ns_ = since ? std::max(*since, now_ns) : now_ns;
  if (!since || *since >= now_ns) return 0;
  const auto& policy = retention();
  std::size_t count = 0;
  for (auto status : core::retained_statuses) {
    const auto keep = policy.keep_s(status);
    if (!keep || count >= count_max) continue;
    const auto kept_ns = *keep * 1'000'000'000;
    count += store_->catalog().ended_between(status, *since - kept_ns, now_ns - kept_ns, count_max - count);
  }
  return count;
}

void partition_engine::purge_expired(std::int64_t now_ns, std::size_t count_max) {
  count_max = std::min(count_max, options_.retention_purges_max);
  const auto& policy = retention();
  for (auto status : core::retained_statuses) {
    if (retention_purging_.size() >= count_max) return;
    const auto keep = policy.keep_s(status);
    if (!keep) continue;
    const auto ended_by = now_ns - *keep * 1'000'000'000;
    auto due = store_->catalog().ended_by(status, ended_by, count_max - retention_purging_.size(),
                                          [this](const std::string& id) { return retention_purging_.count(id) != 0; });
    for (auto& id : due) {
      auto& purging = retention_purging_.emplace(id, retention_purge{status, 0}).first->second;
      if (!live_.count(id) && !recovered_.count(id) && !ready_set_.count(id)) {
        // Not live: everything of it is on disk, and the catalog, which follows
        // durable commits, says it ended. Purged without loading it (its history
        // may be long) or making it live: the store needs only its id.
        const auto number = next_batch_;
        fill_log(number, reserve_log(number, now_ns), store::logged::purged{id});
        applied_input purged;
        purged.write.instance_id = id;
        purged.write.purged = true;
        record(id, number, purged);
        purging.batch = number;
        quiet_purges_[id] = number;
        continue;
      }
      // Live: through the instance. Refused when it changed since (restarted under
      // its id, purged by hand): it is no longer due, or no longer there.
      purge(id, now_ns, [this, id](expected<std::uint64_t> purged) {
        auto found = retention_purging_.find(id);
        if (found == retention_purging_.end()) return;
        if (!purged) {
          retention_purging_.erase(found);
        } else {
          found->second.batch = *purged;
        }
      });
    }
  }
}

// ---------------------------------------------------------------------------
// Schedules

void partition_engine::schedule_changed(const core::schedule& s) {
  batch(next_batch_).batch.schedules[s.spec.id] = core::to_json(s);
  if (auto old = schedule_due_of_.find(s.spec.id); old != schedule_due_of_.end()) {
    schedules_due_.erase({old->second, s.spec.id});
    schedule_due_of_.erase(old);
  }
  if (!s.state.paused && s.state.next_slot_ns != 0) {
    schedules_due_.emplace(s.state.next_slot_ns, s.spec.id);
    schedule_due_of_[s.spec.id] = s.state.next_slot_ns;
  }
}

void partition_engine::run_slot(core::schedule& s, std::int64_t slot_ns, bool forced, bool triggered) {
  auto& state = s.state;
  if (!forced && state.last_running) {
    switch (s.spec.overlap) {
      case core::overlap_policy::skip: ++state.skipped; return;
      case core::overlap_policy::buffer_one:
        if (state.buffered_slot_ns != 0) ++state.skipped;  // The later slot takes its place.
        state.buffered_slot_ns = slot_ns;
        return;
      case core::overlap_policy::allow_all: break;
    }
  }
  core::start_request start;
  start.instance_id = core::slot_instance_id(s.spec, slot_ns, triggered);
  // Derived, not drawn: the start message is the same however often it is made.
  start.execution_id = core::derive_execution_id(start.instance_id, "schedule");
  start.name = s.spec.orchestration;
  start.version = s.spec.version;
  start.input = s.spec.input;
  start.tags = {{std::string(core::schedule_tag), s.spec.id}, {std::string(core::slot_tag), core::format_time(slot_ns)}};
  // No reuse: a slot whose id exists already (run before, or taken by hand) does not run again.
  start.replaceable_statuses = {};
  state.last_slot_ns = slot_ns;
  state.last_instance_id = start.instance_id;
  state.last_running = true;
  state.last_status = "Pending";
  ++state.runs;
  route(next_batch_, core::instance_message{start.instance_id, {}, std::move(start)});
}

void partition_engine::schedule_run_ended(const std::string& schedule_id, const core::instance_message& report) {
  auto found = schedules_.find(schedule_id);
  const auto* ended = std::get_if<core::history_event>(&report.body);
  const auto* raised = ended ? std::get_if<core::events::event_raised>(&ended->body) : nullptr;
  if (found == schedules_.end() || raised == nullptr) return;  // Deleted since, or not a report.
  auto& s = found->second;
  if (!s.state.last_running || s.state.last_instance_id != raised->name) return;  // An older run, or said before.
  s.state.last_running = false;
  s.state.last_status = raised->input.value_or("");
  if (s.state.buffered_slot_ns != 0 && !s.state.paused) {
    const auto slot = std::exchange(s.state.buffered_slot_ns, 0);
    run_slot(s, slot, true);
  }
  schedule_changed(s);
}

void partition_engine::fire_due_schedules(std::int64_t now_ns) {
  while (!schedules_due_.empty() && schedules_due_.begin()->first <= now_ns) {
    auto& s = schedules_.at(schedules_due_.begin()->second);
    auto& state = s.state;
    const auto keep = s.spec.catch_up == core::catch_up_policy::all ? s.spec.catch_up_max : 1;
    const auto due = core::slots_due(s.spec, state.next_slot_ns, now_ns, keep);
    const auto run = core::slots_to_run(s.spec, due, now_ns);
    state.missed += due.count - run.size();
    for (auto slot : run) run_slot(s, slot, false);
    const auto next = core::next_slot(s.spec, std::max(now_ns, state.next_slot_ns)).value_or(0);
    // A slot is always later than the one before; anything else would fire again
    // at once, for ever: the schedule ends instead.
    state.next_slot_ns = next > now_ns ? next : 0;
    schedule_changed(s);
  }
}

expected<std::pair<std::uint64_t, std::vector<core::schedule>>> partition_engine::schedule(
    const core::schedule_command& command, std::int64_t now_ns) {
  using verb = core::schedule_command::verb;
  saw_time(now_ns);
  if (command.what == verb::list) {
    std::vector<core::schedule> all;
    for (const auto& [id, s] : schedules_) all.push_back(s);
    return std::pair{std::uint64_t{0}, std::move(all)};
  }
  if (auto valid = core::validate_schedule_id(command.id); !valid) return valid.error();
  if (partition_of(core::schedule_address(command.id)) != identity().partition_index) {
    return error{errc::invalid_argument, fmt::format("schedule '{}' belongs to partition {}, not {}", command.id,
                                                     partition_of(core::schedule_address(command.id)),
                                                     identity().partition_index)};
  }
  auto found = schedules_.find(command.id);
  if (command.what == verb::create) {
    if (!command.spec) return error{errc::invalid_argument, "creating a schedule needs its definition"};
    if (command.spec->id != command.id) {
      return error{errc::invalid_argument, fmt::format("the schedule's id '{}' is not '{}'", command.spec->id, command.id)};
    }
    if (auto valid = core::validate(*command.spec); !valid) return valid.error();
    if (found != schedules_.end()) {
      return error{errc::already_exists, fmt::format("schedule '{}' exists already (update or delete it)", command.id)};
    }
    core::schedule made{*command.spec, {}};
    made.state.created_ns = made.state.updated_ns = now_ns;
    made.state.next_slot_ns = core::next_slot(made.spec, now_ns).value_or(0);
    auto& kept = schedules_[command.id] = std::move(made);
    schedule_changed(kept);
    return std::pair{next_batch_, std::vector{kept}};
  }
  if (found == schedules_.end()) {
    return error{errc::not_found, fmt::format("no schedule with id '{}'", command.id)};
  }
  auto& s = found->second;
  switch (command.what) {
    case verb::get: return std::pair{std::uint64_t{0}, std::vector{s}};
    case verb::remove: {
      batch(next_batch_).batch.schedules[command.id] = std::string();
      if (auto old = schedule_due_of_.find(command.id); old != schedule_due_of_.end()) {
        schedules_due_.erase({old->second, command.id});
        schedule_due_of_.erase(old);
      }
      auto gone = std::move(s);
      schedules_.erase(found);
      return std::pair{next_batch_, std::vector{std::move(gone)}};
    }
    case verb::update:
      if (!command.spec || command.spec->id != command.id) {
        return error{errc::invalid_argument, "updating a schedule needs its definition, with the same id"};
      }
      if (auto valid = core::validate(*command.spec); !valid) return valid.error();
      s.spec = *command.spec;
      s.state.updated_ns = now_ns;
      // Slots from now on follow the new definition; none already run runs again.
      s.state.next_slot_ns = core::next_slot(s.spec, std::max(now_ns, s.state.last_slot_ns)).value_or(0);
      break;
    case verb::pause:
      s.state.paused = true;
      s.state.note = command.note;
      if (s.state.buffered_slot_ns != 0) ++s.state.skipped;  // Not run late after a resume.
      s.state.buffered_slot_ns = 0;
      break;
    case verb::resume:
      if (!s.state.paused) return std::pair{std::uint64_t{0}, std::vector{s}};
      s.state.paused = false;
      s.state.note.clear();
      // The slots that passed while it was paused are not caught up.
      s.state.next_slot_ns = core::next_slot(s.spec, now_ns).value_or(0);
      break;
    case verb::trigger: {
      // A run now, whatever the overlap policy (an operator asked for it). Its id
      // has the time to the millisecond, apart from every slot's.
      run_slot(s, now_ns - now_ns % 1'000'000, true, true);
      break;
    }
    case verb::create:
    case verb::list: break;
  }
  schedule_changed(s);
  return std::pair{next_batch_, std::vector{s}};
}

bool partition_engine::evictable(const live_info& info) const {
  // Only an instance that is all on disk, with no operation, no work item out and
  // none to give, may go. (The ready list may still name it: taking work from it
  // makes it live again from the store, and it has none.)
  return info.outstanding == 0 && info.last_batch <= committed_ && info.idle;
}

std::unordered_map<std::string, partition_engine::live_info>::iterator partition_engine::evict(
    std::unordered_map<std::string, live_info>::iterator it) {
  host_->evict(it->first);
  return live_.erase(it);
}

void partition_engine::evict_idle() {
  const auto limit = options_.instance_cache_count_max;
  if (live_.size() <= limit) return;
  // Evict down to 90% so eviction does not run on every commit.
  const auto target = limit - limit / 10;
  for (auto it = live_.begin(); it != live_.end() && live_.size() > target;) {
    it = evictable(it->second) ? evict(it) : std::next(it);
  }
}

void partition_engine::evict_untouched() {
  for (auto it = live_.begin(); it != live_.end();) {
    if (!it->second.touched && evictable(it->second)) {
      it = evict(it);
    } else {
      it->second.touched = false;
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------
// Work

void partition_engine::prepare(std::int64_t now_ns) {
  saw_time(now_ns);
  for (bool entities : {false, true}) {
    auto& ready = entities ? ready_entities_ : ready_;
    auto& ready_set = entities ? ready_entities_set_ : ready_set_;
    auto& prepared = entities ? prepared_entities_ : prepared_;
    auto& preparing = entities ? preparing_entities_ : preparing_;
    while (prepared.size() + preparing < options_.prepared_max && !ready.empty()) {
      auto id = std::move(ready.front());
      ready.pop_front();
      ready_set.erase(id);
      // One not live is skipped unless recovery found work for it: an evicted
      // instance had none. Recovered ones are made live from the store.
      auto& waiting = entities ? waiting_entities_ : waiting_orchestrators_;
      if (!live_.count(id) && recovered_.erase(id) == 0) {
        waiting.remove(id);
        continue;
      }
      const auto known = live_.count(id) ? live_[id].durable_inbox_end : std::nullopt;
      ++preparing;
      operate(id, 0, instance_ops::next_work{known, next_token_++, now_ns},
              [this, entities, id](instance_outcome& outcome) {
                --(entities ? preparing_entities_ : preparing_);
                if (outcome.item) {
                  (entities ? prepared_entities_ : prepared_).push_back(std::move(*outcome.item));
                } else if (!(entities ? ready_entities_set_ : ready_set_).count(id)) {
                  (entities ? waiting_entities_ : waiting_orchestrators_).remove(id);  // Nothing to do after all.
                }
              });
    }
  }
}

namespace {
core::filter_kind kind_of(bool entities) {
  return entities ? core::filter_kind::entity : core::filter_kind::orchestration;
}
}  // namespace

std::vector<core::orchestrator_work_item> partition_engine::take_work(bool entities, std::size_t count_max,
                                                                      std::int64_t now_ns,
                                                                      const core::kind_filter& accept) {
  auto& parked = entities ? parked_entities_ : parked_;
  if (!parked.empty()) unpark(parked, accept, entities);
  prepare(now_ns);
  auto& prepared = entities ? prepared_entities_ : prepared_;
  auto& waiting = entities ? waiting_entities_ : waiting_orchestrators_;
  std::vector<core::orchestrator_work_item> items;
  if (!accept) {
    while (items.size() < count_max && !prepared.empty()) {
      waiting.remove(prepared.front().instance_id);
      items.push_back(std::move(prepared.front()));
      prepared.pop_front();
    }
    return items;
  }
  // A filtered take looks at every prepared item: the ones it does not accept are
  // parked, so that they neither block the ones it does nor make the partition
  // announce work nobody takes.
  std::deque<core::orchestrator_work_item> kept;
  while (!prepared.empty()) {
    auto item = std::move(prepared.front());
    prepared.pop_front();
    if (!core::accepts(accept, item.name, item.version, kind_of(entities))) {
      park(std::move(item), parked);
    } else if (items.size() < count_max) {
      waiting.remove(item.instance_id);
      items.push_back(std::move(item));
    } else {
      kept.push_back(std::move(item));
    }
  }
  prepared = std::move(kept);
  return items;
}

void partition_engine::park(core::orchestrator_work_item item, parked_instances& parked) {
  parked[item.name][item.instance_id] = item.version;
  // A stale token (the item was given back meanwhile) leaves nothing to give back.
  operate(item.instance_id, 0, instance_ops::give_back{item.completion_token}, [](instance_outcome&) {});
}

void partition_engine::unpark(parked_instances& parked, const core::kind_filter& accept, bool entities) {
  for (auto by_name = parked.begin(); by_name != parked.end();) {
    auto& instances = by_name->second;
    for (auto it = instances.begin(); it != instances.end();) {
      if (core::accepts(accept, by_name->first, it->second, kind_of(entities))) {
        make_ready(it->first);
        it = instances.erase(it);
      } else {
        ++it;
      }
    }
    by_name = instances.empty() ? parked.erase(by_name) : std::next(by_name);
  }
}

std::vector<core::activity_work_item> partition_engine::take_activities(std::size_t count_max,
                                                                  const core::kind_filter& accept) {
  if (!parked_activities_.empty()) {
    for (auto by_name = parked_activities_.begin(); by_name != parked_activities_.end();) {
      auto& queued = by_name->second;
      std::deque<core::activity_request> still;
      for (auto& request : queued) {
        if (core::accepts(accept, request.name, request.version, core::filter_kind::activity)) {
          activity_queue_.push_front(std::move(request));
        } else {
          still.push_back(std::move(request));
        }
      }
      queued = std::move(still);
      by_name = queued.empty() ? parked_activities_.erase(by_name) : std::next(by_name);
    }
  }
  std::vector<core::activity_work_item> items;
  while (items.size() < count_max && !activity_queue_.empty()) {
    auto request = std::move(activity_queue_.front());
    activity_queue_.pop_front();
    if (!core::accepts(accept, request.name, request.version, core::filter_kind::activity)) {
      parked_activities_[request.name].push_back(std::move(request));
      continue;
    }
    auto key = std::make_tuple(request.instance_id, request.execution_id, request.task_id);
    waiting_activities_.remove(key);
    if (activity_leases_.count(key)) continue;  // Already out (queued twice on recovery).
    const auto token = next_token_++;
    activity_leases_.emplace(std::move(key), token);
    items.push_back(core::activity_work_item{std::move(request), token});
  }
  return items;
}

partition_engine::backlog_counts partition_engine::backlog() const {
  backlog_counts counts;
  counts.orchestrators = ready_.size() + prepared_.size() + preparing_;
  counts.entities = ready_entities_.size() + prepared_entities_.size() + preparing_entities_;
  counts.activities = activity_queue_.size();
  for (const auto& [name, ids] : parked_) counts.orchestrators += ids.size();
  for (const auto& [name, ids] : parked_entities_) counts.entities += ids.size();
  for (const auto& [name, queue] : parked_activities_) counts.activities += queue.size();
  counts.orchestrators_since_ns = waiting_orchestrators_.oldest_ns();
  counts.activities_since_ns = waiting_activities_.oldest_ns();
  counts.entities_since_ns = waiting_entities_.oldest_ns();
  counts.unacknowledged = outbox_.size();
  return counts;
}

std::optional<core::activity_work_item> partition_engine::next_activity_item() {
  auto items = take_activities(1);
  if (items.empty()) return std::nullopt;
  return std::move(items.front());
}

std::optional<std::int64_t> partition_engine::next_wakeup_ns() const {
  std::optional<std::int64_t> next;
  if (!wakeups_.empty()) next = wakeups_.top().due_ns;
  if (!schedules_due_.empty() && (!next || schedules_due_.begin()->first < *next)) next = schedules_due_.begin()->first;
  return next;
}

std::vector<store::outbox_entry> partition_engine::unacknowledged_outbox() const {
  std::vector<store::outbox_entry> entries;
  for (const auto& [sequence, entry] : outbox_) {
    if (sequence < durable_outbox_end_) entries.push_back(entry);
  }
  return entries;
}

void partition_engine::get_instance(const std::string& instance_id,
                                    reply<std::optional<core::instance_record>> done) {
  if (auto valid = core::validate_instance_id(instance_id); !valid) return done(valid.error());
  operate(instance_id, 0, instance_ops::read{}, [done = std::move(done)](instance_outcome& outcome) {
    if (outcome.refused) return done(std::move(*outcome.refused));
    done(std::move(outcome.record));
  });
}

void partition_engine::sub_orchestrations_of(const std::string& instance_id,
                                             std::function<void(std::vector<std::string>)> done) {
  if (!core::validate_instance_id(instance_id)) return done({});
  operate(instance_id, 0, instance_ops::children{},
          [done = std::move(done)](instance_outcome& outcome) { done(std::move(outcome.sub_orchestrations)); });
}

}  // namespace dtsd::engine
