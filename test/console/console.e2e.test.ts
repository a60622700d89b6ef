// The console's pages in Chromium over the real pipeline (shop-api, relay, projector, console):
// viewers read and cannot act; an operator watches writes move the overview, redrives a poisoned
// cart from the dead-letters page once its cause is fixed, rebuilds a projection and follows an
// event's journey through every stage. A screenshot of each page lands in screenshots/.
import { freePort, waitFor } from '@sluice/testkit';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  chromium,
  type Browser,
  type BrowserContext,
  type Locator,
  type Page,
} from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import {
  listeningAddress,
  startService,
  startedServices,
  type ServiceProcess,
} from '../support/services.js';

const here = dirname(fileURLToPath(import.meta.url));
const rootDir = resolve(here, '..', '..');
const screenshots = join(here, 'screenshots');
const SECRET = 'console-e2e-secret-0123456789abcdef0123456789';
const USERS = { operator: 'olga', viewer: 'vic' } as const;
const PASSWORDS = { olga: 'operator-pass-1', vic: 'viewer-pass-1' } as const;
const TRACE_UI = 'http://127.0.0.1:16686';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let pipeline: Pipeline;
let projector: ServiceProcess;
let consoleService: ServiceProcess | undefined;
let consoleUrl: string;
let browser: Browser;
const scratch = mkdtempSync(join(tmpdir(), 'console-e2e-'));

/** A users file with an operator and a viewer, hashed by `sluice-access hash-password`. */
function usersFile(): string {
  const cli = join(rootDir, 'packages', 'access', 'dist', 'cli.js');
  const lines = Object.entries(USERS).map(([role, name]) =>
    execFileSync(process.execPath, [cli, 'hash-password', '--name', name, '--role', role], {
      input: PASSWORDS[name],
    }).toString(),
  );
  const file = join(scratch, 'users.jsonl');
  writeFileSync(file, lines.join(''));
  return file;
}

/** The slot the pipeline's relay created in its database. */
function relaySlot(): Promise<string> {
  return waitFor(
    async () =>
      (
        await pipeline.pool.query<{ slot_name: string }>(
          'SELECT slot_name FROM pg_replication_slots WHERE database = current_database()',
        )
      ).rows[0]?.slot_name,
    { timeoutMs: 30_000, message: 'the relay’s slot' },
  );
}

async function startConsole(): Promise<string> {
  const port = await freePort();
  const relay = startedServices().find((service) => service.name === 'relay');
  const relayUrl = relay === undefined ? undefined : listeningAddress(relay);
  consoleService = startService('console', {
    CONSOLE_PORT: String(port),
    DATABASE_URL: String(pipeline.pool.options.connectionString),
    KAFKA_BROKERS: pipeline.kafkaBrokers.join(','),
    CONSOLE_RELAY_URLS: relayUrl ?? '',
    CONSOLE_PROJECTOR_URLS: listeningAddress(projector) ?? '',
    CONSOLE_API_URLS: pipeline.base,
    CONSOLE_TOPIC_PREFIX: pipeline.topicPrefix,
    CONSOLE_GROUP_PREFIX: pipeline.groupPrefix,
    CONSOLE_SLOT: await relaySlot(),
    CONSOLE_SAMPLE_MS: '500',
    CONSOLE_TRACE_URL: `${TRACE_UI}/trace/{traceId}`,
    SLUICE_ACCESS_SECRET: SECRET,
    SLUICE_ACCESS_USERS_FILE: usersFile(),
  });
  await consoleService.waitForOutput('"msg":"console listening"', {
    timeoutMs: 30_000,
    message: 'the console to listen',
  });
  return `http://127.0.0.1:${port}`;
}

beforeAll(async () => {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  pipeline = await startPipeline('pconsole');
  projector = pipeline.startProjector({ SLUICE_ACCESS_SECRET: SECRET });
  await projector.waitForOutput('"msg":"consuming"', {
    timeoutMs: 60_000,
    message: 'the projector to consume',
  });
  consoleUrl = await startConsole();
  mkdirSync(screenshots, { recursive: true });
});

afterAll(async () => {
  consoleService?.kill('SIGKILL');
  await consoleService?.exited();
  await pipeline.close();
  await browser.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** A browser context signed in as `name`; `withoutStream` makes every /api/stream request fail. */
async function logIn(
  name: 'olga' | 'vic',
  options: { withoutStream?: boolean } = {},
): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  if (options.withoutStream === true) await context.route('**/api/stream', (r) => r.abort());
  const page = await context.newPage();
  await page.goto(consoleUrl);
  await page.getByTestId('login-name').fill(name);
  await page.getByTestId('login-password').fill(PASSWORDS[name]);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('user').waitFor();
  return { context, page };
}

async function open(page: Page, name: string): Promise<void> {
  await page.getByTestId(`nav-${name}`).click();
  await page.getByTestId(`page-${name}`).waitFor();
}

async function shoot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
}

