// Test support: writes to shop-api retried through a database outage, as a client should: under
// an Idempotency-Key, again after each 503 database_unavailable, until one succeeds.
import { shopAdminHeaders } from './access.js';

export interface RetriedWrites {
  /** POSTs `body` to `path` as an admin under `key` until a 2xx; throws on any other answer. */
  post(path: string, body: unknown, key: string): Promise<unknown>;
  /** How many answers of each status the writes got. */
  statuses: Map<number, number>;
}

/** Retried writes to the shop-api at `base`. */
export function retriedWrites(base: string): RetriedWrites {
  const statuses = new Map<number, number>();
  async function post(path: string, body: unknown, key: string): Promise<unknown> {
    for (;;) {
      const res = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: {
          ...shopAdminHeaders(),
          'content-type': 'application/json',
          'idempotency-key': key,
        },
        body: JSON.stringify(body),
      });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const answer = (await res.json()) as { code?: string };
      if (res.status < 300) return answer;
      const retryAfter = res.headers.get('retry-after');
      if (res.status !== 503 || answer.code !== 'database_unavailable' || retryAfter !== '1') {
        const got = `${res.status} ${JSON.stringify(answer)} Retry-After: ${retryAfter}`;
        throw new Error(`POST ${path}: ${got}`);
      }
      await new Promise((done) => setTimeout(done, 100));
    }
  }
  return { post, statuses };
}
