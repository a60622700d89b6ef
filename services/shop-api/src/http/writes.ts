import { atCommit } from '@sluice/database';
import { ERASED, isEnvelope, parseEnvelope, type MasterKeys, type Privacy } from '@sluice/privacy';
import { SpanAttribute, SpanKind, inSpan, type Tracer } from '@sluice/tracing';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely, Transaction } from 'kysely';
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { queryable, type CommandContext } from '../commands/aggregates.js';
import type { ConsistencyTokens, WrittenVersion } from '../consistency-tokens.js';
import type { ShopDatabase } from '../database.js';
import { ProblemError } from './problems.js';
import { identityOf } from './authentication.js';
import { mayActFor } from './authorization.js';
import { requestContext } from './request-context.js';

/** What a write handler produced, before it becomes an HTTP response. */
export interface WriteOutcome {
  status: number;
  /** What the command wrote: `version` is sent as `ETag`, `versions` as `X-Consistency-Token`. */
  written: { version: number; versions: readonly WrittenVersion[] };
  body?: unknown;
  location?: string;
  /** The customer this write erased: their idempotency records go in its transaction. */
  erasedCustomer?: string;
}

interface StoredResponse {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
const IDEMPOTENT_METHODS = new Set(['POST', 'DELETE']);

interface HashKeys {
  current: Buffer;
  /** The current key and, during a rotation, the previous one. */
  matching: Buffer[];
}

/** One request's claim on an idempotency key: the key scoped to whoever sent it. */
interface Claim {
  actor: string;
  key: string;
}

/**
 * The keys of request hashes, derived from the master keys (HKDF-SHA256): the current one signs,
 * the previous one still matches during a rotation. A request body may hold personal data, so its
 * hash is keyed: without the key, no one can test guesses against a stored hash.
 */
function requestHashKeys(masterKeys: MasterKeys): HashKeys {
  const derive = (master: Buffer) =>
    Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), 'sluice idempotency v1', 32));
  const current = derive(masterKeys.current.key);
  const previous = masterKeys.previous === undefined ? [] : [derive(masterKeys.previous.key)];
  return { current, matching: [current, ...previous] };
}

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
 * a POST or DELETE with `Idempotency-Key`, the stored response — so they commit together or not
 * at all. Keys belong to the token's subject: a retried key replays that subject's first
 * response; the same key with another request is a 422; another subject's key is another key.
 * The action gets the transaction and the request's context (who, why, which trace) for its
 * events.
 */
