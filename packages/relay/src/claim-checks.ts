import type { SerializedEvent } from '@sluice/contracts';
import { putClaimCheck } from '@sluice/outbox/claim-checks';
import type pg from 'pg';
import type { ClaimCheckStore } from './event-sink.js';

/**
 * Keeps payloads too large for Kafka in `sluice.claim_checks` (created by
 * `prepareReplication`); consumers read them by the event id in the record's `ce_dataref`.
 */
export function createPgClaimCheckStore(pool: pg.Pool): ClaimCheckStore {
  return {
    put: (event: SerializedEvent) => putClaimCheck(pool, event.id, event.payloadJson),
  };
}
