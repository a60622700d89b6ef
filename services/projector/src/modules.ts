// Projection modules: the files or packages a team names, imported, and what they export.
import type { migrate } from '@sluice/database';
import { SluiceError, errorMessage } from '@sluice/errors';
import { projectorMigrations, type Projection } from '@sluice/projector';
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The codes of the SluiceErrors module loading throws; each means an operator must act. */
export type ModuleErrorCode =
  | 'modules_missing'
  | 'module_not_found'
  | 'module_failed'
  | 'module_without_projection'
  | 'projection_invalid'
  | 'projection_duplicate'
  | 'migrations_invalid'
  | 'migration_conflict';

/** Kysely migrations by name (`Record<string, Migration>`), as `migrate` applies them. */
export type Migrations = Parameters<typeof migrate>[2];
type Migration = Migrations[string];

/** What the modules give together. */
export interface ProjectionModules {
  /** Every projection they export, in the order given. */
  projections: Projection[];
  /** Their `migrations` exports merged with the projector's own (`projectorMigrations`). */
  migrations: Migrations;
}

/** A set of migrations and who gave it, for the message of a conflict. */
export interface MigrationSource {
  source: string;
  migrations: Readonly<Migrations>;
}

const fail = (code: ModuleErrorCode, message: string): never => {
  throw new SluiceError<ModuleErrorCode>(code, message);
};

/** What the projector reads of a projection, each with its check. */
const PROJECTION_PARTS = {
  name: (p: Record<string, unknown>) => typeof p.name === 'string',
  'catalog.payloadErrors': (p: Record<string, unknown>) =>
    typeof (p.catalog as { payloadErrors?: unknown } | undefined)?.payloadErrors === 'function',
  aggregateTypes: (p: Record<string, unknown>) => Array.isArray(p.aggregateTypes),
  tables: (p: Record<string, unknown>) => Array.isArray(p.tables),
  createTables: (p: Record<string, unknown>) => typeof p.createTables === 'function',
  apply: (p: Record<string, unknown>) => typeof p.apply === 'function',
};

/** The parts of a projection `value` lacks; undefined when it is nothing like one. */
function missingParts(value: unknown): string[] | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const candidate = value as Record<string, unknown>;
  if (!PROJECTION_PARTS.name(candidate) || !PROJECTION_PARTS.apply(candidate)) return undefined;
  return Object.entries(PROJECTION_PARTS)
    .filter(([, has]) => !has(candidate))
    .map(([part]) => part);
}

/** The file `spec` names: a path from `cwd`, or a package resolved from `cwd`, else from here. */
function locate(spec: string, cwd: string): string {
  const path = resolve(cwd, spec);
  const isFile = () => statSync(path, { throwIfNoEntry: false })?.isFile() === true;
  if (spec.startsWith('.') || isAbsolute(spec)) {
    return isFile() ? pathToFileURL(path).href : fail('module_not_found', notFound(spec, cwd));
  }
  try {
    const found = createRequire(join(cwd, 'package.json')).resolve(spec);
    return isAbsolute(found) ? pathToFileURL(found).href : found;
  } catch {
    // `dist/projections.js` is a path too; a package that only exports to `import` is found by
    // importing it from the runner's own installation.
    return isFile() ? pathToFileURL(path).href : spec;
  }
}

const notFound = (spec: string, cwd: string) =>
  `cannot find module ${spec} (from ${cwd}): give a path or a package installed there`;

/** Imports the module `spec` names; its failure, whatever it is, as one line. */
async function importModule(spec: string, cwd: string): Promise<Record<string, unknown>> {
  const target = locate(spec, cwd);
  try {
    return (await import(target)) as Record<string, unknown>;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (target === spec && code === 'ERR_MODULE_NOT_FOUND' && errorMessage(error).includes(spec))
      fail('module_not_found', notFound(spec, cwd));
    return fail('module_failed', `module ${spec} failed to load: ${oneLine(errorMessage(error))}`);
  }
}

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, ' ');

/** The projections a module exports (each object once, though exported under several names). */
function projectionsOf(spec: string, exports: Record<string, unknown>): Projection[] {
  const found = new Set<Projection>();
  for (const [name, value] of Object.entries(exports)) {
    const missing = missingParts(value);
    if (missing === undefined) continue;
    if (missing.length > 0)
      fail(
        'projection_invalid',
        `export ${name} of ${spec} is not a whole projection: it lacks ${missing.join(', ')} ` +
          '(make it with defineProjection from @sluice/projector)',
      );
    found.add(value as Projection);
  }
  if (found.size === 0)
    fail(
      'module_without_projection',
      `module ${spec} exports no projection (export the results of defineProjection from @sluice/projector)`,
    );
  return [...found];
}

