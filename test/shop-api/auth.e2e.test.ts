// shop-api's authentication as a real process: settings refused at start, probes open, the shop
// behind bearer tokens, and authentication off only when asked for, saying so.
import { createTestDatabase, testServers, type TestDatabase } from '@sluice/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shopAdminHeaders, shopHeaders } from '../support/access.js';
import { startService, startShopApi, startedServices } from '../support/services.js';

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'shop_auth_process');
});
afterAll(async () => {
  for (const service of startedServices()) service.kill('SIGKILL');
  await Promise.all(startedServices().map((service) => service.exited()));
  await database.drop();
});

/** Runs shop-api without a key source for its tokens until it exits. */
async function runWithoutKey(args: string[]) {
  const service = startService(
    'shop-api',
    { DATABASE_URL: database.url, SHOP_AUTH_SECRET: '', API_PORT: '0' },
    [],
    { args },
  );
  return { code: await service.exited(), output: service.output() };
}

describe('shop-api authentication settings', () => {
  const noKey = [
    'shop-api: SHOP_AUTH=jwt needs exactly one of SHOP_AUTH_JWKS_URL and SHOP_AUTH_SECRET (or SHOP_AUTH_SECRET_FILE); SHOP_AUTH=off turns authentication off for local development',
  ];

  it('jwt (the default) without a key source exits 78 with one line', async () => {
    const started = await runWithoutKey([]);
    expect(started.code).toBe(78);
    expect(started.output.trim().split('\n')).toEqual(noKey);
  });

  it('--check names the missing key source', async () => {
    const checked = await runWithoutKey(['--check']);
    expect(checked.code).toBe(1);
    expect(checked.output.trim().split('\n')).toEqual(noKey);
  });
});

describe('shop-api with bearer tokens', () => {
  it('keeps its probes open and the shop closed to requests without a valid token', async () => {
    const { base } = await startShopApi({ DATABASE_URL: database.url });
    for (const probe of ['/healthz', '/readyz', '/metrics'])
      expect((await fetch(`${base}${probe}`)).status, probe).toBe(200);
    const refused = await fetch(`${base}/products`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toBe('Bearer realm="shop-api"');
    expect(await refused.json()).toMatchObject({ code: 'token_missing' });
    const customer = shopHeaders('0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a');
    expect((await fetch(`${base}/customers`, { headers: customer })).status).toBe(403);
    expect((await fetch(`${base}/customers`, { headers: shopAdminHeaders() })).status).toBe(200);
  });
});

describe('shop-api with SHOP_AUTH=off', () => {
  it('warns once at start and lets every request act as the admin "dev"', async () => {
    const { service, base } = await startShopApi({ DATABASE_URL: database.url, SHOP_AUTH: 'off' });
    const warnings = service
      .output()
      .split('\n')
      .filter((line) => line.includes('authentication is off'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('"level":"warn"');
    expect(warnings[0]).toContain('for local development only');
    const registered = await fetch(`${base}/customers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-actor': 'mallory' },
      body: JSON.stringify({ email: 'off@example.com', name: 'Off' }),
    });
    expect(registered.status).toBe(201);
  });
});
