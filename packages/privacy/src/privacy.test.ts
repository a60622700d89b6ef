import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isSluiceError } from '@sluice/errors';
import { describe, expect, it } from 'vitest';
import {
  ENVELOPE_PATTERN,
  isEnvelope,
  loadMasterKeys,
  masterKeySettings,
  open,
  parseEnvelope,
  parseMasterKey,
  seal,
} from './index.js';

const key = randomBytes(32);
const subject = '0195d7c2-7a3e-7000-8000-000000000001';

function code(action: () => unknown): string | undefined {
  try {
    action();
  } catch (error) {
    return isSluiceError(error) ? error.code : 'other';
  }
  return undefined;
}

describe('sealed fields', () => {
  it('round-trips text through an envelope that matches the published pattern', () => {
    const sealed = seal(key, subject, 'ada@example.com');
    expect(sealed).toMatch(new RegExp(ENVELOPE_PATTERN));
    expect(isEnvelope(sealed)).toBe(true);
    expect(sealed).not.toContain('ada');
    expect(open(key, parseEnvelope(sealed))).toBe('ada@example.com');
    expect(seal(key, subject, 'ada@example.com')).not.toBe(sealed);
  });

  it('refuses an envelope moved to another subject (the subject is associated data)', () => {
    const envelope = parseEnvelope(seal(key, subject, 'Ada'));
    expect(code(() => open(key, { ...envelope, subject: 'someone-else' }))).toBe(
      'envelope_invalid',
    );
  });

  it('refuses a tampered ciphertext, a wrong key and a non-envelope', () => {
    const envelope = parseEnvelope(seal(key, subject, 'Ada'));
    const sealed = Buffer.from(envelope.sealed);
    sealed[0] = (sealed[0] ?? 0) ^ 1;
    expect(code(() => open(key, { ...envelope, sealed }))).toBe('envelope_invalid');
    expect(code(() => open(randomBytes(32), envelope))).toBe('envelope_invalid');
    expect(code(() => parseEnvelope('ada@example.com'))).toBe('envelope_invalid');
  });
});

describe('master keys', () => {
  const bytes = (n: number) => randomBytes(n);

  it('reads 32 bytes as hex or base64 (standard or URL-safe) and derives a stable id', () => {
    const raw = bytes(32);
    const hex = parseMasterKey(raw.toString('hex'));
    expect(hex.key.equals(raw)).toBe(true);
    expect(hex.id).toMatch(/^[0-9a-f]{16}$/);
    expect(parseMasterKey(`${raw.toString('base64')}\n`).id).toBe(hex.id);
    expect(parseMasterKey(raw.toString('base64url')).id).toBe(hex.id);
  });

  it.each([0, 31, 33])('refuses %i bytes', (n) => {
    expect(code(() => parseMasterKey(bytes(n).toString('base64')))).toBe('config_invalid');
    expect(code(() => parseMasterKey(bytes(n).toString('hex')))).toBe('config_invalid');
  });

  it('loads the file or the variable, and names the variable (never the key) when missing or bad', () => {
    const dir = mkdtempSync(join(tmpdir(), 'privacy-'));
    const raw = bytes(32);
    writeFileSync(join(dir, 'key'), raw.toString('base64'));
    writeFileSync(join(dir, 'short'), 'c2hvcnQ=');
    const fromFile = loadMasterKeys({ SLUICE_MASTER_KEY_FILE: join(dir, 'key') });
    expect(fromFile.current.key.equals(raw)).toBe(true);
    expect(loadMasterKeys({ SLUICE_MASTER_KEY: raw.toString('hex') }).current.id).toBe(
      fromFile.current.id,
    );
    expect(() => loadMasterKeys({})).toThrow(/SLUICE_MASTER_KEY_FILE/);
    expect(() => loadMasterKeys({ SLUICE_MASTER_KEY_FILE: join(dir, 'none') })).toThrow(
      /SLUICE_MASTER_KEY_FILE .*cannot be read/,
    );
    expect(() => loadMasterKeys({ SLUICE_MASTER_KEY: 'c2hvcnQ=' })).toThrow(
      /^SLUICE_MASTER_KEY must hold 32 bytes/,
    );
    const previous = loadMasterKeys({
      SLUICE_MASTER_KEY: bytes(32).toString('hex'),
      SLUICE_MASTER_KEY_PREVIOUS_FILE: join(dir, 'key'),
    });
    expect(previous.previous?.id).toBe(fromFile.current.id);
    expect(code(() => loadMasterKeys({ SLUICE_MASTER_KEY_FILE: join(dir, 'short') }))).toBe(
      'config_invalid',
    );
  });

  it('refuses the file and the variable together, naming both', () => {
    const dir = mkdtempSync(join(tmpdir(), 'privacy-'));
    writeFileSync(join(dir, 'key'), bytes(32).toString('base64'));
    const both = {
      SLUICE_MASTER_KEY_FILE: join(dir, 'key'),
      SLUICE_MASTER_KEY: bytes(32).toString('hex'),
    };
    expect(code(() => loadMasterKeys(both))).toBe('config_invalid');
    expect(() => loadMasterKeys(both)).toThrow(
      /SLUICE_MASTER_KEY_FILE or SLUICE_MASTER_KEY, not both/,
    );
    expect(loadMasterKeys({ ...both, SLUICE_MASTER_KEY: '' }).current.id).toBe(
      loadMasterKeys({ SLUICE_MASTER_KEY_FILE: join(dir, 'key') }).current.id,
    );
  });

  it('are described by one settings schema', () => {
    expect(Object.keys(masterKeySettings)).toEqual([
      'SLUICE_MASTER_KEY_FILE',
      'SLUICE_MASTER_KEY',
      'SLUICE_MASTER_KEY_PREVIOUS_FILE',
    ]);
    for (const schema of Object.values(masterKeySettings)) expect(schema.description).toBeTruthy();
  });
});
