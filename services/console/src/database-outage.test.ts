// The console's reads while PostgreSQL refuses connections: a 503 to retry, not a 500.
import { createAccess } from '@sluice/access';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createConsoleApp } from './app.js';
import { Sampler } from './sampler.js';

const access = createAccess({ secret: 'console-outage-test-secret-of-32-bytes' });
// A port nothing listens on: every connection is refused at once.
const pool = new pg.Pool({ host: '127.0.0.1', port: 1, user: 'console', database: 'sluice' });
pool.on('error', () => undefined);
let app: Awaited<ReturnType<typeof createConsoleApp>>;
// A projector whose own database is out of reach: every operation a 503 to retry.
const projector: Server = createServer((_request, response) => {
  response.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
  response.end(
    JSON.stringify({ code: 'database_unavailable', detail: 'The database does not answer' }),
  );
});

beforeAll(async () => {
  await new Promise<void>((resolve) => projector.listen(0, '127.0.0.1', resolve));
  const { port } = projector.address() as AddressInfo;
  // The reads ask PostgreSQL only; the actions ask the sampler only where the projector is.
  const sampler = Object.create(Sampler.prototype) as Sampler;
  sampler.projectorFor = () => Promise.resolve(`http://127.0.0.1:${port}`);
  app = await createConsoleApp({
    access,
    sampler,
    pool,
    logger: pino({ level: 'silent' }),
    maskedTypes: new Set(),
    sessionTtlSeconds: 60,
    topicPrefix: 'outbox.event.',
    groupPrefix: 'sluice.projection.',
  });
  await app.ready();
});
afterAll(async () => {
  await app.close();
  projector.close();
  await pool.end();
});

it('answers the reads of PostgreSQL with 503 database_unavailable and Retry-After', async () => {
  const token = await access.issueToken({ subject: 'vic', role: 'viewer' }, 60);
  const headers = { authorization: `Bearer ${token}` };
  for (const url of ['/api/parked', '/api/audit']) {
    const res = await app.inject({ url, headers });
    expect(res.statusCode, `${url}: ${res.body}`).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
    expect(res.json()).toMatchObject({ code: 'database_unavailable' });
  }
});

it("relays a projector's 503 with its Retry-After", async () => {
  const token = await access.issueToken({ subject: 'olga', role: 'operator' }, 60);
  const res = await app.inject({
    method: 'POST',
    url: '/api/parked/redrive',
    headers: { authorization: `Bearer ${token}` },
    payload: { projection: 'carts', aggregateType: 'cart', aggregateId: 'c1', reason: 'retry' },
  });
  expect(res.statusCode, res.body).toBe(503);
  expect(res.headers['retry-after']).toBe('1');
  expect(res.json()).toMatchObject({ code: 'database_unavailable' });
});
