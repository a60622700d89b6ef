// The patched kafkajs (patches/kafkajs@2.2.4.patch) against the original, byte for byte: produce
// requests of every version and compression, framed; the key hash and partition choice;
// CRC-32C; and records decoded from record batches and whole Fetch responses.
//
// The original is the `kafkajs-original` dev dependency, kafkajs 2.2.3: pnpm applies a patch to
// every copy of kafkajs@2.2.4, aliases and tarball URLs included, and 2.2.3's protocol, producer
// and utils sources are those of 2.2.4. The first test proves that, file by file, against the
// blob hashes the patch itself records, so the comparison can never be of a copy with itself.
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileFunction } from 'node:vm';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';

const require = createRequire(import.meta.url);

interface Encoder {
  readonly buffer: Buffer;
  size(): number;
  writeInt8(value: number): Encoder;
  writeInt16(value: number): Encoder;
  writeInt32(value: number): Encoder;
  writeInt64(value: bigint | number | string): Encoder;
  writeString(value: string | null): Encoder;
  writeBytes(value: Buffer): Encoder;
  writeVarInt(value: number): Encoder;
  writeVarLong(value: bigint | number): Encoder;
  writeVarIntString(value: string): Encoder;
  writeVarIntBytes(value: Buffer | string | null): Encoder;
  writeArray(value: readonly Encoder[]): Encoder;
  writeEncoder(value: Encoder): Encoder;
}

type HeaderValue = string | Buffer | (string | Buffer)[];
interface Message {
  key?: string | Buffer | null;
  value: string | Buffer | null;
  headers?: Record<string, HeaderValue>;
  timestamp?: number | string;
  partition?: number;
}
interface ProduceArgs {
  acks: number;
  timeout: number;
  compression?: number;
  transactionalId?: string | null;
  producerId?: number | string;
  producerEpoch?: number;
  topicData: {
    topic: string;
    partitions: { partition: number; firstSequence?: number; messages: Message[] }[];
  }[];
}
interface KafkaRequest {
  apiVersion: number;
  encode(): Promise<Encoder>;
}
interface Codec {
  compress(encoder: Encoder): Promise<Buffer>;
  decompress(buffer: Buffer): Promise<Buffer>;
}
type Partitioner = (args: {
  topic: string;
  partitionMetadata: { partitionId: number; leader: number }[];
  message: Message;
}) => number;
interface Decoder {
  canReadBytes(length: number): boolean;
}
/** The varlong readers of a Decoder (`readVarLongNumber` in the patched one only). */
interface VarLongDecoder extends Decoder {
  offset: number;
  readVarLong(): { toString(): string };
  readVarLongNumber(): number | { toString(): string };
}
interface DecodedRecord {
  headers: Record<string, unknown>;
  [field: string]: unknown;
}
interface FetchResponse {
  responses: { topicName: string; partitions: { messages: DecodedRecord[] }[] }[];
}
interface BatchOptions {
  compression: number;
  records: Encoder[];
  firstOffset: bigint;
  firstTimestamp: bigint;
  maxTimestamp: bigint;
  lastOffsetDelta: number;
  transactional: boolean;
  producerId: bigint;
  producerEpoch: number;
  firstSequence: number;
}

/** The parts of one kafkajs copy under test. */
interface Kafkajs {
  root: string;
  codecs: Record<number, () => Codec>;
  produce(version: number): (args: ProduceArgs) => { request: KafkaRequest };
  frame(args: {
    correlationId: number;
    clientId: string | null;
    request: KafkaRequest;
  }): Promise<Encoder>;
  murmur2(key: string | Buffer): number;
  createPartitioner(): Partitioner;
  groupMessagesPerPartition(args: {
    topic: string;
    partitionMetadata: { partitionId: number; leader: number }[];
    messages: Message[];
    partitioner: Partitioner;
  }): Record<string, Message[]>;
  crc32C(data: Buffer): number;
  Encoder: new () => Encoder;
  RecordBatch(options: BatchOptions): Promise<Encoder>;
  Decoder: new (data: Buffer) => Decoder;
  decodeRecordBatch(decoder: Decoder): Promise<{ records: DecodedRecord[] }>;
  decodeFetchV11(data: Buffer): Promise<FetchResponse>;
  headerDecoder: { valuesAsStrings?: boolean };
}

function load(root: string): Kafkajs {
  const from = (path: string): unknown => require(join(root, path));
  const produce = from('src/protocol/requests/produce') as {
    protocol(args: { version: number }): (args: ProduceArgs) => { request: KafkaRequest };
  };
  return {
    root,
    codecs: (from('.') as { CompressionCodecs: Kafkajs['codecs'] }).CompressionCodecs,
    produce: (version) => produce.protocol({ version }),
    frame: from('src/protocol/request') as Kafkajs['frame'],
    murmur2: from('src/producer/partitioners/default/murmur2') as Kafkajs['murmur2'],
    createPartitioner: from('src/producer/partitioners/default') as Kafkajs['createPartitioner'],
    groupMessagesPerPartition: from(
      'src/producer/groupMessagesPerPartition',
    ) as Kafkajs['groupMessagesPerPartition'],
    crc32C: from('src/protocol/recordBatch/crc32C') as Kafkajs['crc32C'],
    Encoder: from('src/protocol/encoder') as Kafkajs['Encoder'],
    RecordBatch: (from('src/protocol/recordBatch/v0') as Pick<Kafkajs, 'RecordBatch'>).RecordBatch,
    Decoder: from('src/protocol/decoder') as Kafkajs['Decoder'],
    decodeRecordBatch: from('src/protocol/recordBatch/v0/decoder') as Kafkajs['decodeRecordBatch'],
    decodeFetchV11: (
      from('src/protocol/requests/fetch/v11/response') as { decode: Kafkajs['decodeFetchV11'] }
    ).decode,
    headerDecoder: from('src/protocol/recordBatch/header/v0/decoder') as Kafkajs['headerDecoder'],
  };
}

