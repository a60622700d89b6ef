// The relay's record of where it published each event (sluice.published_events: one row per
// send and partition, its ids from a base offset), against what Kafka holds: killed with SIGKILL
// in mid-stream again and again, the relay never records an event at an offset where Kafka has
// another record; and a journey table that cannot be written (dropped) never holds back
// publishing.
import { testServers, waitFor } from '@sluice/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  awaitAllDelivered,
  createRelayFixture,
  outboxIndex,
  startRelay,
  topicSize,
  writeOutboxEvents,
  type RelayFixture,
  type RelayProcess,
} from '../relay/harness.js';

const { databaseUrl, kafkaBrokers } = testServers();
let fixture: RelayFixture;
let relay: RelayProcess;
let aggregates = 0;

const RELAY_ENV = { RELAY_MAX_BATCH_EVENTS: '50' };

beforeAll(async () => {
  fixture = await createRelayFixture(databaseUrl, 'jkill');
  relay = startRelay(fixture, kafkaBrokers, RELAY_ENV);
  // Streaming from here on: what is written below reaches the relay through its slot.
  await waitFor(
    async () =>
      (
        await fixture.pool
          .query('SELECT 1 FROM sluice.relay_slots WHERE snapshot_done')
          .catch(() => ({ rowCount: 0 }))
      ).rowCount === 1,
    { timeoutMs: 30_000, message: 'the relay’s slot and its (empty) snapshot' },
  );
});

afterAll(async () => {
  relay.kill('SIGKILL');
  await relay.exited();
  await fixture.close();
});

/** Appends `perAggregate` events to each of `count` new carts. */
async function writeCarts(count: number, perAggregate: number): Promise<void> {
  await writeOutboxEvents(fixture.pool, {
    aggregates: count,
    perAggregate,
    aggregateOffset: aggregates,
  });
  aggregates += count;
}

interface PublishedRow {
  event_id: string;
  partition: number;
  record_offset: string;
  commit_lsn: string;
  committed_at: Date | null;
  published_at: Date;
}

interface SendRow {
  partition: number;
  base_offset: string;
  event_ids: string;
  commit_lsns: string;
  committed_at: string;
  published_at: Date;
}

/** One row per event recorded: each send row's ids, offsets and runs of commits spelled out. */
async function publishedRows(): Promise<PublishedRow[]> {
  const { rows } = await fixture.pool.query<SendRow>(
    `SELECT partition, base_offset::text, event_ids, commit_lsns, committed_at, published_at
       FROM sluice.published_events WHERE topic = $1`,
    [fixture.topic],
  );
  return rows.flatMap((row) => {
    const times = row.committed_at.split(',');
    const commits = row.commit_lsns.split(',').flatMap((run, index) => {
      const [count, lsn] = run.split(':');
      const time = times[index] ?? '';
      const at = time === '' ? null : new Date(Number(time));
      return Array.from({ length: Number(count) }, () => ({ lsn: lsn ?? '', at }));
    });
    const ids = row.event_ids.split(',');
    expect(commits).toHaveLength(ids.length);
    return ids.map((id, index) => ({
      event_id: id,
      partition: row.partition,
      record_offset: (BigInt(row.base_offset) + BigInt(index)).toString(),
      commit_lsn: commits[index]?.lsn ?? '',
      committed_at: commits[index]?.at ?? null,
      published_at: row.published_at,
    }));
  });
}

/** Waits until the relay recorded every event of the carts written last (and so all before). */
async function awaitRecorded(ids: ReadonlySet<string>): Promise<void> {
  await waitFor(
    async () => {
      const recorded = new Set((await publishedRows()).map((row) => row.event_id));
      return [...ids].every((id) => recorded.has(id));
    },
    { timeoutMs: 60_000, message: 'the last events recorded as published' },
  );
}

describe('sluice.published_events', () => {
  it('never records an event at an offset where Kafka holds another record, across SIGKILLs', async () => {
    for (let round = 0; round < 3; round += 1) {
      const before = await topicSize(kafkaBrokers, fixture.topic);
      await writeCarts(40, 25);
      // Kill once Kafka has part of this round, not all of it: in mid-stream.
      await waitFor(async () => (await topicSize(kafkaBrokers, fixture.topic)) > before + 100, {
        timeoutMs: 60_000,
        intervalMs: 20,
        message: 'part of the round in Kafka',
      });
      relay.kill('SIGKILL');
      await relay.exited();
      relay = startRelay(fixture, kafkaBrokers, RELAY_ENV);
    }
    const lastIds = new Set((await outboxIndex(fixture.pool)).keys());
    await writeCarts(5, 2);
    const outbox = await outboxIndex(fixture.pool);
    const records = await awaitAllDelivered(kafkaBrokers, fixture, outbox, 120_000);
    await awaitRecorded(new Set([...outbox.keys()].filter((id) => !lastIds.has(id))));

    const inKafka = new Map(records.map((r) => [`${r.partition}/${r.offset}`, r]));
    const rows = await publishedRows();
    const wrong = rows.filter((row) => {
      const record = inKafka.get(`${row.partition}/${row.record_offset}`);
      return record?.id !== row.event_id || record.headers.ce_commitlsn !== row.commit_lsn;
    });
    expect(wrong).toEqual([]);
    for (const row of rows) {
      expect(row.committed_at).not.toBeNull();
      expect(row.published_at.getTime()).toBeGreaterThanOrEqual(row.committed_at?.getTime() ?? 0);
    }
    // Events published (and acknowledged) just before a kill may have gone unrecorded; each
    // recorded one is recorded at a true offset, and most are recorded.
    const recorded = new Set(rows.map((row) => row.event_id));
    const unrecorded = [...outbox.keys()].filter((id) => !recorded.has(id)).length;
    console.log(
      JSON.stringify({
        journeyEvents: outbox.size,
        records: records.length,
        rows: rows.length,
        unrecorded,
      }),
    );
    expect(unrecorded).toBeLessThan(outbox.size / 10);
  });

  it('keeps publishing when the journey cannot be written', async () => {
    await fixture.pool.query('DROP TABLE sluice.published_events');
    await writeCarts(10, 10);
    const outbox = await outboxIndex(fixture.pool);
    await awaitAllDelivered(kafkaBrokers, fixture, outbox, 60_000);
    await waitFor(
      () => relay.output().includes('recording published events for the journey failed'),
      {
        timeoutMs: 30_000,
        message: 'the failed journey write logged',
      },
    );
    expect(relay.child.exitCode).toBeNull();
  });
});
