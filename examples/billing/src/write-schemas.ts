// Publishes the catalog's JSON Schemas for consumers in other languages: schemas/<type>.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { billing } from './catalog.js';

mkdirSync('schemas', { recursive: true });
for (const [name, text] of Object.entries(billing.schemaFiles()))
  writeFileSync(`schemas/${name}`, text);
