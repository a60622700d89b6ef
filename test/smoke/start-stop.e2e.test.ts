// The README's `npm start` in a pseudo-terminal, as a developer runs it: Ctrl-C (the terminal's
// interrupt character, which signals the whole foreground process group: npm, the shell, the
// stack's cli and every service) returns the prompt only once every service, Kafka and
// PostgreSQL are gone. Runs a private stack (own state directory and ports), never the shared one.
import { createEmbeddedStack, findPostgresBinDir } from '@sluice/stack';
import { freePort, waitFor } from '@sluice/testkit';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function canRunEmbeddedStack(): boolean {
  try {
    findPostgresBinDir();
  } catch {
    return false;
  }
  return spawnSync('java', ['-version']).status === 0 && spawnSync('script', ['-V']).status === 0;
}

interface Ports {
  postgres: number;
  kafka: number;
  api: number;
  relay: number;
  projector: number;
}

/** A free port whose successor is free too (Kafka's controller listens on the next one). */
async function freePortPair(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (!(await isPortOpen(port + 1))) return port;
  }
}

function isPortOpen(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}

interface Started {
  child: ChildProcess;
  output(): string;
  /** Resolves with the command's exit code (in a terminal: when the prompt would return). */
  exited: Promise<number | null>;
  hasExited(): boolean;
}

function watch(child: ChildProcess): Started {
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  let hasExited = false;
  const exited = new Promise<number | null>((done) =>
    child.once('exit', (code) => {
      hasExited = true;
      done(code);
    }),
  );
  return { child, output: () => output, exited, hasExited: () => hasExited };
}

interface Terminal extends Started {
  /** Types Ctrl-C: the pty's line discipline turns it into SIGINT for the foreground group. */
  interrupt(): void;
}

/** Runs `command` through `sh -c` on a new pseudo-terminal (util-linux `script`). */
function runInTerminal(command: string, env: NodeJS.ProcessEnv): Terminal {
  const child = spawn(
    'script',
    ['--quiet', '--flush', '--return', '--command', command, '/dev/null'],
    {
      cwd: rootDir,
      env: { ...env, SHELL: '/bin/sh' },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  return { ...watch(child), interrupt: () => child.stdin.write('\x03') };
}

/** Service log lines at error level or above (service-kit logs pino's label: error, fatal). */
function errorLines(output: string): string[] {
  return output.split(/\r?\n/).filter((line) => /"level":("error"|"fatal"|[56]\d\b)/.test(line));
}

/**
 * Live processes of this test's `npm start`: started with its stack directory in the
 * environment (npm, the shell, the cli, the services, the servers' launchers), or naming the
 * stack's directories on their command line (Kafka, PostgreSQL).
 */
function leftovers(stateDir: string, postgresDataDir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
      const environ = readFileSync(`/proc/${entry}/environ`, 'utf8');
      if (
        cmdline.includes(stateDir) ||
        cmdline.includes(postgresDataDir) ||
        environ.includes(`SLUICE_STACK_DIR=${stateDir}\0`)
      ) {
        found.push(`${entry}: ${cmdline.slice(0, 200)}`);
      }
    } catch {
      // exited while we looked
    }
  }
  return found;
}

async function openPorts(ports: Ports): Promise<number[]> {
  const all = [
    ports.postgres,
    ports.kafka,
    ports.kafka + 1,
    ports.api,
    ports.relay,
    ports.projector,
  ];
  const open = await Promise.all(all.map((port) => isPortOpen(port)));
  return all.filter((_, index) => open[index]);
}

async function ready(url: string): Promise<boolean> {
  const response = await fetch(url).catch(() => undefined);
  return response?.status === 200;
}

