// The subpath: the projector's main entry would load kafkajs into shop-api.
import { appliedVersions } from '@sluice/projector/applied-versions';
import { SpanAttribute, inSpan, type Tracer } from '@sluice/tracing';
import type { FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { ConsistencyTokens, WrittenVersion } from '../consistency-tokens.js';
import type { ShopDatabase } from '../database.js';
import { ProblemError } from './problems.js';

/** The versions a write produced, from its `X-Consistency-Token`; 400 when it is not one of ours. */
function readToken(
  request: FastifyRequest,
  tokens: ConsistencyTokens,
): WrittenVersion[] | undefined {
  const header = request.headers['x-consistency-token'];
  if (header === undefined) return undefined;
  const versions = typeof header === 'string' ? tokens.verify(header) : undefined;
  if (versions !== undefined) return versions;
  throw new ProblemError(
    400,
    'invalid_consistency_token',
    'X-Consistency-Token is not a token this API issued',
  );
}

/**
 * The pause before poll `attempt` (0-based): short at first, as most waits end within a few
 * milliseconds, then 50 ms, so a request waiting for seconds costs few queries.
 */
function pollDelayMs(attempt: number): number {
  return attempt < 5 ? 10 : Math.min(50, 10 * 2 ** (attempt - 4));
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether `projection` applied each of `wanted`: one query per aggregate type they name. */
async function appliedAll(
  db: Kysely<ShopDatabase>,
  projection: string,
  wanted: readonly WrittenVersion[],
): Promise<boolean> {
  const types = [...new Set(wanted.map((v) => v.aggregateType))];
  const applied = new Map(
    await Promise.all(
      types.map(async (type) => {
        const ids = wanted.filter((v) => v.aggregateType === type).map((v) => v.aggregateId);
        return [type, await appliedVersions(db, projection, type, ids)] as const;
      }),
    ),
  );
  return wanted.every((v) => (applied.get(v.aggregateType)?.get(v.aggregateId) ?? 0) >= v.version);
}

/**
 * Waits until `projection` applied every version the request's `X-Consistency-Token` names of
 * `aggregateTypes`. Returns at once without a token.
 *
 * @throws ProblemError 400 `invalid_consistency_token`, 504 `consistency_timeout`
 */
export type ConsistencyWait = (
  request: FastifyRequest,
  projection: string,
  aggregateTypes: readonly string[],
) => Promise<void>;

/** A {@link ConsistencyWait} that gives up after `timeoutMs` per request. */
export function createConsistencyWait(deps: {
  db: Kysely<ShopDatabase>;
  tokens: ConsistencyTokens;
  timeoutMs: number;
  tracer: Tracer | undefined;
}): ConsistencyWait {
  const { db, tokens, timeoutMs, tracer } = deps;
  return async (request, projection, aggregateTypes) => {
    const wanted = (readToken(request, tokens) ?? []).filter((v) =>
      aggregateTypes.includes(v.aggregateType),
    );
    if (wanted.length === 0) return;
    const attributes = { [SpanAttribute.projection]: projection, 'sluice.versions': wanted.length };
    await inSpan(tracer, `wait ${projection}`, { attributes }, async (span) => {
      const polls = await pollUntilApplied(db, projection, wanted, timeoutMs);
      span?.setAttribute('sluice.polls', polls);
    });
  };
}

/** Polls until `projection` applied `wanted`; how many polls it took. */
async function pollUntilApplied(
  db: Kysely<ShopDatabase>,
  projection: string,
  wanted: readonly WrittenVersion[],
  timeoutMs: number,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let attempt = 0;
  for (; !(await appliedAll(db, projection, wanted)); attempt += 1) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new ProblemError(
        504,
        'consistency_timeout',
        `The ${projection} view did not catch up within ${timeoutMs} ms`,
      );
    }
    await pause(Math.min(pollDelayMs(attempt), remaining));
  }
  return attempt + 1;
}
