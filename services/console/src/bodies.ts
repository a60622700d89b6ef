// The JSON bodies of the console's API (API.md), the one definition the server and the pages
// share. Types only, and no imports: the pages (services/console/web) import this file as it is.

/** Who is signed in (`GET /api/me`). */
export interface Me {
  subject: string;
  role: 'viewer' | 'operator';
}

/** How a stage is doing. */
export type Status = 'ok' | 'warning' | 'critical' | 'unknown';

/** One stage of the pipeline; `reason` whenever `status` is not `ok`. */
export interface Stage {
  stage: 'api' | 'outbox' | 'slot' | 'relay' | 'kafka' | 'projection';
  name: string;
  status: Status;
  reason?: string;
  throughputPerSecond?: number;
}

/** An alert that has held for its `for` duration. */
export interface ActiveAlert {
  name: string;
  severity: 'warning' | 'critical';
  stage: string;
  summary: string;
  /** RFC 3339: when its condition began to hold. */
  since: string;
  value: number;
}

/** `GET /api/overview`. */
export interface Overview {
  at: string;
  stages: Stage[];
  latency: { p50Ms: number | null; p99Ms: number | null };
  alerts: ActiveAlert[];
}

/** One relay process, from its /readyz and /metrics. */
export interface RelayRole {
  url: string;
  role: 'leading' | 'standby' | 'blocked' | 'down';
  ackLatencyP99Ms: number | null;
  reason?: string;
}

/** `GET /api/relay`. */
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
  relays: RelayRole[];
  oldestUnpublishedAgeSeconds: number | null;
  unpublishedBacklog: number | null;
  history: { t: number[]; lagBytes: (number | null)[]; lagSeconds: (number | null)[] };
}

/** What a projection is doing, most urgent first. */
export type ProjectionState =
  'down' | 'stalled' | 'parked' | 'rebuilding' | 'catching_up' | 'running';

/** A partition of a topic a projection reads. */
export interface PartitionLag {
  topic: string;
  partition: number;
  checkpoint: number | null;
  endOffset: number;
  lag: number;
}

/** A generation of a projection; `behind` while a rebuild runs. */
export interface Generation {
  generation: number;
  state: string;
  behind?: number;
}

/** One projection in `GET /api/projections`. */
export interface ProjectionView {
  name: string;
  state: ProjectionState;
  reason?: string;
  generations: Generation[];
  parkedAggregates: number;
  deadLetters: number;
  partitions: PartitionLag[];
  lagHistory: { t: number[]; lag: number[] };
}

/** `GET /api/projections`. */
export interface Projections {
  projections: ProjectionView[];
}

/** One aggregate's parked records of one error class. */
export interface ParkedGroup {
  projection: string;
  aggregateType: string | null;
  aggregateId: string | null;
  errorClass: string;
  count: number;
  firstParkedAt: string;
}

/** A parked record; a viewer sees `payload: null, masked: true` for masked event types. */
export interface ParkedItem {
  projection: string;
  topic: string;
  partition: number;
  offset: string;
  aggregateType: string | null;
  aggregateId: string | null;
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

/** `GET /api/parked`. */
export interface Parked {
  groups: ParkedGroup[];
  items: ParkedItem[];
}

/** An entry of `GET /api/audit`. */
export interface AuditItem {
  at: string;
  actor: string;
  action: string;
  projection?: string;
  target?: unknown;
  reason?: string;
  outcome: unknown;
}

/** A rule as `GET /api/alerts` lists it. */
export interface AlertRule {
  name: string;
  severity: 'warning' | 'critical';
  stage: string;
  summary: string;
  thresholds: Readonly<Record<string, number>>;
}

/** `GET /api/alerts`. */
export interface Alerts {
  rules: AlertRule[];
  active: ActiveAlert[];
}

/** One projection's part in an event's journey. */
export interface JourneyProjection {
  projection: string;
  state: 'applied' | 'parked' | 'dead_lettered' | 'pending';
  at?: string;
  latencyMs?: number;
  reason?: string;
}

/** One event's journey: committed, published, applied by each projection. */
export interface JourneyEvent {
  eventId: string;
  type: string;
  aggregateType: string;
  aggregateId: string;
  version: number;
  correlationId: string | null;
  traceId: string | null;
  /** The trace in the tracing UI `CONSOLE_TRACE_URL` names; null without one. */
  traceUrl: string | null;
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

/** `GET /api/journey`. */
export interface Journey {
  query: string;
  events: JourneyEvent[];
}
