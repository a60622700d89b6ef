import { isSluiceError } from '@sluice/errors';
import { redactConfig } from '@sluice/service-kit';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { authSettings, configuredTokenSecret, loadShopApiConfig } from './config.js';

const secret = 'a consistency token secret, 32+ characters long';
const dir = mkdtempSync(join(tmpdir(), 'shop-api-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
};
const code = (run: () => unknown) => {
  try {
    run();
  } catch (error) {
    return isSluiceError(error) ? error.code : String(error);
  }
  return 'no error';
};

describe('the consistency token secret', () => {
  it('comes from the variable or the file, and is absent when neither is set', () => {
    expect(configuredTokenSecret(loadShopApiConfig({}))).toBeUndefined();
    expect(
      configuredTokenSecret(loadShopApiConfig({ CONSISTENCY_TOKEN_SECRET: secret }))?.toString(),
    ).toBe(secret);
    const path = file('secret', `${secret}\n`);
    expect(
      configuredTokenSecret(loadShopApiConfig({ CONSISTENCY_TOKEN_SECRET_FILE: path }))?.toString(),
    ).toBe(secret);
  });

  it('is refused when short, unreadable, or set twice', () => {
    expect(code(() => loadShopApiConfig({ CONSISTENCY_TOKEN_SECRET: 'short' }))).toBe(
      'config_invalid',
    );
    const cases = [
      { CONSISTENCY_TOKEN_SECRET_FILE: file('short', 'short\n') },
      { CONSISTENCY_TOKEN_SECRET_FILE: join(dir, 'missing') },
      { CONSISTENCY_TOKEN_SECRET: secret, CONSISTENCY_TOKEN_SECRET_FILE: file('both', secret) },
    ];
    for (const env of cases) {
      expect(
        code(() => configuredTokenSecret(loadShopApiConfig(env))),
        JSON.stringify(env),
      ).toBe('config_invalid');
    }
  });

  it('never appears in the logged configuration', () => {
    const logged = JSON.stringify(
      redactConfig(loadShopApiConfig({ CONSISTENCY_TOKEN_SECRET: secret })),
    );
    expect(logged).not.toContain(secret);
    expect(logged).toContain('CONSISTENCY_TOKEN_SECRET');
  });
});

describe('the authentication settings', () => {
  const auth = (env: NodeJS.ProcessEnv) => authSettings(loadShopApiConfig(env));

  it('are jwt by default, with exactly one key source', () => {
    expect(code(() => auth({}))).toBe('config_invalid');
    expect(auth({ SHOP_AUTH_SECRET: secret })).toMatchObject({
      mode: 'jwt',
      key: Buffer.from(secret),
      adminScope: 'admin',
    });
    const fromFile = auth({ SHOP_AUTH_SECRET_FILE: file('auth', `${secret}\n`) });
    expect(fromFile).toMatchObject({ key: Buffer.from(secret) });
    const provider = auth({
      SHOP_AUTH_JWKS_URL: 'https://idp.example/jwks.json',
      SHOP_AUTH_ISSUER: 'https://idp.example',
      SHOP_AUTH_AUDIENCE: 'shop',
      SHOP_AUTH_ADMIN_SCOPE: 'shop:admin',
    });
    expect(provider).toEqual({
      mode: 'jwt',
      key: new URL('https://idp.example/jwks.json'),
      issuer: 'https://idp.example',
      audience: 'shop',
      adminScope: 'shop:admin',
    });
  });

  it('are refused with two key sources, a short secret or a URL that is not http(s)', () => {
    const cases = [
      { SHOP_AUTH_SECRET: secret, SHOP_AUTH_JWKS_URL: 'https://idp.example/jwks.json' },
      { SHOP_AUTH_SECRET: 'short' },
      { SHOP_AUTH_SECRET_FILE: file('auth-short', 'short\n') },
      { SHOP_AUTH_SECRET: secret, SHOP_AUTH_SECRET_FILE: file('auth-both', secret) },
      { SHOP_AUTH_JWKS_URL: 'file:///etc/jwks.json' },
      { SHOP_AUTH: 'none' },
    ];
    for (const env of cases)
      expect(
        code(() => auth(env)),
        JSON.stringify(env),
      ).toBe('config_invalid');
  });

  it('take a JWKS URL over https only, plain http only on a loopback host', () => {
    const jwks = (url: string) =>
      code(() => auth({ SHOP_AUTH_JWKS_URL: url, SHOP_AUTH_AUDIENCE: 'shop' }));
    for (const url of [
      'http://idp.example/jwks.json',
      'http://10.0.0.7/jwks.json',
      'http://127.0.0.1.example/jwks.json',
      'http://localhost.example/jwks.json',
      'http://[::2]/jwks.json',
    ])
      expect(jwks(url), url).toBe('config_invalid');
    for (const url of [
      'https://idp.example/jwks.json',
      'http://127.0.0.1:8080/jwks.json',
      'http://[::1]:8080/jwks.json',
      'http://localhost/jwks.json',
    ])
      expect(jwks(url), url).toBe('no error');
  });

  it('need an audience with a JWKS URL, so tokens the provider made for other apps are refused', () => {
    const env = { SHOP_AUTH_JWKS_URL: 'https://idp.example/jwks.json' };
    expect(code(() => auth(env))).toBe('config_invalid');
    expect(() => auth(env)).toThrow(/SHOP_AUTH_AUDIENCE/);
    expect(code(() => auth({ SHOP_AUTH_SECRET: secret }))).toBe('no error');
  });

  it('may turn authentication off, which needs no key', () => {
    expect(auth({ SHOP_AUTH: 'off' })).toEqual({ mode: 'off' });
  });

  it('never log the secret', () => {
    const logged = JSON.stringify(redactConfig(loadShopApiConfig({ SHOP_AUTH_SECRET: secret })));
    expect(logged).not.toContain(secret);
  });
});
