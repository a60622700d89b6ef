// Sluice as a team adopts it: the publishable packages packed, the billing example copied to a
// directory outside the workspace and installed from the tarballs alone (with their public
// dependencies from the registry), type-checked by `tsc --strict`, and run: its own table and
// event types, events appended in its own transactions (plain `pg` and Kysely), relayed by the
// installed `sluice-relay`, projected by the installed `sluice-projector` running the project's
// own module, and read by a Python consumer with the published JSON Schemas.
import { errorMessage } from '@sluice/errors';
import {
  createTestDatabase,
  testServers,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { mkdtemp, readdir, readFile, realpath, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  copyExampleProject,
  packPublishable,
  rootDir,
  runCommand,
  startCommand,
  type RunningCommand,
} from '../support/installed-project.js';

const { databaseUrl, kafkaBrokers } = testServers();
const prefix = `${uniqueName('adopt')}.`;
const topic = `${prefix}outbox.event.invoice`;

let work: string;
let project: string;
let database: TestDatabase;
let pool: pg.Pool;
const running: RunningCommand[] = [];

/** The environment of the team's processes: nothing of the workspace's. */
function teamEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DATABASE_URL: database.url,
    KAFKA_BROKERS: kafkaBrokers.join(','),
    ...extra,
  };
}

const relayEnv = () =>
  teamEnv({
    RELAY_OUTBOX_SCHEMA: 'billing',
    RELAY_SLOT: prefix.slice(0, -1),
    RELAY_PUBLICATION: prefix.slice(0, -1),
    RELAY_TOPIC_PREFIX: prefix,
    RELAY_EVENT_SOURCE: '/billing',
    RELAY_METRICS_PORT: '0',
  });

async function node(args: readonly string[], env = teamEnv()) {
  return runCommand(process.execPath, args, { cwd: project, env });
}

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'adoption');
  pool = new pg.Pool({ connectionString: database.url, max: 2 });
  work = await mkdtemp(join(tmpdir(), 'sluice-adoption-'));
  project = join(work, 'billing');
  const tarballs = await packPublishable(work);
  await copyExampleProject('billing', project, tarballs);
  const installed = await runCommand(
    'npm',
    ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'],
    { cwd: project, env: teamEnv(), timeoutMs: 300_000 },
  );
  expect(installed.code, installed.stderr).toBe(0);
});

afterAll(async () => {
  for (const command of running) command.child.kill('SIGKILL');
  await pool.end();
  await database.drop();
  await rm(work, { recursive: true, force: true });
});

