@0xa6a6bd359519473c;
# The Durable Task model as dtsd stores it: history events, failure details,
# orchestrator actions, instance records and work items.
#
# Names and enum values mirror the official Durable Task protocol
# (orchestrator_service.proto) so the gRPC gateway maps one to one. Conventions:
# - Times are Int64 nanoseconds since the Unix epoch (fields end in `Ns`).
# - Optional payloads (google.protobuf.StringValue in the protocol) are Text
#   fields: an unset pointer means "null", which is different from "".

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("dtsd::schema");

enum OrchestrationStatus {
  running @0;
  completed @1;
  continuedAsNew @2;
  failed @3;
  canceled @4;
  terminated @5;
  pending @6;
  suspended @7;
}

struct FailureDetails {
  errorType @0 :Text;
  errorMessage @1 :Text;
  stackTrace @2 :Text;
  innerFailure @3 :FailureDetails;
  isNonRetriable @4 :Bool;
}

struct Tag {
  key @0 :Text;
  value @1 :Text;
}

struct OrchestrationInstance {
  instanceId @0 :Text;
  executionId @1 :Text;
}

struct ParentInstanceInfo {
  taskScheduledId @0 :Int32;
  name @1 :Text;
  version @2 :Text;
  orchestrationInstance @3 :OrchestrationInstance;
}

# ---------------------------------------------------------------------------
# History events

struct ExecutionStartedEvent {
  name @0 :Text;
  version @1 :Text;
  input @2 :Text;
  orchestrationInstance @3 :OrchestrationInstance;
  parentInstance @4 :ParentInstanceInfo;   # unset for a top-level orchestration
  scheduledStartNs @5 :Int64;              # 0 means "now"
  tags @6 :List(Tag);
}

struct ExecutionCompletedEvent {
  orchestrationStatus @0 :OrchestrationStatus;
  result @1 :Text;
  failureDetails @2 :FailureDetails;
}

struct ExecutionTerminatedEvent {
  input @0 :Text;
  recurse @1 :Bool;
}

struct TaskScheduledEvent {
  name @0 :Text;
  version @1 :Text;
  input @2 :Text;
  tags @3 :List(Tag);
}

struct TaskCompletedEvent {
  taskScheduledId @0 :Int32;
  result @1 :Text;
}

struct TaskFailedEvent {
  taskScheduledId @0 :Int32;
  failureDetails @1 :FailureDetails;
}

struct SubOrchestrationInstanceCreatedEvent {
  instanceId @0 :Text;
  name @1 :Text;
  version @2 :Text;
  input @3 :Text;
  tags @4 :List(Tag);
}

struct SubOrchestrationInstanceCompletedEvent {
  taskScheduledId @0 :Int32;
  result @1 :Text;
}

struct SubOrchestrationInstanceFailedEvent {
  taskScheduledId @0 :Int32;
  failureDetails @1 :FailureDetails;
}

struct TimerCreatedEvent {
  fireAtNs @0 :Int64;
}

struct TimerFiredEvent {
  fireAtNs @0 :Int64;
  timerId @1 :Int32;
}

struct EventSentEvent {
  instanceId @0 :Text;
  name @1 :Text;
  input @2 :Text;
}

struct EventRaisedEvent {
  name @0 :Text;
  input @1 :Text;
}

struct GenericEvent {
  data @0 :Text;
}

struct HistoryStateEvent {
  orchestrationState @0 :InstanceRecord;
}

struct ContinueAsNewEvent {
  input @0 :Text;
}

struct ExecutionSuspendedEvent {
  input @0 :Text;
}

struct ExecutionResumedEvent {
  input @0 :Text;
}

struct ExecutionRewoundEvent {
  reason @0 :Text;
  parentExecutionId @1 :Text;  # set when a rewound parent rewinds this child
  # Also set then: how the parent created the child, to create it again if it
  # was purged since it failed.
  name @2 :Text;
  version @3 :Text;
  input @4 :Text;
  parentInstance @5 :ParentInstanceInfo;
  tags @6 :List(Tag);
}

