#!/usr/bin/env node
// sluice-access hash-password: reads a password on stdin, prints a users-file line (or its hash).
import { parseArgs } from 'node:util';
import { hashPassword } from './passwords.js';

const usage =
  'usage: sluice-access hash-password [--name <name> --role viewer|operator] < password\n' +
  'Prints a users-file line {"name","role","passwordHash"}, or only the hash without --name.\n';

async function readStdin(): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) text += String(chunk);
  return text.replace(/\r?\n$/, '');
}

const { values, positionals } = parseArgs({
  options: { name: { type: 'string' }, role: { type: 'string' }, help: { type: 'boolean' } },
  allowPositionals: true,
  strict: false,
});
const { name, role } = values;
const roleValid = role === 'viewer' || role === 'operator';
if (values.help === true) {
  process.stdout.write(usage);
} else if (positionals[0] !== 'hash-password' || (name !== undefined && !roleValid)) {
  process.stderr.write(usage);
  process.exitCode = 64;
} else {
  const password = await readStdin();
  if (password === '') {
    process.stderr.write('sluice-access: the password on stdin is empty\n');
    process.exitCode = 64;
  } else {
    const passwordHash = await hashPassword(password);
    const line = name === undefined ? passwordHash : JSON.stringify({ name, role, passwordHash });
    process.stdout.write(`${line}\n`);
  }
}
