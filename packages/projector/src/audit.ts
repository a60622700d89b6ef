import { sql, type Transaction } from 'kysely';
import { storableText } from './records.js';

/** Who asks for an operation, and why; recorded in `sluice.operator_audit`. */
export interface OperatorRequest {
  actor: string;
  reason?: string;
}

/** An operator's action, recorded in the same transaction as the action. */
export interface AuditEntry {
  actor: string;
  action: string;
  projection: string | null;
  target: unknown;
  reason: string | null;
  outcome: unknown;
}

/** Records an operator's action in `sluice.operator_audit`. */
export async function audit<DB>(trx: Transaction<DB>, entry: AuditEntry): Promise<void> {
  await sql`
    INSERT INTO sluice.operator_audit (actor, action, projection, target, reason, outcome)
    VALUES (${storableText(entry.actor)}, ${entry.action}, ${entry.projection},
            ${JSON.stringify(entry.target)}::jsonb,
            ${entry.reason === null ? null : storableText(entry.reason)},
            ${JSON.stringify(entry.outcome)}::jsonb)`.execute(trx);
}
