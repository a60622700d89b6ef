import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_KAFKA_VERSION } from './kafka-versions.js';
import {
  KAFKA_IMAGE,
  POSTGRES_IMAGE,
  kafkaBrokerEnvironment,
  postgresServerArgs,
} from './settings.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const sluiceConf = join(rootDir, 'infra', 'postgres', 'sluice.conf');
const serverProperties = join(rootDir, 'infra', 'kafka', 'server.properties');

/**
 * The children of `services.<service>.<key>` in docker-compose.yml: list items or `name: value`
 * pairs, one a line, as plain, single- or double-quoted scalars (all the file uses).
 */
function composeBlock(service: string, key: string): string[] {
  const lines = readFileSync(join(rootDir, 'docker-compose.yml'), 'utf8').split('\n');
  const serviceAt = lines.indexOf(`  ${service}:`);
  const keyAt = lines.findIndex((line, index) => index > serviceAt && line === `    ${key}:`);
  expect(serviceAt, `services.${service} in docker-compose.yml`).toBeGreaterThan(0);
  expect(keyAt, `services.${service}.${key} in docker-compose.yml`).toBeGreaterThan(serviceAt);
  const block: string[] = [];
  for (const line of lines.slice(keyAt + 1)) {
    if (!line.startsWith('      ')) break;
    if (!line.trim().startsWith('#')) block.push(line.trim());
  }
  return block;
}

function composeScalar(text: string): string {
  if (text.startsWith("'")) return text.slice(1, -1).replaceAll("''", "'");
  if (text.startsWith('"')) return JSON.parse(text) as string;
  return text.replace(/\s+#.*$/, '').trim();
}

function composeImage(service: string): string {
  const lines = readFileSync(join(rootDir, 'docker-compose.yml'), 'utf8').split('\n');
  const serviceAt = lines.indexOf(`  ${service}:`);
  const image = lines.slice(serviceAt + 1).find((line) => line.startsWith('    image:'));
  return composeScalar(image?.slice('    image:'.length).trim() ?? '');
}

function composeList(service: string, key: string): string[] {
  return composeBlock(service, key).map((item) => composeScalar(item.replace(/^- /, '')));
}

function composeMap(service: string, key: string): Record<string, string> {
  return Object.fromEntries(
    composeBlock(service, key).map((pair) => {
      const colon = pair.indexOf(':');
      return [pair.slice(0, colon), composeScalar(pair.slice(colon + 1).trim())];
    }),
  );
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-settings-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

describe('postgresServerArgs', () => {
  it('reads a postgresql.conf fragment into server arguments', async () => {
    const conf = await file(
      'a.conf',
      [
        '# a comment',
        '',
        'wal_level = logical',
        '  max_connections 400   # no equals sign, a trailing comment',
        "log_line_prefix = '%m [%p] # kept '",
        'search_path=\'"$user", public\'',
        "application_name = 'it''s'",
        "timezone = 'UTC'# touching",
        '   ',
      ].join('\n'),
    );
    expect(postgresServerArgs(conf)).toEqual([
      '-c',
      'wal_level=logical',
      '-c',
      'max_connections=400',
      '-c',
      'log_line_prefix=%m [%p] # kept ',
      '-c',
      'search_path="$user", public',
      '-c',
      "application_name=it's",
      '-c',
      'timezone=UTC',
    ]);
  });

  it.each([
    ['an unterminated quote', "log_line_prefix = '%m"],
    ['a backslash escape', "application_name = 'it\\'s'"],
    ['a value missing', 'wal_level ='],
    ['an include, which -c cannot express', "include 'other.conf'"],
  ])('refuses %s, naming the file and line', async (_, line) => {
    const conf = await file('bad.conf', `wal_level = logical\n${line}\n`);
    expect(() => postgresServerArgs(conf)).toThrow(
      expect.objectContaining({
        code: 'postgres_settings_invalid',
        message: expect.stringContaining(`${conf}:2`),
      }),
    );
  });
});

describe('kafkaBrokerEnvironment', () => {
  it('reads server.properties into the apache/kafka image environment, placeholders left out', async () => {
    const properties = await file(
      'server.properties',
      [
        '# a comment',
        '! also a comment',
        '',
        'process.roles=broker,controller',
        'listeners=PLAINTEXT://127.0.0.1:${port}',
        ' num.partitions = 6 ',
        'a_b-c.d=x=y',
      ].join('\n'),
    );
    expect(kafkaBrokerEnvironment(properties)).toEqual({
      KAFKA_PROCESS_ROLES: 'broker,controller',
      KAFKA_NUM_PARTITIONS: '6',
      KAFKA_A__B___C_D: 'x=y',
    });
  });

  it('refuses a property line without =', async () => {
    const properties = await file('server.properties', 'node.id=1\nnum.partitions 6\n');
    expect(() => kafkaBrokerEnvironment(properties)).toThrow(`${properties}:2`);
  });
});

describe('docker-compose.yml runs the servers the embedded stack runs', () => {
  it('passes PostgreSQL exactly the settings of infra/postgres/sluice.conf', () => {
    expect(composeList('postgres', 'command')).toEqual([
      'postgres',
      ...postgresServerArgs(sluiceConf),
    ]);
    expect(postgresServerArgs(sluiceConf)).toContain('wal_level=logical');
  });

  it('passes Kafka the settings of infra/kafka/server.properties, its addresses its own', () => {
    expect(composeMap('kafka', 'environment')).toEqual({
      ...kafkaBrokerEnvironment(serverProperties),
      KAFKA_LISTENERS: expect.any(String),
      KAFKA_ADVERTISED_LISTENERS: expect.any(String),
      KAFKA_CONTROLLER_QUORUM_VOTERS: expect.any(String),
      KAFKA_LOG_DIRS: expect.any(String),
    });
    expect(kafkaBrokerEnvironment(serverProperties)).toMatchObject({
      KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'false',
    });
  });

  it('runs the images the containers run, with the Kafka version the embedded stack resolves', () => {
    expect(composeImage('postgres')).toBe(POSTGRES_IMAGE);
    expect(composeImage('kafka')).toBe(KAFKA_IMAGE);
    const pom = readFileSync(join(rootDir, 'infra', 'kafka', 'pom.xml'), 'utf8');
    const version = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom)?.[1];
    expect(version).toMatch(/^4\.\d+\.\d+$/);
    expect(version).toBe(DEFAULT_KAFKA_VERSION);
    expect(KAFKA_IMAGE).toBe(`apache/kafka:${version ?? ''}`);
  });
});
