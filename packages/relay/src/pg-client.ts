import pg from 'pg';

/**
 * Bounds on set-up connections: a cut-off database fails the set-up (the relay retries it)
 * rather than hanging it. Statements are bounded too, but for creating the slot, which waits for
 * the transactions running at that moment to end.
 */
export const BOUNDED = { connectionTimeoutMillis: 10_000, keepAlive: true, query_timeout: 60_000 };

/** A client whose connection errors surface through its own calls, never as a crash. */
export function quietClient(config: pg.ClientConfig): pg.Client {
  const client = new pg.Client(config);
  client.on('error', () => undefined);
  return client;
}

/** Runs `action` on a bounded set-up connection, closed afterwards. */
export async function withClient<T>(
  connectionString: string,
  action: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = quietClient({
    connectionString,
    application_name: 'sluice-relay-setup',
    ...BOUNDED,
  });
  await client.connect();
  try {
    return await action(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Ends `client`, waiting at most `ms`: a cut-off server never answers the goodbye. */
export async function endWithin(client: pg.Client, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    client.end().catch(() => undefined),
    new Promise((resolve) => (timer = setTimeout(resolve, ms))),
  ]);
  clearTimeout(timer);
}
