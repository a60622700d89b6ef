// `shop-api --check`: whether its database answers, found without changing anything.
import { errorMessage } from '@sluice/errors';
import pg from 'pg';
import type { ShopApiConfig } from './config.js';

/** The database as a problem line may name it: host, port and name, never the password. */
function whereOf(url: string): string {
  const parsed = URL.parse(url);
  return parsed === null ? 'DATABASE_URL' : `${parsed.host}${parsed.pathname}`;
}

/** One line per problem: none when PostgreSQL answers within 5 s. */
export async function checkShopApi(config: ShopApiConfig): Promise<string[]> {
  const client = new pg.Client({
    connectionString: config.DATABASE_URL,
    connectionTimeoutMillis: 5000,
    query_timeout: 5000,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return [];
  } catch (error) {
    return [
      `PostgreSQL at ${whereOf(config.DATABASE_URL)} does not answer: ${errorMessage(error)}`,
    ];
  } finally {
    await client.end().catch(() => undefined);
  }
}
