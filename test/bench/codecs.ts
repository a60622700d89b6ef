// Benchmark: the compression codecs RELAY_COMPRESSION offers, on outbox-like payloads.
//
//   cd /work/main && pnpm -s build && pnpm exec tsx test/bench/codecs.ts
//
// Prints one JSON object on stdout; progress goes to stderr.
// `codecs`: per codec and payload, one producer batch's records (64 events of 1 KB, 8 of 100 KB,
// or 1 of 1 MB) compressed and decompressed through the codec kafkajs looks up, in this process:
// ratio (uncompressed / compressed), MB/s of uncompressed bytes each way. Two kinds of payload:
// `document` (cart-like JSON: repeated keys, ids, numbers) and `blob` (JSON holding random text,
// like the large payloads of the generative test), which compresses far less.
// `relay`: per codec, a backlog of large `document` events written before the relay starts,
// then drained by services/relay/dist/main.js with RELAY_COMPRESSION set: seconds from the
// first record to the last in Kafka, MB/s of payload, and the relay's CPU seconds for the drain.
// Environment (all optional):
//   DATABASE_URL           server to use (a fresh database per codec, dropped after)
//   KAFKA_BROKERS          default 127.0.0.1:19092
//   BENCH_CODEC_MS         time spent measuring each codec, payload and direction (default 400)
//   BENCH_EVENTS           events in each relay backlog (default 300; 0 skips the relay part)
//   BENCH_PAYLOAD_BYTES    size of each of those events' payload (default 100000)
// The relay's topics are deleted after each drain.
import { registerCodecs, type CodecName, type KafkajsCodec } from '@sluice/kafka';
import { testKafka, uniqueName, waitFor } from '@sluice/testkit';
import kafkajs, { CompressionTypes } from 'kafkajs';
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { createRelayFixture, startRelay, topicSize } from '../relay/harness.js';
import { log, processTicks } from './support.js';

const config = {
  serverUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:54329/sluice',
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:19092').split(','),
  codecMs: Number(process.env.BENCH_CODEC_MS ?? 400),
  events: Number(process.env.BENCH_EVENTS ?? 300),
  payloadBytes: Number(process.env.BENCH_PAYLOAD_BYTES ?? 100_000),
};
const CODECS: Exclude<CodecName, 'none'>[] = ['gzip', 'lz4', 'snappy', 'zstd'];
const TYPES = {
  gzip: CompressionTypes.GZIP,
  lz4: CompressionTypes.LZ4,
  snappy: CompressionTypes.Snappy,
  zstd: CompressionTypes.ZSTD,
} as const;
const BATCHES = [
  { eventBytes: 1024, events: 64 },
  { eventBytes: 100_000, events: 8 },
  { eventBytes: 1_000_000, events: 1 },
];
const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits;

// ---------------------------------------------------------------- payloads

/** Cart-like JSON of about `bytes` bytes: lines of product ids, SKUs, names, prices. */
function documentPayload(bytes: number): string {
  const lines: object[] = [];
  let size = 80;
  for (let i = 0; size < bytes; i += 1) {
    const line = {
      productId: randomUUID(),
      sku: `SKU-${String(i % 500).padStart(5, '0')}`,
      name: `Product ${i % 500} ${['red', 'blue', 'large', 'small'][i % 4] ?? ''}`,
      quantity: 1 + (i % 7),
      unitPriceCents: 100 + ((i * 37) % 20_000),
      addedAt: new Date(1_767_225_600_000 + i * 1000).toISOString(),
    };
    size += JSON.stringify(line).length + 1;
    lines.push(line);
  }
  return JSON.stringify({ cartId: randomUUID(), customerId: randomUUID(), lines });
}

const BLOB_CHARACTERS = [
  ...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '.split(''),
  ...['"', '\\', '\n', '\t', '<', '&', 'é', '€'],
];

/** JSON holding about `bytes` characters of random text. */
function blobPayload(bytes: number): string {
  let data = '';
  for (const byte of randomBytes(bytes))
    data += BLOB_CHARACTERS[byte % BLOB_CHARACTERS.length] ?? '';
  return JSON.stringify({ blobId: randomUUID(), part: 0, data }).slice(0, bytes + 40);
}

// ---------------------------------------------------------------- codecs in this process

/** MB/s of `input` bytes through `run`, repeated for about `ms`. */
async function throughput(inputBytes: number, ms: number, run: () => Promise<unknown>) {
  await run();
  let count = 0;
  const started = performance.now();
  while (performance.now() - started < ms) {
    await run();
    count += 1;
  }
  return (inputBytes * count) / 1e6 / ((performance.now() - started) / 1000);
}

