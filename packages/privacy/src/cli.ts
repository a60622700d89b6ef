#!/usr/bin/env node
// sluice-keys rewrap: re-wraps every subject key to the current master key after a rotation.
import pg from 'pg';
import { errorMessage } from '@sluice/errors';
import { loadMasterKeys } from './master-key.js';
import { rewrapSubjectKeys } from './subject-keys.js';

const usage =
  'usage: sluice-keys rewrap\n' +
  'Re-wraps subject keys to SLUICE_MASTER_KEY_FILE (or SLUICE_MASTER_KEY), unwrapping those of the\n' +
  'previous master key with SLUICE_MASTER_KEY_PREVIOUS_FILE; connects to DATABASE_URL.\n';

if (process.argv[2] !== 'rewrap' || process.env.DATABASE_URL === undefined) {
  process.stderr.write(usage);
  process.exitCode = 64;
} else {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
  try {
    const keys = loadMasterKeys();
    await client.connect();
    const count = await rewrapSubjectKeys(client, keys);
    process.stdout.write(
      `sluice-keys: re-wrapped ${count} subject keys to master key ${keys.current.id}\n`,
    );
  } catch (error) {
    process.stderr.write(`sluice-keys: ${errorMessage(error)}\n`);
    process.exitCode = 1;
  } finally {
    await client.end();
  }
}
