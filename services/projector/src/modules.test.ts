import { isSluiceError } from '@sluice/errors';
import { projectorMigrations } from '@sluice/projector';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadProjectionModules, mergeMigrations, moduleSpecs } from './modules.js';

/** A module's source: projections named `names` (plain objects of a projection's shape), and `extra`. */
const moduleText = (names: readonly string[], extra = '') => `
const projection = (name) => ({
  name,
  catalog: { payloadErrors: () => [] },
  aggregateTypes: ['ticket'],
  tables: ['runner.' + name],
  createTables: async () => {},
  apply: async () => {},
});
${names.map((name) => `export const ${name} = projection('${name}');`).join('\n')}
${extra}`;

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-modules-'));
  const files: Record<string, string> = {
    'board.mjs': moduleText(
      ['board'],
      `export const migrations = { '0100_board': { async up() {} } };`,
    ),
    'tally.mjs': moduleText(
      ['tally'],
      `export { board as boardAgain } from './board.mjs';
       export const migrations = { '0100_board': { async up() { return 'other'; } } };`,
    ),
    'reexport.mjs': `export { board } from './board.mjs'; export { board as default } from './board.mjs';`,
    'half.mjs': `export const board = { name: 'board', apply: async () => {}, tables: [] };`,
    'bad-migrations.mjs': moduleText(['board'], `export const migrations = { '0100': 'CREATE' };`),
    'node_modules/team-views/package.json': JSON.stringify({
      name: 'team-views',
      exports: { '.': './views.mjs' },
    }),
    'node_modules/team-views/views.mjs': moduleText(['team']),
  };
  await mkdir(join(dir, 'node_modules', 'team-views'), { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
});

afterAll(() => rm(dir, { recursive: true, force: true }));

/** The code of the SluiceError `run` rejects with, and its message. */
async function failure(run: () => Promise<unknown>): Promise<string> {
  try {
    await run();
  } catch (error) {
    if (isSluiceError(error)) return `${error.code}: ${error.message}`;
    throw error;
  }
  throw new Error('expected a failure');
}

describe('loadProjectionModules', () => {
  it('finds paths (with or without ./) and packages from the working directory', async () => {
    const { projections, migrations } = await loadProjectionModules(
      ['board.mjs', './reexport.mjs', 'team-views'],
      dir,
    );
    expect(projections.map((p) => p.name)).toEqual(['board', 'team']);
    expect(Object.keys(migrations).sort()).toEqual(
      [...Object.keys(projectorMigrations), '0100_board'].sort(),
    );
    expect(migrations['0001_projector']).toBe(projectorMigrations['0001_projector']);
  });

  it('refuses a projection that lacks parts, naming them', async () => {
    expect(await failure(() => loadProjectionModules(['./half.mjs'], dir))).toBe(
      'projection_invalid: export board of ./half.mjs is not a whole projection: it lacks ' +
        'catalog.payloadErrors, aggregateTypes, createTables (make it with defineProjection from @sluice/projector)',
    );
  });

  it('refuses a migrations export that is not a map of migrations', async () => {
    expect(await failure(() => loadProjectionModules(['./bad-migrations.mjs'], dir))).toMatch(
      /^migrations_invalid: export migrations of \.\/bad-migrations\.mjs must map/,
    );
  });

  it('refuses two modules giving one migration name different migrations', async () => {
    expect(await failure(() => loadProjectionModules(['./board.mjs', './tally.mjs'], dir))).toBe(
      'migration_conflict: migration 0100_board is given differently by ./board.mjs and ./tally.mjs',
    );
  });

  it('runs a projection re-exported by another module once', async () => {
    const text = moduleText([], `export { board } from './board.mjs';`);
    await writeFile(join(dir, 'again.mjs'), text);
    const { projections } = await loadProjectionModules(['./board.mjs', './again.mjs'], dir);
    expect(projections.map((p) => p.name)).toEqual(['board']);
  });
});

describe('mergeMigrations', () => {
  const make = () => ({ async up() {} });

  it('keeps one of a migration given twice, by the same object or by the same code', () => {
    const [first, copy] = [make(), make()];
    const merged = mergeMigrations([
      { source: 'a', migrations: { m1: first } },
      { source: 'b', migrations: { m1: first } },
      { source: 'c', migrations: { m1: copy } },
    ]);
    expect(Object.keys(merged)).toEqual(['m1']);
    expect(merged.m1).toBe(first);
  });

  it('refuses one name given different migrations, naming who gave each', () => {
    expect(() =>
      mergeMigrations([
        { source: 'a', migrations: { m1: make() } },
        { source: 'b', migrations: { m1: { up: async () => Promise.resolve() } } },
      ]),
    ).toThrow('migration m1 is given differently by a and b');
  });
});

describe('moduleSpecs', () => {
  it('takes the operands, else PROJECTOR_MODULES split on commas', () => {
    expect(moduleSpecs(['./a.js'], './b.js')).toEqual(['./a.js']);
    expect(moduleSpecs([], ' ./b.js, @team/views ,')).toEqual(['./b.js', '@team/views']);
    expect(() => moduleSpecs([], '')).toThrow(/no projection module given/);
  });
});
