import { SignJWT, type JWTVerifyGetKey } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createJwtVerifier, JwtRefusal } from './jwt.js';

const secret = new TextEncoder().encode('a-shared-secret-of-at-least-32-bytes!!');
const checks = { algorithms: ['HS256'] };

async function token(expiresInS: number, sub = 'customer-1'): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + expiresInS)
    .sign(secret);
}

/** The secret as a key function that counts the signatures it is asked to check. */
function countingKey(): { key: JWTVerifyGetKey; calls: () => number } {
  let calls = 0;
  return {
    key: () => {
      calls += 1;
      return secret;
    },
    calls: () => calls,
  };
}

const refusal = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (error: unknown) => (error instanceof JwtRefusal ? error.code : error),
  );

afterEach(() => {
  vi.useRealTimers();
});

describe('createJwtVerifier', () => {
  it('checks a token once while it is remembered', async () => {
    const { key, calls } = countingKey();
    const verify = createJwtVerifier(key, checks);
    const jwt = await token(600);
    for (let i = 0; i < 5; i += 1) expect((await verify(jwt)).sub).toBe('customer-1');
    expect(calls()).toBe(1);
  });

  it('checks again after cacheMs', async () => {
    vi.useFakeTimers({ now: Date.now(), toFake: ['Date'] });
    const { key, calls } = countingKey();
    const verify = createJwtVerifier(key, checks, { cacheMs: 1000 });
    const jwt = await token(600);
    await verify(jwt);
    vi.advanceTimersByTime(1001);
    await verify(jwt);
    expect(calls()).toBe(2);
  });

  it('refuses a remembered token once it has expired', async () => {
    vi.useFakeTimers({ now: Date.now(), toFake: ['Date'] });
    const verify = createJwtVerifier(secret, checks);
    const jwt = await token(10);
    await verify(jwt);
    vi.advanceTimersByTime(20_000);
    expect(await refusal(verify(jwt))).toBe('token_expired');
  });

  it('never remembers a refused token, and a tampered copy of a remembered one is refused', async () => {
    const { key, calls } = countingKey();
    const verify = createJwtVerifier(key, checks);
    const jwt = await token(600);
    await verify(jwt);
    const [header, , signature] = jwt.split('.');
    const forged = `${header}.${Buffer.from('{"sub":"admin","exp":9999999999}').toString('base64url')}.${signature}`;
    expect(await refusal(verify(forged))).toBe('token_invalid');
    expect(await refusal(verify(forged))).toBe('token_invalid');
    expect(calls()).toBe(3);
  });

  it('forgets the oldest token past cacheSize', async () => {
    const { key, calls } = countingKey();
    const verify = createJwtVerifier(key, checks, { cacheSize: 2 });
    const [a, b, c] = await Promise.all([token(600, 'a'), token(600, 'b'), token(600, 'c')]);
    for (const jwt of [a, b, c, b, c]) await verify(jwt);
    expect(calls()).toBe(3);
    await verify(a);
    expect(calls()).toBe(4);
  });
});
