// Ordinary faults that used to leave work stuck with no error anywhere: each is
// shown happening, then handled (a clear error, a failure the app can see, nothing
// looping).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, describe, test } from "node:test";

import { Metadata } from "@grpc/grpc-js";
import { OrchestrationStatus } from "@microsoft/durabletask-js";

import { openStream, pb, rawEnvironment, stringValue, Timestamp, unary } from "./raw.mjs";
import { CITIES, Dtsd, dtsdPath, eventually, makeClient, sharedEnvironment, startWorkerProcess } from "./support.mjs";

const MiB = 1024 * 1024;

describe("answers over the payload limit fail the task or the orchestration instead of looping", () => {
  const env = sharedEnvironment((w) => {
    w.addNamedActivity("Huge", async () => "z".repeat(2 * MiB));
    w.addNamedOrchestrator("CatchesHugeResult", async function* (ctx) {
      try {
        yield ctx.callActivity("Huge", null);
        return "no failure?";
      } catch (e) {
        return `handled: ${e.message}`;
      }
    });
    w.addNamedOrchestrator("HugeOutput", async function* () { return "o".repeat(2 * MiB); });
    w.addNamedOrchestrator("HugeStatus", async function* (ctx) {
      ctx.setCustomStatus("s".repeat(2 * MiB));
      yield ctx.createTimer(new Date(ctx.currentUtcDateTime.getTime() + 10));
      return "done";
    });
  });

  test("an activity result of 2 MiB is a task failure the orchestration sees and handles", async () => {
    const id = await env.client.scheduleNewOrchestration("CatchesHugeResult", null);
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    const output = JSON.parse(state.serializedOutput);
    assert.match(output, /^handled: /);
    assert.match(output, /activity output is 2097154 bytes, over the limit of 1048576 bytes/);
  });

  test("an orchestration output of 2 MiB fails the orchestration, naming the field", async () => {
    const id = await env.client.scheduleNewOrchestration("HugeOutput", null);
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.FAILED);
    assert.equal(state.failureDetails.errorType, "PayloadTooLarge");
    assert.match(state.failureDetails.message, /orchestration output is \d+ bytes, over the limit of 1048576 bytes/);
  });

  test("a custom status of 2 MiB fails the orchestration, naming the field", async () => {
    const id = await env.client.scheduleNewOrchestration("HugeStatus", null);
    const state = await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.FAILED);
    assert.match(state.failureDetails.message, /custom status is \d+ bytes, over the limit/);
  });
});

describe("a worker's oversize answer gets a clear error, and its token is spent", () => {
  const env = rawEnvironment();

  test("the completion call is refused with the reason; the same answer again is stale, not applied twice", async () => {
    const work = openStream(env.stub);
    try {
      const id = await env.client.scheduleNewOrchestration("RawHuge", null);
      const item = await work.next((i) => i.hasOrchestratorrequest() && i.getOrchestratorrequest().getInstanceid() === id);
      const response = new pb.OrchestratorResponse();
      response.setInstanceid(id);
      response.setCompletiontoken(item.getCompletiontoken());
      const complete = new pb.CompleteOrchestrationAction();
      complete.setOrchestrationstatus(pb.OrchestrationStatus.ORCHESTRATION_STATUS_COMPLETED);
      complete.setResult(stringValue(JSON.stringify("r".repeat(2 * MiB))));
      const action = new pb.OrchestratorAction();
      action.setId(0);
      action.setCompleteorchestration(complete);
      response.addActions(action);
      await assert.rejects(unary(env.stub, "completeOrchestratorTask", response),
                           (e) => e.code === 3 && /orchestration output is \d+ bytes/.test(e.details) && /was failed/.test(e.details));
      await assert.rejects(unary(env.stub, "completeOrchestratorTask", response), (e) => e.code === 9 /* FAILED_PRECONDITION */);
      const state = await env.client.getOrchestrationState(id);
      assert.equal(state.runtimeStatus, OrchestrationStatus.FAILED);
    } finally {
      work.stream.cancel();
    }
  });
});

