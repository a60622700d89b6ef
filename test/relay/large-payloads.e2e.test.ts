// Large payloads through the relay as a real process: batches holding a 100 KB record go out
// gzip-compressed (by default, and every batch with RELAY_COMPRESS_ABOVE_BYTES=0); a 2 MB
// payload goes to the claim-check store by default, or through Kafka itself onto a topic that
// allows it. Each payload must arrive exactly, and small events written after the large ones
// must arrive too: nothing stalls behind them. Reading pauses once the waiting payloads hold
// RELAY_MAX_BUFFERED_BYTES, inside a transaction too, and resumes.
import { createTopics, testServers, waitFor } from '@sluice/testkit';
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createRelayFixture,
  readTopic,
  startRelay,
  topicSize,
  type ReadRecord,
  type RelayFixture,
  type RelayProcess,
} from './harness.js';

const { databaseUrl, kafkaBrokers } = testServers();

interface Written {
  id: string;
  /** The payload as PostgreSQL returns it: the relay publishes this text unchanged. */
  text: string;
}

/** An incompressible payload of about `bytes` bytes of JSON (gzip cannot shrink it much). */
function payload(bytes: number): object {
  return {
    cartId: '00000000-0000-7000-8000-000000000001',
    productId: '00000000-0000-7000-8000-000000000002',
    quantity: 1,
    unitPriceCents: 100,
    note: randomBytes(Math.ceil((bytes * 3) / 4)).toString('base64'),
  };
}

/** Appends one event per payload, each to its own cart, in one transaction. */
async function writeEvents(pool: pg.Pool, prefix: string, payloads: object[]): Promise<Written[]> {
  const { rows } = await pool.query<{ id: string; text: string }>(
    `INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload, metadata)
     SELECT gen_random_uuid(), 'cart', $1 || '-' || i, 1, 'cart.item_added.v1', p, '{"actor":"test"}'::jsonb
       FROM unnest($2::jsonb[]) WITH ORDINALITY AS t(p, i)
     RETURNING id::text, payload::text AS text`,
    [prefix, payloads.map((p) => JSON.stringify(p))],
  );
  return rows;
}

/** Every record of the fixture's topic once it holds `count`; on a timeout, the relay's log says why. */
async function recordsOnceDelivered(
  fixture: RelayFixture,
  relay: RelayProcess,
  count: number,
): Promise<Map<string, ReadRecord>> {
  try {
    await waitFor(async () => (await topicSize(kafkaBrokers, fixture.topic)) >= count, {
      timeoutMs: 45_000,
      intervalMs: 200,
      message: `${count} records in ${fixture.topic}`,
    });
  } catch (error) {
    throw new Error(`${String(error)}\n--- relay output ---\n${relay.output().slice(-3000)}`, {
      cause: error,
    });
  }
  const records = await readTopic(kafkaBrokers, fixture.topic);
  return new Map(records.map((record) => [record.id, record]));
}

function expectPublishedExactly(records: Map<string, ReadRecord>, events: Written[]): void {
  for (const event of events) {
    const record = records.get(event.id);
    expect(record, event.id).toBeDefined();
    expect(record?.value === event.text, `payload of ${event.id}`).toBe(true);
  }
}

