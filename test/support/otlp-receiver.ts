// Test support: an OTLP/HTTP trace receiver inside the test process. It decodes what the
// OpenTelemetry exporters send to `<endpoint>/v1/traces`, as protobuf or JSON, gzipped or not.
import { errorMessage } from '@sluice/errors';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';

/**
 * An attribute value. int64 is a number when it is a safe integer, a bigint otherwise (exact from
 * protobuf and from OTLP/JSON decimal strings; a JSON number, as the JS exporter writes int64, is
 * exact only below 2^53). Bytes are a Uint8Array; an empty AnyValue is undefined.
 */
export type OtlpValue =
  | string
  | number
  | boolean
  | bigint
  | Uint8Array
  | undefined
  | OtlpValue[]
  | { [key: string]: OtlpValue };

export type OtlpAttributes = Record<string, OtlpValue>;

/** One span as received, whatever the protocol. Ids are lowercase hex. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** Undefined when absent or empty. */
  parentSpanId: string | undefined;
  traceState: string | undefined;
  /** W3C trace flags in the low byte, OTLP's is-remote bits above. */
  flags: number;
  name: string;
  kind: 'unspecified' | 'internal' | 'server' | 'client' | 'producer' | 'consumer';
  startTimeUnixNano: bigint;
  endTimeUnixNano: bigint;
  attributes: OtlpAttributes;
  links: { traceId: string; spanId: string; attributes: OtlpAttributes }[];
  events: { name: string; timeUnixNano: bigint; attributes: OtlpAttributes }[];
  status: { code: 'unset' | 'ok' | 'error'; message?: string };
  /** The resource attribute `service.name`. */
  service: string | undefined;
  resource: OtlpAttributes;
  /** The instrumentation scope's name. */
  scope: string | undefined;
  protocol: 'protobuf' | 'json';
}

export interface OtlpReceiver {
  /** Base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`; the exporters POST to `${endpoint}/v1/traces`. */
  endpoint: string;
  /** Every span accepted so far, in arrival order. */
  spans(): ReceivedSpan[];
  /**
   * Resolves with all spans as soon as `predicate` holds over them; rejects after `timeoutMs`
   * with `message` and a summary of what arrived.
   */
  waitForSpans(
    predicate: (spans: ReceivedSpan[]) => boolean,
    options: { timeoutMs: number; message: string },
  ): Promise<ReceivedSpan[]>;
  /** Requests received, accepted or not. */
  requests(): number;
  /** Requests answered with an error status. */
  rejected(): number;
  close(): Promise<void>;
}