describe("task hub headers: an empty one names no hub, and DeleteTaskHub needs one", () => {
  const env = rawEnvironment();
  const withHub = (hub) => {
    const metadata = new Metadata();
    metadata.set("taskhub", hub);
    return metadata;
  };

  test("DeleteTaskHub without a taskhub header, or with an empty one, deletes nothing", async () => {
    const id = await env.client.scheduleNewOrchestration("Anything", null);
    await assert.rejects(unary(env.stub, "deleteTaskHub", new pb.DeleteTaskHubRequest()),
                         (e) => e.code === 3 && /taskhub header/.test(e.details));
    await assert.rejects(unary(env.stub, "deleteTaskHub", new pb.DeleteTaskHubRequest(), withHub("")),
                         (e) => e.code === 3);
    assert.ok(await env.client.getOrchestrationState(id), "the default hub and its instance are still there");
  });

  test("a hub with instances is deleted only when asked to force it", async () => {
    await unary(env.stub, "createTaskHub", new pb.CreateTaskHubRequest(), withHub("scratch"));
    const start = new pb.CreateInstanceRequest();
    start.setInstanceid("keep-me");
    start.setName("Anything");
    await unary(env.stub, "startInstance", start, withHub("scratch"));
    await assert.rejects(unary(env.stub, "deleteTaskHub", new pb.DeleteTaskHubRequest(), withHub("scratch")),
                         (e) => e.code === 9 && /force/.test(e.details));
    const get = new pb.GetInstanceRequest();
    get.setInstanceid("keep-me");
    assert.equal((await unary(env.stub, "getInstance", get, withHub("scratch"))).getExists(), true);
    const forced = withHub("scratch");
    forced.set("dtsd-force-delete", "true");
    await unary(env.stub, "deleteTaskHub", new pb.DeleteTaskHubRequest(), forced);
    await assert.rejects(unary(env.stub, "getInstance", get, withHub("scratch")), (e) => e.code === 5);
    // An empty hub goes without force.
    await unary(env.stub, "createTaskHub", new pb.CreateTaskHubRequest(), withHub("empty-one"));
    await unary(env.stub, "deleteTaskHub", new pb.DeleteTaskHubRequest(), withHub("empty-one"));
  });

  test("every call on a hub deleted and created again meanwhile is answered (OK, NOT_FOUND or UNAVAILABLE)", async () => {
    const forced = () => {
      const metadata = withHub("churn");
      metadata.set("dtsd-force-delete", "true");
      return metadata;
    };
    const codes = new Map();
    for (let round = 0; round < 15; round++) {
      await unary(env.stub, "createTaskHub", new pb.CreateTaskHubRequest(), withHub("churn"));
      const calls = [];
      for (let i = 0; i < 20; i++) {
        const start = new pb.CreateInstanceRequest();
        start.setInstanceid(`churn-${round}-${i}`);
        start.setName("Anything");
        calls.push(new Promise((resolve) => {
          env.stub.startInstance(start, withHub("churn"), { deadline: Date.now() + 15000 }, (error) => resolve(error ? error.code : 0));
        }));
      }
      await new Promise((r) => setImmediate(r));
      await unary(env.stub, "deleteTaskHub", new pb.DeleteTaskHubRequest(), forced());
      for (const code of await Promise.all(calls)) codes.set(code, (codes.get(code) ?? 0) + 1);
    }
    assert.ok(!codes.has(4 /* DEADLINE_EXCEEDED */), `calls went unanswered: ${JSON.stringify([...codes])}`);
    for (const code of codes.keys()) assert.ok([0, 5, 14].includes(code), `unexpected code ${code}`);
  });

  test("an empty taskhub header is INVALID_ARGUMENT on every call, as is a hub name that cannot exist", async () => {
    const get = new pb.GetInstanceRequest();
    get.setInstanceid("x");
    await assert.rejects(unary(env.stub, "getInstance", get, withHub("")), (e) => e.code === 3 && /must not be empty/.test(e.details));
    const start = new pb.CreateInstanceRequest();
    start.setName("Anything");
    await assert.rejects(unary(env.stub, "startInstance", start, withHub("")), (e) => e.code === 3);
    await assert.rejects(unary(env.stub, "getInstance", get, withHub("bad name!")), (e) => e.code === 3);
    await assert.rejects(unary(env.stub, "getInstance", get, withHub("missing-hub")), (e) => e.code === 5);
  });
});

