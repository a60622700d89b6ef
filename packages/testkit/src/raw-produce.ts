import { SluiceError } from '@sluice/errors';
import type { Kafka } from 'kafkajs';
import { createRequire } from 'node:module';
import net from 'node:net';

const crc32C = createRequire(import.meta.url)('kafkajs/src/protocol/recordBatch/crc32C') as (
  data: Buffer,
) => number;

/** A record as Kafka allows it: any bytes, null key, value or header values. */
export interface RawProducedRecord {
  key: Buffer | string | null;
  value: Buffer | string | null;
  headers?: [name: string, value: Buffer | string | null][];
}

const bytes = (value: Buffer | string): Buffer =>
  typeof value === 'string' ? Buffer.from(value) : value;

function varint(value: number): Buffer {
  let zigzag = (value << 1) ^ (value >> 31);
  const out: number[] = [];
  while ((zigzag & ~0x7f) !== 0) {
    out.push((zigzag & 0x7f) | 0x80);
    zigzag >>>= 7;
  }
  out.push(zigzag);
  return Buffer.from(out);
}

const sized = (value: Buffer | string | null): Buffer =>
  value === null ? varint(-1) : Buffer.concat([varint(bytes(value).length), bytes(value)]);

function encodeRecord(record: RawProducedRecord, offsetDelta: number): Buffer {
  const headers = record.headers ?? [];
  const body = Buffer.concat([
    Buffer.from([0]), // attributes
    varint(0), // timestamp delta
    varint(offsetDelta),
    sized(record.key),
    sized(record.value),
    varint(headers.length),
    ...headers.flatMap(([name, value]) => [sized(name), sized(value)]),
  ]);
  return Buffer.concat([varint(body.length), body]);
}

/** A v2 record batch, uncompressed, not idempotent. */
function recordBatch(records: readonly RawProducedRecord[]): Buffer {
  const now = BigInt(Date.now());
  const tail = Buffer.alloc(40);
  tail.writeInt16BE(0, 0); // attributes
  tail.writeInt32BE(records.length - 1, 2); // last offset delta
  tail.writeBigInt64BE(now, 6);
  tail.writeBigInt64BE(now, 14);
  tail.writeBigInt64BE(-1n, 22); // producer id
  tail.writeInt16BE(-1, 30); // producer epoch
  tail.writeInt32BE(-1, 32); // base sequence
  tail.writeInt32BE(records.length, 36);
  const crcd = Buffer.concat([tail, ...records.map(encodeRecord)]);
  const head = Buffer.alloc(21);
  head.writeBigInt64BE(0n, 0); // base offset
  head.writeInt32BE(crcd.length + 9, 8); // length: from the leader epoch on
  head.writeInt32BE(-1, 12); // partition leader epoch
  head.writeInt8(2, 16); // magic
  head.writeUInt32BE(crc32C(crcd), 17);
  return Buffer.concat([head, crcd]);
}

const int16 = (n: number) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const string = (s: string) => Buffer.concat([int16(Buffer.byteLength(s)), Buffer.from(s)]);

function produceRequest(topic: string, partition: number, batch: Buffer): Buffer {
  const body = Buffer.concat([
    int16(0), // api key: Produce
    int16(3), // version
    int32(1), // correlation id
    string('sluice-test-raw'),
    int16(-1), // transactional id: null
    int16(-1), // acks: all
    int32(30_000),
    int32(1),
    string(topic),
    int32(1),
    int32(partition),
    int32(batch.length),
    batch,
  ]);
  return Buffer.concat([int32(body.length), body]);
}

/** The error code of a Produce v3 response with one topic and one partition. */
function produceError(response: Buffer, topic: string): number {
  // size, correlation id, topics count, topic name, partitions count, partition: error code next.
  return response.readInt16BE(4 + 4 + 4 + 2 + Buffer.byteLength(topic) + 4 + 4);
}

/**
 * Produces records to one partition over Kafka's wire protocol directly, for records kafkajs
 * will not write (a null header value). Finds the partition's leader through `kafka`.
 *
 * @example await rawProduce(kafka, 'outbox.event.cart', 0, [{ key: 'k', value: '{}', headers: [['h', null]] }]);
 */
export async function rawProduce(
  kafka: Kafka,
  topic: string,
  partition: number,
  records: readonly RawProducedRecord[],
): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  let address: { host: string; port: number } | undefined;
  try {
    const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
    const leader = metadata.topics[0]?.partitions.find((p) => p.partitionId === partition)?.leader;
    const broker = (await admin.describeCluster()).brokers.find((b) => b.nodeId === leader);
    if (broker !== undefined) address = { host: broker.host, port: broker.port };
  } finally {
    await admin.disconnect();
  }
  if (address === undefined) throw new SluiceError('raw_produce_failed', `No leader for ${topic}`);
  const request = produceRequest(topic, partition, recordBatch(records));
  const response = await new Promise<Buffer>((resolve, reject) => {
    const socket = net.connect(address, () => socket.write(request));
    let received = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 4 && received.length >= received.readInt32BE(0) + 4) {
        socket.end();
        resolve(received);
      }
    });
    socket.on('error', reject);
  });
  const code = produceError(response, topic);
  if (code !== 0) throw new SluiceError('raw_produce_failed', `Kafka answered error code ${code}`);
}
