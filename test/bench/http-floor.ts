// Benchmark: what an HTTP request costs on this machine before any application code runs — the
// floor under shop-api's CPU per write. A bare node:http server in a child process answers a
// JSON POST like an added cart item (reads the body, parses it, answers JSON); this process sends
// requests at fixed rates over keep-alive connections and reads the server's CPU time.
//
//   cd /work/main && pnpm exec tsx test/bench/http-floor.ts
//
// Prints one JSON object on stdout. Environment (all optional):
//   BENCH_RATES     requests per second, a comma list (default 100,250,500)
//   BENCH_SECONDS   seconds per rate, after 2,000 warm-up requests (default 15)
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { envNumber, round, sleep } from './support.js';

function serve(): void {
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const item = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
      response.setHeader('content-type', 'application/json; charset=utf-8');
      response.end(JSON.stringify({ id: request.url, version: 2, items: [item] }));
    });
  });
  server.listen(0, '127.0.0.1', () => process.send?.((server.address() as AddressInfo).port));
  process.on('message', () => {
    const used = process.cpuUsage();
    process.send?.((used.user + used.system) / 1000);
  });
}

async function measure(): Promise<void> {
  const child = fork(new URL(import.meta.url).pathname, ['serve'], {
    execArgv: ['--import', 'tsx'],
  });
  const next = () => new Promise<number>((resolve) => child.once('message', resolve));
  const port = await next();
  const cpuMs = () => {
    const reply = next();
    child.send('cpu');
    return reply;
  };
  const body = JSON.stringify({ productId: '0190c3a0-0000-7000-8000-000000000001', quantity: 1 });
  const send = () =>
    fetch(`http://127.0.0.1:${port}/carts/0190c3a0-0000-7000-8000-000000000002/items`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    }).then((response) => response.text());
  for (let i = 0; i < 2000; i++) await send();
  const seconds = envNumber('BENCH_SECONDS', 15);
  const rates = (process.env.BENCH_RATES ?? '100,250,500').split(',').map(Number);
  const results = [];
  for (const rate of rates) {
    const before = await cpuMs();
    const start = performance.now();
    const pending = new Set<Promise<string>>();
    let sent = 0;
    while (performance.now() - start < seconds * 1000) {
      await sleep(Math.max(0, start + (sent * 1000) / rate - performance.now()));
      const request: Promise<string> = send().finally(() => pending.delete(request));
      pending.add(request);
      sent += 1;
    }
    await Promise.all(pending);
    results.push({
      rate,
      requests: sent,
      serverCpuMsPerRequest: round(((await cpuMs()) - before) / sent, 3),
    });
  }
  child.kill();
  console.log(JSON.stringify({ benchmark: 'http-floor', seconds, results }, null, 2));
}

if (process.argv[2] === 'serve') serve();
else await measure();