/** A module's `migrations` export, checked: names to objects with an `up` function. */
function migrationsOf(spec: string, exports: Record<string, unknown>): MigrationSource {
  const migrations: unknown = exports.migrations ?? {};
  const valid =
    typeof migrations === 'object' &&
    migrations !== null &&
    Object.values(migrations).every(
      (m) => typeof (m as { up?: unknown } | null)?.up === 'function',
    );
  if (!valid)
    fail(
      'migrations_invalid',
      `export migrations of ${spec} must map migration names to Kysely migrations ({ up(db) })`,
    );
  return { source: spec, migrations: migrations as Migrations };
}

// Two copies of one package (a runner installed apart from the team's project) give the same
// migration as two objects: the same code is the same migration.
const sameMigration = (a: Migration, b: Migration) =>
  a === b ||
  (a.up.toString() === b.up.toString() &&
    String(a.down?.toString()) === String(b.down?.toString()));

/**
 * Merges sets of migrations into one: a name given twice must be the same migration.
 *
 * @throws SluiceError `migration_conflict`
 */
export function mergeMigrations(sources: readonly MigrationSource[]): Migrations {
  const merged: Migrations = {};
  const givenBy: Record<string, string> = {};
  for (const { source, migrations } of sources) {
    for (const [name, migration] of Object.entries(migrations)) {
      const earlier = merged[name];
      if (earlier === undefined) {
        merged[name] = migration;
        givenBy[name] = source;
      } else if (!sameMigration(earlier, migration)) {
        fail(
          'migration_conflict',
          `migration ${name} is given differently by ${givenBy[name] ?? '?'} and ${source}`,
        );
      }
    }
  }
  return merged;
}

/**
 * Every projection once (a module may re-export another's), refusing two of one name: they
 * would share checkpoints and a consumer group.
 */
export function distinctProjections(
  found: readonly { spec: string; projections: readonly Projection[] }[],
): Projection[] {
  const byName = new Map<string, { projection: Projection; spec: string }>();
  for (const { spec, projections } of found) {
    for (const projection of projections) {
      const earlier = byName.get(projection.name);
      if (earlier === undefined) byName.set(projection.name, { projection, spec });
      else if (earlier.projection !== projection)
        fail(
          'projection_duplicate',
          `projection ${projection.name} is exported by ${earlier.spec === spec ? `${spec} twice` : `both ${earlier.spec} and ${spec}`}`,
        );
    }
  }
  return [...byName.values()].map(({ projection }) => projection);
}

/**
 * The modules to load: the operands, or else the comma-separated `PROJECTOR_MODULES`.
 *
 * @throws SluiceError `modules_missing` when both are empty
 */
export function moduleSpecs(operands: readonly string[], modulesSetting: string): string[] {
  const specs =
    operands.length > 0 ? [...operands] : modulesSetting.split(',').map((spec) => spec.trim());
  const given = specs.filter((spec) => spec !== '');
  if (given.length === 0)
    fail(
      'modules_missing',
      'no projection module given: name one or more on the command line or in PROJECTOR_MODULES',
    );
  return given;
}

/**
 * Imports projection modules and collects what they export: every projection (an export made
 * with `defineProjection`) and an optional `migrations` export, a Kysely `Record<string,
 * Migration>` run before start with the projector's own. Each spec is a path (relative to
 * `cwd`) or a package name resolved from `cwd`. Every failure is a one-line SluiceError.
 *
 * @throws SluiceError with a {@link ModuleErrorCode}
 * @example const { projections, migrations } = await loadProjectionModules(['./dist/projections.js'], process.cwd());
 */
export async function loadProjectionModules(
  specs: readonly string[],
  cwd: string,
): Promise<ProjectionModules> {
  const found: { spec: string; projections: Projection[]; migrations: MigrationSource }[] = [];
  for (const spec of specs) {
    const exports = await importModule(spec, cwd);
    found.push({
      spec,
      projections: projectionsOf(spec, exports),
      migrations: migrationsOf(spec, exports),
    });
  }
  return {
    projections: distinctProjections(found),
    migrations: mergeMigrations([
      { source: '@sluice/projector', migrations: projectorMigrations },
      ...found.map((module) => module.migrations),
    ]),
  };
}
