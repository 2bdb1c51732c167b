#include "grpc/proto_convert.hpp"

#include <fmt/format.h>

#include "core/overloaded.hpp"

namespace dtsd::grpc_api {

namespace ev = core::events;
namespace act = core::actions;
namespace pb = google::protobuf;

namespace {

constexpr std::int64_t time_seconds_min = -62'135'596'800;  // 0001-01-01T00:00:00Z
constexpr std::int64_t time_seconds_max = 253'402'300'799;  // 9999-12-31T23:59:59Z

expected<void> check_times_in(const pb::Message& message, const std::string& path) {
  const auto* descriptor = message.GetDescriptor();
  if (descriptor == pb::Timestamp::descriptor()) {
    const auto& time = static_cast<const pb::Timestamp&>(message);
    if (time.seconds() < time_seconds_min || time.seconds() > time_seconds_max || time.nanos() < 0 ||
        time.nanos() > 999'999'999) {
      return error{errc::invalid_argument,
                   fmt::format("{} is not a valid time (seconds {}, nanos {}): times run from year 1 to 9999, "
                               "nanos from 0 to 999999999",
                               path, time.seconds(), time.nanos())};
    }
    return {};
  }
  const auto* reflection = message.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const auto* field : fields) {
    if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    const auto where = path + "." + field->json_name();
    if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
        if (auto valid = check_times_in(reflection->GetRepeatedMessage(message, field, i), where); !valid) return valid;
      }
    } else if (auto valid = check_times_in(reflection->GetMessage(message, field), where); !valid) {
      return valid;
    }
  }
  return {};
}

}  // namespace

expected<void> check_times(const pb::Message& message) {
  return check_times_in(message, message.GetDescriptor()->name());
}

std::int64_t to_ns(const pb::Timestamp& time) {
  // Nanoseconds in an int64 span the years 1678-2262; protobuf times span 1-9999.
  // Times outside saturate (a timer in 9999 never fires, one in year 1000 fires at
  // once) instead of overflowing.
  constexpr std::int64_t seconds_max = INT64_MAX / 1'000'000'000 - 1;
  if (time.seconds() > seconds_max) return INT64_MAX;
  if (time.seconds() < -seconds_max) return INT64_MIN + 1;
  return time.seconds() * 1'000'000'000 + time.nanos();
}

void set_time(pb::Timestamp* time, std::int64_t ns) {
  auto seconds = ns / 1'000'000'000;
  auto nanos = ns % 1'000'000'000;
  if (nanos < 0) {
    nanos += 1'000'000'000;
    seconds -= 1;
  }
  time->set_seconds(seconds);
  time->set_nanos(static_cast<std::int32_t>(nanos));
}

core::payload read_payload(const pb::StringValue& value, bool present) {
  return present ? core::payload(value.value()) : core::payload();
}

