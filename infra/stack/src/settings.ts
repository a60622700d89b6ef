// The servers' settings have one home each, `infra/postgres/sluice.conf` and
// `infra/kafka/server.properties`; these read them for the servers that run in containers.
import { SluiceError } from '@sluice/errors';
import { readFileSync } from 'node:fs';

/** The PostgreSQL image docker-compose.yml and the test run's containers use. */
export const POSTGRES_IMAGE = 'postgres:15';

/** The Apache Kafka image docker-compose.yml and the test run's containers use. */
export const KAFKA_IMAGE = 'apache/kafka:4.4.0';

/** Blank lines and `# comments`. */
const CONF_NOTHING = /^\s*(?:#.*)?$/;
/** `name = value` or `name value`; the value bare or in single quotes (a quote doubled inside). */
const CONF_SETTING =
  /^\s*([A-Za-z_][\w.]*)\s*(?:=\s*|\s+)('(?:[^'\\]|'')*'|[^\s'#\\=]+)\s*(?:#.*)?$/;
/** Directives that name other files, which `-c` cannot pass on. */
const CONF_INCLUDES = new Set(['include', 'include_if_exists', 'include_dir']);

/**
 * Reads a `postgresql.conf` fragment into arguments of the `postgres` server, so one file
 * configures every PostgreSQL that Sluice runs. Comments and blank lines are dropped, quoted
 * values unquoted (`''` is a quote); backslash escapes and `include` directives are refused.
 *
 * @throws SluiceError `postgres_settings_invalid` naming the file and line it cannot read
 * @example
 * postgresServerArgs('infra/postgres/sluice.conf'); // ['-c', 'wal_level=logical', '-c', …]
 */
export function postgresServerArgs(confFile: string): string[] {
  return readFileSync(confFile, 'utf8')
    .split('\n')
    .flatMap((line, index) => {
      if (CONF_NOTHING.test(line)) return [];
      const [, name, value] = CONF_SETTING.exec(line) ?? [];
      if (name === undefined || value === undefined || CONF_INCLUDES.has(name)) {
        throw new SluiceError(
          'postgres_settings_invalid',
          `${confFile}:${index + 1} is not a \`name = value\` setting that \`postgres -c\` ` +
            `can take: ${line.trim()}`,
        );
      }
      const unquoted = value.startsWith("'") ? value.slice(1, -1).replaceAll("''", "'") : value;
      return ['-c', `${name}=${unquoted}`];
    });
}

/**
 * Reads Kafka's `server.properties` into the environment of the `apache/kafka` image (which turns
 * `KAFKA_LOG_DIRS` into `log.dirs`, `__` into `_`, `___` into `-`). Settings holding a `${…}`
 * placeholder name this node's addresses and directories; the caller sets those.
 *
 * @throws SluiceError `kafka_settings_invalid` naming the file and line it cannot read
 * @example
 * kafkaBrokerEnvironment('infra/kafka/server.properties'); // { KAFKA_NUM_PARTITIONS: '6', … }
 */
export function kafkaBrokerEnvironment(propertiesFile: string): Record<string, string> {
  const environment: Record<string, string> = {};
  readFileSync(propertiesFile, 'utf8')
    .split('\n')
    .forEach((line, index) => {
      const text = line.trim();
      if (text === '' || text.startsWith('#') || text.startsWith('!')) return;
      const equals = text.indexOf('=');
      if (equals < 1) {
        throw new SluiceError(
          'kafka_settings_invalid',
          `${propertiesFile}:${index + 1} is not a \`name=value\` property: ${text}`,
        );
      }
      const value = text.slice(equals + 1).trim();
      if (value.includes('${')) return;
      const name = text.slice(0, equals).trim();
      const variable = name.replaceAll('_', '__').replaceAll('-', '___').replaceAll('.', '_');
      environment[`KAFKA_${variable.toUpperCase()}`] = value;
    });
  return environment;
}
