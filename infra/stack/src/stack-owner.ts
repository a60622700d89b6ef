// Who stops the embedded stack, recorded in its state directory: a stack kept up by
// `pnpm stack:up` stays until `pnpm stack:down`; any other stack belongs to the live process that
// started or adopted it (`npm start`, a test run), which stops it when it is done. A stack whose
// owner died (a start killed before it could stop it) belongs to nobody until one adopts it.
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isProcessAlive, processStartTime } from './processes.js';

/** Who is responsible for stopping the stack: nobody until `down`, or one live process. */
export type StackOwner = { kept: true } | { pid: number };

interface OwnerRecord {
  kept?: boolean;
  pid?: number;
  /** Tells the recorded process from a later one that reuses its pid. */
  startTime?: string;
}

const ownerFile = (stateDir: string) => join(stateDir, 'owner.json');

async function readRecord(stateDir: string): Promise<OwnerRecord> {
  try {
    return JSON.parse(await readFile(ownerFile(stateDir), 'utf8')) as OwnerRecord;
  } catch {
    return {};
  }
}

async function isAlive(record: OwnerRecord): Promise<boolean> {
  if (record.pid === undefined) return false;
  if (record.startTime === undefined) return isProcessAlive(record.pid, '');
  return (await processStartTime(record.pid)) === record.startTime;
}

/** The stack's owner; undefined when nobody is (no record, or its process has exited). */
export async function readStackOwner(stateDir: string): Promise<StackOwner | undefined> {
  const record = await readRecord(stateDir);
  if (record.kept === true) return { kept: true };
  return record.pid !== undefined && (await isAlive(record)) ? { pid: record.pid } : undefined;
}

/**
 * Makes this process the owner unless the stack is kept or another live process owns it.
 * Callers serialise it with the stack's other state changes (the stack lock).
 *
 * @returns whether this process owns the stack now
 */
export async function claimStack(stateDir: string): Promise<boolean> {
  const owner = await readStackOwner(stateDir);
  if (owner !== undefined && ('kept' in owner || owner.pid !== process.pid)) return false;
  const record: OwnerRecord = { pid: process.pid };
  const startTime = await processStartTime(process.pid);
  if (startTime !== undefined) record.startTime = startTime;
  await mkdir(stateDir, { recursive: true });
  await writeFile(ownerFile(stateDir), JSON.stringify(record));
  return true;
}

/** Marks the stack as kept: no process stops it on exit. */
export async function keepStack(stateDir: string): Promise<void> {
  await mkdir(stateDir, { recursive: true });
  await writeFile(ownerFile(stateDir), JSON.stringify({ kept: true } satisfies OwnerRecord));
}

/** Forgets the owner (the stack is down). */
export async function clearStackOwner(stateDir: string): Promise<void> {
  await rm(ownerFile(stateDir), { force: true });
}
