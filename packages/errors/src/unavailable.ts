// Which failures mean the database is out of reach, rather than a statement being wrong.

/** SQLSTATEs of a server that is going away, starting up, or full of connections. */
const UNAVAILABLE_STATES = new Set(['57P01', '57P02', '57P03', '53300']);

/** Socket errors of a server that cannot be reached. */
const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** What pg and pg-pool throw, without a code, when a connection ends or cannot be made. */
const CONNECTION_MESSAGES = new Set([
  'Connection terminated',
  'Connection terminated unexpectedly',
  'Connection terminated due to connection timeout',
  'timeout expired',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
]);

function unavailable(error: object): boolean {
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code === 'string') {
    return code.startsWith('08') || UNAVAILABLE_STATES.has(code) || SOCKET_CODES.has(code);
  }
  return typeof message === 'string' && CONNECTION_MESSAGES.has(message);
}

/**
 * Whether `error` (or an error it was caused by) says PostgreSQL could not be reached or the
 * connection was lost: refused, reset or timed out, the server shutting down or starting up
 * (`57P01`–`57P03`), a connection exception (class `08`), no connection slot left (`53300`).
 * Such a failure may pass by itself; a statement's own errors (constraints, syntax,
 * serialization) are not among them. A write whose COMMIT was in flight may have committed.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  const seen = new Set<unknown>();
  const visit = (at: unknown): boolean => {
    if (typeof at !== 'object' || at === null || seen.has(at)) return false;
    seen.add(at);
    // Node's AggregateError of a host's several addresses, each refused.
    const { cause, errors } = at as { cause?: unknown; errors?: unknown };
    return unavailable(at) || visit(cause) || (Array.isArray(errors) && errors.some(visit));
  };
  return visit(error);
}
