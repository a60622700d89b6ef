import { SluiceError, errorMessage } from '@sluice/errors';
import { accessSync, constants } from 'node:fs';
import type { Logger } from 'pino';
import { refusalExitCode } from './run-service.js';

/** The `sslmode` values of a libpq URL, from no TLS to a verified certificate and host name. */
export const SSL_MODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;

const FILE_PARAMETERS = ['sslrootcert', 'sslcert', 'sslkey'] as const;

function searchParams(url: string): URLSearchParams | undefined {
  try {
    return new URL(url).searchParams;
  } catch {
    return undefined;
  }
}

function unreadable(path: string): string | undefined {
  try {
    accessSync(path, constants.R_OK);
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code ?? errorMessage(error);
  }
}

/**
 * What is wrong with the TLS parameters of a PostgreSQL URL, one phrase each: an unknown
 * `sslmode`, `verify-ca` without `sslrootcert`, `sslcert` without `sslkey` (or the reverse), a
 * file that cannot be read. Empty when they are fine.
 */
export function databaseUrlProblems(url: string): string[] {
  const params = searchParams(url);
  if (params === undefined) return ['is not a URL'];
  const problems: string[] = [];
  const mode = params.get('sslmode');
  if (mode !== null && !(SSL_MODES as readonly string[]).includes(mode)) {
    problems.push(`sslmode must be one of ${SSL_MODES.join(', ')}`);
  }
  if (mode === 'verify-ca' && !params.has('sslrootcert')) {
    problems.push('sslmode=verify-ca needs sslrootcert (the CA to verify the server with)');
  }
  if (params.has('sslcert') !== params.has('sslkey')) {
    problems.push('sslcert and sslkey go together: set both or neither');
  }
  for (const name of FILE_PARAMETERS) {
    const path = params.get(name);
    const why = path === null ? undefined : unreadable(path);
    if (why !== undefined)
      problems.push(`${name} cannot be read (${JSON.stringify(path)}: ${why})`);
  }
  return problems;
}

/**
 * `url` as node-postgres must read it for its `sslmode` to mean what it means to libpq: with
 * `uselibpqcompat=true` added when it has TLS parameters. (Without it node-postgres verifies the
 * certificate and host name under `prefer`, `require` and `verify-ca` too.)
 *
 * @example libpqDatabaseUrl('postgres://db/shop?sslmode=require') // 'postgres://db/shop?sslmode=require&uselibpqcompat=true'
 */
export function libpqDatabaseUrl(url: string): string {
  const params = searchParams(url);
  if (params === undefined || params.has('uselibpqcompat')) return url;
  if (!params.has('sslmode') && !FILE_PARAMETERS.some((name) => params.has(name))) return url;
  return `${url}${url.includes('?') ? '&' : '?'}uselibpqcompat=true`;
}

/** The codes of the TLS failures {@link postgresTlsFailure} recognises. */
export type PostgresTlsErrorCode =
  'postgres_tls_untrusted' | 'postgres_tls_hostname' | 'postgres_tls_unsupported';

/** Node's codes for a certificate chain that does not lead to a trusted authority, or is invalid. */
const UNTRUSTED = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
]);

/** `host:port/database` of `url`, without credentials. */
function where(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '5432'}${parsed.pathname}`;
  } catch {
    return 'DATABASE_URL';
  }
}

/**
 * The TLS failure behind a connection error to the server of `url`, as one clear message
 * (never the password); undefined when `error` is not one.
 */
export function postgresTlsFailure(
  error: unknown,
  url: string,
): SluiceError<PostgresTlsErrorCode> | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  const detail = errorMessage(error);
  const server = `PostgreSQL at ${where(url)}`;
  const failure = (tlsCode: PostgresTlsErrorCode, message: string) =>
    new SluiceError<PostgresTlsErrorCode>(tlsCode, message, { cause: error });
  if (typeof code === 'string' && UNTRUSTED.has(code)) {
    return failure(
      'postgres_tls_untrusted',
      `${server}: its TLS certificate is not trusted (${code}: ${detail}); set sslrootcert in DATABASE_URL to the CA that signed it`,
    );
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return failure(
      'postgres_tls_hostname',
      `${server}: its TLS certificate is not for this host name (${detail}); connect by a name the certificate lists, or use sslmode=verify-ca`,
    );
  }
  if (detail === 'The server does not support SSL connections') {
    return failure(
      'postgres_tls_unsupported',
      `${server} does not offer TLS, and DATABASE_URL's sslmode requires it; enable ssl on the server, or use sslmode=disable`,
    );
  }
  return undefined;
}

/**
 * Connects to PostgreSQL once through `connect`, at start: a TLS failure (see
 * {@link postgresTlsFailure}) ends the process with one fatal line and its exit code. Any other
 * failure is left to the service, which retries or reports it as before.
 *
 * @example await verifyDatabaseAtStart(config.DATABASE_URL, logger, () => pool.query('SELECT 1'));
 */
export async function verifyDatabaseAtStart(
  url: string,
  logger: Logger,
  connect: () => Promise<unknown>,
): Promise<void> {
  try {
    await connect();
  } catch (error) {
    const failure = postgresTlsFailure(error, url);
    const code = refusalExitCode(failure);
    if (failure === undefined || code === undefined) return;
    logger.fatal({ code: failure.code }, failure.message);
    process.exit(code);
  }
}
