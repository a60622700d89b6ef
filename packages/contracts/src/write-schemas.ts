// `pnpm --filter @sluice/contracts schemas`: writes schemas/<type>.json for consumers in any language.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { schemaFiles } from './schema-files.js';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'schemas');
for (const [name, text] of Object.entries(schemaFiles())) writeFileSync(join(dir, name), text);
