// `sluice-projector --check`: what would stop a start, found without changing anything.
import { SluiceError, errorMessage, isSluiceError } from '@sluice/errors';
import { kafkaSecurityOf, parseBrokers } from '@sluice/kafka';
import { checkKafka, checkPostgres, describeDatabaseUrl } from '@sluice/preflight';
import { projectorMigrations } from '@sluice/projector';
import { createDatabase } from '@sluice/database';
import type { ProjectorConfig } from './config.js';
import { checkMasterKeys, opensPersonalData } from './master-keys.js';
import { loadProjectionModules, moduleSpecs, type ProjectionModules } from './modules.js';
import { privilegeProblems, readPrivilegeFacts } from './privileges.js';
import { selectProjections } from './run-projections.js';

const CONNECT_TIMEOUT_MS = 5000;
const CHECK_TIMEOUT_MS = 10_000;

/** `problem` as one line: `<code>: <message>`. */
export function problemLine(problem: unknown): string {
  const code = isSluiceError(problem) ? `${problem.code}: ` : '';
  return `${code}${errorMessage(problem).replace(/\s*\n\s*/g, ' ')}`;
}

/**
 * Runs `check`: the lines it returns; its failure, or its not finishing within
 * `CHECK_TIMEOUT_MS`, as one line.
 */
async function problemOf(
  what: string,
  check: () => Promise<readonly string[] | undefined>,
): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new SluiceError('check_timeout', `${what} did not answer within ${CHECK_TIMEOUT_MS} ms`),
      );
    }, CHECK_TIMEOUT_MS);
  });
  try {
    return [...((await Promise.race([check(), late])) ?? [])];
  } catch (error) {
    return [problemLine(error)];
  } finally {
    clearTimeout(timer);
  }
}

/** PostgreSQL answers. The projector needs no logical WAL, so what checkPostgres says of it is no problem. */
async function reachPostgres(url: string): Promise<void> {
  try {
    await checkPostgres(url, { connectTimeoutMs: CONNECT_TIMEOUT_MS });
  } catch (error) {
    if (isSluiceError(error, 'postgres_unreachable')) throw error;
  }
}

/** What the role lacks for the projections of `modules` (the projector's own when unloaded). */
async function postgresProblems(
  config: ProjectorConfig,
  modules: ProjectionModules | undefined,
): Promise<string[]> {
  await reachPostgres(config.DATABASE_URL);
  const hosted =
    modules === undefined
      ? []
      : selectProjections(modules.projections, config.PROJECTOR_PROJECTIONS);
  const schemas = [...new Set(hosted.flatMap((p) => p.tables.map((t) => t.split('.')[0] ?? '')))];
  const migrations = Object.keys(modules?.migrations ?? projectorMigrations);
  const db = createDatabase<unknown>({
    url: config.DATABASE_URL,
    maxConnections: 1,
    applicationName: 'sluice-projector-check',
  });
  try {
    return await db
      .transaction()
      .setAccessMode('read only')
      .execute(async (trx) =>
        privilegeProblems(await readPrivilegeFacts(trx, schemas, migrations)),
      );
  } finally {
    await db.destroy();
  }
}

/**
 * With projections of `modules` that open personal fields: the master keys load from the
 * settings and unwrap every subject key (nothing checked when the modules do not load).
 */
async function masterKeyProblems(
  config: ProjectorConfig,
  modules: ProjectionModules | undefined,
): Promise<string[]> {
  const hosted =
    modules === undefined
      ? []
      : selectProjections(modules.projections, config.PROJECTOR_PROJECTIONS);
  if (!opensPersonalData(hosted)) return [];
  const db = createDatabase<unknown>({
    url: config.DATABASE_URL,
    maxConnections: 1,
    applicationName: 'sluice-projector-check',
  });
  try {
    await checkMasterKeys(config, hosted, db);
    return [];
  } finally {
    await db.destroy();
  }
}

/**
 * The problems `--check` reports, one line each: modules that do not load or give no
 * projection, `PROJECTOR_PROJECTIONS` naming unknown ones, PostgreSQL or Kafka not answering,
 * what the role lacks (see {@link privilegeProblems}), and master keys that are missing, set
 * twice, or do not unwrap the subject keys.
 */
export async function checkSetup(
  config: ProjectorConfig,
  operands: readonly string[],
  cwd: string,
): Promise<string[]> {
  const loading = loadProjectionModules(moduleSpecs(operands, config.PROJECTOR_MODULES), cwd);
  const found = await Promise.all([
    problemOf('loading the modules', async () => {
      selectProjections((await loading).projections, config.PROJECTOR_PROJECTIONS);
      return [];
    }),
    problemOf(`PostgreSQL at ${describeDatabaseUrl(config.DATABASE_URL)}`, async () =>
      postgresProblems(config, await loading.catch(() => undefined)),
    ),
    problemOf('the master key check', async () =>
      masterKeyProblems(config, await loading.catch(() => undefined)),
    ),
    problemOf(`Kafka at ${config.KAFKA_BROKERS}`, async () => {
      await checkKafka(parseBrokers(config.KAFKA_BROKERS), {
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        security: kafkaSecurityOf(config),
      });
      return [];
    }),
  ]);
  return found.flat();
}