namespace {

/// Reads an optional StringValue sub-message `field` of `message`.
#define DTSD_PAYLOAD(message, field) read_payload((message).field(), (message).has_##field())
/// Sets an optional StringValue sub-message `field` from a core payload.
#define DTSD_SET_PAYLOAD(out, field, value)                     \
  do {                                                          \
    if (const auto& dtsd_value = (value)) (out)->mutable_##field()->set_value(*dtsd_value); \
  } while (0)

std::string optional_string(const pb::StringValue& value, bool present) {
  return present ? value.value() : std::string();
}

core::tag_map read_tags(const pb::Map<std::string, std::string>& tags) {
  return core::tag_map(tags.begin(), tags.end());
}
void write_tags(pb::Map<std::string, std::string>* out, const core::tag_map& tags) {
  for (const auto& [key, value] : tags) (*out)[key] = value;
}

core::orchestration_instance read(const OrchestrationInstance& instance) {
  return {instance.instance_id(), optional_string(instance.execution_id(), instance.has_execution_id())};
}
void write(OrchestrationInstance* out, const core::orchestration_instance& instance) {
  out->set_instance_id(instance.instance_id);
  if (!instance.execution_id.empty()) out->mutable_execution_id()->set_value(instance.execution_id);
}

core::parent_instance read(const ParentInstanceInfo& parent) {
  return {parent.task_scheduled_id(), optional_string(parent.name(), parent.has_name()),
          DTSD_PAYLOAD(parent, version), read(parent.orchestration_instance())};
}
void write(ParentInstanceInfo* out, const core::parent_instance& parent) {
  out->set_task_scheduled_id(parent.task_scheduled_id);
  out->mutable_name()->set_value(parent.name);
  DTSD_SET_PAYLOAD(out, version, parent.version);
  write(out->mutable_orchestration_instance(), parent.instance);
}

ev::entity_operation_signaled read(const EntityOperationSignaledEvent& e) {
  return {e.request_id(), e.operation(), e.has_scheduled_time() ? to_ns(e.scheduled_time()) : 0,
          DTSD_PAYLOAD(e, input), optional_string(e.target_instance_id(), e.has_target_instance_id())};
}
void write(EntityOperationSignaledEvent* out, const ev::entity_operation_signaled& e) {
  out->set_request_id(e.request_id);
  out->set_operation(e.operation);
  if (e.scheduled_time_ns != 0) set_time(out->mutable_scheduled_time(), e.scheduled_time_ns);
  DTSD_SET_PAYLOAD(out, input, e.input);
  if (!e.target_instance_id.empty()) out->mutable_target_instance_id()->set_value(e.target_instance_id);
}

ev::entity_operation_called read(const EntityOperationCalledEvent& e) {
  return {e.request_id(),
          e.operation(),
          e.has_scheduled_time() ? to_ns(e.scheduled_time()) : 0,
          DTSD_PAYLOAD(e, input),
          optional_string(e.parent_instance_id(), e.has_parent_instance_id()),
          optional_string(e.parent_execution_id(), e.has_parent_execution_id()),
          optional_string(e.target_instance_id(), e.has_target_instance_id())};
}
void write(EntityOperationCalledEvent* out, const ev::entity_operation_called& e) {
  out->set_request_id(e.request_id);
  out->set_operation(e.operation);
  if (e.scheduled_time_ns != 0) set_time(out->mutable_scheduled_time(), e.scheduled_time_ns);
  DTSD_SET_PAYLOAD(out, input, e.input);
  if (!e.parent_instance_id.empty()) out->mutable_parent_instance_id()->set_value(e.parent_instance_id);
  if (!e.parent_execution_id.empty()) out->mutable_parent_execution_id()->set_value(e.parent_execution_id);
  if (!e.target_instance_id.empty()) out->mutable_target_instance_id()->set_value(e.target_instance_id);
}

ev::entity_lock_requested read(const EntityLockRequestedEvent& e) {
  return {e.critical_section_id(), {e.lock_set().begin(), e.lock_set().end()}, e.position(),
          optional_string(e.parent_instance_id(), e.has_parent_instance_id())};
}
void write(EntityLockRequestedEvent* out, const ev::entity_lock_requested& e) {
  out->set_critical_section_id(e.critical_section_id);
  for (const auto& lock : e.lock_set) out->add_lock_set(lock);
  out->set_position(e.position);
  if (!e.parent_instance_id.empty()) out->mutable_parent_instance_id()->set_value(e.parent_instance_id);
}

ev::entity_unlock_sent read(const EntityUnlockSentEvent& e) {
  return {e.critical_section_id(), optional_string(e.parent_instance_id(), e.has_parent_instance_id()),
          optional_string(e.target_instance_id(), e.has_target_instance_id())};
}
void write(EntityUnlockSentEvent* out, const ev::entity_unlock_sent& e) {
  out->set_critical_section_id(e.critical_section_id);
  if (!e.parent_instance_id.empty()) out->mutable_parent_instance_id()->set_value(e.parent_instance_id);
  if (!e.target_instance_id.empty()) out->mutable_target_instance_id()->set_value(e.target_instance_id);
}

error invalid(std::string message) { return error{errc::invalid_argument, std::move(message)}; }

}  // namespace

