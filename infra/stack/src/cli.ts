// `pnpm stack:up|down|status` and the README's start command (`run`).
import { SluiceError, isSluiceError, errorMessage } from '@sluice/errors';
import { parseBrokers } from '@sluice/kafka';
import { checkKafka, checkPostgres } from '@sluice/preflight';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { devAccess } from './dev-access.js';
import {
  createEmbeddedStack,
  ensureMasterKeyFile,
  type EmbeddedStack,
  type KafkaNodeStatus,
  type KafkaSecureEndpoint,
} from './embedded-stack.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SERVICES = ['shop-api', 'relay', 'projector', 'console'] as const;
/** Each service's command-line operands: the projector runs the shop's projections. */
const OPERANDS: Partial<Record<(typeof SERVICES)[number], string[]>> = {
  projector: [join(rootDir, 'packages', 'shop-views', 'dist', 'index.js')],
};

const say = (message: string) => process.stderr.write(`stack: ${message}\n`);

const externalDatabase = process.env.DATABASE_URL || undefined;
const externalBrokers = process.env.KAFKA_BROKERS || undefined;
/** The embedded servers this command uses: those the environment does not point elsewhere. */
const parts = { postgres: externalDatabase === undefined, kafka: externalBrokers === undefined };

/** A port from the environment with `after` more ports after it (Kafka's nodes take three each). */
function envPort(name: string, after = 0): number | undefined {
  const text = process.env[name];
  if (!text) return undefined;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535 - after) {
    throw new SluiceError(
      'invalid_port',
      `${name}=${text} is not a TCP port (1–${65535 - after}).`,
    );
  }
  return port;
}

/** Kafka nodes: `--brokers <n>` after the command, else SLUICE_KAFKA_NODES; 1 or 3. */
function kafkaNodes(args: readonly string[]): number | undefined {
  const flag = args.indexOf('--brokers');
  const text = flag === -1 ? process.env.SLUICE_KAFKA_NODES || undefined : args[flag + 1];
  if (text === undefined) return undefined;
  if (text !== '1' && text !== '3') {
    throw new SluiceError(
      'invalid_kafka_nodes',
      `The embedded Kafka runs 1 node or a cluster of 3 (--brokers / SLUICE_KAFKA_NODES), not ${text}.`,
    );
  }
  return Number(text);
}

function stackFromEnv(args: readonly string[]): EmbeddedStack {
  const nodes = kafkaNodes(args);
  const postgresPort = envPort('SLUICE_PG_PORT');
  const kafkaPort = envPort('SLUICE_KAFKA_PORT', 3 * (nodes ?? 1) - 1);
  return createEmbeddedStack({
    rootDir,
    ...(nodes === undefined ? {} : { kafkaNodes: nodes }),
    ...(process.env.SLUICE_KAFKA_VERSION ? { kafkaVersion: process.env.SLUICE_KAFKA_VERSION } : {}),
    ...(process.env.SLUICE_STACK_DIR ? { stateDir: process.env.SLUICE_STACK_DIR } : {}),
    ...(process.env.PG_BIN_DIR ? { postgresBinDir: process.env.PG_BIN_DIR } : {}),
    ...(postgresPort === undefined ? {} : { postgresPort }),
    ...(kafkaPort === undefined ? {} : { kafkaPort }),
    log: say,
  });
}

async function up(
  stack: EmbeddedStack,
  options: { keep: boolean; signal?: AbortSignal },
): Promise<{ databaseUrl: string; kafkaBrokers: string }> {
  if (!parts.postgres) say('DATABASE_URL is set: not starting the embedded PostgreSQL');
  if (!parts.kafka) say('KAFKA_BROKERS is set: not starting the embedded Kafka');
  const endpoints = await stack.up(parts, options);
  const databaseUrl = externalDatabase ?? endpoints.databaseUrl;
  const kafkaBrokers = externalBrokers ?? endpoints.kafkaBrokers.join(',');
  await Promise.all([checkPostgres(databaseUrl), checkKafka(parseBrokers(kafkaBrokers))]);
  say('up');
  process.stdout.write(`export DATABASE_URL=${databaseUrl} KAFKA_BROKERS=${kafkaBrokers}\n`);
  return { databaseUrl, kafkaBrokers };
}

