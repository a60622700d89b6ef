// `pnpm --filter @sluice/shop-catalog schemas`: writes schemas/<type>.json for consumers in any language.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { shopCatalog } from './index.js';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'schemas');
for (const [name, text] of Object.entries(shopCatalog.schemaFiles()))
  writeFileSync(join(dir, name), text);
