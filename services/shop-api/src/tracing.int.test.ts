// shop-api traced, in process: a server span per request (a child of the caller's), its
// transaction's span whose context each outbox row stores, log lines carrying the request's
// span, probes untraced, and an unsampled caller's decision kept.
import { context, propagation, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { createLogger } from '@sluice/service-kit';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startShopApi, type ShopApiHarness } from './test-harness.js';

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const lines: Record<string, unknown>[] = [];
let api: ShopApiHarness;

beforeAll(async () => {
  provider.register();
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  api = await startShopApi('traced_api', {
    tracer: provider.getTracer('test'),
    logger: createLogger({ service: 'shop-api', level: 'info', destination }),
    routes(app) {
      app.get('/log-something', (request) => {
        request.log.info('inside a request');
        return {};
      });
      // As the service's HTTP server serves it (runService).
      app.get('/healthz', () => ({ status: 'ok' }));
    },
  });
});

afterAll(async () => {
  await api.close();
  await provider.shutdown();
  trace.disable();
  context.disable();
  propagation.disable();
});

beforeEach(() => exporter.reset());

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

describe('a traced request', () => {
  it('is a server span under the caller, and its transaction the context its events store', async () => {
    const [traceId, caller] = [hex(16), hex(8)];
    const response = await api.request('POST', '/customers', {
      body: { email: `${hex(4)}@example.com`, name: 'Traced' },
      headers: { traceparent: `00-${traceId}-${caller}-01` },
    });
    expect(response.statusCode).toBe(201);
    const spans = exporter.getFinishedSpans();
    const server = spans.find((s) => s.name === 'POST /customers');
    const write = spans.find((s) => s.name === 'TRANSACTION shop');
    expect(server?.spanContext().traceId).toBe(traceId);
    expect(server?.parentSpanContext?.spanId).toBe(caller);
    expect(server?.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/customers',
      'http.response.status_code': 201,
    });
    expect(write?.parentSpanContext?.spanId).toBe(server?.spanContext().spanId);
    const [row] = (await api.outbox()).filter(
      (r) => r.payload.customerId === response.json<{ id: string }>().id,
    );
    expect(row?.metadata.traceparent).toBe(`00-${traceId}-${write?.spanContext().spanId}-01`);
  });

  it('writes log lines that carry its span; probes are not traced', async () => {
    const traceId = hex(16);
    await api.request('GET', '/log-something', {
      headers: { traceparent: `00-${traceId}-${hex(8)}-01` },
    });
    const server = exporter.getFinishedSpans().find((s) => s.name === 'GET /log-something');
    expect(lines.find((line) => line.msg === 'inside a request')).toMatchObject({
      trace_id: traceId,
      span_id: server?.spanContext().spanId,
    });
    exporter.reset();
    await api.request('GET', '/healthz');
    expect(exporter.getFinishedSpans()).toEqual([]);
  });

  it("keeps an unsampled caller's decision: nothing recorded, the event says so", async () => {
    const traceId = hex(16);
    const response = await api.request('POST', '/customers', {
      body: { email: `${hex(4)}@example.com`, name: 'Unsampled' },
      headers: { traceparent: `00-${traceId}-${hex(8)}-00` },
    });
    expect(exporter.getFinishedSpans()).toEqual([]);
    const [row] = (await api.outbox()).filter(
      (r) => r.payload.customerId === response.json<{ id: string }>().id,
    );
    expect(row?.metadata.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`));
  });

  it('a failed write marks its transaction span failed', async () => {
    const response = await api.request('POST', '/carts', {
      body: { customerId: '00000000-0000-7000-8000-000000000000' },
    });
    expect(response.statusCode).toBeGreaterThanOrEqual(400);
    const write = exporter.getFinishedSpans().find((s) => s.name === 'TRANSACTION shop');
    expect(write?.status.code).toBe(2);
  });
});