expected<core::runtime_status> read(OrchestrationStatus status) {
  const auto value = static_cast<int>(status);
  if (value < 0 || value >= core::runtime_status_count) {
    return invalid(fmt::format("orchestration status {} is not one the protocol defines", value));
  }
  return static_cast<core::runtime_status>(value);
}

OrchestrationStatus to_proto(core::runtime_status status) {
  return static_cast<OrchestrationStatus>(static_cast<int>(status));
}

core::failure_details read(const TaskFailureDetails& failure) {
  core::failure_details details;
  details.error_type = failure.error_type();
  details.error_message = failure.error_message();
  details.stack_trace = DTSD_PAYLOAD(failure, stack_trace);
  details.non_retriable = failure.is_non_retriable();
  if (failure.has_inner_failure()) {
    details.inner_failure = std::make_shared<const core::failure_details>(read(failure.inner_failure()));
  }
  return details;
}

void write(TaskFailureDetails* out, const core::failure_details& failure) {
  out->set_error_type(failure.error_type);
  out->set_error_message(failure.error_message);
  DTSD_SET_PAYLOAD(out, stack_trace, failure.stack_trace);
  out->set_is_non_retriable(failure.non_retriable);
  if (failure.inner_failure) write(out->mutable_inner_failure(), *failure.inner_failure);
}

