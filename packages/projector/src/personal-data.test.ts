import type { DomainEvent } from '@sluice/contracts';
import { SluiceError } from '@sluice/errors';
import { describe, expect, it } from 'vitest';
import { HandlerRetry } from './apply-events.js';
import { OpenedValues, redactedError, redactor } from './personal-data.js';
import type { BatchSql, Reveal } from './records.js';

const event = (payload: unknown): DomainEvent => ({
  id: '7f0c0a52-4d7e-4a43-9b43-1c1f3f7c2a10',
  type: 'customer.renamed.v1',
  aggregateType: 'customer',
  aggregateId: 'c1',
  aggregateVersion: 1,
  occurredAt: '2026-11-30T10:00:00.000Z',
  payload,
  metadata: {},
});
const sql: BatchSql = { query: () => Promise.resolve({ rows: [] }) };

describe('redactor', () => {
  it('replaces a value as it is, JSON-escaped, with quotes doubled, in any case', () => {
    const redact = redactor(['Zoë "Z" O\'Hara']);
    expect(redact('name Zoë "Z" O\'Hara taken')).toBe('name [redacted] taken');
    expect(redact('{"name":"Zoë \\"Z\\" O\'Hara"}')).toBe('{"name":"[redacted]"}');
    expect(redact("VALUES ('Zoë \"Z\" O''Hara')")).toBe("VALUES ('[redacted]')");
    expect(redact('ZOË "Z" O\'HARA and zoë "z" o\'hara')).toBe('[redacted] and [redacted]');
  });

  it('takes characters of regular expressions literally, and leaves texts alone without values', () => {
    expect(redactor(['a.b+c'])('a.b+c axbbc')).toBe('[redacted] axbbc');
    expect(redactor([])('a.b+c')).toBe('a.b+c');
    expect(redactor([''])('text')).toBe('text');
  });
});

describe('redactedError', () => {
  it('copies an error with its texts and its causes redacted, its kind and codes kept', () => {
    const database = Object.assign(new Error('duplicate key'), {
      code: '23505',
      constraint: 'customers_email',
      detail: 'Key (email)=(ada@example.com) already exists.',
    });
    const retry = new HandlerRetry(40, new Error('ada@example.com taken', { cause: database }));
    const copy = redactedError(retry, redactor(['ada@example.com'])) as HandlerRetry;
    expect(copy).toBeInstanceOf(HandlerRetry);
    expect(copy).toMatchObject({ code: 'handler_retry', delayMs: 40, retriable: true });
    const cause = copy.cause as Error & { cause: typeof database };
    expect(cause.message).toBe('[redacted] taken');
    expect(cause.stack).not.toContain('ada@example.com');
    expect(cause.cause).toMatchObject({
      code: '23505',
      constraint: 'customers_email',
      detail: 'Key (email)=([redacted]) already exists.',
    });
    expect(retry.cause).toMatchObject({ message: 'ada@example.com taken' });
  });

  it('redacts a thrown string, and passes other values through', () => {
    expect(redactedError('no ada@example.com', redactor(['ada@example.com']))).toBe(
      'no [redacted]',
    );
    expect(redactedError(42, redactor(['42']))).toBe(42);
  });
});

describe('OpenedValues', () => {
  const reveal: Reveal = (e) =>
    Promise.resolve({ ...e, payload: { ...(e.payload as object), name: 'Ada', tags: ['VIP'] } });

  it('reveals for a projection that opts in only', () => {
    const opened = new OpenedValues();
    expect(opened.revealFor({}, reveal)).toBeUndefined();
    expect(opened.revealFor({ personalData: 'reveal' }, undefined)).toBeUndefined();
    expect(opened.revealFor({ personalData: 'reveal' }, reveal)).toBeTypeOf('function');
  });

  it('remembers the strings the hook changed, per event', async () => {
    const opened = new OpenedValues();
    const hook = opened.revealFor({ personalData: 'reveal' }, reveal);
    const sealed = event({ customerId: 'c1', name: 'sluice:enc:v1:...' });
    const clear = await hook?.(sealed, sql);
    if (clear === undefined) throw new Error('no hook');
    expect(opened.redactorOf(clear)('c1 Ada VIP')).toBe('c1 [redacted] [redacted]');
    expect(opened.redactorOf(sealed)('c1 Ada')).toBe('c1 Ada');
    const error = opened.redactError(new SluiceError('x', 'Ada')) as Error;
    expect(error.message).toBe('[redacted]');
  });

  it('leaves errors as they are when nothing was opened', () => {
    const error = new Error('Ada');
    expect(new OpenedValues().redactError(error)).toBe(error);
  });
});
