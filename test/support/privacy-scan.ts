// Test support: where personal data is left — every column of every table of every schema, every
// record of some topics read from the beginning, and text such as services' output — in clear,
// JSON-escaped or base64-encoded.
import { testKafka, uniqueName, waitFor } from '@sluice/testkit';
import type pg from 'pg';

/** One way a secret could be written down, as the bytes to look for. */
interface Form {
  label: string;
  form: string;
  bytes: Buffer;
}

/**
 * The base64 characters that `bytes` alone decide, at each of the three alignments it can have
 * inside a longer encoded text (plus the URL-safe alphabet's).
 */
function base64Runs(bytes: Buffer): string[] {
  const runs: string[] = [];
  for (let shift = 0; shift < 3; shift += 1) {
    const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString('base64');
    const run = encoded.slice(
      Math.ceil((8 * shift) / 6),
      Math.floor((8 * (shift + bytes.length)) / 6),
    );
    runs.push(run, run.replaceAll('+', '-').replaceAll('/', '_'));
  }
  return runs;
}

/** Each secret in clear, JSON-escaped and in base64; forms that spell the same bytes once. */
function formsOf(secrets: Record<string, string>): Form[] {
  const forms: Form[] = [];
  for (const [label, secret] of Object.entries(secrets)) {
    const spellings: [string, string][] = [
      ['clear', secret],
      ['JSON-escaped', JSON.stringify(secret).slice(1, -1)],
      [
        'JSON-escaped ASCII',
        JSON.stringify(secret)
          .slice(1, -1)
          .replace(/[^\x20-\x7e]/gu, asciiEscape),
      ],
      ...base64Runs(Buffer.from(secret)).map((run): [string, string] => ['base64', run]),
    ];
    const seen = new Set<string>();
    for (const [form, text] of spellings) {
      if (seen.has(text)) continue;
      seen.add(text);
      forms.push({ label, form, bytes: Buffer.from(text) });
    }
  }
  return forms;
}

/** `\uXXXX` for each UTF-16 unit of `character`, as JSON writers that escape non-ASCII do. */
function asciiEscape(character: string): string {
  let escaped = '';
  for (let i = 0; i < character.length; i += 1)
    escaped += `\\u${character.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return escaped;
}

/** A place's findings, `"<label> (<form>) in <where>"`, for each form `content` holds. */
function look(forms: readonly Form[], where: string, content: Buffer, found: Set<string>): void {
  for (const { label, form, bytes } of forms)
    if (content.includes(bytes)) found.add(`${label} (${form}) in ${where}`);
}

/** Every value, flattened out of arrays: bytea values are Buffers, others text. */
function* valuesOf(value: unknown): Generator<Buffer> {
  if (value === null || value === undefined) return;
  if (Array.isArray(value)) for (const item of value) yield* valuesOf(item);
  else if (Buffer.isBuffer(value)) yield value;
  else yield Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));
}

/** The values, one a line. */
function joined(values: readonly unknown[]): Buffer {
  return Buffer.concat(values.flatMap((value) => [...valuesOf(value), Buffer.from('\n')]));
}

/**
 * Every column of every table (and materialized view) of every schema but PostgreSQL's own:
 * bytea (and bytea[]) columns read as raw bytes — UTF-8 text in them is found byte for byte,
 * whatever else they hold — every other column as its text form (json, jsonb, arrays, …).
 */
async function scanDatabase(pool: pg.Pool, forms: readonly Form[], found: Set<string>) {
  const { rows: columns } = await pool.query<{ tab: string; col: string; raw: boolean }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS tab, format('%I', a.attname) AS col,
            t.typname IN ('bytea', '_bytea') AS raw
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_type t ON t.oid = a.atttypid
      WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      ORDER BY 1, a.attnum`,
  );
  for (const { tab, col, raw } of columns) {
    const { rows } = await pool.query<{ v: unknown }>(
      `SELECT ${raw ? col : `${col}::text`} AS v FROM ${tab} WHERE ${col} IS NOT NULL`,
    );
    look(forms, `table ${tab} column ${col}`, joined(rows.map((row) => row.v)), found);
  }
}

/** Every record of `topics` from the beginning, by topic: key, header values, value as bytes. */
async function readRaw(brokers: readonly string[], topics: readonly string[]) {
  const kafka = testKafka(brokers);
  const admin = kafka.admin();
  await admin.connect();
  const remaining = new Map<string, bigint>();
  try {
    for (const topic of topics)
      for (const end of await admin.fetchTopicOffsets(topic))
        if (end.high !== '0') remaining.set(`${topic}:${end.partition}`, BigInt(end.high));
  } finally {
    await admin.disconnect();
  }
  const parts = new Map(topics.map((topic) => [topic, [] as Buffer[]]));
  if (remaining.size === 0) return parts;
  const consumer = kafka.consumer({ groupId: uniqueName('scan'), maxBytes: 50 * 1024 * 1024 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [...topics], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const headers = Object.values(message.headers ?? {});
        parts.get(topic)?.push(...valuesOf([message.key, ...headers, message.value]));
        const key = `${topic}:${partition}`;
        const high = remaining.get(key);
        if (high !== undefined && BigInt(message.offset) + 1n >= high) remaining.delete(key);
        await Promise.resolve();
      },
    });
    await waitFor(() => remaining.size === 0, {
      timeoutMs: 60_000,
      message: `every record of ${topics.join(', ')}`,
    });
  } finally {
    await consumer.disconnect();
  }
  return parts;
}

/** Where to look; each part is optional. */
export interface ScanPlaces {
  /** A pool on the database to read whole. */
  pool?: pg.Pool;
  /** Topics to read from the beginning, on `kafkaBrokers`. */
  topics?: readonly string[];
  kafkaBrokers?: readonly string[];
  /** Text by name, such as a service's output. */
  texts?: Record<string, string>;
}

/**
 * Where each secret (by label) is still written, in clear, JSON-escaped or in base64:
 * `"<label> (<form>) in <place>"`, sorted.
 */
export async function findSecrets(
  secrets: Record<string, string>,
  places: ScanPlaces,
): Promise<string[]> {
  const forms = formsOf(secrets);
  const found = new Set<string>();
  if (places.pool !== undefined) await scanDatabase(places.pool, forms, found);
  const topics = places.topics ?? [];
  if (topics.length > 0) {
    for (const [topic, parts] of await readRaw(places.kafkaBrokers ?? [], topics))
      look(forms, `topic ${topic}`, joined(parts), found);
  }
  for (const [name, text] of Object.entries(places.texts ?? {}))
    look(forms, name, Buffer.from(text), found);
  return [...found].sort();
}
