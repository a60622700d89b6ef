// sluice-projector runs a team's own projection module (test/pipeline/fixtures/runner, run from
// its build in test/dist): events written straight to Kafka land in the module's views, through
// the command and through a process that embeds the runner. Whatever is wrong with the modules is
// one line and exit 78 before any connection; --help and --check describe and check a setup.
import { toKafkaRecord, topicFor, type DomainEvent } from '@sluice/contracts';
import {
  createTestDatabase,
  createTopics,
  freePort,
  testKafka,
  testServers,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startService, startedServices, type StartOptions } from '../support/services.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = join(rootDir, 'test', 'dist', 'pipeline', 'fixtures', 'runner');
const { databaseUrl, kafkaBrokers } = testServers();
const prefix = `${uniqueName('runner')}.`;

let database: TestDatabase;
let pool: pg.Pool;

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'runner');
  pool = new pg.Pool({ connectionString: database.url, max: 2 });
  await createTopics(kafkaBrokers, [{ topic: topicFor('ticket', prefix), numPartitions: 3 }]);
});

afterAll(async () => {
  for (const service of startedServices()) service.kill('SIGKILL');
  await pool.end();
  await database.drop();
});

/** Runs sluice-projector to its exit (killed after 30 s): its exit code and its output's lines. */
async function runToExit(env: Record<string, string>, options: StartOptions) {
  const projector = startService('projector', { LOG_LEVEL: 'warn', ...env }, [], options);
  const timer = setTimeout(() => projector.kill('SIGKILL'), 30_000);
  const code = await projector.exited();
  clearTimeout(timer);
  return { code, lines: projector.output().trim().split('\n') };
}

/** A TCP server that counts the connections made to it and closes each at once. */
async function connectionCounter(): Promise<{ port: number; count(): number; close(): void }> {
  let connections = 0;
  const server = net.createServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  const port = await freePort();
  await new Promise<void>((done) => server.listen(port, '127.0.0.1', done));
  return { port, count: () => connections, close: () => server.close() };
}

let ticketVersions = new Map<string, number>();

/** A ticket event of the fixture's catalog, at the ticket's next version. */
function ticketEvent(ticketId: string, type: 'ticket.opened.v1' | 'ticket.closed.v1'): DomainEvent {
  const version = (ticketVersions.get(ticketId) ?? 0) + 1;
  ticketVersions.set(ticketId, version);
  return {
    id: randomUUID(),
    type,
    aggregateType: 'ticket',
    aggregateId: ticketId,
    aggregateVersion: version,
    occurredAt: new Date().toISOString(),
    payload: type === 'ticket.opened.v1' ? { ticketId, title: `Ticket ${ticketId}` } : { ticketId },
    metadata: { correlation_id: 'runner-test' },
  };
}

/** Writes events to the ticket topic as the relay would: CloudEvents records keyed by ticket. */
async function produce(events: readonly DomainEvent[]): Promise<void> {
  const producer = testKafka(kafkaBrokers).producer();
  await producer.connect();
  try {
    await producer.send({
      topic: topicFor('ticket', prefix),
      acks: -1,
      messages: events.map((event) => toKafkaRecord(event, { source: '/runner-test' })),
    });
  } finally {
    await producer.disconnect();
  }
}

async function rows(query: string): Promise<string[]> {
  return (await pool.query<{ row: string }>(query)).rows.map((r) => r.row);
}

const board = () =>
  rows(`SELECT concat_ws('|', ticket_id, status, version) AS row FROM runner.tickets ORDER BY 1`);
const tally = () =>
  rows(`SELECT concat_ws('|', type, count) AS row FROM runner.ticket_tally ORDER BY 1`);

/** Waits until `read` gives `expected`; the error names what it last gave and the output. */
async function expectRows(read: () => Promise<string[]>, expected: string[], output: () => string) {
  let last: string[] = [];
  try {
    await waitFor(
      async () => {
        last = await read().catch(() => []);
        return JSON.stringify(last) === JSON.stringify(expected);
      },
      { timeoutMs: 60_000, intervalMs: 100, message: `rows ${JSON.stringify(expected)}` },
    );
  } catch (error) {
    throw new Error(`last ${JSON.stringify(last)}\n${output().slice(-4000)}`, { cause: error });
  }
}

