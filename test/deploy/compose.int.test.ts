// docker-compose.yml against the Compose Specification's schema, and its shapes: the pipeline, the
// secure profile (PostgreSQL over TLS, Kafka over SASL_SSL) and the three-broker cluster.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { expect, it } from 'vitest';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
// The schema docker-compose (a dependency of testcontainers) ships; ajv as shop-api has it.
const fromTest = createRequire(join(rootDir, 'test', 'package.json'));
const fromTestcontainers = createRequire(fromTest.resolve('testcontainers'));
const schemaPath = join(
  dirname(fromTestcontainers.resolve('docker-compose/package.json')),
  'schema',
  'compose-spec.json',
);
type Validate = ((data: unknown) => boolean) & { errors?: unknown };
const { Ajv } = createRequire(join(rootDir, 'services', 'shop-api', 'package.json'))('ajv') as {
  Ajv: new (options: object) => { compile(schema: object): Validate };
};

type Service = {
  profiles?: string[];
  image?: string;
  build?: { dockerfile: string };
  command?: string[];
  environment?: Record<string, string | number | null>;
  network_mode?: string;
  volumes?: string[];
  secrets?: string[];
  depends_on?: Record<string, { condition: string }>;
  entrypoint?: string[];
  healthcheck?: { test: string[] };
};
const compose = parse(readFileSync(join(rootDir, 'docker-compose.yml'), 'utf8'), {
  merge: true,
}) as { services: Record<string, Service>; secrets: Record<string, { file?: string }> };

function read(path: string): string {
  return readFileSync(join(rootDir, path), 'utf8');
}

function service(name: string): Service {
  const found = compose.services[name];
  expect(found, `services.${name}`).toBeDefined();
  return found ?? {};
}

/** A service's environment, values as the container sees them (null: passed on if set). */
function env(name: string): Record<string, string | null> {
  return Object.fromEntries(
    Object.entries(service(name).environment ?? {}).map(([key, value]) => [
      key,
      value === null ? null : String(value),
    ]),
  );
}

function setting(name: string, key: string): string {
  const value = env(name)[key];
  expect(value, `${name} ${key}`).toEqual(expect.any(String));
  return value ?? '';
}

function namesIn(profile: string): string[] {
  return Object.entries(compose.services)
    .filter(([, s]) => s.profiles?.includes(profile))
    .map(([name]) => name)
    .sort();
}

/**
 * The Sluice services of a pipeline profile, after checking that the profile alone starts
 * everything they wait for.
 */
function pipelineOf(profile: string): string[] {
  const names = namesIn(profile);
  for (const name of names) {
    for (const dependency of dependencies(name)) {
      const { profiles } = service(dependency);
      expect(profiles ?? [profile], `${name} waits for ${dependency}`).toContain(profile);
    }
  }
  return names.filter((name) => service(name).image?.startsWith('sluice-'));
}

/** The services `name` waits for, directly or through others. */
function dependencies(name: string, found = new Set<string>()): Set<string> {
  for (const dependency of Object.keys(service(name).depends_on ?? {})) {
    if (!found.has(dependency)) dependencies(dependency, found.add(dependency));
  }
  return found;
}

/** The volume a service mounts `path` from. */
function volumeOf(name: string, path: string): string | undefined {
  const mount = service(name)
    .volumes?.map((volume) => volume.split(':'))
    .find(([, target]) => target !== undefined && path.startsWith(`${target}/`));
  return mount?.[0];
}

/** `a<separator>b,…` as [a, b] pairs: listeners (`NAME://host:port`), a protocol map. */
function pairs(value: string, separator: string): [string, string][] {
  return value.split(',').map((pair) => {
    const [name = '', rest = ''] = pair.split(separator);
    return [name, rest];
  });
}

function listeners(value: string): [string, string][] {
  return pairs(value, '://');
}

function advertised(name: string, listener: string): string | undefined {
  return listeners(setting(name, 'KAFKA_ADVERTISED_LISTENERS')).find(([l]) => l === listener)?.[1];
}

/**
 * The variables a service's settings parser reads: the `NAME:` keys of the schema object that
 * `opening` starts in `path`, with what it spreads in (commonConfig, accessConfigSchema,
 * topicReplicationSettings), and the OTEL_* variables of service-kit's tracing.
 */