const patched = load(dirname(require.resolve('kafkajs/package.json')));
const original = load(dirname(require.resolve('kafkajs-original/package.json')));
const patchFile = fileURLToPath(new URL('../../../patches/kafkajs@2.2.4.patch', import.meta.url));

const Compression = { None: 0, GZIP: 1, Snappy: 2, LZ4: 3, ZSTD: 4 } as const;
const COMPRESSIONS = Object.values(Compression);
/** A user-registered codec: deterministic, so both copies compress to the same bytes. */
const testCodec: Codec = {
  compress: (encoder) => Promise.resolve(deflateRawSync(encoder.buffer, { level: 1 })),
  decompress: (buffer) => Promise.resolve(inflateRawSync(buffer)),
};
const NOW = 1_700_000_123_456;

/** Registers the test codec as Snappy, LZ4 and ZSTD in both copies; returns the undo. */
function registerTestCodec(): () => void {
  const undo: (() => void)[] = [];
  for (const lib of [patched, original]) {
    for (const type of [Compression.Snappy, Compression.LZ4, Compression.ZSTD]) {
      const previous = lib.codecs[type];
      if (previous === undefined) throw new Error(`kafkajs has no codec ${type} to replace`);
      lib.codecs[type] = () => testCodec;
      undo.push(() => (lib.codecs[type] = previous));
    }
  }
  return () => {
    for (const step of undo) step();
  };
}

/** Where two encodings first differ, with the bytes around it in hex; null when they are equal. */
function difference(patchedBytes: Buffer, originalBytes: Buffer): string | null {
  if (patchedBytes.equals(originalBytes)) return null;
  let at = 0;
  while (at < patchedBytes.length && patchedBytes[at] === originalBytes[at]) at += 1;
  const around = (bytes: Buffer) => bytes.subarray(Math.max(0, at - 8), at + 16).toString('hex');
  return `${patchedBytes.length} bytes patched, ${originalBytes.length} original; first difference at ${at}: patched …${around(patchedBytes)}…, original …${around(originalBytes)}…`;
}

type Outcome = { body: Buffer; framed: Buffer } | { error: string };

/** A produce request's body and its framing (size, header, body), or the error it failed with. */
async function encodeProduce(
  lib: Kafkajs,
  version: number,
  args: ProduceArgs,
  clientId: string | null = 'sluice-relay',
): Promise<Outcome> {
  const { request } = lib.produce(version)(args);
  expect(request.apiVersion).toBe(version);
  try {
    const body = Buffer.from((await request.encode()).buffer);
    const framed = Buffer.from(
      (await lib.frame({ correlationId: 0x1234abcd, clientId, request })).buffer,
    );
    return { body, framed };
  } catch (error) {
    return { error: String(error) };
  }
}

/** Encodes with both copies and expects the same bytes, or the same error; returns the outcome. */
async function expectSameProduce(
  version: number,
  args: ProduceArgs,
  clientId?: string | null,
): Promise<Outcome> {
  const fromOriginal = await encodeProduce(original, version, args, clientId);
  const fromPatched = await encodeProduce(patched, version, args, clientId);
  if ('error' in fromOriginal || 'error' in fromPatched) {
    expect(fromPatched).toEqual(fromOriginal);
    return fromOriginal;
  }
  expect(difference(fromPatched.body, fromOriginal.body), `v${version} body`).toBeNull();
  expect(difference(fromPatched.framed, fromOriginal.framed), `v${version} framed`).toBeNull();
  return fromOriginal;
}

// ---- generated values ----

const NON_ASCII = [
  'é',
  'ß',
  'ü',
  '日',
  '\u0080',
  '\u07ff',
  '\u0800',
  '\uffff',
  '😀',
  '\ud800',
  '\udfff',
];
/** Around 64 UTF-16 units (the patch's fast path ends there): ASCII, or with one non-ASCII character. */
const boundaryText = fc
  .record({
    length: fc.integer({ min: 62, max: 66 }),
    at: fc.nat(),
    char: fc.option(fc.constantFrom(...NON_ASCII), { nil: undefined }),
  })
  .map(({ length, at, char }) => {
    const text = 'k'.repeat(length);
    if (char === undefined) return text;
    const i = at % length;
    return text.slice(0, i) + char + text.slice(i + char.length);
  });
const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.constantFrom('a', 'Z', '0', '-', ...NON_ASCII), maxLength: 80 }),
  boundaryText,
);
/** Buffers, some of them views into a larger buffer at an offset. */
const bytes = fc
  .record({ data: fc.uint8Array({ maxLength: 100 }), skip: fc.nat(3) })
  .map(({ data, skip }) => {
    const buffer = Buffer.alloc(data.length + skip, 0xee);
    buffer.set(data, skip);
    return buffer.subarray(skip);
  });
const headerName = fc.oneof(
  text,
  fc.constantFrom('ce_id', 'ce_type', '__proto__', 'constructor', 'toString', '0', '17'),
);
const headerValue: fc.Arbitrary<HeaderValue> = fc.oneof(
  text,
  bytes,
  fc.array(fc.oneof(text, bytes), { maxLength: 4 }),
);
const headers = (maxKeys: number, minKeys = 0) =>
  fc.dictionary(headerName, headerValue, { minKeys, maxKeys });
const timestamp = fc.oneof(
  fc.integer({ min: NOW - 100_000, max: NOW + 100_000 }),
  fc.integer({ min: 1, max: 2 ** 45 }),
  fc.integer({ min: 1, max: 2 ** 45 }).map(String),
);
const message = (headerArb: fc.Arbitrary<Record<string, HeaderValue>>): fc.Arbitrary<Message> =>
  fc.record(
    {
      key: fc.oneof(fc.constant(null), text, bytes),
      value: fc.oneof(fc.constant(null), text, bytes),
      headers: fc.oneof(fc.constant({}), headerArb),
      timestamp,
    },
    { requiredKeys: ['value'] },
  );
