// The reveal hook against real PostgreSQL and Kafka: a problem of the settings (a master key
// missing) fails the batch and retries it, a problem of one event sets that event aside. And
// two projections reading through one consumer group while one of them fails that way.
import { toKafkaRecord, type DomainEvent } from '@sluice/contracts';
import { createDatabase, migrate } from '@sluice/database';
import { SluiceError } from '@sluice/errors';
import {
  commitGroupOffsets,
  createTestDatabase,
  createTopicsWith,
  testKafka,
  testServers,
  uniqueName,
  waitFor,
  fakeOpen,
  fakeSeal,
} from '@sluice/testkit';
import type { TestDatabase } from '@sluice/testkit';
import { shopCatalog } from '@sluice/shop-catalog';
import { sql, type Kysely } from 'kysely';
import fc from 'fast-check';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createProjector,
  defineProjection,
  projectorMigrations,
  type BatchSql,
  type Projector,
  type Reveal,
} from './index.js';

const { databaseUrl, kafkaBrokers } = testServers();
const kafka = testKafka(kafkaBrokers);
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
let database: TestDatabase;
let db: Kysely<Record<string, never>>;
let running: Projector | undefined;

const people = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'reveal_people',
  aggregateTypes: ['customer'],
  personalData: 'reveal',
  tables: ['public.reveal_people'],
  async createTables(trx, table) {
    await sql`CREATE TABLE ${sql.table(table('public.reveal_people'))}
                (person_id text PRIMARY KEY, name text NOT NULL)`.execute(trx);
  },
  async apply(events, { trx, table }) {
    for (const event of events) {
      if (event.type !== 'customer.renamed.v1') continue;
      const { payload } = event;
      await sql`INSERT INTO ${sql.table(table('public.reveal_people'))} (person_id, name)
                VALUES (${payload.customerId}, ${payload.name})
                ON CONFLICT (person_id) DO UPDATE SET name = excluded.name`.execute(trx);
    }
  },
});

/** Counts customers' events as published: a projection that does not open personal fields. */
const tally = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'reveal_tally',
  aggregateTypes: ['customer'],
  tables: ['public.reveal_tally'],
  async createTables(trx, table) {
    await sql`CREATE TABLE ${sql.table(table('public.reveal_tally'))}
                (person_id text PRIMARY KEY, events int NOT NULL)`.execute(trx);
  },
  async apply(events, { trx, table }) {
    for (const event of events)
      await sql`INSERT INTO ${sql.table(table('public.reveal_tally'))} (person_id, events)
                VALUES (${event.aggregateId}, 1)
                ON CONFLICT (person_id) DO UPDATE SET events = reveal_tally_g1.events + 1`.execute(
        trx,
      );
  },
});

/** What the hook does: open names, or fail as a missing master key would. */
const hook = { masterKeyMissing: false, batches: new Set<BatchSql>() };
const reveal: Reveal = async (event, batch) => {
  hook.batches.add(batch);
  if (hook.masterKeyMissing)
    throw new SluiceError('master_key_unknown', 'wrapped by a master key not configured', {
      retriable: true,
    });
  const payload = event.payload as { customerId: string; name: string };
  const name = fakeOpen(payload.name);
  if (name === 'garbled')
    throw new SluiceError('envelope_invalid', 'A sealed field does not decrypt with its key');
  await batch.query('SELECT 1');
  return { ...event, payload: { ...payload, name } };
};

function named(personId: string, version: number, name: string): DomainEvent {
  return {
    id: randomUUID(),
    type: 'customer.renamed.v1',
    aggregateType: 'customer',
    aggregateId: personId,
    aggregateVersion: version,
    occurredAt: new Date().toISOString(),
    payload: { customerId: personId, name: fakeSeal(name) },
    metadata: {},
  };
}

async function start(
  prefix: string,
  projections = [people],
  consumerGroups: 'shared' | 'per-projection' = 'shared',
): Promise<Projector> {
  const projector = createProjector({
    db,
    kafka,
    projections,
    consumerGroups,
    topicPrefix: prefix,
    groupPrefix: `${prefix}g.`,
    retryDelayMs: 1,
    generationPollMs: 100,
    sessionTimeoutMs: 6000,
    stalledAfterMs: 1000,
    reveal,
  });
  await projector.start();
  running = projector;
  return projector;
}

async function produce(prefix: string, events: readonly DomainEvent[]): Promise<void> {
  const topic = `${prefix}outbox.event.customer`;
  const admin = kafka.admin();
  await admin.connect();
  try {
    await createTopicsWith(admin, [{ topic, numPartitions: 1 }]);
  } finally {
    await admin.disconnect();
  }
  const messages = events.map((event) => toKafkaRecord(event, { source: '/test' }));
  await producer.send({ topic, acks: -1, messages });
}

async function nameOf(personId: string): Promise<string | undefined> {
  const { rows } = await sql<{ name: string }>`
    SELECT name FROM public.reveal_people WHERE person_id = ${personId}`.execute(db);
  return rows[0]?.name;
}