/** Starts a receiver on 127.0.0.1 at a free port. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const received: ReceivedSpan[] = [];
  const listeners = new Set<() => void>();
  let requests = 0;
  let rejected = 0;
  const server = createServer((req, res) => {
    requests++;
    receive(req).then(
      ({ spans, protocol }) => {
        received.push(...spans);
        for (const listener of listeners) listener();
        if (protocol === 'json') reply(res, 200, 'application/json', '{}');
        else reply(res, 200, 'application/x-protobuf', '');
      },
      (error: unknown) => {
        rejected++;
        const status = error instanceof Rejection ? error.status : 400;
        reply(res, status, 'text/plain', errorMessage(error));
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const summary = (): string => summarize(received, requests, rejected);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans: () => [...received],
    waitForSpans: (predicate, options) =>
      waitUntil(received, listeners, predicate, options, summary),
    requests: () => requests,
    rejected: () => rejected,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function waitUntil(
  received: ReceivedSpan[],
  listeners: Set<() => void>,
  predicate: (spans: ReceivedSpan[]) => boolean,
  options: { timeoutMs: number; message: string },
  summary: () => string,
): Promise<ReceivedSpan[]> {
  return new Promise((resolve, reject) => {
    const settle = (error?: unknown): void => {
      clearTimeout(timer);
      listeners.delete(check);
      if (error === undefined) resolve([...received]);
      else reject(error instanceof Error ? error : new Error(errorMessage(error)));
    };
    const check = (): void => {
      try {
        if (predicate(received)) settle();
      } catch (error) {
        settle(error);
      }
    };
    const why = (): string => `waiting for ${options.message}; ${summary()}`;
    const timer = setTimeout(
      () => settle(new Error(`Timed out after ${options.timeoutMs} ms ${why()}`)),
      options.timeoutMs,
    );
    listeners.add(check);
    check();
  });
}

function summarize(spans: ReceivedSpan[], requests: number, rejected: number): string {
  const counts = new Map<string, number>();
  for (const { service, name } of spans) {
    const key = `${service ?? '?'}/${name}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const list = [...counts].map(([key, n]) => `${key} x${n}`).join(', ');
  return `received ${spans.length} spans in ${requests} requests (${rejected} rejected)${list ? `: ${list}` : ''}`;
}

class Rejection extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function receive(
  req: IncomingMessage,
): Promise<{ spans: ReceivedSpan[]; protocol: Protocol }> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  if (new URL(req.url ?? '/', 'http://receiver').pathname !== '/v1/traces') {
    throw new Rejection(404, `no such path: ${req.url ?? ''}`);
  }
  if (req.method !== 'POST') throw new Rejection(405, `method ${req.method ?? ''} not allowed`);
  const protocol = PROTOCOLS[(req.headers['content-type'] ?? '').split(';')[0]?.trim() ?? ''];
  if (protocol === undefined) throw new Rejection(415, 'unsupported content type');
  const encoding = req.headers['content-encoding'] ?? 'identity';
  if (encoding !== 'gzip' && encoding !== 'identity')
    throw new Rejection(415, `encoding ${encoding}`);
  const raw = Buffer.concat(chunks);
  const body = encoding === 'gzip' ? await promisify(gunzip)(raw) : raw;
  const request: unknown =
    protocol === 'json' ? JSON.parse(body.toString('utf8')) : decode(body, REQUEST);
  return { spans: flatten(request, protocol), protocol };
}

function reply(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

type Protocol = ReceivedSpan['protocol'];
const PROTOCOLS: Record<string, Protocol | undefined> = {
  'application/x-protobuf': 'protobuf',
  'application/json': 'json',
};

// --- From the OTLP/JSON shape (which the protobuf decoder below also produces) to ReceivedSpan.

type Json = Record<string, unknown>;
const KINDS = ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'] as const;
const STATUS_CODES = ['unset', 'ok', 'error'] as const;

function flatten(request: unknown, protocol: Protocol): ReceivedSpan[] {
  return objects(obj(request).resourceSpans).flatMap((resourceSpans) => {
    const resource = attributes(obj(resourceSpans.resource).attributes);
    const name = resource['service.name'];
    const service = typeof name === 'string' ? name : undefined;
    return objects(resourceSpans.scopeSpans).flatMap((scopeSpans) => {
      const scope = optional(obj(scopeSpans.scope).name, str);
      const context = { service, resource, scope, protocol };
      return objects(scopeSpans.spans).map((span) => ({ ...toSpan(span), ...context }));
    });
  });
}

function toSpan(span: Json): Omit<ReceivedSpan, 'service' | 'resource' | 'scope' | 'protocol'> {
  const message = optional(obj(span.status).message, str);
  return {
    traceId: id(span.traceId),
    spanId: id(span.spanId),
    parentSpanId: optional(span.parentSpanId, id),
    traceState: optional(span.traceState, str),
    flags: Number(integer(span.flags ?? 0)),
    name: str(span.name ?? ''),
    kind: oneOf(KINDS, span.kind),
    startTimeUnixNano: nanos(span.startTimeUnixNano),
    endTimeUnixNano: nanos(span.endTimeUnixNano),
    attributes: attributes(span.attributes),
    links: objects(span.links).map((link) => ({
      traceId: id(link.traceId),
      spanId: id(link.spanId),
      attributes: attributes(link.attributes),
    })),
    events: objects(span.events).map((event) => ({
      name: str(event.name ?? ''),
      timeUnixNano: nanos(event.timeUnixNano),
      attributes: attributes(event.attributes),
    })),
    status: {
      code: oneOf(STATUS_CODES, obj(span.status).code),
      ...(message === undefined ? {} : { message }),
    },
  };
}

function attributes(value: unknown): OtlpAttributes {
  return Object.fromEntries(objects(value).map((kv) => [str(kv.key), anyValue(kv.value)]));
}

function anyValue(value: unknown): OtlpValue {
  const v = obj(value);
  if (v.stringValue !== undefined) return str(v.stringValue);
  if (v.boolValue !== undefined)
    return typeof v.boolValue === 'boolean' ? v.boolValue : fail('bool');
  if (v.intValue !== undefined) return int64(v.intValue);
  if (v.doubleValue !== undefined) return Number(v.doubleValue);
  if (v.arrayValue !== undefined) return list(obj(v.arrayValue).values).map(anyValue);
  if (v.kvlistValue !== undefined) return attributes(obj(v.kvlistValue).values);
  if (v.bytesValue instanceof Uint8Array) return new Uint8Array(v.bytesValue);
  if (v.bytesValue !== undefined) return new Uint8Array(Buffer.from(str(v.bytesValue), 'base64'));
  return undefined;
}

function int64(value: unknown): number | bigint {
  const big = integer(value);
  return big >= Number.MIN_SAFE_INTEGER && big <= Number.MAX_SAFE_INTEGER ? Number(big) : big;
}

function nanos(value: unknown): bigint {
  const big = integer(value ?? 0n);
  return big >= 0n ? big : fail(`negative time ${big}`);
}

/** A bigint, an integral number, or a decimal string (OTLP/JSON's int64). */
function integer(value: unknown): bigint {
  if (typeof value === 'bigint') return value;
  const ok = Number.isInteger(value) || (typeof value === 'string' && /^-?\d+$/.test(value));
  return ok ? BigInt(value as number | string) : fail(`not an integer: ${String(value)}`);
}

