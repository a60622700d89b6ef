// `pnpm stack:up|down|status` and the README's start command (`run`).
import { isSluiceError, errorMessage } from '@sluice/errors';
import { checkKafka, checkPostgres, parseBrokers } from '@sluice/preflight';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createEmbeddedStack } from './embedded-stack.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SERVICES = ['shop-api', 'relay', 'projector'] as const;

const say = (message: string) => process.stderr.write(`stack: ${message}\n`);

const stack = createEmbeddedStack({
  rootDir,
  ...(process.env.SLUICE_STACK_DIR ? { stateDir: process.env.SLUICE_STACK_DIR } : {}),
  ...(process.env.PG_BIN_DIR ? { postgresBinDir: process.env.PG_BIN_DIR } : {}),
  log: say,
});

const externalDatabase = process.env.DATABASE_URL || undefined;
const externalBrokers = process.env.KAFKA_BROKERS || undefined;

async function up(): Promise<{ databaseUrl: string; kafkaBrokers: string; started: boolean }> {
  const before = await stack.status();
  const parts = { postgres: externalDatabase === undefined, kafka: externalBrokers === undefined };
  if (!parts.postgres) say('DATABASE_URL is set: not starting the embedded PostgreSQL');
  if (!parts.kafka) say('KAFKA_BROKERS is set: not starting the embedded Kafka');
  const endpoints = await stack.up(parts);
  const databaseUrl = externalDatabase ?? endpoints.databaseUrl;
  const kafkaBrokers = externalBrokers ?? endpoints.kafkaBrokers.join(',');
  await Promise.all([checkPostgres(databaseUrl), checkKafka(parseBrokers(kafkaBrokers))]);
  const started =
    (parts.postgres && !before.postgres.running) || (parts.kafka && !before.kafka.running);
  say(started ? 'up' : 'already up');
  process.stdout.write(`export DATABASE_URL=${databaseUrl} KAFKA_BROKERS=${kafkaBrokers}\n`);
  return { databaseUrl, kafkaBrokers, started };
}

async function status(): Promise<number> {
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
  process.stdout.write(
    `postgres: ${postgres} ${current.databaseUrl} (data ${current.postgres.dataDir})\n` +
      `kafka:    ${kafka} ${current.kafkaBrokers.join(',')}` +
      `${current.kafka.pid === undefined ? '' : ` (pid ${current.kafka.pid})`}\n`,
  );
  return postgres === 'up' && kafka === 'up' ? 0 : 1;
}

async function shopApiReady(port: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
    if (response?.status === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  say('shop-api is not ready after 60 s; starting the other services anyway');
}

/** Runs every built service in the foreground; Ctrl-C stops them, then the stack it started. */
async function run(): Promise<number> {
  const { databaseUrl, kafkaBrokers, started } = await up();
  const env = { ...process.env, DATABASE_URL: databaseUrl, KAFKA_BROKERS: kafkaBrokers };
  const children: ChildProcess[] = [];
  for (const name of SERVICES) {
    const main = join(rootDir, 'services', name, 'dist', 'main.js');
    if (!existsSync(main)) continue;
    say(`starting ${name}`);
    children.push(spawn(process.execPath, [main], { env, stdio: 'inherit' }));
    // shop-api migrates the schema the relay and the projector read: let it finish first.
    if (name === 'shop-api') await shopApiReady(process.env.API_PORT ?? '3000');
  }
  if (children.length === 0) say('no services are built yet; the stack stays up until Ctrl-C');
  const exits = children.map(
    (child) => new Promise<number>((done) => child.once('exit', (code) => done(code ?? 1))),
  );
  const stopped = new Promise<void>((done) => {
    let stopping = false;
    const stop = () => {
      if (stopping) return;
      stopping = true;
      say('stopping');
      for (const child of children) child.kill('SIGTERM');
      done();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // A service that dies on its own stops the others: a half-running pipeline misleads.
    for (const exit of exits) void exit.then(stop);
  });
  await stopped;
  const codes = await Promise.all(exits);
  if (started) await stack.down();
  return codes.some((code) => code !== 0) ? 1 : 0;
}

async function main(command: string | undefined): Promise<number> {
  switch (command) {
    case 'up':
      await up();
      return 0;
    case 'down':
      await stack.down();
      say('down');
      return 0;
    case 'status':
      return status();
    case 'run':
      return run();
    default:
      say('usage: cli.ts up|down|status|run');
      return 2;
  }
}

main(process.argv[2]).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const code = isSluiceError(error) ? ` [${error.code}]` : '';
    say(`error${code}: ${errorMessage(error)}`);
    process.exit(1);
  },
);