struct EntityOperationSignaledEvent {
  requestId @0 :Text;
  operation @1 :Text;
  scheduledTimeNs @2 :Int64;
  input @3 :Text;
  targetInstanceId @4 :Text;
}

struct EntityOperationCalledEvent {
  requestId @0 :Text;
  operation @1 :Text;
  scheduledTimeNs @2 :Int64;
  input @3 :Text;
  parentInstanceId @4 :Text;
  parentExecutionId @5 :Text;
  targetInstanceId @6 :Text;
}

struct EntityOperationCompletedEvent {
  requestId @0 :Text;
  output @1 :Text;
}

struct EntityOperationFailedEvent {
  requestId @0 :Text;
  failureDetails @1 :FailureDetails;
}

struct EntityLockRequestedEvent {
  criticalSectionId @0 :Text;
  lockSet @1 :List(Text);
  position @2 :Int32;
  parentInstanceId @3 :Text;
}

struct EntityLockGrantedEvent {
  criticalSectionId @0 :Text;
}

struct EntityUnlockSentEvent {
  criticalSectionId @0 :Text;
  parentInstanceId @1 :Text;
  targetInstanceId @2 :Text;
}

struct HistoryEvent {
  eventId @0 :Int32;
  timestampNs @1 :Int64;
  union {
    executionStarted @2 :ExecutionStartedEvent;
    executionCompleted @3 :ExecutionCompletedEvent;
    executionTerminated @4 :ExecutionTerminatedEvent;
    taskScheduled @5 :TaskScheduledEvent;
    taskCompleted @6 :TaskCompletedEvent;
    taskFailed @7 :TaskFailedEvent;
    subOrchestrationInstanceCreated @8 :SubOrchestrationInstanceCreatedEvent;
    subOrchestrationInstanceCompleted @9 :SubOrchestrationInstanceCompletedEvent;
    subOrchestrationInstanceFailed @10 :SubOrchestrationInstanceFailedEvent;
    timerCreated @11 :TimerCreatedEvent;
    timerFired @12 :TimerFiredEvent;
    orchestratorStarted @13 :Void;
    orchestratorCompleted @14 :Void;
    eventSent @15 :EventSentEvent;
    eventRaised @16 :EventRaisedEvent;
    genericEvent @17 :GenericEvent;
    historyState @18 :HistoryStateEvent;
    continueAsNew @19 :ContinueAsNewEvent;
    executionSuspended @20 :ExecutionSuspendedEvent;
    executionResumed @21 :ExecutionResumedEvent;
    executionRewound @22 :ExecutionRewoundEvent;
    entityOperationSignaled @23 :EntityOperationSignaledEvent;
    entityOperationCalled @24 :EntityOperationCalledEvent;
    entityOperationCompleted @25 :EntityOperationCompletedEvent;
    entityOperationFailed @26 :EntityOperationFailedEvent;
    entityLockRequested @27 :EntityLockRequestedEvent;
    entityLockGranted @28 :EntityLockGrantedEvent;
    entityUnlockSent @29 :EntityUnlockSentEvent;
  }
}

# ---------------------------------------------------------------------------
# Orchestrator actions (what a worker answers an orchestrator work item with)

struct ScheduleTaskAction {
  name @0 :Text;
  version @1 :Text;
  input @2 :Text;
  tags @3 :List(Tag);
}

struct CreateSubOrchestrationAction {
  instanceId @0 :Text;
  name @1 :Text;
  version @2 :Text;
  input @3 :Text;
  tags @4 :List(Tag);
}

struct CreateTimerAction {
  fireAtNs @0 :Int64;
}

struct SendEventAction {
  instance @0 :OrchestrationInstance;
  name @1 :Text;
  data @2 :Text;
}

struct CompleteOrchestrationAction {
  orchestrationStatus @0 :OrchestrationStatus;
  result @1 :Text;
  details @2 :Text;
  newVersion @3 :Text;
  # Events not yet consumed that continue-as-new carries into the next execution.
  carryoverEvents @4 :List(HistoryEvent);
  failureDetails @5 :FailureDetails;
  tags @6 :List(Tag);                # non-empty: the instance's tags from now on
}

