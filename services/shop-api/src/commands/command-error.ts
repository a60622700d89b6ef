import { SluiceError } from '@sluice/errors';

/** Why a command refused, as a stable code callers match on. */
export type CommandErrorCode =
  /** The aggregate does not exist (or was erased). */
  | 'not_found'
  /** The aggregate is not at the version the caller expected. */
  | 'precondition_failed'
  /** The command names another aggregate that does not exist. */
  | 'customer_not_found'
  | 'product_not_found'
  /** The aggregate's state does not allow the command. */
  | 'email_taken'
  | 'sku_taken'
  | 'product_delisted'
  | 'cart_not_open'
  | 'cart_empty'
  | 'item_not_in_cart'
  | 'insufficient_stock'
  /** The result would exceed what a cart line or one order may hold. */
  | 'quantity_limit'
  | 'cart_lines_limit'
  | 'cart_total_limit';

/** A command refused: nothing it did in its transaction may commit. */
export class CommandError extends SluiceError {
  override readonly name = 'CommandError';
  declare readonly code: CommandErrorCode;

  // Not useless: it narrows `code` to the command codes.
  // eslint-disable-next-line @typescript-eslint/no-useless-constructor
  constructor(code: CommandErrorCode, message: string) {
    super(code, message);
  }
}

/**
 * What a command throws for `error`: `refusal()` when it is a violation of the unique
 * `constraint` (a rule the database enforces), `error` itself otherwise.
 */
export function refusedIfUnique(
  error: unknown,
  constraint: string,
  refusal: () => CommandError,
): unknown {
  const pgError = error as { code?: string; constraint?: string };
  return pgError.code === '23505' && pgError.constraint === constraint ? refusal() : error;
}
