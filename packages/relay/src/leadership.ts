import { SluiceError, errorMessage } from '@sluice/errors';
import pg from 'pg';
import type { RelayErrorCode } from './errors.js';
import { endWithin } from './pg-client.js';

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
  /**
   * Why the latest try to take the lead got no answer from PostgreSQL (a connection refused,
   * lost, or not answered within half the lease); undefined once a try is answered.
   */
  unreachable(): Error | undefined;
}

/**
 * One leader among many relays: the holder of `pg_try_advisory_lock` on a dedicated session.
 * When the leader dies or stops answering for `leaseMs`, PostgreSQL ends its session and frees
 * the lock, and a standby polling every `pollMs` takes over.
 */
export function createLeadership(options: LeadershipOptions): Leadership {
  return new AdvisoryLockLeadership(options);
}

class AdvisoryLockLeadership implements Leadership {
  private readonly leaseMs: number;
  private readonly checkMs: number;
  private readonly answerWithinMs: number;
  private client: pg.Client | undefined;
  private lostResolve: ((error: Error) => void) | undefined;
  private lostPromise: Promise<Error>;
  private check: NodeJS.Timeout | undefined;
  private failure: Error | undefined;

  constructor(private readonly options: LeadershipOptions) {
    this.leaseMs = options.leaseMs ?? 10_000;
    this.checkMs = options.checkMs ?? this.leaseMs / 5;
    this.answerWithinMs = Math.floor(this.leaseMs / 2);
    this.lostPromise = new Promise<Error>((resolve) => (this.lostResolve = resolve));
  }

  async acquire(abort: AbortSignal): Promise<void> {
    while (!abort.aborted) {
      if (await this.tryOnce()) return;
      await new Promise((resolve) => setTimeout(resolve, this.options.pollMs ?? 1000));
    }
    throw new SluiceError<RelayErrorCode>('leadership_aborted', 'Stopped before becoming leader');
  }

  unreachable(): Error | undefined {
    return this.failure;
  }

  lost(): Promise<Error> {
    return this.lostPromise;
  }

  async release(): Promise<void> {
    clearTimeout(this.check);
    this.check = undefined;
    this.lostResolve = undefined;
    const current = this.client;
    this.client = undefined;
    if (current !== undefined) await endWithin(current, this.answerWithinMs);
  }

  private markLost(error: Error): void {
    clearTimeout(this.check);
    this.check = undefined;
    const current = this.client;
    this.client = undefined;
    if (current !== undefined) void endWithin(current, this.answerWithinMs);
    this.lostResolve?.(error);
    this.lostResolve = undefined;
  }

  private async tryOnce(): Promise<boolean> {
    const candidate = new pg.Client({
      connectionString: this.options.connectionString,
      application_name: 'sluice-relay-leader',
      connectionTimeoutMillis: this.answerWithinMs,
      query_timeout: this.answerWithinMs,
      keepAlive: true,
      options: `-c idle_session_timeout=${this.leaseMs}`,
    });
    candidate.on('error', (error) => {
      if (this.client === candidate) this.markLost(error);
    });
    try {
      await candidate.connect();
      const { rows } = await candidate.query<{ locked: boolean }>(
        'SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS locked',
        [`sluice:${this.options.name}`],
      );
      this.failure = undefined;
      if (rows[0]?.locked !== true) {
        await endWithin(candidate, this.answerWithinMs);
        return false;
      }
      this.client = candidate;
      this.lostPromise = new Promise<Error>((resolve) => (this.lostResolve = resolve));
      this.scheduleCheck(candidate);
      return true;
    } catch (error) {
      this.failure = error instanceof Error ? error : new Error(errorMessage(error));
      await endWithin(candidate, this.answerWithinMs);
      return false;
    }
  }

  /** Confirms the lock session every `checkMs`, one check at a time, each within the bound. */
  private scheduleCheck(session: pg.Client): void {
    this.check = setTimeout(() => this.confirm(session), this.checkMs);
  }

  private confirm(session: pg.Client): void {
    session.query('SELECT 1').then(
      () => {
        if (this.client === session) this.scheduleCheck(session);
      },
      (error: unknown) => {
        if (this.client !== session) return;
        this.markLost(
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
  }
}
