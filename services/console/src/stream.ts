// GET /api/stream: the overview, relay and projections bodies as server-sent events, at connect
// and after every sample, with a comment line as heartbeat. Closing the server ends every stream.
import type { FastifyInstance } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { Sampler, Snapshot } from './sampler.js';

/** Seconds between heartbeat comments, so proxies keep an idle stream open. */
const HEARTBEAT_MS = 15_000;

function write(response: ServerResponse, snapshot: Snapshot): void {
  for (const [event, body] of [
    ['overview', snapshot.overview],
    ['relay', snapshot.relay],
    ['projections', snapshot.projections],
  ] as const) {
    response.write(`event: ${event}\ndata: ${JSON.stringify(body)}\n\n`);
  }
}

/** Registers `GET /stream` on `app` (a scope that already requires the viewer role). */
export function streamRoute(
  app: FastifyInstance,
  sampler: Pick<Sampler, 'snapshot' | 'subscribe'>,
): void {
  const open = new Set<ServerResponse>();
  app.addHook('preClose', (done) => {
    for (const response of open) response.end();
    done();
  });
  app.get('/stream', (request, reply) => {
    void reply.hijack();
    const response = reply.raw;
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    open.add(response);
    const send = (snapshot: Snapshot) => {
      if (!response.writableEnded) write(response, snapshot);
    };
    void sampler.snapshot().then(send, () => undefined);
    const unsubscribe = sampler.subscribe(send);
    const heartbeat = setInterval(() => response.write(': heartbeat\n\n'), HEARTBEAT_MS);
    heartbeat.unref();
    request.raw.once('close', () => {
      clearInterval(heartbeat);
      unsubscribe();
      open.delete(response);
    });
  });
}
