import { SluiceError, errorMessage } from '@sluice/errors';
import { createKafka, kafkaRefusal, type KafkaSecurity } from '@sluice/kafka';
import pg from 'pg';

/** The codes of the {@link SluiceError}s this package throws. */
export type PreflightErrorCode =
  | 'postgres_unreachable'
  | 'postgres_wal_level'
  | 'postgres_no_replication_slots'
  | 'kafka_unreachable';

/** Options shared by the preflight checks. */
export interface PreflightOptions {
  /** How long to wait for a connection before giving up. Default 5000. */
  connectTimeoutMs?: number;
  /** Kafka's TLS and SASL (see `kafkaSecurityOf` of @sluice/kafka). Default: neither. */
  security?: KafkaSecurity;
}

/** What {@link checkPostgres} found. */
export interface PostgresInfo {
  /** `server_version`, e.g. `15.18`. */
  serverVersion: string;
  walLevel: string;
  maxReplicationSlots: number;
}

/**
 * Where a PostgreSQL URL points, without credentials, for messages and logs.
 *
 * @example describeDatabaseUrl('postgres://app:secret@db:5432/shop') // 'db:5432/shop'
 */
export function describeDatabaseUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '5432'}${parsed.pathname}`;
  } catch {
    return '<unparseable DATABASE_URL>';
  }
}

/**
 * Proves that the PostgreSQL server at `url` answers queries and can feed Sluice:
 * `wal_level = logical` and at least one replication slot allowed.
 *
 * @throws SluiceError `postgres_unreachable` (retriable), `postgres_wal_level`,
 *   `postgres_no_replication_slots`.
 */
export async function checkPostgres(
  url: string,
  options: PreflightOptions = {},
): Promise<PostgresInfo> {
  const where = describeDatabaseUrl(url);
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
  });
  // A server that dies mid-check emits 'error' on the client; the awaited query reports it.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    throw new SluiceError<PreflightErrorCode>(
      'postgres_unreachable',
      `PostgreSQL at ${where} is unreachable: ${errorMessage(error)}. ` +
        'Start the embedded stack with `pnpm stack:up` or point DATABASE_URL at a running server.',
      { cause: error, retriable: true },
    );
  }
  try {
    const { rows } = await client.query<{ name: string; setting: string }>(
      `SELECT name, setting FROM pg_settings
        WHERE name IN ('server_version', 'wal_level', 'max_replication_slots')`,
    );
    const setting = (name: string): string => rows.find((row) => row.name === name)?.setting ?? '';
    const info: PostgresInfo = {
      serverVersion: setting('server_version'),
      walLevel: setting('wal_level'),
      maxReplicationSlots: Number(setting('max_replication_slots')),
    };
    if (info.walLevel !== 'logical') {
      throw new SluiceError<PreflightErrorCode>(
        'postgres_wal_level',
        `PostgreSQL at ${where} has wal_level=${info.walLevel}; Sluice reads the WAL through ` +
          'logical replication and needs wal_level=logical (set it in postgresql.conf and restart).',
      );
    }
    if (info.maxReplicationSlots < 1) {
      throw new SluiceError<PreflightErrorCode>(
        'postgres_no_replication_slots',
        `PostgreSQL at ${where} allows no replication slots (max_replication_slots=0); raise it and restart.`,
      );
    }
    return info;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Proves that the Kafka cluster at `brokers` answers metadata requests.
 *
 * @throws SluiceError `kafka_unreachable` (retriable); `kafka_auth_failed`, `kafka_tls_untrusted`,
 *   `kafka_tls_hostname` when Kafka refuses the connection.
 */
export async function checkKafka(
  brokers: readonly string[],
  options: PreflightOptions = {},
): Promise<{ brokerCount: number }> {
  const kafka = createKafka({
    clientId: 'sluice-preflight',
    brokers,
    connectionTimeoutMs: options.connectTimeoutMs ?? 5000,
    retry: { retries: 1, initialRetryTime: 200 },
    ...(options.security === undefined ? {} : { security: options.security }),
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    return { brokerCount: cluster.brokers.length };
  } catch (error) {
    const refusal = kafkaRefusal(error, brokers);
    if (refusal !== undefined) throw refusal;
    throw new SluiceError<PreflightErrorCode>(
      'kafka_unreachable',
      `Kafka at ${brokers.join(',')} is unreachable: ${errorMessage(error)}. ` +
        'Start the embedded stack with `pnpm stack:up` or point KAFKA_BROKERS at a running cluster.',
      { cause: error, retriable: true },
    );
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}