async function parked(): Promise<{ reason: string; error: string | null }[]> {
  const { rows } = await sql<{ reason: string; error: string | null }>`
    SELECT reason, error FROM sluice.parked_events ORDER BY record_offset`.execute(db);
  return rows;
}

/** How many records a dead-letter topic holds (none when it does not exist). */
async function deadLetters(prefix: string): Promise<number> {
  const topic = `${prefix}sluice.dlq.reveal_people`;
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic)) return 0;
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, { high, low }) => sum + Number(high) - Number(low), 0);
  } finally {
    await admin.disconnect();
  }
}

/** The projector's health once it is not ready. */
function unready(projector: Projector) {
  return waitFor(
    async () => {
      const found = await projector.health();
      return found.ready ? undefined : found;
    },
    { timeoutMs: 30_000, message: 'readiness red' },
  );
}

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'reveal');
  db = createDatabase({ url: database.url, maxConnections: 6 });
  await migrate(db, 'projector_migrations', projectorMigrations);
  await producer.connect();
});

afterEach(async () => {
  await running?.stop();
  running = undefined;
  hook.masterKeyMissing = false;
  hook.batches.clear();
  await sql`DROP VIEW IF EXISTS public.reveal_people`.execute(db);
  await sql`DROP TABLE IF EXISTS public.reveal_people_g1`.execute(db);
  await sql`DROP VIEW IF EXISTS public.reveal_tally`.execute(db);
  await sql`DROP TABLE IF EXISTS public.reveal_tally_g1`.execute(db);
  await sql`TRUNCATE sluice.projection_generations, sluice.projection_checkpoints,
            sluice.projection_versions, sluice.parked_events`.execute(db);
});

afterAll(async () => {
  await producer.disconnect();
  await db.destroy();
  await database.drop();
});

