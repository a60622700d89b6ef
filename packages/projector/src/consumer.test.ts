// A generation's consumer over a scripted record source and store: grouping, isolation of a
// failing partition, positions (assignment, rewinds, gaps), handler retries and crashes,
// without Kafka or PostgreSQL.
import { waitFor } from '@sluice/testkit';
import { describe, expect, it, vi } from 'vitest';
import { HandlerRetry } from './apply-events.js';
import { emptyResult, type AppliedBatch } from './batch.js';
import type { PartitionOffset } from './bookkeeping.js';
import {
  createGenerationConsumer,
  MAX_BYTES_IN_HAND,
  type GenerationStore,
  type PartitionNotice,
} from './consumer.js';
import type { RecordSource, RecordSourceHandlers, SourceBatch } from './record-source.js';
import type { IncomingRecord } from './records.js';

const applied = (extra: Partial<AppliedBatch> = {}): AppliedBatch => ({
  result: emptyResult(),
  rewinds: [],
  resets: [],
  rewritten: [],
  ...extra,
});

function batchOf(
  partition: number,
  offsets: number[],
  end = (offsets.at(-1) ?? 0) + 1,
): SourceBatch {
  const records: IncomingRecord[] = offsets.map((offset) => ({
    topic: 't',
    partition,
    offset: BigInt(offset),
    key: 'k',
    value: '{}',
    headers: {},
  }));
  return { topic: 't', partition, end: BigInt(end), records, heartbeat: () => Promise.resolve() };
}

/** A source the test drives, and a store that answers as scripted. */
function harness(
  answer: (records: readonly IncomingRecord[]) => AppliedBatch | Error | Promise<AppliedBatch>,
  checkpoints: GenerationStore['checkpoints'] = (assignment) =>
    Promise.resolve(
      Object.entries(assignment).flatMap(([topic, partitions]) =>
        partitions.map((partition) => ({ topic, partition, offset: 10n })),
      ),
    ),
) {
  let handlers: RecordSourceHandlers | undefined;
  const seeks: PartitionOffset[] = [];
  const applies: number[][] = [];
  const gaps: [bigint, bigint][] = [];
  const notices: PartitionNotice[] = [];
  const crashes: unknown[] = [];
  const failures: unknown[] = [];
  let logStart = 0n;
  const source: RecordSource = {
    start: (h) => {
      handlers = h;
      return Promise.resolve();
    },
    seek: (at) => void seeks.push(at),
    logStart: () => Promise.resolve(logStart),
    fetchOverdueSince: () => undefined,
    stop: () => Promise.resolve(),
  };
  const store: GenerationStore = {
    apply(records) {
      applies.push([...new Set(records.map((r) => r.partition))]);
      const outcome = answer(records);
      return outcome instanceof Error ? Promise.reject(outcome) : Promise.resolve(outcome);
    },
    checkpoints,
    recordGap(_at, from, to) {
      gaps.push([from, to]);
      return Promise.resolve(true);
    },
  };
  const consumer = createGenerationConsumer({
    source,
    store,
    applyConcurrency: 2,
    admitted: () => Promise.resolve(),
    events: {
      batch: () => undefined,
      failed: (error) => void failures.push(error),
      notice: (n) => void notices.push(n),
      crashed: (error) => void crashes.push(error),
    },
  });
  const started = consumer.start();
  const deliver = async (batch: SourceBatch) => {
    await started;
    return handlers?.batch(batch);
  };
  return {
    consumer,
    deliver,
    handlers: async () => {
      await started;
      return handlers as RecordSourceHandlers;
    },
    seeks,
    applies,
    gaps,
    notices,
    crashes,
    failures,
    setLogStart: (offset: bigint) => (logStart = offset),
  };
}

const settled = <T>(promise: Promise<T>) =>
  promise.then(
    () => 'resolved',
    (error: unknown) => `rejected: ${String(error)}`,
  );

