import { SluiceError, errorMessage } from '@sluice/errors';
import pg from 'pg';
import type { RelayErrorCode } from './errors.js';

/** Options for {@link createLeadership}. */
export interface LeadershipOptions {
  connectionString: string;
  /** What is led; relays of one slot compete for one lock. */
  name: string;
  /** How often a standby tries to take over. Default 1000. */
  pollMs?: number;
  /**
   * The leader's lease. PostgreSQL ends a lock session that stays silent this long
   * (`idle_session_timeout`, PostgreSQL 14+), so a frozen or cut-off leader frees the lock; the
   * leader gives up leading when it cannot confirm its lock within half of it. Default 10000.
   */
  leaseMs?: number;
  /** How often the leader confirms its lock session is alive. Default a fifth of `leaseMs`. */
  checkMs?: number;
}

/** Leadership held through a PostgreSQL session-level advisory lock. */
export interface Leadership {
  /** Resolves once this process leads; retries through connection failures until `abort`. */
  acquire(abort: AbortSignal): Promise<void>;
  /** Resolves when leadership is lost (the lock session died or went silent); never if released. */
  lost(): Promise<Error>;
  release(): Promise<void>;
}

/** Ends `client`, waiting at most `ms`: a cut-off server never answers the goodbye. */
async function endWithin(client: pg.Client, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    client.end().catch(() => undefined),
    new Promise((resolve) => (timer = setTimeout(resolve, ms))),
  ]);
  clearTimeout(timer);
}

/**
 * One leader among many relays: the holder of `pg_try_advisory_lock` on a dedicated session.
 * When the leader dies or stops answering for `leaseMs`, PostgreSQL ends its session and frees
 * the lock, and a standby polling every `pollMs` takes over.
 */
export function createLeadership(options: LeadershipOptions): Leadership {
  const leaseMs = options.leaseMs ?? 10_000;
  const checkMs = options.checkMs ?? leaseMs / 5;
  const answerWithinMs = Math.floor(leaseMs / 2);
  let client: pg.Client | undefined;
  let lostResolve: ((error: Error) => void) | undefined;
  let lostPromise = new Promise<Error>((resolve) => (lostResolve = resolve));
  let check: NodeJS.Timeout | undefined;

  const markLost = (error: Error) => {
    clearTimeout(check);
    check = undefined;
    const current = client;
    client = undefined;
    if (current !== undefined) void endWithin(current, answerWithinMs);
    lostResolve?.(error);
    lostResolve = undefined;
  };

  /** Confirms the lock session every `checkMs`, one check at a time, each within the bound. */
  function watch(session: pg.Client): void {
    const tick = () => {
      session.query('SELECT 1').then(
        () => {
          if (client === session) check = setTimeout(tick, checkMs);
        },
        (error: unknown) => {
          if (client !== session) return;
          markLost(
            new SluiceError<RelayErrorCode>(
              'leadership_lost',
              `Leader session failed: ${errorMessage(error)}`,
              {
                cause: error,
              },
            ),
          );
        },
      );
    };
    check = setTimeout(tick, checkMs);
  }

  async function tryOnce(): Promise<boolean> {
    const candidate = new pg.Client({
      connectionString: options.connectionString,
      application_name: 'sluice-relay-leader',
      connectionTimeoutMillis: answerWithinMs,
      query_timeout: answerWithinMs,
      keepAlive: true,
      options: `-c idle_session_timeout=${leaseMs}`,
    });
    candidate.on('error', (error) => {
      if (client === candidate) markLost(error);
    });
    try {
      await candidate.connect();
      const { rows } = await candidate.query<{ locked: boolean }>(
        'SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS locked',
        [`sluice:${options.name}`],
      );
      if (rows[0]?.locked !== true) {
        await endWithin(candidate, answerWithinMs);
        return false;
      }
      client = candidate;
      lostPromise = new Promise<Error>((resolve) => (lostResolve = resolve));
      watch(candidate);
      return true;
    } catch {
      await endWithin(candidate, answerWithinMs);
      return false;
    }
  }

  return {
    async acquire(abort) {
      while (!abort.aborted) {
        if (await tryOnce()) return;
        await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 1000));
      }
      throw new SluiceError<RelayErrorCode>('leadership_aborted', 'Stopped before becoming leader');
    },
    lost: () => lostPromise,
    async release() {
      clearTimeout(check);
      check = undefined;
      lostResolve = undefined;
      const current = client;
      client = undefined;
      if (current !== undefined) await endWithin(current, answerWithinMs);
    },
  };
}
