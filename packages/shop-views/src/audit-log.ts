import { ERASED } from '@sluice/privacy';
import { shopCatalog, shopProtectedFields } from '@sluice/shop-catalog';
import { defineProjection } from '@sluice/projector';
import { sql } from 'kysely';

/** Payload fields that are personal data; an erasure replaces them with the marker. */
const PERSONAL_FIELDS = [
  ...new Set(Object.values(shopProtectedFields).flatMap((spec) => spec?.fields ?? [])),
];

/**
 * `views.audit_log`: every event with what happened, who did it, when and why. After
 * `customer.erased.v1` the customer's earlier entries keep what/who/when/why, and their personal
 * fields read `[erased]`: what a rebuild reads from the events once the customer's key is gone.
 */
export const auditLog = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'audit_log',
  aggregateTypes: ['customer', 'product', 'cart', 'order'],
  tables: ['views.audit_log'],
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
    await sql`
      INSERT INTO ${log} (event_id, aggregate_type, aggregate_id, version, type, occurred_at, actor, reason, correlation_id, data)
      SELECT * FROM unnest(
        ${events.map((e) => e.id)}::uuid[], ${events.map((e) => e.aggregateType)}::text[], ${events.map((e) => e.aggregateId)}::text[],
        ${events.map((e) => e.aggregateVersion)}::bigint[], ${events.map((e) => e.type)}::text[],
        ${events.map((e) => e.occurredAt)}::timestamptz[], ${events.map((e) => e.metadata.actor ?? null)}::text[],
        ${events.map((e) => e.metadata.reason ?? null)}::text[], ${events.map((e) => e.metadata.correlation_id ?? null)}::text[],
        ${events.map((e) => JSON.stringify(e.payload))}::jsonb[])
      ON CONFLICT (event_id) DO NOTHING`.execute(trx);
    const erased = events.filter((e) => e.type === 'customer.erased.v1').map((e) => e.aggregateId);
    if (erased.length > 0) {
      await sql`
        UPDATE ${log} SET data = data || (
          SELECT jsonb_object_agg(field, ${ERASED}::text) FROM jsonb_object_keys(data) AS field
           WHERE field = ANY(${PERSONAL_FIELDS}::text[]))
         WHERE aggregate_type = 'customer' AND aggregate_id = ANY(${erased}::text[])
           AND data ?| ${PERSONAL_FIELDS}::text[]`.execute(trx);
    }
  },
});
