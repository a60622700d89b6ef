import { isSluiceError } from '@sluice/errors';
import { redactConfig } from '@sluice/service-kit';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { configuredTokenSecret, loadShopApiConfig } from './config.js';

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
