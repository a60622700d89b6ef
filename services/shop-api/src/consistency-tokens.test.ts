import { isSluiceError } from '@sluice/errors';
import { describe, expect, it } from 'vitest';
import { createConsistencyTokens, type WrittenVersion } from './consistency-tokens.js';

const secret = Buffer.alloc(32, 7);
const tokens = createConsistencyTokens(secret);
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const checkout: WrittenVersion[] = [
  { aggregateType: 'cart', aggregateId: '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a', version: 1002 },
  { aggregateType: 'order', aggregateId: '0190a6e2-8d7e-7c3a-9b1e-000000000001', version: 1 },
];

describe('consistency tokens', () => {
  it('give back exactly the versions they were issued for, in a short token', () => {
    const edge = [{ ...checkout[0], version: 2 ** 48 - 1 } as WrittenVersion];
    for (const versions of [[], checkout, edge]) {
      expect(tokens.verify(tokens.issue(versions))).toEqual(versions);
    }
    expect(tokens.issue(checkout)).toMatch(/^[A-Za-z0-9_-]{60,100}$/);
    // Another instance with the same secret (another replica) accepts them.
    expect(createConsistencyTokens(Buffer.from(secret)).verify(tokens.issue(checkout))).toEqual(
      checkout,
    );
  });

  it('refuse a token with any bit flipped, issued under another secret, or not a token at all', () => {
    const token = tokens.issue(checkout);
    const bytes = Buffer.from(token, 'base64url');
    for (let bit = 0; bit < bytes.length * 8; bit += 1) {
      const flipped = Buffer.from(bytes);
      flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (1 << (bit & 7));
      expect(tokens.verify(flipped.toString('base64url')), `bit ${bit}`).toBeUndefined();
    }
    // 44 bytes: the last character carries two spare bits, which decoding ignores.
    const single = tokens.issue(checkout.slice(0, 1));
    const index = ALPHABET.indexOf(single.at(-1) ?? '');
    const respelled = single.slice(0, -1) + (ALPHABET[index ^ 1] ?? '');
    expect(Buffer.from(respelled, 'base64url')).toEqual(Buffer.from(single, 'base64url'));
    expect(tokens.verify(single)).toEqual(checkout.slice(0, 1));
    expect(tokens.verify(respelled)).toBeUndefined();
    expect(createConsistencyTokens(Buffer.alloc(32, 8)).verify(token)).toBeUndefined();
    for (const garbage of ['', 'A', '!!!', `${token}=`, token.repeat(20), 'A'.repeat(100_000)]) {
      expect(tokens.verify(garbage), garbage.slice(0, 20)).toBeUndefined();
    }
  });

  it('need a secret of 32 bytes or more, and versions they can encode', () => {
    const short = (() => {
      try {
        createConsistencyTokens(Buffer.alloc(31));
      } catch (error) {
        return error;
      }
    })();
    expect(isSluiceError(short, 'consistency_token_secret_short')).toBe(true);
    for (const bad of [
      { aggregateType: 'cart', aggregateId: 'not-a-uuid', version: 1 },
      { aggregateType: 'Cart', aggregateId: checkout[0]?.aggregateId ?? '', version: 1 },
      { aggregateType: 'cart', aggregateId: checkout[0]?.aggregateId ?? '', version: -1 },
      { aggregateType: 'cart', aggregateId: checkout[0]?.aggregateId ?? '', version: 2 ** 48 },
    ]) {
      expect(() => tokens.issue([bad]), JSON.stringify(bad)).toThrow(/No consistency token/);
    }
  });
});
