// shop-api's HTTP app twice in one process, for the privacy workload of the api-writes benchmark:
// `on` seals the shop's protected fields as services/shop-api does; `off` encrypts nothing and
// makes or reads no subject key, but lays each personal field out as an envelope of the same
// length (the outbox accepts personal fields only in that form), so the two differ by the keys
// and the cipher alone. shop-api has no switch to turn sealing off, so the `off` variant exists
// only here; both run the built app (services/shop-api/dist/app.js) on one database pool. The
// benchmark drives one variant at a time, so the process's CPU over a run is that variant's.
//
//   node test/dist/bench/privacy-cost.js    (built by `pnpm -s build`; api-writes.ts starts it)
//
// Environment: DATABASE_URL (migrated here), DATABASE_POOL_SIZE (default 20), SHOP_AUTH_SECRET,
// SLUICE_MASTER_KEY. Prints `{"on":<port>,"off":<port>}` on stdout once both listen on
// 127.0.0.1; closes both on SIGTERM or SIGINT.
import { createDatabase, migrate } from '@sluice/database';
import {
  createPrivacy,
  loadMasterKeys,
  type MasterKeys,
  type Privacy,
  type Queryable,
} from '@sluice/privacy';
import { shopProtectedFields } from '@sluice/shop-catalog';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from './support.js';

/** What this process takes from the built shop-api; it is no dependency of the tests' package. */
interface ShopApiBuild {
  buildApp(options: {
    db: unknown;
    logger: Logger;
    consistencyTokenSecret: Uint8Array;
    auth: { mode: 'jwt'; key: Uint8Array; adminScope: string };
    privacy: Privacy;
    masterKeys: MasterKeys;
  }): { listen(options: { port: number; host: string }): Promise<string>; close(): Promise<void> };
  shopMigrations: Parameters<typeof migrate>[2];
}

interface Logger {
  level: string;
  [method: string]: unknown;
}

/** A logger as Fastify takes one: warnings and errors to stderr, the rest dropped. */
function stderrLogger(): Logger {
  const write = (level: string) => (object: unknown, message?: string) =>
    process.stderr.write(`${level} ${message ?? ''} ${JSON.stringify(object)}\n`);
  const quiet = () => undefined;
  const logger: Logger = {
    level: 'warn',
    fatal: write('fatal'),
    error: write('error'),
    warn: write('warn'),
    info: quiet,
    debug: quiet,
    trace: quiet,
    silent: quiet,
    child: () => logger,
  };
  return logger;
}

/** The initialisation vector of the `off` variant's envelopes, which are not encrypted. */
const UNENCRYPTED_IV = Buffer.alloc(12).toString('base64url');

/** `text` in clear, laid out as a sealed field of `subject` and as long (16 bytes for a tag). */
const unencrypted = (subject: string, text: string) =>
  ['sluice:enc:v1', Buffer.from(subject), UNENCRYPTED_IV, Buffer.from(`${text}${'\0'.repeat(16)}`)]
    .map((part) => (typeof part === 'string' ? part : part.toString('base64url')))
    .join(':');

/** Privacy off: personal fields {@link unencrypted}, no subject key made or read. */
function privacyOff(keys: MasterKeys): Privacy {
  const lay = <E extends { type: string; payload: unknown }>(event: E): E => {
    const spec = shopProtectedFields[event.type];
    const payload = { ...(event.payload as Record<string, unknown>) };
    const subject = spec === undefined ? undefined : payload[spec.subject];
    if (spec === undefined || typeof subject !== 'string') return event;
    for (const field of spec.fields) {
      const value = payload[field];
      if (typeof value === 'string') payload[field] = unencrypted(subject, value);
    }
    return { ...event, payload };
  };
  return {
    ...createPrivacy({ keys, fields: {} }),
    sealEvents: <E extends { type: string; payload: unknown }>(
      _db: Queryable,
      events: readonly E[],
    ) => Promise.resolve(events.map(lay)),
  };
}

async function load(file: string): Promise<object> {
  const url = pathToFileURL(join(repoRoot(), 'services', 'shop-api', 'dist', file)).href;
  return import(url) as Promise<object>;
}

const required = (name: string) => {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`${name} must be set`);
  return value;
};

const build = { ...(await load('app.js')), ...(await load('migrations.js')) } as ShopApiBuild;
const db = createDatabase({
  url: required('DATABASE_URL'),
  maxConnections: Number(process.env.DATABASE_POOL_SIZE ?? 20),
  applicationName: 'shop-api',
});
await migrate(db, 'shop_api_migrations', build.shopMigrations);
const keys = loadMasterKeys();
const common = {
  db,
  logger: stderrLogger(),
  consistencyTokenSecret: randomBytes(32),
  masterKeys: keys,
  auth: {
    mode: 'jwt' as const,
    key: Buffer.from(required('SHOP_AUTH_SECRET')),
    adminScope: 'admin',
  },
};
const apps = {
  on: build.buildApp({ ...common, privacy: createPrivacy({ keys, fields: shopProtectedFields }) }),
  off: build.buildApp({ ...common, privacy: privacyOff(keys) }),
};
const portOf = (address: string) => Number(new URL(address).port);
const ports = {
  on: portOf(await apps.on.listen({ port: 0, host: '127.0.0.1' })),
  off: portOf(await apps.off.listen({ port: 0, host: '127.0.0.1' })),
};
process.stdout.write(`${JSON.stringify(ports)}\n`);

let closing = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (closing) return;
    closing = true;
    void Promise.all([apps.on.close(), apps.off.close()])
      .then(() => db.destroy())
      .finally(() => process.exit(0));
  });
}
