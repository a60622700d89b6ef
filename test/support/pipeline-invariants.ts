// Test support: the pipeline's promises checked against the outbox it was given — every event in
// Kafka with its exact payload, per aggregate on one partition in version order; every view equal
// to the fold of the events; each event applied once by each projection that reads it; nothing
// parked or dead-lettered. Each check returns readable violations instead of throwing, so a
// failing run can show all of them at once.
import { deadLetterTopicFor, topicFor } from '@sluice/contracts';
import { errorMessage } from '@sluice/errors';
import { auditLog, cartSummary, productSales, removedThenBought } from '@sluice/shop-views';
import { testKafka, waitFor } from '@sluice/testkit';
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { ERASED } from '@sluice/privacy';
import { shopProtectedFields } from '@sluice/shop-catalog';
import { testPrivacy } from './privacy.js';
import {
  checkDelivery,
  outboxIndex,
  readTopic,
  topicSize,
  type ReadRecord,
} from '../relay/harness.js';

/** The shop's projections, as the projector runs them by default. */
export const shopProjections = [cartSummary, productSales, removedThenBought, auditLog];

/** The topics the shop's projections read and dead-letter to, under `prefix`. */
export function shopTopics(prefix: string): string[] {
  return [
    ...new Set(shopProjections.flatMap((p) => p.aggregateTypes.map((t) => topicFor(t, prefix)))),
    ...shopProjections.map((p) => deadLetterTopicFor(p.name, prefix)),
  ];
}

/** Violations by invariant; an invariant that holds has none. */
export type Violations = Record<string, string[]>;

export interface KafkaReport {
  violations: Violations;
  records: number;
  duplicates: number;
  claimChecked: number;
}

async function topicsOf(brokers: readonly string[]): Promise<Set<string>> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    return new Set(await admin.listTopics());
  } finally {
    await admin.disconnect();
  }
}

/** Each outbox event's aggregate type and payload digest, and which claim checks hold it exactly. */
async function outboxPayloads(pool: pg.Pool) {
  const { rows } = await pool.query<{ id: string; aggregate_type: string; digest: string }>(
    'SELECT id::text, aggregate_type, md5(payload::text) AS digest FROM shop.outbox',
  );
  const claims = await pool
    .query<{ id: string; same: boolean }>(
      `SELECT c.event_id::text AS id, c.payload = o.payload AS same
         FROM sluice.claim_checks c JOIN shop.outbox o ON o.id = c.event_id`,
    )
    .catch(() => ({ rows: [] }));
  return {
    events: new Map(rows.map((r) => [r.id, r])),
    claims: new Map(claims.rows.map((r) => [r.id, r.same])),
  };
}

/** Why `record` (read from the topic of `type`) does not carry event `record.id` as stored. */
function payloadViolation(
  type: string,
  record: ReadRecord,
  expected: { aggregate_type: string; digest: string },
  claims: Map<string, boolean>,
): string | undefined {
  const where = `${record.id} (${type} ${record.key} v${record.version}, partition ${record.partition} offset ${record.offset})`;
  if (expected.aggregate_type !== type) return `${where} is an event of ${expected.aggregate_type}`;
  if (record.value !== null) {
    const digest = createHash('md5').update(record.value).digest('hex');
    return digest === expected.digest
      ? undefined
      : `${where}: value (${record.value.length} chars) differs from the stored payload`;
  }
  if (record.headers.ce_dataref !== `urn:sluice:claim-check:${record.id}`)
    return `${where}: no value and ce_dataref ${String(record.headers.ce_dataref)}`;
  if (claims.get(record.id) !== true)
    return `${where}: claim check ${claims.has(record.id) ? 'differs from' : 'missing for'} the stored payload`;
  return undefined;
}

/**
 * Reads every `<prefix>outbox.event.<type>` topic of the outbox's aggregate types and checks
 * delivery: none missing or unexpected, each in its type's topic with the exact stored payload
 * (or a claim check holding it), per aggregate one partition and version order.
 */
