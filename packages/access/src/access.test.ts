import { isSluiceError } from '@sluice/errors';
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, type JWTPayload } from 'jose';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessConfigSchema, accessOptionsOf, createAccess, type Access } from './index.js';

const secret = 'a-test-secret-of-more-than-32-bytes!';
const secretKey = new TextEncoder().encode(secret);
const own = createAccess({ secret });
const now = () => Math.floor(Date.now() / 1000);

/** A token with `claims` (Sluice's own issuer, audience and an hour's validity unless overridden). */
function ownToken(claims: JWTPayload, key: Uint8Array = secretKey): Promise<string> {
  return new SignJWT({ iss: 'sluice', aud: 'sluice', sub: 'ada', exp: now() + 3600, ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(key);
}

async function denial(access: Access, token: string): Promise<string> {
  const error = await access.verifyToken(token).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!isSluiceError(error)) throw new Error(`expected a SluiceError, got ${String(error)}`);
  expect(error.code).toBe('access_denied');
  return error.message;
}

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe("Sluice's own tokens", () => {
  it('issues tokens it verifies, for both roles', async () => {
    for (const role of ['viewer', 'operator'] as const) {
      const token = await own.issueToken({ subject: 'ada@example.com', role }, 60);
      await expect(own.verifyToken(token)).resolves.toEqual({ subject: 'ada@example.com', role });
    }
  });

  it('refuses a forged payload, alg none, another secret, and garbage', async () => {
    const [header, , signature] = (
      await own.issueToken({ subject: 'eve', role: 'viewer' }, 60)
    ).split('.');
    const promoted = base64url({
      iss: 'sluice',
      aud: 'sluice',
      sub: 'eve',
      exp: now() + 60,
      sluice_role: 'operator',
    });
    expect(await denial(own, `${header}.${promoted}.${signature}`)).toMatch(/signature/);
    const none = `${base64url({ alg: 'none', typ: 'JWT' })}.${promoted}.`;
    await denial(own, none);
    await denial(
      own,
      await ownToken({ sluice_role: 'operator' }, new TextEncoder().encode(`${secret}-other`)),
    );
    for (const garbage of ['', 'abc', 'a.b.c', '..', `${header}..`, 'Bearer x'])
      await denial(own, garbage);
    expect(await denial(own, 'a'.repeat(1_000_000))).toMatch(/too long/);
  });

  it('refuses expired and not-yet-valid tokens, and wrong issuer or audience', async () => {
    expect(await denial(own, await ownToken({ sluice_role: 'viewer', exp: now() - 60 }))).toMatch(
      /expired/,
    );
    expect(await denial(own, await ownToken({ sluice_role: 'viewer', nbf: now() + 3600 }))).toMatch(
      /nbf/,
    );
    expect(await denial(own, await ownToken({ sluice_role: 'viewer', iss: 'someone' }))).toMatch(
      /iss/,
    );
    expect(await denial(own, await ownToken({ sluice_role: 'viewer', aud: 'shop' }))).toMatch(
      /aud/,
    );
    const forever = await new SignJWT({
      sluice_role: 'viewer',
      iss: 'sluice',
      aud: 'sluice',
      sub: 'ada',
    })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(secretKey);
    expect(await denial(own, forever)).toMatch(/exp/);
  });

  it('refuses an unknown or missing role and a missing subject', async () => {
    expect(await denial(own, await ownToken({ sluice_role: 'admin' }))).toMatch(/sluice_role/);
    expect(await denial(own, await ownToken({}))).toMatch(/sluice_role/);
    expect(await denial(own, await ownToken({ sluice_role: 'viewer', sub: '' }))).toMatch(/sub/);
  });

  it('refuses a bad token lifetime or principal instead of issuing', async () => {
    await expect(own.issueToken({ subject: 'ada', role: 'viewer' }, 0)).rejects.toMatchObject({
      code: 'access_config_invalid',
    });
    await expect(
      own.issueToken({ subject: 'ada', role: 'admin' as 'viewer' }, 60),
    ).rejects.toMatchObject({ code: 'access_config_invalid' });
  });
});

describe('configuration', () => {
  it('refuses to run without credentials, with a short secret, or a provider without issuer and audience', () => {
    expect(() => createAccess({})).toThrow(
      expect.objectContaining({ code: 'access_config_invalid' }),
    );
    expect(() => createAccess({ secret: 'short' })).toThrow(/at least 32 bytes/);
    expect(() => createAccess({ jwksUrl: 'http://127.0.0.1:1/jwks' })).toThrow(
      /SLUICE_ACCESS_ISSUER/,
    );
  });

  it('cannot issue without a secret', async () => {
    const viaProvider = createAccess({
      jwksUrl: 'http://127.0.0.1:1/jwks',
      issuer: 'i',
      audience: 'a',
    });
    await expect(
      viaProvider.issueToken({ subject: 'ada', role: 'viewer' }, 60),
    ).rejects.toMatchObject({
      code: 'access_config_invalid',
    });
  });

  it('maps the settings to options and describes every one', () => {
    expect(
      accessOptionsOf({ SLUICE_ACCESS_SECRET: secret, SLUICE_ACCESS_ROLE_CLAIM: 'groups' }),
    ).toEqual({ secret, roleClaim: 'groups' });
    expect(accessOptionsOf({})).toEqual({});
    for (const schema of Object.values(accessConfigSchema)) expect(schema.description).toBeTruthy();
  });
});

describe("an identity provider's tokens", () => {
  let server: Server;
  let jwksUrl: string;
  let keys: Awaited<ReturnType<typeof generateKeyPair>>;
  let provider: Access;
  const issuer = 'https://id.example.com/';
  const audience = 'sluice-ops';

  beforeAll(async () => {
    keys = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(keys.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    server = createServer((_request, response) => {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
    jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
    provider = createAccess({ jwksUrl, issuer, audience, roleClaim: 'groups', secret });
  });

  afterAll(() => new Promise((closed) => server.close(closed)));

  async function providerToken(claims: JWTPayload, key = keys.privateKey): Promise<string> {
    return new SignJWT({ iss: issuer, aud: audience, sub: 'auth0|42', exp: now() + 600, ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .sign(key);
  }

  it('accepts its tokens, taking the highest role its claim names', async () => {
    await expect(
      provider.verifyToken(await providerToken({ groups: ['staff', 'viewer'] })),
    ).resolves.toEqual({
      subject: 'auth0|42',
      role: 'viewer',
    });
    const both = await providerToken({ groups: ['viewer', 'operator'] });
    await expect(provider.verifyToken(both)).resolves.toMatchObject({ role: 'operator' });
    await expect(
      provider.verifyToken(await own.issueToken({ subject: 'svc', role: 'viewer' }, 60)),
    ).resolves.toMatchObject({
      subject: 'svc',
    });
  });

  it('refuses wrong issuer or audience, no role, another key, and HS256 signed with its public key', async () => {
    expect(
      await denial(provider, await providerToken({ groups: ['operator'], iss: 'https://evil/' })),
    ).toMatch(/iss/);
    expect(
      await denial(provider, await providerToken({ groups: ['operator'], aud: 'other' })),
    ).toMatch(/aud/);
    expect(await denial(provider, await providerToken({ groups: ['admin'] }))).toMatch(/groups/);
    expect(await denial(provider, await providerToken({ sluice_role: 'operator' }))).toMatch(
      /groups/,
    );
    const stranger = await generateKeyPair('RS256');
    expect(
      await denial(provider, await providerToken({ groups: ['operator'] }, stranger.privateKey)),
    ).toMatch(/signature/);
    const publicPem = new TextEncoder().encode(await exportSPKI(keys.publicKey));
    const confused = await new SignJWT({
      iss: issuer,
      aud: audience,
      sub: 'eve',
      exp: now() + 60,
      groups: ['operator'],
    })
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(publicPem);
    await denial(provider, confused);
  });

  it('says the keys are unavailable, retriably, when the provider cannot be reached', async () => {
    const unreachable = createAccess({ jwksUrl: 'http://127.0.0.1:9/jwks', issuer, audience });
    await expect(
      unreachable.verifyToken(await providerToken({ sluice_role: 'operator' })),
    ).rejects.toMatchObject({
      code: 'access_unavailable',
      retriable: true,
    });
  });
});
