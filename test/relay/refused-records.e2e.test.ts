// Records Kafka refuses: one too large for its topic goes out as a claim check; one Kafka will
// never accept blocks the relay loudly (readiness, metric, error log naming the event), is never
// skipped, and goes out once the topic is fixed.
import { claimCheckRef } from '@sluice/outbox/claim-checks';
import { createTopicsWith, testKafka, testServers, waitFor } from '@sluice/testkit';
import { ConfigResourceTypes } from 'kafkajs';
import type pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';
import { metricValue } from '../support/services.js';
import {
  checkDelivery,
  createRelayFixture,
  outboxIndex,
  readTopic,
  readiness,
  relayAddress,
  relayLogs,
  startRelay,
  topicSize,
  writeOutboxEvents,
  type ReadRecord,
  type RelayFixture,
  type RelayProcess,
} from './harness.js';

const { databaseUrl, kafkaBrokers } = testServers();

/** A fixture of the current test's own, with one relay, killed and dropped when the test ends. */
async function useFixture(prefix: string): Promise<RelayFixture> {
  const fixture = await createRelayFixture(databaseUrl, prefix);
  onTestFinished(() => fixture.close());
  return fixture;
}

function useRelay(fixture: RelayFixture, env: Record<string, string> = {}): RelayProcess {
  const relay = startRelay(fixture, kafkaBrokers, env);
  onTestFinished(async () => {
    if (relay.child.exitCode === null && relay.child.signalCode === null) {
      relay.kill('SIGKILL');
      await relay.exited();
    }
  });
  return relay;
}

/** Creates `topic` with a per-topic record size limit, before any relay makes it. */
async function createLimitedTopic(topic: string, maxMessageBytes: number): Promise<void> {
  const admin = testKafka(kafkaBrokers).admin();
  await admin.connect();
  try {
    await createTopicsWith(admin, [
      {
        topic,
        numPartitions: 3,
        configEntries: [{ name: 'max.message.bytes', value: String(maxMessageBytes) }],
      },
    ]);
  } finally {
    await admin.disconnect();
  }
}

async function setMaxMessageBytes(topic: string, maxMessageBytes: number): Promise<void> {
  const admin = testKafka(kafkaBrokers).admin();
  await admin.connect();
  try {
    await admin.alterConfigs({
      validateOnly: false,
      resources: [
        {
          type: ConfigResourceTypes.TOPIC,
          name: topic,
          configEntries: [{ name: 'max.message.bytes', value: String(maxMessageBytes) }],
        },
      ],
    });
  } finally {
    await admin.disconnect();
  }
}

/** The id of the outbox row of an aggregate (one event each in these tests). */
async function eventIdOf(pool: pg.Pool, aggregateId: string): Promise<string> {
  const { rows } = await pool.query<{ id: string }>(
    'SELECT id FROM shop.outbox WHERE aggregate_id = $1',
    [aggregateId],
  );
  const id = rows[0]?.id;
  if (id === undefined) throw new Error(`no outbox row for ${aggregateId}`);
  return id;
}

/** Appends one event of another aggregate type (its own topic). */
async function writeProductEvent(pool: pg.Pool, n: number): Promise<void> {
  await pool.query(
    `INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload, metadata)
     VALUES (gen_random_uuid(), 'product', $1, 1, 'product.created.v1', $2::jsonb, '{}')`,
    [`product-${n}`, JSON.stringify({ n })],
  );
}

/** Every record of `topics` once every outbox id is among them. */
async function awaitEveryEvent(
  topics: readonly string[],
  outbox: Map<string, unknown>,
): Promise<ReadRecord[]> {
  let records: ReadRecord[] = [];
  await waitFor(
    async () => {
      const sizes = await Promise.all(topics.map((topic) => topicSize(kafkaBrokers, topic)));
      if (sizes.reduce((sum, size) => sum + size, 0) < outbox.size) return false;
      records = (await Promise.all(topics.map((topic) => readTopic(kafkaBrokers, topic)))).flat();
      const ids = new Set(records.map((r) => r.id));
      return [...outbox.keys()].every((id) => ids.has(id));
    },
    { timeoutMs: 60_000, intervalMs: 250, message: `all ${outbox.size} outbox events in Kafka` },
  );
  return records;
}

