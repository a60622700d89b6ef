export { isDatabaseUnavailable } from './unavailable.js';

/** Options accepted by {@link SluiceError}. */
export interface SluiceErrorOptions {
  /** The underlying error, kept for logs and `error.cause` chains. */
  cause?: unknown;
  /** Whether repeating the same operation later may succeed (network blips, timeouts). */
  retriable?: boolean;
}

// The class behind `SluiceError`. Typed through the interface and constructor below, so that a
// package can name the codes it throws while `instanceof SluiceError` still narrows to a string code.
const SluiceErrorClass = class SluiceError extends Error {
  override readonly name: string = 'SluiceError';
  readonly code: string;
  readonly retriable: boolean;

  constructor(code: string, message: string, options: SluiceErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
};

/**
 * The root of every error Sluice throws on purpose. `code` is a stable, snake_case
 * identifier callers and operators can match on; the message is for humans.
 */
export interface SluiceError<Code extends string = string> extends InstanceType<
  typeof SluiceErrorClass
> {
  readonly code: Code;
}

/** The type of {@link SluiceError}'s constructor. */
export interface SluiceErrorConstructor {
  /**
   * A package passes the union of the codes it throws, so a code outside it does not compile.
   *
   * @example
   * type PreflightErrorCode = 'postgres_wal_level' | 'postgres_unreachable';
   * throw new SluiceError<PreflightErrorCode>('postgres_wal_level', 'wal_level is replica; Sluice needs logical');
   */
  new <Code extends string = string>(
    code: Code,
    message: string,
    options?: SluiceErrorOptions,
  ): SluiceError<Code>;
  readonly prototype: SluiceError;
}

/** See the {@link SluiceError} interface; `new SluiceError<Codes>(code, message)`. */
// The class sets `code` to the string it is given, which is the `Code` it was called with.
export const SluiceError = SluiceErrorClass as SluiceErrorConstructor;

/**
 * True when `error` is a {@link SluiceError}, optionally with the given `code`.
 *
 * @example if (isSluiceError(error, 'slot_lost')) process.exit(78);
 */
export function isSluiceError<Code extends string = string>(
  error: unknown,
  code?: Code,
): error is SluiceError<Code> {
  return error instanceof SluiceError && (code === undefined || error.code === code);
}

/** The message of anything thrown, for logs and wrapped errors. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
