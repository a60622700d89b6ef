import type { DomainEvent } from '@sluice/contracts';
import type { Transaction } from 'kysely';
import { describe, expect, it } from 'vitest';
import { classify, type Item } from './classify.js';
import { forgetWaiting } from './erasure.js';
import type { Projection } from './projection.js';

let offset = 0n;
const item = (type: string, version: number): Item => {
  offset += 1n;
  const event: DomainEvent = {
    id: `e-${String(offset)}`,
    type,
    aggregateType: 'customer',
    aggregateId: 'c1',
    aggregateVersion: version,
    occurredAt: '2026-01-01T00:00:00Z',
    payload: {},
    metadata: {},
  };
  const record = {
    topic: 'outbox.event.customer',
    partition: 0,
    offset,
    key: 'c1',
    value: '{}',
    headers: {},
  };
  return { ok: true, record, event };
};

/** A projection whose `forget` records the event ids it was given. */
function forgetting(): { projection: Projection; forgotten: string[][] } {
  const forgotten: string[][] = [];
  const projection = {
    name: 'log',
    erasure: {
      types: ['customer.erased.v1'],
      forget: (events: readonly DomainEvent[]) => {
        forgotten.push(events.map((e) => e.id));
        return Promise.resolve();
      },
    },
  } as unknown as Projection;
  return { projection, forgotten };
}

const trx = undefined as unknown as Transaction<unknown>;
const table = (name: string) => name;

async function run(items: Item[], parked: boolean) {
  const known = {
    versions: new Map([['customer\u0000c1', 1]]),
    parked: new Set(parked ? ['customer\u0000c1'] : []),
  };
  const sorted = classify(items, known, { topicPrefix: '', now: new Date() });
  const { projection, forgotten } = forgetting();
  await forgetWaiting(trx, projection, items, sorted.parks, table);
  return { forgotten, sorted };
}

describe('forgetWaiting', () => {
  it('hands an erasure behind a parked event to forget at once', async () => {
    const erasure = item('customer.erased.v1', 3);
    const { forgotten, sorted } = await run([item('customer.renamed.v1', 2), erasure], true);
    expect(sorted.parks.map((p) => p.reason)).toEqual(['behind_parked', 'behind_parked']);
    expect(forgotten).toEqual([['ok' in erasure && erasure.ok ? erasure.event.id : '']]);
  });

  it('hands an erasure after a version gap to forget, and nothing else', async () => {
    const { forgotten } = await run(
      [item('customer.erased.v1', 5), item('customer.renamed.v1', 6)],
      false,
    );
    expect(forgotten).toHaveLength(1);
    expect(forgotten[0]).toHaveLength(1);
  });

  it('leaves an erasure whose turn it is to apply', async () => {
    const { forgotten, sorted } = await run([item('customer.erased.v1', 2)], false);
    expect(sorted.ready).toHaveLength(1);
    expect(forgotten).toEqual([]);
  });
});