export function createWriter(
  db: Kysely<ShopDatabase>,
  tokens: ConsistencyTokens,
  tracer: Tracer | undefined,
  privacy: Privacy,
  masterKeys: MasterKeys,
) {
  const hashKeys = requestHashKeys(masterKeys);
  return async function write(
    request: FastifyRequest,
    reply: FastifyReply,
    action: (trx: Transaction<ShopDatabase>, context: CommandContext) => Promise<WriteOutcome>,
  ): Promise<FastifyReply> {
    const rawKey = IDEMPOTENT_METHODS.has(request.method)
      ? request.headers['idempotency-key']
      : undefined;
    if (rawKey !== undefined && (typeof rawKey !== 'string' || !IDEMPOTENCY_KEY.test(rawKey))) {
      throw new ProblemError(
        400,
        'invalid_idempotency_key',
        'Idempotency-Key must be 1-255 printable ASCII characters',
      );
    }

    const claim =
      rawKey === undefined ? undefined : { actor: identityOf(request).subject, key: rawKey };
    const options = { claim, hashKeys, tokens, privacy };
    const transaction = (trx: Transaction<ShopDatabase>): Promise<StoredResponse> =>
      inTransaction(trx, request, options, action);
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
  options: {
    claim: Claim | undefined;
    hashKeys: HashKeys;
    tokens: ConsistencyTokens;
    privacy: Privacy;
  },
  action: (trx: Transaction<ShopDatabase>, context: CommandContext) => Promise<WriteOutcome>,
): Promise<StoredResponse> {
  const { claim, privacy } = options;
  if (claim !== undefined) {
    const replayed = await claimOrReplay(trx, request, claim, options.hashKeys);
    if (replayed !== undefined) return revealed(trx, privacy, replayed);
  }
  const outcome = await action(trx, {
    ...requestContext(request),
    privacy,
    mayActFor: (customerId) => mayActFor(request, customerId),
  });
  const fresh = toResponse(outcome, options.tokens);
  if (outcome.erasedCustomer !== undefined) await forget(trx, outcome.erasedCustomer, claim);
  if (claim !== undefined) {
    // Stored with the COMMIT: nothing reads it before.
    const store = trx
      .updateTable('sluice.idempotency_keys')
      .set({
        customer_id: customerOf(outcome),
        status_code: fresh.status,
        response_headers: JSON.stringify(fresh.headers) as unknown as Record<string, string>,
        response_body: JSON.stringify(await storedBody(trx, privacy, outcome, fresh.body)),
      })
      .where('actor', '=', claim.actor)
      .where('key', '=', claim.key);
    await atCommit(trx, [store.compile()]);
  }
  return fresh;
}

/**
 * The customer a stored response is about: the customer the write changed, or the one its
 * body names (a cart's or an order's).
 */
function customerOf(outcome: WriteOutcome): string | null {
  const customer = outcome.written.versions.find((v) => v.aggregateType === 'customer');
  if (customer !== undefined) return customer.aggregateId;
  const { body } = outcome;
  const named =
    typeof body === 'object' && body !== null && 'customerId' in body ? body.customerId : null;
  return typeof named === 'string' ? named : null;
}

/**
 * Deletes an erased customer's idempotency records, with the COMMIT: responses about them, and
 * requests they made. The erasure's own record stays, so a retried erasure still replays.
 */
async function forget(
  trx: Transaction<ShopDatabase>,
  customerId: string,
  own: Claim | undefined,
): Promise<void> {
  let query = trx
    .deleteFrom('sluice.idempotency_keys')
    .where((eb) => eb.or([eb('customer_id', '=', customerId), eb('actor', '=', customerId)]));
  if (own !== undefined)
    query = query.where((eb) =>
      eb.not(eb.and([eb('actor', '=', own.actor), eb('key', '=', own.key)])),
    );
  await atCommit(trx, [query.compile()]);
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

/** The request's hash under `key`: HMAC-SHA256 of its method, URL and body. */
function requestHash(request: FastifyRequest, key: Buffer): string {
  return createHmac('sha256', key)
    .update(`${request.method} ${request.url}\n${JSON.stringify(request.body ?? null)}`)
    .digest('hex');
}

/** Whether `stored` is this request's hash under one of the keys. */
function sameRequest(request: FastifyRequest, stored: string, hashKeys: HashKeys): boolean {
  const storedBytes = Buffer.from(stored, 'hex');
  return hashKeys.matching.some((key) => {
    const hash = Buffer.from(requestHash(request, key), 'hex');
    return hash.length === storedBytes.length && timingSafeEqual(hash, storedBytes);
  });
}

/** Claims the key for this request; or the response its sender stored under it before. */
async function claimOrReplay(
  trx: Transaction<ShopDatabase>,
  request: FastifyRequest,
  { actor, key }: Claim,
  hashKeys: HashKeys,
): Promise<StoredResponse | undefined> {
  // Waits for a concurrent request with the same key to finish, then sees its row.
  const claimed = await trx
    .insertInto('sluice.idempotency_keys')
    .values({
      actor,
      key,
      request_hash: requestHash(request, hashKeys.current),
      customer_id: null,
      status_code: null,
      response_headers: null,
      response_body: null,
    })
    .onConflict((oc) => oc.columns(['actor', 'key']).doNothing())
    .returning('key')
    .executeTakeFirst();
  if (claimed !== undefined) return undefined;
  const stored = await trx
    .selectFrom('sluice.idempotency_keys')
    .select(['request_hash', 'status_code', 'response_headers', 'response_body'])
    .where('actor', '=', actor)
    .where('key', '=', key)
    .executeTakeFirstOrThrow();
  if (stored.status_code === null || !sameRequest(request, stored.request_hash, hashKeys)) {
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
