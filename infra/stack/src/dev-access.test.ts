import { createAccess } from '@sluice/access';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { devAccess } from './dev-access.js';

const stateDir = mkdtempSync(join(tmpdir(), 'stack-access-'));
afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

describe('devAccess', () => {
  it('makes a secret and an operator and a viewer once, readable by their owner only', async () => {
    const first = await devAccess(stateDir);
    expect(first.logins.map((login) => [login.name, login.role])).toEqual([
      ['operator', 'operator'],
      ['viewer', 'viewer'],
    ]);
    expect(await devAccess(stateDir)).toEqual(first);
    expect(statSync(first.usersFile).mode & 0o077).toBe(0);
    const users = readFileSync(first.usersFile, 'utf8');
    for (const login of first.logins) expect(users).not.toContain(login.password);
  });

  it('gives sign-ins the users file accepts, and a secret that signs tokens', async () => {
    const { secret, usersFile, logins } = await devAccess(stateDir);
    const access = createAccess({ secret, usersFile });
    for (const login of logins) {
      expect(await access.checkPassword(login.name, login.password)).toEqual({
        subject: login.name,
        role: login.role,
      });
    }
    const token = await access.issueToken({ subject: 'operator', role: 'operator' }, 60);
    expect((await access.verifyToken(token)).subject).toBe('operator');
  });
});
