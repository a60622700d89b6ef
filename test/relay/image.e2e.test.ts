// The relay image's deploy step (services/relay/Dockerfile), run for real: the relay and its
// production dependencies copied out of the workspace, where it runs on its own, with kafkajs
// carrying the repository's patch.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const scratch = mkdtempSync(join(tmpdir(), 'sluice-relay-image-'));
const app = join(scratch, 'app');

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(
  command: string,
  args: readonly string[],
  cwd: string,
): Promise<{ code: number | null; output: string }> {
  const child = spawn(command, args, {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((done) => child.once('exit', (code) => done({ code, output })));
}

it('deploys the relay outside the workspace, where it runs with the patched kafkajs', async () => {
  const dockerfile = readFileSync(join(rootDir, 'services', 'relay', 'Dockerfile'), 'utf8');
  const deploy = /^RUN pnpm (.+ deploy) \/app$/m.exec(dockerfile)?.[1];
  expect(deploy, 'the Dockerfile deploys to /app with pnpm').toBeDefined();
  const deployed = await run('pnpm', [...(deploy ?? '').split(' '), app], rootDir);
  expect(deployed.code, deployed.output).toBe(0);

  const main = join(app, 'dist', 'main.js');
  expect(readFileSync(main, 'utf8').split('\n')[0]).toBe('#!/usr/bin/env node');
  const help = await run(process.execPath, [main, '--help'], scratch);
  expect(help.code, help.output).toBe(0);
  expect(help.output).toMatch(/^Usage: sluice-relay /);

  const fromApp = createRequire(join(app, 'package.json'));
  const inside = realpathSync(app) + sep;
  for (const name of ['kafkajs', 'pg', '@sluice/relay', '@sluice/service-kit']) {
    const path = realpathSync(fromApp.resolve(name));
    expect(path.startsWith(inside), `${name} at ${path}`).toBe(true);
  }
  const headerDecoder = fromApp('kafkajs/src/protocol/recordBatch/header/v0/decoder') as {
    valuesAsStrings?: unknown;
  };
  expect(headerDecoder.valuesAsStrings).toBe(false);
});
