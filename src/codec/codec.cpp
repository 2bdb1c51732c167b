#include "codec/codec.hpp"
#include "codec/wire.hpp"

#include <cstring>

#include <capnp/message.h>
#include <capnp/serialize-packed.h>
#include <capnp/serialize.h>
#include <kj/io.h>
#include <fmt/format.h>

#include "log.capnp.h"
#include "core/overloaded.hpp"
#include "model.capnp.h"

namespace dtsd::store {
namespace {

namespace s = dtsd::schema;
namespace ev = core::events;
namespace act = core::actions;


capnp::Text::Reader text(const std::string& value) { return {value.data(), value.size()}; }
std::string str(capnp::Text::Reader value) { return {value.cStr(), value.size()}; }

// Generated setters and getters differ only in the field name; these keep the
// null-versus-empty rule of payloads in one place.
#define DTSD_PUT_PAYLOAD(builder, Field, value) \
  do {                                          \
    if (value) (builder).set##Field(text(*(value))); \
  } while (false)
#define DTSD_GET_PAYLOAD(reader, Field) \
  ((reader).has##Field() ? core::payload(str((reader).get##Field())) : core::payload())

s::OrchestrationStatus to_schema(core::runtime_status status) {
  return static_cast<s::OrchestrationStatus>(status);
}
core::runtime_status from_schema(s::OrchestrationStatus status) {
  auto value = static_cast<std::uint16_t>(status);
  if (value >= core::runtime_status_count) throw KJ_EXCEPTION(FAILED, "unknown status", value);
  return static_cast<core::runtime_status>(value);
}

// ---------------------------------------------------------------------------
// Small shared structs

void fill(s::HistoryEvent::Builder b, const core::history_event& event);
core::history_event from(s::HistoryEvent::Reader r);

void fill(s::FailureDetails::Builder b, const core::failure_details& f) {
  b.setErrorType(text(f.error_type));
  b.setErrorMessage(text(f.error_message));
  DTSD_PUT_PAYLOAD(b, StackTrace, f.stack_trace);
  if (f.inner_failure) fill(b.initInnerFailure(), *f.inner_failure);
  b.setIsNonRetriable(f.non_retriable);
}
core::failure_details from(s::FailureDetails::Reader r) {
  core::failure_details f{str(r.getErrorType()), str(r.getErrorMessage()),
                          DTSD_GET_PAYLOAD(r, StackTrace), nullptr, r.getIsNonRetriable()};
  if (r.hasInnerFailure()) {
    f.inner_failure = std::make_shared<core::failure_details>(from(r.getInnerFailure()));
  }
  return f;
}

void fill(capnp::List<s::Tag>::Builder b, const core::tag_map& tags) {
  unsigned i = 0;
  for (const auto& [key, value] : tags) {
    b[i].setKey(text(key));
    b[i].setValue(text(value));
    ++i;
  }
}
core::tag_map from(capnp::List<s::Tag>::Reader r) {
  core::tag_map tags;
  for (auto tag : r) tags.emplace(str(tag.getKey()), str(tag.getValue()));
  return tags;
}

void fill(s::OrchestrationInstance::Builder b, const core::orchestration_instance& i) {
  b.setInstanceId(text(i.instance_id));
  b.setExecutionId(text(i.execution_id));
}
core::orchestration_instance from(s::OrchestrationInstance::Reader r) {
  return {str(r.getInstanceId()), str(r.getExecutionId())};
}

void fill(s::ParentInstanceInfo::Builder b, const core::parent_instance& p) {
  b.setTaskScheduledId(p.task_scheduled_id);
  b.setName(text(p.name));
  DTSD_PUT_PAYLOAD(b, Version, p.version);
  fill(b.initOrchestrationInstance(), p.instance);
}
core::parent_instance from(s::ParentInstanceInfo::Reader r) {
  return {r.getTaskScheduledId(), str(r.getName()), DTSD_GET_PAYLOAD(r, Version),
          from(r.getOrchestrationInstance())};
}

void fill(s::InstanceRecord::Builder b, const core::instance_record& x) {
  b.setInstanceId(text(x.instance_id));
  b.setExecutionId(text(x.execution_id));
  b.setName(text(x.name));
  DTSD_PUT_PAYLOAD(b, Version, x.version);
  b.setRuntimeStatus(to_schema(x.status));
  DTSD_PUT_PAYLOAD(b, Input, x.input);
  DTSD_PUT_PAYLOAD(b, Output, x.output);
  DTSD_PUT_PAYLOAD(b, CustomStatus, x.custom_status);
  b.setCreatedAtNs(x.created_at_ns);
  b.setLastUpdatedAtNs(x.last_updated_at_ns);
  b.setCompletedAtNs(x.completed_at_ns);
  b.setScheduledStartNs(x.scheduled_start_ns);
  if (x.parent) fill(b.initParentInstance(), *x.parent);
  if (!x.tags.empty()) fill(b.initTags(static_cast<unsigned>(x.tags.size())), x.tags);
  if (x.failure) fill(b.initFailureDetails(), *x.failure);
  DTSD_PUT_PAYLOAD(b, EntityState, x.entity_state);
  if (!x.entity_locked_by.empty()) b.setEntityLockedBy(text(x.entity_locked_by));
  if (!x.entity_lock_id.empty()) b.setEntityLockId(text(x.entity_lock_id));
  if (!x.entity_deferred.empty()) {
    auto list = b.initEntityDeferred(static_cast<unsigned>(x.entity_deferred.size()));
    for (unsigned i = 0; i < x.entity_deferred.size(); ++i) fill(list[i], x.entity_deferred[i]);
  }
}
core::instance_record from(s::InstanceRecord::Reader r) {
  core::instance_record x;
  x.instance_id = str(r.getInstanceId());
  x.execution_id = str(r.getExecutionId());
  x.name = str(r.getName());
  x.version = DTSD_GET_PAYLOAD(r, Version);
  x.status = from_schema(r.getRuntimeStatus());
  x.input = DTSD_GET_PAYLOAD(r, Input);
  x.output = DTSD_GET_PAYLOAD(r, Output);
  x.custom_status = DTSD_GET_PAYLOAD(r, CustomStatus);
  x.created_at_ns = r.getCreatedAtNs();
  x.last_updated_at_ns = r.getLastUpdatedAtNs();
  x.completed_at_ns = r.getCompletedAtNs();
  x.scheduled_start_ns = r.getScheduledStartNs();
  if (r.hasParentInstance()) x.parent = from(r.getParentInstance());
  x.tags = from(r.getTags());
  if (r.hasFailureDetails()) x.failure = from(r.getFailureDetails());
  x.entity_state = DTSD_GET_PAYLOAD(r, EntityState);
  x.entity_locked_by = str(r.getEntityLockedBy());
  x.entity_lock_id = str(r.getEntityLockId());
  for (auto event : r.getEntityDeferred()) x.entity_deferred.push_back(from(event));
  return x;
}

// ---------------------------------------------------------------------------
// History event bodies

void fill(s::ExecutionStartedEvent::Builder b, const ev::execution_started& e) {
  b.setName(text(e.name));
  DTSD_PUT_PAYLOAD(b, Version, e.version);
  DTSD_PUT_PAYLOAD(b, Input, e.input);
  fill(b.initOrchestrationInstance(), e.instance);
  if (e.parent) fill(b.initParentInstance(), *e.parent);
  b.setScheduledStartNs(e.scheduled_start_ns);
  if (!e.tags.empty()) fill(b.initTags(static_cast<unsigned>(e.tags.size())), e.tags);
}
ev::execution_started from(s::ExecutionStartedEvent::Reader r) {
  ev::execution_started e{str(r.getName()), DTSD_GET_PAYLOAD(r, Version),
                          DTSD_GET_PAYLOAD(r, Input), from(r.getOrchestrationInstance()),
                          std::nullopt, r.getScheduledStartNs(), from(r.getTags())};
  if (r.hasParentInstance()) e.parent = from(r.getParentInstance());
  return e;
}

void fill(s::ExecutionCompletedEvent::Builder b, const ev::execution_completed& e) {
  b.setOrchestrationStatus(to_schema(e.status));
  DTSD_PUT_PAYLOAD(b, Result, e.result);
  if (e.failure) fill(b.initFailureDetails(), *e.failure);
}
ev::execution_completed from(s::ExecutionCompletedEvent::Reader r) {
  ev::execution_completed e{from_schema(r.getOrchestrationStatus()), DTSD_GET_PAYLOAD(r, Result),
                            std::nullopt};
  if (r.hasFailureDetails()) e.failure = from(r.getFailureDetails());
  return e;
}

void fill(s::ExecutionTerminatedEvent::Builder b, const ev::execution_terminated& e) {
  DTSD_PUT_PAYLOAD(b, Input, e.input);
  b.setRecurse(e.recurse);
}
ev::execution_terminated from(s::ExecutionTerminatedEvent::Reader r) {
  return {DTSD_GET_PAYLOAD(r, Input), r.getRecurse()};
}

void fill(s::TaskScheduledEvent::Builder b, const ev::task_scheduled& e) {
  b.setName(text(e.name));
  DTSD_PUT_PAYLOAD(b, Version, e.version);
  DTSD_PUT_PAYLOAD(b, Input, e.input);
  if (!e.tags.empty()) fill(b.initTags(static_cast<unsigned>(e.tags.size())), e.tags);
}
ev::task_scheduled from(s::TaskScheduledEvent::Reader r) {
  return {str(r.getName()), DTSD_GET_PAYLOAD(r, Version), DTSD_GET_PAYLOAD(r, Input),
          from(r.getTags())};
}

void fill(s::TaskCompletedEvent::Builder b, const ev::task_completed& e) {
  b.setTaskScheduledId(e.task_scheduled_id);
  DTSD_PUT_PAYLOAD(b, Result, e.result);
}
ev::task_completed from(s::TaskCompletedEvent::Reader r) {
  return {r.getTaskScheduledId(), DTSD_GET_PAYLOAD(r, Result)};
}

void fill(s::TaskFailedEvent::Builder b, const ev::task_failed& e) {
  b.setTaskScheduledId(e.task_scheduled_id);
  fill(b.initFailureDetails(), e.failure);
}
ev::task_failed from(s::TaskFailedEvent::Reader r) {
  return {r.getTaskScheduledId(), from(r.getFailureDetails())};
}

void fill(s::SubOrchestrationInstanceCreatedEvent::Builder b, const ev::sub_orchestration_created& e) {
  b.setInstanceId(text(e.instance_id));
  b.setName(text(e.name));
  DTSD_PUT_PAYLOAD(b, Version, e.version);
  DTSD_PUT_PAYLOAD(b, Input, e.input);
  if (!e.tags.empty()) fill(b.initTags(static_cast<unsigned>(e.tags.size())), e.tags);
}
ev::sub_orchestration_created from(s::SubOrchestrationInstanceCreatedEvent::Reader r) {
  return {str(r.getInstanceId()), str(r.getName()), DTSD_GET_PAYLOAD(r, Version),
          DTSD_GET_PAYLOAD(r, Input), from(r.getTags())};
}

void fill(s::SubOrchestrationInstanceCompletedEvent::Builder b,
          const ev::sub_orchestration_completed& e) {
  b.setTaskScheduledId(e.task_scheduled_id);
  DTSD_PUT_PAYLOAD(b, Result, e.result);
}
ev::sub_orchestration_completed from(s::SubOrchestrationInstanceCompletedEvent::Reader r) {
  return {r.getTaskScheduledId(), DTSD_GET_PAYLOAD(r, Result)};
}

void fill(s::SubOrchestrationInstanceFailedEvent::Builder b, const ev::sub_orchestration_failed& e) {
  b.setTaskScheduledId(e.task_scheduled_id);
  fill(b.initFailureDetails(), e.failure);
}
ev::sub_orchestration_failed from(s::SubOrchestrationInstanceFailedEvent::Reader r) {
  return {r.getTaskScheduledId(), from(r.getFailureDetails())};
}

void fill(s::EventSentEvent::Builder b, const ev::event_sent& e) {
  b.setInstanceId(text(e.instance_id));
  b.setName(text(e.name));
  DTSD_PUT_PAYLOAD(b, Input, e.input);
}
ev::event_sent from(s::EventSentEvent::Reader r) {
  return {str(r.getInstanceId()), str(r.getName()), DTSD_GET_PAYLOAD(r, Input)};
}

void fill(s::EventRaisedEvent::Builder b, const ev::event_raised& e) {
  b.setName(text(e.name));
  DTSD_PUT_PAYLOAD(b, Input, e.input);
}
ev::event_raised from(s::EventRaisedEvent::Reader r) {
  return {str(r.getName()), DTSD_GET_PAYLOAD(r, Input)};
}

void fill(s::EntityOperationSignaledEvent::Builder b, const ev::entity_operation_signaled& e) {
  b.setRequestId(text(e.request_id));
  b.setOperation(text(e.operation));
  b.setScheduledTimeNs(e.scheduled_time_ns);
  DTSD_PUT_PAYLOAD(b, Input, e.input);
  b.setTargetInstanceId(text(e.target_instance_id));
}
ev::entity_operation_signaled from(s::EntityOperationSignaledEvent::Reader r) {
  return {str(r.getRequestId()), str(r.getOperation()), r.getScheduledTimeNs(),
          DTSD_GET_PAYLOAD(r, Input), str(r.getTargetInstanceId())};
}

void fill(s::EntityOperationCalledEvent::Builder b, const ev::entity_operation_called& e) {
  b.setRequestId(text(e.request_id));
  b.setOperation(text(e.operation));
  b.setScheduledTimeNs(e.scheduled_time_ns);
  DTSD_PUT_PAYLOAD(b, Input, e.input);
  b.setParentInstanceId(text(e.parent_instance_id));
  b.setParentExecutionId(text(e.parent_execution_id));
  b.setTargetInstanceId(text(e.target_instance_id));
}
ev::entity_operation_called from(s::EntityOperationCalledEvent::Reader r) {
  return {str(r.getRequestId()),        str(r.getOperation()),
          r.getScheduledTimeNs(),       DTSD_GET_PAYLOAD(r, Input),
          str(r.getParentInstanceId()), str(r.getParentExecutionId()),
          str(r.getTargetInstanceId())};
}

void fill(s::EntityOperationCompletedEvent::Builder b, const ev::entity_operation_completed& e) {
  b.setRequestId(text(e.request_id));
  DTSD_PUT_PAYLOAD(b, Output, e.output);
}
ev::entity_operation_completed from(s::EntityOperationCompletedEvent::Reader r) {
  return {str(r.getRequestId()), DTSD_GET_PAYLOAD(r, Output)};
}

void fill(s::EntityOperationFailedEvent::Builder b, const ev::entity_operation_failed& e) {
  b.setRequestId(text(e.request_id));
  fill(b.initFailureDetails(), e.failure);
}
ev::entity_operation_failed from(s::EntityOperationFailedEvent::Reader r) {
  return {str(r.getRequestId()), from(r.getFailureDetails())};
}

void fill(s::EntityLockRequestedEvent::Builder b, const ev::entity_lock_requested& e) {
  b.setCriticalSectionId(text(e.critical_section_id));
  auto locks = b.initLockSet(static_cast<unsigned>(e.lock_set.size()));
  for (unsigned i = 0; i < e.lock_set.size(); ++i) locks.set(i, text(e.lock_set[i]));
  b.setPosition(e.position);
  b.setParentInstanceId(text(e.parent_instance_id));
}
ev::entity_lock_requested from(s::EntityLockRequestedEvent::Reader r) {
  ev::entity_lock_requested e{str(r.getCriticalSectionId()), {}, r.getPosition(),
                              str(r.getParentInstanceId())};
  for (auto lock : r.getLockSet()) e.lock_set.push_back(str(lock));
  return e;
}

void fill(s::EntityUnlockSentEvent::Builder b, const ev::entity_unlock_sent& e) {
  b.setCriticalSectionId(text(e.critical_section_id));
  b.setParentInstanceId(text(e.parent_instance_id));
  b.setTargetInstanceId(text(e.target_instance_id));
}
ev::entity_unlock_sent from(s::EntityUnlockSentEvent::Reader r) {
  return {str(r.getCriticalSectionId()), str(r.getParentInstanceId()),
          str(r.getTargetInstanceId())};
}

void fill(s::HistoryEvent::Builder b, const core::history_event& event);
core::history_event from(s::HistoryEvent::Reader r);

void fill(s::HistoryStateEvent::Builder b, const core::history_state& e) {
  if (e.state) fill(b.initOrchestrationState(), *e.state);
}
core::history_state from(s::HistoryStateEvent::Reader r) {
  if (!r.hasOrchestrationState()) return {};
  return {std::make_shared<core::instance_record>(from(r.getOrchestrationState()))};
}

void fill(s::HistoryEvent::Builder b, const core::history_event& event) {
  b.setEventId(event.event_id);
  b.setTimestampNs(event.timestamp_ns);
  std::visit(
      overloaded{
          [&](const ev::execution_started& e) { fill(b.initExecutionStarted(), e); },
          [&](const ev::execution_completed& e) { fill(b.initExecutionCompleted(), e); },
          [&](const ev::execution_terminated& e) { fill(b.initExecutionTerminated(), e); },
          [&](const ev::task_scheduled& e) { fill(b.initTaskScheduled(), e); },
          [&](const ev::task_completed& e) { fill(b.initTaskCompleted(), e); },
          [&](const ev::task_failed& e) { fill(b.initTaskFailed(), e); },
          [&](const ev::sub_orchestration_created& e) {
            fill(b.initSubOrchestrationInstanceCreated(), e);
          },
          [&](const ev::sub_orchestration_completed& e) {
            fill(b.initSubOrchestrationInstanceCompleted(), e);
          },
          [&](const ev::sub_orchestration_failed& e) {
            fill(b.initSubOrchestrationInstanceFailed(), e);
          },
          [&](const ev::timer_created& e) { b.initTimerCreated().setFireAtNs(e.fire_at_ns); },
          [&](const ev::timer_fired& e) {
            auto t = b.initTimerFired();
            t.setFireAtNs(e.fire_at_ns);
            t.setTimerId(e.timer_id);
          },
          [&](const ev::orchestrator_started&) { b.setOrchestratorStarted(); },
          [&](const ev::orchestrator_completed&) { b.setOrchestratorCompleted(); },
          [&](const ev::event_sent& e) { fill(b.initEventSent(), e); },
          [&](const ev::event_raised& e) { fill(b.initEventRaised(), e); },
          [&](const ev::generic_event& e) {
            auto g = b.initGenericEvent();
            DTSD_PUT_PAYLOAD(g, Data, e.data);
          },
          [&](const core::history_state& e) { fill(b.initHistoryState(), e); },
          [&](const ev::continue_as_new& e) {
            auto c = b.initContinueAsNew();
            DTSD_PUT_PAYLOAD(c, Input, e.input);
          },
          [&](const ev::execution_suspended& e) {
            auto c = b.initExecutionSuspended();
            DTSD_PUT_PAYLOAD(c, Input, e.input);
          },
          [&](const ev::execution_resumed& e) {
            auto c = b.initExecutionResumed();
            DTSD_PUT_PAYLOAD(c, Input, e.input);
          },
          [&](const ev::execution_rewound& e) {
            auto c = b.initExecutionRewound();
            DTSD_PUT_PAYLOAD(c, Reason, e.reason);
            c.setParentExecutionId(text(e.parent_execution_id));
            c.setName(text(e.name));
            DTSD_PUT_PAYLOAD(c, Version, e.version);
            DTSD_PUT_PAYLOAD(c, Input, e.input);
            if (e.parent) fill(c.initParentInstance(), *e.parent);
            if (!e.tags.empty()) fill(c.initTags(static_cast<unsigned>(e.tags.size())), e.tags);
          },
          [&](const ev::entity_operation_signaled& e) { fill(b.initEntityOperationSignaled(), e); },
          [&](const ev::entity_operation_called& e) { fill(b.initEntityOperationCalled(), e); },
          [&](const ev::entity_operation_completed& e) {
            fill(b.initEntityOperationCompleted(), e);
          },
          [&](const ev::entity_operation_failed& e) { fill(b.initEntityOperationFailed(), e); },
          [&](const ev::entity_lock_requested& e) { fill(b.initEntityLockRequested(), e); },
          [&](const ev::entity_lock_granted& e) {
            b.initEntityLockGranted().setCriticalSectionId(text(e.critical_section_id));
          },
          [&](const ev::entity_unlock_sent& e) { fill(b.initEntityUnlockSent(), e); },
      },
      event.body);
}

core::history_event from(s::HistoryEvent::Reader r) {
  core::history_event event{r.getEventId(), r.getTimestampNs(), {}};
  using W = s::HistoryEvent::Which;
  switch (r.which()) {
    case W::EXECUTION_STARTED: event.body = from(r.getExecutionStarted()); break;
    case W::EXECUTION_COMPLETED: event.body = from(r.getExecutionCompleted()); break;
    case W::EXECUTION_TERMINATED: event.body = from(r.getExecutionTerminated()); break;
    case W::TASK_SCHEDULED: event.body = from(r.getTaskScheduled()); break;
    case W::TASK_COMPLETED: event.body = from(r.getTaskCompleted()); break;
    case W::TASK_FAILED: event.body = from(r.getTaskFailed()); break;
    case W::SUB_ORCHESTRATION_INSTANCE_CREATED:
      event.body = from(r.getSubOrchestrationInstanceCreated());
      break;
    case W::SUB_ORCHESTRATION_INSTANCE_COMPLETED:
      event.body = from(r.getSubOrchestrationInstanceCompleted());
      break;
    case W::SUB_ORCHESTRATION_INSTANCE_FAILED:
      event.body = from(r.getSubOrchestrationInstanceFailed());
      break;
    case W::TIMER_CREATED: event.body = ev::timer_created{r.getTimerCreated().getFireAtNs()}; break;
    case W::TIMER_FIRED:
      event.body = ev::timer_fired{r.getTimerFired().getFireAtNs(), r.getTimerFired().getTimerId()};
      break;
    case W::ORCHESTRATOR_STARTED: event.body = ev::orchestrator_started{}; break;
    case W::ORCHESTRATOR_COMPLETED: event.body = ev::orchestrator_completed{}; break;
    case W::EVENT_SENT: event.body = from(r.getEventSent()); break;
    case W::EVENT_RAISED: event.body = from(r.getEventRaised()); break;
    case W::GENERIC_EVENT: {
      auto g = r.getGenericEvent();
      event.body = ev::generic_event{DTSD_GET_PAYLOAD(g, Data)};
      break;
    }
    case W::HISTORY_STATE: event.body = from(r.getHistoryState()); break;
    case W::CONTINUE_AS_NEW: {
      auto c = r.getContinueAsNew();
      event.body = ev::continue_as_new{DTSD_GET_PAYLOAD(c, Input)};
      break;
    }
    case W::EXECUTION_SUSPENDED: {
      auto c = r.getExecutionSuspended();
      event.body = ev::execution_suspended{DTSD_GET_PAYLOAD(c, Input)};
      break;
    }
    case W::EXECUTION_RESUMED: {
      auto c = r.getExecutionResumed();
      event.body = ev::execution_resumed{DTSD_GET_PAYLOAD(c, Input)};
      break;
    }
    case W::EXECUTION_REWOUND: {
      auto c = r.getExecutionRewound();
      ev::execution_rewound rewound{DTSD_GET_PAYLOAD(c, Reason), str(c.getParentExecutionId())};
      rewound.name = str(c.getName());
      rewound.version = DTSD_GET_PAYLOAD(c, Version);
      rewound.input = DTSD_GET_PAYLOAD(c, Input);
      if (c.hasParentInstance()) rewound.parent = from(c.getParentInstance());
      rewound.tags = from(c.getTags());
      event.body = std::move(rewound);
      break;
    }
    case W::ENTITY_OPERATION_SIGNALED: event.body = from(r.getEntityOperationSignaled()); break;
    case W::ENTITY_OPERATION_CALLED: event.body = from(r.getEntityOperationCalled()); break;
    case W::ENTITY_OPERATION_COMPLETED: event.body = from(r.getEntityOperationCompleted()); break;
    case W::ENTITY_OPERATION_FAILED: event.body = from(r.getEntityOperationFailed()); break;
    case W::ENTITY_LOCK_REQUESTED: event.body = from(r.getEntityLockRequested()); break;
    case W::ENTITY_LOCK_GRANTED:
      event.body = ev::entity_lock_granted{str(r.getEntityLockGranted().getCriticalSectionId())};
      break;
    case W::ENTITY_UNLOCK_SENT: event.body = from(r.getEntityUnlockSent()); break;
    default:
      throw KJ_EXCEPTION(FAILED, "unknown history event kind", static_cast<int>(r.which()));
  }
  return event;
}

// ---------------------------------------------------------------------------
// Actions and completions

void fill(s::OrchestratorAction::Builder b, const core::orchestrator_action& action) {
  b.setId(action.id);
  std::visit(
      overloaded{
          [&](const act::schedule_task& a) {
            auto t = b.initScheduleTask();
            t.setName(text(a.name));
            DTSD_PUT_PAYLOAD(t, Version, a.version);
            DTSD_PUT_PAYLOAD(t, Input, a.input);
            if (!a.tags.empty()) fill(t.initTags(static_cast<unsigned>(a.tags.size())), a.tags);
          },
          [&](const act::create_sub_orchestration& a) {
            auto t = b.initCreateSubOrchestration();
            t.setInstanceId(text(a.instance_id));
            t.setName(text(a.name));
            DTSD_PUT_PAYLOAD(t, Version, a.version);
            DTSD_PUT_PAYLOAD(t, Input, a.input);
            if (!a.tags.empty()) fill(t.initTags(static_cast<unsigned>(a.tags.size())), a.tags);
          },
          [&](const act::create_timer& a) { b.initCreateTimer().setFireAtNs(a.fire_at_ns); },
          [&](const act::send_event& a) {
            auto t = b.initSendEvent();
            fill(t.initInstance(), a.instance);
            t.setName(text(a.name));
            DTSD_PUT_PAYLOAD(t, Data, a.data);
          },
          [&](const act::complete_orchestration& a) {
            auto t = b.initCompleteOrchestration();
            t.setOrchestrationStatus(to_schema(a.status));
            DTSD_PUT_PAYLOAD(t, Result, a.result);
            DTSD_PUT_PAYLOAD(t, Details, a.details);
            DTSD_PUT_PAYLOAD(t, NewVersion, a.new_version);
            auto carried = t.initCarryoverEvents(static_cast<unsigned>(a.carryover_events.size()));
            for (unsigned i = 0; i < a.carryover_events.size(); ++i) {
              fill(carried[i], a.carryover_events[i]);
            }
            if (a.failure) fill(t.initFailureDetails(), *a.failure);
            if (!a.tags.empty()) fill(t.initTags(static_cast<unsigned>(a.tags.size())), a.tags);
          },
          [&](const act::terminate_orchestration& a) {
            auto t = b.initTerminateOrchestration();
            t.setInstanceId(text(a.instance_id));
            DTSD_PUT_PAYLOAD(t, Reason, a.reason);
            t.setRecurse(a.recurse);
          },
          [&](const act::send_entity_message& a) {
            auto t = b.initSendEntityMessage();
            std::visit(overloaded{[&](const ev::entity_operation_signaled& m) {
                                    fill(t.initEntityOperationSignaled(), m);
                                  },
                                  [&](const ev::entity_operation_called& m) {
                                    fill(t.initEntityOperationCalled(), m);
                                  },
                                  [&](const ev::entity_lock_requested& m) {
                                    fill(t.initEntityLockRequested(), m);
                                  },
                                  [&](const ev::entity_unlock_sent& m) {
                                    fill(t.initEntityUnlockSent(), m);
                                  }},
                       a.message);
          },
      },
      action.body);
}

core::orchestrator_action from(s::OrchestratorAction::Reader r) {
  core::orchestrator_action action{r.getId(), {}};
  using W = s::OrchestratorAction::Which;
  switch (r.which()) {
    case W::SCHEDULE_TASK: {
      auto t = r.getScheduleTask();
      action.body = act::schedule_task{str(t.getName()), DTSD_GET_PAYLOAD(t, Version),
                                       DTSD_GET_PAYLOAD(t, Input), from(t.getTags())};
      break;
    }
    case W::CREATE_SUB_ORCHESTRATION: {
      auto t = r.getCreateSubOrchestration();
      action.body = act::create_sub_orchestration{str(t.getInstanceId()), str(t.getName()),
                                                  DTSD_GET_PAYLOAD(t, Version),
                                                  DTSD_GET_PAYLOAD(t, Input), from(t.getTags())};
      break;
    }
    case W::CREATE_TIMER: action.body = act::create_timer{r.getCreateTimer().getFireAtNs()}; break;
    case W::SEND_EVENT: {
      auto t = r.getSendEvent();
      action.body =
          act::send_event{from(t.getInstance()), str(t.getName()), DTSD_GET_PAYLOAD(t, Data)};
      break;
    }
    case W::COMPLETE_ORCHESTRATION: {
      auto t = r.getCompleteOrchestration();
      act::complete_orchestration a{from_schema(t.getOrchestrationStatus()),
                                    DTSD_GET_PAYLOAD(t, Result),
                                    DTSD_GET_PAYLOAD(t, Details),
                                    DTSD_GET_PAYLOAD(t, NewVersion),
                                    {},
                                    std::nullopt};
      for (auto event : t.getCarryoverEvents()) a.carryover_events.push_back(from(event));
      if (t.hasFailureDetails()) a.failure = from(t.getFailureDetails());
      a.tags = from(t.getTags());
      action.body = std::move(a);
      break;
    }
    case W::TERMINATE_ORCHESTRATION: {
      auto t = r.getTerminateOrchestration();
      action.body = act::terminate_orchestration{str(t.getInstanceId()),
                                                 DTSD_GET_PAYLOAD(t, Reason), t.getRecurse()};
      break;
    }
    case W::SEND_ENTITY_MESSAGE: {
      auto t = r.getSendEntityMessage();
      using M = s::SendEntityMessageAction::Which;
      act::send_entity_message a;
      switch (t.which()) {
        case M::ENTITY_OPERATION_SIGNALED: a.message = from(t.getEntityOperationSignaled()); break;
        case M::ENTITY_OPERATION_CALLED: a.message = from(t.getEntityOperationCalled()); break;
        case M::ENTITY_LOCK_REQUESTED: a.message = from(t.getEntityLockRequested()); break;
        case M::ENTITY_UNLOCK_SENT: a.message = from(t.getEntityUnlockSent()); break;
        default: throw KJ_EXCEPTION(FAILED, "unknown entity message kind");
      }
      action.body = std::move(a);
      break;
    }
    default: throw KJ_EXCEPTION(FAILED, "unknown action kind", static_cast<int>(r.which()));
  }
  return action;
}

void fill(s::EntityBatchResult::Builder b, const core::entity_batch_result& x) {
  auto results = b.initResults(static_cast<unsigned>(x.results.size()));
  for (unsigned i = 0; i < x.results.size(); ++i) {
    if (const auto* ok = std::get_if<core::payload>(&x.results[i])) {
      results[i].setSucceeded(true);
      DTSD_PUT_PAYLOAD(results[i], Success, *ok);
    } else {
      fill(results[i].initFailure(), std::get<core::failure_details>(x.results[i]));
    }
  }
  auto actions = b.initActions(static_cast<unsigned>(x.actions.size()));
  for (unsigned i = 0; i < x.actions.size(); ++i) {
    std::visit(overloaded{[&](const core::entity_actions::signal& a) {
                            auto g = actions[i].initSignal();
                            g.setInstanceId(text(a.instance_id));
                            g.setOperation(text(a.operation));
                            DTSD_PUT_PAYLOAD(g, Input, a.input);
                            g.setScheduledNs(a.scheduled_ns);
                          },
                          [&](const core::entity_actions::start_orchestration& a) {
                            auto g = actions[i].initStartOrchestration();
                            g.setInstanceId(text(a.instance_id));
                            g.setName(text(a.name));
                            DTSD_PUT_PAYLOAD(g, Version, a.version);
                            DTSD_PUT_PAYLOAD(g, Input, a.input);
                            g.setScheduledNs(a.scheduled_ns);
                          }},
               x.actions[i]);
  }
  DTSD_PUT_PAYLOAD(b, State, x.state);
  if (x.failure) fill(b.initFailure(), *x.failure);
}
core::entity_batch_result from(s::EntityBatchResult::Reader r) {
  core::entity_batch_result x;
  for (auto result : r.getResults()) {
    if (result.getSucceeded()) {
      x.results.emplace_back(result.hasSuccess() ? core::payload(str(result.getSuccess())) : core::payload());
    } else {
      x.results.emplace_back(from(result.getFailure()));
    }
  }
  for (auto action : r.getActions()) {
    if (action.isSignal()) {
      auto g = action.getSignal();
      x.actions.emplace_back(core::entity_actions::signal{str(g.getInstanceId()), str(g.getOperation()),
                                                          DTSD_GET_PAYLOAD(g, Input), g.getScheduledNs()});
    } else {
      auto g = action.getStartOrchestration();
      x.actions.emplace_back(core::entity_actions::start_orchestration{
          str(g.getInstanceId()), str(g.getName()), DTSD_GET_PAYLOAD(g, Version), DTSD_GET_PAYLOAD(g, Input),
          g.getScheduledNs()});
    }
  }
  x.state = DTSD_GET_PAYLOAD(r, State);
  if (r.hasFailure()) x.failure = from(r.getFailure());
  return x;
}

void fill(s::OrchestratorCompletion::Builder b, const core::orchestrator_completion& c) {
  b.setInstanceId(text(c.instance_id));
  b.setCompletionToken(c.completion_token);
  auto list = b.initActions(static_cast<unsigned>(c.actions.size()));
  for (unsigned i = 0; i < c.actions.size(); ++i) fill(list[i], c.actions[i]);
  DTSD_PUT_PAYLOAD(b, CustomStatus, c.custom_status);
  if (c.entity) fill(b.initEntity(), *c.entity);
}
core::orchestrator_completion from(s::OrchestratorCompletion::Reader r) {
  core::orchestrator_completion c{str(r.getInstanceId()), r.getCompletionToken(), {},
                                  DTSD_GET_PAYLOAD(r, CustomStatus), std::nullopt};
  for (auto action : r.getActions()) c.actions.push_back(from(action));
  if (r.hasEntity()) c.entity = from(r.getEntity());
  return c;
}

void fill(s::ActivityCompletion::Builder b, const core::activity_result& x) {
  b.setInstanceId(text(x.instance_id));
  b.setExecutionId(text(x.execution_id));
  b.setTaskId(x.task_id);
  b.setCompletionToken(x.completion_token);
  if (const auto* output = std::get_if<core::payload>(&x.outcome)) {
    // The union's default member is `result`: a null result leaves the pointer unset.
    if (*output) b.setResult(text(**output));
  } else {
    fill(b.initFailureDetails(), std::get<core::failure_details>(x.outcome));
  }
}
core::activity_result from(s::ActivityCompletion::Reader r) {
  core::activity_result x{str(r.getInstanceId()), str(r.getExecutionId()), r.getTaskId(),
                          r.getCompletionToken(), core::payload()};
  if (r.isFailureDetails()) {
    x.outcome = from(r.getFailureDetails());
  } else if (r.hasResult()) {
    x.outcome = core::payload(str(r.getResult()));
  }
  return x;
}

// ---------------------------------------------------------------------------
// Partition records

void fill(s::StartRequest::Builder b, const core::start_request& x) {
  b.setInstanceId(text(x.instance_id));
  b.setExecutionId(text(x.execution_id));
  b.setName(text(x.name));
  DTSD_PUT_PAYLOAD(b, Version, x.version);
  DTSD_PUT_PAYLOAD(b, Input, x.input);
  if (!x.tags.empty()) fill(b.initTags(static_cast<unsigned>(x.tags.size())), x.tags);
  b.setScheduledStartNs(x.scheduled_start_ns);
  if (x.parent) fill(b.initParentInstance(), *x.parent);
  auto statuses = b.initReplaceableStatuses(static_cast<unsigned>(x.replaceable_statuses.size()));
  for (unsigned i = 0; i < x.replaceable_statuses.size(); ++i) {
    statuses.set(i, to_schema(x.replaceable_statuses[i]));
  }
}
core::start_request from(s::StartRequest::Reader r) {
  core::start_request x;
  x.instance_id = str(r.getInstanceId());
  x.execution_id = str(r.getExecutionId());
  x.name = str(r.getName());
  x.version = DTSD_GET_PAYLOAD(r, Version);
  x.input = DTSD_GET_PAYLOAD(r, Input);
  x.tags = from(r.getTags());
  x.scheduled_start_ns = r.getScheduledStartNs();
  if (r.hasParentInstance()) x.parent = from(r.getParentInstance());
  for (auto status : r.getReplaceableStatuses()) x.replaceable_statuses.push_back(from_schema(status));
  return x;
}

void fill(s::TerminateRequest::Builder b, const core::terminate_request& x) {
  DTSD_PUT_PAYLOAD(b, Reason, x.reason);
  b.setRecurse(x.recurse);
}
core::terminate_request from(s::TerminateRequest::Reader r) {
  return {DTSD_GET_PAYLOAD(r, Reason), r.getRecurse()};
}

void fill(s::InstanceMessage::Builder b, const core::instance_message& m) {
  b.setTargetInstanceId(text(m.target_instance_id));
  b.setTargetExecutionId(text(m.target_execution_id));
  std::visit(overloaded{[&](const core::start_request& x) { fill(b.initStart(), x); },
                        [&](const core::history_event& x) { fill(b.initEvent(), x); },
                        [&](const core::terminate_request& x) { fill(b.initTerminate(), x); }},
             m.body);
}
core::instance_message from(s::InstanceMessage::Reader r) {
  core::instance_message m{str(r.getTargetInstanceId()), str(r.getTargetExecutionId()), {}};
  using W = s::InstanceMessage::Which;
  switch (r.which()) {
    case W::START: m.body = from(r.getStart()); break;
    case W::EVENT: m.body = from(r.getEvent()); break;
    case W::TERMINATE: m.body = from(r.getTerminate()); break;
    default: throw KJ_EXCEPTION(FAILED, "unknown message kind");
  }
  return m;
}

void fill(s::OutboxEntry::Builder b, const outbox_entry& x) {
  b.setSequence(x.sequence);
  b.setSourcePartition(x.source_partition);
  b.setDestinationPartition(x.destination_partition);
  fill(b.initMessage(), x.message);
  b.setPrevious(x.previous);
}
outbox_entry from(s::OutboxEntry::Reader r) {
  return {r.getSequence(), r.getSourcePartition(), r.getDestinationPartition(), from(r.getMessage()),
          r.getPrevious()};
}

void fill(s::TimerEntry::Builder b, const core::timer_entry& x) {
  b.setInstanceId(text(x.instance_id));
  b.setExecutionId(text(x.execution_id));
  b.setTimerId(x.timer_id);
  b.setFireAtNs(x.fire_at_ns);
}
core::timer_entry from(s::TimerEntry::Reader r) {
  return {str(r.getInstanceId()), str(r.getExecutionId()), r.getTimerId(), r.getFireAtNs()};
}

void fill(s::ActivityEntry::Builder b, const core::activity_request& x) {
  b.setInstanceId(text(x.instance_id));
  b.setExecutionId(text(x.execution_id));
  b.setTaskId(x.task_id);
  b.setName(text(x.name));
  DTSD_PUT_PAYLOAD(b, Version, x.version);
  DTSD_PUT_PAYLOAD(b, Input, x.input);
  if (!x.tags.empty()) fill(b.initTags(static_cast<unsigned>(x.tags.size())), x.tags);
}
core::activity_request from(s::ActivityEntry::Reader r) {
  return {str(r.getInstanceId()),       str(r.getExecutionId()),    r.getTaskId(),
          str(r.getName()),             DTSD_GET_PAYLOAD(r, Version), DTSD_GET_PAYLOAD(r, Input),
          from(r.getTags())};
}

std::vector<std::uint64_t> from(capnp::List<std::uint64_t>::Reader r) {
  std::vector<std::uint64_t> values;
  values.reserve(r.size());
  for (auto value : r) values.push_back(value);
  return values;
}

void fill(s::StoredInstance::Builder b, const stored_instance& x) {
  fill(b.initRecord(), x.record);
  b.setHistoryCount(x.history_count);
  b.setInboxFirstSequence(x.inbox_first_sequence);
  b.setInboxCount(x.inbox_count);
  auto segments = b.initHistorySegments(static_cast<unsigned>(x.history_segments.size()));
  for (unsigned i = 0; i < x.history_segments.size(); ++i) segments.set(i, x.history_segments[i]);
}
stored_instance from(s::StoredInstance::Reader r) {
  return {from(r.getRecord()), r.getHistoryCount(), r.getInboxFirstSequence(), r.getInboxCount(),
          from(r.getHistorySegments())};
}

void fill(s::HistoryChunk::Builder b, const history_chunk& x) {
  b.setFirstIndex(x.first_index);
  auto events = b.initEvents(static_cast<unsigned>(x.events.size()));
  for (unsigned i = 0; i < x.events.size(); ++i) fill(events[i], x.events[i]);
}
history_chunk from(s::HistoryChunk::Reader r) {
  history_chunk x{r.getFirstIndex(), {}};
  x.events.reserve(r.getEvents().size());
  for (auto event : r.getEvents()) x.events.push_back(from(event));
  return x;
}

void fill(s::PartitionEvent::Builder b, const partition_event& x) {
  b.setTimestampNs(x.timestamp_ns);
  std::visit(overloaded{
                 [&](const core::start_request& e) { fill(b.initInstanceStarted(), e); },
                 [&](const logged::orchestrator_completed& e) {
                   auto g = b.initOrchestratorCompleted();
                   fill(g.initCompletion(), e.completion);
                   g.setNewExecutionId(text(e.new_execution_id));
                   g.setConsumedEventCount(e.consumed_event_count);
                   g.setStartedAtNs(e.started_at_ns);
                 },
                 [&](const core::activity_result& e) { fill(b.initActivityCompleted(), e); },
                 [&](const core::timer_entry& e) { fill(b.initTimerFired(), e); },
                 [&](const outbox_entry& e) { fill(b.initMessageReceived(), e); },
                 [&](const logged::event_raised& e) {
                   auto g = b.initEventRaised();
                   g.setInstanceId(text(e.instance_id));
                   g.setName(text(e.name));
                   DTSD_PUT_PAYLOAD(g, Input, e.input);
                 },
                 [&](const logged::terminated& e) {
                   auto g = b.initTerminated();
                   g.setInstanceId(text(e.instance_id));
                   fill(g.initRequest(), e.request);
                 },
                 [&](const logged::suspended& e) {
                   auto g = b.initSuspended();
                   g.setInstanceId(text(e.instance_id));
                   DTSD_PUT_PAYLOAD(g, Reason, e.reason);
                 },
                 [&](const logged::resumed& e) {
                   auto g = b.initResumed();
                   g.setInstanceId(text(e.instance_id));
                   DTSD_PUT_PAYLOAD(g, Reason, e.reason);
                 },
                 [&](const logged::purged& e) { b.setPurged(text(e.instance_id)); },
                 [&](const logged::entity_deleted& e) { b.setEntityDeleted(text(e.instance_id)); },
                 [&](const logged::delivered& e) { fill(b.initDelivered(), e.message); },
                 [&](const logged::rewound& e) {
                   auto g = b.initRewound();
                   g.setInstanceId(text(e.instance_id));
                   DTSD_PUT_PAYLOAD(g, Reason, e.reason);
                 },
                 [&](const logged::opaque& e) {
                   b.setOpaque(capnp::Data::Reader(
                       reinterpret_cast<const kj::byte*>(e.data.data()), e.data.size()));
                 },
             },
             x.body);
}
partition_event from(s::PartitionEvent::Reader r) {
  partition_event x{r.getTimestampNs(), {}};
  using W = s::PartitionEvent::Which;
  switch (r.which()) {
    case W::INSTANCE_STARTED: x.body = from(r.getInstanceStarted()); break;
    case W::ORCHESTRATOR_COMPLETED: {
      auto g = r.getOrchestratorCompleted();
      x.body = logged::orchestrator_completed{from(g.getCompletion()), str(g.getNewExecutionId()),
                                              g.getConsumedEventCount(), g.getStartedAtNs()};
      break;
    }
    case W::ACTIVITY_COMPLETED: x.body = from(r.getActivityCompleted()); break;
    case W::TIMER_FIRED: x.body = from(r.getTimerFired()); break;
    case W::MESSAGE_RECEIVED: x.body = from(r.getMessageReceived()); break;
    case W::EVENT_RAISED: {
      auto g = r.getEventRaised();
      x.body = logged::event_raised{str(g.getInstanceId()), str(g.getName()),
                                    DTSD_GET_PAYLOAD(g, Input)};
      break;
    }
    case W::TERMINATED: {
      auto g = r.getTerminated();
      x.body = logged::terminated{str(g.getInstanceId()), from(g.getRequest())};
      break;
    }
    case W::SUSPENDED: {
      auto g = r.getSuspended();
      x.body = logged::suspended{str(g.getInstanceId()), DTSD_GET_PAYLOAD(g, Reason)};
      break;
    }
    case W::RESUMED: {
      auto g = r.getResumed();
      x.body = logged::resumed{str(g.getInstanceId()), DTSD_GET_PAYLOAD(g, Reason)};
      break;
    }
    case W::PURGED: x.body = logged::purged{str(r.getPurged())}; break;
    case W::ENTITY_DELETED: x.body = logged::entity_deleted{str(r.getEntityDeleted())}; break;
    case W::DELIVERED: x.body = logged::delivered{from(r.getDelivered())}; break;
    case W::REWOUND: {
      auto g = r.getRewound();
      x.body = logged::rewound{str(g.getInstanceId()), DTSD_GET_PAYLOAD(g, Reason)};
      break;
    }
    case W::OPAQUE: {
      auto data = r.getOpaque();
      x.body = logged::opaque{std::string(reinterpret_cast<const char*>(data.begin()), data.size())};
      break;
    }
    default: throw KJ_EXCEPTION(FAILED, "unknown partition event kind");
  }
  return x;
}

void fill(s::LogRecord::Builder b, const log_record& x) {
  b.setSequence(x.sequence);
  b.setCommittedAtNs(x.committed_at_ns);
  auto list = b.initEvents(static_cast<unsigned>(x.events.size()));
  for (unsigned i = 0; i < x.events.size(); ++i) fill(list[i], x.events[i]);
}
log_record from(s::LogRecord::Reader r) {
  log_record x{r.getSequence(), r.getCommittedAtNs(), {}};
  x.events.reserve(r.getEvents().size());
  for (auto event : r.getEvents()) x.events.push_back(from(event));
  return x;
}

// ---------------------------------------------------------------------------
// Framing

/// Scratch space for the first segment of every message this thread builds, so a
/// small record costs no allocation. The builder zeroes what it used on destruction.
kj::ArrayPtr<capnp::word> scratch_segment() {
  constexpr std::size_t scratch_words = 8192;
  thread_local std::unique_ptr<capnp::word[]> scratch(new capnp::word[scratch_words]());
  return {scratch.get(), scratch_words};
}

/// Writes the packed message straight into a std::string.
class string_output final : public kj::OutputStream {
 public:
  explicit string_output(std::string& out) : out_(out) {}
  void write(const void* buffer, size_t size) override {
    out_.append(static_cast<const char*>(buffer), size);
  }

 private:
  std::string& out_;
};

template <class Schema, class Value>
std::string encode_root(const Value& value) {
  capnp::MallocMessageBuilder message(scratch_segment());
  fill(message.initRoot<Schema>(), value);
  std::string out;
  out.reserve(capnp::computeSerializedSizeInWords(message) * sizeof(capnp::word) / 2);
  string_output stream(out);
  capnp::writePackedMessage(stream, message);
  return out;
}

template <class Schema, class Read>
auto with_root(std::string_view bytes, const char* what, Read read)
    -> expected<decltype(read(std::declval<typename Schema::Reader>()))> {
  if (bytes.empty()) return error{errc::corrupt, fmt::format("{} record is empty", what)};
  try {
    kj::ArrayInputStream input(
        kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()));
    capnp::ReaderOptions options;
    options.traversalLimitInWords = std::uint64_t{1} << 40;  // Sizes are limited upstream.
    capnp::PackedMessageReader reader(input, options);
    return read(reader.getRoot<Schema>());
  } catch (const kj::Exception& failure) {
    return error{errc::corrupt, fmt::format("{} record does not decode: {}", what,
                                            failure.getDescription().cStr())};
  }
}

template <class Schema>
auto decode_root(std::string_view bytes, const char* what)
    -> expected<decltype(from(std::declval<typename Schema::Reader>()))> {
  return with_root<Schema>(bytes, what, [](auto reader) { return from(reader); });
}

}  // namespace

std::string encode(const core::history_event& x) { return encode_root<s::HistoryEvent>(x); }
std::string encode(const stored_instance& x) { return encode_root<s::StoredInstance>(x); }
std::string encode(const core::timer_entry& x) { return encode_root<s::TimerEntry>(x); }
std::string encode(const core::activity_request& x) { return encode_root<s::ActivityEntry>(x); }
std::string encode(const outbox_entry& x) { return encode_root<s::OutboxEntry>(x); }
std::string encode(const log_record& x) { return encode_root<s::LogRecord>(x); }
std::string encode(const history_chunk& x) { return encode_root<s::HistoryChunk>(x); }

expected<core::history_event> decode_history_event(std::string_view bytes) {
  return decode_root<s::HistoryEvent>(bytes, "history event");
}
expected<stored_instance> decode_stored_instance(std::string_view bytes) {
  return decode_root<s::StoredInstance>(bytes, "instance");
}
expected<core::timer_entry> decode_timer_entry(std::string_view bytes) {
  return decode_root<s::TimerEntry>(bytes, "timer");
}
expected<core::activity_request> decode_activity_request(std::string_view bytes) {
  return decode_root<s::ActivityEntry>(bytes, "activity");
}
expected<outbox_entry> decode_outbox_entry(std::string_view bytes) {
  return decode_root<s::OutboxEntry>(bytes, "outbox");
}
expected<log_record> decode_log_record(std::string_view bytes) {
  return decode_root<s::LogRecord>(bytes, "log");
}

expected<history_chunk> decode_history_chunk(std::string_view bytes) {
  return decode_root<s::HistoryChunk>(bytes, "history chunk");
}

expected<std::string> merge_history_chunks(const std::vector<std::string_view>& chunks,
                                           const history_chunk& appended) {
  struct opened_chunk {
    kj::ArrayInputStream input;
    capnp::PackedMessageReader reader;
    opened_chunk(std::string_view bytes, const capnp::ReaderOptions& options)
        : input(kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size())),
          reader(input, options) {}
  };
  try {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = std::uint64_t{1} << 40;
    std::vector<std::unique_ptr<opened_chunk>> opened;
    std::vector<s::HistoryChunk::Reader> readers;
    std::uint32_t total = 0;
    for (auto bytes : chunks) {
      opened.push_back(std::make_unique<opened_chunk>(bytes, options));
      auto reader = opened.back()->reader.getRoot<s::HistoryChunk>();
      if (reader.getFirstIndex() != total) {
        return error{errc::corrupt, fmt::format("history chunk starts at event {}, expected {}",
                                                reader.getFirstIndex(), total)};
      }
      total += reader.getEvents().size();
      readers.push_back(reader);
    }
    if (appended.first_index != total) {
      return error{errc::corrupt, fmt::format("appended history starts at event {}, expected {}",
                                              appended.first_index, total)};
    }
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<s::HistoryChunk>();
    root.setFirstIndex(0);
    auto events = root.initEvents(total + static_cast<std::uint32_t>(appended.events.size()));
    std::uint32_t next = 0;
    for (auto reader : readers) {
      for (auto event : reader.getEvents()) events.setWithCaveats(next++, event);
    }
    for (const auto& event : appended.events) fill(events[next++], event);
    std::string out;
    string_output stream(out);
    capnp::writePackedMessage(stream, message);
    return out;
  } catch (const kj::Exception& failure) {
    return error{errc::corrupt, fmt::format("history chunk does not decode: {}",
                                            failure.getDescription().cStr())};
  }
}

