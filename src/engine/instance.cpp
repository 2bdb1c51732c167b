#include "engine/instance.hpp"

#include <fmt/format.h>

#include "core/ids.hpp"
#include "core/overloaded.hpp"

namespace dtsd::engine {

live_instance::live_instance(std::string id, const loader& load) : id_(std::move(id)) {
  auto loaded = load(id_);
  if (!loaded) {
    load_error = loaded.error();
    return;
  }
  state = std::move(*loaded);
  if (state) durable_inbox_end = state->inbox_first_sequence + state->inbox.size();
}

store::instance_write live_instance::note(std::uint64_t batch, const core::instance_change& change) {
  static const core::orchestration_state empty;
  if (change_batch_ != batch) {
    change_ = {};
    change_batch_ = batch;
  }
  core::merge(change_, change, state ? *state : empty);
  return store::make_instance_write(id_, state ? &*state : nullptr, change_);
}

bool live_instance::idle() const {
  if (!state) return true;
  const bool has_work = !state->inbox.empty() && !core::is_terminal(state->record.status);
  return !has_work && !state->in_flight;
}

namespace {

error no_instance(const std::string& instance_id) {
  return error{errc::not_found, fmt::format("no instance with id '{}'", instance_id)};
}

/// Whether an input applies only to an instance that exists (the others may create one).
bool needs_state(const logged_input& input) {
  return !std::holds_alternative<core::start_request>(input) && !std::holds_alternative<store::outbox_entry>(input) &&
         !std::holds_alternative<store::logged::delivered>(input);
}

/// The state machine's answer to one input; `state` exists when `needs_state` says so.
expected<core::transition> apply_input(std::optional<core::orchestration_state>& instance, logged_input& input,
                                       std::int64_t now_ns, const core::payload_limits& limits) {
  return std::visit(
      overloaded{
          [&](core::start_request& e) { return core::apply_start(instance, e, now_ns, limits); },
          [&](store::logged::orchestrator_completed& e) {
            auto& state = *instance;
            e.consumed_event_count =
                static_cast<std::uint32_t>(state.in_flight ? state.in_flight->new_event_count : 0);
            e.started_at_ns = state.in_flight ? state.in_flight->started_at_ns : 0;
            e.new_execution_id = core::derive_execution_id(state.record.execution_id, "continue-as-new");
            return core::apply_completion(state, e.completion, e.new_execution_id, now_ns, limits);
          },
          [&](core::activity_result& e) { return core::apply_activity_result(*instance, e, now_ns, limits); },
          [&](core::timer_entry& e) { return core::apply_timer_fired(*instance, e, now_ns); },
          [&](store::outbox_entry& e) { return core::apply_message(instance, e.message, now_ns, limits); },
          [&](store::logged::event_raised& e) {
            return core::apply_raise_event(*instance, e.name, e.input, now_ns, limits);
          },
          [&](store::logged::terminated& e) { return core::apply_terminate(*instance, e.request, now_ns, limits); },
          [&](store::logged::suspended& e) { return core::apply_suspend(*instance, e.reason, now_ns); },
          [&](store::logged::resumed& e) { return core::apply_resume(*instance, e.reason, now_ns); },
          [&](store::logged::rewound& e) {
            auto& state = *instance;
            return core::apply_rewind(state, e.reason, {},
                                      core::derive_execution_id(state.record.execution_id, "rewind"), now_ns, limits);
          },
          [&](store::logged::delivered& e) { return core::apply_message(instance, e.message, now_ns, limits); },
          [&](store::logged::purged&) { return core::apply_purge(instance); },
          [&](store::logged::entity_deleted&) { return core::apply_entity_delete(instance); },
          [&](store::logged::opaque&) -> expected<core::transition> {
            return error{errc::invalid_argument, "an opaque log entry is not an input"};
          },
      },
      input);
}

}  // namespace

instance_outcome perform(live_instance& instance, instance_op& op, const core::payload_limits& limits) {
  instance_outcome out;
  // Everything but a read of its children needs the instance read from the store.
  auto unreadable = [&] {
    if (!instance.load_error) return false;
    out.refused = *instance.load_error;
    out.load_failed = true;
    return true;
  };
  std::visit(
      overloaded{
          [&](instance_ops::apply& apply) {
            if (unreadable()) {
            } else if (needs_state(apply.input) && !instance.state) {
              out.refused = no_instance(instance.id());
            } else if (auto applied = apply_input(instance.state, apply.input, apply.now_ns, limits); !applied) {
              out.refused = std::move(applied.error());
            } else {
              auto& done = out.applied.emplace();
              done.write = instance.note(apply.batch, applied->change);
              done.effects = std::move(applied->effects);
              done.has_state = instance.state.has_value();
              if (instance.state) done.start_due_ns = core::start_due_ns(*instance.state, apply.now_ns);
            }
            out.logged = std::move(apply.input);
          },
          [&](instance_ops::restore& restore) {
            if (unreadable()) return;
            if (!instance.state) {
              out.refused = no_instance(instance.id());
              return;
            }
            instance.state->in_flight = restore.work;
          },
          [&](instance_ops::give_back& given) {
            if (unreadable()) return;
            if (!instance.state) {
              out.refused = no_instance(instance.id());
              return;
            }
            if (auto abandoned = core::abandon(*instance.state, given.token); !abandoned) {
              out.refused = std::move(abandoned.error());
            }
          },
          [&](instance_ops::next_work& next) {
            if (next.durable_inbox_end) instance.durable_inbox_end = *next.durable_inbox_end;
            if (!instance.state || !core::is_ready(*instance.state, next.now_ns)) return;
            auto& state = *instance.state;
            const auto first = state.inbox_first_sequence;
            const auto durable = instance.durable_inbox_end > first
                                     ? std::min<std::uint64_t>(instance.durable_inbox_end - first, state.inbox.size())
                                     : 0;
            // Nothing durable to give: made ready again when its batch commits.
            if (durable == 0) return;
            if (auto dispatched = core::dispatch(state, next.token, durable, next.now_ns)) {
              out.item = std::move(*dispatched);
            }
          },
          [&](instance_ops::read&) {
            if (unreadable()) return;
            if (instance.state) out.record = instance.state->record;
          },
          [&](instance_ops::children&) {
            if (instance.state) out.sub_orchestrations = core::all_sub_orchestrations(*instance.state);
          },
      },
      op);
  out.idle = instance.idle();
  return out;
}

instance_outcome local_instances::perform(const std::string& id, instance_op& op, const live_instance::loader& load,
                                          const core::payload_limits& limits) {
  auto found = live_.find(id);
  if (found == live_.end()) {
    auto made = std::make_unique<live_instance>(id, load);
    if (made->load_error) return engine::perform(*made, op, limits);
    found = live_.emplace(id, std::move(made)).first;
  }
  return engine::perform(*found->second, op, limits);
}

}  // namespace dtsd::engine
