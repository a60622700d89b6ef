import { randomBytes, randomUUID } from 'node:crypto';
import { isSluiceError } from '@sluice/errors';
import { createTestDatabase, testServers, waitFor, type TestDatabase } from '@sluice/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPrivacy,
  ensureSubjectKey,
  ERASED,
  eraseSubjectKey,
  isEnvelope,
  parseMasterKey,
  readSubjectKey,
  rewrapSubjectKeys,
  SUBJECT_KEYS_DDL,
  type MasterKeys,
} from './index.js';

let database: TestDatabase;
let client: pg.Client;
const masterKey = () => parseMasterKey(randomBytes(32).toString('hex'));
const keys: MasterKeys = { current: masterKey() };
const fields = { 'customer.registered.v1': { subject: 'customerId', fields: ['email', 'name'] } };
const privacy = createPrivacy({ keys, fields });

beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'privacy');
  client = new pg.Client({ connectionString: database.url });
  await client.connect();
  await client.query(SUBJECT_KEYS_DDL);
});
afterAll(async () => {
  await client.end();
  await database.drop();
});

async function registered(customerId = randomUUID()) {
  const payload = { customerId, email: `${customerId}@example.com`, name: 'Ada' };
  const [event] = await privacy.sealEvents(client, [{ type: 'customer.registered.v1', payload }]);
  return { payload, sealed: event?.payload ?? payload };
}

describe('subject keys', () => {
  it('seals protected fields with a key made on first use and reveals them', async () => {
    const { payload, sealed } = await registered();
    expect(sealed.customerId).toBe(payload.customerId);
    expect(isEnvelope(sealed.email) && isEnvelope(sealed.name)).toBe(true);
    expect(await privacy.revealPayload(client, 'customer.registered.v1', sealed)).toEqual(payload);
    const { rows } = await client.query(
      'SELECT count(*)::int AS n FROM sluice.subject_keys WHERE subject = $1',
      [payload.customerId],
    );
    expect(rows).toEqual([{ n: 1 }]);
  });

  it('seals text that imitates an envelope like any other', async () => {
    const { payload, sealed } = await registered();
    const [again] = await privacy.sealEvents(client, [
      { type: 'customer.registered.v1', payload: { ...payload, name: sealed.name } },
    ]);
    const revealed = await privacy.revealPayload(client, 'customer.registered.v1', again?.payload);
    expect(revealed).toEqual({ ...payload, name: sealed.name });
  });

  it('reveals the marker once the subject is erased, and refuses to seal for it again', async () => {
    const { payload, sealed } = await registered();
    await privacy.erase(client, payload.customerId);
    const revealed = await privacy.revealPayload(client, 'customer.registered.v1', sealed);
    expect(revealed).toEqual({ customerId: payload.customerId, email: ERASED, name: ERASED });
    await expect(privacy.sealText(client, payload.customerId, 'x')).rejects.toMatchObject({
      code: 'subject_erased',
    });
  });

  it('refuses to reveal for a subject it has no key row for', async () => {
    const { sealed } = await registered();
    await client.query('DELETE FROM sluice.subject_keys WHERE subject = $1', [sealed.customerId]);
    const error: unknown = await privacy
      .revealPayload(client, 'customer.registered.v1', sealed)
      .catch((caught: unknown) => caught);
    expect(isSluiceError(error) && error.code).toBe('subject_unknown');
  });

  it('re-wraps every key to a new master key; the old one is then no longer needed', async () => {
    const { payload, sealed } = await registered();
    const rotated: MasterKeys = { current: masterKey(), previous: keys.current };
    expect(await rewrapSubjectKeys(client, rotated)).toBeGreaterThan(0);
    expect(await rewrapSubjectKeys(client, rotated)).toBe(0);
    const after = createPrivacy({ keys: { current: rotated.current }, fields });
    expect(await after.revealPayload(client, 'customer.registered.v1', sealed)).toEqual(payload);
    await expect(
      privacy.revealPayload(client, 'customer.registered.v1', sealed),
    ).rejects.toMatchObject({ code: 'master_key_unknown' });
  });
});

