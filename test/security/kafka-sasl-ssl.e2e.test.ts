// Kafka over TLS and SASL: the whole pipeline through the embedded stack's SASL_SSL listener with
// SCRAM-SHA-512 and the CA verified; every other mechanism (PLAIN, SCRAM-SHA-256) and mutual TLS
// against the same broker, through the services' checks and a record sent and fetched back; and
// the refusals a start cannot get past (a wrong password, an unknown CA, a certificate not valid
// for the host name, a client certificate the brokers do not trust), each ending the relay and
// the projector at once with one line naming the cause and an exit code of its own, the password
// never printed.
import { createKafka, kafkaSecurityOf, parseBrokers } from '@sluice/kafka';
import { ensureCertificates, type Certificates } from '@sluice/stack';
import { createTopicsWith, testServers, uniqueName } from '@sluice/testkit';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { shoppingWorkload, startPipeline, type Pipeline } from '../support/pipeline.js';
import { startService, startedServices, type ServiceProcess } from '../support/services.js';

const secure = inject('kafkaSecure');
const password = secure === null ? '' : readFileSync(secure.passwordFile, 'utf8').trim();
const WRONG_PASSWORD = 'not-the-sluice-password';

/** Settings that reach the SASL_SSL listener as the stack's SCRAM user, the CA verified. */
function secureEnv(overrides: Record<string, string> = {}): Record<string, string> {
  if (secure === null) throw new Error('the embedded stack has no SASL_SSL listener');
  return {
    KAFKA_BROKERS: secure.brokers.join(','),
    KAFKA_SSL_CA_FILE: secure.caFile,
    KAFKA_SASL_MECHANISM: 'scram-sha-512',
    KAFKA_SASL_USERNAME: secure.username,
    KAFKA_SASL_PASSWORD_FILE: secure.passwordFile,
    ...overrides,
  };
}

/** A TCP relay from 127.0.0.2 to the SASL_SSL listener: the same broker by a name its certificate lacks. */
async function otherAddress(): Promise<{ broker: string; close(): void }> {
  const [host = '', port = ''] = (secure?.brokers[0] ?? '').split(':');
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), host === 'localhost' ? '127.0.0.1' : host);
    client.pipe(upstream).pipe(client);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.2', listening));
  const { port: local } = server.address() as net.AddressInfo;
  return { broker: `127.0.0.2:${local}`, close: () => server.close() };
}

