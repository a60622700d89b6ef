import { SluiceError, errorMessage } from '@sluice/errors';
import pg from 'pg';

/** Options for {@link createLeadership}. */
export interface LeadershipOptions {
  connectionString: string;
  /** What is led; relays of one slot compete for one lock. */
  name: string;
  /** How often a standby tries to take over. Default 1000. */
  pollMs?: number;
  /** How often the leader checks that its lock session is alive. Default 2000. */
  checkMs?: number;
}

/** Leadership held through a PostgreSQL session-level advisory lock. */
export interface Leadership {
  /** Resolves once this process leads; retries through connection failures until `abort`. */
  acquire(abort: AbortSignal): Promise<void>;
  /** Resolves when leadership is lost (the lock session died); never if released. */
  lost(): Promise<Error>;
  release(): Promise<void>;
}

/**
 * One leader among many relays: the holder of `pg_try_advisory_lock` on a dedicated session.
 * When the leader dies, PostgreSQL ends its session and frees the lock, and a standby polling
 * every `pollMs` takes over.
 */
export function createLeadership(options: LeadershipOptions): Leadership {
  let client: pg.Client | undefined;
  let lostResolve: ((error: Error) => void) | undefined;
  let lostPromise = new Promise<Error>((resolve) => (lostResolve = resolve));
  let check: NodeJS.Timeout | undefined;

  const markLost = (error: Error) => {
    if (check !== undefined) clearInterval(check);
    check = undefined;
    const current = client;
    client = undefined;
    void current?.end().catch(() => undefined);
    lostResolve?.(error);
    lostResolve = undefined;
  };

  async function tryOnce(): Promise<boolean> {
    const candidate = new pg.Client({
      connectionString: options.connectionString,
      application_name: 'sluice-relay-leader',
    });
    candidate.on('error', (error) => markLost(error));
    try {
      await candidate.connect();
      const { rows } = await candidate.query<{ locked: boolean }>(
        'SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS locked',
        [`sluice:${options.name}`],
      );
      if (rows[0]?.locked !== true) {
        await candidate.end();
        return false;
      }
      client = candidate;
      lostPromise = new Promise<Error>((resolve) => (lostResolve = resolve));
      check = setInterval(() => {
        candidate.query('SELECT 1').catch((error: unknown) => {
          markLost(
            new SluiceError('leadership_lost', `Leader session failed: ${errorMessage(error)}`, {
              cause: error,
            }),
          );
        });
      }, options.checkMs ?? 2000);
      return true;
    } catch {
      await candidate.end().catch(() => undefined);
      return false;
    }
  }

  return {
    async acquire(abort) {
      while (!abort.aborted) {
        if (await tryOnce()) return;
        await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 1000));
      }
      throw new SluiceError('leadership_aborted', 'Stopped before becoming leader');
    },
    lost: () => lostPromise,
    async release() {
      if (check !== undefined) clearInterval(check);
      check = undefined;
      lostResolve = undefined;
      const current = client;
      client = undefined;
      await current?.end().catch(() => undefined);
    },
  };
}
