import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defineConfig } from 'vitest/config';

// Tests run workspace packages from source: `@sluice/x` resolves to its `src/index.ts`.
const workspaceDirs = ['packages', 'services'].flatMap((group) =>
  existsSync(group) ? readdirSync(group).map((name) => join(group, name)) : [],
);
workspaceDirs.push('infra/stack');
// Every entry a package exports (`.` and subpaths such as `@sluice/projector/applied-versions`),
// matched exactly: a plain prefix alias would send a subpath to `src/index.ts/...`.
const alias = workspaceDirs
  .filter((dir) => existsSync(join(dir, 'src', 'index.ts')))
  .flatMap((dir) => {
    const { name, exports = {} } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
      name: string;
      exports?: Record<string, { source?: string }>;
    };
    const entries = Object.entries(exports).filter(([, entry]) => entry.source !== undefined);
    if (entries.length === 0) entries.push(['.', { source: './src/index.ts' }]);
    return entries.map(([subpath, entry]) => ({
      find: new RegExp(`^${(name + subpath.slice(1)).replace(/[/.]/g, '\\$&')}$`),
      replacement: resolve(dir, entry.source ?? ''),
    }));
  });

const sources = ['packages/*/src/**', 'services/*/src/**', 'infra/stack/src/**'];
const crossProcess = {
  globalSetup: ['test/setup/global-setup.ts'],
  // Suites that cross a process wait on real servers; give them room, never sleeps.
  testTimeout: 120_000,
  hookTimeout: 180_000,
};

export default defineConfig({
  resolve: { alias },
  test: {
    // Two files at a time, whatever the machine: int and e2e files mostly wait on servers, and
    // each has its own database, slot and topics (and its own servers where it restarts them).
    // One, the default on two cores, left CI near 30 minutes; more would start more JVMs at once.
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: sources.map((dir) => `${dir}/*.test.ts`),
          exclude: ['**/*.int.test.ts', '**/*.e2e.test.ts', '**/node_modules/**', '**/dist/**'],
        },
      },
      {
        extends: true,
        test: {
          name: 'int',
          include: [...sources.map((dir) => `${dir}/*.int.test.ts`), 'test/**/*.int.test.ts'],
          ...crossProcess,
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['test/**/*.e2e.test.ts'],
          ...crossProcess,
        },
      },
    ],
  },
});
