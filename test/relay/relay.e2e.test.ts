// The relay as a real process against real PostgreSQL and Kafka: record format, order, the
// kill -9 loop, graceful stop.
import { testServers, waitFor } from '@sluice/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkDelivery,
  confirmedFlush,
  createRelayFixture,
  outboxIndex,
  readTopic,
  startRelay,
  topicSize,
  writeOutboxEvents,
  type RelayFixture,
  type RelayProcess,
} from './harness.js';

const { databaseUrl, kafkaBrokers } = testServers();

describe('relay process', () => {
  let fixture: RelayFixture;
  const relays: RelayProcess[] = [];
  beforeAll(async () => {
    fixture = await createRelayFixture(databaseUrl, 'relay_e2e');
  });
  afterAll(async () => {
    for (const relay of relays) relay.kill('SIGKILL');
    await fixture.close();
  });

  it('publishes committed outbox events as CloudEvents records, keyed, in order, then stops cleanly', async () => {
    // Half the events predate the slot (the initial snapshot carries them), half are streamed.
    for (let i = 0; i < 5; i += 1)
      await writeOutboxEvents(fixture.pool, { aggregates: 200, perAggregate: 1 });
    const relay = startRelay(fixture, kafkaBrokers);
    relays.push(relay);
    await relay.waitForOutput('"published":1000,"msg":"initial snapshot published"', {
      timeoutMs: 30_000,
      message: 'the initial snapshot',
    });
    for (let i = 0; i < 5; i += 1)
      await writeOutboxEvents(fixture.pool, { aggregates: 200, perAggregate: 1 });
    await waitFor(async () => (await topicSize(kafkaBrokers, fixture.topic)) >= 2000, {
      timeoutMs: 60_000,
      message: '2000 records',
    });
    const records = await readTopic(kafkaBrokers, fixture.topic);
    const delivery = checkDelivery(await outboxIndex(fixture.pool), records);
    expect(delivery).toEqual({ duplicates: 0, missing: [], unexpected: [], orderViolations: [] });

    const sample = records[0];
    expect(sample?.headers).toMatchObject({
      ce_specversion: '1.0',
      ce_type: 'cart.item_added.v1',
      ce_source: '/shop-api',
      ce_subject: sample?.key,
      'content-type': 'application/json',
      ce_aggregatetype: 'cart',
      ce_commitlsn: expect.stringMatching(/^[0-9A-F]+\/[0-9A-F]+$/),
      ce_time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    expect(JSON.parse(sample?.value ?? '')).toMatchObject({
      quantity: expect.any(Number),
      unitPriceCents: 100,
    });

    // Everything is published, so the slot catches up with the WAL written so far.
    const { rows } = await fixture.pool.query<{ lsn: string }>(
      `SELECT (pg_current_wal_lsn() - '0/0')::text AS lsn`,
    );
    const written = BigInt(rows[0]?.lsn ?? '0');
    await waitFor(async () => (await confirmedFlush(fixture.pool, fixture.slot)) >= written, {
      timeoutMs: 20_000,
      message: 'the slot to confirm everything published',
    });

    const address = /"address":"(http:[^"]+)","msg":"metrics listening"/.exec(relay.output())?.[1];
    expect(address).toBeDefined();
    const metrics = await waitFor(
      async () => {
        const text = await (await fetch(`${address ?? ''}/metrics`)).text();
        return /sluice_relay_slot_wal_status\{status="reserved"\} 1/.test(text) ? text : undefined;
      },
      { timeoutMs: 20_000, message: 'slot metrics' },
    );
    expect(metrics).toMatch(/sluice_relay_events_published_total\{aggregate_type="cart"\} 2000/);
    expect(metrics).toMatch(/sluice_relay_leader 1/);
    expect(metrics).toMatch(/sluice_relay_slot_lag_bytes \d+/);
    expect(metrics).toMatch(/sluice_relay_publish_latency_seconds_count [1-9]/);

    relay.kill('SIGTERM');
    expect(await relay.exited()).toBe(0);
    expect(relay.output()).toMatch(/"msg":"stopped"/);
  });

  it('loses nothing and keeps per-aggregate order across 10 kill -9s while 100k events are written', async () => {
    const aggregates = 1000;
    const rounds = 100;
    let written = 0;
    const writer = (async () => {
      for (let round = 0; round < rounds; round += 1) {
        written += await writeOutboxEvents(fixture.pool, { aggregates, perAggregate: 1 });
      }
    })();
    for (let kill = 0; kill < 10; kill += 1) {
      const relay = startRelay(fixture, kafkaBrokers);
      relays.push(relay);
      const before = await topicSize(kafkaBrokers, fixture.topic);
      // Kill at a random moment once the relay is demonstrably publishing.
      await waitFor(
        async () =>
          (await topicSize(kafkaBrokers, fixture.topic)) > before || written >= rounds * aggregates,
        {
          timeoutMs: 60_000,
          intervalMs: 20 + Math.floor(Math.random() * 200),
          message: 'the relay to publish',
        },
      );
      relay.kill('SIGKILL');
      await relay.exited();
    }
    await writer;
    const final = startRelay(fixture, kafkaBrokers);
    relays.push(final);
    const outbox = await outboxIndex(fixture.pool);
    expect(outbox.size).toBe(2000 + rounds * aggregates);
    let records = await readTopic(kafkaBrokers, fixture.topic);
    await waitFor(
      async () => {
        if (new Set(records.map((r) => r.id)).size >= outbox.size) return true;
        records = await readTopic(kafkaBrokers, fixture.topic);
        return false;
      },
      { timeoutMs: 180_000, intervalMs: 500, message: 'every event in Kafka' },
    );
    const delivery = checkDelivery(outbox, records);
    console.log(
      JSON.stringify({
        killLoop: { events: outbox.size, records: records.length, duplicates: delivery.duplicates },
      }),
    );
    expect(delivery.missing).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    expect(delivery.orderViolations).toEqual([]);
    final.kill('SIGTERM');
    expect(await final.exited()).toBe(0);
  });
});