/** Each Kafka node and its ports: client, KRaft controller and SASL_SSL, three in a row per node. */
function kafkaNodeLines(nodes: readonly KafkaNodeStatus[]): string {
  return nodes
    .map(
      (node) =>
        `          node ${node.nodeId}: ${node.running ? `running (pid ${node.pid})` : 'stopped'}, ` +
        `client ${node.port}, controller ${node.controllerPort}, SASL_SSL ${node.secureBrokers.join(',')}\n`,
    )
    .join('');
}

/** Where `pnpm stack:status` says Kafka's SASL_SSL listener is, and what a client needs. */
function secureKafkaLines(secure: KafkaSecureEndpoint): string {
  return (
    `          SASL_SSL ${secure.brokers.join(',')} (SCRAM-SHA-256/512, user ${secure.username}); ` +
    `CA ${secure.caFile}, password in ${secure.passwordFile}\n`
  );
}

async function status(stack: EmbeddedStack): Promise<number> {
  const current = await stack.status();
  const probe = async (check: () => Promise<unknown>) => {
    try {
      await check();
      return 'up';
    } catch (error) {
      return `down (${errorMessage(error)})`;
    }
  };
  const postgres = await probe(() =>
    checkPostgres(current.databaseUrl, { connectTimeoutMs: 2000 }),
  );
  const kafka = await probe(() => checkKafka(current.kafkaBrokers, { connectTimeoutMs: 2000 }));
  const owner =
    current.owner === undefined
      ? 'none (the next `npm start` adopts and stops it)'
      : 'kept' in current.owner
        ? 'kept (`pnpm stack:up`; `pnpm stack:down` stops it)'
        : `process ${current.owner.pid} (stops it when it exits)`;
  process.stdout.write(
    `postgres: ${postgres} ${current.databaseUrl} (data ${current.postgres.dataDir})\n` +
      `          TLS on, plaintext accepted too; CA ${current.postgres.caFile} ` +
      '(add ?sslmode=verify-full&sslrootcert=<CA> to DATABASE_URL)\n' +
      `kafka:    ${kafka} ${current.kafkaBrokers.join(',')} (Apache Kafka ${current.kafka.version})\n` +
      kafkaNodeLines(current.kafka.nodes) +
      secureKafkaLines(current.kafka.secure) +
      `owner:    ${owner}\n`,
  );
  return postgres === 'up' && kafka === 'up' ? 0 : 1;
}

interface StopSignals {
  /** Aborts at the first Ctrl-C (SIGINT), SIGTERM or SIGHUP, or when the parent shell is gone. */
  requested: AbortSignal;
  /** Aborts at the next one: the services are killed instead of drained. */
  hurried: AbortSignal;
}

/**
 * Ctrl-C signals the terminal's whole foreground process group: this process and the services
 * each get one SIGINT per press (npm's forwarded copy stops at `start.sh`, which waits for us).
 * The handlers stay installed, so no later signal kills this process mid-stop.
 */
function watchStopSignals(): StopSignals {
  const requested = new AbortController();
  const hurried = new AbortController();
  const onSignal = (cause: string) => {
    if (!requested.signal.aborted) {
      say(`stopping (${cause}); Ctrl-C again stops the services at once`);
      requested.abort();
    } else if (!hurried.signal.aborted) {
      say(`stopping the services at once (${cause})`);
      hurried.abort();
    }
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);
  // A shell killed outright (npm forwards SIGTERM to it) would leave us running unseen.
  const parent = process.ppid;
  const watch = setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      clearInterval(watch);
      onSignal('the parent process exited');
    }
  }, 500).unref();
  // After SIGHUP the terminal is gone; a failed write must not end the stop half way.
  process.stdout.on('error', () => undefined);
  process.stderr.on('error', () => undefined);
  return { requested: requested.signal, hurried: hurried.signal };
}