expected<core::history_event> read(const HistoryEvent& event) {
  core::history_event out;
  out.event_id = event.event_id();
  out.timestamp_ns = event.has_timestamp() ? to_ns(event.timestamp()) : 0;
  switch (event.event_type_case()) {
    case HistoryEvent::kExecutionStarted: {
      const auto& e = event.execution_started();
      ev::execution_started body;
      body.name = e.name();
      body.version = DTSD_PAYLOAD(e, version);
      body.input = DTSD_PAYLOAD(e, input);
      body.instance = read(e.orchestration_instance());
      if (e.has_parent_instance()) body.parent = read(e.parent_instance());
      body.scheduled_start_ns = e.has_scheduled_start_timestamp() ? to_ns(e.scheduled_start_timestamp()) : 0;
      body.tags = read_tags(e.tags());
      out.body = std::move(body);
      break;
    }
    case HistoryEvent::kExecutionCompleted: {
      const auto& e = event.execution_completed();
      auto status = read(e.orchestration_status());
      if (!status) return status.error();
      std::optional<core::failure_details> failure;
      if (e.has_failure_details()) failure = read(e.failure_details());
      out.body = ev::execution_completed{*status, DTSD_PAYLOAD(e, result), std::move(failure)};
      break;
    }
    case HistoryEvent::kExecutionTerminated:
      out.body = ev::execution_terminated{DTSD_PAYLOAD(event.execution_terminated(), input),
                                          event.execution_terminated().recurse()};
      break;
    case HistoryEvent::kTaskScheduled: {
      const auto& e = event.task_scheduled();
      out.body = ev::task_scheduled{e.name(), DTSD_PAYLOAD(e, version), DTSD_PAYLOAD(e, input), read_tags(e.tags())};
      break;
    }
    case HistoryEvent::kTaskCompleted:
      out.body = ev::task_completed{event.task_completed().task_scheduled_id(),
                                    DTSD_PAYLOAD(event.task_completed(), result)};
      break;
    case HistoryEvent::kTaskFailed:
      out.body = ev::task_failed{event.task_failed().task_scheduled_id(),
                                 read(event.task_failed().failure_details())};
      break;
    case HistoryEvent::kSubOrchestrationInstanceCreated: {
      const auto& e = event.sub_orchestration_instance_created();
      out.body = ev::sub_orchestration_created{e.instance_id(), e.name(), DTSD_PAYLOAD(e, version),
                                               DTSD_PAYLOAD(e, input), read_tags(e.tags())};
      break;
    }
    case HistoryEvent::kSubOrchestrationInstanceCompleted: {
      const auto& e = event.sub_orchestration_instance_completed();
      out.body = ev::sub_orchestration_completed{e.task_scheduled_id(), DTSD_PAYLOAD(e, result)};
      break;
    }
    case HistoryEvent::kSubOrchestrationInstanceFailed: {
      const auto& e = event.sub_orchestration_instance_failed();
      out.body = ev::sub_orchestration_failed{e.task_scheduled_id(), read(e.failure_details())};
      break;
    }
    case HistoryEvent::kTimerCreated:
      out.body = ev::timer_created{to_ns(event.timer_created().fire_at())};
      break;
    case HistoryEvent::kTimerFired:
      out.body = ev::timer_fired{to_ns(event.timer_fired().fire_at()), event.timer_fired().timer_id()};
      break;
    case HistoryEvent::kOrchestratorStarted:
      out.body = ev::orchestrator_started{};
      break;
    case HistoryEvent::kOrchestratorCompleted:
      out.body = ev::orchestrator_completed{};
      break;
    case HistoryEvent::kEventSent: {
      const auto& e = event.event_sent();
      out.body = ev::event_sent{e.instance_id(), e.name(), DTSD_PAYLOAD(e, input)};
      break;
    }
    case HistoryEvent::kEventRaised:
      out.body = ev::event_raised{event.event_raised().name(), DTSD_PAYLOAD(event.event_raised(), input)};
      break;
    case HistoryEvent::kGenericEvent:
      out.body = ev::generic_event{DTSD_PAYLOAD(event.generic_event(), data)};
      break;
    case HistoryEvent::kHistoryState:
      return invalid("history state events are not accepted from clients");
    case HistoryEvent::kContinueAsNew:
      out.body = ev::continue_as_new{DTSD_PAYLOAD(event.continue_as_new(), input)};
      break;
    case HistoryEvent::kExecutionSuspended:
      out.body = ev::execution_suspended{DTSD_PAYLOAD(event.execution_suspended(), input)};
      break;
    case HistoryEvent::kExecutionResumed:
      out.body = ev::execution_resumed{DTSD_PAYLOAD(event.execution_resumed(), input)};
      break;
    case HistoryEvent::kEntityOperationSignaled:
      out.body = read(event.entity_operation_signaled());
      break;
    case HistoryEvent::kEntityOperationCalled:
      out.body = read(event.entity_operation_called());
      break;
    case HistoryEvent::kEntityOperationCompleted:
      out.body = ev::entity_operation_completed{event.entity_operation_completed().request_id(),
                                                DTSD_PAYLOAD(event.entity_operation_completed(), output)};
      break;
    case HistoryEvent::kEntityOperationFailed:
      out.body = ev::entity_operation_failed{event.entity_operation_failed().request_id(),
                                             read(event.entity_operation_failed().failure_details())};
      break;
    case HistoryEvent::kEntityLockRequested:
      out.body = read(event.entity_lock_requested());
      break;
    case HistoryEvent::kEntityLockGranted:
      out.body = ev::entity_lock_granted{event.entity_lock_granted().critical_section_id()};
      break;
    case HistoryEvent::kEntityUnlockSent:
      out.body = read(event.entity_unlock_sent());
      break;
    case HistoryEvent::kExecutionRewound:
      out.body = ev::execution_rewound{
          DTSD_PAYLOAD(event.execution_rewound(), reason),
          optional_string(event.execution_rewound().parent_execution_id(),
                          event.execution_rewound().has_parent_execution_id())};
      break;
    case HistoryEvent::EVENT_TYPE_NOT_SET:
      return invalid(fmt::format("history event {} has no event type", event.event_id()));
  }
  return out;
}

