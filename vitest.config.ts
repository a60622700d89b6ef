import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defineConfig } from 'vitest/config';

// Tests run workspace packages from source: `@sluice/x` resolves to its `src/index.ts`.
const workspaceDirs = ['packages', 'services'].flatMap((group) =>
  existsSync(group) ? readdirSync(group).map((name) => join(group, name)) : [],
);
workspaceDirs.push('infra/stack');
const alias = Object.fromEntries(
  workspaceDirs
    .filter((dir) => existsSync(join(dir, 'src', 'index.ts')))
    .map((dir) => {
      const { name } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name: string;
      };
      return [name, resolve(dir, 'src', 'index.ts')];
    }),
);

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