/** Opens a cart of a new customer with one item, and returns the cart's id. */
async function cartWithItem(customerId: string, productId: unknown): Promise<string> {
  const cart = String((await pipeline.post('/carts', { customerId })).id);
  await pipeline.post(`/carts/${cart}/items`, { productId, quantity: 1 });
  return cart;
}

/** Confirms the open dialog with `reason`. */
async function confirm(page: Page, reason: string): Promise<void> {
  await page.getByTestId('confirm-reason').fill(reason);
  await page.getByTestId('confirm-submit').click();
}

/** The text of the action's result, once it starts with `start`. */
async function result(scope: Page | Locator, start: RegExp): Promise<string | null> {
  const shown = scope.getByTestId('action-result').filter({ hasText: start });
  await shown.waitFor();
  return shown.textContent();
}

/** Waits until the parked page has refreshed its list `count` times. */
async function refreshesOfParked(page: Page, count: number): Promise<void> {
  for (let i = 0; i < count; i += 1) {
    await page.waitForResponse((response) => /\/api\/parked\?/.test(response.url()), {
      timeout: 15_000,
    });
  }
}

/** The view refuses every cart of `customerId`, as a handler bug would; returns the fix. */
async function refuseCartsOf(customerId: string): Promise<() => Promise<unknown>> {
  await pipeline.pool.query(`
    CREATE OR REPLACE FUNCTION views.refuse_cart() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'cart % refused', NEW.cart_id; END $$;
    CREATE TRIGGER refuse_cart BEFORE INSERT OR UPDATE ON views.cart_summaries_g1
      FOR EACH ROW WHEN (NEW.customer_id = '${customerId}') EXECUTE FUNCTION views.refuse_cart()`);
  return () => pipeline.pool.query('DROP TRIGGER refuse_cart ON views.cart_summaries_g1');
}