describe("names, tags, times and page sizes have limits, and more is refused naming the field", () => {
  const env = rawEnvironment();

  test("a name or tag over its limit is INVALID_ARGUMENT and creates nothing", async () => {
    const long = "n".repeat(5 * MiB);
    const start = new pb.CreateInstanceRequest();
    start.setInstanceid("long-name");
    start.setName(long);
    await assert.rejects(unary(env.stub, "startInstance", start),
                         (e) => e.code === 3 && /orchestration name is 5242880 characters long, over the limit of 256/.test(e.details));
    start.setName("Fine");
    start.getTagsMap().set("k", "v".repeat(2000));
    await assert.rejects(unary(env.stub, "startInstance", start), (e) => e.code === 3 && /tag 'k'/.test(e.details));
    start.getTagsMap().clear();
    for (let i = 0; i < 65; i++) start.getTagsMap().set(`k${i}`, "v");
    await assert.rejects(unary(env.stub, "startInstance", start), (e) => e.code === 3 && /65 tags/.test(e.details));
    assert.equal(await env.client.getOrchestrationState("long-name"), undefined);

    await env.client.scheduleNewOrchestration("Fine", null, "named-events");
    const raise = new pb.RaiseEventRequest();
    raise.setInstanceid("named-events");
    raise.setName("e".repeat(300));
    raise.setInput(stringValue("1"));
    await assert.rejects(unary(env.stub, "raiseEvent", raise), (e) => e.code === 3 && /event name is 300/.test(e.details));
    const signal = new pb.SignalEntityRequest();
    signal.setInstanceid("@counter@a");
    signal.setName("o".repeat(300));
    await assert.rejects(unary(env.stub, "signalEntity", signal), (e) => e.code === 3 && /operation name/.test(e.details));
  });

  test("a time outside the protobuf range is INVALID_ARGUMENT, not stored", async () => {
    const start = new pb.CreateInstanceRequest();
    start.setInstanceid("bad-time");
    start.setName("Fine");
    const time = new Timestamp();
    time.setSeconds(253402300800);  // Year 10000.
    start.setScheduledstarttimestamp(time);
    await assert.rejects(unary(env.stub, "startInstance", start),
                         (e) => e.code === 3 && /scheduledStartTimestamp is not a valid time/.test(e.details));
    time.setSeconds(0);
    time.setNanos(-1);
    await assert.rejects(unary(env.stub, "startInstance", start), (e) => e.code === 3 && /nanos -1/.test(e.details));
    assert.equal(await env.client.getOrchestrationState("bad-time"), undefined);
    const query = new pb.QueryInstancesRequest();
    const q = new pb.InstanceQuery();
    const from = new Timestamp();
    from.setSeconds(-62135596801);  // Before year 1.
    q.setCreatedtimefrom(from);
    query.setQuery(q);
    await assert.rejects(unary(env.stub, "queryInstances", query), (e) => e.code === 3 && /createdTimeFrom/.test(e.details));
  });

  test("page sizes: negative is refused, 0 is 100, more than 1000 is 1000, the same on every call", async () => {
    for (let i = 0; i < 3; i++) await env.client.scheduleNewOrchestration("Fine", null, `page-${i}`);
    const query = new pb.QueryInstancesRequest();
    const q = new pb.InstanceQuery();
    q.setMaxinstancecount(-1);
    query.setQuery(q);
    await assert.rejects(unary(env.stub, "queryInstances", query), (e) => e.code === 3 && /negative/.test(e.details));
    const ids = new pb.ListInstanceIdsRequest();
    ids.setPagesize(-5);
    await assert.rejects(unary(env.stub, "listInstanceIds", ids), (e) => e.code === 3 && /negative/.test(e.details));
    q.setMaxinstancecount(1000000);
    const all = await unary(env.stub, "queryInstances", query);
    assert.ok(all.getOrchestrationstateList().length >= 3);
    ids.setPagesize(0);
    assert.ok((await unary(env.stub, "listInstanceIds", ids)).getInstanceidsList().length >= 3);
  });
});

