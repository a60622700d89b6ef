import { describe, expect, it } from 'vitest';
import { isSluiceError } from '@sluice/errors';
import { Type } from '@sinclair/typebox';
import {
  assertPayload,
  createUpcaster,
  defineCatalog,
  defineEvent,
  fromKafkaRecord,
  toKafkaRecord,
  topicFor,
  type DomainEvent,
} from './index.js';

const id = '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a';

const event: DomainEvent = {
  id,
  type: 'cart.item_added.v1',
  aggregateType: 'cart',
  aggregateId: id,
  aggregateVersion: 3,
  occurredAt: '2026-01-02T03:04:05.000Z',
  payload: { cartId: id, productId: id, quantity: 2, unitPriceCents: 150 },
  metadata: {
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    correlation_id: 'c-1',
    actor: 'user:7',
    reason: 'test',
  },
};

/** A team's own catalog, as a user of the library writes one. */
const invoices = defineCatalog(
  {
    'invoice.issued.v1': defineEvent(
      'invoice.issued.v1',
      'invoice',
      'An invoice was issued.',
      Type.Object({
        invoiceId: Type.String({ format: 'uuid' }),
        totalCents: Type.Integer({ minimum: 0 }),
      }),
    ),
    'invoice.paid.v1': defineEvent(
      'invoice.paid.v1',
      'invoice',
      'An invoice was paid.',
      Type.Object({ invoiceId: Type.String({ format: 'uuid' }) }),
    ),
  },
  { schemaIdBase: 'https://example.com/schemas/' },
);

describe('catalog', () => {
  it('names versions and aggregate types, and topics by aggregate type', () => {
    expect(invoices.events['invoice.paid.v1'].version).toBe(1);
    expect(invoices.aggregateTypes).toEqual(['invoice']);
    expect(invoices.isEventType('invoice.issued.v1')).toBe(true);
    expect(invoices.isEventType('constructor')).toBe(false);
    expect(topicFor('invoice')).toBe('outbox.event.invoice');
  });

  it('accepts valid payloads and names every violation of invalid ones', () => {
    expect(invoices.payloadErrors('invoice.issued.v1', { invoiceId: id, totalCents: 5 })).toEqual(
      [],
    );
    const errors = invoices.payloadErrors('invoice.issued.v1', {
      invoiceId: 'x',
      totalCents: -1,
      extra: 1,
    });
    expect(errors.join('\n')).toMatch(/invoiceId/);
    expect(errors.join('\n')).toMatch(/totalCents/);
    expect(errors.join('\n')).toMatch(/additional properties/);
    expect(invoices.payloadErrors('invoice.voided.v1', {})).toEqual([
      'unknown event type "invoice.voided.v1"',
    ]);
    expect(() => assertPayload(invoices, 'invoice.paid.v1', { invoiceId: id, extra: 1 })).toThrow(
      /invoice.paid.v1/,
    );
    expect(() => assertPayload(invoices, 'invoice.voided.v1', {})).toThrow(/Unknown event type/);
  });

  it('publishes a JSON Schema file per event type under its own $id', () => {
    const files = invoices.schemaFiles();
    expect(Object.keys(files)).toEqual(['invoice.issued.v1.json', 'invoice.paid.v1.json']);
    expect(JSON.parse(files['invoice.paid.v1.json'] ?? '{}')).toMatchObject({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      $id: 'https://example.com/schemas/invoice.paid.v1.json',
      title: 'invoice.paid.v1',
      additionalProperties: false,
    });
  });

  it('refuses event types that do not read <aggregate>.<fact>.v<n>, and keys naming other types', () => {
    const payload = Type.Object({});
    expect(() => defineEvent('InvoiceIssued', 'invoice', '', payload)).toThrow(/v<n>/);
    expect(() => defineEvent('invoice.issued.v0', 'invoice', '', payload)).toThrow(/v<n>/);
    expect(() => defineEvent('invoice.issued.v1', 'Invoice', '', payload)).toThrow(/snake_case/);
    const issued = defineEvent('invoice.issued.v1', 'invoice', '', payload);
    expect(() => defineCatalog({ 'invoice.paid.v1': issued })).toThrow(/names event type/);
  });
});

