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
});