describe('Sluice installed from its packages into a project of its own', () => {
  it('installs nothing of the workspace: no workspace or catalog ranges, no links into it', async () => {
    const scope = join(project, 'node_modules', '@sluice');
    const names = await readdir(scope);
    expect(names).toEqual(
      expect.arrayContaining([
        'contracts',
        'outbox',
        'projector',
        'relay-service',
        'projector-service',
      ]),
    );
    for (const name of names) {
      const dir = await realpath(join(scope, name));
      expect(dir.startsWith(project), `${name} resolves to ${dir}`).toBe(true);
      expect(dir.startsWith(rootDir)).toBe(false);
      const manifest = await readFile(join(dir, 'package.json'), 'utf8');
      expect(manifest).not.toMatch(/"(workspace|catalog):/);
      expect(manifest).not.toContain('"source"');
    }
  });

  it('type-checks with tsc --strict (library declarations included)', async () => {
    const tsc = await node([join('node_modules', 'typescript', 'bin', 'tsc'), '-p', '.']);
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.code).toBe(0);
  });

  it('appends its own events in its own transactions; a payload its catalog refuses changes nothing', async () => {
    expect((await node(['dist/migrate.js'])).code).toBe(0);
    const demo = await node(['dist/demo.js', '12']);
    expect(demo.code, demo.stderr).toBe(0);
    const written = JSON.parse(demo.stdout) as { invoices: string[]; refused: string };
    expect(written.invoices).toHaveLength(12);
    expect(written.refused).toBe('event_payload_invalid');
    const { rows } = await pool.query<{ events: string; highest: number }>(
      `SELECT count(*) AS events, max(aggregate_version)::int AS highest FROM billing.outbox`,
    );
    // Invoice n has n payments: 12 issued + 0 + 1 + … + 11 paid; the refused payment is not there.
    expect(rows[0]).toEqual({ events: String(12 + 66), highest: 12 });
  });

  it('sluice-relay --check passes against the real servers and creates nothing', async () => {
    const check = await runCommand(
      join(project, 'node_modules', '.bin', 'sluice-relay'),
      ['--check'],
      {
        cwd: project,
        env: relayEnv(),
      },
    );
    expect(check.stderr).toBe('');
    expect(check.code).toBe(0);
    const { rowCount } = await pool.query(
      'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1',
      [prefix.slice(0, -1)],
    );
    expect(rowCount).toBe(0);
  });

  it('the installed sluice-relay and sluice-projector build the view: it equals the table it folds, before and after new writes', async () => {
    running.push(startCommand(bin('sluice-relay'), [], { cwd: project, env: relayEnv() }));
    running.push(
      startCommand(bin('sluice-projector'), ['./dist/projections.js'], {
        cwd: project,
        env: projectorEnv(),
      }),
    );
    await expectViewEqualsTable(90_000);
    const more = await node(['dist/demo.js', '3']);
    expect(more.code, more.stderr).toBe(0);
    await expectViewEqualsTable(60_000);
    const { rows } = await pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM sluice.parked_events',
    );
    expect(rows[0]?.n).toBe(0);
  });

  it('a consumer in Python reads the same events with the published JSON Schemas, in version order', async () => {
    expect((await node(['dist/write-schemas.js'])).code).toBe(0);
    const python = join(rootDir, 'examples', 'consumers', 'python');
    const site = join(work, 'python');
    const pip = await runCommand(
      'python3',
      [
        '-m',
        'pip',
        'install',
        '--quiet',
        '--disable-pip-version-check',
        '--target',
        site,
        '-r',
        'requirements.txt',
      ],
      { cwd: python, timeoutMs: 180_000 },
    );
    expect(pip.code, pip.stderr).toBe(0);
    const expected = 12 + 66 + 3 + 3;
    const consumed = await runCommand(
      'python3',
      [
        join(python, 'consume.py'),
        topic,
        join(project, 'schemas'),
        '--max',
        String(expected),
        '--group',
        `${prefix}python`,
      ],
      { cwd: project, env: { ...teamEnv(), PYTHONPATH: site }, timeoutMs: 60_000 },
    );
    expect(consumed.code, consumed.stderr).toBe(0);
    const events = consumed.stdout
      .trim()
      .split('\n')
      .map(
        (line) =>
          JSON.parse(line) as {
            aggregateId: string;
            version: number;
            type: string;
            errors: string[];
          },
      );
    expect(events).toHaveLength(expected);
    expect(events.flatMap((event) => event.errors)).toEqual([]);
    expectVersionOrder(events);
  });

  it('a consumer in TypeScript with its own kafkajs reads them with readEvent, typed by the catalog', async () => {
    const expected = 12 + 66 + 3 + 3;
    const consumed = await runCommand(
      process.execPath,
      ['dist/consume.js', topic, String(expected), `${prefix}typescript`],
      { cwd: project, env: teamEnv(), timeoutMs: 60_000 },
    );
    expect(consumed.code, consumed.stderr).toBe(0);
    const events = consumed.stdout
      .trim()
      .split('\n')
      .map(
        (line) =>
          JSON.parse(line) as { aggregateId: string; version: number; type: string; what: string },
      );
    expect(events).toHaveLength(expected);
    const issued = events.filter((event) => event.type === 'invoice.issued.v1');
    expect(issued).toHaveLength(15);
    expect(issued.every((event) => event.what.startsWith('issued to customer '))).toBe(true);
    expectVersionOrder(events);
  });

  it('both programs stop cleanly on SIGTERM', async () => {
    await expectStopsCleanly(running.splice(0));
  });

  it('runs the projection in the team’s own process from the checkpoints the program left', async () => {
    running.push(startCommand(bin('sluice-relay'), [], { cwd: project, env: relayEnv() }));
    running.push(
      startCommand(process.execPath, ['dist/embedded.js'], { cwd: project, env: projectorEnv() }),
    );
    const more = await node(['dist/demo.js', '2']);
    expect(more.code, more.stderr).toBe(0);
    await expectViewEqualsTable(60_000);
    await expectStopsCleanly(running.splice(0));
  });
});

function bin(name: string): string {
  return join(project, 'node_modules', '.bin', name);
}

function projectorEnv(): NodeJS.ProcessEnv {
  return teamEnv({
    PROJECTOR_TOPIC_PREFIX: prefix,
    PROJECTOR_GROUP_PREFIX: `${prefix}group.`,
    PROJECTOR_METRICS_PORT: '0',
  });
}

/** Each aggregate's events come one version after the other, from 1. */
function expectVersionOrder(events: readonly { aggregateId: string; version: number }[]): void {
  const versions = new Map<string, number>();
  for (const event of events) {
    expect(event.version, event.aggregateId).toBe((versions.get(event.aggregateId) ?? 0) + 1);
    versions.set(event.aggregateId, event.version);
  }
}

/** SIGTERM to each of `commands`: every one exits 0. */
async function expectStopsCleanly(commands: readonly RunningCommand[]): Promise<void> {
  for (const command of commands) command.child.kill('SIGTERM');
  const codes = await Promise.all(commands.map((command) => command.exited));
  const outputs = commands.map((command) => command.output().slice(-2000)).join('\n');
  expect(codes, outputs).toEqual(commands.map(() => 0));
}

/** Waits until the projection holds exactly the rows of the table its events describe. */
async function expectViewEqualsTable(timeoutMs: number): Promise<void> {
  const table = `SELECT id::text, customer, amount_cents::bigint, paid_cents::bigint, version
                   FROM billing.invoices ORDER BY id`;
  const view = `SELECT invoice_id::text AS id, customer, amount_cents, paid_cents, version
                  FROM billing_views.invoice_balances ORDER BY invoice_id`;
  const outputs = () => running.map((command) => command.output().slice(-3000)).join('\n---\n');
  try {
    await waitFor(
      async () => {
        const [state, projected] = await Promise.all([pool.query(table), pool.query(view)]);
        return JSON.stringify(state.rows) === JSON.stringify(projected.rows);
      },
      { timeoutMs, message: 'the view to equal billing.invoices' },
    );
  } catch (error) {
    throw new Error(`${errorMessage(error)}\n${outputs()}`, { cause: error });
  }
}
