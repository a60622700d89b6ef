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
}

/** One Apache Kafka node in KRaft mode (broker + controller) running on the local JVM. */
export interface KafkaServer {
  readonly port: number;
  readonly brokers: string[];
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
  const { kafkaHome, dataDir, port, controllerPort } = options;
  const log = options.log ?? (() => undefined);
  const logDir = join(dataDir, 'logs');
  const pidFile = join(dataDir, 'kafka.pid');
  const serverLog = join(dataDir, 'server.log');
  const consoleLog = join(dataDir, 'console.log');
  const propertiesFile = join(dataDir, 'server.properties');
  const brokers = [`127.0.0.1:${port}`];

  async function pid(): Promise<number | undefined> {
    if (!existsSync(pidFile)) return undefined;
    const value = Number((await readFile(pidFile, 'utf8')).trim());
    return Number.isInteger(value) && (await isProcessAlive(value, MAIN_CLASS)) ? value : undefined;
  }

  async function isRunning(): Promise<boolean> {
    return (await pid()) !== undefined;
  }

  async function writeProperties(): Promise<void> {
    const template = await readFile(join(kafkaHome, 'server.properties'), 'utf8');
    const values: Record<string, string> = {
      port: String(port),
      controllerPort: String(controllerPort),
      dataDir: logDir,
    };
    await writeFile(
      propertiesFile,
      template.replace(/\$\{(\w+)\}/g, (_, key: string) => values[key] ?? ''),
    );
  }

  async function format(classpath: string): Promise<void> {
    if (existsSync(join(logDir, 'meta.properties'))) return;
    const result = await runCommand('java', [
      '-cp',
      classpath,
      'kafka.tools.StorageTool',
      'format',
      '-t',
      randomClusterId(),
      '-c',
      propertiesFile,
    ]);
    if (result.code !== 0) {
      throw new SluiceError(
        'kafka_format_failed',
        `kafka-storage format failed:\n${result.output}`,
      );
    }
  }

  async function producesOk(): Promise<boolean> {
    if (!(await isPortOpen(port))) return false;
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

  async function start(startOptions: { signal?: AbortSignal } = {}): Promise<void> {
    if (await isRunning()) return;
    await assertPortFree(port, 'Kafka');
    await assertPortFree(controllerPort, 'Kafka controller');
    await assertJava();
    const libDir = await ensureJars(kafkaHome, log);
    const classpath = `${libDir}/*`;
    await mkdir(logDir, { recursive: true });
    await writeProperties();
    await format(classpath);
    const out = openSync(consoleLog, 'a');
    const child = spawn(
      'java',
      [
        `-Xmx${options.heap ?? '1g'}`,
        '-Xms256m',
        '-XX:+UseG1GC',
        '-XX:MaxGCPauseMillis=20',
        '-Djava.awt.headless=true',
        `-Dlog4j.configuration=file:${join(kafkaHome, 'log4j.properties')}`,
        `-Dkafka.log.file=${serverLog}`,
        '-cp',
        classpath,
        MAIN_CLASS,
        propertiesFile,
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
    await writeFile(pidFile, String(childPid));
    await pollUntil(
      async () => {
        if (exited) {
          throw new SluiceError(
            'kafka_start_failed',
            `The Kafka broker exited during start-up:\n${await tailFile(consoleLog)}\n${await tailFile(serverLog)}`,
          );
        }
        return producesOk();
      },
      120_000,
      () =>
        new SluiceError(
          'kafka_start_timeout',
          `The Kafka broker on port ${port} did not accept a produce within 120 s; see ${serverLog}.`,
        ),
      500,
      startOptions.signal,
    );
  }

  async function stop(stopOptions: { kill?: boolean; timeoutMs?: number } = {}): Promise<void> {
    const current = await pid();
    if (current === undefined) return;
    process.kill(current, stopOptions.kill === true ? 'SIGKILL' : 'SIGTERM');
    try {
      await pollUntil(
        async () => !(await isProcessAlive(current, MAIN_CLASS)),
        stopOptions.timeoutMs ?? 30_000,
        () => new Error('timeout'),
        200,
      );
    } catch {
      process.kill(current, 'SIGKILL');
      await pollUntil(
        async () => !(await isProcessAlive(current, MAIN_CLASS)),
        10_000,
        () => new SluiceError('kafka_stop_failed', `Kafka (pid ${current}) survived SIGKILL.`),
        200,
      );
    }
    await rm(pidFile, { force: true });
  }

  return { port, brokers, start, stop, isRunning, pid };
}
