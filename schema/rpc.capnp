@0x9a34aee1d6588c09;
# The native Cap'n Proto API of dtsd (port 8081): clients and worker sessions.
# Errors are Cap'n Proto exceptions whose description starts with the dtsd error
# code and a colon ("not_found: no instance with id 'x'"), so SDKs can map them.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("dtsd::schema");

using Model = import "model.capnp";
using Log = import "log.capnp";

struct InstanceQuery {
  statuses @0 :List(Model.OrchestrationStatus);
  createdFromNs @1 :Int64;          # 0: no lower bound
  createdToNs @2 :Int64;            # 0: no upper bound
  namePrefix @3 :Text;
  instanceIdPrefix @4 :Text;
  tags @5 :List(Model.Tag);
  pageSize @6 :UInt32;
  continuationToken @7 :Text;
  fetchPayloads @8 :Bool;
  entities @9 :Bool;                # entities (@name@key) instead of orchestrations
  version @10 :Text;                # only instances of this version (unset: any)
}

# What a worker session takes (see src/core/work_filter.hpp). Unless `filtered`
# is set it takes everything; otherwise only the names listed per kind (an empty
# list: none of that kind), at the listed versions (none listed: any).
struct NameFilter {
  name @0 :Text;
  versions @1 :List(Text);
}
struct WorkFilters {
  filtered @0 :Bool;
  orchestrations @1 :List(NameFilter);
  activities @2 :List(NameFilter);
  entities @3 :List(NameFilter);
}

# A connected worker session, as `dtsctl worker list` shows it.
struct WorkerInfo {
  session @0 :UInt64;
  worker @1 :Text;
  orchestratorSlots @2 :UInt32;
  activitySlots @3 :UInt32;
  entitySlots @4 :UInt32;
  orchestratorsInUse @5 :UInt32;
  activitiesInUse @6 :UInt32;
  entitiesInUse @7 :UInt32;
  filters @8 :WorkFilters;
}

# A partition of a hub, as `dtsctl taskhub status` shows it.
struct PartitionInfo {
  index @0 :UInt32;
  stalled @1 :Text;           # empty while it writes; else why its commits fail
  stalledSinceNs @2 :Int64;
  failedCommits @3 :UInt64;   # since dtsd started
  commits @4 :UInt64;         # batches made durable since dtsd started
  committedChanges @5 :UInt64;  # instance changes in those batches
  commitNsTotal @6 :Int64;    # handing batches over to their durability, summed
  commitNsMax @7 :Int64;
  readyOrchestrators @8 :UInt64;  # work waiting for a worker, by kind
  readyActivities @9 :UInt64;
  readyEntities @10 :UInt64;
  liveInstances @11 :UInt64;  # instances held in memory
  oldestReadyWaitNs @12 :Int64;  # how long the longest-waiting ready work item has waited (0: none)
  unacknowledgedMessages @13 :UInt64;  # messages sent to instances, not yet acknowledged by their partition
}

struct WorkItem {
  union {
    orchestrator @0 :Model.OrchestratorWorkItem;
    activity @1 :Model.ActivityWorkItem;
  }
}

# Implemented by the worker: the server pushes work into it.
interface WorkSink {
  push @0 (items :List(WorkItem)) -> stream;
  # Answering it tells dtsd the worker is alive (one whose leases expired gets
  # work again).
  keepAlive @1 () -> ();
  # dtsd closed the session (the worker let its leases expire and answered nothing
  # for a lease period): what it holds is given to others; connect again.
  end @2 (reason :Text) -> ();
}

# A worker's session: completions go back through it. Dropping it (or the
# connection) gives every unfinished item back for re-dispatch.
interface WorkerSession {
  completeOrchestrator @0 (completion :Model.OrchestratorCompletion) -> ();
  completeActivity @1 (completion :Model.ActivityCompletion) -> ();
  abandonOrchestrator @2 (instanceId :Text, completionToken :UInt64) -> ();
  abandonActivity @3 (item :Model.ActivityWorkItem) -> ();
  # Several answers in one call (what a worker has ready at once). Each is applied
  # as if sent alone; the call returns once every one is durable or refused, and
  # names each refused one.
  completeMany @4 (orchestrators :List(Model.OrchestratorCompletion),
                   activities :List(Model.ActivityCompletion)) -> (refusals :List(Refusal));
}

# An answer the server did not take: its instance and why ("<code>: <message>").
struct Refusal {
  instanceId @0 :Text;
  error @1 :Text;
}

