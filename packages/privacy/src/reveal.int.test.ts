import { randomBytes, randomUUID } from 'node:crypto';
import { isSluiceError } from '@sluice/errors';
import { createTestDatabase, testServers, type TestDatabase } from '@sluice/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertMasterKeysKnown,
  createPrivacy,
  ERASED,
  parseMasterKey,
  SUBJECT_KEYS_DDL,
  unknownMasterKeyIds,
  type MasterKeys,
} from './index.js';

let database: TestDatabase;
let pool: pg.Pool;
const masterKey = () => parseMasterKey(randomBytes(32).toString('hex'));
const keys: MasterKeys = { current: masterKey() };
const type = 'customer.registered.v1';
const fields = { [type]: { subject: 'customerId', fields: ['email', 'name'] } };
const privacy = createPrivacy({ keys, fields });

beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'privacy_reveal');
  pool = new pg.Pool({ connectionString: database.url, max: 4 });
  await pool.query(SUBJECT_KEYS_DDL);
});
afterAll(async () => {
  await pool.end();
  await database.drop();
});

async function registered(customerId = randomUUID()) {
  const payload = { customerId, email: `${customerId}@example.com`, name: 'Ada' };
  const [event] = await privacy.sealEvents(pool, [{ type, payload }]);
  return { payload, sealed: event?.payload ?? payload };
}

async function failure(reading: Promise<unknown>): Promise<{ code: string; retriable: boolean }> {
  const error: unknown = await reading.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!isSluiceError(error)) throw new Error(`expected a SluiceError, got ${String(error)}`);
  return { code: error.code, retriable: error.retriable };
}

describe('a master key problem', () => {
  it('is retriable: a key wrapped by a master key not configured', async () => {
    const { sealed } = await registered();
    const other = createPrivacy({ keys: { current: masterKey() }, fields });
    expect(await failure(other.revealPayload(pool, type, sealed))).toEqual({
      code: 'master_key_unknown',
      retriable: true,
    });
  });

  it('is retriable: a wrapped key that fails its authentication under the right master key', async () => {
    const { sealed } = await registered();
    await pool.query(
      `UPDATE sluice.subject_keys
          SET wrapped_key = set_byte(wrapped_key, 20, get_byte(wrapped_key, 20) # 1)
        WHERE subject = $1`,
      [sealed.customerId],
    );
    expect(await failure(privacy.revealPayload(pool, type, sealed))).toEqual({
      code: 'subject_key_invalid',
      retriable: true,
    });
  });

  it('differs from problems of the data, which are not retriable', async () => {
    const { sealed } = await registered();
    const moved = { ...sealed, customerId: randomUUID() };
    expect(await failure(privacy.revealPayload(pool, type, moved))).toEqual({
      code: 'envelope_invalid',
      retriable: false,
    });
    await pool.query('DELETE FROM sluice.subject_keys WHERE subject = $1', [sealed.customerId]);
    expect(await failure(privacy.revealPayload(pool, type, sealed))).toEqual({
      code: 'subject_unknown',
      retriable: false,
    });
  });
});

describe('an erased subject', () => {
  it('reads [erased] in every string of its protected fields, clear text included', async () => {
    const { payload, sealed } = await registered();
    const mixed = { ...sealed, name: 'Ada in clear text' };
    expect(await privacy.revealPayload(pool, type, mixed)).toEqual({
      ...payload,
      name: 'Ada in clear text',
    });
    await privacy.erase(pool, payload.customerId);
    const erased = { customerId: payload.customerId, email: ERASED, name: ERASED };
    expect(await privacy.revealPayload(pool, type, mixed)).toEqual(erased);
    const imitation = { ...mixed, email: 'sluice:enc:v1:not-an-envelope' };
    expect(await privacy.revealPayload(pool, type, imitation)).toEqual(erased);
    expect(await privacy.revealText(pool, payload.customerId, 'free text')).toBe(ERASED);
  });

  it('reads [erased] even when erased without ever having had a key', async () => {
    const customerId = randomUUID();
    const clear = { customerId, email: 'ada@example.com', name: 'Ada' };
    expect(await privacy.revealPayload(pool, type, clear)).toEqual(clear);
    await privacy.erase(pool, customerId);
    expect(await privacy.revealPayload(pool, type, clear)).toEqual({
      customerId,
      email: ERASED,
      name: ERASED,
    });
  });
});

