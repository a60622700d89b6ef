// A slot the relay did not create is taken as it is: the relay streams from its confirmed
// position and says, once, that outbox rows from before it are not its to publish.
import { Lsn } from '@sluice/relay';
import { testServers } from '@sluice/testkit';
import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import {
  awaitAllDelivered,
  createRelayFixture,
  exitCodeWithin,
  outboxIndex,
  readTopic,
  startRelay,
  writeOutboxEvents,
  type RelayFixture,
  type RelayProcess,
} from './harness.js';

const { databaseUrl, kafkaBrokers } = testServers();

/** The relay's log entry about adopting a slot, if it wrote one. */
function adoptionWarning(relay: RelayProcess): { level: string; msg: string } | undefined {
  const line = relay
    .output()
    .split('\n')
    .find((l) => l.includes('"msg":"Adopted replication slot '));
  return line === undefined ? undefined : (JSON.parse(line) as { level: string; msg: string });
}

let fixture: RelayFixture | undefined;
const relays: RelayProcess[] = [];

afterAll(async () => {
  for (const relay of relays) relay.kill('SIGKILL');
  await Promise.all(relays.map((relay) => relay.exited()));
  await fixture?.close();
});

it('adopts a slot it did not create with one warning naming its position and the outbox rows that may predate it', async () => {
  fixture = await createRelayFixture(databaseUrl, 'relay_adopt');
  const { pool, slot } = fixture;
  await pool.query(
    `CREATE PUBLICATION ${pg.escapeIdentifier(fixture.publication)} FOR TABLE shop.outbox WITH (publish = 'insert')`,
  );
  await writeOutboxEvents(pool, { aggregates: 10, perAggregate: 1 });
  const before = await outboxIndex(pool);
  const { rows } = await pool.query<{ lsn: string }>(
    `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`,
    [slot],
  );
  const position = Lsn.format(Lsn.parse(rows[0]?.lsn ?? ''));
  await writeOutboxEvents(pool, { aggregates: 10, perAggregate: 1 });

  const first = startRelay(fixture, kafkaBrokers);
  relays.push(first);
  // Only what was committed after the slot's position reaches Kafka.
  const outbox = await outboxIndex(pool);
  const after = new Map([...outbox].filter(([id]) => !before.has(id)));
  await awaitAllDelivered(kafkaBrokers, fixture, after, 30_000);
  const warning = adoptionWarning(first);
  expect(warning?.level, first.output()).toBe('warn');
  expect(warning?.msg).toContain(`"${slot}"`);
  expect(warning?.msg).toContain(position);
  expect(warning?.msg).toContain('20 rows of "shop"."outbox" may predate it');
  expect(warning?.msg).toContain(`pg_drop_replication_slot('${slot}')`);
  first.kill('SIGTERM');
  expect(await exitCodeWithin(first, 35_000)).toBe(0);
  const ids = (await readTopic(kafkaBrokers, fixture.topic)).map((record) => record.id);
  expect(ids.sort()).toEqual([...after.keys()].sort());

  // Registered at adoption: the next start streams on without a word about it.
  const second = startRelay(fixture, kafkaBrokers);
  relays.push(second);
  await writeOutboxEvents(pool, { aggregates: 10, perAggregate: 1 });
  const later = new Map([...(await outboxIndex(pool))].filter(([id]) => !before.has(id)));
  await awaitAllDelivered(kafkaBrokers, fixture, later, 30_000);
  expect(second.output()).toContain('"created":false,"msg":"replication prepared"');
  expect(adoptionWarning(second)).toBeUndefined();
  second.kill('SIGTERM');
  expect(await exitCodeWithin(second, 35_000)).toBe(0);
});
