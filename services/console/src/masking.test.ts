import { describe, expect, it } from 'vitest';
import { headersOf, isMasked, parkedItemOf, type ParkedRow } from './masking.js';

const MASKED = new Set(['customer.registered.v1']);

function row(type: string | null, value: string | null): ParkedRow {
  const headers = [
    ['ce_id', 'e-1'],
    ...(type === null ? [] : [['ce_type', type]]),
    ['x_null', null],
  ];
  return {
    projection: 'customer_directory',
    topic: 'outbox.event.customer',
    partition: 2,
    record_offset: '9007199254740993',
    aggregate_type: 'customer',
    aggregate_id: 'c-1',
    aggregate_version: '4',
    record_key: Buffer.from('c-1'),
    record_value: value === null ? null : Buffer.from(value),
    record_headers: Buffer.from(JSON.stringify(headers)),
    reason: 'schema_invalid',
    error: 'payload/email must be string',
    attempts: 3,
    first_failed_at: new Date('2026-01-02T03:04:05.000Z'),
  };
}

describe('parkedItemOf', () => {
  it('hides a masked type’s payload from a viewer, and says so', () => {
    const item = parkedItemOf(row('customer.registered.v1', '{"email":"a@b.c"}'), 'viewer', MASKED);
    expect(item).toMatchObject({
      payload: null,
      masked: true,
      eventType: 'customer.registered.v1',
    });
    expect(JSON.stringify(item)).not.toContain('a@b.c');
  });

  it('shows an operator the same payload, parsed', () => {
    const item = parkedItemOf(
      row('customer.registered.v1', '{"email":"a@b.c"}'),
      'operator',
      MASKED,
    );
    expect(item).toMatchObject({ payload: { email: 'a@b.c' }, masked: false });
  });

  it('shows a viewer the payload of a type that is not masked, as text when it is not JSON', () => {
    expect(parkedItemOf(row('cart.created.v1', '{not json'), 'viewer', MASKED)).toMatchObject({
      payload: '{not json',
      masked: false,
    });
  });

  it('decodes the record: offset kept as a string, version a number, key and headers as text', () => {
    expect(parkedItemOf(row('cart.created.v1', null), 'operator', MASKED)).toEqual({
      projection: 'customer_directory',
      topic: 'outbox.event.customer',
      partition: 2,
      offset: '9007199254740993',
      aggregateType: 'customer',
      aggregateId: 'c-1',
      version: 4,
      eventType: 'cart.created.v1',
      errorClass: 'schema_invalid',
      message: 'payload/email must be string',
      attempts: 3,
      key: 'c-1',
      headers: { ce_id: 'e-1', ce_type: 'cart.created.v1' },
      payload: null,
      masked: false,
      parkedAt: '2026-01-02T03:04:05.000Z',
    });
  });
});

describe('isMasked', () => {
  it('masks a record of unknown type from viewers while any type is masked, and nothing otherwise', () => {
    expect(isMasked('viewer', null, MASKED)).toBe(true);
    expect(isMasked('viewer', null, new Set())).toBe(false);
    expect(isMasked('operator', null, MASKED)).toBe(false);
  });
});

describe('headersOf', () => {
  it('shows stored bytes that are not a JSON array of pairs as no headers', () => {
    expect(headersOf(Buffer.from('{oops'))).toEqual({});
    expect(headersOf(Buffer.from('{"a":"b"}'))).toEqual({});
  });
});