interface Scheduler {
  startInstance @0 (taskHub :Text, request :Log.StartRequest) -> (instanceId :Text, executionId :Text);
  getInstance @1 (taskHub :Text, instanceId :Text, withHistory :Bool)
      -> (found :Bool, record :Model.InstanceRecord, history :List(Model.HistoryEvent));
  # Returns once the instance has started (untilCompleted false) or reached a
  # terminal status (true). No server-side time limit: the client cancels.
  waitForInstance @2 (taskHub :Text, instanceId :Text, untilCompleted :Bool)
      -> (record :Model.InstanceRecord);
  raiseEvent @3 (taskHub :Text, instanceId :Text, name :Text, input :Text) -> ();
  terminate @4 (taskHub :Text, instanceId :Text, reason :Text, recurse :Bool) -> ();
  suspend @5 (taskHub :Text, instanceId :Text, reason :Text) -> ();
  resume @6 (taskHub :Text, instanceId :Text, reason :Text) -> ();
  # A failed orchestration resumes from its last good point.
  rewind @14 (taskHub :Text, instanceId :Text, reason :Text) -> ();
  purge @7 (taskHub :Text, instanceId :Text, recursive :Bool) -> (purged :UInt64);
  query @8 (taskHub :Text, query :InstanceQuery)
      -> (instances :List(Model.InstanceRecord), continuationToken :Text);
  listTaskHubs @9 () -> (names :List(Text));
  createTaskHub @10 (name :Text, partitionCount :UInt32) -> ();
  # A hub that still holds instances is deleted only with `force`.
  deleteTaskHub @11 (name :Text, force :Bool) -> ();
  openWorkerSession @12 (taskHub :Text, orchestratorConcurrency :UInt32,
                         activityConcurrency :UInt32, sink :WorkSink, entityConcurrency :UInt32,
                         filters :WorkFilters, worker :Text, thisNodeOnly :Bool)
      -> (session :WorkerSession);
  # thisNodeOnly: in a cluster, the session gets the work of this node's own
  # partitions only (no sessions are relayed to the other nodes for it): for a
  # worker that connects to every node itself, saving the relay hop.
  # Purges every terminal instance the query's filters match (statuses, created
  # range, name and id prefixes, tags); paging fields are ignored.
  purgeWhere @13 (taskHub :Text, query :InstanceQuery, recursive :Bool) -> (purged :UInt64);
  # Entities: read them with getInstance (the record has their state and lock) and
  # query with `entities` set.
  signalEntity @15 (taskHub :Text, instanceId :Text, operation :Text, input :Text, scheduledNs :Int64) -> ();
  cleanEntityStorage @16 (taskHub :Text, continuationToken :Text, removeEmpty :Bool, releaseOrphanedLocks :Bool)
      -> (continuationToken :Text, removed :UInt32, released :UInt32);
  # The hub's connected worker sessions (native and gRPC), with their filters.
  listWorkers @17 (taskHub :Text) -> (workers :List(WorkerInfo));
  listPartitions @18 (taskHub :Text) -> (partitions :List(PartitionInfo));
  # A finished orchestration again, with its name, version, input and tags: under
  # its own id (it must have ended) or a new random one. Answers the id it runs under.
  restart @19 (taskHub :Text, instanceId :Text, newId :Bool) -> (instanceId :Text);
  # Another node of the cluster: the link its partitions send messages over.
  # Refused by a dtsd that is not a cluster node.
  # token: the node's own (with --auth), signed with the cluster's shared key.
  nodeLink @20 (fromNode :Text, token :Text) -> (link :NodeLink);
  # With --auth, every other call is refused (unauthenticated) until the client
  # presents a token here: the answer is a Scheduler that acts with its grant
  # (role and task hubs), checked again on every call (expiry, revocation).
  authenticate @21 (token :Text) -> (scheduler :Scheduler);
  # The hub's retention policy: JSON as core/retention.hpp writes it (DTS's
  # {"retentionPolicies": [...]}); `own` false: dtsd's default (--retention-default).
  getRetention @22 (taskHub :Text) -> (policy :Text, own :Bool);
  # Makes `policy` the hub's own (hasPolicy false: back to dtsd's default); answers
  # the policy in force once every partition has it durably.
  setRetention @23 (taskHub :Text, hasPolicy :Bool, policy :Text) -> (policy :Text, own :Bool);
  # A command for the hub's schedules: JSON {"verb": create|update|delete|pause|
  # resume|trigger|get|list, "scheduleId", "schedule": {...}, "note"} (core/schedule.hpp);
  # answers the schedules it concerns, as they are after it, as a JSON array.
  schedule @24 (taskHub :Text, command :Text) -> (schedules :Text);
}

