import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeHeaderValuesAsStrings } from './header-decoding.js';

interface Decoded {
  key: string;
  value: unknown;
}
const require = createRequire(import.meta.url);
const decodeHeader = require('kafkajs/src/protocol/recordBatch/header/v0/decoder') as ((
  decoder: unknown,
) => Decoded) & { valuesAsStrings?: boolean };
const Decoder = require('kafkajs/src/protocol/decoder') as new (buffer: Buffer) => unknown;
const Encoder = require('kafkajs/src/protocol/encoder') as new () => {
  writeVarIntString(value: string): unknown;
  writeVarIntBytes(value: Buffer): unknown;
  buffer: Buffer;
};

/** A record header as Kafka sends it: varint-length key and value. */
function header(key: string, value: string): Buffer {
  const encoder = new Encoder();
  encoder.writeVarIntString(key);
  encoder.writeVarIntBytes(Buffer.from(value));
  return encoder.buffer;
}

afterEach(() => decodeHeaderValuesAsStrings(false));

describe('decodeHeaderValuesAsStrings', () => {
  it('switches the patched decoder between Buffer and string header values', () => {
    // Unpatched kafkajs has no such switch.
    expect(decodeHeader.valuesAsStrings).toBe(false);
    expect(decodeHeader(new Decoder(header('ce_id', 'é1'))).value).toEqual(Buffer.from('é1'));
    expect(decodeHeaderValuesAsStrings(true)).toBe(true);
    expect(decodeHeader(new Decoder(header('ce_id', 'é1')))).toEqual({ key: 'ce_id', value: 'é1' });
    decodeHeaderValuesAsStrings(false);
    expect(Buffer.isBuffer(decodeHeader(new Decoder(header('ce_id', 'x'))).value)).toBe(true);
  });
});
