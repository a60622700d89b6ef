/**
 * The codes of the SluiceErrors this package throws (errors of `@sluice/kafka` and
 * `@sluice/contracts` pass through with their own). `slot_lost`, `slot_missing`, `slot_mismatch`
 * and `publication_mismatch` need an operator; a restart does not fix them.
 */
export type RelayErrorCode =
  | 'leadership_aborted'
  | 'leadership_lost'
  | 'lsn_invalid'
  | 'outbox_missing'
  | 'publication_mismatch'
  | 'publication_missing'
  | 'publish_aborted'
  | 'record_too_large'
  | 'replication_source_reused'
  | 'replication_stream_ended'
  | 'replication_stream_failed'
  | 'send_unacknowledged'
  | 'sink_closed'
  | 'slot_busy'
  | 'slot_create_failed'
  | 'slot_lost'
  | 'slot_mismatch'
  | 'slot_missing'
  | 'snapshot_aborted';
