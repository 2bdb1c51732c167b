// Durable entities through the official JS SDK: signals (now and scheduled),
// calls from orchestrations, critical sections over several entities, queries,
// storage cleaning and the 1 MiB state limit.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { EntityInstanceId, OrchestrationStatus, TaskEntity, whenAll } from "@microsoft/durabletask-js";

import { eventually, sharedEnvironment } from "./support.mjs";

const run = Date.now().toString(36);

class Counter extends TaskEntity {
  initializeState() { return 0; }
  add(amount) { this.state += amount; return this.state; }
  get() { return this.state; }
  set(value) { this.state = value; }
  reset() { this.state = 0; }
  grow(bytes) { this.state = "x".repeat(bytes); }
}

function register(w) {
  w.addNamedEntity("counter", () => new Counter());
  w.addNamedOrchestrator("CallCounter", async function* (ctx, key) {
    const id = new EntityInstanceId("counter", key);
    yield ctx.entities.callEntity(id, "add", 10);
    yield ctx.entities.callEntity(id, "add", 5);
    return yield ctx.entities.callEntity(id, "get");
  });
  // Moves `amount` from one counter to the other inside a critical section: a read,
  // then a write that depends on it, on both entities.
  w.addNamedOrchestrator("Transfer", async function* (ctx, { from, to, amount }) {
    const a = new EntityInstanceId("counter", from);
    const b = new EntityInstanceId("counter", to);
    const lock = yield ctx.entities.lockEntities(a, b);
    try {
      // Read-modify-write with no atomic add: without the locks, concurrent
      // transfers would overwrite each other's updates.
      const balanceA = yield ctx.entities.callEntity(a, "get");
      const balanceB = yield ctx.entities.callEntity(b, "get");
      yield ctx.entities.callEntity(a, "set", balanceA - amount);
      yield ctx.entities.callEntity(b, "set", balanceB + amount);
      return balanceA;
    } finally {
      lock.release();
    }
  });
  w.addNamedActivity("Boom", async () => { throw new Error("boom inside the critical section"); });
  // Fails while it holds a lock, without leaving the critical section itself.
  w.addNamedOrchestrator("FailWhileLocked", async function* (ctx, key) {
    yield ctx.entities.lockEntities(new EntityInstanceId("counter", key));
    yield ctx.callActivity("Boom");
  });
  w.addNamedOrchestrator("Grow", async function* (ctx, { key, bytes }) {
    return yield ctx.entities.callEntity(new EntityInstanceId("counter", key), "grow", bytes);
  });
}

