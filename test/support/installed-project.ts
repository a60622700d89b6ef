// Test support: Sluice as a team gets it — the workspace's publishable packages packed into
// tarballs, and a project outside the workspace that installs them (and nothing else of ours).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cp, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = promisify(execFile);

/** What a finished command printed and how it exited. */
export interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (never throws for a non-zero exit). */
export async function runCommand(
  command: string,
  args: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(command, [...args], {
      cwd: options.cwd,
      env: options.env ?? process.env,
      timeout: options.timeoutMs ?? 120_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number | string; stdout?: string; stderr?: string };
    const code = typeof failed.code === 'number' ? failed.code : -1;
    return { code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? String(error) };
  }
}

/** The workspace's packages that are published (not `private`), by name, with their directory. */
export async function publishablePackages(): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const group of ['packages', 'services']) {
    for (const entry of await readdir(join(rootDir, group))) {
      const dir = join(rootDir, group, entry);
      const manifest = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as {
        name: string;
        private?: boolean;
      };
      if (manifest.private !== true) found.set(manifest.name, dir);
    }
  }
  return found;
}

/** Packs every publishable package (built beforehand) into `dest`: name → tarball path. */
export async function packPublishable(dest: string): Promise<Map<string, string>> {
  const tarballs = new Map<string, string>();
  for (const [name, dir] of await publishablePackages()) {
    const packed = await runCommand('pnpm', ['pack', '--pack-destination', dest], { cwd: dir });
    const tarball = packed.stdout.trim().split('\n').at(-1) ?? '';
    if (packed.code !== 0 || !tarball.endsWith('.tgz')) {
      throw new Error(`pnpm pack of ${name} failed:\n${packed.stdout}\n${packed.stderr}`);
    }
    tarballs.set(name, tarball);
  }
  return tarballs;
}

/**
 * Copies the example project `example` (under examples/) to `dir` and points its `@sluice/*`
 * dependencies, direct and transitive, at `tarballs`.
 */
export async function copyExampleProject(
  example: string,
  dir: string,
  tarballs: ReadonlyMap<string, string>,
): Promise<void> {
  await cp(join(rootDir, 'examples', example), dir, {
    recursive: true,
    filter: (source) => !/[/\\](node_modules|dist|schemas)$/.test(source),
  });
  const path = join(dir, 'package.json');
  const manifest = JSON.parse(await readFile(path, 'utf8')) as {
    dependencies: Record<string, string>;
    overrides?: Record<string, string>;
  };
  for (const name of Object.keys(manifest.dependencies)) {
    const tarball = tarballs.get(name);
    if (name.startsWith('@sluice/')) {
      if (tarball === undefined) throw new Error(`${example} depends on unpublished ${name}`);
      manifest.dependencies[name] = `file:${tarball}`;
    }
  }
  manifest.overrides = Object.fromEntries(
    [...tarballs].map(([name, file]) => [name, `file:${file}`]),
  );
  await writeFile(path, JSON.stringify(manifest, null, 2));
}

/** A long-running command of the project, with what it printed so far. */
export interface RunningCommand {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

/** Starts a command and keeps its output. */
export function startCommand(
  command: string,
  args: readonly string[],
  options: { cwd: string; env: NodeJS.ProcessEnv },
): RunningCommand {
  const child = spawn(command, [...args], {
    cwd: options.cwd,
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  return { child, output: () => output, exited };
}
