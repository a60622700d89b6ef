// The relay process under failure: leader failover, a dropped or foreign slot, WAL retained while
// the outbox is idle, and a graceful stop in the middle of a stream.
import { errorMessage } from '@sluice/errors';
import { createTestDatabase, testServers, waitFor } from '@sluice/testkit';
import pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  checkDelivery,
  confirmedFlush,
  outboxIndex,
  readTopic,
  topicSize,
  writeOutboxEvents,
  type ReadRecord,
  type RelayFixture,
  type RelayProcess,
  useRelayFixture,
} from './harness.js';

const { databaseUrl, kafkaBrokers } = testServers();

const LEADING = /"msg":"leading"/;
const STANDBY = /"msg":"standby: waiting for leadership"/;

/** The relay's exit code, failing (with its output) if it does not exit in time. */
async function exitCode(relay: RelayProcess, timeoutMs: number): Promise<number | null> {
  let code: number | null | undefined;
  void relay.exited().then((c) => (code = c));
  try {
    await waitFor(() => code !== undefined, { timeoutMs, message: 'the relay to exit' });
  } catch (error) {
    throw new Error(`${errorMessage(error)}; its output:\n${relay.output()}`, { cause: error });
  }
  return code ?? null;
}

/** Waits for the relay to exit and checks its code; a failure shows the relay's output. */
async function expectExit(relay: RelayProcess, code: number, timeoutMs: number): Promise<void> {
  expect(await exitCode(relay, timeoutMs), relay.output()).toBe(code);
}

/** Every record of the fixture's topic, once every outbox id has reached Kafka. */
async function awaitEveryEvent(
  fixture: RelayFixture,
  outbox: Map<string, unknown>,
  timeoutMs: number,
): Promise<ReadRecord[]> {
  let records: ReadRecord[] = [];
  await waitFor(
    async () => {
      if ((await topicSize(kafkaBrokers, fixture.topic)) < outbox.size) return false;
      records = await readTopic(kafkaBrokers, fixture.topic, 30_000);
      const ids = new Set(records.map((r) => r.id));
      return [...outbox.keys()].every((id) => ids.has(id));
    },
    { timeoutMs, intervalMs: 250, message: `all ${outbox.size} outbox events in Kafka` },
  );
  return records;
}

/** Runs `scenario`; a failure carries the end of each relay's output. */
async function withRelayOutputs<T>(
  relays: readonly RelayProcess[],
  scenario: () => Promise<T>,
): Promise<T> {
  try {
    return await scenario();
  } catch (error) {
    const outputs = relays.map((relay, i) => `--- relay ${i} ---\n${relay.output().slice(-3000)}`);
    throw new Error(`${errorMessage(error)}\n${outputs.join('\n')}`, { cause: error });
  }
}

/**
 * How the outbox's `expected` events reached Kafka, once all have; printed under `label` with
 * `facts`.
 */
async function delivered(
  fixture: RelayFixture,
  expected: number,
  label: string,
  facts: Record<string, unknown>,
): Promise<ReturnType<typeof checkDelivery>> {
  const outbox = await outboxIndex(fixture.pool);
  expect(outbox.size).toBe(expected);
  const records = await awaitEveryEvent(fixture, outbox, 60_000);
  const delivery = checkDelivery(outbox, records);
  const counts = { events: outbox.size, records: records.length, duplicates: delivery.duplicates };
  console.log(JSON.stringify({ [label]: { ...facts, ...counts } }));
  return delivery;
}

/**
 * Writes `rounds` rounds of one event for each of `aggregates` aggregates, the second half only
 * once `release()` is called; resolves once the `publisher` relay has published a first event.
 * `written()`: events written so far; `settled()`: whether the writes ended (or failed; `done`
 * rejects then).
 */
async function writeInRounds(
  fixture: RelayFixture,
  { rounds, aggregates }: { rounds: number; aggregates: number },
  publisher: string,
) {
  let release!: () => void;
  const halfway = new Promise<void>((resolve) => (release = resolve));
  let written = 0;
  let settled = false;
  const done = (async () => {
    for (let round = 0; round < rounds; round += 1) {
      if (round === rounds / 2) await halfway;
      written += await writeOutboxEvents(fixture.pool, { aggregates, perAggregate: 1 });
    }
  })();
  void done.finally(() => (settled = true)).catch(() => undefined);
  await waitFor(async () => (await topicSize(kafkaBrokers, fixture.topic)) > 0, {
    timeoutMs: 30_000,
    intervalMs: 20,
    message: `the ${publisher} to publish`,
  });
  return { done, release, written: () => written, settled: () => settled };
}

