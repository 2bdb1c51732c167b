// The official JS SDK against a two-node dtsd cluster: an etcd this test starts,
// two dtsd nodes sharing one data directory, a JS worker connected to one node and
// a JS client connected to the other. Every process is stopped by PID.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { OrchestrationStatus } from "@microsoft/durabletask-js";

import { CITIES, Dtsd, checkHistory, eventually, freePort, makeClient, makeWorker, registerSamples } from "./support.mjs";

/** One etcd member on loopback ports; resolves once it answers /health. */
async function startEtcd(directory) {
  const client = await freePort();
  const peer = await freePort();
  const clientUrl = `http://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const child = spawn("etcd", ["--name", "compat", "--data-dir", join(directory, "etcd"),
                               "--listen-client-urls", clientUrl, "--advertise-client-urls", clientUrl,
                               "--listen-peer-urls", peerUrl, "--initial-advertise-peer-urls", peerUrl,
                               "--initial-cluster", `compat=${peerUrl}`], { stdio: "ignore" });
  await eventually(async () => {
    try {
      return (await fetch(`${clientUrl}/health`)).ok;
    } catch {
      return false;
    }
  }, 20000, "etcd to answer (is etcd-server installed? deploy/install-deps.sh)");
  return { child, url: `etcd://127.0.0.1:${client}` };
}

describe("a two-node cluster through the official JS SDK", () => {
  const directory = mkdtempSync(join(tmpdir(), "dtsd-cluster-compat-"));
  let etcd;
  let a;
  let b;
  let worker;
  let client;

  before(async () => {
    etcd = await startEtcd(directory);
    const node = (id) => new Dtsd({ dataDir: join(directory, "data"),
                                    extraArgs: ["--cluster", etcd.url, "--node-id", id, "--node-lease-seconds", "2"] });
    a = await node("a").start();
    b = await node("b").start();
    // The worker connects to a only, the client to b only.
    worker = makeWorker(a, registerSamples);
    await worker.start();
    client = makeClient(b);
  });

  after(async () => {
    await worker?.stop().catch(() => {});
    await a?.cleanup();
    await b?.cleanup();
    etcd?.child.kill("SIGKILL");
    rmSync(directory, { recursive: true, force: true });
  });

  /** Starts through b, waiting while partitions are still being opened. */
  async function start(name, instanceId) {
    return eventually(async () => {
      try {
        return await client.scheduleNewOrchestration(name, undefined, instanceId);
      } catch (failure) {
        if (/UNAVAILABLE|not served/.test(String(failure))) return undefined;
        throw failure;
      }
    }, 20000, `a start of ${name}`);
  }

  test("orchestrations and sub-orchestrations on either node complete, each step once", async () => {
    const ids = [];
    for (let i = 0; i < 16; i++) ids.push(await start("HelloCities", `city-${i}`));
    const parents = [];
    for (let i = 0; i < 8; i++) parents.push(await start("Parent", `parent-${i}`));
    const hello = CITIES.map((c) => `Hello, ${c}!`);
    for (const id of ids) {
      const state = await client.waitForOrchestrationCompletion(id, true, 60);
      assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED, id);
      assert.deepEqual(JSON.parse(state.serializedOutput), hello, id);
      assert.deepEqual(checkHistory(await client.getOrchestrationHistory(id)), [], `${id} history`);
    }
    for (const id of parents) {
      const state = await client.waitForOrchestrationCompletion(id, true, 60);
      assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED, id);
      assert.deepEqual(JSON.parse(state.serializedOutput), hello, id);
      const child = await client.getOrchestrationState(`${id}-child`, true);
      assert.equal(child.runtimeStatus, OrchestrationStatus.COMPLETED, `${id}-child`);
    }
  });

  test("the dashboard of either node lists the whole hub", async () => {
    for (const node of [a, b]) {
      const answer = await fetch(`${node.restUrl}/v1/taskhubs/orchestrations/query`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ filter: { orchestrationId: "city-" }, pagination: { count: 100 } }),
      });
      assert.equal(answer.status, 200);
      const page = await answer.json();
      assert.equal(page.totalCount, 16);
    }
  });
});
