// shop-api as a real process: probes and metrics over HTTP, JSON logs with correlation ids, and
// a SIGTERM that drains in-flight requests before exiting.
import {
  createTestDatabase,
  freePort,
  testServers,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SHOP_AUTH_SECRET, shopAdminHeaders } from '../support/access.js';
import { TEST_MASTER_KEY } from '../support/privacy.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
let database: TestDatabase;
let child: ChildProcess;
let base: string;
let output = '';
let exitCode: number | null | undefined;

beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'shop_process');
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  child = spawn(process.execPath, [join(rootDir, 'services', 'shop-api', 'dist', 'main.js')], {
    env: {
      ...process.env,
      DATABASE_URL: database.url,
      API_PORT: String(port),
      LOG_LEVEL: 'info',
      SHOP_AUTH_SECRET: TEST_SHOP_AUTH_SECRET,
      SLUICE_MASTER_KEY: TEST_MASTER_KEY,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.on('exit', (code) => (exitCode = code));
  await waitFor(
    async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200,
    {
      timeoutMs: 30_000,
      message: 'shop-api ready',
    },
  );
});

afterAll(async () => {
  if (exitCode === undefined) child.kill('SIGKILL');
  await database.drop();
});

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(`${base}${path}`, {
    method: 'POST',
    headers: { ...shopAdminHeaders(), 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

describe('shop-api process', () => {
  it('answers probes and exposes Prometheus metrics', async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    await post('/customers', { email: 'metrics@example.com', name: 'M' });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(
      /http_requests_total\{method="POST",route="\/customers",status="201"\} 1/,
    );
    expect(metrics).toMatch(/http_request_duration_seconds_bucket/);
  });

  it('logs JSON lines carrying the correlation id, and echoes it', async () => {
    const res = await post(
      '/customers',
      { email: 'metrics@example.com', name: 'Dup' },
      { 'x-correlation-id': 'corr-log-1' },
    );
    expect(res.status).toBe(409);
    expect(res.headers.get('x-correlation-id')).toBe('corr-log-1');
    const lines = output
      .trim()
      .split('\n')
      .filter((line) => line.startsWith('{'));
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(() => JSON.parse(line) as unknown).not.toThrow();
    expect(lines.map((line) => JSON.parse(line) as { service?: string })[0]?.service).toBe(
      'shop-api',
    );
  });

  it('drains an in-flight request on SIGTERM, then exits 0', async () => {
    const customer = (await (
      await post('/customers', { email: 'drain@example.com', name: 'D' })
    ).json()) as { id: string };
    const product = (await (
      await post('/products', { sku: 'DRAIN-1', name: 'D', priceCents: 5, stock: 5 })
    ).json()) as { id: string };
    const cart = (await (await post('/carts', { customerId: customer.id })).json()) as {
      id: string;
    };

    // Hold the cart's row lock so the next write is provably in flight when SIGTERM arrives.
    const blocker = new pg.Client({ connectionString: database.url });
    await blocker.connect();
    await blocker.query('BEGIN');
    await blocker.query('SELECT 1 FROM shop.carts WHERE id = $1 FOR UPDATE', [cart.id]);
    const inFlight = post(`/carts/${cart.id}/items`, { productId: product.id, quantity: 1 });
    await waitFor(
      async () => {
        const { rows } = await blocker.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'shop-api' AND wait_event_type = 'Lock'",
        );
        return (rows[0]?.n ?? 0) > 0;
      },
      { message: 'the request to wait on the row lock' },
    );
    child.kill('SIGTERM');
    await waitFor(() => output.includes('"draining"'), { message: 'shop-api to start draining' });
    await blocker.query('COMMIT');
    await blocker.end();

    const response = await inFlight;
    expect(response.status).toBe(200);
    await waitFor(() => exitCode !== undefined, { timeoutMs: 15_000, message: 'shop-api to exit' });
    expect(exitCode).toBe(0);
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});

describe('shop-api command line', () => {
  const main = join(rootDir, 'services', 'shop-api', 'dist', 'main.js');
  const run = (args: string[], env: Record<string, string>) =>
    new Promise<{ code: number | null; output: string }>((done) => {
      const started = spawn(process.execPath, [main, ...args], { env: { ...process.env, ...env } });
      let text = '';
      started.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
      started.stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
      started.on('exit', (code) => done({ code, output: text }));
    });

  it('refuses invalid settings with exit 78, one line each', async () => {
    const { code, output: text } = await run([], { API_PORT: 'none', DATABASE_POOL_SIZE: '0' });
    expect(code).toBe(78);
    expect(text.trim().split('\n')).toEqual([
      'shop-api: API_PORT must be integer (is "none")',
      'shop-api: DATABASE_POOL_SIZE must be >= 1 (is "0")',
    ]);
  });

  it('--check: 0 when the database answers, 1 and one line without the password when not', async () => {
    const auth = { SHOP_AUTH_SECRET: TEST_SHOP_AUTH_SECRET, SLUICE_MASTER_KEY: TEST_MASTER_KEY };
    expect(await run(['--check'], { DATABASE_URL: database.url, ...auth })).toEqual({
      code: 0,
      output: 'shop-api: settings valid; every check passed\n',
    });
    const closed = await freePort();
    const refused = await run(['--check'], {
      DATABASE_URL: `postgres://app:hunter2@127.0.0.1:${closed}/shop`,
      ...auth,
    });
    expect(refused.code).toBe(1);
    expect(refused.output).toMatch(
      /^shop-api: PostgreSQL at 127\.0\.0\.1:\d+\/shop does not answer/,
    );
    expect(refused.output).not.toContain('hunter2');
  });
});
