// One OpenTelemetry trace from an HTTP request to every view it changed, as a real OTLP receiver
// in this process decodes it: shop-api exports protobuf, the relay JSON, the projector gzipped
// protobuf. Checked: parents, links, timing, the messaging attributes, the records' trace
// headers, the sampling decision followed downstream, the log line of a dead-lettered event, a
// redrive linking back to the event's trace, and exemplars naming traces.
import { auditLog, cartSummary, productSales, removedThenBought } from '@sluice/shop-views';
import { waitFor } from '@sluice/testkit';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTopic } from '../relay/harness.js';
import { operatorHeaders, shopAdminHeaders } from '../support/access.js';
import {
  startOtlpReceiver,
  type OtlpReceiver,
  type ReceivedSpan,
} from '../support/otlp-receiver.js';
import { injectCartEvent } from '../support/outbox-injection.js';
import { startPipeline, type Pipeline } from '../support/pipeline.js';
import { listeningAddress, startedServices, type ServiceProcess } from '../support/services.js';

const CART_PROJECTIONS = [auditLog, cartSummary, productSales, removedThenBought]
  .filter((projection) => projection.aggregateTypes.includes('cart'))
  .map((projection) => projection.name)
  .sort();

let receiver: OtlpReceiver;
let pipeline: Pipeline;
let projector: ServiceProcess;
let cartTopic: string;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY: '100' };
  pipeline = await startPipeline('tracing', {
    'shop-api': otel,
    relay: { ...otel, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' },
    projector: { ...otel, OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip' },
  });
  cartTopic = `${pipeline.topicPrefix}outbox.event.cart`;
  projector = pipeline.startProjector();
  await projector.waitForOutput('"msg":"consuming"', {
    timeoutMs: 60_000,
    message: 'the projector to consume',
  });
});

afterAll(async () => {
  await pipeline.close();
  await receiver.close();
});

// Times from two clocks (two processes, or PostgreSQL and the SDK) differ by this much at most.
const clockSkew = 50_000_000n;
const hex = (bytes: number) => randomBytes(bytes).toString('hex');

/** A string attribute of `span`; fails when it is not one. */
function text(span: ReceivedSpan, name: string): string {
  const value = span.attributes[name];
  expect(typeof value, name).toBe('string');
  return value as string;
}

/** The one span of `spans` that `predicate` picks; fails when there is none or several. */
function only(spans: readonly ReceivedSpan[], predicate: (span: ReceivedSpan) => boolean) {
  const found = spans.filter(predicate);
  expect(found, `spans: ${spans.map((s) => `${s.service}/${s.name}`).join(', ')}`).toHaveLength(1);
  return found[0] as ReceivedSpan;
}

const inTrace = (traceId: string) => (spans: readonly ReceivedSpan[]) =>
  spans.filter((span) => span.traceId === traceId);

const processSpans = (spans: readonly ReceivedSpan[], outcome: string) =>
  spans.filter(
    (s) => s.name === `process ${cartTopic}` && s.attributes['sluice.outcome'] === outcome,
  );

async function newCart(): Promise<{ cartId: string; productId: string }> {
  const customer = await pipeline.post('/customers', { email: `${hex(4)}@example.com`, name: 'T' });
  const product = await pipeline.post('/products', {
    sku: `TRACE-${hex(4)}`,
    name: 'Traced',
    priceCents: 250,
    stock: 100,
  });
  const cart = await pipeline.post('/carts', { customerId: customer.id });
  return { cartId: String(cart.id), productId: String(product.id) };
}

/** POSTs an item to a cart as a caller whose span is `traceparent`. */
async function addItem(cart: { cartId: string; productId: string }, traceparent: string) {
  const response = await fetch(`${pipeline.base}/carts/${cart.cartId}/items`, {
    method: 'POST',
    headers: { ...shopAdminHeaders(), 'content-type': 'application/json', traceparent },
    body: JSON.stringify({ productId: cart.productId, quantity: 2 }),
  });
  expect(response.status).toBe(200);
  return response.headers.get('x-consistency-token') ?? '';
}

