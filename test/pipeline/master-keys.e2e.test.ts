// The master key settings of shop-api and sluice-projector, as processes: a subject key wrapped by
// a master key neither setting holds stops the start (exit 78, one line naming the key's id and
// the settings, never key material), `sluice-projector --check` says so too, and a file and a
// value set together are refused.
import { createPrivacy, parseMasterKey, SUBJECT_KEYS_DDL } from '@sluice/privacy';
import { createTestDatabase, testServers, uniqueName, type TestDatabase } from '@sluice/testkit';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startService, startedServices, type ServiceName } from '../support/services.js';

const { databaseUrl, kafkaBrokers } = testServers();
const wrapping = parseMasterKey(randomBytes(32).toString('hex'));
const other = parseMasterKey(randomBytes(32).toString('hex'));
const dir = mkdtempSync(join(tmpdir(), 'master-keys-'));
const wrappingFile = join(dir, 'wrapping');
writeFileSync(wrappingFile, wrapping.key.toString('base64'));

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'master_keys');
  const pool = new pg.Pool({ connectionString: database.url, max: 1 });
  try {
    await pool.query(SUBJECT_KEYS_DDL);
    const privacy = createPrivacy({ keys: { current: wrapping }, fields: {} });
    await privacy.sealText(pool, randomUUID(), 'ada@example.com');
  } finally {
    await pool.end();
  }
});

afterAll(async () => {
  for (const service of startedServices()) service.kill('SIGKILL');
  await database.drop();
});

/** Runs a service to its exit (killed after 30 s): its exit code and its output's lines. */
async function runToExit(name: ServiceName, env: Record<string, string>, args: string[] = []) {
  const service = startService(
    name,
    {
      LOG_LEVEL: 'warn',
      DATABASE_URL: database.url,
      KAFKA_BROKERS: kafkaBrokers.join(','),
      PROJECTOR_TOPIC_PREFIX: `${uniqueName('keys')}.`,
      PROJECTOR_METRICS_PORT: '0',
      API_PORT: '0',
      ...env,
    },
    [],
    { args },
  );
  const timer = setTimeout(() => service.kill('SIGKILL'), 30_000);
  const code = await service.exited();
  clearTimeout(timer);
  return { code, lines: service.output().trim().split('\n') };
}

/** The line names the unknown key's id and the settings, and holds no key material. */
function expectUnknownKeyLine(line: string | undefined): void {
  expect(line).toMatch(
    new RegExp(
      `wrapped by master key ${wrapping.id}, neither SLUICE_MASTER_KEY_FILE.*SLUICE_MASTER_KEY_PREVIOUS_FILE`,
    ),
  );
  for (const key of [wrapping.key, other.key])
    for (const encoding of ['hex', 'base64', 'base64url'] as const)
      expect(line).not.toContain(key.toString(encoding));
}

const otherKey = { SLUICE_MASTER_KEY: other.key.toString('hex') };

describe('a subject key wrapped by a master key not configured', () => {
  it('stops sluice-projector at start: exit 78, one line', async () => {
    const { code, lines } = await runToExit('projector', otherKey);
    expect(code).toBe(78);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^sluice-projector: config_invalid: /);
    expectUnknownKeyLine(lines[0]);
  });

  it('is a problem of sluice-projector --check', async () => {
    const { code, lines } = await runToExit('projector', otherKey, ['--check']);
    expect(code).toBe(1);
    const line = lines.find((l) => l.includes('master key'));
    expect(line).toMatch(/config_invalid: /);
    expectUnknownKeyLine(line);
  });

  it('stops shop-api at start: exit 78, one line', async () => {
    const { code, lines } = await runToExit('shop-api', otherKey);
    expect(code).toBe(78);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^shop-api: /);
    expectUnknownKeyLine(lines[0]);
  });

  it('is no problem while it is the previous master key of a rotation', async () => {
    const rotating = { ...otherKey, SLUICE_MASTER_KEY_PREVIOUS_FILE: wrappingFile };
    expect(await runToExit('projector', rotating, ['--check'])).toEqual({
      code: 0,
      lines: ['sluice-projector: settings valid; every check passed'],
    });
  });
});

describe('SLUICE_MASTER_KEY_FILE and SLUICE_MASTER_KEY together', () => {
  const both = {
    SLUICE_MASTER_KEY_FILE: wrappingFile,
    SLUICE_MASTER_KEY: wrapping.key.toString('hex'),
  };

  it.each(['projector', 'shop-api'] as const)(
    'are refused by %s: exit 78, naming both',
    async (name) => {
      const { code, lines } = await runToExit(name, both);
      expect(code).toBe(78);
      expect(lines.join('\n')).toContain(
        'Set SLUICE_MASTER_KEY_FILE or SLUICE_MASTER_KEY, not both',
      );
    },
  );

  it('are a problem of sluice-projector --check', async () => {
    const { code, lines } = await runToExit('projector', both, ['--check']);
    expect(code).toBe(1);
    expect(lines.join('\n')).toContain('Set SLUICE_MASTER_KEY_FILE or SLUICE_MASTER_KEY, not both');
  });
});
