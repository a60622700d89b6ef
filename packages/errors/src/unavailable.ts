// Which failures mean the database is out of reach, rather than a statement being wrong.
import { isSluiceError } from './index.js';

/**
 * SQLSTATEs PostgreSQL reports when a connection cannot be had or is going away: connection
 * exceptions (class 08, but not 08P01, a protocol violation, which is a client's bug unless the
 * connection ends with it), the server shutting down, crashing or starting, an idle session
 * ended, no connection slot left.
 */
const UNAVAILABLE_STATES = new Set([
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
  '08007',
  '57P01',
  '57P02',
  '57P03',
  '57P05',
  '53300',
]);

/** Codes of Node's socket errors (which carry the failed `syscall`) when a server is out of reach. */
const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ENOTFOUND',
  'EAI_AGAIN',
  // A Unix-socket host whose server is not running.
  'ENOENT',
]);

/** The calls a socket error names: a file's `open` failing with ENOENT is not one. */
const SOCKET_CALLS = new Set(['connect', 'read', 'write', 'writev', 'getaddrinfo']);

/** What pg and pg-pool throw, without a code, when a connection ends or cannot be made. */
const CONNECTION_MESSAGES = new Set([
  'Connection terminated',
  'Connection terminated unexpectedly',
  'Connection terminated due to connection timeout',
  'timeout expired',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'Cannot use a pool after calling end on the pool',
]);

function unavailable(error: object): boolean {
  const { code, message, severity, syscall } = error as Record<string, unknown>;
  if (typeof code !== 'string')
    return typeof message === 'string' && CONNECTION_MESSAGES.has(message);
  // PostgreSQL's errors carry a severity, Node's socket errors the call that failed.
  if (typeof severity === 'string')
    return UNAVAILABLE_STATES.has(code) || (code === '08P01' && severity === 'FATAL');
  return typeof syscall === 'string' && SOCKET_CALLS.has(syscall) && SOCKET_CODES.has(code);
}

/**
 * Whether `error` says PostgreSQL could not be reached or the connection was lost, as pg and
 * pg-pool report it: refused, reset or timed out, the server shutting down or starting up, a
 * connection exception, no connection slot left. Such a failure may pass by itself; a
 * statement's own errors (constraints, syntax, serialization) are not among them. The causes of
 * Sluice's own errors are looked through (not those of other libraries' errors, such as an HTTP
 * client's). A write whose COMMIT was in flight may have committed.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  const seen = new Set<unknown>();
  const visit = (at: unknown): boolean => {
    if (typeof at !== 'object' || at === null || seen.has(at)) return false;
    seen.add(at);
    if (unavailable(at)) return true;
    // Node's AggregateError of a host's several addresses, each refused.
    const { errors } = at as { errors?: unknown };
    if (at instanceof AggregateError && Array.isArray(errors)) return errors.some(visit);
    return isSluiceError(at) && visit((at as { cause?: unknown }).cause);
  };
  return visit(error);
}
