import { describe, expect, it } from 'vitest';
import { SluiceError } from './index.js';
import { isDatabaseUnavailable } from './unavailable.js';

/** An error as pg reports PostgreSQL's ErrorResponse. */
const postgres = (code: string, severity = 'ERROR') =>
  Object.assign(new Error(`failed with ${code}`), { code, severity });
/** An error as Node reports a failed socket call. */
const socket = (code: string, syscall = 'connect') =>
  Object.assign(new Error(`${syscall} ${code} 127.0.0.1:1`), { code, syscall, errno: -1 });

describe('isDatabaseUnavailable', () => {
  it.each([
    ['a refused connection', socket('ECONNREFUSED')],
    ['a reset connection', socket('ECONNRESET', 'read')],
    ['a closed socket written to', socket('EPIPE', 'write')],
    ['an unknown host', socket('ENOTFOUND', 'getaddrinfo')],
    ['a connection timeout', socket('ETIMEDOUT')],
    ['a Unix socket without a server', socket('ENOENT')],
    ['the server shutting down (admin)', postgres('57P01', 'FATAL')],
    ['the server crashing', postgres('57P02', 'FATAL')],
    ['the server starting', postgres('57P03', 'FATAL')],
    ['an idle session ended', postgres('57P05', 'FATAL')],
    ['no connection slot', postgres('53300', 'FATAL')],
    ['a connection failure', postgres('08006', 'FATAL')],
    ['a connection that failed to open', postgres('08001')],
    ['a protocol violation that ends the connection', postgres('08P01', 'FATAL')],
    ['pg: terminated', new Error('Connection terminated unexpectedly')],
    [
      'pg: not queryable',
      new Error('Client has encountered a connection error and is not queryable'),
    ],
    ['pg: closed', new Error('Client was closed and is not queryable')],
    ['pg-pool: connect timeout', new Error('timeout exceeded when trying to connect')],
    ['pg-pool: ended', new Error('Cannot use a pool after calling end on the pool')],
    [
      'pg-pool: timeout with its cause',
      new Error('Connection terminated due to connection timeout', {
        cause: new Error('Connection terminated unexpectedly'),
      }),
    ],
    [
      "a SluiceError's cause",
      new SluiceError('transaction_not_begun', 'BEGIN failed', { cause: socket('ECONNRESET') }),
    ],
    [
      "every address of a host refused (Node's AggregateError)",
      new AggregateError([socket('ECONNREFUSED'), socket('ECONNREFUSED')], 'refused'),
    ],
  ])('%s: unavailable', (_name, error) => {
    expect(isDatabaseUnavailable(error)).toBe(true);
  });

  it.each([
    ['a unique violation', postgres('23505')],
    ['a not-null violation', postgres('23502')],
    ['a serialization failure', postgres('40001')],
    ['a deadlock', postgres('40P01')],
    ['a syntax error', postgres('42601')],
    ['a read-only transaction', postgres('25006')],
    ['a query canceled by statement_timeout', postgres('57014')],
    ['a bind with the wrong number of parameters (08P01, ERROR)', postgres('08P01')],
    ['a connection code without a severity', Object.assign(new Error('x'), { code: '08006' })],
    [
      'a socket code without the failed call',
      Object.assign(new Error('x'), { code: 'ECONNRESET' }),
    ],
    ['a file not found', socket('ENOENT', 'open')],
    ['an error of the application', new SluiceError('version_conflict', 'stale')],
    [
      "another library's error caused by a refused connection (an HTTP client's)",
      new TypeError('fetch failed', { cause: socket('ECONNREFUSED') }),
    ],
    ['a message that merely contains the words', new Error('Connection terminated unexpectedly!')],
    ['a plain error', new Error('boom')],
    ['a TLS refusal', new Error('The server does not support SSL connections')],
    ['a string', 'ECONNREFUSED'],
    ['undefined', undefined],
    ['null', null],
    ['an object with a numeric code', { code: 8006, severity: 'FATAL' }],
  ])('%s: not unavailable', (_name, error) => {
    expect(isDatabaseUnavailable(error)).toBe(false);
  });

  it('ends on a cycle of causes', () => {
    const a = new SluiceError('a', 'a');
    const b = new SluiceError('b', 'b', { cause: a });
    Object.assign(a, { cause: b });
    expect(isDatabaseUnavailable(a)).toBe(false);
  });
});
