// The projector at the edges, against real PostgreSQL and Kafka: hostile records, dead letters
// larger than the broker takes, handler retries that hold no lock, topics recreated or
// truncated under a checkpoint, rebuilds over a truncated topic, and skipping exactly one record.
import { toKafkaRecord, type DomainEvent } from '@sluice/contracts';
import { createDatabase, migrate } from '@sluice/database';
import {
  commitGroupOffsets,
  createTestDatabase,
  createTopicsWith,
  rawProduce,
  readRecords,
  testKafka,
  testServers,
  uniqueName,
  waitFor,
  waitForTopicLeaders,
  type TestDatabase,
} from '@sluice/testkit';
import type { Kafka, Message } from 'kafkajs';
import { shopCatalog } from '@sluice/shop-catalog';
import { sql, type Kysely } from 'kysely';
import fc from 'fast-check';
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createProjector,
  defineProjection,
  projectorMigrations,
  type OffsetNotice,
  type Projector,
} from './index.js';

const { databaseUrl, kafkaBrokers } = testServers();
const kafka = testKafka(kafkaBrokers);
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
let database: TestDatabase;
let db: Kysely<Record<string, never>>;
let running: Projector | undefined;
const notices: OffsetNotice[] = [];

/** Carts whose handler throws while their count is above zero (a failure per attempt). */
const failuresLeft = new Map<string, number>();
/** Carts whose handler throws for good. */
const explosive = new Set<string>();
let handlerFailures = 0;

const carts = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'edge_carts',
  aggregateTypes: ['cart'],
  tables: ['public.edge_applied'],
  async createTables(trx, table) {
    await sql`CREATE TABLE ${sql.table(table('public.edge_applied'))}
                (event_id uuid PRIMARY KEY, cart_id text NOT NULL, version bigint NOT NULL)`.execute(
      trx,
    );
  },
  async apply(events, { trx, table }) {
    for (const event of events) {
      const left = failuresLeft.get(event.aggregateId) ?? 0;
      if (explosive.has(event.aggregateId) || left > 0) {
        failuresLeft.set(event.aggregateId, left - 1);
        handlerFailures += 1;
        throw new Error(`cannot project cart ${event.aggregateId}`);
      }
      // A second application of one event would violate the key.
      await sql`INSERT INTO ${sql.table(table('public.edge_applied'))} (event_id, cart_id, version)
                VALUES (${event.id}::uuid, ${event.aggregateId}, ${event.aggregateVersion})`.execute(
        trx,
      );
    }
  },
});

function added(cartId: string, version: number): DomainEvent {
  return {
    id: randomUUID(),
    type: 'cart.item_added.v1',
    aggregateType: 'cart',
    aggregateId: cartId,
    aggregateVersion: version,
    occurredAt: new Date().toISOString(),
    payload: { cartId, productId: randomUUID(), quantity: 1, unitPriceCents: 100 },
    metadata: {},
  };
}

const record = (event: DomainEvent): Message => toKafkaRecord(event, { source: '/test' });

/** A topic of its own, one partition unless asked, so offsets are known. */
async function freshTopic(numPartitions = 1): Promise<{ prefix: string; topic: string }> {
  const prefix = `${uniqueName('edge')}.`;
  const topic = `${prefix}outbox.event.cart`;
  const admin = kafka.admin();
  await admin.connect();
  try {
    await createTopicsWith(admin, [{ topic, numPartitions }]);
  } finally {
    await admin.disconnect();
  }
  return { prefix, topic };
}

async function produce(topic: string, messages: Message[]): Promise<void> {
  await producer.send({ topic, acks: -1, messages });
}

async function start(
  prefix: string,
  extra: { retryDelayMs?: number; stalledAfterMs?: number; kafka?: Kafka } = {},
): Promise<Projector> {
  const projector = createProjector({
    db,
    kafka: extra.kafka ?? kafka,
    projections: [carts],
    topicPrefix: prefix,
    groupPrefix: `${prefix}g.`,
    retryDelayMs: extra.retryDelayMs ?? 1,
    generationPollMs: 100,
    sessionTimeoutMs: 6000,
    ...(extra.stalledAfterMs === undefined ? {} : { stalledAfterMs: extra.stalledAfterMs }),
    hooks: { offsets: (_projection, _generation, notice) => notices.push(notice) },
  });
  await projector.start();
  running = projector;
  return projector;
}