void write(HistoryEvent* out, const core::history_event& event) {
  out->set_event_id(event.event_id);
  set_time(out->mutable_timestamp(), event.timestamp_ns);
  std::visit(
      overloaded{
          [&](const ev::execution_started& e) {
            auto* m = out->mutable_execution_started();
            m->set_name(e.name);
            DTSD_SET_PAYLOAD(m, version, e.version);
            DTSD_SET_PAYLOAD(m, input, e.input);
            write(m->mutable_orchestration_instance(), e.instance);
            if (e.parent) write(m->mutable_parent_instance(), *e.parent);
            if (e.scheduled_start_ns != 0) set_time(m->mutable_scheduled_start_timestamp(), e.scheduled_start_ns);
            write_tags(m->mutable_tags(), e.tags);
          },
          [&](const ev::execution_completed& e) {
            auto* m = out->mutable_execution_completed();
            m->set_orchestration_status(to_proto(e.status));
            DTSD_SET_PAYLOAD(m, result, e.result);
            if (e.failure) write(m->mutable_failure_details(), *e.failure);
          },
          [&](const ev::execution_terminated& e) {
            auto* m = out->mutable_execution_terminated();
            DTSD_SET_PAYLOAD(m, input, e.input);
            m->set_recurse(e.recurse);
          },
          [&](const ev::task_scheduled& e) {
            auto* m = out->mutable_task_scheduled();
            m->set_name(e.name);
            DTSD_SET_PAYLOAD(m, version, e.version);
            DTSD_SET_PAYLOAD(m, input, e.input);
            write_tags(m->mutable_tags(), e.tags);
          },
          [&](const ev::task_completed& e) {
            auto* m = out->mutable_task_completed();
            m->set_task_scheduled_id(e.task_scheduled_id);
            DTSD_SET_PAYLOAD(m, result, e.result);
          },
          [&](const ev::task_failed& e) {
            auto* m = out->mutable_task_failed();
            m->set_task_scheduled_id(e.task_scheduled_id);
            write(m->mutable_failure_details(), e.failure);
          },
          [&](const ev::sub_orchestration_created& e) {
            auto* m = out->mutable_sub_orchestration_instance_created();
            m->set_instance_id(e.instance_id);
            m->set_name(e.name);
            DTSD_SET_PAYLOAD(m, version, e.version);
            DTSD_SET_PAYLOAD(m, input, e.input);
            m->mutable_tags()->insert(e.tags.begin(), e.tags.end());
          },
          [&](const ev::sub_orchestration_completed& e) {
            auto* m = out->mutable_sub_orchestration_instance_completed();
            m->set_task_scheduled_id(e.task_scheduled_id);
            DTSD_SET_PAYLOAD(m, result, e.result);
          },
          [&](const ev::sub_orchestration_failed& e) {
            auto* m = out->mutable_sub_orchestration_instance_failed();
            m->set_task_scheduled_id(e.task_scheduled_id);
            write(m->mutable_failure_details(), e.failure);
          },
          [&](const ev::timer_created& e) { set_time(out->mutable_timer_created()->mutable_fire_at(), e.fire_at_ns); },
          [&](const ev::timer_fired& e) {
            auto* m = out->mutable_timer_fired();
            set_time(m->mutable_fire_at(), e.fire_at_ns);
            m->set_timer_id(e.timer_id);
          },
          [&](const ev::orchestrator_started&) { out->mutable_orchestrator_started(); },
          [&](const ev::orchestrator_completed&) { out->mutable_orchestrator_completed(); },
          [&](const ev::event_sent& e) {
            auto* m = out->mutable_event_sent();
            m->set_instance_id(e.instance_id);
            m->set_name(e.name);
            DTSD_SET_PAYLOAD(m, input, e.input);
          },
          [&](const ev::event_raised& e) {
            auto* m = out->mutable_event_raised();
            m->set_name(e.name);
            DTSD_SET_PAYLOAD(m, input, e.input);
          },
          [&](const ev::generic_event& e) { DTSD_SET_PAYLOAD(out->mutable_generic_event(), data, e.data); },
          [&](const core::history_state& e) {
            auto* m = out->mutable_history_state();
            if (e.state) write(m->mutable_orchestration_state(), *e.state, true);
          },
          [&](const ev::continue_as_new& e) { DTSD_SET_PAYLOAD(out->mutable_continue_as_new(), input, e.input); },
          [&](const ev::execution_suspended& e) {
            DTSD_SET_PAYLOAD(out->mutable_execution_suspended(), input, e.input);
          },
          [&](const ev::execution_resumed& e) { DTSD_SET_PAYLOAD(out->mutable_execution_resumed(), input, e.input); },
          [&](const ev::execution_rewound& e) {
            auto* m = out->mutable_execution_rewound();
            DTSD_SET_PAYLOAD(m, reason, e.reason);
            if (!e.parent_execution_id.empty()) m->mutable_parent_execution_id()->set_value(e.parent_execution_id);
          },
          [&](const ev::entity_operation_signaled& e) { write(out->mutable_entity_operation_signaled(), e); },
          [&](const ev::entity_operation_called& e) { write(out->mutable_entity_operation_called(), e); },
          [&](const ev::entity_operation_completed& e) {
            auto* m = out->mutable_entity_operation_completed();
            m->set_request_id(e.request_id);
            DTSD_SET_PAYLOAD(m, output, e.output);
          },
          [&](const ev::entity_operation_failed& e) {
            auto* m = out->mutable_entity_operation_failed();
            m->set_request_id(e.request_id);
            write(m->mutable_failure_details(), e.failure);
          },
          [&](const ev::entity_lock_requested& e) { write(out->mutable_entity_lock_requested(), e); },
          [&](const ev::entity_lock_granted& e) {
            out->mutable_entity_lock_granted()->set_critical_section_id(e.critical_section_id);
          },
          [&](const ev::entity_unlock_sent& e) { write(out->mutable_entity_unlock_sent(), e); },
      },
      event.body);
}

