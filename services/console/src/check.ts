// `sluice-console --check`, and the access check the console starts with.
import { accessOptionsOf, createAccess, type Access } from '@sluice/access';
import { errorMessage } from '@sluice/errors';
import { kafkaSecurityOf, parseBrokers } from '@sluice/kafka';
import { checkKafka, checkPostgres } from '@sluice/preflight';
import type { ConsoleConfig } from './config.js';

/** The console's access control, or the one line saying why the settings give none. */
export function consoleAccess(config: ConsoleConfig): Access | string {
  if (config.SLUICE_ACCESS_SECRET === undefined) {
    return 'SLUICE_ACCESS_SECRET is required and not set: it signs the console sessions';
  }
  try {
    return createAccess(accessOptionsOf(config));
  } catch (error) {
    return errorMessage(error);
  }
}

/** What would keep the console from working: its access settings, PostgreSQL, Kafka. */
export async function checkConsole(config: ConsoleConfig): Promise<string[]> {
  const access = consoleAccess(config);
  const reach = async (check: () => Promise<unknown>) => {
    try {
      await check();
      return [];
    } catch (error) {
      return [errorMessage(error)];
    }
  };
  const servers = await Promise.all([
    reach(() => checkPostgres(config.DATABASE_URL)),
    reach(() =>
      checkKafka(parseBrokers(config.KAFKA_BROKERS), { security: kafkaSecurityOf(config) }),
    ),
  ]);
  return [...(typeof access === 'string' ? [access] : []), ...servers.flat()];
}
