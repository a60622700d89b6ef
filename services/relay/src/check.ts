// `sluice-relay --check`: what would keep the relay from starting or from publishing, found
// without creating or changing anything (no slot, publication, table or topic).
import { errorMessage, isSluiceError } from '@sluice/errors';
import { createKafka, kafkaRefusal, kafkaSecurityOf, parseBrokers } from '@sluice/kafka';
import {
  createPublicationSql,
  outboxTable,
  replicationProblems,
  type ReplicationNames,
} from '@sluice/relay';
import { postgresTlsFailure } from '@sluice/service-kit';
import pg from 'pg';
import { replicationNames, type RelayConfig } from './config.js';

/** How long a connection may take: an unreachable host fails the check instead of hanging it. */
const CONNECT_TIMEOUT_MS = 5000;
/** How long all the checks of one server may take. */
const SERVER_TIMEOUT_MS = 8000;

/** What the check reads of PostgreSQL, in one query. */
export interface ServerFacts {
  wal_level: string;
  role: string;
  may_replicate: boolean;
  max_slots: number;
  slots_used: number;
  slot_exists: boolean;
  outbox_exists: boolean;
  may_read_outbox: boolean;
  publication_exists: boolean;
  /** Superuser, or owner of the outbox with CREATE on the database (PostgreSQL 15). */
  may_create_publication: boolean;
  /** The relay's tables (sluice.relay_slots, claim_checks, published_events) all exist. */
  relay_tables_exist: boolean;
  /** It may insert into those that exist, and create those that do not. */
  may_use_relay_tables: boolean;
}

/**
 * The problems `--check` reports, one line each, none when the relay can start: PostgreSQL or
 * Kafka out of reach, what logical replication needs of the server and the role, the outbox
 * table, and an existing publication or slot the relay would refuse.
 */
export async function checkRelay(config: RelayConfig): Promise<string[]> {
  const database = describeDatabase(config.DATABASE_URL);
  const brokers = parseBrokers(config.KAFKA_BROKERS);
  const found = await Promise.all([
    within(`PostgreSQL at ${database}`, () => postgresProblems(config, database)),
    within(`Kafka at ${brokers.join(',')}`, () => kafkaProblems(config, brokers)),
  ]);
  return found.flat().map((line) => line.replace(/\s*\n\s*/g, ' '));
}

/** What `--check` says of the settings PostgreSQL reported; `database` names it in the lines. */
export function serverProblems(
  facts: ServerFacts,
  names: ReplicationNames,
  database: string,
): string[] {
  const problems: string[] = [];
  if (facts.wal_level !== 'logical') {
    problems.push(
      `PostgreSQL at ${database} has wal_level=${facts.wal_level}; the relay reads the WAL through logical replication and needs wal_level=logical (set it in postgresql.conf and restart the server)`,
    );
  }
  if (!facts.may_replicate) {
    problems.push(
      `Role ${facts.role} may not replicate (it has neither REPLICATION nor SUPERUSER); the relay reads the WAL through a replication connection: ALTER ROLE ${pg.escapeIdentifier(facts.role)} REPLICATION;`,
    );
  }
  if (!facts.slot_exists && facts.slots_used >= facts.max_slots) {
    problems.push(
      `PostgreSQL at ${database} has no free replication slot for ${names.slot} (max_replication_slots=${facts.max_slots}, ${facts.slots_used} in use): drop slots no longer used (pg_drop_replication_slot) or raise max_replication_slots and restart the server`,
    );
  }
  const { schema, table } = names.outbox;
  if (facts.outbox_exists && !facts.may_read_outbox) {
    const role = pg.escapeIdentifier(facts.role);
    problems.push(
      `Role ${facts.role} may not read ${schema}.${table}, which the relay reads to publish the rows committed before its slot: ` +
        `GRANT USAGE ON SCHEMA ${schema} TO ${role}; GRANT SELECT ON ${schema}.${table} TO ${role};`,
    );
  }
  problems.push(...privilegeProblems(facts, names));
  if (!facts.outbox_exists) {
    problems.push(
      `Table ${schema}.${table} (RELAY_OUTBOX_SCHEMA, RELAY_OUTBOX_TABLE) does not exist in ${database}; the relay waits for it. ` +
        `Create it with @sluice/outbox: outboxMigrations({ schema: '${schema}' }) with Kysely's Migrator, or run the SQL of outboxSchemaSql('${schema}')`,
    );
  }
  return problems;
}

/** What the role lacks for the publication and the relay's own tables. */
function privilegeProblems(facts: ServerFacts, names: ReplicationNames): string[] {
  const problems: string[] = [];
  const role = pg.escapeIdentifier(facts.role);
  if (facts.outbox_exists && !facts.publication_exists && !facts.may_create_publication) {
    problems.push(
      `Publication ${names.publication} does not exist and role ${facts.role} may not create it (PostgreSQL requires ownership of ${names.outbox.schema}.${names.outbox.table} and CREATE on the database): ` +
        `have an administrator create it: ${createPublicationSql(names, outboxTable(names))};`,
    );
  }
  if (!facts.may_use_relay_tables) {
    const missing = facts.relay_tables_exist ? '' : ' and create those missing';
    problems.push(
      `Role ${facts.role} may not write the relay's tables in schema sluice (relay_slots, claim_checks, published_events)${missing}: ` +
        `GRANT USAGE, CREATE ON SCHEMA sluice TO ${role}; or, when an administrator created them, GRANT SELECT, INSERT, UPDATE, DELETE ON sluice.relay_slots, sluice.claim_checks, sluice.published_events TO ${role};`,
    );
  }
  return problems;
}

