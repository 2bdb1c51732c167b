// dtsd's dashboard: the orchestration list, an instance's page (timeline, history,
// payloads, actions), starting an orchestration, entities and workers. State
// lives in the URL's hash (#/?status=FAILED&page=2), so a view is a link and the
// back button works.
import { render } from "preact";
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";

import {
  ApiError, call, currentHub, enc, Entity, Failure, HistoryEvent, Orchestration, Payloads, QueryResult, setHub,
  onUnauthenticated, setSignedInToken, signedInToken,
  ExportJob, Schedule, shortStatus, STATUSES, taskHubs, Worker,
} from "./api";

// ------------------------------------------------------------------ routing

interface Route {
  path: string;
  params: URLSearchParams;
}

/** What makes a clickable element usable from the keyboard too: focusable, Enter or Space presses it. */
function pressable(press: () => void) {
  return {
    tabIndex: 0,
    role: "button" as const,
    onClick: press,
    onKeyDown: (e: KeyboardEvent) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        press();
      }
    },
  };
}

function parseHash(): Route {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  return { path, params: new URLSearchParams(query ?? "") };
}

function go(path: string, params?: URLSearchParams) {
  const query = params?.toString();
  location.hash = query ? `${path}?${query}` : path;
}

function useRoute(): Route {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const changed = () => setRoute(parseHash());
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

// ------------------------------------------------------------------ helpers

/** Runs `load` now, and every `everyMs` after (0: once), until the view changes. */
function usePolling(load: () => void, everyMs: number) {
  useEffect(() => { load(); }, [load]);
  useEffect(() => {
    if (!everyMs) return;
    const timer = setInterval(load, everyMs);
    return () => clearInterval(timer);
  }, [load, everyMs]);
}

const time = (t?: string) => (t ? new Date(t).toLocaleString() : "");

function duration(from?: string, to?: string): string {
  if (!from) return "";
  const ms = (to ? Date.parse(to) : Date.now()) - Date.parse(from);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${(ms / 60000).toFixed(1)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function pretty(payload?: string): string {
  if (payload === undefined || payload === null) return "";
  try { return JSON.stringify(JSON.parse(payload), null, 2); } catch { return payload; }
}

function StatusBadge({ status }: { status: string }) {
  const s = shortStatus(status);
  return <span class={`badge status-${s.toLowerCase()}`}>{s}</span>;
}

function ErrorLine({ error }: { error: unknown }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  return <div class="error" role="alert">{message}</div>;
}

// ------------------------------------------------------------------ orchestration list

const COLUMNS: [string, string][] = [
  ["ORCHESTRATION_ID", "Instance ID"], ["NAME", "Name"], ["VERSION", "Version"],
  ["ORCHESTRATION_STATUS", "Status"], ["TAGS", "Tags"], ["CREATED_AT", "Created"],
  ["LAST_UPDATED_AT", "Last updated"], ["COMPLETED_AT", "Duration"],
];

function listBody(params: URLSearchParams) {
  const filter: Record<string, unknown> = {};
  for (const [key, field] of [["id", "orchestrationId"], ["name", "name"], ["tag", "tags"]] as const) {
    const value = params.get(key);
    if (value) filter[field] = { value };
  }
  const statuses = params.getAll("status");
  if (statuses.length) filter.orchestrationStatus = { status: statuses.map((s) => `ORCHESTRATION_STATUS_${s}`) };
  const from = params.get("from"), to = params.get("to");
  if (from || to) {
    filter.createdAt = {
      ...(from ? { start: new Date(from).toISOString() } : {}),
      ...(to ? { end: new Date(to).toISOString() } : {}),
    };
  }
  if (params.get("subs") === "hide") filter.excludeSubOrchestrations = true;
  const size = Number(params.get("size") ?? 25);
  const page = Number(params.get("page") ?? 0);
  return {
    filter,
    pagination: { startIndex: page * size, count: size },
    sort: [{ column: params.get("sort") ?? "CREATED_AT", direction: params.get("dir") ?? "DESCENDING_SORT" }],
  };
}

function ListPage({ params }: { params: URLSearchParams }) {
  // The answer and the view it answers: rows of another view are never shown
  // under this one's filter or page.
  const [answer, setAnswer] = useState<{ key: string; data: QueryResult } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  // Every match of the filter, not only the rows of this page.
  const [allMatching, setAllMatching] = useState(false);
  const [message, setMessage] = useState("");
  const refresh = Number(params.get("refresh") ?? 0);
  const key = params.toString();

  const result = answer?.key === key ? answer.data : null;
  // A selection belongs to the rows it was made on.
  useEffect(() => { setSelected(new Set()); setAllMatching(false); }, [key]);

  const load = useCallback(async () => {
    try {
      const data = await call<QueryResult>("POST", "orchestrations/query", listBody(params));
      setAnswer({ key, data });
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, [key]);
  usePolling(load, refresh * 1000);

  const set = (changes: Record<string, string | string[] | null>) => {
    const next = new URLSearchParams(params);
    for (const [name, value] of Object.entries(changes)) {
      next.delete(name);
      if (Array.isArray(value)) value.forEach((v) => next.append(name, v));
      else if (value) next.set(name, value);
    }
    if (!("page" in changes)) next.delete("page");
    go("/", next);
  };
  const statuses = params.getAll("status");
  const size = Number(params.get("size") ?? 25);
  const page = Number(params.get("page") ?? 0);
  const pages = result ? Math.max(1, Math.ceil(result.totalCount / size)) : 1;
  const hideSubs = params.get("subs") === "hide";
  const rows = result?.orchestrations ?? [];

  /** The ids of every match, oldest first (new ones come last, so paging misses none). */
  const matchingIds = async () => {
    const ids: string[] = [];
    const body = listBody(params);
    for (let start = 0; start < 100000; start += 1000) {
      const got = await call<QueryResult>("POST", "orchestrations/query", {
        ...body, pagination: { startIndex: start, count: 1000 }, sort: [{ column: "CREATED_AT", direction: "ASCENDING_SORT" }],
      });
      ids.push(...got.orchestrations.map((o) => o.instanceId));
      if (got.orchestrations.length < 1000) break;
    }
    return ids;
  };

  const bulk = async (action: string) => {
    const count = allMatching ? result?.totalCount ?? 0 : selected.size;
    if (!count || !confirm(`${action} ${count} orchestration(s)${allMatching ? " (all matching the filter)" : ""}?`)) return;
    try {
      const ids = allMatching ? await matchingIds() : [...selected];
      const failed: string[] = [];
      for (let at = 0; at < ids.length; at += 500) failed.push(...await bulkStep(action, ids.slice(at, at + 500)));
      setMessage(failed.length ? `${action}: failed for ${failed.slice(0, 20).join(", ")}${failed.length > 20 ? ` and ${failed.length - 20} more` : ""}`
                               : `${action}: done for ${ids.length}`);
      setSelected(new Set());
      setAllMatching(false);
      load();
    } catch (e) {
      setError(e);
    }
  };

  /** One bulk call of at most 500 ids (the API's limit); answers the ids that failed. */
  const bulkStep = async (action: string, ids: string[]): Promise<string[]> => {
    if (action === "Terminate") {
      return call<string[]>("POST", "orchestrations/forceterminate", { instanceIds: ids, reason: "terminated from the dashboard" });
    }
    if (action === "Purge") {
      const purged = await call<{ deletedInstanceCount: number }>("DELETE", "orchestrations/purge", ids);
      return purged.deletedInstanceCount === ids.length ? [] : [`${ids.length - purged.deletedInstanceCount} not purged (only ended ones can be)`];
    }
    const kind = action === "Suspend" ? "executionSuspended" : "executionResumed";
    const events: Record<string, unknown> = {};
    ids.forEach((id) => { events[id] = { [kind]: { reason: "from the dashboard" } }; });
    return call<string[]>("POST", "orchestrations/addhistoryevents", { events });
  };

  const trivia = result?.trivia;
  return (
    <section>
      <div class="counts">
        {([["All", null, trivia?.totalCount], ["Running", "RUNNING", trivia?.runningCount],
           ["Completed", "COMPLETED", trivia?.completedCount], ["Failed", "FAILED", trivia?.failedCount],
           ["Pending", "PENDING", trivia?.pendingCount], ["Suspended", "SUSPENDED", trivia?.suspendedCount],
           ["Terminated", "TERMINATED", trivia?.terminatedCount]] as const).map(([label, status, count]) => (
          <button class={`count ${(status ? statuses.length === 1 && statuses[0] === status : !statuses.length) ? "active" : ""}`}
                  onClick={() => set({ status: status ? [status] : [] })}>
            <span class="count-n">{count ?? "–"}</span> {label}
          </button>
        ))}
      </div>
      <form class="filters" key={key} onSubmit={(e) => {
        e.preventDefault();
        const data = new FormData(e.currentTarget as HTMLFormElement);
        set({ id: String(data.get("id") ?? ""), name: String(data.get("name") ?? ""), tag: String(data.get("tag") ?? ""),
              from: String(data.get("from") ?? ""), to: String(data.get("to") ?? "") });
      }}>
        <input name="id" placeholder="Instance ID contains" defaultValue={params.get("id") ?? ""} aria-label="Instance ID" />
        <input name="name" placeholder="Name contains" defaultValue={params.get("name") ?? ""} aria-label="Name" />
        <input name="tag" placeholder="Tag contains" defaultValue={params.get("tag") ?? ""} aria-label="Tag" />
        <label>Created from <input type="datetime-local" name="from" defaultValue={params.get("from") ?? ""} /></label>
        <label>to <input type="datetime-local" name="to" defaultValue={params.get("to") ?? ""} /></label>
        <button type="submit">Search</button>
        <details class="status-pick">
          <summary>Status{statuses.length ? ` (${statuses.length})` : ""}</summary>
          {STATUSES.map((s) => (
            <label><input type="checkbox" checked={statuses.includes(s)}
                          onChange={() => set({ status: statuses.includes(s) ? statuses.filter((x) => x !== s) : [...statuses, s] })} /> {s}</label>
          ))}
        </details>
        <label><input type="checkbox" checked={hideSubs} onChange={() => set({ subs: hideSubs ? null : "hide" })} /> Hide sub-orchestrations</label>
        <label>Auto-refresh <select value={String(refresh)} onChange={(e) => set({ refresh: (e.target as HTMLSelectElement).value, page: String(page) })}>
          {[0, 2, 5, 10, 30].map((s) => <option value={String(s)}>{s ? `${s} s` : "off"}</option>)}
        </select></label>
      </form>
      <ErrorLine error={error} />
      {message && <div class="message">{message}</div>}
      <div class="bulk">
        <span>{allMatching ? `all ${result?.totalCount ?? 0} matching the filter` : `${selected.size} selected`}</span>
        {!allMatching && rows.length > 0 && rows.every((o) => selected.has(o.instanceId)) && (result?.totalCount ?? 0) > rows.length && (
          <button class="link" onClick={() => setAllMatching(true)}>Select all {result?.totalCount} matching the filter</button>
        )}
        {allMatching && <button class="link" onClick={() => { setAllMatching(false); setSelected(new Set()); }}>Clear selection</button>}
        {["Suspend", "Resume", "Terminate", "Purge"].map((a) => (
          <button disabled={!selected.size && !allMatching} onClick={() => bulk(a)}>{a}</button>
        ))}
      </div>
      <table class="list">
        <thead>
          <tr>
            <th><input type="checkbox" aria-label="Select all on this page"
                       checked={rows.length > 0 && rows.every((o) => selected.has(o.instanceId))}
                       onChange={(e) => setSelected((e.target as HTMLInputElement).checked ? new Set(rows.map((o) => o.instanceId)) : new Set())} /></th>
            {COLUMNS.map(([column, label]) => {
              const active = (params.get("sort") ?? "CREATED_AT") === column;
              const dir = params.get("dir") ?? "DESCENDING_SORT";
              return (
                <th class="sortable" {...pressable(() => set({ sort: column, dir: active && dir === "DESCENDING_SORT" ? "ASCENDING_SORT" : "DESCENDING_SORT" }))}
                    aria-sort={active ? (dir === "DESCENDING_SORT" ? "descending" : "ascending") : undefined}>
                  {label}{active ? (dir === "DESCENDING_SORT" ? " ▼" : " ▲") : ""}
                </th>
              );
            })}
          </tr>
        </thead>
        <tbody>
          {rows.map((o) => (
            <tr>
              <td><input type="checkbox" checked={selected.has(o.instanceId)} aria-label={`Select ${o.instanceId}`}
                         onChange={() => {
                           const next = new Set(selected);
                           next.has(o.instanceId) ? next.delete(o.instanceId) : next.add(o.instanceId);
                           setSelected(next);
                         }} /></td>
              <td><a href={`#/orchestrations/${enc(o.instanceId)}`} class="mono">{o.instanceId}</a></td>
              <td>{o.name}</td>
              <td>{o.version ?? ""}</td>
              <td><StatusBadge status={o.orchestrationStatus} /></td>
              <td>{Object.entries(o.tags ?? {}).map(([k, v]) => <span class="tag">{k}={v}</span>)}</td>
              <td>{time(o.createdTimestamp)}</td>
              <td>{time(o.lastUpdatedTimestamp)}</td>
              <td>{duration(o.createdTimestamp, o.completedTimestamp)}</td>
            </tr>
          ))}
          {result && rows.length === 0 && <tr><td colSpan={9} class="empty">No orchestrations match.</td></tr>}
          {!result && !error && <tr><td colSpan={9} class="empty">Loading…</td></tr>}
        </tbody>
      </table>
      <div class="pager">
        <button disabled={page === 0} onClick={() => set({ page: String(page - 1) })}>‹ Previous</button>
        <span>{result ? `Page ${page + 1} of ${pages} (${result.totalCount} orchestrations)` : "Loading…"}</span>
        <button disabled={!result || page + 1 >= pages} onClick={() => set({ page: String(page + 1) })}>Next ›</button>
        <label>Rows <select value={String(size)} onChange={(e) => set({ size: (e.target as HTMLSelectElement).value })}>
          {[10, 25, 50, 100].map((n) => <option value={String(n)}>{n}</option>)}
        </select></label>
      </div>
    </section>
  );
}

// ------------------------------------------------------------------ an instance

interface Span {
  /** Which orchestrator episode scheduled it: the steps of one episode run side by side. */
  episode: number;
  label: string;
  kind: "activity" | "timer" | "sub-orchestration" | "event";
  start: number;
  end?: number;
  failed?: boolean;
  input?: string;
  output?: string;
  link?: string;
}

/** The steps of an execution from its history: each scheduled thing with its end. */
function spansOf(history: HistoryEvent[]): Span[] {
  const open = new Map<number, Span>();
  const spans: Span[] = [];
  let episode = 0;
  for (const e of history) {
    const at = Date.parse(e.timestamp);
    if (e.orchestratorStarted) {
      ++episode;
    } else if (e.taskScheduled) {
      const span: Span = { episode, label: e.taskScheduled.name, kind: "activity", start: at, input: e.taskScheduled.input };
      open.set(e.eventId, span);
      spans.push(span);
    } else if (e.subOrchestrationInstanceCreated) {
      const c = e.subOrchestrationInstanceCreated;
      const span: Span = { episode, label: c.name, kind: "sub-orchestration", start: at, input: c.input, link: c.instanceId };
      open.set(e.eventId, span);
      spans.push(span);
    } else if (e.timerCreated) {
      const span: Span = { episode, label: `timer until ${time(e.timerCreated.fireAt)}`, kind: "timer", start: at };
      open.set(e.eventId, span);
      spans.push(span);
    } else if (e.eventRaised) {
      spans.push({ episode, label: `event ${e.eventRaised.name}`, kind: "event", start: at, end: at, input: e.eventRaised.input });
    } else {
      const done = e.taskCompleted ?? e.subOrchestrationInstanceCompleted;
      const failedEvent = e.taskFailed ?? e.subOrchestrationInstanceFailed;
      // Protobuf-JSON leaves out zeros: an id that is absent is 0.
      const ended = done ?? failedEvent;
      const id = ended ? (ended.taskScheduledId ?? 0) : e.timerFired ? (e.timerFired.timerId ?? 0) : undefined;
      const span = id === undefined ? undefined : open.get(id);
      if (span) {
        span.end = at;
        span.output = done?.result ?? (failedEvent ? JSON.stringify(failedEvent.failureDetails) : undefined);
        span.failed = !!failedEvent;
      }
    }
  }
  return spans;
}

function Timeline({ history, now, ended }: { history: HistoryEvent[]; now: number; ended: boolean }) {
  const spans = useMemo(() => spansOf(history), [history]);
  const [shown, setShown] = useState<Span | null>(null);
  if (!spans.length) return <p class="empty">No activities, timers or sub-orchestrations{ended ? "." : " yet."}</p>;
  const first = Math.min(...spans.map((s) => s.start));
  const last = Math.max(...spans.map((s) => s.end ?? now), first + 1);
  const width = last - first;
  return (
    <div>
      <div class="timeline">
        {spans.map((s) => (
          <div class="lane" {...pressable(() => setShown(s))} title="Show input and output">
            <span class="lane-label">{s.label}</span>
            <span class="lane-track">
              <span class={`bar bar-${s.kind} ${s.failed ? "bar-failed" : ""} ${s.end === undefined ? "bar-open" : ""}`}
                    style={{ left: `${((s.start - first) / width) * 100}%`,
                             width: `${Math.max(0.5, (((s.end ?? now) - s.start) / width) * 100)}%` }} />
            </span>
            <span class="lane-time">{s.end === undefined ? "running" : `${s.end - s.start} ms`}</span>
          </div>
        ))}
      </div>
      {shown && (
        <div class="span-detail">
          <h4>{shown.kind}: {shown.label}{shown.link && <> — <a href={`#/orchestrations/${enc(shown.link)}`}>{shown.link}</a></>}</h4>
          <div class="two"><div><h5>Input</h5><pre>{pretty(shown.input)}</pre></div>
          <div><h5>{shown.failed ? "Failure" : "Output"}</h5><pre>{pretty(shown.output)}</pre></div></div>
        </div>
      )}
    </div>
  );
}

/** The orchestration as a graph: start, then one row per orchestrator episode
 * (what it scheduled together runs side by side: a fan-out), every step of a row
 * joined to every step of the next (a fan-in), then the end. */
function Flow({ history, status }: { history: HistoryEvent[]; status: string }) {
  const rows = useMemo(() => {
    const byEpisode = new Map<number, Span[]>();
    for (const span of spansOf(history)) {
      if (span.kind === "event") continue;
      byEpisode.set(span.episode, [...(byEpisode.get(span.episode) ?? []), span]);
    }
    return [...byEpisode.keys()].sort((a, b) => a - b).map((k) => byEpisode.get(k)!);
  }, [history]);
  const shownMax = 10, nodeW = 150, nodeH = 34, gapX = 16, gapY = 46;
  type Node = { x: number; y: number; label: string; cls: string; title?: string; link?: string };
  const levels: Node[][] = [];
  const widest = Math.max(1, ...rows.map((r) => Math.min(r.length, shownMax + 1)));
  const width = widest * (nodeW + gapX) + gapX;
  const place = (items: { label: string; cls: string; title?: string; link?: string }[], level: number) =>
    items.map((item, i) => ({
      ...item,
      x: (width - items.length * (nodeW + gapX) + gapX) / 2 + i * (nodeW + gapX),
      y: gapY / 2 + level * (nodeH + gapY),
    }));
  levels.push(place([{ label: "start", cls: "flow-edge-node" }], 0));
  rows.forEach((row, i) => {
    const items = row.slice(0, shownMax).map((s) => ({
      label: s.label, link: s.link,
      cls: `flow-${s.kind} ${s.failed ? "flow-failed" : ""} ${s.end === undefined ? "flow-open" : ""}`,
      title: `${s.kind}: ${s.label}${s.end !== undefined ? ` (${s.end - s.start} ms)` : " (running)"}`,
    }));
    if (row.length > shownMax) items.push({ label: `+${row.length - shownMax} more`, cls: "flow-more", link: undefined, title: "" });
    levels.push(place(items, i + 1));
  });
  levels.push(place([{ label: shortStatus(status).toLowerCase(), cls: `flow-edge-node status-${shortStatus(status).toLowerCase()}` }], rows.length + 1));
  const height = levels.length * (nodeH + gapY);
  return (
    <svg class="flow" width={width} height={height} role="img" aria-label="Orchestration flow">
      {levels.slice(1).map((level, i) => levels[i].flatMap((from) => level.map((to) => (
        <line x1={from.x + nodeW / 2} y1={from.y + nodeH} x2={to.x + nodeW / 2} y2={to.y} class="flow-line" />
      ))))}
      {levels.flat().map((node) => (
        <g class={`flow-node ${node.cls}`} {...(node.link ? pressable(() => go(`/orchestrations/${enc(node.link!)}`)) : {})}>
          <title>{node.title ?? node.label}</title>
          <rect x={node.x} y={node.y} width={nodeW} height={nodeH} rx={6} />
          <text x={node.x + nodeW / 2} y={node.y + nodeH / 2 + 4} text-anchor="middle">
            {node.label.length > 20 ? `${node.label.slice(0, 19)}…` : node.label}
          </text>
        </g>
      ))}
    </svg>
  );
}

/** A failure in full: type, message, stack trace, and each inner failure under it. */
function FailureBox({ failure }: { failure: Failure }) {
  return (
    <div class="failure" role="note">
      <strong>{failure.errorType ?? "Error"}</strong>: {failure.errorMessage ?? ""}
      {failure.stackTrace && <details><summary>Stack trace</summary><pre>{failure.stackTrace}</pre></details>}
      {failure.innerFailure && <div class="inner">Caused by <FailureBox failure={failure.innerFailure} /></div>}
    </div>
  );
}

function eventKind(e: HistoryEvent): string {
  return Object.keys(e).find((k) => k !== "eventId" && k !== "timestamp") ?? "unknown";
}

function HistoryTable({ history }: { history: HistoryEvent[] }) {
  return (
    <table class="history">
      <thead><tr><th>#</th><th>Time</th><th>Event</th><th>Details</th></tr></thead>
      <tbody>
        {history.map((e) => {
          const kind = eventKind(e);
          return (
            <tr>
              <td>{e.eventId >= 0 ? e.eventId : ""}</td>
              <td>{time(e.timestamp)}</td>
              <td>{kind}</td>
              <td><details><summary>{Object.entries(e[kind] ?? {}).filter(([, v]) => typeof v === "string" && v !== "").map(([k, v]) => `${k}: ${String(v).slice(0, 60)}`).join(", ")}</summary>
                <pre>{JSON.stringify(e[kind], null, 2)}</pre></details></td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function InstancePage({ id, params }: { id: string; params: URLSearchParams }) {
  const [meta, setMeta] = useState<Orchestration | null>(null);
  const [payloads, setPayloads] = useState<Payloads | null>(null);
  const [history, setHistory] = useState<HistoryEvent[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [message, setMessage] = useState("");
  const tab = params.get("tab") ?? "timeline";

  const load = useCallback(async () => {
    try {
      const m = await call<Orchestration>("GET", `orchestrations/${enc(id)}`);
      setMeta(m);
      setPayloads(await call<Payloads>("GET", `orchestrations/${enc(id)}/payloads`));
      setHistory(await call<HistoryEvent[]>("GET", `orchestrations/${enc(id)}/executions/${enc(m.executionId)}/history`));
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, [id]);
  // Followed every 2 s until it ends.
  const over = !!meta && ["COMPLETED", "FAILED", "TERMINATED", "CANCELED"].includes(shortStatus(meta.orchestrationStatus));
  usePolling(load, over ? 0 : 2000);

  const act = async (label: string, run: () => Promise<unknown>) => {
    try {
      const result = await run();
      setMessage(`${label}: done${typeof result === "string" && result ? ` (${result})` : ""}`);
      setError(null);
      load();
    } catch (e) {
      setMessage("");
      setError(e);
    }
  };
  const historyEvent = (label: string, event: Record<string, unknown>) =>
    act(label, () => call("POST", `orchestrations/${enc(id)}/history`, event));

  if (error instanceof ApiError && error.status === 404 && !meta) {
    return <section><h2>{id}</h2><ErrorLine error={error} /><a href="#/">Back to the list</a></section>;
  }
  if (!meta) return <section><ErrorLine error={error} /><p>Loading…</p></section>;
  const status = shortStatus(meta.orchestrationStatus);
  const ended = ["COMPLETED", "FAILED", "TERMINATED", "CANCELED"].includes(status);
  const setTab = (t: string) => go(`/orchestrations/${enc(id)}`, new URLSearchParams({ tab: t }));
  return (
    <section>
      <div class="instance-head">
        <h2 class="mono">{meta.instanceId}</h2>
        <StatusBadge status={meta.orchestrationStatus} />
      </div>
      <dl class="facts">
        <dt>Name</dt><dd>{meta.name}{meta.version ? ` (v${meta.version})` : ""}</dd>
        <dt>Execution</dt><dd class="mono">{meta.executionId}</dd>
        <dt>Created</dt><dd>{time(meta.createdTimestamp)}</dd>
        <dt>Last updated</dt><dd>{time(meta.lastUpdatedTimestamp)}</dd>
        {meta.completedTimestamp && <><dt>Completed</dt><dd>{time(meta.completedTimestamp)} ({duration(meta.createdTimestamp, meta.completedTimestamp)})</dd></>}
        {meta.parentInstanceId && <><dt>Parent</dt><dd><a href={`#/orchestrations/${enc(meta.parentInstanceId)}`}>{meta.parentInstanceId}</a></dd></>}
        {meta.tags && <><dt>Tags</dt><dd>{Object.entries(meta.tags).map(([k, v]) => <span class="tag">{k}={v}</span>)}</dd></>}
      </dl>
      <div class="actions">
        <button disabled={ended || status === "SUSPENDED"} onClick={() => confirm("Suspend this orchestration?") && historyEvent("Suspend", { executionSuspended: { reason: "suspended from the dashboard" } })}>Suspend</button>
        <button disabled={status !== "SUSPENDED"} onClick={() => historyEvent("Resume", { executionResumed: { reason: "resumed from the dashboard" } })}>Resume</button>
        <button disabled={ended} onClick={() => {
          const reason = prompt("Terminate: reason?", "terminated from the dashboard");
          if (reason !== null) historyEvent("Terminate", { executionTerminated: { reason } });
        }}>Terminate</button>
        <button disabled={status !== "FAILED"} onClick={() => confirm("Rewind this failed orchestration?") && historyEvent("Rewind", { executionRewound: { reason: "rewound from the dashboard" } })}>Rewind</button>
        <button disabled={ended} onClick={() => {
          const name = prompt("Raise event: name?");
          if (!name) return;
          const data = prompt("Event data (JSON)?", "null");
          if (data === null) return;
          try { JSON.parse(data); } catch { setError(new Error("the event data is not valid JSON")); return; }
          historyEvent("Raise event", { eventRaised: { name, input: data } });
        }}>Raise event</button>
        <button disabled={!ended} onClick={() => {
          const fresh = confirm("Restart under a new instance id? (Cancel: restart under the same id)");
          act("Restart", async () => {
            const started = await call<string>("POST", `orchestrations/${enc(id)}/restart`, { restartWithNewInstanceId: fresh });
            if (fresh) go(`/orchestrations/${enc(String(started))}`);
            return started;
          });
        }}>Restart</button>
        <button class="danger" disabled={!ended} onClick={() => confirm("Purge this orchestration and its history?") &&
          act("Purge", async () => { await call("DELETE", `orchestrations/${enc(id)}`); go("/"); })}>Purge</button>
      </div>
      {payloads?.failureDetails && <FailureBox failure={payloads.failureDetails} />}
      <ErrorLine error={error} />
      {message && <div class="message" role="status">{message}</div>}
      <nav class="tabs">
        {[["timeline", "Timeline"], ["flow", "Flow"], ["history", "History"], ["payloads", "Input & output"]].map(([key, label]) => (
          <button class={tab === key ? "active" : ""} onClick={() => setTab(key)}>{label}</button>
        ))}
      </nav>
      {tab === "timeline" && <Timeline history={history} now={Date.now()} ended={ended} />}
      {tab === "flow" && <div class="flow-frame"><Flow history={history} status={meta.orchestrationStatus} /></div>}
      {tab === "history" && <HistoryTable history={history} />}
      {tab === "payloads" && payloads && (
        <div class="two">
          <div><h4>Input</h4><pre>{pretty(payloads.input) || "(none)"}</pre></div>
          <div><h4>Output</h4><pre>{pretty(payloads.output) || "(none)"}</pre></div>
          <div><h4>Custom status</h4><pre>{pretty(payloads.customStatus) || "(none)"}</pre></div>
        </div>
      )}
    </section>
  );
}

// ------------------------------------------------------------------ starting one

function NewPage() {
  const [error, setError] = useState<unknown>(null);
  // Names of the latest orchestrations, offered as the name's choices.
  const [names, setNames] = useState<string[]>([]);
  useEffect(() => {
    call<QueryResult>("POST", "orchestrations/query", { pagination: { count: 1000 }, filter: { excludeSubOrchestrations: true } })
      .then((r) => setNames([...new Set(r.orchestrations.map((o) => o.name))].sort()), () => {});
  }, []);
  const submit = async (e: Event) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget as HTMLFormElement);
    const input = String(data.get("input") ?? "").trim();
    if (input) {
      try { JSON.parse(input); } catch { return setError(new Error("Input: not valid JSON")); }
    }
    const tags: Record<string, string> = {};
    for (const line of String(data.get("tags") ?? "").split("\n")) {
      const at = line.indexOf("=");
      if (at > 0) tags[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    const when = String(data.get("when") ?? "");
    try {
      const started = await call<{ instanceId: string }>("POST", "orchestrations", {
        name: data.get("name"),
        ...(data.get("id") ? { instanceId: data.get("id") } : {}),
        ...(data.get("version") ? { version: data.get("version") } : {}),
        ...(input ? { input } : {}),
        ...(when ? { scheduledStartTimestamp: new Date(when).toISOString() } : {}),
        ...(Object.keys(tags).length ? { tags } : {}),
      });
      go(`/orchestrations/${enc(started.instanceId)}`);
    } catch (err) {
      setError(err);
    }
  };
  return (
    <section>
      <h2>New orchestration</h2>
      <form class="new" onSubmit={submit}>
        <label>Name <input name="name" required placeholder="HelloCities" list="names-seen" /></label>
        <datalist id="names-seen">{names.map((n) => <option value={n} />)}</datalist>
        <label>Instance ID <input name="id" placeholder="(a new random id)" /></label>
        <label>Version <input name="version" /></label>
        <label>Input (JSON) <textarea name="input" rows={5} placeholder='{"city": "Tokyo"}' /></label>
        <label>Scheduled start <input type="datetime-local" name="when" /></label>
        <label>Tags (one key=value per line) <textarea name="tags" rows={3} /></label>
        <button type="submit">Start</button>
      </form>
      <ErrorLine error={error} />
    </section>
  );
}

// ------------------------------------------------------------------ entities and workers

function EntitiesPage() {
  const [answer, setAnswer] = useState<{ entities: Entity[]; totalCount: number } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [message, setMessage] = useState<string | null>(null);
  const [state, setState] = useState<{ id: string; text: string } | null>(null);
  const [filter, setFilter] = useState<{ name: string; key: string }>({ name: "", key: "" });
  const load = useCallback(() => {
    const body: Record<string, unknown> = { pagination: { count: 100 } };
    const f: Record<string, unknown> = {};
    if (filter.name) f.nameStartsWith = { value: filter.name };
    if (filter.key) f.key = { value: filter.key };
    body.filter = f;
    call<{ entities: Entity[]; totalCount: number }>("POST", "entities/query", body).then(setAnswer, setError);
  }, [filter]);
  useEffect(load, [load]);
  const entities = answer?.entities ?? null;
  const show = async (id: string) => {
    try {
      const s = await call<unknown>("GET", `entities/${enc(id)}/state`);
      setState({ id, text: JSON.stringify(s, null, 2) });
    } catch (e) {
      setState({ id, text: e instanceof Error ? e.message : String(e) });
    }
  };
  const remove = async (id: string) => {
    if (!confirm(`Delete entity ${id} and its state?`)) return;
    try {
      await call("DELETE", `entities/${enc(id)}`);
      setMessage(`Deleted ${id}`);
      setState(null);
      setError(null);
      load();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <section>
      <h2>Entities</h2>
      <form class="filters" onSubmit={(e) => {
        e.preventDefault();
        const data = new FormData(e.currentTarget as HTMLFormElement);
        setFilter({ name: String(data.get("name") ?? ""), key: String(data.get("key") ?? "") });
      }}>
        <input name="name" placeholder="Name starts with" defaultValue={filter.name} aria-label="Entity name" />
        <input name="key" placeholder="Key contains" defaultValue={filter.key} aria-label="Entity key" />
        <button type="submit">Search</button>
        {answer && <span class="muted">{answer.entities.length} of {answer.totalCount}</span>}
      </form>
      <ErrorLine error={error} />
      {message && <p class="message">{message}</p>}
      <table class="list">
        <thead><tr><th>Entity</th><th>Last modified</th><th>Backlog</th><th>Locked by</th></tr></thead>
        <tbody>
          {(entities ?? []).map((e) => (
            <tr><td><a href="javascript:void 0" class="mono" onClick={() => show(e.instanceId)}>{e.instanceId}</a></td>
              <td>{time(e.lastModifiedTime)}</td><td>{e.backlogQueueSize}</td><td>{e.lockedBy ?? ""}</td></tr>
          ))}
          {entities && !entities.length && <tr><td colSpan={4} class="empty">No entities.</td></tr>}
        </tbody>
      </table>
      {state && (
        <div class="span-detail">
          <h4>State of {state.id}</h4>
          <pre>{state.text}</pre>
          <form class="signal" onSubmit={async (e) => {
            e.preventDefault();
            const data = new FormData(e.currentTarget as HTMLFormElement);
            const input = String(data.get("input") ?? "").trim();
            if (input) {
              try { JSON.parse(input); } catch { return setError(new Error("Input: not valid JSON")); }
            }
            try {
              await call("POST", `entities/${enc(state.id)}/signal`, { operation: data.get("operation"), ...(input ? { input } : {}) });
              setError(null);
              setTimeout(() => show(state.id), 500);
            } catch (err) {
              setError(err);
            }
          }}>
            <label>Operation <input name="operation" required /></label>
            <label>Input (JSON) <input name="input" /></label>
            <button type="submit">Signal</button>
            <button type="button" class="danger" onClick={() => remove(state.id)}>Delete entity</button>
          </form>
        </div>
      )}
    </section>
  );
}

interface Recent {
  intervalSeconds: number;
  samples: {
    timestamp: string; commits: number; changes: number; workers: number;
    pending: Record<"orchestrations" | "activities" | "entities", number>;
    active: Record<"orchestrations" | "activities" | "entities", number>;
  }[];
}

/** Lines over the last minutes, drawn as SVG (no chart library: a few polylines). */
function LineChart({ title, series }: { title: string; series: { label: string; cls: string; values: number[] }[] }) {
  const w = 560, h = 140, pad = 28;
  const count = Math.max(2, ...series.map((s) => s.values.length));
  const top = Math.max(1, ...series.flatMap((s) => s.values));
  const x = (i: number) => pad + (i / (count - 1)) * (w - pad - 8);
  const y = (v: number) => h - pad + 4 - (v / top) * (h - pad - 8);
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <svg width={w} height={h} role="img" aria-label={title}>
        <line x1={pad} y1={h - pad + 4} x2={w - 8} y2={h - pad + 4} class="chart-axis" />
        <text x={2} y={12} class="chart-label">{Math.round(top)}</text>
        <text x={2} y={h - pad + 4} class="chart-label">0</text>
        {series.map((s) => (
          <polyline class={`chart-line ${s.cls}`} fill="none"
                    points={s.values.map((v, i) => `${x(i)},${y(v)}`).join(" ")} />
        ))}
      </svg>
      <div class="chart-legend">{series.map((s) => (
        <span><i class={`chart-key ${s.cls}`} />{s.label}: {Math.round(s.values[s.values.length - 1] ?? 0)}</span>
      ))}</div>
    </figure>
  );
}

const span = (seconds: number) => (seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`);

function Charts() {
  const [recent, setRecent] = useState<Recent | null>(null);
  const load = useCallback(() => { call<Recent>("GET", "recent").then(setRecent, () => setRecent(null)); }, []);
  usePolling(load, 5000);
  if (!recent || recent.samples.length === 0) return <p class="empty">Collecting samples (one every 5 s)…</p>;
  const s = recent.samples;
  const rate = s.slice(1).map((now, i) => {
    const seconds = (Date.parse(now.timestamp) - Date.parse(s[i].timestamp)) / 1000;
    return seconds > 0 ? Math.max(0, now.changes - s[i].changes) / seconds : 0;
  });
  const kinds = [["orchestrations", "k-orch"], ["activities", "k-act"], ["entities", "k-ent"]] as const;
  return (
    <div class="charts">
      <LineChart title={`Instance changes committed per second (last ${span(s.length * recent.intervalSeconds)})`}
                 series={[{ label: "changes/s", cls: "k-orch", values: rate }]} />
      <LineChart title="Work items waiting for a worker"
                 series={kinds.map(([k, cls]) => ({ label: k, cls, values: s.map((x) => x.pending[k]) }))} />
      <LineChart title="Work items leased to workers"
                 series={kinds.map(([k, cls]) => ({ label: k, cls, values: s.map((x) => x.active[k]) }))} />
    </div>
  );
}

function WorkersPage() {
  const [workers, setWorkers] = useState<Worker[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = useCallback(() => {
    call<{ workers: Worker[] }>("GET", "workers").then((r) => setWorkers(r.workers), setError);
  }, []);
  usePolling(load, 2000);
  return (
    <section>
      <h2>Workers</h2>
      <ErrorLine error={error} />
      <table class="list">
        <thead><tr><th>Worker</th><th>Orchestrations</th><th>Activities</th><th>Entities</th><th>Takes</th></tr></thead>
        <tbody>
          {(workers ?? []).map((w) => (
            <tr><td class="mono">{w.workerId}</td>
              <td>{w.activeOrchestrationsCount} / {w.maxOrchestrationsCount}</td>
              <td>{w.activeActivitiesCount} / {w.maxActivitiesCount}</td>
              <td>{w.activeEntitiesCount} / {w.maxEntitiesCount}</td>
              <td>{w.workItemFilters
                ? (["orchestrations", "activities", "entities"] as const).map((kind) =>
                    (w.workItemFilters![kind] ?? []).map((f) => <span class="tag">{f.name}{f.version ? `@${f.version}` : ""}</span>))
                : "everything"}</td></tr>
          ))}
          {workers && !workers.length && <tr><td colSpan={5} class="empty">No worker is connected.</td></tr>}
        </tbody>
      </table>
      <h3>Throughput and backlog</h3>
      <Charts />
      <p>Prometheus metrics: <a href="/metrics">/metrics</a></p>
    </section>
  );
}

// ------------------------------------------------------------------ schedules

/** A list polled every 2 s (`GET path`, its rows under `key`), and the line an
 *  action leaves: a refused action's error stays until the next action, apart
 *  from the polling's own; a success says what it did and reloads the list. */
function usePolledList<T>(path: string, key: string) {
  const [items, setItems] = useState<T[] | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [message, setMessage] = useState<string | null>(null);
  const load = useCallback(() => {
    call<Record<string, T[]>>("GET", path).then((r) => { setItems(r[key]); setLoadError(null); }, setLoadError);
  }, [path, key]);
  usePolling(load, 2000);
  return {
    items, message, error: actionError ?? loadError,
    succeeded: (text: string) => { setMessage(text); setActionError(null); load(); },
    failed: (e: unknown) => { setActionError(e); setMessage(null); },
  };
}

function SchedulesPage() {
  const { items: schedules, message, error, succeeded, failed } = usePolledList<Schedule>("schedules", "schedules");
  const [timing, setTiming] = useState<"interval" | "cron">("interval");
  const act = async (s: Schedule, what: "pause" | "resume" | "trigger" | "delete") => {
    if (what === "delete" && !confirm(`Delete schedule ${s.scheduleId}? Its runs stay.`)) return;
    try {
      const done = what === "delete"
        ? await call<Schedule>("DELETE", `schedules/${enc(s.scheduleId)}`)
        : await call<Schedule>("POST", `schedules/${enc(s.scheduleId)}/${what}`, what === "pause" ? { reason: "paused from the dashboard" } : undefined);
      succeeded(what === "trigger" ? `Started ${done.state.lastInstanceId}` : `${s.scheduleId}: ${what === "delete" ? "deleted" : done.status}`);
    } catch (e) {
      failed(e);
    }
  };
  const create = async (e: Event) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget as HTMLFormElement);
    const input = String(data.get("input") ?? "").trim();
    if (input) {
      try { JSON.parse(input); } catch { return failed(new Error("Input: not valid JSON")); }
    }
    const field = (name: string) => String(data.get(name) ?? "").trim();
    try {
      const made = await call<Schedule>("POST", "schedules", {
        scheduleId: field("id"),
        orchestrationName: field("name"),
        ...(timing === "interval" ? { interval: field("interval") } : { cron: field("cron"), timeZone: field("zone") || "UTC" }),
        ...(input ? { orchestrationInput: input } : {}),
        overlapPolicy: field("overlap"),
        catchUpPolicy: field("catchup"),
      });
      (e.target as HTMLFormElement).reset();
      succeeded(`Created ${made.scheduleId}: next run ${time(made.nextRunAt ?? undefined)}`);
    } catch (err) {
      failed(err);
    }
  };
  const runLink = (s: Schedule) => s.state.lastInstanceId
    ? <span><a class="mono" href={`#/orchestrations/${enc(s.state.lastInstanceId)}`}>{s.state.lastInstanceId}</a>{" "}
        <StatusBadge status={s.state.lastStatus.toUpperCase()} /></span>
    : <span class="muted">none yet</span>;
  return (
    <section>
      <h2>Schedules</h2>
      <ErrorLine error={error} />
      {message && <p class="message">{message}</p>}
      <table class="list">
        <thead><tr><th>Schedule</th><th>Starts</th><th>When</th><th>Status</th><th>Next run</th><th>Last run</th>
          <th>Runs / skipped / missed</th><th></th></tr></thead>
        <tbody>
          {(schedules ?? []).map((s) => (
            <tr><td class="mono">{s.scheduleId}</td>
              <td>{s.orchestrationName}</td>
              <td>{s.cron ? <span><span class="mono">{s.cron}</span> <span class="muted">{s.timeZone}</span></span> : `every ${s.interval}`}</td>
              <td title={s.state.note}>{s.status}</td>
              <td>{s.status === "Active" ? time(s.nextRunAt ?? undefined) : <span class="muted" title={`none while ${s.status.toLowerCase()}`}>—</span>}</td>
              <td>{runLink(s)}</td>
              <td>{s.state.runs} / {s.state.skipped} / {s.state.missed}</td>
              <td class="actions">
                {s.state.paused
                  ? <button onClick={() => act(s, "resume")}>Resume</button>
                  : <button onClick={() => act(s, "pause")}>Pause</button>}
                <button onClick={() => act(s, "trigger")}>Run now</button>
                <button class="danger" onClick={() => act(s, "delete")}>Delete</button>
              </td></tr>
          ))}
          {schedules && !schedules.length && <tr><td colSpan={8} class="empty">No schedules.</td></tr>}
        </tbody>
      </table>
      <h3>New schedule</h3>
      <form class="new" onSubmit={create}>
        <label>Schedule ID <input name="id" required placeholder="nightly-report" pattern="[A-Za-z0-9_.\-]{1,64}" /></label>
        <label>Orchestration <input name="name" required placeholder="HelloCities" /></label>
        <label>Timing <select name="timing" value={timing} onChange={(e) => setTiming((e.target as HTMLSelectElement).value as "interval" | "cron")}>
          <option value="interval">Every…</option><option value="cron">Cron expression</option></select></label>
        {timing === "interval"
          ? <label>Interval <input name="interval" required placeholder="5m (30s, 1h, 1d)" /></label>
          : <>
              <label>Cron (5 fields, or 6 with seconds) <input name="cron" required placeholder="0 9 * * MON-FRI" /></label>
              <label>Time zone <input name="zone" placeholder="UTC" defaultValue={Intl.DateTimeFormat().resolvedOptions().timeZone} /></label>
            </>}
        <label>Input (JSON) <textarea name="input" rows={3} placeholder='{"city": "Tokyo"}' /></label>
        <label>If the last run still runs <select name="overlap">
          <option value="Skip">skip the slot</option><option value="BufferOne">run it when the last ends</option>
          <option value="AllowAll">run anyway</option></select></label>
        <label>Slots missed while dtsd was down <select name="catchup">
          <option value="One">run the latest once</option><option value="All">run each</option>
          <option value="Skip">skip them</option></select></label>
        <button type="submit">Create</button>
      </form>
    </section>
  );
}

// ------------------------------------------------------------------ exports

const ENDED = ["Completed", "Failed", "Terminated", "Canceled"] as const;

/** 1536 -> "1.5 KiB". */
function size(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** What a job exports, in a line: "Completed, Failed · ended after … · name HelloC*". */
function exportFilter(job: ExportJob): string {
  const d = job.definition;
  const parts = [d.runtimeStatus.length && d.runtimeStatus.length < ENDED.length ? d.runtimeStatus.join(", ") : "every ended status"];
  if (d.completedTimeFrom) parts.push(`ended from ${time(d.completedTimeFrom)}`);
  if (d.completedTimeTo) parts.push(`until ${time(d.completedTimeTo)}`);
  if (d.namePrefix) parts.push(`name ${d.namePrefix}*`);
  if (d.instanceIdPrefix) parts.push(`id ${d.instanceIdPrefix}*`);
  return parts.join(" · ");
}

function ExportsPage() {
  const { items: jobs, message, error, succeeded, failed } = usePolledList<ExportJob>("exports", "jobs");
  const [mode, setMode] = useState<"Batch" | "Continuous">("Batch");
  const remove = async (job: ExportJob) => {
    const what = job.status === "Running" ? "Stop and forget" : "Forget";
    if (!confirm(`${what} export job ${job.jobId}? Its file stays: ${job.file}`)) return;
    try {
      await call<unknown>("DELETE", `exports/${enc(job.jobId)}`);
      succeeded(`${job.jobId}: deleted (its file stays)`);
    } catch (e) {
      failed(e);
    }
  };
  const create = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    const field = (name: string) => String(data.get(name) ?? "").trim();
    const instant = (name: string) => (field(name) ? new Date(field(name)).toISOString() : undefined);
    try {
      const made = await call<ExportJob>("POST", "exports", {
        ...(field("id") ? { jobId: field("id") } : {}),
        mode,
        ...(instant("from") ? { completedTimeFrom: instant("from") } : {}),
        ...(instant("to") ? { completedTimeTo: instant("to") } : {}),
        runtimeStatus: ENDED.filter((s) => data.get(`status-${s}`) === "on"),
        ...(field("name") ? { namePrefix: field("name") } : {}),
        ...(field("idPrefix") ? { instanceIdPrefix: field("idPrefix") } : {}),
        format: field("format"),
        purge: mode === "Continuous" || data.get("purge") === "on",
      });
      form.reset();
      setMode("Batch");
      succeeded(`Created ${made.jobId}: writing ${made.file}`);
    } catch (err) {
      failed(err);
    }
  };
  return (
    <section>
      <h2>Exports</h2>
      <p class="hint">An export job writes ended orchestrations with their full histories to a JSON Lines file on
        dtsd's machine (under <code>--export-dir</code>), one page at a time; it goes on from its last page after a
        restart. A batch job ends when it has written what matches; a continuous one keeps following new ended
        orchestrations, and purges what it wrote.</p>
      <ErrorLine error={error} />
      {message && <p class="message">{message}</p>}
      <table class="list">
        <thead><tr><th>Job</th><th>Mode</th><th>Status</th><th>What</th><th>Exported</th><th>Purged</th>
          <th>File</th><th></th></tr></thead>
        <tbody>
          {(jobs ?? []).map((job) => (
            <tr><td class="mono">{job.jobId}</td>
              <td>{job.mode}</td>
              <td>{job.status}{job.lastError && <div class="error-text" title={job.lastError}>{job.lastError}</div>}</td>
              <td>{exportFilter(job)}</td>
              <td>{job.exported.toLocaleString()}</td>
              <td>{job.definition.purge ? job.purged.toLocaleString() : <span class="muted">kept</span>}</td>
              <td><span class="mono">{job.file}</span> <span class="muted">{size(job.bytes)}</span></td>
              <td class="actions"><button class="danger" onClick={() => remove(job)}>Delete</button></td></tr>
          ))}
          {jobs && !jobs.length && <tr><td colSpan={8} class="empty">No export jobs.</td></tr>}
        </tbody>
      </table>
      <h3>New export</h3>
      <form class="new" onSubmit={create}>
        <label>Job ID (optional) <input name="id" placeholder="november-2026" pattern="[A-Za-z0-9_.\-]{1,64}" /></label>
        <label>Mode <select name="mode" value={mode} onChange={(e) => setMode((e.target as HTMLSelectElement).value as "Batch" | "Continuous")}>
          <option value="Batch">Batch: what has ended, once</option>
          <option value="Continuous">Continuous: keep following, and purge</option></select></label>
        <label>Ended from <input name="from" type="datetime-local" step="1" /></label>
        <label>Ended until <input name="to" type="datetime-local" step="1" /></label>
        <fieldset class="statuses"><legend>Statuses (none: every ended one)</legend>
          {ENDED.map((s) => <label class="inline"><input type="checkbox" name={`status-${s}`} /> {s}</label>)}
        </fieldset>
        <label>Name prefix <input name="name" placeholder="HelloCities" /></label>
        <label>Instance ID prefix <input name="idPrefix" /></label>
        <label>Format <select name="format">
          <option value="jsonl.gz">JSON Lines, gzip (.jsonl.gz)</option><option value="jsonl">JSON Lines (.jsonl)</option>
        </select></label>
        {mode === "Batch"
          ? <label class="inline"><input type="checkbox" name="purge" /> Purge each orchestration once it is written</label>
          : <p class="muted">A continuous export purges what it writes.</p>}
        <button type="submit">Create</button>
      </form>
    </section>
  );
}

// ------------------------------------------------------------------ the frame

// ------------------------------------------------------------------ sign-in (dtsd --auth)

function SignIn({ reason, done }: { reason: string; done: (token: string) => Promise<string | null> }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <div class="signin">
      <h2>Sign in</h2>
      <p>{reason}</p>
      <form onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        setError(await done(token.trim()));
        setBusy(false);
      }}>
        <label>Token <input type="password" autoComplete="off" value={token} placeholder="dtsd1...."
          onInput={(e) => setToken((e.target as HTMLInputElement).value)} /></label>
        <button type="submit" disabled={busy || !token.trim()}>Sign in</button>
      </form>
      {error ? <div class="error" role="alert">{error}</div> : null}
      <p class="hint">Create one with <code>dtsctl token create --role reader --task-hub NAME</code> (a reader sees
        everything and changes nothing; a contributor may also start, raise, terminate and purge). It is kept for
        this tab only.</p>
    </div>
  );
}

function App() {
  const route = useRoute();
  const [hubs, setHubs] = useState<string[]>([]);
  const [hub, setHubState] = useState(localStorage.getItem("dtsd.hub") ?? "default");
  const [auth, setAuth] = useState(false);
  // Why a token is wanted (null: none is, or the one given works).
  const [signIn, setSignIn] = useState<string | null>(null);
  // Until dtsd says whether it wants a token, no page asks it for anything.
  const [known, setKnown] = useState(false);
  setHub(hub);
  const loadHubs = async () => {
    const { hubs: names, auth: wanted } = await taskHubs();
    setAuth(wanted);
    setHubs(names);
    // A hub remembered from before that is gone (or not this token's): the first one instead.
    if (names.length && !names.includes(hub)) {
      localStorage.setItem("dtsd.hub", names[0]);
      setHubState(names[0]);
      setHub(names[0]);
    }
    return { names, wanted };
  };
  useEffect(() => {
    onUnauthenticated((message) => {
      setSignedInToken("");
      setSignIn(message);
    });
    loadHubs().then(({ wanted }) => {
      if (wanted && !signedInToken()) setSignIn("This dtsd requires a token.");
      setKnown(true);
    }, () => {
      setHubs([]);
      setKnown(true);
    });
  }, []);
  if (!known) return <header><a class="brand" href="#/">dtsd</a></header>;
  if (signIn !== null) {
    return (
      <>
        <header><a class="brand" href="#/">dtsd</a></header>
        <main><SignIn reason={signIn} done={async (token) => {
          setSignedInToken(token);
          const { names } = await loadHubs().catch(() => ({ names: [] as string[] }));
          if (!names.length) {
            setSignedInToken("");
            return "That token is not valid here (forged, expired, revoked, or for no task hub of this dtsd).";
          }
          try {
            await call("GET", "ping");
          } catch (error) {
            setSignedInToken("");
            return error instanceof Error ? error.message : String(error);
          }
          setSignIn(null);
          return null;
        }} /></main>
      </>
    );
  }
  const page = route.path.startsWith("/orchestrations/")
    ? <InstancePage key={route.path} id={decodeURIComponent(route.path.slice("/orchestrations/".length))} params={route.params} />
    : route.path === "/new" ? <NewPage />
    : route.path === "/entities" ? <EntitiesPage />
    : route.path === "/workers" ? <WorkersPage />
    : route.path === "/schedules" ? <SchedulesPage />
    : route.path === "/exports" ? <ExportsPage />
    : <ListPage key={currentHub()} params={route.params} />;
  return (
    <>
      <header>
        <a class="brand" href="#/">dtsd</a>
        <nav>
          <a href="#/" class={route.path === "/" ? "active" : ""}>Orchestrations</a>
          <a href="#/entities" class={route.path === "/entities" ? "active" : ""}>Entities</a>
          <a href="#/schedules" class={route.path === "/schedules" ? "active" : ""}>Schedules</a>
          <a href="#/exports" class={route.path === "/exports" ? "active" : ""}>Exports</a>
          <a href="#/workers" class={route.path === "/workers" ? "active" : ""}>Workers</a>
          <a href="#/new" class={route.path === "/new" ? "active" : ""}>New orchestration</a>
        </nav>
        <label class="hub">Task hub <select value={hub} onChange={(e) => {
          const next = (e.target as HTMLSelectElement).value;
          localStorage.setItem("dtsd.hub", next);
          setHubState(next);
          go("/");
        }}>
          {(hubs.length ? hubs : [hub]).map((h) => <option value={h}>{h}</option>)}
        </select></label>
        {auth ? <button class="signout" onClick={() => {
          setSignedInToken("");
          setSignIn("Signed out.");
        }}>Sign out</button> : null}
      </header>
      <main>{page}</main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
