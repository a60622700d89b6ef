// `sluice-relay` as a program: --help from its settings' schema, --check that reaches the servers
// and changes nothing, and flags or settings refused before any server is touched.
import { outboxSchemaSql } from '@sluice/outbox';
import {
  createTestDatabase,
  freePort,
  testKafka,
  testServers,
  uniqueName,
  withAdminClient,
} from '@sluice/testkit';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const relayDist = join(rootDir, 'services', 'relay', 'dist');
const { databaseUrl, kafkaBrokers } = testServers();

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall-clock time until it exited. */
  ms: number;
}

/**
 * Runs the built relay with `args` and no environment but `env` and PATH, so no setting of the
 * test run decides the outcome. Killed after `timeoutMs` (its code is then null).
 */
function runRelay(args: string[], env: Record<string, string>, timeoutMs = 30_000): Promise<Run> {
  const started = Date.now();
  const child = spawn(process.execPath, [join(relayDist, 'main.js'), ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((done) => {
    child.once('exit', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

function stderrLines(run: Run): string[] {
  return run.stderr.split('\n').filter((line) => line !== '');
}

/** A TCP server that accepts connections and never answers; it counts them. */
async function silentServer(): Promise<{ address: string; connections(): number }> {
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((socket) => {
    connections += 1;
    sockets.add(socket);
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  onTestFinished(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((closed) => server.close(closed));
  });
  const { port } = server.address() as net.AddressInfo;
  return { address: `127.0.0.1:${port}`, connections: () => connections };
}

/** An ErrorResponse message of PostgreSQL's wire protocol. */
function errorResponse(code: string, message: string): Buffer {
  const fields = Buffer.from(`SFATAL\0VFATAL\0C${code}\0M${message}\0\0`);
  const header = Buffer.alloc(5);
  header.write('E');
  header.writeInt32BE(fields.length + 4, 1);
  return Buffer.concat([header, fields]);
}

/**
 * A PostgreSQL stand-in that asks for a clear-text password and refuses it as PostgreSQL does;
 * it keeps the passwords it was sent.
 */
async function passwordRefusingPostgres(): Promise<{ port: number; passwords: string[] }> {
  const passwords: string[] = [];
  const server = net.createServer((socket) => {
    let greeted = false;
    socket.on('data', (chunk: Buffer) => {
      if (!greeted) {
        greeted = true;
        // AuthenticationCleartextPassword.
        socket.write(Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3]));
      } else if (chunk[0] === 0x70) {
        passwords.push(chunk.subarray(5, chunk.length - 1).toString());
        socket.end(errorResponse('28P01', 'password authentication failed for user "relay"'));
      }
    });
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  onTestFinished(() => new Promise<void>((closed) => server.close(() => closed())));
  return { port: (server.address() as net.AddressInfo).port, passwords };
}

/** A database of this test's own, with `shop.outbox` unless `outbox` is false. */
async function testDatabase(outbox: boolean): Promise<string> {
  const database = await createTestDatabase(databaseUrl, 'relay_cli');
  onTestFinished(() => database.drop());
  if (outbox) await query(database.url, outboxSchemaSql('shop'));
  return database.url;
}

async function query(url: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}

/** Settings pointing the relay at `url` and the test run's Kafka, with names of its own. */
function relaySettings(url: string) {
  return {
    DATABASE_URL: url,
    KAFKA_BROKERS: kafkaBrokers.join(','),
    RELAY_SLOT: uniqueName('relay_cli_slot'),
    RELAY_PUBLICATION: uniqueName('relay_cli_pub'),
    RELAY_TOPIC_PREFIX: `${uniqueName('relay_cli')}.`,
  };
}

describe('sluice-relay --help', () => {
  it('exits 0 and lists every variable of the settings with its default and description', async () => {
    const { relayConfigSchema } = (await import(
      pathToFileURL(join(relayDist, 'config.js')).href
    )) as {
      relayConfigSchema?: {
        properties: Record<string, { default?: unknown; description?: unknown }>;
      };
    };
    const variables = Object.entries(relayConfigSchema?.properties ?? {});
    expect(variables.length).toBeGreaterThan(20);
    const run = await runRelay(['--help'], {}, 20_000);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Usage: sluice-relay /);
    for (const [name, schema] of variables) {
      expect(schema.default, name).toBeDefined();
      expect(schema.description, name).toEqual(expect.any(String));
      expect(run.stdout).toContain(`\n  ${name}  default ${JSON.stringify(schema.default)}; `);
      expect(run.stdout).toContain(`\n      ${String(schema.description)}\n`);
    }
  });
});

describe('sluice-relay refuses a bad command line or bad settings before touching a server', () => {
  it('--check: one line per invalid setting, naming it, and exit status 78', async () => {
    const [postgres, kafka] = [await silentServer(), await silentServer()];
    const run = await runRelay(
      ['--check'],
      {
        DATABASE_URL: `postgres://relay@${postgres.address}/sluice`,
        KAFKA_BROKERS: kafka.address,
        RELAY_TOPIC_PARTITIONS: '0',
        LOG_LEVEL: 'loud',
      },
      20_000,
    );
    expect(run.code).toBe(78);
    const lines = stderrLines(run);
    expect(lines).toHaveLength(2);
    expect(lines.filter((line) => line.includes('RELAY_TOPIC_PARTITIONS'))).toHaveLength(1);
    expect(lines.filter((line) => line.includes('LOG_LEVEL'))).toHaveLength(1);
    expect(postgres.connections() + kafka.connections()).toBe(0);
  });

  it('a normal start with an invalid setting exits 78 naming it', async () => {
    const [postgres, kafka] = [await silentServer(), await silentServer()];
    const run = await runRelay(
      [],
      {
        DATABASE_URL: `postgres://relay@${postgres.address}/sluice`,
        KAFKA_BROKERS: kafka.address,
        RELAY_TOPIC_PARTITIONS: '0',
      },
      20_000,
    );
    expect(run.code).toBe(78);
    expect(stderrLines(run)).toEqual([
      'sluice-relay: RELAY_TOPIC_PARTITIONS must be >= 1 (is "0")',
    ]);
    expect(postgres.connections() + kafka.connections()).toBe(0);
  });

  it('an unknown flag exits 64 naming it', async () => {
    const [postgres, kafka] = [await silentServer(), await silentServer()];
    const run = await runRelay(
      ['--chekc'],
      { DATABASE_URL: `postgres://relay@${postgres.address}/sluice`, KAFKA_BROKERS: kafka.address },
      20_000,
    );
    expect(run.code).toBe(64);
    const lines = stderrLines(run);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('--chekc');
    expect(postgres.connections() + kafka.connections()).toBe(0);
  });
});

describe('sluice-relay --check against servers it cannot use', () => {
  it('names PostgreSQL and Kafka when nothing listens, within seconds', async () => {
    const [postgresPort, kafkaPort] = [await freePort(), await freePort()];
    const run = await runRelay(['--check'], {
      DATABASE_URL: `postgres://relay@127.0.0.1:${postgresPort}/sluice`,
      KAFKA_BROKERS: `127.0.0.1:${kafkaPort}`,
    });
    expect(run.code).toBe(1);
    expect(run.ms).toBeLessThan(15_000);
    const lines = stderrLines(run);
    expect(lines).toHaveLength(2);
    expect(
      lines.filter((line) => line.includes(`PostgreSQL at 127.0.0.1:${postgresPort}/sluice`)),
    ).toHaveLength(1);
    expect(lines.filter((line) => line.includes(`Kafka at 127.0.0.1:${kafkaPort}`))).toHaveLength(
      1,
    );
  });

  it('does not hang on servers that accept connections and never answer', async () => {
    const [postgres, kafka] = [await silentServer(), await silentServer()];
    const run = await runRelay(['--check'], {
      DATABASE_URL: `postgres://relay@${postgres.address}/sluice`,
      KAFKA_BROKERS: kafka.address,
    });
    expect(run.code).toBe(1);
    expect(run.ms).toBeLessThan(15_000);
    const lines = stderrLines(run);
    expect(lines).toHaveLength(2);
    expect(lines.filter((line) => line.includes(`PostgreSQL at ${postgres.address}`))).toHaveLength(
      1,
    );
    expect(lines.filter((line) => line.includes(`Kafka at ${kafka.address}`))).toHaveLength(1);
  });

  it('reports a refused password without ever printing it', async () => {
    const postgres = await passwordRefusingPostgres();
    const password = 'Tr0ub4dor-and-3';
    const run = await runRelay(['--check'], {
      DATABASE_URL: `postgres://relay:${password}@127.0.0.1:${postgres.port}/sluice`,
      KAFKA_BROKERS: kafkaBrokers.join(','),
    });
    expect(postgres.passwords).toEqual([password]);
    expect(run.code).toBe(1);
    const lines = stderrLines(run);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`PostgreSQL at 127.0.0.1:${postgres.port}/sluice`);
    expect(lines[0]).toContain('password authentication failed');
    expect(run.stdout + run.stderr).not.toContain(password);
  });
});

describe('sluice-relay --check against the test servers', () => {
  it('reports a missing outbox table, passes once it exists, and creates nothing', async () => {
    const url = await testDatabase(false);
    const settings = relaySettings(url);
    const missing = await runRelay(['--check'], settings);
    expect(missing.code).toBe(1);
    const lines = stderrLines(missing);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('shop.outbox');
    expect(lines[0]).toContain('outboxMigrations');

    await query(url, outboxSchemaSql('shop'));
    const passing = await runRelay(['--check'], settings);
    expect(passing.stderr).toBe('');
    expect(passing.code).toBe(0);
    expect(passing.stdout).toContain('every check passed');

    const slots = await query(url, 'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [
      settings.RELAY_SLOT,
    ]);
    const created = await query(
      url,
      `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS publication,
              to_regnamespace('sluice') IS NOT NULL AS relay_schema`,
      [settings.RELAY_PUBLICATION],
    );
    expect(slots.rowCount).toBe(0);
    expect(created.rows[0]).toEqual({ publication: false, relay_schema: false });
    const admin = testKafka(kafkaBrokers).admin();
    await admin.connect();
    const topics = await admin.listTopics().finally(() => admin.disconnect());
    expect(topics.filter((topic) => topic.startsWith(settings.RELAY_TOPIC_PREFIX))).toEqual([]);
  });

  it('reports a publication without inserts and a slot of another plugin, one line each', async () => {
    const url = await testDatabase(true);
    const settings = relaySettings(url);
    await query(
      url,
      `CREATE PUBLICATION ${settings.RELAY_PUBLICATION} FOR TABLE shop.outbox WITH (publish = 'update')`,
    );
    await query(url, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [
      settings.RELAY_SLOT,
    ]);
    const run = await runRelay(['--check'], settings);
    expect(run.code).toBe(1);
    const lines = stderrLines(run);
    expect(lines).toHaveLength(2);
    const publication = lines.find((line) => line.includes('publication_mismatch'));
    expect(publication).toContain(settings.RELAY_PUBLICATION);
    expect(publication).toContain('publishes no inserts');
    const slot = lines.find((line) => line.includes('slot_mismatch'));
    expect(slot).toContain(settings.RELAY_SLOT);
    expect(slot).toContain('test_decoding');
  });

  it('reports a slot a relay created and someone dropped', async () => {
    const url = await testDatabase(true);
    const settings = relaySettings(url);
    await query(
      url,
      `CREATE SCHEMA sluice;
       CREATE TABLE sluice.relay_slots (slot_name text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(),
         created_at_lsn pg_lsn, snapshot_done boolean NOT NULL DEFAULT false);
       INSERT INTO sluice.relay_slots VALUES ('${settings.RELAY_SLOT}', now(), '0/16B3748', true);`,
    );
    const run = await runRelay(['--check'], settings);
    expect(run.code).toBe(1);
    const lines = stderrLines(run);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('slot_missing');
    expect(lines[0]).toContain(settings.RELAY_SLOT);
  });

  it('reports a role that may neither replicate, read the outbox, create the publication nor write its tables', async () => {
    const url = await testDatabase(true);
    const role = uniqueName('relay_cli_role');
    await withAdminClient(databaseUrl, (client) => client.query(`CREATE ROLE ${role} LOGIN`));
    onTestFinished(async () => {
      await withAdminClient(databaseUrl, (client) => client.query(`DROP ROLE ${role}`));
    });
    const asRole = new URL(url);
    asRole.username = role;
    const run = await runRelay(['--check'], relaySettings(asRole.toString()));
    expect(run.code).toBe(1);
    const lines = stderrLines(run);
    expect(lines).toHaveLength(4);
    expect(lines.find((line) => line.includes(`ALTER ROLE "${role}" REPLICATION`))).toBeDefined();
    expect(
      lines.find((line) => line.includes(`GRANT SELECT ON shop.outbox TO "${role}"`)),
    ).toBeDefined();
    expect(lines.find((line) => line.includes(`and role ${role} may not create it`))).toBeDefined();
    expect(
      lines.find((line) => line.includes(`GRANT USAGE, CREATE ON SCHEMA sluice TO "${role}"`)),
    ).toBeDefined();
  });
});
