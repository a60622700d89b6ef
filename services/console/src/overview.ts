// GET /api/overview: one status per stage of the pipeline, in the order events flow.
import { rate, type History } from './history.js';
import { confirmedStalled, oldestUnpublishedSeconds, windowQuantileMs } from './relay-view.js';
import type { Sample, SlotReading } from './sample.js';
import type { Thresholds } from './thresholds.js';
import type { ProjectionView, Stage, Status } from './bodies.js';

/** What the stages are computed from. */
export interface StageContext {
  sample: Sample;
  history: History;
  thresholds: Thresholds;
  /** The configured names: the outbox table, the slot, the Kafka brokers. */
  names: { outbox: string; slot: string; kafka: string };
  projections: readonly ProjectionView[];
}

/** Throughput over this window. */
const RATE_WINDOW_MS = 10_000;

const GiB = 1024 ** 3;
const round = (value: number) => Math.round(value * 100) / 100;

function apiStages({ sample }: StageContext): Stage[] {
  if (sample.apis.length === 0) {
    return [
      { stage: 'api', name: 'api', status: 'unknown', reason: 'CONSOLE_API_URLS names no service' },
    ];
  }
  return sample.apis.map((api): Stage => {
    if (api.ready) return { stage: 'api', name: api.url, status: 'ok' };
    const reason = api.reachable
      ? `not ready: ${api.message ?? api.status ?? 'unknown'}`
      : `unreachable: ${api.message ?? ''}`;
    return { stage: 'api', name: api.url, status: 'critical', reason };
  });
}

function outboxStage({ sample, history, thresholds, names }: StageContext): Stage {
  const stage = { stage: 'outbox', name: names.outbox } as const;
  const outbox = sample.database.outbox;
  if (outbox === undefined) {
    return {
      ...stage,
      status: 'unknown',
      reason: sample.database.error ?? 'the outbox table does not exist',
    };
  }
  const throughput = { throughputPerSecond: round(history.latest()?.outboxPerSecond ?? 0) };
  const age = oldestUnpublishedSeconds(sample.relays);
  if (age === undefined) {
    return {
      ...stage,
      ...throughput,
      status: 'unknown',
      reason: 'no relay reports the oldest unpublished event',
    };
  }
  const reason = `the oldest unpublished event is ${Math.round(age)} s old`;
  if (age > thresholds.outboxAgeCriticalSeconds)
    return { ...stage, ...throughput, status: 'critical', reason };
  if (age > thresholds.outboxAgeWarningSeconds)
    return { ...stage, ...throughput, status: 'warning', reason };
  return { ...stage, ...throughput, status: 'ok' };
}

/** The slot's status: the first rule that matches, most severe first. */
export function slotStatus(
  slot: SlotReading,
  stalled: boolean,
  thresholds: Thresholds,
): { status: Status; reason?: string } {
  const lag = slot.lagBytes ?? 0;
  const safe = slot.safeWalSizeBytes;
  if (!slot.exists) return { status: 'critical', reason: `slot ${slot.name} does not exist` };
  if (slot.walStatus === 'lost' || slot.walStatus === 'unreserved') {
    return { status: 'critical', reason: `wal_status is ${slot.walStatus}` };
  }
  if (safe !== null && safe >= 0 && safe < thresholds.safeWalCriticalBytes) {
    return {
      status: 'critical',
      reason: `only ${(safe / GiB).toFixed(2)} GiB of WAL before the slot is lost`,
    };
  }
  if (lag > thresholds.slotLagCriticalBytes)
    return { status: 'critical', reason: `retains ${(lag / GiB).toFixed(2)} GiB of WAL` };
  if (stalled)
    return {
      status: 'critical',
      reason: 'the confirmed position does not move while the WAL grows',
    };
  if (slot.walStatus === 'extended')
    return { status: 'warning', reason: 'wal_status is extended (beyond max_wal_size)' };
  if (lag > thresholds.slotLagWarningBytes)
    return { status: 'warning', reason: `retains ${(lag / GiB).toFixed(2)} GiB of WAL` };
  return { status: 'ok' };
}

