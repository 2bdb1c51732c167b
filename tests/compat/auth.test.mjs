// Tokens on the gRPC endpoint (dtsd --auth): every RPC against every kind of
// credential gets the code its role and hubs call for, a refused call changes
// nothing, and the official JS SDK runs hello cities with a worker token and a
// contributor token, and fails clearly without one.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { after, before, describe, test } from "node:test";

import { credentials, Metadata, status as grpcStatus } from "@grpc/grpc-js";
import { NoOpLogger, OrchestrationStatus, TaskHubGrpcClient, TaskHubGrpcWorker } from "@microsoft/durabletask-js";

import { pb, services, Empty, stringValue } from "./raw.mjs";
import { CITIES, Dtsd, dtsdPath, eventually } from "./support.mjs";
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const dtsctlPath = process.env.DTSCTL_BIN ?? resolve(dirname(dtsdPath), "../cli/dtsctl");

function metadataOf(token, hub) {
  const metadata = new Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  if (hub) metadata.set("taskhub", hub);
  return metadata;
}

/** The status code a call ends with (0: OK). */
function codeOf(stub, method, request, metadata) {
  return new Promise((done) => stub[method](request, metadata, { deadline: Date.now() + 5000 },
                                           (error) => done(error ? error.code : 0)));
}

/** A server stream: its error code, or 0 if it was still open (accepted) after 500 ms or ended well. */
function streamCodeOf(stub, method, request, metadata) {
  return new Promise((done) => {
    const call = stub[method](request, metadata);
    const timer = setTimeout(() => { call.cancel(); done(0); }, 500);
    call.on("data", () => {});
    call.on("error", (error) => { clearTimeout(timer); done(error.code === grpcStatus.CANCELLED ? 0 : error.code); });
    call.on("end", () => { clearTimeout(timer); done(0); });
  });
}

// What each RPC does, as the roles see it, and a request that would change the
// target instance (or create something) if it were let through.
const TARGET = "auth-target";
function calls() {
  const withId = (Type, id = TARGET) => { const r = new Type(); r.setInstanceid(id); return r; };
  const start = withId(pb.CreateInstanceRequest, "auth-new");
  start.setName("HelloCities");
  const raise = withId(pb.RaiseEventRequest);
  raise.setName("go");
  const signal = withId(pb.SignalEntityRequest, "@counter@auth");
  signal.setName("add");
  const query = new pb.QueryInstancesRequest();
  query.setQuery(new pb.InstanceQuery());
  const entities = new pb.QueryEntitiesRequest();
  entities.setQuery(new pb.EntityQuery());
  const clean = new pb.CleanEntityStorageRequest();
  clean.setRemoveemptyentities(true);
  const abandonActivity = new pb.AbandonActivityTaskRequest();
  abandonActivity.setCompletiontoken("1.a1");
  const abandonOrchestrator = new pb.AbandonOrchestrationTaskRequest();
  abandonOrchestrator.setCompletiontoken("1.o1");
  const abandonEntity = new pb.AbandonEntityTaskRequest();
  abandonEntity.setCompletiontoken("1.e1");
  const activityDone = withId(pb.ActivityResponse);
  activityDone.setCompletiontoken("1.a1");
  const orchestratorDone = withId(pb.OrchestratorResponse);
  orchestratorDone.setCompletiontoken("1.o1");
  const entityDone = new pb.EntityBatchResult();
  entityDone.setCompletiontoken("1.e1");
  const batch = new pb.InstanceBatch();
  batch.setInstanceidsList([TARGET]);
  const skipGraceful = new pb.SkipGracefulOrchestrationTerminationsRequest();
  skipGraceful.setInstancebatch(batch);
  return [
    ["hello", "any", new Empty()],
    ["startInstance", "write", start],
    ["getInstance", "read", withId(pb.GetInstanceRequest)],
    ["waitForInstanceStart", "read", withId(pb.GetInstanceRequest, "auth-done")],
    ["waitForInstanceCompletion", "read", withId(pb.GetInstanceRequest, "auth-done")],
    ["rewindInstance", "write", withId(pb.RewindInstanceRequest)],
    ["restartInstance", "write", withId(pb.RestartInstanceRequest, "auth-done")],
    ["raiseEvent", "write", raise],
    ["terminateInstance", "write", withId(pb.TerminateRequest)],
    ["suspendInstance", "write", withId(pb.SuspendRequest)],
    ["resumeInstance", "write", withId(pb.ResumeRequest)],
    ["queryInstances", "read", query],
    ["listInstanceIds", "read", new pb.ListInstanceIdsRequest()],
    ["purgeInstances", "write", withId(pb.PurgeInstancesRequest, "auth-done")],
    ["signalEntity", "write", signal],
    ["getEntity", "read", withId(pb.GetEntityRequest, "@counter@auth")],
    ["queryEntities", "read", entities],
    ["cleanEntityStorage", "write", clean],
    ["createTaskHub", "hubs", new pb.CreateTaskHubRequest()],
    ["deleteTaskHub", "hubs", new pb.DeleteTaskHubRequest()],
    ["completeActivityTask", "work", activityDone],
    ["completeOrchestratorTask", "work", orchestratorDone],
    ["completeEntityTask", "work", entityDone],
    ["abandonTaskActivityWorkItem", "work", abandonActivity],
    ["abandonTaskOrchestratorWorkItem", "work", abandonOrchestrator],
    ["abandonTaskEntityWorkItem", "work", abandonEntity],
    ["skipGracefulOrchestrationTerminations", "write", skipGraceful],
    ["getWorkItems", "work", new pb.GetWorkItemsRequest(), "stream"],
    ["streamInstanceHistory", "history", withId(pb.StreamInstanceHistoryRequest), "stream"],
  ];
}