const produceArgs = (
  messageArb: fc.Arbitrary<Message>,
  maxMessages: number,
): fc.Arbitrary<ProduceArgs> =>
  fc.record(
    {
      acks: fc.constantFrom(-1, 0, 1),
      timeout: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      compression: fc.constantFrom(...COMPRESSIONS),
      transactionalId: fc.oneof(fc.constant(null), text),
      producerId: fc.oneof(
        fc.integer({ min: -1, max: 2 ** 31 - 1 }),
        fc.bigInt({ min: -1n, max: 2n ** 63n - 1n }).map(String),
      ),
      producerEpoch: fc.integer({ min: 0, max: 32_767 }),
      topicData: fc.array(
        fc.record({
          topic: text,
          partitions: fc.array(
            fc.record(
              {
                partition: fc.nat(1000),
                firstSequence: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
                messages: fc.array(messageArb, { maxLength: maxMessages }),
              },
              { requiredKeys: ['partition', 'messages'] },
            ),
            { minLength: 1, maxLength: 3 },
          ),
        }),
        { minLength: 1, maxLength: 3 },
      ),
    },
    { requiredKeys: ['acks', 'timeout', 'topicData'] },
  );

/** `length` bytes from a seed (xorshift32): large inputs without generating them byte by byte. */
function pseudoRandomBytes(seed: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  let state = seed | 1;
  for (let i = 0; i < length; i += 1) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    buffer[i] = state & 0xff;
  }
  return buffer;
}

