@0x893beaaa94b9fe47;
# Partition storage records: the partition log and the materialized rows that sit
# beside it in the same LMDB environment. This is on-disk format: append fields,
# never renumber.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("dtsd::schema");

using Model = import "model.capnp";

# A request to start (or replace) an orchestration instance.
struct StartRequest {
  instanceId @0 :Text;
  executionId @1 :Text;
  name @2 :Text;
  version @3 :Text;
  input @4 :Text;
  tags @5 :List(Model.Tag);
  scheduledStartNs @6 :Int64;
  parentInstance @7 :Model.ParentInstanceInfo;
  # OrchestrationIdReusePolicy.replaceableStatus: an existing instance in one of
  # these statuses is replaced; in any other status the start is rejected.
  replaceableStatuses @8 :List(Model.OrchestrationStatus);
}

struct TerminateRequest {
  reason @0 :Text;
  recurse @1 :Bool;
}

# A message from one instance to another (maybe in another partition), written to
# the sender's outbox in the sender's commit.
struct InstanceMessage {
  targetInstanceId @0 :Text;
  union {
    start @1 :StartRequest;
    event @2 :Model.HistoryEvent;
    terminate @3 :TerminateRequest;
  }
  # When set, only this execution of the target takes the message.
  targetExecutionId @4 :Text;
}

struct OutboxEntry {
  sequence @0 :UInt64;              # per source partition, strictly increasing
  sourcePartition @1 :UInt32;
  destinationPartition @2 :UInt32;
  message @3 :InstanceMessage;
  # The sequence of the source's previous message to the same destination (0: none
  # was unacknowledged when this one was made). The receiver applies a message only
  # once it has applied that one: a message that overtook an earlier one (lost on a
  # link to another node) waits for its resend instead of hiding it as a duplicate.
  previous @4 :UInt64;
}

# The materialized row of one instance, key = instance id.
struct StoredInstance {
  record @0 :Model.InstanceRecord;
  historyCount @1 :UInt32;          # history events of the current execution
  inboxFirstSequence @2 :UInt64;    # key of the oldest row in `inbox`
  inboxCount @3 :UInt32;            # rows in `inbox` for this instance
  # Keys (segment sequences) of this instance's HistoryChunks in `history`, oldest
  # first. History is written in append order, one chunk per instance per commit,
  # so the rows of one commit are contiguous on disk; long lists are compacted.
  historySegments @4 :List(UInt64);
}

# The history events one commit appended to one instance.
# Key in `history`: segment sequence (UInt64, big-endian) ++ instance id.
struct HistoryChunk {
  firstIndex @0 :UInt32;            # position of events[0] in the instance history
  events @1 :List(Model.HistoryEvent);
}

struct TimerEntry {
  instanceId @0 :Text;
  executionId @1 :Text;
  timerId @2 :Int32;
  fireAtNs @3 :Int64;
}

struct ActivityEntry {
  instanceId @0 :Text;
  executionId @1 :Text;
  taskId @2 :Int32;
  name @3 :Text;
  version @4 :Text;
  input @5 :Text;
  tags @6 :List(Model.Tag);
}

# One input the partition applied. Replaying the log from an empty store through
# the deterministic core rebuilds the materialized state.
struct PartitionEvent {
  timestampNs @0 :Int64;
  union {
    instanceStarted @1 :StartRequest;
    orchestratorCompleted :group {
      completion @2 :Model.OrchestratorCompletion;
      newExecutionId @3 :Text;      # used when the completion continues as new
      consumedEventCount @18 :UInt32;  # inbox events the worker was given
      startedAtNs @19 :Int64;       # the OrchestratorStarted time the worker was given
    }
    activityCompleted @4 :Model.ActivityCompletion;
    timerFired @5 :TimerEntry;
    messageReceived @6 :OutboxEntry;
    eventRaised :group {
      instanceId @7 :Text;
      name @8 :Text;
      input @9 :Text;
    }
    terminated :group {
      instanceId @10 :Text;
      request @11 :TerminateRequest;
    }
    suspended :group {
      instanceId @12 :Text;
      reason @13 :Text;
    }
    resumed :group {
      instanceId @14 :Text;
      reason @15 :Text;
    }
    purged @16 :Text;               # instance id
    opaque @17 :Data;               # for tests and benchmarks of the store alone
    rewound :group {
      instanceId @20 :Text;
      reason @21 :Text;
    }
    delivered @22 :InstanceMessage;  # from a client (entity signals, lock releases)
    entityDeleted @23 :Text;        # entity id: deleted with its state, by a client
  }
}

struct LogRecord {
  sequence @0 :UInt64;
  committedAtNs @1 :Int64;
  events @2 :List(PartitionEvent);
}
