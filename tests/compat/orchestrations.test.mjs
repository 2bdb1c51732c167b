// Orchestration features through the official JS SDK (client and worker) against a
// real dtsd: the app code is what a user of the DTS emulator would write.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { HistoryEventType, OrchestrationStatus, PurgeInstanceCriteria, RetryPolicy, whenAll, whenAny } from "@microsoft/durabletask-js";

import { CITIES, eventually, sharedEnvironment } from "./support.mjs";

const run = Date.now().toString(36);
/** The gRPC status of an SDK error (some client methods wrap the gRPC error as `cause`). */
const grpcCode = (e) => e.code ?? e.cause?.code;
const attempts = new Map();  // Activity attempts per key, for the retry test.
const fixed = new Set();     // Keys whose BrokenUntilFixed activity works.

function register(w) {
  w.addNamedActivity("SayHello", async (_ctx, city) => `Hello, ${city}!`);
  w.addNamedActivity("Flaky", async (_ctx, key) => {
    const n = (attempts.get(key) ?? 0) + 1;
    attempts.set(key, n);
    if (n < 3) throw new Error(`attempt ${n} of ${key} failed`);
    return `succeeded on attempt ${n}`;
  });
  w.addNamedActivity("AlwaysFails", async () => { throw new TypeError("the city is closed"); });
  // Fails until the test "fixes" it (the bug a rewind is for).
  w.addNamedActivity("BrokenUntilFixed", async (_ctx, key) => {
    if (!fixed.has(key)) throw new Error(`${key} is broken`);
    attempts.set(key, (attempts.get(key) ?? 0) + 1);
    return `${key} works`;
  });

  w.addNamedOrchestrator("HelloCities", async function* (ctx) {
    const out = [];
    for (const city of ["Tokyo", "Seattle", "London", "Paris", "Cairo"]) out.push(yield ctx.callActivity("SayHello", city));
    return out;
  });
  w.addNamedOrchestrator("FanOut", async function* (ctx, n) {
    const tasks = [];
    for (let i = 0; i < n; i++) tasks.push(ctx.callActivity("SayHello", `city-${i}`));
    const results = yield whenAll(tasks);
    return results.length;
  });
  w.addNamedOrchestrator("Sleeper", async function* (ctx, ms) {
    yield ctx.createTimer(new Date(ctx.currentUtcDateTime.getTime() + ms));
    return "woke up";
  });
  w.addNamedOrchestrator("Approval", async function* (ctx, timeoutMs) {
    const approval = ctx.waitForExternalEvent("Approval");
    const timeout = ctx.createTimer(new Date(ctx.currentUtcDateTime.getTime() + timeoutMs));
    const winner = yield whenAny([approval, timeout]);
    return winner === approval ? `approved: ${approval.getResult()}` : "timed out";
  });
  w.addNamedOrchestrator("Child", async function* (_ctx, n) { return n * 2; });
  w.addNamedOrchestrator("Parent", async function* (ctx, n) {
    const doubled = yield ctx.callSubOrchestrator("Child", n, { instanceId: `${ctx.instanceId}-child` });
    return doubled + 1;
  });
  w.addNamedOrchestrator("Counter", async function* (ctx, n) {
    if (n < 5) {
      ctx.continueAsNew(n + 1, false);
      return;
    }
    return n;
  });
  w.addNamedOrchestrator("Retrying", async function* (ctx, key) {
    return yield ctx.callActivity("Flaky", key, {
      retry: new RetryPolicy({ maxNumberOfAttempts: 3, firstRetryIntervalInMilliseconds: 100 }),
    });
  });
  w.addNamedOrchestrator("NeedsFix", async function* (ctx, key) {
    const before = yield ctx.callActivity("SayHello", "Tokyo");
    const fixedResult = yield ctx.callActivity("BrokenUntilFixed", key);
    return [before, fixedResult];
  });
  w.addNamedOrchestrator("ParentOfBroken", async function* (ctx, key) {
    const child = yield ctx.callSubOrchestrator("NeedsFix", key, { instanceId: `${ctx.instanceId}-child` });
    return { child };
  });
  w.addNamedOrchestrator("Failing", async function* (ctx) {
    return yield ctx.callActivity("AlwaysFails");
  });
  w.addNamedOrchestrator("Gate", async function* (ctx, input) {
    ctx.setCustomStatus({ step: "waiting", input });
    const value = yield ctx.waitForExternalEvent("Open");
    ctx.setCustomStatus({ step: "done" });
    return `opened with ${value}`;
  });
}