async function postgresProblems(config: RelayConfig, database: string): Promise<string[]> {
  const client = new pg.Client({
    connectionString: config.DATABASE_URL,
    application_name: 'sluice-relay-check',
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: CONNECT_TIMEOUT_MS,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    const tls = postgresTlsFailure(error, config.DATABASE_URL);
    return [tls === undefined ? connectProblem(database, error) : `${tls.code}: ${tls.message}`];
  }
  try {
    // Whatever runs below, it cannot create or change a table or a publication.
    await client.query('BEGIN READ ONLY');
    const names = replicationNames(config);
    const facts = await readFacts(client, names);
    const problems = serverProblems(facts, names, database);
    if (!facts.may_read_outbox) return problems;
    const refused = await replicationProblems(client, names);
    return [...problems, ...refused.map((error) => `${error.code}: ${error.message}`)];
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function readFacts(client: pg.Client, names: ReplicationNames): Promise<ServerFacts> {
  // The outbox is looked up in the catalog: to_regclass fails without USAGE on its schema.
  const { rows } = await client.query<ServerFacts>(
    `SELECT current_setting('wal_level') AS wal_level,
            current_user AS role,
            (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS may_replicate,
            current_setting('max_replication_slots')::int AS max_slots,
            (SELECT count(*)::int FROM pg_replication_slots) AS slots_used,
            EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1) AS slot_exists,
            outbox.oid IS NOT NULL AS outbox_exists,
            COALESCE(has_schema_privilege(outbox.relnamespace, 'USAGE')
                     AND has_table_privilege(outbox.oid, 'SELECT'), false) AS may_read_outbox,
            EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $4) AS publication_exists,
            COALESCE((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
              OR (COALESCE(pg_has_role(outbox.relowner, 'USAGE'), false)
                  AND has_database_privilege(current_database(), 'CREATE')) AS may_create_publication,
            relay.tables = 3 AS relay_tables_exist,
            relay.writable = relay.tables
              AND (relay.tables = 3
                   OR COALESCE(has_schema_privilege(to_regnamespace('sluice'), 'USAGE')
                              AND has_schema_privilege(to_regnamespace('sluice'), 'CREATE'),
                               has_database_privilege(current_database(), 'CREATE'))) AS may_use_relay_tables
       FROM (SELECT) AS server
       CROSS JOIN (SELECT count(*)::int AS tables,
                          count(*) FILTER (WHERE has_schema_privilege(c.relnamespace, 'USAGE')
                                             AND has_table_privilege(c.oid, 'INSERT'))::int AS writable
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'sluice'
                      AND c.relname IN ('relay_slots', 'claim_checks', 'published_events')) AS relay
       LEFT JOIN (SELECT c.oid, c.relnamespace, c.relowner FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = $2 AND c.relname = $3 AND c.relkind IN ('r', 'p')) AS outbox ON true`,
    [names.slot, names.outbox.schema, names.outbox.table, names.publication],
  );
  const [facts] = rows;
  if (facts === undefined) throw new Error('PostgreSQL returned no row');
  return facts;
}

function connectProblem(database: string, error: unknown): string {
  if (error instanceof pg.DatabaseError) {
    // SQLSTATE class 28: the server refused the user or the password.
    const hint = error.code?.startsWith('28') === true ? '; check the user and password' : '';
    return `PostgreSQL at ${database} refused the connection: ${error.message}${hint}`;
  }
  return `PostgreSQL at ${database} is unreachable: ${reason(error)}`;
}

async function kafkaProblems(config: RelayConfig, brokers: string[]): Promise<string[]> {
  const admin = createKafka({
    clientId: 'sluice-relay-check',
    brokers,
    security: kafkaSecurityOf(config),
    connectionTimeoutMs: CONNECT_TIMEOUT_MS,
    retry: { retries: 1, initialRetryTime: 200 },
  }).admin();
  try {
    await admin.connect();
    await admin.describeCluster();
    return [];
  } catch (error) {
    const refusal = kafkaRefusal(error, brokers);
    if (refusal !== undefined) return [`${refusal.code}: ${refusal.message}`];
    return [`Kafka at ${brokers.join(',')} is unreachable: ${reason(error)}`];
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** `check`'s lines; one line instead when it fails or takes longer than SERVER_TIMEOUT_MS. */
async function within(server: string, check: () => Promise<string[]>): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string[]>((resolve) => {
    timer = setTimeout(
      () => resolve([`${server} did not answer within ${SERVER_TIMEOUT_MS / 1000} s`]),
      SERVER_TIMEOUT_MS,
    );
  });
  const checked = check().catch((error: unknown) => [
    `${server}: ${isSluiceError(error) ? `${error.code}: ` : ''}${reason(error)}`,
  ]);
  try {
    return await Promise.race([checked, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Where a PostgreSQL URL points, without its credentials: `host:port/database`. */
function describeDatabase(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '5432'}${parsed.pathname}`;
  } catch {
    return 'DATABASE_URL (not a URL)';
  }
}

/** An error's message; a connect refused on every address of a host has only a code. */
function reason(error: unknown): string {
  const message = errorMessage(error);
  if (message !== '') return message;
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : String(error);
}