describe('one trace from the request to the views', () => {
  it('holds the HTTP, transaction, create, send and one process span per projection, parented and linked', async () => {
    const cart = await newCart();
    const unsampledTrace = hex(16);
    await addItem(cart, `00-${unsampledTrace}-${hex(8)}-00`);
    const traceId = hex(16);
    const caller = hex(8);
    const token = await addItem(cart, `00-${traceId}-${caller}-01`);

    const spans = inTrace(traceId)(
      await receiver.waitForSpans(
        (all) =>
          processSpans(inTrace(traceId)(all), 'applied').length === CART_PROJECTIONS.length &&
          inTrace(traceId)(all).some((s) => s.name === `send ${cartTopic}`),
        { timeoutMs: 60_000, message: 'the whole trace of the POST' },
      ),
    );
    const http = only(spans, (s) => s.kind === 'server');
    expect(http).toMatchObject({
      service: 'shop-api',
      protocol: 'protobuf',
      name: 'POST /carts/:id/items',
      parentSpanId: caller,
      attributes: {
        'http.request.method': 'POST',
        'http.route': '/carts/:id/items',
        'http.response.status_code': 200,
        'url.path': `/carts/${cart.cartId}/items`,
      },
    });
    const write = only(spans, (s) => s.name === 'TRANSACTION shop');
    expect(write).toMatchObject({
      kind: 'client',
      parentSpanId: http.spanId,
      attributes: { 'db.system.name': 'postgresql' },
    });

    const create = only(spans, (s) => s.name === `create ${cartTopic}`);
    expect(create).toMatchObject({
      service: 'relay',
      protocol: 'json',
      kind: 'producer',
      parentSpanId: write.spanId,
      attributes: {
        'messaging.system': 'kafka',
        'messaging.operation.type': 'create',
        'messaging.destination.name': cartTopic,
        'messaging.kafka.message.key': cart.cartId,
        'cloudevents.event_type': 'cart.item_added.v1',
        'sluice.aggregate.type': 'cart',
        'sluice.aggregate.id': cart.cartId,
        'sluice.aggregate.version': 3,
      },
    });
    expect(create.attributes['sluice.commit_lsn']).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const eventId = text(create, 'messaging.message.id');
    // It starts when the transaction committed: inside the write span. The commit time is
    // PostgreSQL's wall clock, span times are the SDK's monotonic clock: allow their skew.
    expect(create.startTimeUnixNano).toBeGreaterThan(write.startTimeUnixNano - clockSkew);
    expect(create.startTimeUnixNano).toBeLessThanOrEqual(write.endTimeUnixNano + clockSkew);

    const send = only(spans, (s) => s.name === `send ${cartTopic}`);
    expect(send).toMatchObject({
      kind: 'producer',
      parentSpanId: create.spanId,
      links: [{ traceId, spanId: create.spanId }],
      attributes: { 'messaging.operation.type': 'send', 'messaging.batch.message_count': 1 },
    });
    expect(send.startTimeUnixNano).toBeGreaterThanOrEqual(create.endTimeUnixNano);
    const partition = text(send, 'messaging.destination.partition.id');
    const offset = send.attributes['messaging.kafka.offset'];
    expect(typeof offset).toBe('number');

    const processed = processSpans(spans, 'applied');
    expect(processed.map((s) => s.attributes['sluice.projection']).sort()).toEqual(
      CART_PROJECTIONS,
    );
    for (const span of processed) {
      expect(span).toMatchObject({
        service: 'projector',
        kind: 'consumer',
        parentSpanId: create.spanId,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.operation.type': 'process',
          'messaging.destination.name': cartTopic,
          'messaging.destination.partition.id': partition,
          'messaging.kafka.offset': offset,
          'messaging.message.id': eventId,
        },
      });
      expect(text(span, 'messaging.consumer.group.name')).toContain(
        text(span, 'sluice.projection'),
      );
      expect(span.startTimeUnixNano).toBeGreaterThanOrEqual(send.endTimeUnixNano - clockSkew);
      // The view's commit is an event of the span, inside it.
      const commit = span.events.find((event) => event.name === 'commit');
      expect(commit?.attributes).toMatchObject({ 'db.operation.name': 'COMMIT' });
      expect(commit?.timeUnixNano).toBeGreaterThanOrEqual(span.startTimeUnixNano);
      expect(commit?.timeUnixNano).toBeLessThanOrEqual(span.endTimeUnixNano);
    }

    // The record: `traceparent` is its create span, `ce_traceparent` the request's transaction.
    const record = (await readTopic(pipeline.kafkaBrokers, cartTopic)).find(
      (r) => r.id === eventId,
    );
    expect(record?.headers.traceparent).toBe(`00-${traceId}-${create.spanId}-01`);
    expect(record?.headers.ce_traceparent).toBe(`00-${traceId}-${write.spanId}-01`);

    // A read-your-writes wait in the same trace is a span of its own.
    const read = await fetch(`${pipeline.base}/views/carts/${cart.cartId}`, {
      headers: {
        ...shopAdminHeaders(),
        'x-consistency-token': token,
        traceparent: `00-${traceId}-${hex(8)}-01`,
      },
    });
    expect(read.status).toBe(200);
    const withRead = inTrace(traceId)(
      await receiver.waitForSpans((all) => all.some((s) => s.name === 'wait cart_summary'), {
        timeoutMs: 20_000,
        message: 'the read-your-writes wait',
      }),
    );
    const get = only(withRead, (s) => s.name === 'GET /views/carts/:id');
    expect(only(withRead, (s) => s.name === 'wait cart_summary')).toMatchObject({
      parentSpanId: get.spanId,
      attributes: { 'sluice.projection': 'cart_summary', 'sluice.versions': 1 },
    });

    // The unsampled request went through first, on the same cart: nobody recorded it.
    expect(receiver.spans().filter((s) => s.traceId === unsampledTrace)).toEqual([]);
  });

  it('names recorded traces in the latency histograms (exemplars)', async () => {
    const relay = startedServices().find((service) => service.name === 'relay');
    for (const service of [projector, relay]) {
      const address = service === undefined ? undefined : listeningAddress(service);
      const exemplars = async () => {
        const text = await (await fetch(`${String(address)}/metrics`)).text();
        return [...text.matchAll(/# \{trace_id="([0-9a-f]{32})"\}/g)].map((m) => String(m[1]));
      };
      // Every trace an exemplar names reaches the receiver (spans are exported in batches).
      await waitFor(
        async () => {
          const named = await exemplars();
          const traced = new Set(receiver.spans().map((span) => span.traceId));
          return named.length > 0 && named.every((trace) => traced.has(trace));
        },
        {
          timeoutMs: 10_000,
          message: `${String(service?.name)}'s exemplars to name received traces`,
        },
      );
    }
  });
});

/** Appends an event that breaks its schema to a new cart's outbox, in trace `traceId`. */
async function injectPoison(traceId: string): Promise<string> {
  const { cartId } = await newCart();
  await injectCartEvent(pipeline.pool, cartId, {
    type: 'cart.item_added.v1',
    payload: { cartId: 1 },
    metadata: { traceparent: `00-${traceId}-${hex(8)}-01` },
  });
  return cartId;
}

describe('a poison event', () => {
  it('is dead-lettered in its own trace, logged with it, and a redrive links back to it', async () => {
    const traceId = hex(16);
    const cartId = await injectPoison(traceId);
    const spans = inTrace(traceId)(
      await receiver.waitForSpans(
        (all) => processSpans(inTrace(traceId)(all), 'dead_lettered').length === 4,
        { timeoutMs: 60_000, message: 'the poison event dead-lettered by every cart projection' },
      ),
    );
    const create = only(spans, (s) => s.name === `create ${cartTopic}`);
    const lettered = only(
      processSpans(spans, 'dead_lettered'),
      (s) => s.attributes['sluice.projection'] === 'cart_summary',
    );
    expect(lettered.parentSpanId).toBe(create.spanId);
    // Its log line joins the trace.
    await projector.waitForOutput(`"trace_id":"${traceId}","span_id":"${lettered.spanId}"`, {
      timeoutMs: 10_000,
      message: 'the dead-letter log line with its trace',
    });

    const response = await fetch(`${listeningAddress(projector) ?? ''}/parked/redrive`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(await operatorHeaders('ada')) },
      body: JSON.stringify({
        projection: 'cart_summary',
        aggregateType: 'cart',
        aggregateId: cartId,
      }),
    });
    expect(response.status).toBe(200);
    const all = await receiver.waitForSpans(
      (received) =>
        received.some((s) => s.attributes['sluice.redrive'] === true && s.links.length > 0),
      { timeoutMs: 20_000, message: 'the redrive span' },
    );
    const redrive = only(all, (s) => s.attributes['sluice.redrive'] === true);
    expect(redrive.traceId).not.toBe(traceId);
    expect(redrive).toMatchObject({
      parentSpanId: undefined,
      links: [{ traceId, spanId: create.spanId }],
      attributes: { 'sluice.projection': 'cart_summary', 'sluice.outcome': 'dead_lettered' },
    });
    expect(receiver.rejected()).toBe(0);
  });
});
