import kafkajs, { CompressionTypes } from 'kafkajs';
import { createRequire } from 'node:module';

// Not among the names Node finds in kafkajs' CommonJS exports.
const { CompressionCodecs } = kafkajs;

/** The compression codecs a Kafka record batch can carry, by the names operators write. */
export const CODEC_NAMES = ['none', 'gzip', 'lz4', 'snappy', 'zstd'] as const;

/** A name of {@link CODEC_NAMES}. */
export type CodecName = (typeof CODEC_NAMES)[number];

/** What kafkajs calls to compress a record batch's records and to decompress them. */
export interface KafkajsCodec {
  compress(encoder: { buffer: Buffer }): Promise<Buffer>;
  decompress(buffer: Buffer): Promise<Buffer>;
}

const TYPES: Record<CodecName, CompressionTypes> = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  lz4: CompressionTypes.LZ4,
  snappy: CompressionTypes.Snappy,
  zstd: CompressionTypes.ZSTD,
};

/** The kafkajs `compression` of a send compressed with `name`. */
export function compressionType(name: CodecName): CompressionTypes {
  return TYPES[name];
}

/** The Java client's (xerial's) snappy stream header: magic, version 1, compatible with 1. */
const XERIAL_HEADER = Buffer.from([
  0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00, 0, 0, 0, 1, 0, 0, 0, 1,
]);
const XERIAL_MAGIC = XERIAL_HEADER.subarray(0, 8);
/** Uncompressed bytes per snappy block, as the Java client writes them. */
const SNAPPY_BLOCK_BYTES = 32 * 1024;
/** zstd's default level, the Java client's too. */
const ZSTD_LEVEL = 3;

type Snappy = typeof import('snappy');

/** Snappy in the xerial framing the Java client writes and every Kafka client reads. */
function snappyCodec(snappy: Snappy): KafkajsCodec {
  return {
    async compress({ buffer }) {
      const blocks: Promise<Buffer>[] = [];
      for (let at = 0; at < buffer.length; at += SNAPPY_BLOCK_BYTES)
        blocks.push(snappy.compress(buffer.subarray(at, at + SNAPPY_BLOCK_BYTES)));
      const parts: Buffer[] = [XERIAL_HEADER];
      for (const block of await Promise.all(blocks)) {
        const length = Buffer.allocUnsafe(4);
        length.writeInt32BE(block.length);
        parts.push(length, block);
      }
      return Buffer.concat(parts);
    },
    async decompress(buffer) {
      if (!isXerialFramed(buffer)) return (await snappy.uncompress(buffer)) as Buffer;
      const blocks: Promise<string | Buffer>[] = [];
      for (let at = XERIAL_HEADER.length; at < buffer.length;) {
        const length = buffer.readInt32BE(at);
        blocks.push(snappy.uncompress(buffer.subarray(at + 4, at + 4 + length)));
        at += 4 + length;
      }
      return Buffer.concat((await Promise.all(blocks)) as Buffer[]);
    },
  };
}

function isXerialFramed(buffer: Buffer): boolean {
  return (
    buffer.length >= XERIAL_HEADER.length &&
    buffer.subarray(0, XERIAL_MAGIC.length).equals(XERIAL_MAGIC)
  );
}

/** The codecs kafkajs lacks, loaded (native add-ons) on first registration. */
function loadCodecs(): Record<'lz4' | 'snappy' | 'zstd', KafkajsCodec> {
  const require = createRequire(import.meta.url);
  const lz4 = require('lz4-napi') as typeof import('lz4-napi');
  const zstd = require('@mongodb-js/zstd') as typeof import('@mongodb-js/zstd');
  return {
    // Kafka's LZ4 is the LZ4 frame format, with independent blocks.
    lz4: {
      compress: ({ buffer }) => lz4.compressFrame(buffer),
      decompress: (buffer) => lz4.decompressFrame(buffer),
    },
    snappy: snappyCodec(require('snappy') as Snappy),
    zstd: {
      compress: ({ buffer }) => zstd.compress(buffer, ZSTD_LEVEL),
      decompress: (buffer) => zstd.decompress(buffer),
    },
  };
}

let registered: Record<'lz4' | 'snappy' | 'zstd', KafkajsCodec> | undefined;

/**
 * Registers LZ4, Snappy and ZSTD in kafkajs' `CompressionCodecs` (GZIP is built in), process-wide:
 * for producers that send with them and for every consumer, which must decode any batch a topic
 * holds whatever its producer chose. Idempotent; returns the codecs registered.
 */
export function registerCodecs(): Readonly<Record<'lz4' | 'snappy' | 'zstd', KafkajsCodec>> {
  registered ??= loadCodecs();
  const codecs = registered;
  CompressionCodecs[CompressionTypes.LZ4] = () => codecs.lz4;
  CompressionCodecs[CompressionTypes.Snappy] = () => codecs.snappy;
  CompressionCodecs[CompressionTypes.ZSTD] = () => codecs.zstd;
  return codecs;
}
