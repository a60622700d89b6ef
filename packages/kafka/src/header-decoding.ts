import { createRequire } from 'node:module';

/** The header decoder of our kafkajs patch (`patches/kafkajs@2.2.4.patch`). */
interface PatchedHeaderDecoder {
  valuesAsStrings: boolean;
}

/**
 * Process-wide: whether consumers receive record header values as strings (UTF-8) instead of
 * Buffers. A switch our kafkajs patch adds; for a process that turns every header value into a
 * string anyway, it saves a Buffer per header of every record. Off by default.
 *
 * @example decodeHeaderValuesAsStrings(true); // before the first fetch
 */
export function decodeHeaderValuesAsStrings(on: boolean): void {
  const decoder = createRequire(import.meta.url)(
    'kafkajs/src/protocol/recordBatch/header/v0/decoder',
  ) as PatchedHeaderDecoder;
  decoder.valuesAsStrings = on;
}
