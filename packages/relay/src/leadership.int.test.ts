// Leadership across a network partition, simulated by a TCP proxy that stops forwarding: the
// leader gives up within its bound, and PostgreSQL ends the silent session so another takes over.
import { freePort, testServers, uniqueName, waitFor } from '@sluice/testkit';
import net from 'node:net';
import { describe, expect, it, onTestFinished } from 'vitest';
import { createLeadership } from './leadership.js';

const { databaseUrl } = testServers();

/** Forwards TCP to PostgreSQL until `freeze()`, after which nothing passes either way. */
async function partitionableProxy(target: URL, port = 0) {
  const sockets: net.Socket[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    sockets.push(client, upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject); // the port taken meanwhile
    server.listen(port, '127.0.0.1', resolve);
  });
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as net.AddressInfo).port);
  return {
    url: url.toString(),
    freeze() {
      for (const socket of sockets) {
        socket.unpipe();
        socket.pause();
      }
    },
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

describe('leadership', () => {
  it('across a partition, the leader gives up within its lease and PostgreSQL frees the lock for another', async () => {
    const proxy = await partitionableProxy(new URL(databaseUrl));
    onTestFinished(() => proxy.close());
    const name = uniqueName('lease');
    const leaseMs = 3000;
    const cutOff = createLeadership({ connectionString: proxy.url, name, leaseMs, pollMs: 100 });
    const other = createLeadership({ connectionString: databaseUrl, name, leaseMs, pollMs: 100 });
    const abort = new AbortController();
    onTestFinished(async () => {
      abort.abort();
      await Promise.all([cutOff.release(), other.release()]);
    });
    await cutOff.acquire(abort.signal);

    let acquiredAt: number | undefined;
    void other.acquire(abort.signal).then(() => (acquiredAt = Date.now()));
    let lost: { at: number; error: Error } | undefined;
    void cutOff.lost().then((error) => (lost = { at: Date.now(), error }));
    const frozenAt = Date.now();
    proxy.freeze();

    await waitFor(() => lost, { timeoutMs: leaseMs * 2, message: 'the cut-off leader to give up' });
    await waitFor(() => acquiredAt, { timeoutMs: leaseMs * 3, message: 'the other to lead' });
    const lostAfterMs = (lost?.at ?? 0) - frozenAt;
    const takeoverMs = (acquiredAt ?? 0) - frozenAt;
    console.log(JSON.stringify({ partitionedLeader: { lostAfterMs, takeoverMs } }));
    expect(lost?.error.message).toMatch(/Leader session failed/);
    // The cut-off leader stops leading before PostgreSQL hands the lock to anyone else.
    expect(lostAfterMs).toBeLessThan(leaseMs);
    expect(takeoverMs).toBeGreaterThan(lostAfterMs);
    expect(takeoverMs).toBeLessThan(leaseMs * 2);
  });

  it('a standby that cannot reach PostgreSQL says why, until a try is answered', async () => {
    const port = await freePort();
    const url = new URL(databaseUrl);
    url.hostname = '127.0.0.1';
    url.port = String(port);
    const name = uniqueName('reach');
    const holder = createLeadership({ connectionString: databaseUrl, name });
    const standby = createLeadership({ connectionString: url.toString(), name, pollMs: 50 });
    const abort = new AbortController();
    onTestFinished(async () => {
      abort.abort();
      await Promise.all([holder.release(), standby.release()]);
    });
    await holder.acquire(abort.signal);
    expect(standby.unreachable()).toBeUndefined();
    void standby.acquire(abort.signal).catch(() => undefined);
    const refused = await waitFor(() => standby.unreachable(), {
      timeoutMs: 10_000,
      message: 'a refused try to be kept',
    });
    expect(refused.message).toMatch(/ECONNREFUSED/);
    // PostgreSQL answers on that port now, and the lock is held elsewhere: a standby, reachable.
    const proxy = await partitionableProxy(new URL(databaseUrl), port);
    onTestFinished(() => proxy.close());
    await waitFor(() => standby.unreachable() === undefined, {
      timeoutMs: 10_000,
      message: 'an answered try to clear it',
    });
  });
});
