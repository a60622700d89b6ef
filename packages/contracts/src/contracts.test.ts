import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isSluiceError } from '@sluice/errors';
import {
  aggregateTypes,
  assertPayload,
  catalog,
  createUpcaster,
  fromKafkaRecord,
  payloadErrors,
  toKafkaRecord,
  topicFor,
  type DomainEvent,
} from './index.js';
import { schemaFiles } from './schema-files.js';

const schemaDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'schemas');
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

describe('catalog', () => {
  it('publishes an up-to-date JSON Schema file per event type (run `pnpm --filter @sluice/contracts schemas`)', () => {
    const files = schemaFiles();
    expect(Object.keys(files)).toHaveLength(Object.keys(catalog).length);
    for (const [name, text] of Object.entries(files)) {
      expect(readFileSync(join(schemaDir, name), 'utf8'), name).toBe(text);
    }
  });

  it('names versions and aggregate types', () => {
    expect(catalog['order.placed.v1'].version).toBe(1);
    expect([...aggregateTypes].sort()).toEqual(['cart', 'customer', 'order', 'product']);
    expect(topicFor('cart')).toBe('outbox.event.cart');
  });

  it('accepts valid payloads and names every violation of invalid ones', () => {
    expect(payloadErrors('cart.item_added.v1', event.payload)).toEqual([]);
    const errors = payloadErrors('cart.item_added.v1', { cartId: 'x', quantity: 0, extra: 1 });
    expect(errors.join('\n')).toMatch(/cartId/);
    expect(errors.join('\n')).toMatch(/quantity/);
    expect(errors.join('\n')).toMatch(/additional properties/);
    expect(payloadErrors('cart.teleported.v1', {})).toEqual([
      'unknown event type "cart.teleported.v1"',
    ]);
    expect(() => assertPayload('customer.erased.v1', { customerId: id, email: 'a@b.c' })).toThrow(
      /customer.erased.v1/,
    );
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