/** What a credential of `kind` gets for a call of `need`: "unauthenticated", "denied" or "allowed". */
function expectedFor(kind, need) {
  if (["none", "forged", "expired", "revoked"].includes(kind)) return "unauthenticated";
  if (need === "any") return "allowed";
  if (kind === "otherHub") return "denied";
  const may = {
    reader: ["read", "history"],
    worker: ["work", "history"],
    contributor: ["read", "write", "work", "history"],
  }[kind];
  return may.includes(need) ? "allowed" : "denied";
}

function verdictOf(code) {
  if (code === grpcStatus.UNAUTHENTICATED) return "unauthenticated";
  if (code === grpcStatus.PERMISSION_DENIED) return "denied";
  return "allowed";
}

describe("auth: tokens on the gRPC endpoint", () => {
  let dtsd, authDir, stub;
  const tokens = {};
  const token = (role, hub, extra = []) => {
    const out = execFileSync(dtsctlPath, ["--json", "token", "create", "--role", role, "--task-hub", hub,
                                          "--auth-dir", authDir, ...extra], { encoding: "utf8" });
    return JSON.parse(out);
  };
  const contributorClient = () => new TaskHubGrpcClient({
    hostAddress: dtsd.address, logger: new NoOpLogger(),
    metadataGenerator: async () => metadataOf(tokens.contributor),
  });

  before(async () => {
    authDir = mkdtempSync(join(tmpdir(), "dtsd-auth-"));
    tokens.contributor = token("contributor", "default").token;
    tokens.reader = token("reader", "default").token;
    tokens.worker = token("worker", "default").token;
    tokens.otherHub = token("contributor", "other").token;
    tokens.admin = token("contributor", "*").token;
    tokens.expired = token("reader", "default", ["--expires", "1s"]).token;
    const revoked = token("contributor", "default");
    tokens.revoked = revoked.token;
    execFileSync(dtsctlPath, ["token", "revoke", revoked.id, "--auth-dir", authDir]);
    // The signature of another payload: what a forger who has no key can send.
    const parts = tokens.reader.split(".");
    tokens.forged = [parts[0], Buffer.from(JSON.stringify({ id: "x", role: "contributor", hubs: ["*"], iat: 0, exp: 0 }))
      .toString("base64url"), parts[2]].join(".");
    dtsd = await new Dtsd({ extraArgs: ["--auth", "--auth-dir", authDir] }).start();
    stub = new services.TaskHubSidecarServiceClient(dtsd.address, credentials.createInsecure());
    await new Promise((r) => setTimeout(r, 2100));  // The 1 s token expires.
  });
  after(async () => {
    stub?.close();
    await dtsd?.cleanup();
    rmSync(authDir, { recursive: true, force: true });
  });

  test("the JS SDK runs hello cities with a worker token and a contributor token; without one it fails clearly", async () => {
    const worker = new TaskHubGrpcWorker({
      hostAddress: dtsd.address, logger: new NoOpLogger(), shutdownTimeoutMs: 2000,
      metadataGenerator: async () => metadataOf(tokens.worker),
    });
    worker.addNamedActivity("SayHello", async (_ctx, city) => `Hello, ${city}!`);
    worker.addNamedOrchestrator("HelloCities", async function* (ctx) {
      const out = [];
      for (const city of CITIES) out.push(yield ctx.callActivity("SayHello", city));
      return out;
    });
    worker.addNamedOrchestrator("Waiting", async function* (ctx) { return yield ctx.waitForExternalEvent("go"); });
    await worker.start();
    const client = contributorClient();
    try {
      const id = await client.scheduleNewOrchestration("HelloCities");
      const state = await client.waitForOrchestrationCompletion(id, true, 30);
      assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
      assert.deepEqual(JSON.parse(state.serializedOutput), CITIES.map((c) => `Hello, ${c}!`));
      // What the matrix below works on: one instance waiting for an event, one done.
      await client.scheduleNewOrchestration("Waiting", undefined, TARGET);
      await client.waitForOrchestrationStart(TARGET, false, 30);
      await client.scheduleNewOrchestration("HelloCities", undefined, "auth-done");
      await client.waitForOrchestrationCompletion("auth-done", false, 30);

      const anonymous = new TaskHubGrpcClient({ hostAddress: dtsd.address, logger: new NoOpLogger() });
      await assert.rejects(anonymous.scheduleNewOrchestration("HelloCities"), (error) => {
        assert.equal(error.code, grpcStatus.UNAUTHENTICATED);
        assert.match(error.details, /requires a token/);
        return true;
      });
      await anonymous.stop();
    } finally {
      await worker.stop();
      await client.stop();
    }
  });

  test("every RPC x every credential: the code its role and hub call for; a refused call changes nothing", async () => {
    // The matrix names every RPC of the service: a new one cannot slip past it.
    assert.deepEqual(calls().map(([method]) => method).sort(), Object.keys(services.TaskHubSidecarServiceService).sort());
    const before = await contributorClient().getOrchestrationState(TARGET, true);
    assert.equal(before.runtimeStatus, OrchestrationStatus.RUNNING);
    const mismatches = [];
    // Refused credentials first, then the ones allowed some calls (a contributor last).
    for (const kind of ["none", "forged", "expired", "revoked", "otherHub", "reader", "worker", "contributor"]) {
      if (kind === "contributor") {
        // Everything refused so far changed nothing: the target still waits, unchanged,
        // nothing was started, no hub was made.
        const client = contributorClient();
        const now = await client.getOrchestrationState(TARGET, true);
        assert.equal(now.runtimeStatus, OrchestrationStatus.RUNNING);
        assert.equal(now.lastUpdatedAt.getTime(), before.lastUpdatedAt.getTime());
        assert.equal(await client.getOrchestrationState("auth-new"), undefined);
        assert.equal((await client.getOrchestrationState("auth-done")).runtimeStatus, OrchestrationStatus.COMPLETED);
        await client.stop();
      }
      for (const [method, need, request, shape] of calls()) {
        const metadata = metadataOf(tokens[kind]);
        const code = shape === "stream" ? await streamCodeOf(stub, method, request, metadata)
                                        : await codeOf(stub, method, request, metadata);
        const want = expectedFor(kind, need === "hubs" ? "hubs" : need);
        if (verdictOf(code) !== want) mismatches.push(`${kind} ${method}: code ${code}, expected ${want}`);
      }
    }
    assert.deepEqual(mismatches, []);
    // The audit log has the refusals with their token, and the changes let through.
    const audit = readFileSync(join(authDir, "audit.log"), "utf8").trim().split("\n").map((line) => JSON.parse(line));
    assert.ok(audit.some((e) => e.api === "grpc" && e.operation === "TerminateInstance" && e.result === "refused" &&
                               e.role === "reader" && e.instanceId === TARGET && /needs Durable Task Data Contributor/.test(e.reason)));
    assert.ok(audit.some((e) => e.api === "grpc" && e.operation === "RaiseEvent" && e.result === "refused" && e.token === null));
    assert.ok(audit.some((e) => e.api === "grpc" && e.operation === "StartInstance" && e.result === "done" &&
                               e.role === "contributor" && e.instanceId === "auth-new"));
    assert.ok(!audit.some((e) => e.operation === "GetInstance" && e.result === "done"), "reads are not logged");
    // A contributor of one hub cannot make hubs; one for every hub can.
    const metadata = metadataOf(tokens.admin, "authmade");
    assert.equal(await codeOf(stub, "createTaskHub", new pb.CreateTaskHubRequest(), metadata), 0);
  });

  test("a token for another hub sees nothing of this one; a revoked token stops within seconds", async () => {
    const code = await codeOf(stub, "getInstance", (() => { const r = new pb.GetInstanceRequest(); r.setInstanceid(TARGET); return r; })(),
                              metadataOf(tokens.otherHub));
    assert.equal(code, grpcStatus.PERMISSION_DENIED);
    const fresh = token("reader", "default");
    const request = new pb.ListInstanceIdsRequest();
    await eventually(async () => (await codeOf(stub, "listInstanceIds", request, metadataOf(fresh.token))) === 0, 5000,
                     "a new token is accepted");
    execFileSync(dtsctlPath, ["token", "revoke", fresh.id, "--auth-dir", authDir]);
    await eventually(async () => (await codeOf(stub, "listInstanceIds", request, metadataOf(fresh.token))) ===
                     grpcStatus.UNAUTHENTICATED, 5000, "the revoked token is refused");
  });

  test("a work stream open when its token is revoked is ended within seconds", async () => {
    const doomed = token("worker", "default");
    const stream = stub.getWorkItems(new pb.GetWorkItemsRequest(), metadataOf(doomed.token));
    const ended = new Promise((resolve) => {
      stream.on("error", (error) => resolve(error));
      stream.on("end", () => resolve(null));
    });
    stream.on("data", () => {});
    await new Promise((r) => setTimeout(r, 500));
    const revokedAt = Date.now();
    execFileSync(dtsctlPath, ["token", "revoke", doomed.id, "--auth-dir", authDir]);
    const error = await Promise.race([ended, new Promise((r) => setTimeout(() => r("still open"), 8000))]);
    assert.notEqual(error, "still open", "the stream is still open 8 s after the revocation");
    assert.match(error?.details ?? "", /revoked/);
    assert.ok(Date.now() - revokedAt < 8000);
  });
});

