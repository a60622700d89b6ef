import type { SerializedEvent } from '@sluice/contracts';
import type pg from 'pg';
import type { ClaimCheckStore } from './event-sink.js';

/** The CloudEvents `dataref` of a claim-checked event. */
export function claimCheckRef(eventId: string): string {
  return `urn:sluice:claim-check:${eventId}`;
}

/**
 * Keeps payloads too large for Kafka in `sluice.claim_checks` (created by
 * `prepareReplication`); consumers read them by the event id in the record's `ce_dataref`.
 */
export function createPgClaimCheckStore(pool: pg.Pool): ClaimCheckStore {
  return {
    async put(event: SerializedEvent) {
      await pool.query(
        `INSERT INTO sluice.claim_checks (event_id, payload) VALUES ($1, $2::jsonb) ON CONFLICT (event_id) DO NOTHING`,
        [event.id, event.payloadJson],
      );
      return claimCheckRef(event.id);
    },
  };
}