describe.skipIf(!canRunEmbeddedStack())('npm start in a terminal', () => {
  let stateDir: string;
  let ports: Ports;
  let env: NodeJS.ProcessEnv;
  let stack: ReturnType<typeof createEmbeddedStack>;

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'sluice-start-'));
    ports = {
      postgres: await freePort(),
      kafka: await freePortPair(),
      api: await freePort(),
      relay: await freePort(),
      projector: await freePort(),
    };
    env = {
      ...process.env,
      SLUICE_STACK_DIR: stateDir,
      SLUICE_PG_PORT: String(ports.postgres),
      SLUICE_KAFKA_PORT: String(ports.kafka),
      API_PORT: String(ports.api),
      RELAY_METRICS_PORT: String(ports.relay),
      PROJECTOR_METRICS_PORT: String(ports.projector),
      LOG_LEVEL: 'info',
      // The killed start's consumers are gone; the next start need not wait 30 s for them.
      PROJECTOR_SESSION_TIMEOUT_MS: '6000',
    };
    // Set, they would make `npm start` use those servers instead of starting its own.
    delete env.DATABASE_URL;
    delete env.KAFKA_BROKERS;
    stack = createEmbeddedStack({
      rootDir,
      stateDir,
      postgresPort: ports.postgres,
      kafkaPort: ports.kafka,
    });
  });

  afterAll(async () => {
    for (const line of leftovers(stateDir, stack.postgres.dataDir)) {
      process.kill(Number(line.split(':')[0]), 'SIGKILL');
    }
    await stack.down();
    await rm(stateDir, { recursive: true, force: true });
    await rm(dirname(stack.postgres.dataDir), { recursive: true, force: true });
  });

  async function servicesReady(start: Started): Promise<void> {
    const exitedEarly = start.exited.then((code) => {
      throw new Error(`npm start exited (${String(code)}) before the services were ready`);
    });
    const allReady = waitFor(
      async () =>
        (await ready(`http://127.0.0.1:${ports.api}/readyz`)) &&
        (await ready(`http://127.0.0.1:${ports.relay}/readyz`)) &&
        (await ready(`http://127.0.0.1:${ports.projector}/readyz`)),
      { timeoutMs: 75_000, intervalMs: 250, message: 'shop-api, relay and projector ready' },
    );
    try {
      await Promise.race([allReady, exitedEarly]);
    } catch (error) {
      throw new Error(`${String(error)}\n--- output ---\n${start.output().slice(-4000)}`, {
        cause: error,
      });
    } finally {
      allReady.catch(() => undefined);
      exitedEarly.catch(() => undefined);
    }
  }

  async function expectNothingLeft(terminal: Terminal): Promise<void> {
    const left = leftovers(stateDir, stack.postgres.dataDir);
    const open = await openPorts(ports);
    expect({ left, open }, terminal.output().slice(-3000)).toEqual({ left: [], open: [] });
  }

  it('a first start logs no errors, and Ctrl-C stops every service, Kafka and PostgreSQL before the prompt returns', async () => {
    const terminal = runInTerminal('npm start', env);
    await servicesReady(terminal);
    expect(errorLines(terminal.output()), 'while starting').toEqual([]);

    terminal.interrupt();
    await waitFor(() => terminal.hasExited(), {
      timeoutMs: 60_000,
      message: 'npm start exited after Ctrl-C',
    });
    await expectNothingLeft(terminal);
    expect(errorLines(terminal.output()), 'while stopping').toEqual([]);
  }, 150_000);

  it('a stack left by an interrupted start does not survive the next start (--silent), even when Ctrl-C is pressed twice', async () => {
    // A start killed outright (SIGKILL to its process group: no handler runs) leaves its servers
    // up, as an interrupted start did before it stopped what it uses.
    const crashed = watch(spawn('npm', ['start'], { cwd: rootDir, env, detached: true }));
    await servicesReady(crashed);
    const group = crashed.child.pid;
    if (group === undefined) throw new Error('npm did not start');
    process.kill(-group, 'SIGKILL');
    await crashed.exited;
    await waitFor(async () => !(await isPortOpen(ports.api)), { timeoutMs: 10_000 });
    expect((await stack.status()).kafka.running).toBe(true);

    const terminal = runInTerminal('npm start --silent', env);
    await servicesReady(terminal);
    terminal.interrupt();
    await waitFor(() => terminal.output().includes('stack: stopping'), { timeoutMs: 10_000 });
    terminal.interrupt();
    await waitFor(() => terminal.hasExited(), {
      timeoutMs: 60_000,
      message: 'npm start exited after Ctrl-C',
    });
    await expectNothingLeft(terminal);
  }, 150_000);
});