# Between the nodes of a cluster: partition-to-partition messages of a task hub.
# Nothing here is acknowledged end to end: a sender keeps each outbox entry until
# the receiver's receipt comes back (by the same link), and sends it again until
# then; the receiver applies each (source partition, sequence) once.
interface NodeLink {
  # An outbox entry (Log.OutboxEntry, as the store encodes it) for `partition`.
  deliver @0 (taskHub :Text, partition :UInt32, entry :Data) -> ();
  # `partition`'s messages to partition `from` are durable up to `sequence`.
  receipt @1 (taskHub :Text, partition :UInt32, from :UInt32, sequence :UInt64) -> ();

  # A client's call for one instance or partition, forwarded by the node the client
  # called to the node that serves it. Served here only: a partition not served
  # here (it moved again) is refused with "unavailable: ...", never forwarded on.
  start @2 (taskHub :Text, request :Log.StartRequest) -> (instanceId :Text, executionId :Text);
  read @3 (taskHub :Text, instanceId :Text, withHistory :Bool)
      -> (found :Bool, record :Model.InstanceRecord, history :List(Model.HistoryEvent));
  # Answers once the instance started (or ended) durably; cancelling the call
  # forgets the wait.
  await @4 (taskHub :Text, instanceId :Text, untilCompleted :Bool) -> (record :Model.InstanceRecord);
  apply @5 (taskHub :Text, change :Change) -> ();
  purge @6 (taskHub :Text, instanceId :Text, children :Bool) -> (purged :Bool, children :List(Text));
  query @7 (taskHub :Text, partition :UInt32, query :InstanceQuery)
      -> (instances :List(Model.InstanceRecord), continuationToken :Text);
  # One partition's top rows of a list and its counts (core::list_query).
  list @8 (taskHub :Text, partition :UInt32, query :ListQuery) -> (page :ListPage);
  # A worker connected to another node gets this node's work too, through a
  # session that node opens here on its behalf; its answers for this node's
  # partitions come back through the session.
  openSession @9 (taskHub :Text, orchestratorSlots :UInt32, activitySlots :UInt32, entitySlots :UInt32,
                  filters :WorkFilters, worker :Text, sink :WorkSink) -> (session :WorkerSession);
  # One partition's retention policy (JSON); with `set`, made `policy` first
  # (hasPolicy false: dtsd's default).
  retention @10 (taskHub :Text, partition :UInt32, set :Bool, hasPolicy :Bool, policy :Text)
      -> (policy :Text, own :Bool);
  # A command for one partition's schedules (JSON, core/schedule.hpp); answers the
  # schedules it concerns (a JSON array).
  schedule @11 (taskHub :Text, partition :UInt32, command :Text) -> (schedules :Text);
}

struct TimeWindow {
  hasFrom @0 :Bool;
  fromNs @1 :Int64;
  hasTo @2 :Bool;
  toNs @3 :Int64;
}

struct ListSort {
  column @0 :UInt8;  # core::list_column
  descending @1 :Bool;
}

struct ListQuery {
  entities @0 :Bool;
  statuses @1 :List(Model.OrchestrationStatus);
  idPart @2 :Text;
  namePart @3 :Text;
  versionPart @4 :Text;
  tagPart @5 :Text;
  nameExact @6 :Text;
  namePrefix @7 :Text;
  keyPart @8 :Text;
  # created, last updated, started, completed: in this order.
  windows @9 :List(TimeWindow);
  topLevelOnly @10 :Bool;
  sort @11 :List(ListSort);
  rows @12 :UInt64;
}

struct ListRow {
  instanceId @0 :Text;
  name @1 :Text;
  version @2 :Text;
  tags @3 :Text;
  status @4 :Model.OrchestrationStatus;
  createdAtNs @5 :Int64;
  lastUpdatedAtNs @6 :Int64;
  startAtNs @7 :Int64;
  completedAtNs @8 :Int64;
}

struct ListPage {
  rows @0 :List(ListRow);
  total @1 :UInt64;
  byStatus @2 :List(UInt64);  # by core::runtime_status
}

# A client's change to one instance (service::change).
struct Change {
  instanceId @0 :Text;
  # Payloads: unset is none.
  union {
    raiseEvent :group {
      name @1 :Text;
      input @2 :Text;
    }
    terminate @3 :Log.TerminateRequest;
    suspend @4 :Text;   # the reason
    resume @5 :Text;
    rewind @6 :Text;
    deliver @7 :Log.InstanceMessage;
    deleteEntity @8 :Void;
  }
}