struct TerminateOrchestrationAction {
  instanceId @0 :Text;
  reason @1 :Text;
  recurse @2 :Bool;
}

struct SendEntityMessageAction {
  union {
    entityOperationSignaled @0 :EntityOperationSignaledEvent;
    entityOperationCalled @1 :EntityOperationCalledEvent;
    entityLockRequested @2 :EntityLockRequestedEvent;
    entityUnlockSent @3 :EntityUnlockSentEvent;
  }
}

struct OrchestratorAction {
  id @0 :Int32;
  union {
    scheduleTask @1 :ScheduleTaskAction;
    createSubOrchestration @2 :CreateSubOrchestrationAction;
    createTimer @3 :CreateTimerAction;
    sendEvent @4 :SendEventAction;
    completeOrchestration @5 :CompleteOrchestrationAction;
    terminateOrchestration @6 :TerminateOrchestrationAction;
    sendEntityMessage @7 :SendEntityMessageAction;
  }
}

# ---------------------------------------------------------------------------
# Instance record: what GetInstance/QueryInstances return.

struct InstanceRecord {
  instanceId @0 :Text;
  executionId @1 :Text;
  name @2 :Text;
  version @3 :Text;
  runtimeStatus @4 :OrchestrationStatus;
  input @5 :Text;
  output @6 :Text;
  customStatus @7 :Text;
  createdAtNs @8 :Int64;
  lastUpdatedAtNs @9 :Int64;
  completedAtNs @10 :Int64;        # 0 while not in a terminal status
  scheduledStartNs @11 :Int64;     # 0 means "start now"
  parentInstance @12 :ParentInstanceInfo;
  tags @13 :List(Tag);
  failureDetails @14 :FailureDetails;
  # Entities (instance ids "@name@key") only:
  entityState @15 :Text;               # null: the entity has no state
  entityLockedBy @16 :Text;            # the orchestration holding the lock, or empty
  entityLockId @17 :Text;              # its critical section id
  entityDeferred @18 :List(HistoryEvent);  # messages waiting for the lock or their time
}

# ---------------------------------------------------------------------------
# Work items (pushed to workers)

struct OrchestratorWorkItem {
  instanceId @0 :Text;
  executionId @1 :Text;
  pastEvents @2 :List(HistoryEvent);
  newEvents @3 :List(HistoryEvent);
  completionToken @4 :UInt64;
  entity @5 :Bool;          # an entity batch: newEvents are its operations
  entityState @6 :Text;     # its state (unset: none)
}

struct ActivityWorkItem {
  name @0 :Text;
  version @1 :Text;
  input @2 :Text;
  orchestrationInstance @3 :OrchestrationInstance;
  taskId @4 :Int32;
  completionToken @5 :UInt64;
}

struct OrchestratorCompletion {
  instanceId @0 :Text;
  completionToken @1 :UInt64;
  actions @2 :List(OrchestratorAction);
  customStatus @3 :Text;
  entity @4 :EntityBatchResult;  # set when the work item was an entity batch
}

# What a worker made of an entity batch: one result per operation it ran (in
# order), the messages to send, the new state; or the whole batch failed.
struct EntityBatchResult {
  results @0 :List(EntityOperationResult);
  actions @1 :List(EntityAction);
  state @2 :Text;
  failure @3 :FailureDetails;
}

struct EntityOperationResult {
  union {
    success @0 :Text;          # the result (unset: null)
    failure @1 :FailureDetails;
  }
  succeeded @2 :Bool;
}

struct EntityAction {
  union {
    signal :group {
      instanceId @0 :Text;
      operation @1 :Text;
      input @2 :Text;
      scheduledNs @3 :Int64;
    }
    startOrchestration :group {
      instanceId @4 :Text;
      name @5 :Text;
      version @6 :Text;
      input @7 :Text;
      scheduledNs @8 :Int64;
    }
  }
}

struct ActivityCompletion {
  instanceId @0 :Text;
  executionId @1 :Text;
  taskId @2 :Int32;
  completionToken @3 :UInt64;
  union {
    result @4 :Text;
    failureDetails @5 :FailureDetails;
  }
}
