// A leader that stops answering (SIGSTOP: its process frozen, its TCP connections open, as in a
// network partition) must lose its lease: PostgreSQL ends its lock session and its replication
// stream, a standby takes over within seconds, and events keep flowing.
import { testServers, waitFor } from '@sluice/testkit';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  checkDelivery,
  createRelayFixture,
  outboxIndex,
  readTopic,
  startRelay,
  topicSize,
  writeOutboxEvents,
  type ReadRecord,
  type RelayProcess,
} from './harness.js';

const { databaseUrl, kafkaBrokers } = testServers();

const LEADING = /"msg":"leading"/g;
const STANDBY = /"msg":"standby: waiting for leadership"/g;
const count = (relay: RelayProcess, pattern: RegExp) =>
  (relay.output().match(pattern) ?? []).length;

describe('frozen leader', () => {
  it('loses its lease: a standby takes over within 15 s and events keep flowing', async () => {
    const fixture = await createRelayFixture(databaseUrl, 'relay_frozen');
    const relays: RelayProcess[] = [];
    onTestFinished(async () => {
      for (const relay of relays) {
        if (relay.child.exitCode === null && relay.child.signalCode === null) {
          relay.kill('SIGKILL');
          await relay.exited();
        }
      }
      await fixture.close();
    });
    const leader = startRelay(fixture, kafkaBrokers);
    relays.push(leader);
    await leader.waitForOutput('"msg":"initial snapshot published"', {
      timeoutMs: 30_000,
      message: 'the leader to stream',
    });
    const standby = startRelay(fixture, kafkaBrokers);
    relays.push(standby);
    await standby.waitForOutput('"msg":"standby: waiting for leadership"', {
      timeoutMs: 30_000,
      message: 'the standby to wait',
    });
    await writeOutboxEvents(fixture.pool, { aggregates: 200, perAggregate: 1 });
    await waitFor(async () => (await topicSize(kafkaBrokers, fixture.topic)) >= 200, {
      timeoutMs: 30_000,
      message: 'the leader to publish',
    });

    const pid = leader.child.pid;
    if (pid === undefined) throw new Error('the leader has no pid');
    process.kill(pid, 'SIGSTOP');
    const frozenAt = Date.now();
    onTestFinished(() => {
      if (leader.child.exitCode === null) process.kill(pid, 'SIGCONT');
    });
    await writeOutboxEvents(fixture.pool, { aggregates: 200, perAggregate: 1 });
    await waitFor(() => count(standby, LEADING) === 1, {
      timeoutMs: 15_000,
      intervalMs: 20,
      message: 'the standby to lead while the leader is frozen',
    });
    const takeoverMs = Date.now() - frozenAt;

    const outbox = await outboxIndex(fixture.pool);
    expect(outbox.size).toBe(400);
    let records: ReadRecord[] = [];
    await waitFor(
      async () => {
        if ((await topicSize(kafkaBrokers, fixture.topic)) < outbox.size) return false;
        records = await readTopic(kafkaBrokers, fixture.topic);
        const ids = new Set(records.map((r) => r.id));
        return [...outbox.keys()].every((id) => ids.has(id));
      },
      { timeoutMs: 30_000, intervalMs: 100, message: 'the new leader to publish every event' },
    );
    const flowingMs = Date.now() - frozenAt;
    const delivery = checkDelivery(outbox, records);
    expect(delivery.missing).toEqual([]);
    expect(delivery.orderViolations).toEqual([]);

    // Thawed, the old leader finds its lease gone and becomes a standby: one leader at a time.
    process.kill(pid, 'SIGCONT');
    await waitFor(() => /"msg":"leadership lost; stopping the relay"/.test(leader.output()), {
      timeoutMs: 20_000,
      message: 'the thawed leader to notice it lost its lease',
    });
    await waitFor(() => count(leader, STANDBY) === 2, {
      timeoutMs: 30_000,
      message: 'the thawed leader to wait as a standby',
    });
    expect(count(leader, LEADING)).toBe(1);
    expect(leader.child.exitCode).toBeNull();
    console.log(JSON.stringify({ frozenLeader: { takeoverMs, flowingMs, ...delivery } }));
    expect(takeoverMs).toBeLessThan(15_000);
  });
});