function id(value: unknown): string {
  const text = str(value);
  return /^([0-9a-f]{2})+$/i.test(text) ? text.toLowerCase() : fail(`bad id ${text}`);
}

/** Undefined for an absent or empty value, `convert(value)` otherwise. */
function optional<T>(value: unknown, convert: (value: unknown) => T): T | undefined {
  return value === undefined || value === '' ? undefined : convert(value);
}

function oneOf<T>(names: readonly T[], value: unknown): T {
  return names[Number(integer(value ?? 0))] ?? fail(`enum ${String(value)}`);
}

function obj(value: unknown): Json {
  if (value === undefined) return {};
  const ok = typeof value === 'object' && value !== null && !Array.isArray(value);
  return ok ? (value as Json) : fail('expected an object');
}

function objects(value: unknown): Json[] {
  return list(value).map(obj);
}

function list(value: unknown): unknown[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : fail('expected an array');
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : fail('expected a string');
}

function fail(message: string): never {
  throw new Rejection(400, message);
}

// --- Protobuf wire format, decoded into the OTLP/JSON shape.

interface Field {
  no: number;
  wire: number;
  /** The varint, or the fixed64/fixed32 as unsigned little-endian. */
  int: bigint;
  /** The length-delimited payload, or the fixed64/fixed32 bytes. */
  bytes: Uint8Array;
}

function* fields(buf: Uint8Array): Generator<Field> {
  const at = { pos: 0 };
  while (at.pos < buf.length) {
    const tag = varint(buf, at);
    const no = Number(tag >> 3n);
    const type = Number(tag & 7n);
    if (no === 0) fail('field number 0');
    if (type === 0) {
      yield { no, wire: type, int: varint(buf, at), bytes: new Uint8Array() };
      continue;
    }
    if (type !== 1 && type !== 2 && type !== 5) fail(`wire type ${type}`);
    const size = type === 1 ? 8 : type === 5 ? 4 : Number(varint(buf, at));
    if (at.pos + size > buf.length) fail('truncated field');
    const payload = buf.subarray(at.pos, (at.pos += size));
    const int =
      type === 2 ? 0n : payload.reduceRight((sum, byte) => (sum << 8n) | BigInt(byte), 0n);
    yield { no, wire: type, int, bytes: payload };
  }
}

