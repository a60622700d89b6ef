import { SluiceError } from '@sluice/errors';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccess, principalOf, requireRole, type Access } from './index.js';

const access = createAccess({ secret: 'a-test-secret-of-more-than-32-bytes!' });
const other = createAccess({ secret: 'another-secret-of-more-than-32-bytes' });

describe('requireRole', () => {
  let app: FastifyInstance;
  let viewer: string;
  let operator: string;

  beforeAll(async () => {
    app = Fastify();
    app.get('/healthz', () => ({ ok: true }));
    app.get('/things', { onRequest: requireRole(access, 'viewer') }, (request) => ({
      principal: principalOf(request),
    }));
    app.post('/things', { onRequest: requireRole(access, 'operator') }, (request) => ({
      actor: principalOf(request)?.subject,
    }));
    await app.ready();
    viewer = await access.issueToken({ subject: 'vic', role: 'viewer' }, 60);
    operator = await access.issueToken({ subject: 'ada', role: 'operator' }, 60);
  });

  afterAll(() => app.close());

  const call = (method: 'GET' | 'POST', headers: Record<string, string> = {}) =>
    app.inject({ method, url: '/things', headers });

  it('answers 401 without a credential or with a bad one, and leaves other routes open', async () => {
    const bare = await call('GET');
    expect(bare.statusCode).toBe(401);
    expect(bare.json()).toMatchObject({ code: 'unauthenticated' });
    expect(bare.headers['www-authenticate']).toBe('Bearer realm="sluice"');
    const forged = await other.issueToken({ subject: 'eve', role: 'operator' }, 60);
    for (const authorization of [
      `Bearer ${forged}`,
      'Bearer ',
      'Bearer garbage',
      `Bearer ${'a'.repeat(15_000)}`,
      `Basic ${Buffer.from('ada:pw').toString('base64')}`,
      operator,
    ]) {
      const response = await call('POST', { authorization });
      expect(response.statusCode, authorization.slice(0, 20)).toBe(401);
      expect(response.json()).toMatchObject({ code: 'unauthenticated' });
    }
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });

  it('answers 403 when the role is below the route’s, and sets the principal otherwise', async () => {
    const denied = await call('POST', { authorization: `Bearer ${viewer}` });
    expect(denied.statusCode).toBe(403);
    expect(denied.json()).toMatchObject({ code: 'forbidden' });
    const read = await call('GET', { authorization: `bearer ${viewer}` });
    expect(read.json()).toEqual({ principal: { subject: 'vic', role: 'viewer' } });
    const acted = await call('POST', { authorization: `Bearer ${operator}` });
    expect(acted.json()).toEqual({ actor: 'ada' });
    expect((await call('GET', { authorization: `Bearer ${operator}` })).statusCode).toBe(200);
  });

  it('takes the token from the sluice_session cookie', async () => {
    const cookie = `theme=dark; sluice_session=${operator}; other=1`;
    expect((await call('POST', { cookie })).json()).toEqual({ actor: 'ada' });
    expect((await call('POST', { cookie: 'sluice_session=' })).statusCode).toBe(401);
    expect((await call('POST', { cookie: `xsluice_session=${operator}` })).statusCode).toBe(401);
  });

  it('answers 503 while the identity provider cannot be reached', async () => {
    const unreachable: Access = {
      ...access,
      verifyToken: () =>
        Promise.reject(new SluiceError('access_unavailable', 'keys away', { retriable: true })),
    };
    const scoped = Fastify();
    scoped.get('/x', { onRequest: requireRole(unreachable, 'viewer') }, () => 'no');
    const response = await scoped.inject({
      url: '/x',
      headers: { authorization: `Bearer ${viewer}` },
    });
    expect(response.statusCode).toBe(503);
    expect(response.json()).toMatchObject({ code: 'access_unavailable' });
    await scoped.close();
  });
});
