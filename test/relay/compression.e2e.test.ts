// Each codec of RELAY_COMPRESSION through the real broker: batches holding a large record go out
// compressed with it, kafkajs (with the codecs registered) reads back every payload exactly, and
// so does the Java client (Kafka's own console consumer), the reference for consumers in any
// language; kafkajs reads what the Java producer compresses too. A projector, which registers
// every codec, applies events from such topics.
import { registerCodecs, type CodecName } from '@sluice/kafka';
import { DEFAULT_KAFKA_VERSION } from '@sluice/stack';
import { createTopics, testServers, uniqueName, waitFor } from '@sluice/testkit';
import kafkajs, { CompressionTypes } from 'kafkajs';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { shoppingWorkload, startPipeline } from '../support/pipeline.js';
import { readTopic, topicSize, useRelayFixture, type RelayProcess } from './harness.js';

const { kafkaBrokers } = testServers();
const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const kafkaLib = join(rootDir, 'infra', 'kafka', 'target', DEFAULT_KAFKA_VERSION, 'lib');

/** Batches kafkajs decompressed in this process, by codec. */
const decompressed = new Map<CompressionTypes, number>();

const { GZIP, Snappy, LZ4, ZSTD } = CompressionTypes;

beforeAll(() => {
  registerCodecs();
  const codecs = kafkajs.CompressionCodecs as Record<number, () => { decompress: Decompress }>;
  for (const type of [GZIP, Snappy, LZ4, ZSTD]) {
    const lookup = codecs[type];
    if (lookup === undefined) continue;
    codecs[type] = () => {
      const codec = lookup();
      return {
        ...codec,
        decompress: (buffer: Buffer) => {
          decompressed.set(type, (decompressed.get(type) ?? 0) + 1);
          return codec.decompress(buffer);
        },
      };
    };
  }
});

type Decompress = (buffer: Buffer) => Promise<Buffer>;

interface Written {
  aggregateId: string;
  /** The payload as PostgreSQL returns it: the relay publishes this text unchanged. */
  text: string;
}

/** About `bytes` bytes of JSON like an outbox payload: repeated keys, random values. */
function payload(bytes: number): object {
  const lines = Array.from({ length: Math.ceil(bytes / 80) }, (_, i) => ({
    sku: `SKU-${i % 97}`,
    quantity: 1 + (i % 5),
    token: randomBytes(12).toString('base64'),
  }));
  return { cartId: '00000000-0000-7000-8000-000000000001', lines };
}

/** One event per payload, each to its own cart, in one transaction. */
async function writeEvents(pool: pg.Pool, prefix: string, payloads: object[]): Promise<Written[]> {
  const { rows } = await pool.query<Written>(
    `INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload, metadata)
     SELECT gen_random_uuid(), 'cart', $1 || '-' || i, 1, 'cart.item_added.v1', p, '{"actor":"test"}'::jsonb
       FROM unnest($2::jsonb[]) WITH ORDINALITY AS t(p, i)
     RETURNING aggregate_id AS "aggregateId", payload::text AS text`,
    [prefix, payloads.map((p) => JSON.stringify(p))],
  );
  return rows;
}

/** The classpath of Kafka's own tools; the embedded stack resolves these jars. */
function kafkaClasspath(): string {
  if (!existsSync(kafkaLib)) throw new Error(`no Kafka jars in ${kafkaLib}: run pnpm stack:up`);
  return `${kafkaLib}/*`;
}

/** Key → value of every record of `topic`, as Kafka's Java console consumer prints them. */
async function readWithJava(topic: string, count: number): Promise<Map<string, string>> {
  const { stdout } = await promisify(execFile)(
    'java',
    [
      '-cp',
      kafkaClasspath(),
      'org.apache.kafka.tools.consumer.ConsoleConsumer',
      ...['--bootstrap-server', kafkaBrokers.join(','), '--topic', topic, '--from-beginning'],
      ...['--max-messages', String(count), '--timeout-ms', '60000'],
      ...['--property', 'print.key=true', '--property', 'key.separator=\t'],
    ],
    { maxBuffer: 64 * 1024 * 1024, timeout: 90_000 },
  );
  const lines = stdout.split('\n').filter((line) => line.includes('\t'));
  return new Map(lines.map((line) => line.split('\t', 2) as [string, string]));
}

/** Writes `values` to `topic` with Kafka's Java console producer, compressed with `codec`. */
async function produceWithJava(topic: string, codec: string, values: string[]): Promise<void> {
  const child = spawn(
    'java',
    [
      ...['-cp', kafkaClasspath(), 'org.apache.kafka.tools.ConsoleProducer'],
      ...['--bootstrap-server', kafkaBrokers.join(','), '--topic', topic],
      ...['--compression-codec', codec, '--command-property', 'linger.ms=100'],
      ...['--command-property', `max.request.size=${String(8 * 1024 * 1024)}`],
    ],
    { stdio: ['pipe', 'ignore', 'pipe'] },
  );
  let errors = '';
  child.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', done));
  child.stdin.end(`${values.join('\n')}\n`);
  const code = await exited;
  if (code !== 0 || errors.includes('ERROR')) throw new Error(`the Java producer: ${errors}`);
}

