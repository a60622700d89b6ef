/**
 * The codes of the SluiceErrors this package throws; a missing or invalid master key is a setting
 * the operator must fix (`config_invalid`).
 */
export type PrivacyErrorCode =
  | 'config_invalid'
  | 'master_key_unknown'
  | 'subject_unknown'
  | 'subject_erased'
  | 'envelope_invalid';
