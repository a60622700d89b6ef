import { ERASED, isEnvelope, parseEnvelope, type Privacy } from '@sluice/privacy';
import { SpanAttribute, SpanKind, inSpan, type Tracer } from '@sluice/tracing';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely, Transaction } from 'kysely';
import { createHash } from 'node:crypto';
import { queryable, type CommandContext } from '../commands/aggregates.js';
import type { ConsistencyTokens, WrittenVersion } from '../consistency-tokens.js';
import type { ShopDatabase } from '../database.js';
import { ProblemError } from './problems.js';
import { requestContext } from './request-context.js';

/** What a write handler produced, before it becomes an HTTP response. */
export interface WriteOutcome {
  status: number;
  /** What the command wrote: `version` is sent as `ETag`, `versions` as `X-Consistency-Token`. */
  written: { version: number; versions: readonly WrittenVersion[] };
  body?: unknown;
  location?: string;
}

interface StoredResponse {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

function toResponse(outcome: WriteOutcome, tokens: ConsistencyTokens): StoredResponse {
  const headers: Record<string, string> = {
    'x-consistency-token': tokens.issue(outcome.written.versions),
    etag: `"${outcome.written.version}"`,
  };
  if (outcome.location !== undefined) headers.location = outcome.location;
  return { status: outcome.status, headers, body: outcome.body ?? null };
}

/**
 * Runs every state change of one request in one transaction — state rows, outbox rows and, for
 * a POST with `Idempotency-Key`, the stored response — so they commit together or not at all.
 * A retried key replays the first response; the same key with another request is a 422. The
 * action gets the transaction and the request's context (who, why, which trace) for its events.
 */
export function createWriter(
  db: Kysely<ShopDatabase>,
  tokens: ConsistencyTokens,
  tracer: Tracer | undefined,
  privacy: Privacy,
) {
  return async function write(
    request: FastifyRequest,
    reply: FastifyReply,
    action: (trx: Transaction<ShopDatabase>, context: CommandContext) => Promise<WriteOutcome>,
  ): Promise<FastifyReply> {
    const rawKey = request.method === 'POST' ? request.headers['idempotency-key'] : undefined;
    if (rawKey !== undefined && (typeof rawKey !== 'string' || !IDEMPOTENCY_KEY.test(rawKey))) {
      throw new ProblemError(
        400,
        'invalid_idempotency_key',
        'Idempotency-Key must be 1-255 printable ASCII characters',
      );
    }

    const transaction = (trx: Transaction<ShopDatabase>): Promise<StoredResponse> =>
      inTransaction(trx, request, { key: rawKey, tokens, privacy }, action);
    const response = await inSpan(tracer, 'TRANSACTION shop', TRANSACTION_SPAN, () =>
      db.transaction().execute(transaction),
    );
    reply.code(response.status).headers(response.headers);
    return response.status === 204 ? reply.send() : reply.send(response.body);
  };
}

const TRANSACTION_SPAN = {
  kind: SpanKind.CLIENT,
  attributes: {
    [SpanAttribute.dbSystem]: 'postgresql',
    [SpanAttribute.dbOperation]: 'TRANSACTION',
  },
};

/** The request's transaction: the idempotency key claimed or replayed, the action, the response stored. */
async function inTransaction(
  trx: Transaction<ShopDatabase>,
  request: FastifyRequest,
  options: { key: string | undefined; tokens: ConsistencyTokens; privacy: Privacy },
  action: (trx: Transaction<ShopDatabase>, context: CommandContext) => Promise<WriteOutcome>,
): Promise<StoredResponse> {
  const { key, privacy } = options;
  if (key !== undefined) {
    const replayed = await claimOrReplay(trx, request, key);
    if (replayed !== undefined) return revealed(trx, privacy, replayed);
  }
  const outcome = await action(trx, { ...requestContext(request), privacy });
  const fresh = toResponse(outcome, options.tokens);
  if (key !== undefined) {
    await trx
      .updateTable('sluice.idempotency_keys')
      .set({
        status_code: fresh.status,
        response_headers: JSON.stringify(fresh.headers) as unknown as Record<string, string>,
        response_body: JSON.stringify(await storedBody(trx, privacy, outcome, fresh.body)),
      })
      .where('key', '=', key)
      .execute();
  }
  return fresh;
}

/**
 * A response body as it is kept for replays: sealed for the customer the write was about, since
 * a customer's body holds their personal data.
 */
async function storedBody(
  trx: Transaction<ShopDatabase>,
  privacy: Privacy,
  outcome: WriteOutcome,
  body: unknown,
): Promise<unknown> {
  const customer = outcome.written.versions.find((v) => v.aggregateType === 'customer');
  if (customer === undefined || body === null) return body;
  return privacy.sealText(queryable(trx), customer.aggregateId, JSON.stringify(body));
}

/**
 * A replayed response with its body opened.
 *
 * @throws ProblemError 410 `subject_erased` once the customer it was about was erased.
 */
async function revealed(
  trx: Transaction<ShopDatabase>,
  privacy: Privacy,
  response: StoredResponse,
): Promise<StoredResponse> {
  if (!isEnvelope(response.body)) return response;
  const { subject } = parseEnvelope(response.body);
  const text = await privacy.revealText(queryable(trx), subject, response.body);
  if (text === ERASED)
    throw new ProblemError(
      410,
      'subject_erased',
      'The response to this Idempotency-Key held personal data that has since been erased',
    );
  return { ...response, body: JSON.parse(text) as unknown };
}

/** Claims `key` for this request; or the response stored under it by the same request before. */
async function claimOrReplay(
  trx: Transaction<ShopDatabase>,
  request: FastifyRequest,
  key: string,
): Promise<StoredResponse | undefined> {
  const requestHash = createHash('sha256')
    .update(`${request.method} ${request.url}\n${JSON.stringify(request.body ?? null)}`)
    .digest('hex');
  // Waits for a concurrent request with the same key to finish, then sees its row.
  const claimed = await trx
    .insertInto('sluice.idempotency_keys')
    .values({
      key,
      request_hash: requestHash,
      status_code: null,
      response_headers: null,
      response_body: null,
    })
    .onConflict((oc) => oc.column('key').doNothing())
    .returning('key')
    .executeTakeFirst();
  if (claimed !== undefined) return undefined;
  const stored = await trx
    .selectFrom('sluice.idempotency_keys')
    .select(['request_hash', 'status_code', 'response_headers', 'response_body'])
    .where('key', '=', key)
    .executeTakeFirstOrThrow();
  if (stored.request_hash !== requestHash || stored.status_code === null) {
    throw new ProblemError(
      422,
      'idempotency_key_reused',
      'This Idempotency-Key was used for a different request',
    );
  }
  return {
    status: stored.status_code,
    headers: { ...(stored.response_headers ?? {}), 'idempotent-replayed': 'true' },
    body: stored.response_body,
  };
}

export type Writer = ReturnType<typeof createWriter>;
