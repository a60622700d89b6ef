/**
 * The codes of the SluiceErrors this package throws (errors of `@sluice/kafka` and
 * `@sluice/contracts` pass through with their own).
 */
export type ProjectorErrorCode =
  | 'claim_check_missing'
  | 'consumer_group_delete_failed'
  | 'handler_retry'
  | 'no_version_gap'
  | 'projection_not_started'
  | 'projection_tables_conflict'
  | 'projection_unknown'
  | 'rebuild_in_progress'
  | 'rebuild_not_running';
