import { SluiceError } from '@sluice/errors';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, closeSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import {
  nodeProperties,
  replicationOf,
  type SecureListener,
  type Voter,
} from './kafka-properties.js';
import {
  assertFormatVersion,
  DEFAULT_KAFKA_VERSION,
  ensureJars,
  kafkaDistribution,
  recordFormatVersion,
  type KafkaDistribution,
} from './kafka-versions.js';
import {
  assertPortFree,
  isPortOpen,
  isProcessAlive,
  pollUntil,
  runCommand,
  tailFile,
} from './processes.js';

/** Options for {@link createKafkaServer}. */
export interface KafkaServerOptions {
  /** `infra/kafka`: holds `pom.xml`, `server.properties` and the logging configurations. */
  kafkaHome: string;
  /** Where this node keeps its log segments, pid file and server log. */
  dataDir: string;
  /** Client port on 127.0.0.1. */
  port: number;
  /** KRaft controller port on 127.0.0.1. */
  controllerPort: number;
  /** `-Xmx` of the broker JVM. Default `1g`. */
  heap?: string;
  /** Called with progress messages (jar download, formatting). */
  log?: (message: string) => void;
  /** A SASL_SSL listener besides the plaintext one. Default: none. */
  secure?: SecureListenerOptions;
  /**
   * The Apache Kafka version, `4.4.x` or `3.9.x`. Default {@link DEFAULT_KAFKA_VERSION}. A data
   * directory formatted by another line is refused (`kafka_version_mismatch`), never reformatted.
   */
  version?: string;
}

/** A node's place in a cluster (see `kafka-cluster.ts`). */
export interface ClusterMembership {
  nodeId: number;
  /** The static controller quorum. */
  voters: readonly Voter[];
  /** How many brokers the cluster has. */
  brokers: number;
  /** A broker or a controller alone; both when omitted. */
  role?: 'broker' | 'controller';
  /** Shared by every node, used when this one formats its storage. */
  clusterId: string;
}

/**
 * A SASL_SSL listener on 127.0.0.1, advertised as `localhost` (what the server certificate
 * names), with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for one user (its SCRAM credentials created
 * at every start), and client certificates of `caFile`'s authority verified when presented.
 */
export interface SecureListenerOptions {
  port: number;
  /** PEM private key (PKCS#8, unencrypted) and certificate of the broker. */
  keyFile: string;
  certFile: string;
  /** PEM of the authority whose client certificates the listener accepts (mutual TLS). */
  caFile: string;
  username: string;
  /** Holds the user's password, read at every start. */
  passwordFile: string;
}

/** One Apache Kafka node in KRaft mode (broker + controller) running on the local JVM. */
export interface KafkaServer {
  /** `node.id`: 1 for a single node, 1..n in a cluster. */
  readonly nodeId: number;
  readonly version: string;
  readonly port: number;
  readonly controllerPort: number;
  readonly brokers: string[];
  /** The SASL_SSL listener's bootstrap address, `localhost:<port>`, when there is one. */
  readonly secureBrokers: string[] | undefined;
  /**
   * Resolves jars, formats storage on first start, starts the JVM and waits until it serves: a
   * single node until it takes a produce acknowledged by all replicas, a cluster's node until
   * its own metadata lists it as a live broker (so one node restarts while others are down).
   * `signal` aborts the wait (the JVM keeps starting; `stop` stops it).
   */
  start(options?: { signal?: AbortSignal }): Promise<void>;
  /** SIGTERM (controlled shutdown), SIGKILL after `timeoutMs`. `kill` crashes it on purpose. */
  stop(options?: { kill?: boolean; timeoutMs?: number }): Promise<void>;
  isRunning(): Promise<boolean>;
  /** The process id while running. */
  pid(): Promise<number | undefined>;
}

const MAIN_CLASS = 'kafka.Kafka';
const READY_TOPIC = '__sluice_ready';

/** Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding. */
export function randomClusterId(): string {
  return randomBytes(16).toString('base64url');
}

