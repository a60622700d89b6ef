// The embedded stack on private ports: idempotent up, truthful status, a down that leaves no
// process behind, and preflight errors that name the cause when a server is stopped or
// PostgreSQL lacks logical WAL.
import { isSluiceError } from '@sluice/errors';
import { checkKafka, checkPostgres } from '@sluice/preflight';
import { createEmbeddedStack, createPostgresServer, findPostgresBinDir } from '@sluice/stack';
import { freePort } from '@sluice/testkit';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function hasLocalPostgres(): boolean {
  try {
    findPostgresBinDir();
    return true;
  } catch {
    return false;
  }
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

/** Running, as `ps` would list it; a zombie has exited and waits only for its reaper. */
function isLive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

function postmasterPid(dataDir: string): number {
  return Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

describe.skipIf(!hasLocalPostgres())('embedded stack on private ports', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('comes up once, reports status, and goes down without leaving a process', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'sluice-stack-test-'));
    const kafkaPort = await freePort();
    const stack = createEmbeddedStack({
      rootDir,
      stateDir,
      postgresPort: await freePort(),
      kafkaPort,
    });
    cleanups.push(() => rm(stateDir, { recursive: true, force: true }));
    cleanups.push(() => rm(dirname(stack.postgres.dataDir), { recursive: true, force: true }));
    cleanups.push(() => stack.down());

    const first = await stack.up();
    const kafkaPid = await stack.kafka.pid();
    const postgresPid = postmasterPid(stack.postgres.dataDir);
    const second = await stack.up();
    expect(second).toEqual(first);
    expect(await stack.kafka.pid()).toBe(kafkaPid);
    expect(postmasterPid(stack.postgres.dataDir)).toBe(postgresPid);

    const status = await stack.status();
    expect(status.postgres.running).toBe(true);
    expect(status.kafka.running).toBe(true);
    await expect(checkPostgres(first.databaseUrl)).resolves.toMatchObject({ walLevel: 'logical' });
    await expect(checkKafka(first.kafkaBrokers)).resolves.toEqual({ brokerCount: 1 });

    await stack.down();
    expect(kafkaPid).toBeGreaterThan(0);
    expect(isLive(kafkaPid ?? 0)).toBe(false);
    expect(isLive(postgresPid)).toBe(false);
    const after = await stack.status();
    expect(after.postgres.running).toBe(false);
    expect(after.kafka.running).toBe(false);

    const kafkaError = await rejection(checkKafka(first.kafkaBrokers, { connectTimeoutMs: 1000 }));
    expect(isSluiceError(kafkaError, 'kafka_unreachable')).toBe(true);
    expect((kafkaError as Error).message).toContain(first.kafkaBrokers[0]);
    const postgresError = await rejection(checkPostgres(first.databaseUrl));
    expect(isSluiceError(postgresError, 'postgres_unreachable')).toBe(true);
  });

  it('names wal_level when PostgreSQL lacks logical WAL', async () => {
    const tempDir = await mkdtemp(join(tmpdir(), 'sluice-replica-pg-'));
    await chmod(tempDir, 0o755); // as root, PostgreSQL runs as the postgres user
    const dataDir = join(tempDir, 'data');
    const server = createPostgresServer({
      dataDir,
      port: await freePort(),
      settings: { wal_level: 'replica' },
    });
    cleanups.push(() => rm(dirname(dataDir), { recursive: true, force: true }));
    cleanups.push(() => server.stop('immediate'));
    await server.start();

    const error = await rejection(checkPostgres(server.url()));
    expect(isSluiceError(error, 'postgres_wal_level')).toBe(true);
    expect((error as Error).message).toMatch(/wal_level=replica.*needs wal_level=logical/);
  });
});
