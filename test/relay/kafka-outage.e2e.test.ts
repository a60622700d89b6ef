// The relay while its Kafka is down, on a Kafka of this file's own: readiness tells the truth
// once sends have failed for a while, and a stop ends within its grace period without
// acknowledging what was not published, so a later relay sends all of it.
import { createKafkaServer, type KafkaServer } from '@sluice/stack';
import { freePort, testServers, waitFor } from '@sluice/testkit';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
  type RelayFixture,
  type RelayProcess,
  hasLocalServers,
} from './harness.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { databaseUrl } = testServers();

describe.skipIf(!hasLocalServers())('relay during a Kafka outage', () => {
  let tempDir: string;
  let kafka: KafkaServer;
  let fixture: RelayFixture;
  const relays: RelayProcess[] = [];

  beforeAll(async () => {
    tempDir = await mkdtemp(join(tmpdir(), 'sluice-outage-'));
    const port = await freePort();
    let controllerPort = await freePort();
    while (controllerPort === port) controllerPort = await freePort();
    kafka = createKafkaServer({
      kafkaHome: join(rootDir, 'infra', 'kafka'),
      dataDir: join(tempDir, 'kafka'),
      port,
      controllerPort,
      heap: '512m',
    });
    [fixture] = await Promise.all([createRelayFixture(databaseUrl, 'relay_outage'), kafka.start()]);
  });

  afterAll(async () => {
    for (const relay of relays) relay.kill('SIGKILL');
    await Promise.all(relays.map((relay) => relay.exited()));
    await fixture.close();
    await kafka.stop({ kill: true });
    await rm(tempDir, { recursive: true, force: true });
  });

  it('reports stalled sends, stops within its grace period, and a later relay sends every event', async () => {
    const first = startRelay(fixture, kafka.brokers, {
      RELAY_STALLED_AFTER_MS: '2000',
      RELAY_STOP_TIMEOUT_MS: '3000',
    });
    relays.push(first);
    await first.waitForOutput('"msg":"initial snapshot published"', {
      timeoutMs: 30_000,
      message: 'the relay to stream',
    });
    await writeOutboxEvents(fixture.pool, { aggregates: 100, perAggregate: 1 });
    await waitFor(async () => (await topicSize(kafka.brokers, fixture.topic)) >= 100, {
      timeoutMs: 30_000,
      message: 'the first events in Kafka',
    });

    await kafka.stop({ kill: true });
    await writeOutboxEvents(fixture.pool, { aggregates: 100, perAggregate: 3 });
    const writtenAt = Date.now();
    const stalled = await waitFor(
      async () => {
        const state = await readiness(first);
        return state.code === 503 ? state : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, message: 'readiness to report the stalled sends' },
    );
    const readinessFailedMs = Date.now() - writtenAt;
    expect(stalled.body).toMatchObject({
      status: 'blocked',
      reason: 'stalled',
      topic: fixture.topic,
      event: { aggregateType: 'cart', aggregateVersion: 2 },
    });
    expect(stalled.body.error).toEqual(expect.any(String));
    expect(
      await metricValue(relayAddress(first), 'sluice_relay_publish_blocked{reason="stalled"}'),
    ).toBe(1);
    const logged = await waitFor(
      () => relayLogs(first).find((line) => line.level === 'error' && line.reason === 'stalled'),
      { timeoutMs: 30_000, message: 'an error log of the stalled sends' },
    );
    expect(logged).toMatchObject({ topic: fixture.topic, event: { aggregateVersion: 2 } });

    first.kill('SIGTERM');
    const stopRequestedAt = Date.now();
    const code = await first.exited();
    const stopMs = Date.now() - stopRequestedAt;
    expect(code, first.output()).toBe(0);
    expect(stopMs).toBeLessThan(10_000);
    const timedOut = relayLogs(first).find((line) =>
      String(line.msg).startsWith('stop grace period ended'),
    );
    expect(timedOut, first.output()).toMatchObject({ level: 'warn' });
    expect(timedOut?.unpublishedEvents).toEqual(expect.any(Number));
    expect(first.output()).toMatch(/"msg":"stopped"/);

    await kafka.start();
    const second = startRelay(fixture, kafka.brokers);
    relays.push(second);
    const outbox = await outboxIndex(fixture.pool);
    expect(outbox.size).toBe(400);
    // Read inside the wait: just after a broker starts its partitions may have no leader yet.
    let records: Awaited<ReturnType<typeof readTopic>> = [];
    await waitFor(
      async () => {
        records = await readTopic(kafka.brokers, fixture.topic);
        return new Set(records.map((r) => r.id)).size >= outbox.size;
      },
      { timeoutMs: 60_000, intervalMs: 500, message: 'every event in Kafka' },
    );
    const delivery = checkDelivery(outbox, records);
    console.log(JSON.stringify({ stopDuringOutage: { readinessFailedMs, stopMs, ...delivery } }));
    expect(delivery.missing).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    expect(delivery.orderViolations).toEqual([]);
    second.kill('SIGTERM');
    expect(await second.exited()).toBe(0);
  });
});
