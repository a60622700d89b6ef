import type { NewShopEvent } from '@sluice/shop-catalog';
import type { Transaction } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import type { ShopDatabase } from '../database.js';
import { CommandError, refusedIfUnique } from './command-error.js';
import {
  commit,
  commitNew,
  lock,
  queryable,
  type Outcome,
  type State,
  type ExpectedVersion,
  type CommandContext,
} from './aggregates.js';

export type Customer = State<'customer'>;

/**
 * Emails are unique regardless of case; the database enforces it with this index. The message
 * leaves the address out: messages reach logs.
 */
const refusedEmail = (error: unknown) =>
  refusedIfUnique(
    error,
    'customers_email_lower',
    () => new CommandError('email_taken', 'The email belongs to another customer'),
  );

/** @throws CommandError `email_taken` */
export async function registerCustomer(
  trx: Transaction<ShopDatabase>,
  input: { email: string; name: string },
  context: CommandContext,
): Promise<Outcome<Customer>> {
  const id = uuidv7();
  const { email, name } = input;
  try {
    return await commitNew(
      trx,
      'customer',
      { id, email, name, erased_at: null },
      [{ type: 'customer.registered.v1', payload: { customerId: id, email, name } }],
      context,
    );
  } catch (error) {
    throw refusedEmail(error);
  }
}

/** Erased customers are gone for every command. */
const lockCustomer = (trx: Transaction<ShopDatabase>, input: ExpectedVersion & { id: string }) =>
  lock(trx, 'customer', input.id, input.expectedVersion, (c) => c.erased_at === null);

/**
 * Renames a customer and/or changes their email: one event per field that changes.
 *
 * @throws CommandError `not_found`, `precondition_failed`, `email_taken`
 */
export async function updateCustomer(
  trx: Transaction<ShopDatabase>,
  input: ExpectedVersion & { id: string; name?: string; email?: string },
  context: CommandContext,
): Promise<Outcome<Customer>> {
  const { id, name, email } = input;
  const current = await lockCustomer(trx, input);
  const events: NewShopEvent[] = [];
  if (name !== undefined && name !== current.name) {
    events.push({ type: 'customer.renamed.v1', payload: { customerId: id, name } });
  }
  if (email !== undefined && email !== current.email) {
    events.push({ type: 'customer.email_changed.v1', payload: { customerId: id, email } });
  }
  try {
    return await commit(trx, 'customer', current, events, context, {
      name: name ?? current.name,
      email: email ?? current.email,
    });
  } catch (error) {
    throw refusedEmail(error);
  }
}

/**
 * Erasure: personal data leaves the write model and the customer's key is destroyed, so the
 * personal fields its events carry sealed read `[erased]` from now on.
 *
 * @throws CommandError `not_found`, `precondition_failed`
 */
export async function eraseCustomer(
  trx: Transaction<ShopDatabase>,
  input: ExpectedVersion & { id: string },
  context: CommandContext,
): Promise<Outcome<Customer>> {
  const current = await lockCustomer(trx, input);
  // The key goes with this transaction: every sealed field of the customer becomes unreadable.
  await context.privacy.erase(queryable(trx), input.id);
  return commit(
    trx,
    'customer',
    current,
    [{ type: 'customer.erased.v1', payload: { customerId: input.id } }],
    context,
    { email: null, name: null, erased_at: new Date() },
  );
}