export async function checkKafka(
  pool: pg.Pool,
  brokers: readonly string[],
  topicPrefix: string,
): Promise<KafkaReport> {
  const outbox = await outboxIndex(pool);
  const { events, claims } = await outboxPayloads(pool);
  const existing = await topicsOf(brokers);
  const types = [...new Set([...events.values()].map((e) => e.aggregate_type))];
  const read = await Promise.all(
    types.map(async (type) => {
      const topic = `${topicPrefix}outbox.event.${type}`;
      const records = existing.has(topic) ? await readTopic(brokers, topic) : [];
      return records.map((record) => ({ type, record }));
    }),
  );
  const delivered: string[] = [];
  for (const { type, record } of read.flat()) {
    const expected = events.get(record.id);
    if (expected === undefined) continue; // reported as unexpected below
    const violation = payloadViolation(type, record, expected, claims);
    if (violation !== undefined) delivered.push(violation);
  }
  const records = read.flat().map((r) => r.record);
  const delivery = checkDelivery(outbox, records);
  const describe = (id: string) => {
    const event = outbox.get(id);
    return `${id} (${events.get(id)?.aggregate_type ?? '?'} ${event?.aggregateId ?? '?'} v${event?.version ?? '?'})`;
  };
  return {
    violations: {
      'every outbox event is in Kafka, as stored': [
        ...delivery.missing.map((id) => `missing ${describe(id)}`),
        ...delivery.unexpected.map((id) => `unexpected ${id}`),
        ...delivered,
      ],
      'per aggregate one partition, version order': delivery.orderViolations,
    },
    records: records.length,
    duplicates: delivery.duplicates,
    claimChecked: records.filter((r) => r.value === null).length,
  };
}

/** Rows of `view` and `fold` (columns `key`, `row`; `fold` with `parameters`) that differ, keyed. */
async function compareRows(
  pool: pg.Pool,
  label: string,
  view: string,
  fold: string,
  parameters: unknown[] = [],
): Promise<string[]> {
  try {
    const query = async (text: string, values: unknown[]) =>
      new Map(
        (await pool.query<{ key: string; row: string }>(text, values)).rows.map((r) => [
          r.key,
          r.row,
        ]),
      );
    const [actual, expected] = await Promise.all([query(view, []), query(fold, parameters)]);
    const differences: string[] = [];
    for (const key of new Set([...expected.keys(), ...actual.keys()])) {
      const [has, want] = [actual.get(key), expected.get(key)];
      if (has !== want)
        differences.push(`${label} ${key}: view ${has ?? '(no row)'}, fold ${want ?? '(no row)'}`);
    }
    return differences;
  } catch (error) {
    return [`${label}: ${errorMessage(error)}`];
  }
}

const cartFold = `
  SELECT aggregate_id AS key, json_build_array(
           max(payload->>'customerId') FILTER (WHERE type = 'cart.opened.v1'),
           CASE WHEN bool_or(type = 'cart.checked_out.v1') THEN 'checked_out' ELSE 'open' END,
           COALESCE(sum(sign * (payload->>'quantity')::bigint), 0),
           COALESCE(sum(sign * (payload->>'quantity')::bigint * (payload->>'unitPriceCents')::bigint), 0),
           max(aggregate_version))::text AS row
    FROM (SELECT *, CASE type WHEN 'cart.item_added.v1' THEN 1 WHEN 'cart.item_removed.v1' THEN -1 END AS sign
            FROM shop.outbox WHERE aggregate_type = 'cart') e
   GROUP BY aggregate_id`;

/** Per product from shop.outbox: units added, removed, sold, and revenue (rows of `counts`). */
export const PRODUCT_SALES_COUNTS = `
  WITH counts (product_id, added, removed, sold, revenue) AS (
    SELECT payload->>'productId',
           CASE type WHEN 'cart.item_added.v1' THEN (payload->>'quantity')::bigint ELSE 0 END,
           CASE type WHEN 'cart.item_removed.v1' THEN (payload->>'quantity')::bigint ELSE 0 END,
           0::bigint, 0::bigint
      FROM shop.outbox WHERE type IN ('cart.item_added.v1', 'cart.item_removed.v1')
    UNION ALL
    SELECT line->>'productId', 0, 0, (line->>'quantity')::bigint,
           (line->>'quantity')::bigint * (line->>'unitPriceCents')::bigint
      FROM shop.outbox, jsonb_array_elements(payload->'lines') AS line
     WHERE type = 'order.placed.v1')`;

