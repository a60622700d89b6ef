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
  /**
   * SIGSTOPs the postmaster, then every process it started (it can start no more once
   * stopped): connections stay open and nothing answers, as behind a network partition.
   */
  freeze(): Promise<void>;
  /** SIGCONTs whatever {@link freeze} stopped; nothing if it stopped nothing. */
  thaw(): void;
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
  let frozen: number[] = [];
  const thaw = () => {
    for (const pid of frozen) process.kill(pid, 'SIGCONT');
    frozen = [];
  };
  return {
    server,
    async freeze() {
      const postmaster = await postmasterOf(dataDir);
      process.kill(postmaster, 'SIGSTOP');
      frozen = [postmaster, ...(await childrenOf(postmaster))];
      for (const pid of frozen.slice(1)) process.kill(pid, 'SIGSTOP');
    },
    thaw,
    async close() {
      thaw();
      await server.stop('immediate');
      await rm(tempDir, { recursive: true, force: true });
    },
  };
}

async function postmasterOf(dataDir: string): Promise<number> {
  return Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
}

async function childrenOf(postmaster: number): Promise<number[]> {
  const children: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (parent === postmaster) children.push(Number(entry));
  }
  return children;
}
