// The console's JSON API (services/console/API.md): its bodies as types, and one fetch helper.

export type Status = 'ok' | 'warning' | 'critical' | 'unknown';
export type Role = 'viewer' | 'operator';

export interface Me {
  subject: string;
  role: Role;
}

export interface ActiveAlert {
  name: string;
  severity: 'warning' | 'critical';
  stage: string;
  summary: string;
  since: string;
  value: number;
}

export interface Stage {
  stage: 'api' | 'outbox' | 'slot' | 'relay' | 'kafka' | 'projection';
  name: string;
  status: Status;
  reason?: string;
  throughputPerSecond?: number;
}

export interface Overview {
  at: string;
  stages: Stage[];
  latency: { p50Ms: number | null; p99Ms: number | null };
  alerts: ActiveAlert[];
}

export interface RelayView {
  slot: {
    name: string;
    walStatus: string | null;
    safeWalSizeBytes: number | null;
    lagBytes: number | null;
    lagSeconds: number | null;
    confirmedLsn: string | null;
    currentLsn: string;
    confirmedStalled: boolean;
  };
  heartbeatAgeSeconds: number | null;
  relays: {
    url: string;
    role: 'leading' | 'standby' | 'blocked' | 'down';
    ackLatencyP99Ms: number | null;
    reason?: string;
  }[];
  oldestUnpublishedAgeSeconds: number | null;
  unpublishedBacklog: number | null;
  history: { t: number[]; lagBytes: (number | null)[]; lagSeconds: (number | null)[] };
}

export interface Generation {
  generation: number;
  state: string;
  behind?: number;
}

export interface Projection {
  name: string;
  state: 'running' | 'catching_up' | 'rebuilding' | 'stalled' | 'parked' | 'down';
  reason?: string;
  generations: Generation[];
  parkedAggregates: number;
  deadLetters: number;
  partitions: {
    topic: string;
    partition: number;
    checkpoint: number | null;
    endOffset: number;
    lag: number;
  }[];
  lagHistory: { t: number[]; lag: number[] };
}

export interface Projections {
  projections: Projection[];
}

export interface ParkedGroup {
  projection: string;
  aggregateType: string;
  aggregateId: string;
  errorClass: string;
  count: number;
  firstParkedAt: string;
}

export interface ParkedItem {
  projection: string;
  topic: string;
  partition: number;
  offset: string;
  aggregateType: string;
  aggregateId: string;
  version: number | null;
  eventType: string | null;
  errorClass: string;
  message: string;
  attempts: number;
  key: string | null;
  headers: Record<string, string>;
  payload: unknown;
  masked: boolean;
  parkedAt: string;
}

export interface Parked {
  groups: ParkedGroup[];
  items: ParkedItem[];
}

export interface JourneyProjection {
  projection: string;
  state: 'applied' | 'parked' | 'dead_lettered' | 'pending';
  at?: string;
  latencyMs?: number;
  reason?: string;
}

export interface JourneyEvent {
  eventId: string;
  type: string;
  aggregateType: string;
  aggregateId: string;
  version: number;
  correlationId: string | null;
  traceId: string | null;
  committed: { at: string; lsn: string | null };
  published: {
    topic: string;
    partition: number;
    offset: string;
    at: string;
    latencyMs: number;
  } | null;
  projections: JourneyProjection[];
}

export interface Journey {
  query: string;
  events: JourneyEvent[];
}

export interface AlertRule {
  name: string;
  severity: 'warning' | 'critical';
  stage: string;
  summary: string;
  thresholds: Record<string, number>;
}

export interface Alerts {
  rules: AlertRule[];
  active: ActiveAlert[];
}

/** An answer other than 2xx, with the API's stable error code. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Dispatched on `window` when the API answers 401: the session expired or was revoked. */
export const SIGNED_OUT = 'sluice:signed-out';

/** Calls `/api<path>` with the session cookie; a JSON `body` is sent as such. */
export async function api<T>(path: string, method = 'GET', body?: unknown): Promise<T> {
  const response = await fetch(`/api${path}`, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  const parsed: unknown = text === '' ? undefined : JSON.parse(text);
  if (response.status === 401 && path !== '/session') dispatchEvent(new Event(SIGNED_OUT));
  if (!response.ok) {
    const error = (parsed ?? {}) as { code?: string; message?: string };
    throw new ApiError(
      response.status,
      error.code ?? 'http_error',
      error.message ?? `HTTP ${response.status}`,
    );
  }
  return parsed as T;
}

/** A query string from the set values of `params`. */
export function query(params: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text === '' ? '' : `?${text}`;
}