async function assertJava(): Promise<void> {
  const result = await runCommand('java', ['-version']);
  const major = /version "(\d+)/.exec(result.output)?.[1];
  if (result.code !== 0 || major === undefined) {
    throw new SluiceError(
      'java_missing',
      'Java is not installed or not on PATH; the embedded Kafka broker needs Java 17 ' +
        '(e.g. `apt-get install openjdk-17-jre-headless`), or point KAFKA_BROKERS at a running cluster.',
    );
  }
  if (Number(major) < 17) {
    throw new SluiceError(
      'java_too_old',
      `Java ${major} found; the embedded Kafka broker needs Java 17 or newer.`,
    );
  }
}

/**
 * An Apache Kafka node in KRaft mode (4.4 unless `version` says otherwise), run with the
 * installed Java from jars that Maven resolves on first use of each version.
 */
export function createKafkaServer(options: KafkaServerOptions): KafkaServer {
  return new LocalKafkaServer(options);
}

/** A node of a cluster, with what the cluster does through one of its nodes. */
export interface KafkaNode extends KafkaServer {
  /** Waits until the cluster takes a produce through this node acknowledged by all replicas. */
  waitForProduce(signal?: AbortSignal): Promise<void>;
  /** Creates or updates the SCRAM user of the SASL_SSL listener (a no-op without one). */
  ensureScramUser(): Promise<void>;
}

/** One node of a cluster: started and stopped on its own or with the others. */
export function createKafkaNode(
  options: KafkaServerOptions,
  membership: ClusterMembership,
): KafkaNode {
  return new LocalKafkaServer(options, membership);
}

class LocalKafkaServer implements KafkaNode {
  readonly nodeId: number;
  readonly version: string;
  readonly port: number;
  readonly controllerPort: number;
  readonly brokers: string[];
  readonly secureBrokers: string[] | undefined;
  private readonly logDir: string;
  private readonly pidFile: string;
  private readonly serverLog: string;
  private readonly consoleLog: string;
  private readonly propertiesFile: string;
  private readonly distribution: KafkaDistribution;

  constructor(
    private readonly options: KafkaServerOptions,
    private readonly membership?: ClusterMembership,
  ) {
    const { dataDir, port } = options;
    this.nodeId = membership?.nodeId ?? 1;
    this.version = options.version ?? DEFAULT_KAFKA_VERSION;
    this.distribution = kafkaDistribution(options.kafkaHome, this.version);
    this.port = port;
    this.controllerPort = options.controllerPort;
    this.brokers = [`127.0.0.1:${port}`];
    this.secureBrokers =
      options.secure === undefined ? undefined : [`localhost:${options.secure.port}`];
    this.logDir = join(dataDir, 'logs');
    this.pidFile = join(dataDir, 'kafka.pid');
    this.serverLog = join(dataDir, 'server.log');
    this.consoleLog = join(dataDir, 'console.log');
    this.propertiesFile = join(dataDir, 'server.properties');
  }

  async start(startOptions: { signal?: AbortSignal } = {}): Promise<void> {
    if (await this.isRunning()) return;
    if (this.membership?.role !== 'controller') await assertPortFree(this.port, 'Kafka');
    await assertPortFree(this.options.controllerPort, 'Kafka controller');
    if (this.options.secure !== undefined) {
      await assertPortFree(this.options.secure.port, 'Kafka SASL_SSL');
    }
    await assertJava();
    await ensureJars(
      this.options.kafkaHome,
      this.distribution,
      this.options.log ?? (() => undefined),
    );
    await mkdir(this.logDir, { recursive: true });
    await this.writeProperties();
    await this.format();
    const exited = await this.spawnBroker();
    const ready = async () => {
      if (exited()) {
        throw new SluiceError(
          'kafka_start_failed',
          `Kafka node ${this.nodeId} exited during start-up:\n${await tailFile(this.consoleLog)}\n${await tailFile(this.serverLog)}`,
        );
      }
      if (this.membership?.role === 'controller') return isPortOpen(this.controllerPort);
      if (!(await isPortOpen(this.port))) return false;
      return this.membership === undefined
        ? producesOk(this.brokers, 1)
        : servesAsBroker(this.brokers, this.nodeId);
    };
    await pollUntil(
      ready,
      120_000,
      () =>
        new SluiceError(
          'kafka_start_timeout',
          `Kafka node ${this.nodeId} on port ${this.port} did not serve within 120 s; see ${this.serverLog}.`,
        ),
      500,
      startOptions.signal,
    );
    if (this.membership === undefined) await this.ensureScramUser();
  }

