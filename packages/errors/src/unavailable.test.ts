import { describe, expect, it } from 'vitest';
import { isDatabaseUnavailable } from './unavailable.js';

const coded = (code: string, message = 'failed') => Object.assign(new Error(message), { code });

describe('isDatabaseUnavailable', () => {
  it.each([
    ['a refused connection', coded('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:1')],
    ['a reset connection', coded('ECONNRESET')],
    ['an unknown host', coded('ENOTFOUND')],
    ['a connection timeout', coded('ETIMEDOUT')],
    ['the server shutting down (admin)', coded('57P01')],
    ['the server crashing', coded('57P02')],
    ['the server starting', coded('57P03')],
    ['no connection slot', coded('53300')],
    ['a connection exception', coded('08006')],
    ['a connection that failed to open', coded('08001')],
    ['pg: terminated', new Error('Connection terminated unexpectedly')],
    [
      'pg: not queryable',
      new Error('Client has encountered a connection error and is not queryable'),
    ],
    ['pg-pool: connect timeout', new Error('timeout exceeded when trying to connect')],
    [
      'pg-pool: timeout with its cause',
      new Error('Connection terminated due to connection timeout', {
        cause: new Error('Connection terminated unexpectedly'),
      }),
    ],
    ['a wrapped cause', new Error('migration failed', { cause: coded('ECONNREFUSED') })],
    [
      "every address of a host refused (Node's AggregateError)",
      new AggregateError([coded('ECONNREFUSED'), coded('ECONNREFUSED')], 'refused'),
    ],
  ])('%s: unavailable', (_name, error) => {
    expect(isDatabaseUnavailable(error)).toBe(true);
  });

  it.each([
    ['a unique violation', coded('23505')],
    ['a not-null violation', coded('23502')],
    ['a serialization failure', coded('40001')],
    ['a deadlock', coded('40P01')],
    ['a syntax error', coded('42601')],
    ['a read-only transaction', coded('25006')],
    ['a query timeout', coded('57014')],
    ['a code that merely starts alike', coded('57P0')],
    ['an error of the application', coded('version_conflict')],
    ['a message that merely contains the words', new Error('Connection terminated unexpectedly!')],
    ['a plain error', new Error('boom')],
    ['a TLS refusal', new Error('The server does not support SSL connections')],
    ['a string', 'ECONNREFUSED'],
    ['undefined', undefined],
    ['null', null],
    ['an object with a numeric code', { code: 8006 }],
  ])('%s: not unavailable', (_name, error) => {
    expect(isDatabaseUnavailable(error)).toBe(false);
  });

  it('ends on a cycle of causes', () => {
    const a = coded('23505');
    const b = new Error('b', { cause: a });
    Object.assign(a, { cause: b });
    expect(isDatabaseUnavailable(a)).toBe(false);
  });
});
