// Claim checks: payloads too large for a Kafka record, kept in PostgreSQL under their event id.
// The relay writes them and projectors read them; this module is the one both import.

/** Runs a statement with `$n` parameters: a `pg` pool or client, or an adapter over Kysely. */
export interface Queryable {
  query(text: string, values: unknown[]): Promise<{ rows: unknown[] }>;
}

/** Creates the claim-check table if it is missing. */
export const CLAIM_CHECKS_TABLE = `
  CREATE TABLE IF NOT EXISTS sluice.claim_checks (
    event_id uuid PRIMARY KEY,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  )`;

const PREFIX = 'urn:sluice:claim-check:';

/** The CloudEvents `dataref` of a claim-checked event. */
export function claimCheckRef(eventId: string): string {
  return `${PREFIX}${eventId}`;
}

/** Stores a payload (JSON text) under its event id, once; returns its `dataref`. */
export async function putClaimCheck(
  db: Queryable,
  eventId: string,
  payloadJson: string,
): Promise<string> {
  await db.query(
    `INSERT INTO sluice.claim_checks (event_id, payload) VALUES ($1, $2::jsonb)
     ON CONFLICT (event_id) DO NOTHING`,
    [eventId, payloadJson],
  );
  return claimCheckRef(eventId);
}

/** A claim-checked payload as JSON text, by event id (a UUID); undefined when none is kept. */
export async function getClaimCheck(db: Queryable, eventId: string): Promise<string | undefined> {
  const { rows } = await db.query(
    'SELECT payload::text AS payload FROM sluice.claim_checks WHERE event_id = $1::uuid',
    [eventId],
  );
  return (rows[0] as { payload: string } | undefined)?.payload;
}
