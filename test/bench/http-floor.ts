// Benchmark: what an HTTP request costs on this machine before any application code runs — the
// floor under shop-api's CPU per write. A bare node:http server in a child process answers a
// JSON POST like an added cart item (reads the body, parses it, answers JSON); this process sends
// requests at fixed rates over keep-alive connections, as the other benchmarks drive shop-api
// (`httpRequest`, an admin's token included), and reads the server's CPU time from
// /proc/<pid>/stat (10 ms ticks: ±20 ms a step, 1–4 % of what a default step measures).
//
//   cd /work/main && pnpm exec tsx test/bench/http-floor.ts
//
// Prints one JSON object on stdout. Environment (all optional):
//   BENCH_RATES     requests per second, a comma list (default 100,250,500)
//   BENCH_SECONDS   seconds per rate, after 2,000 warm-up requests (default 15)
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  envNumber,
  httpRequest,
  processTicks,
  round,
  sleep,
  startChild,
  stopProcess,
  type Child,
} from './support.js';

const TICKS_PER_SECOND = 100; // USER_HZ on every mainstream Linux build
const LISTENING = /^listening (\d+)$/;

function serve(): void {
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const item = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
      response.setHeader('content-type', 'application/json; charset=utf-8');
      response.end(JSON.stringify({ id: request.url, version: 2, items: [item] }));
    });
  });
  server.listen(0, '127.0.0.1', () =>
    console.log(`listening ${(server.address() as AddressInfo).port}`),
  );
}

async function portOf(server: Child): Promise<number> {
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(20)) {
    const port = LISTENING.exec(server.last(LISTENING) ?? '')?.[1];
    if (port !== undefined) return Number(port);
  }
  throw new Error('the server did not listen within 30 s');
}

async function measure(): Promise<void> {
  const children = new Set<ChildProcess>();
  const server = startChild(
    children,
    'server',
    process.execPath,
    ['--import', 'tsx', fileURLToPath(import.meta.url), 'serve'],
    process.env,
  );
  const port = await portOf(server);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const body = JSON.stringify({ productId: '0190c3a0-0000-7000-8000-000000000001', quantity: 1 });
  const send = () =>
    httpRequest(agent, port, 'POST', '/carts/0190c3a0-0000-7000-8000-000000000002/items', body);
  const cpuMs = () => ((processTicks(server.pid)?.ticks ?? 0) * 1000) / TICKS_PER_SECOND;
  for (let i = 0; i < 2000; i++) await send();
  const seconds = envNumber('BENCH_SECONDS', 15);
  const rates = (process.env.BENCH_RATES ?? '100,250,500').split(',').map(Number);
  const results = [];
  for (const rate of rates) {
    const before = cpuMs();
    const start = performance.now();
    const pending = new Set<Promise<unknown>>();
    let sent = 0;
    while (performance.now() - start < seconds * 1000) {
      await sleep(Math.max(0, start + (sent * 1000) / rate - performance.now()));
      const request: Promise<unknown> = send().finally(() => pending.delete(request));
      pending.add(request);
      sent += 1;
    }
    await Promise.all(pending);
    results.push({
      rate,
      requests: sent,
      serverCpuMsPerRequest: round((cpuMs() - before) / sent, 3),
    });
  }
  agent.destroy();
  await stopProcess(server.process, 5000);
  console.log(JSON.stringify({ benchmark: 'http-floor', seconds, results }, null, 2));
}

if (process.argv[2] === 'serve') serve();
else await measure();
