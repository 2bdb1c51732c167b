// Processes die: a JS worker SIGKILLed mid-run, dtsd SIGKILLed mid-run and
// restarted on the same data directory and port. Nothing acknowledged is lost and
// no activity result is applied twice.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { OrchestrationStatus } from "@microsoft/durabletask-js";

import { CITIES, Dtsd, checkHistory, eventually, freePort, makeClient, startWorkerProcess } from "./support.mjs";

const expected = CITIES.map((c) => `Hello, ${c}!`);

async function allCompleted(client, ids, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (const id of ids) {
    const state = await eventually(async () => {
      try {
        const s = await client.getOrchestrationState(id, true);
        return s && s.runtimeStatus !== OrchestrationStatus.RUNNING && s.runtimeStatus !== OrchestrationStatus.PENDING ? s : undefined;
      } catch {
        return undefined;  // dtsd is restarting
      }
    }, Math.max(1000, deadline - Date.now()), `${id} to finish`);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED, `${id} status`);
    assert.deepEqual(JSON.parse(state.serializedOutput), expected, `${id} output`);
    const problems = checkHistory(await client.getOrchestrationHistory(id));
    assert.deepEqual(problems, [], `${id} history`);
  }
}

describe("resilience", () => {
  test("a worker SIGKILLed mid-run: another worker finishes everything, each task completed once", async () => {
    const dtsd = await new Dtsd().start();
    const client = makeClient(dtsd);
    let first;
    let second;
    try {
      first = await startWorkerProcess(dtsd.address, 100);
      const ids = [];
      for (let i = 0; i < 20; i++) ids.push(await client.scheduleNewOrchestration("HelloCities"));
      await eventually(async () => {
        const history = await client.getOrchestrationHistory(ids[0]);
        return history.some((e) => e.type === "TaskCompleted");
      }, 20000, "the first worker to make progress");
      await first.kill();
      second = await startWorkerProcess(dtsd.address, 0);
      await allCompleted(client, ids, 60);
    } finally {
      await first?.kill();
      await second?.kill();
      await client.stop().catch(() => {});
      await dtsd.cleanup();
    }
  });

  test("dtsd SIGKILLed mid-run and restarted on the same data: every started orchestration completes exactly", async () => {
    const port = await freePort();
    const first = await new Dtsd().start({ grpcPort: port });
    const dataDir = first.dataDir;
    let dtsd = first;
    const client = makeClient(first);
    let worker;
    try {
      worker = await startWorkerProcess(first.address, 100);
      const ids = [];
      for (let i = 0; i < 50; i++) ids.push(await client.scheduleNewOrchestration("HelloCities"));
      for (let round = 0; round < 2; round++) {
        await new Promise((r) => setTimeout(r, 300));
        if (round === 0) {
          const last = await client.getOrchestrationState(ids[ids.length - 1]);
          assert.notEqual(last.runtimeStatus, OrchestrationStatus.COMPLETED, "the kill must come mid-run");
        }
        await dtsd.kill();
        dtsd = await new Dtsd({ dataDir }).start({ grpcPort: port });
      }
      await allCompleted(client, ids, 120);
    } finally {
      await worker?.kill();
      await client.stop().catch(() => {});
      await dtsd.kill();
      first.ownDataDir = true;
      await first.cleanup();
    }
  });

  test("SIGTERM with a worker stream open drains and exits 0", async () => {
    const dtsd = await new Dtsd().start();
    const worker = await startWorkerProcess(dtsd.address, 0);
    try {
      assert.equal(await dtsd.stop(), 0);
    } finally {
      await worker.kill();
      await dtsd.cleanup();
    }
  });
});
