// A kafkajs message as the projector keeps it: header text for decoding, and the bytes as
// received (repeated names and null values included) for parked records and dead letters.
import type { KafkaMessage } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { encodeHeaders, rawOf, toRecord } from './records.js';

const message = {
  key: Buffer.from('cart-1'),
  value: Buffer.from('{"a":1}'),
  timestamp: '1700000000000',
  offset: '41',
  attributes: 0,
  headers: {
    ce_id: Buffer.from('e1'),
    note: [Buffer.from('x'), null, Buffer.from('y')],
    gone: null,
  },
} as unknown as KafkaMessage;

describe('toRecord', () => {
  it('keeps header text for decoding and the header pairs as received', () => {
    const record = toRecord('t', 2, message);
    expect(record).toMatchObject({ topic: 't', partition: 2, offset: 41n, key: 'cart-1' });
    expect(record.headers).toEqual({ ce_id: 'e1', note: 'x,y' });
    expect(rawOf(record).headers).toEqual([
      ['ce_id', Buffer.from('e1')],
      ['note', Buffer.from('x')],
      ['note', null],
      ['note', Buffer.from('y')],
      ['gone', null],
    ]);
    expect(rawOf(record).headers).toBe(rawOf(record).headers);
    expect(JSON.parse(encodeHeaders(rawOf(record).headers).toString())).toEqual([
      ['ce_id', 'e1'],
      ['note', 'x'],
      ['note', null],
      ['note', 'y'],
      ['gone', null],
    ]);
    expect(rawOf(record).value).toBe(message.value);
  });

  it('reads string header values as they are, and falls back to text for any other value', () => {
    const strings = { ce_id: 'e1', constructor: 'c' } as Record<string, string>;
    Object.defineProperty(strings, '__proto__', { value: 'p', enumerable: true });
    const asStrings = { ...message, headers: strings } as unknown as KafkaMessage;
    const record = toRecord('t', 0, asStrings);
    expect(Object.entries(record.headers)).toEqual([
      ['ce_id', 'e1'],
      ['constructor', 'c'],
      ['__proto__', 'p'],
    ]);
    expect(rawOf(record)).toMatchObject({ key: asStrings.key, value: asStrings.value });
    expect(rawOf(record).headers).toEqual([
      ['ce_id', 'e1'],
      ['constructor', 'c'],
      ['__proto__', 'p'],
    ]);
    const mixed = { ce_id: 'e1', gone: null, note: ['x', 'y'] } as Record<string, unknown>;
    Object.defineProperty(mixed, '__proto__', { value: Buffer.from('p'), enumerable: true });
    const fallback = toRecord('t', 0, { ...message, headers: mixed } as unknown as KafkaMessage);
    expect(Object.entries(fallback.headers)).toEqual([
      ['ce_id', 'e1'],
      ['note', 'x,y'],
      ['__proto__', 'p'],
    ]);
    const none = { ...message, headers: undefined } as unknown as KafkaMessage;
    expect(toRecord('t', 0, none).headers).toEqual({});
  });
});