  async waitForProduce(signal?: AbortSignal): Promise<void> {
    const { replicas } = replicationOf(this.membership?.brokers ?? 1);
    await pollUntil(
      () => producesOk(this.brokers, replicas),
      120_000,
      () =>
        new SluiceError(
          'kafka_start_timeout',
          `The Kafka cluster did not take a produce through port ${this.port} within 120 s; see ${this.serverLog}.`,
        ),
      500,
      signal,
    );
  }

  async stop(stopOptions: { kill?: boolean; timeoutMs?: number } = {}): Promise<void> {
    const current = await this.pid();
    if (current === undefined) return;
    process.kill(current, stopOptions.kill === true ? 'SIGKILL' : 'SIGTERM');
    try {
      await brokerExit(current, stopOptions.timeoutMs ?? 30_000, () => new Error('timeout'));
    } catch {
      process.kill(current, 'SIGKILL');
      await brokerExit(
        current,
        10_000,
        () => new SluiceError('kafka_stop_failed', `Kafka (pid ${current}) survived SIGKILL.`),
      );
    }
    await rm(this.pidFile, { force: true });
  }

  async isRunning(): Promise<boolean> {
    return (await this.pid()) !== undefined;
  }

  async pid(): Promise<number | undefined> {
    if (!existsSync(this.pidFile)) return undefined;
    const value = Number((await readFile(this.pidFile, 'utf8')).trim());
    return Number.isInteger(value) && (await isProcessAlive(value, MAIN_CLASS)) ? value : undefined;
  }

  private async writeProperties(): Promise<void> {
    const template = await readFile(join(this.options.kafkaHome, 'server.properties'), 'utf8');
    const { secure } = this.options;
    const keystore = join(this.options.dataDir, 'keystore.pem');
    if (secure !== undefined) {
      const pem =
        (await readFile(secure.keyFile, 'utf8')) + (await readFile(secure.certFile, 'utf8'));
      await writeFile(keystore, pem, { mode: 0o600 });
    }
    const listener = secure === undefined ? undefined : await secureListener(secure, keystore);
    const properties = nodeProperties(template, {
      nodeId: this.nodeId,
      port: this.port,
      controllerPort: this.options.controllerPort,
      logDir: this.logDir,
      voters: this.membership?.voters ?? [
        { nodeId: this.nodeId, controllerPort: this.options.controllerPort },
      ],
      brokers: this.membership?.brokers ?? 1,
      ...(this.membership?.role === undefined ? {} : { role: this.membership.role }),
      ...(listener === undefined ? {} : { secure: listener }),
    });
    // It holds the PLAIN user's password.
    await writeFile(this.propertiesFile, properties, { mode: 0o600 });
    await chmod(this.propertiesFile, 0o600);
  }

  /** Through the plaintext listener. */
  async ensureScramUser(): Promise<void> {
    const { secure } = this.options;
    if (secure === undefined) return;
    const password = await readPassword(secure.passwordFile);
    // Kafka alters one credential of a user per request.
    const results = await Promise.all(
      ['SCRAM-SHA-256', 'SCRAM-SHA-512'].map((mechanism) =>
        runCommand('java', [
          '-cp',
          this.classpath(),
          this.distribution.configCommand,
          '--bootstrap-server',
          this.brokers.join(','),
          '--alter',
          '--add-config',
          `${mechanism}=[password=${password}]`,
          '--entity-type',
          'users',
          '--entity-name',
          secure.username,
        ]),
      ),
    );
    const failed = results.find((result) => result.code !== 0);
    if (failed !== undefined) {
      throw new SluiceError(
        'kafka_scram_failed',
        `Could not create the SCRAM user ${secure.username}:\n${failed.output.replaceAll(password, '***')}`,
      );
    }
  }

  private classpath(): string {
    return `${this.distribution.libDir}/*`;
  }

  /** Formats the storage on first start; later starts check which Kafka line formatted it. */
  private async format(): Promise<void> {
    if (existsSync(join(this.logDir, 'meta.properties'))) {
      await assertFormatVersion(this.options.dataDir, this.version);
      return;
    }
    const result = await runCommand('java', [
      '-cp',
      this.classpath(),
      'kafka.tools.StorageTool',
      'format',
      // One argument: a random id may begin with '-'.
      `--cluster-id=${this.membership?.clusterId ?? randomClusterId()}`,
      '-c',
      this.propertiesFile,
    ]);
    if (result.code !== 0) {
      throw new SluiceError(
        'kafka_format_failed',
        `kafka-storage format failed:\n${result.output}`,
      );
    }
    await recordFormatVersion(this.options.dataDir, this.version);
  }

