// The alerts of @sluice/alerts evaluated on the console's samples, with the same thresholds and
// `for` durations, so the console shows what Prometheus would fire. Rules over metrics the
// console does not read stay listed in GET /api/alerts but never fire here.
import { ALERTS, type AlertDefinition } from '@sluice/alerts';
import { rate, type History } from './history.js';
import { oldestUnpublishedSeconds, windowQuantileMs } from './relay-view.js';
import type { Sample } from './sample.js';
import type { ActiveAlert, AlertRule, ProjectionView } from './bodies.js';

/** What the rules are evaluated on. */
export interface AlertContext {
  sample: Sample;
  history: History;
  projections: readonly ProjectionView[];
}

/** A series for which a rule's condition holds: its labels (for the summary) and its value. */
interface Firing {
  labels: Record<string, string>;
  value: number;
}

type Evaluator = (t: Readonly<Record<string, number>>, context: AlertContext) => Firing[];

const when = (condition: boolean, value: number, labels: Record<string, string> = {}): Firing[] =>
  condition ? [{ labels, value }] : [];

const metricOverRelays = (sample: Sample, name: string, match: Record<string, string> = {}) =>
  sample.relays.flatMap((relay) => relay.metrics?.samples(name, match) ?? []);

const projectorSamples = (sample: Sample, name: string) =>
  sample.projectors.flatMap((projector) => projector.metrics?.samples(name) ?? []);

const lagOf = (projection: ProjectionView) =>
  projection.partitions.reduce((total, p) => total + p.lag, 0);

const projectionLag = (records: number, { projections }: AlertContext): Firing[] =>
  projections.flatMap((p) => when(lagOf(p) > records, lagOf(p), { projection: p.name }));

const slotLag = (bytes: number, { sample }: AlertContext): Firing[] => {
  const lag = sample.database.slot?.lagBytes ?? 0;
  return when(lag > bytes, lag);
};

/** How each rule the console can evaluate is evaluated, by alert name. */
const EVALUATORS: Record<string, Evaluator> = {
  SluiceOutboxEventAgeHigh: (t, { sample }) => outboxAge(t, sample),
  SluiceOutboxEventAgeCritical: (t, { sample }) => outboxAge(t, sample),
  SluiceSlotLagHigh: (t, context) => slotLag(t.lagBytes ?? Infinity, context),
  SluiceSlotLagCritical: (t, context) => slotLag(t.lagBytes ?? Infinity, context),
  SluiceSlotWalExtended: (_t, { sample }) =>
    when(sample.database.slot?.walStatus === 'extended', 1),
  SluiceSlotWalUnreserved: (_t, { sample }) => {
    const status = sample.database.slot?.walStatus ?? '';
    return when(status === 'unreserved' || status === 'lost', 1, { status });
  },
  SluiceSlotSafeWalLow: (t, { sample }) => {
    const safe = sample.database.slot?.safeWalSizeBytes ?? null;
    return when(safe !== null && safe >= 0 && safe < (t.safeWalBytes ?? 0), safe ?? 0);
  },
  // No relay leads, also when none answers.
  SluiceRelayNoLeader: (_t, { sample }) => {
    const leaders = metricOverRelays(sample, 'sluice_relay_leader');
    return when(sample.relays.length > 0 && !leaders.some((s) => s.value === 1), 0);
  },
  SluiceRelayPublishBlocked: (_t, { sample }) =>
    metricOverRelays(sample, 'sluice_relay_publish_blocked')
      .filter((s) => s.value === 1)
      .map((s) => ({ labels: { reason: s.labels.reason ?? '' }, value: 1 })),
  SluiceRelayStreamFailures: (t, { history }) => {
    const perSecond = rate(history, 15 * 60_000, (point) => point.streamFailures) ?? 0;
    const first = history.since(15 * 60_000)?.t ?? 0;
    const increase = (perSecond * ((history.latest()?.t ?? first) - first)) / 1000;
    return when(increase > (t.failures ?? Infinity), increase);
  },
  SluiceKafkaSendRetries: (t, { history }) => {
    const perSecond = rate(history, 5 * 60_000, (point) => point.sendRetries) ?? 0;
    return when(perSecond > (t.retriesPerSecond ?? Infinity), perSecond);
  },
  SluiceRelayPaused: (_t, { sample }) =>
    when(
      metricOverRelays(sample, 'sluice_relay_paused').some((s) => s.value === 1),
      1,
    ),
  SluiceKafkaUnderMinInsync: (_t, { sample }) =>
    when(
      metricOverRelays(sample, 'sluice_relay_under_min_insync').some((s) => s.value === 1),
      1,
    ),
  SluiceTopicDurability: (_t, { sample }) =>
    metricOverRelays(sample, 'sluice_relay_topic_durability_problems')
      .filter((s) => s.value > 0)
      .map((s) => ({ labels: { topic: s.labels.topic ?? '' }, value: s.value })),
  SluiceProjectionLagHigh: (t, context) => projectionLag(t.records ?? Infinity, context),
  SluiceProjectionLagCritical: (t, context) => projectionLag(t.records ?? Infinity, context),
  SluiceProjectionDeadLetters: (t, { history, projections }) =>
    projections.flatMap((p) => {
      const perSecond =
        rate(history, 5 * 60_000, (point) => point.projections[p.name]?.deadLettered) ?? 0;
      return when(perSecond > (t.perSecond ?? 0), perSecond, { projection: p.name });
    }),
  SluiceProjectionParkedAggregates: (t, { projections }) =>
    projections.flatMap((p) =>
      when(p.parkedAggregates > (t.aggregates ?? 0), p.parkedAggregates, { projection: p.name }),
    ),
  SluiceProjectorDown: (_t, { sample }) =>
    when(sample.projectors.length > 0 && sample.projectors.every((p) => !p.reachable), 1),
  SluiceProjectionStalled: (_t, { sample }) =>
    projectorSamples(sample, 'sluice_projector_health_problems')
      .filter(
        (s) =>
          s.value > 0 && ['stalled', 'consumer_stopped', 'joining'].includes(s.labels.code ?? ''),
      )
      .map((s) => ({
        labels: { projection: s.labels.projection ?? '', code: s.labels.code ?? '' },
        value: s.value,
      })),
  SluiceProjectionOffsetGaps: (t, { sample }) =>
    projectorSamples(sample, 'sluice_projector_offset_gaps_unaccepted')
      .filter((s) => s.value > (t.gaps ?? 0))
      .map((s) => ({ labels: { projection: s.labels.projection ?? '' }, value: s.value })),
  SluiceApplyLatencyHigh: (t, { history, projections }) =>
    projections.flatMap((p) => {
      const p99 = windowQuantileMs(history, 0.99, (point) => point.applyLatencyOf[p.name]);
      const seconds = p99 === null ? 0 : p99 / 1000;
      return when(seconds > (t.p99Seconds ?? Infinity), seconds, { projection: p.name });
    }),
};

