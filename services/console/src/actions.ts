// The operator's actions: forwarded to the projector hosting the projection, with the caller's
// token (the projector verifies it and records its subject as the actor in sluice.operator_audit).
import { Type, type Static } from '@sinclair/typebox';
import { SESSION_COOKIE } from '@sluice/access';
import { SluiceError } from '@sluice/errors';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type pg from 'pg';

/** Where an action goes: the base URL of the projector hosting `projection`, if any answers. */
export interface ActionDeps {
  pool: pg.Pool;
  projectorFor(projection: string): Promise<string | undefined>;
}

/** Aggregates one redrive-matching handles at most; repeat it for more. */
const MATCHING_CAP = 500;

const Reason = Type.String({ minLength: 1, maxLength: 500 });
const Name = Type.String({ minLength: 1, maxLength: 200 });
const RedriveBody = Type.Object(
  { projection: Name, aggregateType: Name, aggregateId: Name, reason: Reason },
  { additionalProperties: false },
);
const MatchingBody = Type.Object(
  {
    projection: Name,
    aggregateType: Type.Optional(Name),
    errorClass: Type.Optional(Name),
    reason: Reason,
  },
  { additionalProperties: false },
);
const SkipBody = Type.Object(
  {
    projection: Name,
    topic: Name,
    partition: Type.Integer({ minimum: 0, maximum: 2_147_483_647 }),
    offset: Type.String({ pattern: '^[0-9]{1,19}$' }),
    reason: Reason,
  },
  { additionalProperties: false },
);
const RebuildParams = Type.Object({ name: Name });
const RebuildBody = Type.Object({ reason: Reason }, { additionalProperties: false });

/** The caller's own token, as verified by requireRole: Bearer header, else the session cookie. */
function tokenOf(request: FastifyRequest): string {
  const bearer = /^Bearer +(\S+) *$/i.exec(request.headers.authorization ?? '')?.[1];
  return bearer ?? request.cookies[SESSION_COOKIE] ?? '';
}

interface Forwarded {
  status: number;
  body: unknown;
  /** The projector's `Retry-After` (a 503 while its database is out of reach), passed on. */
  retryAfter: string | null;
}

/** Sends one operations request to the projector hosting `projection`, as the caller. */
async function forward(
  deps: ActionDeps,
  request: FastifyRequest,
  call: {
    projection: string;
    method: 'POST' | 'DELETE';
    path: string;
    body?: unknown;
    reason: string;
  },
): Promise<Forwarded> {
  const base = await deps.projectorFor(call.projection);
  if (base === undefined) {
    throw new SluiceError(
      'projector_unreachable',
      `No projector at CONSOLE_PROJECTOR_URLS answers for ${call.projection}`,
    );
  }
  const headers: Record<string, string> = {
    authorization: `Bearer ${tokenOf(request)}`,
    // A header carries printable ASCII only (the body, where there is one, keeps the reason whole).
    'x-reason': call.reason.replace(/[^\x20-\x7e]/g, '?').slice(0, 200),
  };
  if (call.body !== undefined) headers['content-type'] = 'application/json';
  try {
    const response = await fetch(`${base}${call.path}`, {
      method: call.method,
      headers,
      ...(call.body === undefined ? {} : { body: JSON.stringify(call.body) }),
      signal: AbortSignal.timeout(30_000),
    });
    const body: unknown = await response.json().catch(() => ({}));
    return { status: response.status, body, retryAfter: response.headers.get('retry-after') };
  } catch (error) {
    throw new SluiceError('projector_unreachable', `The projector at ${base} did not answer`, {
      cause: error,
    });
  }
}

function relay(reply: FastifyReply, { status, body, retryAfter }: Forwarded) {
  if (retryAfter !== null) reply.header('retry-after', retryAfter);
  return reply.code(status).send(body);
}

/** The distinct aggregates with parked records matching, at most {@link MATCHING_CAP}. */
async function matchingAggregates(pool: pg.Pool, body: Static<typeof MatchingBody>) {
  const { rows } = await pool.query<{ aggregate_type: string; aggregate_id: string }>(
    `SELECT DISTINCT p.aggregate_type, p.aggregate_id
       FROM sluice.parked_events p
       JOIN sluice.projection_generations g ON g.instance = p.projection AND g.state = 'active'
      WHERE g.projection = $1 AND p.aggregate_type IS NOT NULL AND p.aggregate_id IS NOT NULL
        AND ($2::text IS NULL OR p.aggregate_type = $2) AND ($3::text IS NULL OR p.reason = $3)
      ORDER BY 1, 2 LIMIT ${MATCHING_CAP}`,
    [body.projection, body.aggregateType ?? null, body.errorClass ?? null],
  );
  return rows;
}

/** Redrives each aggregate with matching parked records in turn; stops at the first refusal. */
async function redriveMatching(
  deps: ActionDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  body: Static<typeof MatchingBody>,
) {
  const totals = { aggregates: 0, applied: 0, parked: 0 };
  for (const row of await matchingAggregates(deps.pool, body)) {
    const aggregate = { aggregateType: row.aggregate_type, aggregateId: row.aggregate_id };
    const answer = await forward(deps, request, {
      projection: body.projection,
      reason: body.reason,
      method: 'POST',
      path: '/parked/redrive',
      body: { projection: body.projection, ...aggregate, reason: body.reason },
    });
    if (answer.status !== 200) return relay(reply, answer);
    const { applied = 0, parked = 0 } = answer.body as { applied?: number; parked?: number };
    totals.aggregates += 1;
    totals.applied += applied;
    totals.parked += parked;
  }
  return reply.send(totals);
}

/** Registers the action routes on `app` (a scope that already requires the operator role). */
export function actionRoutes(app: FastifyInstance, deps: ActionDeps): void {
  app.post('/parked/redrive', { schema: { body: RedriveBody } }, async (request, reply) => {
    const body = request.body as Static<typeof RedriveBody>;
    return relay(
      reply,
      await forward(deps, request, { ...body, method: 'POST', path: '/parked/redrive', body }),
    );
  });
  app.post('/parked/redrive-matching', { schema: { body: MatchingBody } }, async (request, reply) =>
    redriveMatching(deps, request, reply, request.body as Static<typeof MatchingBody>),
  );
  app.post('/parked/skip', { schema: { body: SkipBody } }, async (request, reply) => {
    const body = request.body as Static<typeof SkipBody>;
    return relay(
      reply,
      await forward(deps, request, { ...body, method: 'POST', path: '/parked/skip', body }),
    );
  });
  rebuildRoutes(app, deps);
}

/** Starts and cancels a projection's rebuild. */
function rebuildRoutes(app: FastifyInstance, deps: ActionDeps): void {
  app.post(
    '/projections/:name/rebuild',
    { schema: { params: RebuildParams, body: RebuildBody } },
    async (request, reply) => {
      const { name } = request.params as Static<typeof RebuildParams>;
      const { reason } = request.body as Static<typeof RebuildBody>;
      const path = `/projections/${encodeURIComponent(name)}/rebuild`;
      return relay(
        reply,
        await forward(deps, request, { projection: name, method: 'POST', path, reason }),
      );
    },
  );
  app.delete(
    '/projections/:name/rebuild',
    { schema: { params: RebuildParams } },
    async (request, reply) => {
      const { name } = request.params as Static<typeof RebuildParams>;
      const reason =
        (request.body as { reason?: string } | undefined)?.reason ?? 'cancelled from the console';
      const path = `/projections/${encodeURIComponent(name)}/rebuild`;
      return relay(
        reply,
        await forward(deps, request, { projection: name, method: 'DELETE', path, reason }),
      );
    },
  );
}