describe('keys read for revealing', () => {
  it('are not kept past an erasure committed by another transaction', async () => {
    const { payload, sealed } = await registered();
    expect(await privacy.revealPayload(pool, type, sealed)).toEqual(payload);
    await createPrivacy({ keys, fields }).erase(pool, payload.customerId);
    expect(await privacy.revealPayload(pool, type, sealed)).toMatchObject({ email: ERASED });
  });

  it('are not taken as erased when the erasure rolls back', async () => {
    const { payload, sealed } = await registered();
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await privacy.erase(client, payload.customerId);
      expect(await privacy.revealPayload(client, type, sealed)).toMatchObject({ email: ERASED });
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    expect(await privacy.revealPayload(pool, type, sealed)).toEqual(payload);
  });

  it('are read once per subject by a reader, which lives for its transaction', async () => {
    const { payload, sealed } = await registered();
    const statements: string[] = [];
    const counted = {
      query: (text: string, values?: unknown[]) => {
        statements.push(text);
        return pool.query(text, values);
      },
    };
    const reader = privacy.reader(counted);
    for (let i = 0; i < 3; i += 1)
      expect(await reader.revealPayload(type, sealed)).toEqual(payload);
    expect(statements).toHaveLength(1);
    await privacy.revealPayload(counted, type, sealed);
    await privacy.revealPayload(counted, type, sealed);
    expect(statements).toHaveLength(3);
  });
});

describe('the start check of master keys', () => {
  it('passes before sluice.subject_keys exists', async () => {
    const empty = await createTestDatabase(testServers().databaseUrl, 'privacy_no_keys');
    const client = new pg.Client({ connectionString: empty.url });
    await client.connect();
    try {
      expect(await unknownMasterKeyIds(client, keys)).toEqual([]);
      await assertMasterKeysKnown(client, keys);
    } finally {
      await client.end();
      await empty.drop();
    }
  });

  it('names the master keys no setting holds, never key material', async () => {
    await registered();
    const next = masterKey();
    expect(await unknownMasterKeyIds(pool, { current: next, previous: keys.current })).toEqual([]);
    expect(await unknownMasterKeyIds(pool, { current: keys.current })).toEqual([]);
    expect(await unknownMasterKeyIds(pool, { current: next })).toEqual([keys.current.id]);
    const error: unknown = await assertMasterKeysKnown(pool, { current: next }).catch(
      (caught: unknown) => caught,
    );
    expect(isSluiceError(error, 'config_invalid')).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain(keys.current.id);
    expect(message).toMatch(/SLUICE_MASTER_KEY_FILE.*SLUICE_MASTER_KEY_PREVIOUS_FILE/);
    expect(message).not.toContain('\n');
    for (const key of [keys.current.key, next.key])
      for (const encoding of ['hex', 'base64', 'base64url'] as const)
        expect(message).not.toContain(key.toString(encoding));
  });
});

describe('a reader revealing events side by side', () => {
  it('reads their subjects in one statement, each with its own outcome', async () => {
    const [alive, other] = [await registered(), await registered()];
    const gone = await registered();
    await privacy.erase(pool, gone.payload.customerId);
    const statements: string[] = [];
    const counting = {
      query: (text: string, values?: unknown[]) => {
        statements.push(text);
        return pool.query(text, values);
      },
    };
    const reader = privacy.reader(counting);
    const opened = await Promise.all(
      [alive, other, gone, alive].map((e) => reader.revealPayload(type, e.sealed)),
    );
    expect(statements).toHaveLength(1);
    expect(opened).toEqual([
      alive.payload,
      other.payload,
      { ...gone.payload, email: ERASED, name: ERASED },
      alive.payload,
    ]);
    const stranger = { ...other.sealed, customerId: randomUUID() };
    expect((await failure(reader.revealPayload(type, stranger))).code).toBe('envelope_invalid');
  });
});