// The REST API: each route as the dashboard and DTS's tools call it, and what
// it needs. Writes target the waiting instance, so that a let-through shows.
const ROUTES = [
  ["GET", "ping", "read"],
  ["GET", "workers", "read"],
  ["GET", "recent", "read"],
  ["POST", "orchestrations", "write", { name: "HelloCities", instanceId: "rest-new" }],
  ["POST", "orchestrations/query", "read", {}],
  ["POST", "orchestrations/forceterminate", "write", { instanceIds: [TARGET] }],
  ["DELETE", "orchestrations/purge", "write", { instanceIds: ["auth-done"] }],
  ["GET", `orchestrations/${TARGET}`, "read"],
  ["GET", `orchestrations/${TARGET}/payloads`, "read"],
  ["DELETE", "orchestrations/auth-done", "write"],
  ["POST", "orchestrations/auth-done/restart", "write", {}],
  ["POST", "entities/query", "read", {}],
  ["POST", "entities/@counter@rest/signal", "write", { operation: "add", input: 1 }],
  ["GET", "entities/@counter@rest", "read"],
  ["DELETE", "entities/@counter@rest", "write"],
  ["GET", "retention", "read"],
  ["PUT", "retention", "write", { retentionPolicies: [{ retentionPeriodInDays: 1 }] }],
  ["DELETE", "retention", "write"],
];

