// Who may call the shop: a bearer JWT verified with the shared secret or an identity provider's
// keys; everything else is a 401 that names why without echoing the token.
import {
  SignJWT,
  exportJWK,
  generateKeyPair,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  TEST_SHOP_AUTH_SECRET,
  startShopApi,
  testToken,
  type ShopApiHarness,
} from './test-harness.js';

let api: ShopApiHarness;
beforeAll(async () => {
  api = await startShopApi('shop_authn');
});
afterAll(() => api.close());

const now = () => Math.floor(Date.now() / 1000);
const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

async function productsWith(harness: ShopApiHarness, token: string) {
  return harness.request('GET', '/products', { headers: { authorization: `Bearer ${token}` } });
}

/** Expects a 401 with `code`, the RFC 6750 challenge, and no trace of `token` in the answer. */
async function expectRefused(token: string, code: string, harness = api) {
  const res = await productsWith(harness, token);
  expect(res.statusCode, res.body).toBe(401);
  expect(res.headers['content-type']).toContain('application/problem+json');
  expect(res.headers['www-authenticate']).toBe('Bearer realm="shop-api", error="invalid_token"');
  expect(res.json()).toMatchObject({ status: 401, code });
  expect(res.body).not.toContain(token.split('.')[1] ?? token);
}

describe('bearer tokens signed with the shared secret', () => {
  it('a valid token is accepted', async () => {
    expect((await productsWith(api, await testToken('someone'))).statusCode).toBe(200);
  });

  it('no token is a 401 token_missing with a bare challenge', async () => {
    const res = await api.request('GET', '/products', { headers: { authorization: '' } });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer realm="shop-api"');
    expect(res.json()).toMatchObject({ code: 'token_missing' });
  });

  it('another scheme, or more than one token, is a 401 token_invalid', async () => {
    for (const authorization of ['Basic dXNlcjpwYXNz', `Bearer a.b.c d.e.f`, 'Bearer']) {
      const res = await api.request('GET', '/products', { headers: { authorization } });
      expect(res.statusCode, authorization).toBe(401);
      expect(res.json(), authorization).toMatchObject({ code: 'token_invalid' });
    }
  });

  it('a tampered signature or payload is a 401 token_invalid', async () => {
    const [header, payload, signature = ''] = (await testToken('ada')).split('.');
    const flipped = `${signature.startsWith('A') ? 'B' : 'A'}${signature.slice(1)}`;
    await expectRefused(`${header}.${payload}.${flipped}`, 'token_invalid');
    const forged = base64url({ sub: 'root', scope: 'admin', exp: now() + 3600 });
    await expectRefused(`${header}.${forged}.${signature}`, 'token_invalid');
  });

  it('an expired token is a 401 token_expired, a not yet valid one token_invalid', async () => {
    await expectRefused(await testToken('ada', { exp: now() - 60 }), 'token_expired');
    await expectRefused(await testToken('ada', { nbf: now() + 3600 }), 'token_invalid');
  });

  it('a token signed with another secret, or alg none, is a 401 token_invalid', async () => {
    const other = 'another secret of more than thirty-two characters';
    await expectRefused(await testToken('ada', {}, other), 'token_invalid');
    const claims = { sub: 'ada', scope: 'admin', exp: now() + 3600 };
    await expectRefused(`${base64url({ alg: 'none' })}.${base64url(claims)}.`, 'token_invalid');
  });

  it('a token without sub or exp is a 401 token_invalid', async () => {
    await expectRefused(await testToken('', {}), 'token_invalid');
    const noExp = await new SignJWT({ sub: 'ada' })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(Buffer.from(TEST_SHOP_AUTH_SECRET));
    await expectRefused(noExp, 'token_invalid');
  });
});

describe('issuer and audience, when configured', () => {
  it('are required to match', async () => {
    const strict = await startShopApi('shop_authn', {
      sharing: api,
      auth: {
        mode: 'jwt',
        key: Buffer.from(TEST_SHOP_AUTH_SECRET),
        issuer: 'https://idp.example',
        audience: 'shop-api',
        adminScope: 'admin',
      },
    });
    try {
      const right = { iss: 'https://idp.example', aud: 'shop-api' };
      expect((await productsWith(strict, await testToken('ada', right))).statusCode).toBe(200);
      const wrongIssuer = { ...right, iss: 'https://evil.example' };
      await expectRefused(await testToken('ada', wrongIssuer), 'token_invalid', strict);
      const wrongAudience = { ...right, aud: 'billing' };
      await expectRefused(await testToken('ada', wrongAudience), 'token_invalid', strict);
      await expectRefused(await testToken('ada'), 'token_invalid', strict);
    } finally {
      await strict.close();
    }
  });
});

describe("an identity provider's JWKS", () => {
  let server: Server;
  let jwks: URL;
  let signingKey: CryptoKey;
  let providerApi: ShopApiHarness;
  const published: JWK[] = [];

  beforeAll(async () => {
    const pair = await generateKeyPair('ES256');
    signingKey = pair.privateKey;
    published.push({ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' });
    server = createServer((_request, response) => {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ keys: published }));
    });
    await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
    jwks = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`);
    const auth = { mode: 'jwt' as const, key: jwks, audience: 'shop-api', adminScope: 'admin' };
    providerApi = await startShopApi('shop_authn', { sharing: api, auth });
  });
  afterAll(async () => {
    await providerApi.close();
    await new Promise((closed) => server.close(closed));
  });

  const sign = (key: CryptoKey, kid: string, claims: JWTPayload = {}) =>
    new SignJWT({ scope: 'shop', aud: 'shop-api', ...claims })
      .setProtectedHeader({ alg: 'ES256', kid })
      .setSubject('ada')
      .setExpirationTime('5m')
      .sign(key);

  it("accepts the provider's ES256 tokens", async () => {
    expect((await productsWith(providerApi, await sign(signingKey, 'k1'))).statusCode).toBe(200);
  });

  it('refuses a token of an unknown kid, another key, or the shared secret', async () => {
    const stranger = (await generateKeyPair('ES256')).privateKey;
    await expectRefused(await sign(stranger, 'k2'), 'token_invalid', providerApi);
    await expectRefused(await sign(stranger, 'k1'), 'token_invalid', providerApi);
    await expectRefused(await testToken('ada', { scope: 'admin' }), 'token_invalid', providerApi);
  });

  it("refuses the provider's tokens for another application, or for none", async () => {
    await expectRefused(
      await sign(signingKey, 'k1', { aud: 'billing' }),
      'token_invalid',
      providerApi,
    );
    const noAudience = await new SignJWT({ scope: 'shop' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setSubject('ada')
      .setExpirationTime('5m')
      .sign(signingKey);
    await expectRefused(noAudience, 'token_invalid', providerApi);
    const both = { aud: ['billing', 'shop-api'] };
    expect((await productsWith(providerApi, await sign(signingKey, 'k1', both))).statusCode).toBe(
      200,
    );
  });

  it("answers 503 auth_unavailable while the provider's keys cannot be fetched", async () => {
    const gone = new URL('http://127.0.0.1:9/jwks.json');
    const auth = { mode: 'jwt' as const, key: gone, audience: 'shop-api', adminScope: 'admin' };
    const orphan = await startShopApi('shop_authn', { sharing: api, auth });
    try {
      const res = await productsWith(orphan, await sign(signingKey, 'k1'));
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ code: 'auth_unavailable' });
    } finally {
      await orphan.close();
    }
  });
});