describe('records Kafka refuses', () => {
  it('sends a record too large for its topic as a claim check, with a warning, and moves on', async () => {
    const fixture = await useFixture('relay_topic_limit');
    await createLimitedTopic(fixture.topic, 20 * 1024);
    const relay = useRelay(fixture);
    await relay.waitForOutput('"msg":"initial snapshot published"', {
      timeoutMs: 30_000,
      message: 'the relay to stream',
    });
    await writeOutboxEvents(fixture.pool, { aggregates: 20, perAggregate: 1 });
    // 50 KB: under RELAY_MAX_RECORD_BYTES (900 KiB), over the topic's 20 KB.
    await writeOutboxEvents(fixture.pool, {
      aggregates: 1,
      perAggregate: 1,
      aggregateOffset: 100,
      payloadBytes: 50_000,
    });
    await writeOutboxEvents(fixture.pool, {
      aggregates: 20,
      perAggregate: 1,
      aggregateOffset: 200,
    });
    const bigId = await eventIdOf(fixture.pool, '000000000101');

    const outbox = await outboxIndex(fixture.pool);
    const records = await awaitEveryEvent([fixture.topic], outbox);
    const delivery = checkDelivery(outbox, records);
    expect(delivery.missing).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    expect(delivery.orderViolations).toEqual([]);

    const big = records.find((record) => record.id === bigId);
    expect(big?.value).toBeNull();
    expect(big?.headers.ce_dataref).toBe(claimCheckRef(bigId));
    expect(records.filter((record) => record.value === null)).toHaveLength(1);
    const { rows } = await fixture.pool.query<{ same: boolean }>(
      `SELECT c.payload = o.payload AS same
         FROM sluice.claim_checks c JOIN shop.outbox o ON o.id = c.event_id WHERE c.event_id = $1`,
      [bigId],
    );
    expect(rows).toEqual([{ same: true }]);

    const warning = relayLogs(relay).find(
      (line) => line.level === 'warn' && (line.event as { id?: string } | undefined)?.id === bigId,
    );
    expect(warning, relay.output()).toMatchObject({ topic: fixture.topic });
    expect(await readiness(relay)).toMatchObject({ code: 200, body: { status: 'leading' } });
  });

  it('blocks loudly on a record Kafka never accepts, publishes nothing past it, and recovers once the topic is fixed', async () => {
    const fixture = await useFixture('relay_refused');
    const productTopic = `${fixture.topicPrefix}outbox.event.product`;
    // Smaller than any record, a claim-checked one included.
    await createLimitedTopic(fixture.topic, 200);
    const relay = useRelay(fixture, { RELAY_BLOCKED_RETRY_MAX_MS: '1000' });
    await relay.waitForOutput('"msg":"initial snapshot published"', {
      timeoutMs: 30_000,
      message: 'the relay to stream',
    });
    await writeOutboxEvents(fixture.pool, { aggregates: 1, perAggregate: 1 });
    const refusedId = await eventIdOf(fixture.pool, '000000000001');
    // Later events, on the refused topic and on a topic that would take them.
    await writeOutboxEvents(fixture.pool, { aggregates: 10, perAggregate: 1, aggregateOffset: 10 });
    for (let n = 0; n < 5; n += 1) await writeProductEvent(fixture.pool, n);

    const blocked = await waitFor(
      async () => {
        const state = await readiness(relay);
        return state.code === 503 ? state : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, message: 'readiness to fail' },
    );
    expect(blocked.body).toMatchObject({
      status: 'blocked',
      reason: 'rejected',
      topic: fixture.topic,
      event: {
        id: refusedId,
        type: 'cart.item_added.v1',
        aggregateType: 'cart',
        aggregateId: '000000000001',
        aggregateVersion: 1,
      },
    });
    expect(JSON.stringify(blocked.body)).toMatch(/MESSAGE_TOO_LARGE|too large/i);
    const base = relayAddress(relay);
    expect(await metricValue(base, 'sluice_relay_publish_blocked{reason="rejected"}')).toBe(1);

    // It keeps retrying, slowly, and each time says so at error level, naming the event.
    const namingTheEvent = () =>
      relayLogs(relay).filter(
        (line) =>
          line.level === 'error' && (line.event as { id?: string } | undefined)?.id === refusedId,
      );
    await waitFor(() => namingTheEvent().length >= 3, {
      timeoutMs: 30_000,
      message: 'three error logs naming the refused event',
    });
    expect(namingTheEvent()[0]).toMatchObject({
      reason: 'rejected',
      topic: fixture.topic,
      event: { aggregateType: 'cart', aggregateId: '000000000001', aggregateVersion: 1 },
      blocked: expect.stringContaining(refusedId),
    });
    expect(await topicSize(kafkaBrokers, fixture.topic)).toBe(0);
    expect(await topicSize(kafkaBrokers, productTopic)).toBe(0);
    expect(relay.child.exitCode).toBeNull();
    expect(await readiness(relay)).toMatchObject({ code: 503 });
    const healthz = await fetch(`${base}/healthz`);
    expect(healthz.status).toBe(200);

    await setMaxMessageBytes(fixture.topic, 1024 * 1024);
    const outbox = await outboxIndex(fixture.pool);
    expect(outbox.size).toBe(16);
    const records = await awaitEveryEvent([fixture.topic, productTopic], outbox);
    const delivery = checkDelivery(outbox, records);
    expect(delivery.missing).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    expect(delivery.orderViolations).toEqual([]);
    await waitFor(async () => (await readiness(relay)).code === 200, {
      timeoutMs: 10_000,
      message: 'readiness to recover',
    });
    expect(await readiness(relay)).toMatchObject({ body: { status: 'leading' } });
    expect(await metricValue(base, 'sluice_relay_publish_blocked{reason="rejected"}')).toBe(0);
  });
});
