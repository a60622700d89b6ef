import { Type } from '@sinclair/typebox';
import { isSluiceError } from '@sluice/errors';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { commonConfig, configProblems, loadConfig, redactConfig } from './index.js';

const schema = Type.Object({
  API_PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 3000 }),
  MIGRATE_ON_START: Type.Boolean({ default: true }),
  DATABASE_URL: Type.String({ minLength: 1 }),
});

describe('loadConfig', () => {
  it('coerces, fills defaults, ignores unrelated variables and freezes', () => {
    const config = loadConfig(schema, {
      DATABASE_URL: 'postgres://x',
      MIGRATE_ON_START: 'false',
      PATH: '/bin',
    });
    expect(config).toEqual({
      API_PORT: 3000,
      MIGRATE_ON_START: false,
      DATABASE_URL: 'postgres://x',
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('names every invalid variable', () => {
    let error: unknown;
    try {
      loadConfig(schema, { API_PORT: 'eighty' });
    } catch (caught) {
      error = caught;
    }
    expect(isSluiceError(error, 'config_invalid')).toBe(true);
    expect((error as Error).message).toMatch(/API_PORT/);
    expect((error as Error).message).toMatch(/DATABASE_URL/);
  });
});

describe('redactConfig', () => {
  it('masks URL passwords and secret-looking keys', () => {
    expect(
      redactConfig({
        DATABASE_URL: 'postgres://app:hunter2@db:5432/shop',
        API_TOKEN: 'abc',
        API_PORT: 3000,
      }),
    ).toEqual({
      DATABASE_URL: 'postgres://app:***@db:5432/shop',
      API_TOKEN: '***',
      API_PORT: 3000,
    });
  });
});

describe('DATABASE_URL_FILE', () => {
  const withFile = Type.Object({
    DATABASE_URL: commonConfig.DATABASE_URL,
    DATABASE_URL_FILE: commonConfig.DATABASE_URL_FILE,
  });
  const dir = mkdtempSync(join(tmpdir(), 'sluice-config-'));
  const fileOf = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads DATABASE_URL from the file, surrounding whitespace dropped', () => {
    const path = fileOf('url', '  postgres://app:s3cret@db:5432/shop\n');
    const config = loadConfig(withFile, { DATABASE_URL_FILE: path });
    expect(config.DATABASE_URL).toBe('postgres://app:s3cret@db:5432/shop');
  });

  it('refuses both set, one line', () => {
    const path = fileOf('both', 'postgres://db/shop');
    expect(
      configProblems(withFile, { DATABASE_URL: 'postgres://x/y', DATABASE_URL_FILE: path }),
    ).toEqual(['DATABASE_URL and DATABASE_URL_FILE are both set: set one']);
  });

  it('names a missing or empty file, never what a file holds', () => {
    const missing = join(dir, 'absent');
    expect(configProblems(withFile, { DATABASE_URL_FILE: missing })).toEqual([
      `DATABASE_URL_FILE ${JSON.stringify(missing)} cannot be read (ENOENT)`,
    ]);
    const empty = fileOf('empty', '\n');
    expect(configProblems(withFile, { DATABASE_URL_FILE: empty })).toEqual([
      `DATABASE_URL_FILE ${JSON.stringify(empty)} is empty`,
    ]);
    const garbage = fileOf('garbage', 'hunter2-not-a-url');
    const problems = configProblems(withFile, { DATABASE_URL_FILE: garbage });
    expect(problems).toEqual([
      `DATABASE_URL (from DATABASE_URL_FILE ${JSON.stringify(garbage)}) is not a URL`,
    ]);
    expect(() => loadConfig(withFile, { DATABASE_URL_FILE: garbage })).toThrow(/DATABASE_URL_FILE/);
    expect(() => loadConfig(withFile, { DATABASE_URL_FILE: garbage })).not.toThrow(/hunter2/);
  });

  it('is ignored by a schema without it', () => {
    const config = loadConfig(schema, { DATABASE_URL: 'postgres://x', DATABASE_URL_FILE: '/nope' });
    expect(config.DATABASE_URL).toBe('postgres://x');
  });
});