const runnerEnv = () => ({
  DATABASE_URL: database.url,
  KAFKA_BROKERS: kafkaBrokers.join(','),
  PROJECTOR_TOPIC_PREFIX: prefix,
  PROJECTOR_GROUP_PREFIX: `${prefix}g.`,
  PROJECTOR_METRICS_PORT: '0',
  PROJECTOR_SESSION_TIMEOUT_MS: '6000',
});

describe('sluice-projector with a module that is not what it needs', () => {
  const notFound = (spec: string) =>
    `module_not_found: cannot find module ${spec} (from ${fixtures}): give a path or a package installed there`;
  const cases: [string, number, string[], Record<string, string>, string][] = [
    ['a module that is not there', 78, ['./missing.js'], {}, notFound('./missing.js')],
    [
      'a package that is not installed',
      78,
      ['@acme/missing-views'],
      {},
      notFound('@acme/missing-views'),
    ],
    [
      'a module that throws as it loads',
      78,
      ['./broken.js'],
      {},
      'module_failed: module ./broken.js failed to load: the ticket catalog is not configured',
    ],
    [
      'a module exporting no projection',
      78,
      ['./no-projection.js'],
      {},
      'module_without_projection: module ./no-projection.js exports no projection (export the results of defineProjection from @sluice/projector)',
    ],
    [
      'two projections of one name',
      78,
      ['projections.js', './duplicate.js'],
      {},
      'projection_duplicate: projection ticket_board is exported by both projections.js and ./duplicate.js',
    ],
    [
      'PROJECTOR_PROJECTIONS naming a projection the modules do not export',
      78,
      [],
      { PROJECTOR_MODULES: './projections.js', PROJECTOR_PROJECTIONS: 'ticket_board,ticket_bored' },
      'config_invalid: PROJECTOR_PROJECTIONS names unknown projections: ticket_bored (known: ticket_board, ticket_tally)',
    ],
    [
      'no module at all',
      64,
      [],
      { PROJECTOR_MODULES: '' },
      'modules_missing: no projection module given: name one or more on the command line or in PROJECTOR_MODULES',
    ],
  ];

  it.each(cases)('%s: exit %i, one line, no connection', async (_case, code, args, env, line) => {
    const server = await connectionCounter();
    try {
      const outcome = await runToExit(
        {
          DATABASE_URL: `postgres://nobody:secret@127.0.0.1:${server.port}/none`,
          KAFKA_BROKERS: `127.0.0.1:${server.port}`,
          ...env,
        },
        { args, cwd: fixtures },
      );
      expect(outcome).toEqual({ code, lines: [`sluice-projector: ${line}`] });
      expect(server.count()).toBe(0);
    } finally {
      server.close();
    }
  });
});