void write(OrchestrationState* out, const core::instance_record& record, bool with_payloads) {
  out->set_instance_id(record.instance_id);
  out->set_name(record.name);
  DTSD_SET_PAYLOAD(out, version, record.version);
  out->set_orchestration_status(to_proto(record.status));
  if (record.scheduled_start_ns != 0) set_time(out->mutable_scheduled_start_timestamp(), record.scheduled_start_ns);
  set_time(out->mutable_created_timestamp(), record.created_at_ns);
  set_time(out->mutable_last_updated_timestamp(), record.last_updated_at_ns);
  if (with_payloads) {
    DTSD_SET_PAYLOAD(out, input, record.input);
    DTSD_SET_PAYLOAD(out, output, record.output);
    DTSD_SET_PAYLOAD(out, custom_status, record.custom_status);
  }
  if (record.failure) write(out->mutable_failure_details(), *record.failure);
  if (!record.execution_id.empty()) out->mutable_execution_id()->set_value(record.execution_id);
  if (record.completed_at_ns != 0) set_time(out->mutable_completed_timestamp(), record.completed_at_ns);
  if (record.parent) out->mutable_parent_instance_id()->set_value(record.parent->instance.instance_id);
  write_tags(out->mutable_tags(), record.tags);
}

expected<core::orchestrator_action> read(const OrchestratorAction& action) {
  core::orchestrator_action out;
  out.id = action.id();
  switch (action.orchestrator_action_type_case()) {
    case OrchestratorAction::kScheduleTask: {
      const auto& a = action.schedule_task();
      out.body = act::schedule_task{a.name(), DTSD_PAYLOAD(a, version), DTSD_PAYLOAD(a, input), read_tags(a.tags())};
      break;
    }
    case OrchestratorAction::kCreateSubOrchestration: {
      const auto& a = action.create_sub_orchestration();
      out.body = act::create_sub_orchestration{a.instance_id(), a.name(), DTSD_PAYLOAD(a, version),
                                               DTSD_PAYLOAD(a, input), read_tags(a.tags())};
      break;
    }
    case OrchestratorAction::kCreateTimer:
      out.body = act::create_timer{to_ns(action.create_timer().fire_at())};
      break;
    case OrchestratorAction::kSendEvent: {
      const auto& a = action.send_event();
      out.body = act::send_event{read(a.instance()), a.name(), DTSD_PAYLOAD(a, data)};
      break;
    }
    case OrchestratorAction::kCompleteOrchestration: {
      const auto& a = action.complete_orchestration();
      act::complete_orchestration body;
      auto status = read(a.orchestration_status());
      if (!status) return status.error();
      body.status = *status;
      body.result = DTSD_PAYLOAD(a, result);
      body.details = DTSD_PAYLOAD(a, details);
      body.new_version = DTSD_PAYLOAD(a, new_version);
      for (const auto& carried : a.carryover_events()) {
        auto event = read(carried);
        if (!event) return event.error();
        body.carryover_events.push_back(std::move(*event));
      }
      if (a.has_failure_details()) body.failure = read(a.failure_details());
      body.tags = read_tags(a.tags());
      out.body = std::move(body);
      break;
    }
    case OrchestratorAction::kTerminateOrchestration: {
      const auto& a = action.terminate_orchestration();
      out.body = act::terminate_orchestration{a.instance_id(), DTSD_PAYLOAD(a, reason), a.recurse()};
      break;
    }
    case OrchestratorAction::kSendEntityMessage: {
      const auto& a = action.send_entity_message();
      act::send_entity_message body;
      switch (a.entity_message_type_case()) {
        case SendEntityMessageAction::kEntityOperationSignaled:
          body.message = read(a.entity_operation_signaled());
          break;
        case SendEntityMessageAction::kEntityOperationCalled:
          body.message = read(a.entity_operation_called());
          break;
        case SendEntityMessageAction::kEntityLockRequested:
          body.message = read(a.entity_lock_requested());
          break;
        case SendEntityMessageAction::kEntityUnlockSent:
          body.message = read(a.entity_unlock_sent());
          break;
        case SendEntityMessageAction::ENTITY_MESSAGE_TYPE_NOT_SET:
          return invalid(fmt::format("action {}: entity message with no message", action.id()));
      }
      out.body = std::move(body);
      break;
    }
    case OrchestratorAction::kRewindOrchestration:
      return error{errc::unimplemented,
                   fmt::format("action {}: RewindOrchestrationAction (a rewind carried out by the worker) is not "
                               "supported; rewind with RewindInstance",
                               action.id())};
    case OrchestratorAction::ORCHESTRATOR_ACTION_TYPE_NOT_SET:
      return invalid(fmt::format("action {} has no action type", action.id()));
  }
  return out;
}