async function shopApiReady(port: string, exit: Promise<number>, signal: AbortSignal) {
  const exited = new AbortController();
  void exit.then(() => exited.abort());
  const waiting = AbortSignal.any([signal, exited.signal, AbortSignal.timeout(60_000)]);
  while (!waiting.aborted) {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: waiting }).catch(
      () => undefined,
    );
    if (response?.status === 200) return;
    await delay(200, undefined, { signal: waiting }).catch(() => undefined);
  }
  if (!signal.aborted && !exited.signal.aborted) {
    say('shop-api is not ready after 60 s; starting the other services anyway');
  }
}

/**
 * Runs the built services until a stop is requested or one of them exits (a half-running
 * pipeline misleads), then stops them all: drained (SIGTERM), or killed once `hurried` aborts.
 *
 * @returns 1 when a service failed or had to be killed
 */
async function runServices(
  env: NodeJS.ProcessEnv,
  stop: StopSignals,
  notes: Partial<Record<(typeof SERVICES)[number], string>> = {},
): Promise<number> {
  const children: ChildProcess[] = [];
  const exits: Promise<number>[] = [];
  for (const name of SERVICES) {
    const main = join(rootDir, 'services', name, 'dist', 'main.js');
    if (stop.requested.aborted || !existsSync(main)) continue;
    say(`starting ${name}`);
    const child = spawn(process.execPath, [main, ...(OPERANDS[name] ?? [])], {
      env,
      stdio: 'inherit',
    });
    const exit = new Promise<number>((done) => child.once('exit', (code) => done(code ?? 1)));
    children.push(child);
    exits.push(exit);
    const note = notes[name];
    if (note !== undefined) say(note);
    // shop-api migrates the schema the relay and the projector read: let it finish first.
    if (name === 'shop-api') await shopApiReady(env.API_PORT ?? '3000', exit, stop.requested);
  }
  if (children.length === 0 && !stop.requested.aborted) {
    say('no services are built yet; the stack stays up until Ctrl-C');
  }
  const requested = stop.requested.aborted
    ? Promise.resolve()
    : new Promise((done) => stop.requested.addEventListener('abort', done, { once: true }));
  await Promise.race([requested, ...exits]);
  if (!stop.requested.aborted) say('a service exited; stopping the others');
  for (const child of children) child.kill('SIGTERM');
  const kill = () => children.forEach((child) => child.kill('SIGKILL'));
  if (stop.hurried.aborted) kill();
  else stop.hurried.addEventListener('abort', kill);
  const codes = await Promise.all(exits);
  return codes.some((code) => code !== 0) ? 1 : 0;
}

/** Stops the embedded servers this run used, if it owns the stack (see `stack-owner.ts`). */
async function stopOwnedStack(stack: EmbeddedStack): Promise<void> {
  if (!parts.postgres && !parts.kafka) return;
  const owner = await stack.owner();
  if (owner !== undefined && 'pid' in owner && owner.pid === process.pid) {
    say('stopping the stack');
    await stack.down(parts);
    say('down');
  } else if (owner !== undefined) {
    say(
      'kept' in owner
        ? 'the stack stays up (kept by `pnpm stack:up`; `pnpm stack:down` stops it)'
        : `the stack stays up (process ${owner.pid} uses it and stops it)`,
    );
  }
}

/**
 * The access settings of the services: the environment's, else the stack's development secret
 * and console users (see `dev-access.ts`); and how to reach the console and sign in.
 */