describe("a hung worker (SIGSTOP: the connection stays open, nothing answers)", () => {
  test("its expired leases go to a healthy worker within a lease period and a second; its session is closed", async () => {
    const leaseSeconds = 3;
    const dtsd = await new Dtsd({ extraArgs: ["--lease-seconds", String(leaseSeconds)] }).start();
    const client = makeClient(dtsd);
    let hung;
    let healthy;
    try {
      hung = await startWorkerProcess(dtsd.address, 2500);  // Activities take 2.5 s: it holds them.
      const ids = [];
      for (let i = 0; i < 10; i++) ids.push(await client.scheduleNewOrchestration("HelloCities"));
      // A positive signal first: every orchestration has scheduled its first
      // activity, and the only worker holds it.
      await eventually(async () => {
        for (const id of ids) {
          const state = await client.getOrchestrationState(id);
          if (state?.runtimeStatus !== OrchestrationStatus.RUNNING) return false;
        }
        return true;
      }, 20000, "every orchestration to run its first step");
      hung.child.kill("SIGSTOP");
      const stoppedAt = Date.now();
      healthy = await startWorkerProcess(dtsd.address, 0);
      for (const id of ids) {
        const state = await client.waitForOrchestrationCompletion(id, true, 60);
        assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
        assert.deepEqual(JSON.parse(state.serializedOutput), CITIES.map((c) => `Hello, ${c}!`));
      }
      const seconds = (Date.now() - stoppedAt) / 1000;
      console.log(`hung worker: all 10 orchestrations completed ${seconds.toFixed(2)} s after the worker stopped ` +
                  `(lease ${leaseSeconds} s)`);
      // The leases expire at most a lease period after the stop; a second of lease
      // checks and the healthy worker's five steps come on top (about 4 s here).
      // Before, expired items went back to the stopped worker about half the time,
      // and each such step cost another lease period: 15 s and more for five steps.
      assert.ok(seconds < 2 * leaseSeconds + 2, `took ${seconds} s`);
      await eventually(async () => /answered nothing for a lease period after a lease expired: closed/.test(dtsd.stdout + dtsd.stderr),
                       (leaseSeconds + 3) * 1000, "the hung session to be closed");
    } finally {
      hung?.child.kill("SIGCONT");
      await hung?.kill();
      await healthy?.kill();
      await client.stop().catch(() => {});
      await dtsd.cleanup();
    }
  });
});

