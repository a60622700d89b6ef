import type { ProtectedFields } from './privacy.js';

/** A payload field's schema as a catalog annotates personal data. */
interface Annotated {
  'x-sluice-protected'?: boolean;
  'x-sluice-subject'?: string;
}

/**
 * The protected fields of a catalog's events, read from their payload schemas: a field marked
 * `"x-sluice-protected": true` is personal data of the subject its `x-sluice-subject` names.
 *
 * @example const fields = protectedFieldsOf(shopCatalog.events);
 */
export function protectedFieldsOf(
  events: Readonly<Record<string, { type: string; schema: unknown }>>,
): ProtectedFields {
  const fields: Record<string, { subject: string; fields: string[] }> = {};
  for (const { type, schema } of Object.values(events)) {
    const properties = (schema as { properties?: Record<string, Annotated> }).properties ?? {};
    for (const [name, field] of Object.entries(properties)) {
      const subject = field['x-sluice-subject'];
      if (field['x-sluice-protected'] !== true || subject === undefined) continue;
      (fields[type] ??= { subject, fields: [] }).fields.push(name);
    }
  }
  return fields;
}
