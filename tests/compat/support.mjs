// Shared pieces of the compat suite: start and stop a real dtsd process, and make
// clients and workers of the official Durable Task JavaScript SDK pointed at it.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";

import { Metadata } from "@grpc/grpc-js";
import { NoOpLogger, TaskEntity, TaskHubGrpcClient, TaskHubGrpcWorker } from "@microsoft/durabletask-js";

const here = fileURLToPath(new URL(".", import.meta.url));
export const dtsdPath = process.env.DTSD_BIN ?? resolve(here, "../../build/release/src/server/dtsd");

/** A dtsd process on free loopback ports with a fresh data directory. */
export class Dtsd {
  constructor({ dataDir, extraArgs = [] } = {}) {
    this.ownDataDir = !dataDir;
    this.dataDir = dataDir ?? mkdtempSync(join(tmpdir(), "dtsd-compat-"));
    this.extraArgs = extraArgs;
    this.grpcPort = 0;
  }

  /** Starts dtsd; resolves once it prints its ready line (at most 30 s). A dtsd that
   * must come back on a given port tries again while another process holds it for a
   * moment: an outgoing connection (a worker reconnecting to the stopped dtsd, say)
   * can be given that ephemeral port between the old dtsd's exit and the new bind. */
  async start({ grpcPort = 0 } = {}) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#startOnce(grpcPort);
      } catch (error) {
        if (grpcPort === 0 || attempt >= 40 || !/Address already in use/.test(String(error.message))) throw error;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  async #startOnce(grpcPort) {
    // Loopback ports and small hubs, unless extraArgs say otherwise.
    const defaults = [["--listen", "127.0.0.1:0"], ["--grpc-listen", `127.0.0.1:${grpcPort}`],
                      ["--dashboard-listen", "127.0.0.1:0"], ["--partitions", "4"], ["--log-level", "warn"]];
    const args = ["--data-dir", this.dataDir,
                  ...defaults.filter(([flag]) => !this.extraArgs.includes(flag)).flat(), ...this.extraArgs];
    this.child = spawn(dtsdPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.stderr = "";
    this.stdout = "";  // dtsd's log lines
    this.child.stderr.on("data", (chunk) => { this.stderr += chunk; });
    this.child.stdout.on("data", (chunk) => { this.stdout += chunk; });
    const exited = new Promise((_, reject) => this.child.once("exit", (code, signal) =>
      reject(new Error(`dtsd exited (${code ?? signal}) before it was ready: ${this.stderr}`))));
    const ready = new Promise((resolveReady) => {
      let out = "";
      this.child.stdout.on("data", (chunk) => {
        out += chunk;
        const match = /gRPC API on port (\d+)/.exec(out);
        const dashboard = /dashboard on port (\d+)/.exec(out);
        if (dashboard) this.dashboardPort = Number(dashboard[1]);
        const native = /native API on port (\d+)/.exec(out);
        if (native) this.nativePort = Number(native[1]);
        if (match) resolveReady(Number(match[1]));
      });
    });
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("dtsd not ready in 30 s")), 30000).unref());
    this.grpcPort = await Promise.race([ready, exited, timeout]);
    this.child.removeAllListeners("exit");
    return this;
  }

  get address() { return `127.0.0.1:${this.grpcPort}`; }
  /** The dashboard's REST API. */
  get restUrl() { return `http://127.0.0.1:${this.dashboardPort}`; }

  /** SIGKILL: nothing is drained. */
  async kill() { await this.#stopWith("SIGKILL"); }
  /** SIGTERM: dtsd drains and exits 0. */
  async stop() { return this.#stopWith("SIGTERM"); }

  async #stopWith(signal) {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return this.child?.exitCode;
    const exited = new Promise((resolveExit) => this.child.once("exit", (code) => resolveExit(code)));
    this.child.kill(signal);
    const code = await exited;
    return code;
  }

  /** Kills dtsd and removes its data; fails if a sanitizer reported anything. */
  async cleanup() {
    await this.kill();
    if (this.ownDataDir) rmSync(this.dataDir, { recursive: true, force: true });
    if (/Sanitizer|runtime error:/.test(this.stderr)) throw new Error(`dtsd reported:\n${this.stderr}`);
  }
}

/** Per-call metadata naming a task hub, as the Azure-managed SDK package sends it. */
export function hubMetadata(hub) {
  return async () => {
    const metadata = new Metadata();
    metadata.set("taskhub", hub);
    return metadata;
  };
}

export function makeClient(dtsd, { hub } = {}) {
  return new TaskHubGrpcClient({
    hostAddress: dtsd.address,
    logger: new NoOpLogger(),
    ...(hub ? { metadataGenerator: hubMetadata(hub) } : {}),
  });
}

