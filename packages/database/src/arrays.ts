/** What {@link arrayLiteral} takes: the element types pg sends as text. */
export type ArrayElement = string | number | bigint | boolean | null | undefined;

const needsEscape = (value: string): boolean => value.includes('"') || value.includes('\\');

/**
 * An array parameter as PostgreSQL's text literal, exactly as pg would send the array itself
 * (`{"a","b",NULL}`: every element quoted, null and undefined as NULL), built with one join
 * instead of several strings per element. Pass it where the array would go, cast as before:
 * `unnest(${arrayLiteral(ids)}::uuid[])`.
 */
export function arrayLiteral(values: readonly ArrayElement[]): string {
  if (values.length === 0) return '{}';
  let plain = true;
  for (let i = 0; i < values.length && plain; i++) {
    const value = values[i];
    plain =
      typeof value === 'number' ||
      typeof value === 'bigint' ||
      typeof value === 'boolean' ||
      (typeof value === 'string' && !needsEscape(value));
  }
  if (plain) return `{"${values.join('","')}"}`;
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    const text = value === null || value === undefined ? null : String(value);
    parts[i] =
      text === null
        ? 'NULL'
        : `"${needsEscape(text) ? text.replaceAll('\\', '\\\\').replaceAll('"', '\\"') : text}"`;
  }
  return `{${parts.join(',')}}`;
}
