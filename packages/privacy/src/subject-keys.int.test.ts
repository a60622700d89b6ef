import { randomBytes, randomUUID } from 'node:crypto';
import { isSluiceError } from '@sluice/errors';
import { createTestDatabase, testServers, type TestDatabase } from '@sluice/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPrivacy,
  ERASED,
  isEnvelope,
  parseMasterKey,
  rewrapSubjectKeys,
  SUBJECT_KEYS_DDL,
  type MasterKeys,
} from './index.js';

let database: TestDatabase;
let client: pg.Client;
const masterKey = () => parseMasterKey(randomBytes(32).toString('hex'));
const keys: MasterKeys = { current: masterKey() };
const fields = { 'customer.registered.v1': { subject: 'customerId', fields: ['email', 'name'] } };
const privacy = createPrivacy({ keys, fields, cacheMs: 0 });

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
    const after = createPrivacy({ keys: { current: rotated.current }, fields, cacheMs: 0 });
    expect(await after.revealPayload(client, 'customer.registered.v1', sealed)).toEqual(payload);
    await expect(
      privacy.revealPayload(client, 'customer.registered.v1', sealed),
    ).rejects.toMatchObject({ code: 'master_key_unknown' });
  });
});