describe('CloudEvents records', () => {
  it('round-trips an event through a Kafka record', () => {
    const record = toKafkaRecord(event, { source: '/shop-api', commitLsn: '0/16B3748' });
    expect(record.key).toBe(id);
    expect(record.headers).toMatchObject({
      ce_specversion: '1.0',
      ce_id: id,
      ce_type: 'cart.item_added.v1',
      ce_source: '/shop-api',
      ce_subject: id,
      'content-type': 'application/json',
      ce_aggregatetype: 'cart',
      ce_aggregateversion: '3',
      ce_commitlsn: '0/16B3748',
      ce_correlationid: 'c-1',
      ce_actor: 'user:7',
      ce_reason: 'test',
    });
    expect(fromKafkaRecord(record)).toEqual(event);
  });

  it('rejects records with missing headers, no key or a non-JSON value', () => {
    const record = toKafkaRecord(event, { source: '/shop-api' });
    const bad = [
      { ...record, headers: { ...record.headers, ce_type: undefined } },
      { ...record, key: null },
      { ...record, value: '{not json' },
      { ...record, headers: { ...record.headers, ce_aggregateversion: '0' } },
      { ...record, headers: { ...record.headers, ce_aggregateversion: '1.5' } },
      { ...record, headers: { ...record.headers, ce_aggregateversion: '01' } },
      { ...record, headers: { ...record.headers, ce_aggregateversion: '9007199254740993' } },
      { ...record, headers: { ...record.headers, ce_time: 'yesterday' } },
      { ...record, headers: { ...record.headers, ce_time: '2026-13-02T03:04:05Z' } },
      { ...record, headers: { ...record.headers, ce_time: '2026-01-02' } },
      { ...record, headers: { ...record.headers, ce_id: '' } },
      { ...record, headers: { ...record.headers, ce_actor: 'a\u0000b' } },
      { ...record, key: `${id}\u0000` },
      { ...record, value: JSON.stringify({ ...(event.payload as object), note: 'a\u0000b' }) },
    ];
    for (const candidate of bad) {
      let caught: unknown;
      try {
        fromKafkaRecord(candidate);
      } catch (error) {
        caught = error;
      }
      expect(isSluiceError(caught, 'record_malformed')).toBe(true);
    }
  });

  it('names every missing header', () => {
    const { key, value, headers } = toKafkaRecord(event, { source: '/shop-api' });
    const partial = { key, value, headers: { ...headers, ce_id: undefined, ce_time: undefined } };
    expect(() => fromKafkaRecord(partial)).toThrow('missing headers: ce_id, ce_time');
  });

  it('takes RFC 3339 times with offsets, and text that merely looks like an escaped NUL', () => {
    const record = toKafkaRecord(event, { source: '/shop-api' });
    const shifted = {
      ...record,
      headers: { ...record.headers, ce_time: '2026-01-02T04:04:05+01:00' },
    };
    expect(fromKafkaRecord(shifted).occurredAt).toBe('2026-01-02T04:04:05+01:00');
    // A backslash followed by the text u0000 is no NUL.
    const literal = { ...record, value: JSON.stringify({ note: '\\u0000' }) };
    expect(fromKafkaRecord(literal).payload).toEqual({ note: '\\u0000' });
  });
});

describe('upcasters', () => {
  it('chains steps and leaves other events alone', () => {
    const upcast = createUpcaster([
      {
        from: 'cart.opened.v1',
        to: 'cart.opened.v2',
        upcast: (p) => ({ ...(p as object), channel: 'web' }),
      },
      {
        from: 'cart.opened.v2',
        to: 'cart.opened.v3',
        upcast: (p) => ({ ...(p as object), v3: true }),
      },
    ]);
    const opened = { ...event, type: 'cart.opened.v1', payload: { cartId: id, customerId: id } };
    expect(upcast(opened)).toMatchObject({
      type: 'cart.opened.v3',
      payload: { cartId: id, customerId: id, channel: 'web', v3: true },
    });
    expect(upcast(event)).toBe(event);
  });

  it('refuses cycles', () => {
    const upcast = createUpcaster([
      { from: 'a.v1', to: 'a.v2', upcast: (p) => p },
      { from: 'a.v2', to: 'a.v1', upcast: (p) => p },
    ]);
    expect(() => upcast({ ...event, type: 'a.v1' })).toThrow(/loop/);
  });
});
