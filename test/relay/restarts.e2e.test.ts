// PostgreSQL and Kafka restarts under a running relay, on servers of this file's own (the
// shared stack keeps serving the other files): nothing lost, order kept, and the slot never
// confirmed past an event Kafka has not acknowledged.
import {
  createKafkaServer,
  createPostgresServer,
  type KafkaServer,
  type PostgresServer,
} from '@sluice/stack';
import { Lsn } from '@sluice/relay';
import { freePort, waitFor } from '@sluice/testkit';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkDelivery,
  confirmedFlush,
  createRelayFixture,
  exitCodeWithin,
  outboxIndex,
  readTopic,
  startRelay,
  topicSize,
  writeOutboxEvents,
  type RelayFixture,
  type RelayProcess,
  hasLocalServers,
} from './harness.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe.skipIf(!hasLocalServers())('relay under server restarts', () => {
  let tempDir: string;
  let postgres: PostgresServer;
  let kafka: KafkaServer;
  let brokers: string[];
  const relays: RelayProcess[] = [];
  const fixtures: RelayFixture[] = [];

  beforeAll(async () => {
    tempDir = await mkdtemp(join(tmpdir(), 'sluice-restarts-'));
    await chmod(tempDir, 0o755); // as root, PostgreSQL runs as the postgres user
    // Two draws, not port + 1: the port next to a free one may well be taken.
    const kafkaPort = await freePort();
    let controllerPort = await freePort();
    while (controllerPort === kafkaPort) controllerPort = await freePort();
    postgres = createPostgresServer({
      dataDir: join(tempDir, 'pg'),
      port: await freePort(),
      settingsFile: join(rootDir, 'infra', 'postgres', 'sluice.conf'),
      settings: { shared_buffers: '64MB' },
    });
    kafka = createKafkaServer({
      kafkaHome: join(rootDir, 'infra', 'kafka'),
      dataDir: join(tempDir, 'kafka'),
      port: kafkaPort,
      controllerPort,
      heap: '512m',
    });
    brokers = kafka.brokers;
    await Promise.all([postgres.start(), kafka.start()]);
  });

  afterAll(async () => {
    for (const relay of relays) relay.kill('SIGKILL');
    await Promise.all(relays.map((relay) => relay.exited()));
    for (const fixture of fixtures) await fixture.close().catch(() => undefined);
    await kafka.stop({ kill: true });
    await postgres.stop('immediate');
    await rm(tempDir, { recursive: true, force: true });
  });

  async function fixtureFor(name: string): Promise<RelayFixture> {
    const fixture = await createRelayFixture(postgres.url(), name);
    fixtures.push(fixture);
    return fixture;
  }

  /** Writes `rounds` transactions of `aggregates` events, riding out server restarts. */
  async function writeThrough(
    fixture: RelayFixture,
    rounds: number,
    aggregates: number,
  ): Promise<void> {
    for (let round = 0; round < rounds;) {
      try {
        await writeOutboxEvents(fixture.pool, { aggregates, perAggregate: 1 });
        round += 1;
      } catch {
        await waitFor(() => postgres.isRunning(), {
          timeoutMs: 60_000,
          message: 'PostgreSQL back',
        });
      }
    }
  }

  async function expectAllDelivered(fixture: RelayFixture): Promise<number> {
    const outbox = await outboxIndex(fixture.pool);
    // Read inside the wait: just after a broker restart its partitions may have no leader yet.
    let records: Awaited<ReturnType<typeof readTopic>> = [];
    await waitFor(
      async () => {
        records = await readTopic(brokers, fixture.topic);
        return new Set(records.map((r) => r.id)).size >= outbox.size;
      },
      { timeoutMs: 120_000, intervalMs: 500, message: 'every event in Kafka' },
    );
    const delivery = checkDelivery(outbox, records);
    expect(delivery.missing).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    expect(delivery.orderViolations).toEqual([]);
    return delivery.duplicates;
  }

  it('PostgreSQL restarting immediately (crash + recovery) mid-stream loses nothing', async () => {
    const fixture = await fixtureFor('pg_restart');
    const relay = startRelay(fixture, brokers);
    relays.push(relay);
    // Streaming, not the initial snapshot, is what the restart must interrupt.
    await relay.waitForOutput('"msg":"replication prepared"', {
      timeoutMs: 30_000,
      message: 'relay ready',
    });
    const writer = writeThrough(fixture, 60, 500);
    await waitFor(async () => (await topicSize(brokers, fixture.topic)) >= 3000, {
      timeoutMs: 60_000,
      message: 'publishing',
    });
    await postgres.restart('immediate');
    await writer;
    const duplicates = await expectAllDelivered(fixture);
    expect(relay.output()).toMatch(
      /replication stream failed; reconnecting|leadership lost|relay failed; retrying/,
    );
    console.log(JSON.stringify({ postgresRestart: { events: 30_000, duplicates } }));
    relay.kill('SIGTERM');
    expect(await relay.exited()).toBe(0);
  });

  it('a Kafka broker restart mid-stream loses nothing', async () => {
    const fixture = await fixtureFor('kafka_restart');
    const relay = startRelay(fixture, brokers);
    relays.push(relay);
    await relay.waitForOutput('"msg":"replication prepared"', {
      timeoutMs: 30_000,
      message: 'relay ready',
    });
    const writer = writeThrough(fixture, 40, 500);
    await waitFor(async () => (await topicSize(brokers, fixture.topic)) >= 2000, {
      timeoutMs: 60_000,
      message: 'publishing',
    });
    await kafka.stop();
    await kafka.start();
    await writer;
    const duplicates = await expectAllDelivered(fixture);
    console.log(JSON.stringify({ kafkaRestart: { events: 20_000, duplicates } }));
    relay.kill('SIGTERM');
    expect(await relay.exited()).toBe(0);
  });

  it('never confirms the slot past events Kafka has not acknowledged', async () => {
    const fixture = await fixtureFor('never_ahead');
    const relay = startRelay(fixture, brokers);
    relays.push(relay);
    await writeOutboxEvents(fixture.pool, { aggregates: 100, perAggregate: 1 });
    await waitFor(async () => (await topicSize(brokers, fixture.topic)) >= 100, {
      timeoutMs: 60_000,
      message: 'first events',
    });

    await kafka.stop();
    await writeOutboxEvents(fixture.pool, { aggregates: 100, perAggregate: 3 });
    // The relay has read them and keeps failing to send them; keepalives keep arriving.
    await waitFor(() => (relay.output().match(/Kafka send failed; retrying/g) ?? []).length >= 3, {
      timeoutMs: 60_000,
      message: 'the relay to retry the stuck batch three times',
    });
    const confirmedWhileStuck = await confirmedFlush(fixture.pool, fixture.slot);

    await kafka.start();
    await expectAllDelivered(fixture);
    // A keepalive may confirm a position inside the stuck transaction's WAL (decoding had not
    // reached its commit yet; PostgreSQL resends a transaction whose commit record starts at or
    // after the confirmed position), never past the start of its commit record.
    const stuck = (await readTopic(brokers, fixture.topic)).filter((r) => r.version >= 2);
    expect(stuck.length).toBeGreaterThanOrEqual(300);
    const stuckCommit = Lsn.parse(stuck[0]?.headers.ce_commitlsn ?? '');
    expect(stuck.every((r) => r.headers.ce_commitlsn === Lsn.format(stuckCommit))).toBe(true);
    expect(confirmedWhileStuck).toBeLessThanOrEqual(stuckCommit);

    const { rows: after } = await fixture.pool.query<{ lsn: string }>(
      `SELECT (pg_current_wal_lsn() - '0/0')::text AS lsn`,
    );
    const written = BigInt(after[0]?.lsn ?? '0');
    await waitFor(async () => (await confirmedFlush(fixture.pool, fixture.slot)) >= written, {
      timeoutMs: 30_000,
      message: 'the slot to move on once Kafka is back',
    });
    relay.kill('SIGTERM');
    expect(await relay.exited()).toBe(0);
  });

  // Runs last: it lowers this server's max_slot_wal_keep_size.
  it('refuses to start, with exit 78 and slot_lost, when PostgreSQL invalidated its slot', async () => {
    const fixture = await fixtureFor('slot_lost');
    const first = startRelay(fixture, brokers);
    relays.push(first);
    // A slot whose set-up a stop interrupted is made anew at the next start, lost or not: the
    // events must come through the stream, after the initial snapshot is recorded as done.
    await first.waitForOutput('"msg":"initial snapshot published"', {
      timeoutMs: 30_000,
      message: 'the initial snapshot',
    });
    await writeOutboxEvents(fixture.pool, { aggregates: 10, perAggregate: 1 });
    await waitFor(async () => (await topicSize(brokers, fixture.topic)) >= 10, {
      timeoutMs: 60_000,
      message: 'published',
    });
    first.kill('SIGTERM');
    expect(await exitCodeWithin(first, 30_000)).toBe(0);

    // With the relay down, more WAL than the slot may keep is written and checkpointed away.
    await fixture.pool.query(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`);
    await fixture.pool.query('SELECT pg_reload_conf()');
    await writeOutboxEvents(fixture.pool, { aggregates: 100, perAggregate: 1 });
    // A segment switch and a checkpoint put the slot's WAL past the limit: a little WAL first, or
    // there is nothing to switch from.
    await waitFor(
      async () => {
        await fixture.pool.query(`SELECT pg_logical_emit_message(false, 'sluice-test', 'filler')`);
        await fixture.pool.query('SELECT pg_switch_wal()');
        await fixture.pool.query('CHECKPOINT');
        const { rows } = await fixture.pool.query<{ wal_status: string }>(
          'SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1',
          [fixture.slot],
        );
        return rows[0]?.wal_status === 'lost';
      },
      { timeoutMs: 60_000, intervalMs: 10, message: 'the slot to be invalidated' },
    );

    const second = startRelay(fixture, brokers);
    relays.push(second);
    expect(await exitCodeWithin(second, 30_000)).toBe(78);
    expect(second.output()).toMatch(/"code":"slot_lost"/);
    expect(second.output()).toContain(fixture.slot);
  }, 240_000); // longer than its waits together, so the one that fails names itself
});