function gitBlobHash(path: string): string {
  const content = readFileSync(path);
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

function filesUnder(root: string, dir: string): string[] {
  return readdirSync(join(root, dir), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(root, join(entry.parentPath, entry.name)))
    .sort();
}

describe('the original kafkajs the patched one is compared with', () => {
  it('is unpatched 2.2.4 source wherever the patch changes it, and the same file elsewhere', () => {
    expect((require(join(patched.root, 'package.json')) as { version: string }).version).toBe(
      '2.2.4',
    );
    // Each file's `index <before>..<after>` line: git blob hashes of the original and patched file.
    const changes = [
      ...readFileSync(patchFile, 'utf8').matchAll(
        /^diff --git a\/(\S+) b\/\S+\n(?:(?!diff --git).*\n)*?index ([0-9a-f]{40})\.\.([0-9a-f]{40})/gm,
      ),
    ].map(([, path = '', before = '', after = '']) => ({ path, before, after }));
    expect(changes.map((change) => change.path)).toContain(
      'src/protocol/requests/produce/v3/request.js',
    );
    // The request queue changed in 2.2.4 itself: kafkajs-request-queue.test.ts rebuilds its
    // original from the patch and proves it by the same hashes.
    for (const { path, before, after } of changes.filter(
      (c) => !c.path.startsWith('src/network/'),
    )) {
      expect(gitBlobHash(join(original.root, path)), `original ${path}`).toBe(before);
      expect(gitBlobHash(join(patched.root, path)), `installed patched ${path}`).toBe(after);
    }
    const changed = new Set(changes.map((change) => change.path));
    for (const dir of ['src/protocol', 'src/producer', 'src/utils']) {
      const files = filesUnder(patched.root, dir);
      expect(filesUnder(original.root, dir)).toEqual(files);
      for (const path of files.filter((file) => !changed.has(file)))
        expect(
          readFileSync(join(original.root, path)).equals(readFileSync(join(patched.root, path))),
          path,
        ).toBe(true);
    }
    const murmur2Source = (root: string) =>
      readFileSync(join(root, 'src/producer/partitioners/default/murmur2.js'), 'utf8');
    expect(murmur2Source(original.root)).toContain("require('../../../utils/long')");
    expect(murmur2Source(patched.root)).not.toContain("require('../../../utils/long')");
  });
});

// Generated requests take seconds on a busy machine.
describe('produce requests', { timeout: 60_000 }, () => {
  let unregister: () => void;
  beforeAll(() => {
    unregister = registerTestCodec();
  });
  afterAll(() => {
    unregister();
  });
  beforeEach(() => {
    vi.spyOn(Date, 'now').mockReturnValue(NOW);
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  // Kafka 3.9 offers Produce up to v11; kafkajs speaks up to v7 and so sends v7. v3 to v7 are
  // the patched v3 encoder; v0 to v2 still go through the patched Encoder and framing.
  const VERSIONS = [0, 1, 2, 3, 4, 5, 6, 7];

  it('encodes generated requests to the same bytes: every version, every compression', async () => {
    await fc.assert(
      fc.asyncProperty(
        produceArgs(message(headers(6)), 6),
        fc.oneof(fc.constant(null), text),
        async (args, clientId) => {
          for (const version of VERSIONS) {
            const outcome = await expectSameProduce(version, args, clientId);
            if (version >= 3) expect(outcome).not.toHaveProperty('error');
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('encodes records with hundreds of headers, arrays among them, to the same bytes', async () => {
    await fc.assert(
      fc.asyncProperty(produceArgs(message(headers(400, 150)), 3), async (args) => {
        for (const version of [3, 7]) {
          expect(await expectSameProduce(version, args)).not.toHaveProperty('error');
        }
      }),
      { numRuns: 15 },
    );
  });

  it('encodes the edge cases named one by one to the same bytes', async () => {
    const ascii = (length: number) => 'h'.repeat(length);
    const withUmlaut = (length: number) => `ü${'h'.repeat(length - 1)}`;
    const messages: Message[] = [
      { key: null, value: null },
      { value: 'no key' },
      { key: 'no value', value: null },
      { key: 'k', value: 'no headers' },
      { key: 'k', value: 'empty headers', headers: {} },
      { key: '', value: '', headers: { '': '' } },
      { key: Buffer.alloc(0), value: Buffer.alloc(0), headers: { empty: Buffer.alloc(0) } },
      {
        key: 'k',
        value: 'array headers',
        headers: { repeated: ['1', Buffer.from('2'), '3'], none: [] },
      },
      ...[63, 64, 65].flatMap((length): Message[] => [
        { key: ascii(length), value: ascii(length), headers: { [ascii(length)]: ascii(length) } },
        {
          key: withUmlaut(length),
          value: withUmlaut(length),
          headers: { [withUmlaut(length)]: withUmlaut(length), 日本: ['キー', withUmlaut(length)] },
        },
      ]),
      { key: 'lone', value: '\ud800 lone surrogates \udfff', headers: { '\udc00': '\ud83d' } },
      { key: 'ts', value: 'explicit', timestamp: NOW - 5 },
      { key: 'ts', value: 'far', timestamp: 2 ** 40 },
      { key: 'ts', value: 'string', timestamp: String(NOW + 3) },
      { key: 'ts', value: 'earlier than the first', timestamp: 1000 },
    ];
    for (const compression of COMPRESSIONS) {
      for (const transactionalId of [null, 'tx-1', 'трансакция']) {
        const args: ProduceArgs = {
          acks: -1,
          timeout: 30_000,
          compression,
          transactionalId,
          producerId: '9007199254740993',
          producerEpoch: 7,
          topicData: [
            {
              topic: 'outbox.event.cart',
              partitions: [
                { partition: 0, firstSequence: 12, messages },
                { partition: 5, firstSequence: 2 ** 31 - 10, messages: messages.slice(3) },
              ],
            },
            {
              topic: 'outbox.event.ördér',
              partitions: [{ partition: 2, messages: messages.slice(8) }],
            },
          ],
        };
        for (const version of [3, 7])
          expect(await expectSameProduce(version, args)).not.toHaveProperty('error');
      }
    }
    // The producer's defaults: no transactional id, producer id or epoch, no compression.
    expect(
      await expectSameProduce(7, {
        acks: 1,
        timeout: 100,
        topicData: [{ topic: 't', partitions: [{ partition: 0, messages: [{ value: 'v' }] }] }],
      }),
    ).not.toHaveProperty('error');
  });

  it('fails, or writes, exactly as the original for values the original does not expect', async () => {
    const cases: { message: Message; fails: boolean }[] = [
      { message: { value: 'v', headers: { nullHeader: null as unknown as string } }, fails: true },
      {
        message: { value: 'v', headers: { missing: undefined as unknown as string } },
        fails: true,
      },
      { message: { value: 'v', headers: { n: 5 as unknown as string } }, fails: true },
      { message: { value: 'v', headers: { a: ['x', null as unknown as string] } }, fails: true },
      { message: { value: 'v', headers: null as unknown as Record<string, string> }, fails: true },
      { message: { key: 7 as unknown as string, value: 'v' }, fails: true },
      { message: { value: 7 as unknown as string }, fails: true },
      // The original sizes a Uint8Array by its bytes but writes it as text; so must the patch.
      { message: { value: new Uint8Array([1, 2, 3]) as unknown as Buffer }, fails: false },
      {
        message: { value: 'v', headers: { u8: new Uint8Array([4, 5]) as unknown as Buffer } },
        fails: false,
      },
    ];
    for (const { message: odd, fails } of cases) {
      for (const compression of [Compression.None, Compression.GZIP]) {
        const outcome = await expectSameProduce(7, {
          acks: -1,
          timeout: 1000,
          compression,
          topicData: [
            {
              topic: 't',
              partitions: [{ partition: 0, messages: [{ key: 'k', value: 'v' }, odd] }],
            },
          ],
        });
        expect('error' in outcome, JSON.stringify(odd)).toBe(fails);
      }
    }
  });

  it('encodes batches near the size limits to the same bytes', async () => {
    const kib = 1024;
    const large: Message[] = [
      { key: 'ascii-900k', value: 'x'.repeat(900 * kib), headers: { ce_id: 'a' } },
      { key: Buffer.from('bytes-1m'), value: pseudoRandomBytes(1, 1024 * kib) },
      { key: 'utf8-1m', value: 'ü'.repeat(512 * kib), headers: { ünï: 'wózek' } },
    ];
    const small: Message[] = Array.from({ length: 5000 }, (_, i) => ({
      key: `cart-${i % 97}`,
      value: `{"cartId":"${i}","quantity":${i % 7}}`,
      headers: { ce_id: `id-${i}`, ce_type: 'cart.item_added.v1', ce_subject: 'wózek' },
    }));
    for (const compression of [Compression.None, Compression.GZIP, Compression.ZSTD]) {
      for (const messages of [large.slice(0, 1), large.slice(1, 2), large.slice(2), small]) {
        const outcome = await expectSameProduce(7, {
          acks: -1,
          timeout: 30_000,
          compression,
          producerId: 4000,
          producerEpoch: 0,
          topicData: [{ topic: 'outbox.event.cart', partitions: [{ partition: 1, messages }] }],
        });
        expect(outcome).not.toHaveProperty('error');
      }
    }
  });
});

describe('partition choice', { timeout: 60_000 }, () => {
  const key = fc.oneof(
    text,
    bytes,
    fc.string({ unit: 'grapheme', maxLength: 300 }),
    fc.string({ unit: 'binary', minLength: 200, maxLength: 700 }),
    fc
      .constantFrom(255, 256, 257)
      .chain((length) =>
        fc.oneof(
          fc.string({ minLength: length, maxLength: length }),
          fc.string({ unit: fc.constantFrom('a', 'é'), minLength: length, maxLength: length }),
        ),
      ),
  );

  it('hashes generated keys as the original murmur2 does', () => {
    fc.assert(
      fc.property(key, (k) => {
        expect(patched.murmur2(k)).toBe(original.murmur2(k));
      }),
      { numRuns: 3000 },
    );
  });

  it('chooses the same partition for keyed messages and groups them the same way', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 200 }),
        fc.array(
          fc.record(
            { key, value: fc.constant('v'), partition: fc.nat(199) },
            { requiredKeys: ['key', 'value'] },
          ),
          { maxLength: 20 },
        ),
        (partitions, messages) => {
          const partitionMetadata = Array.from({ length: partitions }, (_, id) => ({
            partitionId: id,
            leader: 0,
          }));
          const group = (lib: Kafkajs) =>
            lib.groupMessagesPerPartition({
              topic: 't',
              partitionMetadata,
              messages,
              partitioner: lib.createPartitioner(),
            });
          const grouped = group(patched);
          expect(Object.entries(grouped)).toEqual(Object.entries(group(original)));
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('CRC-32C', { timeout: 60_000 }, () => {
  const crc32cFile = 'src/protocol/recordBatch/crc32C/crc32C.js';
  /** The patch's JavaScript checksum (slicing-by-8), loaded as if `@node-rs/crc32` were missing. */
  const slicingBy8 = (() => {
    const path = join(patched.root, crc32cFile);
    const module = { exports: {} as (data: Buffer) => number };
    const run = compileFunction(readFileSync(path, 'utf8'), ['module', 'exports', 'require'], {
      filename: path,
    }) as (module: object, exports: unknown, require: (id: string) => never) => void;
    run(module, module.exports, (id: string) => {
      throw new Error(`not installed: ${id}`);
    });
    return (data: Buffer) => module.exports(data) >>> 0;
  })();
  const native = (() => {
    try {
      return (
        createRequire(join(patched.root, 'package.json'))('@node-rs/crc32') as {
          crc32c: (data: Buffer) => number;
        }
      ).crc32c;
    } catch {
      return undefined;
    }
  })();
  const checksums = (data: Buffer) => ({
    original: original.crc32C(data),
    patched: patched.crc32C(data),
    slicingBy8: slicingBy8(data),
    native: native === undefined ? original.crc32C(data) : native(data) >>> 0,
  });
  const expectAllEqual = (data: Buffer) => {
    const sums = checksums(data);
    expect(sums, `${data.length} bytes`).toEqual({
      original: sums.original,
      patched: sums.original,
      slicingBy8: sums.original,
      native: sums.original,
    });
  };

  it('checks the standard value with every implementation', () => {
    expect(slicingBy8(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(checksums(Buffer.from('123456789'))).toEqual({
      original: 0xe3069283,
      patched: 0xe3069283,
      slicingBy8: 0xe3069283,
      native: 0xe3069283,
    });
  });

  it('agrees with the original on random buffers of every length 0..64, at any offset', () => {
    fc.assert(
      fc.property(
        fc.tuple(
          ...Array.from({ length: 65 }, (_, length) =>
            fc.uint8Array({ minLength: length, maxLength: length }),
          ),
        ),
        fc.nat(7),
        (buffers, offset) => {
          for (const data of buffers) {
            const view = Buffer.alloc(data.length + offset, 0xa5);
            view.set(data, offset);
            expectAllEqual(view.subarray(offset));
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it('agrees with the original on large buffers', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        fc.integer({ min: 65_536, max: 2 * 1024 * 1024 + 7 }),
        fc.nat(7),
        (seed, length, offset) => {
          expectAllEqual(pseudoRandomBytes(seed, length + offset).subarray(offset));
        },
      ),
      { numRuns: 8 },
    );
  });
});

// ---- decoding ----

interface RawRecord {
  timestampDelta: number | bigint;
  offsetDelta: number;
  key: string | Buffer | null;
  value: string | Buffer | null;
  headers: { key: string; value: string | Buffer | null }[];
}
interface RawBatch {
  compression: number;
  firstOffset: bigint;
  firstTimestamp: bigint;
  logAppendTime: boolean;
  transactional: boolean;
  records: RawRecord[];
}

/** A record as a producer writes it, null header values included (the original's encoder cannot). */
function encodeRawRecord(record: RawRecord): Encoder {
  const body = recordHead(record, record.headers.length);
  for (const header of record.headers)
    body.writeVarIntString(header.key).writeVarIntBytes(header.value);
  return framed(body);
}

/** A record's fields up to its header count, as given (the headers are the caller's to write). */
function recordHead(
  { timestampDelta = 0, offsetDelta = 0, key, value }: RecordFields,
  headerCount: number,
): Encoder {
  return new original.Encoder()
    .writeInt8(0)
    .writeVarLong(timestampDelta)
    .writeVarInt(offsetDelta)
    .writeVarIntBytes(key)
    .writeVarIntBytes(value)
    .writeVarInt(headerCount);
}
type RecordFields = Pick<RawRecord, 'key' | 'value'> &
  Partial<Pick<RawRecord, 'timestampDelta' | 'offsetDelta'>>;

/** A record body with its length in front, as a batch holds it. */
function framed(body: Encoder): Encoder {
  return new original.Encoder().writeVarInt(body.size()).writeEncoder(body);
}

/** An uncompressed batch of one record whose body is `body`, however malformed. */
async function batchOfRecord(body: Encoder): Promise<Buffer> {
  const batch = await original.RecordBatch({
    compression: Compression.None,
    records: [framed(body)],
    firstOffset: 0n,
    firstTimestamp: 0n,
    maxTimestamp: 0n,
    lastOffsetDelta: 0,
    transactional: false,
    producerId: -1n,
    producerEpoch: 0,
    firstSequence: 0,
  });
  return Buffer.from(batch.buffer);
}

async function encodeRawBatch(batch: RawBatch): Promise<Buffer> {
  const encoded = Buffer.from(
    (
      await original.RecordBatch({
        compression: batch.compression,
        records: batch.records.map(encodeRawRecord),
        firstOffset: batch.firstOffset,
        firstTimestamp: batch.firstTimestamp,
        maxTimestamp: batch.firstTimestamp + 1000n,
        lastOffsetDelta: batch.records.length - 1,
        transactional: batch.transactional,
        producerId: 4000n,
        producerEpoch: 3,
        firstSequence: 17,
      })
    ).buffer,
  );
  // The attributes' low byte follows offset, length, leader epoch, magic and CRC (which kafkajs
  // does not check): 0x08 says the broker set the timestamps.
  if (batch.logAppendTime) encoded.writeUInt8(encoded.readUInt8(22) | 0x08, 22);
  return encoded;
}

/** Fetch Response v11 (what kafkajs negotiates with Kafka 3.9) carrying the given batches. */
function encodeFetchResponse(
  topics: { topic: string; partitions: { partition: number; batches: Buffer[] }[] }[],
): Buffer {
  const E = original.Encoder;
  const partition = (p: { partition: number; batches: Buffer[] }) =>
    new E()
      .writeInt32(p.partition)
      .writeInt16(0)
      .writeInt64(2n ** 60n)
      .writeInt64(2n ** 60n)
      .writeInt64(0)
      .writeArray([])
      .writeInt32(-1)
      .writeBytes(Buffer.concat(p.batches));
  return Buffer.from(
    new E()
      .writeInt32(0)
      .writeInt16(0)
      .writeInt32(42)
      .writeArray(
        topics.map((t) => new E().writeString(t.topic).writeArray(t.partitions.map(partition))),
      ).buffer,
  );
}

/**
 * The original's headers as the patch decodes them. The original merges a header named like an
 * `Object.prototype` member (`__proto__`, `constructor`, `toString`, …) with the inherited member
 * (`constructor: [Object, <value>]`); the patch keeps the header's own value(s). That is the one
 * place the patched decoder differs, and this states it exactly.
 */
function originalHeaderEntries(headers: Record<string, unknown>): [string, unknown][] {
  const plain: Record<string, unknown> = {};
  return Object.entries(headers).map(([name, value]) => {
    if (!(name in plain)) return [name, value];
    expect(Array.isArray(value), name).toBe(true);
    const [inherited, ...values] = value as unknown[];
    expect(inherited, name).toBe(plain[name]);
    return [name, values.length === 1 ? values[0] : values];
  });
}

const asUtf8 = (value: unknown): unknown =>
  value === null
    ? null
    : Array.isArray(value)
      ? value.map(asUtf8)
      : (value as Buffer).toString('utf8');
/** Buffers as hex, which compares fast (deep equality walks a Buffer byte by byte). */
const hex = (value: unknown): unknown =>
  Buffer.isBuffer(value)
    ? { bytes: value.toString('hex') }
    : Array.isArray(value)
      ? value.map(hex)
      : value;

/** Records with headers as entries (order included), the original's adjusted as above. */
function view(records: DecodedRecord[], lib: Kafkajs, valuesAsStrings = false) {
  return records.map((record) => {
    let entries: [string, unknown][] =
      lib === original ? originalHeaderEntries(record.headers) : Object.entries(record.headers);
    if (valuesAsStrings) entries = entries.map(([name, value]) => [name, asUtf8(value)]);
    return {
      ...record,
      key: hex(record.key),
      value: hex(record.value),
      headers: entries.map(([name, value]) => [name, hex(value)]),
    };
  });
}

const rawRecord: fc.Arbitrary<RawRecord> = fc.record({
  timestampDelta: fc.oneof(
    fc.integer({ min: -5000, max: 5000 }),
    fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
    fc.bigInt({ min: -(2n ** 62n), max: 2n ** 62n }),
  ),
  offsetDelta: fc.nat(2 ** 31 - 1),
  key: fc.oneof(fc.constant(null), text, bytes),
  value: fc.oneof(fc.constant(null), fc.constant(''), text, bytes),
  headers: fc.array(
    fc.record({
      key: fc.oneof(
        text,
        fc.constantFrom('dup', 'ce_id', '__proto__', 'constructor', 'valueOf', ''),
      ),
      value: fc.oneof(fc.constant(null), fc.constant(''), text, bytes),
    }),
    { maxLength: 8 },
  ),
});
const rawBatch: fc.Arbitrary<RawBatch> = fc.record({
  compression: fc.constantFrom(...COMPRESSIONS),
  firstOffset: fc.oneof(
    fc.bigInt({ min: 0n, max: 1000n }),
    fc.bigInt({ min: 2n ** 53n - 100n, max: 2n ** 53n + 100n }),
    fc.bigInt({ min: 0n, max: 2n ** 62n }),
  ),
  firstTimestamp: fc.oneof(
    fc.constant(-1n),
    fc.bigInt({ min: 0n, max: 2n ** 45n }),
    fc.bigInt({ min: -(2n ** 53n) - 10n, max: 2n ** 53n + 10n }),
  ),
  logAppendTime: fc.boolean(),
  transactional: fc.boolean(),
  records: fc.array(rawRecord, { maxLength: 6 }),
});

describe('decoding fetched records', { timeout: 60_000 }, () => {
  let unregister: () => void;
  beforeAll(() => {
    unregister = registerTestCodec();
  });
  afterAll(() => {
    unregister();
  });

  async function decodeBoth(
    decode: (lib: Kafkajs) => Promise<DecodedRecord[]>,
  ): Promise<{ patched: DecodedRecord[]; original: DecodedRecord[]; asStrings: DecodedRecord[] }> {
    const fromOriginal = await decode(original);
    const fromPatched = await decode(patched);
    patched.headerDecoder.valuesAsStrings = true;
    try {
      return { patched: fromPatched, original: fromOriginal, asStrings: await decode(patched) };
    } finally {
      patched.headerDecoder.valuesAsStrings = false;
    }
  }

  function expectSameRecords(decoded: Awaited<ReturnType<typeof decodeBoth>>): void {
    expect(view(decoded.patched, patched)).toEqual(view(decoded.original, original));
    expect(view(decoded.asStrings, patched)).toEqual(view(decoded.original, original, true));
  }

  const decodeBatch = (buffer: Buffer) => async (lib: Kafkajs) =>
    (await lib.decodeRecordBatch(new lib.Decoder(buffer))).records;

  it('decodes generated record batches to the same records', async () => {
    await fc.assert(
      fc.asyncProperty(rawBatch, async (batch) => {
        const decoded = await decodeBoth(decodeBatch(await encodeRawBatch(batch)));
        expect(decoded.original).toHaveLength(batch.records.length);
        expectSameRecords(decoded);
      }),
      { numRuns: 300 },
    );
  });

  it('decodes generated Fetch responses to the same records', async () => {
    const topics = fc.array(
      fc.record({
        topic: text,
        partitions: fc.array(
          fc.record({
            partition: fc.nat(1000),
            batches: fc.array(rawBatch, { minLength: 1, maxLength: 3 }),
          }),
          { minLength: 1, maxLength: 3 },
        ),
      }),
      { minLength: 1, maxLength: 2 },
    );
    await fc.assert(
      fc.asyncProperty(topics, async (generated) => {
        const response = encodeFetchResponse(
          await Promise.all(
            generated.map(async ({ topic, partitions }) => ({
              topic,
              partitions: await Promise.all(
                partitions.map(async ({ partition, batches }) => ({
                  partition,
                  batches: await Promise.all(batches.map(encodeRawBatch)),
                })),
              ),
            })),
          ),
        );
        const records = (lib: Kafkajs) => async () => {
          const decoded = await lib.decodeFetchV11(response);
          return decoded.responses.flatMap((topic) =>
            topic.partitions.flatMap((partition) =>
              partition.messages.map((record) => ({ ...record, topic: topic.topicName })),
            ),
          );
        };
        const decoded = await decodeBoth((lib) => records(lib)());
        // Topic names travel as UTF-8: a lone surrogate arrives as U+FFFD.
        expect(decoded.original.map((record) => record.topic)).toEqual(
          generated.flatMap(({ topic, partitions }) =>
            partitions.flatMap(({ batches }) =>
              batches.flatMap((batch) => batch.records.map(() => Buffer.from(topic).toString())),
            ),
          ),
        );
        expectSameRecords(decoded);
      }),
      { numRuns: 100 },
    );
  });

  it('adds offsets and timestamps exactly, past 2^53 and at its edges', async () => {
    const edges: [bigint, number | bigint][] = [
      [9_007_199_254_740_991n, 1],
      [9_007_199_254_740_990n, 2 ** 31 - 1],
      [-9_007_199_254_740_991n, 9_007_199_254_740_993n],
      [9_007_199_254_740_991n, -9_007_199_254_740_993n],
      [-1n, 2n ** 62n],
      [2n ** 63n - 1n, -1],
      [-(2n ** 63n), 0],
      // A timestamp delta of seven bytes (the patch's numbers) and of eight (its Longs).
      [1_700_000_000_000n, 2 ** 48 - 1],
      [1_700_000_000_000n, 2 ** 48],
      [1_700_000_000_000n, -(2 ** 48)],
      [1_700_000_000_000n, -(2 ** 48) - 1],
    ];
    for (const [base, delta] of edges) {
      const record: RawRecord = {
        timestampDelta: delta,
        offsetDelta: typeof delta === 'number' ? Math.abs(delta) % 2 ** 31 : 5,
        key: 'k',
        value: 'v',
        headers: [],
      };
      for (const compression of [Compression.None, Compression.GZIP]) {
        const buffer = await encodeRawBatch({
          compression,
          firstOffset: base < 0n ? 2n ** 53n + 7n : base,
          firstTimestamp: base,
          logAppendTime: false,
          transactional: false,
          records: [record],
        });
        const decoded = await decodeBoth(decodeBatch(buffer));
        expect(decoded.original[0]?.timestamp, `${base} + ${delta}`).toBe(
          String(base + BigInt(delta)),
        );
        expectSameRecords(decoded);
      }
    }
  });

  it('decodes a record with 1 MiB of value and hundreds of headers to the same record', async () => {
    const headersOf = Array.from({ length: 500 }, (_, i) => ({
      key: i % 3 === 0 ? 'repeated' : `h-${i}-ü`,
      value: i % 7 === 0 ? null : `${i}-wózek`,
    }));
    for (const compression of [Compression.None, Compression.GZIP, Compression.LZ4]) {
      const buffer = await encodeRawBatch({
        compression,
        firstOffset: 2n ** 53n,
        firstTimestamp: BigInt(NOW),
        logAppendTime: false,
        transactional: true,
        records: [
          {
            timestampDelta: 0,
            offsetDelta: 0,
            key: 'large',
            value: pseudoRandomBytes(9, 1024 * 1024),
            headers: headersOf,
          },
        ],
      });
      expectSameRecords(await decodeBoth(decodeBatch(buffer)));
    }
  });

  it('decodes strings that repeat, share a slot of its recent strings, or sit at its limits', async () => {
    // Pairs of ASCII strings the patched decoder keeps in the same slot (its hash of the length
    // and the first, middle, last but one and last bytes, mirrored here).
    const slotOf = (bytes: Buffer) => {
      const last = bytes.length - 1;
      let hash = bytes.length;
      for (const i of [0, bytes.length >> 1, last > 0 ? last - 1 : 0, last])
        hash = Math.imul(hash ^ (bytes[i] ?? 0), 0x01000193);
      return hash >>> 20;
    };
    const bySlot = new Map<number, string>();
    const colliding: string[] = [];
    for (let i = 0; colliding.length < 12; i += 1) {
      const name = `h${i}`;
      const other = bySlot.get(slotOf(Buffer.from(name)));
      if (other === undefined) bySlot.set(slotOf(Buffer.from(name)), name);
      else colliding.push(other, name);
    }
    // Text whose UTF-8 bytes share a slot with the Latin-1 bytes of its characters: the same
    // character codes, but those bytes are not UTF-8 and decode to U+FFFD.
    const twins: [string, Buffer][] = [];
    for (let i = 0; twins.length < 2; i += 1) {
      const text = `é${i}`;
      const latin1 = Buffer.from(text, 'latin1');
      if (slotOf(Buffer.from(text)) === slotOf(latin1)) twins.push([text, latin1]);
    }
    const limits = ['', 'a', 'k'.repeat(31), 'k'.repeat(32), 'k'.repeat(33), 'k'.repeat(31) + 'é'];
    const many = Array.from({ length: 5000 }, (_, i) => `n${i}`);
    // Same length, same bytes where the hash looks: only the check tells them apart.
    const unsampled = ['xAyyy', 'xByyy', 'ce_aggregatetype', 'ce_bggregatetype'];
    const repeated = [...colliding, ...unsampled, ...limits, 'é', 'ce_type', '\u0000', '\u007f'];
    const record = (i: number, names: string[]): RawRecord => ({
      timestampDelta: 0,
      offsetDelta: i,
      key: names[0] ?? null,
      value: names[1] ?? null,
      headers: names.map((name, j) => ({ key: name, value: names[(j + 1) % names.length] ?? '' })),
    });
    const records = [
      record(0, repeated),
      record(1, [...repeated].reverse()),
      record(2, many.slice(0, 2500)),
      record(3, many.slice(2500)),
      record(4, repeated),
      record(5, [...colliding].reverse()),
      // Bytes that are not UTF-8 (each decodes to U+FFFD), U+FFFD's own bytes, and the twins.
      ...[0, 1].map((i) => ({
        ...record(6 + i, ['k']),
        headers: [
          ...[[0xff], [0xfe, 0xff], [0xef, 0xbf, 0xbd], [0xff], [0x80]].map((bytes) =>
            Buffer.from(bytes),
          ),
          ...twins.flat(),
        ].map((value) => ({ key: 'bin', value })),
      })),
    ];
    const buffer = await encodeRawBatch({
      compression: Compression.None,
      firstOffset: 0n,
      firstTimestamp: BigInt(NOW),
      logAppendTime: false,
      transactional: false,
      records,
    });
    // Twice: the second time every string has been seen before.
    for (let round = 0; round < 2; round += 1)
      expectSameRecords(await decodeBoth(decodeBatch(buffer)));
  });

  it('reads a varlong as the original does: any bytes, every length, past the end', () => {
    const read = (lib: Kafkajs, bytes: Uint8Array, number: boolean) => {
      const decoder = new lib.Decoder(Buffer.from(bytes)) as VarLongDecoder;
      try {
        const value = number ? decoder.readVarLongNumber() : decoder.readVarLong();
        return { value: String(value), offset: decoder.offset };
      } catch (error) {
        return { error: String(error) };
      }
    };
    const encoded = (value: bigint) => new original.Encoder().writeVarLong(value).buffer;
    const edges = [0n, 1n, -1n, 2n ** 48n - 1n, 2n ** 48n, -(2n ** 48n), -(2n ** 48n) - 1n];
    const values = fc.oneof(
      fc.constantFrom(...edges, 2n ** 63n - 1n, -(2n ** 63n)),
      fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      fc.bigInt({ min: -(2n ** 50n), max: 2n ** 50n }),
      // Eight bytes: past 2^53, where a double would round.
      fc.bigInt({ min: -(2n ** 55n), max: 2n ** 55n }),
    );
    const inputs = fc.oneof(
      values.map(encoded),
      // Truncated encodings, and bytes that never end (the original's error past nine).
      values.map((value) => encoded(value).subarray(0, -1)),
      fc.uint8Array({ maxLength: 12 }),
      fc.uint8Array({ minLength: 10, maxLength: 12 }).map((bytes) => bytes.map((b) => b | 0x80)),
    );
    fc.assert(
      fc.property(inputs, (bytes) => {
        const expected = read(original, bytes, false);
        expect(read(patched, bytes, true)).toEqual(expected);
        expect(read(patched, bytes, false)).toEqual(expected);
      }),
      { numRuns: 2000 },
    );
    for (const value of edges)
      expect(read(patched, encoded(value), true).value).toBe(String(value));
  });

  it('reads a header whose name or value has a negative length as the original does', async () => {
    // A corrupt length moves the reader back: the original's `slice` counts a negative end from
    // the buffer's end.
    const batchWith = (header: (encoder: Encoder) => Encoder) =>
      batchOfRecord(
        header(recordHead({ key: 'key', value: 'value' }, 2)).writeBytes(
          Buffer.from('trailing header bytes, and then some more of them'),
        ),
      );
    // `asStrings`: the original's header values seen as strings, as the patched decoder's are then.
    const outcome = async (lib: Kafkajs, buffer: Buffer, asStrings = false) => {
      try {
        const decoded = await lib.decodeRecordBatch(new lib.Decoder(buffer));
        return { records: view(decoded.records, lib, asStrings && lib === original) };
      } catch (error) {
        return { error: String(error) };
      }
    };
    for (const length of [-2, -3, -7, -20, -60, -100, -1000]) {
      const buffers = [
        await batchWith((e) => e.writeVarInt(length)),
        await batchWith((e) => e.writeVarIntString('name').writeVarInt(length)),
      ];
      for (const buffer of buffers) {
        const expected = await outcome(original, buffer);
        expect(await outcome(patched, buffer)).toEqual(expected);
        patched.headerDecoder.valuesAsStrings = true;
        try {
          expect(await outcome(patched, buffer, true)).toEqual(
            await outcome(original, buffer, true),
          );
        } finally {
          patched.headerDecoder.valuesAsStrings = false;
        }
      }
    }
  });

  it('fails as the original does on a record whose header count is negative', async () => {
    const outcome = async (lib: Kafkajs, count: number) => {
      const buffer = await batchOfRecord(recordHead({ key: 'k', value: 'v' }, count));
      try {
        const decoded = await lib.decodeRecordBatch(new lib.Decoder(buffer));
        return { headers: decoded.records.map((record) => record.headers) };
      } catch (error) {
        return { error: String(error) };
      }
    };
    expect(await outcome(original, -1)).toEqual({ headers: [{}] });
    expect(await outcome(original, -2)).toHaveProperty('error');
    for (const count of [-1, -2])
      expect(await outcome(patched, count)).toEqual(await outcome(original, count));
  });
});