describe("orchestrations through the official JS SDK", () => {
  const env = sharedEnvironment(register);

  test("hello cities: five activities in sequence; the history is what DTS stores", async () => {
    const id = await env.client.scheduleNewOrchestration("HelloCities");
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.deepEqual(JSON.parse(state.serializedOutput), CITIES.map((c) => `Hello, ${c}!`));

    const history = await env.client.getOrchestrationHistory(id);
    const kinds = history.map((e) => e.type);
    assert.equal(kinds.filter((k) => k === HistoryEventType.TaskScheduled).length, 5);
    assert.equal(kinds.filter((k) => k === HistoryEventType.TaskCompleted).length, 5);
    assert.ok(!kinds.includes(HistoryEventType.OrchestratorCompleted), "no OrchestratorCompleted events stored");
    const started = history.find((e) => e.type === HistoryEventType.ExecutionStarted);
    assert.match(started.orchestrationInstance.executionId, /^[0-9a-f]{32}$/);
  });

  test("fan-out/fan-in over 50 activities", async () => {
    const id = await env.client.scheduleNewOrchestration("FanOut", 50);
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(JSON.parse(state.serializedOutput), 50);
  });

  test("a durable timer fires no earlier than asked", async () => {
    const began = Date.now();
    const id = await env.client.scheduleNewOrchestration("Sleeper", 1500);
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(JSON.parse(state.serializedOutput), "woke up");
    assert.ok(Date.now() - began >= 1400, `finished after ${Date.now() - began} ms`);
    const kinds = (await env.client.getOrchestrationHistory(id)).map((e) => e.type);
    assert.ok(kinds.includes(HistoryEventType.TimerCreated) && kinds.includes(HistoryEventType.TimerFired));
  });

  test("external events: delivered before the timeout, or the timeout wins", async () => {
    const approved = await env.client.scheduleNewOrchestration("Approval", 60000);
    await env.client.waitForOrchestrationStart(approved, false, 30);
    await env.client.raiseOrchestrationEvent(approved, "Approval", "by alice");
    let state = await env.client.waitForOrchestrationCompletion(approved, true, 30);
    assert.equal(JSON.parse(state.serializedOutput), "approved: by alice");

    const ignored = await env.client.scheduleNewOrchestration("Approval", 300);
    state = await env.client.waitForOrchestrationCompletion(ignored, true, 30);
    assert.equal(JSON.parse(state.serializedOutput), "timed out");
  });

  test("sub-orchestrations: the child's start event names its parent", async () => {
    const id = `parent-${run}`;
    await env.client.scheduleNewOrchestration("Parent", 20, { instanceId: id });
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(JSON.parse(state.serializedOutput), 41);
    const childHistory = await env.client.getOrchestrationHistory(`${id}-child`);
    const started = childHistory.find((e) => e.type === HistoryEventType.ExecutionStarted);
    assert.equal(started.parentInstance?.orchestrationInstance?.instanceId, id);
  });

  test("continue-as-new restarts with the new input until done", async () => {
    const id = await env.client.scheduleNewOrchestration("Counter", 0);
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(JSON.parse(state.serializedOutput), 5);
  });

  test("retries: a flaky activity succeeds on its third attempt", async () => {
    const id = await env.client.scheduleNewOrchestration("Retrying", `flaky-${run}`);
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(JSON.parse(state.serializedOutput), "succeeded on attempt 3");
  });

  test("failure details: an activity's error fails the orchestration with its type and message", async () => {
    const id = await env.client.scheduleNewOrchestration("Failing");
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.FAILED);
    assert.match(state.failureDetails.message, /the city is closed/);
    assert.ok(state.failureDetails.errorType.length > 0);
    assert.throws(() => state.raiseIfFailed());
  });

  test("rewind: a failed orchestration resumes from its last good point", async () => {
    const key = `rewind-${run}`;
    const id = await env.client.scheduleNewOrchestration("NeedsFix", key);
    let state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.FAILED);
    await assert.rejects(env.client.rewindInstance(`missing-${run}`, "x"), (e) => grpcCode(e) === 5 /* NOT_FOUND */);
    const done = await env.client.scheduleNewOrchestration("FanOut", 1);
    await env.client.waitForOrchestrationCompletion(done, true, 30);
    await assert.rejects(env.client.rewindInstance(done, "not failed"), (e) => grpcCode(e) === 9 /* FAILED_PRECONDITION */);

    fixed.add(key);
    await env.client.rewindInstance(id, "deployed the fix");
    state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.deepEqual(JSON.parse(state.serializedOutput), ["Hello, Tokyo!", `${key} works`]);
    const history = await env.client.getOrchestrationHistory(id);
    const kinds = history.map((e) => e.type);
    assert.equal(kinds.filter((k) => k === HistoryEventType.TaskScheduled).length, 2, "Tokyo kept, the fixed task scheduled again");
    assert.ok(!kinds.includes(HistoryEventType.TaskFailed));
    assert.ok(kinds.includes(HistoryEventType.ExecutionRewound));
  });

  test("rewind: a parent rewinds its failed sub-orchestration too", async () => {
    const key = `rewind-child-${run}`;
    const id = `parent-of-broken-${run}`;
    await env.client.scheduleNewOrchestration("ParentOfBroken", key, { instanceId: id });
    assert.equal((await env.client.waitForOrchestrationCompletion(id, true, 30)).runtimeStatus, OrchestrationStatus.FAILED);
    assert.equal((await env.client.getOrchestrationState(`${id}-child`)).runtimeStatus, OrchestrationStatus.FAILED);
    fixed.add(key);
    await env.client.rewindInstance(id, "fixed the child");
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.deepEqual(JSON.parse(state.serializedOutput), { child: ["Hello, Tokyo!", `${key} works`] });
    assert.equal((await env.client.getOrchestrationState(`${id}-child`)).runtimeStatus, OrchestrationStatus.COMPLETED);
  });

  test("custom status is visible while the orchestration runs", async () => {
    const id = await env.client.scheduleNewOrchestration("Gate", "x");
    const running = await eventually(async () => {
      const s = await env.client.getOrchestrationState(id, true);
      return s?.serializedCustomStatus ? s : undefined;
    }, 20000, "custom status");
    assert.equal(running.runtimeStatus, OrchestrationStatus.RUNNING);
    assert.deepEqual(JSON.parse(running.serializedCustomStatus), { step: "waiting", input: "x" });
    await env.client.raiseOrchestrationEvent(id, "Open", 7);
    const done = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(JSON.parse(done.serializedOutput), "opened with 7");
    assert.deepEqual(JSON.parse(done.serializedCustomStatus), { step: "done" });
  });

  test("terminate ends a running orchestration with the given output", async () => {
    const id = await env.client.scheduleNewOrchestration("Gate", "t");
    await env.client.waitForOrchestrationStart(id, false, 30);
    await env.client.terminateOrchestration(id, "stopped by test");
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.TERMINATED);
    assert.equal(JSON.parse(state.serializedOutput), "stopped by test");
  });

  test("suspend holds events until resume", async () => {
    const id = await env.client.scheduleNewOrchestration("Gate", "s");
    await eventually(async () => (await env.client.getOrchestrationState(id))?.runtimeStatus === OrchestrationStatus.RUNNING,
                     20000, "running");
    await env.client.suspendOrchestration(id);
    await eventually(async () => (await env.client.getOrchestrationState(id))?.runtimeStatus === OrchestrationStatus.SUSPENDED,
                     20000, "suspended");
    await env.client.raiseOrchestrationEvent(id, "Open", 1);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await env.client.getOrchestrationState(id)).runtimeStatus, OrchestrationStatus.SUSPENDED);
    await env.client.resumeOrchestration(id);
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(JSON.parse(state.serializedOutput), "opened with 1");
  });

  test("restart: under the same id, and under a new one", async () => {
    const id = `restart-${run}`;
    await env.client.scheduleNewOrchestration("FanOut", 3, { instanceId: id });
    await env.client.waitForOrchestrationCompletion(id, true, 30);
    const same = await env.client.restartOrchestration(id, false);
    assert.equal(same, id);
    let state = await env.client.waitForOrchestrationCompletion(same, true, 30);
    assert.equal(JSON.parse(state.serializedOutput), 3);
    const fresh = await env.client.restartOrchestration(id, true);
    assert.notEqual(fresh, id);
    state = await env.client.waitForOrchestrationCompletion(fresh, true, 30);
    assert.equal(JSON.parse(state.serializedOutput), 3);
    assert.equal(state.name, "FanOut");
  });

  test("purge: one instance, then by filter; running instances are refused", async () => {
    const id = await env.client.scheduleNewOrchestration("FanOut", 1);
    await env.client.waitForOrchestrationCompletion(id, true, 30);
    const one = await env.client.purgeOrchestration(id);
    assert.equal(one.deletedInstanceCount, 1);
    assert.equal(await env.client.getOrchestrationState(id), undefined);
    assert.equal((await env.client.purgeOrchestration(id)).deletedInstanceCount, 0);

    const running = await env.client.scheduleNewOrchestration("Gate", "p");
    await env.client.waitForOrchestrationStart(running, false, 30);
    await assert.rejects(env.client.purgeOrchestration(running), (e) => e.code === 9 /* FAILED_PRECONDITION */);

    const since = new Date();
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(await env.client.scheduleNewOrchestration("FanOut", 1));
    for (const each of ids) await env.client.waitForOrchestrationCompletion(each, true, 30);
    const criteria = new PurgeInstanceCriteria();
    criteria.setCreatedTimeFrom(since);
    criteria.setRuntimeStatusList([OrchestrationStatus.COMPLETED]);
    const many = await env.client.purgeOrchestration(criteria);
    assert.equal(many.deletedInstanceCount, 3);
    for (const each of ids) assert.equal(await env.client.getOrchestrationState(each), undefined);
    assert.equal((await env.client.getOrchestrationState(running)).runtimeStatus, OrchestrationStatus.RUNNING);
    await env.client.terminateOrchestration(running, "cleanup");
  });

  test("query pages through instances by prefix", async () => {
    const prefix = `q-${run}-`;
    const ids = [];
    for (let i = 0; i < 25; i++) ids.push(await env.client.scheduleNewOrchestration("FanOut", 1, { instanceId: `${prefix}${i}` }));
    for (const id of ids) await env.client.waitForOrchestrationCompletion(id, false, 30);
    const seen = [];
    let pages = 0;
    for await (const page of env.client.getAllInstances({ instanceIdPrefix: prefix, pageSize: 10 }).asPages()) {
      pages += 1;
      assert.ok(page.values.length <= 10);
      for (const state of page.values) seen.push(state.instanceId);
    }
    assert.equal(pages, 3);
    assert.deepEqual(seen.sort(), [...ids].sort());
    const completed = await env.client.listInstanceIds({ runtimeStatusList: [OrchestrationStatus.COMPLETED], pageSize: 1000 });
    for (const id of ids) assert.ok(completed.values.includes(id), `${id} listed`);
  });

  test("id reuse: a running id is refused; a finished one is replaced", async () => {
    const id = `reuse-${run}`;
    await env.client.scheduleNewOrchestration("Gate", "first", { instanceId: id });
    await env.client.waitForOrchestrationStart(id, false, 30);
    await assert.rejects(env.client.scheduleNewOrchestration("Gate", "second", { instanceId: id }),
                         (e) => e.code === 6 /* ALREADY_EXISTS */ && /already|exists|running/i.test(e.details));
    await env.client.raiseOrchestrationEvent(id, "Open", "a");
    await env.client.waitForOrchestrationCompletion(id, true, 30);
    await env.client.scheduleNewOrchestration("FanOut", 2, { instanceId: id });
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.name, "FanOut");
    assert.equal(JSON.parse(state.serializedOutput), 2);
  });

  test("tags round-trip on the instance", async () => {
    const tags = { team: "cities", env: "test" };
    const id = await env.client.scheduleNewOrchestration("FanOut", 1, { tags });
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.deepEqual(state.tags, tags);
  });

  test("bad input is refused with a clear status and changes nothing", async () => {
    const big = "x".repeat(1024 * 1024 + 10);
    await assert.rejects(env.client.scheduleNewOrchestration("FanOut", big, { instanceId: `big-${run}` }),
                         (e) => e.code === 3 /* INVALID_ARGUMENT */ && /bytes|limit|large/i.test(e.details));
    assert.equal(await env.client.getOrchestrationState(`big-${run}`), undefined);
    await assert.rejects(env.client.scheduleNewOrchestration("FanOut", 1, { instanceId: "x".repeat(101) }),
                         (e) => e.code === 3 && /100/.test(e.details));
    await assert.rejects(env.client.raiseOrchestrationEvent(`missing-${run}`, "Open", 1), (e) => e.code === 5 /* NOT_FOUND */);
  });

  test("wait for completion has no server-side limit and survives a slow orchestration", async () => {
    const id = await env.client.scheduleNewOrchestration("Sleeper", 3000);
    const state = await env.client.waitForOrchestrationCompletion(id, true, 60);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
  });
});
