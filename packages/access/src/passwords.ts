import { errorMessage } from '@sluice/errors';
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { accessDenied, configInvalid, type Principal, type Role } from './access.js';

/** A parsed `scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>`. */
interface PasswordHash {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

// OWASP's floor for scrypt (N = 2^15, r = 8, p = 1): about 32 MiB and 50-100 ms a check. A hash
// keeps its parameters, so raising them later leaves existing users files valid.
const DEFAULTS = { N: 2 ** 15, r: 8, p: 1, saltBytes: 16, hashBytes: 32 };
// Bounds on what a users file may ask for, so a bad line cannot make every login take minutes.
const MAX = { N: 2 ** 20, r: 32, p: 16 };
const FORMAT =
  /^scrypt\$(\d{1,10})\$(\d{1,3})\$(\d{1,3})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;

function derive(password: string, params: PasswordHash): Promise<Buffer> {
  const { N, r, p, salt, hash } = params;
  // scrypt needs 128 * N * r bytes; Node's default ceiling (32 MiB) is just below 2^15 * 8's.
  const maxmem = 256 * N * r + 2 ** 20;
  return new Promise((resolve, reject) =>
    scrypt(password, salt, hash.length, { N, r, p, maxmem }, (error, key) =>
      error === null ? resolve(key) : reject(error),
    ),
  );
}

function format({ N, r, p, salt, hash }: PasswordHash): string {
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** A `passwordHash` parsed, or what is wrong with it. */
function parseHash(text: string): PasswordHash | string {
  const match = FORMAT.exec(text);
  if (match === null) return 'passwordHash is not scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>';
  const [N, r, p] = [match[1], match[2], match[3]].map(Number) as [number, number, number];
  if (N < 2 || N > MAX.N || (N & (N - 1)) !== 0) {
    return `passwordHash's N must be a power of two up to ${MAX.N} (is ${N})`;
  }
  if (r < 1 || r > MAX.r || p < 1 || p > MAX.p) {
    return `passwordHash's r must be 1..${MAX.r} and p 1..${MAX.p}`;
  }
  const salt = Buffer.from(match[4] ?? '', 'base64');
  const hash = Buffer.from(match[5] ?? '', 'base64');
  if (salt.length < 8 || hash.length < 16 || hash.length > 64) {
    return "passwordHash's salt must be 8 bytes or more and its hash 16 to 64 bytes";
  }
  return { N, r, p, salt, hash };
}

/**
 * A users-file `passwordHash` for `password`: scrypt (N = 2^15, r = 8, p = 1) with a random salt.
 *
 * @example
 * const line = JSON.stringify({ name: 'ada', role: 'operator', passwordHash: await hashPassword(pw) });
 */
export async function hashPassword(password: string): Promise<string> {
  const params = {
    ...DEFAULTS,
    salt: randomBytes(DEFAULTS.saltBytes),
    hash: Buffer.alloc(DEFAULTS.hashBytes),
  };
  return format({ ...params, hash: await derive(password, params) });
}

interface User {
  name: string;
  role: Role;
  hash: PasswordHash;
}

/** One users-file entry checked, or what is wrong with it. */
function userOf(entry: unknown): User | string {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    return 'is not an object { "name", "role", "passwordHash" }';
  }
  const { name, role, passwordHash } = entry as Record<string, unknown>;
  if (typeof name !== 'string' || name === '' || name.length > 200) {
    return 'needs a "name" of 1 to 200 characters';
  }
  if (role !== 'viewer' && role !== 'operator') return 'needs a "role": "viewer" or "operator"';
  if (typeof passwordHash !== 'string')
    return 'needs a "passwordHash" (sluice-access hash-password)';
  const hash = parseHash(passwordHash);
  return typeof hash === 'string' ? hash : { name, role, hash };
}

/** The entries of a users file with where each is: a JSON array, or JSON lines. */
function entriesOf(path: string, text: string): { where: string; parse: () => unknown }[] {
  if (text.trimStart().startsWith('[')) {
    let entries: unknown;
    try {
      entries = JSON.parse(text);
    } catch (error) {
      throw configInvalid(`Users file ${path} is not valid JSON: ${errorMessage(error)}`);
    }
    if (!Array.isArray(entries)) throw configInvalid(`Users file ${path} is not a JSON array`);
    return (entries as unknown[]).map((entry, index) => ({
      where: `entry ${index + 1}`,
      parse: () => entry,
    }));
  }
  return text
    .split('\n')
    .map((line, index) => ({ line, where: `line ${index + 1}` }))
    .filter(({ line }) => line.trim() !== '')
    .map(({ line, where }) => ({ where, parse: () => JSON.parse(line) as unknown }));
}

/**
 * The users of the file at `path`, by name.
 *
 * @throws SluiceError `access_config_invalid` naming the file and the line (or entry) at fault
 */
function parseUsersFile(path: string): Map<string, User> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw configInvalid(`Cannot read the users file ${path}: ${errorMessage(error)}`);
  }
  const users = new Map<string, User>();
  for (const { where, parse } of entriesOf(path, text)) {
    let user: User | string;
    try {
      user = userOf(parse());
    } catch (error) {
      user = `is not JSON (${errorMessage(error)})`;
    }
    if (typeof user !== 'string' && users.has(user.name)) user = `repeats the user ${user.name}`;
    if (typeof user === 'string') throw configInvalid(`Users file ${path}, ${where}: ${user}`);
    users.set(user.name, user);
  }
  if (users.size === 0) throw configInvalid(`Users file ${path} names no users`);
  return users;
}

/** Checks users' passwords. */
export interface UserDirectory {
  check(name: string, password: string): Promise<Principal>;
}

/**
 * The users of the file at `path` (none without one). A check costs one scrypt whether or not
 * the user exists, and refuses in the same words, so neither time nor answer tells which.
 */
export function readUsers(path: string | undefined): UserDirectory {
  const users = path === undefined ? new Map<string, User>() : parseUsersFile(path);
  const decoy: PasswordHash = {
    ...DEFAULTS,
    salt: randomBytes(DEFAULTS.saltBytes),
    hash: randomBytes(DEFAULTS.hashBytes),
  };
  return {
    async check(name, password) {
      const user = users.get(name);
      const expected = user?.hash ?? decoy;
      const actual = await derive(password, expected);
      if (!timingSafeEqual(actual, expected.hash) || user === undefined) {
        throw accessDenied('wrong name or password');
      }
      return { subject: user.name, role: user.role };
    },
  };
}