const salesFold = `
  ${PRODUCT_SALES_COUNTS}
  SELECT product_id AS key,
         json_build_array(sum(added), sum(removed), sum(sold), sum(revenue))::text AS row
    FROM counts GROUP BY product_id`;

// Customer payloads as the projector sees them ($2: sealed fields opened, `[erased]` after an
// erasure), other payloads as published.
const auditFold = `
  SELECT id::text AS key, json_build_array(
           aggregate_type, aggregate_id, aggregate_version, type, occurred_at,
           metadata->>'actor', metadata->>'reason', metadata->>'correlation_id',
           md5(COALESCE($2::jsonb -> id::text, payload)::text))::text AS row
    FROM shop.outbox WHERE aggregate_type = ANY($1::text[])`;

/**
 * The customer events' payloads by event id, opened as the projector opens them; an erased
 * customer's protected fields read `[erased]` in every event, as the audit log scrubs them.
 */
async function revealedPayloads(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{
    id: string;
    type: string;
    aggregate_id: string;
    payload: unknown;
  }>(
    `SELECT id::text, type, aggregate_id, payload FROM shop.outbox WHERE aggregate_type = 'customer'`,
  );
  const erased = new Set(
    rows.filter((row) => row.type === 'customer.erased.v1').map((row) => row.aggregate_id),
  );
  const revealed: Record<string, unknown> = {};
  for (const { id, type, aggregate_id, payload } of rows) {
    const opened = await testPrivacy.revealPayload(pool, type, payload);
    revealed[id] = erased.has(aggregate_id) ? markErased(type, opened) : opened;
  }
  return JSON.stringify(revealed);
}

/** `payload` with the protected fields of its type set to the erasure marker. */
function markErased(type: string, payload: unknown): unknown {
  const spec = shopProtectedFields[type];
  if (spec === undefined || typeof payload !== 'object' || payload === null) return payload;
  const marked: Record<string, unknown> = { ...(payload as Record<string, unknown>) };
  for (const field of spec.fields) if (field in marked) marked[field] = ERASED;
  return marked;
}

// Each purchase (customer, product, time) with the latest earlier removal of that product from
// one of the customer's carts.
const removedThenBoughtFold = `
  WITH owners AS (
    SELECT payload->>'cartId' AS cart_id, payload->>'customerId' AS customer_id
      FROM shop.outbox WHERE type = 'cart.opened.v1'),
  removals AS (
    SELECT o.customer_id, e.payload->>'productId' AS product_id, e.occurred_at AS removed_at
      FROM shop.outbox e JOIN owners o ON o.cart_id = e.payload->>'cartId'
     WHERE e.type = 'cart.item_removed.v1'),
  purchases AS (
    SELECT DISTINCT payload->>'customerId' AS customer_id, line->>'productId' AS product_id,
           occurred_at AS bought_at
      FROM shop.outbox, jsonb_array_elements(payload->'lines') AS line
     WHERE type = 'order.placed.v1')
  SELECT json_build_array(p.customer_id, p.product_id, p.bought_at)::text AS key,
         json_build_array(max(r.removed_at))::text AS row
    FROM purchases p JOIN removals r
      ON r.customer_id = p.customer_id AND r.product_id = p.product_id AND r.removed_at < p.bought_at
   GROUP BY p.customer_id, p.product_id, p.bought_at`;

/** Every view of the shop equals the fold of the events in `shop.outbox`. */
export async function checkViews(pool: pg.Pool): Promise<Violations> {
  const differences = await Promise.all([
    compareRows(
      pool,
      'views.cart_summaries',
      `SELECT cart_id::text AS key,
              json_build_array(customer_id, status, item_count, total_cents, version)::text AS row
         FROM views.cart_summaries`,
      cartFold,
    ),
    compareRows(
      pool,
      'views.product_sales',
      `SELECT product_id::text AS key,
              json_build_array(added_count, removed_count, units_sold, revenue_cents)::text AS row
         FROM views.product_sales`,
      salesFold,
    ),
    compareRows(
      pool,
      'views.audit_log',
      `SELECT event_id::text AS key, json_build_array(
                aggregate_type, aggregate_id, version, type, occurred_at, actor, reason,
                correlation_id, md5(data::text))::text AS row
         FROM views.audit_log`,
      auditFold,
      [auditLog.aggregateTypes, await revealedPayloads(pool)],
    ),
    compareRows(
      pool,
      'views.removed_then_bought',
      `SELECT json_build_array(customer_id, product_id, bought_at)::text AS key,
              json_build_array(removed_at)::text AS row
         FROM views.removed_then_bought`,
      removedThenBoughtFold,
    ),
  ]);
  return { 'views equal the fold of the events': differences.flat() };
}