async function currentWalLsn(pool: pg.Pool): Promise<bigint> {
  const { rows } = await pool.query<{ lsn: string }>(
    `SELECT (pg_current_wal_lsn() - '0/0')::text AS lsn`,
  );
  return BigInt(rows[0]?.lsn ?? '0');
}

/** `X/Y` (hex) as a byte position. */
function parseLsn(text: string): bigint {
  const [high, low] = text.split('/');
  return (BigInt(`0x${high ?? '0'}`) << 32n) + BigInt(`0x${low ?? '0'}`);
}

async function slotRow(
  pool: pg.Pool,
  slot: string,
): Promise<{ plugin: string; active: boolean } | undefined> {
  const { rows } = await pool.query<{ plugin: string; active: boolean }>(
    'SELECT plugin, active FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  return rows[0];
}

/**
 * A relay of a fixture of its own, 20,000 outbox rows older than its slot, and the relay started
 * and into its initial snapshot (which takes a while).
 */
async function inInitialSnapshot(prefix: string) {
  const { fixture, start } = await useRelayFixture(prefix);
  for (let round = 0; round < 4; round += 1)
    await writeOutboxEvents(fixture.pool, { aggregates: 5000, perAggregate: 1 });
  const first = start();
  await waitFor(() => /"msg":"replication prepared"/.test(first.output()), {
    timeoutMs: 20_000,
    intervalMs: 10,
    message: 'the relay to start its initial snapshot',
  });
  return { fixture, start, first };
}

describe('relay resilience', () => {
  it('fails over to the standby within seconds when the leader is killed mid-stream, losing nothing', async () => {
    const { fixture, start } = await useRelayFixture('relay_failover');
    const relays = [start(), start()];
    await withRelayOutputs(relays, async () => {
      const leader = await waitFor(
        () => {
          const leading = relays.filter((relay) => LEADING.test(relay.output()));
          return leading.length === 1 ? leading[0] : undefined;
        },
        { timeoutMs: 20_000, message: 'one relay to lead' },
      );
      const standby = relays.find((relay) => relay !== leader);
      if (standby === undefined) throw new Error('no standby');
      // The leader has prepared the slot; by then the standby has long tried the lock once.
      await waitFor(() => /"msg":"replication prepared"/.test(leader.output()), {
        timeoutMs: 20_000,
        message: 'the leader to prepare replication',
      });
      await waitFor(() => STANDBY.test(standby.output()), {
        timeoutMs: 10_000,
        message: 'the standby to wait',
      });
      expect(LEADING.test(standby.output())).toBe(false);
      expect(standby.child.exitCode).toBeNull();

      // Writes go on before, during and after the kill; the kill lands once the leader publishes.
      const rounds = 20;
      const aggregates = 500;
      const writes = await writeInRounds(fixture, { rounds, aggregates }, 'leader');
      const atKill = {
        written: writes.written(),
        published: await topicSize(kafkaBrokers, fixture.topic),
      };
      leader.kill('SIGKILL');
      const killedAt = Date.now();
      writes.release();
      await leader.exited();

      await waitFor(() => LEADING.test(standby.output()), {
        timeoutMs: 15_000,
        intervalMs: 20,
        message: 'the standby to lead',
      });
      const takeoverMs = Date.now() - killedAt;
      expect(takeoverMs).toBeLessThan(15_000);

      await waitFor(writes.settled, { timeoutMs: 60_000, message: 'the writes to end' });
      await writes.done;
      const delivery = await delivered(fixture, rounds * aggregates, 'failover', {
        takeoverMs,
        atKill,
      });
      expect(delivery.missing).toEqual([]);
      expect(delivery.unexpected).toEqual([]);
      expect(delivery.orderViolations).toEqual([]);

      standby.kill('SIGTERM');
      await expectExit(standby, 0, 35_000);
    });
  }, 300_000);

  it('refuses, with exit 78 and slot_missing, to start after its slot was dropped, and does not recreate it', async () => {
    const { fixture, start } = await useRelayFixture('relay_lost');
    const first = start();
    await waitFor(() => /"msg":"initial snapshot published"/.test(first.output()), {
      timeoutMs: 20_000,
      message: 'the relay to stream',
    });
    for (let round = 0; round < 3; round += 1)
      await writeOutboxEvents(fixture.pool, { aggregates: 200, perAggregate: 1 });
    await waitFor(async () => (await topicSize(kafkaBrokers, fixture.topic)) >= 600, {
      timeoutMs: 30_000,
      message: '600 records',
    });
    first.kill('SIGTERM');
    await expectExit(first, 0, 35_000);

    // The walsender may hold the slot for a moment after the relay left.
    await waitFor(
      async () => {
        await fixture.pool.query('SELECT pg_drop_replication_slot($1)', [fixture.slot]);
        return true;
      },
      { timeoutMs: 10_000, message: 'the slot to drop' },
    );
    // Events committed while no slot exists: exactly the gap a person must reconcile.
    await writeOutboxEvents(fixture.pool, { aggregates: 200, perAggregate: 1 });

    const second = start();
    await expectExit(second, 78, 30_000);
    const output = second.output();
    expect(output).toContain('"code":"slot_missing"');
    expect(output).toContain(fixture.slot);
    expect(LEADING.test(output)).toBe(true);
    expect(await slotRow(fixture.pool, fixture.slot)).toBeUndefined();
    expect(await topicSize(kafkaBrokers, fixture.topic)).toBe(600);
  });

  it('refuses, with exit 78 and slot_mismatch, a slot of its name made with another plugin', async () => {
    const { fixture, start } = await useRelayFixture('relay_mismatch');
    await fixture.pool.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [
      fixture.slot,
    ]);
    await writeOutboxEvents(fixture.pool, { aggregates: 10, perAggregate: 1 });

    const relay = start();
    await expectExit(relay, 78, 30_000);
    const output = relay.output();
    expect(output).toContain('"code":"slot_mismatch"');
    expect(output).toContain(fixture.slot);
    expect(output).toContain('test_decoding');
    expect(await slotRow(fixture.pool, fixture.slot)).toEqual({
      plugin: 'test_decoding',
      active: false,
    });
    expect(await topicSize(kafkaBrokers, fixture.topic)).toBe(0);
  });

  it('keeps the WAL its slot retains bounded while only non-outbox data is written, here and in another database', async () => {
    const { fixture, start } = await useRelayFixture('relay_idle_wal');
    const other = await createTestDatabase(databaseUrl, 'relay_idle_wal_other');
    const otherPool = new pg.Pool({ connectionString: other.url, max: 2 });
    otherPool.on('error', () => undefined);
    onTestFinished(async () => {
      await otherPool.end();
      await other.drop();
    });
    const relay = start({ RELAY_HEARTBEAT_MS: '500' });
    await waitFor(() => /"msg":"replication prepared"/.test(relay.output()), {
      timeoutMs: 20_000,
      message: 'the relay to lead and prepare its slot',
    });
    await waitFor(async () => (await slotRow(fixture.pool, fixture.slot))?.active === true, {
      timeoutMs: 20_000,
      message: 'the relay to stream from its slot',
    });

    const before = await currentWalLsn(fixture.pool);
    const confirmedBefore = await confirmedFlush(fixture.pool, fixture.slot);
    const fill = `CREATE TABLE filler (id bigserial PRIMARY KEY, data text NOT NULL)`;
    await fixture.pool.query(fill);
    await otherPool.query(fill);
    // ~5 MB of uncompressed heap rows (512 B, under the TOAST threshold) per transaction.
    const insert = `INSERT INTO filler (data) SELECT repeat(md5(g::text), 16) FROM generate_series(1, 10000) g`;
    let maxLagDuringWrites = 0n;
    for (let round = 0; round < 3; round += 1) {
      await fixture.pool.query(insert);
      await otherPool.query(insert);
      const lag =
        (await currentWalLsn(fixture.pool)) - (await confirmedFlush(fixture.pool, fixture.slot));
      if (lag > maxLagDuringWrites) maxLagDuringWrites = lag;
    }
    const after = await currentWalLsn(fixture.pool);
    const walWritten = after - before;
    expect(walWritten).toBeGreaterThan(20n * 1024n * 1024n);

    const bound = 2n * 1024n * 1024n;
    const started = Date.now();
    let retained = 0n;
    await waitFor(
      async () => {
        const confirmed = await confirmedFlush(fixture.pool, fixture.slot);
        retained = (await currentWalLsn(fixture.pool)) - confirmed;
        return confirmed >= after && retained < bound;
      },
      {
        timeoutMs: 20_000,
        intervalMs: 100,
        message: 'the slot to confirm the non-outbox WAL',
      },
    );
    const confirmedAfter = await confirmedFlush(fixture.pool, fixture.slot);
    console.log(
      JSON.stringify({
        idleWal: {
          walWrittenBytes: Number(walWritten),
          maxLagDuringWritesBytes: Number(maxLagDuringWrites),
          retainedAfterBytes: Number(retained),
          confirmedAdvancedBytes: Number(confirmedAfter - confirmedBefore),
          settledMs: Date.now() - started,
        },
      }),
    );
    expect(confirmedAfter).toBeGreaterThan(before);
    expect(retained).toBeLessThan(bound);
    // Nothing in the outbox, nothing in Kafka: heartbeats and other tables publish no events.
    expect(await topicSize(kafkaBrokers, fixture.topic)).toBe(0);
    expect(relay.child.exitCode).toBeNull();
  });

  it('publishes and acknowledges what it read when stopped mid-stream, so a restart neither loses nor repeats', async () => {
    const { fixture, start } = await useRelayFixture('relay_graceful');
    const first = start();
    // Stop while streaming, past the (empty) initial snapshot: see the next test for a stop before.
    await waitFor(() => /"msg":"initial snapshot published"/.test(first.output()), {
      timeoutMs: 20_000,
      message: 'the relay to stream',
    });
    const rounds = 20;
    const aggregates = 500;
    const writes = await writeInRounds(fixture, { rounds, aggregates }, 'relay');
    first.kill('SIGTERM');
    const stoppedAt = Date.now();
    // Writes resume once the relay stops reading: those are for the next relay alone.
    await waitFor(() => /"msg":"stopping: /.test(first.output()), {
      timeoutMs: 10_000,
      intervalMs: 5,
      message: 'the relay to begin stopping',
    });
    writes.release();
    await expectExit(first, 0, 35_000);
    const stopMs = Date.now() - stoppedAt;
    expect(first.output()).toMatch(/"msg":"stopped"/);
    await writes.done;

    // Everything published before the stop is acknowledged: a commit at or above the slot's
    // confirmed position in Kafka would be sent again (a duplicate) by the next relay.
    const confirmed = await confirmedFlush(fixture.pool, fixture.slot);
    const beforeRestart = await readTopic(kafkaBrokers, fixture.topic);
    const highestCommit = beforeRestart.reduce((max, record) => {
      const lsn = parseLsn(record.headers.ce_commitlsn ?? '0/0');
      return lsn > max ? lsn : max;
    }, 0n);
    expect(beforeRestart.length).toBeGreaterThan(0);
    expect(beforeRestart.length).toBeLessThanOrEqual((rounds / 2) * aggregates);
    expect(highestCommit).toBeLessThan(confirmed);

    const second = start();
    const delivery = await delivered(fixture, rounds * aggregates, 'gracefulStop', {
      stopMs,
      publishedBeforeRestart: beforeRestart.length,
    });
    expect(delivery).toEqual({ duplicates: 0, missing: [], unexpected: [], orderViolations: [] });
    second.kill('SIGTERM');
    await expectExit(second, 0, 35_000);
  });

  it('starts the set-up over after a kill -9 during the initial snapshot, losing nothing', async () => {
    const { fixture, start, first } = await inInitialSnapshot('relay_kill_snapshot');
    first.kill('SIGKILL');
    await first.exited();
    const second = start();
    const outbox = await outboxIndex(fixture.pool);
    const records = await awaitEveryEvent(fixture, outbox, 60_000);
    const delivery = checkDelivery(outbox, records);
    expect(delivery.missing).toEqual([]);
    expect(delivery.orderViolations).toEqual([]);
    expect(second.output()).toMatch(/"published":20000,"msg":"initial snapshot published"/);
    second.kill('SIGTERM');
    await expectExit(second, 0, 35_000);
  });

  // A stop requested while the leader prepares its slot or publishes the initial snapshot must
  // still stop it promptly (the relay does not exist yet when the signal arrives).
  it('stops promptly with exit 0 when SIGTERM arrives during the initial snapshot', async () => {
    const { first: relay } = await inInitialSnapshot('relay_stop_snapshot');
    const snapshotDoneAtSigterm = /"msg":"initial snapshot published"/.test(relay.output());
    relay.kill('SIGTERM');
    const code = await exitCode(relay, 10_000).catch(() => 'still running after 10 s');
    console.log(JSON.stringify({ sigtermDuringSnapshot: { snapshotDoneAtSigterm, code } }));
    expect(code).toBe(0);
    expect(relay.output()).toMatch(/"msg":"stopped"/);
  });
});
