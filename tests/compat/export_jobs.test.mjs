// Export jobs run by dtsd (REST /v1/taskhubs/exports): a batch job that purges what
// it wrote, interrupted by kill -9 of dtsd and resumed by the next start with every
// orchestration in the file exactly once; a continuous job that archives what ends
// after it was made; and bad input that is refused and makes nothing.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { gunzipSync } from "node:zlib";

import { OrchestrationStatus } from "@microsoft/durabletask-js";

import { Dtsd, eventually, makeClient, makeWorker, registerSamples } from "./support.mjs";

/** A call to the REST API of `dtsd`; returns {status, body}. */
async function rest(dtsd, method, path, body) {
  const response = await fetch(`${dtsd.restUrl}/v1/taskhubs/${path}`, {
    method, headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* text */ }
  return { status: response.status, body: parsed };
}

/** The ids of the orchestrations in an export file, one a line, in order. */
function idsIn(file) {
  const raw = readFileSync(file);
  const text = file.endsWith(".gz") ? gunzipSync(raw).toString() : raw.toString();
  return text.split("\n").filter((line) => line.length > 0).map((line) => {
    const row = JSON.parse(line);
    assert.ok(Array.isArray(row.history) && row.history.length >= 2, `${row.instanceId} has its history`);
    return row.instanceId;
  });
}

async function runHelloCities(dtsd, prefix, count) {
  const client = makeClient(dtsd);
  try {
    const ids = [];
    for (let i = 0; i < count; i++) ids.push(await client.scheduleNewOrchestration("HelloCities", undefined, `${prefix}${i}`));
    for (const id of ids) {
      const state = await client.waitForOrchestrationCompletion(id, false, 60);
      assert.equal(state?.runtimeStatus, OrchestrationStatus.COMPLETED, id);
    }
    return ids;
  } finally {
    await client.stop();
  }
}

describe("export jobs run by dtsd", () => {
  test("a batch job survives kill -9 of dtsd: every orchestration once in the file, all purged", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "dtsd-export-job-"));
    let dtsd = await new Dtsd({ dataDir }).start();
    const worker = makeWorker(dtsd, registerSamples);
    await worker.start();
    try {
      const count = 300;
      const ids = await runHelloCities(dtsd, "ej-", count);
      await worker.stop();
      const made = await rest(dtsd, "POST", "exports", { jobId: "archive", purge: true, pageSize: 2 });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      assert.equal(made.body.status, "Running");
      assert.equal(made.body.file, join(dataDir, "exports", "default", "archive.jsonl.gz"));

      // Part way: killed with nothing drained.
      let seen = 0;
      for (let i = 0; i < 2000 && seen < 40; i++) {
        seen = (await rest(dtsd, "GET", "exports/archive")).body.exported;
        await new Promise((r) => setTimeout(r, 5));
      }
      const before = (await rest(dtsd, "GET", "exports/archive")).body;
      assert.equal(before.status, "Running", "the job ended before it could be interrupted");
      await dtsd.kill();

      dtsd = await new Dtsd({ dataDir }).start();
      const done = await eventually(async () => {
        const job = (await rest(dtsd, "GET", "exports/archive")).body;
        return job.status === "Completed" ? job : null;
      }, 60000, "the resumed job to complete");
      assert.equal(done.exported, count);
      assert.equal(done.purged, count);
      const exported = idsIn(done.file);
      assert.equal(exported.length, count, "no line missing or written twice");
      assert.deepEqual([...exported].sort(), [...ids].sort());
      const left = await rest(dtsd, "POST", "orchestrations/query", { pagination: { startIndex: 0, count: 10 } });
      assert.equal(left.status, 200);
      assert.equal(left.body.totalCount, 0, "every exported orchestration is purged");

      // The same id again is refused while the job (or its file) is there; a delete
      // forgets the job and keeps the file.
      assert.equal((await rest(dtsd, "POST", "exports", { jobId: "archive" })).status, 409);
      assert.equal((await rest(dtsd, "DELETE", "exports/archive")).status, 200);
      assert.equal((await rest(dtsd, "GET", "exports/archive")).status, 404);
      assert.ok(existsSync(done.file));
      assert.equal((await rest(dtsd, "POST", "exports", { jobId: "archive" })).status, 409, "its file is still there");
    } finally {
      await worker.stop().catch(() => {});
      await dtsd.cleanup();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("a continuous job archives what ends after it was made; bad input is refused and makes nothing", async () => {
    const dtsd = await new Dtsd().start();
    const worker = makeWorker(dtsd, registerSamples);
    await worker.start();
    try {
      const made = await rest(dtsd, "POST", "exports",
                              { jobId: "live", mode: "Continuous", purge: true, pollSeconds: 1, format: "jsonl" });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      const first = await runHelloCities(dtsd, "live-a-", 20);
      const second = await runHelloCities(dtsd, "live-b-", 20);
      const job = await eventually(async () => {
        const now = (await rest(dtsd, "GET", "exports/live")).body;
        return now.exported >= 40 ? now : null;
      }, 30000, "the continuous job to take 40");
      assert.equal(job.status, "Running");
      assert.deepEqual(idsIn(job.file).sort(), [...first, ...second].sort());
      const listed = await rest(dtsd, "GET", "exports");
      assert.deepEqual(listed.body.jobs.map((j) => j.jobId), ["live"]);

      for (const [body, pattern] of [
        [{ mode: "Continuous" }, /purge/],
        [{ jobId: "../escape" }, /jobId/],
        [{ runtimeStatus: ["Running"] }, /has not ended/],
        [{ completedTimeFrom: "yesterday" }, /completedTimeFrom/],
        [{ pageSize: 0 }, /pageSize/],
        [{ colour: "blue" }, /no field 'colour'/],
      ]) {
        const refused = await rest(dtsd, "POST", "exports", body);
        assert.equal(refused.status, 400, JSON.stringify(body));
        assert.match(refused.body.message, pattern);
      }
      assert.deepEqual((await rest(dtsd, "GET", "exports")).body.jobs.map((j) => j.jobId), ["live"]);
      assert.equal((await rest(dtsd, "DELETE", "exports/nosuchjob")).status, 404);
      assert.equal((await rest(dtsd, "DELETE", "exports/live")).status, 200);
      assert.deepEqual((await rest(dtsd, "GET", "exports")).body.jobs, []);
    } finally {
      await worker.stop().catch(() => {});
      await dtsd.cleanup();
    }
  });
});
