// The DTS REST API as the dashboard calls it (same origin, /api/v1/taskhubs/).

export const STATUSES = [
  "RUNNING", "COMPLETED", "FAILED", "TERMINATED", "PENDING", "SUSPENDED", "CANCELED", "CONTINUED_AS_NEW",
] as const;
export type ShortStatus = (typeof STATUSES)[number];

export const shortStatus = (s: string | undefined): string => (s ?? "").replace("ORCHESTRATION_STATUS_", "");

export interface Orchestration {
  instanceId: string;
  executionId: string;
  name: string;
  version?: string;
  orchestrationStatus: string;
  createdTimestamp: string;
  lastUpdatedTimestamp: string;
  completedTimestamp?: string;
  scheduledStartTimestamp?: string;
  parentInstanceId?: string;
  tags?: Record<string, string>;
}

export interface Trivia {
  totalCount: number;
  completedCount: number;
  runningCount: number;
  failedCount: number;
  pendingCount: number;
  terminatedCount?: number;
  suspendedCount?: number;
}

export interface QueryResult {
  orchestrations: Orchestration[];
  totalCount: number;
  trivia?: Trivia;
}

export interface Failure {
  errorType?: string;
  errorMessage?: string;
  stackTrace?: string;
  innerFailure?: Failure;
}

export interface Payloads {
  input?: string;
  output?: string;
  customStatus?: string;
  orchestrationStatus: string;
  failureDetails?: Failure;
}

/** One history event: eventId, timestamp and one key naming its kind. */
export type HistoryEvent = { eventId: number; timestamp: string } & Record<string, any>;

export interface Worker {
  workerId: string;
  activeOrchestrationsCount: number;
  maxOrchestrationsCount: number;
  activeActivitiesCount: number;
  maxActivitiesCount: number;
  activeEntitiesCount: number;
  maxEntitiesCount: number;
  workItemFilters?: Record<"orchestrations" | "activities" | "entities", { name: string; version?: string }[]>;
}

/** A schedule as dtsd's /schedules answers it (core/schedule.hpp). */
export interface Schedule {
  scheduleId: string;
  orchestrationName: string;
  orchestrationInput?: string | null;
  interval?: string;
  cron?: string;
  timeZone: string;
  overlapPolicy: string;
  catchUpPolicy: string;
  status: "Active" | "Paused" | "Ended";
  nextRunAt?: string | null;
  lastRunAt?: string | null;
  startAt?: string;
  endAt?: string;
  state: {
    paused: boolean; note: string; lastInstanceId: string; lastStatus: string; lastRunning: boolean;
    runs: number; skipped: number; missed: number;
  };
}

/** One of dtsd's export jobs (POST /exports): what it was asked, and how far it got. */
export interface ExportJob {
  jobId: string;
  mode: "Batch" | "Continuous";
  status: "Running" | "Completed" | "Failed" | "Stopped";
  file: string;
  exported: number;
  purged: number;
  bytes: number;
  lastError: string;
  definition: {
    completedTimeFrom: string;
    completedTimeTo: string;
    runtimeStatus: string[];
    namePrefix: string;
    instanceIdPrefix: string;
    format: "jsonl" | "jsonl.gz";
    purge: boolean;
    pollSeconds: number;
    pageSize: number;
    createdAt?: string;
  };
}

export interface Entity {
  instanceId: string;
  lastModifiedTime: string;
  backlogQueueSize: number;
  lockedBy?: string;
}

export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

let hub = "default";
export const setHub = (name: string) => { hub = name; };
export const currentHub = () => hub;

// A dtsd run with --auth wants a token on every call: the one signed in with is
// kept for this tab only (sessionStorage), never in the page's address.
const TOKEN_KEY = "dtsd.token";
export const signedInToken = () => sessionStorage.getItem(TOKEN_KEY) ?? "";
export const setSignedInToken = (token: string) =>
  token ? sessionStorage.setItem(TOKEN_KEY, token) : sessionStorage.removeItem(TOKEN_KEY);
const authorization = (): Record<string, string> =>
  signedInToken() ? { authorization: `Bearer ${signedInToken()}` } : {};
let unauthenticated: (message: string) => void = () => {};
/** What to do when a call is refused for want of a (valid) token: sign in again. */
export const onUnauthenticated = (then: (message: string) => void) => { unauthenticated = then; };

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`/api/v1/taskhubs/${path}`, {
    method,
    headers: { "x-taskhub": hub, "content-type": "application/json", ...authorization() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: any = text;
  // Only JSON answers are parsed: a restart answers the new id as plain text.
  if ((response.headers.get("content-type") ?? "").startsWith("application/json")) {
    try { parsed = JSON.parse(text); } catch { /* as text */ }
  }
  const message = parsed?.message ?? `${response.status} ${response.statusText}`;
  if (response.status === 401) unauthenticated(message);
  if (!response.ok) throw new ApiError(response.status, message);
  return parsed as T;
}

/** The hubs this tab may see, and whether dtsd wants a token. */
export async function taskHubs(): Promise<{ hubs: string[]; auth: boolean }> {
  const response = await fetch("/readyz", { headers: authorization() });
  const body = await response.json();
  return { hubs: body.taskHubs ?? [], auth: !!body.auth };
}

export const enc = encodeURIComponent;
