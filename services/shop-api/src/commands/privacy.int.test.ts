// Personal data in shop-api's stores: sealed in the outbox and in stored responses, and the
// customer's key destroyed in the erasure's own transaction.
import { isEnvelope } from '@sluice/privacy';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startShopApi, TEST_PRIVACY, type ShopApiHarness } from '../test-harness.js';
import { eraseCustomer } from './customers.js';

let api: ShopApiHarness;
beforeAll(async () => {
  api = await startShopApi('shop_privacy');
});
afterAll(() => api.close());

let seq = 0;
const unique = () => `p${Date.now().toString(36)}${(seq += 1)}`;

async function register(headers: Record<string, string> = {}) {
  const email = `${unique()}@example.com`;
  const name = `Name ${unique()}`;
  const response = await api.request('POST', '/customers', { body: { email, name }, headers });
  expect(response.statusCode).toBe(201);
  return { id: response.json<{ id: string }>().id, email, name };
}

const keyOf = async (subject: string) =>
  (
    await sql<{ wrapped_key: Buffer | null; erased_at: Date | null }>`
      SELECT wrapped_key, erased_at FROM sluice.subject_keys WHERE subject = ${subject}`.execute(
      api.db,
    )
  ).rows[0];

describe('personal data in shop-api', () => {
  it('reaches the outbox only sealed for its customer', async () => {
    const ada = await register();
    const renamed = await api.request('PATCH', `/customers/${ada.id}`, {
      body: { name: 'Ada L', email: `x${ada.email}` },
      headers: { 'if-match': '"1"' },
    });
    expect(renamed.statusCode).toBe(200);
    const rows = (await api.outbox()).filter((row) => row.aggregate_id === ada.id);
    expect(rows.map((row) => row.type)).toEqual([
      'customer.registered.v1',
      'customer.renamed.v1',
      'customer.email_changed.v1',
    ]);
    const text = JSON.stringify(rows);
    expect(text).not.toContain(ada.email);
    expect(text).not.toContain('Ada L');
    for (const { payload } of rows) {
      for (const field of ['email', 'name'])
        if (field in payload) expect(isEnvelope(payload[field])).toBe(true);
      expect(payload.customerId).toBe(ada.id);
    }
    expect((await keyOf(ada.id))?.wrapped_key).not.toBeNull();
  });

  it('destroys the key with the erasure, and keeps it when the erasure rolls back', async () => {
    const ada = await register();
    await expect(
      api.db.transaction().execute(async (trx) => {
        await eraseCustomer(trx, { id: ada.id }, { privacy: TEST_PRIVACY, mayActFor: () => true });
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    expect((await keyOf(ada.id))?.wrapped_key).not.toBeNull();
    const erased = await api.request('DELETE', `/customers/${ada.id}`, {
      headers: { 'if-match': '"1"' },
    });
    expect(erased.statusCode).toBe(204);
    const key = await keyOf(ada.id);
    expect(key?.wrapped_key).toBeNull();
    expect(key?.erased_at).not.toBeNull();
  });

  it('keeps idempotent responses sealed, and forgets them with the erasure', async () => {
    const headers = { 'idempotency-key': unique() };
    const ada = await register(headers);
    const stored = async () =>
      (
        await sql<{ body: string }>`
          SELECT response_body::text AS body FROM sluice.idempotency_keys
           WHERE key = ${headers['idempotency-key']}`.execute(api.db)
      ).rows;
    expect((await stored())[0]?.body).not.toContain(ada.email);
    const replay = () =>
      api.request('POST', '/customers', { body: { email: ada.email, name: ada.name }, headers });
    const replayed = await replay();
    expect(replayed.statusCode).toBe(201);
    expect(replayed.json()).toMatchObject({ id: ada.id, email: ada.email, name: ada.name });
    const erased = await api.request('DELETE', `/customers/${ada.id}`, {
      headers: { 'if-match': '"1"' },
    });
    expect(erased.statusCode).toBe(204);
    expect(await stored()).toEqual([]);
    // The key is forgotten: the same request again registers anew.
    const again = await replay();
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(again.json<{ id: string }>().id).not.toBe(ada.id);
  });
});