/** A JS SDK worker; `options` go to the worker as they are (versioning, workItemFilters...). */
export function makeWorker(dtsd, register, { hub, ...options } = {}) {
  const worker = new TaskHubGrpcWorker({
    hostAddress: dtsd.address,
    logger: new NoOpLogger(),
    shutdownTimeoutMs: 2000,
    ...(hub ? { metadataGenerator: hubMetadata(hub) } : {}),
    ...options,
  });
  register(worker);
  return worker;
}

/** Polls `check` until it returns a truthy value (at most `ms`). */
export async function eventually(check, ms = 20000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const CITIES = ["Tokyo", "Seattle", "London", "Paris", "Cairo"];

/** An entity that adds what it is signalled. */
export class Counter extends TaskEntity {
  initializeState() { return 0; }
  add(amount) { this.state += amount; return this.state; }
}

/** What the dashboard suites run: hello cities, a failing orchestration, one that
 * waits for an event "go", and the counter entity. */
export function registerSamples(w) {
  w.addNamedEntity("counter", () => new Counter());
  w.addNamedActivity("SayHello", async (_ctx, city) => `Hello, ${city}!`);
  w.addNamedActivity("Fails", async () => { throw new TypeError("the city is closed"); });
  w.addNamedOrchestrator("HelloCities", async function* (ctx) {
    const out = [];
    for (const city of CITIES) out.push(yield ctx.callActivity("SayHello", city));
    return out;
  });
  w.addNamedOrchestrator("Failing", async function* (ctx) { yield ctx.callActivity("Fails"); });
  w.addNamedOrchestrator("Waiting", async function* (ctx) { return yield ctx.waitForExternalEvent("go"); });
  w.addNamedOrchestrator("Parent", async function* (ctx) {
    return yield ctx.callSubOrchestrator("HelloCities", undefined, { instanceId: `${ctx.instanceId}-child` });
  });
}

/** A JS SDK worker process (worker.mjs); resolves once it is connected. */
export async function startWorkerProcess(address, delayMs = 0) {
  const child = spawn(process.execPath, [resolve(here, "worker.mjs"), address, String(delayMs)],
                      { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((resolveReady, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("worker not ready in 30 s")), 30000);
    child.stdout.on("data", (chunk) => {
      out += chunk;
      if (out.includes("worker ready")) { clearTimeout(timer); resolveReady(); }
    });
    child.once("exit", (code) => { clearTimeout(timer); reject(new Error(`worker exited (${code})`)); });
  });
  child.removeAllListeners("exit");
  return {
    child,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    },
  };
}

/** A loopback port that was free a moment ago (for a dtsd that must come back on the same port). */
export async function freePort() {
  const { createServer } = await import("node:net");
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Each task scheduled once and completed once; one ExecutionStarted and one ExecutionCompleted. */
export function checkHistory(history) {
  const scheduled = new Map();
  const completed = new Map();
  let started = 0;
  let finished = 0;
  for (const event of history) {
    if (event.type === "TaskScheduled") scheduled.set(event.eventId, (scheduled.get(event.eventId) ?? 0) + 1);
    if (event.type === "TaskCompleted") completed.set(event.taskScheduledId, (completed.get(event.taskScheduledId) ?? 0) + 1);
    if (event.type === "ExecutionStarted") started += 1;
    if (event.type === "ExecutionCompleted") finished += 1;
  }
  const problems = [];
  if (started !== 1) problems.push(`${started} ExecutionStarted events`);
  if (finished !== 1) problems.push(`${finished} ExecutionCompleted events`);
  for (const [id, n] of scheduled) if (n !== 1) problems.push(`task ${id} scheduled ${n} times`);
  for (const [id, n] of completed) if (n !== 1) problems.push(`task ${id} completed ${n} times`);
  for (const id of scheduled.keys()) if (!completed.has(id)) problems.push(`task ${id} never completed`);
  return problems;
}

/**
 * For a describe block: before it, a fresh dtsd, a client and a started worker
 * (registered by `register`); after it, all three stopped. The returned object's
 * fields are set once `before` has run.
 */
export function sharedEnvironment(register, { extraArgs = [] } = {}) {
  const env = {};
  before(async () => {
    env.dtsd = await new Dtsd({ extraArgs }).start();
    env.client = makeClient(env.dtsd);
    env.worker = makeWorker(env.dtsd, register);
    await env.worker.start();
  });
  after(async () => {
    await env.worker?.stop().catch(() => {});
    await env.client?.stop().catch(() => {});
    await env.dtsd?.cleanup();
  });
  return env;
}
