import { randomBytes } from 'node:crypto';
import kafkajs, { CompressionTypes } from 'kafkajs';
import snappy from 'snappy';
import { describe, expect, it } from 'vitest';
import { CODEC_NAMES, compressionType, registerCodecs, type KafkajsCodec } from './codecs.js';

const { CompressionCodecs } = kafkajs;
const codecs = registerCodecs();
type Registered = CompressionTypes.LZ4 | CompressionTypes.Snappy | CompressionTypes.ZSTD;
const registeredTypes: Registered[] = [
  CompressionTypes.LZ4,
  CompressionTypes.Snappy,
  CompressionTypes.ZSTD,
];

/** The codec kafkajs finds for `type`, as its record-batch encoder and decoder look it up. */
function kafkajsCodec(type: Registered): KafkajsCodec {
  return (CompressionCodecs[type] as () => KafkajsCodec)();
}

/** About `bytes` bytes of JSON like an outbox payload: repetitive keys, random values. */
function jsonPayload(bytes: number): Buffer {
  const items: object[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i += 1) {
    const item = { sku: `SKU-${i % 97}`, quantity: i % 5, token: randomBytes(8).toString('hex') };
    size += JSON.stringify(item).length + 1;
    items.push(item);
  }
  return Buffer.from(JSON.stringify({ cartId: '00000000-0000-7000-8000-000000000001', items }));
}

describe('compressionType', () => {
  it('maps every codec name to its kafkajs compression type', () => {
    expect(CODEC_NAMES.map(compressionType)).toEqual([
      CompressionTypes.None,
      CompressionTypes.GZIP,
      CompressionTypes.LZ4,
      CompressionTypes.Snappy,
      CompressionTypes.ZSTD,
    ]);
  });
});

describe('registerCodecs', () => {
  it('registers LZ4, Snappy and ZSTD in kafkajs, the same codecs on every call', () => {
    expect(registerCodecs()).toBe(codecs);
    expect(registeredTypes.map(kafkajsCodec)).toEqual([codecs.lz4, codecs.snappy, codecs.zstd]);
  });

  it.each(
    registeredTypes.flatMap((type) =>
      [0, 1, 1024 * 1024].map((bytes) => [CompressionTypes[type], bytes, type] as const),
    ),
  )('%s: a %i-byte buffer comes back whole', async (_, bytes, type) => {
    const codec = kafkajsCodec(type);
    for (const original of [jsonPayload(bytes).subarray(0, bytes), randomBytes(bytes)]) {
      const compressed = await codec.compress({ buffer: original });
      const restored = await codec.decompress(compressed);
      expect(restored.equals(original)).toBe(true);
    }
  });

  it('compresses repetitive JSON to well under its size with every codec', async () => {
    const original = jsonPayload(100_000);
    for (const type of registeredTypes) {
      const compressed = await kafkajsCodec(type).compress({ buffer: original });
      expect(compressed.length, CompressionTypes[type]).toBeLessThan(original.length / 2);
    }
  });
});

describe('formats other clients write', () => {
  const text = '{"cartId":"c-1","note":"hello hello hello hello"}';

  it('Snappy: writes the xerial framing, and reads it and raw snappy', async () => {
    const original = jsonPayload(100_000);
    const framed = await codecs.snappy.compress({ buffer: original });
    expect(framed.subarray(0, 16).toString('hex')).toBe('82534e41505059000000000100000001');
    expect((await codecs.snappy.decompress(framed)).equals(original)).toBe(true);
    // Raw snappy, as kafkajs-snappy writes it.
    const raw = await snappy.compress(text);
    expect((await codecs.snappy.decompress(raw)).toString()).toBe(text);
  });

  it('LZ4: writes frames of independent blocks, and reads frames with checksums', async () => {
    const frame = await codecs.lz4.compress({ buffer: Buffer.from(text) });
    expect(frame.readUInt32LE(0)).toBe(0x184d2204);
    expect(frame.readUInt8(4) & 0x20).toBe(0x20);
    // `lz4` 1.9.4's frame of the text: content checksum, and a 4 MiB block size.
    const cli = 'BCJNGGRApygAAAD6D3siY2FydElkIjoiYy0xIiwibm90ZSI6ImhlbGxvIAYAUGxsbyJ9AAAAAP6yx1U=';
    expect((await codecs.lz4.decompress(Buffer.from(cli, 'base64'))).toString()).toBe(text);
  });

  it('ZSTD: reads a streamed frame, which does not say its size', async () => {
    const cli = 'KLUv/QRYPQEABAJ7ImNhcnRJZCI6ImMtMSIsIm5vdGUiOiJoZWxsbyAifQEAZi5OlYiE9g==';
    expect((await codecs.zstd.decompress(Buffer.from(cli, 'base64'))).toString()).toBe(text);
  });
});
