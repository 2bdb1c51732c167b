// Protocol parity: behaviours of the official SDKs that DTS accepts and dtsd used to
// refuse or ignore (each of these hung an orchestration before). Raw protocol calls
// where the JS SDK does not do what another SDK does (the Python SDK's retries).
import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import { Metadata } from "@grpc/grpc-js";
import { OrchestrationStatus, VersionFailureStrategy, VersionMatchStrategy } from "@microsoft/durabletask-js";

import { Duration, openStream, pb, rawEnvironment, stringValue, Timestamp, unary } from "./raw.mjs";
import { Dtsd, makeClient, makeWorker } from "./support.mjs";

const run = Date.now().toString(36);
const Code = { INVALID_ARGUMENT: 3 };
const grpcCode = (e) => e.code ?? e.cause?.code;

function action(id, set) {
  const a = new pb.OrchestratorAction();
  a.setId(id);
  set(a);
  return a;
}
const scheduleTask = (id, name, input) => action(id, (a) => {
  const t = new pb.ScheduleTaskAction();
  t.setName(name);
  t.setInput(stringValue(input));
  a.setScheduletask(t);
});
const createTimer = (id, at) => action(id, (a) => {
  const t = new pb.CreateTimerAction();
  const ts = new Timestamp();
  ts.fromDate(at);
  t.setFireat(ts);
  a.setCreatetimer(t);
});
const complete = (id, result) => action(id, (a) => {
  const c = new pb.CompleteOrchestrationAction();
  c.setOrchestrationstatus(pb.OrchestrationStatus.ORCHESTRATION_STATUS_COMPLETED);
  c.setResult(stringValue(result));
  a.setCompleteorchestration(c);
});

function respond(stub, item, actions) {
  const response = new pb.OrchestratorResponse();
  response.setInstanceid(item.getOrchestratorrequest().getInstanceid());
  response.setCompletiontoken(item.getCompletiontoken());
  for (const a of actions) response.addActions(a);
  return unary(stub, "completeOrchestratorTask", response);
}

const orchestratorFor = (id) => (i) => i.hasOrchestratorrequest() && i.getOrchestratorrequest().getInstanceid() === id;
const activityFor = (id) => (i) => i.hasActivityrequest() && i.getActivityrequest().getOrchestrationinstance().getInstanceid() === id;

