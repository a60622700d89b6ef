// Test support: a PostgreSQL server of a test file's own, with the embedded stack's settings, for
// tests that crash, restart or freeze it without touching the test run's server.
import { createPostgresServer, type PostgresServer } from '@sluice/stack';
import { freePort } from '@sluice/testkit';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface PrivatePostgres {
  server: PostgresServer;
  /** The server's processes: the postmaster and every process it started. */
  processes(): Promise<number[]>;
  /** Stops the server (immediate) and removes its files. */
  close(): Promise<void>;
}

/** Starts a server in a temporary directory named after `name`. */
export async function startPrivatePostgres(name: string): Promise<PrivatePostgres> {
  const tempDir = await mkdtemp(join(tmpdir(), `sluice-${name}-`));
  await chmod(tempDir, 0o755); // as root, PostgreSQL runs as the postgres user
  const dataDir = join(tempDir, 'pg');
  const server = createPostgresServer({
    dataDir,
    port: await freePort(),
    settingsFile: join(rootDir, 'infra', 'postgres', 'sluice.conf'),
    settings: { shared_buffers: '64MB' },
  });
  await server.start();
  return {
    server,
    processes: () => serverProcesses(dataDir),
    async close() {
      await server.stop('immediate');
      await rm(tempDir, { recursive: true, force: true });
    },
  };
}

async function serverProcesses(dataDir: string): Promise<number[]> {
  const postmaster = Number(
    (await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0],
  );
  const children: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (parent === postmaster) children.push(Number(entry));
  }
  return [postmaster, ...children];
}