function settingNames(path: string, opening: string): string[] {
  const source = read(path);
  const start = source.indexOf(opening);
  expect(start, `${opening} in ${path}`).toBeGreaterThanOrEqual(0);
  const schema = source.slice(start, source.indexOf('\n}', start));
  const names = [...schema.matchAll(/^ {2}([A-Z][A-Z0-9_]*):/gm)].map(([, name]) => name ?? '');
  if (/^ {2}\.\.\.commonConfig,/m.test(schema)) {
    names.push(
      ...settingNames('packages/service-kit/src/config.ts', 'export const commonConfig = {'),
    );
  }
  if (/^ {2}\.\.\.masterKeySettings,/m.test(schema)) {
    names.push(
      ...settingNames('packages/privacy/src/settings.ts', 'export const masterKeySettings = {'),
    );
  }
  if (/^ {2}\.\.\.accessConfigSchema,/m.test(schema)) {
    names.push(
      ...settingNames('packages/access/src/config.ts', 'export const accessConfigSchema = {'),
    );
  }
  for (const [, prefix] of schema.matchAll(/^ {2}\.\.\.topicReplicationSettings\('([A-Z]+)'\)/gm)) {
    names.push(`${prefix}_TOPIC_REPLICATION_FACTOR`, `${prefix}_TOPIC_MIN_INSYNC_REPLICAS`);
  }
  return names;
}

const tracingNames = [
  ...read('packages/service-kit/src/tracing.ts').matchAll(/env\.(OTEL_[A-Z0-9_]+)/g),
].map(([, name]) => name ?? '');

const settingsOf: Record<string, [string, string]> = {
  'sluice-shop-api': ['services/shop-api/src/config.ts', 'export const shopApiConfigSchema ='],
  'sluice-relay': ['services/relay/src/config.ts', 'export const relayConfigSchema ='],
  'sluice-shop-projector': [
    'services/projector/src/config.ts',
    'export const projectorConfigSchema =',
  ],
  'sluice-console': ['services/console/src/config.ts', 'export const consoleConfigSchema ='],
};

function readBy(image: string): Set<string> {
  const [path, opening] = settingsOf[image] ?? [];
  expect(path, `the settings of ${image}`).toBeDefined();
  return new Set([...settingNames(path ?? '', opening ?? ''), ...tracingNames]);
}

/** The names each server certificate of infra/compose/certs.sh is for: `server <cn> <SANs>`. */
const certificateNames = new Map(
  [...read('infra/compose/certs.sh').matchAll(/^server (\S+) (\S+)$/gm)].map(([, cn, sans]) => [
    cn ?? '',
    (sans ?? '').split(','),
  ]),
);

it('follows the Compose Specification', () => {
  const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false });
  const validate = ajv.compile(JSON.parse(readFileSync(schemaPath, 'utf8')) as object);
  expect(validate(compose), JSON.stringify(validate.errors, null, 2)).toBe(true);
  expect(validate({ ...compose, services: { relay: { profiles: 'pipeline' } } })).toBe(false);
});

it('runs the whole pipeline from the services images under the pipeline profile', () => {
  const pipeline = Object.entries(compose.services).filter(([, s]) =>
    s.profiles?.includes('pipeline'),
  );
  expect(pipeline.map(([name]) => name).sort()).toEqual(
    ['console', 'projector', 'relay', 'relay-standby', 'shop-api'].sort(),
  );
  for (const [name, service] of pipeline) {
    expect(service.network_mode, name).toBe('service:kafka');
    expect(service.environment?.DATABASE_URL, name).toBe(
      'postgres://postgres@postgres:5432/sluice',
    );
    const dockerfile = service.build?.dockerfile;
    if (dockerfile !== undefined)
      expect(readFileSync(join(rootDir, dockerfile), 'utf8')).toMatch(/^USER node$/m);
  }
  expect(compose.services['relay-standby']?.image).toBe(compose.services.relay?.image);
  expect(compose.services.jaeger?.profiles).toEqual(['tracing']);
  expect(compose.services.postgres?.profiles).toBeUndefined();
});

it('gives each Sluice service only variables its settings parser reads', () => {
  const sluice = Object.entries(compose.services).filter(([, s]) => s.image?.startsWith('sluice-'));
  expect(sluice.length).toBe(15);
  for (const [name, { image }] of sluice) {
    const reads = readBy(image ?? '');
    expect(
      Object.keys(env(name)).filter((key) => !reads.has(key)),
      name,
    ).toEqual([]);
  }
  // The parsers as the check sees them: a misspelt or foreign variable is not among them.
  const relay = readBy('sluice-relay');
  expect(relay).toContain('KAFKA_SASL_PASSWORD_FILE');
  expect(relay).toContain('RELAY_TOPIC_MIN_INSYNC_REPLICAS');
  expect(relay).not.toContain('KAFKA_SASL_PASWORD_FILE');
  expect(readBy('sluice-console')).toContain('SLUICE_ACCESS_USERS_FILE');
  expect(readBy('sluice-shop-projector')).toContain('PROJECTOR_TOPIC_REPLICATION_FACTOR');
  expect(readBy('sluice-shop-api')).not.toContain('KAFKA_BROKERS');
});