describe("protocol parity, raw", () => {
  const env = rawEnvironment();
  let dtsd;
  let stub;
  let client;
  before(() => ({ dtsd, stub, client } = env));
  test("a retry scheduled under the failed attempt's action id runs and completes (the Python SDK's retries)", async () => {
    const work = openStream(stub);
    try {
      const id = await client.scheduleNewOrchestration("PyRetry", 1);
      await respond(stub, await work.next(orchestratorFor(id)), [scheduleTask(1, "Flaky", '"x"')]);

      const first = await work.next(activityFor(id));
      const failed = new pb.ActivityResponse();
      failed.setInstanceid(id);
      failed.setTaskid(1);
      failed.setCompletiontoken(first.getCompletiontoken());
      const details = new pb.TaskFailureDetails();
      details.setErrortype("Error");
      details.setErrormessage("attempt 1 failed");
      failed.setFailuredetails(details);
      await unary(stub, "completeActivityTask", failed);

      // The SDK waits on a retry timer, then schedules the activity again as id 1.
      await respond(stub, await work.next(orchestratorFor(id)), [createTimer(2, new Date(Date.now() + 50))]);
      const afterTimer = await work.next(orchestratorFor(id));
      assert.ok(afterTimer.getOrchestratorrequest().getNeweventsList().some((e) => e.hasTimerfired()));
      await respond(stub, afterTimer, [scheduleTask(1, "Flaky", '"x"')]);

      const second = await work.next(activityFor(id));
      assert.equal(second.getActivityrequest().getTaskid(), 1);
      const ok = new pb.ActivityResponse();
      ok.setInstanceid(id);
      ok.setTaskid(1);
      ok.setCompletiontoken(second.getCompletiontoken());
      ok.setResult(stringValue('"second attempt"'));
      await unary(stub, "completeActivityTask", ok);

      const last = await work.next(orchestratorFor(id));
      const completed = last.getOrchestratorrequest().getNeweventsList().find((e) => e.hasTaskcompleted());
      assert.equal(completed.getTaskcompleted().getTaskscheduledid(), 1);
      assert.equal(completed.getTaskcompleted().getResult().getValue(), '"second attempt"');
      await respond(stub, last, [complete(3, '"done"')]);
      const state = await client.waitForOrchestrationCompletion(id, true, 20);
      assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
      assert.equal(state.serializedOutput, '"done"');
    } finally {
      work.stream.cancel();
    }
  });

  test("an id still outstanding, or used twice in one response, is refused and the item stays held", async () => {
    const work = openStream(stub);
    try {
      const id = await client.scheduleNewOrchestration("PyClash", 1);
      await respond(stub, await work.next(orchestratorFor(id)), [scheduleTask(1, "Slow", '"x"')]);
      await client.raiseOrchestrationEvent(id, "poke", 1);
      const item = await work.next(orchestratorFor(id));
      await assert.rejects(respond(stub, item, [scheduleTask(1, "Other", '"y"')]),
                           (e) => e.code === Code.INVALID_ARGUMENT && /still waiting/.test(e.details));
      await assert.rejects(respond(stub, item, [scheduleTask(7, "A", '"1"'), scheduleTask(7, "B", '"2"')]),
                           (e) => e.code === Code.INVALID_ARGUMENT && /twice/.test(e.details));
      await respond(stub, item, [complete(-1, '"fine"')]);
      assert.equal((await client.waitForOrchestrationCompletion(id, true, 20)).runtimeStatus, OrchestrationStatus.COMPLETED);
    } finally {
      work.stream.cancel();
    }
  });

  test("a worker that streams history gets a large work item without its past events and fetches them", async () => {
    const request = new pb.GetWorkItemsRequest();
    request.addCapabilities(pb.WorkerCapability.WORKER_CAPABILITY_HISTORY_STREAMING);
    const work = openStream(stub, request);
    const big = JSON.stringify("x".repeat(500 * 1024));
    const finishActivity = async (id) => {
      const item = await work.next(activityFor(id));
      const done = new pb.ActivityResponse();
      done.setInstanceid(id);
      done.setTaskid(item.getActivityrequest().getTaskid());
      done.setCompletiontoken(item.getCompletiontoken());
      done.setResult(stringValue(big));
      await unary(stub, "completeActivityTask", done);
    };
    try {
      const id = await client.scheduleNewOrchestration("Heavy", 1);
      await respond(stub, await work.next(orchestratorFor(id)), [scheduleTask(0, "Big", "0"), scheduleTask(1, "Big", "1"), scheduleTask(2, "Big", "2")]);
      for (let i = 0; i < 3; i++) await finishActivity(id);
      // The three results may arrive in one work item or several; take them all.
      let seen = 0;
      while (seen < 3) {
        const item = await work.next(orchestratorFor(id));
        seen += item.getOrchestratorrequest().getNeweventsList().filter((e) => e.hasTaskcompleted()).length;
        await respond(stub, item, seen < 3 ? [] : [scheduleTask(3, "Small", "3")]);
      }
      const small = await work.next(activityFor(id));
      const done = new pb.ActivityResponse();
      done.setInstanceid(id);
      done.setTaskid(3);
      done.setCompletiontoken(small.getCompletiontoken());
      done.setResult(stringValue('"small"'));
      await unary(stub, "completeActivityTask", done);

      // Now the past events are 1.5 MB: they are not in the work item.
      const item = await work.next(orchestratorFor(id));
      const orchestrator = item.getOrchestratorrequest();
      assert.equal(orchestrator.getRequireshistorystreaming(), true);
      assert.equal(orchestrator.getPasteventsList().length, 0);
      assert.ok(orchestrator.getNeweventsList().some((e) => e.hasTaskcompleted()));

      const ask = new pb.StreamInstanceHistoryRequest();
      ask.setInstanceid(id);
      ask.setExecutionid(stringValue(orchestrator.getExecutionid().getValue()));
      ask.setForworkitemprocessing(true);
      const chunks = [];
      await new Promise((resolve, reject) => {
        const call = stub.streamInstanceHistory(ask, new Metadata());
        call.on("data", (chunk) => chunks.push(chunk));
        call.on("error", reject);
        call.on("end", resolve);
      });
      assert.ok(chunks.length >= 2, "a 1.5 MB history comes in chunks of at most 1 MiB");
      const events = chunks.flatMap((c) => c.getEventsList());
      assert.equal(events.filter((e) => e.hasTaskcompleted()).length, 3);
      assert.ok(events[0].hasExecutionstarted() || events[1].hasExecutionstarted());

      // Another execution's history is not handed out as this one's.
      ask.setExecutionid(stringValue("0123456789abcdef0123456789abcdef"));
      await assert.rejects(new Promise((resolve, reject) => {
        const call = stub.streamInstanceHistory(ask, new Metadata());
        call.on("data", () => {});
        call.on("error", reject);
        call.on("end", resolve);
      }), (e) => e.code === 5 /* NOT_FOUND */);

      await respond(stub, item, [complete(4, '"heavy done"')]);
      assert.equal((await client.waitForOrchestrationCompletion(id, true, 20)).runtimeStatus, OrchestrationStatus.COMPLETED);
    } finally {
      work.stream.cancel();
    }
  });

  test("protocol fields: refused with UNIMPLEMENTED when unsupported, honoured otherwise", async () => {
    const work = openStream(stub);
    try {
      const id = await client.scheduleNewOrchestration("Fields", 1);
      let item = await work.next(orchestratorFor(id));
      // A worker-side rewind and chunked completions are not supported: named, refused, nothing changes.
      const rewind = action(1, (a) => a.setRewindorchestration(new pb.RewindOrchestrationAction()));
      await assert.rejects(respond(stub, item, [rewind]),
                           (e) => e.code === 12 /* UNIMPLEMENTED */ && /RewindOrchestrationAction/.test(e.details));
      const partial = new pb.OrchestratorResponse();
      partial.setInstanceid(id);
      partial.setCompletiontoken(item.getCompletiontoken());
      partial.setIspartial(true);
      await assert.rejects(unary(stub, "completeOrchestratorTask", partial),
                           (e) => e.code === 12 && /isPartial/.test(e.details));
      // requiresHistory: the item goes out again, with its history.
      const needs = new pb.OrchestratorResponse();
      needs.setInstanceid(id);
      needs.setCompletiontoken(item.getCompletiontoken());
      needs.setRequireshistory(true);
      await unary(stub, "completeOrchestratorTask", needs);
      item = await work.next(orchestratorFor(id));
      assert.ok(item.getOrchestratorrequest().getNeweventsList().some((e) => e.hasExecutionstarted()));
      // Tags on the completion become the instance's tags.
      const done = complete(2, '"tagged"');
      done.getCompleteorchestration().getTagsMap().set("stage", "final");
      await respond(stub, item, [done]);
      const state = await client.waitForOrchestrationCompletion(id, true, 20);
      assert.equal(state.tags?.stage ?? state.tags?.get?.("stage"), "final");
    } finally {
      work.stream.cancel();
    }

    // A caller's own execution id is kept.
    const start = new pb.CreateInstanceRequest();
    start.setInstanceid(`exec-${run}`);
    start.setName("Anything");
    start.setExecutionid(stringValue("my-execution-1"));
    await unary(stub, "startInstance", start);
    const got = new pb.GetInstanceRequest();
    got.setInstanceid(`exec-${run}`);
    const found = await unary(stub, "getInstance", got);
    assert.equal(found.getOrchestrationstate().getExecutionid().getValue(), "my-execution-1");

    // Another hub named in the query is refused rather than ignored.
    const query = new pb.QueryInstancesRequest();
    const q = new pb.InstanceQuery();
    q.addTaskhubnames(stringValue("elsewhere"));
    query.setQuery(q);
    await assert.rejects(unary(stub, "queryInstances", query), (e) => e.code === 12 && /taskHubNames/.test(e.details));
  });

  test("PurgeInstanceFilter.timeout answers by its deadline with isComplete false; the purge goes on", async () => {
    const prefix = `purge-timeout-${run}-`;
    const count = 300;
    for (let i = 0; i < count; i++) {
      const start = new pb.CreateInstanceRequest();
      start.setInstanceid(`${prefix}${i}`);
      start.setName("NeverRuns");
      await unary(stub, "startInstance", start);
      const end = new pb.TerminateRequest();
      end.setInstanceid(`${prefix}${i}`);
      await unary(stub, "terminateInstance", end);
    }
    const listed = async () => {
      const q = new pb.InstanceQuery();
      q.setInstanceidprefix(stringValue(prefix));
      q.setMaxinstancecount(1000);
      const request = new pb.QueryInstancesRequest();
      request.setQuery(q);
      return (await unary(stub, "queryInstances", request)).getOrchestrationstateList();
    };
    await (async () => {
      for (let i = 0; i < 200; i++) {
        const states = await listed();
        if (states.length === count && states.every((s) => s.getOrchestrationstatus() === pb.OrchestrationStatus.ORCHESTRATION_STATUS_TERMINATED)) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error("instances never all terminated");
    })();
    const purge = new pb.PurgeInstancesRequest();
    const filter = new pb.PurgeInstanceFilter();
    filter.addRuntimestatus(pb.OrchestrationStatus.ORCHESTRATION_STATUS_TERMINATED);
    const timeout = new Duration();
    timeout.setNanos(1);
    filter.setTimeout(timeout);
    purge.setPurgeinstancefilter(filter);
    const answer = await unary(stub, "purgeInstances", purge);
    assert.equal(answer.getIscomplete().getValue(), false);
    assert.ok(answer.getDeletedinstancecount() < count);
    for (let i = 0; i < 200 && (await listed()).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal((await listed()).length, 0, "the purge finished after its answer");
  });

  test("a reuse policy that replaces running instances but keeps terminated ones is refused, as DTS does", async () => {
    const request = new pb.CreateInstanceRequest();
    request.setInstanceid(`policy-${run}`);
    request.setName("Anything");
    const policy = new pb.OrchestrationIdReusePolicy();
    policy.addReplaceablestatus(pb.OrchestrationStatus.ORCHESTRATION_STATUS_RUNNING);
    policy.addReplaceablestatus(pb.OrchestrationStatus.ORCHESTRATION_STATUS_COMPLETED);
    request.setOrchestrationidreusepolicy(policy);
    await assert.rejects(unary(stub, "startInstance", request),
                         (e) => e.code === Code.INVALID_ARGUMENT && /Terminated/.test(e.details));
    assert.equal(await client.getOrchestrationState(`policy-${run}`), undefined);
    policy.addReplaceablestatus(pb.OrchestrationStatus.ORCHESTRATION_STATUS_TERMINATED);
    await unary(stub, "startInstance", request);
    assert.ok(await client.getOrchestrationState(`policy-${run}`));
  });
});

describe("protocol parity, through the SDK", () => {
  let dtsd;
  let client;
  const workers = [];
  const fixed = new Set();
  const ranBy = new Map();

  before(async () => {
    dtsd = await new Dtsd().start();
    client = makeClient(dtsd);
  });
  after(async () => {
    for (const w of workers) await w.stop().catch(() => {});
    await client?.stop().catch(() => {});
    await dtsd?.cleanup();
  });

  async function startWorker(register, options = {}) {
    const worker = makeWorker(dtsd, register, options);
    workers.push(worker);
    await worker.start();
    return worker;
  }
  // Each test brings its own workers (an unfiltered worker takes every kind of
  // work, so one test's worker would be handed another test's orchestrations).
  afterEach(async () => {
    for (const w of workers.splice(0)) await w.stop().catch(() => {});
  });

  test("restart with a new instance id while the original runs leaves the original untouched", async () => {
    await startWorker((w) => {
      w.addNamedOrchestrator("WaitsForGo", async function* (ctx) { return yield ctx.waitForExternalEvent("go"); });
    });
    const id = await client.scheduleNewOrchestration("WaitsForGo", "in", { instanceId: `restart-${run}`, version: "1.5" });
    await client.waitForOrchestrationStart(id, false, 20);
    const copy = await client.restartOrchestration(id, true);
    assert.notEqual(copy, id);
    await client.waitForOrchestrationStart(copy, false, 20);
    const copied = await client.getOrchestrationState(copy);
    assert.equal(copied.name, "WaitsForGo");
    assert.equal(copied.serializedInput, '"in"');
    assert.equal((await client.getOrchestrationState(id)).runtimeStatus, OrchestrationStatus.RUNNING);
    // Under its own id a running instance still cannot be restarted.
    await assert.rejects(client.restartOrchestration(id, false), (e) => grpcCode(e) === 9 /* FAILED_PRECONDITION */);
    await client.raiseOrchestrationEvent(id, "go", "first");
    await client.raiseOrchestrationEvent(copy, "go", "second");
    assert.equal((await client.waitForOrchestrationCompletion(id, true, 20)).serializedOutput, '"first"');
    assert.equal((await client.waitForOrchestrationCompletion(copy, true, 20)).serializedOutput, '"second"');
  });

  test("a rewound parent whose failed sub-orchestration was purged schedules the child again and completes", async () => {
    await startWorker((w) => {
      w.addNamedOrchestrator("FragileChild", async function* (_ctx, key) {
        if (!fixed.has(key)) throw new Error(`${key} is broken`);
        return `${key} fixed`;
      });
      w.addNamedOrchestrator("ParentOfFragile", async function* (ctx, key) {
        return yield ctx.callSubOrchestrator("FragileChild", key, { instanceId: `${ctx.instanceId}-child` });
      });
    });
    const key = `purged-child-${run}`;
    const id = `parent-${key}`;
    await client.scheduleNewOrchestration("ParentOfFragile", key, { instanceId: id });
    assert.equal((await client.waitForOrchestrationCompletion(id, true, 30)).runtimeStatus, OrchestrationStatus.FAILED);
    const purged = await client.purgeOrchestration(`${id}-child`);
    assert.equal(purged.deletedInstanceCount, 1);
    assert.equal(await client.getOrchestrationState(`${id}-child`), undefined);

    fixed.add(key);
    await client.rewindInstance(id, "fixed the child");
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(state.serializedOutput, JSON.stringify(`${key} fixed`));
    assert.equal((await client.getOrchestrationState(`${id}-child`)).runtimeStatus, OrchestrationStatus.COMPLETED);
  });

  test("a work item larger than a worker without history streaming can receive fails the orchestration with the reason", async () => {
    await startWorker((w) => {
      w.addNamedActivity("Big", async () => "y".repeat(900 * 1024));
      w.addNamedOrchestrator("GrowsTooBig", async function* (ctx) {
        for (let i = 0; i < 6; i++) yield ctx.callActivity("Big", i);
        return "never";
      });
    });
    const id = await client.scheduleNewOrchestration("GrowsTooBig", null);
    const state = await client.waitForOrchestrationCompletion(id, true, 60);
    assert.equal(state.runtimeStatus, OrchestrationStatus.FAILED);
    assert.equal(state.failureDetails.errorType, "WorkItemTooLarge");
    assert.match(state.failureDetails.message, /bytes, more than the 4194304 bytes/);
    assert.match(state.failureDetails.message, /HISTORY_STREAMING/);
  });

  test("a strict version mismatch with FailureStrategy.Fail fails the orchestration (the action id -1)", async () => {
    await startWorker((w) => {
      w.addNamedOrchestrator("VersionedFail", async function* () { return "ran"; });
    }, { versioning: { version: "2.0", matchStrategy: VersionMatchStrategy.Strict, failureStrategy: VersionFailureStrategy.Fail } });
    const id = await client.scheduleNewOrchestration("VersionedFail", null, { version: "1.0" });
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.FAILED);
    assert.equal(state.failureDetails.errorType, "VersionMismatch");
  });

  test("work item filters route each orchestration and activity to a worker that runs it; the rest wait", async () => {
    const app = (label, orchestration, activity) => (w) => {
      w.addNamedActivity(activity, async (_ctx, x) => { ranBy.set(x, label); return `${label}:${x}`; });
      w.addNamedOrchestrator(orchestration, async function* (ctx, x) { return yield ctx.callActivity(activity, x); });
    };
    // Two apps share the hub; each worker sends filters made from what it registered.
    await startWorker(app("a", "AppA", "StepA"), { workItemFilters: "auto" });
    await startWorker(app("b", "AppB", "StepB"), { workItemFilters: "auto" });

    const nobody = await client.scheduleNewOrchestration("AppC", "c1");
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(await client.scheduleNewOrchestration(i % 2 ? "AppA" : "AppB", `x${i}`));
    for (const [i, id] of ids.entries()) {
      const state = await client.waitForOrchestrationCompletion(id, true, 30);
      assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
      const label = i % 2 ? "a" : "b";
      assert.equal(state.serializedOutput, JSON.stringify(`${label}:x${i}`));
      assert.equal(ranBy.get(`x${i}`), label);
    }
    // Started before all of those, AppC has no worker: it waited, it was not given
    // to a worker that would have run it with the wrong code.
    assert.equal((await client.getOrchestrationState(nobody)).runtimeStatus, OrchestrationStatus.PENDING);

    // A worker that runs AppC connects: the waiting instance goes to it.
    await startWorker(app("c", "AppC", "StepC"), { workItemFilters: "auto" });
    const state = await client.waitForOrchestrationCompletion(nobody, true, 30);
    assert.equal(state.serializedOutput, JSON.stringify("c:c1"));
  });

  test("a strict-version worker with filters gets only its version; other versions wait for theirs", async () => {
    const versioned = (version) => (w) => {
      w.addNamedOrchestrator("Versioned", async function* (ctx) { return `v${version} ran ${ctx.version ?? "?"}`; });
    };
    await startWorker(versioned("2"), {
      workItemFilters: "auto",
      versioning: { version: "2", matchStrategy: VersionMatchStrategy.Strict, failureStrategy: VersionFailureStrategy.Reject },
    });
    const old = await client.scheduleNewOrchestration("Versioned", null, { version: "1" });
    const current = await client.scheduleNewOrchestration("Versioned", null, { version: "2" });
    const done = await client.waitForOrchestrationCompletion(current, true, 30);
    assert.equal(done.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.match(done.serializedOutput, /^"v2 ran/);
    assert.equal((await client.getOrchestrationState(old)).runtimeStatus, OrchestrationStatus.PENDING);

    await startWorker(versioned("1"), {
      workItemFilters: "auto",
      versioning: { version: "1", matchStrategy: VersionMatchStrategy.Strict, failureStrategy: VersionFailureStrategy.Reject },
    });
    const drained = await client.waitForOrchestrationCompletion(old, true, 30);
    assert.match(drained.serializedOutput, /^"v1 ran/);
  });
});