expected<stored_instance_header> decode_stored_instance_header(std::string_view bytes) {
  return with_root<s::StoredInstance>(bytes, "instance", [](s::StoredInstance::Reader r) {
    auto record = r.getRecord();
    return stored_instance_header{from_schema(record.getRuntimeStatus()), record.getCreatedAtNs(),
                                  r.getInboxFirstSequence(), from(r.getHistorySegments())};
  });
}

}  // namespace dtsd::store

// ---------------------------------------------------------------------------
// Wire conversions for the native RPC API (codec/wire.hpp).

namespace dtsd::codec::wire {

// The conversions of the store codec above (one codec serves the records and the wire).
using namespace ::dtsd::store;

core::start_request read(schema::StartRequest::Reader r) { return from(r); }
void write(schema::StartRequest::Builder b, const core::start_request& x) { fill(b, x); }
core::instance_record read(schema::InstanceRecord::Reader r) { return from(r); }
void write(schema::InstanceRecord::Builder b, const core::instance_record& x) { fill(b, x); }
core::history_event read(schema::HistoryEvent::Reader r) { return from(r); }
void write(schema::HistoryEvent::Builder b, const core::history_event& x) { fill(b, x); }
core::orchestrator_completion read(schema::OrchestratorCompletion::Reader r) { return from(r); }
void write(schema::OrchestratorCompletion::Builder b, const core::orchestrator_completion& x) { fill(b, x); }
core::activity_result read(schema::ActivityCompletion::Reader r) { return from(r); }
void write(schema::ActivityCompletion::Builder b, const core::activity_result& x) { fill(b, x); }

core::orchestrator_work_item read(schema::OrchestratorWorkItem::Reader r) {
  core::orchestrator_work_item x{str(r.getInstanceId()), str(r.getExecutionId()), {}, {}, r.getCompletionToken(),
                                 r.getEntity(), DTSD_GET_PAYLOAD(r, EntityState)};
  for (auto event : r.getPastEvents()) x.past_events.push_back(from(event));
  for (auto event : r.getNewEvents()) x.new_events.push_back(from(event));
  return x;
}
void write(schema::OrchestratorWorkItem::Builder b, const core::orchestrator_work_item& x) {
  b.setInstanceId(text(x.instance_id));
  b.setExecutionId(text(x.execution_id));
  auto past = b.initPastEvents(static_cast<unsigned>(x.past_events.size()));
  for (unsigned i = 0; i < x.past_events.size(); ++i) fill(past[i], x.past_events[i]);
  auto fresh = b.initNewEvents(static_cast<unsigned>(x.new_events.size()));
  for (unsigned i = 0; i < x.new_events.size(); ++i) fill(fresh[i], x.new_events[i]);
  b.setCompletionToken(x.completion_token);
  b.setEntity(x.entity);
  DTSD_PUT_PAYLOAD(b, EntityState, x.entity_state);
}

std::pair<core::activity_request, std::uint64_t> read(schema::ActivityWorkItem::Reader r) {
  auto instance = from(r.getOrchestrationInstance());
  core::activity_request request{instance.instance_id, instance.execution_id, r.getTaskId(), str(r.getName()),
                                 DTSD_GET_PAYLOAD(r, Version), DTSD_GET_PAYLOAD(r, Input), {}};
  return {std::move(request), r.getCompletionToken()};
}
void write(schema::ActivityWorkItem::Builder b, const core::activity_request& x, std::uint64_t token) {
  b.setName(text(x.name));
  DTSD_PUT_PAYLOAD(b, Version, x.version);
  DTSD_PUT_PAYLOAD(b, Input, x.input);
  fill(b.initOrchestrationInstance(), core::orchestration_instance{x.instance_id, x.execution_id});
  b.setTaskId(x.task_id);
  b.setCompletionToken(token);
}

core::instance_message read(schema::InstanceMessage::Reader r) { return from(r); }
void write(schema::InstanceMessage::Builder b, const core::instance_message& x) { fill(b, x); }
core::terminate_request read(schema::TerminateRequest::Reader r) { return from(r); }
void write(schema::TerminateRequest::Builder b, const core::terminate_request& x) { fill(b, x); }

core::tag_map read(capnp::List<schema::Tag>::Reader r) { return from(r); }
void write(capnp::List<schema::Tag>::Builder b, const core::tag_map& x) { fill(b, x); }
core::runtime_status read(schema::OrchestrationStatus status) { return from_schema(status); }
schema::OrchestrationStatus write(core::runtime_status status) { return to_schema(status); }

}  // namespace dtsd::codec::wire
