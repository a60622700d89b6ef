import { isSluiceError } from '@sluice/errors';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { beforeAll, describe, expect, it } from 'vitest';
import { createAccess, hashPassword, type Access } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'sluice-access-'));

function usersFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!isSluiceError(error, 'access_denied'))
    throw new Error(`expected access_denied: ${String(error)}`);
  return error.message;
}

describe('users with passwords', () => {
  let access: Access;
  let adaHash: string;

  beforeAll(async () => {
    adaHash = await hashPassword('correct horse battery staple');
    const lines = [
      JSON.stringify({ name: 'ada', role: 'operator', passwordHash: adaHash }),
      '',
      JSON.stringify({ name: 'bob', role: 'viewer', passwordHash: await hashPassword('hunter2') }),
    ];
    access = createAccess({ usersFile: usersFile('users.jsonl', `${lines.join('\n')}\n`) });
  });

  it('hashes with scrypt, a fresh salt each time', async () => {
    expect(adaHash).toMatch(/^scrypt\$32768\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
    expect(await hashPassword('correct horse battery staple')).not.toBe(adaHash);
  });

  it('signs users in with their role', async () => {
    await expect(access.checkPassword('ada', 'correct horse battery staple')).resolves.toEqual({
      subject: 'ada',
      role: 'operator',
    });
    await expect(access.checkPassword('bob', 'hunter2')).resolves.toEqual({
      subject: 'bob',
      role: 'viewer',
    });
  });

  it('refuses a wrong password and an unknown user alike, in similar time', async () => {
    const timed = async (name: string, password: string) => {
      const start = performance.now();
      const message = await refusal(access.checkPassword(name, password));
      return { message, ms: performance.now() - start };
    };
    const wrong = [];
    const unknown = [];
    for (let i = 0; i < 3; i += 1) {
      wrong.push(await timed('ada', 'correct horse battery stapler'));
      unknown.push(await timed('eve', 'correct horse battery staple'));
    }
    expect(new Set([...wrong, ...unknown].map((r) => r.message)).size).toBe(1);
    const median = (runs: { ms: number }[]) => runs.map((r) => r.ms).sort((a, b) => a - b)[1] ?? 0;
    // An unknown user costs a full scrypt too: not 10 times quicker than a known one.
    expect(median(unknown)).toBeGreaterThan(median(wrong) / 3);
    expect(median(wrong)).toBeGreaterThan(median(unknown) / 3);
    await refusal(access.checkPassword('ada', ''));
  });

  it('refuses every password when no users file is configured', async () => {
    const tokensOnly = createAccess({ secret: 'x'.repeat(32) });
    await refusal(tokensOnly.checkPassword('ada', 'correct horse battery staple'));
  });

  it('accepts a JSON array', async () => {
    const path = usersFile(
      'users.json',
      JSON.stringify([{ name: 'cy', role: 'viewer', passwordHash: adaHash }], null, 2),
    );
    await expect(
      createAccess({ usersFile: path }).checkPassword('cy', 'correct horse battery staple'),
    ).resolves.toEqual({ subject: 'cy', role: 'viewer' });
  });

  it('refuses a malformed users file, naming the line and what is wrong', () => {
    const good = JSON.stringify({ name: 'ada', role: 'operator', passwordHash: adaHash });
    const cases: [string, RegExp][] = [
      [`${good}\n{"name":"bob",`, /line 2: is not JSON/],
      [
        `${good}\n${JSON.stringify({ name: 'bob', role: 'admin', passwordHash: adaHash })}`,
        /line 2: needs a "role"/,
      ],
      [
        `${good}\n\n${JSON.stringify({ name: 'bob', role: 'viewer', passwordHash: 'plain' })}`,
        /line 3: passwordHash is not scrypt/,
      ],
      [`${good}\n${good}`, /line 2: repeats the user ada/],
      [JSON.stringify({ role: 'viewer', passwordHash: adaHash }), /line 1: needs a "name"/],
      [
        JSON.stringify({
          name: 'x',
          role: 'viewer',
          passwordHash: adaHash.replace('$32768$', '$1073741824$'),
        }),
        /N must be/,
      ],
      [
        JSON.stringify({
          name: 'x',
          role: 'viewer',
          passwordHash: adaHash.replace('$32768$', '$1000$'),
        }),
        /N must be/,
      ],
      ['[{"name": "ada"}', /not valid JSON/],
      ['[1]', /entry 1: is not an object/],
      ['\n\n', /names no users/],
    ];
    for (const [text, problem] of cases) {
      const path = usersFile('bad.jsonl', text);
      expect(() => createAccess({ usersFile: path })).toThrow(problem);
      expect(() => createAccess({ usersFile: path })).toThrow(path);
    }
    expect(() => createAccess({ usersFile: join(dir, 'missing.jsonl') })).toThrow(
      /Cannot read the users file/,
    );
  });
});