function slotStage({ sample, history, thresholds, names }: StageContext): Stage {
  const slot = sample.database.slot;
  if (slot === undefined) {
    return {
      stage: 'slot',
      name: names.slot,
      status: 'unknown',
      reason: sample.database.error ?? 'not read yet',
    };
  }
  const stalled = confirmedStalled(history, thresholds.confirmedStalledMs);
  return { stage: 'slot', name: names.slot, ...slotStatus(slot, stalled, thresholds) };
}

function relayStage({ sample, history }: StageContext): Stage {
  const published = rate(history, RATE_WINDOW_MS, (point) => point.published);
  const stage = {
    stage: 'relay',
    name: 'relay',
    ...(published === undefined ? {} : { throughputPerSecond: round(published) }),
  } as const;
  const reachable = sample.relays.filter((relay) => relay.reachable);
  if (reachable.length === 0) {
    const urls = sample.relays.map((relay) => relay.url).join(', ');
    return {
      ...stage,
      status: 'critical',
      reason: `no relay answers (${urls || 'CONSOLE_RELAY_URLS is empty'})`,
    };
  }
  const blocked = reachable.find((relay) => relay.status === 'blocked');
  if (blocked !== undefined) {
    return {
      ...stage,
      status: 'critical',
      reason: `${blocked.url} is blocked: ${blocked.message ?? 'see its log'}`,
    };
  }
  if (!reachable.some((relay) => relay.status === 'leading')) {
    return { ...stage, status: 'critical', reason: 'no relay leads' };
  }
  return { ...stage, status: 'ok' };
}

function kafkaStage({ sample, names }: StageContext): Stage {
  const { error } = sample.kafka;
  return error === undefined
    ? { stage: 'kafka', name: names.kafka, status: 'ok' }
    : { stage: 'kafka', name: names.kafka, status: 'critical', reason: error };
}

const PROJECTION_STATUS = {
  down: 'critical',
  stalled: 'critical',
  parked: 'warning',
  rebuilding: 'ok',
  catching_up: 'ok',
  running: 'ok',
} as const satisfies Record<ProjectionView['state'], Status>;

function projectionStages({ projections, history, thresholds }: StageContext): Stage[] {
  return projections.map((projection): Stage => {
    const lag = projection.partitions.reduce((total, p) => total + p.lag, 0);
    let status: Status = PROJECTION_STATUS[projection.state];
    if (status === 'ok' && lag > thresholds.projectionLagCritical) status = 'critical';
    else if (status === 'ok' && lag > thresholds.projectionLagWarning) status = 'warning';
    const applied = rate(
      history,
      RATE_WINDOW_MS,
      (point) => point.projections[projection.name]?.progress,
    );
    return {
      stage: 'projection',
      name: projection.name,
      status,
      ...(projection.reason === undefined ? {} : { reason: projection.reason }),
      ...(status !== 'ok' && projection.reason === undefined
        ? { reason: `${lag} records behind` }
        : {}),
      ...(applied === undefined ? {} : { throughputPerSecond: round(applied) }),
    };
  });
}

/** Every stage, in the order events flow. */
export function stagesOf(context: StageContext): Stage[] {
  return [
    ...apiStages(context),
    outboxStage(context),
    slotStage(context),
    relayStage(context),
    kafkaStage(context),
    ...projectionStages(context),
  ];
}

/** The end-to-end latency (occurrence to read model commit) over the last five minutes. */
export function latencyOf(history: History): { p50Ms: number | null; p99Ms: number | null } {
  return {
    p50Ms: windowQuantileMs(history, 0.5, (point) => point.applyLatency),
    p99Ms: windowQuantileMs(history, 0.99, (point) => point.applyLatency),
  };
}
