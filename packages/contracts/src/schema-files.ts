import { catalog } from './catalog.js';

/** The JSON Schema files published for other languages: file name → file text. */
export function schemaFiles(): Record<string, string> {
  return Object.fromEntries(
    Object.values(catalog).map((entry) => [
      `${entry.type}.json`,
      `${JSON.stringify({ $schema: 'https://json-schema.org/draft/2020-12/schema', ...entry.schema }, null, 2)}\n`,
    ]),
  );
}
