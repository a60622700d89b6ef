// The scan the erasure test trusts finds a secret wherever it is planted: in bytea among bytes
// that are not UTF-8, in jsonb (escaped), in text[] and bytea[], in base64 at any alignment, in a
// record's header or value, and in a service's output.
import {
  createTestDatabase,
  createTopics,
  testKafka,
  testServers,
  uniqueName,
} from '@sluice/testkit';
import type { TestDatabase } from '@sluice/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findSecrets } from '../support/privacy-scan.js';

let database: TestDatabase;
let pool: pg.Pool;
const email = `${uniqueName('scan')}@example.com`;
const name = `Zoë "Q" O'Neil\\${uniqueName('n')}`;
const secrets = { email, name };

beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'pscan');
  pool = new pg.Pool({ connectionString: database.url, max: 2 });
  await pool.query(`
    CREATE SCHEMA "Odd schema";
    CREATE TABLE "Odd schema".places (id int, raw bytea, doc jsonb, tags text[], blobs bytea[], note text)`);
});
afterAll(async () => {
  await pool.end();
  await database.drop();
});

/** Plants `column = value` in a row of its own. */
async function plant(column: string, value: unknown) {
  await pool.query('TRUNCATE "Odd schema".places');
  await pool.query(`INSERT INTO "Odd schema".places (id, ${column}) VALUES (1, $1)`, [value]);
}

describe('the personal-data scan', () => {
  it('finds nothing where nothing is planted', async () => {
    await plant('note', 'nothing personal');
    expect(await findSecrets(secrets, { pool })).toEqual([]);
  });

  it.each([
    ['raw', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(email), Buffer.from([0xc3])])],
    ['blobs', [Buffer.from([0x80]), Buffer.from(`<${email}>`)]],
    ['tags', ['a', email, 'b']],
    ['doc', JSON.stringify({ nested: [{ email }] })],
    ['note', Buffer.from(`x${email}`).toString('base64')],
    ['note', Buffer.from(`xy${email}`).toString('base64url')],
  ])('finds the email planted in column %s (%#)', async (column, value) => {
    await plant(column, value);
    const found = await findSecrets(secrets, { pool });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(
      new RegExp(`^email \\(.+\\) in table "Odd schema".places column ${column}$`),
    );
  });

  it('finds a name that JSON, arrays and ASCII-only writers escape', async () => {
    await plant('doc', JSON.stringify({ name }));
    expect(await findSecrets(secrets, { pool })).toEqual([
      'name (JSON-escaped) in table "Odd schema".places column doc',
    ]);
    await plant('tags', [name]);
    expect(await findSecrets(secrets, { pool })).toEqual([
      'name (JSON-escaped) in table "Odd schema".places column tags',
    ]);
    await plant('raw', Buffer.from(JSON.stringify({ name }).replace('ë', '\\u00eb')));
    expect(await findSecrets(secrets, { pool })).toEqual([
      'name (JSON-escaped ASCII) in table "Odd schema".places column raw',
    ]);
  });

  it('finds secrets in any part of a record read from the beginning, and in text', async () => {
    const { kafkaBrokers } = testServers();
    const topic = uniqueName('pscan');
    await createTopics(kafkaBrokers, [{ topic, numPartitions: 2 }]);
    const producer = testKafka(kafkaBrokers).producer();
    await producer.connect();
    await producer.send({
      topic,
      messages: [
        { key: 'k', value: 'plain', partition: 0 },
        { key: 'k', value: null, headers: { h: Buffer.from(email) }, partition: 1 },
        { key: 'k', value: JSON.stringify({ name }), partition: 1 },
      ],
    });
    await producer.disconnect();
    const found = await findSecrets(secrets, {
      topics: [topic],
      kafkaBrokers,
      texts: { "a service's output": `{"msg":"hello ${Buffer.from(name).toString('base64')}"}` },
    });
    expect(found).toEqual([
      `email (clear) in topic ${topic}`,
      `name (JSON-escaped) in topic ${topic}`,
      "name (base64) in a service's output",
    ]);
  });
});