async function accessEnv(): Promise<{ env: Record<string, string>; note: string }> {
  const url = `http://${process.env.CONSOLE_HOST || '127.0.0.1'}:${process.env.CONSOLE_PORT || '9470'}`;
  if (process.env.SLUICE_ACCESS_SECRET) {
    return { env: {}, note: `console: ${url} (sign in as a user of SLUICE_ACCESS_USERS_FILE)` };
  }
  const dev = await devAccess(process.env.SLUICE_STACK_DIR || join(rootDir, '.sluice'));
  const logins = dev.logins.map((login) => `${login.name} / ${login.password}`).join(' or ');
  return {
    env: {
      SLUICE_ACCESS_SECRET: dev.secret,
      SLUICE_ACCESS_USERS_FILE: process.env.SLUICE_ACCESS_USERS_FILE || dev.usersFile,
    },
    note: `console: ${url} (development sign-in: ${logins}; users in ${dev.usersFile})`,
  };
}

/** The services' master key: the environment's, else the stack's development key file. */
async function masterKeyEnv(): Promise<Record<string, string>> {
  if (process.env.SLUICE_MASTER_KEY_FILE || process.env.SLUICE_MASTER_KEY) return {};
  const dir = process.env.SLUICE_STACK_DIR || join(rootDir, '.sluice');
  return { SLUICE_MASTER_KEY_FILE: await ensureMasterKeyFile(dir) };
}

/**
 * shop-api's authentication: the environment's `SHOP_AUTH*` settings, else explicitly off for
 * local development (`SHOP_AUTH=off`), with a note that says so.
 */
function shopAuthEnv(): { env: Record<string, string>; note?: string } {
  const settings = ['SHOP_AUTH', 'SHOP_AUTH_SECRET', 'SHOP_AUTH_SECRET_FILE', 'SHOP_AUTH_JWKS_URL'];
  if (settings.some((name) => process.env[name])) return { env: {} };
  return {
    env: { SHOP_AUTH: 'off' },
    note: 'WARNING shop-api: authentication is OFF for local development (SHOP_AUTH=off): every request acts as the admin "dev"; set SHOP_AUTH_SECRET or SHOP_AUTH_JWKS_URL to require bearer tokens',
  };
}

/**
 * Starts what is missing, runs every built service in the foreground; Ctrl-C stops them, then
 * the embedded stack unless `pnpm stack:up` keeps it or another live process owns it.
 */
async function run(stack: EmbeddedStack): Promise<number> {
  const stop = watchStopSignals();
  try {
    const endpoints = await up(stack, { keep: false, signal: stop.requested });
    const access = await accessEnv();
    const shopAuth = shopAuthEnv();
    const env = {
      ...process.env,
      ...access.env,
      ...shopAuth.env,
      ...(await masterKeyEnv()),
      DATABASE_URL: endpoints.databaseUrl,
      KAFKA_BROKERS: endpoints.kafkaBrokers,
      CONSOLE_API_URLS:
        process.env.CONSOLE_API_URLS || `http://127.0.0.1:${process.env.API_PORT || '3000'}`,
    };
    const notes = {
      console: access.note,
      ...(shopAuth.note === undefined ? {} : { 'shop-api': shopAuth.note }),
    };
    return await runServices(env, stop, notes);
  } catch (error) {
    // Ctrl-C during start-up also interrupts the helpers (pg_ctl, java) in our process group.
    if (!stop.requested.aborted) throw error;
    say('stopped during start-up');
    return 0;
  } finally {
    await stopOwnedStack(stack);
  }
}

async function main(command: string | undefined, args: readonly string[]): Promise<number> {
  const stack = stackFromEnv(args);
  switch (command) {
    case 'up':
      await up(stack, { keep: true });
      return 0;
    case 'down':
      await stack.down();
      say('down');
      return 0;
    case 'status':
      return status(stack);
    case 'run':
      return run(stack);
    default:
      say('usage: cli.ts up [--brokers 1|3] | down | status | run');
      return 2;
  }
}

main(process.argv[2], process.argv.slice(3)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const code = isSluiceError(error) ? ` [${error.code}]` : '';
    say(`error${code}: ${errorMessage(error)}`);
    process.exit(1);
  },
);