describe('revealing personal fields', () => {
  it('fails the whole batch on a master key problem: nothing parked or dead-lettered, readiness names the code, then it applies', async () => {
    const prefix = `${uniqueName('reveal')}.`;
    const person = randomUUID();
    hook.masterKeyMissing = true;
    const projector = await start(prefix);
    await produce(prefix, [named(person, 1, 'Ada'), named(person, 2, 'Ada L.')]);
    const health = await unready(projector);
    expect(health.problems).toEqual([
      expect.objectContaining({
        code: 'stalled',
        detail: expect.stringContaining('(master_key_unknown)'),
      }),
    ]);
    expect(await parked()).toEqual([]);
    expect(await deadLetters(prefix)).toBe(0);
    expect(await nameOf(person)).toBeUndefined();
    hook.masterKeyMissing = false;
    await waitFor(async () => (await nameOf(person)) === 'Ada L.', {
      timeoutMs: 30_000,
      message: 'applied once the master key is there',
    });
    await waitFor(async () => (await projector.health()).ready, { message: 'ready again' });
    expect(await parked()).toEqual([]);
  });

  it.each(['shared', 'per-projection'] as const)(
    'holds back no other projection reading the same records (%s consumer groups): it applies while this one fails, and this one catches up',
    async (consumerGroups) => {
      const prefix = `${uniqueName('reveal')}.`;
      const people10 = Array.from({ length: 10 }, () => randomUUID());
      hook.masterKeyMissing = true;
      const projector = await start(prefix, [people, tally], consumerGroups);
      await produce(
        prefix,
        people10.map((person) => named(person, 1, 'Ada')),
      );
      const tallied = async () => {
        const { rows } = await sql<{ n: number }>`
        SELECT COALESCE(sum(events), 0)::int AS n FROM public.reveal_tally`.execute(db);
        return rows[0]?.n;
      };
      await waitFor(async () => (await tallied()) === 10, {
        message: 'the other projection applied',
      });
      const health = await unready(projector);
      expect(health.problems).toEqual([
        expect.objectContaining({ code: 'stalled', projection: 'reveal_people' }),
      ]);
      expect(await nameOf(people10[0] ?? '')).toBeUndefined();
      await produce(prefix, [named(people10[0] ?? '', 2, 'Ada L.')]);
      await waitFor(async () => (await tallied()) === 11, { message: 'the next one applied too' });
      hook.masterKeyMissing = false;
      await waitFor(async () => (await nameOf(people10[0] ?? '')) === 'Ada L.', {
        timeoutMs: 30_000,
        message: 'applied once the master key is there',
      });
      for (const person of people10) expect(await nameOf(person)).toBeDefined();
      await waitFor(async () => (await projector.health()).ready, { message: 'ready again' });
      expect(await tallied()).toBe(11);
      expect(await parked()).toEqual([]);
      expect(await projector.offsetGaps()).toEqual([]);
    },
  );

  it('switched to a shared consumer group, deletes the groups the projections read through before', async () => {
    const prefix = `${uniqueName('reveal')}.`;
    const person = randomUUID();
    await start(prefix, [people, tally], 'per-projection');
    await produce(prefix, [named(person, 1, 'Ada')]);
    await waitFor(async () => (await nameOf(person)) === 'Ada', { message: 'applied' });
    await running?.stop();
    const admin = kafka.admin();
    await admin.connect();
    try {
      const groups = async () =>
        (await admin.listGroups()).groups
          .map((g) => g.groupId)
          .filter((id) => id.startsWith(prefix))
          .sort();
      expect(await groups()).toEqual([`${prefix}g.reveal_people`, `${prefix}g.reveal_tally`]);
      await start(prefix, [people, tally]);
      await produce(prefix, [named(person, 2, 'Ada L.')]);
      await waitFor(async () => (await nameOf(person)) === 'Ada L.', { message: 'applied shared' });
      await waitFor(
        async () =>
          JSON.stringify(await groups()) ===
          JSON.stringify([`${prefix}g.reveal_people+reveal_tally`]),
        { message: 'only the shared group left' },
      );
    } finally {
      await admin.disconnect();
    }
  });

  // Generated: two projections share a consumer group; one of them fails whole batches for a
  // while (its master key missing), records arrive while the projector runs or not, it restarts,
  // and the group's offsets are reset to either end while it is stopped. Each applies every event
  // once, in order; no offset gap is recorded.
  it('keeps both projections exact through failures of one, restarts and offset resets (generated, seed printed on failure)', async () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant('produce' as const), people: fc.subarray([0, 1, 2, 3]) }),
      fc.record({ kind: fc.constantFrom('stop' as const, 'start' as const, 'key' as const) }),
      fc.record({
        kind: fc.constant('reset' as const),
        at: fc.constantFrom('earliest' as const, 'latest' as const),
      }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 6 }), async (steps) => {
        const prefix = `${uniqueName('reveal')}.`;
        const ids = [0, 1, 2, 3].map(() => randomUUID());
        const produced = ids.map(() => 0);
        const restart = () => (running === undefined ? start(prefix, [people, tally]) : running);
        await restart();
        for (const done of steps) {
          if (done.kind === 'produce') {
            const events = done.people.map((i) => {
              produced[i] = (produced[i] ?? 0) + 1;
              return named(ids[i] ?? '', produced[i] ?? 0, `v${produced[i]}`);
            });
            await produce(prefix, events);
          } else if (done.kind === 'key') hook.masterKeyMissing = !hook.masterKeyMissing;
          else if (done.kind === 'start') await restart();
          else {
            await running?.stop();
            running = undefined;
            if (done.kind === 'reset') {
              const topic = `${prefix}outbox.event.customer`;
              const group = `${prefix}g.reveal_people+reveal_tally`;
              await commitGroupOffsets(kafka, group, topic, done.at);
            }
          }
        }
        hook.masterKeyMissing = false;
        const projector = await restart();
        for (const [i, id] of ids.entries()) {
          const name = produced[i] === 0 ? undefined : `v${produced[i]}`;
          await waitFor(async () => (await nameOf(id)) === name, {
            timeoutMs: 30_000,
            message: `${name} for person ${i}`,
          });
        }
        const { rows } = await sql<{ person_id: string; events: number }>`
          SELECT person_id, events FROM public.reveal_tally WHERE person_id = ANY(${ids})`.execute(
          db,
        );
        const tallies = new Map(rows.map((row) => [row.person_id, row.events]));
        expect(ids.map((id) => tallies.get(id) ?? 0)).toEqual(produced);
        expect(await projector.offsetGaps()).toEqual([]);
        expect(await parked()).toEqual([]);
        await running?.stop();
        running = undefined;
      }),
      { numRuns: 4, endOnFailure: true },
    );
  }, 240_000);

  it('sets aside an event whose own data is wrong, with one sql per batch', async () => {
    const prefix = `${uniqueName('reveal')}.`;
    const [garbled, fine] = [randomUUID(), randomUUID()];
    await start(prefix);
    await produce(prefix, [named(garbled, 1, 'garbled'), named(fine, 1, 'Grace')]);
    await waitFor(async () => (await nameOf(fine)) === 'Grace', { message: 'the other applied' });
    await waitFor(async () => (await parked()).length > 0, { message: 'the garbled one parked' });
    expect(await parked()).toEqual([
      { reason: 'envelope_invalid', error: expect.stringContaining('does not decrypt') as unknown },
    ]);
    expect(await deadLetters(prefix)).toBe(1);
    expect(hook.batches.size).toBeLessThanOrEqual(2);
  });

  it('sets aside an event with a protected field in clear text: it does not match the published schema', async () => {
    const prefix = `${uniqueName('reveal')}.`;
    const [clear, fine] = [randomUUID(), randomUUID()];
    await start(prefix);
    const inClear = named(clear, 1, 'Ada');
    await produce(prefix, [
      { ...inClear, payload: { customerId: clear, name: 'Ada Lovelace' } },
      named(fine, 1, 'Grace'),
    ]);
    await waitFor(async () => (await nameOf(fine)) === 'Grace', { message: 'the other applied' });
    await waitFor(async () => (await parked()).length > 0, { message: 'the one in clear parked' });
    const [row] = await parked();
    expect(row).toEqual({
      reason: 'schema_invalid',
      error: expect.stringMatching(/^customer.renamed.v1: \/name must match pattern/) as unknown,
    });
    expect(row?.error).not.toContain('Ada');
    expect(await deadLetters(prefix)).toBe(1);
    expect(await nameOf(clear)).toBeUndefined();
  });
});
