import Fastify from 'fastify';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pagesRoutes } from './pages.js';

const built = mkdtempSync(join(tmpdir(), 'console-pages-'));
writeFileSync(join(built, 'index.html'), '<title>console</title>');
writeFileSync(join(built, 'app.js'), 'void 0;');
afterAll(() => rmSync(built, { recursive: true, force: true }));

async function appOver(dir: string) {
  const app = Fastify();
  await pagesRoutes(app, dir);
  return app;
}

describe('pagesRoutes', () => {
  it('serves the built files, and index.html for any other page path', async () => {
    const app = await appOver(built);
    expect((await app.inject('/app.js')).body).toBe('void 0;');
    expect((await app.inject('/')).body).toContain('<title>console</title>');
    const page = await app.inject('/projections/cart_summary');
    expect([page.statusCode, page.body]).toEqual([200, '<title>console</title>']);
  });

  it('answers an unknown /api path with a JSON 404, never the page', async () => {
    const app = await appOver(built);
    const answer = await app.inject('/api/nothing');
    expect([answer.statusCode, answer.json()]).toEqual([
      404,
      { code: 'not_found', message: 'No route GET /api/nothing' },
    ]);
  });

  it('says how to build the pages when they are not built', async () => {
    const app = await appOver(join(built, 'missing'));
    const answer = await app.inject('/');
    expect([answer.statusCode, answer.body]).toEqual([
      503,
      'console pages not built: run pnpm build',
    ]);
  });
});
