/**
 * The codes of the SluiceErrors this package throws; a missing or invalid master key is a setting
 * the operator must fix (`config_invalid`). `master_key_unknown` and `subject_key_invalid` are
 * marked retriable: the master key configured, not the data being read, is wrong, and reading
 * again succeeds once it is fixed.
 */
export type PrivacyErrorCode =
  | 'config_invalid'
  | 'master_key_unknown'
  | 'subject_key_invalid'
  | 'subject_unknown'
  | 'subject_erased'
  | 'envelope_invalid';