describe("entities through the official JS SDK", () => {
  const env = sharedEnvironment(register);

  test("signals update the state; getEntity reads it", async () => {
    const id = new EntityInstanceId("counter", `signals-${run}`);
    for (const amount of [1, 2, 3, 4]) await env.client.signalEntity(id, "add", amount);
    const entity = await eventually(async () => {
      const e = await env.client.getEntity(id, true);
      return e?.state === 10 ? e : undefined;
    }, 20000, "the counter to reach 10");
    assert.equal(entity.id.toString(), id.toString());
    assert.equal(entity.lockedBy, undefined);
    assert.equal(await env.client.getEntity(new EntityInstanceId("counter", `never-${run}`)), undefined);
  });

  test("an orchestration calls an entity and gets its answers", async () => {
    const instance = await env.client.scheduleNewOrchestration("CallCounter", `calls-${run}`);
    const state = await env.client.waitForOrchestrationCompletion(instance, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(JSON.parse(state.serializedOutput), 15);
  });

  test("critical sections: concurrent transfers lose nothing", async () => {
    const [x, y] = [`acct-a-${run}`, `acct-b-${run}`];
    await env.client.signalEntity(new EntityInstanceId("counter", x), "add", 1000);
    await eventually(async () => (await env.client.getEntity(new EntityInstanceId("counter", x), true))?.state === 1000,
                     20000, "the first deposit");
    const ids = [];
    for (let i = 0; i < 10; i++) {
      const [from, to] = i % 2 === 0 ? [x, y] : [y, x];
      ids.push(await env.client.scheduleNewOrchestration("Transfer", { from, to, amount: 7 + i }));
    }
    const states = await Promise.all(ids.map((id) => env.client.waitForOrchestrationCompletion(id, true, 60)));
    for (const s of states) assert.equal(s.runtimeStatus, OrchestrationStatus.COMPLETED, s.failureDetails?.message);
    const a = (await env.client.getEntity(new EntityInstanceId("counter", x), true)).state;
    const b = (await env.client.getEntity(new EntityInstanceId("counter", y), true)).state;
    assert.equal(a + b, 1000, "money is neither made nor lost");
    const moved = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].reduce((sum, i) => sum + (i % 2 === 0 ? -(7 + i) : 7 + i), 0);
    assert.equal(a, 1000 + moved);
    // Each holder's release is a message sent with its last step: it lands shortly
    // after the orchestration completes.
    await eventually(async () => (await env.client.getEntity(new EntityInstanceId("counter", x), false))?.lockedBy === undefined,
                     20000, "every lock to be released");
  });

  test("an orchestration that fails inside a critical section releases its locks", async () => {
    const key = `orphan-${run}`;
    const id = new EntityInstanceId("counter", key);
    const instance = await env.client.scheduleNewOrchestration("FailWhileLocked", key);
    assert.equal((await env.client.waitForOrchestrationCompletion(instance, true, 30)).runtimeStatus, OrchestrationStatus.FAILED);
    await env.client.signalEntity(id, "add", 2);
    const entity = await eventually(async () => {
      const e = await env.client.getEntity(id, true);
      return e?.state === 2 ? e : undefined;
    }, 20000, "the signal after the release");
    assert.equal(entity.lockedBy, undefined);
  });

  test("a scheduled signal waits for its time", async () => {
    const id = new EntityInstanceId("counter", `later-${run}`);
    await env.client.signalEntity(id, "add", 1);
    await eventually(async () => (await env.client.getEntity(id, true))?.state === 1, 20000, "the first signal");
    const sent = Date.now();
    await env.client.signalEntity(id, "add", 41, { signalTime: new Date(sent + 1500) });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await env.client.getEntity(id, true)).state, 1, "not before its time");
    await eventually(async () => (await env.client.getEntity(id, true))?.state === 42, 20000, "the scheduled signal");
    assert.ok(Date.now() - sent >= 1400);
  });

  test("query by prefix, and clean storage removes entities without state", async () => {
    const prefix = `q${run}`;
    for (let i = 0; i < 5; i++) await env.client.signalEntity(new EntityInstanceId("counter", `${prefix}-${i}`), "add", i + 1);
    const found = await eventually(async () => {
      const seen = [];
      for await (const e of env.client.getEntities({ instanceIdStartsWith: `@counter@${prefix}`, includeState: true })) seen.push(e);
      return seen.length === 5 ? seen : undefined;
    }, 20000, "five entities");
    assert.deepEqual(found.map((e) => e.state).sort(), [1, 2, 3, 4, 5]);

    const doomed = new EntityInstanceId("counter", `${prefix}-0`);
    await env.client.signalEntity(doomed, "delete");
    await eventually(async () => (await env.client.getEntity(doomed)) === undefined, 20000, "the state to be deleted");
    const cleaned = await env.client.cleanEntityStorage({ removeEmptyEntities: true, releaseOrphanedLocks: true }, true);
    assert.ok(cleaned.emptyEntitiesRemoved >= 1, JSON.stringify(cleaned));
    const left = [];
    for await (const e of env.client.getEntities({ instanceIdStartsWith: `@counter@${prefix}`, includeTransient: true })) left.push(e);
    assert.equal(left.length, 4);
  });

  test("a state over 1 MiB fails the operation and keeps the old state", async () => {
    const key = `big-${run}`;
    const id = new EntityInstanceId("counter", key);
    await env.client.signalEntity(id, "add", 3);
    await eventually(async () => (await env.client.getEntity(id, true))?.state === 3, 20000, "the small state");
    const instance = await env.client.scheduleNewOrchestration("Grow", { key, bytes: 1024 * 1024 + 100 });
    const state = await env.client.waitForOrchestrationCompletion(instance, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.FAILED);
    assert.match(state.failureDetails.message, /entity state|bytes|limit/i);
    assert.equal((await env.client.getEntity(id, true)).state, 3);
  });
});