async function measureCodecs() {
  registerCodecs();
  const lookup = kafkajs.CompressionCodecs as Record<number, () => KafkajsCodec>;
  const results = [];
  for (const kind of ['document', 'blob'] as const) {
    for (const { eventBytes, events } of BATCHES) {
      const make = kind === 'document' ? documentPayload : blobPayload;
      const batch = Buffer.from(Array.from({ length: events }, () => make(eventBytes)).join(''));
      for (const codec of CODECS) {
        const implementation = lookup[TYPES[codec]]?.();
        if (implementation === undefined) throw new Error(`${codec} is not registered`);
        const compressed = await implementation.compress({ buffer: batch });
        const result = {
          kind,
          eventBytes,
          events,
          codec,
          ratio: round(batch.length / compressed.length, 2),
          compressMBps: round(
            await throughput(batch.length, config.codecMs, () =>
              implementation.compress({ buffer: batch }),
            ),
          ),
          decompressMBps: round(
            await throughput(batch.length, config.codecMs, () =>
              implementation.decompress(compressed),
            ),
          ),
        };
        log(JSON.stringify(result));
        results.push(result);
      }
    }
  }
  return results;
}

// ---------------------------------------------------------------- the relay, end to end

async function writeBacklog(pool: pg.Pool, events: number, bytes: number): Promise<number> {
  let written = 0;
  for (let at = 0; at < events; at += 20) {
    const payloads = Array.from({ length: Math.min(20, events - at) }, () =>
      documentPayload(bytes),
    );
    const { rows } = await pool.query<{ bytes: number }>(
      `INSERT INTO shop.outbox (id, aggregate_type, aggregate_id, aggregate_version, type, payload, metadata)
       SELECT gen_random_uuid(), 'cart', 'bench-' || ($1::int + i), 1, 'cart.item_added.v1', p, '{}'::jsonb
         FROM unnest($2::jsonb[]) WITH ORDINALITY AS t(p, i)
       RETURNING octet_length(payload::text) AS bytes`,
      [at, payloads],
    );
    written += rows.reduce((sum, row) => sum + row.bytes, 0);
  }
  return written;
}

async function drain(codec: CodecName) {
  const fixture = await createRelayFixture(config.serverUrl, `bench_codec_${codec}`);
  try {
    const payloadBytes = await writeBacklog(fixture.pool, config.events, config.payloadBytes);
    const relay = startRelay(fixture, config.brokers, {
      RELAY_COMPRESSION: codec,
      RELAY_MAX_RECORD_BYTES: String(4 * 1024 * 1024),
      LOG_LEVEL: 'warn',
    });
    try {
      const pid = relay.child.pid ?? 0;
      let first: number | undefined;
      let firstTicks = 0;
      await waitFor(
        async () => {
          const size = await topicSize(config.brokers, fixture.topic);
          if (size > 0 && first === undefined) {
            first = performance.now();
            firstTicks = processTicks(pid)?.ticks ?? 0;
          }
          return size >= config.events;
        },
        { timeoutMs: 600_000, intervalMs: 50, message: `${config.events} records (${codec})` },
      );
      const seconds = (performance.now() - (first ?? performance.now())) / 1000;
      const cpuSeconds = ((processTicks(pid)?.ticks ?? 0) - firstTicks) / 100;
      const result = {
        codec,
        events: config.events,
        payloadMB: round(payloadBytes / 1e6),
        seconds: round(seconds, 2),
        payloadMBps: round(payloadBytes / 1e6 / seconds),
        relayCpuSeconds: round(cpuSeconds, 2),
      };
      log(JSON.stringify(result));
      return result;
    } finally {
      relay.kill('SIGKILL');
      await relay.exited();
    }
  } finally {
    await fixture.close();
    await deleteTopic(fixture.topic);
  }
}

async function deleteTopic(topic: string): Promise<void> {
  const admin = testKafka(config.brokers).admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics: [topic] });
  } finally {
    await admin.disconnect();
  }
}

// ---------------------------------------------------------------- main

log(`codecs, ${String(config.codecMs)} ms per measurement`);
const codecs = await measureCodecs();
const relay = [];
if (config.events > 0) {
  log(`relay: ${String(config.events)} events of ${String(config.payloadBytes)} B per codec`);
  for (const codec of [...CODECS, 'none'] as const) relay.push(await drain(codec));
}
process.stdout.write(
  `${JSON.stringify(
    {
      benchmark: 'codecs',
      runId: uniqueName('codecs'),
      machine: { cpus: os.cpus().length, node: process.version },
      codecs,
      relay,
    },
    null,
    2,
  )}\n`,
);