describe('sluice-projector --help and --check', () => {
  it('--help lists every variable with its default', async () => {
    const { code, lines } = await runToExit({}, { args: ['--help'] });
    expect(code).toBe(0);
    expect(lines[0]).toBe('Usage: sluice-projector [--check] [--settings-file <path>] <module>...');
    const defaults = Object.fromEntries(
      lines.flatMap((line) => {
        const found = /^ {2}([A-Z_]+) {2}default (\S+);/.exec(line);
        return found === null ? [] : [[found[1], found[2]]];
      }),
    );
    expect(defaults).toEqual({
      DATABASE_URL: '"postgres://postgres@127.0.0.1:54329/sluice"',
      DATABASE_URL_FILE: '""',
      KAFKA_BROKERS: '"127.0.0.1:19092"',
      KAFKA_SSL: 'false',
      KAFKA_SSL_CA_FILE: '""',
      KAFKA_SSL_CERT_FILE: '""',
      KAFKA_SSL_KEY_FILE: '""',
      KAFKA_SSL_REJECT_UNAUTHORIZED: 'true',
      KAFKA_SASL_MECHANISM: '"none"',
      KAFKA_SASL_USERNAME: '""',
      KAFKA_SASL_PASSWORD: '""',
      KAFKA_SASL_PASSWORD_FILE: '""',
      LOG_LEVEL: '"info"',
      PROJECTOR_MODULES: '""',
      PROJECTOR_PROJECTIONS: '""',
      PROJECTOR_METRICS_PORT: '9465',
      PROJECTOR_METRICS_HOST: '"127.0.0.1"',
      PROJECTOR_TOPIC_PREFIX: '""',
      PROJECTOR_GROUP_PREFIX: '"sluice.projection."',
      PROJECTOR_CONSUMER_GROUPS: '"shared"',
      PROJECTOR_TOPIC_PARTITIONS: '6',
      PROJECTOR_TOPIC_REPLICATION_FACTOR: '"auto"',
      PROJECTOR_TOPIC_MIN_INSYNC_REPLICAS: '"auto"',
      PROJECTOR_SESSION_TIMEOUT_MS: '30000',
      PROJECTOR_FETCH_LINGER_MS: '0',
      PROJECTOR_GENERATION_POLL_MS: '1000',
      PROJECTOR_MAX_ATTEMPTS: '3',
      PROJECTOR_STALLED_AFTER_MS: '30000',
      PROJECTOR_STOP_TIMEOUT_MS: '30000',
      PROJECTOR_JOURNEY_RETENTION_HOURS: '168',
    });
  });

  it('--check passes against the real servers for a package resolved from the working directory, and migrates nothing', async () => {
    const check = await createTestDatabase(databaseUrl, 'runner_check');
    try {
      const outcome = await runToExit(
        { DATABASE_URL: check.url, KAFKA_BROKERS: kafkaBrokers.join(',') },
        { args: ['--check', '@sluice/shop-views'], cwd: join(rootDir, 'test') },
      );
      expect(outcome).toEqual({
        code: 0,
        lines: ['sluice-projector: settings valid; every check passed'],
      });
      const client = new pg.Client({ connectionString: check.url });
      await client.connect();
      const { rows: schemas } = await client.query(
        `SELECT 1 FROM pg_namespace WHERE nspname IN ('sluice', 'views')`,
      );
      await client.end();
      expect(schemas).toEqual([]);
    } finally {
      await check.drop();
    }
  });

  it('--check with a module that is not there: that one line, exit 1', async () => {
    const outcome = await runToExit(
      { DATABASE_URL: database.url, KAFKA_BROKERS: kafkaBrokers.join(',') },
      { args: ['--check', './missing.js'], cwd: fixtures },
    );
    expect(outcome).toEqual({
      code: 1,
      lines: [
        `sluice-projector: module_not_found: cannot find module ./missing.js (from ${fixtures}): give a path or a package installed there`,
      ],
    });
  });
});

describe('sluice-projector running a team module', () => {
  it('applies the events on Kafka to every projection of the module, then stops on SIGTERM', async () => {
    ticketVersions = new Map();
    await produce([
      ticketEvent('a', 'ticket.opened.v1'),
      ticketEvent('b', 'ticket.opened.v1'),
      ticketEvent('a', 'ticket.closed.v1'),
    ]);
    const runner = startService('projector', runnerEnv(), [], {
      args: ['./projections.js'],
      cwd: fixtures,
    });
    await expectRows(board, ['a|closed|2', 'b|open|1'], () => runner.output());
    await expectRows(tally, ['ticket.closed.v1|1', 'ticket.opened.v1|2'], () => runner.output());

    await produce([ticketEvent('c', 'ticket.opened.v1')]);
    await expectRows(board, ['a|closed|2', 'b|open|1', 'c|open|1'], () => runner.output());
    runner.kill('SIGTERM');
    expect(await runner.exited()).toBe(0);
  });

  it('runs embedded in a process of its own, from the checkpoints the command left, until stopped, then lets it exit', async () => {
    const child = spawn(process.execPath, [join(fixtures, 'embedded.js')], {
      env: { ...process.env, LOG_LEVEL: 'info', ...runnerEnv() },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((done) => child.once('exit', done));
    try {
      await produce([ticketEvent('b', 'ticket.closed.v1')]);
      await expectRows(board, ['a|closed|2', 'b|closed|2', 'c|open|1'], () => output);
      const address = /embedded: ticket_board at (http:\S+)/.exec(output)?.[1];
      expect((await fetch(`${String(address)}/readyz`)).status).toBe(200);
      // The tally is not hosted here: it stays as the command left it.
      expect(await tally()).toEqual(['ticket.closed.v1|1', 'ticket.opened.v1|3']);
      child.stdin.write('stop\n');
      // Nothing left open: the process exits by itself, with the status the stop resolved with.
      expect(await exited).toBe(0);
      expect(output).toContain('"msg":"stopped"');
      expect(output).toContain('embedded: stopped with 0');
    } finally {
      child.kill('SIGKILL');
    }
  });
});
