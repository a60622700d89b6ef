import { aggregateTypeOfTopic, type DomainEvent } from '@sluice/contracts';
import { aggregateKey } from './bookkeeping.js';
import type { Park } from './parked-records.js';
import { storableKey, type DeadLetter, type Decoded, type IncomingRecord } from './records.js';

/** A parked record an operator skipped: it counts as applied in its turn. */
export type Skipped = NonNullable<IncomingRecord['skipped']>;

/** An item of a batch in order: a decoded record, or a parked record an operator skipped. */
export type Item = Decoded | { skip: Skipped; record: IncomingRecord };

/** What goes to the handler in order: an event, or a skipped record's turn. */
export type Ready =
  { event: DomainEvent; record: IncomingRecord } | { skip: Skipped; record: IncomingRecord };

/** What a batch's items come to, before any handler runs. */
export interface Classified {
  /** In order: events to apply, and skipped records whose turn it is. */
  ready: Ready[];
  /** Records set aside: undecodable, behind a parked one, or after a version gap. */
  parks: Park[];
  /** Records that cannot be applied, for the dead-letter topic. */
  letters: DeadLetter[];
  duplicates: number;
  gaps: number;
  /** Events below a checkpoint that had never been applied. */
  belowCheckpoint: number;
  /** Each aggregate's applied version once `ready` is applied, by {@link aggregateKey}. */
  versions: Map<string, number>;
  /** Aggregates with parked records once `parks` are made. */
  parked: Set<string>;
}

/** The aggregate an item belongs to, if it names one PostgreSQL can hold. */
export function aggregateOf(item: Item, prefix: string): [type: string, id: string] | undefined {
  if ('skip' in item) return [item.skip.aggregateType, item.skip.aggregateId];
  if (item.ok) return [item.event.aggregateType, item.event.aggregateId];
  return aggregateOfRecord(item.record, prefix);
}

/**
 * The aggregate a record's topic and key name (the relay's records: one topic per aggregate type,
 * the aggregate id as key), before it is decoded.
 */
export function aggregateOfRecord(
  record: IncomingRecord,
  prefix: string,
): [type: string, id: string] | undefined {
  if (record.skipped !== undefined)
    return [record.skipped.aggregateType, record.skipped.aggregateId];
  const type = aggregateTypeOfTopic(record.topic, prefix);
  const id = storableKey(record.key);
  return type === null || id === null ? undefined : [type, id];
}

export const eventFields = (event: DomainEvent) => ({
  aggregateType: event.aggregateType,
  aggregateId: event.aggregateId,
  version: event.aggregateVersion,
});

export const skippedFields = (skip: Skipped) => ({
  aggregateType: skip.aggregateType,
  aggregateId: skip.aggregateId,
  version: skip.version,
});

/**
 * Sorts a batch's items by what becomes of them, given the applied versions and parked
 * aggregates: duplicates (a version already applied) are dropped; an undecodable record is
 * dead-lettered and parks its aggregate; an event behind a parked one, or after a gap in its
 * versions, is parked; the rest is ready, in order. Items in `below` lie below their partition's
 * checkpoint: only events never applied are taken from them. Pure: nothing is read or written.
 */
export function classify(
  items: readonly Item[],
  known: { versions: ReadonlyMap<string, number>; parked: ReadonlySet<string> },
  options: { topicPrefix: string; below?: ReadonlySet<IncomingRecord>; now: Date },
): Classified {
  const out: Classified = {
    ready: [],
    parks: [],
    letters: [],
    duplicates: 0,
    gaps: 0,
    belowCheckpoint: 0,
    versions: new Map(known.versions),
    parked: new Set(known.parked),
  };
  for (const item of items) {
    const aggregate = aggregateOf(item, options.topicPrefix);
    const key = aggregate === undefined ? undefined : aggregateKey(...aggregate);
    if (options.below?.has(item.record) === true) {
      if (!unseenBelow(item, key, out)) {
        out.duplicates += 1;
        continue;
      }
      out.belowCheckpoint += 1;
    }
    if ('skip' in item) classifySkipped(item, key ?? '', out);
    else if (!item.ok) classifyUndecodable(item, aggregate, options.now, out);
    else classifyEvent(item, key ?? '', out);
  }
  return out;
}

/**
 * Below the checkpoint, a record was applied, parked or dead-lettered before, unless the
 * partition's offsets were reused for events this projection never saw.
 */
function unseenBelow(item: Item, key: string | undefined, out: Classified): boolean {
  return (
    'event' in item &&
    item.ok &&
    key !== undefined &&
    !out.parked.has(key) &&
    item.event.aggregateVersion > (out.versions.get(key) ?? 0)
  );
}

function classifySkipped(
  item: { skip: Skipped; record: IncomingRecord },
  key: string,
  out: Classified,
) {
  const { version } = item.skip;
  const applied = out.versions.get(key) ?? 0;
  if (version <= applied) {
    out.duplicates += 1;
  } else if (out.parked.has(key) || version > applied + 1) {
    out.parked.add(key);
    out.parks.push({
      record: item.record,
      ...skippedFields(item.skip),
      reason: 'skipped',
      attempts: 0,
    });
  } else {
    out.versions.set(key, version);
    out.ready.push(item);
  }
}

function classifyUndecodable(
  item: Extract<Decoded, { ok: false }>,
  aggregate: [type: string, id: string] | undefined,
  now: Date,
  out: Classified,
) {
  out.letters.push({
    record: item.record,
    errorClass: item.errorClass,
    message: item.message,
    attempts: 1,
    firstFailure: now,
    lastFailure: now,
  });
  out.parks.push({
    record: item.record,
    aggregateType: aggregate?.[0] ?? null,
    aggregateId: aggregate?.[1] ?? null,
    version: item.event?.aggregateVersion ?? null,
    reason: item.errorClass,
    error: item.message,
    attempts: 1,
  });
  if (aggregate !== undefined) out.parked.add(aggregateKey(...aggregate));
}

function classifyEvent(item: Extract<Decoded, { ok: true }>, key: string, out: Classified) {
  const { event } = item;
  const applied = out.versions.get(key) ?? 0;
  if (event.aggregateVersion <= applied) {
    out.duplicates += 1;
  } else if (out.parked.has(key)) {
    out.parks.push({
      record: item.record,
      ...eventFields(event),
      reason: 'behind_parked',
      attempts: 0,
    });
  } else if (event.aggregateVersion > applied + 1) {
    out.gaps += 1;
    out.parked.add(key);
    out.parks.push({
      record: item.record,
      ...eventFields(event),
      reason: 'version_gap',
      error: `expected version ${applied + 1}, got ${event.aggregateVersion}`,
      attempts: 0,
    });
  } else {
    out.versions.set(key, event.aggregateVersion);
    out.ready.push(item);
  }
}