  /** Starts the broker's JVM on its own; the function returned tells whether it has exited. */
  private async spawnBroker(): Promise<() => boolean> {
    const out = openSync(this.consoleLog, 'a');
    const child = spawn(
      'java',
      [
        `-Xmx${this.options.heap ?? '1g'}`,
        '-Xms256m',
        '-XX:+UseG1GC',
        '-XX:MaxGCPauseMillis=20',
        '-Djava.awt.headless=true',
        ...this.distribution.loggingArgs,
        `-Dkafka.log.file=${this.serverLog}`,
        '-cp',
        this.classpath(),
        MAIN_CLASS,
        this.propertiesFile,
      ],
      { detached: true, stdio: ['ignore', out, out] },
    );
    closeSync(out);
    if (child.pid === undefined) {
      throw new SluiceError('kafka_start_failed', 'Could not spawn java for the Kafka broker.');
    }
    const childPid = child.pid;
    let exited = false;
    child.on('exit', () => (exited = true));
    child.unref();
    await writeFile(this.pidFile, String(childPid));
    return () => exited;
  }
}

/** Waits until the broker `pid` has exited; throws `timeoutError()` after `timeoutMs`. */
function brokerExit(pid: number, timeoutMs: number, timeoutError: () => Error): Promise<void> {
  return pollUntil(
    async () => !(await isProcessAlive(pid, MAIN_CLASS)),
    timeoutMs,
    timeoutError,
    200,
  );
}

function readinessClient(brokers: string[]): Kafka {
  return new Kafka({
    clientId: 'sluice-stack',
    brokers,
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    connectionTimeout: 2000,
    requestTimeout: 5000,
  });
}

/**
 * Whether `brokers` take a produce acknowledged by all in-sync replicas, creating the topic it
 * needs with `replicas` replicas.
 */
async function producesOk(brokers: string[], replicas: number): Promise<boolean> {
  const kafka = readinessClient(brokers);
  const admin = kafka.admin();
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  try {
    await admin.connect();
    const topics = await admin.listTopics();
    if (!topics.includes(READY_TOPIC)) {
      await admin.createTopics({
        topics: [{ topic: READY_TOPIC, numPartitions: 1, replicationFactor: replicas }],
        waitForLeaders: true,
      });
    }
    await producer.connect();
    await producer.send({
      topic: READY_TOPIC,
      acks: -1,
      timeout: 5000,
      messages: [{ value: 'ready' }],
    });
    return true;
  } catch {
    return false;
  } finally {
    await producer.disconnect().catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
  }
}

/**
 * Whether the node at `brokers` lists itself as a live broker: it is registered with the
 * controller quorum, unfenced and caught up with the cluster's metadata.
 */
async function servesAsBroker(brokers: string[], nodeId: number): Promise<boolean> {
  const admin = readinessClient(brokers).admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    return cluster.brokers.some((broker) => broker.nodeId === nodeId);
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/**
 * The user's password from `file`: it is written into the broker's properties (PLAIN) and SCRAM's
 * configuration syntax as it is, so only characters that need no quoting in either are taken.
 *
 * @throws SluiceError `kafka_password_invalid`
 */
async function readPassword(file: string): Promise<string> {
  const password = (await readFile(file, 'utf8')).trim();
  if (!/^[A-Za-z0-9._~+/=-]+$/.test(password)) {
    throw new SluiceError(
      'kafka_password_invalid',
      `${file} must hold a password of letters, digits and . _ ~ + / = - only`,
    );
  }
  return password;
}

/** The SASL_SSL listener's settings of a node whose PEM keystore is `keystore`. */
async function secureListener(
  secure: SecureListenerOptions,
  keystore: string,
): Promise<SecureListener> {
  const plain = { username: secure.username, password: await readPassword(secure.passwordFile) };
  return { port: secure.port, keystore, truststore: secure.caFile, plain };
}