describe("auth: tokens on the REST API and the dashboard", () => {
  let dtsd, authDir;
  const tokens = {};
  const token = (role, hub) => JSON.parse(execFileSync(dtsctlPath, ["--json", "token", "create", "--role", role,
    "--task-hub", hub, "--auth-dir", authDir], { encoding: "utf8" }));
  const rest = (method, path, credential, body) => fetch(`${dtsd.restUrl}/v1/taskhubs/${path}`, {
    method,
    headers: { "content-type": "application/json", ...(credential ? { authorization: `Bearer ${credential}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

  before(async () => {
    authDir = mkdtempSync(join(tmpdir(), "dtsd-auth-rest-"));
    for (const [name, role, hub] of [["contributor", "contributor", "default"], ["reader", "reader", "default"],
                                     ["worker", "worker", "default"], ["otherHub", "contributor", "other"],
                                     ["admin", "reader", "*"]]) {
      tokens[name] = token(role, hub).token;
    }
    const revoked = token("reader", "default");
    execFileSync(dtsctlPath, ["token", "revoke", revoked.id, "--auth-dir", authDir]);
    tokens.revoked = revoked.token;
    tokens.forged = `${tokens.reader.slice(0, -4)}AAAA`;
    dtsd = await new Dtsd({ extraArgs: ["--auth", "--auth-dir", authDir] }).start();
    const client = new TaskHubGrpcClient({ hostAddress: dtsd.address, logger: new NoOpLogger(),
                                           metadataGenerator: async () => metadataOf(tokens.contributor) });
    await client.scheduleNewOrchestration("Waiting", undefined, TARGET);
    await client.scheduleNewOrchestration("Waiting", undefined, "auth-ui-target");  // The browser's.
    await client.stop();
  });
  after(async () => {
    await dtsd?.cleanup();
    rmSync(authDir, { recursive: true, force: true });
  });

  test("every route x every credential: 401, 403 or served as the role says; a refused call changes nothing", async () => {
    const before = await (await rest("GET", `orchestrations/${TARGET}`, tokens.reader)).json();
    const mismatches = [];
    for (const kind of ["none", "forged", "revoked", "otherHub", "worker", "reader"]) {
      for (const [method, path, need, body] of ROUTES) {
        const response = await rest(method, path, tokens[kind], body);
        await response.arrayBuffer();
        const want = ["none", "forged", "revoked"].includes(kind) ? 401
          : kind === "reader" && need === "read" ? "served" : 403;
        const got = response.status === 401 || response.status === 403 ? response.status : "served";
        if (got !== want) mismatches.push(`${kind} ${method} ${path}: ${response.status}, expected ${want}`);
      }
    }
    assert.deepEqual(mismatches, []);
    const after = await (await rest("GET", `orchestrations/${TARGET}`, tokens.reader)).json();
    assert.deepEqual(after, before, "the target is as it was");
    assert.equal((await rest("GET", "orchestrations/rest-new", tokens.reader)).status, 404, "nothing was started");
    const refused = await (await rest("GET", "ping", undefined)).json();
    assert.equal(refused.code, "UNAUTHENTICATED");
    const wrongHub = await (await rest("GET", `orchestrations/${TARGET}`, tokens.otherHub)).json();
    assert.equal(wrongHub.code, "PERMISSION_DENIED");
    assert.match(wrongHub.message, /is for task hub 'other', not 'default'/);
    // A contributor is served every route.
    for (const [method, path, , body] of ROUTES) {
      const response = await rest(method, path, tokens.contributor, body);
      await response.arrayBuffer();
      assert.ok(![401, 403].includes(response.status), `contributor ${method} ${path}: ${response.status}`);
    }
    // /metrics: a reader of every hub; /healthz and /readyz: anyone (readyz lists the token's hubs only).
    assert.equal((await fetch(`${dtsd.restUrl}/metrics`, { headers: { authorization: `Bearer ${tokens.reader}` } })).status, 403);
    assert.equal((await fetch(`${dtsd.restUrl}/metrics`, { headers: { authorization: `Bearer ${tokens.admin}` } })).status, 200);
    assert.equal((await fetch(`${dtsd.restUrl}/healthz`)).status, 200);
    assert.deepEqual((await (await fetch(`${dtsd.restUrl}/readyz`)).json()).taskHubs, []);
    const ready = await (await fetch(`${dtsd.restUrl}/readyz`, { headers: { authorization: `Bearer ${tokens.reader}` } })).json();
    assert.deepEqual(ready.taskHubs, ["default"]);
    assert.equal(ready.auth, true);
  });

  test("the dashboard asks for a token, keeps it for the tab, refuses a bad one, and a reader cannot change anything", async () => {
    const shots = resolve(dirname(dtsdPath), "../../screenshots");
    mkdirSync(shots, { recursive: true });
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 700 } });
      page.setDefaultTimeout(15000);
      await page.goto(`${dtsd.restUrl}/#/`);
      await page.getByRole("heading", { name: "Sign in" }).waitFor();
      await page.getByText("This dtsd requires a token.").waitFor();
      await page.screenshot({ path: join(shots, "signin.png") });
      await page.getByLabel("Token").fill(tokens.forged);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("alert").getByText(/not valid here/).waitFor();
      await page.getByLabel("Token").fill(tokens.worker);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("alert").getByText(/worker role; this call needs Durable Task Data Reader/).waitFor();
      await page.getByLabel("Token").fill(tokens.reader);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("link", { name: "auth-ui-target" }).waitFor();
      await page.screenshot({ path: join(shots, "signed-in-reader.png") });
      // A reader's attempt to terminate is refused by dtsd, and the instance stays.
      const before = await (await rest("GET", "orchestrations/auth-ui-target", tokens.reader)).json();
      await page.goto(`${dtsd.restUrl}/#/orchestrations/auth-ui-target`);
      page.once("dialog", (dialog) => dialog.accept("from a reader"));
      await page.getByRole("button", { name: "Terminate" }).click();
      await page.getByRole("alert").getByText(/reader role; this call needs Durable Task Data Contributor/).waitFor();
      await page.screenshot({ path: join(shots, "reader-refused.png") });
      const after = await (await rest("GET", "orchestrations/auth-ui-target", tokens.reader)).json();
      assert.deepEqual(after, before);
      // Reloaded, the tab still has its token; signed out, it is asked again.
      await page.reload();
      await page.getByRole("button", { name: "Sign out" }).click();
      await page.getByRole("heading", { name: "Sign in" }).waitFor();
    } finally {
      await browser.close();
    }
  });
});

describe("auth: safe defaults", () => {
  test("binding beyond loopback without --auth refuses to start and says how to make a token; with --auth it starts", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "dtsd-auth-bind-"));
    try {
      const open = new Dtsd({ dataDir, extraArgs: ["--grpc-listen", "0.0.0.0:0"] });
      await assert.rejects(open.start(), /refusing to serve beyond this machine without tokens[\s\S]*dtsctl token create/);
      const guarded = await new Dtsd({ dataDir, extraArgs: ["--grpc-listen", "0.0.0.0:0", "--auth"] }).start();
      await guarded.stop();
      const insecure = await new Dtsd({ dataDir, extraArgs: ["--grpc-listen", "0.0.0.0:0", "--insecure-no-auth"] }).start();
      await insecure.stop();
      assert.match(insecure.stderr + insecure.stdout, /insecure-no-auth/);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("auth: limits per token on the gRPC endpoint", () => {
  test("a token holds at most --token-streams-max work streams and waits; more is RESOURCE_EXHAUSTED", async () => {
    const authDir = mkdtempSync(join(tmpdir(), "dtsd-auth-limits-"));
    const made = JSON.parse(execFileSync(dtsctlPath, ["--json", "token", "create", "--role", "contributor",
                                                      "--task-hub", "default", "--auth-dir", authDir], { encoding: "utf8" }));
    const dtsd = await new Dtsd({ extraArgs: ["--auth", "--auth-dir", authDir, "--token-streams-max", "1"] }).start();
    const stub = new services.TaskHubSidecarServiceClient(dtsd.address, credentials.createInsecure());
    try {
      const first = stub.getWorkItems(new pb.GetWorkItemsRequest(), metadataOf(made.token));
      first.on("data", () => {});
      first.on("error", () => {});
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await streamCodeOf(stub, "getWorkItems", new pb.GetWorkItemsRequest(), metadataOf(made.token)),
                   grpcStatus.RESOURCE_EXHAUSTED);
      const wait = new pb.GetInstanceRequest();
      wait.setInstanceid("nothing");
      assert.equal(await codeOf(stub, "waitForInstanceStart", wait, metadataOf(made.token)), grpcStatus.RESOURCE_EXHAUSTED);
      first.cancel();
      await eventually(async () => (await streamCodeOf(stub, "getWorkItems", new pb.GetWorkItemsRequest(),
                                                       metadataOf(made.token))) === 0, 5000, "the slot comes back");
    } finally {
      stub.close();
      await dtsd.cleanup();
      rmSync(authDir, { recursive: true, force: true });
    }
  });
});
