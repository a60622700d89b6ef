import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { processStartTime } from './processes.js';
import { claimStack, clearStackOwner, keepStack, readStackOwner } from './stack-owner.js';

/** A live process other than this one; `end()` stops it and resolves once it has exited. */
function otherProcess(): { pid: number; end: () => Promise<void> } {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  return {
    pid: child.pid ?? 0,
    end: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

describe('stack ownership', () => {
  let stateDir: string;
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'sluice-owner-'));
  });
  afterEach(() => rm(stateDir, { recursive: true, force: true }));

  it('a stack nobody owns is claimed by the first process to ask', async () => {
    expect(await readStackOwner(stateDir)).toBeUndefined();
    expect(await claimStack(stateDir)).toBe(true);
    expect(await readStackOwner(stateDir)).toEqual({ pid: process.pid });
    expect(await claimStack(stateDir)).toBe(true);
  });

  it('a kept stack is claimed by nobody until it is cleared', async () => {
    await claimStack(stateDir);
    await keepStack(stateDir);
    expect(await readStackOwner(stateDir)).toEqual({ kept: true });
    expect(await claimStack(stateDir)).toBe(false);
    await clearStackOwner(stateDir);
    expect(await readStackOwner(stateDir)).toBeUndefined();
    expect(await claimStack(stateDir)).toBe(true);
  });

  it('a live owner keeps its stack; once it has exited the stack is adopted', async () => {
    const other = otherProcess();
    const startTime = await processStartTime(other.pid);
    expect(startTime).toMatch(/^\d+$/);
    await writeFile(join(stateDir, 'owner.json'), JSON.stringify({ pid: other.pid, startTime }));
    expect(await readStackOwner(stateDir)).toEqual({ pid: other.pid });
    expect(await claimStack(stateDir)).toBe(false);

    await other.end();
    expect(await readStackOwner(stateDir)).toBeUndefined();
    expect(await claimStack(stateDir)).toBe(true);
    expect(await readStackOwner(stateDir)).toEqual({ pid: process.pid });
  });

  it('a process that reuses a dead owner’s pid is not taken for it', async () => {
    const record = { pid: process.pid, startTime: '1' };
    await writeFile(join(stateDir, 'owner.json'), JSON.stringify(record));
    expect(await readStackOwner(stateDir)).toBeUndefined();
  });

  it('an unreadable record means nobody owns the stack', async () => {
    await writeFile(join(stateDir, 'owner.json'), '{"pid":');
    expect(await readStackOwner(stateDir)).toBeUndefined();
    expect(await claimStack(stateDir)).toBe(true);
  });
});
