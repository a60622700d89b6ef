import { SluiceError } from '@sluice/errors';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCertificates, type Certificates } from './certificates.js';
import { createKafkaCluster, type KafkaCluster } from './kafka-cluster.js';
import type { KafkaServer } from './kafka-server.js';
import { formatVersion } from './kafka-versions.js';
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
   * Default 19092: node 1's client port. Node `n` takes three consecutive ports from
   * `kafkaPort + 3 * (n - 1)`: client, KRaft controller, SASL_SSL.
   */
  kafkaPort?: number;
  /**
   * Kafka nodes: 1, or 3 for a cluster with replication 3 and min.insync.replicas 2. Default: as
   * many as the last `up` started, else 1.
   */
  kafkaNodes?: number;
  /** The Apache Kafka version (see `KafkaServerOptions.version`). Default 4.4. */
  kafkaVersion?: string;
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
  kafka: {
    /** Whether node 1 runs. */
    running: boolean;
    /** Node 1's process id. */
    pid?: number;
    /** The version that formatted node 1's data, else the one it would start. */
    version: string;
    nodes: KafkaNodeStatus[];
    secure: KafkaSecureEndpoint;
  };
  /** Who stops the stack; undefined when nobody does (its starter exited without `down`). */
  owner?: StackOwner;
}

/** One Kafka node of the stack. */
export interface KafkaNodeStatus {
  nodeId: number;
  running: boolean;
  pid?: number;
  port: number;
  controllerPort: number;
  /** Its SASL_SSL listener's address. */
  secureBrokers: string[];
}

/**
 * Kafka's SASL_SSL listener: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for `username`, whose password
 * is generated once into `passwordFile`; its certificate is valid for `localhost` and `127.0.0.1`.
 * A client certificate signed by `caFile`'s authority may be presented (mutual TLS); one signed by
 * another is refused.
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

/** The embedded development stack: one PostgreSQL and one or three Kafka nodes on private ports. */
export interface EmbeddedStack {
  readonly postgres: PostgresServer;
  /** Kafka's node 1. */
  readonly kafka: KafkaServer;
  /** Every Kafka node (one unless `kafkaNodes` says otherwise). */
  readonly kafkaCluster: KafkaCluster;
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

/** The file in the state directory that says how many Kafka nodes the last `up` started. */
const KAFKA_NODES_FILE = 'kafka-nodes';

function recordedKafkaNodes(stateDir: string): number | undefined {
  try {
    const nodes = Number(readFileSync(join(stateDir, KAFKA_NODES_FILE), 'utf8').trim());
    return Number.isInteger(nodes) && nodes > 0 ? nodes : undefined;
  } catch {
    return undefined;
  }
}

/** Where `nodes` Kafka nodes keep their data: one in `kafka`, a cluster in `kafka-cluster`. */
function kafkaDataDir(stateDir: string, nodes: number): string {
  return join(stateDir, nodes === 1 ? 'kafka' : 'kafka-cluster');
}

class RepositoryStack implements EmbeddedStack {
  readonly postgres: PostgresServer;
  readonly kafka: KafkaServer;
  readonly kafkaCluster: KafkaCluster;
  private readonly kafkaNodes: number;
  /** The Kafka of as many nodes as the last `up` started, when that is another count. */
  private readonly otherKafka: KafkaCluster | undefined;
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
    this.kafkaNodes = options.kafkaNodes ?? recordedKafkaNodes(this.stateDir) ?? 1;
    if (![1, 3].includes(this.kafkaNodes)) {
      throw new SluiceError(
        'stack_kafka_nodes',
        `The embedded Kafka runs 1 node or a cluster of 3, not ${this.kafkaNodes}.`,
      );
    }
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
    this.kafkaCluster = this.kafkaOf(this.kafkaNodes, options);
    const [first] = this.kafkaCluster.nodes;
    if (first === undefined) throw new Error('a Kafka cluster without nodes');
    this.kafka = first;
    const recorded = recordedKafkaNodes(this.stateDir);
    this.otherKafka =
      recorded === undefined || recorded === this.kafkaNodes
        ? undefined
        : this.kafkaOf(recorded, options);
  }

