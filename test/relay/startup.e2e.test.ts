// A relay started before the outbox exists keeps trying, and leads as soon as it does.
import { outboxMigrations } from '@sluice/outbox';
import { createDatabase, migrate } from '@sluice/database';
import { testServers, waitFor } from '@sluice/testkit';
import { afterAll, expect, it } from 'vitest';
import {
  createRelayFixture,
  startRelay,
  topicSize,
  writeOutboxEvents,
  type RelayFixture,
  type RelayProcess,
} from './harness.js';

const { databaseUrl, kafkaBrokers } = testServers();
let fixture: RelayFixture | undefined;
let relay: RelayProcess | undefined;

afterAll(async () => {
  relay?.kill('SIGKILL');
  await relay?.exited();
  await fixture?.close();
});

it('recovers leadership after a failed start and relays once the outbox exists', async () => {
  fixture = await createRelayFixture(databaseUrl, 'relay_startup', { migrate: false });
  relay = startRelay(fixture, kafkaBrokers);
  const current = relay;
  await current.waitForOutput('"msg":"relay failed; retrying"', {
    timeoutMs: 30_000,
    message: 'the relay to fail without an outbox',
  });
  const db = createDatabase<Record<string, never>>({
    url: fixture.database.url,
    maxConnections: 1,
  });
  await migrate(db, 'outbox_migrations', outboxMigrations({ schema: 'shop' }));
  await db.destroy();
  await writeOutboxEvents(fixture.pool, { aggregates: 50, perAggregate: 1 });
  const topic = fixture.topic;
  await waitFor(async () => (await topicSize(kafkaBrokers, topic)) >= 50, {
    timeoutMs: 60_000,
    message: '50 records',
  });
  expect((current.output().match(/"msg":"leading"/g) ?? []).length).toBeGreaterThanOrEqual(2);
  current.kill('SIGTERM');
  expect(await current.exited()).toBe(0);
});
