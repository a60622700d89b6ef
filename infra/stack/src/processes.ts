import { SluiceError, errorMessage } from '@sluice/errors';
import { execFileSync, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import net from 'node:net';

export interface CommandResult {
  code: number;
  output: string;
}

/** Runs a command to completion and collects stdout+stderr; never throws for a non-zero exit. */
export function runCommand(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', (error) => resolve({ code: 127, output: errorMessage(error) }));
    child.on('close', (code) => resolve({ code: code ?? 1, output }));
  });
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
export function isPortOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Whether `pid` is alive and its command line contains `marker` (guards against pid reuse). */
export async function isProcessAlive(pid: number, marker: string): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // A zombie has exited; it only waits for a parent that may never reap it.
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return false;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(marker);
  } catch {
    // No /proc (macOS): trust kill(0).
    return true;
  }
}

/**
 * When `pid` started, in clock ticks since boot (`/proc/<pid>/stat`): with the pid it names one
 * process, never a later one that reuses the pid. Undefined when it is not running (or no /proc).
 */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may hold spaces: state is field 3, starttime 22.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

/**
 * Polls `check` until it returns true; throws `timeoutError()` after `timeoutMs`, and `signal`'s
 * reason as soon as it aborts.
 */
export async function pollUntil(
  check: () => Promise<boolean>,
  timeoutMs: number,
  timeoutError: () => Error,
  intervalMs = 250,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    if (await check()) return;
    if (Date.now() > deadline) throw timeoutError();
    // An abort ends the wait early; the next round throws its reason.
    await delay(intervalMs, undefined, signal === undefined ? {} : { signal }).catch(
      () => undefined,
    );
  }
}

/** The last `lines` lines of a text file, or '' when it cannot be read. */
export async function tailFile(path: string, lines = 20): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Throws `port_in_use` when another process already listens on `port`. */
export async function assertPortFree(port: number, what: string): Promise<void> {
  if (await isPortOpen(port)) {
    throw new SluiceError(
      'port_in_use',
      `Port ${port} (${what}) is taken by another process. Stop it, or point the ` +
        'environment at that server instead (DATABASE_URL / KAFKA_BROKERS).',
    );
  }
}

/**
 * `count` distinct TCP ports free on 127.0.0.1 right now, found synchronously (a short child
 * process holds them all at once, so none repeats).
 */
export function freePortsSync(count: number): number[] {
  const script =
    "const net=require('node:net');const n=Number(process.argv[1]);const ports=[];const servers=[];" +
    "const next=()=>{if(ports.length===n){console.log(ports.join(','));servers.forEach(s=>s.close());return;}" +
    "const s=net.createServer();servers.push(s);s.listen(0,'127.0.0.1',()=>{ports.push(s.address().port);next();});};next();";
  const output = execFileSync(process.execPath, ['-e', script, String(count)], {
    encoding: 'utf8',
  });
  return output.trim().split(',').map(Number);
}
