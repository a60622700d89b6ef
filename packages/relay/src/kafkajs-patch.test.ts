// The patched kafkajs (patches/kafkajs@2.2.4.patch) must agree with Kafka itself: the key hash
// decides partitions, so a different hash would scatter an aggregate's events across partitions.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

const require = createRequire(import.meta.url);
const murmur2 = require('kafkajs/src/producer/partitioners/default/murmur2') as (
  key: string | Buffer,
) => number;
const crc32C = require('kafkajs/src/protocol/recordBatch/crc32C') as (data: Buffer) => number;

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
});
