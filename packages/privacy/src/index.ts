// Crypto-shredding: personal fields of events sealed with a per-subject key; erasure destroys it.
export {
  ENVELOPE_PATTERN,
  ERASED,
  fieldAad,
  isEnvelope,
  open,
  parseEnvelope,
  seal,
  type Envelope,
} from './envelope.js';
export { protectedFieldsOf } from './annotations.js';
export type { PrivacyErrorCode } from './errors.js';
export { assertMasterKeysKnown, unknownMasterKeyIds } from './key-check.js';
export {
  loadMasterKeys,
  parseMasterKey,
  type MasterKey,
  type MasterKeys,
  type MasterKeySettingValues,
} from './master-key.js';
export { masterKeySettings } from './settings.js';
export {
  createPrivacy,
  type Privacy,
  type PrivacyOptions,
  type PrivacyReader,
  type ProtectedEvent,
  type ProtectedFields,
} from './privacy.js';
export {
  ensureSubjectKey,
  eraseSubjectKey,
  readSubjectKey,
  rewrapSubjectKeys,
  SUBJECT_KEYS_DDL,
  type Queryable,
} from './subject-keys.js';
