import { arrayLiteral, type ArrayElement } from '@sluice/database/statements';
import { ERASED } from '@sluice/privacy';
import { shopCatalog, shopProtectedFields } from '@sluice/shop-catalog';
import { defineProjection, type ApplyContext } from '@sluice/projector';
import { sql } from 'kysely';

/** Payload fields that are personal data; an erasure replaces them with the marker. */
const PERSONAL_FIELDS = [
  ...new Set(Object.values(shopProtectedFields).flatMap((spec) => spec?.fields ?? [])),
];

/** Replaces the personal fields of the erased customers' entries with the marker. */
async function scrub(
  erasures: readonly { aggregateId: string }[],
  { trx, table }: ApplyContext<Record<string, never>>,
): Promise<void> {
  if (erasures.length === 0) return;
  await sql`
    UPDATE ${sql.table(table('views.audit_log'))} SET data = data || (
      SELECT jsonb_object_agg(field, ${ERASED}::text) FROM jsonb_object_keys(data) AS field
       WHERE field = ANY(${PERSONAL_FIELDS}::text[]))
     WHERE aggregate_type = 'customer'
       AND aggregate_id = ANY(${erasures.map((e) => e.aggregateId)}::text[])
       AND data ?| ${PERSONAL_FIELDS}::text[]`.execute(trx);
}

/**
 * `views.audit_log`: every event with what happened, who did it, when and why, personal fields
 * in clear text (it opts in to `personalData: 'reveal'`; the shop's other views do not). After
 * `customer.erased.v1` the customer's earlier entries keep what/who/when/why, and their personal
 * fields read `[erased]`: what a rebuild reads from the events once the customer's key is gone.
 */
export const auditLog = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'audit_log',
  // Shows who the customer is until the erasure, then scrubs it (below).
  personalData: 'reveal',
  aggregateTypes: ['customer', 'product', 'cart', 'order'],
  tables: ['views.audit_log'],
  // An erasure behind a customer's parked event scrubs at once, not when an operator acts.
  erasure: { types: ['customer.erased.v1'], forget: scrub },
  async createTables(trx, table) {
    const log = sql.table(table('views.audit_log'));
    await sql`
      CREATE TABLE ${log} (
        event_id uuid PRIMARY KEY,
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        version bigint NOT NULL,
        type text NOT NULL,
        occurred_at timestamptz NOT NULL,
        actor text,
        reason text,
        correlation_id text,
        data jsonb NOT NULL
      )`.execute(trx);
    await sql`CREATE INDEX ON ${log} (aggregate_type, aggregate_id, version)`.execute(trx);
  },
  async apply(events, { trx, table }) {
    const log = sql.table(table('views.audit_log'));
    const column = (of: (event: (typeof events)[number]) => ArrayElement) =>
      arrayLiteral(events.map(of));
    await sql`
      INSERT INTO ${log} (event_id, aggregate_type, aggregate_id, version, type, occurred_at, actor, reason, correlation_id, data)
      SELECT * FROM unnest(
        ${column((e) => e.id)}::uuid[], ${column((e) => e.aggregateType)}::text[], ${column((e) => e.aggregateId)}::text[],
        ${column((e) => e.aggregateVersion)}::bigint[], ${column((e) => e.type)}::text[],
        ${column((e) => e.occurredAt)}::timestamptz[], ${column((e) => e.metadata.actor ?? null)}::text[],
        ${column((e) => e.metadata.reason ?? null)}::text[], ${column((e) => e.metadata.correlation_id ?? null)}::text[],
        ${column((e) => JSON.stringify(e.payload))}::jsonb[])
      ON CONFLICT (event_id) DO NOTHING`.execute(trx);
    await scrub(
      events.filter((e) => e.type === 'customer.erased.v1'),
      { trx, table },
    );
  },
});
