// The console's pages: the web package's Vite build, served at `/`, with every other path that
// is not under /api answered by index.html (the pages route in the browser).
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where the web package builds the pages: `web/dist` beside this package's `src` and `dist`. */
export const PAGES_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'web', 'dist');

const NOT_BUILT = 'console pages not built: run pnpm build';

/** Serves `dir` at `/` (503 with how to build them when it has no index.html); /api 404s as JSON. */
export async function pagesRoutes(app: FastifyInstance, dir: string = PAGES_DIR): Promise<void> {
  const built = existsSync(join(dir, 'index.html'));
  if (built) await app.register(fastifyStatic, { root: dir, prefix: '/' });
  app.setNotFoundHandler((request, reply) => {
    if (request.url === '/api' || request.url.startsWith('/api/')) {
      return reply
        .code(404)
        .send({ code: 'not_found', message: `No route ${request.method} ${request.url}` });
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      return reply
        .code(404)
        .send({ code: 'not_found', message: `No route ${request.method} ${request.url}` });
    }
    if (!built) return reply.code(503).type('text/plain; charset=utf-8').send(NOT_BUILT);
    return reply.sendFile('index.html');
  });
}
