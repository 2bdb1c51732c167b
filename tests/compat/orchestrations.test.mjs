// Orchestration features through the official JS SDK (client and worker) against dtsd.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { OrchestrationStatus, whenAll } from "@microsoft/durabletask-js";

import { CITIES, Dtsd, makeClient, makeWorker } from "./support.mjs";

describe("orchestrations", () => {
  let dtsd;
  let client;
  let worker;

  before(async () => {
    dtsd = await new Dtsd().start();
    client = makeClient(dtsd);
    worker = makeWorker(dtsd, (w) => {
      w.addNamedActivity("SayHello", async (_ctx, city) => `Hello, ${city}!`);
      w.addNamedOrchestrator("HelloCities", async function* (ctx) {
        const out = [];
        for (const city of ["Tokyo", "Seattle", "London", "Paris", "Cairo"]) {
          out.push(yield ctx.callActivity("SayHello", city));
        }
        return out;
      });
      w.addNamedOrchestrator("FanOut", async function* (ctx, n) {
        const tasks = [];
        for (let i = 0; i < n; i++) tasks.push(ctx.callActivity("SayHello", `city-${i}`));
        const results = yield whenAll(tasks);
        return results.length;
      });
    });
    await worker.start();
  });

  after(async () => {
    await worker?.stop().catch(() => {});
    await client?.stop().catch(() => {});
    await dtsd?.cleanup();
  });

  test("hello cities: five activities in sequence", async () => {
    const id = await client.scheduleNewOrchestration("HelloCities");
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.deepEqual(JSON.parse(state.serializedOutput), CITIES.map((c) => `Hello, ${c}!`));
  });

  test("fan-out/fan-in over 50 activities", async () => {
    const id = await client.scheduleNewOrchestration("FanOut", 50);
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(JSON.parse(state.serializedOutput), 50);
  });
});