/** Mounts a tmpfs of `megabytes` at a new directory; null (with the reason) if this machine does not let us. */
function mountTmpfs(megabytes) {
  const dir = mkdtempSync(join(tmpdir(), "dtsd-full-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${megabytes}m`, "tmpfs", dir], { stdio: "pipe" });
    return { dir };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    return { why: String(e.stderr ?? e.message).trim() };
  }
}

/** Writes zeros into `path` until the filesystem is full, then gives back `spare` bytes. */
function fillUp(path, spare) {
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(64 * 1024);
  let written = 0;
  try {
    for (;;) written += writeSync(fd, chunk);
  } catch (e) {
    if (e.code !== "ENOSPC") throw e;
  }
  ftruncateSync(fd, Math.max(0, written - spare));
  closeSync(fd);
}

/**
 * Starts HelloCities with 32 KiB inputs until one is refused (at most a minute).
 * A start caught in the batch whose commit fails stays unanswered until it is
 * durable (answering it either way now would be a lie): it is kept, and must be
 * answered OK and complete once space returns, like every start answered OK before.
 */
async function startUntilRefused(client) {
  const acknowledged = [];
  const unanswered = [];
  let refusal = null;
  const input = "x".repeat(32 * 1024);
  const deadline = Date.now() + 60000;
  for (let i = 0; i < 2000 && !refusal && Date.now() < deadline; i++) {
    const started = client.scheduleNewOrchestration("HelloCities", input).then((id) => ({ id }), (e) => ({ e }));
    const outcome = await Promise.race([started, new Promise((r) => setTimeout(() => r(null), 1000))]);
    if (outcome === null) unanswered.push(started);
    else if (outcome.e) refusal = outcome.e;
    else acknowledged.push(outcome.id);
  }
  return { acknowledged, unanswered, refusal };
}

const tmpfs = mountTmpfs(16);
describe("a full disk (a 16 MiB tmpfs filled up, then freed)", () => {
  const skip = tmpfs.dir ? false : `cannot mount a tmpfs here: ${tmpfs.why}`;
  test("writes are refused with RESOURCE_EXHAUSTED, reads go on, and every acknowledged instance completes once space returns",
       { skip }, async () => {
    const dataDir = join(tmpfs.dir, "data");
    const dtsd = await new Dtsd({ dataDir }).start();
    const client = makeClient(dtsd);
    const dtsctl = resolve(dirname(dtsdPath), "../cli/dtsctl");
    const nativePort = /native API on port (\d+)/.exec(dtsd.stdout)[1];
    const status = () => JSON.parse(execFileSync(dtsctl, ["--address", `127.0.0.1:${nativePort}`, "--json",
                                                          "taskhub", "status", "default"]).toString());
    let worker;
    const filler = join(tmpfs.dir, "filler");
    try {
      worker = await startWorkerProcess(dtsd.address, 0);
      const early = await client.scheduleNewOrchestration("HelloCities");
      assert.equal((await client.waitForOrchestrationCompletion(early, true, 30)).runtimeStatus,
                   OrchestrationStatus.COMPLETED);
      assert.ok(status().every((p) => p.writable));

      fillUp(filler, 1024 * 1024);  // About thirty starts' worth left, the worker busy on them.
      const { acknowledged, unanswered, refusal } = await startUntilRefused(client);
      assert.ok(refusal, `no start was refused after ${acknowledged.length} on a full disk`);
      assert.equal(refusal.code, 8 /* RESOURCE_EXHAUSTED */, `refused with ${refusal.code}: ${refusal.details}`);
      assert.match(refusal.details, /cannot write to its storage \(LMDB .* failed: (No space left on device|Input\/output error)\)/);
      // dtsd is alive, its reads work, and dtsctl shows which partition is stalled.
      assert.equal((await client.getOrchestrationState(early)).runtimeStatus, OrchestrationStatus.COMPLETED);
      const stalled = status().filter((p) => !p.writable);
      assert.ok(stalled.length >= 1);
      assert.match(stalled[0].stalled, /No space left on device|Input\/output error/);  // A short write is EIO.
      // Logged once per stalled partition, not per request or per retry.
      await new Promise((r) => setTimeout(r, 1500));
      const logged = dtsd.stdout.match(/cannot commit batch/g) ?? [];
      assert.ok(logged.length >= 1 && logged.length <= 4, `logged ${logged.length} times`);
      assert.ok(status().some((p) => !p.writable && p.failedCommits > 1), "it keeps retrying");

      rmSync(filler);
      for (const started of unanswered) {
        const outcome = await started;
        assert.ok(outcome.id, `a start held during the stall was refused: ${outcome.e?.details}`);
        acknowledged.push(outcome.id);
      }
      for (const id of acknowledged) {
        const state = await client.waitForOrchestrationCompletion(id, true, 60);
        assert.equal(state?.runtimeStatus, OrchestrationStatus.COMPLETED, `instance ${id}`);
        assert.deepEqual(JSON.parse(state.serializedOutput), CITIES.map((c) => `Hello, ${c}!`));
      }
      console.log(`full disk: ${acknowledged.length} starts acknowledged (${unanswered.length} of them only once space ` +
                  "returned); all completed");
      await eventually(async () => status().every((p) => p.writable), 10000, "every partition to write again");
      assert.match(dtsd.stdout, /writes again after/);
      const after = await client.scheduleNewOrchestration("HelloCities");
      assert.equal((await client.waitForOrchestrationCompletion(after, true, 30)).runtimeStatus,
                   OrchestrationStatus.COMPLETED);

      // Stopping while stalled does not wait for the disk, and loses nothing that
      // was acknowledged: what it could not commit was answered to no one.
      fillUp(filler, 256 * 1024);
      const second = await startUntilRefused(client);
      assert.equal(second.refusal?.code, 8 /* RESOURCE_EXHAUSTED */);
      const stoppedAt = Date.now();
      assert.equal(await dtsd.stop(), 0, "SIGTERM while stalled exits 0");
      assert.ok(Date.now() - stoppedAt < 15000, `stopping took ${Date.now() - stoppedAt} ms`);
      assert.match(dtsd.stdout, /stops with changes it could not commit/);
      rmSync(filler);
      await dtsd.start({ grpcPort: dtsd.grpcPort });
      for (const id of second.acknowledged) {
        const state = await client.waitForOrchestrationCompletion(id, true, 60);
        assert.equal(state?.runtimeStatus, OrchestrationStatus.COMPLETED, `instance ${id} after the restart`);
      }
    } finally {
      rmSync(filler, { force: true });
      await worker?.kill();
      await client.stop().catch(() => {});
      await dtsd.cleanup();
    }
  });
  after(() => {
    if (!tmpfs.dir) return;
    execFileSync("umount", [tmpfs.dir]);
    rmSync(tmpfs.dir, { recursive: true, force: true });
  });
});
