import { createAccess, type Access } from '@sluice/access';
import type { OperatorRequest, Projector } from '@sluice/projector';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { operationsAccess, operationsRoutes } from './operations.js';

const secret = 'operations-test-secret-of-32-bytes-or-more';
const access = createAccess({ secret });

/** The projector calls the routes make; only the ones these tests use. */
function fakeProjector(calls: OperatorRequest[]): Projector {
  return {
    parked: () => Promise.resolve([]),
    offsetGaps: () => Promise.resolve([]),
    generations: () => Promise.resolve({ generations: [] }),
    acceptOffsetGaps: (_projection: string, operator: OperatorRequest) => {
      calls.push(operator);
      return Promise.resolve(0);
    },
  } as unknown as Projector;
}

function logged() {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({}, { write: (line: string) => lines.push(JSON.parse(line) as never) });
  return { logger, lines };
}

let app: FastifyInstance;
afterEach(() => app.close());

async function serve(
  withAccess: Access | undefined,
  calls: OperatorRequest[] = [],
  projector: Projector = fakeProjector(calls),
) {
  app = Fastify();
  app.get('/healthz', () => ({ status: 'ok' }));
  const { logger } = logged();
  operationsRoutes(app, {
    projector,
    logger,
    hosted: [],
    access: withAccess,
  });
  await app.ready();
}

const bearer = async (role: 'viewer' | 'operator', subject: string) => ({
  authorization: `Bearer ${await access.issueToken({ subject, role }, 60)}`,
});
const accept = (headers: Record<string, string>) =>
  app.inject({
    method: 'POST',
    url: '/offset-gaps/accept',
    headers,
    payload: { projection: 'p', reason: 'known outage' },
  });

describe('the operations API', () => {
  it('refuses everything, naming the settings, when no credentials are configured', async () => {
    const { logger, lines } = logged();
    expect(operationsAccess({}, logger)).toBeUndefined();
    expect(lines.filter((line) => line.level === 40)).toHaveLength(1);
    expect(lines[0]?.msg).toContain('SLUICE_ACCESS_SECRET');
    await serve(undefined);
    for (const url of ['/parked', '/offset-gaps', '/projections']) {
      const response = await app.inject({ url, headers: await bearer('operator', 'ada') });
      expect(response.statusCode).toBe(401);
      expect(response.json()).toMatchObject({
        code: 'unauthenticated',
        detail: expect.stringContaining('SLUICE_ACCESS_SECRET'),
      });
    }
    expect((await accept(await bearer('operator', 'ada'))).statusCode).toBe(401);
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
  });

  it('lets viewers read, and only operators act, in their own name', async () => {
    const calls: OperatorRequest[] = [];
    await serve(access, calls);
    const forged = await createAccess({ secret: `${secret}-forged` }).issueToken(
      { subject: 'eve', role: 'operator' },
      60,
    );
    expect((await app.inject({ url: '/parked' })).statusCode).toBe(401);
    const forgedRead = await app.inject({
      url: '/parked',
      headers: { authorization: `Bearer ${forged}` },
    });
    expect(forgedRead.statusCode).toBe(401);
    for (const url of ['/parked', '/offset-gaps', '/projections']) {
      expect((await app.inject({ url, headers: await bearer('viewer', 'vic') })).statusCode).toBe(
        200,
      );
    }
    const viewerAction = await accept(await bearer('viewer', 'vic'));
    expect(viewerAction.statusCode).toBe(403);
    expect(viewerAction.json()).toMatchObject({ code: 'forbidden' });
    const cancel = await app.inject({
      method: 'DELETE',
      url: '/projections/p/rebuild',
      headers: await bearer('viewer', 'vic'),
    });
    expect(cancel.statusCode).toBe(403);
    expect(calls).toEqual([]);
    const done = await accept({ ...(await bearer('operator', 'ada')), 'x-actor': 'mallory' });
    expect(done.statusCode).toBe(200);
    expect(calls).toEqual([{ actor: 'ada', reason: 'known outage' }]);
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
  });

  it('answers 503 database_unavailable while the database does not answer; other failures 500', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), {
      code: 'ECONNREFUSED',
      syscall: 'connect',
    });
    await serve(access, [], {
      ...fakeProjector([]),
      parked: () => Promise.reject(refused),
      offsetGaps: () => Promise.reject(new Error('a bug')),
    });
    const headers = await bearer('viewer', 'vic');
    const parked = await app.inject({ url: '/parked', headers });
    expect(parked.statusCode).toBe(503);
    expect(parked.headers['retry-after']).toBe('1');
    expect(parked.json()).toMatchObject({ code: 'database_unavailable' });
    const gaps = await app.inject({ url: '/offset-gaps', headers });
    expect(gaps.statusCode).toBe(500);
    expect(gaps.json()).toMatchObject({ code: 'internal_error' });
  });

  it('fails the start on inconsistent access settings', () => {
    const { logger } = logged();
    expect(() =>
      operationsAccess({ SLUICE_ACCESS_JWKS_URL: 'https://id.example.com/jwks' }, logger),
    ).toThrow(expect.objectContaining({ code: 'config_invalid' }));
  });
});
