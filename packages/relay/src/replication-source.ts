import { errorMessage, SluiceError } from '@sluice/errors';
import pg from 'pg';
import { PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import { Lsn } from './lsn.js';
import type { RelayErrorCode } from './errors.js';
import { endWithin } from './pg-client.js';

/** What a logical replication stream delivers, in WAL order. */
export type ReplicationEvent =
  | { kind: 'begin'; commitLsn: Lsn; commitTime: Date }
  /** `row` holds each column's text output (timestamps in UTC). */
  | { kind: 'insert'; schema: string; table: string; row: Record<string, string | null> }
  | { kind: 'message'; prefix: string; transactional: boolean }
  | { kind: 'commit'; commitLsn: Lsn; endLsn: Lsn }
  /** The server has decoded and sent everything before `walEnd`. */
  | { kind: 'keepalive'; walEnd: Lsn; replyRequested: boolean };

/**
 * A logical replication stream from one slot. Events arrive through one synchronous handler,
 * in WAL order, keepalives included, so a keepalive never overtakes data.
 */
export interface ReplicationSource {
  /**
   * Streams from the slot's confirmed position until `stop()` (resolves) or a failure
   * (rejects, e.g. PostgreSQL restarted). A source streams once; make a new one to resume.
   */
  start(handler: (event: ReplicationEvent) => void): Promise<void>;
  /** Tells PostgreSQL everything before `lsn` is durable elsewhere; it may recycle that WAL. */
  acknowledge(lsn: Lsn): void;
  /** Stops reading from the socket (backpressure); the server buffers, then waits. */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

/** Options for {@link createPgReplicationSource}. */
export interface PgReplicationSourceOptions {
  connectionString: string;
  slot: string;
  publication: string;
  /**
   * PostgreSQL ends the stream when this relay has been silent this long (its
   * `wal_sender_timeout`), freeing the slot for another relay; keep it well above the relay's
   * status interval. Default: the server's setting (60 s unless configured).
   */
  senderTimeoutMs?: number;
}

interface ReplicationConnection {
  on(event: 'copyData', listener: (message: { chunk: Buffer }) => void): void;
  once(event: 'replicationStart' | 'copyDone', listener: () => void): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  stream: { pause(): void; resume(): void };
}

/** How long a stop waits for the server to confirm the end of the stream, and to close it. */
const END_OF_STREAM_TIMEOUT_MS = 5000;
/** How long connecting may take before it counts as a stream failure. */
const CONNECT_TIMEOUT_MS = 10_000;

const PG_EPOCH_MS = Date.UTC(2000, 0, 1);

function readLsn(buffer: Buffer, offset: number): Lsn {
  return Lsn.of(buffer.readBigUInt64BE(offset));
}

const asText = (raw: unknown) => raw;

function toEvent(message: Pgoutput.Message): ReplicationEvent | undefined {
  switch (message.tag) {
    case 'relation':
      // Column values stay PostgreSQL's text output: the relay passes them on rather than
      // parsing JSON and dates only to serialise them again.
      for (const column of message.columns) column.parser = asText;
      return undefined;
    case 'begin':
      return {
        kind: 'begin',
        commitLsn: Lsn.parse(message.commitLsn ?? '0/0'),
        commitTime: new Date(Number(message.commitTime) / 1000),
      };
    case 'insert':
      return {
        kind: 'insert',
        schema: message.relation.schema,
        table: message.relation.name,
        row: message.new as Record<string, string | null>,
      };
    case 'message':
      return { kind: 'message', prefix: message.prefix, transactional: message.transactional };
    case 'commit':
      return {
        kind: 'commit',
        commitLsn: Lsn.parse(message.commitLsn ?? '0/0'),
        endLsn: Lsn.parse(message.commitEndLsn ?? '0/0'),
      };
    default:
      // type/origin messages feed the decoder's caches; the publication sends no
      // updates, deletes or truncates.
      return undefined;
  }
}

/**
 * A {@link ReplicationSource} over pgoutput, decoded by pg-logical-replication's parser.
 *
 * The stream is driven here rather than by the library's service class, whose standby status
 * updates report `lsn + 1` (which would let PostgreSQL skip a transaction whose commit record
 * starts exactly at the acknowledged position) and whose keepalives can overtake queued data.
 */
export function createPgReplicationSource(options: PgReplicationSourceOptions): ReplicationSource {
  return new PgReplicationSource(options);
}

class PgReplicationSource implements ReplicationSource {
  private readonly plugin: PgoutputPlugin;
  private client: pg.Client | undefined;
  private connection: ReplicationConnection | undefined;
  private stopping = false;
  private started = false;
  private streaming = false;

  constructor(private readonly options: PgReplicationSourceOptions) {
    this.plugin = new PgoutputPlugin({
      protoVersion: 1,
      publicationNames: [options.publication],
      messages: true,
    });
  }

  async start(handler: (event: ReplicationEvent) => void): Promise<void> {
    if (this.started)
      throw new SluiceError<RelayErrorCode>(
        'replication_source_reused',
        'A replication source streams once',
      );
    this.started = true;
    const client = this.newClient();
    this.client = client;
    const failure = new Promise<never>((_, reject) => {
      client.on('error', (error) => reject(error));
    });
    failure.catch(() => undefined);
    await client.connect();
    this.listen(client, handler);
    try {
      await Promise.race([this.plugin.start(client, this.options.slot, '0/0'), failure]);
    } catch (error) {
      if (this.stopping) return;
      throw new SluiceError<RelayErrorCode>(
        'replication_stream_failed',
        `Replication stream ended: ${errorMessage(error)}`,
        {
          cause: error,
          retriable: true,
        },
      );
    }
    if (!this.stopping) {
      throw new SluiceError<RelayErrorCode>(
        'replication_stream_failed',
        'Replication stream ended unexpectedly',
        { retriable: true },
      );
    }
  }

  acknowledge(lsn: Lsn): void {
    if (this.connection === undefined || this.stopping) return;
    const update = Buffer.alloc(34);
    update.write('r', 0);
    // Written, flushed and applied positions: exactly `lsn`, never past it.
    update.writeBigUInt64BE(lsn, 1);
    update.writeBigUInt64BE(lsn, 9);
    update.writeBigUInt64BE(lsn, 17);
    update.writeBigUInt64BE(BigInt(Date.now() - PG_EPOCH_MS) * 1000n, 25);
    update.writeUInt8(0, 33);
    this.connection.sendCopyFromChunk(update);
  }

  pause(): void {
    this.connection?.stream.pause();
  }

  resume(): void {
    this.connection?.stream.resume();
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const current = this.connection;
    if (current !== undefined && this.streaming) {
      // Ends the stream as the protocol means it to end. PostgreSQL answers CopyDone after it
      // has processed every status update sent before, so the last acknowledgement is in the
      // slot before the connection closes. Reading resumes first: a socket closed with unread
      // data is reset, and the server may lose what it had not read yet — the last
      // acknowledgement included, and a restart would then publish those events again.
      const ended = new Promise<void>((resolve) => {
        current.once('copyDone', resolve);
        setTimeout(resolve, END_OF_STREAM_TIMEOUT_MS).unref();
      });
      current.stream.resume();
      current.endCopyFrom();
      await ended;
    }
    // A server that no longer answers never confirms the close either.
    if (this.client !== undefined) await endWithin(this.client, END_OF_STREAM_TIMEOUT_MS);
  }

  private newClient(): pg.Client {
    const senderTimeout =
      this.options.senderTimeoutMs === undefined
        ? ''
        : ` -c wal_sender_timeout=${this.options.senderTimeoutMs}`;
    return new pg.Client({
      connectionString: this.options.connectionString,
      replication: 'database',
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      keepAlive: true,
      // Timestamps arrive as text in the session's zone and style: make both fixed.
      options: `-c TimeZone=UTC -c DateStyle=ISO${senderTimeout}`,
    } as pg.ClientConfig);
  }

  /** Hands each data and keepalive message to `handler`, in the order they arrive. */
  private listen(client: pg.Client, handler: (event: ReplicationEvent) => void): void {
    const connection = (client as unknown as { connection: ReplicationConnection }).connection;
    this.connection = connection;
    connection.once('replicationStart', () => (this.streaming = true));
    connection.on('copyData', ({ chunk }) => {
      if (chunk[0] === 0x77) {
        // XLogData: 'w', start, end, send time, then one pgoutput message.
        const event = toEvent(this.plugin.parse(chunk.subarray(25)));
        if (event !== undefined) handler(event);
      } else if (chunk[0] === 0x6b) {
        // Primary keepalive: 'k', walEnd, send time, reply requested.
        handler({
          kind: 'keepalive',
          walEnd: readLsn(chunk, 1),
          replyRequested: chunk[17] === 1,
        });
      }
    });
  }
}