function varint(buf: Uint8Array, at: { pos: number }): bigint {
  let result = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    const byte = buf[at.pos++] ?? fail('truncated varint');
    result |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return BigInt.asUintN(64, result);
  }
  return fail('varint too long');
}

type Decoder = (field: Field) => unknown;
/** Field number to its OTLP/JSON name and decoder. */
type Schema = Record<number, [key: string, decoder: Decoder]>;
const REPEATED = new Set(
  'resourceSpans scopeSpans spans attributes events links values'.split(' '),
);

function decode(buf: Uint8Array, schema: Schema): Json {
  const out: Json = {};
  for (const field of fields(buf)) {
    const [key, decoder] = schema[field.no] ?? [];
    if (key === undefined || decoder === undefined) continue;
    if (REPEATED.has(key)) ((out[key] ??= []) as unknown[]).push(decoder(field));
    else out[key] = decoder(field);
  }
  return out;
}

function ofType(field: Field, type: number): Field {
  return field.wire === type ? field : fail(`field ${field.no}: wire type ${field.wire}`);
}

function message(schema: () => Schema): Decoder {
  return (field) => decode(ofType(field, 2).bytes, schema());
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const string: Decoder = (field) => utf8.decode(ofType(field, 2).bytes);
const hex: Decoder = (field) => Buffer.from(ofType(field, 2).bytes).toString('hex');
const bytes: Decoder = (field) => ofType(field, 2).bytes;
const uint: Decoder = (field) => Number(ofType(field, 0).int);
const int: Decoder = (field) => BigInt.asIntN(64, ofType(field, 0).int);
const bool: Decoder = (field) => ofType(field, 0).int !== 0n;
const fixed64: Decoder = (field) => ofType(field, 1).int;
const fixed32: Decoder = (field) => Number(ofType(field, 5).int);
const double: Decoder = (field) => Buffer.from(ofType(field, 1).bytes).readDoubleLE();
const keyValue = message(() => ({ 1: ['key', string], 2: ['value', anyValueField] }));
const anyValueField = message(() => ANY_VALUE);
const attributesOf = message(() => ({ 1: ['attributes', keyValue] }));
const valuesOf = (decoder: Decoder): Decoder => message(() => ({ 1: ['values', decoder] }));

const ANY_VALUE: Schema = {
  1: ['stringValue', string],
  2: ['boolValue', bool],
  3: ['intValue', int],
  4: ['doubleValue', double],
  5: ['arrayValue', valuesOf(anyValueField)],
  6: ['kvlistValue', valuesOf(keyValue)],
  7: ['bytesValue', bytes],
};
const EVENT: Schema = {
  1: ['timeUnixNano', fixed64],
  2: ['name', string],
  3: ['attributes', keyValue],
};
const LINK: Schema = {
  1: ['traceId', hex],
  2: ['spanId', hex],
  3: ['traceState', string],
  4: ['attributes', keyValue],
  6: ['flags', fixed32],
};
const SPAN: Schema = {
  1: ['traceId', hex],
  2: ['spanId', hex],
  3: ['traceState', string],
  4: ['parentSpanId', hex],
  5: ['name', string],
  6: ['kind', uint],
  7: ['startTimeUnixNano', fixed64],
  8: ['endTimeUnixNano', fixed64],
  9: ['attributes', keyValue],
  11: ['events', message(() => EVENT)],
  13: ['links', message(() => LINK)],
  15: ['status', message(() => ({ 2: ['message', string], 3: ['code', uint] }))],
  16: ['flags', fixed32],
};
const SCOPE_SPANS: Schema = {
  1: ['scope', message(() => ({ 1: ['name', string], 2: ['version', string] }))],
  2: ['spans', message(() => SPAN)],
};
const REQUEST: Schema = {
  1: [
    'resourceSpans',
    message(() => ({
      1: ['resource', attributesOf],
      2: ['scopeSpans', message(() => SCOPE_SPANS)],
    })),
  ],
};