describe('subject keys made and erased at once', () => {
  const others: pg.Client[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 12; i += 1) {
      const other = new pg.Client({ connectionString: database.url });
      await other.connect();
      others.push(other);
    }
  });
  afterAll(() => Promise.all(others.map((other) => other.end())));

  /** Runs `work` in a transaction of its own on `db`. */
  async function inTransaction<T>(db: pg.Client, work: () => Promise<T>): Promise<T> {
    await db.query('BEGIN');
    try {
      const result = await work();
      await db.query('COMMIT');
      return result;
    } catch (error) {
      await db.query('ROLLBACK');
      throw error;
    }
  }

  /** Waits until `count` connections of the test database wait for a lock. */
  async function waitingOnLocks(count: number) {
    await waitFor(
      async () => {
        const { rows } = await client.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        );
        return rows[0]?.n === count;
      },
      { timeoutMs: 10_000, intervalMs: 20, message: `${count} transactions waiting on a lock` },
    );
  }

  const rowsOf = async (subject: string) =>
    (
      await client.query<{ erased: boolean }>(
        'SELECT wrapped_key IS NULL AS erased FROM sluice.subject_keys WHERE subject = $1',
        [subject],
      )
    ).rows;

  it('gives transactions that make a new subject key at once the same key, in one row', async () => {
    for (let round = 0; round < 10; round += 1) {
      const subject = randomUUID();
      const made = await Promise.all(
        others.map((other) => inTransaction(other, () => ensureSubjectKey(other, keys, subject))),
      );
      expect(new Set(made.map((key) => key.toString('hex'))).size).toBe(1);
      expect(await rowsOf(subject)).toEqual([{ erased: false }]);
    }
  });

  it('gives transactions that waited on the one making the key the key it committed', async () => {
    const subject = randomUUID();
    const [first, ...rest] = others as [pg.Client, ...pg.Client[]];
    await first.query('BEGIN');
    const made = await ensureSubjectKey(first, keys, subject);
    const waiting = rest.map((other) =>
      inTransaction(other, () => ensureSubjectKey(other, keys, subject)),
    );
    await waitingOnLocks(rest.length);
    await first.query('COMMIT');
    expect((await Promise.all(waiting)).map((key) => key.equals(made))).toEqual(
      rest.map(() => true),
    );
    expect(await rowsOf(subject)).toEqual([{ erased: false }]);
  });

  it('erases a key made while the erasure waited for it', async () => {
    const subject = randomUUID();
    const [maker, eraser] = others as [pg.Client, pg.Client];
    await maker.query('BEGIN');
    await ensureSubjectKey(maker, keys, subject);
    const erasing = inTransaction(eraser, () => eraseSubjectKey(eraser, subject));
    await waitingOnLocks(1);
    await maker.query('COMMIT');
    await erasing;
    expect(await rowsOf(subject)).toEqual([{ erased: true }]);
    expect(await readSubjectKey(client, keys, subject)).toBeNull();
    await expect(ensureSubjectKey(client, keys, subject)).rejects.toMatchObject({
      code: 'subject_erased',
    });
  });

  it('refuses a key to transactions that waited on an erasure of the subject', async () => {
    const subject = randomUUID();
    const [eraser, ...rest] = others as [pg.Client, ...pg.Client[]];
    await eraser.query('BEGIN');
    await eraseSubjectKey(eraser, subject);
    const waiting = rest.map((other) =>
      inTransaction(other, () => ensureSubjectKey(other, keys, subject)).catch(
        (error: unknown) => error,
      ),
    );
    await waitingOnLocks(rest.length);
    await eraser.query('COMMIT');
    for (const outcome of await Promise.all(waiting))
      expect(outcome).toMatchObject({ code: 'subject_erased' });
    expect(await rowsOf(subject)).toEqual([{ erased: true }]);
  });

  it('leaves a subject erased whatever the order of erasure and makers racing for it', async () => {
    for (let round = 0; round < 10; round += 1) {
      const subject = randomUUID();
      const [eraser, ...rest] = others as [pg.Client, ...pg.Client[]];
      const outcomes = await Promise.all([
        inTransaction(eraser, () => eraseSubjectKey(eraser, subject)),
        ...rest.map((other) =>
          inTransaction(other, () => ensureSubjectKey(other, keys, subject)).then(
            (key) => key.toString('hex'),
            (error: unknown) => (isSluiceError(error) ? error.code : error),
          ),
        ),
      ]);
      const keysMade = new Set(outcomes.slice(1).filter((o) => o !== 'subject_erased'));
      expect(keysMade.size).toBeLessThanOrEqual(1);
      expect(await rowsOf(subject)).toEqual([{ erased: true }]);
    }
  });
});
