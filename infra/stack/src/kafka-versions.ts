import { SluiceError } from '@sluice/errors';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand } from './processes.js';

/** The Apache Kafka version the embedded stack runs unless told otherwise. */
export const DEFAULT_KAFKA_VERSION = '4.4.0';

/** The Kafka lines the embedded stack can run: the newest and the oldest Sluice promises. */
export const SUPPORTED_KAFKA_LINES = ['4.4', '3.9'] as const;

/** How to run one Kafka version: its jars, its logging configuration and its admin tools. */
export interface KafkaDistribution {
  version: string;
  /** `major.minor`. */
  line: string;
  /** `<kafkaHome>/target/<version>/lib`, where Maven puts its jars. */
  libDir: string;
  /** The JVM options that point its logging at a configuration under `kafkaHome`. */
  loggingArgs: string[];
  /** The main class of `kafka-configs`. */
  configCommand: string;
}

/** The `major.minor` of a version, e.g. `4.4` for `4.4.0`. */
export function kafkaLine(version: string): string {
  return version.split('.').slice(0, 2).join('.');
}

/**
 * How `kafkaHome` runs `version`: Kafka 4 logs through Log4j 2 (`log4j2.yaml`) and ships
 * `kafka-configs` in kafka-tools; Kafka 3 logs through reload4j (`log4j.properties`).
 *
 * @throws SluiceError `kafka_version_unsupported` for another line than {@link SUPPORTED_KAFKA_LINES}
 */
export function kafkaDistribution(kafkaHome: string, version: string): KafkaDistribution {
  const line = kafkaLine(version);
  if (
    !/^\d+\.\d+\.\d+$/.test(version) ||
    !(SUPPORTED_KAFKA_LINES as readonly string[]).includes(line)
  ) {
    throw new SluiceError(
      'kafka_version_unsupported',
      `Apache Kafka ${version} is not a version the embedded stack runs; ` +
        `use one of the lines ${SUPPORTED_KAFKA_LINES.join(', ')} (e.g. ${DEFAULT_KAFKA_VERSION} or 3.9.2).`,
    );
  }
  const libDir = join(kafkaHome, 'target', version, 'lib');
  return line.startsWith('3.')
    ? {
        version,
        line,
        libDir,
        loggingArgs: [`-Dlog4j.configuration=file:${join(kafkaHome, 'log4j.properties')}`],
        configCommand: 'kafka.admin.ConfigCommand',
      }
    : {
        version,
        line,
        libDir,
        loggingArgs: [`-Dlog4j2.configurationFile=${join(kafkaHome, 'log4j2.yaml')}`],
        configCommand: 'org.apache.kafka.tools.ConfigCommand',
      };
}

/** Resolutions under way in this process, by jar directory: nodes that start together share one. */
const resolving = new Map<string, Promise<void>>();

/** Resolves the distribution's jars from Maven Central into its `libDir` once. */
export function ensureJars(
  kafkaHome: string,
  distribution: KafkaDistribution,
  log: (message: string) => void,
): Promise<void> {
  const { libDir } = distribution;
  if (existsSync(libDir) && readdirSync(libDir).some((f) => f.startsWith('kafka_2.13-'))) {
    return Promise.resolve();
  }
  let pending = resolving.get(libDir);
  if (pending === undefined) {
    pending = resolveJars(kafkaHome, distribution, log).finally(() => resolving.delete(libDir));
    resolving.set(libDir, pending);
  }
  return pending;
}

async function resolveJars(
  kafkaHome: string,
  { version, line, libDir }: KafkaDistribution,
  log: (message: string) => void,
): Promise<void> {
  const mvn = await runCommand('mvn', ['-v']);
  if (mvn.code !== 0) {
    throw new SluiceError(
      'maven_missing',
      'Maven is not installed or not on PATH; it fetches Apache Kafka from Maven Central ' +
        '(e.g. `apt-get install maven`), or point KAFKA_BROKERS at a running cluster.',
    );
  }
  log(`resolving Apache Kafka ${version} jars from Maven Central (first run only)`);
  const profile = line.startsWith('3.') ? 'kafka3' : 'kafka4';
  const result = await runCommand(
    'mvn',
    [
      '-q',
      '-B',
      `-P${profile}`,
      `-Dkafka.version=${version}`,
      `-Dkafka.lib.dir=${libDir}`,
      'dependency:copy-dependencies',
    ],
    { cwd: kafkaHome },
  );
  if (result.code !== 0) {
    throw new SluiceError(
      'kafka_jars_unavailable',
      `Could not resolve Apache Kafka ${version} from Maven Central (is it reachable?):\n${result.output.slice(-2000)}`,
      { retriable: true },
    );
  }
}

/** The file in a node's data directory that names the Kafka version that formatted it. */
const VERSION_FILE = 'kafka-version';

/** Records that `version` formatted the node whose data lives in `dataDir`. */
export async function recordFormatVersion(dataDir: string, version: string): Promise<void> {
  await writeFile(join(dataDir, VERSION_FILE), `${version}\n`);
}

/**
 * The version that formatted the node whose data lives in `dataDir`: the one it recorded, else
 * 3.9.2 when it is formatted (the only line the embedded stack ran before versions were
 * recorded); undefined before its first start.
 */
export async function formatVersion(dataDir: string): Promise<string | undefined> {
  const recorded = await readFile(join(dataDir, VERSION_FILE), 'utf8').then(
    (text) => text.trim(),
    () => undefined,
  );
  if (recorded !== undefined) return recorded;
  return existsSync(join(dataDir, 'logs', 'meta.properties')) ? '3.9.2' : undefined;
}

/**
 * Refuses to run `version` on data another Kafka line formatted (Kafka cannot downgrade its
 * metadata, and an upgrade is a step to take on purpose). Nothing is deleted: the message says how
 * to keep the data (run its version) or to start afresh.
 *
 * @throws SluiceError `kafka_version_mismatch`
 */
export async function assertFormatVersion(dataDir: string, version: string): Promise<void> {
  const formatted = await formatVersion(dataDir);
  if (formatted === undefined || kafkaLine(formatted) === kafkaLine(version)) return;
  throw new SluiceError(
    'kafka_version_mismatch',
    `${dataDir} holds the data of Apache Kafka ${formatted}, not ${version}. Keep it by running ` +
      `${formatted} (SLUICE_KAFKA_VERSION=${formatted}), or start afresh: \`pnpm stack:down\`, ` +
      `remove ${dataDir} (its topics and offsets are lost) and start again.`,
  );
}
