// Slot & relay: the slot's WAL state and lag trend, heartbeats, relays, the unpublished backlog.
import type { RelayView } from '../api.js';
import { TrendChart } from '../chart.js';
import { bytes, duration, num, seconds } from '../format.js';
import { Badge, Facts, statusOf } from '../ui.js';

export function RelayPage({ relay }: { relay: RelayView | undefined }) {
  if (relay === undefined) return <p class="loading">Waiting for the first update…</p>;
  const { slot } = relay;
  return (
    <>
      {slot.confirmedStalled && (
        <p class="alarm" role="alert" data-testid="slot-stalled">
          The slot&apos;s confirmed position is stalled while the WAL grows: the relay is not
          acknowledging, and PostgreSQL keeps WAL for it.
        </p>
      )}
      <section>
        <h2>Slot {slot.name}</h2>
        <Facts
          items={[
            ['WAL status', slot.walStatus ?? '—', 'slot-wal-status'],
            ['safe WAL size', bytes(slot.safeWalSizeBytes), 'slot-safe-wal-size'],
            ['lag', bytes(slot.lagBytes), 'slot-lag-bytes'],
            ['lag (time)', seconds(slot.lagSeconds), 'slot-lag-seconds'],
            ['confirmed LSN', slot.confirmedLsn ?? '—', 'slot-confirmed-lsn'],
            ['current LSN', slot.currentLsn, 'slot-current-lsn'],
            ['heartbeat age', seconds(relay.heartbeatAgeSeconds), 'heartbeat-age'],
            [
              'oldest unpublished',
              seconds(relay.oldestUnpublishedAgeSeconds),
              'oldest-unpublished',
            ],
            ['unpublished backlog', num(relay.unpublishedBacklog), 'unpublished-backlog'],
          ]}
        />
        <div class="charts">
          <TrendChart
            title="Slot lag"
            testId="slot-lag-chart"
            t={relay.history.t}
            values={relay.history.lagBytes}
            format={bytes}
          />
          <TrendChart
            title="Slot lag (time)"
            testId="slot-lag-seconds-chart"
            t={relay.history.t}
            values={relay.history.lagSeconds}
            format={seconds}
          />
        </div>
      </section>
      <section>
        <h2>Relays</h2>
        <table data-testid="relays">
          <thead>
            <tr>
              <th>relay</th>
              <th>role</th>
              <th>ack latency p99</th>
              <th>reason</th>
            </tr>
          </thead>
          <tbody>
            {relay.relays.map((instance) => (
              <tr key={instance.url} data-testid="relay-row">
                <td>{instance.url}</td>
                <td>
                  <Badge status={statusOf(instance.role)}>{instance.role}</Badge>
                </td>
                <td>{duration(instance.ackLatencyP99Ms)}</td>
                <td>{instance.reason ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </>
  );
}
