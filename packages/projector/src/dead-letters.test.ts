// A dead letter keeps the record's headers as received, whatever their names: `__proto__` and
// `constructor` included, repeated names as arrays, null values named.
import { describe, expect, it } from 'vitest';
import { deadLetterMessage } from './dead-letters.js';
import { recordFromRaw, type RawHeader } from './records.js';

const headers: RawHeader[] = [
  ['__proto__', Buffer.from('p')],
  ['ce_id', 'e1'],
  ['constructor', 'c'],
  ['note', 'x'],
  ['note', Buffer.from('y')],
  ['gone', null],
];
const record = recordFromRaw(
  { topic: 't', partition: 1, offset: 7n },
  { key: Buffer.from('k'), value: Buffer.from('{}'), headers },
);

describe('deadLetterMessage', () => {
  it('keeps every header as an own value, and names the null ones', () => {
    const at = new Date('2026-12-01T00:00:00Z');
    const message = deadLetterMessage('cart_summary', {
      record,
      errorClass: 'schema_invalid',
      message: 'bad',
      attempts: 1,
      firstFailure: at,
      lastFailure: at,
    });
    const sent = message.headers ?? {};
    expect(Object.getPrototypeOf(sent)).toBe(Object.prototype);
    expect(Object.entries(sent).slice(0, 4)).toEqual([
      ['__proto__', Buffer.from('p')],
      ['ce_id', 'e1'],
      ['constructor', 'c'],
      ['note', ['x', Buffer.from('y')]],
    ]);
    expect(sent).toMatchObject({ sluice_error_null_headers: 'gone', sluice_error_offset: '7' });
  });
});

describe('recordFromRaw', () => {
  it('reads every header name as its text, repeated ones joined', () => {
    expect(Object.entries(record.headers)).toEqual([
      ['__proto__', 'p'],
      ['ce_id', 'e1'],
      ['constructor', 'c'],
      ['note', 'x,y'],
    ]);
  });
});
