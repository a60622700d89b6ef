// The console against real PostgreSQL and Kafka, with shop-api, a relay and a projector running
// as processes: credentials and roles, the reads, a parked record redriven by an operator and
// audited under their name, and the stream.
import { createAccess, hashPassword } from '@sluice/access';
import { createTestDatabase, freePort, testServers, uniqueName, waitFor } from '@sluice/testkit';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SECRET = 'console-test-secret-0123456789abcdefghijklmnop';
const PASSWORD = 'correct horse battery staple';

interface Child {
  output(): string;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): void;
}

const children: Child[] = [];

/** A built service (`services/<name>/dist/main.js`) as a process, with `env` over ours. */
function start(name: string, env: Record<string, string>, args: string[] = []): Child {
  const child = spawn(
    process.execPath,
    [join(rootDir, 'services', name, 'dist', 'main.js'), ...args],
    {
      env: { ...process.env, LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', done));
  const started = {
    output: () => output,
    exited,
    kill: (signal: NodeJS.Signals = 'SIGKILL') => child.kill(signal),
  };
  children.push(started);
  return started;
}

/** The address a service logged with `message`, once it has. */
async function addressOf(child: Child, message: string): Promise<string> {
  const pattern = new RegExp(`"address":"(http:[^"]+)","msg":"${message}"`);
  return waitFor(() => pattern.exec(child.output())?.[1], {
    timeoutMs: 60_000,
    message: `${message}; output so far:\n${child.output().slice(-2000)}`,
  });
}

let database: Awaited<ReturnType<typeof createTestDatabase>>;
let pool: pg.Pool;
let api: string;
let consoleUrl: string;
let consoleProcess: Child;
let usersDir: string;
const access = createAccess({ secret: SECRET });
let viewerToken: string;

beforeAll(async () => {
  const { databaseUrl, kafkaBrokers } = testServers();
  database = await createTestDatabase(databaseUrl, 'console');
  pool = new pg.Pool({ connectionString: database.url, max: 2 });
  const prefix = `${uniqueName('console')}.`;
  const common = {
    DATABASE_URL: database.url,
    KAFKA_BROKERS: kafkaBrokers.join(','),
    SLUICE_ACCESS_SECRET: SECRET,
    // A key for this test alone: shop-api seals personal fields, the projector opens them.
    SLUICE_MASTER_KEY: 'c0501e00'.repeat(8),
  };
  const apiPort = await freePort();
  api = `http://127.0.0.1:${apiPort}`;
  start('shop-api', { ...common, API_PORT: String(apiPort), SHOP_AUTH: 'off' });
  await waitFor(async () => (await fetch(`${api}/readyz`).catch(() => undefined))?.status === 200, {
    timeoutMs: 30_000,
    message: 'shop-api ready',
  });
  const slot = uniqueName('console_slot');
  const relay = start('relay', {
    ...common,
    RELAY_SLOT: slot,
    RELAY_PUBLICATION: uniqueName('console_pub'),
    RELAY_TOPIC_PREFIX: prefix,
    RELAY_METRICS_PORT: '0',
  });
  const projector = start('projector', {
    ...common,
    PROJECTOR_MODULES: join(rootDir, 'packages', 'shop-views', 'dist', 'index.js'),
    PROJECTOR_TOPIC_PREFIX: prefix,
    PROJECTOR_GROUP_PREFIX: `${prefix}g.`,
    PROJECTOR_METRICS_PORT: '0',
    PROJECTOR_SESSION_TIMEOUT_MS: '6000',
    PROJECTOR_MAX_ATTEMPTS: '1',
    // The projector never sees the rebuild this file starts, so it cannot catch up and swap
    // before the console cancels it (audit_log holds a handful of events).
    PROJECTOR_GENERATION_POLL_MS: '3600000',
  });
  usersDir = mkdtempSync(join(tmpdir(), 'sluice-console-'));
  const usersFile = join(usersDir, 'users.jsonl');
  const users = [
    { name: 'ada', role: 'operator', passwordHash: await hashPassword(PASSWORD) },
    { name: 'vic', role: 'viewer', passwordHash: await hashPassword(PASSWORD) },
  ];
  writeFileSync(usersFile, users.map((user) => JSON.stringify(user)).join('\n'));
  consoleProcess = start('console', {
    ...common,
    SLUICE_ACCESS_USERS_FILE: usersFile,
    CONSOLE_PORT: '0',
    CONSOLE_RELAY_URLS: await addressOf(relay, 'metrics listening'),
    CONSOLE_PROJECTOR_URLS: await addressOf(projector, 'metrics listening'),
    CONSOLE_API_URLS: api,
    CONSOLE_TOPIC_PREFIX: prefix,
    CONSOLE_GROUP_PREFIX: `${prefix}g.`,
    CONSOLE_SLOT: slot,
    CONSOLE_SAMPLE_MS: '500',
  });
  consoleUrl = await addressOf(consoleProcess, 'console listening');
  viewerToken = await access.issueToken({ subject: 'vic', role: 'viewer' }, 600);
  await waitFor(() => projector.output().includes('"msg":"consuming"'), {
    timeoutMs: 60_000,
    message: 'the projector to consume',
  });
});

afterAll(async () => {
  for (const child of children) child.kill();
  await Promise.all(children.map((child) => child.exited));
  await pool.end();
  await database.drop();
  rmSync(usersDir, { recursive: true, force: true });
});

async function call(
  path: string,
  init: { token?: string; cookie?: string; method?: string; body?: unknown } = {},
) {
  const headers: Record<string, string> = {};
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  if (init.cookie !== undefined) headers.cookie = init.cookie;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${consoleUrl}${path}`, {
    method: init.method ?? 'GET',
    headers,
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    json: (text === '' ? undefined : JSON.parse(text)) as Record<string, unknown>,
  };
}

async function post(path: string, body: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(`${api}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return (await response.json()) as Record<string, unknown>;
}

async function operatorCookie(): Promise<string> {
  const login = await call('/api/session', {
    method: 'POST',
    body: { name: 'ada', password: PASSWORD },
  });
  expect(login.status).toBe(200);
  return (login.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
}

describe('credentials', () => {
  it('refuses a request without one, and a forged token, with 401', async () => {
    const none = await call('/api/overview');
    expect([none.status, none.json.code]).toEqual([401, 'unauthenticated']);
    const forged = await createAccess({ secret: `${SECRET}-not-ours` }).issueToken(
      { subject: 'eve', role: 'operator' },
      600,
    );
    const refused = await call('/api/overview', { token: forged });
    expect([refused.status, refused.json.code]).toEqual([401, 'unauthenticated']);
    expect(refused.json.message).toEqual(expect.any(String));
  });

  it('lets a viewer read and refuses a viewer’s action with 403', async () => {
    expect((await call('/api/overview', { token: viewerToken })).status).toBe(200);
    const action = await call('/api/parked/redrive', {
      token: viewerToken,
      method: 'POST',
      body: { projection: 'cart_summary', aggregateType: 'cart', aggregateId: 'x', reason: 'try' },
    });
    expect([action.status, action.json.code]).toEqual([403, 'forbidden']);
  });

  it('signs an operator in from the users file with a session cookie; a wrong password gets 401', async () => {
    const login = await call('/api/session', {
      method: 'POST',
      body: { name: 'ada', password: PASSWORD },
    });
    expect(login.json).toEqual({ subject: 'ada', role: 'operator' });
    const cookie = login.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/^sluice_session=[^;]+;/);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).toMatch(/Path=\//);
    expect(cookie).not.toMatch(/Secure/);
    const me = await call('/api/me', { cookie: cookie.split(';')[0] ?? '' });
    expect(me.json).toEqual({ subject: 'ada', role: 'operator' });
    const wrong = await call('/api/session', {
      method: 'POST',
      body: { name: 'ada', password: 'nope' },
    });
    expect([wrong.status, wrong.json.code]).toEqual([401, 'access_denied']);
  });

  it('refuses to start without a secret, in one line, exit 78', async () => {
    const env = { ...process.env, SLUICE_ACCESS_SECRET: '', SLUICE_ACCESS_USERS_FILE: '' };
    const refused = start('console', env);
    expect(await refused.exited).toBe(78);
    expect(refused.output().trim().split('\n')).toEqual([
      expect.stringContaining('SLUICE_ACCESS_SECRET'),
    ]);
  });
});

describe('reads', () => {
  it('shows every stage, one per projection, and the partitions’ lag moving with new events', async () => {
    const { rows } = await pool.query<{ projection: string }>(
      "SELECT projection FROM sluice.projection_generations WHERE state = 'active' ORDER BY 1",
    );
    expect(rows.length).toBeGreaterThan(0);
    type Stage = { stage: string; name: string; status: string };
    const projectionStages = (stages: Stage[]) =>
      stages
        .filter((s) => s.stage === 'projection')
        .map((s) => s.name)
        .sort();
    // A sample taken while the projector was starting may lack its projections: wait for the next.
    const stages = await waitFor(
      async () => {
        const found = (await call('/api/overview', { token: viewerToken })).json.stages as Stage[];
        return projectionStages(found).length === rows.length ? found : undefined;
      },
      { timeoutMs: 5000, message: 'a stage per projection' },
    );
    expect(projectionStages(stages)).toEqual(rows.map((r) => r.projection));
    expect(new Set(stages.map((s) => s.stage))).toEqual(
      new Set(['api', 'outbox', 'slot', 'relay', 'kafka', 'projection']),
    );

    const cartPartitions = async () => {
      const { projections } = (await call('/api/projections', { token: viewerToken })).json as {
        projections: {
          name: string;
          partitions: { endOffset: number; checkpoint: number | null; lag: number }[];
        }[];
      };
      return projections.find((p) => p.name === 'cart_summary')?.partitions ?? [];
    };
    const ends = (partitions: { endOffset: number }[]) =>
      partitions.reduce((n, p) => n + p.endOffset, 0);
    const before = ends(await cartPartitions());
    const customer = await post('/customers', { email: 'console@example.com', name: 'C' });
    await post('/carts', { customerId: customer.id });
    const after = await waitFor(
      async () => {
        const partitions = await cartPartitions();
        return ends(partitions) > before && partitions.every((p) => p.lag === 0)
          ? partitions
          : undefined;
      },
      { timeoutMs: 20_000, message: 'the cart topic to grow and the projection to catch up' },
    );
    expect(after.some((p) => p.checkpoint !== null && p.checkpoint > 0)).toBe(true);
  });

  it('lists a poisoned record, and an operator’s redrive is audited under their name', async () => {
    const customer = await post('/customers', { email: 'poison@example.com', name: 'P' });
    const cartId = String((await post('/carts', { customerId: customer.id })).id);
    await injectInvalidEvent(cartId);
    const parked = await waitFor(
      async () => {
        const { json } = await call(`/api/parked?projection=cart_summary&aggregateId=${cartId}`, {
          token: viewerToken,
        });
        return (json.items as unknown[]).length > 0 ? json : undefined;
      },
      { timeoutMs: 20_000, message: 'the poisoned record to be parked' },
    );
    expect((parked.items as unknown[])[0]).toMatchObject({
      projection: 'cart_summary',
      aggregateType: 'cart',
      aggregateId: cartId,
      errorClass: 'schema_invalid',
      eventType: 'cart.item_added.v1',
      masked: false,
      payload: { cartId, quantity: 0 },
    });
    expect(parked.groups).toEqual([
      expect.objectContaining({ aggregateId: cartId, count: 1, errorClass: 'schema_invalid' }),
    ]);

    const cookie = await operatorCookie();
    const redrive = await call('/api/parked/redrive', {
      cookie,
      method: 'POST',
      body: {
        projection: 'cart_summary',
        aggregateType: 'cart',
        aggregateId: cartId,
        reason: 'checking the fix',
      },
    });
    expect(redrive).toMatchObject({ status: 200, json: { applied: 0, parked: 1 } });
    const audit = await pool.query<{ actor: string; reason: string }>(
      "SELECT actor, reason FROM sluice.operator_audit WHERE target->>'aggregateId' = $1 OR target::text LIKE $2",
      [cartId, `%${cartId}%`],
    );
    expect(audit.rows).toEqual([{ actor: 'ada', reason: 'checking the fix' }]);
    const listed = (await call('/api/audit?limit=5', { token: viewerToken })).json.items as {
      actor: string;
    }[];
    expect(listed[0]).toMatchObject({ actor: 'ada', reason: 'checking the fix' });
  });

  // After the test before: its poisoned cart is the one aggregate parked as schema_invalid.
  it('redrives every aggregate matching a filter, and starts and cancels a rebuild', async () => {
    const cookie = await operatorCookie();
    const matching = await call('/api/parked/redrive-matching', {
      cookie,
      method: 'POST',
      body: { projection: 'cart_summary', errorClass: 'schema_invalid', reason: 'all of them' },
    });
    expect(matching).toMatchObject({ status: 200, json: { aggregates: 1, applied: 0, parked: 1 } });
    const started = await call('/api/projections/audit_log/rebuild', {
      cookie,
      method: 'POST',
      body: { reason: 'new column' },
    });
    expect(started).toMatchObject({ status: 202, json: { generation: 2 } });
    const cancelled = await call('/api/projections/audit_log/rebuild', {
      cookie,
      method: 'DELETE',
    });
    expect(cancelled).toMatchObject({ status: 200, json: { generation: 2, state: 'cancelled' } });
    const { rows } = await pool.query<{ actor: string; action: string; reason: string | null }>(
      "SELECT actor, action, reason FROM sluice.operator_audit WHERE projection = 'audit_log' ORDER BY id",
    );
    expect(rows.map((row) => [row.actor, row.reason])).toEqual([
      ['ada', 'new column'],
      ['ada', 'cancelled from the console'],
    ]);
  });

  it('streams an overview event within 5 s', async () => {
    const controller = new AbortController();
    const response = await fetch(`${consoleUrl}/api/stream`, {
      headers: { authorization: `Bearer ${viewerToken}` },
      signal: AbortSignal.any([controller.signal, AbortSignal.timeout(5000)]),
    });
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    while (!/event: overview\ndata: \{.*"stages"/.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    controller.abort();
    expect(text).toMatch(/event: overview\ndata: \{.*"stages"/);
  });
});

describe('stop', () => {
  it('stops on SIGTERM within 5 s while a stream is open, ending the stream', async () => {
    const response = await fetch(`${consoleUrl}/api/stream`, {
      headers: { authorization: `Bearer ${viewerToken}` },
    });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const ended = (async () => {
      while (!(await reader.read()).done) {
        // Reading on until the console ends the stream.
      }
    })();
    consoleProcess.kill('SIGTERM');
    const exit = await Promise.race([
      consoleProcess.exited,
      new Promise((done) => setTimeout(done, 5000, 'still running')),
    ]);
    expect(exit).toBe(0);
    await ended;
  });
});

/** Appends a cart event with an invalid payload, as a writer bypassing the catalog would. */
async function injectInvalidEvent(cartId: string): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ version: string }>(
      'UPDATE shop.carts SET version = version + 1 WHERE id = $1 RETURNING version::text',
      [cartId],
    );
    const version = Number(rows[0]?.version);
    await client.query(
      "UPDATE shop.outbox_heads SET version = $2 WHERE aggregate_type = 'cart' AND aggregate_id = $1",
      [cartId, version],
    );
    await client.query(
      `INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload)
       VALUES (gen_random_uuid(), 'cart', $1, $2, 'cart.item_added.v1', $3::jsonb)`,
      [
        cartId,
        version,
        JSON.stringify({ cartId, productId: cartId, quantity: 0, unitPriceCents: 1 }),
      ],
    );
    await client.query('COMMIT');
  } finally {
    client.release();
  }
}
