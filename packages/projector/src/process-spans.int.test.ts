// The projector's `process` spans against real PostgreSQL: one per record a transaction commits,
// a child of the record's context, with the outcome the batch gave it (applied, duplicate, gap,
// parked, dead-lettered); none of an attempt rolled back; a redrive's spans link back.
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { toKafkaRecord, type DomainEvent } from '@sluice/contracts';
import { createDatabase, migrate } from '@sluice/database';
import { shopCatalog } from '@sluice/shop-catalog';
import { createTestDatabase, testServers, type TestDatabase } from '@sluice/testkit';
import { sql, type Kysely } from 'kysely';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { applyBatch, defineProjection, projectorMigrations, redriveParked } from './index.js';
import type { IncomingRecord } from './records.js';

let database: TestDatabase;
let db: Kysely<Record<string, never>>;
const exporter = new InMemorySpanExporter();
const tracer = new BasicTracerProvider({
  spanProcessors: [new SimpleSpanProcessor(exporter)],
}).getTracer('test');
/** Carts whose handler throws. */
const failing = new Set<string>();

const carts = defineProjection<Record<string, never>, typeof shopCatalog>({
  catalog: shopCatalog,
  name: 'traced_carts',
  aggregateTypes: ['cart'],
  tables: [],
  async createTables() {},
  async apply(events, { trx }) {
    for (const event of events)
      if (failing.has(event.aggregateId)) throw new Error(`cannot project ${event.aggregateId}`);
    await sql`SELECT 1`.execute(trx);
  },
});

const noLetters = { send: () => Promise.resolve() };
const options = { tracer, consumerGroup: 'shop.traced_carts', maxAttempts: 1 };

beforeAll(async () => {
  database = await createTestDatabase(testServers().databaseUrl, 'process_spans');
  db = createDatabase({ url: database.url, maxConnections: 2 });
  await migrate(db, 'projector_migrations', projectorMigrations);
});

afterAll(async () => {
  await db.destroy();
  await database.drop();
});

beforeEach(() => exporter.reset());

let nextOffset = 0n;

/** A record of `cartId`'s event `version`, in a trace of its own (sampled unless told). */
function record(cartId: string, version: number, sampled = true): IncomingRecord {
  const event: DomainEvent = {
    id: randomUUID(),
    type: 'cart.item_added.v1',
    aggregateType: 'cart',
    aggregateId: cartId,
    aggregateVersion: version,
    occurredAt: new Date().toISOString(),
    payload: { cartId, productId: randomUUID(), quantity: 1, unitPriceCents: 100 },
    metadata: {},
  };
  const kafka = toKafkaRecord(event, { source: '/test' });
  const traceparent = `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-0${sampled ? 1 : 0}`;
  const offset = nextOffset;
  nextOffset += 1n;
  return {
    topic: 'outbox.event.cart',
    partition: 0,
    offset,
    key: kafka.key,
    value: kafka.value,
    headers: { ...kafka.headers, traceparent },
  };
}

const spanOf = (spans: readonly ReadableSpan[], item: IncomingRecord) => {
  const [, traceId, spanId] = String(item.headers.traceparent).split('-');
  return spans.find(
    (s) => s.spanContext().traceId === traceId && s.parentSpanContext?.spanId === spanId,
  );
};

describe('process spans', () => {
  it('one per record, a child of its context, with the outcome it had', async () => {
    const [a, b, poisoned] = [randomUUID(), randomUUID(), randomUUID()];
    failing.add(poisoned);
    const batch = [record(a, 1), record(a, 2), record(b, 1), record(b, 3), record(poisoned, 1)];
    await applyBatch(db, carts, batch, noLetters, options);
    const processed = () =>
      exporter.getFinishedSpans().filter((s) => s.name === 'process outbox.event.cart');
    const spans = processed();
    // Delivered again: a duplicate; a record not sampled: no span.
    const again = [batch[0] as IncomingRecord, record(a, 3, false)];
    exporter.reset();
    await applyBatch(db, carts, again, noLetters, options);
    const outcomes = (list: IncomingRecord[], drawn: ReadableSpan[]) =>
      list.map((item) => spanOf(drawn, item)?.attributes['sluice.outcome']);
    expect(outcomes(batch, spans)).toEqual([
      'applied',
      'applied',
      'applied',
      'gap',
      'dead_lettered',
    ]);
    expect(outcomes(again, processed())).toEqual(['duplicate', undefined]);
    expect(processed()).toHaveLength(1);
    const applied = spanOf(spans, batch[0] as IncomingRecord);
    expect(applied?.attributes).toMatchObject({
      'messaging.system': 'kafka',
      'messaging.operation.type': 'process',
      'messaging.destination.name': 'outbox.event.cart',
      'messaging.destination.partition.id': '0',
      'messaging.kafka.offset': Number(batch[0]?.offset),
      'messaging.consumer.group.name': 'shop.traced_carts',
      'messaging.message.id': batch[0]?.headers.ce_id,
      'sluice.projection': 'traced_carts',
      'sluice.aggregate.id': a,
      'sluice.aggregate.version': 1,
    });
    expect(spans).toHaveLength(5);
    expect(applied?.events.map((event) => event.name)).toEqual(['commit']);
  });

  it('none for an attempt rolled back; a redrive starts a trace linking to the record', async () => {
    const cart = randomUUID();
    failing.add(cart);
    const first = record(cart, 1);
    await applyBatch(db, carts, [first], noLetters, options);
    exporter.reset();
    failing.delete(cart);
    const outcome = await redriveParked(db, carts, { type: 'cart', id: cart }, noLetters, options);
    expect(outcome.result.applied).toBe(1);
    const [span] = exporter.getFinishedSpans();
    const [, traceId, spanId] = String(first.headers.traceparent).split('-');
    expect(exporter.getFinishedSpans()).toHaveLength(1);
    expect(span?.spanContext().traceId).not.toBe(traceId);
    expect(span?.parentSpanContext).toBeUndefined();
    expect(span?.links.map((l) => l.context)).toMatchObject([{ traceId, spanId }]);
    expect(span?.attributes).toMatchObject({ 'sluice.outcome': 'applied', 'sluice.redrive': true });
  });
});
