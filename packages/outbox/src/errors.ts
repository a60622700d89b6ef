/** The codes of the SluiceErrors this package throws (catalog errors pass through with their own). */
export type OutboxErrorCode =
  | 'event_aggregate_mismatch'
  | 'outbox_requires_transaction'
  | 'outbox_row_malformed'
  | 'version_conflict';