describe('large payloads through the relay', () => {
  const opened: { fixture: RelayFixture; relay?: RelayProcess }[] = [];
  afterEach(async () => {
    for (const { fixture, relay } of opened.splice(0)) {
      relay?.kill('SIGKILL');
      await relay?.exited();
      await fixture.close();
    }
  });

  /** A fixture of its own, closed (with its relay, once started) after the test. */
  async function fixtureFor(
    prefix: string,
  ): Promise<{ fixture: RelayFixture; relay?: RelayProcess }> {
    const entry = { fixture: await createRelayFixture(databaseUrl, prefix) };
    opened.push(entry);
    return entry;
  }

  it.each([
    ['by default (a batch holding a record over 64 KiB)', 'large_gzip', {}],
    [
      'with RELAY_COMPRESS_ABOVE_BYTES=0 (every batch)',
      'large_gzip_all',
      { RELAY_COMPRESS_ABOVE_BYTES: '0' },
    ],
  ])(
    'publishes 100 KB payloads gzip-compressed %s, and the small events after them',
    async (_, prefix, env) => {
      const entry = await fixtureFor(prefix);
      const { fixture } = entry;
      const large = await writeEvents(fixture.pool, 'large', [payload(100_000), payload(100_000)]);
      entry.relay = startRelay(fixture, kafkaBrokers, env);
      const mixed = await writeEvents(fixture.pool, 'mixed', [
        payload(200),
        payload(100_000),
        payload(200),
      ]);
      const small = await writeEvents(fixture.pool, 'small', [payload(200), payload(300)]);
      const events = [...large, ...mixed, ...small];
      const records = await recordsOnceDelivered(fixture, entry.relay, events.length);
      expect(records.size).toBe(events.length);
      expectPublishedExactly(records, events);
    },
  );

  it('pauses reading inside a transaction once RELAY_MAX_BUFFERED_BYTES wait, and publishes all of it', async () => {
    const entry = await fixtureFor('large_paused');
    const { fixture } = entry;
    // Each payload goes to a claim check, and the claim checks are locked: the first send waits
    // while the stream goes on, until the waiting payloads hold 1 MiB.
    const env = {
      RELAY_MAX_BUFFERED_BYTES: String(1024 * 1024),
      RELAY_MAX_RECORD_BYTES: '100000',
      LOG_LEVEL: 'debug',
    };
    const relay = startRelay(fixture, kafkaBrokers, env);
    entry.relay = relay;
    const first = await writeEvents(fixture.pool, 'first', [payload(200)]);
    await recordsOnceDelivered(fixture, relay, first.length);
    const lock = await fixture.pool.connect();
    try {
      await lock.query('BEGIN');
      await lock.query('LOCK TABLE sluice.claim_checks IN ACCESS EXCLUSIVE MODE');
      const large = await writeEvents(
        fixture.pool,
        'paused',
        Array.from({ length: 24 }, () => payload(300_000)),
      );
      await relay.waitForOutput('pausing WAL reads', {
        timeoutMs: 30_000,
        message: 'the relay to pause reading',
      });
      await lock.query('COMMIT');
      const small = await writeEvents(fixture.pool, 'after', [payload(200)]);
      const records = await recordsOnceDelivered(fixture, relay, large.length + 2);
      expectPublishedExactly(records, small);
      for (const event of large)
        expect(records.get(event.id)?.headers.ce_dataref).toBe(
          `urn:sluice:claim-check:${event.id}`,
        );
      const { rows } = await fixture.pool.query<{ same: number }>(
        `SELECT count(*)::int AS same FROM sluice.claim_checks c JOIN shop.outbox o ON o.id = c.event_id
          WHERE c.payload::text = o.payload::text`,
      );
      expect(rows[0]?.same).toBe(large.length);
    } finally {
      await lock.query('ROLLBACK');
      lock.release();
    }
  });

  it('stores a 2 MB payload over RELAY_MAX_RECORD_BYTES as a claim check, and publishes what follows', async () => {
    const entry = await fixtureFor('large_claim');
    const { fixture } = entry;
    entry.relay = startRelay(fixture, kafkaBrokers);
    const [huge] = await writeEvents(fixture.pool, 'huge', [payload(2_000_000)]);
    const after = await writeEvents(fixture.pool, 'after', [payload(100_000), payload(200)]);
    const records = await recordsOnceDelivered(fixture, entry.relay, 3);
    expect(huge).toBeDefined();
    const record = records.get(huge?.id ?? '');
    expect(record?.value).toBeNull();
    expect(record?.headers.ce_dataref).toBe(`urn:sluice:claim-check:${huge?.id ?? ''}`);
    const { rows } = await fixture.pool.query<{ text: string }>(
      'SELECT payload::text AS text FROM sluice.claim_checks WHERE event_id = $1',
      [huge?.id],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]?.text === huge?.text, 'the claim-checked payload').toBe(true);
    expectPublishedExactly(records, after);
  });

  it('publishes a 2 MB payload through Kafka onto a topic that allows 4 MiB records', async () => {
    const env = { RELAY_MAX_RECORD_BYTES: String(3 * 1024 * 1024) };
    const entry = await fixtureFor('large_kafka');
    const { fixture } = entry;
    // The broker refuses batches over 1 MiB unless the topic allows more; gzip cannot get this
    // payload under that.
    await createTopics(kafkaBrokers, [
      {
        topic: fixture.topic,
        numPartitions: 6,
        configEntries: [{ name: 'max.message.bytes', value: String(4 * 1024 * 1024) }],
      },
    ]);
    entry.relay = startRelay(fixture, kafkaBrokers, env);
    const huge = await writeEvents(fixture.pool, 'huge', [payload(2_000_000)]);
    const after = await writeEvents(fixture.pool, 'after', [payload(200), payload(300)]);
    const records = await recordsOnceDelivered(fixture, entry.relay, 3);
    expect(huge[0]?.text.length).toBeGreaterThan(2_000_000);
    expectPublishedExactly(records, [...huge, ...after]);
    expect(records.get(huge[0]?.id ?? '')?.headers.ce_dataref).toBeUndefined();
  });
});
