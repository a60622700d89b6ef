// What `sluice-projector --check` finds missing of its role's privileges: the schemas its
// projections' tables live in, its bookkeeping in sluice, and migrations it could not apply.
import { sql, type Kysely } from 'kysely';

/** The bookkeeping tables in sluice and what the projector does to each. */
const BOOKKEEPING: Readonly<Record<string, string>> = {
  projection_checkpoints: 'SELECT, INSERT, UPDATE, DELETE',
  projection_versions: 'SELECT, INSERT, UPDATE, DELETE',
  parked_events: 'SELECT, INSERT, UPDATE, DELETE',
  projection_generations: 'SELECT, INSERT, UPDATE, DELETE',
  projection_offset_gaps: 'SELECT, INSERT, UPDATE, DELETE',
  projection_applied_batches: 'SELECT, INSERT, UPDATE, DELETE',
  operator_audit: 'SELECT, INSERT',
  projector_migrations: 'SELECT',
  // Made by the relay; payloads too large for Kafka.
  claim_checks: 'SELECT',
};

/** What the check reads of PostgreSQL, in one query. */
export interface PrivilegeFacts {
  role: string;
  /** Schema sluice exists (a first start as its owner-to-be creates it). */
  sluice_exists: boolean;
  /** Superuser, or USAGE on schema sluice. */
  uses_sluice: boolean;
  /** It may create tables in sluice (to apply migrations). */
  creates_in_sluice: boolean;
  /** Bookkeeping tables that exist and lack a privilege, with the privileges needed. */
  unwritable: { table: string; privileges: string }[];
  /** Schemas of the projections' tables: whether each exists and may be created in. */
  schemas: { schema: string; exists: boolean; usable: boolean }[];
  /** It may create a schema (CREATE on the database). */
  creates_schemas: boolean;
  /** Migrations not recorded in sluice.projector_migrations (all, when it does not exist). */
  pending: string[];
}

/** `name` as an SQL identifier. */
const identifier = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** The problem lines for `facts`, one per missing privilege, each with the SQL that grants it. */
export function privilegeProblems(facts: PrivilegeFacts): string[] {
  const role = identifier(facts.role);
  const who = `Role ${facts.role}`;
  if (!facts.sluice_exists) {
    // A first start creates it and applies every migration.
    if (facts.creates_schemas) return schemaProblems(facts, role);
    return [
      `Schema sluice does not exist and role ${facts.role} may not create it: apply the projector's migrations as the schema owner first (sluice-projector with the owner's DATABASE_URL)`,
    ];
  }
  if (!facts.uses_sluice) {
    return [
      `${who} may not use schema sluice, where the projector keeps its bookkeeping: GRANT USAGE ON SCHEMA sluice TO ${role}; (infra/postgres/roles.sql grants the rest)`,
    ];
  }
  const problems: string[] = [];
  if (facts.pending.length > 0 && !facts.creates_in_sluice) {
    problems.push(
      `Migrations ${facts.pending.join(', ')} are not applied and role ${facts.role} may not apply them (no CREATE on schema sluice): apply them as the schema owner first (sluice-projector with the owner's DATABASE_URL)`,
    );
  }
  if (facts.unwritable.length > 0) {
    const grants = facts.unwritable.map(
      (t) => `GRANT ${t.privileges} ON sluice.${t.table} TO ${role};`,
    );
    problems.push(
      `${who} may not write the projector's bookkeeping (${facts.unwritable.map((t) => `sluice.${t.table}`).join(', ')}): ${grants.join(' ')}`,
    );
  }
  return [...problems, ...schemaProblems(facts, role)];
}

/** What the role lacks for the schemas of the projections' tables. */
function schemaProblems(facts: PrivilegeFacts, role: string): string[] {
  const problems: string[] = [];
  for (const { schema, exists, usable } of facts.schemas) {
    const name = identifier(schema);
    if (!exists && !facts.creates_schemas) {
      problems.push(
        `Schema ${schema} of the projections' tables does not exist and role ${facts.role} may not create it: CREATE SCHEMA ${name} AUTHORIZATION ${role};`,
      );
    } else if (exists && !usable) {
      problems.push(
        `Role ${facts.role} may not create the projections' tables in schema ${schema} (it needs USAGE and CREATE, or to own it): ALTER SCHEMA ${name} OWNER TO ${role};`,
      );
    }
  }
  return problems;
}

/** Reads {@link PrivilegeFacts} through `db`, changing nothing. */
export async function readPrivilegeFacts<DB>(
  db: Kysely<DB>,
  schemas: readonly string[],
  migrations: readonly string[],
): Promise<PrivilegeFacts> {
  // Tables are found in the catalog: to_regclass fails without USAGE on their schema.
  const { rows } = await sql<PrivilegeFacts & { migrated: boolean }>`
    WITH sluice AS (SELECT oid FROM pg_namespace WHERE nspname = 'sluice')
     SELECT current_user AS role,
            EXISTS (SELECT FROM sluice) AS sluice_exists,
            COALESCE(has_schema_privilege((SELECT oid FROM sluice), 'USAGE'), false) AS uses_sluice,
            COALESCE(has_schema_privilege((SELECT oid FROM sluice), 'CREATE'), false) AS creates_in_sluice,
            has_database_privilege(current_database(), 'CREATE') AS creates_schemas,
            COALESCE((SELECT json_agg(json_build_object('table', c.relname, 'privileges', wanted.privileges))
                        FROM json_each_text(${JSON.stringify(BOOKKEEPING)}::json) AS wanted(name, privileges)
                        JOIN pg_class c ON c.relname = wanted.name
                         AND c.relnamespace = (SELECT oid FROM sluice)
                       -- has_table_privilege is true when any one of several is held.
                       WHERE NOT (SELECT bool_and(has_table_privilege(c.oid, trim(p)))
                                    FROM unnest(string_to_array(wanted.privileges, ',')) AS p)), '[]') AS unwritable,
            COALESCE((SELECT json_agg(json_build_object(
                               'schema', s.name, 'exists', n.oid IS NOT NULL,
                               'usable', COALESCE(has_schema_privilege(n.oid, 'USAGE')
                                                  AND has_schema_privilege(n.oid, 'CREATE'), false)))
                        FROM unnest(${schemas}::text[]) AS s(name)
                        LEFT JOIN pg_namespace n ON n.nspname = s.name), '[]') AS schemas,
            EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = 'projector_migrations'
                       AND c.relnamespace = (SELECT oid FROM sluice)) AS migrated`.execute(db);
  const [facts] = rows;
  if (facts === undefined) throw new Error('PostgreSQL returned no row');
  const { migrated, ...rest } = facts;
  return { ...rest, pending: await pendingMigrations(db, migrated, migrations, facts) };
}

async function pendingMigrations<DB>(
  db: Kysely<DB>,
  migrated: boolean,
  names: readonly string[],
  facts: Pick<PrivilegeFacts, 'uses_sluice' | 'unwritable'>,
): Promise<string[]> {
  if (!migrated) return [...names];
  const readable =
    facts.uses_sluice && !facts.unwritable.some((t) => t.table === 'projector_migrations');
  if (!readable) return [];
  const { rows } = await sql<{ name: string }>`
    SELECT name FROM unnest(${names}::text[]) AS wanted(name)
     WHERE NOT EXISTS (SELECT 1 FROM sluice.projector_migrations m WHERE m.name = wanted.name)
     ORDER BY name`.execute(db);
  return rows.map((row) => row.name);
}