/** What each projection has applied per aggregate: its latest version in the outbox, no more, no less. */
export async function checkAppliedOnce(pool: pg.Pool): Promise<Violations> {
  const reads = shopProjections.flatMap((p) => p.aggregateTypes.map((type) => [p.name, type]));
  return {
    'each projection applied every event once': await compareRows(
      pool,
      'sluice.projection_versions',
      `SELECT json_build_array(projection, aggregate_type, aggregate_id)::text AS key,
              version::text AS row
         FROM sluice.projection_versions`,
      `SELECT json_build_array(r.projection, h.aggregate_type, h.aggregate_id)::text AS key,
              h.version::text AS row
         FROM unnest($1::text[], $2::text[]) AS r (projection, aggregate_type)
         JOIN shop.outbox_heads h USING (aggregate_type)`,
      [reads.map(([name]) => name), reads.map(([, type]) => type)],
    ),
  };
}

/** Events applied so far, summed over every projection (0 before the projector migrated). */
export async function appliedEvents(pool: pg.Pool): Promise<number> {
  const { rows } = await pool
    .query<{ n: string }>(
      'SELECT COALESCE(sum(version), 0)::text AS n FROM sluice.projection_versions',
    )
    .catch(() => ({ rows: [{ n: '0' }] }));
  return Number(rows[0]?.n ?? 0);
}

/** No parked event, no record in any projection's dead-letter topic. */
export async function checkNothingParked(
  pool: pg.Pool,
  brokers: readonly string[],
  topicPrefix: string,
): Promise<Violations> {
  // One line per parked aggregate: how many events wait, and the first one's cause.
  const parked = await pool
    .query<{ row: string }>(
      `SELECT format('%s parked %s events of %s %s from v%s at %s:%s@%s (%s: %s)', projection, count(*),
                     aggregate_type, aggregate_id, (array_agg(aggregate_version ORDER BY record_offset))[1], topic, min(partition),
                     min(record_offset), (array_agg(reason ORDER BY record_offset))[1],
                     (array_agg(error ORDER BY record_offset))[1]) AS row
         FROM sluice.parked_events GROUP BY projection, topic, aggregate_type, aggregate_id
        ORDER BY projection, aggregate_type, aggregate_id`,
    )
    .then(
      (result) => result.rows.map((r) => r.row),
      (error: unknown) => [`sluice.parked_events: ${errorMessage(error)}`],
    );
  const letters = await Promise.all(
    shopProjections.map(async ({ name }) => {
      const topic = `${topicPrefix}sluice.dlq.${name}`;
      if ((await topicSize(brokers, topic)) === 0) return [];
      return (await readTopic(brokers, topic)).map(
        (r) =>
          `${topic}: ${r.headers.ce_type ?? '?'} ${r.key} v${r.version}: ${r.headers.sluice_error_class ?? ''} ${r.headers.sluice_error_message ?? ''}`,
      );
    }),
  );
  return { 'nothing parked or dead-lettered': [...parked, ...letters.flat()] };
}

/**
 * Waits until the pipeline holds every invariant (nothing lost, in order, applied once, views
 * equal the fold, nothing parked); the violations left after `timeoutMs`, none when it settled.
 */
export async function settledViolations(
  pool: pg.Pool,
  brokers: readonly string[],
  topicPrefix: string,
  timeoutMs: number,
): Promise<string[]> {
  let last: string[] = [];
  const probe = async () => {
    const violations = {
      ...(await checkKafka(pool, brokers, topicPrefix)).violations,
      ...(await checkViews(pool)),
      ...(await checkAppliedOnce(pool)),
      ...(await checkNothingParked(pool, brokers, topicPrefix)),
    };
    last = Object.entries(violations).flatMap(([invariant, list]) =>
      list.slice(0, 5).map((violation) => `${invariant}: ${violation}`),
    );
    return last.length === 0;
  };
  await waitFor(probe, { timeoutMs, intervalMs: 1000 }).catch(() => undefined);
  return last;
}
