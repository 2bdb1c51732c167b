// The DTS REST API on the dashboard port, against a real dtsd running real
// orchestrations (official JS SDK worker): shapes as DTS's clients read them,
// filters and paging, each management call and its effect, and bad input that
// gets a clear error and changes nothing.
import assert from "node:assert/strict";
import { connect } from "node:net";
import { describe, test } from "node:test";

import { EntityInstanceId, OrchestrationStatus } from "@microsoft/durabletask-js";

import { CITIES, eventually, makeWorker, registerSamples, sharedEnvironment } from "./support.mjs";

const run = Date.now().toString(36);

describe("the DTS REST API on the dashboard port", () => {
  // "idle" has no worker: what waits there shows its age in /metrics.
  const env = sharedEnvironment(registerSamples, { extraArgs: ["--task-hubs", "default,idle"] });

  /** A call to the REST API; returns {status, body (parsed JSON or text), headers}. */
  async function rest(method, path, { body, hub, raw, prefix = "/v1/taskhubs/" } = {}) {
    const headers = { "content-type": "application/json" };
    if (hub !== undefined) headers["x-taskhub"] = hub;
    const response = await fetch(env.dtsd.restUrl + prefix + path, {
      method, headers, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    });
    const text = await response.text();
    let parsed = text;
    try { parsed = JSON.parse(text); } catch { /* text */ }
    return { status: response.status, body: parsed, headers: response.headers };
  }

  async function waitStatus(id, status) {
    return eventually(async () => {
      const got = await rest("GET", `orchestrations/${encodeURIComponent(id)}`);
      return got.status === 200 && got.body.orchestrationStatus === status ? got.body : null;
    }, 30000, `${id} to be ${status}`);
  }

  test("ping answers on both prefixes; an unknown hub is a 404 naming it", async () => {
    assert.equal((await rest("GET", "ping")).status, 200);
    assert.equal((await rest("GET", "ping", { prefix: "/api/v1/taskhubs/" })).status, 200);
    const unknown = await rest("GET", "ping", { hub: "nosuchhub" });
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.message, /nosuchhub/);
  });

  test("hello cities started over REST: metadata, payloads and the history with its five activities", async () => {
    const id = `rest-hello-${run}`;
    const started = await rest("POST", "orchestrations", {
      body: { name: "HelloCities", instanceId: id, tags: { team: "Blue" } },
    });
    assert.equal(started.status, 201);
    assert.equal(started.headers.get("location").split("/").pop(), id);
    const meta = await waitStatus(id, "ORCHESTRATION_STATUS_COMPLETED");
    assert.equal(meta.instanceId, id);
    assert.equal(meta.name, "HelloCities");
    assert.deepEqual(meta.tags, { team: "Blue" });
    assert.match(meta.executionId, /^[0-9a-f]{32}$/);
    for (const field of ["createdTimestamp", "lastUpdatedTimestamp", "completedTimestamp"]) {
      assert.ok(!Number.isNaN(Date.parse(meta[field])), `${field} is an RFC 3339 time`);
    }
    assert.equal(meta.input, undefined, "no payloads in the metadata");

    const payloads = await rest("GET", `orchestrations/${id}/payloads`);
    assert.equal(payloads.status, 200);
    assert.deepEqual(JSON.parse(payloads.body.output), CITIES.map((c) => `Hello, ${c}!`));
    assert.equal(payloads.body.orchestrationStatus, "ORCHESTRATION_STATUS_COMPLETED");

    const history = await rest("GET", `orchestrations/${id}/executions/${meta.executionId}/history`);
    assert.equal(history.status, 200);
    assert.ok(Array.isArray(history.body));
    const scheduled = history.body.filter((e) => e.taskScheduled);
    assert.deepEqual(scheduled.map((e) => JSON.parse(e.taskScheduled.input)), CITIES);
    assert.equal(history.body.filter((e) => e.taskCompleted).length, 5);
    assert.ok(history.body.every((e) => typeof e.timestamp === "string"));
    assert.ok(history.body.some((e) => e.executionCompleted?.orchestrationStatus === "ORCHESTRATION_STATUS_COMPLETED"));

    const wrongExecution = await rest("GET", `orchestrations/${id}/executions/nope/history`);
    assert.equal(wrongExecution.status, 404);
  });

  test("a failed orchestration shows its failure details", async () => {
    const id = `rest-fail-${run}`;
    assert.equal((await rest("POST", "orchestrations", { body: { name: "Failing", instanceId: id } })).status, 201);
    await waitStatus(id, "ORCHESTRATION_STATUS_FAILED");
    const payloads = await rest("GET", `orchestrations/${id}/payloads`);
    assert.ok(payloads.body.failureDetails, "failure details present");
    assert.match(JSON.stringify(payloads.body.failureDetails), /the city is closed/);
  });

  test("query: filters, trivia, sort and paging give every match exactly once", async () => {
    const prefix = `rest-page-${run}-`;
    const ids = [];
    for (let i = 0; i < 23; i++) {
      const id = `${prefix}${String(i).padStart(2, "0")}`;
      ids.push(id);
      assert.equal((await rest("POST", "orchestrations", {
        body: { name: "HelloCities", instanceId: id, tags: { batch: `B-${run}` } },
      })).status, 201);
    }
    await Promise.all(ids.map((id) => waitStatus(id, "ORCHESTRATION_STATUS_COMPLETED")));
    const seen = [];
    for (let start = 0; ; start += 5) {
      const page = await rest("POST", "orchestrations/query", {
        body: {
          filter: { orchestrationId: { value: prefix.toUpperCase() }, name: { value: "hello" },
                    orchestrationStatus: { status: ["ORCHESTRATION_STATUS_COMPLETED"] } },
          pagination: { startIndex: start, count: 5 },
          sort: [{ column: "ORCHESTRATION_ID", direction: "ASCENDING_SORT" }],
        },
      });
      assert.equal(page.status, 200);
      assert.equal(page.body.totalCount, 23);
      assert.equal(page.body.trivia.completedCount, 23);
      if (page.body.orchestrations.length === 0) break;
      seen.push(...page.body.orchestrations.map((o) => o.instanceId));
    }
    assert.deepEqual(seen, ids, "every match once, in id order");
    const descending = await rest("POST", "orchestrations/query", {
      body: { filter: { tags: { value: `b-${run}` } }, sort: [{ column: "ORCHESTRATION_ID", direction: "DESCENDING_SORT" }],
              pagination: { count: 3 } },
    });
    assert.deepEqual(descending.body.orchestrations.map((o) => o.instanceId), ids.slice(-3).reverse());
    const none = await rest("POST", "orchestrations/query", {
      body: { filter: { orchestrationId: { value: prefix }, orchestrationStatus: { status: ["ORCHESTRATION_STATUS_FAILED"] } } },
    });
    assert.equal(none.body.totalCount, 0);
    assert.equal(none.body.trivia.completedCount, 23, "the trivia counts every status of the filter's matches");
    assert.equal(none.body.trivia.totalCount, 23);
  });

  test("query: paging oldest first while instances are being created finds every earlier match exactly once", async () => {
    const prefix = `rest-live-${run}-`;
    const first = [];
    for (let i = 0; i < 30; i++) {
      const id = `${prefix}a${String(i).padStart(2, "0")}`;
      first.push(id);
      assert.equal((await rest("POST", "orchestrations", { body: { name: "HelloCities", instanceId: id } })).status, 201);
    }
    // More keep coming while the pages are read.
    let creating = true;
    const more = (async () => {
      for (let i = 0; creating && i < 200; i++) {
        await rest("POST", "orchestrations", { body: { name: "HelloCities", instanceId: `${prefix}b${String(i).padStart(3, "0")}` } });
      }
    })();
    const seen = [];
    try {
      for (let start = 0; ; start += 4) {
        const page = await rest("POST", "orchestrations/query", {
          body: { filter: { orchestrationId: { value: prefix } }, pagination: { startIndex: start, count: 4 },
                  sort: [{ column: "CREATED_AT", direction: "ASCENDING_SORT" }] },
        });
        assert.equal(page.status, 200);
        seen.push(...page.body.orchestrations.map((o) => o.instanceId));
        if (page.body.orchestrations.length < 4 || seen.filter((id) => id.includes(`${prefix}a`)).length >= 30 && start > 40) break;
      }
    } finally {
      creating = false;
      await more;
    }
    assert.deepEqual(seen.filter((id) => first.includes(id)), first, "each earlier match once, in creation order");
    assert.equal(new Set(seen).size, seen.length, "no row twice");
  });

  test("query: sub-orchestrations can be left out; a page past the deepest row is refused clearly", async () => {
    const id = `rest-parent-${run}`;
    assert.equal((await rest("POST", "orchestrations", { body: { name: "Parent", instanceId: id } })).status, 201);
    await waitStatus(id, "ORCHESTRATION_STATUS_COMPLETED");
    const ids = async (exclude) => (await rest("POST", "orchestrations/query", {
      body: { filter: { orchestrationId: { value: id }, excludeSubOrchestrations: exclude } },
    })).body.orchestrations.map((o) => o.instanceId).sort();
    assert.deepEqual(await ids(false), [id, `${id}-child`]);
    assert.deepEqual(await ids(true), [id]);
    const deep = await rest("POST", "orchestrations/query", { body: { pagination: { startIndex: 100000, count: 10 } } });
    assert.equal(deep.status, 400);
    assert.match(deep.body.message, /narrow the filter/);
    const wrong = await rest("POST", "orchestrations/query", { body: { filter: { excludeSubOrchestrations: "yes" } } });
    assert.equal(wrong.status, 400);
    assert.match(wrong.body.message, /excludeSubOrchestrations/);
  });

  test("suspend, resume, raise an event, terminate and purge through history events", async () => {
    const id = `rest-manage-${run}`;
    assert.equal((await rest("POST", "orchestrations", { body: { name: "Waiting", instanceId: id } })).status, 201);
    await waitStatus(id, "ORCHESTRATION_STATUS_RUNNING");
    assert.equal((await rest("POST", `orchestrations/${id}/history`, { body: { executionSuspended: { reason: "hold" } } })).status, 200);
    await waitStatus(id, "ORCHESTRATION_STATUS_SUSPENDED");
    assert.equal((await rest("POST", `orchestrations/${id}/history`, { body: { executionResumed: { reason: "go on" } } })).status, 200);
    await waitStatus(id, "ORCHESTRATION_STATUS_RUNNING");
    assert.equal((await rest("POST", `orchestrations/${id}/history`, {
      body: { eventRaised: { name: "go", input: JSON.stringify("released") } },
    })).status, 200);
    await waitStatus(id, "ORCHESTRATION_STATUS_COMPLETED");
    assert.equal((await rest("GET", `orchestrations/${id}/payloads`)).body.output, JSON.stringify("released"));

    // A running instance cannot be purged: 409, and it stays.
    const other = `rest-term-${run}`;
    assert.equal((await rest("POST", "orchestrations", { body: { name: "Waiting", instanceId: other } })).status, 201);
    await waitStatus(other, "ORCHESTRATION_STATUS_RUNNING");
    assert.equal((await rest("DELETE", `orchestrations/${other}`)).status, 409);
    assert.equal((await rest("GET", `orchestrations/${other}`)).status, 200);
    const failed = await rest("POST", "orchestrations/forceterminate", {
      body: { InstanceIds: [other, `rest-missing-${run}`], Reason: "stop" },
    });
    assert.equal(failed.status, 200);
    assert.deepEqual(failed.body, [`rest-missing-${run}`]);
    await waitStatus(other, "ORCHESTRATION_STATUS_TERMINATED");

    const purged = await rest("DELETE", "orchestrations/purge", { body: [id, other] });
    assert.equal(purged.status, 200);
    assert.equal(purged.body.deletedInstanceCount, 2);
    assert.equal((await rest("GET", `orchestrations/${id}`)).status, 404);
    assert.equal((await rest("DELETE", `orchestrations/${id}`)).status, 404);
  });

  test("restart under the same id and under a new one", async () => {
    const id = `rest-restart-${run}`;
    assert.equal((await rest("POST", "orchestrations", { body: { name: "HelloCities", instanceId: id } })).status, 201);
    await waitStatus(id, "ORCHESTRATION_STATUS_COMPLETED");
    const again = await rest("POST", `orchestrations/${id}/restart`, { body: { restartWithNewInstanceId: false } });
    assert.equal(again.status, 200);
    assert.equal(String(again.body), id);
    const fresh = await rest("POST", `orchestrations/${id}/restart`, { body: { restartWithNewInstanceId: true } });
    assert.equal(fresh.status, 200);
    assert.notEqual(String(fresh.body), id);
    const state = await env.client.waitForOrchestrationCompletion(String(fresh.body), true, 30);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
  });

  test("bad input: a clear 4xx naming the problem, and nothing changes", async () => {
    const before = (await rest("POST", "orchestrations/query", { body: { pagination: { count: 1000 } } })).body.totalCount;
    const cases = [
      ["POST", "orchestrations", { raw: "{not json" }, 400, /JSON/],
      ["POST", "orchestrations", { body: { instanceId: `rest-noname-${run}` } }, 400, /name/],
      ["POST", "orchestrations", { body: { name: 42 } }, 400, /name/],
      ["POST", "orchestrations", { body: { name: "HelloCities", instanceId: "x".repeat(300) } }, 400, /id|long|characters/i],
      ["POST", "orchestrations", { body: { name: "HelloCities", tags: { a: 1 } } }, 400, /tags\.a/],
      ["POST", "orchestrations", { body: { name: "HelloCities", scheduledStartTimestamp: "yesterday" } }, 400, /scheduledStartTimestamp/],
      ["POST", "orchestrations/query", { body: { pagination: { count: -1 } } }, 400, /pagination\.count/],
      ["POST", "orchestrations/query", { body: { pagination: { count: 5000 } } }, 400, /pagination\.count/],
      ["POST", "orchestrations/query", { body: { filter: { orchestrationStatus: { status: ["DONE"] } } } }, 400, /status/],
      ["POST", "orchestrations/query", { body: { sort: [{ column: "COLOR" }] } }, 400, /COLOR/],
      ["POST", "orchestrations/query", { body: { filter: { createdAt: { start: "noon" } } } }, 400, /createdAt\.start/],
      ["POST", `orchestrations/rest-none-${run}/history`, { body: { executionExploded: {} } }, 400, /executionExploded/],
      ["POST", `orchestrations/rest-none-${run}/history`, { body: { executionSuspended: {} } }, 404, /rest-none/],
      ["GET", `orchestrations/rest-none-${run}`, {}, 404, /rest-none/],
      ["POST", "orchestrations", { body: { name: "HelloCities" }, hub: "nosuchhub" }, 404, /nosuchhub/],
      ["GET", "nothing-here", {}, 404, /route/],
      ["POST", "orchestrations", { raw: `{"name":"HelloCities","input":${"[".repeat(100000)}${"]".repeat(100000)}}` }, 400, /deeper/],
      ["DELETE", "orchestrations/purge", { raw: "[".repeat(5000) }, 400, /deeper/],
    ];
    for (const [method, path, options, status, pattern] of cases) {
      const got = await rest(method, path, options);
      assert.equal(got.status, status, `${method} ${path} ${JSON.stringify(options).slice(0, 80)}: ${JSON.stringify(got.body)}`);
      assert.equal(typeof got.body.code, "string");
      assert.match(got.body.message, pattern);
    }
    // A body over the limit is refused before it is read whole.
    const huge = await rest("POST", "orchestrations", { raw: JSON.stringify({ name: "HelloCities", input: "x".repeat(20 << 20) }) });
    assert.equal(huge.status, 413);
    const after = (await rest("POST", "orchestrations/query", { body: { pagination: { count: 1000 } } })).body.totalCount;
    assert.equal(after, before, "no bad request started anything");

    // Expect: 100-continue: "100 Continue" first, then the answer to the body; over the limit, 413 at once.
    const expectContinue = (length, body) => new Promise((resolve, reject) => {
      let heard = "";
      const socket = connect(env.dtsd.dashboardPort, "127.0.0.1", () => socket.write(
        `POST /v1/taskhubs/ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n` +
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"));
      socket.on("data", (chunk) => {
        heard += chunk.toString();
        if (heard.startsWith("HTTP/1.1 100 Continue\r\n\r\n") && body !== undefined) {
          socket.write(body);
          body = undefined;
        }
      });
      socket.on("end", () => resolve(heard));
      socket.on("error", reject);
      setTimeout(() => { socket.destroy(); resolve(heard); }, 5000);
    });
    const continued = await expectContinue(2, "{}");
    assert.match(continued, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 404/, continued.slice(0, 80));
    const tooBig = await expectContinue(64 << 20, "");
    assert.match(tooBig, /^HTTP\/1\.1 413/, tooBig.slice(0, 80));

    // What is not HTTP at all gets a 400 too, then the connection closes.
    const answer = await new Promise((resolve, reject) => {
      const socket = connect(env.dtsd.dashboardPort, "127.0.0.1", () => socket.write("GARBAGE\r\n\r\n"));
      let text = "";
      socket.on("data", (chunk) => { text += chunk; });
      socket.on("end", () => resolve(text));
      socket.on("error", reject);
      socket.setTimeout(10000, () => reject(new Error("no answer to a malformed request")));
    });
    assert.match(answer, /^HTTP\/1\.1 400/);
    assert.match(answer, /malformed HTTP request/);
    // HEAD: the headers of a GET, no body.
    const head = await fetch(`${env.dtsd.restUrl}/v1/taskhubs/ping`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.ok(Number(head.headers.get("content-length")) > 0);
    assert.equal(await head.text(), "");
  });

  test("entities: query by name and key, one entity, its state", async () => {
    for (const [key, amount] of [[`a-${run}`, 5], [`b-${run}`, 7]]) {
      await env.client.signalEntity(new EntityInstanceId("counter", key), "add", amount);
    }
    const id = `@counter@b-${run}`;
    const state = await eventually(async () => {
      const got = await rest("GET", `entities/${encodeURIComponent(id)}/state`);
      return got.status === 200 && got.body === 7 ? got : null;
    }, 30000, "the counter's state");
    assert.equal(state.body, 7);
    const one = await rest("GET", `entities/${encodeURIComponent(id)}`);
    assert.equal(one.status, 200);
    assert.equal(one.body.instanceId, id);
    assert.ok(!Number.isNaN(Date.parse(one.body.lastModifiedTime)));
    const list = await rest("POST", "entities/query", {
      body: { filter: { name: { value: "Counter" }, key: { value: run } },
              sort: [{ column: "KEY", direction: "DESCENDING_SORT" }] },
    });
    assert.equal(list.status, 200);
    assert.equal(list.body.totalCount, 2);
    assert.deepEqual(list.body.entities.map((e) => e.instanceId), [id, `@counter@a-${run}`]);
    assert.equal((await rest("GET", `entities/${encodeURIComponent(`@counter@none-${run}`)}`)).status, 404);
    // dtsd's own: a signal over REST.
    const signalled = await rest("POST", `entities/${encodeURIComponent(id)}/signal`, { body: { operation: "add", input: "10" } });
    assert.equal(signalled.status, 202);
    await eventually(async () => (await rest("GET", `entities/${encodeURIComponent(id)}/state`)).body === 17, 30000, "17");
    assert.equal((await rest("POST", `entities/${encodeURIComponent(id)}/signal`, { body: {} })).status, 400);
    assert.equal((await rest("GET", "entities/not-an-entity")).status, 400);
    // Deleted with its state; then gone from the list too.
    const deleted = await rest("DELETE", `entities/${encodeURIComponent(id)}`);
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    assert.equal((await rest("GET", `entities/${encodeURIComponent(id)}`)).status, 404);
    const after = await rest("POST", "entities/query", { body: { filter: { name: { value: "counter" }, key: { value: run } } } });
    assert.deepEqual(after.body.entities.map((e) => e.instanceId), [`@counter@a-${run}`]);
    assert.equal((await rest("DELETE", `entities/${encodeURIComponent(id)}`)).status, 404);
    assert.equal((await rest("DELETE", "entities/not-an-entity")).status, 400);
    // A signal after the delete starts the entity afresh.
    await rest("POST", `entities/${encodeURIComponent(id)}/signal`, { body: { operation: "add", input: "1" } });
    await eventually(async () => (await rest("GET", `entities/${encodeURIComponent(id)}/state`)).body === 1, 30000, "1 again");
  });

  test("workers and /metrics: the connected worker, and counters that move with work", async () => {
    const workers = await rest("GET", "workers");
    assert.equal(workers.status, 200);
    assert.ok(workers.body.workers.length >= 1);
    assert.ok(workers.body.workers[0].maxActivitiesCount > 0);
    // A worker that says what it takes shows it.
    const narrow = makeWorker(env.dtsd, (w) => {
      w.addNamedOrchestrator("OnlyThis", async function* () { return 1; });
      w.addNamedActivity("OnlyThat", async () => 2);
    }, { workItemFilters: "auto" });
    await narrow.start();
    try {
      const shown = await eventually(async () => {
        const list = (await rest("GET", "workers")).body.workers;
        return list.find((w) => w.workItemFilters?.orchestrations?.some((f) => f.name === "OnlyThis"));
      }, 20000, "the narrow worker's filters");
      assert.deepEqual(shown.workItemFilters.activities.map((f) => f.name), ["OnlyThat"]);
    } finally {
      await narrow.stop();
    }
    const commits = async () => {
      const text = await (await fetch(`${env.dtsd.restUrl}/metrics`)).text();
      // Every sample line parses as Prometheus text: name{labels} number.
      for (const line of text.split("\n")) {
        if (line === "" || line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
        assert.match(line, /^[a-z_:][a-z0-9_:]*(\{([a-z_]+="[^"]*",?)*\})? (-?[0-9.e+-]+|\+Inf)$/, line);
      }
      // Each histogram's +Inf bucket is its count; buckets never decrease.
      for (const family of ["dtsd_partition_commit_seconds", "dtsd_partition_batch_changes"]) {
        const partitions = new Map();
        for (const m of text.matchAll(new RegExp(`^${family}_bucket\\{task_hub="([^"]+)",partition="(\\d+)",le="([^"]+)"\\} (\\d+)$`, "gm"))) {
          const key = `task_hub="${m[1]}",partition="${m[2]}"`;
          const seen = partitions.get(key) ?? [];
          seen.push(Number(m[4]));
          partitions.set(key, seen);
        }
        assert.ok(partitions.size > 0, `${family} has buckets`);
        for (const [partition, counts] of partitions) {
          assert.deepEqual(counts, [...counts].sort((a, b) => a - b), `${family} buckets of ${partition}`);
          const count = new RegExp(`^${family}_count\\{${partition}\\} (\\d+)$`, "m").exec(text);
          assert.equal(Number(count[1]), counts.at(-1));
        }
      }
      return [...text.matchAll(/^dtsd_partition_commits_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
    };
    // Orchestrations per status, kept by the partitions, agree with a list of the whole hub.
    await eventually(async () => {
      const text = await (await fetch(`${env.dtsd.restUrl}/metrics`)).text();
      const count = (status) => Number(new RegExp(`^dtsd_orchestrations\\{task_hub="default",status="${status}"\\} (\\d+)$`, "m").exec(text)[1]);
      const all = [...text.matchAll(/^dtsd_orchestrations\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
      const { trivia } = (await rest("POST", "orchestrations/query", { body: { pagination: { count: 1 } } })).body;
      return count("COMPLETED") === trivia.completedCount && count("FAILED") === trivia.failedCount &&
        count("RUNNING") === trivia.runningCount && all === trivia.totalCount && all > 0;
    }, 20000, "status counts equal to the list's");
    const diskBytes = [...(await (await fetch(`${env.dtsd.restUrl}/metrics`)).text())
      .matchAll(/^dtsd_partition_disk_bytes\{[^}]*\} (\d+)$/gm)].map((m) => Number(m[1]));
    assert.ok(diskBytes.length > 0 && diskBytes.every((n) => n > 0), "each partition's data takes some disk");
    const before = await commits();
    const lifecycle = async () => {
      const text = await (await fetch(`${env.dtsd.restUrl}/metrics`)).text();
      const value = (pattern) => Number(new RegExp(`^${pattern} (\\d+)$`, "m").exec(text)[1]);
      return { started: value('dtsd_orchestrations_started_total\\{task_hub="default"\\}'),
               completed: value('dtsd_orchestrations_ended_total\\{task_hub="default",status="COMPLETED"\\}') };
    };
    const counted = await lifecycle();
    const id = await env.client.scheduleNewOrchestration("HelloCities");
    await env.client.waitForOrchestrationCompletion(id, true, 30);
    assert.ok(await commits() > before, "commits counted");
    const after = await lifecycle();
    assert.ok(after.started >= counted.started + 1 && after.completed >= counted.completed + 1,
              `started and completed counted: ${JSON.stringify(counted)} then ${JSON.stringify(after)}`);
    // Work nobody takes shows how long it has waited; work taken at once shows none.
    assert.equal((await rest("POST", "orchestrations", { hub: "idle", body: { name: "HelloCities", instanceId: `idle-${run}` } })).status, 201);
    const waited = await eventually(async () => {
      const text = await (await fetch(`${env.dtsd.restUrl}/metrics`)).text();
      const age = (hub) => Number(new RegExp(`^dtsd_work_items_oldest_pending_seconds\\{task_hub="${hub}",kind="orchestrator"\\} ([0-9.]+)$`, "m").exec(text)[1]);
      return age("idle") >= 1 ? { idle: age("idle"), busy: age("default") } : null;
    }, 20000, "the idle hub's orchestration waiting a second");
    assert.ok(waited.busy < waited.idle, `the default hub's work is taken: ${JSON.stringify(waited)}`);
    // dtsd's own: the samples of the last minutes the charts draw (one at start, then every 5 s).
    const recent = await eventually(async () => {
      const got = await rest("GET", "recent");
      return got.status === 200 && got.body.samples.some((x) => x.workers >= 1) ? got.body : null;
    }, 20000, "a sample with the worker connected");
    assert.equal(recent.intervalSeconds, 5);
    const last = recent.samples.at(-1);
    assert.ok(!Number.isNaN(Date.parse(last.timestamp)));
    assert.equal(typeof last.pending.activities, "number");
    assert.ok(last.commits >= recent.samples[0].commits, "counters only grow");
    assert.equal((await rest("GET", "recent", { hub: "nosuchhub" })).status, 404);
    const health = await fetch(`${env.dtsd.restUrl}/healthz`);
    assert.equal(health.status, 200);
    assert.equal((await fetch(`${env.dtsd.restUrl}/readyz`)).status, 200);
  });
  test("retention: PUT sets the hub's policy in DTS's shape, ended orchestrations go after their time, bad input changes nothing", async () => {
    const hub = "idle";  // No worker: what is started there waits, until terminated.
    const before = await rest("GET", "retention", { hub });
    assert.equal(before.status, 200);
    assert.equal(before.body.source, "dtsdDefault");
    const ids = [0, 1, 2].map((i) => `rest-retained-${run}-${i}`);
    for (const id of ids) assert.equal((await rest("POST", "orchestrations", { hub, body: { name: "Anything", instanceId: id } })).status, 201);
    assert.equal((await rest("POST", "orchestrations/forceterminate", { hub, body: { instanceIds: ids } })).status, 200);
    const policy = { retentionPolicies: [{ retentionPeriodInDays: 30 },
                                         { orchestrationState: "Terminated", retentionPeriodInSeconds: 1 }] };
    const put = await rest("PUT", "retention", { hub, body: policy });
    assert.equal(put.status, 200);
    assert.deepEqual(put.body, { ...policy, source: "taskHub" });
    for (const bad of ['{"retentionPolicies": [{"orchestrationState": "Running", "retentionPeriodInDays": 1}]}', "not json"]) {
      const refused = await rest("PUT", "retention", { hub, raw: bad });
      assert.equal(refused.status, 400);
      assert.ok(refused.body.message.length > 0);
    }
    assert.deepEqual((await rest("GET", "retention", { hub })).body, { ...policy, source: "taskHub" });
    await eventually(async () => {
      for (const id of ids) {
        if ((await rest("GET", `orchestrations/${id}`, { hub })).status !== 404) return false;
      }
      return true;
    }, 15000, "the terminated orchestrations to be purged");
    const metrics = await (await fetch(`${env.dtsd.restUrl}/metrics`)).text();
    const purged = metrics.match(/dtsd_retention_purged_total\{task_hub="idle",status="TERMINATED"\} (\d+)/);
    assert.ok(purged, "the purges are counted");
    assert.ok(Number(purged[1]) >= 3);
    assert.match(metrics, /dtsd_oldest_retained_instance_seconds\{task_hub="idle"\} [0-9.]+/);
    const dropped = await rest("DELETE", "retention", { hub });
    assert.equal(dropped.status, 200);
    assert.equal(dropped.body.source, "dtsdDefault");
  });
  test("schedules: created, listed, changed, paused, triggered and deleted over REST; runs start with the worker and report back", async () => {
    const id = `rest-sched-${run}`;
    const made = await rest("POST", "schedules", { body: { scheduleId: id, orchestrationName: "HelloCities", interval: "1s",
                                                          orchestrationInput: { from: "rest" }, catchUpPolicy: "All" } });
    assert.equal(made.status, 201);
    assert.equal(made.body.scheduleId, id);
    assert.equal(made.body.status, "Active");
    assert.equal(made.body.intervalSeconds, 1);
    assert.equal((await rest("POST", "schedules", { body: { scheduleId: id, orchestrationName: "HelloCities", interval: "1s" } })).status, 409);
    for (const bad of ['{"scheduleId": "x", "orchestrationName": "A", "cron": "0 0 31 2 *"}',
                       '{"scheduleId": "x", "orchestrationName": "A", "cron": "* * * * *", "timeZone": "Nowhere/Land"}',
                       '{"scheduleId": "x", "orchestrationName": "A"}', "not json"]) {
      const refused = await rest("POST", "schedules", { raw: bad });
      assert.equal(refused.status, 400, bad);
      assert.ok(refused.body.message.length > 0);
    }
    assert.equal((await rest("GET", "schedules/x")).status, 404);  // Nothing was made from bad input.
    // Runs start each second and complete with the shared worker; each reports its end.
    await eventually(async () => {
      const shown = (await rest("GET", `schedules/${id}`)).body;
      return shown.state.runs >= 2 && shown.state.lastStatus === "Completed";
    }, 20000, "two runs, the last completed");
    const shown = (await rest("GET", `schedules/${id}`)).body;
    const run1 = await rest("GET", `orchestrations/${encodeURIComponent(shown.state.lastInstanceId)}`);
    assert.equal(run1.status, 200);
    assert.equal(run1.body.tags["dtsd.schedule"], id);
    const listed = await rest("GET", "schedules");
    assert.ok(listed.body.schedules.some((s) => s.scheduleId === id));
    const paused = await rest("POST", `schedules/${id}/pause`, { body: { reason: "maintenance" } });
    assert.equal(paused.status, 200);
    assert.equal(paused.body.status, "Paused");
    assert.equal(paused.body.state.note, "maintenance");
    const changed = await rest("PUT", `schedules/${id}`, { body: { orchestrationName: "HelloCities", cron: "0 9 * * MON-FRI",
                                                                   timeZone: "Europe/Berlin" } });
    assert.equal(changed.status, 200);
    assert.equal(changed.body.cron, "0 9 * * MON-FRI");
    assert.equal((await rest("PUT", `schedules/${id}`, { body: { scheduleId: "other", orchestrationName: "A", interval: "1m" } })).status, 400);
    const resumed = await rest("POST", `schedules/${id}/resume`);
    assert.equal(resumed.body.status, "Active");
    assert.match(resumed.body.nextRunAt, /T0[78]:00:00Z$/);  // 09:00 in Berlin is 07:00 or 08:00 UTC.
    const triggered = await rest("POST", `schedules/${id}/trigger`);
    assert.equal(triggered.status, 200);
    await waitStatus(triggered.body.state.lastInstanceId, "ORCHESTRATION_STATUS_COMPLETED");
    assert.equal((await rest("DELETE", `schedules/${id}`)).status, 200);
    assert.equal((await rest("GET", `schedules/${id}`)).status, 404);
  });
});
