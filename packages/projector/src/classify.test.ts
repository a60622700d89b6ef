import type { DomainEvent } from '@sluice/contracts';
import { describe, expect, it } from 'vitest';
import { aggregateKey } from './bookkeeping.js';
import { classify, type Item } from './classify.js';
import type { IncomingRecord } from './records.js';

let offset = 0n;
const recordOf = (key: string | null): IncomingRecord => {
  offset += 1n;
  return { topic: 'outbox.event.cart', partition: 0, offset, key, value: '{}', headers: {} };
};

const event = (id: string, version: number): Item => {
  const domainEvent: DomainEvent = {
    id: `${id}-${version}`,
    type: 'cart.item_added.v1',
    aggregateType: 'cart',
    aggregateId: id,
    aggregateVersion: version,
    occurredAt: '2026-01-01T00:00:00Z',
    payload: {},
    metadata: {},
  };
  return { ok: true, record: recordOf(id), event: domainEvent };
};

const garbage = (key: string | null): Item => ({
  ok: false,
  record: recordOf(key),
  errorClass: 'record_malformed',
  message: 'not JSON',
});

const skipped = (id: string, version: number): Item => ({
  skip: { aggregateType: 'cart', aggregateId: id, version },
  record: recordOf(id),
});

const now = new Date('2026-01-01T00:00:00Z');
const none = { versions: new Map<string, number>(), parked: new Set<string>() };
const versionsOf = (entries: [string, number][]) =>
  new Map(entries.map(([id, v]) => [aggregateKey('cart', id), v]));
const ready = (items: { ready: { record: IncomingRecord }[] }) =>
  items.ready.map((r) => r.record.key);
const parks = (items: {
  parks: { aggregateId: string | null; version: number | null; reason: string }[];
}) => items.parks.map((p) => [p.aggregateId, p.version, p.reason]);

describe('classify', () => {
  it('takes versions in order across digit boundaries, drops what was applied, parks after a gap', () => {
    const items = [event('a', 9), event('a', 10), event('a', 10), event('b', 3), event('b', 4)];
    const out = classify(
      items,
      {
        ...none,
        versions: versionsOf([
          ['a', 8],
          ['b', 1],
        ]),
      },
      {
        topicPrefix: '',
        now,
      },
    );
    expect(ready(out)).toEqual(['a', 'a']);
    expect(out.duplicates).toBe(1);
    expect(out.gaps).toBe(1);
    expect(parks(out)).toEqual([
      ['b', 3, 'version_gap'],
      ['b', 4, 'behind_parked'],
    ]);
    expect(out.versions.get(aggregateKey('cart', 'a'))).toBe(10);
    expect(out.versions.get(aggregateKey('cart', 'b'))).toBe(1);
  });

  it('dead-letters what cannot be decoded and parks its aggregate, unless the key holds a NUL', () => {
    const items = [garbage('a'), event('a', 1), garbage('b\u0000'), event('b', 1), garbage(null)];
    const out = classify(items, none, { topicPrefix: '', now });
    expect(out.letters.map((l) => l.record.key)).toEqual(['a', 'b\u0000', null]);
    expect(parks(out)).toEqual([
      ['a', null, 'record_malformed'],
      ['a', 1, 'behind_parked'],
      [null, null, 'record_malformed'],
      [null, null, 'record_malformed'],
    ]);
    expect(ready(out)).toEqual(['b']);
  });

  it('below a checkpoint takes only events never applied nor parked', () => {
    const applied = event('a', 2);
    const unseen = event('b', 1);
    const behindParked = event('c', 5);
    const notDecoded = garbage('d');
    const out = classify(
      [applied, unseen, behindParked, notDecoded],
      { versions: versionsOf([['a', 2]]), parked: new Set([aggregateKey('cart', 'c')]) },
      {
        topicPrefix: '',
        now,
        below: new Set([applied.record, unseen.record, behindParked.record, notDecoded.record]),
      },
    );
    expect(out.duplicates).toBe(3);
    expect(out.belowCheckpoint).toBe(1);
    expect(ready(out)).toEqual(['b']);
    expect(out.letters).toEqual([]);
  });

  it('passes a skipped record over in its turn, and no sooner', () => {
    const inTurn = classify([event('a', 1), skipped('a', 2), event('a', 3)], none, {
      topicPrefix: '',
      now,
    });
    expect(inTurn.ready.map((r) => ('skip' in r ? 'skip' : 'event'))).toEqual([
      'event',
      'skip',
      'event',
    ]);
    expect(inTurn.versions.get(aggregateKey('cart', 'a'))).toBe(3);

    // A version before it is still missing: it waits, and so does what follows it.
    const early = classify(
      [skipped('a', 3), event('a', 4)],
      { ...none, versions: versionsOf([['a', 1]]) },
      {
        topicPrefix: '',
        now,
      },
    );
    expect(parks(early)).toEqual([
      ['a', 3, 'skipped'],
      ['a', 4, 'behind_parked'],
    ]);
    expect(early.ready).toEqual([]);
    expect(
      classify(
        [skipped('a', 1)],
        { ...none, versions: versionsOf([['a', 1]]) },
        { topicPrefix: '', now },
      ).duplicates,
    ).toBe(1);
  });
});
