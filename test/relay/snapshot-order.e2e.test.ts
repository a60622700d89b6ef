// The initial snapshot publishes each aggregate's versions in numeric order — 9 before 10, 99
// before 100 — on a first start and when a relay killed in the middle of it starts over.
import { testServers, waitFor } from '@sluice/testkit';
import { describe, expect, it } from 'vitest';
import {
  awaitAllDelivered,
  checkDelivery,
  exitCodeWithin,
  outboxIndex,
  topicSize,
  versionsByKey,
  writeOutboxEvents,
  useRelayFixture,
} from './harness.js';

const { kafkaBrokers } = testServers();

const SNAPSHOT_PUBLISHED = '"msg":"initial snapshot published"';

const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('initial snapshot order', () => {
  it('publishes hundreds of versions per aggregate in version order, then streams on', async () => {
    const { fixture, start } = await useRelayFixture('relay_snap_order');
    await writeOutboxEvents(fixture.pool, { aggregates: 30, perAggregate: 250 });
    const relay = start();
    await relay.waitForOutput(`"published":7500,${SNAPSHOT_PUBLISHED}`, {
      timeoutMs: 60_000,
      message: 'the initial snapshot',
    });
    await writeOutboxEvents(fixture.pool, { aggregates: 30, perAggregate: 3 });

    const outbox = await outboxIndex(fixture.pool);
    expect(outbox.size).toBe(30 * 253);
    const records = await awaitAllDelivered(kafkaBrokers, fixture, outbox, 60_000);
    const delivery = checkDelivery(outbox, records);
    expect(delivery.orderViolations.slice(0, 5)).toEqual([]);
    expect(delivery).toEqual({ duplicates: 0, missing: [], unexpected: [], orderViolations: [] });
    const versions = versionsByKey(records);
    expect(versions.size).toBe(30);
    for (const list of versions.values()) expect(list).toEqual(range(1, 253));

    relay.kill('SIGTERM');
    expect(await exitCodeWithin(relay, 35_000)).toBe(0);
  });

  it('starts the snapshot over in version order after a kill -9 in the middle of it', async () => {
    const { fixture, start } = await useRelayFixture('relay_snap_kill');
    await writeOutboxEvents(fixture.pool, { aggregates: 20, perAggregate: 600 });
    // Small sends make the snapshot last long enough to be killed in the middle of it, past the
    // first aggregate's v100.
    const first = start({ RELAY_MAX_BATCH_EVENTS: '20' });
    await waitFor(
      async () =>
        !first.output().includes(SNAPSHOT_PUBLISHED) &&
        (await topicSize(kafkaBrokers, fixture.topic)) >= 1000,
      { timeoutMs: 60_000, intervalMs: 20, message: 'the snapshot to be under way' },
    );
    first.kill('SIGKILL');
    await first.exited();
    const atKill = await topicSize(kafkaBrokers, fixture.topic);
    expect(first.output()).not.toContain(SNAPSHOT_PUBLISHED);
    expect(atKill).toBeGreaterThanOrEqual(1000);
    expect(atKill).toBeLessThan(12_000);

    // Written while no relay runs: the next slot's snapshot carries them.
    await writeOutboxEvents(fixture.pool, { aggregates: 25, perAggregate: 5 });
    const second = start();
    const outbox = await outboxIndex(fixture.pool);
    expect(outbox.size).toBe(20 * 605 + 5 * 5);
    const records = await awaitAllDelivered(kafkaBrokers, fixture, outbox, 90_000);
    const delivery = checkDelivery(outbox, records);
    console.log(
      JSON.stringify({
        snapshotKill: { atKill, events: outbox.size, duplicates: delivery.duplicates },
      }),
    );
    expect(delivery.orderViolations.slice(0, 5)).toEqual([]);
    expect(delivery.missing).toEqual([]);
    expect(delivery.unexpected).toEqual([]);
    expect(delivery.duplicates).toBeGreaterThanOrEqual(atKill);
    expect(second.output()).toContain(`"published":${outbox.size},${SNAPSHOT_PUBLISHED}`);
    // Per key: what the killed relay sent (a prefix 1..k), then the whole history again.
    for (const [key, list] of versionsByKey(records)) {
      const last = key <= '000000000020' ? 605 : 5;
      const restart = list.lastIndexOf(1);
      expect(list.slice(0, restart), key).toEqual(range(1, restart));
      expect(list.slice(restart), key).toEqual(range(1, last));
    }

    second.kill('SIGTERM');
    expect(await exitCodeWithin(second, 35_000)).toBe(0);
  });
});