function outboxAge(t: Readonly<Record<string, number>>, sample: Sample): Firing[] {
  const age = oldestUnpublishedSeconds(sample.relays) ?? 0;
  return when(age > (t.ageSeconds ?? Infinity), age);
}

/** Every alert of @sluice/alerts, as GET /api/alerts lists them. */
export function alertRules(rules: readonly AlertDefinition[] = ALERTS): AlertRule[] {
  return rules.map(({ name, severity, stage, summary, thresholds }) => ({
    name,
    severity,
    stage,
    summary: summaryOf({ stage, summary }, {}),
    thresholds,
  }));
}

/** The names of the rules the console evaluates (the others need Prometheus). */
export const EVALUATED_ALERTS: readonly string[] = Object.keys(EVALUATORS);

/** Milliseconds of a Prometheus duration such as `10m`, `30s`, `1h`. */
export function durationMs(text: string): number {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(text);
  if (match === null) throw new Error(`not a Prometheus duration: ${text}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'ms'];
  return Number(match[1]) * unit;
}

/** The summary with its `{{ $labels.x }}` filled; `job` names the service the stage runs in. */
function summaryOf(
  alert: Pick<AlertDefinition, 'stage' | 'summary'>,
  labels: Record<string, string>,
): string {
  const job = alert.stage === 'projection' ? 'the projector' : 'the relay';
  return alert.summary.replace(
    /\{\{ *\$labels\.(\w+) *\}\}/g,
    (_all, name: string) => labels[name] ?? (name === 'job' ? job : `<${name}>`),
  );
}

/** Evaluates the rules at each sample and remembers since when each series has held. */
export class AlertEvaluator {
  private readonly pending = new Map<string, number>();

  constructor(private readonly rules: readonly AlertDefinition[] = ALERTS) {}

  /** The alerts that have held for their `for` at `now` (Unix milliseconds). */
  evaluate(context: AlertContext, now: number): ActiveAlert[] {
    const seen = new Set<string>();
    const active: ActiveAlert[] = [];
    for (const rule of this.rules) {
      for (const { labels, value } of EVALUATORS[rule.name]?.(rule.thresholds, context) ?? []) {
        const key = `${rule.name}${JSON.stringify(labels)}`;
        seen.add(key);
        const since = this.pending.get(key) ?? now;
        this.pending.set(key, since);
        if (now - since < durationMs(rule.for)) continue;
        active.push({
          name: rule.name,
          severity: rule.severity,
          stage: rule.stage,
          summary: summaryOf(rule, labels),
          since: new Date(since).toISOString(),
          value,
        });
      }
    }
    for (const key of this.pending.keys()) if (!seen.has(key)) this.pending.delete(key);
    return active;
  }
}
