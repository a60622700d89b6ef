import { SluiceError } from '@sluice/errors';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, closeSync, readdirSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
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
  /** `infra/kafka`: holds `pom.xml`, `server.properties`, `log4j.properties`. */
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
}

/**
 * A SASL_SSL listener on 127.0.0.1, advertised as `localhost` (what the server certificate
 * names), with SCRAM-SHA-256 and SCRAM-SHA-512 and one user, created at every start.
 */
export interface SecureListenerOptions {
  port: number;
  /** PEM private key (PKCS#8, unencrypted) and certificate of the broker. */
  keyFile: string;
  certFile: string;
  username: string;
  /** Holds the user's password, read at every start. */
  passwordFile: string;
}

/** One Apache Kafka node in KRaft mode (broker + controller) running on the local JVM. */
export interface KafkaServer {
  readonly port: number;
  readonly brokers: string[];
  /** The SASL_SSL listener's bootstrap address, `localhost:<port>`, when there is one. */
  readonly secureBrokers: string[] | undefined;
  /**
   * Resolves jars, formats storage on first start, starts the JVM, waits for a real produce.
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
function randomClusterId(): string {
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

/** Resolves Apache Kafka's jars from Maven Central into `<kafkaHome>/target/lib` once. */
async function ensureJars(kafkaHome: string, log: (message: string) => void): Promise<string> {
  const libDir = join(kafkaHome, 'target', 'lib');
  const present =
    existsSync(libDir) && readdirSync(libDir).some((f) => f.startsWith('kafka_2.13-'));
  if (present) return libDir;
  const mvn = await runCommand('mvn', ['-v']);
  if (mvn.code !== 0) {
    throw new SluiceError(
      'maven_missing',
      'Maven is not installed or not on PATH; it fetches Apache Kafka from Maven Central ' +
        '(e.g. `apt-get install maven`), or point KAFKA_BROKERS at a running cluster.',
    );
  }
  log('resolving Apache Kafka jars from Maven Central (first run only)');
  const result = await runCommand('mvn', ['-q', '-B', 'dependency:copy-dependencies'], {
    cwd: kafkaHome,
  });
  if (result.code !== 0) {
    throw new SluiceError(
      'kafka_jars_unavailable',
      `Could not resolve Apache Kafka from Maven Central (is it reachable?):\n${result.output.slice(-2000)}`,
      { retriable: true },
    );
  }
  return libDir;
}

/**
 * An Apache Kafka 3.9 node in KRaft mode, run with the installed Java from jars that
 * Maven resolves on first use.
 */
export function createKafkaServer(options: KafkaServerOptions): KafkaServer {
  return new LocalKafkaServer(options);
}

class LocalKafkaServer implements KafkaServer {
  readonly port: number;
  readonly brokers: string[];
  readonly secureBrokers: string[] | undefined;
  private readonly logDir: string;
  private readonly pidFile: string;
  private readonly serverLog: string;
  private readonly consoleLog: string;
  private readonly propertiesFile: string;

  constructor(private readonly options: KafkaServerOptions) {
    const { dataDir, port } = options;
    this.port = port;
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
    await assertPortFree(this.port, 'Kafka');
    await assertPortFree(this.options.controllerPort, 'Kafka controller');
    if (this.options.secure !== undefined) {
      await assertPortFree(this.options.secure.port, 'Kafka SASL_SSL');
    }
    await assertJava();
    const libDir = await ensureJars(this.options.kafkaHome, this.options.log ?? (() => undefined));
    const classpath = `${libDir}/*`;
    await mkdir(this.logDir, { recursive: true });
    await this.writeProperties();
    await this.format(classpath);
    const exited = await this.spawnBroker(classpath);
    await pollUntil(
      async () => {
        if (exited()) {
          throw new SluiceError(
            'kafka_start_failed',
            `The Kafka broker exited during start-up:\n${await tailFile(this.consoleLog)}\n${await tailFile(this.serverLog)}`,
          );
        }
        return (await isPortOpen(this.port)) && producesOk(this.brokers);
      },
      120_000,
      () =>
        new SluiceError(
          'kafka_start_timeout',
          `The Kafka broker on port ${this.port} did not accept a produce within 120 s; see ${this.serverLog}.`,
        ),
      500,
      startOptions.signal,
    );
    await this.addScramUser(classpath);
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
    const values: Record<string, string> = {
      port: String(this.port),
      controllerPort: String(this.options.controllerPort),
      dataDir: this.logDir,
      secureListener: secure === undefined ? '' : `,SASL_SSL://127.0.0.1:${secure.port}`,
      secureAdvertised: secure === undefined ? '' : `,SASL_SSL://localhost:${secure.port}`,
    };
    const properties = template.replace(/\$\{(\w+)\}/g, (_, key: string) => values[key] ?? '');
    if (secure === undefined) {
      await writeFile(this.propertiesFile, properties);
      return;
    }
    const withSecure = properties.replace(
      /^(listener\.security\.protocol\.map=.*)$/m,
      '$1,SASL_SSL:SASL_SSL',
    );
    await writeFile(this.propertiesFile, withSecure + (await this.secureProperties(secure)));
  }

