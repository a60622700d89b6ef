// GET /api/parked's connection dropping in the middle of a page: the request fails, the console
// process goes on (a client's 'error' while checked out would otherwise end it).
import { once } from 'node:events';
import net from 'node:net';
import pg from 'pg';
import { afterEach, expect, it } from 'vitest';
import { parkedPage } from './parked.js';

const message = (type: string, body: Buffer) => {
  const head = Buffer.alloc(5);
  head.write(type, 0);
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
};
const ready = (status: string) => message('Z', Buffer.from(status));

/** A server that speaks just enough PostgreSQL to trust a client and begin, then hangs up. */
function droppingServer(): net.Server {
  return net.createServer((socket) => {
    let received = 0;
    socket.on('data', () => {
      received += 1;
      const auth = Buffer.alloc(4);
      if (received === 1) socket.write(Buffer.concat([message('R', auth), ready('I')]));
      else if (received === 2)
        socket.write(Buffer.concat([message('C', Buffer.from('BEGIN\0')), ready('T')]));
      else socket.destroy();
    });
  });
}

const closing: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closing.splice(0)) await close();
});

it('fails the page, and nothing else, when the connection drops after BEGIN', async () => {
  const server = droppingServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  closing.push(() => new Promise((done) => server.close(() => done())));
  const { port } = server.address() as net.AddressInfo;
  const pool = new pg.Pool({ host: '127.0.0.1', port, user: 'console', database: 'sluice' });
  pool.on('error', () => undefined);
  closing.push(() => pool.end());
  const uncaught: unknown[] = [];
  const listener = (error: unknown) => uncaught.push(error);
  process.on('uncaughtException', listener);
  try {
    await expect(parkedPage(pool, { limit: 10 })).rejects.toThrow(/terminated|closed|ended/i);
    // The client's 'error' event fires on the same turn as the failure, or just after.
    await new Promise((done) => setImmediate(done));
  } finally {
    process.off('uncaughtException', listener);
  }
  expect(uncaught).toEqual([]);
  expect(pool.totalCount).toBe(0);
});
