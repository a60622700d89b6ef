/** Options accepted by {@link SluiceError}. */
export interface SluiceErrorOptions {
  /** The underlying error, kept for logs and `error.cause` chains. */
  cause?: unknown;
  /** Whether repeating the same operation later may succeed (network blips, timeouts). */
  retriable?: boolean;
}

/**
 * The root of every error Sluice throws on purpose. `code` is a stable, snake_case
 * identifier callers and operators can match on; the message is for humans.
 *
 * @example
 * throw new SluiceError('postgres_wal_level', 'wal_level is replica; Sluice needs logical');
 */
export class SluiceError extends Error {
  override readonly name: string = 'SluiceError';
  readonly code: string;
  readonly retriable: boolean;

  constructor(code: string, message: string, options: SluiceErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}

/** True when `error` is a {@link SluiceError}, optionally with the given `code`. */
export function isSluiceError(error: unknown, code?: string): error is SluiceError {
  return error instanceof SluiceError && (code === undefined || error.code === code);
}

/** The message of anything thrown, for logs and wrapped errors. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