  /** The SASL_SSL listener's settings; its key and certificate go in one PEM keystore file. */
  private async secureProperties(secure: SecureListenerOptions): Promise<string> {
    const keystore = join(this.options.dataDir, 'keystore.pem');
    const pem =
      (await readFile(secure.keyFile, 'utf8')) + (await readFile(secure.certFile, 'utf8'));
    await writeFile(keystore, pem, { mode: 0o600 });
    const login = 'org.apache.kafka.common.security.scram.ScramLoginModule required;';
    return [
      '',
      '# SASL_SSL listener (SCRAM) for clients that test TLS and SASL.',
      'sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512',
      'listener.name.sasl_ssl.ssl.keystore.type=PEM',
      `listener.name.sasl_ssl.ssl.keystore.location=${keystore}`,
      `listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=${login}`,
      `listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=${login}`,
      '',
    ].join('\n');
  }

  /** Creates or updates the SCRAM user of the SASL_SSL listener, through the plaintext one. */
  private async addScramUser(classpath: string): Promise<void> {
    const { secure } = this.options;
    if (secure === undefined) return;
    const password = (await readFile(secure.passwordFile, 'utf8')).trim();
    // Kafka alters one credential of a user per request.
    const results = await Promise.all(
      ['SCRAM-SHA-256', 'SCRAM-SHA-512'].map((mechanism) =>
        runCommand('java', [
          '-cp',
          classpath,
          'kafka.admin.ConfigCommand',
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

  private async format(classpath: string): Promise<void> {
    if (existsSync(join(this.logDir, 'meta.properties'))) return;
    const result = await runCommand('java', [
      '-cp',
      classpath,
      'kafka.tools.StorageTool',
      'format',
      // One argument: a random id may begin with '-'.
      `--cluster-id=${randomClusterId()}`,
      '-c',
      this.propertiesFile,
    ]);
    if (result.code !== 0) {
      throw new SluiceError(
        'kafka_format_failed',
        `kafka-storage format failed:\n${result.output}`,
      );
    }
  }

  /** Starts the broker's JVM on its own; the function returned tells whether it has exited. */
  private async spawnBroker(classpath: string): Promise<() => boolean> {
    const out = openSync(this.consoleLog, 'a');
    const child = spawn(
      'java',
      [
        `-Xmx${this.options.heap ?? '1g'}`,
        '-Xms256m',
        '-XX:+UseG1GC',
        '-XX:MaxGCPauseMillis=20',
        '-Djava.awt.headless=true',
        `-Dlog4j.configuration=file:${join(this.options.kafkaHome, 'log4j.properties')}`,
        `-Dkafka.log.file=${this.serverLog}`,
        '-cp',
        classpath,
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

/** Whether `brokers` take a produce acknowledged by all replicas (creating the topic it needs). */
async function producesOk(brokers: string[]): Promise<boolean> {
  const kafka = new Kafka({
    clientId: 'sluice-stack',
    brokers,
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    connectionTimeout: 2000,
  });
  const admin = kafka.admin();
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  try {
    await admin.connect();
    const topics = await admin.listTopics();
    if (!topics.includes(READY_TOPIC)) {
      await admin.createTopics({
        topics: [{ topic: READY_TOPIC, numPartitions: 1 }],
        waitForLeaders: true,
      });
    }
    await producer.connect();
    await producer.send({ topic: READY_TOPIC, acks: -1, messages: [{ value: 'ready' }] });
    return true;
  } catch {
    return false;
  } finally {
    await producer.disconnect().catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
  }
}
