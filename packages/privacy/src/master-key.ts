import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SluiceError, errorMessage } from '@sluice/errors';
import type { PrivacyErrorCode } from './errors.js';

/** A master key: 32 bytes and its id (the first 16 hex characters of their SHA-256). */
export interface MasterKey {
  id: string;
  key: Buffer;
}

/** The master key that wraps subject keys, and the one it replaced while keys are re-wrapped. */
export interface MasterKeys {
  current: MasterKey;
  previous?: MasterKey;
}

const HEX = /^[0-9a-f]{64}$/i;
const BASE64 = /^[A-Za-z0-9+/_-]+={0,2}$/;

function invalid(source: string, reason: string): SluiceError<PrivacyErrorCode> {
  return new SluiceError<PrivacyErrorCode>('config_invalid', `${source} ${reason}`);
}

/**
 * The 32 bytes of a master key written as 64 hex characters or as base64 (standard or URL-safe,
 * padding optional); surrounding whitespace is ignored.
 *
 * @throws SluiceError `config_invalid` naming `source`, never the key.
 */
export function parseMasterKey(text: string, source = 'the master key'): MasterKey {
  const trimmed = text.trim();
  let key: Buffer;
  if (HEX.test(trimmed)) key = Buffer.from(trimmed, 'hex');
  else if (BASE64.test(trimmed)) key = Buffer.from(trimmed, 'base64');
  else throw invalid(source, 'must hold 32 bytes as 64 hex characters or base64');
  if (key.length !== 32)
    throw invalid(source, `must hold 32 bytes as 64 hex characters or base64, not ${key.length}`);
  return { id: createHash('sha256').update(key).digest('hex').slice(0, 16), key };
}

function fromFile(variable: string, path: string): MasterKey {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw invalid(`${variable} (${path})`, `cannot be read: ${errorMessage(error)}`);
  }
  return parseMasterKey(text, `${variable} (${path})`);
}

/** The settings {@link loadMasterKeys} reads: the environment, or a service's validated config. */
export interface MasterKeySettingValues {
  SLUICE_MASTER_KEY_FILE?: string | undefined;
  SLUICE_MASTER_KEY?: string | undefined;
  SLUICE_MASTER_KEY_PREVIOUS_FILE?: string | undefined;
}

const given = (value: string | undefined): value is string => value !== undefined && value !== '';

/**
 * The master keys of `settings`: `SLUICE_MASTER_KEY_FILE` (a file) or `SLUICE_MASTER_KEY`, not
 * both, and optionally `SLUICE_MASTER_KEY_PREVIOUS_FILE`, the key being rotated out.
 *
 * @throws SluiceError `config_invalid`; messages name the variable only.
 * @example const keys = loadMasterKeys(config);
 */
export function loadMasterKeys(settings: MasterKeySettingValues = process.env): MasterKeys {
  const file = settings.SLUICE_MASTER_KEY_FILE;
  const inline = settings.SLUICE_MASTER_KEY;
  if (given(file) && given(inline))
    throw new SluiceError<PrivacyErrorCode>(
      'config_invalid',
      'Set SLUICE_MASTER_KEY_FILE or SLUICE_MASTER_KEY, not both',
    );
  let current: MasterKey;
  if (given(file)) current = fromFile('SLUICE_MASTER_KEY_FILE', file);
  else if (given(inline)) current = parseMasterKey(inline, 'SLUICE_MASTER_KEY');
  else
    throw new SluiceError<PrivacyErrorCode>(
      'config_invalid',
      'SLUICE_MASTER_KEY_FILE (or SLUICE_MASTER_KEY) must name the master key that protects personal data',
    );
  const previousFile = settings.SLUICE_MASTER_KEY_PREVIOUS_FILE;
  if (!given(previousFile)) return { current };
  return { current, previous: fromFile('SLUICE_MASTER_KEY_PREVIOUS_FILE', previousFile) };
}
