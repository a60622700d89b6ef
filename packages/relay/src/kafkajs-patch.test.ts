// The patched kafkajs (patches/kafkajs@2.2.4.patch) must agree with Kafka itself: the key hash
// decides partitions, so a different hash would scatter an aggregate's events across partitions.
// Its faster record decoder must return the same records.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

const require = createRequire(import.meta.url);
const murmur2 = require('kafkajs/src/producer/partitioners/default/murmur2') as (
  key: string | Buffer,
) => number;
const crc32C = require('kafkajs/src/protocol/recordBatch/crc32C') as (data: Buffer) => number;
const encodeRecord = require('kafkajs/src/protocol/recordBatch/record/v0') as (record: {
  offsetDelta: number;
  timestampDelta: number;
  key: Buffer;
  value: Buffer;
  headers: Record<string, string | string[]>;
}) => { buffer: Buffer };
const Decoder = require('kafkajs/src/protocol/decoder') as new (buffer: Buffer) => {
  readVarInt(): number;
};
const headerDecoder = require('kafkajs/src/protocol/recordBatch/header/v0/decoder') as {
  valuesAsStrings: boolean;
};
const decodeRecord = require('kafkajs/src/protocol/recordBatch/record/v0/decoder') as (
  decoder: InstanceType<typeof Decoder>,
  context: { firstOffset: string; firstTimestamp: string; magicByte: number },
) => { offset: string; timestamp: string; key: Buffer; value: Buffer; headers: object };

describe('patched kafkajs', () => {
  it("hashes keys as Java's Utils.murmur2 does (Kafka's own test vectors)", () => {
    const vectors: [string, number][] = [
      ['21', -973932308],
      ['foobar', -790332482],
      ['a-little-bit-long-string', -985981536],
      ['a-little-bit-longer-string', -1486304829],
      ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
      ['abc', 479470107],
    ];
    for (const [key, hash] of vectors) {
      expect(murmur2(key)).toBe(hash);
      expect(murmur2(Buffer.from(key))).toBe(hash);
    }
  });

  it('hashes a non-ASCII or long key by its UTF-8 bytes', () => {
    for (const key of ['wózek-ünïcode', '日本語のキー', 'x'.repeat(1000)])
      expect(murmur2(key)).toBe(murmur2(Buffer.from(key, 'utf8')));
  });

  it('computes CRC-32C (the record-batch checksum) to the standard check value', () => {
    expect(crc32C(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32C(Buffer.alloc(0))).toBe(0);
  });

  it('decodes records: offsets, timestamps, repeated headers, headers named like Object members', () => {
    const encoded = encodeRecord({
      offsetDelta: 7,
      timestampDelta: 1500,
      key: Buffer.from('cart-1'),
      value: Buffer.from('{"a":1}'),
      headers: { ce_id: 'x', repeated: ['1', '2', '3'], constructor: 'c', ['__proto__']: 'p' },
    }).buffer;
    const decode = (firstOffset: string, firstTimestamp: string) => {
      const decoder = new Decoder(encoded);
      decoder.readVarInt(); // the record's length
      return decodeRecord(decoder, { firstOffset, firstTimestamp, magicByte: 2 });
    };
    const record = decode('100', '1700000000000');
    expect(record).toMatchObject({ offset: '107', timestamp: '1700000001500' });
    expect(record.key.toString()).toBe('cart-1');
    expect(record.value.toString()).toBe('{"a":1}');
    const headers = Object.fromEntries(
      Object.entries(record.headers).map(([name, value]: [string, Buffer | Buffer[]]) => [
        name,
        Array.isArray(value) ? value.map(String) : String(value),
      ]),
    );
    expect(headers).toEqual({
      ce_id: 'x',
      repeated: ['1', '2', '3'],
      constructor: 'c',
      ['__proto__']: 'p',
    });
    expect(Object.getPrototypeOf(record.headers)).toBe(Object.prototype);
    // Past 2^53 the offsets stay exact.
    expect(decode('9223372036854775000', '0').offset).toBe('9223372036854775007');
  });

  it('decodes header values as strings when asked to', () => {
    const encoded = encodeRecord({
      offsetDelta: 0,
      timestampDelta: 0,
      key: Buffer.from('k'),
      value: Buffer.from('v'),
      headers: { ce_type: 'cart.opened.v1', ce_subject: 'wózek' },
    }).buffer;
    const decoder = new Decoder(encoded);
    decoder.readVarInt();
    headerDecoder.valuesAsStrings = true;
    try {
      const record = decodeRecord(decoder, { firstOffset: '0', firstTimestamp: '0', magicByte: 2 });
      expect(record.headers).toEqual({ ce_type: 'cart.opened.v1', ce_subject: 'wózek' });
    } finally {
      headerDecoder.valuesAsStrings = false;
    }
  });
});