expected<core::orchestrator_completion> read(const OrchestratorResponse& response) {
  if (response.is_partial() || response.has_chunk_index()) {
    return error{errc::unimplemented,
                 "chunked completions (OrchestratorResponse.isPartial, chunkIndex) are not supported; send every "
                 "action in one response"};
  }
  core::orchestrator_completion out;
  out.instance_id = response.instance_id();
  out.custom_status = DTSD_PAYLOAD(response, custom_status);
  out.actions.reserve(static_cast<std::size_t>(response.actions_size()));
  for (const auto& action : response.actions()) {
    auto read_action = read(action);
    if (!read_action) return read_action.error();
    out.actions.push_back(std::move(*read_action));
  }
  return out;
}

void write(OrchestratorRequest* out, const core::orchestrator_work_item& item) {
  out->set_instance_id(item.instance_id);
  out->mutable_execution_id()->set_value(item.execution_id);
  out->mutable_past_events()->Reserve(static_cast<int>(item.past_events.size()));
  for (const auto& event : item.past_events) write(out->add_past_events(), event);
  for (const auto& event : item.new_events) write(out->add_new_events(), event);
}

void write(EntityRequest* out, const core::orchestrator_work_item& item) {
  out->set_instance_id(item.instance_id);
  out->set_execution_id(item.execution_id);
  DTSD_SET_PAYLOAD(out, entity_state, item.entity_state);
  for (const auto& event : item.new_events) write(out->add_operation_requests(), event);
}

