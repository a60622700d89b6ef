import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createAccess } from './index.js';

const cli = fileURLToPath(new URL('cli.ts', import.meta.url));

/** Runs `sluice-access` from source with `stdin`; its exit code and output. */
function run(args: readonly string[], stdin: string) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    const child = execFile(
      process.execPath,
      ['--import', 'tsx', cli, ...args],
      (error, stdout, stderr) =>
        done({ code: error === null ? 0 : Number(error.code), stdout, stderr }),
    );
    child.stdin?.end(stdin);
  });
}

// Three processes starting TypeScript through tsx: seconds on a busy machine.
describe('sluice-access hash-password', { timeout: 30_000 }, () => {
  it('prints a users-file line that signs the user in; refuses an empty password or unknown role', async () => {
    const [made, empty, badRole] = await Promise.all([
      run(['hash-password', '--name', 'ada', '--role', 'operator'], 's3cret pw\n'),
      run(['hash-password'], '\n'),
      run(['hash-password', '--name', 'ada', '--role', 'root'], 'pw'),
    ]);
    expect(made.code).toBe(0);
    const path = join(mkdtempSync(join(tmpdir(), 'sluice-cli-')), 'users.jsonl');
    writeFileSync(path, made.stdout);
    await expect(
      createAccess({ usersFile: path }).checkPassword('ada', 's3cret pw'),
    ).resolves.toEqual({
      subject: 'ada',
      role: 'operator',
    });
    expect(empty).toMatchObject({ code: 64, stderr: /empty/ });
    expect(badRole).toMatchObject({ code: 64, stderr: /usage/ });
  });
});
