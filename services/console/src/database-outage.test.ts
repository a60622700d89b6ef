// The console's reads while PostgreSQL refuses connections: a 503 to retry, not a 500.
import { createAccess } from '@sluice/access';
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

beforeAll(async () => {
  app = await createConsoleApp({
    access,
    // These routes read PostgreSQL only; the sampler is never asked.
    sampler: Object.create(Sampler.prototype) as Sampler,
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
