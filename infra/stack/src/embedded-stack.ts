import { SluiceError } from '@sluice/errors';
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createKafkaServer, type KafkaServer } from './kafka-server.js';
import { createPostgresServer, type PostgresServer } from './postgres-server.js';
import { isProcessAlive, pollUntil } from './processes.js';

/** Options for {@link createEmbeddedStack}. */
export interface EmbeddedStackOptions {
  /** The repository root (holds `infra/`). */
  rootDir: string;
  /** Where the stack keeps its state. Default `<rootDir>/.sluice`. */
  stateDir?: string;
  /** Default 54329. */
  postgresPort?: number;
  /** Default `sluice`. */
  database?: string;
  /** Default 19092; the KRaft controller listens on the next port. */
  kafkaPort?: number;
  /** Directory of PostgreSQL's server binaries; found automatically when omitted. */
  postgresBinDir?: string;
  log?: (message: string) => void;
}

/** Where the running stack can be reached. */
export interface StackEndpoints {
  databaseUrl: string;
  kafkaBrokers: string[];
}

/** What `status` found. */
export interface StackStatus extends StackEndpoints {
  postgres: { running: boolean; dataDir: string };
  kafka: { running: boolean; pid?: number };
}

/** The embedded development stack: one PostgreSQL and one Kafka node on private ports. */
export interface EmbeddedStack {
  readonly postgres: PostgresServer;
  readonly kafka: KafkaServer;
  /** Starts whatever is not running (idempotent) and waits until both serve requests. */
  up(parts?: { postgres?: boolean; kafka?: boolean }): Promise<StackEndpoints>;
  /** Stops both servers; a no-op for servers that are not running. */
  down(): Promise<void>;
  status(): Promise<StackStatus>;
}

/**
 * PostgreSQL refuses to run as root, so as root its data lives where the `postgres` user
 * can reach it (a clone under a private home or temp directory is not traversable).
 */
function postgresDataDir(stateDir: string): string {
  if (typeof process.getuid === 'function' && process.getuid() === 0) {
    const digest = createHash('sha256').update(stateDir).digest('hex').slice(0, 12);
    return join(tmpdir(), `sluice-pg-${digest}`, 'data');
  }
  return join(stateDir, 'postgres');
}

/** Serialises concurrent `up`/`down` calls (parallel test projects, two terminals). */
async function withLock<T>(lockFile: string, action: () => Promise<T>): Promise<T> {
  await pollUntil(
    async () => {
      try {
        const handle = await open(lockFile, 'wx');
        await handle.writeFile(String(process.pid));
        await handle.close();
        return true;
      } catch {
        const owner = Number(await readFile(lockFile, 'utf8').catch(() => ''));
        if (!Number.isInteger(owner) || owner <= 0 || !(await isProcessAlive(owner, ''))) {
          await rm(lockFile, { force: true });
        }
        return false;
      }
    },
    300_000,
    () => new SluiceError('stack_locked', `Another process holds ${lockFile} for over 5 minutes.`),
    200,
  );
  try {
    return await action();
  } finally {
    await rm(lockFile, { force: true });
  }
}

/**
 * The embedded stack of this repository.
 *
 * @example
 * const stack = createEmbeddedStack({ rootDir: process.cwd() });
 * const { databaseUrl, kafkaBrokers } = await stack.up();
 */
export function createEmbeddedStack(options: EmbeddedStackOptions): EmbeddedStack {
  const stateDir = options.stateDir ?? join(options.rootDir, '.sluice');
  const database = options.database ?? 'sluice';
  const kafkaPort = options.kafkaPort ?? 19092;
  const log = options.log ?? (() => undefined);
  const postgres = createPostgresServer({
    dataDir: postgresDataDir(stateDir),
    port: options.postgresPort ?? 54329,
    settingsFile: join(options.rootDir, 'infra', 'postgres', 'sluice.conf'),
    ...(options.postgresBinDir === undefined ? {} : { binDir: options.postgresBinDir }),
  });
  const kafka = createKafkaServer({
    kafkaHome: join(options.rootDir, 'infra', 'kafka'),
    dataDir: join(stateDir, 'kafka'),
    port: kafkaPort,
    controllerPort: kafkaPort + 1,
    log,
  });
  const endpoints = (): StackEndpoints => ({
    databaseUrl: postgres.url(database),
    kafkaBrokers: kafka.brokers,
  });
  const lockFile = join(stateDir, 'stack.lock');

  async function up(parts: { postgres?: boolean; kafka?: boolean } = {}): Promise<StackEndpoints> {
    await mkdir(stateDir, { recursive: true });
    return withLock(lockFile, async () => {
      const starts: Promise<void>[] = [];
      if (parts.postgres !== false) {
        starts.push(
          (async () => {
            if (!(await postgres.isRunning())) log(`starting PostgreSQL on port ${postgres.port}`);
            await postgres.start();
            await postgres.ensureDatabase(database);
          })(),
        );
      }
      if (parts.kafka !== false) {
        starts.push(
          (async () => {
            if (!(await kafka.isRunning())) log(`starting Kafka on port ${kafka.port}`);
            await kafka.start();
          })(),
        );
      }
      // Start both, and report every failure rather than the first one only.
      const results = await Promise.allSettled(starts);
      const failures = results.flatMap((r) =>
        r.status === 'rejected' ? [r.reason as unknown] : [],
      );
      if (failures.length === 1) throw failures[0];
      if (failures.length > 1) {
        throw new AggregateError(failures, failures.map((f) => String(f)).join('\n'));
      }
      return endpoints();
    });
  }

  async function down(): Promise<void> {
    await mkdir(stateDir, { recursive: true });
    await withLock(lockFile, async () => {
      await Promise.all([kafka.stop(), postgres.stop('fast')]);
    });
  }

  async function status(): Promise<StackStatus> {
    const kafkaPid = await kafka.pid();
    return {
      ...endpoints(),
      postgres: { running: await postgres.isRunning(), dataDir: postgres.dataDir },
      kafka: kafkaPid === undefined ? { running: false } : { running: true, pid: kafkaPid },
    };
  }

  return { postgres, kafka, up, down, status };
}