/** The problems `projector` reports once it is not ready. */
async function unready(projector: Projector, message: string) {
  const health = await waitFor(
    async () => {
      const now = await projector.health();
      return now.ready ? undefined : now;
    },
    { timeoutMs: 20_000, message },
  );
  return health.problems;
}

/** A client of the test Kafka that reads no answer while frozen: a broker that does not answer. */
function freezableKafka() {
  const sockets = new Set<net.Socket>();
  let frozen = false;
  const client = testKafka(kafkaBrokers, uniqueName('frozen'), {
    socketFactory: ({ host, port, onConnect }) => {
      const socket = net.connect({ host, port }, onConnect);
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      if (frozen) socket.pause();
      return socket;
    },
  });
  const each = (change: (socket: net.Socket) => void) => {
    for (const socket of sockets) change(socket);
  };
  return {
    kafka: client,
    freeze: () => {
      frozen = true;
      each((socket) => socket.pause());
    },
    thaw: () => {
      frozen = false;
      each((socket) => socket.resume());
    },
  };
}

/** Deletes a one-partition topic's records below `offset`: its log start moves there. */
async function deleteRecordsBefore(topic: string, offset: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.fetchTopicMetadata({ topics: [topic] });
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset }] });
  } finally {
    await admin.disconnect();
  }
}

async function versionOf(cartId: string): Promise<number> {
  const { rows } = await sql<{ v: number }>`
    SELECT max(version)::int AS v FROM edge_applied WHERE cart_id = ${cartId}`.execute(db);
  return rows[0]?.v ?? 0;
}

const appliedVersion = (cartId: string, version: number, message: string) =>
  waitFor(async () => (await versionOf(cartId)) >= version, { timeoutMs: 30_000, message });

async function parkedOf(cartId: string) {
  const { rows } = await sql<{ version: number | null; reason: string }>`
    SELECT aggregate_version::int AS version, reason FROM sluice.parked_events
     WHERE aggregate_id = ${cartId} ORDER BY record_offset`.execute(db);
  return rows;
}

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'edges');
  db = createDatabase({ url: database.url, maxConnections: 6 });
  await migrate(db, 'projector_migrations', projectorMigrations);
  await producer.connect();
});

async function stopRunning(): Promise<void> {
  const projector = running;
  running = undefined;
  await projector?.stop();
}

afterEach(async () => {
  await stopRunning();
  // Each test starts a first generation afresh on topics of its own.
  await sql`DROP VIEW IF EXISTS public.edge_applied`.execute(db);
  await sql`DROP TABLE IF EXISTS public.edge_applied_g1, public.edge_applied_g2`.execute(db);
  await sql`TRUNCATE sluice.projection_generations, sluice.projection_checkpoints, sluice.projection_versions,
            sluice.parked_events, sluice.projection_offset_gaps`.execute(db);
});

afterAll(async () => {
  await producer.disconnect();
  await db.destroy();
  await database.drop();
});

