// `sluice-projector --check`: what would stop a start, found without changing anything.
import { SluiceError, errorMessage, isSluiceError } from '@sluice/errors';
import { kafkaSecurityOf, parseBrokers } from '@sluice/kafka';
import { checkKafka, checkPostgres, describeDatabaseUrl } from '@sluice/preflight';
import type { ProjectorConfig } from './config.js';
import { loadProjectionModules, moduleSpecs } from './modules.js';
import { selectProjections } from './run-projections.js';

const CONNECT_TIMEOUT_MS = 5000;
const CHECK_TIMEOUT_MS = 10_000;

/** `problem` as one line: `<code>: <message>`. */
export function problemLine(problem: unknown): string {
  const code = isSluiceError(problem) ? `${problem.code}: ` : '';
  return `${code}${errorMessage(problem).replace(/\s*\n\s*/g, ' ')}`;
}

/** Runs `check`; its failure, or its not finishing within `CHECK_TIMEOUT_MS`, as one line. */
async function problemOf(what: string, check: () => Promise<unknown>): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new SluiceError('check_timeout', `${what} did not answer within ${CHECK_TIMEOUT_MS} ms`),
      );
    }, CHECK_TIMEOUT_MS);
  });
  try {
    await Promise.race([check(), late]);
    return [];
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

/**
 * The problems `--check` reports, one line each: modules that do not load or give no
 * projection, `PROJECTOR_PROJECTIONS` naming unknown ones, PostgreSQL or Kafka not answering.
 */
export async function checkSetup(
  config: ProjectorConfig,
  operands: readonly string[],
  cwd: string,
): Promise<string[]> {
  const found = await Promise.all([
    problemOf('loading the modules', async () => {
      const modules = await loadProjectionModules(
        moduleSpecs(operands, config.PROJECTOR_MODULES),
        cwd,
      );
      selectProjections(modules.projections, config.PROJECTOR_PROJECTIONS);
    }),
    problemOf(`PostgreSQL at ${describeDatabaseUrl(config.DATABASE_URL)}`, () =>
      reachPostgres(config.DATABASE_URL),
    ),
    problemOf(`Kafka at ${config.KAFKA_BROKERS}`, () =>
      checkKafka(parseBrokers(config.KAFKA_BROKERS), {
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        security: kafkaSecurityOf(config),
      }),
    ),
  ]);
  return found.flat();
}