async function delivered(relay: RelayProcess, topic: string, count: number): Promise<void> {
  await waitFor(async () => (await topicSize(kafkaBrokers, topic)) >= count, {
    timeoutMs: 60_000,
    intervalMs: 200,
    message: `${count} records in ${topic}`,
  }).catch((error: unknown) => {
    throw new Error(`${String(error)}\n--- relay output ---\n${relay.output().slice(-3000)}`, {
      cause: error,
    });
  });
}

const CODECS: [CodecName, CompressionTypes | undefined][] = [
  ['gzip', CompressionTypes.GZIP],
  ['lz4', CompressionTypes.LZ4],
  ['snappy', CompressionTypes.Snappy],
  ['zstd', CompressionTypes.ZSTD],
  ['none', undefined],
];

describe('RELAY_COMPRESSION', () => {
  it.each(CODECS)(
    '%s: 200 KB and 2 MB payloads, and small ones, read back exactly by kafkajs and by Java',
    async (codec, type) => {
      const { fixture, start } = await useRelayFixture(`compress_${codec}`);
      // A topic that takes the 2 MB record, which no codec gets under the default 1 MiB.
      await createTopics(kafkaBrokers, [
        {
          topic: fixture.topic,
          numPartitions: 3,
          configEntries: [{ name: 'max.message.bytes', value: String(8 * 1024 * 1024) }],
        },
      ]);
      const relay = start({
        RELAY_COMPRESSION: codec,
        RELAY_MAX_RECORD_BYTES: String(4 * 1024 * 1024),
      });
      const events = [
        ...(await writeEvents(fixture.pool, 'large', [payload(200_000), payload(2_000_000)])),
        ...(await writeEvents(fixture.pool, 'small', [payload(300), payload(300), payload(300)])),
        ...(await writeEvents(fixture.pool, 'mixed', [payload(200), payload(200_000)])),
      ];
      await delivered(relay, fixture.topic, events.length);
      const before = type === undefined ? 0 : (decompressed.get(type) ?? 0);
      const records = await readTopic(kafkaBrokers, fixture.topic);
      expect(records).toHaveLength(events.length);
      const byKey = new Map(records.map((record) => [record.key, record.value]));
      for (const { aggregateId, text } of events)
        expect(byKey.get(aggregateId) === text, `kafkajs: payload of ${aggregateId}`).toBe(true);
      if (type !== undefined) expect(decompressed.get(type) ?? 0).toBeGreaterThan(before);

      const java = await readWithJava(fixture.topic, events.length);
      expect(java.size).toBe(events.length);
      for (const { aggregateId, text } of events)
        expect(java.get(aggregateId) === text, `Java: payload of ${aggregateId}`).toBe(true);
    },
  );

  it.each([
    ['lz4', CompressionTypes.LZ4],
    ['snappy', CompressionTypes.Snappy],
    ['zstd', CompressionTypes.ZSTD],
  ])(
    '%s: kafkajs, with the codecs registered, reads what the Java producer compressed',
    async (codec, type) => {
      const topic = uniqueName(`compress_java_${codec}`);
      await createTopics(kafkaBrokers, [
        {
          topic,
          numPartitions: 1,
          configEntries: [{ name: 'max.message.bytes', value: String(8 * 1024 * 1024) }],
        },
      ]);
      const values = [300, 200_000, 300, 2_000_000, 300].map((bytes) =>
        JSON.stringify(payload(bytes)),
      );
      await produceWithJava(topic, codec, values);
      const before = decompressed.get(type) ?? 0;
      const records = await readTopic(kafkaBrokers, topic);
      expect(records.map((record) => record.value).join('\n') === values.join('\n')).toBe(true);
      expect(decompressed.get(type) ?? 0).toBeGreaterThan(before);
    },
  );

  it.each(['lz4', 'snappy', 'zstd'])(
    '%s: a projector applies the events of topics compressed with it',
    async (codec) => {
      const pipeline = await startPipeline(`compress_views_${codec}`, {
        relay: { RELAY_COMPRESSION: codec, RELAY_COMPRESS_ABOVE_BYTES: '0' },
      });
      try {
        const projector = pipeline.startProjector();
        await shoppingWorkload(pipeline, { carts: 4, rounds: 3, tag: uniqueName(codec) });
        await pipeline.expectCartSummariesConverge(90_000).catch((error: unknown) => {
          throw new Error(
            `${String(error)}\n--- projector ---\n${projector.output().slice(-3000)}`,
            {
              cause: error,
            },
          );
        });
      } finally {
        await pipeline.close();
      }
    },
  );
});
