import { SluiceError } from '@sluice/errors';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCertificates, type Certificates } from './certificates.js';
import { createKafkaServer, type KafkaServer } from './kafka-server.js';
import { createPostgresServer, type PostgresServer } from './postgres-server.js';
import { isProcessAlive, pollUntil } from './processes.js';
import {
  claimStack,
  clearStackOwner,
  keepStack,
  readStackOwner,
  type StackOwner,
} from './stack-owner.js';

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
  /**
   * Default 19092; the KRaft controller listens on the next port, the SASL_SSL listener on the
   * one after.
   */
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
  /** `caFile`: the CA of its TLS certificate, for `sslrootcert` (it accepts plaintext too). */
  postgres: { running: boolean; dataDir: string; caFile: string };
  kafka: { running: boolean; pid?: number; secure: KafkaSecureEndpoint };
  /** Who stops the stack; undefined when nobody does (its starter exited without `down`). */
  owner?: StackOwner;
}

/**
 * Kafka's SASL_SSL listener: SCRAM-SHA-256 and SCRAM-SHA-512 for `username`, whose password is
 * generated once into `passwordFile`; its certificate is valid for `localhost` and `127.0.0.1`.
 */
export interface KafkaSecureEndpoint {
  brokers: string[];
  caFile: string;
  username: string;
  passwordFile: string;
}

/** Which servers an `up` or `down` is about; each defaults to true. */
export interface StackParts {
  postgres?: boolean;
  kafka?: boolean;
}

/** Options for {@link EmbeddedStack.up}. */
export interface StackUpOptions {
  /**
   * Keep the stack up until `down` (what `pnpm stack:up` does). Otherwise the calling process
   * becomes the stack's owner, the one expected to stop it, unless the stack is kept or another
   * live process owns it.
   */
  keep?: boolean;
  /** Aborts the wait for the lock and for Kafka's readiness (what was started stays up). */
  signal?: AbortSignal;
}

/** The embedded development stack: one PostgreSQL and one Kafka node on private ports. */
export interface EmbeddedStack {
  readonly postgres: PostgresServer;
  readonly kafka: KafkaServer;
  /** Starts whatever is not running (idempotent) and waits until both serve requests. */
  up(parts?: StackParts, options?: StackUpOptions): Promise<StackEndpoints>;
  /**
   * Stops the servers (both by default; a no-op for servers that are not running). Stopping
   * both forgets the owner.
   */
  down(parts?: StackParts): Promise<void>;
  status(): Promise<StackStatus>;
  /** Who stops the stack (see {@link StackUpOptions.keep}). */
  owner(): Promise<StackOwner | undefined>;
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
async function withLock<T>(
  lockFile: string,
  action: () => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
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
    signal,
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
  return new RepositoryStack(options);
}

class RepositoryStack implements EmbeddedStack {
  readonly postgres: PostgresServer;
  readonly kafka: KafkaServer;
  private readonly stateDir: string;
  private readonly database: string;
  private readonly lockFile: string;
  private readonly certificatesDir: string;
  private readonly scramPasswordFile: string;
  private certificates: Promise<Certificates> | undefined;
  private readonly log: (message: string) => void;

  constructor(options: EmbeddedStackOptions) {
    this.stateDir = options.stateDir ?? join(options.rootDir, '.sluice');
    this.database = options.database ?? 'sluice';
    this.lockFile = join(this.stateDir, 'stack.lock');
    this.certificatesDir = join(this.stateDir, 'certs');
    this.scramPasswordFile = join(this.stateDir, 'kafka-scram-password');
    this.log = options.log ?? (() => undefined);
    const kafkaPort = options.kafkaPort ?? 19092;
    this.postgres = createPostgresServer({
      dataDir: postgresDataDir(this.stateDir),
      port: options.postgresPort ?? 54329,
      settingsFile: join(options.rootDir, 'infra', 'postgres', 'sluice.conf'),
      tls: {
        certFile: join(this.certificatesDir, 'server.crt'),
        keyFile: join(this.certificatesDir, 'server.key'),
      },
      // 127.0.0.2 is not in the certificate: a name to see verify-full refuse.
      listenAddresses: ['127.0.0.1', '127.0.0.2'],
      ...(options.postgresBinDir === undefined ? {} : { binDir: options.postgresBinDir }),
    });
    this.kafka = createKafkaServer({
      kafkaHome: join(options.rootDir, 'infra', 'kafka'),
      dataDir: join(this.stateDir, 'kafka'),
      port: kafkaPort,
      controllerPort: kafkaPort + 1,
      secure: {
        port: kafkaPort + 2,
        certFile: join(this.certificatesDir, 'server.crt'),
        keyFile: join(this.certificatesDir, 'server.key'),
        username: SCRAM_USER,
        passwordFile: this.scramPasswordFile,
      },
      log: this.log,
    });
  }