describe.runIf(secure !== null)('Kafka over SASL_SSL', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    // PostgreSQL too, over TLS with the host name verified: the stack's server has TLS on.
    const server = new URL(testServers().databaseUrl);
    server.searchParams.set('sslmode', 'verify-full');
    server.searchParams.set('sslrootcert', secure?.caFile ?? '');
    pipeline = await startPipeline(
      'saslssl',
      {
        // The relay takes the password itself, the projector its file: neither may print it.
        relay: secureEnv({ KAFKA_SASL_PASSWORD: password, KAFKA_SASL_PASSWORD_FILE: '' }),
        projector: secureEnv(),
      },
      { databaseServerUrl: server.toString() },
    );
  });

  afterAll(() => pipeline.close());

  it('carries the events from the outbox to the views with SCRAM-SHA-512 and the CA verified, PostgreSQL under verify-full', async () => {
    const projector = pipeline.startProjector();
    await projector.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: 'the projector to consume over SASL_SSL',
    });
    await shoppingWorkload(pipeline, { carts: 3, rounds: 3, tag: uniqueName('sasl') });
    await pipeline.expectCartSummariesConverge(60_000);
    for (const service of startedServices()) expect(service.output()).not.toContain(password);
    const { rows } = await pipeline.pool.query<{ name: string; ssl: boolean }>(
      `SELECT a.application_name AS name, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
        WHERE a.datname = current_database()`,
    );
    expect(rows.filter((row) => !row.ssl)).toEqual([]);
    expect(rows.map((row) => row.name)).toEqual(
      expect.arrayContaining([
        'shop-api',
        'sluice-projector',
        expect.stringMatching(/^sluice-relay/),
      ]),
    );
  });

  it('stops the relay and the projector at start, naming the refusal, with its own exit code', async () => {
    const other = await otherAddress();
    const cases = [
      {
        env: secureEnv({ KAFKA_SASL_PASSWORD: WRONG_PASSWORD, KAFKA_SASL_PASSWORD_FILE: '' }),
        code: 77,
        line: /refused the SASL credentials/,
      },
      {
        env: secureEnv({ KAFKA_SSL_CA_FILE: await otherCaFile() }),
        code: 76,
        line: /certificate that is not trusted/,
      },
      {
        env: secureEnv({ KAFKA_BROKERS: other.broker }),
        code: 68,
        line: /certificate not valid for that host name/,
      },
    ];
    const database = { DATABASE_URL: databaseUrlOf(pipeline) };
    const started = cases.flatMap(({ env, code, line }) =>
      (['relay', 'projector'] as const).map((name) => ({
        service: startService(name, {
          ...database,
          ...env,
          RELAY_METRICS_PORT: '0',
          PROJECTOR_METRICS_PORT: '0',
        }),
        code,
        line,
      })),
    );
    try {
      const exits = await Promise.all(started.map(({ service }) => exitWithin(service, 20_000)));
      expect(exits).toEqual(started.map(({ code }) => code));
      for (const { service, line } of started) {
        const output = service.output();
        expect(output.split('\n').filter((text) => line.test(text))).toHaveLength(1);
        expect(output).not.toContain(WRONG_PASSWORD);
        expect(output).not.toContain(password);
      }
    } finally {
      other.close();
    }
  });

  it('connects with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, with and without a client certificate', async () => {
    const certificates = await stackCertificates();
    const client = {
      KAFKA_SSL_CERT_FILE: certificates.clientCertFile,
      KAFKA_SSL_KEY_FILE: certificates.clientKeyFile,
    };
    const modes = [
      { KAFKA_SASL_MECHANISM: 'plain' },
      { KAFKA_SASL_MECHANISM: 'plain', ...client },
      { KAFKA_SASL_MECHANISM: 'scram-sha-256' },
      { KAFKA_SASL_MECHANISM: 'scram-sha-512', ...client },
    ];
    for (const mode of modes) {
      const env = secureEnv(mode);
      const checks = (['relay', 'projector'] as const).map((name) =>
        startService(name, { DATABASE_URL: databaseUrlOf(pipeline), ...env }, [], {
          args: ['--check'],
        }),
      );
      const exits = await Promise.all(checks.map((check) => exitWithin(check, 30_000)));
      const outputs = checks.map((check) => check.output());
      expect({ mode, exits, outputs }).toMatchObject({ exits: [0, 0] });
      // The data path too: a record produced and fetched back over the same settings.
      expect({ mode, fetched: await roundTrip(env) }).toEqual({ mode, fetched: true });
    }
  });

  it('names a client certificate the brokers refuse: the services stop at start with 77, --check says it', async () => {
    const foreign = await foreignClientCertificate();
    const env = secureEnv({ KAFKA_SSL_CERT_FILE: foreign.cert, KAFKA_SSL_KEY_FILE: foreign.key });
    const database = { DATABASE_URL: databaseUrlOf(pipeline) };
    const services = (['relay', 'projector'] as const).map((name) =>
      startService(name, {
        ...database,
        ...env,
        RELAY_METRICS_PORT: '0',
        PROJECTOR_METRICS_PORT: '0',
      }),
    );
    const check = startService('relay', { ...database, ...env }, [], { args: ['--check'] });
    const exits = await Promise.all(
      [...services, check].map((service) => exitWithin(service, 30_000)),
    );
    expect(exits).toEqual([77, 77, 1]);
    for (const service of [...services, check]) {
      const lines = service.output().split('\n');
      expect(lines.filter((line) => line.includes('refused the client certificate'))).toHaveLength(
        1,
      );
      expect(service.output()).not.toContain(password);
    }
    expect(check.output()).toContain('kafka_auth_failed');
  });

  it('reports a refused password as one line of --check', async () => {
    const check = startService(
      'relay',
      {
        DATABASE_URL: databaseUrlOf(pipeline),
        ...secureEnv({ KAFKA_SASL_PASSWORD: WRONG_PASSWORD, KAFKA_SASL_PASSWORD_FILE: '' }),
      },
      [],
      { args: ['--check'] },
    );
    expect(await exitWithin(check, 30_000)).toBe(1);
    const lines = check.output().split('\n');
    expect(lines.filter((line) => line.includes('kafka_auth_failed'))).toHaveLength(1);
    expect(check.output()).not.toContain(WRONG_PASSWORD);
  });
});

