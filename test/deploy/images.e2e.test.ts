// The images of shop-api, the projector and the console (services/*/Dockerfile): each deploy
// step run for real, the program then started outside the workspace on what it copied.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const scratch = mkdtempSync(join(tmpdir(), 'sluice-images-'));

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(
  command: string,
  args: readonly string[],
  cwd: string,
  env: Record<string, string> = {},
): Promise<{ code: number | null; output: string }> {
  const child = spawn(command, args, {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((done) => child.once('exit', (code) => done({ code, output })));
}

/** Runs the Dockerfile's `RUN pnpm … deploy <target>` into the scratch directory; its path. */
async function deploy(service: string, target: string): Promise<string> {
  const dockerfile = readFileSync(join(rootDir, 'services', service, 'Dockerfile'), 'utf8');
  expect(dockerfile).toMatch(/^USER node$/m);
  const pattern = new RegExp(`^RUN pnpm (.+ deploy) ${target}$`, 'm');
  const step = pattern.exec(dockerfile)?.[1];
  expect(step, `services/${service}/Dockerfile deploys to ${target}`).toBeDefined();
  expect(step).toContain('--prod');
  const dir = join(scratch, service, target.slice(1));
  const deployed = await run('pnpm', [...(step ?? '').split(' '), dir], rootDir);
  expect(deployed.code, deployed.output).toBe(0);
  return dir;
}

function expectOwnCopies(app: string, names: readonly string[]): void {
  const fromApp = createRequire(join(app, 'package.json'));
  const inside = realpathSync(app) + sep;
  for (const name of names) {
    const path = realpathSync(fromApp.resolve(name));
    expect(path.startsWith(inside), `${name} at ${path}`).toBe(true);
  }
  expect(existsSync(join(app, 'node_modules', 'vitest')), 'no devDependencies').toBe(false);
}

describe.concurrent('service images', () => {
  it('deploys shop-api, which starts outside the workspace as far as its settings', async () => {
    const app = await deploy('shop-api', '/app');
    expectOwnCopies(app, ['fastify', 'pg', '@sluice/database']);
    const started = await run(process.execPath, [join(app, 'dist', 'main.js')], scratch, {
      API_PORT: 'none',
    });
    expect(started.code).toBe(78);
    expect(started.output).toContain('shop-api: API_PORT must be integer');
  });

  it('deploys the projector and the shop views it runs in the default image', async () => {
    const [app, views] = await Promise.all([
      deploy('projector', '/app'),
      deploy('projector', '/views'),
    ]);
    expectOwnCopies(app, ['kafkajs', 'pg', '@sluice/projector']);
    const help = await run(process.execPath, [join(app, 'dist', 'main.js'), '--help'], scratch);
    expect(help.code, help.output).toBe(0);
    expect(help.output).toMatch(/^Usage: sluice-projector /);
    const dockerfile = readFileSync(join(rootDir, 'services', 'projector', 'Dockerfile'), 'utf8');
    const module = /^ENV PROJECTOR_MODULES=\/srv\/shop-views\/(.+)$/m.exec(dockerfile)?.[1];
    expect(module).toBeDefined();
    const exported = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `console.log(Object.keys(await import('./${module}')).join(','))`,
      ],
      views,
    );
    expect(exported.code, exported.output).toBe(0);
    expect(exported.output).toContain('migrations');
  });

  it('deploys the console with its built pages', async () => {
    const app = await deploy('console', '/app');
    expectOwnCopies(app, ['fastify', 'pg', 'kafkajs', '@fastify/static']);
    expect(readFileSync(join(app, 'web', 'dist', 'index.html'), 'utf8')).toContain('<div');
    const help = await run(process.execPath, [join(app, 'dist', 'main.js'), '--help'], scratch);
    expect(help.code, help.output).toBe(0);
    expect(help.output).toMatch(/^Usage: sluice-console /);
  });
});