it('writes no password into the file: secrets come from files or the environment', () => {
  for (const name of Object.keys(compose.services)) {
    for (const [key, value] of Object.entries(env(name))) {
      if (/PASSWORD|SECRET|TOKEN/.test(key) && !key.endsWith('_FILE')) {
        expect(value, `${name} ${key}`).toBeNull();
      }
      expect(value ?? '', `${name} ${key}`).not.toMatch(/\/\/[^/@]*:[^/@]*@/);
    }
  }
  for (const [name, secret] of Object.entries(compose.secrets)) {
    expect(secret.file, `secrets.${name}`).toEqual(expect.any(String));
  }
});

it('gives every broker the kafka service settings but for addresses and replication', () => {
  const image = service('kafka').image ?? '';
  expect(image).toMatch(/^apache\/kafka:4\.\d+\.\d+$/);
  const own =
    /^KAFKA_(NODE_ID|LISTENERS|ADVERTISED_LISTENERS|LISTENER_SECURITY_PROTOCOL_MAP|CONTROLLER_QUORUM_VOTERS|\w+_REPLICATION_FACTOR|\w*MIN_I(NSYNC_REPLICAS|SR))$/;
  const shared = Object.entries(env('kafka')).filter(([key]) => !own.test(key));
  expect(shared.length).toBeGreaterThan(8);
  for (const name of ['kafka-tls', 'kafka-1', 'kafka-2', 'kafka-3']) {
    expect(service(name).image, name).toBe(image);
    for (const [key, value] of shared) expect(env(name)[key], `${name} ${key}`).toBe(value);
  }
});

it('runs the secure servers on the certificates of the certs service', () => {
  const postgres = service('postgres-tls');
  expect(postgres.command?.slice(0, service('postgres').command?.length)).toEqual(
    service('postgres').command,
  );
  expect(postgres.command).toContain('ssl=on');
  for (const file of ['ssl_cert_file', 'ssl_key_file']) {
    const path = postgres.command?.find((arg) => arg.startsWith(`${file}=`))?.split('=')[1];
    expect(volumeOf('postgres-tls', path ?? ''), file).toBe('tls-postgres');
  }
  const keystore = `/etc/kafka/secrets/${setting('kafka-tls', 'KAFKA_SSL_KEYSTORE_FILENAME')}`;
  expect(volumeOf('kafka-tls', keystore)).toBe('tls-kafka');
  for (const server of ['postgres-tls', 'kafka-tls']) {
    expect(service(server).depends_on?.certs?.condition).toBe('service_completed_successfully');
  }
  // The broker creates its SCRAM user once it answers, and is healthy once the user exists.
  const kafka = service('kafka-tls');
  expect(kafka.entrypoint).toEqual(['bash', '/etc/sluice/kafka-tls.sh']);
  expect(volumeOf('kafka-tls', '/etc/sluice/kafka-tls.sh')).toBe('./infra/compose');
  expect(read('infra/compose/kafka-tls.sh')).toMatch(
    /^if ! sh \/etc\/sluice\/kafka-scram-user\.sh; then$/m,
  );
  expect(kafka.secrets).toEqual(['kafka-scram-password']);
  expect(kafka.healthcheck?.test.join(' ')).toContain('--entity-name sluice');
});

it('connects the secure pipeline to PostgreSQL with verify-full', () => {
  const pipeline = pipelineOf('pipeline-secure');
  expect(pipeline).toEqual(
    ['console', 'projector', 'relay', 'relay-standby', 'shop-api'].map((n) => `${n}-secure`).sort(),
  );
  for (const name of pipeline) {
    const url = new URL(setting(name, 'DATABASE_URL'));
    expect(url.hostname, name).toBe('postgres-tls');
    expect(certificateNames.get('postgres-tls')).toContain(`DNS:${url.hostname}`);
    expect(url.searchParams.get('sslmode'), name).toBe('verify-full');
    expect(volumeOf(name, url.searchParams.get('sslrootcert') ?? ''), name).toBe('tls-ca');
    expect(dependencies(name), name).toContain('postgres-tls');
  }
});