describe('generation consumer', () => {
  it('applies caught-up partitions of one fetch together, and a failing partition alone', async () => {
    const h = harness((records) =>
      records.some((r) => r.partition === 2) && records.some((r) => r.partition !== 2)
        ? new Error('partition 2 is broken')
        : records.every((r) => r.partition === 2)
          ? new Error('partition 2 is broken')
          : applied(),
    );
    const outcomes = await Promise.all([
      settled(h.deliver(batchOf(0, [1, 2]))),
      settled(h.deliver(batchOf(1, [5]))),
      settled(h.deliver(batchOf(2, [7]))),
    ]);
    expect(h.applies).toEqual([[0, 1, 2], [0], [1], [2]]);
    expect(outcomes).toEqual(['resolved', 'resolved', 'rejected: Error: partition 2 is broken']);
    expect(h.consumer.health().failingSince).toBeTypeOf('number');
  });

  it('starts each assigned partition one record before its checkpoint', async () => {
    const h = harness(() => applied());
    (await h.handlers()).assigned({ t: [0, 3] });
    await new Promise((resolve) => setImmediate(resolve));
    expect(h.seeks).toEqual([
      { topic: 't', partition: 0, offset: 9n },
      { topic: 't', partition: 3, offset: 9n },
    ]);
  });

  it('starts a partition without a checkpoint at its beginning, and reads checkpoints again until the database answers', async () => {
    let refusals = 2;
    const h = harness(
      () => applied(),
      () =>
        refusals-- > 0
          ? Promise.reject(new Error('the database is away'))
          : Promise.resolve([{ topic: 't', partition: 3, offset: 7n }]),
    );
    (await h.handlers()).assigned({ t: [0, 3], u: [1] });
    await waitFor(() => h.seeks.length === 3, { timeoutMs: 5000, message: 'the seeks' });
    expect(h.seeks).toEqual([
      { topic: 't', partition: 0, offset: 0n },
      { topic: 't', partition: 3, offset: 6n },
      { topic: 'u', partition: 1, offset: 0n },
    ]);
    expect(h.failures).toHaveLength(2);
  });

  it('gives up reading the checkpoints of an assignment once another one came, or it stopped', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    try {
      let reads = 0;
      const h = harness(
        () => applied(),
        (assignment) => {
          reads += 1;
          return 'later' in assignment
            ? Promise.resolve([])
            : Promise.reject(new Error('the database is away'));
        },
      );
      const handlers = await h.handlers();
      handlers.assigned({ t: [0] });
      handlers.assigned({ later: [0] });
      await vi.advanceTimersByTimeAsync(10_000);
      handlers.assigned({ t: [1] });
      await vi.advanceTimersByTimeAsync(0);
      const failures = h.failures.length;
      await h.consumer.stop();
      await vi.advanceTimersByTimeAsync(60_000);
      expect(h.seeks).toEqual([{ topic: 'later', partition: 0, offset: 0n }]);
      expect(reads).toBe(3);
      expect(failures).toBe(2);

      // A read in flight when the consumer stops neither seeks nor reports.
      let answer: (checkpoints: PartitionOffset[]) => void = () => undefined;
      const stopping = harness(
        () => applied(),
        () => new Promise((resolve) => (answer = resolve)),
      );
      (await stopping.handlers()).assigned({ t: [0] });
      await stopping.consumer.stop();
      answer([]);
      await vi.advanceTimersByTimeAsync(0);
      expect(stopping.seeks).toEqual([]);
      expect(stopping.failures).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('goes back to a checkpoint, and records a gap when the records there are gone or absent', async () => {
    const rewind = (first: bigint) =>
      applied({ rewinds: [{ topic: 't', partition: 0, offset: 5n, first }] });
    let answer = rewind(9n);
    const h = harness(() => answer);
    await h.deliver(batchOf(0, [9, 10]));
    expect(h.seeks).toEqual([{ topic: 't', partition: 0, offset: 5n }]);
    expect(h.gaps).toEqual([]);
    // Delivered after that seek and still starting past it: nothing is stored from 5 to 9.
    await h.deliver(batchOf(0, [9, 10]));
    expect(h.gaps).toEqual([[5n, 9n]]);
    expect(h.seeks.at(-1)).toEqual({ topic: 't', partition: 0, offset: 9n });
    // The log no longer starts at the checkpoint.
    h.setLogStart(7n);
    answer = rewind(8n);
    await h.deliver(batchOf(0, [8]));
    expect(h.gaps.at(-1)).toEqual([5n, 7n]);
    expect(h.notices.map((n) => [n.kind, n.from, n.to])).toEqual([
      ['gap', 5n, 9n],
      ['gap', 5n, 7n],
    ]);
  });

  it('goes back to the checkpoint, recording no gap, when a catching-up batch failed and the next one starts past it', async () => {
    let calls = 0;
    const h = harness(
      () => {
        calls += 1;
        if (calls === 1) return new Error('connection lost');
        return calls === 2
          ? applied({ rewinds: [{ topic: 't', partition: 0, offset: 0n, first: 3n }] })
          : applied();
      },
      () => Promise.resolve([]),
    );
    (await h.handlers()).assigned({ t: [0] });
    await waitFor(() => h.seeks.length === 1, { timeoutMs: 5000, message: 'the seek to 0' });
    // Far behind the end: both queued at once, the second applied after the first failed.
    await h.deliver(batchOf(0, [0, 1, 2], 5000));
    await settled(h.deliver(batchOf(0, [3, 4], 5000)));
    await waitFor(() => h.seeks.length === 2, { timeoutMs: 5000, message: 'the seek back' });
    expect(h.seeks.at(-1)).toEqual({ topic: 't', partition: 0, offset: 0n });
    expect(h.gaps).toEqual([]);
  });

  it('reads a rewritten partition again from its start', async () => {
    const h = harness(() => applied({ rewritten: [{ topic: 't', partition: 4, offset: 12n }] }));
    h.setLogStart(3n);
    await h.deliver(batchOf(4, [11, 12]));
    expect(h.seeks).toEqual([{ topic: 't', partition: 4, offset: 3n }]);
    expect(h.notices).toEqual([{ kind: 'rewritten', topic: 't', partition: 4, from: 12n, to: 3n }]);
  });

  it('applies a batch again after a handler retry, and surfaces a catching-up failure later', async () => {
    let calls = 0;
    const h = harness(() => {
      calls += 1;
      return calls === 1 ? new HandlerRetry(1, new Error('not yet')) : applied();
    });
    await h.deliver(batchOf(0, [1]));
    expect(calls).toBe(2);

    const failing = harness(() => new Error('down'));
    // Far behind its end: applied behind the source's back; the failure comes with the next batch.
    expect(await settled(failing.deliver(batchOf(1, [1], 5000)))).toBe('resolved');
    await failing.consumer.stop();
    expect(await settled(failing.deliver(batchOf(1, [2], 5000)))).toBe('rejected: Error: down');
  });

  it('holds fetched records of at most about MAX_BYTES_IN_HAND, however large each is', async () => {
    const MiB = 1024 * 1024;
    let open = (): void => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let appliedRecords = 0;
    const h = harness(async (records) => {
      await gate;
      appliedRecords += records.length;
      return applied();
    });
    // A partition far behind its end, four records of a MiB per fetch, as the source would
    // deliver them: the next batch once the last one was taken.
    const big = (batch: number): SourceBatch => {
      const offsets = [0, 1, 2, 3].map((i) => batch * 4 + i);
      const delivered = batchOf(0, offsets, 1_000_000);
      const records = delivered.records.map((r) => ({ ...r, value: 'x'.repeat(MiB) }));
      return { ...delivered, records };
    };
    let taken = 0;
    const deliveries = (async () => {
      for (let batch = 0; batch < 50; batch += 1) {
        await h.deliver(big(batch));
        taken += 4;
      }
    })();
    for (let turn = 0; turn < 20; turn += 1) await new Promise((r) => setImmediate(r));
    expect(taken).toBeGreaterThan(0);
    expect(taken * MiB).toBeLessThanOrEqual(MAX_BYTES_IN_HAND + 4 * MiB);
    open();
    await deliveries;
    await h.consumer.stop();
    expect(appliedRecords).toBe(200);
  });

  it('reports a source that stopped for good', async () => {
    const h = harness(() => applied());
    (await h.handlers()).crashed(new TypeError('gone'));
    expect(h.crashes).toHaveLength(1);
    expect(h.consumer.health().crashed).toBeInstanceOf(TypeError);
  });
});
