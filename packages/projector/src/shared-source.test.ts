// Several consumers over one scripted record source: each gets its topics' records from its own
// position, the source reads from the earliest, a failed batch is fetched again for its consumer
// only, and the source stops with the last one.
import { waitFor } from '@sluice/testkit';
import { describe, expect, it, vi } from 'vitest';
import type { PartitionOffset } from './bookkeeping.js';
import type { RecordSource, RecordSourceHandlers, SourceBatch } from './record-source.js';
import { createSharedRecordSource } from './shared-source.js';

function batchOf(topic: string, from: number, to: number, end = to + 1): SourceBatch {
  const records = [];
  for (let offset = from; offset <= to; offset += 1)
    records.push({
      topic,
      partition: 0,
      offset: BigInt(offset),
      key: 'k',
      value: '{}',
      headers: {},
    });
  return { topic, partition: 0, end: BigInt(end), records, heartbeat: () => Promise.resolve() };
}

/** The source the views share, driven by the test. */
function scriptedSource() {
  let handlers: RecordSourceHandlers | undefined;
  const seeks: PartitionOffset[] = [];
  const start = vi.fn((h: RecordSourceHandlers) => {
    handlers = h;
    return Promise.resolve();
  });
  const stop = vi.fn(() => Promise.resolve());
  const source: RecordSource = {
    start,
    seek: (at) => void seeks.push(at),
    logStart: () => Promise.resolve(0n),
    fetchOverdueSince: () => 1234,
    stop,
  };
  const deliver = (batch: SourceBatch) => {
    if (handlers === undefined) throw new Error('not started');
    return handlers.batch(batch);
  };
  return { source, start, stop, seeks, deliver, handlers: () => handlers };
}

/** A view's consumer: records what it was given, and fails batches while `failing`. */
function consumerOf(shared: ReturnType<typeof createSharedRecordSource>, topics: string[]) {
  const source = shared.view(topics);
  const got: string[] = [];
  const assignments: unknown[] = [];
  const crashes: unknown[] = [];
  const consumer = {
    source,
    got,
    assignments,
    crashes,
    failing: false,
    handlers: {
      batch: (batch: SourceBatch) => {
        if (consumer.failing) return Promise.reject(new Error('database away'));
        const offsets = batch.records.map((r) => r.offset);
        got.push(`${batch.topic}:${offsets[0]}-${offsets.at(-1)}`);
        return Promise.resolve();
      },
      assigned: (assignment: unknown) => void assignments.push(assignment),
      crashed: (error: unknown) => void crashes.push(error),
    } satisfies RecordSourceHandlers,
  };
  return consumer;
}

type Consumer = ReturnType<typeof consumerOf>;

/** A shared source over a scripted one, and a started view of each of `topics`' lists. */
async function sharedBy<const T extends readonly (readonly string[])[]>(...topics: T) {
  const scripted = scriptedSource();
  const shared = createSharedRecordSource(scripted.source);
  const views = topics.map((list) => consumerOf(shared, [...list]));
  await Promise.all(views.map((c) => c.source.start(c.handlers)));
  return { ...scripted, shared, views: views as { [K in keyof T]: Consumer } };
}

/** Two views of one partition from offset 0, the first failing its batches. */
async function failingAndHealthy() {
  const { seeks, deliver, views } = await sharedBy(['cart'], ['cart']);
  const [failing, healthy] = views;
  healthy.source.seek({ topic: 'cart', partition: 0, offset: 0n });
  failing.failing = true;
  return { seeks, deliver, failing, healthy };
}

