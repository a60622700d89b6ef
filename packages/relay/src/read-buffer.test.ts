// The relay's read buffer lets go of what Kafka acknowledged: a burst of large payloads must not
// stay in memory after it went out.
import type { SerializedEvent } from '@sluice/contracts';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { Lsn } from './lsn.js';
import { ReadBuffer } from './read-buffer.js';

setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;
setFlagsFromString('--no-expose-gc');
/** Collects garbage; a WeakRef's target lives at least until the job that made it ended. */
const gc = async () => {
  await new Promise((resolve) => setImmediate(resolve));
  collect();
};

const event = (id: number): SerializedEvent => ({
  id: `e${id}`,
  type: 'cart.opened.v1',
  aggregateType: 'cart',
  aggregateId: `c${id}`,
  aggregateVersion: 1,
  occurredAt: '2026-12-01T00:00:00.000Z',
  payloadJson: JSON.stringify({ body: 'x'.repeat(1000 + id) }),
  metadata: {},
});

/** A buffer holding one committed transaction of `count` events, and weak references to them. */
function filled(count: number) {
  const buffer = new ReadBuffer();
  const refs: WeakRef<SerializedEvent>[] = [];
  buffer.begin(Lsn.of(1), new Date());
  for (let i = 0; i < count; i += 1) {
    const e = event(i);
    refs.push(new WeakRef(e));
    buffer.add(e);
  }
  buffer.commit(Lsn.of(2));
  return { buffer, refs };
}

const alive = (refs: WeakRef<SerializedEvent>[]) =>
  refs.flatMap((ref, i) => (ref.deref() === undefined ? [] : [i]));

describe('read buffer', () => {
  it('holds no event Kafka acknowledged, and counts the bytes of those it holds', async () => {
    const { buffer, refs } = filled(10);
    expect(buffer.unpublishedBytes()).toBe(
      Array.from({ length: 10 }, (_, i) => event(i).payloadJson.length).reduce((a, b) => a + b),
    );
    buffer.markPublished(buffer.nextBatch(6).length);
    await gc();
    expect(alive(refs)).toEqual([6, 7, 8, 9]);
    expect(buffer.unpublishedBytes()).toBe(
      [6, 7, 8, 9].reduce((sum, i) => sum + event(i).payloadJson.length, 0),
    );
    expect(buffer.nextBatch(10).map((e) => e.event.id)).toEqual(['e6', 'e7', 'e8', 'e9']);
    buffer.markPublished(4);
    await gc();
    expect(alive(refs)).toEqual([]);
    expect(buffer.unpublishedBytes()).toBe(0);
    expect(buffer.settle()).toBe(Lsn.of(2));
  });

  it('refuses to count more events published than were waiting', () => {
    const { buffer } = filled(2);
    expect(() => buffer.markPublished(3)).toThrow(RangeError);
    expect(buffer.unpublished()).toBe(2);
  });
});
