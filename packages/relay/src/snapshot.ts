import { SluiceError } from '@sluice/errors';
import { outboxRowToEvent, outboxTextColumns } from '@sluice/outbox/rows';
import pg from 'pg';
import type { RelayErrorCode } from './errors.js';
import type { EventSink, OutgoingEvent } from './event-sink.js';
import { Lsn } from './lsn.js';
import { BOUNDED, quietClient, withClient } from './pg-client.js';
import type { ReplicationNames } from './publication.js';
import { recordConsistentPoint, recordSnapshotDone, registerNewSlot } from './slot-registry.js';

/** Outbox rows that predate a new slot, read in the slot's exported snapshot. */
export interface InitialSnapshot {
  consistentPoint: Lsn;
  /** Rows in per-aggregate version order, `batchSize` at a time. */
  batches(batchSize: number): AsyncGenerator<Record<string, string | null>[]>;
  /** Records that the snapshot was published and releases it. */
  done(): Promise<void>;
  /** Releases the snapshot without recording it (a new slot is made next time). */
  abandon(): Promise<void>;
}

/**
 * Creates the slot over a replication connection with an exported snapshot, and hands out the
 * outbox rows visible in it: exactly those committed before the slot's consistent point.
 */
export async function createSlotWithSnapshot(
  connectionString: string,
  client: pg.Client,
  names: ReplicationNames,
  outbox: string,
): Promise<InitialSnapshot> {
  const replication = quietClient({
    connectionString,
    replication: 'database',
    connectionTimeoutMillis: BOUNDED.connectionTimeoutMillis,
    keepAlive: true,
  } as pg.ClientConfig);
  await replication.connect();
  const reader = quietClient({
    connectionString,
    application_name: 'sluice-relay-snapshot',
    ...BOUNDED,
  });
  const release = async () => {
    await reader.end().catch(() => undefined);
    await replication.end().catch(() => undefined);
  };
  try {
    const slot = await createSlot(client, replication, names.slot);
    await reader.connect();
    // The exported snapshot lives while the replication connection stays open and idle.
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await reader.query(`SET TRANSACTION SNAPSHOT ${pg.escapeLiteral(slot.snapshot_name)}`);
    return {
      consistentPoint: Lsn.parse(slot.consistent_point),
      batches: (batchSize) => snapshotRows(reader, outbox, batchSize),
      async done() {
        await release();
        await withClient(connectionString, (admin) => recordSnapshotDone(admin, names.slot));
      },
      abandon: release,
    };
  } catch (error) {
    await release();
    throw error;
  }
}

async function createSlot(
  client: pg.Client,
  replication: pg.Client,
  slotName: string,
): Promise<{ consistent_point: string; snapshot_name: string }> {
  // Registered before it exists: a crash after creating the slot is then recognised as an
  // unfinished set-up, not adopted as a slot whose earlier rows were published.
  await registerNewSlot(client, slotName);
  const created = await replication.query<{ consistent_point: string; snapshot_name: string }>(
    `CREATE_REPLICATION_SLOT ${pg.escapeIdentifier(slotName)} LOGICAL pgoutput EXPORT_SNAPSHOT`,
  );
  const slot = created.rows[0];
  if (slot === undefined)
    throw new SluiceError<RelayErrorCode>(
      'slot_create_failed',
      `Creating slot ${slotName} returned nothing`,
    );
  await recordConsistentPoint(client, slotName, slot.consistent_point);
  return slot;
}

async function* snapshotRows(
  reader: pg.Client,
  outbox: string,
  batchSize: number,
): AsyncGenerator<Record<string, string | null>[]> {
  await reader.query(
    // Qualified on purpose: a bare ORDER BY name binds to the output column first, and
    // the output aggregate_version is text (1, 10, 100, 11, …, 2).
    `DECLARE snapshot_rows NO SCROLL CURSOR FOR
       SELECT ${outboxTextColumns('o')}
         FROM ${outbox} o ORDER BY o.aggregate_type, o.aggregate_id, o.aggregate_version`,
  );
  for (;;) {
    const { rows } = await reader.query<Record<string, string | null>>(
      `FETCH ${batchSize} FROM snapshot_rows`,
    );
    if (rows.length === 0) return;
    yield rows;
  }
}

/**
 * Publishes a new slot's initial snapshot through `sink`, then records it as done. On failure
 * the snapshot is abandoned; the next start makes a fresh slot and snapshot.
 */
export async function publishInitialSnapshot(
  snapshot: InitialSnapshot,
  sink: EventSink,
  options: {
    batchSize?: number;
    onPublished?: (events: readonly OutgoingEvent[]) => void;
    /** Abandons the snapshot between batches (a stop request); the next start redoes it. */
    signal?: AbortSignal;
  } = {},
): Promise<number> {
  let published = 0;
  try {
    for await (const rows of snapshot.batches(options.batchSize ?? 5000)) {
      if (options.signal?.aborted === true) {
        throw new SluiceError<RelayErrorCode>(
          'snapshot_aborted',
          'Stopped while publishing the initial snapshot',
        );
      }
      const events = rows.map((row) => ({
        event: outboxRowToEvent(row),
        commitLsn: snapshot.consistentPoint,
      }));
      await sink.publish(events);
      options.onPublished?.(events);
      published += rows.length;
    }
  } catch (error) {
    await snapshot.abandon();
    throw error;
  }
  await snapshot.done();
  return published;
}
