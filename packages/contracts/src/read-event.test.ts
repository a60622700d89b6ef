// readEvent: what another team's consumer does with a record its own Kafka client gives it.
import { Type } from '@sinclair/typebox';
import { describe, expect, it } from 'vitest';
import { defineCatalog, defineEvent } from './catalog.js';
import { toKafkaRecord, type DomainEvent } from './cloud-events.js';
import { readEvent, type KafkaMessageLike } from './read-event.js';

const billing = defineCatalog({
  'invoice.paid.v1': defineEvent(
    'invoice.paid.v1',
    'invoice',
    'A payment was received.',
    Type.Object({ amountCents: Type.Integer({ minimum: 1 }) }),
  ),
});

const paid: DomainEvent = {
  id: '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a',
  type: 'invoice.paid.v1',
  aggregateType: 'invoice',
  aggregateId: 'inv-1',
  aggregateVersion: 10,
  occurredAt: '2026-11-30T10:00:00.000Z',
  payload: { amountCents: 250 },
  metadata: { actor: 'user:42' },
};

/** The record as kafkajs hands it to `eachMessage`: Buffers everywhere. */
function asReceived(event: DomainEvent, change: Partial<KafkaMessageLike> = {}): KafkaMessageLike {
  const record = toKafkaRecord(event, { source: '/billing' });
  const headers = Object.fromEntries(
    Object.entries(record.headers).map(([name, value]) => [name, Buffer.from(value)]),
  );
  return { key: Buffer.from(record.key), value: Buffer.from(record.value), headers, ...change };
}

const codeOf = (message: KafkaMessageLike): unknown => {
  try {
    readEvent(billing, message);
    return undefined;
  } catch (error) {
    return (error as { code?: unknown }).code;
  }
};

describe('readEvent', () => {
  it('gives the event, typed by its catalog, from bytes or from text', () => {
    const event = readEvent(billing, asReceived(paid));
    expect(event).toEqual(paid);
    // One type in the catalog: the payload is already that type's.
    expect(event.payload.amountCents).toBe(250);
    const record = toKafkaRecord(paid, { source: '/billing' });
    expect(readEvent(billing, record)).toEqual(paid);
  });

  it('leaves null header values out and joins repeated ones', () => {
    const message = asReceived(paid);
    const headers = {
      ...message.headers,
      ce_reason: null,
      ce_actor: [Buffer.from('a'), null, 'b'],
    };
    expect(readEvent(billing, { ...message, headers }).metadata).toEqual({ actor: 'a,b' });
  });

  it('refuses, with a stable code, what is not an event of the catalog', () => {
    const { headers = {} } = asReceived(paid);
    const without = (name: string) =>
      Object.fromEntries(Object.entries(headers).filter(([key]) => key !== name));
    expect(codeOf(asReceived(paid, { headers: without('ce_id') }))).toBe('record_malformed');
    expect(codeOf(asReceived(paid, { headers: undefined }))).toBe('record_malformed');
    expect(codeOf(asReceived(paid, { key: null }))).toBe('record_malformed');
    expect(codeOf(asReceived(paid, { value: Buffer.from('{"amountCents":') }))).toBe(
      'record_malformed',
    );
    expect(codeOf(asReceived(paid, { value: '{"amountCents":1,"x":"\\u0000"}' }))).toBe(
      'record_malformed',
    );
    expect(codeOf(asReceived(paid, { value: '{"amountCents":0}' }))).toBe('event_payload_invalid');
    expect(codeOf(asReceived({ ...paid, type: 'invoice.voided.v1' }))).toBe('event_type_unknown');
    expect(
      codeOf(
        asReceived(paid, {
          value: null,
          headers: { ...headers, ce_dataref: 'urn:sluice:claim-check:x' },
        }),
      ),
    ).toBe('record_claim_checked');
    expect(codeOf(asReceived(paid, { value: null }))).toBe('record_malformed');
  });
});