describe('the console in a browser', () => {
  it('says so on a wrong password, and keeps a viewer’s pages live by polling without the stream', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(consoleUrl);
    await page.getByTestId('login-name').fill('vic');
    await page.getByTestId('login-password').fill('not the password');
    await page.getByTestId('login-submit').click();
    await expect(page.getByTestId('login-error').textContent()).resolves.toContain('Wrong name');
    await shoot(page, 'login');
    await context.close();

    const viewer = await logIn('vic', { withoutStream: true });
    await expect(viewer.page.getByTestId('role').textContent()).resolves.toBe('viewer');
    await viewer.page.getByTestId('live-mode').filter({ hasText: 'polling' }).waitFor();
    const updated = viewer.page.getByTestId('overview-at');
    const first = await updated.textContent();
    await waitFor(async () => (await updated.textContent()) !== first, {
      timeoutMs: 10_000,
      message: 'the overview to update by polling',
    });
    await open(viewer.page, 'projections');
    await viewer.page.getByTestId('projection-cart_summary').waitFor();
    expect(await viewer.page.getByRole('button').allTextContents()).toEqual(['Log out']);
    await viewer.page.getByTestId('logout').click();
    await viewer.page.getByTestId('login-form').waitFor();
    await viewer.context.close();
  });

  it('shows writes moving the overview live, and the relay and alerts pages', async () => {
    const { context, page } = await logIn('olga');
    await expect(page.getByTestId('role').textContent()).resolves.toBe('operator');
    const updated = page.getByTestId('overview-at');
    await updated.waitFor();
    const first = await updated.textContent();
    const customer = await pipeline.post('/customers', { email: 'flow@example.com', name: 'F' });
    const product = await pipeline.post('/products', {
      sku: 'FLOW-1',
      name: 'F',
      priceCents: 100,
      stock: 100_000,
    });
    const rates = page.locator('[data-testid^=stage-projection-] [data-testid=throughput]');
    await waitFor(
      async () => {
        await cartWithItem(String(customer.id), product.id);
        const moving = (await rates.allTextContents()).some((rate) => /[1-9]/.test(rate));
        return moving && (await updated.textContent()) !== first;
      },
      { timeoutMs: 30_000, intervalMs: 200, message: 'the projections’ throughput to move' },
    );
    await expect(page.getByTestId('live-mode').textContent()).resolves.toBe('live');
    // The latency quantiles need a histogram that grew within the window: wait for one.
    await waitFor(
      async () => /\d (ms|s)$/.test((await page.getByTestId('latency-p50').textContent()) ?? ''),
      { timeoutMs: 30_000, intervalMs: 200, message: 'the end-to-end latency to show' },
    );
    await shoot(page, 'overview');
    copyFileSync(join(screenshots, 'overview.png'), join(rootDir, 'docs', 'console-overview.png'));

    await open(page, 'relay');
    await expect(page.getByTestId('slot-wal-status').textContent()).resolves.toMatch(/\w/);
    await expect(page.getByTestId('relay-row').first().textContent()).resolves.toContain('leading');
    await shoot(page, 'relay');
    await open(page, 'alerts');
    await page.getByTestId('alert-rule').first().waitFor();
    await shoot(page, 'alerts');
    await context.close();
  });

  it('parks poisoned carts, hides actions from a viewer, and redrives them from the page once fixed', async () => {
    const owner = String(
      (await pipeline.post('/customers', { email: 'refused@example.com', name: 'R' })).id,
    );
    const product = await pipeline.post('/products', {
      sku: 'POISON-C',
      name: 'P',
      priceCents: 500,
      stock: 1000,
    });
    const fix = await refuseCartsOf(owner);
    const [one, two] = [
      await cartWithItem(owner, product.id),
      await cartWithItem(owner, product.id),
    ];
    const groupOf = (page: Page, cart: string) =>
      page.locator(`[data-testid=parked-group][data-aggregate-id="${cart}"]`).first();

    const viewer = await logIn('vic');
    await open(viewer.page, 'parked');
    await groupOf(viewer.page, two).waitFor({ timeout: 60_000 });
    await groupOf(viewer.page, one).click();
    await expect(viewer.page.getByTestId('record-error').first().textContent()).resolves.toContain(
      'refused',
    );
    expect(await viewer.page.getByRole('button').allTextContents()).toEqual(['Log out']);
    const refused = await viewer.context.request.post(`${consoleUrl}/api/parked/redrive`, {
      data: { projection: 'cart_summary', aggregateType: 'cart', aggregateId: one, reason: 'r' },
    });
    expect(refused.status()).toBe(403);
    await viewer.context.close();

    const { context, page } = await logIn('olga');
    await open(page, 'parked');
    await groupOf(page, one).click();
    await page.getByTestId('skip').first().click();
    await page.getByTestId('confirm-submit').click();
    expect(await page.getByTestId('confirm-dialog').isVisible()).toBe(true);
    await page.getByRole('button', { name: 'Cancel' }).click();
    await shoot(page, 'parked');

    await fix();
    await groupOf(page, one).getByTestId('redrive').click();
    await confirm(page, 'trigger dropped');
    await expect(result(page, /^Redrive:/)).resolves.toMatch(
      /^Redrive: [1-9]\d* applied, 0 still parked\.$/,
    );
    await page.getByTestId('filter-projection').fill('cart_summary');
    await refreshesOfParked(page, 2);
    await expect(page.getByTestId('filter-projection').inputValue()).resolves.toBe('cart_summary');
    await page.getByTestId('filter-projection').press('Enter');
    await page.getByTestId('redrive-matching').click();
    await confirm(page, 'trigger dropped');
    await expect(result(page, /^Redrive of/)).resolves.toMatch(
      /^Redrive of [1-9]\d* aggregate\(s\): [1-9]\d* applied, 0 still parked\.$/,
    );
    await page.getByTestId('parked-empty').waitFor();
    await pipeline.expectCartSummariesConverge(30_000);
    await context.close();
  });

  it('rebuilds a projection from its page and follows an event through every stage', async () => {
    const { context, page } = await logIn('olga');
    await open(page, 'projections');
    const card = page.getByTestId('projection-cart_summary');
    await card.getByTestId('rebuild').click();
    await confirm(page, 'new column');
    const started = await result(card, /^Rebuild started/);
    const generation = /generation (\d+)/.exec(started ?? '')?.[1];
    expect(generation).toMatch(/^\d+$/);
    await card
      .getByTestId('generation')
      .filter({ hasText: `${generation} (active)` })
      .waitFor({ timeout: 60_000 });
    await shoot(page, 'projections');

    const customer = await pipeline.post('/customers', { email: 'journey@example.com', name: 'J' });
    const product = await pipeline.post('/products', {
      sku: 'JOURNEY-1',
      name: 'J',
      priceCents: 200,
      stock: 10,
    });
    const cart = await cartWithItem(String(customer.id), product.id);
    await open(page, 'journey');
    const states = async (testId: string) =>
      Promise.all(
        (await page.locator(`[data-testid=journey-event] [data-testid=${testId}]`).all()).map(
          (item) => item.getAttribute('data-state'),
        ),
      );
    await waitFor(
      async () => {
        await page.getByTestId('journey-query').fill(cart);
        await page.getByTestId('journey-search').click();
        await page
          .getByTestId('journey-event')
          .first()
          .or(page.getByTestId('journey-empty'))
          .waitFor();
        const applied = await states('journey-projection');
        return applied.length >= 2 && applied.every((state) => state === 'applied');
      },
      {
        timeoutMs: 30_000,
        intervalMs: 500,
        message: 'the cart’s events applied by every projection',
      },
    );
    expect(await page.getByTestId('journey-event').count()).toBe(2);
    expect(await states('journey-published')).toEqual(['published', 'published']);
    expect(await states('journey-committed')).toEqual(['committed', 'committed']);
    const traceLinks = await page.getByTestId('journey-trace').all();
    expect(traceLinks).toHaveLength(2);
    for (const link of traceLinks) {
      const traceId = (await link.textContent()) ?? '';
      expect(traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(await link.getAttribute('href')).toBe(`${TRACE_UI}/trace/${traceId}`);
    }
    await shoot(page, 'journey');
    await context.close();
  });
});