/** The stack's certificates: its CA's, another CA's, a client certificate its CA signed. */
function stackCertificates(): Promise<Certificates> {
  return ensureCertificates(dirname(secure?.caFile ?? ''));
}

/** The certificate of a CA that signed nothing the broker presents. */
async function otherCaFile(): Promise<string> {
  return (await stackCertificates()).otherCaFile;
}

/** A client certificate and key signed by the other CA, which the brokers do not trust. */
async function foreignClientCertificate(): Promise<{ cert: string; key: string }> {
  const ca = (await stackCertificates()).otherCaFile;
  const dir = await mkdtemp(join(tmpdir(), 'sluice-foreign-'));
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=intruder',
    '-keyout',
    'c.key',
    '-out',
    'c.csr',
  ]);
  writeFileSync(join(dir, 'c.ext'), 'extendedKeyUsage=clientAuth\n');
  run([
    'x509',
    '-req',
    '-in',
    'c.csr',
    '-CA',
    ca,
    '-CAkey',
    ca.replace(/\.crt$/, '.key'),
    '-CAcreateserial',
    '-days',
    '1',
    '-out',
    'c.crt',
    '-extfile',
    'c.ext',
  ]);
  return { cert: join(dir, 'c.crt'), key: join(dir, 'c.key') };
}

/**
 * Produces a record to a topic of its own over `env`'s settings, as the services read them, and
 * fetches it back: whether it came back.
 */
async function roundTrip(env: Record<string, string>): Promise<boolean> {
  const { KAFKA_BROKERS: brokers = '', ...settings } = env;
  const kafka = createKafka({
    clientId: 'sluice-auth-test',
    brokers: parseBrokers(brokers),
    security: kafkaSecurityOf(settings),
  });
  const topic = uniqueName('auth_modes');
  const admin = kafka.admin();
  const producer = kafka.producer();
  const consumer = kafka.consumer({ groupId: topic });
  try {
    await admin.connect();
    await createTopicsWith(admin, [{ topic, numPartitions: 1 }]);
    await producer.connect();
    await producer.send({ topic, messages: [{ value: topic }] });
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    return await new Promise<boolean>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nothing fetched from ${topic}`)), 30_000);
      void consumer.run({
        eachMessage: async ({ message }) => {
          clearTimeout(timer);
          resolve(message.value?.toString() === topic);
          await Promise.resolve();
        },
      });
    });
  } finally {
    await consumer.disconnect();
    await producer.disconnect();
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
  }
}

/** The pipeline's database, as its pool connects to it. */
function databaseUrlOf(pipeline: Pipeline): string {
  return (pipeline.pool.options as { connectionString: string }).connectionString;
}

/** The exit code of `service`, which must exit within `timeoutMs`. */
async function exitWithin(service: ServiceProcess, timeoutMs: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      service.kill('SIGKILL');
      reject(
        new Error(`${service.name} still running after ${timeoutMs} ms:\n${service.output()}`),
      );
    }, timeoutMs);
  });
  try {
    return await Promise.race([service.exited(), late]);
  } finally {
    clearTimeout(timer);
  }
}
