import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { SluiceError } from '@sluice/errors';
import type { PrivacyErrorCode } from './errors.js';

const ALGORITHM = 'aes-256-gcm';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const PREFIX = 'sluice:enc:v1:';

/** What a protected field reads once its subject was erased. */
export const ERASED = '[erased]';

/**
 * The JSON Schema `pattern` of a sealed field:
 * `sluice:enc:v1:<subject>:<iv>:<ciphertext+tag>`, each part base64url without padding.
 */
export const ENVELOPE_PATTERN =
  '^sluice:enc:v1:[A-Za-z0-9_-]+:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]{22,}$';
const ENVELOPE = new RegExp(ENVELOPE_PATTERN);

/** A sealed field taken apart. */
export interface Envelope {
  subject: string;
  iv: Buffer;
  /** Ciphertext followed by the 16-byte GCM tag. */
  sealed: Buffer;
}

/** The associated data of a field sealed for `subject`: the ciphertext belongs to it alone. */
export const fieldAad = (subject: string): Buffer => Buffer.from(`sluice:v1|${subject}`, 'utf8');

function encrypt(key: Buffer, aad: Buffer, plaintext: Buffer): { iv: Buffer; sealed: Buffer } {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(ALGORITHM, key, iv).setAAD(aad);
  const sealed = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { iv, sealed };
}

/** @throws Error when the key, the associated data or the bytes do not match. */
function decrypt(key: Buffer, aad: Buffer, iv: Buffer, sealed: Buffer): Buffer {
  if (sealed.length < TAG_BYTES) throw new Error('ciphertext shorter than its tag');
  const decipher = createDecipheriv(ALGORITHM, key, iv).setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  return Buffer.concat([
    decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES)),
    decipher.final(),
  ]);
}

/** Whether `value` is a sealed field. */
export const isEnvelope = (value: unknown): value is string =>
  typeof value === 'string' && ENVELOPE.test(value);

/** Seals `text` for `subject` with the subject's key. */
export function seal(key: Buffer, subject: string, text: string): string {
  const { iv, sealed } = encrypt(key, fieldAad(subject), Buffer.from(text, 'utf8'));
  const parts = [Buffer.from(subject, 'utf8'), iv, sealed].map((part) =>
    part.toString('base64url'),
  );
  return `${PREFIX}${parts.join(':')}`;
}

/**
 * A sealed field's parts.
 *
 * @throws SluiceError `envelope_invalid`
 */
export function parseEnvelope(value: string): Envelope {
  if (!ENVELOPE.test(value))
    throw new SluiceError<PrivacyErrorCode>('envelope_invalid', 'Not a sealed field');
  const [subject = '', iv = '', sealed = ''] = value.slice(PREFIX.length).split(':');
  return {
    subject: Buffer.from(subject, 'base64url').toString('utf8'),
    iv: Buffer.from(iv, 'base64url'),
    sealed: Buffer.from(sealed, 'base64url'),
  };
}

/**
 * The text of a sealed field, with its subject's key.
 *
 * @throws SluiceError `envelope_invalid` when it was not sealed with this key for its subject,
 *   or was altered.
 */
export function open(key: Buffer, envelope: Envelope): string {
  try {
    return decrypt(key, fieldAad(envelope.subject), envelope.iv, envelope.sealed).toString('utf8');
  } catch {
    throw new SluiceError<PrivacyErrorCode>(
      'envelope_invalid',
      `A sealed field of subject ${envelope.subject} does not decrypt with its key`,
    );
  }
}

/** A subject key wrapped by a master key: IV, ciphertext and tag in one buffer. */
export function wrapKey(master: Buffer, subject: string, key: Buffer): Buffer {
  const { iv, sealed } = encrypt(master, Buffer.from(subject, 'utf8'), key);
  return Buffer.concat([iv, sealed]);
}

/** @throws Error when `wrapped` was not wrapped by `master` for `subject`. */
export function unwrapKey(master: Buffer, subject: string, wrapped: Buffer): Buffer {
  const aad = Buffer.from(subject, 'utf8');
  return decrypt(master, aad, wrapped.subarray(0, IV_BYTES), wrapped.subarray(IV_BYTES));
}
