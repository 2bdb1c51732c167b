// The dashboard in a real browser (Debian's chromium driven by playwright-core)
// against dtsd running hello cities, a fan-out, a failing orchestration and an
// entity: the list filters and pages, the instance page shows the five activities
// in order in the timeline and the history, and each action through the UI
// changes the instance as the API says. Screenshots of each page go to
// <build>/screenshots/.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";

import { EntityInstanceId, OrchestrationStatus, whenAll } from "@microsoft/durabletask-js";
import { chromium } from "playwright-core";

import { dtsdPath, eventually, registerSamples, sharedEnvironment } from "./support.mjs";

const run = Date.now().toString(36);
const shots = resolve(dirname(dtsdPath), "../../screenshots");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

function register(w) {
  registerSamples(w);
  w.addNamedOrchestrator("FanOut", async function* (ctx) {
    const tasks = [];
    for (let i = 0; i < 8; i++) tasks.push(ctx.callActivity("SayHello", `city-${i}`));
    return yield whenAll(tasks);
  });
}

describe("the dashboard in a browser", () => {
  const env = sharedEnvironment(register);
  let browser, page;
  const ids = { hello: `ui-hello-${run}`, fan: `ui-fan-${run}`, fail: `ui-fail-${run}`, wait: `ui-wait-${run}` };

  async function statusOf(id) {
    const response = await fetch(`${env.dtsd.restUrl}/v1/taskhubs/orchestrations/${encodeURIComponent(id)}`);
    if (response.status === 404) return "PURGED";
    return (await response.json()).orchestrationStatus.replace("ORCHESTRATION_STATUS_", "");
  }
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

  before(async () => {
    mkdirSync(shots, { recursive: true });
    browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(15000);
    await env.client.scheduleNewOrchestration("HelloCities", undefined, ids.hello);
    await env.client.scheduleNewOrchestration("FanOut", undefined, ids.fan);
    await env.client.scheduleNewOrchestration("Failing", undefined, ids.fail);
    await env.client.signalEntity(new EntityInstanceId("counter", `ui-${run}`), "add", 3);
    for (const id of [ids.hello, ids.fan, ids.fail]) await env.client.waitForOrchestrationCompletion(id, false, 30);
  });
  after(async () => {
    await browser?.close();  // Playwright gives each launch a fresh profile and removes it.
  });

  test("the list shows every orchestration, its status counts, and filters by status", async () => {
    await page.goto(`${env.dtsd.restUrl}/#/`);
    for (const id of [ids.hello, ids.fan, ids.fail]) await page.getByRole("link", { name: id }).waitFor();
    await shot("list");
    await page.getByRole("button", { name: /Failed/ }).click();
    await page.getByRole("link", { name: ids.fail }).waitFor();
    await eventually(async () => (await page.getByRole("link", { name: ids.hello }).count()) === 0, 10000, "the filter");
    assert.match(page.url(), /status=FAILED/, "the filter is in the URL");
    await shot("list-failed");
    await page.goBack();
    await page.getByRole("link", { name: ids.hello }).waitFor();
  });

  test("paging: two rows a page, every orchestration once, in id order", async () => {
    await page.goto(`${env.dtsd.restUrl}/#/?size=10&id=${encodeURIComponent(`-${run}`)}&sort=ORCHESTRATION_ID&dir=ASCENDING_SORT`);
    await page.getByText("Page 1 of 1").waitFor();
    // Rows per page is a select of the UI: 10 is its smallest, so page through a
    // URL with size 2 (the same state the select writes).
    await page.goto(`${env.dtsd.restUrl}/#/?size=2&id=${encodeURIComponent(`-${run}`)}&sort=ORCHESTRATION_ID&dir=ASCENDING_SORT`);
    await page.getByText("Page 1 of 2").waitFor();
    const rowIds = () => page.locator("table.list tbody tr td:nth-child(2)").allTextContents();
    const first = await rowIds();
    assert.equal(first.length, 2);
    await page.getByRole("button", { name: /Next/ }).click();
    await page.getByText("Page 2 of 2").waitFor();
    const second = await rowIds();
    assert.ok(await page.getByRole("button", { name: /Next/ }).isDisabled(), "no page after the last");
    assert.deepEqual([...first, ...second], [ids.fail, ids.fan, ids.hello]);
  });

  test("hello cities: the timeline shows its five activities in order, the history every event", async () => {
    await page.goto(`${env.dtsd.restUrl}/#/orchestrations/${ids.hello}`);
    await page.locator(".badge", { hasText: "COMPLETED" }).waitFor();
    const lanes = page.locator(".timeline .lane");
    await eventually(async () => (await lanes.count()) === 5, 10000, "five lanes");
    assert.deepEqual(await page.locator(".timeline .lane-label").allTextContents(), Array(5).fill("SayHello"));
    await lanes.nth(1).click();
    await page.locator(".span-detail pre", { hasText: "Seattle" }).first().waitFor();
    // From the keyboard too: a lane takes the focus and Enter shows it.
    await lanes.nth(4).focus();
    await page.keyboard.press("Enter");
    await page.locator(".span-detail pre", { hasText: "Cairo" }).first().waitFor();
    await lanes.nth(1).click();
    await shot("instance-timeline");
    await page.getByRole("button", { name: "History" }).click();
    const kinds = page.locator("table.history tbody tr td:nth-child(3)");
    await eventually(async () => (await kinds.allTextContents()).filter((k) => k === "taskScheduled").length === 5,
      10000, "five taskScheduled rows");
    assert.equal((await kinds.allTextContents()).filter((k) => k === "taskCompleted").length, 5);
    await shot("instance-history");
    await page.getByRole("button", { name: "Input & output" }).click();
    // The Output box of that tab (the history's hidden event details may still be there
    // for a moment after the click, and they hold the same words).
    await page.locator("div:has(> h4:text-is('Output')) > pre", { hasText: "Hello, Cairo!" }).waitFor();
  });

  test("a fan-out shows eight parallel activities; a failure shows its details", async () => {
    await page.goto(`${env.dtsd.restUrl}/#/orchestrations/${ids.fan}`);
    await eventually(async () => (await page.locator(".timeline .lane").count()) === 8, 10000, "eight lanes");
    await shot("instance-fanout");
    // The flow: the eight activities side by side in one row (a fan-out), between start and end.
    await page.getByRole("button", { name: "Flow" }).click();
    const fan = page.locator("svg.flow g.flow-activity rect");
    await eventually(async () => (await fan.count()) === 8, 10000, "eight flow nodes");
    assert.equal(new Set(await fan.evaluateAll((rects) => rects.map((r) => r.getAttribute("y")))).size, 1, "one row");
    await shot("instance-flow-fanout");
    // Hello cities: five activities one after another.
    await page.goto(`${env.dtsd.restUrl}/#/orchestrations/${ids.hello}?tab=flow`);
    const chain = page.locator("svg.flow g.flow-activity rect");
    await eventually(async () => (await chain.count()) === 5, 10000, "five flow nodes");
    assert.equal(new Set(await chain.evaluateAll((rects) => rects.map((r) => r.getAttribute("y")))).size, 5, "five rows");
    await page.goto(`${env.dtsd.restUrl}/#/orchestrations/${ids.fail}?tab=payloads`);
    await page.locator(".failure", { hasText: "the city is closed" }).first().waitFor();
    await shot("instance-failed");
  });

  test("actions: suspend, resume, terminate and purge through the UI change the instance", async () => {
    await env.client.scheduleNewOrchestration("Waiting", undefined, ids.wait);
    await eventually(async () => (await statusOf(ids.wait)) === "RUNNING", 20000, "running");
    page.on("dialog", (dialog) => dialog.accept(dialog.type() === "prompt" ? "stopped in the browser test" : undefined));
    await page.goto(`${env.dtsd.restUrl}/#/orchestrations/${ids.wait}`);
    await page.getByRole("button", { name: "Suspend" }).click();
    await eventually(async () => (await statusOf(ids.wait)) === "SUSPENDED", 20000, "suspended");
    await page.locator(".badge", { hasText: "SUSPENDED" }).waitFor();
    await page.getByRole("button", { name: "Resume" }).click();
    await eventually(async () => (await statusOf(ids.wait)) === "RUNNING", 20000, "resumed");
    await page.getByRole("button", { name: "Terminate" }).click();
    await eventually(async () => (await statusOf(ids.wait)) === "TERMINATED", 20000, "terminated");
    await page.locator(".badge", { hasText: "TERMINATED" }).waitFor();
    await shot("instance-terminated");
    await page.getByRole("button", { name: "Purge" }).click();
    await eventually(async () => (await statusOf(ids.wait)) === "PURGED", 20000, "purged");
    page.removeAllListeners("dialog");
  });

  test("bulk: all matching the filter, beyond the page, are terminated at once", async () => {
    const prefix = `bulk-${run}-`;
    const started = [];
    for (let i = 0; i < 3; i++) started.push(await env.client.scheduleNewOrchestration("Waiting", undefined, `${prefix}${i}`));
    for (const id of started) await env.client.waitForOrchestrationStart(id, false, 30);
    await page.goto(`${env.dtsd.restUrl}/#/?size=2&id=${encodeURIComponent(prefix)}`);
    await page.getByText("Page 1 of 2").waitFor();
    await page.getByLabel("Select all on this page").check();
    await page.getByRole("button", { name: "Select all 3 matching the filter" }).click();
    await page.getByText("all 3 matching the filter").waitFor();
    page.once("dialog", (dialog) => dialog.accept());
    await page.getByRole("button", { name: "Terminate", exact: true }).click();
    await page.locator(".message", { hasText: "Terminate: done for 3" }).waitFor();
    for (const id of started) {
      const state = await env.client.waitForOrchestrationCompletion(id, false, 30);
      assert.equal(state.runtimeStatus, OrchestrationStatus.TERMINATED, id);
    }
  });

  test("a new orchestration started from the form runs to completion", async () => {
    const id = `ui-new-${run}`;
    await page.goto(`${env.dtsd.restUrl}/#/new`);
    await page.getByLabel("Name").fill("HelloCities");
    await page.getByLabel("Instance ID").fill(id);
    await page.getByLabel("Input (JSON)").fill("{not json");
    await page.getByRole("button", { name: "Start" }).click();
    await page.getByRole("alert").filter({ hasText: "not valid JSON" }).waitFor();
    assert.equal(await statusOf(id), "PURGED", "nothing started from bad input");
    await page.getByLabel("Input (JSON)").fill('{"from": "the browser"}');
    await shot("new");
    await page.getByRole("button", { name: "Start" }).click();
    await page.locator("h2", { hasText: id }).waitFor();
    await eventually(async () => (await statusOf(id)) === "COMPLETED", 30000, "completed");
  });

  test("entities and workers pages", async () => {
    await page.goto(`${env.dtsd.restUrl}/#/entities`);
    await page.getByText(`@counter@ui-${run}`).click();
    await page.locator(".span-detail pre", { hasText: "3" }).waitFor();
    await page.getByLabel("Operation").fill("add");
    await page.getByLabel("Input (JSON)").fill("4");
    await page.getByRole("button", { name: "Signal" }).click();
    await page.locator(".span-detail pre", { hasText: "7" }).waitFor();
    await shot("entities");
    // Filtered by key, then deleted: gone from the list and from the API.
    await page.getByLabel("Entity key").fill(`ui-${run}`);
    await page.getByRole("button", { name: "Search" }).click();
    await page.locator(".filters .muted", { hasText: "1 of 1" }).waitFor();
    page.once("dialog", (dialog) => dialog.accept());
    await page.getByRole("button", { name: "Delete entity" }).click();
    await page.locator(".message", { hasText: "Deleted" }).waitFor();
    await page.locator("table.list td.empty", { hasText: "No entities" }).waitFor();
    const gone = await fetch(`${env.dtsd.restUrl}/v1/taskhubs/entities/${encodeURIComponent(`@counter@ui-${run}`)}`);
    assert.equal(gone.status, 404);
    await page.goto(`${env.dtsd.restUrl}/#/workers`);
    await page.locator("table.list tbody tr td.mono").first().waitFor();
    // Three charts once the first samples are in (dtsd samples every 5 s from its start).
    await eventually(async () => (await page.locator("figure.chart svg").count()) === 3, 20000, "the charts");
    await shot("workers");
  });
  test("schedules: one made from the form runs each second, pauses, runs now on request and is deleted", async () => {
    const id = `ui-sched-${run}`;
    await page.goto(`${env.dtsd.restUrl}/#/schedules`);
    await page.getByLabel("Schedule ID").fill(id);
    await page.getByLabel("Orchestration").fill("HelloCities");
    await page.getByLabel("Timing").selectOption("cron");
    await page.getByLabel("Cron (5 fields, or 6 with seconds)").fill("0 0 30 2 *");
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByRole("alert").filter({ hasText: "no month" }).waitFor();
    const none = await fetch(`${env.dtsd.restUrl}/v1/taskhubs/schedules/${id}`);
    assert.equal(none.status, 404, "nothing made from bad input");
    await page.getByLabel("Cron (5 fields, or 6 with seconds)").fill("* * * * * *");
    await page.getByLabel("Time zone").fill("Europe/Berlin");
    await page.getByRole("button", { name: "Create" }).click();
    await page.locator(".message", { hasText: `Created ${id}` }).waitFor();
    const row = page.locator("table.list tr", { hasText: id });
    // A run starts each second; the last one shows, linked. While slots keep coming
    // the last run is often still running (a slow build: most of the time), so it
    // is paused first: then its last run completes and stays the last.
    await row.locator("a.mono").first().waitFor({ timeout: 20000 });
    await row.getByRole("button", { name: "Pause" }).click();
    await row.locator("td", { hasText: "Paused" }).waitFor();
    await row.locator(".badge", { hasText: "COMPLETED" }).waitFor({ timeout: 30000 });
    await shot("schedules");
    await row.getByRole("button", { name: "Run now" }).click();
    await page.locator(".message", { hasText: "Started" }).waitFor();
    await row.locator("a.mono").first().click();
    await page.locator("h2", { hasText: id }).waitFor();
    await page.goto(`${env.dtsd.restUrl}/#/schedules`);
    page.once("dialog", (dialog) => dialog.accept());
    await page.locator("table.list tr", { hasText: id }).getByRole("button", { name: "Delete" }).click();
    await page.locator(".message", { hasText: "deleted" }).waitFor();
    await page.locator("table.list tr", { hasText: id }).waitFor({ state: "detached" });
  });
  test("exports: a job made from the form writes the completed orchestration to its file; a second with its id is refused", async () => {
    const id = `ui-export-${run}`;
    await page.goto(`${env.dtsd.restUrl}/#/exports`);
    await page.getByLabel("Job ID (optional)").fill(id);
    await page.getByLabel("Completed").check();
    await page.getByLabel("Instance ID prefix").fill(ids.hello);
    await page.getByLabel("Format").selectOption("jsonl");
    await page.getByRole("button", { name: "Create" }).click();
    await page.locator(".message", { hasText: `Created ${id}` }).waitFor();
    const row = page.locator("table.list tr", { hasText: id });
    await row.locator("td", { hasText: /^Completed$/ }).waitFor({ timeout: 30000 });
    await row.locator("td", { hasText: /^1$/ }).waitFor();
    const file = (await row.locator("td span.mono").textContent()).trim();
    const lines = readFileSync(file, "utf8").trim().split("\n").map((line) => JSON.parse(line));
    assert.equal(lines.length, 1);
    assert.equal(lines[0].instanceId, ids.hello);
    assert.ok(lines[0].history.length > 10, "its whole history");
    assert.equal(await statusOf(ids.hello), "COMPLETED", "kept: the job does not purge");
    await shot("exports");
    // The same id again: refused, named, and nothing else changes.
    await page.getByLabel("Job ID (optional)").fill(id);
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByRole("alert").filter({ hasText: "exists" }).waitFor();
    assert.equal(await page.locator("table.list tr", { hasText: id }).count(), 1);
    page.once("dialog", (dialog) => dialog.accept());
    await row.getByRole("button", { name: "Delete" }).click();
    await page.locator(".message", { hasText: "deleted" }).waitFor();
    await page.locator("table.list tr", { hasText: id }).waitFor({ state: "detached" });
    assert.ok(existsSync(file), "a deleted job's file stays");
    const gone = await fetch(`${env.dtsd.restUrl}/v1/taskhubs/exports/${id}`);
    assert.equal(gone.status, 404);
  });
});