  async up(parts: StackParts = {}, upOptions: StackUpOptions = {}): Promise<StackEndpoints> {
    await mkdir(this.stateDir, { recursive: true });
    const { signal } = upOptions;
    return withLock(
      this.lockFile,
      async () => {
        // Recorded before anything starts, so a start that is interrupted still has an owner.
        if (parts.postgres !== false || parts.kafka !== false) {
          await (upOptions.keep === true ? keepStack(this.stateDir) : claimStack(this.stateDir));
        }
        return this.startParts(parts, signal);
      },
      signal,
    );
  }

  async down(parts: StackParts = {}): Promise<void> {
    await mkdir(this.stateDir, { recursive: true });
    await withLock(this.lockFile, async () => {
      await Promise.all([
        parts.kafka === false ? undefined : this.kafka.stop(),
        parts.postgres === false ? undefined : this.postgres.stop('fast'),
      ]);
      if (parts.kafka !== false && parts.postgres !== false) await clearStackOwner(this.stateDir);
    });
  }

  async status(): Promise<StackStatus> {
    const kafkaPid = await this.kafka.pid();
    const current = await this.owner();
    return {
      ...this.endpoints(),
      postgres: {
        running: await this.postgres.isRunning(),
        dataDir: this.postgres.dataDir,
        caFile: join(this.certificatesDir, 'ca.crt'),
      },
      kafka: {
        running: kafkaPid !== undefined,
        ...(kafkaPid === undefined ? {} : { pid: kafkaPid }),
        secure: {
          brokers: this.kafka.secureBrokers ?? [],
          caFile: join(this.certificatesDir, 'ca.crt'),
          username: SCRAM_USER,
          passwordFile: this.scramPasswordFile,
        },
      },
      ...(current === undefined ? {} : { owner: current }),
    };
  }

  owner(): Promise<StackOwner | undefined> {
    return readStackOwner(this.stateDir);
  }

  private endpoints(): StackEndpoints {
    return { databaseUrl: this.postgres.url(this.database), kafkaBrokers: this.kafka.brokers };
  }

  private async startParts(parts: StackParts, signal?: AbortSignal): Promise<StackEndpoints> {
    const starts: Promise<void>[] = [];
    if (parts.postgres !== false) starts.push(this.startPostgres());
    if (parts.kafka !== false) starts.push(this.startKafka(signal));
    // Start both, and report every failure rather than the first one only.
    const results = await Promise.allSettled(starts);
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) {
      throw new AggregateError(failures, failures.map((f) => String(f)).join('\n'));
    }
    return this.endpoints();
  }

  private async startPostgres(): Promise<void> {
    const { postgres } = this;
    if (!(await postgres.isRunning())) this.log(`starting PostgreSQL on port ${postgres.port}`);
    await this.ensureCertificates();
    await postgres.start();
    await postgres.ensureDatabase(this.database);
  }

  /** The certificates, made once for both servers. */
  private ensureCertificates(): Promise<Certificates> {
    return (this.certificates ??= ensureCertificates(this.certificatesDir));
  }

  private async startKafka(signal?: AbortSignal): Promise<void> {
    const { kafka } = this;
    if (!(await kafka.isRunning())) this.log(`starting Kafka on port ${kafka.port}`);
    await this.ensureCertificates();
    await ensureScramPassword(this.scramPasswordFile);
    await kafka.start(signal === undefined ? {} : { signal });
  }
}

/** The SCRAM user of Kafka's SASL_SSL listener. */
const SCRAM_USER = 'sluice';

/** Generates the SCRAM user's password into `file` once (mode 0600). */
async function ensureScramPassword(file: string): Promise<void> {
  if (existsSync(file)) return;
  await writeFile(file, `${randomBytes(18).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
}