describe('shared record source', () => {
  it('starts the source once, hands each view its topics, and replays the assignment to a late view', async () => {
    const { shared, start, deliver, handlers, views } = await sharedBy(['cart'], ['order']);
    const [carts, orders] = views;
    expect(start).toHaveBeenCalledTimes(1);
    handlers()?.assigned({ cart: [0, 1], order: [2] });
    expect(carts.assignments).toEqual([{ cart: [0, 1] }]);
    expect(orders.assignments).toEqual([{ order: [2] }]);
    await deliver(batchOf('cart', 0, 4));
    await deliver(batchOf('order', 0, 1));
    expect(carts.got).toEqual(['cart:0-4']);
    expect(orders.got).toEqual(['order:0-1']);

    const both = consumerOf(shared, ['cart', 'order']);
    await both.source.start(both.handlers);
    expect(both.assignments).toEqual([{ cart: [0, 1], order: [2] }]);
    expect(start).toHaveBeenCalledTimes(1);
  });

  it("tells each view when the source's oldest unanswered fetch was sent", async () => {
    const { views } = await sharedBy(['a'], ['b']);
    expect(views.map((view) => view.source.fetchOverdueSince())).toEqual([1234, 1234]);
  });

  it('reads from the earliest position and gives each view its records from its own on', async () => {
    const { seeks, deliver, views } = await sharedBy(['cart'], ['cart']);
    const [ahead, behind] = views;
    ahead.source.seek({ topic: 'cart', partition: 0, offset: 7n });
    behind.source.seek({ topic: 'cart', partition: 0, offset: 3n });
    expect(seeks.at(-1)).toEqual({ topic: 'cart', partition: 0, offset: 3n });
    await deliver(batchOf('cart', 3, 9));
    expect(behind.got).toEqual(['cart:3-9']);
    expect(ahead.got).toEqual(['cart:7-9']);
    // From there on both take every record.
    await deliver(batchOf('cart', 10, 10));
    expect(ahead.got).toEqual(['cart:7-9', 'cart:10-10']);
    expect(behind.got).toEqual(['cart:3-9', 'cart:10-10']);
  });

  it('hands a view every record of a partition that ends below its position (a recreated topic)', async () => {
    const { deliver, views } = await sharedBy(['cart']);
    const [view] = views;
    view.source.seek({ topic: 'cart', partition: 0, offset: 5n });
    await deliver(batchOf('cart', 0, 1));
    expect(view.got).toEqual(['cart:0-1']);
  });

  it('reads a recreated topic from its start for a view the source read past its end for the others', async () => {
    const { seeks, deliver, views } = await sharedBy(['cart'], ['cart']);
    const [near, far] = views;
    near.source.seek({ topic: 'cart', partition: 0, offset: 1499n });
    far.source.seek({ topic: 'cart', partition: 0, offset: 4999n });
    // The new log holds 0..1999: 1499 is there, so Kafka reads on from it, not from the start.
    await deliver(batchOf('cart', 1499, 1999, 2000));
    expect(near.got).toEqual(['cart:1499-1999']);
    expect(far.got).toEqual([]);
    expect(seeks.at(-1)).toEqual({ topic: 'cart', partition: 0, offset: 0n });
    await deliver(batchOf('cart', 0, 1999, 2000));
    expect(far.got).toEqual(['cart:0-1999']);
    expect(near.got).toEqual(['cart:1499-1999']);
  });

  it('fetches a failed batch again for its view after a pause, while the other view goes on', async () => {
    const { seeks, deliver, failing, healthy } = await failingAndHealthy();
    await deliver(batchOf('cart', 0, 4));
    failing.failing = false;
    // Behind now: the next records would look like a gap to it.
    await deliver(batchOf('cart', 5, 6));
    expect(healthy.got).toEqual(['cart:0-4', 'cart:5-6']);
    expect(failing.got).toEqual([]);
    await waitFor(() => seeks.length > 1, { timeoutMs: 2000, message: 'a seek back' });
    expect(seeks.at(-1)).toEqual({ topic: 'cart', partition: 0, offset: 0n });
    await deliver(batchOf('cart', 0, 6));
    expect(failing.got).toEqual(['cart:0-6']);
    expect(healthy.got).toEqual(['cart:0-4', 'cart:5-6']);
  });

  it('goes back for a failed batch only: failing again, it skips ahead to where the others are', async () => {
    const { seeks, deliver, failing, healthy } = await failingAndHealthy();
    await deliver(batchOf('cart', 0, 4));
    await deliver(batchOf('cart', 5, 99));
    await waitFor(() => seeks.length > 1, { timeoutMs: 2000, message: 'a seek back' });
    expect(seeks.at(-1)).toEqual({ topic: 'cart', partition: 0, offset: 0n });
    // Fetched again: the partition ends at 100 by now.
    await deliver(batchOf('cart', 0, 4, 100));
    expect(seeks.at(-1)).toEqual({ topic: 'cart', partition: 0, offset: 100n });
    await deliver(batchOf('cart', 100, 100));
    expect(failing.got).toEqual([]);
    expect(healthy.got).toEqual(['cart:0-4', 'cart:5-99', 'cart:100-100']);
    failing.failing = false;
    await waitFor(() => seeks.length > 3, { timeoutMs: 3000, message: 'a second seek back' });
    expect(seeks.at(-1)).toEqual({ topic: 'cart', partition: 0, offset: 0n });
    await deliver(batchOf('cart', 0, 100));
    expect(failing.got).toEqual(['cart:0-100']);
  });

  it('does not move a view past a seek it made while its batch was in hand', async () => {
    const { source, seeks, deliver } = scriptedSource();
    const shared = createSharedRecordSource(source);
    const view = consumerOf(shared, ['cart']);
    await view.source.start({
      ...view.handlers,
      batch: (batch) => {
        view.source.seek({ topic: 'cart', partition: 0, offset: 2n });
        return view.handlers.batch(batch);
      },
    });
    await deliver(batchOf('cart', 5, 9));
    expect(seeks).toEqual([{ topic: 'cart', partition: 0, offset: 2n }]);
    await deliver(batchOf('cart', 2, 9));
    expect(view.got).toEqual(['cart:5-9', 'cart:2-9']);
  });

  it('tells every view of a crash, a later one too, and stops the source with the last view', async () => {
    const { shared, stop, handlers, views } = await sharedBy(['cart'], ['cart']);
    const [one, two] = views;
    const error = new Error('gone');
    handlers()?.crashed(error);
    expect([one.crashes, two.crashes]).toEqual([[error], [error]]);
    const late = consumerOf(shared, ['cart']);
    await late.source.start(late.handlers);
    expect(late.crashes).toEqual([error]);

    await one.source.stop();
    await late.source.stop();
    expect(stop).not.toHaveBeenCalled();
    expect(shared.open()).toBe(true);
    await two.source.stop();
    expect(stop).toHaveBeenCalledTimes(1);
    expect(shared.open()).toBe(false);
    await expect(consumerOf(shared, ['cart']).source.start(one.handlers)).rejects.toThrow(
      /stopped/,
    );
  });
});
