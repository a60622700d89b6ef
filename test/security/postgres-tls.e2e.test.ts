// Every PostgreSQL connection of the pipeline over TLS with verify-full, proven from the server's
// side (pg_stat_ssl); and the TLS failures a service cannot recover from — an unknown CA, a host
// name the certificate does not list, a server without TLS — each stop it at start, with one
// clear line and an exit code, and no password anywhere.
import { createPostgresServer, ensureCertificates, type Certificates } from '@sluice/stack';
import type { PostgresServer } from '@sluice/stack';
import { freePort, uniqueName } from '@sluice/testkit';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shoppingWorkload, startPipeline, type Pipeline } from '../support/pipeline.js';
import { startService, startedServices, type ServiceProcess } from '../support/services.js';

const PASSWORD = 'never-printed-7f3a';
/** ExitCode of @sluice/service-kit: certificateUntrusted, hostnameMismatch, needsOperator. */
const EXIT = { untrusted: 76, hostname: 68, needsOperator: 78 };
let workDir: string;
let certs: Certificates;
let server: PostgresServer;
/** Answers every SSLRequest with 'N', as a PostgreSQL server without TLS does. */
let plaintext: Server;
let plaintextPort: number;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'sluice-pg-tls-'));
  // As root, PostgreSQL runs as the postgres user, who must reach the data directory.
  await chmod(workDir, 0o755);
  certs = await ensureCertificates(join(workDir, 'certs'));
  server = createPostgresServer({
    dataDir: join(workDir, 'data'),
    port: await freePort(),
    tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile },
    listenAddresses: ['127.0.0.1', '127.0.0.2'],
    settings: { wal_level: 'logical', max_connections: '60', shared_buffers: '32MB' },
  });
  await server.start();
  plaintextPort = await freePort();
  plaintext = createServer((socket) => socket.once('data', () => socket.end('N')));
  await new Promise<void>((resolve) => plaintext.listen(plaintextPort, '127.0.0.1', resolve));
});

afterAll(async () => {
  await new Promise((resolve) => plaintext.close(resolve));
  await server.stop('immediate');
  await rm(workDir, { recursive: true, force: true });
});

/** A URL of the test server as `host`, with the password the output must never show. */
function url(host: string, query: string, database = 'postgres'): string {
  return `postgres://postgres:${PASSWORD}@${host}:${server.port}/${database}?${query}`;
}

describe('node-postgres reads sslmode as libpq does', () => {
  /** How a service connects: its settings add `uselibpqcompat=true` to DATABASE_URL. */
  async function connects(target: string): Promise<string> {
    const client = new pg.Client({ connectionString: `${target}&uselibpqcompat=true` });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query<{ ssl: boolean }>(
        'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
      );
      return rows[0]?.ssl === true ? 'tls' : 'plaintext';
    } catch (error) {
      return (error as { code?: string }).code ?? (error as Error).message;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  it('verifies what each mode promises, no more', async () => {
    const ca = `sslrootcert=${certs.caFile}`;
    const other = `sslrootcert=${certs.otherCaFile}`;
    const found = {
      disable: await connects(url('127.0.0.2', 'sslmode=disable')),
      prefer: await connects(url('127.0.0.2', `sslmode=prefer&${other}`)),
      require: await connects(url('127.0.0.2', 'sslmode=require')),
      requireWithCa: await connects(url('127.0.0.2', `sslmode=require&${other}`)),
      verifyCa: await connects(url('127.0.0.2', `sslmode=verify-ca&${ca}`)),
      verifyCaUnknown: await connects(url('127.0.0.2', `sslmode=verify-ca&${other}`)),
      verifyFull: await connects(url('localhost', `sslmode=verify-full&${ca}`)),
      verifyFullMismatch: await connects(url('127.0.0.2', `sslmode=verify-full&${ca}`)),
    };
    expect(found).toEqual({
      disable: 'plaintext',
      prefer: 'tls',
      require: 'tls',
      // libpq: a root certificate makes `require` check the chain (as verify-ca).
      requireWithCa: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      verifyCa: 'tls',
      verifyCaUnknown: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      verifyFull: 'tls',
      verifyFullMismatch: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });
});

describe('the pipeline over verify-full', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await startPipeline(
      'pgtls',
      {},
      { databaseServerUrl: url('127.0.0.1', `sslmode=verify-full&sslrootcert=${certs.caFile}`) },
    );
  });

  afterAll(() => pipeline.close());

  it('runs with every PostgreSQL connection encrypted, the walsender too', async () => {
    const projector = pipeline.startProjector();
    await projector.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: 'the projector to consume',
    });
    await shoppingWorkload(pipeline, { carts: 3, rounds: 2, tag: uniqueName('pgtls') });
    await pipeline.expectCartSummariesConverge(60_000);

    const { rows } = await pipeline.pool.query<{ name: string; kind: string; ssl: boolean }>(
      `SELECT a.application_name AS name, a.backend_type AS kind, s.ssl
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
        WHERE a.datname = current_database()`,
    );
    expect(rows.filter((row) => !row.ssl)).toEqual([]);
    const names = new Set(rows.map((row) => row.name));
    for (const name of ['shop-api', 'sluice-relay-leader', 'sluice-projector']) {
      expect(names).toContain(name);
    }
    expect(rows.some((row) => row.kind === 'walsender')).toBe(true);
    for (const service of startedServices()) expect(service.output()).not.toContain(PASSWORD);
  });
});

describe('a TLS failure at start', () => {
  /** shop-api and a relay on `databaseUrl`: both must exit at start. */
  function startBoth(databaseUrl: string): ServiceProcess[] {
    const common = { DATABASE_URL: databaseUrl, KAFKA_BROKERS: '127.0.0.1:1' };
    return [
      startService('shop-api', { ...common, API_PORT: '0' }),
      startService('relay', { ...common, RELAY_METRICS_PORT: '0' }),
    ];
  }

  async function expectStopped(
    services: ServiceProcess[],
    exitCode: number,
    errorCode: string,
    says: RegExp,
  ): Promise<void> {
    for (const service of services) {
      expect(await service.exited(), service.output()).toBe(exitCode);
      const fatal = service
        .output()
        .split('\n')
        .filter((line) => line.includes('"level":"fatal"'));
      expect(fatal, service.name).toHaveLength(1);
      expect(fatal[0]).toContain(`"code":"${errorCode}"`);
      expect(fatal[0]).toMatch(says);
      expect(service.output()).not.toContain(PASSWORD);
    }
  }

  it('an unknown CA: 76, certificate not trusted', async () => {
    const services = startBoth(
      url('127.0.0.1', `sslmode=verify-full&sslrootcert=${certs.otherCaFile}`),
    );
    await expectStopped(
      services,
      EXIT.untrusted,
      'postgres_tls_untrusted',
      /TLS certificate is not trusted .*set sslrootcert/,
    );
  });

  it('a host name the certificate does not list: 68', async () => {
    const services = startBoth(url('127.0.0.2', `sslmode=verify-full&sslrootcert=${certs.caFile}`));
    await expectStopped(
      services,
      EXIT.hostname,
      'postgres_tls_hostname',
      /not for this host name .*127\.0\.0\.2/,
    );
  });

  it('a server without TLS under verify-full: 78', async () => {
    const target = `postgres://postgres:${PASSWORD}@127.0.0.1:${plaintextPort}/postgres?sslmode=verify-full&sslrootcert=${certs.caFile}`;
    await expectStopped(
      startBoth(target),
      EXIT.needsOperator,
      'postgres_tls_unsupported',
      /does not offer TLS/,
    );
  });
});