it('connects the secure pipeline to Kafka over SASL_SSL, with the CA and the SCRAM user', () => {
  const protocols = new Map(
    pairs(setting('kafka-tls', 'KAFKA_LISTENER_SECURITY_PROTOCOL_MAP'), ':'),
  );
  const secure = listeners(setting('kafka-tls', 'KAFKA_ADVERTISED_LISTENERS'))
    .filter(([listener]) => protocols.get(listener) === 'SASL_SSL')
    .map(([, address]) => address);
  const mechanisms = setting('kafka-tls', 'KAFKA_SASL_ENABLED_MECHANISMS').toLowerCase().split(',');
  const scramUser = read('infra/compose/kafka-scram-user.sh');
  const created = /^for mechanism in (.+); do$/m.exec(scramUser)?.[1]?.split(' ') ?? [];
  const clients = pipelineOf('pipeline-secure').filter(
    (name) => service(name).image !== 'sluice-shop-api',
  );
  expect(clients.length).toBe(4);
  for (const name of clients) {
    const ca = new URL(setting(name, 'DATABASE_URL')).searchParams.get('sslrootcert');
    expect(setting(name, 'KAFKA_SSL_CA_FILE'), name).toBe(ca);
    for (const broker of setting(name, 'KAFKA_BROKERS').split(',')) {
      expect(secure, name).toContain(broker);
      expect(certificateNames.get('kafka-tls')).toContain(`DNS:${broker.split(':')[0]}`);
    }
    const mechanism = setting(name, 'KAFKA_SASL_MECHANISM');
    expect(mechanisms, name).toContain(mechanism);
    expect(created, name).toContain(mechanism.toUpperCase());
    expect(scramUser).toContain(`--entity-name ${setting(name, 'KAFKA_SASL_USERNAME')} `);
    expect(setting(name, 'KAFKA_SASL_PASSWORD_FILE'), name).toBe(
      '/run/secrets/kafka-scram-password',
    );
    expect(service(name).secrets, name).toContain('kafka-scram-password');
    const onKafka = service(name).depends_on?.['kafka-tls']?.condition;
    expect([undefined, 'service_healthy'], name).toContain(onKafka);
    expect(dependencies(name), name).toContain('kafka-tls');
  }
});

it('runs three KRaft nodes under the cluster profile, every topic on three with two in sync', () => {
  const nodes = namesIn('cluster');
  expect(nodes).toEqual(['kafka-1', 'kafka-2', 'kafka-3']);
  expect(new Set(nodes.map((name) => setting(name, 'KAFKA_NODE_ID')))).toEqual(
    new Set(['1', '2', '3']),
  );
  const voters = nodes.map((name) => {
    const controller = listeners(setting(name, 'KAFKA_LISTENERS')).find(
      ([listener]) => listener === 'CONTROLLER',
    );
    return `${setting(name, 'KAFKA_NODE_ID')}@${name}:${controller?.[1].split(':').pop() ?? ''}`;
  });
  for (const name of nodes) {
    expect(setting(name, 'KAFKA_CONTROLLER_QUORUM_VOTERS').split(',').sort(), name).toEqual(
      voters.sort(),
    );
    expect(setting(name, 'CLUSTER_ID'), name).toBe(setting('kafka-1', 'CLUSTER_ID'));
    for (const key of ['OFFSETS_TOPIC', 'TRANSACTION_STATE_LOG', 'DEFAULT']) {
      expect(setting(name, `KAFKA_${key}_REPLICATION_FACTOR`), `${name} ${key}`).toBe('3');
    }
    expect(setting(name, 'KAFKA_TRANSACTION_STATE_LOG_MIN_ISR'), name).toBe('2');
    expect(setting(name, 'KAFKA_MIN_INSYNC_REPLICAS'), name).toBe('2');
  }
});

it('points the cluster pipeline at the three brokers, replication left to the cluster', () => {
  const nodes = namesIn('cluster');
  const brokers = nodes.map((name) => {
    const address = advertised(name, setting(name, 'KAFKA_INTER_BROKER_LISTENER_NAME')) ?? '';
    expect(address.split(':')[0], name).toBe(name);
    return address;
  });
  const pipeline = pipelineOf('pipeline-cluster');
  expect(pipeline).toEqual(
    ['console', 'projector', 'relay', 'relay-standby', 'shop-api']
      .map((n) => `${n}-cluster`)
      .sort(),
  );
  for (const name of pipeline.filter((n) => service(n).image !== 'sluice-shop-api')) {
    expect(setting(name, 'KAFKA_BROKERS').split(',').sort(), name).toEqual(brokers.sort());
    for (const node of nodes) expect(dependencies(name), name).toContain(node);
    // Left to auto: derived from the cluster's size.
    const replication = Object.keys(env(name)).filter((key) =>
      /_TOPIC_(REPLICATION_FACTOR|MIN_INSYNC_REPLICAS)$/.test(key),
    );
    expect(replication, name).toEqual([]);
  }
});
