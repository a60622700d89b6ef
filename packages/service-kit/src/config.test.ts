import { Type } from '@sinclair/typebox';
import { isSluiceError } from '@sluice/errors';
import { describe, expect, it } from 'vitest';
import { loadConfig, redactConfig } from './index.js';

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
