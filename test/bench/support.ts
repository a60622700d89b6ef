// What the benchmarks share: environment knobs, progress on stderr, the repository root.
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';

/** A positive number from the environment, or `fallback` when unset. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
}

/** Progress goes to stderr; stdout carries only the result JSON. */
export function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'pnpm-workspace.yaml'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('pnpm-workspace.yaml not found above the benchmark');
    dir = parent;
  }
  return dir;
}

/** SIGTERM, then SIGKILL after `timeoutMs`; resolves once the process exited. */
export async function stopProcess(child: ChildProcess, timeoutMs = 35_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Runs `cleanup` once on SIGINT or SIGTERM, then exits 130. `on`, not `once`: a repeated signal
 * (Ctrl-C twice, or tsx relaying the group's SIGINT again) must not find the process without a
 * handler, which would exit before the benchmark's databases are dropped.
 */
export function cleanUpOnSignals(cleanup: () => Promise<void>): void {
  let interrupted = false;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (interrupted) return;
      interrupted = true;
      log(`${signal}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  }
}

// ---------------------------------------------------------------- Linux /proc

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** utime + stime of a process, with its command name. */
export function processTicks(pid: number): { comm: string; ticks: number } | undefined {
  const stat = readProc(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  if (open < 0 || close < 0) return undefined;
  // After "(comm) ", fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  const fields = stat.slice(close + 2).split(' ');
  return {
    comm: stat.slice(open + 1, close),
    ticks: Number(fields[11] ?? 0) + Number(fields[12] ?? 0),
  };
}

/** A process's memory in MiB from /proc/<pid>/status: peak (VmHWM) and current (VmRSS). */
export function memoryMb(pid: number): { hwm: number; rss: number } | undefined {
  const status = readProc(`/proc/${pid}/status`);
  if (status === undefined) return undefined;
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
  return { hwm: field('VmHWM') / 1024, rss: field('VmRSS') / 1024 };
}

/** Busy ticks of the whole machine (all CPUs), and the part of them stolen by the hypervisor. */
export function machineTicks(): { busy: number; steal: number } {
  const values = (readProc('/proc/stat')?.split('\n')[0] ?? '')
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const all = values.reduce((sum, value) => sum + value, 0);
  return { busy: all - (values[3] ?? 0) - (values[4] ?? 0), steal: values[7] ?? 0 };
}

/** A response read whole. */
export interface HttpResponse {
  status: number;
  body: string;
}

/** One request to 127.0.0.1:`port` through `agent` (keep-alive: far cheaper than `fetch`). */
export function httpRequest(
  agent: http.Agent,
  port: number,
  method: string,
  path: string,
  json?: string,
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders =
      json === undefined
        ? {}
        : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) };
    const request = http.request(
      { host: '127.0.0.1', port, method, path, agent, headers },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          resolve({
            status: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
          });
        });
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(json);
  });
}
