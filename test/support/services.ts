// Test support: a built service (`services/<name>/dist/main.js`) as a real child process.
import { errorMessage } from '@sluice/errors';
import { freePort, waitFor } from '@sluice/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TEST_ACCESS_SECRET, TEST_SHOP_AUTH_SECRET } from './access.js';
import { TEST_MASTER_KEY } from './privacy.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface ServiceProcess {
  name: ServiceName;
  child: ChildProcess;
  /** Everything it printed so far (JSON lines). */
  output(): string;
  /** Resolves with the exit code once it exited. */
  exited(): Promise<number | null>;
  kill(signal: NodeJS.Signals): void;
  /**
   * Waits until it printed `text`. Fails at once if it exits first, and on a timeout; both
   * errors carry the end of its output.
   */
  waitForOutput(text: string, options: { timeoutMs: number; message: string }): Promise<void>;
}

export type ServiceName = 'shop-api' | 'relay' | 'projector' | 'console';

/** The shop's projections as a module for `sluice-projector`. */
const SHOP_VIEWS_MODULE = join(rootDir, 'packages', 'shop-views', 'dist', 'index.js');

/** What a service starts with besides its environment. */
export interface StartOptions {
  /** Its command line's operands and flags. */
  args?: readonly string[];
  /** Its working directory. Default: this process's. */
  cwd?: string;
}

/**
 * Settings a service gets unless `env` says otherwise: the projector runs the shop's views and
 * accepts tokens signed with {@link TEST_ACCESS_SECRET}; shop-api accepts bearer tokens signed
 * with {@link TEST_SHOP_AUTH_SECRET} (`shopHeaders`).
 */
const DEFAULT_ENV: Partial<Record<ServiceName, Record<string, string>>> = {
  projector: {
    PROJECTOR_MODULES: SHOP_VIEWS_MODULE,
    SLUICE_ACCESS_SECRET: TEST_ACCESS_SECRET,
    SLUICE_MASTER_KEY: TEST_MASTER_KEY,
  },
  'shop-api': { SHOP_AUTH_SECRET: TEST_SHOP_AUTH_SECRET, SLUICE_MASTER_KEY: TEST_MASTER_KEY },
};

const started: ServiceProcess[] = [];

/** Every service this test file started so far, in start order, running or not. */
export function startedServices(): readonly ServiceProcess[] {
  return started;
}

/**
 * Starts a service with `env` on top of this process's environment (and node flags, if any).
 * The projector runs the shop's projections unless `env` or `options.args` name other modules.
 */
export function startService(
  name: ServiceName,
  env: Record<string, string>,
  nodeArgs: readonly string[] = [],
  options: StartOptions = {},
): ServiceProcess {
  const main = join(rootDir, 'services', name, 'dist', 'main.js');
  const child = spawn(process.execPath, [...nodeArgs, main, ...(options.args ?? [])], {
    env: { ...process.env, LOG_LEVEL: 'info', ...DEFAULT_ENV[name], ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exit = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const service: ServiceProcess = {
    name,
    child,
    output: () => output,
    exited: () => exit,
    kill: (signal) => child.kill(signal),
    async waitForOutput(text, options) {
      const printed = waitFor(() => output.includes(text), { ...options, intervalMs: 20 });
      const died = exit.then((code) => {
        throw new Error(`${name} exited (${String(code)}) before printing ${text}`);
      });
      try {
        await Promise.race([printed, died]);
      } catch (error) {
        throw new Error(`${errorMessage(error)}\n--- ${name} output ---\n${output.slice(-4000)}`, {
          cause: error,
        });
      } finally {
        died.catch(() => undefined);
        printed.catch(() => undefined);
      }
    },
  };
  started.push(service);
  return service;
}

/** Starts shop-api on a free port and waits until `/readyz` answers 200 (it has migrated). */
export async function startShopApi(
  env: Record<string, string>,
  nodeArgs: readonly string[] = [],
): Promise<{ service: ServiceProcess; base: string }> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const service = startService('shop-api', { API_PORT: String(port), ...env }, nodeArgs);
  await waitFor(
    async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200,
    {
      timeoutMs: 30_000,
      message: 'shop-api ready',
    },
  );
  return { service, base };
}

/** The base URL a service logged as `metrics listening` (at LOG_LEVEL info), once it has. */
export function listeningAddress(service: ServiceProcess): string | undefined {
  return /"address":"(http:[^"]+)","msg":"metrics listening"/.exec(service.output())?.[1];
}

/** The first sample of `<base>/metrics` whose name and labels start with `prefix`; NaN if none. */
export async function metricValue(base: string, prefix: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return Number(line?.split(' ').at(-1) ?? NaN);
}