describe('projector at the edges', () => {
  it('dead-letters and parks hostile records (null header, bad time, NUL bytes) and the partition flows on', async () => {
    const { prefix, topic } = await freshTopic();
    await start(prefix);
    const [nullHeader, badTime, nulValue, nulHeader, nulKey, escapedNul, good] = Array.from(
      { length: 7 },
      () => randomUUID(),
    ) as [string, string, string, string, string, string, string];
    const withNullHeader = record(added(nullHeader, 1));
    const withBadTime = record(added(badTime, 1));
    const withNulValue = record(added(nulValue, 1));
    const withNulHeader = record(added(nulHeader, 1));
    const withNulKey = record(added(nulKey, 1));
    // Kafka allows a null header value; kafkajs cannot write one.
    await rawProduce(kafka, topic, 0, [
      {
        key: withNullHeader.key ?? null,
        value: withNullHeader.value ?? null,
        headers: [
          ...Object.entries(withNullHeader.headers as Record<string, string>),
          ['ce_traceparent', null],
        ],
      },
    ]);
    await produce(topic, [
      { ...withBadTime, headers: { ...withBadTime.headers, ce_time: 'yesterday' } },
      { ...withNulValue, value: Buffer.from('{"cartId":"\u0000"}') },
      { ...withNulHeader, headers: { ...withNulHeader.headers, ce_actor: 'a\u0000b' } },
      { ...withNulKey, key: `${nulKey}\u0000` },
      { ...record(added(escapedNul, 1)), value: '{"cartId":"\\u0000"}' },
      record(added(good, 1)),
    ]);
    await appliedVersion(good, 1, 'the good cart behind the hostile records');
    // The null header is only dropped: the rest of the record is a valid event.
    await appliedVersion(nullHeader, 1, 'the record with a null header');
    const { rows } = await sql<{ reason: string; value: Buffer | null; key: Buffer | null }>`
      SELECT reason, record_value AS value, record_key AS key FROM sluice.parked_events
       ORDER BY record_offset`.execute(db);
    expect(rows.map((r) => r.reason)).toEqual(Array.from({ length: 5 }, () => 'record_malformed'));
    // Kept as Kafka holds them: bytes a text column refuses.
    expect(rows[1]?.value?.toString()).toBe('{"cartId":"\u0000"}');
    expect(rows[3]?.key?.toString()).toBe(`${nulKey}\u0000`);
    const letters = await readRecords(kafka, `${prefix}sluice.dlq.edge_carts`, 5);
    const nulLetter = letters.find((l) => String(l.headers.ce_actor ?? '').includes('\u0000'));
    expect(nulLetter?.headers.sluice_error_class?.toString()).toBe('record_malformed');
    expect((await running?.health())?.ready).toBe(true);
  });

  it('dead-letters a batch of poison larger than the broker takes in one request', async () => {
    const { prefix, topic } = await freshTopic();
    const big = 'x'.repeat(300 * 1024);
    const poison = Array.from({ length: 8 }, () => {
      const base = record(added(randomUUID(), 1));
      return { ...base, value: `{not json ${big}` };
    });
    // Three per request (the broker takes 1 MiB a request); one fetch hands the projector all.
    for (let i = 0; i < poison.length; i += 3) await produce(topic, poison.slice(i, i + 3));
    const good = randomUUID();
    await produce(topic, [record(added(good, 1))]);
    await start(prefix);
    await appliedVersion(good, 1, 'the good cart behind 2.4 MB of poison');
    const letters = await readRecords(kafka, `${prefix}sluice.dlq.edge_carts`, 8);
    expect(
      letters.every((l) => l.headers.sluice_error_class?.toString() === 'record_malformed'),
    ).toBe(true);
  });

  it('waits between handler attempts outside the transaction, holding no checkpoint lock', async () => {
    const { prefix, topic } = await freshTopic();
    await start(prefix, { retryDelayMs: 1500 });
    const cart = randomUUID();
    failuresLeft.set(cart, 2);
    const failedBefore = handlerFailures;
    await produce(topic, [record(added(cart, 1))]);
    await waitFor(() => handlerFailures > failedBefore + 1, {
      timeoutMs: 30_000,
      message: 'a failed attempt',
    });
    // Between attempts another session can take the partition's checkpoint at once.
    await db.transaction().execute(async (trx) => {
      await sql`SELECT 1 FROM sluice.projection_checkpoints WHERE topic = ${topic} FOR UPDATE NOWAIT`.execute(
        trx,
      );
    });
    await appliedVersion(cart, 1, 'the third attempt');
    expect(await parkedOf(cart)).toEqual([]);
  });

  it('is stalled while a batch waits on a lock held elsewhere, and applies once it is released', async () => {
    const { prefix, topic } = await freshTopic();
    const projector = await start(prefix, { stalledAfterMs: 3000 });
    const cart = randomUUID();
    await produce(topic, [record(added(cart, 1))]);
    await appliedVersion(cart, 1, 'the first event applied');
    const locker = new pg.Client({ connectionString: database.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE public.edge_applied_g1 IN ACCESS EXCLUSIVE MODE');
      await produce(topic, [record(added(cart, 2))]);
      expect(await unready(projector, 'the projector to say a batch is stuck')).toEqual([
        expect.objectContaining({
          code: 'stalled',
          projection: 'edge_carts',
          detail: expect.stringMatching(
            /^A batch of edge_carts generation 1 has been applying for/,
          ),
        }),
      ]);
      await locker.query('COMMIT');
    } finally {
      await locker.end();
    }
    await appliedVersion(cart, 2, 'the second event applied once the lock is released');
    await waitFor(async () => (await projector.health()).ready, { message: 'ready again' });
  });

  it('is stalled while Kafka does not answer its fetches, and ready again once it does', async () => {
    const { prefix, topic } = await freshTopic();
    const frozen = freezableKafka();
    const projector = await start(prefix, { stalledAfterMs: 3000, kafka: frozen.kafka });
    const cart = randomUUID();
    await produce(topic, [record(added(cart, 1))]);
    await appliedVersion(cart, 1, 'the first event applied');
    await waitFor(async () => (await projector.health()).ready, { message: 'ready' });
    frozen.freeze();
    try {
      expect(await unready(projector, 'the projector to say Kafka does not answer')).toEqual([
        expect.objectContaining({
          code: 'stalled',
          projection: 'edge_carts',
          detail: expect.stringMatching(
            /^Kafka has not answered the fetches of edge_carts generation 1 for \d+ s$/,
          ),
        }),
      ]);
    } finally {
      frozen.thaw();
    }
    await produce(topic, [record(added(cart, 2))]);
    await appliedVersion(cart, 2, 'the next event applied once Kafka answers');
    await waitFor(async () => (await projector.health()).ready, { message: 'ready again' });
  });

  it('applies events a recreated topic holds below the old checkpoint, with fewer or more records than before', async () => {
    for (const recordsAfter of [2, 9]) {
      const { prefix, topic } = await freshTopic();
      const cart = randomUUID();
      await produce(
        topic,
        [1, 2, 3, 4, 5, 6].map((v) => record(added(cart, v))),
      );
      await start(prefix);
      await appliedVersion(cart, 6, 'six versions');
      await stopRunning();
      const admin = kafka.admin();
      await admin.connect();
      try {
        await admin.deleteTopics({ topics: [topic] });
        await waitFor(async () => !(await admin.listTopics()).includes(topic), {
          timeoutMs: 30_000,
          message: 'the topic deleted',
        });
        await waitFor(
          () =>
            admin
              .createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: false })
              .then(() => true),
          { timeoutMs: 30_000, message: 'the topic created again' },
        );
        await waitForTopicLeaders(admin, [topic]);
      } finally {
        await admin.disconnect();
      }
      // The relay publishes the cart's later versions (and old ones again) into the new topic.
      const others = Array.from({ length: recordsAfter - 2 }, () => record(added(randomUUID(), 1)));
      await produce(topic, [record(added(cart, 6)), record(added(cart, 7)), ...others]);
      await start(prefix);
      await appliedVersion(
        cart,
        7,
        `version 7 at offset 1 of the recreated topic (${recordsAfter} records)`,
      );
      const { rows } = await sql<{
        n: number;
      }>`SELECT count(*)::int AS n FROM edge_applied`.execute(db);
      expect(rows[0]?.n).toBe(7 + others.length);
      await stopRunning();
      await sql`DROP VIEW public.edge_applied; DROP TABLE public.edge_applied_g1;
                TRUNCATE sluice.projection_generations, sluice.projection_checkpoints, sluice.projection_versions`.execute(
        db,
      );
    }
  });

  it('records a gap when the log start moved past the checkpoint, is unready until it is accepted, and goes on', async () => {
    const { prefix, topic } = await freshTopic();
    const first = randomUUID();
    await produce(
      topic,
      [1, 2, 3].map((v) => record(added(first, v))),
    );
    let projector = await start(prefix);
    await appliedVersion(first, 3, 'three versions');
    await stopRunning();
    // Offsets 3..9 arrive while the projector is down; 3..6 are deleted before it returns.
    const lost = randomUUID();
    const later = Array.from({ length: 3 }, () => randomUUID());
    await produce(
      topic,
      [1, 2, 3, 4].map((v) => record(added(lost, v))),
    );
    await produce(
      topic,
      later.map((cart) => record(added(cart, 1))),
    );
    await deleteRecordsBefore(topic, '7');
    projector = await start(prefix);
    for (const cart of later) await appliedVersion(cart, 1, 'a record after the deleted ones');
    expect(await versionOf(lost)).toBe(0);
    expect(notices).toContainEqual({ kind: 'gap', topic, partition: 0, from: 3n, to: 7n });
    const gaps = await projector.offsetGaps('edge_carts');
    expect(gaps).toMatchObject([
      { topic, partition: 0, fromOffset: '3', toOffset: '7', acceptedAt: null },
    ]);
    const health = await projector.health();
    expect(health.ready).toBe(false);
    expect(health.problems.map((p) => p.code)).toEqual(['offset_gap']);
    expect(
      await projector.acceptOffsetGaps('edge_carts', { actor: 'ops', reason: 'retention' }),
    ).toBe(1);
    expect((await projector.health()).ready).toBe(true);
    const { rows } = await sql<{ actor: string; action: string }>`
      SELECT actor, action FROM sluice.operator_audit ORDER BY id DESC LIMIT 1`.execute(db);
    expect(rows[0]).toEqual({ actor: 'ops', action: 'accept_offset_gaps' });

    // A rebuild over the truncated topic starts at its log start rather than looping, holds
    // back its swap while its own gap is unaccepted, and can be cancelled.
    const rebuild = await projector.rebuild('edge_carts');
    await waitFor(
      async () => (await projector.generations('edge_carts')).rebuild?.unacceptedOffsetGaps === 1,
      { timeoutMs: 30_000, message: "the rebuild's gap at the log start" },
    );
    await waitFor(
      async () => {
        const { rows: applied } = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM edge_applied_g2`.execute(db);
        return applied[0]?.n === 3;
      },
      { timeoutMs: 30_000, message: 'the rebuild applied what Kafka holds' },
    );
    const { generations } = await projector.generations('edge_carts');
    expect(generations.find((g) => g.generation === rebuild.generation)?.state).toBe('building');
    const cancelled = await projector.cancelRebuild('edge_carts', { actor: 'ops' });
    expect(cancelled).toMatchObject({ generation: 2, state: 'cancelled' });
    await expect(projector.cancelRebuild('edge_carts')).rejects.toMatchObject({
      code: 'rebuild_not_running',
    });
    expect((await projector.generations('edge_carts')).rebuild).toBeUndefined();
  });

  it('reports a consumer kafkajs gave up on: the crashed hook fires and it is not ready', async () => {
    const { prefix, topic } = await freshTopic();
    // A fault past every guard: kafkajs stops a consumer for good on a TypeError.
    const breaking = Object.create(kafka) as Kafka;
    breaking.consumer = (config) => {
      const consumer = kafka.consumer(config);
      const run = consumer.run.bind(consumer);
      consumer.run = (settings) =>
        run({
          ...settings,
          eachBatch: () => Promise.reject(new TypeError('a bug past every guard')),
        });
      return consumer;
    };
    const crashes: string[] = [];
    const projector = createProjector({
      db,
      kafka: breaking,
      projections: [carts],
      topicPrefix: prefix,
      groupPrefix: `${prefix}g.`,
      hooks: {
        crashed: (projection, _generation, error) =>
          crashes.push(`${projection}: ${String(error)}`),
      },
    });
    await projector.start();
    running = projector;
    expect((await projector.health()).ready).toBe(true);
    await produce(topic, [record(added(randomUUID(), 1))]);
    await waitFor(() => crashes.length > 0, { timeoutMs: 30_000, message: 'the crash reported' });
    expect(crashes[0]).toContain('edge_carts');
    const health = await projector.health();
    expect(health.ready).toBe(false);
    expect(health.problems).toMatchObject([{ code: 'consumer_stopped', projection: 'edge_carts' }]);
  });

  // A process that died with batches in hand, or an operator who reset the group, can leave Kafka's
  // committed offset past records of a partition the projection never applied: it has no
  // checkpoint, and nothing new may ever arrive there to show the difference.
  it('applies what a partition without a checkpoint holds, though Kafka committed offsets past it', async () => {
    const { prefix, topic } = await freshTopic();
    const cart = randomUUID();
    await produce(
      topic,
      [1, 2].map((v) => record(added(cart, v))),
    );
    await commitGroupOffsets(kafka, `${prefix}g.edge_carts`, topic, 'latest');
    await start(prefix);
    await appliedVersion(cart, 2, 'the records below the committed offset');
    expect(notices.filter((n) => n.topic === topic)).toEqual([]);
  });

  it('records a gap where such a partition’s log start moved, and applies what it still holds', async () => {
    const { prefix, topic } = await freshTopic();
    const [lost, kept] = [randomUUID(), randomUUID()];
    await produce(topic, [record(added(lost, 1)), record(added(kept, 1)), record(added(kept, 2))]);
    await deleteRecordsBefore(topic, '1');
    await commitGroupOffsets(kafka, `${prefix}g.edge_carts`, topic, 'latest');
    await start(prefix);
    await appliedVersion(kept, 2, 'the records past the log start');
    expect(await versionOf(lost)).toBe(0);
    expect(notices.filter((n) => n.topic === topic)).toEqual([
      { kind: 'gap', topic, partition: 0, from: 0n, to: 1n },
    ]);
  });

  // Generated: records produced while the projector runs or not, restarts, and the group's
  // offsets reset to either end while it is stopped; every event applies once, in order.
  it('applies every event once whatever the restarts and offset resets (generated, seed printed on failure)', async () => {
    const step = fc.oneof(
      {
        weight: 3,
        arbitrary: fc.record({
          kind: fc.constant('produce' as const),
          carts: fc.subarray([0, 1, 2, 3, 4], { minLength: 1 }),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({ kind: fc.constantFrom('stop' as const, 'start' as const) }),
      },
      {
        weight: 2,
        arbitrary: fc.record({
          kind: fc.constant('reset' as const),
          at: fc.constantFrom('earliest' as const, 'latest' as const),
        }),
      },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 5 }), async (steps) => {
        const { prefix, topic } = await freshTopic(3);
        const cartIds = [0, 1, 2, 3, 4].map(() => randomUUID());
        const produced = cartIds.map(() => 0);
        for (const done of steps) {
          if (done.kind === 'produce') {
            const events = done.carts.map((i) =>
              added(cartIds[i] ?? '', (produced[i] = (produced[i] ?? 0) + 1)),
            );
            await produce(topic, events.map(record));
          } else if (done.kind === 'start') {
            if (running === undefined) await start(prefix);
          } else {
            await stopRunning();
            if (done.kind === 'reset')
              await commitGroupOffsets(kafka, `${prefix}g.edge_carts`, topic, done.at);
          }
        }
        if (running === undefined) await start(prefix);
        for (const [i, cart] of cartIds.entries())
          await appliedVersion(cart, produced[i] ?? 0, `version ${produced[i]} of cart ${i}`);
        await stopRunning();
        const { rows } = await sql<{ cart_id: string; versions: number[] }>`
          SELECT cart_id, array_agg(version::int ORDER BY version) AS versions FROM edge_applied
           WHERE cart_id = ANY(${cartIds}) GROUP BY cart_id`.execute(db);
        const applied = new Map(rows.map((r) => [r.cart_id, r.versions]));
        expect(cartIds.map((cart) => applied.get(cart) ?? [])).toEqual(
          produced.map((n) => Array.from({ length: n }, (_, v) => v + 1)),
        );
        expect(notices.filter((n) => n.topic === topic)).toEqual([]);
      }),
      { numRuns: 4, endOnFailure: true },
    );
  }, 240_000);

  it('skips exactly the record named; what waited behind it applies in order; a gap is accepted explicitly', async () => {
    const { prefix, topic } = await freshTopic();
    const projector = await start(prefix);
    const cart = randomUUID();
    explosive.add(cart);
    await produce(
      topic,
      [1, 2, 3].map((v) => record(added(cart, v))),
    );
    await waitFor(async () => (await parkedOf(cart)).length === 3, {
      timeoutMs: 30_000,
      message: 'three parked',
    });
    const offsetOf = async (version: number) => {
      const { rows } = await sql<{ offset: string }>`
        SELECT record_offset::text AS offset FROM sluice.parked_events
         WHERE aggregate_id = ${cart} AND aggregate_version = ${version}`.execute(db);
      return rows[0]?.offset ?? '';
    };
    const skipped = await projector.skip(
      'edge_carts',
      { topic, partition: 0, offset: await offsetOf(3) },
      { actor: 'ops', reason: 'v3 is wrong' },
    );
    expect(await parkedOf(cart)).toEqual([
      { version: 1, reason: 'handler_failed' },
      { version: 2, reason: 'behind_parked' },
      { version: 3, reason: 'skipped' },
    ]);
    expect(skipped?.result.applied).toBe(0);
    explosive.delete(cart);
    await produce(topic, [record(added(cart, 4))]);
    await waitFor(async () => (await parkedOf(cart)).length === 4, {
      timeoutMs: 30_000,
      message: 'v4 parked behind',
    });
    const redriven = await projector.redrive('edge_carts', { type: 'cart', id: cart });
    expect(redriven.result).toMatchObject({ applied: 3, skipped: 1 });
    expect(redriven.stillParked).toBe(0);
    const { rows } = await sql<{ version: number }>`
      SELECT version::int FROM edge_applied WHERE cart_id = ${cart} ORDER BY version`.execute(db);
    expect(rows.map((r) => r.version)).toEqual([1, 2, 4]);

    // An undecodable record stands where version 2 would be: skipping it leaves a real gap.
    const other = randomUUID();
    const garbage = record(added(other, 2));
    await produce(topic, [
      record(added(other, 1)),
      { ...garbage, value: '{not json' },
      record(added(other, 3)),
    ]);
    await waitFor(async () => (await parkedOf(other)).length === 2, {
      timeoutMs: 30_000,
      message: 'garbage parked',
    });
    const { rows: garbageRow } = await sql<{ offset: string }>`
      SELECT record_offset::text AS offset FROM sluice.parked_events
       WHERE aggregate_id = ${other} AND aggregate_version IS NULL`.execute(db);
    const afterSkip = await projector.skip('edge_carts', {
      topic,
      partition: 0,
      offset: garbageRow[0]?.offset ?? '',
    });
    expect(afterSkip?.gap).toEqual({
      aggregateType: 'cart',
      aggregateId: other,
      expectedVersion: 2,
      nextParkedVersion: 3,
    });
    expect(await versionOf(other)).toBe(1);
    await expect(
      projector.acceptVersionGap('edge_carts', { type: 'cart', id: cart }),
    ).rejects.toMatchObject({
      code: 'no_version_gap',
    });
    const accepted = await projector.acceptVersionGap(
      'edge_carts',
      { type: 'cart', id: other },
      { actor: 'ops' },
    );
    expect(accepted.accepted).toEqual({ from: 2, to: 2 });
    expect(accepted.result.applied).toBe(1);
    expect(await versionOf(other)).toBe(3);
    const { rows: audited } = await sql<{ action: string }>`
      SELECT action FROM sluice.operator_audit WHERE projection = 'edge_carts' ORDER BY id`.execute(
      db,
    );
    expect(audited.map((r) => r.action)).toEqual(
      expect.arrayContaining(['skip', 'redrive', 'accept_version_gap']),
    );
  });
});
