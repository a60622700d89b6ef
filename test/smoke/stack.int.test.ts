// Proves the servers under the test run are real: PostgreSQL streams committed inserts through a
// pgoutput slot, Kafka carries a keyed record through a consumer group.
import {
  createTestDatabase,
  createTopics,
  testKafka,
  testServers,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const { databaseUrl, kafkaBrokers } = testServers();

describe('PostgreSQL', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase(databaseUrl, 'smoke');
  });
  afterAll(() => db.drop());

  it('runs with wal_level = logical', async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const { rows } = await client.query<{ wal_level: string }>('SHOW wal_level');
    await client.end();
    expect(rows[0]?.wal_level).toBe('logical');
  });

  it('streams a committed insert through a pgoutput slot', async () => {
    const slot = uniqueName('smoke_slot');
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    await client.query('CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)');
    await client.query('CREATE PUBLICATION smoke_pub FOR TABLE notes');
    await client.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
    await client.query("INSERT INTO notes VALUES (1, 'hello from the WAL')");

    const inserts: Pgoutput.MessageInsert[] = [];
    const service = new LogicalReplicationService(
      { connectionString: db.url },
      { acknowledge: { auto: false, timeoutSeconds: 0 } },
    );
    service.on('data', (_lsn: string, message: Pgoutput.Message) => {
      if (message.tag === 'insert') inserts.push(message);
    });
    service.on('error', () => undefined);
    void service
      .subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: ['smoke_pub'] }), slot)
      .catch(() => undefined);
    try {
      const insert = await waitFor(() => inserts[0], { timeoutMs: 15_000, message: 'the insert' });
      expect(insert.relation.name).toBe('notes');
      expect(insert.new).toEqual({ id: 1, body: 'hello from the WAL' });
    } finally {
      await service.stop();
      await client.end();
    }
  });
});

describe('Kafka', () => {
  it('carries a keyed record through a consumer group', async () => {
    const topic = uniqueName('smoke');
    await createTopics(kafkaBrokers, [{ topic, numPartitions: 3 }]);
    const kafka = testKafka(kafkaBrokers);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const [sent] = await producer.send({
      topic,
      acks: -1,
      messages: [{ key: 'cart-1', value: JSON.stringify({ hello: 'kafka' }) }],
    });
    await producer.disconnect();

    const received: { key: string; value: string; partition: number }[] = [];
    const consumer = kafka.consumer({ groupId: uniqueName('smoke_group') });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: ({ message, partition }) => {
        received.push({
          key: message.key?.toString() ?? '',
          value: message.value?.toString() ?? '',
          partition,
        });
        return Promise.resolve();
      },
    });
    try {
      const record = await waitFor(() => received[0], { timeoutMs: 30_000, message: 'the record' });
      expect(record).toEqual({
        key: 'cart-1',
        value: '{"hello":"kafka"}',
        partition: sent?.partition,
      });
    } finally {
      await consumer.disconnect();
    }
  });
});