  /** The stack's Kafka of `nodes` nodes (see {@link EmbeddedStackOptions.kafkaPort}). */
  private kafkaOf(nodes: number, options: EmbeddedStackOptions): KafkaCluster {
    const kafkaPort = options.kafkaPort ?? 19092;
    return createKafkaCluster({
      kafkaHome: join(options.rootDir, 'infra', 'kafka'),
      dataDir: kafkaDataDir(this.stateDir, nodes),
      nodes,
      ports: Array.from({ length: nodes }, (_, i) => ({
        port: kafkaPort + 3 * i,
        controllerPort: kafkaPort + 3 * i + 1,
        securePort: kafkaPort + 3 * i + 2,
      })),
      ...(options.kafkaVersion === undefined ? {} : { version: options.kafkaVersion }),
      secure: {
        certFile: join(this.certificatesDir, 'server.crt'),
        keyFile: join(this.certificatesDir, 'server.key'),
        caFile: join(this.certificatesDir, 'ca.crt'),
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
        parts.kafka === false ? undefined : this.kafkaCluster.stop(),
        parts.kafka === false ? undefined : this.otherKafka?.stop(),
        parts.postgres === false ? undefined : this.postgres.stop('fast'),
      ]);
      if (parts.kafka !== false && parts.postgres !== false) await clearStackOwner(this.stateDir);
    });
  }

  async status(): Promise<StackStatus> {
    const nodes = await Promise.all(
      this.kafkaCluster.nodes.map(async (node): Promise<KafkaNodeStatus> => {
        const pid = await node.pid();
        return {
          nodeId: node.nodeId,
          running: pid !== undefined,
          ...(pid === undefined ? {} : { pid }),
          port: node.port,
          controllerPort: node.controllerPort,
          secureBrokers: node.secureBrokers ?? [],
        };
      }),
    );
    const current = await this.owner();
    const dataDir = kafkaDataDir(this.stateDir, this.kafkaNodes);
    const formatted = await formatVersion(
      this.kafkaNodes === 1 ? dataDir : join(dataDir, 'node-1'),
    );
    const [first] = nodes;
    return {
      ...this.endpoints(),
      postgres: {
        running: await this.postgres.isRunning(),
        dataDir: this.postgres.dataDir,
        caFile: join(this.certificatesDir, 'ca.crt'),
      },
      kafka: {
        running: first?.running === true,
        ...(first?.pid === undefined ? {} : { pid: first.pid }),
        version: formatted ?? this.kafka.version,
        nodes,
        secure: {
          brokers: this.kafkaCluster.secureBrokers ?? [],
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
    return {
      databaseUrl: this.postgres.url(this.database),
      kafkaBrokers: this.kafkaCluster.brokers,
    };
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
    const { kafka, kafkaNodes } = this;
    if (this.otherKafka !== undefined && (await this.otherKafka.nodes[0]?.isRunning()) === true) {
      throw new SluiceError(
        'stack_kafka_nodes',
        `The embedded Kafka runs ${this.otherKafka.nodes.length} node(s), not ${kafkaNodes}; ` +
          'stop it first (`pnpm stack:down`).',
      );
    }
    if (!(await kafka.isRunning())) {
      this.log(
        kafkaNodes === 1
          ? `starting Kafka ${kafka.version} on port ${kafka.port}`
          : `starting a ${kafkaNodes}-node Kafka ${kafka.version} cluster on ${this.kafkaCluster.brokers.join(',')}`,
      );
    }
    await this.ensureCertificates();
    await ensureScramPassword(this.scramPasswordFile);
    await writeFile(join(this.stateDir, KAFKA_NODES_FILE), `${kafkaNodes}\n`);
    await this.kafkaCluster.start(signal === undefined ? {} : { signal });
  }
}

/** The SCRAM user of Kafka's SASL_SSL listener. */
const SCRAM_USER = 'sluice';

/**
 * The development master key of the services' personal data (`SLUICE_MASTER_KEY_FILE`):
 * `<dir>/master-key`, 32 random bytes as base64 generated once (mode 0600). Losing it makes the
 * personal fields of every event unreadable.
 */
export async function ensureMasterKeyFile(dir: string): Promise<string> {
  const file = join(dir, 'master-key');
  if (existsSync(file)) return file;
  await mkdir(dir, { recursive: true });
  await writeFile(file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  return file;
}

/** Generates the SCRAM user's password into `file` once (mode 0600). */
async function ensureScramPassword(file: string): Promise<void> {
  if (existsSync(file)) return;
  await writeFile(file, `${randomBytes(18).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
}