expected<core::entity_batch_result> read(const EntityBatchResult& result) {
  core::entity_batch_result out;
  for (const auto& each : result.results()) {
    switch (each.result_type_case()) {
      case OperationResult::kSuccess:
        out.results.emplace_back(DTSD_PAYLOAD(each.success(), result));
        break;
      case OperationResult::kFailure:
        out.results.emplace_back(read(each.failure().failure_details()));
        break;
      case OperationResult::RESULT_TYPE_NOT_SET:
        return invalid(fmt::format("entity operation result {} is neither a success nor a failure",
                                   out.results.size()));
    }
  }
  for (const auto& action : result.actions()) {
    switch (action.operation_action_type_case()) {
      case OperationAction::kSendSignal: {
        const auto& a = action.send_signal();
        out.actions.emplace_back(core::entity_actions::signal{
            a.instance_id(), a.name(), DTSD_PAYLOAD(a, input), a.has_scheduled_time() ? to_ns(a.scheduled_time()) : 0});
        break;
      }
      case OperationAction::kStartNewOrchestration: {
        const auto& a = action.start_new_orchestration();
        out.actions.emplace_back(core::entity_actions::start_orchestration{
            a.instance_id(), a.name(), DTSD_PAYLOAD(a, version), DTSD_PAYLOAD(a, input),
            a.has_scheduled_time() ? to_ns(a.scheduled_time()) : 0});
        break;
      }
      case OperationAction::OPERATION_ACTION_TYPE_NOT_SET:
        return invalid(fmt::format("entity action {} has no action type", action.id()));
    }
  }
  out.state = DTSD_PAYLOAD(result, entity_state);
  if (result.has_failure_details()) out.failure = read(result.failure_details());
  return out;
}

void write(EntityMetadata* out, const core::instance_record& record, bool with_state) {
  out->set_instance_id(record.instance_id);
  set_time(out->mutable_last_modified_time(), record.last_updated_at_ns);
  out->set_backlog_queue_size(static_cast<std::int32_t>(record.entity_deferred.size()));
  if (!record.entity_locked_by.empty()) out->mutable_locked_by()->set_value(record.entity_locked_by);
  if (with_state) DTSD_SET_PAYLOAD(out, serialized_state, record.entity_state);
}

void write(ActivityRequest* out, const core::activity_request& request) {
  out->set_name(request.name);
  DTSD_SET_PAYLOAD(out, version, request.version);
  DTSD_SET_PAYLOAD(out, input, request.input);
  write(out->mutable_orchestration_instance(), {request.instance_id, request.execution_id});
  out->set_task_id(request.task_id);
  write_tags(out->mutable_tags(), request.tags);
}

namespace {

template <class Filters>
core::kind_filter read_names(const Filters& entries) {
  std::vector<core::name_filter> names;
  names.reserve(static_cast<std::size_t>(entries.size()));
  for (const auto& entry : entries) {
    core::name_filter name{entry.name(), {}};
    if constexpr (requires { entry.versions(); }) name.versions.assign(entry.versions().begin(), entry.versions().end());
    names.push_back(std::move(name));
  }
  return names;
}

}  // namespace

core::work_filters read(const WorkItemFilters& filters) {
  if (filters.orchestrations_size() == 0 && filters.activities_size() == 0 && filters.entities_size() == 0) return {};
  return {read_names(filters.orchestrations()), read_names(filters.activities()), read_names(filters.entities())};
}

}  // namespace dtsd::grpc_api
