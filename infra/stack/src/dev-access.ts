// `npm start`'s credentials: a token secret shared by the services and a console users file with
// an operator and a viewer, made once under the stack's state directory (development only).
import { hashPassword } from '@sluice/access';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A development sign-in for the console. */
export interface DevLogin {
  name: string;
  role: 'operator' | 'viewer';
  password: string;
}

/** What the services get: the secret, the users file, and the sign-ins to print. */
export interface DevAccess {
  secret: string;
  usersFile: string;
  logins: DevLogin[];
}

const password = () => randomBytes(12).toString('base64url');

/**
 * The stack's development credentials in `<stateDir>/access`, created on the first call and read
 * back later (files readable by their owner only).
 */
export async function devAccess(stateDir: string): Promise<DevAccess> {
  const dir = join(stateDir, 'access');
  const stored = join(dir, 'dev-access.json');
  const usersFile = join(dir, 'users.jsonl');
  if (existsSync(stored) && existsSync(usersFile)) {
    const { secret, logins } = JSON.parse(await readFile(stored, 'utf8')) as Omit<
      DevAccess,
      'usersFile'
    >;
    return { secret, usersFile, logins };
  }
  const secret = randomBytes(48).toString('base64');
  const logins: DevLogin[] = [
    { name: 'operator', role: 'operator', password: password() },
    { name: 'viewer', role: 'viewer', password: password() },
  ];
  const users = await Promise.all(
    logins.map(async (login) =>
      JSON.stringify({
        name: login.name,
        role: login.role,
        passwordHash: await hashPassword(login.password),
      }),
    ),
  );
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(usersFile, `${users.join('\n')}\n`, { mode: 0o600 });
  await writeFile(stored, JSON.stringify({ secret, logins }), { mode: 0o600 });
  return { secret, usersFile, logins };
}
